//! The store against a real file system: layout readable as an OCI image layout, blobs that
//! only enter when their bytes match, atomic and locked index updates across processes, prune.

mod common;

use std::io::Write;
use wcbuild::store::{IndexEntry, Store, StoreError, sha256_digest};

fn tempdir(name: &str) -> std::path::PathBuf {
    common::tempdir("store", name)
}

fn blobs_in(store: &Store) -> usize {
    std::fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .count()
}

fn ingest_in(store: &Store) -> usize {
    std::fs::read_dir(store.root().join("ingest"))
        .unwrap()
        .count()
}

#[test]
fn a_new_store_is_an_oci_layout() {
    let dir = tempdir("layout");
    let store = Store::open(&dir).unwrap();
    let layout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"], serde_json::json!([]));
    assert!(dir.join("wcbuild-store-v1").is_file());
    assert!(store.entries().unwrap().is_empty());
}

#[test]
fn blobs_enter_only_when_they_match() {
    let dir = tempdir("blobs");
    let store = Store::open(&dir).unwrap();
    let digest = store.put_blob(b"hello", None).unwrap();
    assert_eq!(digest, sha256_digest(b"hello"));
    assert_eq!(store.read_blob(&digest).unwrap(), b"hello");
    // Wrong digest announced: refused, nothing stored, no ingest left over.
    let wrong = sha256_digest(b"other");
    let err = store
        .put_reader(&b"tampered"[..], Some(&wrong), None)
        .unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&wrong));
    assert_eq!(blobs_in(&store), 1);
    assert_eq!(ingest_in(&store), 0);
    // Wrong size.
    let d = sha256_digest(b"abc");
    assert!(matches!(
        store
            .put_reader(&b"abc"[..], Some(&d), Some(4))
            .unwrap_err(),
        StoreError::SizeMismatch { .. }
    ));
    assert_eq!(ingest_in(&store), 0);
    // A writer dropped halfway (a broken download) leaves nothing.
    {
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"partial").unwrap();
        assert_eq!(ingest_in(&store), 1);
    }
    assert_eq!(ingest_in(&store), 0);
    assert_eq!(blobs_in(&store), 1);
    assert!(matches!(
        store.blob_path("sha256:abc"),
        Err(StoreError::InvalidDigest(_))
    ));
    // A blob its writer hashes (a layer writer) takes that writer's digest, and cannot be
    // committed without one.
    let mut w = store.blob_writer().unwrap();
    w.hashed_by_writer();
    w.write_all(b"layer").unwrap();
    assert!(matches!(
        w.commit(None, None),
        Err(StoreError::InvalidDigest(_))
    ));
    assert_eq!(ingest_in(&store), 0);
    let mut w = store.blob_writer().unwrap();
    w.hashed_by_writer();
    w.write_all(b"layer").unwrap();
    let d = w.commit(Some(&sha256_digest(b"layer")), Some(5)).unwrap();
    assert_eq!(store.read_blob(&d).unwrap(), b"layer");
}

#[test]
fn tags_are_index_entries_with_the_full_reference() {
    let dir = tempdir("tags");
    let store = Store::open(&dir).unwrap();
    let d = store.put_blob(b"{}", None).unwrap();
    let e = IndexEntry::new("application/vnd.oci.image.manifest.v1+json", &d, 2);
    store.tag("docker.io/library/app:1.0", e.clone()).unwrap();
    store.tag("docker.io/library/app:1.0", e.clone()).unwrap();
    store.tag("docker.io/library/app:2.0", e).unwrap();
    let entries = store.entries().unwrap();
    assert_eq!(entries.len(), 2);
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        raw["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "docker.io/library/app:1.0"
    );
    assert!(store.untag("docker.io/library/app:1.0").unwrap());
    assert!(!store.untag("docker.io/library/app:1.0").unwrap());
    // A tag must point at a blob the store has.
    let missing = IndexEntry::new("x", &sha256_digest(b"missing"), 1);
    assert!(matches!(
        store.tag("docker.io/library/x:1", missing),
        Err(StoreError::BlobNotFound(_))
    ));
}

#[test]
fn concurrent_index_updates_lose_nothing() {
    let dir = tempdir("concurrent");
    let store = Store::open(&dir).unwrap();
    let d = store.put_blob(b"{}", None).unwrap();
    drop(store);
    // Several threads, each with its own store handle (own locks), tag at once.
    std::thread::scope(|s| {
        for t in 0..4 {
            let dir = dir.clone();
            let d = d.clone();
            s.spawn(move || {
                let store = Store::open(&dir).unwrap();
                for i in 0..25 {
                    let e = IndexEntry::new("application/vnd.oci.image.manifest.v1+json", &d, 2);
                    store
                        .tag(&format!("docker.io/library/t{t}:{i}"), e)
                        .unwrap();
                }
            });
        }
    });
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.entries().unwrap().len(), 100);
}

#[test]
fn prune_keeps_what_tags_reach_and_waits_for_no_writer() {
    let dir = tempdir("prune");
    let store = Store::open(&dir).unwrap();
    let layer = store.put_blob(b"layer bytes", None).unwrap();
    let config = store.put_blob(b"{\"os\":\"linux\"}", None).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"config":{{"digest":"{config}","size":14}},"layers":[{{"digest":"{layer}","size":11}}]}}"#
    );
    let m = store.put_blob(manifest.as_bytes(), None).unwrap();
    let orphan = store.put_blob(b"nobody wants me", None).unwrap();
    store
        .tag(
            "docker.io/library/a:1",
            IndexEntry::new(
                "application/vnd.oci.image.manifest.v1+json",
                &m,
                manifest.len() as u64,
            ),
        )
        .unwrap();
    // Another open store makes prune wait (in another process), never fail or go ahead.
    let other = Store::open(&dir).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wcbuild"))
        .arg("--root")
        .arg(&dir)
        .arg("prune")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(
        child.try_wait().unwrap().is_none(),
        "prune went ahead while another wcbuild had the store open"
    );
    assert!(store.blob_size(&orphan).unwrap().is_some());
    drop(other);
    drop(store);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("waiting for the other wcbuild processes"),
        "{err}"
    );
    assert!(err.contains("removed 1 blob(s)"), "{err}");
    let store = Store::open(&dir).unwrap();
    for d in [&layer, &config, &m] {
        assert!(store.blob_size(d).unwrap().is_some());
    }
    assert!(store.blob_size(&orphan).unwrap().is_none());
    let report = store.prune(&[]).unwrap();
    assert_eq!(report.blobs_removed, 0);
}

/// A partial write nobody holds is removed by prune however young it is; a dead process's
/// leftovers (`tmp/`, `ingest/`, staging, temp files) go at the next open; a live one's stay.
#[test]
#[cfg_attr(
    windows,
    ignore = "tells dead processes by their pid, which Windows builds do not (they leave leftovers to prune and check)"
)]
fn leftovers_of_dead_processes_are_cleaned_and_prune_removes_stale_ingest() {
    let dir = tempdir("leftovers");
    let store = Store::open(&dir).unwrap();
    drop(store);
    let dead = dead_pid();
    let me = std::process::id();
    let dead_files = [
        format!("tmp/rootfs-{dead}-0-1"),
        format!("ingest/blob-{dead}-3-ff"),
        format!("unpacked/.{}.wcbuild-extract-{dead}-0", "a".repeat(64)),
        format!(".tmp-{dead}-1-2"),
    ];
    for f in &dead_files {
        let p = dir.join(f);
        if f.contains("tmp/") || f.contains("extract") {
            std::fs::create_dir_all(p.join("deep/er")).unwrap();
            std::fs::write(p.join("deep/er/file"), b"x").unwrap();
        } else {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"partial").unwrap();
        }
    }
    let live_tmp = dir.join(format!("tmp/rootfs-{me}-0-1"));
    std::fs::create_dir_all(&live_tmp).unwrap();
    let live_ingest = dir.join(format!("ingest/blob-{me}-9-ab"));
    std::fs::write(&live_ingest, b"young, unheld").unwrap();
    let store = Store::open(&dir).unwrap();
    for f in &dead_files {
        assert!(
            !dir.join(f).exists(),
            "`{f}` of a dead process survived an open"
        );
    }
    assert!(live_tmp.exists() && live_ingest.exists());
    // Prune holds the store alone: the unheld ingest file is stale, young as it is.
    let report = store.prune(&[]).unwrap();
    assert_eq!(report.ingest_removed, 1, "{report:?}");
    assert_eq!(report.temp_removed, 1, "{report:?}");
    assert!(!live_ingest.exists() && !live_tmp.exists());
}

/// A process id no process has.
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

fn check_json(dir: &std::path::Path, repair: bool) -> (i32, serde_json::Value) {
    let mut args = vec!["check", "--json"];
    if repair {
        args.push("--repair");
    }
    let (code, out, err) = common::wcbuild_at(dir, &args);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, v)
}

fn kinds(v: &serde_json::Value) -> Vec<String> {
    v["defects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect()
}

/// `check` re-hashes every blob and walks every tag; `--repair` removes the corrupt blob and
/// the tag it broke, keeps every blob that verifies, and leaves a store `check` passes.
#[test]
fn check_finds_a_corrupt_layer_and_repair_removes_only_what_is_broken() {
    let dir = tempdir("check-corrupt");
    let store = Store::open(&dir).unwrap();
    let good = common::random_image(&store, "good:1", 2, 300_000, 1);
    let bad = common::random_image(&store, "bad:1", 2, 200_000, 2);
    drop(store);
    let (code, v) = check_json(&dir, false);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["blobs"], 8);
    assert_eq!(v["tags"], 2);
    assert_eq!(v["defects"], serde_json::json!([]));
    // Flip one byte of a layer of `bad:1`.
    let store = Store::open(&dir).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&bad).unwrap()).unwrap();
    let layer = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = store.blob_path(&layer).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    drop(store);
    let (code, out, _) = common::wcbuild_at(&dir, &["check"]);
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!("corrupt-blob: blobs/sha256/{}", &layer[7..])),
        "{out}"
    );
    assert!(
        out.contains("tag `docker.io/library/bad:1` is broken"),
        "{out}"
    );
    assert!(!out.contains("good:1"), "{out}");
    let (code, v) = check_json(&dir, false);
    assert_eq!(code, 1);
    assert_eq!(
        kinds(&v),
        ["corrupt-blob", "corrupt-blob", "broken-tag"],
        "{v}"
    );
    assert!(
        v["defects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["repaired"] == false)
    );
    let (code, v) = check_json(&dir, true);
    assert_eq!(code, 0, "{v}");
    assert!(
        v["defects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["repaired"] == true)
    );
    let (code, v) = check_json(&dir, false);
    assert_eq!(code, 0, "{v}");
    let store = Store::open(&dir).unwrap();
    assert!(store.blob_size(&layer).unwrap().is_none());
    // Every blob that verifies is still there, the broken image's other blobs too.
    assert!(store.blob_size(&bad).unwrap().is_some());
    let refs: Vec<_> = store
        .entries()
        .unwrap()
        .iter()
        .filter_map(|e| e.reference().map(str::to_string))
        .collect();
    assert_eq!(refs, ["docker.io/library/good:1"]);
    assert!(store.blob_size(&good).unwrap().is_some());
}

/// Missing blobs, sizes that disagree, documents that do not parse, bad cache records and
/// stray files are each reported with what they name; repair then leaves a sound store.
#[test]
fn check_reports_each_kind_of_defect_by_name() {
    let dir = tempdir("check-kinds");
    let store = Store::open(&dir).unwrap();
    let m1 = common::random_image(&store, "nocfg:1", 1, 1000, 3);
    let m2 = common::random_image(&store, "ok:1", 1, 1000, 4);
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&m1).unwrap()).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap().to_string();
    std::fs::remove_file(store.blob_path(&config).unwrap()).unwrap();
    // A tag whose size disagrees with its manifest.
    let e = store
        .entries()
        .unwrap()
        .into_iter()
        .find(|e| e.digest == m2)
        .unwrap();
    let mut lying = e.clone();
    lying.size += 1;
    store.tag("docker.io/library/lying:1", lying).unwrap();
    // A step record naming a missing layer, one that does not parse, a compressed-form
    // record naming a missing blob, a stray file in blobs/.
    let missing = sha256_digest(b"never stored");
    let cache = store.cache_dir();
    std::fs::create_dir_all(cache.join("steps")).unwrap();
    std::fs::write(
        cache.join("steps/abc123.json"),
        serde_json::json!({"layer": {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": missing, "size": 5}, "diff_id": missing}).to_string(),
    )
    .unwrap();
    std::fs::write(cache.join("steps/def456.json"), b"{not json").unwrap();
    let cdir = cache.join("compressed").join("b".repeat(64));
    std::fs::create_dir_all(&cdir).unwrap();
    std::fs::write(
        cdir.join("gzip"),
        serde_json::json!({"digest": missing, "size": 3, "mediaType": "x"}).to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("blobs/sha256/not-a-digest"), b"?").unwrap();
    drop(store);
    let (code, out, _) = common::wcbuild_at(&dir, &["check"]);
    assert_eq!(code, 1);
    for want in [
        format!("missing-blob: index.json: tag `docker.io/library/nocfg:1` → config `{config}`: blob `{config}` is not in the store"),
        format!("size-mismatch: index.json: tag `docker.io/library/lying:1`: `{m2}` is"),
        "broken-tag: index.json: tag `docker.io/library/nocfg:1` is broken".to_string(),
        "broken-tag: index.json: tag `docker.io/library/lying:1` is broken".to_string(),
        format!("bad-record: cache/v1/steps/abc123.json: step record `cache/v1/steps/abc123.json` names a blob that cannot be used: blob `{missing}` is not in the store"),
        "bad-record: cache/v1/steps/def456.json: step record `cache/v1/steps/def456.json` does not parse".to_string(),
        format!("bad-record: cache/v1/compressed/{b}/gzip", b = "b".repeat(64)),
        "stray-blob: blobs/sha256/not-a-digest: `blobs/sha256/not-a-digest` is a file whose name is not a sha256 digest".to_string(),
    ] {
        assert!(out.contains(&want), "missing `{want}` in:\n{out}");
    }
    assert!(!out.contains("ok:1"), "{out}");
    let (code, v) = check_json(&dir, true);
    assert_eq!(code, 0, "{v}");
    let (code, v) = check_json(&dir, false);
    assert_eq!(code, 0, "{v}");
    let store = Store::open(&dir).unwrap();
    let refs: Vec<_> = store
        .entries()
        .unwrap()
        .iter()
        .filter_map(|e| e.reference().map(str::to_string))
        .collect();
    assert_eq!(refs, ["docker.io/library/ok:1"]);
}

/// `check` takes the store to itself: while another wcbuild has it open it says so and
/// waits, and the other process is not disturbed.
#[test]
fn check_waits_for_a_running_wcbuild() {
    let dir = tempdir("check-waits");
    let store = Store::open(&dir).unwrap();
    common::random_image(&store, "a:1", 1, 1000, 5);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wcbuild"))
        .arg("--root")
        .arg(&dir)
        .arg("check")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(child.try_wait().unwrap().is_none(), "check did not wait");
    // The open store still works while check waits.
    common::random_image(&store, "b:1", 1, 1000, 6);
    drop(store);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("waiting for the other wcbuild processes"),
        "{err}"
    );
    assert!(err.contains("2 tag(s)"), "{err}");
}

#[test]
fn a_layer_is_compressed_once_and_remembered() {
    let dir = tempdir("compress-once");
    let store = Store::open(&dir).unwrap();
    let tar: Vec<u8> = (0..200_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    let diff_id = store.put_blob(&tar, None).unwrap();
    let gz = wcbuild::layer::Compression::Gzip(6);
    let first = wcbuild::ops::images::compressed_layer(&store, &diff_id, gz).unwrap();
    assert_eq!(
        first.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let blobs = blobs_in(&store);
    // The compressed blob decompresses to the layer.
    let mut back = Vec::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(store.open_blob(&first.digest).unwrap())
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, tar);
    // Asked again: the record answers; nothing is compressed or written.
    let record = dir
        .join("cache/v1/compressed")
        .join(diff_id.trim_start_matches("sha256:"));
    assert!(record.is_dir());
    // The record is the only way through: with the uncompressed layer gone, compressing it
    // again could not even start.
    let plain = store.blob_path(&diff_id).unwrap();
    let aside = dir.join("aside");
    std::fs::rename(&plain, &aside).unwrap();
    let second = wcbuild::ops::images::compressed_layer(&store, &diff_id, gz).unwrap();
    assert_eq!(first, second);
    assert_eq!(blobs_in(&store), blobs - 1);
    std::fs::rename(&aside, &plain).unwrap();
    assert_eq!(blobs_in(&store), blobs);
    // zstd is another variant, remembered separately.
    let z = wcbuild::ops::images::compressed_layer(
        &store,
        &diff_id,
        wcbuild::layer::Compression::Zstd(3),
    )
    .unwrap();
    assert_ne!(z.digest, first.digest);
}

/// `unpacked/<diff_id>/` is compared with its layer: an unchanged unpacking passes, a file
/// changed in it or an unpacking of a layer the store lacks is reported, and repair removes
/// it (it is derived data).
#[test]
#[cfg_attr(
    windows,
    ignore = "unpacks a layer as an overlayfs lower directory, which only Linux hosts do"
)]
fn check_compares_unpacked_layers_with_their_layer() {
    let dir = tempdir("check-unpacked");
    let ctx = tempdir("check-unpacked-ctx");
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY . /app/\n").unwrap();
    std::fs::create_dir_all(ctx.join("sub")).unwrap();
    std::fs::write(ctx.join("a.txt"), "alpha").unwrap();
    std::fs::write(ctx.join("sub/b.txt"), "beta").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("../a.txt", ctx.join("sub/link")).unwrap();
    let (code, _, err) =
        common::wcbuild_at(&dir, &["build", "-q", "-t", "u:1", ctx.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let store = Store::open(&dir).unwrap();
    let entry = store.lookup("docker.io/library/u:1").unwrap().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&entry.digest).unwrap()).unwrap();
    let config: serde_json::Value = serde_json::from_slice(
        &store
            .read_blob(manifest["config"]["digest"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let diff_id = config["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let target = dir.join("unpacked").join(&diff_id[7..]);
    wcbuild::layer::unpack_overlay(
        store.open_blob(layer).unwrap(),
        &target,
        &Default::default(),
    )
    .unwrap();
    // An unpacking of a layer no image has.
    let stranger = dir.join("unpacked").join("c".repeat(64));
    std::fs::create_dir_all(&stranger).unwrap();
    drop(store);
    let (code, out, err) = common::wcbuild_at(&dir, &["check"]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains(&format!("bad-unpacked: unpacked/{}: ", "c".repeat(64))),
        "{out}"
    );
    std::fs::remove_dir(&stranger).unwrap();
    let (code, out, err) = common::wcbuild_at(&dir, &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    // One byte changed in an unpacked file.
    std::fs::write(target.join("app/sub/b.txt"), "betA").unwrap();
    let (code, out, _) = common::wcbuild_at(&dir, &["check"]);
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!(
            "bad-unpacked: unpacked/{h}: `unpacked/{h}` does not match layer `{diff_id}`: `app/sub/b.txt` is not what the layer holds",
            h = &diff_id[7..]
        )),
        "{out}"
    );
    // A file the layer does not hold.
    std::fs::write(target.join("app/sub/b.txt"), "beta").unwrap();
    std::fs::write(target.join("app/extra"), "x").unwrap();
    let (code, out, _) = common::wcbuild_at(&dir, &["check"]);
    assert_eq!(code, 1);
    assert!(out.contains("`app/extra` is not in the layer"), "{out}");
    let (code, _, err) = common::wcbuild_at(&dir, &["check", "--repair"]);
    assert_eq!(code, 0, "{err}");
    assert!(!target.exists());
    let (code, out, err) = common::wcbuild_at(&dir, &["check"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// A scratch directory in use is locked: the cleaning of an open leaves it alone even when
/// the process id in its name looks dead (another pid namespace sharing the store).
#[test]
#[cfg_attr(
    windows,
    ignore = "tells dead processes by their pid, which Windows builds do not (they leave leftovers to prune and check)"
)]
fn a_scratch_directory_in_use_is_never_taken_for_a_leftover() {
    let dir = tempdir("scratch-lock");
    let store = Store::open(&dir).unwrap();
    let scratch = store.scratch_dir("rootfs").unwrap();
    // The same directory under a dead process's name, still held.
    let dead = dead_pid();
    let renamed = dir.join(format!("tmp/rootfs-{dead}-0-0"));
    std::fs::rename(scratch.path(), &renamed).unwrap();
    let other = Store::open(&dir).unwrap();
    assert!(renamed.exists(), "a held scratch directory was removed");
    drop(scratch);
    drop(other);
    let _again = Store::open(&dir).unwrap();
    assert!(
        !renamed.exists(),
        "an unheld leftover of a dead process stayed"
    );
}

/// Fields of `index.json` wcbuild does not know are kept through its rewrites: a number
/// with more digits than a float holds keeps its value however often tags change (found by
/// the image_json fuzz target: without correctly rounded parsing it drifted by one unit in
/// the last place at each rewrite).
#[test]
fn unknown_index_fields_keep_their_values_through_rewrites() {
    let dir = tempdir("unknown-fields");
    let store = Store::open(&dir).unwrap();
    let big = "333333333333333333333333333333333333333382";
    std::fs::write(
        dir.join("index.json"),
        format!(r#"{{"schemaVersion":2,"manifests":[],"x-wcbuild-test":{big}}}"#),
    )
    .unwrap();
    let want: f64 = big.parse().unwrap();
    let d = store.put_blob(b"{}", None).unwrap();
    for i in 0..3 {
        let e = IndexEntry::new("application/vnd.oci.image.manifest.v1+json", &d, 2);
        store.tag(&format!("docker.io/library/f:{i}"), e).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(v["x-wcbuild-test"].as_f64(), Some(want), "rewrite {i}: {v}");
    }
}
