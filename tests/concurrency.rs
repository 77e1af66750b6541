//! Several wcbuild *processes* on one store at once: builds sharing a base (two of them
//! writing the same layer), a pull, a push, a prune and a check, all started together, must
//! all succeed without a deadlock, lose no tag, remove no blob a build needs and leave a store
//! `check` passes; many processes tagging at once lose no tag while readers never see a
//! partial `index.json`.

#![cfg(unix)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use wcbuild::store::Store;

fn tempdir(name: &str) -> PathBuf {
    common::tempdir("concurrency", name)
}

fn wc(root: &Path, args: &[&str]) -> (i32, String, String) {
    let out = common::wcbuild_command(root).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn spawn(root: &Path, args: &[String]) -> Child {
    common::wcbuild_command(root)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for every child until `deadline`; a child still running then means a deadlock.
fn wait_all(children: Vec<(String, Child)>, deadline: Instant) -> Vec<(String, i32, String)> {
    let mut out = Vec::new();
    for (name, mut child) in children {
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let o = child.wait_with_output().unwrap();
                panic!(
                    "`{name}` still runs at the deadline (a deadlock?): {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = child.wait_with_output().unwrap();
        out.push((
            name,
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ));
    }
    out
}

fn digest_of(root: &Path, name: &str) -> Option<String> {
    let (code, out, _) = wc(root, &["inspect", name]);
    if code != 0 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v["digest"].as_str().map(str::to_string)
}

/// Eight processes: four builds from one base (two with the same context, so the same layer
/// is written twice at once), a pull, a push, a prune and a check.
#[test]
fn eight_processes_on_one_store() {
    let registry = common::DockerRegistry::start("concurrency");
    let host = registry.host();
    let root = tempdir("store");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nanoserver.tar");
    let (code, _, err) = wc(&root, &["load", "-i", fixtures.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // An image to push, and one in the registry to pull.
    let pushed = format!("{host}/conc/pushed:1");
    let store = Store::open(&root).unwrap();
    let pushed_digest = common::random_image(&store, &pushed, 3, 2 << 20, 1);
    // Garbage for the prune: an untagged image.
    common::random_image(&store, "conc/garbage:1", 2, 1 << 20, 2);
    store.untag("docker.io/conc/garbage:1").unwrap();
    drop(store);
    let src = tempdir("source");
    let pulled = format!("{host}/conc/pulled:1");
    let source = Store::open(&src).unwrap();
    let pulled_digest = common::random_image(&source, &pulled, 3, 2 << 20, 3);
    drop(source);
    let (code, _, err) = wc(&src, &["push", &pulled]);
    assert_eq!(code, 0, "{err}");
    // Four build contexts: b0 and b3 are the same files.
    let mut contexts = Vec::new();
    for i in 0..4 {
        let ctx = tempdir(&format!("ctx{i}"));
        let same = if i == 3 { 0 } else { i };
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM mcr.microsoft.com/windows/nanoserver:ltsc2022\nCOPY . /app/\nCMD [\"cmd\"]\n",
        )
        .unwrap();
        let mut x = 0x9e37_79b9_u64 + same as u64;
        let data: Vec<u8> = (0..(3 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(ctx.join("data.bin"), data).unwrap();
        std::fs::write(ctx.join("name.txt"), format!("context {same}\n")).unwrap();
        contexts.push(ctx);
    }
    let mut jobs: Vec<(String, Vec<String>)> = Vec::new();
    for (i, ctx) in contexts.iter().enumerate() {
        jobs.push((
            format!("build {i}"),
            vec![
                "build".into(),
                "--no-cache".into(),
                "-q".into(),
                "--source-date-epoch".into(),
                "1700000000".into(),
                "--platform".into(),
                "windows/amd64:ltsc2022".into(),
                "-t".into(),
                format!("conc/b{i}:1"),
                ctx.display().to_string(),
            ],
        ));
    }
    jobs.push((
        "pull".into(),
        vec!["pull".into(), "-q".into(), pulled.clone()],
    ));
    jobs.push((
        "push".into(),
        vec!["push".into(), "-q".into(), pushed.clone()],
    ));
    jobs.push(("prune".into(), vec!["prune".into()]));
    jobs.push(("check".into(), vec!["check".into()]));
    let started = Instant::now();
    let children: Vec<_> = jobs
        .iter()
        .map(|(name, args)| (name.clone(), spawn(&root, args)))
        .collect();
    let results = wait_all(children, started + Duration::from_secs(240));
    for (name, code, err) in &results {
        assert_eq!(*code, 0, "`{name}` failed: {err}");
    }
    eprintln!("eight processes done in {:?}", started.elapsed());
    // No tag lost: every build's, the pulled one, the pushed one, the base's.
    let mut built = Vec::new();
    for i in 0..4 {
        built.push(digest_of(&root, &format!("conc/b{i}:1")).expect("a build's tag is missing"));
    }
    assert_eq!(built[0], built[3], "the same inputs gave two images");
    assert_ne!(built[0], built[1]);
    assert_eq!(digest_of(&root, &pulled), Some(pulled_digest));
    assert_eq!(digest_of(&root, &pushed), Some(pushed_digest.clone()));
    assert!(digest_of(&root, "mcr.microsoft.com/windows/nanoserver:ltsc2022").is_some());
    let (code, out, err) = wc(&root, &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    // The garbage went (whenever the prune ran, it could not see a build's blobs as garbage:
    // check passed above, so every tag reaches whole images).
    let (code, _, err) = wc(&root, &["prune"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("removed 0 blob(s)"),
        "the first prune missed garbage: {err}"
    );
    let (code, out, err) = wc(&root, &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(common::leftovers(&root).is_empty());
}

/// Sixteen processes tag at once while others read `index.json` (through `images --json`,
/// and raw, in a loop): no tag is lost and no reader ever sees a partial or invalid file.
#[test]
fn tagging_processes_lose_nothing_and_readers_never_see_a_partial_index() {
    let root = tempdir("tags");
    let store = Store::open(&root).unwrap();
    common::random_image(&store, "conc/src:1", 1, 1000, 9);
    drop(store);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let raw_reader = {
        let (root, stop) = (root.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let bytes = std::fs::read(root.join("index.json")).unwrap();
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("a reader saw a partial index.json: {e}"));
                assert!(v["manifests"].is_array());
                reads += 1;
            }
            reads
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|i| {
            let args: Vec<String> = vec!["images".into(), "--json".into()];
            (format!("reader {i}"), args)
        })
        .collect();
    let started = Instant::now();
    let mut children = Vec::new();
    for i in 0..16 {
        let args: Vec<String> = vec!["tag".into(), "conc/src:1".into(), format!("conc/t{i}:1")];
        children.push((format!("tag {i}"), spawn(&root, &args)));
    }
    let mut reader_runs = 0;
    while children
        .iter_mut()
        .any(|(_, c)| c.try_wait().unwrap().is_none())
    {
        let batch: Vec<_> = readers
            .iter()
            .map(|(n, a)| (n.clone(), spawn(&root, a)))
            .collect();
        for (name, code, err) in wait_all(batch, Instant::now() + Duration::from_secs(60)) {
            assert_eq!(code, 0, "`{name}`: {err}");
            reader_runs += 1;
        }
    }
    for (name, code, err) in wait_all(children, started + Duration::from_secs(120)) {
        assert_eq!(code, 0, "`{name}`: {err}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let raw_reads = raw_reader.join().unwrap();
    let store = Store::open(&root).unwrap();
    let refs: std::collections::BTreeSet<String> = store
        .entries()
        .unwrap()
        .into_iter()
        .filter_map(|e| e.reference().map(str::to_string))
        .collect();
    for i in 0..16 {
        assert!(
            refs.contains(&format!("docker.io/conc/t{i}:1")),
            "tag {i} was lost: {refs:?}"
        );
    }
    assert_eq!(refs.len(), 17);
    eprintln!("{raw_reads} raw reads and {reader_runs} `images` runs during the tagging");
    assert!(raw_reads > 0);
}
