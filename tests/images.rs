//! Image commands end to end through the `wcbuild` binary, on a real file system, with real
//! peers reading what we write: skopeo and umoci read the store as an OCI layout, GNU tar reads
//! our archives, and archives round-trip through `save` and `load` with identical digests.

mod common;

use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use wcbuild::ops::archive::TarWriter;
use wcbuild::store::{IndexEntry, Store};

fn tempdir(name: &str) -> PathBuf {
    common::tempdir("images", name)
}

fn wcbuild(root: &Path, args: &[&str]) -> (i32, String, String) {
    common::wcbuild_at(root, args)
}

/// Puts a one-layer Linux image into the store the way a build will: a gzip layer holding
/// `hello.txt`, an OCI config and manifest, tagged `name`. Returns the manifest digest.
fn make_image(
    root: &Path,
    name: &str,
    content: &str,
    os: &str,
    os_version: Option<&str>,
) -> String {
    let store = Store::open(root).unwrap();
    let mut tar = TarWriter::new(Vec::new());
    tar.bytes("hello.txt", content.as_bytes()).unwrap();
    let tar = tar.finish().unwrap();
    let diff_id = wcbuild::store::sha256_digest(&tar);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&tar).unwrap();
    let layer = gz.finish().unwrap();
    let layer_digest = store.put_blob(&layer, None).unwrap();
    let mut config = serde_json::json!({
        "architecture": "amd64",
        "os": os,
        "config": {"Cmd": ["cat", "/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "COPY hello.txt /"}],
    });
    if let Some(v) = os_version {
        config["os.version"] = v.into();
    }
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = store.put_blob(&config, None).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let digest = store.put_blob(&manifest, None).unwrap();
    let full = wcbuild::image::Reference::parse(name).unwrap().to_string();
    store
        .tag(
            &full,
            IndexEntry::new(
                "application/vnd.oci.image.manifest.v1+json",
                &digest,
                manifest.len() as u64,
            ),
        )
        .unwrap();
    digest
}

#[test]
fn images_inspect_tag_rmi() {
    let root = tempdir("cmds");
    let digest = make_image(
        &root,
        "app:1.0",
        "hello",
        "windows",
        Some("10.0.20348.2966"),
    );
    let (code, out, err) = wcbuild(&root, &["images", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["reference"], "docker.io/library/app:1.0");
    assert_eq!(rows[0]["digest"], digest.as_str());
    assert_eq!(rows[0]["platforms"][0], "windows/amd64:10.0.20348.2966");
    let (code, out, _) = wcbuild(&root, &["images"]);
    assert_eq!(code, 0);
    assert!(out.contains("docker.io/library/app:1.0"), "{out}");

    let (code, out, err) = wcbuild(&root, &["inspect", "app:1.0"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["reference"], "docker.io/library/app:1.0");
    assert_eq!(v["digest"], digest.as_str());
    assert_eq!(v["manifest"]["schemaVersion"], 2);
    assert_eq!(v["config"]["os.version"], "10.0.20348.2966");

    assert_eq!(
        wcbuild(&root, &["tag", "app:1.0", "localhost:5000/team/app:v1"]).0,
        0
    );
    let (_, out, _) = wcbuild(&root, &["images", "--json"]);
    assert!(out.contains("localhost:5000/team/app:v1"));
    assert_eq!(wcbuild(&root, &["rmi", "app:1.0"]).0, 0);
    let (code, _, err) = wcbuild(&root, &["inspect", "app:1.0"]);
    assert_eq!(code, 1);
    assert!(err.contains("no image `app:1.0`"), "{err}");
    let (code, _, err) = wcbuild(&root, &["tag", "App:1", "x"]);
    assert_eq!(code, 1);
    assert!(err.contains("repository name must be lowercase"), "{err}");
}

#[test]
#[cfg_attr(
    windows,
    ignore = "runs GNU tar, a Linux program a Windows process cannot start"
)]
fn save_and_load_round_trip_in_both_formats() {
    let root = tempdir("save");
    let digest = make_image(&root, "app:1.0", "round trip", "linux", None);
    for format in ["oci", "docker"] {
        let archive = root.join(format!("app-{format}.tar"));
        let (code, _, err) = wcbuild(
            &root,
            &[
                "save",
                "app:1.0",
                "-o",
                archive.to_str().unwrap(),
                "--format",
                format,
            ],
        );
        assert_eq!(code, 0, "{err}");
        // GNU tar reads it.
        let list = Command::new("tar")
            .arg("-tf")
            .arg(&archive)
            .output()
            .unwrap();
        assert!(list.status.success());
        let names = String::from_utf8_lossy(&list.stdout);
        assert!(
            names.contains("index.json") && names.contains("oci-layout"),
            "{names}"
        );
        assert_eq!(names.contains("manifest.json"), format == "docker");
        // Saving twice gives the same bytes.
        let again = root.join(format!("again-{format}.tar"));
        assert_eq!(
            wcbuild(
                &root,
                &[
                    "save",
                    "app:1.0",
                    "-o",
                    again.to_str().unwrap(),
                    "--format",
                    format
                ]
            )
            .0,
            0
        );
        assert_eq!(
            std::fs::read(&archive).unwrap(),
            std::fs::read(&again).unwrap()
        );
        // A fresh store loads it under the same name and digest (OCI), or the same config
        // and layers (docker's manifest.json path).
        let fresh = tempdir(&format!("load-{format}"));
        let (code, out, err) = wcbuild(&fresh, &["load", "-i", archive.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("docker.io/library/app:1.0"), "{out}");
        let (_, a, _) = wcbuild(&root, &["inspect", "app:1.0"]);
        let (_, b, _) = wcbuild(&fresh, &["inspect", "app:1.0"]);
        let a: serde_json::Value = serde_json::from_str(&a).unwrap();
        let b: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(a["digest"], digest.as_str());
        assert_eq!(
            b["digest"],
            digest.as_str(),
            "{format}: index.json wins over manifest.json"
        );
        assert_eq!(a["config"], b["config"]);
    }
    // An OCI layout directory loads too.
    let dir = tempdir("layout-dir");
    let st = Command::new("tar")
        .arg("-xf")
        .arg(root.join("app-oci.tar"))
        .arg("-C")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    let fresh = tempdir("load-dir");
    let (code, out, err) = wcbuild(&fresh, &["load", "-i", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("docker.io/library/app:1.0"), "{out}");
    // The same image: digest, manifest and config, every blob verified, the layer's file.
    let (_, a, _) = wcbuild(&root, &["inspect", "app:1.0"]);
    let (_, b, _) = wcbuild(&fresh, &["inspect", "app:1.0"]);
    let a: serde_json::Value = serde_json::from_str(&a).unwrap();
    let b: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(b["digest"], digest.as_str());
    assert_eq!(a, b);
    let (code, _, err) = wcbuild(&fresh, &["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("checked 3 blob(s)"), "{err}");
    let layer = b["manifest"]["layers"][0]["digest"].as_str().unwrap();
    let out = tempdir("layout-dir-layer").join("root");
    let blob = fresh.join("blobs/sha256").join(&layer[7..]);
    let (code, _, err) = wcbuild(
        &fresh,
        &[
            "layer",
            "extract",
            blob.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("hello.txt")).unwrap(),
        "round trip"
    );
}

#[test]
fn load_refuses_tampered_archives_and_keeps_nothing_partial() {
    let root = tempdir("tamper");
    make_image(&root, "app:1.0", "original content", "linux", None);
    let archive = root.join("app.tar");
    assert_eq!(
        wcbuild(&root, &["save", "app:1.0", "-o", archive.to_str().unwrap()]).0,
        0
    );
    let mut bytes = std::fs::read(&archive).unwrap();
    // Flip a byte inside the first blob's content (after its 512-byte header, past the
    // two directory headers).
    bytes[3 * 512 + 20] ^= 0xff;
    let bad = root.join("bad.tar");
    std::fs::write(&bad, &bytes).unwrap();
    // The blob flipped: its name and size from its header, the hash of what it now holds.
    let header = &bytes[2 * 512..3 * 512];
    let name = String::from_utf8_lossy(&header[..100])
        .trim_end_matches('\0')
        .to_string();
    let hex = name.strip_prefix("blobs/sha256/").expect("a blob entry");
    let size = usize::from_str_radix(
        String::from_utf8_lossy(&header[124..135]).trim_matches(|c| c == '\0' || c == ' '),
        8,
    )
    .unwrap();
    let tampered = wcbuild::store::sha256_digest(&bytes[3 * 512..3 * 512 + size]);
    let fresh = tempdir("tamper-load");
    let (code, _, err) = wcbuild(&fresh, &["load", "-i", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    let want = format!(
        "digest mismatch: expected `sha256:{hex}`, the bytes hash to `{tampered}` ({size} bytes); nothing was stored"
    );
    assert!(err.contains(&want), "expected `{want}` in: {err}");
    let (code, _, err) = wcbuild(&fresh, &["check"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_dir(fresh.join("ingest")).unwrap().count(), 0);
    let (_, out, _) = wcbuild(&fresh, &["images", "--json"]);
    assert_eq!(out.trim(), "[]");
}

#[test]
fn prune_removes_what_no_tag_reaches() {
    let root = tempdir("prune");
    make_image(&root, "keep:1", "kept", "linux", None);
    make_image(&root, "drop:1", "dropped", "linux", None);
    assert_eq!(wcbuild(&root, &["rmi", "drop:1"]).0, 0);
    let (code, _, err) = wcbuild(&root, &["prune"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("removed 3 blob(s)"), "{err}");
    assert_eq!(wcbuild(&root, &["inspect", "keep:1"]).0, 0);
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// skopeo and umoci read the store as the OCI image layout it is. `./test.sh` installs both.
#[test]
#[cfg_attr(
    windows,
    ignore = "runs skopeo and umoci, Linux programs a Windows process cannot start"
)]
fn skopeo_and_umoci_read_the_store() {
    assert!(
        have("skopeo") && have("umoci"),
        "skopeo and umoci must be installed (./test.sh installs them)"
    );
    let root = tempdir("peers");
    let digest = make_image(&root, "app:1.0", "for skopeo", "linux", None);
    let out = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:docker.io/library/app:1.0", root.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(raw["schemaVersion"], 2);
    assert_eq!(wcbuild::store::sha256_digest(&out.stdout), digest);
    // skopeo's own reading of the config and layers.
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:docker.io/library/app:1.0", root.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(
        info["Layers"],
        raw["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].clone())
            .collect::<serde_json::Value>()
    );
    let copy_dir = tempdir("skopeo-dir");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:docker.io/library/app:1.0", root.display()))
        .arg(format!("dir:{}", copy_dir.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = std::fs::read(copy_dir.join("manifest.json")).unwrap();
    assert_eq!(
        wcbuild::store::sha256_digest(&manifest),
        digest,
        "skopeo copied the exact manifest bytes"
    );
    // And every blob byte for byte: the config and the layer, as the store has them.
    for d in std::iter::once(&raw["config"]).chain(raw["layers"].as_array().unwrap()) {
        let hex = &d["digest"].as_str().unwrap()[7..];
        assert_eq!(
            std::fs::read(copy_dir.join(hex)).unwrap(),
            std::fs::read(root.join("blobs/sha256").join(hex)).unwrap(),
            "skopeo copied `{hex}` differently"
        );
    }
    // umoci unpacks the image into a runtime bundle.
    let bundle = tempdir("umoci").join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:docker.io/library/app:1.0", root.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/hello.txt")).unwrap(),
        "for skopeo"
    );
}
