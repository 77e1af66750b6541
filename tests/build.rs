//! `wcbuild build` end to end through the binary: a Windows image from the Nano Server
//! fixture built on Linux, Linux images from scratch and from the busybox base, config and
//! history fields checked one by one, layer trees checked by extracting them, reproducible
//! digests, and clear failures for what is not built yet.
#![cfg(unix)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

fn tempdir(name: &str) -> PathBuf {
    common::tempdir("build", name)
}

fn wcbuild(root: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wcbuild"));
    c.arg("--root")
        .arg(root)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn inspect(root: &Path, name: &str) -> serde_json::Value {
    let (code, out, err) = wcbuild(root, &["inspect", name], &[]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// The tar headers of layer `i` of an image, in order.
fn layer_headers(
    root: &Path,
    image: &serde_json::Value,
    i: usize,
) -> Vec<wcbuild::layer::tar::Header> {
    let d = image["manifest"]["layers"][i]["digest"].as_str().unwrap();
    let blob = fs::File::open(
        root.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:")),
    )
    .unwrap();
    let mut tar = wcbuild::layer::tar_reader(blob, Default::default()).unwrap();
    let mut out = Vec::new();
    while let Some(e) = tar.next_entry().unwrap() {
        out.push(e.header);
    }
    out
}

/// Extracts layer `i` of an image into a fresh directory.
fn layer_tree(root: &Path, image: &serde_json::Value, i: usize) -> PathBuf {
    let d = image["manifest"]["layers"][i]["digest"].as_str().unwrap();
    let blob = root
        .join("blobs/sha256")
        .join(d.trim_start_matches("sha256:"));
    let dest = tempdir("tree").join("root");
    let (code, _, err) = wcbuild(
        root,
        &[
            "layer",
            "extract",
            blob.to_str().unwrap(),
            dest.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    dest
}

#[test]
fn a_nano_server_image_builds_on_linux() {
    let root = tempdir("nano");
    let (code, _, err) = wcbuild(
        &root,
        &[
            "load",
            "-i",
            repo().join("fixtures/nanoserver.tar").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let example = repo().join("examples/hello-nanoserver");
    let (code, out, err) = wcbuild(&root, &["-t", "hello:1.0", example.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let v = inspect(&root, "hello:1.0");
    assert_eq!(
        out.trim(),
        v["manifest"]["config"]["digest"].as_str().unwrap(),
        "stdout is the image ID, the config digest, as Docker's"
    );
    let c = &v["config"];
    assert_eq!(c["os"], "windows");
    assert_eq!(
        c["os.version"], "10.0.20348.2849",
        "inherited from the base"
    );
    let cfg = &c["config"];
    assert_eq!(cfg["User"], "ContainerUser");
    assert_eq!(cfg["WorkingDir"], "\\site");
    assert_eq!(
        cfg["Env"],
        serde_json::json!(["SITE_ROOT=C:\\site"]),
        "no PATH default on Windows"
    );
    assert_eq!(cfg["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(
        cfg["Cmd"],
        serde_json::json!(["cmd", "/S", "/C", "type", "C:\\site\\index.html"])
    );
    assert_eq!(
        cfg["Labels"]["org.opencontainers.image.title"],
        "hello-nanoserver"
    );
    let history: Vec<(String, bool)> = c["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap().to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let expected = [
        ("Apply image 10.0.20348.2849", false),
        ("ARG WINDOWS_VERSION=ltsc2022", true),
        (
            "LABEL org.opencontainers.image.title=hello-nanoserver org.opencontainers.image.description=A static site on Nano Server",
            true,
        ),
        ("ENV SITE_ROOT=C:\\site", true),
        ("WORKDIR /site", false),
        ("COPY site/ . # buildkit", false),
        ("COPY <<EOF C:\\site\\version.txt # buildkit", false),
        ("EXPOSE [8080/tcp]", true),
        ("USER ContainerUser", true),
        (
            "CMD [\"cmd\" \"/S\" \"/C\" \"type\" \"C:\\\\site\\\\index.html\"]",
            true,
        ),
    ];
    let expected: Vec<(String, bool)> = expected.iter().map(|(s, b)| (s.to_string(), *b)).collect();
    assert_eq!(history, expected);
    // One layer per non-empty history entry, each a valid Windows layer.
    let layers = v["manifest"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4);
    assert_eq!(c["rootfs"]["diff_ids"].as_array().unwrap().len(), 4);
    for l in &layers[1..] {
        let blob = root
            .join("blobs/sha256")
            .join(l["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        let report = wcbuild::ops::layer::check(&blob).unwrap();
        assert!(
            report.violations.is_empty() && !report.base_layer,
            "{report}"
        );
    }
    let site = layer_tree(&root, &v, 2);
    assert_eq!(
        fs::read(site.join("site/index.html")).unwrap(),
        fs::read(example.join("site/index.html")).unwrap()
    );
    let version = layer_tree(&root, &v, 3);
    assert_eq!(
        fs::read_to_string(version.join("site/version.txt")).unwrap(),
        "built for ltsc2022\n"
    );
    // Another Windows version from the same Dockerfile.
    let (code, _, err) = wcbuild(
        &root,
        &[
            "-t",
            "hello:2019",
            "--build-arg",
            "WINDOWS_VERSION=ltsc2019",
            example.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        inspect(&root, "hello:2019")["config"]["os.version"],
        "10.0.17763.6414"
    );
}

fn context(files: &[(&str, &str)]) -> PathBuf {
    let dir = tempdir("ctx");
    for (p, c) in files {
        let path = dir.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, c).unwrap();
    }
    dir
}

#[test]
fn linux_from_scratch_with_copy_semantics() {
    let root = tempdir("scratch");
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nWORKDIR /app\nCOPY --chmod=755 --chown=1000:1000 bin/ ./bin/\nCOPY *.txt docs/\nCOPY --exclude=*.log logs/ /var/log/app/\nCOPY conf/app.conf /etc/app.conf\nENV A=1 B=\"two words\"\nENTRYPOINT [\"/app/bin/run\"]\nCMD serve --port 80\n",
        ),
        (".dockerignore", "secret.txt\n"),
        ("bin/run", "#!/bin/sh\n"),
        ("a.txt", "a"),
        ("b.txt", "b"),
        ("secret.txt", "do not copy"),
        ("logs/keep.json", "{}"),
        ("logs/drop.log", "x"),
        ("conf/app.conf", "k=v"),
    ]);
    let (code, _, err) = wcbuild(
        &root,
        &["build", "-t", "scratchy", ctx.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let v = inspect(&root, "scratchy");
    let cfg = &v["config"]["config"];
    assert_eq!(v["config"]["os"], "linux");
    assert_eq!(cfg["WorkingDir"], "/app");
    assert_eq!(
        cfg["Env"][0], "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "BuildKit's default PATH"
    );
    assert_eq!(cfg["Env"][2], "B=two words");
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/app/bin/run"]));
    assert_eq!(
        cfg["Cmd"],
        serde_json::json!(["/bin/sh", "-c", "serve --port 80"])
    );
    let layers = v["manifest"]["layers"].as_array().unwrap().len();
    assert_eq!(layers, 5, "WORKDIR and four COPYs");
    let t = layer_tree(&root, &v, 1);
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let run = fs::metadata(t.join("app/bin/run")).unwrap();
    assert_eq!(run.permissions().mode() & 0o777, 0o755);
    // The owner as the layer records it (whoever extracts it), and as extracted by root.
    let headers = layer_headers(&root, &v, 1);
    let h = headers
        .iter()
        .find(|h| h.path.trim_end_matches('/') == "app/bin/run")
        .expect("app/bin/run in the layer");
    assert_eq!((h.uid, h.gid), (1000, 1000), "--chown=1000:1000");
    let dir = headers
        .iter()
        .find(|h| h.path.trim_end_matches('/') == "app/bin")
        .expect("app/bin in the layer");
    assert_eq!(
        (dir.uid, dir.gid),
        (1000, 1000),
        "--chown applies to the copied directory"
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!((run.uid(), run.gid()), (1000, 1000));
    }
    let t = layer_tree(&root, &v, 2);
    assert!(t.join("app/docs/a.txt").is_file() && t.join("app/docs/b.txt").is_file());
    assert!(
        !t.join("app/docs/secret.txt").exists(),
        ".dockerignore is honoured"
    );
    let t = layer_tree(&root, &v, 3);
    assert!(t.join("var/log/app/keep.json").is_file());
    assert!(
        !t.join("var/log/app/drop.log").exists(),
        "--exclude is honoured"
    );
    let t = layer_tree(&root, &v, 4);
    assert_eq!(fs::read_to_string(t.join("etc/app.conf")).unwrap(), "k=v");
}

#[test]
fn builds_are_reproducible_with_source_date_epoch() {
    // The same context built in two stores, file times changed in between, the epoch given
    // once by the environment and once by `--source-date-epoch`: the same digest, and the
    // epoch is the image's creation time and no file is newer.
    let build = |touch: bool, flag: bool| {
        let root = tempdir("repro");
        let ctx = context(&[
            ("Dockerfile", "FROM scratch\nCOPY . /src/\nENV X=1\n"),
            ("a.txt", "same"),
            ("d/b.txt", "same"),
        ]);
        let when = if touch {
            std::time::SystemTime::now() - std::time::Duration::from_secs(86_400)
        } else {
            std::time::SystemTime::now() + std::time::Duration::from_secs(3_600)
        };
        for f in ["a.txt", "d/b.txt"] {
            fs::File::options()
                .write(true)
                .open(ctx.join(f))
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        let (code, out, err) = if flag {
            wcbuild(
                &root,
                &[
                    "build",
                    "-q",
                    "--source-date-epoch",
                    "1700000000",
                    "-t",
                    "repro:1",
                    ctx.to_str().unwrap(),
                ],
                &[],
            )
        } else {
            wcbuild(
                &root,
                &["build", "-q", "-t", "repro:1", ctx.to_str().unwrap()],
                &[("SOURCE_DATE_EPOCH", "1700000000")],
            )
        };
        assert_eq!(code, 0, "{err}");
        (root, out.trim().to_string())
    };
    let (root, first) = build(false, false);
    let (_, second) = build(true, true);
    assert_eq!(first, second);
    let v = inspect(&root, "repro:1");
    assert_eq!(v["config"]["created"], "2023-11-14T22:13:20Z");
    for h in v["config"]["history"].as_array().unwrap() {
        assert_eq!(h["created"], "2023-11-14T22:13:20Z", "{h}");
    }
    for h in layer_headers(&root, &v, 0) {
        assert!(
            h.mtime <= 1_700_000_000,
            "`{}` has mtime {}",
            h.path,
            h.mtime
        );
    }
    // Without an epoch the creation time is now, so the digest differs.
    let other = tempdir("repro-now");
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY . /src/\nENV X=1\n"),
        ("a.txt", "same"),
        ("d/b.txt", "same"),
    ]);
    let (code, out, err) = wcbuild(&other, &["build", "-q", ctx.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    assert_ne!(out.trim(), first);
}

/// The Nano Server example rebuilt in a second store, with the same epoch: the same image
/// digest, manifest and config bytes.
#[test]
fn a_windows_image_rebuilt_in_another_store_is_the_same() {
    let example = repo().join("examples/hello-nanoserver");
    let build = || {
        let root = tempdir("repro-win");
        let (code, _, err) = wcbuild(
            &root,
            &[
                "load",
                "-i",
                repo().join("fixtures/nanoserver.tar").to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(code, 0, "{err}");
        let (code, out, err) = wcbuild(
            &root,
            &[
                "build",
                "-q",
                "--source-date-epoch",
                "1700000000",
                "-t",
                "hello:1.0",
                example.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(code, 0, "{err}");
        (root, out.trim().to_string())
    };
    let (a, da) = build();
    let (b, db) = build();
    assert_eq!(da, db);
    let (va, vb) = (inspect(&a, "hello:1.0"), inspect(&b, "hello:1.0"));
    assert_eq!(va["config"]["os"], "windows");
    assert_eq!(va["config"]["created"], "2023-11-14T22:13:20Z");
    assert_eq!(va, vb);
}

#[test]
fn what_cannot_run_here_fails_clearly() {
    let root = tempdir("fail");
    // A RUN in a stage with no shell: the runtime's own words, the line quoted.
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY a.txt /\nRUN echo hi\n"),
        ("a.txt", "a"),
    ]);
    let (code, _, err) = wcbuild(&root, &["build", ctx.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Dockerfile:3:1: ") && err.contains("/bin/sh"),
        "{err}"
    );
    assert!(
        err.contains(" 3 | RUN echo hi"),
        "the line is quoted: {err}"
    );
    // A RUN on a Windows stage on this Linux host: which runtime it would need.
    let fixture = repo().join("fixtures/nanoserver.tar");
    let (code, _, err) = wcbuild(&root, &["load", "-i", fixture.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let ctx = context(&[(
        "Dockerfile",
        "FROM mcr.microsoft.com/windows/nanoserver:ltsc2022\nRUN echo hi\n",
    )]);
    let (code, _, err) = wcbuild(&root, &["build", ctx.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Dockerfile:2:1: RUN on a Windows stage needs a Windows runtime")
            && err.contains("Host Compute Service"),
        "{err}"
    );
    let root = tempdir("fail-empty");
    let ctx = context(&[(
        "Dockerfile",
        "FROM mcr.microsoft.com/windows/nanoserver:ltsc2022\n",
    )]);
    let (code, _, err) = wcbuild(&root, &["build", ctx.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    // Not in the store, and the registry cannot be reached (no network here): both said.
    assert!(
        err.contains("is not in the store") && err.contains("load it"),
        "{err}"
    );
    assert!(err.contains("mcr.microsoft.com"), "{err}");
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY missing.txt /\n")]);
    let (code, _, err) = wcbuild(&root, &["build", ctx.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("source `missing.txt` not found in the build context"),
        "{err}"
    );
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY --form=x a /\n")]);
    let (code, _, err) = wcbuild(&root, &["build", ctx.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Dockerfile:2:6: unknown flag: --form (did you mean from?)"),
        "{err}"
    );
}

#[test]
fn multi_stage_copy_from_linux_stage_and_from_an_image_into_nano_server() {
    let root = tempdir("multi");
    let (code, _, err) = wcbuild(
        &root,
        &[
            "load",
            "-i",
            repo().join("fixtures/nanoserver.tar").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let ctx = context(&[
        (
            "Dockerfile",
            "# escape=`\nFROM scratch AS build\nCOPY app/ /out/\nCOPY notes.txt /out/docs/\n\nFROM scratch AS unused\nCOPY nothing-here /\n\nFROM mcr.microsoft.com/windows/nanoserver:ltsc2022\nWORKDIR C:\\app\nCOPY --from=build /out/ .\nCOPY --from=0 /out/docs/notes.txt C:\\docs\\\nCOPY --from=mcr.microsoft.com/windows/nanoserver:ltsc2019 C:\\License.txt C:\\licenses\\2019.txt\n",
        ),
        ("app/app.exe", "MZ fake"),
        ("app/lib/x.dll", "dll"),
        ("notes.txt", "notes"),
    ]);
    let (code, _, err) = wcbuild(
        &root,
        &["build", "-t", "multi:1", ctx.to_str().unwrap()],
        &[],
    );
    assert_eq!(
        code, 0,
        "the unused stage is not built, so its missing file does not matter: {err}"
    );
    let v = inspect(&root, "multi:1");
    assert_eq!(v["config"]["os"], "windows");
    let app = layer_tree(&root, &v, 2);
    assert_eq!(
        fs::read_to_string(app.join("app/app.exe")).unwrap(),
        "MZ fake"
    );
    assert_eq!(
        fs::read_to_string(app.join("app/lib/x.dll")).unwrap(),
        "dll"
    );
    let docs = layer_tree(&root, &v, 3);
    assert_eq!(
        fs::read_to_string(docs.join("docs/notes.txt")).unwrap(),
        "notes"
    );
    let lic = layer_tree(&root, &v, 4);
    assert!(
        fs::read_to_string(lic.join("licenses/2019.txt"))
            .unwrap()
            .contains("10.0.17763")
    );
    for l in &v["manifest"]["layers"].as_array().unwrap()[1..] {
        let blob = root
            .join("blobs/sha256")
            .join(l["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        let report = wcbuild::ops::layer::check(&blob).unwrap();
        assert!(report.violations.is_empty(), "{report}");
    }
    let history: Vec<String> = v["config"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap().to_string())
        .collect();
    assert!(
        history.contains(&"COPY /out/ . # buildkit".to_string()),
        "{history:?}"
    );
}

#[test]
fn a_dockerfile_from_stdin_builds_for_several_platforms() {
    // Standard input is read once: the second platform used to find it empty.
    let root = tempdir("stdin-platforms");
    let fixture = repo().join("fixtures/nanoserver.tar");
    let (code, _, err) = wcbuild(&root, &["load", "-i", fixture.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let ctx = context(&[("app.exe", "MZ")]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_wcbuild"))
        .arg("--root")
        .arg(&root)
        .args([
            "build",
            "-f",
            "-",
            "-t",
            "stdin:multi",
            "--platform",
            "windows/amd64:ltsc2019,windows/amd64:ltsc2022",
        ])
        .arg(&ctx)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        b"FROM mcr.microsoft.com/windows/nanoserver:multi\nCOPY app.exe /app/\n",
    )
    .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = inspect(&root, "stdin:multi");
    assert_eq!(v["manifest"]["manifests"].as_array().unwrap().len(), 2);
}

#[test]
fn every_windows_version_from_one_build() {
    let root = tempdir("versions");
    let (code, _, err) = wcbuild(
        &root,
        &[
            "load",
            "-i",
            repo().join("fixtures/nanoserver.tar").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let ctx = context(&[
        (
            "Dockerfile",
            "# escape=`\nFROM mcr.microsoft.com/windows/nanoserver:multi\nARG TARGETPLATFORM\nCOPY app.exe C:\\app\\\nENV BUILT_FOR=$TARGETPLATFORM\n",
        ),
        ("app.exe", "MZ"),
    ]);
    let (code, out, err) = wcbuild(
        &root,
        &[
            "build",
            "-t",
            "app:multi",
            "--platform",
            "windows/amd64:ltsc2019,windows/amd64:10.0.20348,windows/amd64:ltsc2025",
            ctx.to_str().unwrap(),
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_eq!(code, 0, "{err}");
    let v = inspect(&root, "app:multi");
    assert_eq!(out.trim(), v["digest"].as_str().unwrap());
    let entries = v["manifest"]["manifests"].as_array().unwrap();
    let versions: Vec<&str> = entries
        .iter()
        .map(|m| m["platform"]["os.version"].as_str().unwrap())
        .collect();
    assert_eq!(
        versions,
        ["10.0.17763.6414", "10.0.20348.2849", "10.0.26100.2314"]
    );
    // The COPY layer does not depend on the base: one blob shared by all three images.
    let mut copy_layers = std::collections::BTreeSet::new();
    for m in entries {
        let digest = m["digest"].as_str().unwrap();
        let bytes = fs::read(
            root.join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        copy_layers.insert(
            manifest["layers"][1]["digest"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        let cfg_digest = manifest["config"]["digest"].as_str().unwrap();
        let cfg: serde_json::Value = serde_json::from_slice(
            &fs::read(
                root.join("blobs/sha256")
                    .join(cfg_digest.trim_start_matches("sha256:")),
            )
            .unwrap(),
        )
        .unwrap();
        let env = cfg["config"]["Env"][0].as_str().unwrap();
        assert!(env.starts_with("BUILT_FOR=windows(10.0."), "{env}");
    }
    assert_eq!(copy_layers.len(), 1, "{copy_layers:?}");
    // skopeo reads the index and each version.
    let out = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!(
            "oci:{}:docker.io/library/app:multi",
            root.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The same Dockerfile built by wcbuild and by a real Docker engine (started on a private
/// socket, no network) gives the same config fields and the same files; and Docker runs ours.
#[test]
fn linux_images_match_docker_build() {
    let root = tempdir("vs-docker");
    let busybox = std::path::Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "busybox-static must be installed (./test.sh installs it)"
    );
    let base = root.join("busybox.tar");
    fs::write(
        &base,
        wcbuild::ops::fixtures::busybox_archive(busybox).unwrap(),
    )
    .unwrap();
    let (code, _, err) = wcbuild(&root, &["load", "-i", base.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM wcbuild.local/busybox:latest\nARG GREETING=hello\nENV GREETING=$GREETING APP_HOME=/srv/app\nLABEL org.example.team=\"build tools\" version=1\nWORKDIR $APP_HOME\nCOPY hello.txt ./\nCOPY --chmod=755 tools/ /usr/local/bin/\nCOPY conf /etc/app/\nEXPOSE 8080 53/udp\nUSER 1000:1000\nVOLUME /data\nENTRYPOINT [\"cat\"]\nCMD [\"/srv/app/hello.txt\"]\n",
        ),
        ("hello.txt", "hello from wcbuild\n"),
        ("tools/run.sh", "#!/bin/sh\necho run\n"),
        ("conf/app.conf", "a=1\n"),
        ("conf/sub/more.conf", "b=2\n"),
        (".dockerignore", "*.md\n"),
        ("README.md", "not copied"),
    ]);
    let ours = root.join("ours.tar");
    let (code, _, err) = wcbuild(
        &root,
        &[
            "build",
            "-t",
            "cmp:ours",
            "--output",
            &format!("type=docker,dest={}", ours.display()),
            ctx.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let d = common::start_dockerd();
    let out = d.docker(&["load", "-i", base.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.docker(&["load", "-i", ours.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.docker_env(
        &[
            "build",
            "--network",
            "none",
            "-q",
            "-t",
            "cmp:docker",
            ctx.to_str().unwrap(),
        ],
        &[("DOCKER_BUILDKIT", "1")],
    );
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Docker runs our image.
    let out = d.docker(&["run", "--rm", "--network", "none", "cmp:ours"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from wcbuild\n");
    // Config fields agree.
    let config = |name: &str| -> serde_json::Value {
        let out = d.docker(&["image", "inspect", name, "--format", "{{json .Config}}"]);
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (a, b) = (config("cmp:ours"), config("cmp:docker"));
    for field in [
        "Env",
        "Entrypoint",
        "Cmd",
        "WorkingDir",
        "User",
        "ExposedPorts",
        "Volumes",
        "Labels",
    ] {
        assert_eq!(
            a[field], b[field],
            "{field} differs: ours {} docker {}",
            a[field], b[field]
        );
    }
    // Files agree: list both images' trees (type, mode, owner, size) from a container.
    let tree = |name: &str| -> String {
        let out = d.docker(&["run", "--rm", "--network", "none", "--entrypoint", "sh", name, "-c", "cd / && ls -lnR srv usr/local/bin etc/app | sed 's/ [A-Z][a-z][a-z] [ 0-9][0-9] [0-9:]* / /'"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(tree("cmp:ours"), tree("cmp:docker"));
    // History as `docker history` shows it: the same instructions, the same layer marks.
    let history = |name: &str| -> Vec<String> {
        let out = d.docker(&[
            "history",
            "--no-trunc",
            "--format",
            "{{.CreatedBy}}|{{.Size}}",
            name,
        ]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let (by, size) = l.rsplit_once('|').unwrap_or((l, ""));
                format!("{by} [{}]", if size == "0B" { "empty" } else { "layer" })
            })
            .collect()
    };
    // Debian's engine embeds an older BuildKit, which printed EXPOSE as a Go map and left
    // --chmod out of COPY's history; current BuildKit (what wcbuild follows) prints both as
    // below. Everything else must be identical.
    let ours = history("cmp:ours");
    assert!(
        ours.contains(&"EXPOSE [8080/tcp 53/udp] [empty]".to_string()),
        "{ours:?}"
    );
    assert!(
        ours.contains(&"COPY --chmod=755 tools/ /usr/local/bin/ # buildkit [layer]".to_string()),
        "{ours:?}"
    );
    let normalize = |h: Vec<String>| -> Vec<String> {
        h.into_iter()
            .filter(|l| !l.starts_with("EXPOSE "))
            .map(|l| l.replace("--chmod=755 ", ""))
            .collect()
    };
    assert_eq!(normalize(ours), normalize(history("cmp:docker")));
}

#[test]
fn the_build_cache_reuses_layers_by_content() {
    let root = tempdir("cache");
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nWORKDIR /app\nCOPY one.txt ./\nENV STEP=2\nCOPY two.txt ./\n",
        ),
        ("one.txt", "one"),
        ("two.txt", "two"),
    ]);
    let c = ctx.to_str().unwrap();
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let run = |args: &[&str]| {
        let mut a = vec!["build", "--progress", "plain"];
        a.extend_from_slice(args);
        a.push(c);
        let (code, out, err) = wcbuild(&root, &a, &epoch);
        assert_eq!(code, 0, "{err}");
        (
            out.trim().to_string(),
            err.lines().filter(|l| l.ends_with(" CACHED")).count(),
        )
    };
    let (first, cached) = run(&[]);
    assert_eq!(cached, 0);
    let (second, cached) = run(&[]);
    assert_eq!(
        (second.as_str(), cached),
        (first.as_str(), 3),
        "WORKDIR and both COPYs come from the cache"
    );
    // A touch alone is not a change.
    let f = fs::File::options()
        .write(true)
        .open(ctx.join("one.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();
    let (third, cached) = run(&[]);
    assert_eq!((third.as_str(), cached), (first.as_str(), 3));
    // New content re-runs that step and everything after it.
    fs::write(ctx.join("one.txt"), "ONE").unwrap();
    let (fourth, cached) = run(&[]);
    assert_ne!(fourth, first);
    assert_eq!(cached, 1, "only WORKDIR before the change is cached");
    // --no-cache builds everything.
    let (_, cached) = run(&["--no-cache"]);
    assert_eq!(cached, 0);
    // JSON progress: one object per event.
    let (code, _, err) = wcbuild(&root, &["build", "--progress", "json", c], &epoch);
    assert_eq!(code, 0);
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "stage");
    assert!(
        events
            .iter()
            .filter(|e| e["type"] == "step")
            .all(|e| e["line"].as_u64().is_some())
    );
    assert_eq!(events.iter().filter(|e| e["cached"] == true).count(), 3);
    // prune keeps what the cache needs unless asked to drop it.
    assert_eq!(wcbuild(&root, &["prune"], &[]).0, 0);
    assert_eq!(run(&[]).1, 3);
    let (code, _, err) = wcbuild(&root, &["prune", "--cache"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run(&[]).1, 0);
}

#[test]
fn add_unpacks_local_tars_by_content() {
    use wcbuild::layer::tar::{END, Header, Kind, write_entry};
    let root = tempdir("add");
    let mut tar = Vec::new();
    let mut h = Header::new("pkg/bin/tool", Kind::File);
    h.size = 4;
    h.mode = 0o755;
    h.uid = 1000;
    h.gid = 1000;
    write_entry(&mut tar, &h, false, Some(&mut &b"tool"[..])).unwrap();
    tar.extend_from_slice(&END);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let gz = gz.finish().unwrap();
    let ctx = context(&[(
        "Dockerfile",
        "FROM scratch\nADD vendor.bin /opt/\nADD --unpack=false vendor.bin /raw/\n",
    )]);
    // Named .bin: detection is by content, not by name.
    fs::write(ctx.join("vendor.bin"), &gz).unwrap();
    let (code, _, err) = wcbuild(&root, &["build", "-t", "add:1", ctx.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let v = inspect(&root, "add:1");
    let d = v["manifest"]["layers"][0]["digest"].as_str().unwrap();
    let blob = fs::read(
        root.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:")),
    )
    .unwrap();
    let mut r = wcbuild::layer::tar_reader(
        std::io::Cursor::new(blob),
        wcbuild::layer::ReadLimits::default(),
    )
    .unwrap();
    let mut found = None;
    while let Some(e) = r.next_entry().unwrap() {
        if e.header.path == "opt/pkg/bin/tool" {
            found = Some((e.header.uid, e.header.mode & 0o777));
        }
    }
    assert_eq!(
        found,
        Some((1000, 0o755)),
        "unpacked with the archive's owner and mode"
    );
    let raw = layer_tree(&root, &v, 1);
    assert_eq!(
        fs::read(raw.join("raw/vendor.bin")).unwrap(),
        gz,
        "--unpack=false copies the file"
    );
    // bzip2 is recognised and refused clearly.
    let ctx = context(&[("Dockerfile", "FROM scratch\nADD x.tar.bz2 /\n")]);
    fs::write(ctx.join("x.tar.bz2"), b"BZh91AY&SY").unwrap();
    let (code, _, err) = wcbuild(&root, &["build", ctx.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("bzip2 archives are not unpacked"), "{err}");
}

#[test]
fn named_build_contexts() {
    let root = tempdir("named");
    let (code, _, err) = wcbuild(
        &root,
        &[
            "load",
            "-i",
            repo().join("fixtures/nanoserver.tar").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let assets = context(&[("logo.svg", "<svg/>")]);
    let ctx = context(&[(
        "Dockerfile",
        "# escape=`\nFROM base\nCOPY --from=assets logo.svg C:\\site\\\n",
    )]);
    let (code, _, err) = wcbuild(
        &root,
        &[
            "build",
            "-t",
            "named:1",
            "--build-context",
            &format!("assets={}", assets.display()),
            "--build-context",
            "base=docker-image://mcr.microsoft.com/windows/nanoserver:ltsc2025",
            ctx.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let v = inspect(&root, "named:1");
    assert_eq!(v["config"]["os.version"], "10.0.26100.2314");
    let t = layer_tree(&root, &v, 1);
    assert_eq!(
        fs::read_to_string(t.join("site/logo.svg")).unwrap(),
        "<svg/>"
    );
    assert!(
        assets.join("logo.svg").exists(),
        "a directory context is never removed"
    );
}

#[test]
fn copy_parents_and_symbolic_chmod() {
    let root = tempdir("parents");
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nCOPY --parents src/a/*.txt src/b/*.txt /keep/\nCOPY --parents ./src/./b/*.txt /pivot/\nCOPY --chmod=u=rwX,go=rX tool.sh /bin/\n",
        ),
        ("src/a/one.txt", "1"),
        ("src/b/two.txt", "2"),
        ("tool.sh", "#!/bin/sh\n"),
    ]);
    let (code, _, err) = wcbuild(
        &root,
        &["build", "-t", "parents", ctx.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let v = inspect(&root, "parents");
    let t = layer_tree(&root, &v, 0);
    assert!(t.join("keep/src/a/one.txt").is_file() && t.join("keep/src/b/two.txt").is_file());
    let t = layer_tree(&root, &v, 1);
    assert!(
        t.join("pivot/b/two.txt").is_file(),
        "the ./ pivot drops what comes before it"
    );
    let t = layer_tree(&root, &v, 2);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(t.join("bin/tool.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
}

#[test]
fn chown_names_resolve_through_the_stage_passwd() {
    let root = tempdir("chown");
    let base = root.join("busybox.tar");
    fs::write(
        &base,
        wcbuild::ops::fixtures::busybox_archive(std::path::Path::new("/bin/busybox")).unwrap(),
    )
    .unwrap();
    let (code, _, err) = wcbuild(&root, &["load", "-i", base.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM wcbuild.local/busybox:latest\nCOPY --chown=nobody:nogroup a.txt /a\nCOPY --chown=nobody b.txt /b\n",
        ),
        ("a.txt", "a"),
        ("b.txt", "b"),
    ]);
    let (code, _, err) = wcbuild(&root, &["build", "-t", "owned", ctx.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let v = inspect(&root, "owned");
    for (i, path) in [(1, "a"), (2, "b")] {
        let d = v["manifest"]["layers"][i]["digest"].as_str().unwrap();
        let blob = fs::read(
            root.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap();
        let mut r = wcbuild::layer::tar_reader(
            std::io::Cursor::new(blob),
            wcbuild::layer::ReadLimits::default(),
        )
        .unwrap();
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(
            (e.header.path.as_str(), e.header.uid, e.header.gid),
            (path, 65534, 65534)
        );
    }
    // A name the image does not list is 0, without an error, as BuildKit resolves it (and
    // Debian's `docker build` was seen to do).
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM wcbuild.local/busybox:latest\nCOPY --chown=ghost:nogroup a.txt /a\n",
        ),
        ("a.txt", "a"),
    ]);
    let (code, _, err) = wcbuild(&root, &["build", "-t", "ghost", ctx.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let v = inspect(&root, "ghost");
    let d = v["manifest"]["layers"][1]["digest"].as_str().unwrap();
    let blob = fs::read(
        root.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:")),
    )
    .unwrap();
    let mut r = wcbuild::layer::tar_reader(
        std::io::Cursor::new(blob),
        wcbuild::layer::ReadLimits::default(),
    )
    .unwrap();
    let e = r.next_entry().unwrap().unwrap();
    assert_eq!((e.header.uid, e.header.gid), (0, 65534));
}

#[test]
fn onbuild_triggers_run_in_child_builds() {
    let root = tempdir("onbuild");
    let parent = context(&[(
        "Dockerfile",
        "FROM scratch\nONBUILD COPY app.txt /app/\nONBUILD ENV FROM_TRIGGER=yes\n",
    )]);
    let (code, _, err) = wcbuild(
        &root,
        &["build", "-t", "parent:1", parent.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let p = inspect(&root, "parent:1");
    assert_eq!(
        p["config"]["config"]["OnBuild"],
        serde_json::json!(["COPY app.txt /app/", "ENV FROM_TRIGGER=yes"])
    );
    let child = context(&[
        ("Dockerfile", "FROM parent:1\nENV OWN=1\n"),
        ("app.txt", "from the child's context"),
    ]);
    let (code, _, err) = wcbuild(
        &root,
        &["build", "-t", "child:1", child.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let c = inspect(&root, "child:1");
    assert!(
        c["config"]["config"]["OnBuild"].is_null(),
        "triggers are not inherited"
    );
    let env = &c["config"]["config"]["Env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e == "FROM_TRIGGER=yes"),
        "{env}"
    );
    let t = layer_tree(&root, &c, 0);
    assert_eq!(
        fs::read_to_string(t.join("app/app.txt")).unwrap(),
        "from the child's context"
    );
}

/// A small HTTP server on loopback for ADD of URLs: serves `/files/tool.bin`, redirects
/// `/moved` there, answers 404 otherwise. Stops after `requests` requests.
fn serve(body: &'static [u8], requests: usize) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut s) = stream else { continue };
            // Read the whole request head, however it arrives.
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let req = String::from_utf8_lossy(&req).to_string();
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            let _ = match path.as_str() {
                "/files/tool.bin" => {
                    let _ = write!(
                        s,
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    s.write_all(body)
                }
                "/moved" => write!(s, "HTTP/1.0 302 Found\r\nLocation: /files/tool.bin\r\n\r\n"),
                _ => write!(s, "HTTP/1.0 404 Not Found\r\n\r\n"),
            };
        }
    });
    port
}

#[test]
fn add_downloads_urls_and_checks_checksums() {
    let root = tempdir("url");
    let body: &'static [u8] = b"downloaded tool";
    let sum = wcbuild::store::sha256_digest(body);
    let port = serve(body, 3);
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM scratch\nADD --checksum={sum} http://127.0.0.1:{port}/files/tool.bin /opt/\nADD http://127.0.0.1:{port}/moved /opt/renamed.bin\n"
        ),
    )]);
    let (code, _, err) = wcbuild(&root, &["build", "-t", "url:1", ctx.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let v = inspect(&root, "url:1");
    let t = layer_tree(&root, &v, 0);
    assert_eq!(fs::read(t.join("opt/tool.bin")).unwrap(), body);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(t.join("opt/tool.bin"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let t = layer_tree(&root, &v, 1);
    assert_eq!(
        fs::read(t.join("opt/renamed.bin")).unwrap(),
        body,
        "redirects are followed"
    );
    // A wrong checksum stops the build.
    let port = serve(body, 1);
    let bad = format!("sha256:{}", "0".repeat(64));
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM scratch\nADD --checksum={bad} http://127.0.0.1:{port}/files/tool.bin /opt/\n"
        ),
    )]);
    let (code, _, err) = wcbuild(&root, &["build", ctx.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[test]
fn oci_layout_build_contexts() {
    // An OCI layout made elsewhere (here: saved from another store and unpacked).
    let other = tempdir("layout-src");
    let (code, _, err) = wcbuild(
        &other,
        &[
            "load",
            "-i",
            repo().join("fixtures/nanoserver.tar").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let archive = other.join("base.tar");
    let (code, _, err) = wcbuild(
        &other,
        &[
            "save",
            "mcr.microsoft.com/windows/nanoserver:ltsc2019",
            "-o",
            archive.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let layout = tempdir("layout");
    assert!(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout)
            .status()
            .unwrap()
            .success()
    );
    let root = tempdir("layout-build");
    let ctx = context(&[("Dockerfile", "FROM base\nCOPY a.txt /\n"), ("a.txt", "a")]);
    let (code, _, err) = wcbuild(
        &root,
        &[
            "build",
            "-t",
            "fromlayout",
            "--build-context",
            &format!("base=oci-layout://{}:ltsc2019", layout.display()),
            ctx.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        inspect(&root, "fromlayout")["config"]["os.version"],
        "10.0.17763.6414"
    );
    let (code, _, err) = wcbuild(
        &root,
        &[
            "build",
            "--build-context",
            &format!("base=oci-layout://{}:nope", layout.display()),
            ctx.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("has no image tagged `nope`"), "{err}");
}

#[test]
fn json_progress_reports_step_starts_and_packed_bytes() {
    let root = tempdir("progress");
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY data.bin /\n")]);
    fs::write(ctx.join("data.bin"), vec![7u8; 300_000]).unwrap();
    let (code, _, err) = wcbuild(
        &root,
        &["build", "--progress", "json", ctx.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"stage"));
    assert!(kinds.contains(&"step-start") && kinds.contains(&"step"));
    let bytes = events
        .iter()
        .rev()
        .find(|e| e["type"] == "bytes")
        .expect("a bytes event");
    assert_eq!(
        (bytes["done"].as_u64(), bytes["total"].as_u64()),
        (Some(300_000), Some(300_000))
    );
}

#[test]
fn remaining_instructions_on_linux_and_windows_stages() {
    let root = tempdir("instructions");
    let (code, _, err) = wcbuild(
        &root,
        &[
            "load",
            "-i",
            repo().join("fixtures/servercore.tar").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let ctx = context(&[(
        "Dockerfile",
        "FROM scratch AS linux\nMAINTAINER Jane <jane@example.com>\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo shell form\nSTOPSIGNAL SIGQUIT\nHEALTHCHECK --interval=30s --timeout=5s --retries=2 CMD curl -f http://localhost/\n\nFROM mcr.microsoft.com/windows/servercore:ltsc2022 AS win\nENV Path=C:\\\\bin\nENV MORE=${PATH}\nSHELL [\"powershell\", \"-Command\"]\nENTRYPOINT Write-Host hi\nHEALTHCHECK NONE\n",
    )]);
    let (code, _, err) = wcbuild(
        &root,
        &[
            "build",
            "-t",
            "lin",
            "--target",
            "linux",
            ctx.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let c = &inspect(&root, "lin")["config"];
    assert_eq!(c["author"], "Jane <jane@example.com>");
    assert_eq!(c["config"]["Shell"], serde_json::json!(["/bin/bash", "-c"]));
    assert_eq!(
        c["config"]["Cmd"],
        serde_json::json!(["/bin/bash", "-c", "echo shell form"]),
        "SHELL applies to CMD's shell form"
    );
    assert_eq!(c["config"]["StopSignal"], "SIGQUIT");
    let hc = &c["config"]["Healthcheck"];
    assert_eq!(
        hc["Test"],
        serde_json::json!(["CMD-SHELL", "curl -f http://localhost/"])
    );
    assert_eq!(
        (
            hc["Interval"].as_i64(),
            hc["Timeout"].as_i64(),
            hc["Retries"].as_i64()
        ),
        (Some(30_000_000_000), Some(5_000_000_000), Some(2))
    );
    let history: Vec<&str> = c["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap())
        .collect();
    assert!(history.contains(&"HEALTHCHECK {Test:[CMD-SHELL curl -f http://localhost/] Interval:30s Timeout:5s StartPeriod:0s StartInterval:0s Retries:2}"), "{history:?}");
    assert!(history.contains(&"MAINTAINER Jane <jane@example.com>"));

    let (code, _, err) = wcbuild(
        &root,
        &[
            "build",
            "-t",
            "win",
            "--target",
            "win",
            ctx.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let c = &inspect(&root, "win")["config"];
    let env = c["config"]["Env"].as_array().unwrap();
    assert!(
        env.contains(&serde_json::json!("MORE=C:\\bin")),
        "Windows variable names ignore case: {env:?}"
    );
    assert_eq!(
        c["config"]["Entrypoint"],
        serde_json::json!(["powershell", "-Command", "Write-Host hi"])
    );
    assert_eq!(
        c["config"]["Healthcheck"]["Test"],
        serde_json::json!(["NONE"])
    );
    assert_eq!(
        c["config"]["User"], "ContainerAdministrator",
        "inherited from Server Core"
    );

    // STOPSIGNAL is refused for Windows, as BuildKit refuses it.
    let ctx = context(&[(
        "Dockerfile",
        "FROM --platform=windows/amd64 mcr.microsoft.com/windows/servercore:ltsc2022\nSTOPSIGNAL SIGTERM\n",
    )]);
    let (code, _, err) = wcbuild(&root, &["build", ctx.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("does not support the command stopsignal"),
        "{err}"
    );
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn add_checks_out_git_repositories() {
    // A repository served by `git daemon` on loopback: a tag v1, then a newer main.
    let work = tempdir("git");
    let src = work.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    git(&src, &["init", "-q"]);
    std::fs::write(src.join("a.txt"), "version one\n").unwrap();
    std::fs::write(src.join("sub/b.txt"), "in sub\n").unwrap();
    git(&src, &["add", "."]);
    git(&src, &["commit", "-q", "-m", "one"]);
    git(&src, &["tag", "v1"]);
    let v1 = git(&src, &["rev-parse", "HEAD"]);
    std::fs::write(src.join("a.txt"), "version two\n").unwrap();
    git(&src, &["commit", "-q", "-am", "two"]);
    let srv = work.join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    git(
        &work,
        &[
            "clone",
            "-q",
            "--bare",
            src.to_str().unwrap(),
            srv.join("repo.git").to_str().unwrap(),
        ],
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut daemon = std::process::Command::new("git")
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", srv.display()))
        .arg(&srv)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("git daemon");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = format!("git://127.0.0.1:{port}/repo.git");
    let root = tempdir("gitstore");
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM scratch\nADD --checksum={v1} {url}#v1 /v1/\nADD {url}#main:sub /sub/\nADD --keep-git-dir=true {url} /full/\n"
        ),
    )]);
    let (code, _, err) = wcbuild(&root, &["build", "-t", "git:1", ctx.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let img = inspect(&root, "git:1");
    let v1_tree = layer_tree(&root, &img, 0);
    assert_eq!(
        std::fs::read_to_string(v1_tree.join("v1/a.txt")).unwrap(),
        "version one\n"
    );
    assert!(
        !v1_tree.join("v1/.git").exists(),
        "no .git without --keep-git-dir"
    );
    let sub = layer_tree(&root, &img, 1);
    assert_eq!(
        std::fs::read_to_string(sub.join("sub/b.txt")).unwrap(),
        "in sub\n"
    );
    assert!(!sub.join("sub/a.txt").exists());
    let full = layer_tree(&root, &img, 2);
    assert_eq!(
        std::fs::read_to_string(full.join("full/a.txt")).unwrap(),
        "version two\n"
    );
    assert!(full.join("full/.git").is_dir());
    // A commit that does not match --checksum stops the build.
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM scratch\nADD --checksum={} {url}#main /x/\n",
            "0".repeat(40)
        ),
    )]);
    let (code, _, err) = wcbuild(&root, &["build", ctx.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("checksum mismatch"), "{err}");
    let _ = daemon.kill();
    let _ = daemon.wait();
}

#[test]
fn lint_findings_are_printed_once_at_the_end_and_check_exits_without_building() {
    let root = tempdir("lint");
    let fixture = repo().join("fixtures/nanoserver.tar");
    let (code, _, err) = wcbuild(&root, &["load", "-i", fixture.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM mcr.microsoft.com/windows/nanoserver:multi as base\nCOPY a.txt /a/\nCMD echo hi\n",
        ),
        ("a.txt", "a"),
    ]);
    let c = ctx.to_str().unwrap();
    // Two platforms, one summary, after the build.
    let (code, out, err) = wcbuild(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "--platform",
            "windows/amd64:ltsc2019,windows/amd64:ltsc2022",
            c,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().starts_with("sha256:"));
    assert_eq!(err.matches(" 2 warnings found:").count(), 1, "{err}");
    let summary = err.split(" 2 warnings found:").nth(1).unwrap();
    assert!(
        summary.contains(" - FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)"),
        "{err}"
    );
    assert!(summary.contains(" - JSONArgsRecommended:"), "{err}");
    assert!(!summary.contains("[stage"), "the summary comes last: {err}");
    // --check: the findings in BuildKit's text, exit 1, nothing built.
    let before = fs::read_to_string(root.join("index.json")).unwrap();
    let (code, out, _) = wcbuild(&root, &["build", "--check", "-t", "not:built", c], &[]);
    assert_eq!(code, 1);
    assert!(
        out.contains(
            "WARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/"
        ),
        "{out}"
    );
    assert_eq!(fs::read_to_string(root.join("index.json")).unwrap(), before);
    // Skipped through the build argument: clean, exit 0.
    let (code, out, _) = wcbuild(
        &root,
        &[
            "build",
            "--check",
            "--build-arg",
            "BUILDKIT_DOCKERFILE_CHECK=skip=FromAsCasing,JSONArgsRecommended",
            c,
        ],
        &[],
    );
    assert_eq!(
        (code, out.trim()),
        (0, "Check complete, no warnings found.")
    );
    // error=true fails the build with BuildKit's message.
    fs::write(
        ctx.join("Dockerfile"),
        "# check=error=true\nFROM mcr.microsoft.com/windows/nanoserver:ltsc2022 as base\nCOPY a.txt /a/\n",
    )
    .unwrap();
    let (code, _, err) = wcbuild(&root, &["build", c], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("lint violation found for rules: FromAsCasing"),
        "{err}"
    );
}

/// `--label`, `--iidfile`, `--metadata-file`, `--compression zstd` and `--output type=oci`
/// do what the README says: the label in the config, the digest in both files, zstd layers,
/// and an OCI archive that loads into another store as the same image.
#[test]
fn output_options_label_iidfile_metadata_and_zstd() {
    let root = tempdir("outputs");
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY a.txt /\n"),
        ("a.txt", "zstd me"),
    ]);
    let files = tempdir("outputs-files");
    let (iid, meta, archive) = (
        files.join("iid"),
        files.join("meta.json"),
        files.join("image.tar"),
    );
    let (code, out, err) = wcbuild(
        &root,
        &[
            "build",
            "-q",
            "-t",
            "outputs:1",
            "--label",
            "org.example.team=build tools",
            "--compression",
            "zstd",
            "--iidfile",
            iid.to_str().unwrap(),
            "--metadata-file",
            meta.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_eq!(code, 0, "{err}");
    // stdout and the iidfile hold the image ID (the config's digest), as docker build's do;
    // the metadata file the manifest's digest too.
    let id = out.trim().to_string();
    assert!(id.starts_with("sha256:"), "{out}");
    assert_eq!(fs::read_to_string(&iid).unwrap(), id);
    let v = inspect(&root, "outputs:1");
    let digest = v["digest"].as_str().unwrap().to_string();
    assert_eq!(v["manifest"]["config"]["digest"], id.as_str());
    let m: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    assert_eq!(m["containerimage.digest"], digest.as_str(), "{m}");
    assert_eq!(m["containerimage.config.digest"], id.as_str(), "{m}");
    assert_eq!(
        v["config"]["config"]["Labels"]["org.example.team"],
        "build tools"
    );
    let layer = &v["manifest"]["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let blob = fs::read(
        root.join("blobs/sha256")
            .join(&layer["digest"].as_str().unwrap()[7..]),
    )
    .unwrap();
    assert_eq!(&blob[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
    let t = layer_tree(&root, &v, 0);
    assert_eq!(fs::read_to_string(t.join("a.txt")).unwrap(), "zstd me");
    // The same build written as an OCI archive instead: it loads as the same image.
    let other = tempdir("outputs-oci");
    let (code, out, err) = wcbuild(
        &other,
        &[
            "build",
            "-q",
            "--label",
            "org.example.team=build tools",
            "--compression",
            "zstd",
            "--output",
            &format!("type=oci,dest={}", archive.display()),
            ctx.to_str().unwrap(),
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), id);
    let list = Command::new("tar")
        .arg("-tf")
        .arg(&archive)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&list.stdout);
    assert!(
        names.contains("oci-layout") && names.contains("index.json"),
        "{names}"
    );
    let fresh = tempdir("outputs-load");
    let (code, _, err) = wcbuild(&fresh, &["load", "-i", archive.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let index = Command::new("tar")
        .arg("-xOf")
        .arg(&archive)
        .arg("index.json")
        .output()
        .unwrap();
    let index: serde_json::Value = serde_json::from_slice(&index.stdout).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str(), "{index}");
    // Every blob of the image entered the other store, verified.
    let same = fs::read(root.join("blobs/sha256").join(&digest[7..])).unwrap();
    assert_eq!(
        fs::read(fresh.join("blobs/sha256").join(&digest[7..])).unwrap(),
        same
    );
    let (code, _, err) = wcbuild(&fresh, &["check"], &[]);
    assert_eq!(code, 0, "{err}");
}

/// ADD unpacks a zstd-compressed tar (detected by content, whatever its name) and refuses
/// an xz one with a message that names it.
#[test]
fn add_unpacks_zstd_tars_and_refuses_xz() {
    let root = tempdir("add-zstd");
    let ctx = tempdir("add-zstd-ctx");
    let mut tar = wcbuild::ops::archive::TarWriter::new(Vec::new());
    tar.bytes("inner/hello.txt", b"from a zstd tar").unwrap();
    let tar = tar.finish().unwrap();
    fs::write(
        ctx.join("bundle.bin"),
        zstd::encode_all(&tar[..], 3).unwrap(),
    )
    .unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nADD bundle.bin /opt/\n",
    )
    .unwrap();
    let (code, _, err) = wcbuild(
        &root,
        &["build", "-q", "-t", "zst:1", ctx.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let v = inspect(&root, "zst:1");
    let t = layer_tree(&root, &v, 0);
    assert_eq!(
        fs::read_to_string(t.join("opt/inner/hello.txt")).unwrap(),
        "from a zstd tar"
    );
    assert!(!t.join("opt/bundle.bin").exists(), "unpacked, not copied");
    // xz: the magic bytes are enough to be refused.
    fs::write(
        ctx.join("bundle.bin"),
        [
            0xfd, b'7', b'z', b'X', b'Z', 0, 0, 4, 0xe6, 0xd6, 0xb4, 0x46,
        ],
    )
    .unwrap();
    let (code, _, err) = wcbuild(
        &root,
        &["build", "-q", "-t", "xz:1", ctx.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("ADD `bundle.bin`: xz archives are not unpacked by this version of wcbuild"),
        "{err}"
    );
}

#[test]
fn layers_are_compressed_only_when_the_image_leaves_and_the_id_stays() {
    let root = tempdir("auto");
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY text.txt /\n"),
        (
            "text.txt",
            &"all work and no play makes a build slow\n".repeat(20_000),
        ),
    ]);
    let c = ctx.to_str().unwrap();
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let layer_of =
        |name: &str| -> serde_json::Value { inspect(&root, name)["manifest"]["layers"][0].clone() };
    // A local build keeps the layer uncompressed, as Docker does.
    let (code, id, err) = wcbuild(&root, &["build", "-t", "local:1", c], &epoch);
    assert_eq!(code, 0, "{err}");
    let local = layer_of("local:1");
    assert_eq!(local["mediaType"], "application/vnd.oci.image.layer.v1.tar");
    let v = inspect(&root, "local:1");
    assert_eq!(
        id.trim(),
        v["manifest"]["config"]["digest"].as_str().unwrap()
    );
    // `images` shows the uncompressed size, and no push size until a compressed form exists.
    let (code, out, _) = wcbuild(&root, &["images", "--json"], &[]);
    assert_eq!(code, 0);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reference"] == "docker.io/library/local:1")
        .unwrap();
    assert!(row["size"].as_u64().unwrap() >= 800_000, "{row}");
    assert!(row["push"].is_null(), "{row}");
    // An OCI archive out of the build: gzip layers, written in the build's pass; the image
    // ID is the same image's.
    let archive = root.join("out.tar");
    let out_spec = format!("type=oci,dest={}", archive.display());
    let meta = root.join("meta.json");
    let (code, id2, err) = wcbuild(
        &root,
        &[
            "build",
            "-t",
            "oci:1",
            "--output",
            &out_spec,
            "--metadata-file",
            meta.to_str().unwrap(),
            c,
        ],
        &epoch,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(id2, id, "the image ID does not depend on the compression");
    let gz = layer_of("oci:1");
    assert_eq!(
        gz["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert!(gz["size"].as_u64().unwrap() < local["size"].as_u64().unwrap() / 10);
    let m: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    assert_eq!(m["containerimage.config.digest"], id.trim());
    assert_eq!(
        m["containerimage.digest"],
        inspect(&root, "oci:1")["digest"]
    );
    // An explicit --compression makes a cached layer of another compression into that one.
    let (code, id3, err) = wcbuild(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "--compression",
            "zstd",
            "-t",
            "z:1",
            c,
        ],
        &epoch,
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("CACHED"), "a cache hit: {err}");
    assert_eq!(id3, id);
    assert_eq!(
        layer_of("z:1")["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    // ...and back to plain when asked.
    let (code, _, err) = wcbuild(
        &root,
        &["build", "--compression", "uncompressed", "-t", "plain:1", c],
        &epoch,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(layer_of("plain:1")["digest"], local["digest"]);
}
