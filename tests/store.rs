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
    // Another open store blocks prune.
    let other = Store::open(&dir).unwrap();
    let store2 = Store::open(&dir).unwrap();
    assert!(matches!(store2.prune(&[]), Err(StoreError::Busy(_))));
    drop(other);
    let report = store.prune(&[]).unwrap();
    assert_eq!(report.blobs_removed, 1);
    assert_eq!(report.bytes_freed, 15);
    let store = Store::open(&dir).unwrap();
    for d in [&layer, &config, &m] {
        assert!(store.blob_size(d).unwrap().is_some());
    }
    assert!(store.blob_size(&orphan).unwrap().is_none());
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
    let second = wcbuild::ops::images::compressed_layer(&store, &diff_id, gz).unwrap();
    assert_eq!(first, second);
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
