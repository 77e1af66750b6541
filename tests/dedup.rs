//! Dedup reports over image sets whose answers are known by construction: real gzip layers
//! written with the layer writer (or the Windows fixtures), every metric asserted to its exact
//! value; the CLI's table, JSON, HTML (checked in headless Chromium) and CI gates.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use wcbuild::image::media;
use wcbuild::layer::tar::{Header, Kind};
use wcbuild::layer::{Compression, Format, LayerDigests, LayerOptions, LayerWriter};
use wcbuild::ops::dedup::{DedupOptions, Source, dedup};
use wcbuild::report::Report;
use wcbuild::report::analysis::{ImageReport, OffenderKind};
use wcbuild::store::{IndexEntry, Store};

fn tempdir(name: &str) -> PathBuf {
    common::tempdir("dedup", name)
}

fn wcbuild(root: &Path, args: &[&str]) -> (i32, String, String) {
    common::wcbuild_at(root, args)
}

/// Deterministic bytes that do not compress to nothing; a different seed, different bytes.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Half the bytes from a small alphabet, so gzip levels differ.
            if x & 1 == 0 {
                b'a' + (x >> 8) as u8 % 4
            } else {
                (x >> 24) as u8
            }
        })
        .collect()
}

enum E<'a> {
    File(&'a str, &'a [u8]),
    Whiteout(&'a str),
    WindowsAt(&'a str, &'a [u8]),
}

/// Writes a layer into the store; returns its digests.
fn layer(store: &Store, format: Format, compression: Compression, entries: &[E]) -> LayerDigests {
    let mut w = LayerWriter::new(
        Vec::new(),
        LayerOptions {
            format,
            compression,
            source_date_epoch: Some(1_700_000_000),
            threads: 1,
            windows_owner: None,
            windows_base: false,
        },
    )
    .unwrap();
    for e in entries {
        match e {
            E::File(path, data) => {
                let mut h = Header::new(path, Kind::File);
                h.size = data.len() as u64;
                w.append(h, Some(&mut &data[..]), false).unwrap();
            }
            E::Whiteout(path) => w.whiteout(path).unwrap(),
            E::WindowsAt(path, data) => {
                let mut h = Header::new(path, Kind::File);
                h.size = data.len() as u64;
                w.append_at(h, Some(&mut &data[..])).unwrap();
            }
        }
    }
    let (d, blob) = w.finish().unwrap();
    store.put_blob(&blob, Some(&d.digest)).unwrap();
    d
}

/// A layer as an image lists it: its digests and the history line that made it.
struct L<'a>(&'a LayerDigests, &'a str);

fn put_json(store: &Store, v: &serde_json::Value) -> (String, u64) {
    let bytes = serde_json::to_vec(v).unwrap();
    (store.put_blob(&bytes, None).unwrap(), bytes.len() as u64)
}

/// Writes config and manifest and tags `name`. Returns the manifest digest.
fn image(store: &Store, name: &str, os: &str, os_version: Option<&str>, layers: &[L]) -> String {
    let (digest, size) = manifest(store, os, os_version, layers, None);
    let full = wcbuild::image::Reference::parse(name).unwrap().to_string();
    store
        .tag(&full, IndexEntry::new(media::OCI_MANIFEST, &digest, size))
        .unwrap();
    digest
}

fn manifest(
    store: &Store,
    os: &str,
    os_version: Option<&str>,
    layers: &[L],
    base: Option<(&serde_json::Value, &serde_json::Value)>,
) -> (String, u64) {
    let mut diff_ids: Vec<serde_json::Value> = Vec::new();
    let mut history: Vec<serde_json::Value> = Vec::new();
    let mut descs: Vec<serde_json::Value> = Vec::new();
    if let Some((c, m)) = base {
        diff_ids.extend(c["rootfs"]["diff_ids"].as_array().unwrap().iter().cloned());
        history.extend(c["history"].as_array().unwrap().iter().cloned());
        descs.extend(m["layers"].as_array().unwrap().iter().cloned());
    }
    for L(d, created_by) in layers {
        diff_ids.push(d.diff_id.clone().into());
        // An empty-layer entry in between, as ENV or WORKDIR write, must not shift the mapping.
        history.push(serde_json::json!({"created_by": "ENV X=1", "empty_layer": true}));
        history.push(serde_json::json!({"created_by": created_by}));
        descs.push(
            serde_json::json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size}),
        );
    }
    let mut config = serde_json::json!({
        "architecture": "amd64",
        "os": os,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    if let Some(v) = os_version {
        config["os.version"] = v.into();
    }
    let (cd, cs) = put_json(store, &config);
    put_json(
        store,
        &serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": cd, "size": cs},
            "layers": descs,
        }),
    )
}

/// Ratios are computed as one division, so they are exact; read back from JSON they may be
/// one unit in the last place off (serde_json's float parser), never more.
fn feq(a: f64, b: f64) {
    assert!(
        a == b || (a - b).abs() <= 2.0 * f64::EPSILON * b.abs(),
        "{a} != {b}"
    );
}

fn img<'a>(r: &'a Report, name: &str) -> &'a ImageReport {
    r.images
        .iter()
        .find(|i| i.names.iter().any(|n| n == name))
        .unwrap_or_else(|| panic!("no image `{name}` in the report"))
}

/// The Linux set: four images on one base.
/// - base:1 = [B]; B holds bin/tool (10,000 B), etc/big.dat (50,000 B) and the same 3,000 B at
///   usr/share/a.txt and opt/b.txt (two identical files at different paths);
/// - app:1 = [B, L1]; L1 adds app/main (7,000 B, content M);
/// - app:2 = [B, L2, L3]; L2 adds app/data (4,000 B), L3 adds the same file again;
/// - slim:1 = [B, L4]; L4 deletes etc/big.dat and adds srv/main-copy (content M again).
struct LinuxSet {
    root: PathBuf,
    b: LayerDigests,
    l1: LayerDigests,
    l2: LayerDigests,
    l3: LayerDigests,
    l4: LayerDigests,
}

fn linux_set(name: &str) -> LinuxSet {
    let root = tempdir(name);
    let store = Store::open(&root).unwrap();
    let gz = Compression::Gzip(6);
    let (tool, big, same, m, p) = (
        content(1, 10_000),
        content(2, 50_000),
        content(3, 3_000),
        content(4, 7_000),
        content(5, 4_000),
    );
    let b = layer(
        &store,
        Format::Linux,
        gz,
        &[
            E::File("bin/tool", &tool),
            E::File("etc/big.dat", &big),
            E::File("opt/b.txt", &same),
            E::File("usr/share/a.txt", &same),
        ],
    );
    let l1 = layer(&store, Format::Linux, gz, &[E::File("app/main", &m)]);
    let l2 = layer(&store, Format::Linux, gz, &[E::File("app/data", &p)]);
    let l3 = layer(
        &store,
        Format::Linux,
        gz,
        &[E::File("app/data", &p), E::File("app/README", b"")],
    );
    let l4 = layer(
        &store,
        Format::Linux,
        gz,
        &[E::Whiteout("etc/big.dat"), E::File("srv/main-copy", &m)],
    );
    let base = L(&b, "COPY base /");
    image(&store, "base:1", "linux", None, &[L(&b, "COPY base /")]);
    image(
        &store,
        "app:1",
        "linux",
        None,
        &[base, L(&l1, "COPY main /app/")],
    );
    let base = L(&b, "COPY base /");
    image(
        &store,
        "app:2",
        "linux",
        None,
        &[base, L(&l2, "COPY data /app/"), L(&l3, "COPY . /app/")],
    );
    let base = L(&b, "COPY base /");
    image(
        &store,
        "slim:1",
        "linux",
        None,
        &[base, L(&l4, "RUN rm /etc/big.dat")],
    );
    // An artifact (a Helm chart) in the same store: not an image, left out of every figure.
    let chart = store.put_blob(b"chart", None).unwrap();
    let (cd, cs) = put_json(&store, &serde_json::json!({"name": "app"}));
    let (md, ms) = put_json(
        &store,
        &serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": cd, "size": cs},
            "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": chart, "size": 5}],
        }),
    );
    store
        .tag(
            "docker.io/library/chart:1",
            IndexEntry::new(media::OCI_MANIFEST, &md, ms),
        )
        .unwrap();
    LinuxSet {
        root,
        b,
        l1,
        l2,
        l3,
        l4,
    }
}

const APP1: &str = "docker.io/library/app:1";
const APP2: &str = "docker.io/library/app:2";
const BASE1: &str = "docker.io/library/base:1";
const SLIM1: &str = "docker.io/library/slim:1";

fn check_linux_blob_level(r: &Report, s: &LinuxSet) {
    let (b, l1, l2, l3, l4) = (s.b.size, s.l1.size, s.l2.size, s.l3.size, s.l4.size);
    let (ub, u1, u2, u3, u4) = (
        s.b.tar_size,
        s.l1.tar_size,
        s.l2.tar_size,
        s.l3.tar_size,
        s.l4.tar_size,
    );
    assert_eq!(r.schema, 1);
    let sm = &r.summary;
    assert_eq!(sm.images, 4);
    assert_eq!(sm.layers, 5);
    assert_eq!(sm.logical_bytes.compressed, 4 * b + l1 + l2 + l3 + l4);
    assert_eq!(sm.logical_bytes.uncompressed, 4 * ub + u1 + u2 + u3 + u4);
    assert_eq!(sm.stored_bytes.compressed, b + l1 + l2 + l3 + l4);
    assert_eq!(sm.stored_bytes.uncompressed, ub + u1 + u2 + u3 + u4);
    assert_eq!(sm.dedup_savings.compressed, 3 * b);
    assert_eq!(sm.dedup_savings.uncompressed, 3 * ub);
    feq(
        sm.dedup_ratio.compressed,
        (4 * b + l1 + l2 + l3 + l4) as f64 / (b + l1 + l2 + l3 + l4) as f64,
    );
    assert_eq!(sm.missed_dedup_bytes, 0);
    assert_eq!(sm.foreign_bytes, 0);
    assert_eq!(sm.unindexed_layers, 0);
    // Images in reference order; the base's bytes are shared by all four.
    let names: Vec<&str> = r.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, [APP1, APP2, BASE1, SLIM1]);
    let uniq = [
        (APP1, l1, u1),
        (APP2, l2 + l3, u2 + u3),
        (BASE1, 0, 0),
        (SLIM1, l4, u4),
    ];
    for (k, (name, c, u)) in uniq.into_iter().enumerate() {
        let i = img(r, name);
        assert_eq!(i.platform, "linux/amd64");
        assert_eq!(i.group, "linux/amd64");
        assert_eq!(i.shared_bytes.compressed, b, "{name}");
        assert_eq!(i.shared_bytes.uncompressed, ub, "{name}");
        assert_eq!(i.unique_bytes.compressed, c, "{name}");
        assert_eq!(i.unique_bytes.uncompressed, u, "{name}");
        assert_eq!(i.pull_bytes.compressed, b + c, "{name}");
        // b ÷ 4, the remainder going to the first images.
        let k = k as u64;
        assert_eq!(
            i.amortized_bytes.compressed,
            b / 4 + u64::from(k < b % 4) + c,
            "{name}"
        );
        assert_eq!(
            i.amortized_bytes.uncompressed,
            ub / 4 + u64::from(k < ub % 4) + u,
            "{name}"
        );
    }
    let total: u64 = r.images.iter().map(|i| i.amortized_bytes.compressed).sum();
    assert_eq!(total, sm.stored_bytes.compressed);
    // created_by skips the empty-layer history entries.
    let app2 = img(r, APP2);
    let created: Vec<&str> = app2
        .layers
        .iter()
        .map(|l| l.created_by.as_deref().unwrap())
        .collect();
    assert_eq!(created, ["COPY base /", "COPY data /app/", "COPY . /app/"]);
    assert_eq!(app2.layers[0].refcount, 4);
    assert_eq!(app2.layers[2].refcount, 1);
    // One group; rows pull, columns present.
    assert_eq!(r.incremental_pull.len(), 1);
    let g = &r.incremental_pull[0];
    assert_eq!(g.group, "linux/amd64");
    assert_eq!(g.images, [APP1, APP2, BASE1, SLIM1]);
    assert_eq!(
        g.bytes,
        vec![
            vec![0, l1, l1, l1],
            vec![l2 + l3, 0, l2 + l3, l2 + l3],
            vec![0, 0, 0, 0],
            vec![l4, l4, l4, 0],
        ]
    );
    let cold = img(r, BASE1).pull_bytes.compressed;
    assert_eq!(cold, b);
}

fn check_linux_file_level(r: &Report) {
    let f = &img(r, BASE1).files;
    assert_eq!(
        (f.file_bytes, f.visible_bytes, f.wasted_bytes),
        (66_000, 66_000, 0)
    );
    feq(f.efficiency, 1.0);
    let f = &img(r, APP1).files;
    assert_eq!(
        (f.file_bytes, f.visible_bytes, f.wasted_bytes),
        (73_000, 73_000, 0)
    );
    // app:2 re-adds app/data (4,000 B) unchanged: the first copy is hidden.
    let f = &img(r, APP2).files;
    assert_eq!(f.file_bytes, 74_000);
    assert_eq!(f.visible_bytes, 70_000);
    assert_eq!(f.overwritten_bytes, 4_000);
    assert_eq!(f.deleted_bytes, 0);
    assert_eq!(f.wasted_bytes, 4_000);
    assert_eq!(f.unchanged_rewrite_bytes, 4_000);
    assert_eq!(f.dup_across_layers_bytes, 4_000);
    feq(f.efficiency, 70_000.0 / 74_000.0);
    feq(f.wasted_ratio, 4_000.0 / 74_000.0);
    // slim:1 deletes the 50,000 B file its base ships.
    let f = &img(r, SLIM1).files;
    assert_eq!(f.file_bytes, 73_000);
    assert_eq!(f.visible_bytes, 23_000);
    assert_eq!(f.deleted_bytes, 50_000);
    assert_eq!(f.overwritten_bytes, 0);
    assert_eq!(f.wasted_bytes, 50_000);
    feq(f.efficiency, 23_000.0 / 73_000.0);
    assert_eq!(f.unchanged_rewrite_bytes, 0);
    assert_eq!(r.summary.file_bytes, 66_000 + 73_000 + 74_000 + 73_000);
    assert_eq!(r.summary.wasted_bytes, 54_000);
    // Duplicates: the two identical base files (within a layer), app/data in two layers of
    // app:2, and M in app:1's and slim:1's own layers.
    let d = &r.duplicates;
    assert_eq!(d.within_layer_bytes, 3_000);
    assert_eq!(d.across_layers_bytes, 4_000);
    assert_eq!(d.across_images_bytes, 7_000);
    let groups: Vec<(u64, u64, u64)> = d
        .groups
        .iter()
        .map(|g| (g.size, g.copies, g.redundant_bytes))
        .collect();
    assert_eq!(
        groups,
        [(7_000, 2, 7_000), (4_000, 2, 4_000), (3_000, 2, 3_000)]
    );
    let paths: Vec<&str> = d.groups[2]
        .locations
        .iter()
        .map(|l| l.path.as_str())
        .collect();
    assert_eq!(paths, ["opt/b.txt", "usr/share/a.txt"]);
    // Offenders, largest first, with the history line that added them.
    type Row<'a> = (
        OffenderKind,
        &'a str,
        &'a str,
        u64,
        u64,
        Option<&'a str>,
        u64,
    );
    let o: Vec<Row> = r
        .offenders
        .iter()
        .map(|o| {
            (
                o.kind,
                o.image.as_str(),
                o.path.as_str(),
                o.layer,
                o.bytes,
                o.created_by.as_deref(),
                o.hidden_by_layer,
            )
        })
        .collect();
    assert_eq!(
        o,
        [
            (
                OffenderKind::Deleted,
                SLIM1,
                "etc/big.dat",
                0,
                50_000,
                Some("COPY base /"),
                1
            ),
            (
                OffenderKind::Overwritten,
                APP2,
                "app/data",
                1,
                4_000,
                Some("COPY data /app/"),
                2
            ),
            (
                OffenderKind::UnchangedRewrite,
                APP2,
                "app/data",
                2,
                4_000,
                Some("COPY . /app/"),
                2
            ),
        ]
    );
}

#[test]
fn linux_set_every_metric_exact_and_the_index_cached() {
    let set = linux_set("linux");
    let store = Store::open(&set.root).unwrap();
    let first = dedup(&store, &[], &DedupOptions::default()).unwrap();
    assert_eq!((first.layers_read, first.layers_cached), (5, 0));
    assert_eq!(
        first.bytes_read,
        set.b.size + set.l1.size + set.l2.size + set.l3.size + set.l4.size
    );
    check_linux_blob_level(&first.report, &set);
    check_linux_file_level(&first.report);

    // Second run: every index from the cache, no layer read.
    let second = dedup(&store, &[], &DedupOptions::default()).unwrap();
    assert_eq!((second.layers_read, second.layers_cached), (0, 5));
    assert_eq!(second.report, first.report);
    // Even with the layer blobs gone the report is the same: nothing reads them.
    for d in [&set.b, &set.l1, &set.l2, &set.l3, &set.l4] {
        std::fs::remove_file(store.blob_path(&d.digest).unwrap()).unwrap();
    }
    let third = dedup(&store, &[], &DedupOptions::default()).unwrap();
    assert_eq!(third.report, first.report);
    // Without the cache they must be read, and they are gone.
    let err = dedup(
        &store,
        &[],
        &DedupOptions {
            cache: false,
            ..DedupOptions::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("is not in the store"), "{err}");
}

#[test]
fn no_cache_reads_every_layer_and_still_writes_the_indexes() {
    let set = linux_set("no-cache");
    let store = Store::open(&set.root).unwrap();
    let no_cache = DedupOptions {
        cache: false,
        ..DedupOptions::default()
    };
    let first = dedup(&store, &[], &no_cache).unwrap();
    assert_eq!((first.layers_read, first.layers_cached), (5, 0));
    let again = dedup(&store, &[], &no_cache).unwrap();
    assert_eq!(
        (again.layers_read, again.layers_cached),
        (5, 0),
        "--no-cache reads every layer again"
    );
    // What --no-cache made serves the next ordinary run.
    let cached = dedup(&store, &[], &DedupOptions::default()).unwrap();
    assert_eq!((cached.layers_read, cached.layers_cached), (0, 5));
    assert_eq!(cached.report, first.report);
}

#[test]
fn archives_and_layouts_give_the_same_report_as_the_store() {
    let set = linux_set("sources");
    let (code, _, err) = wcbuild(
        &set.root,
        &[
            "save",
            "--format",
            "docker",
            "-o",
            set.root.join("set.tar").to_str().unwrap(),
            "app:1",
            "app:2",
            "base:1",
            "slim:1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let from_store = {
        let store = Store::open(&set.root).unwrap();
        dedup(&store, &[], &DedupOptions::default()).unwrap().report
    };
    // Another (empty) store: the images are read in place from the archive and the layout.
    let other = tempdir("sources-other");
    let store = Store::open(&other).unwrap();
    let archive = set.root.join("set.tar");
    let r = dedup(
        &store,
        &[Source::DockerArchive(archive.clone())],
        &DedupOptions {
            cache: false,
            ..DedupOptions::default()
        },
    )
    .unwrap()
    .report;
    assert_eq!(r.summary, from_store.summary);
    assert_eq!(
        r.images[0].source,
        format!("docker-archive:{}", archive.display())
    );
    check_linux_blob_level(&r, &set);
    check_linux_file_level(&r);
    let r = dedup(
        &store,
        &[Source::OciLayout(set.root.clone())],
        &DedupOptions::default(),
    )
    .unwrap()
    .report;
    check_linux_blob_level(&r, &set);
    check_linux_file_level(&r);
    // Nothing entered the other store but index records.
    let blobs = std::fs::read_dir(other.join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0);
}

#[test]
fn one_diff_id_compressed_twice_is_missed_dedup() {
    let root = tempdir("missed");
    let store = Store::open(&root).unwrap();
    let data = content(9, 200_000);
    let fast = layer(
        &store,
        Format::Linux,
        Compression::Gzip(1),
        &[E::File("data.bin", &data)],
    );
    let small = layer(
        &store,
        Format::Linux,
        Compression::Gzip(9),
        &[E::File("data.bin", &data)],
    );
    assert_eq!(fast.diff_id, small.diff_id);
    assert_ne!(fast.size, small.size, "the construction needs two sizes");
    image(
        &store,
        "fast:1",
        "linux",
        None,
        &[L(&fast, "COPY data.bin /")],
    );
    image(
        &store,
        "small:1",
        "linux",
        None,
        &[L(&small, "COPY data.bin /")],
    );
    let out = dedup(&store, &[], &DedupOptions::default()).unwrap();
    // One diff_id: indexed once.
    assert_eq!(out.layers_read, 1);
    let r = out.report;
    assert_eq!(r.summary.missed_dedup_bytes, fast.size.max(small.size));
    assert_eq!(r.missed_dedup.len(), 1);
    assert_eq!(r.missed_dedup[0].diff_id, fast.diff_id);
    assert_eq!(r.missed_dedup[0].blobs.len(), 2);
    // Two blobs: nothing deduplicated at the blob level; same tar twice uncompressed.
    assert_eq!(r.summary.stored_bytes.compressed, fast.size + small.size);
    assert_eq!(r.summary.dedup_savings.compressed, 0);
    assert_eq!(r.summary.stored_bytes.uncompressed, 2 * fast.tar_size);
    // The same 200,000 B in two images' own layers.
    assert_eq!(r.duplicates.across_images_bytes, 200_000);
    assert_eq!(r.duplicates.within_layer_bytes, 0);
    assert_eq!(r.duplicates.across_layers_bytes, 0);
    // One distinct layer (by diff_id) holds the content once: no duplicate group.
    assert!(r.duplicates.groups.is_empty());
}

/// Sizes of the regular files in a gzip layer blob, as GNU tar lists them.
fn gnu_tar_sizes(blob: &Path) -> HashMap<String, u64> {
    let out = Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(blob)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[5..].join(" "), f[2].parse().unwrap())
        })
        .collect()
}

#[test]
#[cfg_attr(
    windows,
    ignore = "runs GNU tar, a Linux program a Windows process cannot start"
)]
fn windows_fixtures_across_ltsc2019_2022_2025() {
    let root = tempdir("windows");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    for f in ["nanoserver.tar", "servercore.tar"] {
        let (code, _, err) = wcbuild(&root, &["load", "-i", fixtures.join(f).to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
    }
    let store = Store::open(&root).unwrap();
    // An app layer on Nano Server ltsc2022 that deletes curl.exe (naming it in another case)
    // and writes a hive delta twice (1,000 B, then 1,500 B).
    let nano = "mcr.microsoft.com/windows/nanoserver:ltsc2022";
    let entry = store.lookup(nano).unwrap().unwrap();
    let base_manifest: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&entry.digest).unwrap()).unwrap();
    let base_config: serde_json::Value = serde_json::from_slice(
        &store
            .read_blob(base_manifest["config"]["digest"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let base_layer = base_manifest["layers"][0]["digest"].as_str().unwrap();
    let listed = gnu_tar_sizes(&store.blob_path(base_layer).unwrap());
    let curl = listed["Files/Windows/System32/curl.exe"];
    let base_files: u64 = listed.values().sum();
    let app = content(20, 6_000);
    let w = Format::Windows;
    let gz = Compression::Gzip(6);
    let a1 = layer(
        &store,
        w,
        gz,
        &[
            // Another case than the base's: Windows paths ignore case.
            E::Whiteout("windows/system32/CURL.EXE"),
            E::File("app/app.exe", &app),
            E::WindowsAt("Hives/Software_Delta", &content(21, 1_000)),
        ],
    );
    let a2 = layer(
        &store,
        w,
        gz,
        &[E::WindowsAt("Hives/Software_Delta", &content(22, 1_500))],
    );
    let (d, s) = manifest(
        &store,
        "windows",
        Some("10.0.20348.2849"),
        &[L(&a1, "COPY app C:/app"), L(&a2, "RUN reg add ...")],
        Some((&base_config, &base_manifest)),
    );
    store
        .tag(
            "wcbuild.local/app:ltsc2022",
            IndexEntry::new(media::OCI_MANIFEST, &d, s),
        )
        .unwrap();

    let r = dedup(&store, &[], &DedupOptions::default()).unwrap().report;
    // 3 Nano Server + 4 Server Core images (ltsc2019-foreign has its own manifest) + the app;
    // aliases (1809) and the `multi` indexes' children are the same manifests.
    assert_eq!(r.summary.images, 8);
    assert_eq!(r.summary.layers, 8);
    let nano2019 = img(&r, "mcr.microsoft.com/windows/nanoserver:1809");
    assert!(
        nano2019
            .names
            .iter()
            .any(|n| n == "mcr.microsoft.com/windows/nanoserver:ltsc2019")
    );
    assert!(
        nano2019
            .names
            .iter()
            .any(|n| n
                == "mcr.microsoft.com/windows/nanoserver:multi [windows/amd64:10.0.17763.6414]")
    );
    assert_eq!(nano2019.group, "windows/amd64 build 17763");
    let groups: Vec<(&str, usize)> = r
        .incremental_pull
        .iter()
        .map(|g| (g.group.as_str(), g.images.len()))
        .collect();
    assert_eq!(
        groups,
        [
            ("windows/amd64 build 17763", 3),
            ("windows/amd64 build 20348", 3),
            ("windows/amd64 build 26100", 2),
        ]
    );
    // Server Core ltsc2019 and its foreign-layer variant share their one layer.
    let sc2019 = img(&r, "mcr.microsoft.com/windows/servercore:ltsc2019");
    let foreign = img(&r, "mcr.microsoft.com/windows/servercore:ltsc2019-foreign");
    let sc_layer = sc2019.layers[0].compressed_bytes;
    assert_eq!(foreign.layers[0].digest, sc2019.layers[0].digest);
    assert_eq!(sc2019.layers[0].refcount, 2);
    assert_eq!(sc2019.shared_bytes.compressed, sc_layer);
    assert_eq!(r.summary.foreign_bytes, sc_layer);
    assert_eq!(r.foreign.len(), 1);
    assert!(r.foreign[0].urls[0].starts_with("https://mcr.microsoft.com/"));
    assert_eq!(r.foreign[0].media_type, media::OCI_LAYER_NONDIST_GZIP);
    let nano2022 = img(&r, nano);
    let app = img(&r, "wcbuild.local/app:ltsc2022");
    let nano_layer = nano2022.layers[0].compressed_bytes;
    assert_eq!(app.layers[0].refcount, 2);
    assert_eq!(r.summary.dedup_savings.compressed, sc_layer + nano_layer);
    let stored: u64 = r.layers.iter().map(|l| l.compressed_bytes).sum();
    assert_eq!(r.summary.stored_bytes.compressed, stored);
    // Pulls within build 17763: [nano 1809, servercore ltsc2019, servercore ltsc2019-foreign].
    let g = &r.incremental_pull[0];
    let n19 = nano2019.pull_bytes.compressed;
    assert_eq!(
        g.bytes,
        vec![
            vec![0, n19, n19],
            vec![sc_layer, 0, 0],
            vec![sc_layer, 0, 0]
        ]
    );
    // Base images: every file visible, as GNU tar lists them.
    assert_eq!(nano2022.files.file_bytes, base_files);
    assert_eq!(nano2022.files.visible_bytes, base_files);
    assert_eq!(nano2022.files.efficiency, 1.0);
    assert_eq!(nano2022.files.hive_bytes, 0);
    // The app: curl.exe deleted by a tombstone under Files/, a hive delta hidden by the next.
    let f = &app.files;
    assert_eq!(f.file_bytes, base_files + 6_000 + 1_000 + 1_500);
    assert_eq!(f.deleted_bytes, curl);
    assert_eq!(f.overwritten_bytes, 1_000);
    assert_eq!(f.hive_bytes, 2_500);
    assert_eq!(f.hive_overwritten_bytes, 1_000);
    assert_eq!(f.wasted_bytes, curl + 1_000);
    assert_eq!(f.visible_bytes, base_files - curl + 6_000 + 1_500);
    let deleted = r
        .offenders
        .iter()
        .find(|o| o.kind == OffenderKind::Deleted)
        .unwrap();
    assert_eq!(deleted.path, "Files/Windows/System32/curl.exe");
    assert_eq!(
        deleted.created_by.as_deref(),
        Some("Apply image 10.0.20348.2849")
    );
    assert_eq!(deleted.hidden_by.as_deref(), Some("COPY app C:/app"));
}

#[test]
fn cli_table_json_and_gates() {
    let set = linux_set("cli");
    let (code, out, err) = wcbuild(&set.root, &["dedup", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("indexed 5 layer(s)"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["schema"], 1);
    // Stable field order: schema, summary, images, ... (top-level keys of the pretty output).
    let keys = [
        "schema",
        "summary",
        "images",
        "layers",
        "incremental_pull",
        "missed_dedup",
        "foreign",
        "duplicates",
        "offenders",
    ];
    let at: Vec<usize> = keys
        .iter()
        .map(|k| {
            out.find(&format!("\n  \"{k}\":"))
                .unwrap_or_else(|| panic!("{k}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
    assert_eq!(v.as_object().unwrap().len(), keys.len());
    assert_eq!(v["summary"]["dedup_savings"]["compressed"], 3 * set.b.size);
    // Ratios are written in full (shortest round-trip form).
    assert!(out.contains("\"efficiency\": 0.9459459459459459,"), "{out}");
    let r: Report = serde_json::from_value(v).unwrap();
    check_linux_blob_level(&r, &set);
    check_linux_file_level(&r);

    // Named images only.
    let (code, out, err) = wcbuild(&set.root, &["dedup", "--format", "json", "app:1", "base:1"]);
    assert_eq!(code, 0, "{err}");
    let r: Report = serde_json::from_str(&out).unwrap();
    assert_eq!(r.summary.images, 2);
    assert_eq!(r.summary.dedup_savings.compressed, set.b.size);
    assert!(err.contains("from the cache"), "{err}");

    let (code, out, err) = wcbuild(&set.root, &["dedup"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("4 image(s), 5 distinct layer blob(s)"),
        "{out}"
    );
    assert!(out.contains("top offenders:"), "{out}");
    assert!(out.contains("50.0 kB  deleted"), "{out}");
    assert!(out.contains("etc/big.dat"), "{out}");

    // Gates: slim:1 wastes 50,000 B.
    let (code, _, err) = wcbuild(&set.root, &["dedup", "--max-wasted-bytes", "50000"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = wcbuild(&set.root, &["dedup", "--max-wasted-bytes", "49999"]);
    assert_eq!(code, 3, "{err}");
    assert!(out.contains("top offenders"), "the report is still written");
    assert!(
        err.contains(
            "gate failed: image `docker.io/library/slim:1`: wasted_bytes is 50000, above the limit --max-wasted-bytes 49999"
        ),
        "{err}"
    );
    assert_eq!(err.matches("gate failed").count(), 1, "{err}");
    let (code, _, err) = wcbuild(&set.root, &["dedup", "--min-efficiency", "0.5"]);
    assert_eq!(code, 3);
    assert!(
        err.contains("image `docker.io/library/slim:1`: efficiency is 0.3151"),
        "{err}"
    );
    let (code, _, err) = wcbuild(&set.root, &["dedup", "--max-wasted-ratio", "0.06"]);
    assert_eq!(code, 3);
    assert!(err.contains("slim:1`: wasted_ratio"), "{err}");
    assert!(
        !err.contains("app:2`"),
        "app:2 wastes 4000/74000 < 0.06: {err}"
    );
    let (code, _, err) = wcbuild(&set.root, &["dedup", "--min-dedup-ratio", "100"]);
    assert_eq!(code, 3);
    assert!(
        err.contains("the image set: dedup_ratio.compressed is"),
        "{err}"
    );
    let (code, _, _) = wcbuild(&set.root, &["dedup", "--min-dedup-ratio", "1"]);
    assert_eq!(code, 0);
    // Usage errors are 2, before anything is read.
    let (code, _, err) = wcbuild(&set.root, &["dedup", "--format", "html"]);
    assert_eq!(code, 2);
    assert!(err.contains("-o report.html"), "{err}");
    let (code, _, err) = wcbuild(&set.root, &["dedup", "--from", "registry:a//b"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid reference"), "{err}");
    let (code, _, err) = wcbuild(&set.root, &["dedup", "nosuch:1"]);
    assert_eq!(code, 1);
    assert!(err.contains("no image `nosuch:1`"), "{err}");
}

#[test]
fn a_corrupt_layer_is_refused_with_its_digest() {
    let root = tempdir("corrupt");
    let store = Store::open(&root).unwrap();
    let l = layer(
        &store,
        Format::Linux,
        Compression::Gzip(6),
        &[E::File("a", &content(30, 5_000))],
    );
    image(&store, "c:1", "linux", None, &[L(&l, "COPY a /")]);
    // An OCI layout whose layer file holds another layer's bytes (a valid gzip tar): the
    // digest is checked while the layer streams, before any figure uses it.
    let other = layer(
        &store,
        Format::Linux,
        Compression::Gzip(6),
        &[E::File("b", &content(31, 5_000))],
    );
    let layout = tempdir("corrupt-layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    for f in ["index.json", "oci-layout"] {
        std::fs::copy(root.join(f), layout.join(f)).unwrap();
    }
    for e in std::fs::read_dir(root.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), layout.join("blobs/sha256").join(e.file_name())).unwrap();
    }
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    std::fs::copy(
        root.join("blobs/sha256").join(hex(&other.digest)),
        layout.join("blobs/sha256").join(hex(&l.digest)),
    )
    .unwrap();
    let fresh = Store::open(tempdir("corrupt-fresh")).unwrap();
    let err = dedup(
        &fresh,
        &[Source::OciLayout(layout)],
        &DedupOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains(&l.digest), "{err}");
    assert!(
        err.contains(&format!("the blob hashes to `{}`", other.digest)),
        "{err}"
    );

    // Flip a byte of the stored blob: decompression or the diff_id check refuses it.
    let p = store.blob_path(&l.digest).unwrap();
    let mut bytes = Vec::new();
    std::fs::File::open(&p)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();
    let err = dedup(&store, &[], &DedupOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&l.digest), "{err}");
}

const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs headless Chromium with a fresh profile; returns (stdout, stderr).
fn chromium(args: &[&str]) -> (String, String) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: this test needs Debian's `chromium` package (apt-get install chromium)"
    );
    let profile = tempdir("chromium-profile");
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            // Console messages (errors included) go to stderr as `…:CONSOLE…] "message"`.
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Decodes an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium's screenshots are) into
/// (width, height, RGB pixels).
fn decode_png(bytes: &[u8]) -> (usize, usize, Vec<[u8; 3]>) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (mut pos, mut w, mut h, mut channels) = (8, 0, 0, 0);
    let mut idat = Vec::new();
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let data = &bytes[pos + 8..pos + 8 + len];
        match kind {
            b"IHDR" => {
                w = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                assert_eq!(data[8], 8, "bit depth");
                channels = match data[9] {
                    2 => 3,
                    6 => 4,
                    other => panic!("PNG colour type {other}"),
                };
                assert_eq!(data[12], 0, "interlaced");
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        pos += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let stride = w * channels;
    let mut prev = vec![0u8; stride];
    let mut pixels = Vec::with_capacity(w * h);
    for y in 0..h {
        let line = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
        let mut cur = line[1..].to_vec();
        for i in 0..stride {
            let a = if i >= channels {
                cur[i - channels] as i32
            } else {
                0
            };
            let b = prev[i] as i32;
            let c = if i >= channels {
                prev[i - channels] as i32
            } else {
                0
            };
            let add = match line[0] {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("PNG filter {f}"),
            };
            cur[i] = (cur[i] as i32 + add) as u8;
        }
        for px in cur.chunks(channels) {
            pixels.push([px[0], px[1], px[2]]);
        }
        prev = cur;
    }
    (w, h, pixels)
}

fn count_colour(pixels: &[[u8; 3]], hex: &str) -> usize {
    let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap();
    let want = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
    pixels
        .iter()
        .filter(|p| (0..3).all(|i| p[i].abs_diff(want[i]) <= 6))
        .count()
}

#[test]
#[cfg_attr(
    windows,
    ignore = "runs chromium, a Linux program a Windows process cannot start"
)]
fn html_report_loads_in_chromium_and_shows_the_charts() {
    use wcbuild::report::html::{SHARED_COLOUR, UNIQUE_COLOUR, WASTE_COLOUR};
    let set = linux_set("html");
    let page = set.root.join("report.html");
    let (code, _, err) = wcbuild(
        &set.root,
        &["dedup", "--format", "html", "-o", page.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: no resource is fetched from anywhere.
    for bad in ["src=", "<link", "@import", "url("] {
        assert!(
            !html.contains(bad),
            "the page refers to something outside: {bad}"
        );
    }
    let url = format!("file://{}", page.display());
    let (dom, stderr) = chromium(&["--dump-dom", &url]);
    assert!(
        dom.contains("data-report=\"ready\""),
        "the page's script did not finish: {dom}\n{stderr}"
    );
    assert!(dom.contains("<pre id=\"errors\"></pre>"), "{dom}");
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert!(dom.contains("id=\"sharing-chart\""), "{dom}");
    assert!(dom.contains("id=\"waste-chart\""), "{dom}");
    assert!(dom.contains("docker.io/library/slim:1"), "{dom}");
    assert!(dom.contains("etc/big.dat"), "{dom}");

    // The check really fails when the script throws.
    let broken = set.root.join("broken.html");
    std::fs::write(
        &broken,
        html.replace("var S = R.summary;", "var S = R.summary; null.boom();"),
    )
    .unwrap();
    let (dom, stderr) = chromium(&["--dump-dom", &format!("file://{}", broken.display())]);
    assert!(dom.contains("data-report=\"error\""), "{dom}");
    assert!(dom.contains("script error:"), "{dom}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(":CONSOLE") && l.contains("Uncaught TypeError")),
        "{stderr}"
    );

    // The tables sort: a click on the images table's `wasted` header puts slim:1 first.
    let sorted = set.root.join("sorted.html");
    std::fs::write(
        &sorted,
        html.replace(
            "</body>",
            "<script>var th = document.querySelectorAll('table')[0].querySelectorAll('th')[7];\
             th.click(); document.title = 'first:' + document.querySelector('tbody td').textContent;</script></body>",
        ),
    )
    .unwrap();
    let (dom, _) = chromium(&["--dump-dom", &format!("file://{}", sorted.display())]);
    assert!(
        dom.contains("<title>first:docker.io/library/slim:1</title>"),
        "{dom}"
    );
    assert!(dom.contains("class=\"sorted-desc\">wasted</th>"), "{dom}");

    // The screenshot shows both charts: shared (base) and unique layer cells, waste bars.
    let shot = set.root.join("report.png");
    let (_, stderr) = chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1280,2000",
        &url,
    ]);
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot ({e}): {stderr}"));
    let (w, h, pixels) = decode_png(&png);
    assert_eq!((w, h), (1280, 2000));
    let shared = count_colour(&pixels, SHARED_COLOUR);
    let unique = count_colour(&pixels, UNIQUE_COLOUR);
    let waste = count_colour(&pixels, WASTE_COLOUR);
    // The base layer's column spans most of the chart in all four rows; each waste bar is at
    // least a few hundred pixels.
    assert!(shared > 20_000, "shared-layer cells: {shared} pixels");
    assert!(unique > 1_000, "unique-layer cells: {unique} pixels");
    assert!(waste > 5_000, "waste bars: {waste} pixels");
}

#[test]
fn images_built_by_wcbuild_share_their_base_and_show_a_re_added_file() {
    let root = tempdir("built");
    let big = content(40, 30_000);
    let small = content(41, 700);
    let base_ctx = tempdir("built-base-ctx");
    std::fs::write(base_ctx.join("big.bin"), &big).unwrap();
    std::fs::write(base_ctx.join("small.txt"), &small).unwrap();
    std::fs::write(
        base_ctx.join("Dockerfile"),
        "FROM scratch\nCOPY big.bin /data/\nCOPY small.txt /etc/\n",
    )
    .unwrap();
    // SOURCE_DATE_EPOCH (older than the files) clamps every time in the layers, so the same
    // COPY makes the same bytes whichever second each build runs in.
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let (code, _, err) = common::wcbuild_at_env(
        &root,
        // Linux images on any host (`FROM scratch` on a Windows host is a Windows stage).
        &[
            "build",
            "--platform",
            "linux/amd64",
            "-t",
            "base:b",
            base_ctx.to_str().unwrap(),
        ],
        &epoch,
    );
    assert_eq!(code, 0, "{err}");
    // The app copies the same big.bin (same bytes, same mode) to the same path again.
    let app_ctx = tempdir("built-app-ctx");
    std::fs::write(app_ctx.join("big.bin"), &big).unwrap();
    std::fs::write(
        app_ctx.join("Dockerfile"),
        "FROM base:b\nENV MODE=prod\nCOPY big.bin /data/\n",
    )
    .unwrap();
    let (code, _, err) = common::wcbuild_at_env(
        &root,
        &["build", "-t", "app:b", app_ctx.to_str().unwrap()],
        &epoch,
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = wcbuild(&root, &["dedup", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let r: Report = serde_json::from_str(&out).unwrap();
    assert_eq!(r.summary.images, 2);
    // Builds are deterministic: the app's `COPY big.bin /data/` layer is byte for byte the
    // base's first layer, so the app lists one blob twice. It is stored and pulled once.
    assert_eq!(r.summary.layers, 2);
    let base = img(&r, "docker.io/library/base:b");
    let app = img(&r, "docker.io/library/app:b");
    assert_eq!(app.layers.len(), 3);
    assert_eq!(app.layers[0].digest, base.layers[0].digest);
    assert_eq!(app.layers[1].digest, base.layers[1].digest);
    assert_eq!(app.layers[2].digest, base.layers[0].digest);
    assert_eq!(app.layers[2].refcount, 2);
    assert_eq!(app.pull_bytes, base.pull_bytes);
    assert_eq!(app.shared_bytes, base.pull_bytes);
    assert_eq!(app.unique_bytes.compressed, 0);
    assert_eq!(
        r.summary.dedup_savings.compressed,
        base.pull_bytes.compressed
    );
    assert_eq!(
        r.summary.stored_bytes.compressed,
        base.layers[0].compressed_bytes + base.layers[1].compressed_bytes
    );
    assert_eq!(base.files.file_bytes, 30_700);
    assert_eq!(base.files.wasted_bytes, 0);
    assert_eq!(app.files.file_bytes, 60_700);
    assert_eq!(app.files.visible_bytes, 30_700);
    assert_eq!(app.files.overwritten_bytes, 30_000);
    assert_eq!(app.files.unchanged_rewrite_bytes, 30_000);
    assert_eq!(app.files.wasted_bytes, 30_000);
    // One distinct layer holds big.bin: no duplicate across the image's (distinct) layers.
    assert_eq!(app.files.dup_across_layers_bytes, 0);
    let top = &r.offenders[0];
    assert_eq!(
        (top.path.as_str(), top.layer, top.hidden_by_layer),
        ("data/big.bin", 0, 2)
    );
    assert!(
        top.created_by
            .as_deref()
            .unwrap()
            .contains("COPY big.bin /data/"),
        "{top:?}"
    );
}

#[test]
fn an_older_docker_save_archive_is_read_by_path() {
    // The pre-OCI `docker save` layout: `<id>/layer.tar` (uncompressed) and `<id>.json`,
    // named by path in manifest.json, no index.json.
    let root = tempdir("legacy");
    let store = Store::open(&root).unwrap();
    let data = content(50, 9_000);
    let plain = layer(
        &store,
        Format::Linux,
        Compression::None,
        &[E::File("srv/data.bin", &data)],
    );
    let mut tar_bytes = Vec::new();
    store
        .open_blob(&plain.digest)
        .unwrap()
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [plain.diff_id]},
        "history": [{"created_by": "ADD data.bin /srv/"}],
    }))
    .unwrap();
    let config_hex = wcbuild::store::sha256_digest(&config)
        .trim_start_matches("sha256:")
        .to_string();
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": ["legacy:1", "legacy:latest"],
        "Layers": ["0123abcd/layer.tar"],
    }]))
    .unwrap();
    let archive = root.join("legacy.tar");
    let mut w = wcbuild::ops::archive::TarWriter::new(std::fs::File::create(&archive).unwrap());
    w.dir("0123abcd").unwrap();
    w.bytes("0123abcd/layer.tar", &tar_bytes).unwrap();
    w.bytes(&format!("{config_hex}.json"), &config).unwrap();
    w.bytes("manifest.json", &manifest).unwrap();
    w.finish().unwrap();
    let other = Store::open(tempdir("legacy-other")).unwrap();
    let r = dedup(
        &other,
        &[Source::DockerArchive(archive)],
        &DedupOptions::default(),
    )
    .unwrap()
    .report;
    assert_eq!(r.summary.images, 1);
    let i = &r.images[0];
    assert_eq!(
        i.names,
        [
            "docker.io/library/legacy:1",
            "docker.io/library/legacy:latest"
        ]
    );
    assert_eq!(i.layers[0].digest, plain.diff_id);
    assert_eq!(i.layers[0].compressed_bytes, plain.tar_size);
    assert_eq!(i.layers[0].uncompressed_bytes, plain.tar_size);
    assert_eq!(i.files.file_bytes, 9_000);
    assert_eq!(
        i.layers[0].created_by.as_deref(),
        Some("ADD data.bin /srv/")
    );
}
