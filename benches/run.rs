//! RUN steps side by side with `docker build` (Debian's engine and its BuildKit, started here on
//! a private socket), both run as processes, interleaved, `cargo bench --bench run` (rounds with
//! `WCBUILD_BENCH_ROUNDS`, default 5):
//!
//! (1) ten small `RUN echo` steps, `--no-cache`: the per-step overhead;
//! (2) one `RUN` writing 10,000 small files (a `node_modules`-like tree: 10,000 files of 200
//!     bytes to 4 KiB of text in 100 directories), `--no-cache`: its layer ready;
//! (3) (1) again with the cache: no container starts.
//!
//! Both builders use `--network none` (a new network namespace each step, the same work for
//! both) and the busybox fixture as the base. Prints the median and min–max of each, and the
//! ratio docker ÷ wcbuild. Needs root, runc and Debian's docker.io.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn wcbuild_bin() -> PathBuf {
    // The release binary cargo bench builds next to the bench.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("wcbuild");
    assert!(
        bin.exists(),
        "build the binary first: cargo build --release ({})",
        bin.display()
    );
    bin
}

fn time(mut cmd: Command) -> f64 {
    let t = Instant::now();
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let rounds: usize = std::env::var("WCBUILD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = common::tempdir("bench", "run");
    let root = dir.join("store");
    let base = dir.join("busybox.tar");
    fs::write(
        &base,
        wcbuild::ops::fixtures::busybox_archive(Path::new("/bin/busybox")).unwrap(),
    )
    .unwrap();
    let bin = wcbuild_bin();
    let ok = Command::new(&bin)
        .arg("--root")
        .arg(&root)
        .args(["load", "-i"])
        .arg(&base)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let d = common::start_dockerd();
    assert!(
        d.docker(&["load", "-i", base.to_str().unwrap()])
            .status
            .success()
    );
    let ten = dir.join("ten");
    fs::create_dir_all(&ten).unwrap();
    let mut df = String::from("FROM wcbuild.local/busybox:latest\n");
    for i in 0..10 {
        df.push_str(&format!("RUN echo step {i} > /step{i}\n"));
    }
    fs::write(ten.join("Dockerfile"), df).unwrap();
    let many = dir.join("many");
    fs::create_dir_all(&many).unwrap();
    // 100 directories, then 10,000 files written by one awk process (so both builders time
    // the layer, not 20,000 forks).
    fs::write(
        many.join("Dockerfile"),
        "FROM wcbuild.local/busybox:latest\n\
         RUN for i in $(seq 0 99); do mkdir -p /m/pkg$i; done && awk 'BEGIN { line = \"module.exports = function () { return 42; };\\n\"; \
         for (i = 0; i < 100; i++) for (j = 0; j < 100; j++) { f = \"/m/pkg\" i \"/f\" j \".js\"; n = (i * 37 + j * 101) % 3900 + 200; \
         s = \"\"; while (length(s) < n) s = s line; printf \"%s\", substr(s, 1, n) > f; close(f) } }'\n",
    )
    .unwrap();
    let ours = |ctx: &Path, no_cache: bool| {
        let mut c = Command::new(&bin);
        c.arg("--root")
            .arg(&root)
            .args(["build", "-q", "--network", "none", "-t", "bench:run"]);
        if no_cache {
            c.arg("--no-cache");
        }
        c.arg(ctx);
        c
    };
    let docker = |ctx: &Path, no_cache: bool| {
        let mut c = Command::new(if Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        });
        c.env("DOCKER_BUILDKIT", "1")
            .arg("-H")
            .arg(format!("unix://{}", d.socket.display()))
            .args(["build", "-q", "--network", "none", "-t", "bench:run"]);
        if no_cache {
            c.arg("--no-cache");
        }
        c.arg(ctx);
        c
    };
    // Warm both (the runtime probe, the base's unpacking, Docker's snapshots).
    time(ours(&ten, true));
    time(docker(&ten, true));
    time(ours(&ten, false));
    time(docker(&ten, false));
    let workloads: [(&str, &Path, bool); 3] = [
        ("ten RUN steps, --no-cache", &ten, true),
        ("one RUN writing 10,000 files, --no-cache", &many, true),
        ("ten RUN steps, cached", &ten, false),
    ];
    println!(
        "workload | wcbuild median (min–max) | docker build median (min–max) | docker ÷ wcbuild"
    );
    println!("---|---|---|---");
    for (name, ctx, no_cache) in workloads {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            a.push(time(ours(ctx, no_cache)));
            b.push(time(docker(ctx, no_cache)));
        }
        let (am, alo, ahi) = stats(&mut a);
        let (bm, blo, bhi) = stats(&mut b);
        println!(
            "{name} | {am:.3} s ({alo:.3}–{ahi:.3}) | {bm:.3} s ({blo:.3}–{bhi:.3}) | {:.2}x",
            bm / am
        );
    }
    let _ = fs::remove_dir_all(&dir);
}
