//! `wcbuild build` end to end through the binary: a Windows image from the Nano Server
//! fixture built on Linux, Linux images from scratch and from the busybox base, config and
//! history fields checked one by one, layer trees checked by extracting them, reproducible
//! digests, and clear failures for what is not built yet.
#![cfg(unix)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "wcbuild-build-test-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    fs::create_dir_all(&d).unwrap();
    d
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
        v["digest"].as_str().unwrap(),
        "stdout is the image digest"
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
    let _ = run.uid(); // owners are restored only when extracting as root
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
    let digest = |touch: bool| {
        let root = tempdir("repro");
        let ctx = context(&[
            ("Dockerfile", "FROM scratch\nCOPY . /src/\nENV X=1\n"),
            ("a.txt", "same"),
            ("d/b.txt", "same"),
        ]);
        if touch {
            let f = fs::File::options()
                .write(true)
                .open(ctx.join("a.txt"))
                .unwrap();
            f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(86_400))
                .unwrap();
        }
        let (code, out, err) = wcbuild(
            &root,
            &["build", "-q", ctx.to_str().unwrap()],
            &[("SOURCE_DATE_EPOCH", "1700000000")],
        );
        assert_eq!(code, 0, "{err}");
        out.trim().to_string()
    };
    assert_eq!(digest(false), digest(true));
}

#[test]
fn what_is_not_built_yet_fails_clearly() {
    let root = tempdir("fail");
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY a.txt /\nRUN echo hi\n"),
        ("a.txt", "a"),
    ]);
    let (code, _, err) = wcbuild(&root, &["build", ctx.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Dockerfile:3: RUN needs a container runtime"),
        "{err}"
    );
    let ctx = context(&[(
        "Dockerfile",
        "FROM mcr.microsoft.com/windows/nanoserver:ltsc2022\n",
    )]);
    let (code, _, err) = wcbuild(&root, &["build", ctx.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("is not in the store; load it first"), "{err}");
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
