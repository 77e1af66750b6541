//! Builds side by side with `docker build` (the engine's BuildKit, `DOCKER_BUILDKIT=1`), one
//! run: `cargo bench --bench build` (size with `WCBUILD_BENCH_BYTES`, default 1 GiB).
//!
//! (1) `COPY . /data/` of a mixed context (half compressible, half random, plus 20,000 small
//!     files) into a new image, from scratch, cold (no cache);
//! (2) a no-op rebuild of a 20,000-file context (everything cached);
//! (3) the CI path: (1) into an empty store, then a push to a local `docker-registry`, against
//!     `docker build` + `docker push` of the same context to the same registry.
//! wcbuild writes gzip layers; Docker keeps layers uncompressed in its engine (it compresses
//! only when it pushes), so the comparison favours Docker. Needs `dockerd` and `docker`
//! (Debian's docker.io); without them only wcbuild's figures are printed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::Path;
use std::time::Instant;
use wcbuild::layer::Compression;
use wcbuild::ops::build::{BuildSettings, build};
use wcbuild::store::Store;

fn settings(context: &Path, no_cache: bool) -> BuildSettings {
    BuildSettings {
        context: context.to_path_buf(),
        file: None,
        tags: vec!["bench:latest".into()],
        build_args: Default::default(),
        target: None,
        platform: None,
        compression: Compression::Gzip(6),
        source_date_epoch: None,
        labels: Vec::new(),
        no_cache,
        contexts: Default::default(),
        registry: None,
        cache_from: Vec::new(),
        cache_to: None,
        cache_max: false,
        oci_runtime: None,
        network: wcbuild::ops::build::NetworkMode::Host,
        secrets: Default::default(),
        ssh: Default::default(),
        allow_insecure: false,
        engine: Default::default(),
    }
}

fn mixed_context(dir: &Path, total: u64) {
    fs::create_dir_all(dir.join("text")).unwrap();
    fs::create_dir_all(dir.join("random")).unwrap();
    let line =
        b"2026-11-22T12:00:00Z INFO request handled path=/api/v1/items status=200 bytes=5120\n";
    let mut written = 0u64;
    let mut i = 0;
    while written < total / 2 {
        let data: Vec<u8> = line.iter().copied().cycle().take(4 << 20).collect();
        fs::write(dir.join(format!("text/log{i:04}.txt")), &data).unwrap();
        written += data.len() as u64;
        i += 1;
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    i = 0;
    while written < total {
        let mut buf = vec![0u8; 4 << 20];
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        fs::write(dir.join(format!("random/r{i:04}.bin")), &buf).unwrap();
        written += buf.len() as u64;
        i += 1;
    }
    small_files(&dir.join("small"));
}

fn small_files(dir: &Path) {
    for d in 0..100 {
        let sub = dir.join(format!("d{d:03}"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..200 {
            fs::write(
                sub.join(format!("f{f:03}.txt")),
                format!("file {d} {f}\n").repeat(1 + f % 20),
            )
            .unwrap();
        }
    }
}

fn time<F: FnOnce() -> R, R>(f: F) -> (R, f64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_secs_f64())
}

fn main() {
    let total: u64 = std::env::var("WCBUILD_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let base = std::env::temp_dir().join(format!("wcbuild-bench-build-{}", std::process::id()));
    let big = base.join("big");
    mixed_context(&big, total);
    fs::write(big.join("Dockerfile"), "FROM scratch\nCOPY . /data/\n").unwrap();
    let many = base.join("many");
    small_files(&many);
    fs::write(many.join("Dockerfile"), "FROM scratch\nCOPY . /src/\n").unwrap();
    let _ = std::process::Command::new("tar")
        .args(["-cf", "/dev/null", "-C"])
        .arg(&base)
        .arg(".")
        .status();
    println!(
        "contexts: {:.0} MB mixed; 20,000 small files",
        total as f64 / 1e6
    );

    let store = Store::open(base.join("store")).unwrap();
    let (_, ours_cold) = time(|| build(&store, &settings(&big, true)).unwrap());
    println!("(1) wcbuild COPY, cold          {ours_cold:>7.2} s");
    build(&store, &settings(&many, false)).unwrap();
    let (_, ours_noop) = time(|| build(&store, &settings(&many, false)).unwrap());
    println!("(2) wcbuild no-op rebuild       {ours_noop:>7.3} s");

    // (3) A registry on loopback for the CI path.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let reg_dir = base.join("registry");
    fs::create_dir_all(&reg_dir).unwrap();
    fs::write(
        reg_dir.join("config.yml"),
        format!(
            "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: bench\n",
            reg_dir.join("data").display()
        ),
    )
    .unwrap();
    let mut registry = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(reg_dir.join("config.yml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok();
    let mut ours_ci = None;
    if registry.is_some() {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let ci_store = Store::open(base.join("ci-store")).unwrap();
        let (_, t) = time(|| {
            let mut s = settings(&big, true);
            s.tags = vec![format!("127.0.0.1:{port}/bench/wcbuild:1")];
            build(&ci_store, &s).unwrap();
            let client = wcbuild::registry::Client::new(Default::default());
            wcbuild::ops::registry::runtime()
                .block_on(wcbuild::ops::registry::push(
                    &ci_store,
                    &client,
                    &s.tags[0],
                    None,
                    &Default::default(),
                    &mut wcbuild::progress::Silent,
                ))
                .unwrap();
        });
        println!("(3) wcbuild build + push, cold  {t:>7.2} s");
        ours_ci = Some(t);
    } else {
        println!("docker-registry not installed: (3) is skipped");
    }

    let docker_ok = std::process::Command::new("dockerd")
        .arg("--version")
        .output()
        .is_ok();
    if !docker_ok {
        println!("dockerd not installed: the docker side is skipped");
        if let Some(r) = registry.as_mut() {
            let _ = r.kill();
            let _ = r.wait();
        }
        let _ = fs::remove_dir_all(&base);
        return;
    }
    let d = common::start_dockerd();
    let env = [("DOCKER_BUILDKIT", "1")];
    let (out, docker_cold) = time(|| {
        d.docker_env(
            &[
                "build",
                "--no-cache",
                "-q",
                "-t",
                "bench:docker",
                big.to_str().unwrap(),
            ],
            &env,
        )
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("(1) docker build COPY, cold     {docker_cold:>7.2} s");
    let out = d.docker_env(
        &["build", "-q", "-t", "bench:many", many.to_str().unwrap()],
        &env,
    );
    assert!(out.status.success());
    let (out, docker_noop) = time(|| {
        d.docker_env(
            &["build", "-q", "-t", "bench:many", many.to_str().unwrap()],
            &env,
        )
    });
    assert!(out.status.success());
    println!("(2) docker build no-op rebuild  {docker_noop:>7.3} s");
    let mut docker_ci = None;
    if ours_ci.is_some() {
        let tag = format!("127.0.0.1:{port}/bench/docker:1");
        let (ok, t) = time(|| {
            let b = d.docker_env(
                &[
                    "build",
                    "--no-cache",
                    "-q",
                    "-t",
                    &tag,
                    big.to_str().unwrap(),
                ],
                &env,
            );
            let p = d.docker_env(&["push", "-q", &tag], &env);
            (b.status.success(), p)
        });
        assert!(
            ok.0 && ok.1.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.1.stderr)
        );
        println!("(3) docker build + push, cold   {t:>7.2} s");
        docker_ci = Some(t);
    }
    println!("--");
    println!(
        "COPY cold: docker / wcbuild      {:.2}x  (target >= 1.3)",
        docker_cold / ours_cold
    );
    println!(
        "no-op:     docker / wcbuild      {:.2}x  (target >= 3, and wcbuild under 1 s)",
        docker_noop / ours_noop
    );
    if let (Some(o), Some(dk)) = (ours_ci, docker_ci) {
        println!(
            "CI path:   docker / wcbuild      {:.2}x  (target >= 1.5)",
            dk / o
        );
    }
    drop(d);
    if let Some(r) = registry.as_mut() {
        let _ = r.kill();
        let _ = r.wait();
    }
    let _ = fs::remove_dir_all(&base);
}
