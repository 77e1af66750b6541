//! `cargo bench --bench peers`: is wcbuild faster than what I use now? Every tool runs as a
//! process (wcbuild's release binary, `docker build` against a Docker engine, `buildah bud`,
//! `skopeo copy`, `pigz`, `curl`), on deterministic content that compresses as real content
//! does, side by side in one run, interleaved, and each workload against the best peer that
//! does the same job and against the raw pipeline that bounds it.
//!
//! Missing peers are installed from Debian (`docker.io buildah skopeo pigz docker-registry`);
//! dockerd (on a private socket) and a `docker-registry` (on a loopback port) are started here
//! and stopped at the end. Needs root.
//!
//! Sizes, by environment variable:
//! - `WCBUILD_BENCH_SIZES` (default `100M,1G,4G`): the byte sizes of the trees;
//! - `WCBUILD_BENCH_FILES` (default `1000,20000,100000`): the file counts of the small-file tree;
//! - `WCBUILD_BENCH_ROUNDS` (default 3): runs of each tool per workload, interleaved;
//! - `WCBUILD_BENCH_ONLY`: a comma-separated list of workload groups (`copy`, `noop`, `run`,
//!   `build-push`, `push`, `pull`, `save`, `dedup`, `windows`, `compress`);
//! - `WCBUILD_BENCH_DIR`: where inputs and stores go (default: the temp dir);
//!   `WCBUILD_BENCH_KEEP=1` keeps it.
//!
//! CI's small configuration: `WCBUILD_BENCH_SIZES=20M WCBUILD_BENCH_FILES=1000
//! WCBUILD_BENCH_ROUNDS=1`. The table is printed and written to `benches/results/DATE.md`.

#[cfg(unix)]
#[path = "../../tests/common/mod.rs"]
mod common;
#[cfg(unix)]
mod content;
#[cfg(unix)]
mod suite;

fn main() {
    #[cfg(unix)]
    suite::main();
    #[cfg(not(unix))]
    eprintln!("peers: the suite runs on Linux");
}
