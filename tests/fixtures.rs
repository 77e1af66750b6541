//! The base-image fixtures: reproduced byte for byte by the generator, loadable, shaped as
//! the docs say, readable by skopeo; and the busybox base, saved in the docker format, loaded
//! and run by a real Docker engine. `./test.sh` installs skopeo, busybox-static and docker.io.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Command;
use wcbuild::ops::fixtures::{self, Sku};

mod common;
use common::start_dockerd;

fn tempdir(name: &str) -> PathBuf {
    common::tempdir("fixtures", name)
}

fn committed(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn wcbuild(root: &Path, args: &[&str]) -> (i32, String, String) {
    common::wcbuild_at(root, args)
}

#[test]
fn the_generator_reproduces_the_committed_fixtures() {
    for sku in [Sku::NanoServer, Sku::ServerCore] {
        let fresh = fixtures::windows_archive(sku).unwrap();
        let path = committed(sku.file_name());
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            fresh == on_disk,
            "{} differs from what the generator writes; run `cargo run --example make-fixtures` and commit",
            path.display()
        );
    }
}

fn load_all(root: &Path) {
    for f in ["nanoserver.tar", "servercore.tar"] {
        let (code, _, err) = wcbuild(root, &["load", "-i", committed(f).to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
    }
}

#[test]
fn fixtures_have_the_shape_of_windows_base_images() {
    let root = tempdir("shape");
    load_all(&root);
    let (_, out, _) = wcbuild(&root, &["images", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let refs: Vec<&str> = rows
        .iter()
        .map(|r| r["reference"].as_str().unwrap())
        .collect();
    for repo in ["nanoserver", "servercore"] {
        for tag in ["ltsc2019", "ltsc2022", "ltsc2025", "multi"] {
            let r = format!("mcr.microsoft.com/windows/{repo}:{tag}");
            assert!(refs.contains(&r.as_str()), "{r} missing from {refs:?}");
        }
    }
    for (repo, user) in [
        ("nanoserver", "ContainerUser"),
        ("servercore", "ContainerAdministrator"),
    ] {
        for (tag, version) in [
            ("ltsc2019", "10.0.17763."),
            ("ltsc2022", "10.0.20348."),
            ("ltsc2025", "10.0.26100."),
        ] {
            let (code, out, err) = wcbuild(
                &root,
                &[
                    "inspect",
                    &format!("mcr.microsoft.com/windows/{repo}:{tag}"),
                ],
            );
            assert_eq!(code, 0, "{err}");
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            let c = &v["config"];
            assert_eq!(
                (c["os"].as_str(), c["architecture"].as_str()),
                (Some("windows"), Some("amd64"))
            );
            assert!(c["os.version"].as_str().unwrap().starts_with(version));
            assert_eq!(c["config"]["User"], user);
            // The base layer passes the Windows layer checker and is a base layer.
            let layer = v["manifest"]["layers"][0]["digest"].as_str().unwrap();
            let blob = root
                .join("blobs/sha256")
                .join(layer.trim_start_matches("sha256:"));
            let report = wcbuild::ops::layer::check(&blob).unwrap();
            assert!(
                report.violations.is_empty() && report.base_layer,
                "{repo}:{tag}: {report}"
            );
            // Hives under Files/Windows/System32/config; a utility VM for Server Core.
            let tree = tempdir("tree").join("root");
            let (code, _, err) = wcbuild(
                &root,
                &[
                    "layer",
                    "extract",
                    blob.to_str().unwrap(),
                    tree.to_str().unwrap(),
                ],
            );
            assert_eq!(code, 0, "{err}");
            assert!(tree.join("Windows/System32/config/SYSTEM").is_file());
            assert_eq!(
                std::fs::read(tree.join("Windows/System32/config/SAM")).unwrap()[..4],
                *b"regf"
            );
        }
        // The multi-version index carries os.version on every entry.
        let (_, out, _) = wcbuild(
            &root,
            &[
                "inspect",
                &format!("mcr.microsoft.com/windows/{repo}:multi"),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let versions: Vec<&str> = v["manifest"]["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["platform"]["os.version"].as_str().unwrap())
            .collect();
        assert_eq!(versions.len(), 3);
        assert!(versions[0].starts_with("10.0.17763.") && versions[2].starts_with("10.0.26100."));
    }
    let (_, out, _) = wcbuild(
        &root,
        &[
            "inspect",
            "mcr.microsoft.com/windows/servercore:ltsc2019-foreign",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let l = &v["manifest"]["layers"][0];
    assert!(wcbuild::image::media::is_foreign(
        l["mediaType"].as_str().unwrap()
    ));
    assert!(
        l["urls"][0]
            .as_str()
            .unwrap()
            .starts_with("https://mcr.microsoft.com/v2/windows/servercore/blobs/sha256:")
    );
}

#[test]
fn skopeo_reads_every_fixture_image() {
    let root = tempdir("skopeo");
    load_all(&root);
    let (_, out, _) = wcbuild(&root, &["images", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    for r in &rows {
        let reference = r["reference"].as_str().unwrap();
        let src = format!("oci:{}:{reference}", root.display());
        let out = Command::new("skopeo")
            .args(["--override-os", "windows", "inspect", &src])
            .output()
            .expect("skopeo must be installed (./test.sh installs it)");
        assert!(
            out.status.success(),
            "{reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Os"], "windows", "{reference}");
        if reference.ends_with("-foreign") {
            continue; // skopeo fetches foreign layers from their URLs, which are not reachable here
        }
        let dest = tempdir("skopeo-dir");
        let out = Command::new("skopeo")
            .args(["--override-os", "windows", "copy", "--quiet", &src])
            .arg(format!("dir:{}", dest.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn docker_loads_and_runs_a_linux_image_we_saved() {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "busybox-static must be installed (./test.sh installs it)"
    );
    let root = tempdir("docker");
    let archive = root.join("busybox.tar");
    std::fs::write(&archive, fixtures::busybox_archive(busybox).unwrap()).unwrap();
    let store = root.join("store");
    let (code, _, err) = wcbuild(&store, &["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let saved = root.join("saved.tar");
    let (code, _, err) = wcbuild(
        &store,
        &[
            "save",
            "wcbuild.local/busybox:latest",
            "-o",
            saved.to_str().unwrap(),
            "--format",
            "docker",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let d = start_dockerd();
    let host = format!("unix://{}", d.socket.display());
    let out = Command::new("docker")
        .args(["-H", &host, "load", "-i"])
        .arg(&saved)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("wcbuild.local/busybox:latest"));
    let out = Command::new("docker")
        .args([
            "-H",
            &host,
            "run",
            "--rm",
            "--network",
            "none",
            "wcbuild.local/busybox:latest",
            "cat",
            "/etc/passwd",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("root:x:0:0:root:/root:/bin/sh"));
}
