//! What a Windows host does with wcbuild, through the binary, written to run on Linux and
//! under Wine alike (the test command runs it there): a store under a Windows path, the Nano
//! Server fixtures loaded, built on (`WORKDIR C:\app`, `COPY`) and saved and loaded back with
//! the same digests, and layers extracted with Windows semantics (a Windows layer's `Files/`
//! is the root; names with `\`, drives or `..` are refused and nothing is written; deep paths
//! past 260 characters).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

fn tempdir(name: &str) -> PathBuf {
    common::tempdir("windows-host", name)
}

fn wcbuild(root: &Path, args: &[&str]) -> (i32, String, String) {
    common::wcbuild_at(root, args)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A store with the Nano Server fixtures; its path written with the platform's separator.
fn nano_store(name: &str) -> PathBuf {
    let root = tempdir(name).join("store");
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nanoserver.tar");
    let (code, _, err) = wcbuild(&root, &["load", "-i", s(&archive)]);
    assert_eq!(code, 0, "{err}");
    root
}

fn inspect(root: &Path, reference: &str) -> serde_json::Value {
    let (code, out, err) = wcbuild(root, &["inspect", reference]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn build_save_and_load_on_the_nano_server_fixture() {
    let root = nano_store("build");
    let ctx = root.parent().unwrap().join("ctx");
    fs::create_dir_all(ctx.join("site")).unwrap();
    fs::write(ctx.join("site").join("index.html"), "<h1>hi</h1>").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM mcr.microsoft.com/windows/nanoserver:ltsc2022\nWORKDIR C:\\app\nCOPY site/ .\nCMD [\"cmd\", \"/c\", \"type\", \"index.html\"]\n",
    )
    .unwrap();
    let (code, out, err) = common::wcbuild_at_env(
        &root,
        &["build", "-q", "-t", "site:1", s(&ctx)],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_string();
    assert!(id.starts_with("sha256:"), "{out}");
    let v = inspect(&root, "site:1");
    assert_eq!(
        v["manifest"]["config"]["digest"],
        id.as_str(),
        "the image ID"
    );
    let digest = v["digest"].as_str().unwrap().to_string();
    assert_eq!(v["config"]["os"], "windows");
    assert_eq!(v["config"]["os.version"], "10.0.20348.2849");
    // As BuildKit stores it: the system drive stripped.
    assert_eq!(v["config"]["config"]["WorkingDir"], "\\app");
    let layers = v["manifest"]["layers"].as_array().unwrap().len();
    assert!(layers >= 2, "{v}");

    // Save to a file and load into a second store: the same digest.
    let archive = root.parent().unwrap().join("site.tar");
    let (code, _, err) = wcbuild(&root, &["save", "-o", s(&archive), "site:1"]);
    assert_eq!(code, 0, "{err}");
    let other = root.parent().unwrap().join("other");
    let (code, _, err) = wcbuild(&other, &["load", "-i", s(&archive)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(inspect(&other, "site:1")["digest"], digest.as_str());

    // The COPY layer holds the file under Files/app, as Windows' importer wants it.
    let top = v["manifest"]["layers"][layers - 1]["digest"]
        .as_str()
        .unwrap();
    let blob = root
        .join("blobs")
        .join("sha256")
        .join(top.trim_start_matches("sha256:"));
    let out_dir = root.parent().unwrap().join("top");
    let (code, _, err) = wcbuild(&root, &["layer", "extract", s(&blob), s(&out_dir)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        fs::read_to_string(out_dir.join("app").join("index.html")).unwrap(),
        "<h1>hi</h1>"
    );
}

/// A tar with the given (name, content) regular files.
fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = wcbuild::ops::archive::TarWriter::new(Vec::new());
    for (name, data) in entries {
        w.bytes(name, data).unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn hostile_names_are_refused_and_nothing_is_written() {
    let dir = tempdir("hostile");
    let outside = dir.join("outside.txt");
    // (name, refused everywhere): `\` separates names on Windows only; on Linux it is a
    // character of one name, extracted as such inside the target.
    for (i, (name, everywhere)) in [
        ("../outside.txt", true),
        ("a/../../outside.txt", true),
        ("/abs/../../outside.txt", true),
        ("C:\\Windows\\evil.txt", true),
        ("C:evil.txt", true),
        ("a\\..\\..\\outside.txt", false),
        ("\\\\server\\share\\evil.txt", false),
    ]
    .iter()
    .enumerate()
    {
        let layer = dir.join(format!("evil{i}.tar"));
        fs::write(&layer, tar_of(&[("ok.txt", b"fine"), (name, b"bad")])).unwrap();
        let target = dir.join(format!("out{i}"));
        let (code, _, err) = wcbuild(&dir, &["layer", "extract", s(&layer), s(&target)]);
        assert!(!outside.exists(), "{name} escaped");
        if *everywhere || cfg!(windows) {
            assert_eq!(code, 1, "{name}: {err}");
            assert!(err.contains("refused entry"), "{name}: {err}");
            assert!(err.contains("nothing was extracted"), "{name}: {err}");
            let left: Vec<_> = fs::read_dir(&target)
                .map(|r| r.map(|e| e.unwrap().file_name()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{name}: left {left:?}");
        } else {
            assert_eq!(code, 0, "{name}: {err}");
            assert_eq!(fs::read_to_string(target.join(name)).unwrap(), "bad");
        }
    }
}

#[test]
fn deep_paths_past_260_characters_extract() {
    let dir = tempdir("deep");
    let deep: String = (0..12)
        .map(|i| format!("{i:02}{}/", "d".repeat(28)))
        .collect();
    let name = format!("{deep}file.txt");
    assert!(name.len() > 300);
    let layer = dir.join("deep.tar");
    fs::write(&layer, tar_of(&[(name.as_str(), b"deep")])).unwrap();
    let target = dir.join("out");
    let (code, _, err) = wcbuild(&dir, &["layer", "extract", s(&layer), s(&target)]);
    assert_eq!(code, 0, "{err}");
    let full = target.join(&name);
    assert!(full.to_string_lossy().len() > 260);
    assert_eq!(fs::read_to_string(full).unwrap(), "deep");
}

#[test]
fn the_windows_fixture_layers_extract_with_files_as_the_root() {
    let root = nano_store("fixture");
    for tag in ["ltsc2019", "ltsc2022", "ltsc2025"] {
        let v = inspect(
            &root,
            &format!("mcr.microsoft.com/windows/nanoserver:{tag}"),
        );
        let base = v["manifest"]["layers"][0]["digest"].as_str().unwrap();
        let blob = root
            .join("blobs")
            .join("sha256")
            .join(base.trim_start_matches("sha256:"));
        let out = root.parent().unwrap().join(tag);
        let (code, _, err) = wcbuild(&root, &["layer", "extract", s(&blob), s(&out)]);
        assert_eq!(code, 0, "{tag}: {err}");
        assert!(
            err.contains("Windows layer: Files/ is the root"),
            "{tag}: {err}"
        );
        for f in ["cmd.exe", "kernel32.dll"] {
            let p = out.join("Windows").join("System32").join(f);
            assert!(p.is_file(), "{tag}: {} missing", p.display());
        }
        assert!(!out.join("Files").exists(), "{tag}");
    }
}
