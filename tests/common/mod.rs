//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A Docker engine started for a test on a private socket; stopped when dropped.
pub struct Dockerd {
    child: std::process::Child,
    /// The engine's socket.
    pub socket: PathBuf,
    dir: PathBuf,
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A killed engine can leave mounts (its network namespace, overlays) under its
        // directories: detach them so the directory can go.
        let prefix = format!("{}/", self.dir.display());
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts dockerd with no bridge and no iptables, waiting until it answers.
pub fn start_dockerd() -> Dockerd {
    // A short path: unix socket paths are limited to 108 bytes.
    start_dockerd_in(
        PathBuf::from(format!("/tmp/wcbd-{}", std::process::id())),
        &[],
    )
}

impl Dockerd {
    /// `docker -H <socket> ARGS`.
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        self.docker_env(args, &[])
    }

    /// `docker -H <socket> ARGS` with extra environment. Uses the Docker CLI that comes with
    /// Debian's engine (`/usr/bin/docker`), whose `DOCKER_BUILDKIT=1` uses the engine's own
    /// BuildKit, when it is there.
    pub fn docker_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let cli = if std::path::Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        };
        Command::new(cli)
            .envs(env.iter().copied())
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .output()
            .unwrap()
    }
}

/// A new, empty directory under the system's temp dir, named after the test suite and `name`.
pub fn tempdir(suite: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "wcbuild-{suite}-test-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the `wcbuild` binary with `--root ROOT ARGS…` and no standard input: the exit code,
/// stdout and stderr.
pub fn wcbuild_at(root: &Path, args: &[&str]) -> (i32, String, String) {
    wcbuild_at_env(root, args, &[])
}

/// [`wcbuild_at`] with extra environment variables.
pub fn wcbuild_at_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wcbuild"))
        .arg("--root")
        .arg(root)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Tags `name` in `store`: a Linux image of `layers` layers of `each` pseudo-random bytes
/// (xorshift from `seed`), written through the store in 1 MiB pieces. The layers carry a gzip
/// media type: registries never look inside, and a push sends them as they are. Returns the
/// manifest digest.
pub fn random_image(
    store: &wcbuild::store::Store,
    name: &str,
    layers: usize,
    each: usize,
    seed: u64,
) -> String {
    let mut x = seed | 1;
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for _ in 0..layers {
        let mut w = store.blob_writer().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut left = each;
        while left > 0 {
            for c in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
            }
            let n = left.min(buf.len());
            std::io::Write::write_all(&mut w, &buf[..n]).unwrap();
            left -= n;
        }
        let d = w.commit(None, None).unwrap();
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": each}));
        diff_ids.push(d);
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}
    })
    .to_string();
    let cd = store.put_blob(config.as_bytes(), None).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs,
    })
    .to_string();
    let md = store.put_blob(manifest.as_bytes(), None).unwrap();
    let full = wcbuild::ops::images::normalize(name).unwrap();
    store
        .tag(
            &full,
            wcbuild::store::IndexEntry::new(
                "application/vnd.oci.image.manifest.v1+json",
                &md,
                manifest.len() as u64,
            )
            .with_reference(&full),
        )
        .unwrap();
    md
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate made with `openssl`
/// in `dir` (`ca.pem`, `server-cert.pem`, `server-key.pem`, `cert.pem`, `key.pem`), as
/// Docker's TLS documentation makes them.
pub fn make_docker_certs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed (./test.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn, ext) in [
        ("server", "127.0.0.1", "server.ext"),
        ("client", "client", "client.ext"),
    ] {
        let key = format!("{name}-key.pem");
        let csr = format!("{name}.csr");
        let cert = format!("{name}-cert.pem");
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext,
            "-out",
            &cert,
        ]);
    }
    std::fs::copy(dir.join("client-cert.pem"), dir.join("cert.pem")).unwrap();
    std::fs::copy(dir.join("client-key.pem"), dir.join("key.pem")).unwrap();
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port` (15 s at most).
pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port}");
}

/// Debian's `docker-registry` (distribution 2.8) on a loopback port, plain HTTP, storing in a
/// temp directory; killed when dropped.
pub struct DockerRegistry {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl DockerRegistry {
    /// Starts one and waits until it listens.
    pub fn start(suite: &str) -> DockerRegistry {
        let dir = tempdir(suite, "registry");
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog: {{level: warn, formatter: text}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: wcbuild-test\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry must be installed (./test.sh installs it)");
        wait_port(port);
        DockerRegistry { child, port, dir }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `wcbuild --root ROOT` command with no standard input and an empty Docker config of its
/// own (so the machine's credentials never take part).
pub fn wcbuild_command(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wcbuild"));
    c.arg("--root")
        .arg(root)
        .env("DOCKER_CONFIG", root.with_extension("docker-config"))
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null());
    c
}

/// Leftovers of killed processes in a store: files in `ingest/`, entries of `tmp/`, staging
/// directories in `unpacked/`, `.tmp-…` temp files anywhere.
pub fn leftovers(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["ingest", "tmp"] {
        if let Ok(rd) = std::fs::read_dir(root.join(sub)) {
            out.extend(rd.flatten().map(|e| e.path()));
        }
    }
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") || name.contains("wcbuild-extract-") {
                out.push(e.path());
            } else if e.file_type().is_ok_and(|t| t.is_dir())
                && !matches!(name.as_str(), "blobs" | "tmp" | "ingest")
            {
                walk(&e.path(), out);
            }
        }
    }
    walk(root, &mut out);
    out
}

/// Starts dockerd as [`start_dockerd`] does, in its own directory named by `tag`, with
/// `extra` arguments (another `--host`, TLS flags).
pub fn start_dockerd_with(tag: &str, extra: &[String]) -> Dockerd {
    let dir = PathBuf::from(format!("/tmp/wcbd-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    start_dockerd_in(dir, extra)
}

/// dockerd on a unix socket in `dir` (its data, exec root and log there too), with `extra`
/// arguments, once `docker version` answers through it (60 s at most).
fn start_dockerd_in(dir: PathBuf, extra: &[String]) -> Dockerd {
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("d.sock");
    let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
    let child = Command::new("dockerd")
        .arg("--host")
        .arg(format!("unix://{}", socket.display()))
        .args(extra)
        .arg("--data-root")
        .arg(dir.join("data"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--pidfile")
        .arg(dir.join("pid"))
        .args([
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("dockerd must be installed (./test.sh installs docker.io)");
    let d = Dockerd { child, socket, dir };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", d.socket.display()))
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "dockerd did not start: {}",
            std::fs::read_to_string(d.dir.join("dockerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

impl Dockerd {
    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }
}
