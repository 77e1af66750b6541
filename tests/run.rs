//! `RUN` through the binary with a real OCI runtime: heredocs, secrets that reach no file and
//! no output, the cache (a hit starts no container), failures, networks, entitlements, the
//! cross-OS pattern (a Linux stage's RUN output copied into a Nano Server stage), and Docker
//! running what we built. (The comparison with `docker build` is in `tests/vs_docker.rs`.)
#![cfg(target_os = "linux")]

use std::fs;
use std::path::{Path, PathBuf};

mod common;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A store with the busybox fixture loaded.
fn store(name: &str) -> (PathBuf, PathBuf) {
    let dir = common::tempdir("run", name);
    let root = dir.join("store");
    let base = dir.join("busybox.tar");
    fs::write(
        &base,
        wcbuild::ops::fixtures::busybox_archive(Path::new("/bin/busybox")).unwrap(),
    )
    .unwrap();
    let (code, _, err) = common::wcbuild_at(&root, &["load", "-i", base.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    (dir, root)
}

fn context(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let ctx = dir.join(format!("ctx-{}", files.len()));
    let _ = fs::remove_dir_all(&ctx);
    for (p, c) in files {
        let path = ctx.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, c).unwrap();
    }
    ctx
}

/// The content of `path` in the image `name` (its layers applied in a temp dir).
fn file_in(root: &Path, name: &str, path: &str) -> Option<Vec<u8>> {
    let store = wcbuild::store::Store::open(root).unwrap();
    let e = wcbuild::ops::images::resolve(&store, name).unwrap();
    let m: wcbuild::image::Manifest =
        serde_json::from_slice(&store.read_blob(&e.digest).unwrap()).unwrap();
    let out = root.with_extension(format!("apply-{}", path.replace('/', "_")));
    let _ = fs::remove_dir_all(&out);
    for l in &m.layers {
        let blob = store.open_blob(&l.digest).unwrap();
        wcbuild::layer::apply(
            std::io::BufReader::new(blob),
            &out,
            &wcbuild::layer::ExtractOptions::default(),
        )
        .unwrap();
    }
    let r = fs::read(out.join(path)).ok();
    let _ = fs::remove_dir_all(&out);
    r
}

#[test]
fn heredocs_run_as_buildkit_runs_them() {
    let (dir, root) = store("heredoc");
    let df = "FROM wcbuild.local/busybox:latest\n\
RUN <<EOF\n\
echo one > /one\n\
echo two >> /one\n\
EOF\n\
RUN <<-EOF\n\
\techo tabbed > /tabbed\n\
\tEOF\n\
RUN <<EOF\n\
#!/bin/sh\n\
echo \"script $0\" > /script\n\
EOF\n\
RUN cat <<A > /a && cat <<B > /b\n\
first\n\
A\n\
second\n\
B\n\
RUN <<EOF sh\n\
echo via-sh > /via\n\
EOF\n";
    let ctx = context(&dir, &[("Dockerfile", df)]);
    let (code, _, err) = common::wcbuild_at(
        &root,
        &[
            "build",
            "-t",
            "hd",
            "--progress",
            "plain",
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let f = |p: &str| String::from_utf8(file_in(&root, "hd", p).unwrap_or_default()).unwrap();
    assert_eq!(f("one"), "one\ntwo\n");
    assert_eq!(f("tabbed"), "tabbed\n");
    assert_eq!(
        f("script"),
        "script /dev/pipes/EOF\n",
        "a shebang body runs as a file"
    );
    assert_eq!((f("a"), f("b")), ("first\n".into(), "second\n".into()));
    assert_eq!(f("via"), "via-sh\n");
    // The script's mount point leaves nothing behind.
    assert!(file_in(&root, "hd", "dev/pipes/EOF").is_none());
}

/// Every file under `dir`, and `extra` texts, must not contain `needle`.
fn assert_nowhere(dir: &Path, needle: &[u8], extra: &[(&str, &str)]) {
    fn walk(p: &Path, needle: &[u8], hits: &mut Vec<PathBuf>) {
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        if m.is_dir() {
            for e in fs::read_dir(p).unwrap().flatten() {
                walk(&e.path(), needle, hits);
            }
        } else if m.is_file()
            && let Ok(b) = fs::read(p)
        {
            // Compressed blobs are searched decompressed too.
            let plain = if b.starts_with(&[0x1f, 0x8b]) {
                let mut out = Vec::new();
                let _ = std::io::Read::read_to_end(
                    &mut flate2::read::MultiGzDecoder::new(&b[..]),
                    &mut out,
                );
                out
            } else {
                Vec::new()
            };
            if b.windows(needle.len()).any(|w| w == needle)
                || plain.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(p.to_path_buf());
            }
        }
    }
    let mut hits = Vec::new();
    walk(dir, needle, &mut hits);
    assert!(hits.is_empty(), "the secret is in {hits:?}");
    for (what, text) in extra {
        assert!(
            !text.as_bytes().windows(needle.len()).any(|w| w == needle),
            "the secret is in {what}: {text}"
        );
    }
}

#[test]
fn a_secret_reaches_the_step_and_nothing_else() {
    let (dir, root) = store("secret");
    let secret = "s3cr3t-value-7f1d2c";
    let secret_file = dir.join("token.txt");
    fs::write(&secret_file, secret).unwrap();
    let df = "FROM wcbuild.local/busybox:latest\n\
RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d' ' -f1 > /sum && ls -l /run/secrets/tok > /mode\n\
RUN --mount=type=secret,id=tok,env=TOK,target=/x/t test \"$TOK\" = \"$(cat /x/t)\" && echo env-ok > /env-ok\n\
RUN --mount=type=secret,id=tok cat /run/secrets/tok\n\
RUN --mount=type=secret,id=absent echo no-secret-no-mount > /absent\n";
    let ctx = context(&dir, &[("Dockerfile", df)]);
    let meta = dir.join("meta.json");
    let iid = dir.join("iid");
    let src = format!("id=tok,src={}", secret_file.display());
    let archive = dir.join("out.tar");
    let out_spec = format!("type=oci,dest={}", archive.display());
    let run = |progress: &str| {
        common::wcbuild_at_env(
            &root,
            &[
                "build",
                "-t",
                "sec",
                "--secret",
                &src,
                "--progress",
                progress,
                "--metadata-file",
                meta.to_str().unwrap(),
                "--iidfile",
                iid.to_str().unwrap(),
                "--output",
                &out_spec,
                ctx.to_str().unwrap(),
            ],
            &[],
        )
    };
    let (code, out, err) = run("plain");
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("****"),
        "the value the step printed is masked: {err}"
    );
    let f = |p: &str| file_in(&root, "sec", p);
    use sha2::Digest as _;
    let want: String = sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        String::from_utf8(f("sum").unwrap()).unwrap(),
        format!("{want}\n"),
        "the step read the secret"
    );
    assert_eq!(f("env-ok").unwrap(), b"env-ok\n");
    assert_eq!(f("absent").unwrap(), b"no-secret-no-mount\n");
    let mode = String::from_utf8(f("mode").unwrap()).unwrap();
    assert!(mode.starts_with("-r--------"), "mode 0400: {mode}");
    assert!(f("run/secrets/tok").is_none() && f("x/t").is_none());
    // A cached rebuild and the JSON progress too.
    let (code, out2, err2) = run("json");
    assert_eq!(code, 0, "{err2}");
    // Nothing the build wrote holds the value: the store (blobs, records, caches), the
    // archive, the metadata and id files, stdout and stderr.
    let texts = [
        ("stdout", out.as_str()),
        ("stderr", err.as_str()),
        ("stdout (json)", out2.as_str()),
        ("stderr (json)", err2.as_str()),
    ];
    assert_nowhere(&root, secret.as_bytes(), &texts);
    for f in [&meta, &iid, &archive] {
        let b = fs::read(f).unwrap();
        assert!(
            !b.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{}",
            f.display()
        );
    }
    // A required secret that is not given fails, naming its id only.
    let ctx = context(
        &dir,
        &[(
            "Dockerfile",
            "FROM wcbuild.local/busybox:latest\nRUN --mount=type=secret,id=missing,required true\n",
        )],
    );
    let (code, _, err) = common::wcbuild_at(&root, &["build", ctx.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("secret missing: not found"), "{err}");
}

#[test]
fn a_cache_hit_starts_no_container() {
    let (dir, root) = store("cache");
    // A runtime wrapper that records every call, then runs runc.
    let log = dir.join("calls.log");
    let wrapper = dir.join("runc-wrapper");
    let runc = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("runc must be installed (./test.sh installs it)");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexec {runc} \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let ctx = context(
        &dir,
        &[(
            "Dockerfile",
            "FROM wcbuild.local/busybox:latest\nRUN echo one > /one\nRUN echo two > /two\n",
        )],
    );
    let build = || {
        common::wcbuild_at(
            &root,
            &[
                "build",
                "--progress",
                "plain",
                "--source-date-epoch",
                "1700000000",
                "--oci-runtime",
                wrapper.to_str().unwrap(),
                ctx.to_str().unwrap(),
            ],
        )
    };
    let (code, first, err) = build();
    assert_eq!(code, 0, "{err}");
    let calls = fs::read_to_string(&log).unwrap();
    assert_eq!(
        calls.lines().filter(|l| l.contains(" run ")).count(),
        2,
        "{calls}"
    );
    fs::remove_file(&log).unwrap();
    let (code, second, err) = build();
    assert_eq!(code, 0, "{err}");
    assert_eq!(first, second, "same image");
    assert_eq!(err.matches(" CACHED").count(), 2, "{err}");
    assert!(
        !log.exists(),
        "the runtime was not even probed: {:?}",
        fs::read_to_string(&log)
    );
    // A changed command runs again.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM wcbuild.local/busybox:latest\nRUN echo one > /one\nRUN echo TWO > /two\n",
    )
    .unwrap();
    let (code, _, err) = build();
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches(" CACHED").count(), 1, "{err}");
    let calls = fs::read_to_string(&log).unwrap();
    assert_eq!(
        calls.lines().filter(|l| l.contains(" run ")).count(),
        1,
        "{calls}"
    );
}

#[test]
fn a_failing_step_says_its_exit_code_and_last_lines() {
    let (dir, root) = store("fail");
    let ctx = context(
        &dir,
        &[(
            "Dockerfile",
            "FROM wcbuild.local/busybox:latest\nRUN echo started && echo broken >&2 && exit 7\nRUN echo never\n",
        )],
    );
    let (code, _, err) = common::wcbuild_at(
        &root,
        &["build", "--progress", "plain", ctx.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Dockerfile:2:1: process \"/bin/sh -c echo started && echo broken >&2 && exit 7\" did not complete successfully: exit code: 7"), "{err}");
    assert!(
        err.contains("    broken") && err.contains("    started"),
        "{err}"
    );
    assert!(!err.contains("never"), "{err}");
    // Nothing of the step is left in the store's scratch directory.
    let tmp: Vec<_> = fs::read_dir(root.join("tmp")).unwrap().flatten().collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

#[test]
fn networks_and_entitlements() {
    let (dir, root) = store("net");
    let ctx = context(
        &dir,
        &[(
            "Dockerfile",
            "FROM wcbuild.local/busybox:latest\nRUN ls /sys/class/net > /default\nRUN --network=none ls /sys/class/net > /none\n",
        )],
    );
    let (code, _, err) = common::wcbuild_at(&root, &["build", "-t", "net", ctx.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let host: Vec<String> = fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let default = String::from_utf8(file_in(&root, "net", "default").unwrap()).unwrap();
    for i in &host {
        assert!(
            default.contains(i.as_str()),
            "the host's network: {default}"
        );
    }
    assert_eq!(file_in(&root, "net", "none").unwrap(), b"lo\n");
    // build --network none applies to every step that does not say.
    let (code, _, err) = common::wcbuild_at(
        &root,
        &[
            "build",
            "-t",
            "net2",
            "--network",
            "none",
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(file_in(&root, "net2", "default").unwrap(), b"lo\n");
    // --security=insecure needs its entitlement.
    let ctx = context(
        &dir,
        &[
            (
                "Dockerfile",
                "FROM wcbuild.local/busybox:latest\nRUN --security=insecure grep CapEff /proc/self/status > /caps\n",
            ),
            ("x", ""),
        ],
    );
    let (code, _, err) = common::wcbuild_at(&root, &["build", ctx.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("--allow security.insecure"), "{err}");
    let (code, _, err) = common::wcbuild_at(
        &root,
        &[
            "build",
            "-t",
            "ins",
            "--allow",
            "security.insecure",
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let caps = String::from_utf8(file_in(&root, "ins", "caps").unwrap()).unwrap();
    assert!(
        !caps.contains("00000000a80425fb"),
        "more than the default caps: {caps}"
    );
}

#[test]
fn a_linux_stage_builds_and_a_nano_server_stage_gets_the_result() {
    let (dir, root) = store("cross");
    let fixture = repo().join("fixtures/nanoserver.tar");
    let (code, _, err) = common::wcbuild_at(&root, &["load", "-i", fixture.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let df = "FROM wcbuild.local/busybox:latest AS build\n\
WORKDIR /src\n\
COPY site/ ./\n\
RUN mkdir -p /out/wwwroot && for f in *.md; do sed 's/^# /<h1>/' \"$f\" > \"/out/wwwroot/${f%.md}.html\"; done && echo built > /out/VERSION\n\
FROM mcr.microsoft.com/windows/nanoserver:ltsc2022\n\
COPY --from=build /out/ C:/site/\n\
CMD [\"cmd\", \"/c\", \"type\", \"C:\\\\site\\\\VERSION\"]\n";
    let ctx = context(
        &dir,
        &[
            ("Dockerfile", df),
            ("site/index.md", "# Hello\n"),
            ("site/about.md", "# About\n"),
        ],
    );
    let (code, _, err) =
        common::wcbuild_at(&root, &["build", "-t", "site:win", ctx.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let store = wcbuild::store::Store::open(&root).unwrap();
    let e = wcbuild::ops::images::resolve(&store, "site:win").unwrap();
    let m: wcbuild::image::Manifest =
        serde_json::from_slice(&store.read_blob(&e.digest).unwrap()).unwrap();
    let mut names = Vec::new();
    for l in &m.layers {
        // Every layer passes Windows' rules.
        let (code, out, err) = common::wcbuild_at(
            &root,
            &[
                "layer",
                "check",
                store.blob_path(&l.digest).unwrap().to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "layer {}: {out}{err}", l.digest);
        let mut r = wcbuild::layer::tar_reader(
            std::io::BufReader::new(store.open_blob(&l.digest).unwrap()),
            wcbuild::layer::ReadLimits::default(),
        )
        .unwrap();
        while let Some(en) = r.next_entry().unwrap() {
            names.push(en.header.path.clone());
        }
    }
    for want in [
        "Files/site/wwwroot/index.html",
        "Files/site/wwwroot/about.html",
        "Files/site/VERSION",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
}

#[test]
fn docker_runs_an_image_built_with_run() {
    let (dir, root) = store("docker-run");
    let ctx = context(
        &dir,
        &[(
            "Dockerfile",
            "FROM wcbuild.local/busybox:latest\nRUN mkdir /app && printf '#!/bin/sh\\necho served by $(hostname -s 2>/dev/null || echo x)\\n' > /app/run && chmod +x /app/run\nENTRYPOINT [\"/app/run\"]\n",
        )],
    );
    let tar = dir.join("img.tar");
    let out = format!("type=docker,dest={}", tar.display());
    let (code, _, err) = common::wcbuild_at(
        &root,
        &[
            "build",
            "-t",
            "served:1",
            "--output",
            &out,
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let d = common::start_dockerd();
    let o = d.docker(&["load", "-i", tar.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--hostname",
        "box",
        "served:1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "served by box\n");
}

#[test]
fn sigterm_stops_a_running_step_within_a_second() {
    let (dir, root) = store("sigterm");
    let ctx = context(
        &dir,
        &[(
            "Dockerfile",
            "FROM wcbuild.local/busybox:latest\nRUN echo started && sleep 60\n",
        )],
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wcbuild"))
        .arg("--root")
        .arg(&root)
        .args(["build", "--progress", "plain"])
        .arg(&ctx)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the step runs (its output arrives).
    let mut err = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("started") {
        let n = std::io::Read::read(&mut err, &mut buf).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let t = std::time::Instant::now();
    // SAFETY: kill(2) with a child's pid and SIGTERM.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let took = t.elapsed();
    assert_eq!(status.code(), Some(143));
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    // No container of the step lives on, and nothing is left in the store's scratch.
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains("sleep 60"),
        "the step's process lives on"
    );
    let tmp: Vec<_> = fs::read_dir(root.join("tmp"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "{tmp:?}");
}
