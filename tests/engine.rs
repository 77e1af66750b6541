//! RUN steps through a real Docker engine (Debian's dockerd, started by each test on a
//! private socket): over the unix socket and over TCP with TLS (a CA and certificates made
//! by the test), the image's root file system compared with the OCI runtime's for the same
//! Dockerfile; output streamed, exit codes, resources, cleanup in the engine; the engine's
//! refusal of Hyper-V isolation surfaced with the step's line; a Windows RUN on this Linux
//! host failing with exit code 1 and naming the runtime it needs.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

mod common;

/// A store with the busybox fixture loaded.
fn store(dir: &Path, name: &str) -> PathBuf {
    let root = dir.join(name);
    let base = dir.join("busybox.tar");
    if !base.exists() {
        fs::write(
            &base,
            wcbuild::ops::fixtures::busybox_archive(Path::new("/bin/busybox")).unwrap(),
        )
        .unwrap();
    }
    let (code, _, err) = common::wcbuild_at(&root, &["load", "-i", base.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    root
}

fn context(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let ctx = dir.join(name);
    for (p, c) in files {
        let path = ctx.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, c).unwrap();
    }
    ctx
}

/// The root file system of image `name`: path → kind, mode, owner, content or target.
fn tree(root: &Path, name: &str) -> BTreeMap<String, String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let store = wcbuild::store::Store::open(root).unwrap();
    let e = wcbuild::ops::images::resolve(&store, name).unwrap();
    let m: wcbuild::image::Manifest =
        serde_json::from_slice(&store.read_blob(&e.digest).unwrap()).unwrap();
    let out = root.with_extension(format!("tree-{}", name.replace([':', '/'], "_")));
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
    let mut map = BTreeMap::new();
    fn walk(base: &Path, p: &Path, map: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(p).unwrap().flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let md = fs::symlink_metadata(&path).unwrap();
            let mode = md.permissions().mode() & 0o7777;
            let owner = format!("{}:{}", md.uid(), md.gid());
            let what = if md.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&path).unwrap().display())
            } else if md.is_dir() {
                walk(base, &path, map);
                "dir".to_string()
            } else {
                format!(
                    "file {:?}",
                    String::from_utf8_lossy(&fs::read(&path).unwrap())
                )
            };
            map.insert(rel, format!("{what} {mode:o} {owner}"));
        }
    }
    walk(&out, &out, &mut map);
    let _ = fs::remove_dir_all(&out);
    map
}

const DOCKERFILE: &str = "FROM wcbuild.local/busybox:latest\n\
RUN mkdir -p /app/sub && echo hello > /app/sub/greeting && ln -s greeting /app/sub/link && chmod 0750 /app/sub && echo hello-from-$((1+1))\n\
COPY data.txt /app/\n\
RUN rm /app/sub/link && echo more >> /app/sub/greeting && chown 1234:5678 /app/data.txt && echo to-stderr-$((2*2)) >&2\n\
WORKDIR /work/dir\n\
RUN echo \"$GREETING at $(pwd)\" > here && mkdir -p /var/empty && rm -rf /app/sub && mkdir /app/sub && echo new > /app/sub/only\n\
ENV GREETING=hi\n\
RUN echo \"$GREETING\" > /app/env && touch -d @1000000000 /app/env\n";

fn docker_containers(d: &common::Dockerd) -> String {
    let out = d.docker(&["ps", "-aq"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn committed_images(d: &common::Dockerd) -> String {
    let out = d.docker(&["images", "-aq", "--filter", "label=wcbuild.step"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn over_the_unix_socket_the_image_matches_the_oci_runtimes() {
    let dir = common::tempdir("engine", "unix");
    let d = common::start_dockerd_with("engine-unix", &[]);
    let ctx = context(
        &dir,
        "ctx",
        &[("Dockerfile", DOCKERFILE), ("data.txt", "data\n")],
    );
    let host = format!("unix://{}", d.socket.display());
    let via_docker = store(&dir, "docker-store");
    let meta = dir.join("meta.json");
    let (code, out, err) = common::wcbuild_at(
        &via_docker,
        &[
            "build",
            "-t",
            "x",
            "--progress",
            "plain",
            "--runtime",
            "docker",
            "--docker-host",
            &host,
            "--metadata-file",
            meta.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}\n{}", d.log());
    assert!(out.trim().starts_with("sha256:"), "{out}");
    // The runtime is named, and the steps' output streamed by stream.
    assert!(err.contains("the docker engine at unix://"), "{err}");
    assert!(err.contains("API 1.41"), "{err}");
    assert!(err.contains("hello-from-2"), "{err}");
    assert!(err.contains("to-stderr-4"), "{err}");
    let via_oci = store(&dir, "oci-store");
    let (code, _, err) = common::wcbuild_at(
        &via_oci,
        &[
            "build",
            "-t",
            "x",
            "--progress",
            "plain",
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (a, b) = (tree(&via_docker, "x"), tree(&via_oci, "x"));
    assert!(a.len() > 40, "{a:?}");
    let diff: Vec<String> = a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: docker {:?} oci {:?}", a.get(k), b.get(k)))
        .collect();
    // One difference is the engines' own: the runtime's mount points (`/dev`, `/proc`, `/sys`,
    // missing from the busybox base) are in the OCI runtime's first layer, as in BuildKit's,
    // while Docker keeps them in the container's init layer, outside the diff.
    let expected: Vec<String> = ["dev", "proc", "sys"]
        .iter()
        .map(|k| format!("{k}: docker None oci Some(\"dir 755 0:0\")"))
        .collect();
    assert_eq!(
        diff,
        expected,
        "root file systems differ:\n{}",
        diff.join("\n")
    );
    // What the steps did is there.
    assert_eq!(a["app/sub/only"], "file \"new\\n\" 644 0:0");
    assert_eq!(a["app/data.txt"], "file \"data\\n\" 644 1234:5678");
    assert_eq!(a["work/dir/here"], "file \" at /work/dir\\n\" 644 0:0");
    assert!(!a.contains_key("app/sub/greeting"));
    // Nothing of the steps is left in the engine; a Linux build records no isolation.
    assert_eq!(docker_containers(&d), "");
    assert_eq!(committed_images(&d), "");
    // Of the parents loaded for the four steps, the first stays for the next build.
    let images = d.docker(&["images", "-aq"]);
    let images = String::from_utf8_lossy(&images.stdout);
    assert_eq!(images.lines().count(), 1, "{images}");
    let m: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    assert!(m.get("wcbuild.isolation").is_none(), "{m}");
    // A rebuild is all cache hits: no container starts.
    let (code, _, err) = common::wcbuild_at(
        &via_docker,
        &[
            "build",
            "-t",
            "x",
            "--progress",
            "plain",
            "--runtime",
            "docker",
            "--docker-host",
            &host,
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("hello-from-2"), "{err}");
    assert_eq!(err.matches(" CACHED").count(), 6, "{err}");
}

#[test]
fn failures_resources_and_isolation_through_the_engine() {
    let dir = common::tempdir("engine", "fail");
    let d = common::start_dockerd_with("engine-fail", &[]);
    let host = format!("unix://{}", d.socket.display());
    let root = store(&dir, "store");
    let build = |name: &str, df: &str, extra: &[&str]| {
        let ctx = context(&dir, name, &[("Dockerfile", df)]);
        let mut args = vec![
            "build",
            "-t",
            name,
            "--progress",
            "plain",
            "--runtime",
            "docker",
            "--docker-host",
            &host,
        ];
        args.extend_from_slice(extra);
        let c = ctx.to_str().unwrap().to_string();
        args.push(&c);
        common::wcbuild_at(&root, &args)
    };
    // A failing step: exit code 1, the command, its code and last lines.
    let (code, _, err) = build(
        "failing",
        "FROM wcbuild.local/busybox:latest\nRUN echo about-to-fail && exit 3\n",
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(err.contains("about-to-fail"), "{err}");
    assert_eq!(
        docker_containers(&d),
        "",
        "the failed step's container is removed"
    );
    // --memory and --cpus reach the container's cgroup.
    let (code, _, err) = build(
        "sized",
        "FROM wcbuild.local/busybox:latest\n\
RUN (cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max) > /mem; \
(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max) > /quota\n",
        &["--memory", "96m", "--cpus", "0.5"],
    );
    assert_eq!(code, 0, "{err}");
    let t = tree(&root, "sized");
    assert_eq!(
        t["mem"],
        format!("file \"{}\\n\" 644 0:0", 96 << 20),
        "{t:?}"
    );
    assert_eq!(t["quota"], "file \"50000\\n\" 644 0:0", "{t:?}");
    // A Linux engine refuses Hyper-V isolation; the error says so with the step's line.
    let (code, _, err) = build(
        "hyperv",
        "FROM wcbuild.local/busybox:latest\nRUN true\n",
        &["--isolation", "hyperv"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
    // The engine's own words: Debian's 20.10 says `Invalid isolation: "hyperv" - linux only
    // supports 'default'`, newer engines `invalid isolation 'hyperv' on linux`.
    let lower = err.to_lowercase();
    assert!(
        lower.contains("invalid isolation") && lower.contains("hyperv") && lower.contains("linux"),
        "{err}"
    );
    // Mounts an engine on this machine can see: cache, read-only bind, tmpfs, secret.
    let secret = dir.join("s.txt");
    fs::write(&secret, "hunter2").unwrap();
    let (code, _, err) = build(
        "mounts",
        "FROM wcbuild.local/busybox:latest\n\
RUN --mount=type=cache,target=/cache echo kept > /cache/k\n\
RUN --mount=type=cache,target=/cache --mount=type=bind,target=/ctx --mount=type=tmpfs,target=/scratch \
--mount=type=secret,id=s cat /cache/k /ctx/Dockerfile /run/secrets/s > /dev/null && cp /cache/k /got && \
[ \"$(cat /run/secrets/s)\" = hunter2 ] && touch /scratch/x && echo ok > /mounted\n",
        &["--secret", &format!("id=s,src={}", secret.display())],
    );
    assert_eq!(code, 0, "{err}");
    let t = tree(&root, "mounts");
    assert_eq!(t["got"], "file \"kept\\n\" 644 0:0");
    assert_eq!(t["mounted"], "file \"ok\\n\" 644 0:0");
    for gone in ["cache", "ctx", "scratch", "run/secrets/s"] {
        assert!(!t.contains_key(gone), "{gone} left in the layer: {t:?}");
    }
    // A Windows stage cannot run in a Linux engine.
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/nanoserver.tar");
    let (code, _, err) = common::wcbuild_at(&root, &["load", "-i", fixture.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = build(
        "windows",
        "FROM mcr.microsoft.com/windows/nanoserver:ltsc2022\nRUN echo hi\n",
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Dockerfile:2") && err.contains("it runs linux containers"),
        "{err}"
    );
    // No engine there: the error names the endpoint.
    let (code, _, err) = common::wcbuild_at(
        &root,
        &[
            "build",
            "--runtime",
            "docker",
            "--docker-host",
            "unix:///nonexistent/docker.sock",
            context(
                &dir,
                "none",
                &[(
                    "Dockerfile",
                    "FROM wcbuild.local/busybox:latest\nRUN true\n",
                )],
            )
            .to_str()
            .unwrap(),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unix:///nonexistent/docker.sock"), "{err}");
}

#[test]
fn over_tcp_with_tls() {
    let dir = common::tempdir("engine", "tls");
    let certs = dir.join("certs");
    common::make_docker_certs(&certs);
    let port = common::free_port();
    let c = |f: &str| certs.join(f).to_string_lossy().into_owned();
    let d = common::start_dockerd_with(
        "engine-tls",
        &[
            "--host".into(),
            format!("tcp://127.0.0.1:{port}"),
            "--tlsverify".into(),
            format!("--tlscacert={}", c("ca.pem")),
            format!("--tlscert={}", c("server-cert.pem")),
            format!("--tlskey={}", c("server-key.pem")),
        ],
    );
    let root = store(&dir, "store");
    let ctx = context(
        &dir,
        "ctx",
        &[("Dockerfile", DOCKERFILE), ("data.txt", "data\n")],
    );
    let tcp = format!("tcp://127.0.0.1:{port}");
    let env = [
        ("DOCKER_HOST", tcp.as_str()),
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", certs.to_str().unwrap()),
    ];
    let (code, _, err) = common::wcbuild_at_env(
        &root,
        &[
            "build",
            "-t",
            "x",
            "--progress",
            "plain",
            "--runtime",
            "docker",
            ctx.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}\n{}", d.log());
    assert!(
        err.contains(&format!("the docker engine at {tcp}")),
        "{err}"
    );
    let t = tree(&root, "x");
    assert_eq!(t["app/sub/only"], "file \"new\\n\" 644 0:0");
    assert_eq!(t["app/env"], "file \"hi\\n\" 644 0:0");
    assert_eq!(docker_containers(&d), "");
    // Host paths cannot reach an engine on another machine: a cache mount is refused.
    let cached = context(
        &dir,
        "cached",
        &[(
            "Dockerfile",
            "FROM wcbuild.local/busybox:latest\nRUN --mount=type=cache,target=/c true\n",
        )],
    );
    let (code, _, err) = common::wcbuild_at_env(
        &root,
        &["build", "--runtime", "docker", cached.to_str().unwrap()],
        &env,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("needs the engine on this machine"), "{err}");
    // Another CA: the engine is not trusted.
    let other = dir.join("other");
    common::make_docker_certs(&other);
    let (code, _, err) = common::wcbuild_at_env(
        &root,
        &[
            "build",
            "--runtime",
            "docker",
            "--no-cache",
            ctx.to_str().unwrap(),
        ],
        &[
            ("DOCKER_HOST", tcp.as_str()),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", other.to_str().unwrap()),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // Plain HTTP to the TLS port is not an engine answer.
    let (code, _, err) = common::wcbuild_at_env(
        &root,
        &[
            "build",
            "--runtime",
            "docker",
            "--no-cache",
            ctx.to_str().unwrap(),
        ],
        &[("DOCKER_HOST", tcp.as_str())],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&tcp), "{err}");
}

#[test]
fn a_windows_run_on_this_linux_host_names_the_runtime_it_needs() {
    let dir = common::tempdir("engine", "windows");
    let root = dir.join("store");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/nanoserver.tar");
    let (code, _, err) = common::wcbuild_at(&root, &["load", "-i", fixture.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let name = "mcr.microsoft.com/windows/nanoserver:ltsc2022";
    let ctx = context(
        &dir,
        "ctx",
        &[("Dockerfile", &format!("FROM {name}\nRUN echo hi\n"))],
    );
    let c = ctx.to_str().unwrap();
    let (code, _, err) = common::wcbuild_at(&root, &["build", c]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("needs a Windows runtime"), "{err}");
    assert!(err.contains("Host Compute Service"), "{err}");
    assert!(err.contains("--runtime docker"), "{err}");
    let (code, _, err) = common::wcbuild_at(&root, &["build", "--runtime", "hcs", c]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Windows only"), "{err}");
    let (code, _, err) = common::wcbuild_at(&root, &["build", "--runtime", "oci", c]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot run in an OCI runtime"), "{err}");
    // Usage errors for the new flags: exit code 2.
    for bad in [
        &["--runtime", "lxc"][..],
        &["--isolation", "vm"][..],
        &["--memory", "lots"][..],
        &["--cpus", "0"][..],
    ] {
        let mut args = vec!["build"];
        args.extend_from_slice(bad);
        args.push(c);
        let (code, _, err) = common::wcbuild_at(&root, &args);
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(err.contains(bad[0]), "{bad:?}: {err}");
    }
}

/// A Docker engine that answers as a Windows Server 2022 engine does, on a unix socket:
/// enough of the Engine API for RUN steps (version, info, load, create, attach, start,
/// wait, commit, inspect, save, remove), every request kept. Its step writes
/// `C:\app\built.txt` (attributes 33: read-only and archive) and a hive delta.
struct WindowsEngine {
    socket: PathBuf,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
}

/// Method, path, body.
type Request = (String, String, Vec<u8>);

fn read_request(
    r: &mut std::io::BufReader<std::os::unix::net::UnixStream>,
) -> Option<(String, String, Vec<u8>)> {
    use std::io::{BufRead, Read};
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let (mut len, mut chunked) = (0usize, false);
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(len, 0);
        r.read_exact(&mut body).ok()?;
    }
    Some((method, path, body))
}

/// The diff_ids of the image in a `docker save` archive, and its ID.
fn loaded_image(archive: &[u8]) -> (String, Vec<String>) {
    use sha2::Digest;
    let mut r = wcbuild::layer::tar::TarReader::new(archive);
    let mut files = BTreeMap::new();
    while let Some(e) = r.next_entry().unwrap() {
        let mut d = Vec::new();
        std::io::Read::read_to_end(&mut r.content(), &mut d).unwrap();
        files.insert(e.header.path.clone(), d);
    }
    let m: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let cfg = &files[m[0]["Config"].as_str().unwrap()];
    let c: serde_json::Value = serde_json::from_slice(cfg).unwrap();
    let ids = c["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (format!("sha256:{:x}", sha2::Sha256::digest(cfg)), ids)
}

impl WindowsEngine {
    fn start(dir: &Path) -> WindowsEngine {
        use std::io::Write;
        let socket = dir.join("windows-engine.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = requests.clone();
        // The step's layer, as a Windows engine's diff: Files/ and Hives/ with records.
        let mut w = wcbuild::layer::LayerWriter::new(
            Vec::new(),
            wcbuild::layer::LayerOptions {
                format: wcbuild::layer::Format::Windows,
                compression: wcbuild::layer::Compression::None,
                threads: 1,
                ..Default::default()
            },
        )
        .unwrap();
        let mut h =
            wcbuild::layer::tar::Header::new("app/built.txt", wcbuild::layer::tar::Kind::File);
        h.size = 7;
        w.append(h, Some(&mut &b"built\r\n"[..]), false).unwrap();
        let (_, top) = w.finish().unwrap();
        // Attributes the engine's exporter wrote (read-only, archive), which must survive.
        let top_tar = {
            let mut entries = Vec::new();
            let mut r = wcbuild::layer::tar::TarReader::new(&top[..]);
            while let Some(e) = r.next_entry().unwrap() {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut r.content(), &mut data).unwrap();
                let mut h = e.header;
                if h.path == "Files/app/built.txt" {
                    h.pax.insert("MSWINDOWS.fileattr".into(), "33".into());
                }
                entries.push((h, data));
            }
            let mut out = Vec::new();
            for (h, data) in &entries {
                wcbuild::layer::tar::write_entry(&mut out, h, true, Some(&mut &data[..])).unwrap();
            }
            out.extend_from_slice(&[0u8; 1024]);
            out
        };
        let top_hex = {
            use sha2::Digest;
            format!("{:x}", sha2::Sha256::digest(&top_tar))
        };
        std::thread::spawn(move || {
            let mut images: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
            let started_rx = std::sync::Arc::new(std::sync::Mutex::new(started_rx));
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let mut r = std::io::BufReader::new(conn.try_clone().unwrap());
                let Some((method, path, body)) = read_request(&mut r) else {
                    continue;
                };
                log.lock()
                    .unwrap()
                    .push((method.clone(), path.clone(), body.clone()));
                let mut out = conn;
                let path_only = path.split('?').next().unwrap().to_string();
                let p = path_only
                    .splitn(3, '/')
                    .nth(2)
                    .map(|s| format!("/{s}"))
                    .unwrap_or(path_only.clone());
                let reply = |out: &mut std::os::unix::net::UnixStream,
                             status: &str,
                             body: &[u8]| {
                    let _ = write!(
                        out,
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = out.write_all(body);
                };
                let json = |v: serde_json::Value| v.to_string().into_bytes();
                if path_only == "/version" {
                    reply(
                        &mut out,
                        "200 OK",
                        &json(
                            serde_json::json!({"ApiVersion": "1.44", "MinAPIVersion": "1.24", "Os": "windows", "Version": "25.0.3"}),
                        ),
                    );
                } else if p == "/info" {
                    reply(
                        &mut out,
                        "200 OK",
                        &json(
                            serde_json::json!({"OSType": "windows", "OperatingSystem": "Windows Server 2022 Datacenter Version 21H2 (OS Build 20348.2227)", "KernelVersion": "10.0 20348 (20348.1.amd64fre.fe_release.210507-1500)"}),
                        ),
                    );
                } else if p == "/images/load" {
                    let (id, ids) = loaded_image(&body);
                    images.insert(id.clone(), ids);
                    reply(
                        &mut out,
                        "200 OK",
                        &json(serde_json::json!({"stream": format!("Loaded image ID: {id}\n")})),
                    );
                } else if method == "GET" && p.starts_with("/images/") && p.ends_with("/json") {
                    let id = p
                        .trim_start_matches("/images/")
                        .trim_end_matches("/json")
                        .replace("%3A", ":");
                    match images.get(&id) {
                        Some(l) => reply(
                            &mut out,
                            "200 OK",
                            &json(serde_json::json!({"Id": id, "RootFS": {"Layers": l}})),
                        ),
                        None => reply(
                            &mut out,
                            "404 Not Found",
                            &json(serde_json::json!({"message": format!("No such image: {id}")})),
                        ),
                    }
                } else if p == "/containers/create" {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let img = v["Image"].as_str().unwrap_or("").to_string();
                    if !images.contains_key(&img) {
                        reply(
                            &mut out,
                            "404 Not Found",
                            &json(serde_json::json!({"message": "No such image"})),
                        );
                    } else {
                        images.insert("parent".into(), images[&img].clone());
                        reply(
                            &mut out,
                            "201 Created",
                            &json(serde_json::json!({"Id": "c1", "Warnings": []})),
                        );
                    }
                } else if p.ends_with("/attach") {
                    let _ = out.write_all(b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n");
                    let rx = started_rx.clone();
                    std::thread::spawn(move || {
                        let _ = rx
                            .lock()
                            .unwrap()
                            .recv_timeout(std::time::Duration::from_secs(20));
                        let msg = b"hello from windows\r\n";
                        let mut f = vec![1u8, 0, 0, 0];
                        f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
                        f.extend_from_slice(msg);
                        let _ = out.write_all(&f);
                    });
                } else if p.ends_with("/start") {
                    let _ = started_tx.send(());
                    reply(&mut out, "204 No Content", b"");
                } else if p.ends_with("/wait") {
                    reply(
                        &mut out,
                        "200 OK",
                        &json(serde_json::json!({"StatusCode": 0})),
                    );
                } else if p == "/commit" {
                    let mut l = images.get("parent").cloned().unwrap_or_default();
                    l.push(format!("sha256:{top_hex}"));
                    images.insert("sha256:committed".into(), l);
                    reply(
                        &mut out,
                        "201 Created",
                        &json(serde_json::json!({"Id": "sha256:committed"})),
                    );
                } else if p.ends_with("/get") {
                    let mut tar = Vec::new();
                    let mut h = wcbuild::layer::tar::Header::new(
                        &format!("blobs/sha256/{top_hex}"),
                        wcbuild::layer::tar::Kind::File,
                    );
                    h.size = top_tar.len() as u64;
                    wcbuild::layer::tar::write_entry(&mut tar, &h, false, Some(&mut &top_tar[..]))
                        .unwrap();
                    tar.extend_from_slice(&[0u8; 1024]);
                    let _ = write!(
                        out,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        tar.len()
                    );
                    let _ = out.write_all(&tar);
                } else if method == "DELETE" {
                    reply(&mut out, "200 OK", b"[]");
                } else {
                    reply(
                        &mut out,
                        "404 Not Found",
                        &json(serde_json::json!({"message": format!("page not found: {path}")})),
                    );
                }
            }
        });
        WindowsEngine { socket, requests }
    }

    fn request(&self, method: &str, path_end: &str) -> Option<serde_json::Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(m, p, _)| m == method && p.split('?').next().unwrap().ends_with(path_end))
            .map(|(_, _, b)| serde_json::from_slice(b).unwrap_or(serde_json::Value::Null))
    }
}

#[test]
fn a_windows_stage_through_a_windows_engine() {
    let dir = common::tempdir("engine", "winengine");
    let engine = WindowsEngine::start(&dir);
    let root = dir.join("store");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/nanoserver.tar");
    let (code, _, err) = common::wcbuild_at(&root, &["load", "-i", fixture.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let ctx = context(
        &dir,
        "ctx",
        &[(
            "Dockerfile",
            "FROM mcr.microsoft.com/windows/nanoserver:ltsc2022\nRUN echo hi\n",
        )],
    );
    let host = format!("unix://{}", engine.socket.display());
    let meta = dir.join("meta.json");
    let (code, _, err) = common::wcbuild_at(
        &root,
        &[
            "build",
            "-t",
            "w",
            "--progress",
            "plain",
            "--docker-host",
            &host,
            "--memory",
            "2g",
            "--metadata-file",
            meta.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    // The isolation is decided against the engine's host (Server 2022: process).
    assert!(err.contains("windows 25.0.3, API 1.44"), "{err}");
    assert!(err.contains("note: isolation process: "), "{err}");
    assert!(err.contains("hello from windows"), "{err}");
    let create = engine.request("POST", "/containers/create").unwrap();
    assert_eq!(create["HostConfig"]["Isolation"], "process");
    assert_eq!(create["HostConfig"]["NetworkMode"], "default");
    assert_eq!(create["HostConfig"]["Memory"], 2u64 << 30);
    assert_eq!(
        create["Cmd"],
        serde_json::json!(["cmd", "/S", "/C", "echo hi"])
    );
    let m: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    assert_eq!(m["wcbuild.isolation"][0]["isolation"], "process", "{m}");
    assert_eq!(m["wcbuild.isolation"][0]["line"], 2, "{m}");
    // The engine's Windows diff became the layer, its records kept.
    let store = wcbuild::store::Store::open(&root).unwrap();
    let e = wcbuild::ops::images::resolve(&store, "w").unwrap();
    let man: wcbuild::image::Manifest =
        serde_json::from_slice(&store.read_blob(&e.digest).unwrap()).unwrap();
    let top = man.layers.last().unwrap();
    let report = wcbuild::layer::check_windows_layer(
        store.open_blob(&top.digest).unwrap(),
        wcbuild::layer::ReadLimits::default(),
    )
    .unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    let mut tar = wcbuild::layer::tar_reader(
        store.open_blob(&top.digest).unwrap(),
        wcbuild::layer::ReadLimits::default(),
    )
    .unwrap();
    let mut found = None;
    while let Some(en) = tar.next_entry().unwrap() {
        if en.header.path == "Files/app/built.txt" {
            found = en.header.pax.get("MSWINDOWS.fileattr").cloned();
        }
    }
    assert_eq!(found.as_deref(), Some("33"));
    // Hyper-V asked: the engine is told so.
    let (code, _, err) = common::wcbuild_at(
        &root,
        &[
            "build",
            "--no-cache",
            "--progress",
            "plain",
            "--docker-host",
            &host,
            "--isolation",
            "hyperv",
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let create = engine.request("POST", "/containers/create").unwrap();
    assert_eq!(create["HostConfig"]["Isolation"], "hyperv");
    assert!(engine.request("DELETE", "/containers/c1").is_some());
}
