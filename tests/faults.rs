//! Faults wcbuild must survive, repeated: `kill -9` at random moments of a build, a pull, a
//! push, a load and a prune (each time `check --repair` then `check` pass, nothing is left
//! in `ingest/` or `tmp/`, and the same command then succeeds); SIGINT and SIGTERM during a
//! build (stopped within a second, temp files removed, exit 130/143); a full disk while a
//! blob or a layer is written; a registry that trickles its bytes.
//!
//! The kill loop is a table ([`scenarios`]): one row per command, with what makes the command
//! do its work again (`reset`) and what proves it did (`verify`). `RUN` gets a row when the
//! build runs it.

#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wcbuild::store::Store;

fn tempdir(name: &str) -> PathBuf {
    common::tempdir("faults", name)
}

/// xorshift64*, seeded from the clock unless `WCBUILD_FAULTS_SEED` says (printed, so a
/// failing run can be repeated).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("WCBUILD_FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("kill moments from WCBUILD_FAULTS_SEED={seed}");
        Rng(seed | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

fn run(root: &Path, args: &[String]) -> (bool, String) {
    let out = common::wcbuild_command(root)
        .args(args)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wc(root: &Path, args: &[&str]) -> (i32, String, String) {
    let out = common::wcbuild_command(root).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `check --repair` then `check` pass and no leftover remains. Returns how many defects the
/// repair found (leftovers the open had not already removed).
fn repaired_and_sound(root: &Path, what: &str) -> usize {
    let (code, out, err) = wc(root, &["check", "--repair", "--json"]);
    assert_eq!(code, 0, "{what}: check --repair failed: {out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let found = v["defects"].as_array().map_or(0, |d| d.len());
    for d in v["defects"].as_array().unwrap() {
        let kind = d["kind"].as_str().unwrap();
        // A kill may leave leftovers, never a corrupt blob or a broken tag.
        assert!(
            matches!(kind, "stale-ingest" | "stale-temp"),
            "{what}: a kill left `{d}`"
        );
    }
    let (code, out, err) = wc(root, &["check"]);
    assert_eq!(code, 0, "{what}: check after repair: {out}{err}");
    assert!(err.contains("no defect"), "{what}: {err}");
    let left = common::leftovers(root);
    assert!(left.is_empty(), "{what}: left behind: {left:?}");
    found
}

/// No container of a wcbuild that is gone is left in the runtime's state, and nothing is
/// mounted under the store (each step's mounts live in its own mount namespace).
fn no_runtime_leftovers(root: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root_s = root.display().to_string();
    assert!(
        !mounts.lines().any(|l| l.contains(&root_s)),
        "mounts left under the store: {mounts}"
    );
    for state in ["/run/wcbuild/runc", "/run/wcbuild/crun"] {
        let Ok(rd) = std::fs::read_dir(state) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Container ids are `wcbuild-<pid>-…`: the pid must be alive.
            if let Some(pid) = name
                .strip_prefix("wcbuild-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            {
                assert!(
                    Path::new(&format!("/proc/{pid}")).exists(),
                    "a container of the dead process {pid} is left: {name}"
                );
            }
        }
    }
}

/// One command of the kill loop.
struct Scenario {
    name: &'static str,
    root: PathBuf,
    args: Vec<String>,
    /// Makes the next run do its work again (removes what the last one made).
    reset: Box<dyn Fn(&Path)>,
    /// Checks that a run that succeeded did what it should.
    verify: Box<dyn Fn(&Path)>,
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn rmi_and_prune(root: &Path, name: &str) {
    let _ = wc(root, &["rmi", name]);
    let (code, _, err) = wc(root, &["prune"]);
    assert_eq!(code, 0, "{err}");
}

fn tagged_digest(root: &Path, name: &str) -> Option<String> {
    let (code, out, _) = wc(root, &["inspect", name]);
    if code != 0 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v["digest"].as_str().map(str::to_string)
}

/// A registry manifest's digest, read with skopeo.
fn registry_digest(reference: &str) -> Option<String> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| wcbuild::store::sha256_digest(&out.stdout))
}

fn scenarios(registry: &common::DockerRegistry) -> Vec<Scenario> {
    let host = registry.host();
    let mut rows = Vec::new();

    // A build: COPY of a context with a few hundred files and 8 MiB of incompressible data.
    let root = tempdir("build-store");
    let ctx = tempdir("build-context");
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY . /app/\n").unwrap();
    std::fs::write(ctx.join("big.bin"), pseudo_random(8 << 20, 7)).unwrap();
    for i in 0..300 {
        let d = ctx.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), format!("file {i}\n")).unwrap();
    }
    rows.push(Scenario {
        name: "build (COPY)",
        root,
        args: vec![
            "build".into(),
            "--no-cache".into(),
            "-q".into(),
            "-t".into(),
            "faults/app:1".into(),
            ctx.display().to_string(),
        ],
        reset: Box::new(|root| rmi_and_prune(root, "faults/app:1")),
        verify: Box::new(|root| {
            assert!(
                tagged_digest(root, "faults/app:1").is_some(),
                "no tag after a build"
            );
        }),
    });

    // A build with RUN steps: containers, overlay mounts, unpacked layers and a cache mount
    // in flight when the kill lands.
    let root = tempdir("run-store");
    let base = root.with_extension("busybox.tar");
    std::fs::write(
        &base,
        wcbuild::ops::fixtures::busybox_archive(Path::new("/bin/busybox")).unwrap(),
    )
    .unwrap();
    let (code, _, err) = wc(&root, &["load", "-i", base.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let ctx = tempdir("run-context");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM wcbuild.local/busybox:latest\n\
         RUN --mount=type=cache,target=/cache i=0; while [ $i -lt 300 ]; do echo $i > /cache/$i; echo $i > /f$i; i=$((i+1)); done\n\
         RUN rm /f1 && mkdir -p /out && cp /f2 /out/\n",
    )
    .unwrap();
    rows.push(Scenario {
        name: "build (RUN)",
        root,
        args: vec![
            "build".into(),
            "--no-cache".into(),
            "-q".into(),
            "-t".into(),
            "faults/run:1".into(),
            ctx.display().to_string(),
        ],
        reset: Box::new(|root| rmi_and_prune(root, "faults/run:1")),
        verify: Box::new(|root| {
            assert!(
                tagged_digest(root, "faults/run:1").is_some(),
                "no tag after a build"
            );
            no_runtime_leftovers(root);
        }),
    });

    // A pull of a 3-layer image pushed to the registry once.
    let src = tempdir("pull-source");
    let source = Store::open(&src).unwrap();
    let pulled = format!("{host}/faults/pulled:1");
    let digest = common::random_image(&source, &pulled, 3, 3 << 20, 11);
    drop(source);
    let (code, _, err) = wc(&src, &["push", &pulled]);
    assert_eq!(code, 0, "{err}");
    let root = tempdir("pull-store");
    let name = pulled.clone();
    rows.push(Scenario {
        name: "pull",
        root,
        args: vec!["pull".into(), "-q".into(), pulled.clone()],
        reset: Box::new(move |root| rmi_and_prune(root, &name)),
        verify: {
            let name = pulled.clone();
            Box::new(move |root| {
                assert_eq!(tagged_digest(root, &name).as_deref(), Some(digest.as_str()))
            })
        },
    });

    // A push: each run pushes an image of new layers (a new seed), so every run uploads.
    let root = tempdir("push-store");
    let pushed = format!("{host}/faults/pushed:1");
    let seed = std::sync::Arc::new(AtomicU64::new(100));
    let make = {
        let (pushed, seed) = (pushed.clone(), seed.clone());
        move |root: &Path| {
            let store = Store::open(root).unwrap();
            let s = seed.fetch_add(1, Ordering::SeqCst);
            common::random_image(&store, &pushed, 3, 2 << 20, s);
        }
    };
    make(&root);
    rows.push(Scenario {
        name: "push",
        root,
        args: vec!["push".into(), "-q".into(), pushed.clone()],
        reset: Box::new(make),
        verify: {
            let pushed = pushed.clone();
            Box::new(move |root| {
                let local = tagged_digest(root, &pushed).unwrap();
                assert_eq!(
                    registry_digest(&pushed),
                    Some(local),
                    "the registry has another manifest"
                );
            })
        },
    });

    // A load of an OCI archive of a 3-layer image.
    let src = tempdir("load-source");
    let source = Store::open(&src).unwrap();
    let digest = common::random_image(&source, "faults/loaded:1", 3, 3 << 20, 21);
    drop(source);
    let archive = src.join("image.tar");
    let (code, _, err) = wc(
        &src,
        &["save", "faults/loaded:1", "-o", archive.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    rows.push(Scenario {
        name: "load",
        root: tempdir("load-store"),
        args: vec!["load".into(), "-i".into(), archive.display().to_string()],
        reset: Box::new(|root| rmi_and_prune(root, "faults/loaded:1")),
        verify: Box::new(move |root| {
            assert_eq!(
                tagged_digest(root, "faults/loaded:1").as_deref(),
                Some(digest.as_str())
            )
        }),
    });

    // A prune of 1500 unreachable blobs and an untagged image, beside a tagged one.
    let root = tempdir("prune-store");
    let store = Store::open(&root).unwrap();
    let kept = common::random_image(&store, "faults/kept:1", 2, 1 << 20, 31);
    drop(store);
    let garbage = |root: &Path| {
        let store = Store::open(root).unwrap();
        common::random_image(&store, "faults/garbage:1", 2, 1 << 20, 32);
        store.untag("docker.io/faults/garbage:1").unwrap();
        let dir = root.join("blobs/sha256");
        for i in 0..600u32 {
            let body = format!("garbage {i}");
            let d = wcbuild::store::sha256_digest(body.as_bytes());
            std::fs::write(dir.join(&d[7..]), body).unwrap();
        }
    };
    garbage(&root);
    rows.push(Scenario {
        name: "prune",
        root,
        args: vec!["prune".into()],
        reset: Box::new(garbage),
        verify: Box::new(move |root| {
            let store = Store::open(root).unwrap();
            assert!(store.blob_size(&kept).unwrap().is_some());
            let n = std::fs::read_dir(root.join("blobs/sha256"))
                .unwrap()
                .count();
            assert_eq!(n, 4, "prune left {n} blobs");
        }),
    });
    rows
}

/// At least 50 kills in all, at random moments of each command, in about four minutes.
#[test]
fn kill_9_at_random_moments_leaves_a_sound_store() {
    let registry = common::DockerRegistry::start("faults");
    let rows = scenarios(&registry);
    let mut rng = Rng::new();
    let per_row = 11;
    let budget = Duration::from_secs(420);
    let start = Instant::now();
    let mut kills = 0;
    let mut with_leftovers = 0;
    let mut left_by_kill = 0;
    let mut finished_first = 0;
    for row in &rows {
        (row.reset)(&row.root);
        // How long the command takes when nothing stops it.
        let t0 = Instant::now();
        let (ok, err) = run(&row.root, &row.args);
        // The shortest run seen so far: kills land before it ends, however busy the machine.
        let mut took = t0.elapsed();
        assert!(ok, "{}: {err}", row.name);
        (row.verify)(&row.root);
        eprintln!("{}: {:?} uncut", row.name, took);
        for i in 0..per_row {
            (row.reset)(&row.root);
            let at = Duration::from_micros(rng.below(took.as_micros() as u64 * 9 / 10 + 1));
            let mut child = common::wcbuild_command(&row.root)
                .args(&row.args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(at);
            if child.try_wait().unwrap().is_some() {
                finished_first += 1;
            }
            let _ = child.kill();
            let _ = child.wait();
            kills += 1;
            // What the killed process left, which the next open removes.
            if !common::leftovers(&row.root).is_empty() {
                left_by_kill += 1;
            }
            let what = format!("{} kill {i} at {at:?}", row.name);
            if repaired_and_sound(&row.root, &what) > 0 {
                with_leftovers += 1;
            }
            // The same command now succeeds.
            let t0 = Instant::now();
            let (ok, err) = run(&row.root, &row.args);
            assert!(ok, "{what}: the command after the kill failed: {err}");
            took = took.min(t0.elapsed());
            (row.verify)(&row.root);
            repaired_and_sound(&row.root, &format!("{what}, run again"));
        }
        assert!(
            start.elapsed() < budget,
            "the kill loop took {:?}, more than {budget:?}",
            start.elapsed()
        );
    }
    eprintln!(
        "{kills} kills in {:?}; {left_by_kill} left partial files or scratch directories (removed by the next open), {with_leftovers} left something only check --repair removed; {finished_first} came after the command had ended",
        start.elapsed()
    );
    assert!(kills >= 50);
    assert!(
        finished_first * 3 < kills,
        "{finished_first} of {kills} kills came too late to test anything"
    );
}

/// A build of a large context: SIGINT or SIGTERM stops it within a second, with exit code
/// 130 or 143, and nothing of it is left in the store.
#[test]
fn sigint_and_sigterm_stop_a_build_within_a_second() {
    let ctx = tempdir("signal-context");
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY . /app/\n").unwrap();
    for i in 0..4 {
        std::fs::write(
            ctx.join(format!("big{i}.bin")),
            pseudo_random(48 << 20, 40 + i),
        )
        .unwrap();
    }
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let root = tempdir("signal-store");
        let child = common::wcbuild_command(&root)
            .args(["build", "--no-cache", "-t", "faults/sig:1"])
            .arg(&ctx)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the layer is being written.
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::read_dir(root.join("ingest")).map_or(0, |r| r.count()) == 0 {
            assert!(Instant::now() < deadline, "the build wrote no blob");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        let sent = Instant::now();
        // SAFETY: a signal to the child we started.
        unsafe {
            libc::kill(child.id() as libc::pid_t, sig);
        }
        let out = child.wait_with_output().unwrap();
        let took = sent.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "signal {sig}: {err}");
        assert!(
            took < Duration::from_secs(1),
            "signal {sig}: stopped after {took:?}"
        );
        assert!(err.contains("stopped by SIG"), "{err}");
        let left = common::leftovers(&root);
        assert!(left.is_empty(), "signal {sig}: left {left:?}");
        let (status, _, err) = wc(&root, &["check"]);
        assert_eq!(status, 0, "{err}");
        assert!(tagged_digest(&root, "faults/sig:1").is_none());
        eprintln!("signal {sig}: exit {code} after {took:?}");
    }
}

/// A tmpfs of `size` mounted at a new directory; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempdir("tmpfs");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs needs root");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn blob_files(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("blobs/sha256"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// A store on a full disk: the build (a layer) and the load (blobs) fail with an error that
/// names the store and says the disk is full; no partial blob stays; `check` passes; the
/// store works again once there is room.
#[test]
fn a_full_disk_fails_clearly_and_leaves_a_sound_store() {
    let fs = Tmpfs::mount("10m");
    let root = fs.0.join("store");
    let ctx = tempdir("full-context");
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY . /\n").unwrap();
    std::fs::write(ctx.join("big.bin"), pseudo_random(12 << 20, 50)).unwrap();
    let (code, _, err) = wc(
        &root,
        &["build", "-q", "-t", "faults/full:1", ctx.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("the store `{}` is full", root.display())),
        "{err}"
    );
    assert!(
        common::leftovers(&root).is_empty(),
        "{:?}",
        common::leftovers(&root)
    );
    assert!(blob_files(&root).is_empty(), "{:?}", blob_files(&root));
    let (code, _, err) = wc(&root, &["check"]);
    assert_eq!(code, 0, "{err}");

    // A load of an archive larger than the disk: the blobs that fit enter whole, none partly.
    let src = tempdir("full-source");
    let source = Store::open(&src).unwrap();
    common::random_image(&source, "faults/big:1", 4, 2 << 20, 51);
    drop(source);
    let archive = src.join("big.tar");
    let (code, _, err) = wc(
        &src,
        &["save", "faults/big:1", "-o", archive.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let filler = fs.0.join("filler");
    std::fs::write(&filler, vec![0u8; 5 << 20]).unwrap();
    let (code, _, err) = wc(&root, &["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("the store `{}` is full", root.display())),
        "{err}"
    );
    assert!(common::leftovers(&root).is_empty());
    let (code, out, err) = wc(&root, &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(tagged_digest(&root, "faults/big:1").is_none());
    // Room again: the same load succeeds.
    std::fs::remove_file(&filler).unwrap();
    let (code, _, err) = wc(&root, &["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = wc(&root, &["check"]);
    assert_eq!(code, 0, "{err}");
}

/// A registry behind a proxy that sends its answers a byte at a time, slowly: the pull ends
/// with a timeout that names the host, in bounded time, and leaves nothing in the store.
#[test]
fn a_registry_that_trickles_bytes_times_out_naming_the_host() {
    use std::io::{Read, Write};
    let registry = common::DockerRegistry::start("faults-slow");
    let src = tempdir("slow-source");
    let source = Store::open(&src).unwrap();
    let name = format!("{}/faults/slow:1", registry.host());
    common::random_image(&source, &name, 1, 1 << 20, 61);
    drop(source);
    let (code, _, err) = wc(&src, &["push", &name]);
    assert_eq!(code, 0, "{err}");
    // The proxy: requests go through as they are, answers come back 16 bytes every 200 ms.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = registry.port;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { return };
            std::thread::spawn(move || {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                });
                let (mut client, mut server) = (client, server);
                let mut buf = [0u8; 16];
                loop {
                    match server.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if client.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
        }
    });
    let root = tempdir("slow-store");
    let via = format!("127.0.0.1:{port}/faults/slow:1");
    let t0 = Instant::now();
    let out = common::wcbuild_command(&root)
        .args(["pull", "-q", &via])
        .env("WCBUILD_REGISTRY_STALL_SECS", "3")
        .output()
        .unwrap();
    let took = t0.elapsed();
    let (code, err) = (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(
        err.contains("timed out") || err.contains("too slow"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "the pull took {took:?}");
    assert!(common::leftovers(&root).is_empty());
    assert!(blob_files(&root).is_empty());
    eprintln!("slow registry: failed after {took:?}: {err}");
}
