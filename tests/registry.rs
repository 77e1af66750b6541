//! Pull and push against real registries: Debian's `docker-registry` (distribution 2.8) on
//! loopback ports, plain, with htpasswd + TLS, and with token auth from a small token server;
//! skopeo and oci-client as peers; a fault-injecting proxy between us and the registry.

// The registry tests start Debian's docker-registry and shell-script credential helpers.
#![cfg(unix)]

mod common;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wcbuild::image::Platform;
use wcbuild::ops::registry::{PullOptions, PushOptions, TransferError, pull, push};
use wcbuild::progress::{Event, Silent, TransferState};
use wcbuild::registry::auth::Credentials;
use wcbuild::registry::{Client, ClientOptions, RegistryError, Repo};
use wcbuild::store::{IndexEntry, Store};

fn tempdir(name: &str) -> PathBuf {
    common::tempdir("registry", name)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port}");
}

/// A `docker-registry` process; killed when dropped.
struct Registry {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Registry {
    fn start(extra: &str) -> Registry {
        let dir = tempdir("registry");
        let port = free_port();
        Self::start_in(dir, port, extra)
    }

    fn start_in(dir: PathBuf, port: u16, extra: &str) -> Registry {
        let config = format!(
            "version: 0.1\nlog: {{level: info, formatter: text}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: wcbuild-test\n{extra}\nvalidation:\n  manifests: {{urls: {{allow: ['^https?://']}}}}\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("registry.log"))
            .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry must be installed (./test.sh installs it)");
        wait_port(port);
        Registry {
            child: Some(child),
            port,
            dir,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rt() -> tokio::runtime::Runtime {
    wcbuild::ops::registry::runtime()
}

fn fixture_store() -> (Store, PathBuf) {
    let dir = tempdir("store");
    let store = Store::open(&dir).unwrap();
    wcbuild::ops::images::load(
        &store,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nanoserver.tar"),
    )
    .unwrap();
    (store, dir)
}

fn empty_store() -> (Store, PathBuf) {
    let dir = tempdir("store");
    (Store::open(&dir).unwrap(), dir)
}

const NANO: &str = "mcr.microsoft.com/windows/nanoserver";

/// Tags an image with one layer of `size` pseudo-random bytes (and a tiny config).
fn random_image(store: &Store, name: &str, size: usize, seed: u64) -> String {
    common::random_image(store, name, 1, size, seed)
}

/// An uncompressed tar holding one file `name` with `data`.
fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut tar = wcbuild::ops::archive::TarWriter::new(Vec::new());
    tar.bytes(name, data).unwrap();
    tar.finish().unwrap()
}

fn blob_names(root: &Path) -> BTreeSet<String> {
    std::fs::read_dir(root.join("blobs/sha256"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn ingest_is_empty(root: &Path) -> bool {
    std::fs::read_dir(root.join("ingest"))
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

fn opts() -> ClientOptions {
    ClientOptions {
        retry_base: Duration::from_millis(50),
        config_dir: tempdir("dockercfg"),
        ..ClientOptions::default()
    }
}

/// Pushes `src` of `store` to `dest`, with default options, and says what happened.
fn push_to(store: &Store, src: &str, dest: &str) -> wcbuild::ops::registry::Pushed {
    rt().block_on(push(
        store,
        &Client::new(opts()),
        src,
        Some(dest),
        &PushOptions::default(),
        &mut Silent,
    ))
    .unwrap()
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    wcbuild::store::sha256_digest(bytes)
        .trim_start_matches("sha256:")
        .to_string()
}

#[test]
fn push_and_pull_round_trip_with_skopeo() {
    let reg = Registry::start("");
    let (store, _dir) = fixture_store();
    let client = Client::new(opts());
    let rt = rt();
    let host = reg.host();
    // A multi-version Windows index keeps its digest and its os.version entries.
    let dest = format!("{host}/wcb/nano:multi");
    let pushed = rt
        .block_on(push(
            &store,
            &client,
            &format!("{NANO}:multi"),
            Some(&dest),
            &PushOptions::default(),
            &mut Silent,
        ))
        .unwrap();
    let local = store.lookup(&format!("{NANO}:multi")).unwrap().unwrap();
    assert_eq!(pushed.digest, local.digest);
    assert_eq!(pushed.uploaded, 6, "3 configs and 3 layers");
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{dest}"),
    ]);
    assert_eq!(
        format!("sha256:{}", sha256_hex(raw.as_bytes())),
        local.digest
    );
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let versions: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["os.version"].as_str().unwrap())
        .collect();
    assert_eq!(
        versions,
        ["10.0.17763.6414", "10.0.20348.2849", "10.0.26100.2314"]
    );

    // A second push finds everything there and uploads nothing.
    let again = rt
        .block_on(push(
            &store,
            &client,
            &format!("{NANO}:multi"),
            Some(&dest),
            &PushOptions::default(),
            &mut Silent,
        ))
        .unwrap();
    assert_eq!((again.uploaded, again.existed), (0, 6));

    // skopeo copies what we pushed into an OCI layout: same blobs, byte for byte.
    let layout = tempdir("layout");
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{dest}"),
        &format!("oci:{}:x", layout.display()),
    ]);
    let theirs = blob_names(&layout);
    assert!(theirs.contains(local.digest.trim_start_matches("sha256:")));
    for b in &theirs {
        assert!(
            blob_names(store.root()).contains(b),
            "skopeo has {b} which we never pushed"
        );
    }

    // skopeo pushes; we pull into an empty store and get the same digest.
    let other = format!("{host}/wcb/from-skopeo:1");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:x", layout.display()),
        &format!("docker://{other}"),
        "--all",
    ]);
    let (fresh, fresh_dir) = empty_store();
    let pulled = rt
        .block_on(pull(
            &fresh,
            &client,
            &other,
            &PullOptions {
                all_platforms: true,
                ..Default::default()
            },
            &mut Silent,
        ))
        .unwrap();
    assert_eq!(pulled.digest, local.digest);
    assert_eq!(pulled.platforms.len(), 3);
    assert!(ingest_is_empty(&fresh_dir));
    // Every blob we hold verifies.
    for b in blob_names(&fresh_dir) {
        let bytes = std::fs::read(fresh_dir.join("blobs/sha256").join(&b)).unwrap();
        assert_eq!(sha256_hex(&bytes), b);
    }
}

#[test]
fn pull_chooses_windows_version_and_says_what_exists() {
    let reg = Registry::start("");
    let (store, _d) = fixture_store();
    let client = Client::new(opts());
    let rt = rt();
    let dest = format!("{}/wcb/nano:multi", reg.host());
    rt.block_on(push(
        &store,
        &client,
        &format!("{NANO}:multi"),
        Some(&dest),
        &PushOptions::default(),
        &mut Silent,
    ))
    .unwrap();
    let (fresh, _fd) = empty_store();
    let want = |p: &str| PullOptions {
        platform: Some(Platform::parse(p).unwrap()),
        ..Default::default()
    };
    let p = rt
        .block_on(pull(
            &fresh,
            &client,
            &dest,
            &want("windows/amd64:ltsc2022"),
            &mut Silent,
        ))
        .unwrap();
    assert_eq!(p.platforms, ["windows/amd64:10.0.20348.2849"]);
    let expected = store
        .lookup(&format!("{NANO}:ltsc2022"))
        .unwrap()
        .unwrap()
        .digest;
    assert_eq!(p.digest, expected, "the tag names the 20348 image");
    // Without --platform on a Linux host: a clear error listing the versions.
    let err = rt
        .block_on(pull(
            &fresh,
            &client,
            &dest,
            &want("linux/amd64"),
            &mut Silent,
        ))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TransferError::NoPlatform { .. }), "{msg}");
    assert!(
        msg.contains("10.0.17763.6414")
            && msg.contains("10.0.26100.2314")
            && msg.contains("--platform"),
        "{msg}"
    );
    // A build that does not exist.
    let err = rt
        .block_on(pull(
            &fresh,
            &client,
            &dest,
            &want("windows/amd64:10.0.19041"),
            &mut Silent,
        ))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no image for windows/amd64:10.0.19041"),
        "{err}"
    );
    // Unknown tags and repositories.
    let err = rt
        .block_on(pull(
            &fresh,
            &client,
            &format!("{}/wcb/nope:1", reg.host()),
            &PullOptions::default(),
            &mut Silent,
        ))
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
}

#[test]
fn oci_client_pulls_what_we_push() {
    let reg = Registry::start("");
    let (store, _d) = empty_store();
    let md = random_image(&store, "local/rand:1", 300_000, 7);
    let client = Client::new(opts());
    let rt = rt();
    let dest = format!("{}/wcb/rand:1", reg.host());
    rt.block_on(push(
        &store,
        &client,
        "local/rand:1",
        Some(&dest),
        &PushOptions::default(),
        &mut Silent,
    ))
    .unwrap();
    let (digest, layer) = rt.block_on(async {
        use oci_client::client::{ClientConfig, ClientProtocol};
        let c = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let r: oci_client::Reference = dest.parse().unwrap();
        let auth = oci_client::secrets::RegistryAuth::Anonymous;
        let (manifest, digest) = c.pull_image_manifest(&r, &auth).await.unwrap();
        let mut out = Vec::new();
        c.pull_blob(&r, &manifest.layers[0], &mut out)
            .await
            .unwrap();
        (digest, out)
    });
    assert_eq!(digest, md);
    assert_eq!(layer.len(), 300_000);
}

fn openssl(args: &[&str], dir: &Path) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success(), "openssl {args:?}");
}

/// A self-signed key pair `NAME.key`/`NAME.crt` (the token server's signing key).
fn openssl_cert(dir: &Path, name: &str, cn: &str) {
    let (key, crt, subj) = (
        format!("{name}.key"),
        format!("{name}.crt"),
        format!("/CN={cn}"),
    );
    openssl(
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", &key, "-out",
            &crt, "-subj", &subj,
        ],
        dir,
    );
}

/// A private CA (`ca.crt`) and a server certificate for 127.0.0.1 it signed
/// (`registry.crt`/`registry.key`).
fn private_ca(dir: &Path) {
    openssl_cert(dir, "ca", "wcbuild test CA");
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "registry.key",
            "-out",
            "registry.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        dir,
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "registry.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "registry.crt",
            "-extfile",
            "ext.cnf",
        ],
        dir,
    );
}

#[test]
fn htpasswd_and_tls_with_a_private_ca() {
    let work = tempdir("tls");
    private_ca(&work);
    let hp = Command::new("htpasswd")
        .args(["-Bbn", "wcb", "s3cret"])
        .output()
        .expect("htpasswd (apache2-utils)");
    std::fs::write(work.join("htpasswd"), &hp.stdout).unwrap();
    let extra = format!(
        "  tls: {{certificate: {}, key: {}}}\nauth:\n  htpasswd: {{realm: wcbuild-test, path: {}}}",
        work.join("registry.crt").display(),
        work.join("registry.key").display(),
        work.join("htpasswd").display()
    );
    let reg = Registry::start(&extra);
    let host = reg.host();
    // Docker's certs.d layout: DIR/127.0.0.1:PORT/ca.crt.
    let certs = work.join("certs.d");
    std::fs::create_dir_all(certs.join(&host)).unwrap();
    std::fs::copy(work.join("ca.crt"), certs.join(&host).join("ca.crt")).unwrap();
    let (store, _d) = fixture_store();
    let rt = rt();
    let dest = format!("{host}/wcb/nano:ltsc2019");
    let src = format!("{NANO}:ltsc2019");

    // No credentials: refused, with advice.
    let o = ClientOptions {
        certs_dir: certs.clone(),
        ..opts()
    };
    let err = rt
        .block_on(push(
            &store,
            &Client::new(o.clone()),
            &src,
            Some(&dest),
            &PushOptions::default(),
            &mut Silent,
        ))
        .unwrap_err();
    assert!(err.to_string().contains("wcbuild login"), "{err}");

    // A wrong password: refused, and the password appears nowhere.
    let bad = ClientOptions {
        credentials: Some((
            host.clone(),
            Credentials {
                username: "wcb".into(),
                secret: "hunter2-wrong".into(),
            },
        )),
        ..o.clone()
    };
    let err = rt
        .block_on(Client::new(bad).check_login(&host))
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");

    // `wcbuild login --password-stdin` checks and stores them; then push works.
    let cfg = tempdir("cfg");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wcbuild"))
        .args([
            "login",
            &host,
            "-u",
            "wcb",
            "--password-stdin",
            "--certs-dir",
        ])
        .arg(&certs)
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Login Succeeded") && !stderr.contains("s3cret"),
        "{stderr}"
    );
    // Stored as Docker stores them, readable by the owner only.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(cfg.join("config.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "config.json is {:o}", mode & 0o777);
    }
    let good = ClientOptions {
        config_dir: cfg.clone(),
        ..o.clone()
    };
    let pushed = rt
        .block_on(push(
            &store,
            &Client::new(good.clone()),
            &src,
            Some(&dest),
            &PushOptions::default(),
            &mut Silent,
        ))
        .unwrap();
    assert_eq!(pushed.uploaded, 2);

    // With loopback treated like any host, TLS is verified: the certs.d CA makes it pass,
    // and without it the connection is refused.
    let (fresh, _fd) = empty_store();
    let strict = |certs_dir: PathBuf| ClientOptions {
        config_dir: cfg.clone(),
        certs_dir,
        loopback_insecure: false,
        ..opts()
    };
    let repo = Repo {
        registry: host.clone(),
        name: "wcb/nano".into(),
    };
    let err = rt
        .block_on(Client::new(strict(work.join("none"))).get_manifest(&repo, "ltsc2019"))
        .unwrap_err();
    assert!(matches!(err, RegistryError::Transport { .. }), "{err}");
    rt.block_on(Client::new(strict(certs.clone())).get_manifest(&repo, "ltsc2019"))
        .unwrap();
    let pulled = rt
        .block_on(pull(
            &fresh,
            &Client::new(good),
            &dest,
            &PullOptions {
                platform: Some(Platform::parse("windows/amd64").unwrap()),
                ..Default::default()
            },
            &mut Silent,
        ))
        .unwrap();
    assert_eq!(pulled.digest, pushed.digest);

    // logout removes them.
    let out = Command::new(env!("CARGO_BIN_EXE_wcbuild"))
        .args(["logout", &host, "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cfg.join("config.json")).unwrap()).unwrap();
    assert!(v["auths"].get(&host).is_none(), "{v}");
}

struct TokenServer {
    child: Child,
    log: PathBuf,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TokenServer {
    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A registry with token auth; the token server's JWTs live `jwt_lifetime` seconds but it
/// tells clients `advertised` seconds.
fn token_registry(jwt_lifetime: i32, advertised: u32) -> (Registry, TokenServer) {
    let work = tempdir("token");
    openssl_cert(&work, "token", "wcbuild-token-issuer");
    let tport = free_port();
    let log = work.join("tokens.log");
    let child = Command::new("/usr/bin/python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/registry/token_server.py"))
        .arg(tport.to_string())
        .arg(work.join("token.crt"))
        .arg(work.join("token.key"))
        .args(["wcbuild-registry", "wcbuild-token-issuer"])
        .arg(jwt_lifetime.to_string())
        .arg(advertised.to_string())
        .arg(&log)
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with python3-cryptography");
    wait_port(tport);
    let extra = format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{tport}/token\n    service: wcbuild-registry\n    issuer: wcbuild-token-issuer\n    rootcertbundle: {}",
        work.join("token.crt").display()
    );
    (Registry::start(&extra), TokenServer { child, log })
}

fn with_creds(host: &str, user: &str, secret: &str) -> ClientOptions {
    ClientOptions {
        credentials: Some((
            host.to_string(),
            Credentials {
                username: user.into(),
                secret: secret.into(),
            },
        )),
        ..opts()
    }
}

#[test]
fn token_auth_push_pull_and_mount_between_repositories() {
    let (reg, tokens) = token_registry(300, 300);
    let host = reg.host();
    let (store, _d) = fixture_store();
    let rt = rt();
    let src = format!("{NANO}:ltsc2022");
    // Anonymous push is denied.
    let err = rt
        .block_on(push(
            &store,
            &Client::new(opts()),
            &src,
            Some(&format!("{host}/wcb/a:1")),
            &PushOptions::default(),
            &mut Silent,
        ))
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransferError::Registry(RegistryError::Unauthorized { .. })
        ),
        "{err}"
    );
    // With credentials it works.
    let client = Client::new(with_creds(&host, "wcb", "s3cret"));
    let first = rt
        .block_on(push(
            &store,
            &client,
            &src,
            Some(&format!("{host}/wcb/a:1")),
            &PushOptions::default(),
            &mut Silent,
        ))
        .unwrap();
    assert_eq!(first.uploaded, 2);
    // Within its lifetime a token is reused: the same push again (nothing to upload) asks
    // the token server for nothing.
    let asked = tokens.requests().len();
    assert!(asked >= 1);
    let again = rt
        .block_on(push(
            &store,
            &client,
            &src,
            Some(&format!("{host}/wcb/a:1")),
            &PushOptions::default(),
            &mut Silent,
        ))
        .unwrap();
    assert_eq!(again.uploaded, 0);
    assert_eq!(
        tokens.requests().len(),
        asked,
        "a token still valid was asked for again: {:?}",
        tokens.requests()
    );
    // Into another repository: both blobs are mounted, with a token for both scopes.
    let mut events = Vec::new();
    let second = rt
        .block_on(push(
            &store,
            &client,
            &src,
            Some(&format!("{host}/wcb/b:1")),
            &PushOptions::default(),
            &mut |e: Event| events.push(e),
        ))
        .unwrap();
    assert_eq!((second.uploaded, second.mounted), (0, 2));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(
                e,
                Event::Transfer {
                    state: TransferState::Mounted,
                    ..
                }
            ))
            .count(),
        2
    );
    assert!(
        tokens.requests().iter().any(|r| {
            let s = r["scopes"].to_string();
            s.contains("repository:wcb/b:pull,push") && s.contains("repository:wcb/a:pull")
        }),
        "{:?}",
        tokens.requests()
    );
    assert!(reg.log().contains("mount"), "the registry logged no mount");
    // Anonymous pull is allowed; an identity token (OAuth2 POST) works too.
    let (fresh, _fd) = empty_store();
    let p = rt
        .block_on(pull(
            &fresh,
            &Client::new(opts()),
            &format!("{host}/wcb/b:1"),
            &PullOptions {
                platform: Some(Platform::parse("windows/amd64").unwrap()),
                ..Default::default()
            },
            &mut Silent,
        ))
        .unwrap();
    assert_eq!(p.digest, first.digest);
    let refresh = Client::new(with_creds(&host, "<token>", "refresh-s3cret"));
    rt.block_on(push(
        &store,
        &refresh,
        &format!("{NANO}:ltsc2019"),
        Some(&format!("{host}/wcb/c:1")),
        &PushOptions::default(),
        &mut Silent,
    ))
    .unwrap();
    assert!(
        tokens
            .requests()
            .iter()
            .any(|r| r["grant"] == "refresh_token")
    );
    // The same from `config.json`: an `identitytoken` is sent as an OAuth2 refresh token.
    let cfg = tempdir("identitytoken");
    std::fs::write(
        cfg.join("config.json"),
        format!("{{\"auths\":{{\"{host}\":{{\"identitytoken\":\"refresh-s3cret\"}}}}}}"),
    )
    .unwrap();
    let before = tokens.requests().len();
    rt.block_on(push(
        &store,
        &Client::new(ClientOptions {
            config_dir: cfg,
            ..opts()
        }),
        &format!("{NANO}:ltsc2019"),
        Some(&format!("{host}/wcb/d:1")),
        &PushOptions::default(),
        &mut Silent,
    ))
    .unwrap();
    let grants: Vec<_> = tokens.requests()[before..]
        .iter()
        .map(|r| r["grant"].clone())
        .collect();
    assert!(
        !grants.is_empty() && grants.iter().all(|g| g == "refresh_token"),
        "{grants:?}"
    );
}

#[test]
fn token_expiring_mid_push_is_renewed() {
    // distribution accepts tokens up to 60 s past their `exp` (clock-skew leeway), so a JWT
    // that expired 57 s ago is honoured for 3 s more; clients are told 300 s.
    let (reg, tokens) = token_registry(-57, 300);
    let host = reg.host();
    let (store, _d) = fixture_store();
    let rt = rt();
    let client = Client::new(with_creds(&host, "wcb", "s3cret"));
    let dest = format!("{host}/wcb/e:1");
    rt.block_on(push(
        &store,
        &client,
        &format!("{NANO}:ltsc2019"),
        Some(&dest),
        &PushOptions::default(),
        &mut Silent,
    ))
    .unwrap();
    let before = tokens.requests().len();
    std::thread::sleep(Duration::from_millis(3600));
    // Same client, cached token now refused by the registry: a 401, a new token, success.
    let pushed = rt
        .block_on(push(
            &store,
            &client,
            &format!("{NANO}:ltsc2025"),
            Some(&dest),
            &PushOptions::default(),
            &mut Silent,
        ))
        .unwrap();
    assert_eq!(pushed.uploaded, 2);
    // Renewed after the registry refused the cached token: about once per request that was
    // in flight with the old one (the two blob uploads run at once; a renewed token lives 3 s
    // too, so a slow machine may renew again), never once per request as without a cache.
    let renewed = tokens.requests().len() - before;
    assert!(
        (1..=4).contains(&renewed),
        "{renewed} renewals: {:?}",
        &tokens.requests()[before..]
    );
}

// ---- A fault-injecting proxy ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Forward everything as it is (the proxy only logs).
    None,
    /// Flip one byte of blob bodies.
    CorruptBlob,
    /// Cut the first large blob body off half way (once).
    DropMidBlob,
    /// Answer 429 with Retry-After: 1 to the first two blob requests.
    TooMany,
    /// Send a wrong Docker-Content-Digest with manifests.
    WrongDigest,
    /// Send a 5 MiB manifest.
    HugeManifest,
    /// Redirect blob requests to themselves forever.
    RedirectLoop,
    /// Stream blob bodies from the registry slowly (2 ms per piece).
    Slow,
    /// Refuse uploads in one PUT (as some registries do): 400 to a PUT with a body.
    RefuseMonolithic,
    /// Break the first monolithic upload half way: forward half of it, then drop the
    /// connection without an answer.
    CutUpload,
}

struct Proxy {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    /// Blob GETs as the proxy saw them: when, the path, and 429 when it answered that.
    timeline: Arc<Mutex<Vec<(Instant, String, u16)>>>,
    /// The most large (over 1 MB) blob bodies streamed at once (slow mode).
    max_active: Arc<AtomicUsize>,
    /// Raised by one: the blob bodies being streamed slowly at that moment break off at their
    /// next piece, as when the registry behind goes away (whatever the sockets between still
    /// hold); later requests stream whole.
    cut_slow: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

/// Counts a body being streamed until it is dropped.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn start_proxy(upstream: u16, fault: Fault) -> Proxy {
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::{Bytes, Frame};
    type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let seen2 = seen.clone();
    let timeline = Arc::new(Mutex::new(Vec::new()));
    let timeline2 = timeline.clone();
    let active = Arc::new(AtomicUsize::new(0));
    let max_active = Arc::new(AtomicUsize::new(0));
    let (active2, max2) = (active.clone(), max_active.clone());
    let cut_slow = Arc::new(AtomicUsize::new(0));
    let cut2 = cut_slow.clone();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (http, seen, count) = (http.clone(), seen2.clone(), count.clone());
            let (active, max_active) = (active2.clone(), max2.clone());
            let timeline = timeline2.clone();
            let cut = cut2.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (http, seen, count) = (http.clone(), seen.clone(), count.clone());
                        let (active, max_active) = (active.clone(), max_active.clone());
                        let timeline = timeline.clone();
                        let cut = cut.clone();
                        async move {
                            let full = |status: u16, hdrs: Vec<(String, String)>, b: Vec<u8>| {
                                let mut r = hyper::Response::builder().status(status);
                                for (k, v) in hdrs {
                                    r = r.header(k, v);
                                }
                                r.body(
                                    Full::new(Bytes::from(b))
                                        .map_err(|e: Infallible| match e {})
                                        .boxed(),
                                )
                                .unwrap()
                            };
                            let path = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let put = req.method() == hyper::Method::PUT;
                            let head = req.method() == hyper::Method::HEAD;
                            let is_blob = path.contains("/blobs/sha256:")
                                && req.method() == hyper::Method::GET;
                            let is_manifest =
                                path.contains("/manifests/") && req.method() == hyper::Method::GET;
                            let range = req
                                .headers()
                                .get("range")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            seen.lock().unwrap().push(format!(
                                "{} {} {}",
                                req.method(),
                                path,
                                range.clone().unwrap_or_default()
                            ));
                            let too_many = is_blob
                                && fault == Fault::TooMany
                                && count.fetch_add(1, Ordering::SeqCst) < 2;
                            if is_blob {
                                timeline.lock().unwrap().push((
                                    Instant::now(),
                                    path.clone(),
                                    if too_many { 429 } else { 0 },
                                ));
                            }
                            if too_many {
                                return Ok::<hyper::Response<Body>, Infallible>(full(
                                    429,
                                    vec![("Retry-After".into(), "1".into())],
                                    vec![],
                                ));
                            }
                            if is_blob && fault == Fault::RedirectLoop {
                                return Ok(full(
                                    307,
                                    vec![(
                                        "Location".into(),
                                        format!("http://127.0.0.1:{port}{path}"),
                                    )],
                                    vec![],
                                ));
                            }
                            let method =
                                reqwest::Method::from_bytes(req.method().as_str().as_bytes())
                                    .unwrap();
                            let mut rb =
                                http.request(method, format!("http://127.0.0.1:{upstream}{path}"));
                            for (k, v) in req.headers() {
                                // Host too: the registry builds upload locations from it, so they point back at us.
                                rb = rb.header(k.as_str(), v.as_bytes());
                            }
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let is_put_upload = path.contains("/blobs/uploads/") && put;
                            if is_put_upload && !body.is_empty() && fault == Fault::RefuseMonolithic {
                                return Ok(full(400, vec![], br#"{"errors":[{"code":"UNSUPPORTED","message":"monolithic uploads are off"}]}"#.to_vec()));
                            }
                            if is_put_upload && body.len() > 1000 && fault == Fault::CutUpload && count.fetch_add(1, Ordering::SeqCst) == 0 {
                                let half = body.len() / 2;
                                let patch_path = path.split("&digest=").next().unwrap_or(&path).split("?digest=").next().unwrap_or(&path).to_string();
                                let _ = http
                                    .patch(format!("http://127.0.0.1:{upstream}{patch_path}"))
                                    .header("Content-Type", "application/octet-stream")
                                    .header("Content-Range", format!("0-{}", half - 1))
                                    .body(body[..half].to_vec())
                                    .send()
                                    .await;
                                // No answer: the client sees the connection break.
                                let items: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![Err(std::io::Error::other("cut"))];
                                return Ok(hyper::Response::builder().status(200).header("Content-Length", "10").body(StreamBody::new(futures_util::stream::iter(items)).boxed()).unwrap());
                            }
                            let resp = match rb.body(body.to_vec()).send().await {
                                Ok(r) => r,
                                Err(_) => return Ok(full(502, vec![], b"upstream down".to_vec())),
                            };
                            let status = resp.status().as_u16();
                            if is_blob && fault == Fault::Slow && status < 300 {
                                use futures_util::StreamExt as _;
                                let mut r = hyper::Response::builder().status(status);
                                for (k, v) in resp.headers() {
                                    if k != "transfer-encoding" {
                                        r = r.header(k.as_str(), v.as_bytes());
                                    }
                                }
                                let guard = (resp.content_length().unwrap_or(0) > 1_000_000).then(|| {
                                    let n = active.fetch_add(1, Ordering::SeqCst) + 1;
                                    max_active.fetch_max(n, Ordering::SeqCst);
                                    Active(active.clone())
                                });
                                let epoch = cut.load(Ordering::SeqCst);
                                let s = resp.bytes_stream().then(move |item| {
                                    let _alive = &guard;
                                    let cut = cut.clone();
                                    async move {
                                        tokio::time::sleep(Duration::from_millis(1)).await;
                                        if cut.load(Ordering::SeqCst) != epoch {
                                            return Err(std::io::Error::other("upstream gone"));
                                        }
                                        item.map(Frame::data).map_err(std::io::Error::other)
                                    }
                                });
                                return Ok(r.body(BodyExt::boxed(StreamBody::new(s))).unwrap());
                            }
                            let mut hdrs: Vec<(String, String)> = resp
                                .headers()
                                .iter()
                                .filter(|(k, _)| {
                                    *k != "content-length" && *k != "transfer-encoding"
                                })
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                                .collect();
                            if head
                                && let Some(n) = resp
                                    .headers()
                                    .get("content-length")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string)
                            {
                                // hyper would send 0 for an empty body; a HEAD keeps the upstream length.
                                hdrs.push(("Content-Length".into(), n.to_string()));
                            }
                            let mut bytes = resp.bytes().await.unwrap_or_default().to_vec();
                            if is_manifest && fault == Fault::WrongDigest {
                                hdrs.retain(|(k, _)| k != "docker-content-digest");
                                hdrs.push((
                                    "Docker-Content-Digest".into(),
                                    format!("sha256:{}", "0".repeat(64)),
                                ));
                            }
                            if is_manifest && fault == Fault::HugeManifest {
                                bytes = vec![b' '; 5 << 20];
                            }
                            if is_blob
                                && status < 300
                                && fault == Fault::CorruptBlob
                                && !bytes.is_empty()
                            {
                                let i = bytes.len() / 2;
                                bytes[i] ^= 0x40;
                            }
                            if is_blob
                                && status == 200
                                && fault == Fault::DropMidBlob
                                && bytes.len() > 100_000
                                && count.fetch_add(1, Ordering::SeqCst) == 0
                            {
                                // Announce the whole length, send half, then break the connection.
                                hdrs.push(("Content-Length".into(), bytes.len().to_string()));
                                let half = Bytes::from(bytes[..bytes.len() / 2].to_vec());
                                let items: Vec<Result<Frame<Bytes>, std::io::Error>> =
                                    vec![Ok(Frame::data(half)), Err(std::io::Error::other("cut"))];
                                let mut r = hyper::Response::builder().status(200);
                                for (k, v) in hdrs {
                                    r = r.header(k, v);
                                }
                                return Ok(r
                                    .body(
                                        StreamBody::new(futures_util::stream::iter(items)).boxed(),
                                    )
                                    .unwrap());
                            }
                            Ok(full(status, hdrs, bytes))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Proxy {
        port,
        seen,
        timeline,
        max_active,
        cut_slow,
        _rt: rt,
    }
}

/// Pushes a 3 MB random image straight to the registry, then pulls it through a proxy that
/// injects `fault`, into an empty store.
fn pull_through(
    fault: Fault,
) -> (
    Result<wcbuild::ops::registry::Pulled, TransferError>,
    PathBuf,
    Proxy,
    String,
    Registry,
) {
    let reg = Registry::start("");
    let (store, _d) = empty_store();
    let md = random_image(&store, "local/r:1", 3_000_000, 11);
    let client = Client::new(opts());
    let rt = rt();
    rt.block_on(push(
        &store,
        &client,
        "local/r:1",
        Some(&format!("{}/wcb/r:1", reg.host())),
        &PushOptions::default(),
        &mut Silent,
    ))
    .unwrap();
    let proxy = start_proxy(reg.port, fault);
    let (fresh, fresh_dir) = empty_store();
    let res = rt.block_on(pull(
        &fresh,
        &Client::new(opts()),
        &format!("127.0.0.1:{}/wcb/r:1", proxy.port),
        &PullOptions::default(),
        &mut Silent,
    ));
    (res, fresh_dir, proxy, md, reg)
}

#[test]
fn a_corrupted_byte_is_refused_and_nothing_is_stored() {
    let (res, dir, _p, _md, _r) = pull_through(Fault::CorruptBlob);
    let err = res.unwrap_err();
    assert!(
        matches!(
            err,
            TransferError::Registry(RegistryError::DigestMismatch { .. })
        ),
        "{err}"
    );
    assert!(blob_names(&dir).iter().all(|b| {
        let bytes = std::fs::read(dir.join("blobs/sha256").join(b)).unwrap();
        sha256_hex(&bytes) == *b
    }));
    assert!(ingest_is_empty(&dir), "a partial blob was left in ingest/");
    assert!(
        Store::open(&dir)
            .unwrap()
            .lookup("127.0.0.1/wcb/r:1")
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_dropped_download_resumes_with_range() {
    let (res, dir, proxy, md, _r) = pull_through(Fault::DropMidBlob);
    let pulled = res.unwrap();
    assert_eq!(pulled.digest, md);
    let seen = proxy.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|l| l.contains("bytes=1500000-")),
        "no ranged request: {seen:?}"
    );
    assert!(ingest_is_empty(&dir));
}

#[test]
fn too_many_requests_waits_for_retry_after() {
    let (res, _dir, proxy, md, _r) = pull_through(Fault::TooMany);
    assert_eq!(res.unwrap().digest, md);
    // Measured at the proxy: each blob answered 429 (Retry-After: 1) is asked for again no
    // sooner than a second later (and not much later either).
    let timeline = proxy.timeline.lock().unwrap().clone();
    let refused: Vec<_> = timeline.iter().filter(|(_, _, s)| *s == 429).collect();
    assert_eq!(refused.len(), 2, "{timeline:?}");
    for (at, path, _) in refused {
        let retry = timeline
            .iter()
            .find(|(t, p, _)| p == path && t > at)
            .unwrap_or_else(|| panic!("`{path}` was not asked for again: {timeline:?}"));
        let waited = retry.0 - *at;
        assert!(
            waited >= Duration::from_millis(1000) && waited < Duration::from_secs(4),
            "`{path}` was asked for again {waited:?} after its 429 (Retry-After: 1)"
        );
    }
}

#[test]
fn a_wrong_content_digest_header_is_refused() {
    let (res, _dir, _p, _md, _r) = pull_through(Fault::WrongDigest);
    let err = res.unwrap_err();
    assert!(
        matches!(
            err,
            TransferError::Registry(RegistryError::WrongHeaderDigest { .. })
        ),
        "{err}"
    );
}

#[test]
fn an_oversized_manifest_is_refused() {
    let (res, _dir, _p, _md, _r) = pull_through(Fault::HugeManifest);
    let err = res.unwrap_err();
    assert!(
        matches!(err, TransferError::Registry(RegistryError::TooLarge { .. })),
        "{err}"
    );
}

#[test]
fn a_redirect_loop_ends_in_an_error() {
    let (res, dir, _p, _md, _r) = pull_through(Fault::RedirectLoop);
    let err = res.unwrap_err();
    assert!(
        format!("{err:?}").to_lowercase().contains("redirect"),
        "{err:?}"
    );
    assert!(ingest_is_empty(&dir));
}

#[test]
fn a_registry_restarted_mid_pull() {
    let mut reg = Registry::start("");
    let (store, _d) = empty_store();
    random_image(&store, "local/big:1", 32_000_000, 3);
    let rt = rt();
    let client = Client::new(opts());
    let host = reg.host();
    rt.block_on(push(
        &store,
        &client,
        "local/big:1",
        Some(&format!("{host}/wcb/big:1")),
        &PushOptions::default(),
        &mut Silent,
    ))
    .unwrap();
    // Pull through a proxy that streams slowly; stop the registry 200 ms into the layer
    // download, restart it 700 ms later.
    let proxy = start_proxy(reg.port, Fault::Slow);
    let (fresh, fresh_dir) = empty_store();
    let started = Arc::new(AtomicUsize::new(0));
    let s2 = started.clone();
    let (dir, port) = (reg.dir.clone(), reg.port);
    let pid = reg.child.as_ref().unwrap().id();
    let cut = proxy.cut_slow.clone();
    let killer = std::thread::spawn(move || {
        while s2.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(200));
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        // What the sockets between already held would otherwise still arrive whole.
        cut.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(700));
        Registry::start_in(dir, port, "")
    });
    let mut on_event = |e: Event| {
        if let Event::Transfer {
            kind: "layer",
            state: TransferState::Progress | TransferState::Started,
            ..
        } = e
        {
            started.store(1, Ordering::SeqCst);
        }
    };
    let slow = ClientOptions {
        retry_base: Duration::from_millis(300),
        ..opts()
    };
    let via = format!("127.0.0.1:{}/wcb/big:1", proxy.port);
    let res = rt.block_on(pull(
        &fresh,
        &Client::new(slow),
        &via,
        &PullOptions::default(),
        &mut on_event,
    ));
    let mut restarted = killer.join().unwrap();
    reg.child.take();
    let pulled = res.expect("the pull survives a registry restart");
    assert!(pulled.downloaded_bytes >= 10_000_000);
    let seen = proxy.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|l| l.contains("bytes=")),
        "the download never resumed: {seen:?}"
    );
    assert!(ingest_is_empty(&fresh_dir));
    // And with the registry gone for good: a clean failure, no partial blob.
    restarted.stop();
    let (empty, empty_dir) = empty_store();
    let quick = ClientOptions {
        retries: 2,
        retry_base: Duration::from_millis(20),
        ..opts()
    };
    let err = rt
        .block_on(pull(
            &empty,
            &Client::new(quick),
            &format!("{host}/wcb/big:1"),
            &PullOptions::default(),
            &mut Silent,
        ))
        .unwrap_err();
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    assert!(ingest_is_empty(&empty_dir) && blob_names(&empty_dir).is_empty());
}

#[test]
fn tags_and_referrers_fallback() {
    let reg = Registry::start("");
    let (store, _d) = fixture_store();
    let client = Client::new(opts());
    let rt = rt();
    let host = reg.host();
    for t in ["a", "b"] {
        rt.block_on(push(
            &store,
            &client,
            &format!("{NANO}:ltsc2019"),
            Some(&format!("{host}/wcb/t:{t}")),
            &PushOptions::default(),
            &mut Silent,
        ))
        .unwrap();
    }
    let repo = Repo {
        registry: host.clone(),
        name: "wcb/t".into(),
    };
    let mut tags = rt.block_on(client.tags(&repo)).unwrap();
    tags.sort();
    assert_eq!(tags, ["a", "b"]);
    // distribution 2.8 has no referrers API: the tag schema answers (nothing yet).
    let d = store
        .lookup(&format!("{NANO}:ltsc2019"))
        .unwrap()
        .unwrap()
        .digest;
    assert!(
        rt.block_on(client.referrers(&repo, &d, None))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn cli_pull_and_push_print_digests() {
    let reg = Registry::start("");
    let (_store, dir) = fixture_store();
    let host = reg.host();
    // A Docker config of the test's own: the machine's credentials never take part.
    let config = tempdir("cli-docker-config");
    let run = |root: &Path, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_wcbuild"))
            .arg("--root")
            .arg(root)
            .args(&args[..1])
            .arg("--config")
            .arg(&config)
            .args(&args[1..])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(
        &dir,
        &[
            "push",
            &format!("{NANO}:multi"),
            &format!("{host}/wcb/cli:1"),
            "--progress",
            "plain",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("push layer") && err.contains("pushed"),
        "{err}"
    );
    let digest = out.trim().to_string();
    let (fresh_store, fresh) = empty_store();
    drop(fresh_store);
    let (code, out, err) = run(
        &fresh,
        &[
            "pull",
            &format!("{host}/wcb/cli:1"),
            "--platform",
            "windows/amd64:ltsc2025",
            "-q",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.trim().starts_with("sha256:") && out.trim() != digest);
    let (code, _out, err) = run(&fresh, &["pull", &format!("{host}/wcb/cli:1")]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("10.0.20348") && err.contains("--platform"),
        "{err}"
    );
}

#[test]
fn build_pulls_its_base_and_pushes_the_result() {
    let reg = Registry::start("");
    let host = reg.host();
    let (store, _d) = fixture_store();
    push_to(
        &store,
        &format!("{NANO}:multi"),
        &format!("{host}/wcb/nano:multi"),
    );
    // An empty store: the base comes from the registry.
    let (_s, root) = empty_store();
    let ctx = tempdir("ctx");
    std::fs::write(ctx.join("app.txt"), "hello\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {host}/wcb/nano:multi\nCOPY app.txt C:/app/\nCMD [\"cmd\", \"/c\", \"type\", \"C:\\\\app\\\\app.txt\"]\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wcbuild"))
        .arg("--root")
        .arg(&root)
        .args(["build", "--config"])
        .arg(tempdir("build-docker-config"))
        .args([
            "--platform",
            "windows/amd64:ltsc2022",
            "--push",
            "--progress",
            "plain",
            "--metadata-file",
        ])
        .arg(ctx.join("meta.json"))
        .arg("-t")
        .arg(format!("{host}/wcb/app:1"))
        .arg(&ctx)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The base layer was mounted from the repository it was pulled from, not uploaded again.
    assert!(stderr.contains("mounted"), "{stderr}");
    // What was pushed, by BuildKit's metadata key; stdout is the image ID (the config).
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ctx.join("meta.json")).unwrap()).unwrap();
    let digest = meta["containerimage.digest"].as_str().unwrap().to_string();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        meta["containerimage.config.digest"].as_str().unwrap()
    );
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{host}/wcb/app:1"),
    ]);
    assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), digest);
    let cfg = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--config",
        &format!("docker://{host}/wcb/app:1"),
    ]);
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["os.version"], "10.0.20348.2849");
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    // The store kept the base's index, with only the platform the build used.
    let s = Store::open(&root).unwrap();
    let base = s
        .lookup(&format!("{host}/wcb/nano:multi"))
        .unwrap()
        .unwrap();
    assert!(base.media_type.contains("index"), "{}", base.media_type);
    let ltsc2019 = store
        .lookup(&format!("{NANO}:ltsc2019"))
        .unwrap()
        .unwrap()
        .digest;
    assert_eq!(s.blob_size(&ltsc2019).unwrap(), None);
}

/// [`build_cli`], returning the manifest digest (from `--metadata-file`) instead of the image ID.
fn build_manifest(root: &Path, ctx: &Path, args: &[&str]) -> (bool, String, String) {
    let meta = root.with_extension("meta.json");
    let mut all = vec!["--metadata-file", meta.to_str().unwrap()];
    all.extend_from_slice(args);
    let (ok, _, err) = build_cli(root, ctx, &all);
    let digest = std::fs::read(&meta)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["containerimage.digest"].as_str().map(String::from))
        .unwrap_or_default();
    (ok, digest, err)
}

/// `wcbuild build ARGS CTX` with `SOURCE_DATE_EPOCH` set: success, stdout (the image ID), stderr.
fn build_cli(root: &Path, ctx: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wcbuild"))
        .arg("--root")
        .arg(root)
        .arg("build")
        .arg("--config")
        .arg(tempdir("build-docker-config"))
        .args(args)
        .arg(ctx)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn build_cache_through_a_registry_for_empty_runners() {
    let reg = Registry::start("");
    let host = reg.host();
    let (store, _d) = fixture_store();
    push_to(
        &store,
        &format!("{NANO}:ltsc2022"),
        &format!("{host}/wcb/nano:ltsc2022"),
    );
    let ctx = tempdir("cachectx");
    std::fs::write(ctx.join("a.txt"), "first file\n").unwrap();
    std::fs::write(ctx.join("b.txt"), vec![b'b'; 200_000]).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {host}/wcb/nano:ltsc2022 AS tools\nCOPY b.txt C:/tools/\n\nFROM {host}/wcb/nano:ltsc2022\nCOPY a.txt C:/app/\nCOPY --from=tools C:/tools/b.txt C:/app/\nWORKDIR C:/app\n"),
    )
    .unwrap();
    let cache = format!("{host}/wcb/cache:main");
    // Runner 1: empty store, no cache yet (the import finds nothing and says nothing fails).
    let (_s1, root1) = empty_store();
    let to = format!("type=registry,ref={cache},mode=max");
    let (ok, d1, err) = build_cli(
        &root1,
        &ctx,
        &[
            "--progress",
            "plain",
            "--cache-from",
            &format!("type=registry,ref={cache}"),
            "--cache-to",
            &to,
            "-t",
            "app:1",
        ],
    );
    assert!(ok, "{err}");
    assert!(!err.contains("CACHED"), "{err}");
    assert!(err.contains("exported 4 cache records"), "{err}");
    // Runner 2: another empty store: every layer step is a cache hit, the image is the same.
    let (_s2, root2) = empty_store();
    let (ok, d2, err) = build_cli(
        &root2,
        &ctx,
        &["--progress", "plain", "--cache-from", &cache, "-t", "app:1"],
    );
    assert!(ok, "{err}");
    assert_eq!(err.matches("CACHED").count(), 4, "{err}");
    assert_eq!(d1, d2);
    // It downloaded the layers it used from the registry; they verify.
    for b in blob_names(&root2) {
        let bytes = std::fs::read(root2.join("blobs/sha256").join(&b)).unwrap();
        assert_eq!(sha256_hex(&bytes), b);
    }
    // mode=min (the default) keeps only the final image's layers: 3 of the 4 records.
    let (_s3, root3) = empty_store();
    let min = format!("{host}/wcb/cache:min");
    let (ok, _, err) = build_cli(
        &root3,
        &ctx,
        &[
            "--progress",
            "plain",
            "--cache-to",
            &format!("type=registry,ref={min}"),
            "-t",
            "app:1",
        ],
    );
    assert!(ok, "{err}");
    assert!(err.contains("exported 3 cache records"), "{err}");
    // A changed file misses from that step on.
    std::fs::write(ctx.join("a.txt"), "changed\n").unwrap();
    let (_s4, root4) = empty_store();
    let (ok, d4, err) = build_cli(
        &root4,
        &ctx,
        &["--progress", "plain", "--cache-from", &cache, "-t", "app:1"],
    );
    assert!(ok, "{err}");
    assert_eq!(
        err.matches("CACHED").count(),
        1,
        "only the tools stage hits: {err}"
    );
    assert_ne!(d4, d1);
    // Unsupported cache types are usage errors.
    let (ok, _, err) = build_cli(&root4, &ctx, &["--cache-to", "type=local,dest=/tmp/x"]);
    assert!(!ok && err.contains("type=registry"), "{err}");
}

/// Tags an image whose only layer is `layer` with `media` and `urls`.
fn image_with_layer(
    store: &Store,
    name: &str,
    layer: &[u8],
    media: &str,
    urls: &[String],
) -> String {
    let ld = store.put_blob(layer, None).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "windows", "os.version": "10.0.17763.1",
        "rootfs": {"type": "layers", "diff_ids": [ld]}, "config": {}
    })
    .to_string();
    let cd = store.put_blob(config.as_bytes(), None).unwrap();
    let mut l = serde_json::json!({"mediaType": media, "digest": ld, "size": layer.len()});
    if !urls.is_empty() {
        l["urls"] = serde_json::json!(urls);
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [l]
    })
    .to_string();
    let md = store.put_blob(manifest.as_bytes(), None).unwrap();
    let full = wcbuild::ops::images::normalize(name).unwrap();
    store
        .tag(
            &full,
            IndexEntry::new(
                "application/vnd.oci.image.manifest.v1+json",
                &md,
                manifest.len() as u64,
            )
            .with_reference(&full),
        )
        .unwrap();
    md
}

#[test]
fn foreign_layers_are_skipped_on_push_and_fetched_from_their_urls() {
    // The layer's URL is served over TLS (private CA in certs.d) by a second registry.
    let work = tempdir("foreign");
    private_ca(&work);
    let tls = Registry::start(&format!(
        "  tls: {{certificate: {}, key: {}}}",
        work.join("registry.crt").display(),
        work.join("registry.key").display()
    ));
    let certs = work.join("certs.d");
    std::fs::create_dir_all(certs.join(tls.host())).unwrap();
    std::fs::copy(work.join("ca.crt"), certs.join(tls.host()).join("ca.crt")).unwrap();
    let reg = Registry::start("");
    let (store, _d) = empty_store();
    let layer: Vec<u8> = (0..150_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let o = ClientOptions {
        certs_dir: certs.clone(),
        ..opts()
    };
    let rt = rt();
    // The origin holds the blob as an ordinary layer.
    image_with_layer(
        &store,
        "local/origin:1",
        &layer,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &[],
    );
    rt.block_on(push(
        &store,
        &Client::new(o.clone()),
        "local/origin:1",
        Some(&format!("{}/wcb/origin:1", tls.host())),
        &PushOptions::default(),
        &mut Silent,
    ))
    .unwrap();
    let digest = format!("sha256:{}", sha256_hex(&layer));
    let url = format!("https://{}/v2/wcb/origin/blobs/{digest}", tls.host());
    image_with_layer(
        &store,
        "local/foreign:1",
        &layer,
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        std::slice::from_ref(&url),
    );
    // Push: the foreign layer is left out by default.
    let dest = format!("{}/wcb/foreign:1", reg.host());
    let pushed = rt
        .block_on(push(
            &store,
            &Client::new(o.clone()),
            "local/foreign:1",
            Some(&dest),
            &PushOptions::default(),
            &mut Silent,
        ))
        .unwrap();
    assert_eq!(
        pushed.skipped_foreign.as_slice(),
        std::slice::from_ref(&digest)
    );
    assert_eq!(pushed.uploaded, 1, "only the config");
    let repo = Repo {
        registry: reg.host(),
        name: "wcb/foreign".into(),
    };
    assert_eq!(
        rt.block_on(Client::new(o.clone()).blob_size(&repo, &digest))
            .unwrap(),
        None
    );
    // Pull: the registry does not have it, so it comes from its URL, verified.
    let (fresh, fresh_dir) = empty_store();
    rt.block_on(pull(
        &fresh,
        &Client::new(o.clone()),
        &dest,
        &PullOptions::default(),
        &mut Silent,
    ))
    .unwrap();
    assert_eq!(
        std::fs::read(fresh_dir.join("blobs/sha256").join(sha256_hex(&layer))).unwrap(),
        layer
    );
    // Without the CA for the URL's host: refused, nothing stored.
    let (f2, f2_dir) = empty_store();
    let err = rt
        .block_on(pull(
            &f2,
            &Client::new(opts()),
            &dest,
            &PullOptions::default(),
            &mut Silent,
        ))
        .unwrap_err();
    assert!(err.to_string().contains(&tls.host()), "{err}");
    assert!(!blob_names(&f2_dir).contains(&sha256_hex(&layer)) && ingest_is_empty(&f2_dir));
    // A URL over plain http is refused, though the blob is there to fetch.
    let plain_layer: Vec<u8> = (0..90_000u32).map(|i| (i * 13 % 241) as u8).collect();
    image_with_layer(
        &store,
        "local/plain-origin:1",
        &plain_layer,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &[],
    );
    rt.block_on(push(
        &store,
        &Client::new(o.clone()),
        "local/plain-origin:1",
        Some(&format!("{}/wcb/plain-origin:1", reg.host())),
        &PushOptions::default(),
        &mut Silent,
    ))
    .unwrap();
    let plain_digest = format!("sha256:{}", sha256_hex(&plain_layer));
    let plain_url = format!(
        "http://{}/v2/wcb/plain-origin/blobs/{plain_digest}",
        reg.host()
    );
    image_with_layer(
        &store,
        "local/plain-foreign:1",
        &plain_layer,
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        std::slice::from_ref(&plain_url),
    );
    let plain_dest = format!("{}/wcb/plain-foreign:1", reg.host());
    rt.block_on(push(
        &store,
        &Client::new(o.clone()),
        "local/plain-foreign:1",
        Some(&plain_dest),
        &PushOptions::default(),
        &mut Silent,
    ))
    .unwrap();
    let (f3, f3_dir) = empty_store();
    let err = rt
        .block_on(pull(
            &f3,
            &Client::new(o.clone()),
            &plain_dest,
            &PullOptions::default(),
            &mut Silent,
        ))
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "foreign layer {} (none of its urls is https) not found",
            &plain_digest[7..19]
        )),
        "{err}"
    );
    assert!(!blob_names(&f3_dir).contains(&sha256_hex(&plain_layer)) && ingest_is_empty(&f3_dir));
    // --include-foreign uploads it.
    let pushed = rt
        .block_on(push(
            &store,
            &Client::new(o),
            "local/foreign:1",
            Some(&format!("{}/wcb/foreign2:1", reg.host())),
            &PushOptions {
                include_foreign: true,
                ..Default::default()
            },
            &mut Silent,
        ))
        .unwrap();
    // (the config was mounted from wcb/foreign, the layer uploaded)
    assert_eq!(
        (
            pushed.uploaded,
            pushed.mounted,
            pushed.skipped_foreign.len()
        ),
        (1, 1, 0)
    );
}

#[test]
fn credentials_from_a_docker_credential_helper() {
    let work = tempdir("helper");
    std::fs::write(
        work.join("htpasswd"),
        Command::new("htpasswd")
            .args(["-Bbn", "wcb", "s3cret"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let reg = Registry::start(&format!(
        "auth:\n  htpasswd: {{realm: wcbuild-test, path: {}}}",
        work.join("htpasswd").display()
    ));
    // A credential helper on PATH that answers `get` for this registry and logs what it is asked.
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-wcbtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\necho \"$1 $server\" >> {log}\nif [ \"$1\" = get ] && [ \"$server\" = \"{host}\" ]; then\n  echo '{{\"ServerURL\":\"{host}\",\"Username\":\"wcb\",\"Secret\":\"s3cret\"}}'\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
            log = work.join("helper.log").display(),
            host = reg.host()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = work.join("cfg");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("config.json"),
        format!("{{\"credHelpers\":{{\"{}\":\"wcbtest\"}}}}", reg.host()),
    )
    .unwrap();
    let (_s, root) = fixture_store();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_wcbuild"))
        .arg("--root")
        .arg(&root)
        .args([
            "push",
            &format!("{NANO}:ltsc2019"),
            &format!("{}/wcb/h:1", reg.host()),
            "--config",
        ])
        .arg(&cfg)
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(work.join("helper.log")).unwrap();
    assert!(log.contains(&format!("get {}", reg.host())), "{log}");
    // `credsStore` names the same helper for every registry.
    std::fs::remove_file(work.join("helper.log")).unwrap();
    std::fs::write(cfg.join("config.json"), "{\"credsStore\":\"wcbtest\"}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wcbuild"))
        .arg("--root")
        .arg(&root)
        .args([
            "push",
            &format!("{NANO}:ltsc2019"),
            &format!("{}/wcb/h:3", reg.host()),
            "--config",
        ])
        .arg(&cfg)
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "credsStore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(work.join("helper.log")).unwrap();
    assert!(log.contains(&format!("get {}", reg.host())), "{log}");
    // Without the helper's answer the registry refuses.
    std::fs::write(cfg.join("config.json"), "{}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wcbuild"))
        .arg("--root")
        .arg(&root)
        .args([
            "push",
            &format!("{NANO}:ltsc2019"),
            &format!("{}/wcb/h:2", reg.host()),
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wcbuild login"));
}

/// Pushes a 3 MB image through a proxy injecting `fault`, with 1 MiB chunks.
fn push_through(
    fault: Fault,
) -> (
    Result<wcbuild::ops::registry::Pushed, TransferError>,
    Proxy,
    Registry,
) {
    let reg = Registry::start("");
    let (store, _d) = empty_store();
    random_image(&store, "local/up:1", 3_000_000, 5);
    let proxy = start_proxy(reg.port, fault);
    let o = ClientOptions {
        chunk_size: 1 << 20,
        ..opts()
    };
    let res = rt().block_on(push(
        &store,
        &Client::new(o),
        "local/up:1",
        Some(&format!("127.0.0.1:{}/wcb/up:1", proxy.port)),
        &PushOptions::default(),
        &mut Silent,
    ));
    (res, proxy, reg)
}

fn registry_has(reg: &Registry, repo: &str, tag: &str) -> bool {
    rt().block_on(Client::new(opts()).head_manifest(
        &Repo {
            registry: reg.host(),
            name: repo.into(),
        },
        tag,
    ))
    .unwrap()
    .is_some()
}

#[test]
fn refused_monolithic_uploads_go_chunked() {
    let (res, proxy, reg) = push_through(Fault::RefuseMonolithic);
    res.unwrap();
    let seen = proxy.seen.lock().unwrap().clone();
    let patches = seen.iter().filter(|l| l.starts_with("PATCH")).count();
    assert_eq!(
        patches, 4,
        "the layer in three 1 MiB chunks, the config in one: {seen:?}"
    );
    assert!(registry_has(&reg, "wcb/up", "1"));
}

#[test]
fn a_broken_upload_resumes_from_its_status() {
    let (res, proxy, reg) = push_through(Fault::CutUpload);
    let pushed = res.unwrap();
    assert_eq!(pushed.uploaded, 2);
    let seen = proxy.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|l| l.starts_with("GET") && l.contains("/blobs/uploads/")),
        "no status request: {seen:?}"
    );
    assert!(registry_has(&reg, "wcb/up", "1"));
    // The registry holds exactly the bytes of the store.
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}/wcb/up:1", reg.host()),
    ]);
    let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let repo = Repo {
        registry: reg.host(),
        name: "wcb/up".into(),
    };
    assert_eq!(
        rt().block_on(Client::new(opts()).blob_size(&repo, &layer))
            .unwrap(),
        Some(3_000_000)
    );
}

#[test]
fn independent_stages_pull_their_bases_concurrently() {
    let reg = Registry::start("");
    let (store, _d) = empty_store();
    for (n, seed) in [("one", 21u64), ("two", 22u64)] {
        // Incompressible, so that the pushed (gzip) layers stay over 1 MB.
        let mut x = seed;
        let data: Vec<u8> = (0..8_000_000u32)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let layer = tar_of(&format!("{n}.bin"), &data);
        image_with_layer(
            &store,
            &format!("local/{n}:1"),
            &layer,
            "application/vnd.oci.image.layer.v1.tar",
            &[],
        );
    }
    for n in ["one", "two"] {
        push_to(
            &store,
            &format!("local/{n}:1"),
            &format!("{}/wcb/{n}:1", reg.host()),
        );
    }
    let proxy = start_proxy(reg.port, Fault::Slow);
    let via = format!("127.0.0.1:{}", proxy.port);
    let ctx = tempdir("stages");
    std::fs::write(ctx.join("x.txt"), "x").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {via}/wcb/one:1 AS one\nCOPY x.txt /one/\n\nFROM {via}/wcb/two:1\nCOPY --from=one /one/x.txt /\n"),
    )
    .unwrap();
    let (_s, root) = empty_store();
    let (ok, _, err) = build_cli(&root, &ctx, &["--progress", "plain"]);
    assert!(ok, "{err}");
    assert_eq!(
        proxy.max_active.load(Ordering::SeqCst),
        2,
        "the two bases were not fetched at the same time"
    );
}

#[test]
fn add_downloads_https_urls_verified() {
    // A TLS registry serves a blob; ADD fetches it by URL over https, trusting the private CA
    // from --certs-dir, and checks --checksum.
    let work = tempdir("addhttps");
    private_ca(&work);
    let tls = Registry::start(&format!(
        "  tls: {{certificate: {}, key: {}}}",
        work.join("registry.crt").display(),
        work.join("registry.key").display()
    ));
    let certs = work.join("certs.d");
    std::fs::create_dir_all(certs.join(tls.host())).unwrap();
    std::fs::copy(work.join("ca.crt"), certs.join(tls.host()).join("ca.crt")).unwrap();
    let (store, _d) = empty_store();
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    image_with_layer(
        &store,
        "local/file:1",
        &payload,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &[],
    );
    let o = ClientOptions {
        certs_dir: certs.clone(),
        ..opts()
    };
    rt().block_on(push(
        &store,
        &Client::new(o),
        "local/file:1",
        Some(&format!("{}/wcb/file:1", tls.host())),
        &PushOptions::default(),
        &mut Silent,
    ))
    .unwrap();
    let sum = format!("sha256:{}", sha256_hex(&payload));
    let url = format!("https://{}/v2/wcb/file/blobs/{sum}", tls.host());
    let ctx = tempdir("addctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nADD --checksum={sum} {url} /opt/tool.bin\n"),
    )
    .unwrap();
    let (_s, root) = empty_store();
    let certs_arg = certs.to_str().unwrap();
    let (ok, digest, err) = build_manifest(
        &root,
        &ctx,
        &[
            "--progress",
            "plain",
            "--certs-dir",
            certs_arg,
            "-t",
            "add:1",
        ],
    );
    assert!(ok, "{err}");
    // The layer holds the file, byte for byte.
    let s = Store::open(&root).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&s.read_blob(&digest).unwrap()).unwrap();
    let layer = s.read_blob(m["layers"][0]["digest"].as_str().unwrap());
    let raw = match layer {
        Ok(b) => b,
        Err(_) => std::fs::read(
            root.join("blobs/sha256").join(
                m["layers"][0]["digest"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:"),
            ),
        )
        .unwrap(),
    };
    // A local build keeps its layers uncompressed (the store's default).
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    let tar = raw;
    assert!(tar.windows(payload.len()).any(|w| w == payload.as_slice()));
    // Without the CA: a clear TLS error naming the URL.
    let (ok, _, err) = build_cli(&root, &ctx, &["--progress", "plain", "--no-cache"]);
    assert!(!ok);
    assert!(
        err.contains("ADD https://") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[test]
fn dedup_reads_images_in_a_registry_without_storing_layers() {
    use wcbuild::ops::dedup::{DedupOptions, Source, dedup};
    let reg = Registry::start("");
    let (store, _d) = fixture_store();
    let dest = format!("{}/wcb/nano:multi", reg.host());
    push_to(&store, &format!("{NANO}:multi"), &dest);
    let no_cache = DedupOptions {
        cache: false,
        ..DedupOptions::default()
    };
    let local = dedup(
        &store,
        &[Source::Store(vec![format!("{NANO}:multi")])],
        &no_cache,
    )
    .unwrap()
    .report;
    let (empty, empty_dir) = empty_store();
    let remote = dedup(&empty, &[Source::Registry(dest.clone())], &no_cache)
        .unwrap()
        .report;
    assert_eq!(remote.summary, local.summary);
    assert_eq!(
        remote.images.len(),
        3,
        "the index expands to its three Windows versions"
    );
    assert!(
        blob_names(&empty_dir).is_empty(),
        "a registry report stores no blob"
    );
    // A corrupted layer on the way is refused.
    let proxy = start_proxy(reg.port, Fault::CorruptBlob);
    let via = format!("127.0.0.1:{}/wcb/nano:multi", proxy.port);
    let err = dedup(&empty, &[Source::Registry(via)], &no_cache).unwrap_err();
    assert!(err.to_string().contains("sha256"), "{err}");
}

#[test]
fn uncompressed_layers_leave_compressed_once() {
    let reg = Registry::start("");
    let (_s, root) = empty_store();
    let ctx = tempdir("uncomp");
    std::fs::write(ctx.join("big.txt"), "all work and no play\n".repeat(50_000)).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY big.txt /\n").unwrap();
    let dest = format!("{}/wcb/plain:1", reg.host());
    let (ok, pushed, err) = build_manifest(
        &root,
        &ctx,
        &[
            "--compression",
            "uncompressed",
            "-t",
            &dest,
            "--push",
            "--progress",
            "plain",
        ],
    );
    assert!(ok, "{err}");
    // The store keeps the uncompressed layer under the tag.
    let local = {
        let s = Store::open(&root).unwrap();
        wcbuild::ops::images::resolve(&s, &dest).unwrap().digest
    };
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{dest}"),
    ]);
    let remote = format!("sha256:{}", sha256_hex(raw.as_bytes()));
    assert_ne!(
        remote, local,
        "the registry gets a manifest naming gzip layers"
    );
    assert_eq!(pushed, remote, "--metadata-file names what was pushed");
    let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert!(
        m["layers"][0]["size"].as_u64().unwrap() < 100_000,
        "it was compressed"
    );
    // The config (and its diff_ids) is the same; a second push compresses nothing again.
    let s = Store::open(&root).unwrap();
    let lm: serde_json::Value = serde_json::from_slice(&s.read_blob(&local).unwrap()).unwrap();
    assert_eq!(m["config"]["digest"], lm["config"]["digest"]);
    // The compressed-form record is the only way through: with the uncompressed layer moved
    // away, a push that compressed it again could not even start.
    let plain = s
        .blob_path(lm["layers"][0]["digest"].as_str().unwrap())
        .unwrap();
    let aside = root.join("aside");
    std::fs::rename(&plain, &aside).unwrap();
    let again = rt()
        .block_on(push(
            &s,
            &Client::new(opts()),
            &dest,
            None,
            &PushOptions::default(),
            &mut Silent,
        ))
        .unwrap();
    assert_eq!((again.digest.clone(), again.uploaded), (remote, 0));
    std::fs::rename(&aside, &plain).unwrap();
    // And a pull of it verifies.
    let (fresh, _fd) = empty_store();
    let p = rt()
        .block_on(pull(
            &fresh,
            &Client::new(opts()),
            &dest,
            &PullOptions::default(),
            &mut Silent,
        ))
        .unwrap();
    assert_eq!(p.digest, again.digest);
}

#[test]
fn copy_from_an_image_in_a_registry() {
    let reg = Registry::start("");
    let (store, _d) = empty_store();
    let layer = tar_of("hello.txt", b"hello from a registry\n");
    let ld = store.put_blob(&layer, None).unwrap();
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [ld]}, "config": {}}).to_string();
    let cd = store.put_blob(config.as_bytes(), None).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}]
    })
    .to_string();
    let md = store.put_blob(manifest.as_bytes(), None).unwrap();
    store
        .tag(
            "docker.io/local/files:1",
            IndexEntry::new(
                "application/vnd.oci.image.manifest.v1+json",
                &md,
                manifest.len() as u64,
            )
            .with_reference("docker.io/local/files:1"),
        )
        .unwrap();
    let src = format!("{}/wcb/files:1", reg.host());
    push_to(&store, "local/files:1", &src);
    let ctx = tempdir("copyfrom");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nCOPY --from={src} /hello.txt /copied.txt\n"),
    )
    .unwrap();
    let (_s, root) = empty_store();
    let (ok, digest, err) = build_manifest(&root, &ctx, &["--progress", "plain"]);
    assert!(ok, "{err}");
    let s = Store::open(&root).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&s.read_blob(&digest).unwrap()).unwrap();
    let raw = s
        .read_blob(m["layers"][0]["digest"].as_str().unwrap())
        .unwrap_or_else(|_| {
            std::fs::read(
                root.join("blobs/sha256").join(
                    m["layers"][0]["digest"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("sha256:"),
                ),
            )
            .unwrap()
        });
    // The local build's layer is kept uncompressed.
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains("copied.txt") && text.contains("hello from a registry"),
        "{text}"
    );
}

/// A pull skips the blobs the store has: the second pull of an image (its tag removed, its
/// blobs kept) asks the registry for no blob.
#[test]
fn pull_skips_blobs_already_present() {
    let (res, dir, proxy, md, _reg) = pull_through(Fault::None);
    assert_eq!(res.unwrap().digest, md);
    let blob_gets = |seen: &[String]| {
        seen.iter()
            .filter(|l| l.starts_with("GET ") && l.contains("/blobs/sha256:"))
            .count()
    };
    let first = blob_gets(&proxy.seen.lock().unwrap());
    assert_eq!(first, 2, "a layer and a config");
    let store = Store::open(&dir).unwrap();
    let name = format!("127.0.0.1:{}/wcb/r:1", proxy.port);
    assert!(store.untag(&name).unwrap());
    let again = rt()
        .block_on(pull(
            &store,
            &Client::new(opts()),
            &name,
            &PullOptions::default(),
            &mut Silent,
        ))
        .unwrap();
    assert_eq!(again.digest, md);
    let seen = proxy.seen.lock().unwrap().clone();
    assert_eq!(blob_gets(&seen), first, "blobs fetched again: {seen:?}");
}

/// An index is pushed entries first: every platform manifest is in the registry (by digest)
/// before the tag is written, so no one pulling the tag finds a missing entry.
#[test]
fn index_entries_are_pushed_before_the_tagged_manifest() {
    let reg = Registry::start("");
    let (store, _d) = fixture_store();
    let proxy = start_proxy(reg.port, Fault::None);
    let dest = format!("127.0.0.1:{}/wcb/order:multi", proxy.port);
    let pushed = rt()
        .block_on(push(
            &store,
            &Client::new(opts()),
            &format!("{NANO}:multi"),
            Some(&dest),
            &PushOptions::default(),
            &mut Silent,
        ))
        .unwrap();
    let seen = proxy.seen.lock().unwrap().clone();
    let puts: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("PUT ") && l.contains("/manifests/"))
        .collect();
    assert_eq!(puts.len(), 4, "three entries and the index: {puts:?}");
    for p in &puts[..3] {
        assert!(p.contains("/manifests/sha256:"), "{puts:?}");
    }
    assert!(
        puts[3].contains("/manifests/multi"),
        "the tag last: {puts:?}"
    );
    assert_eq!(
        pushed.digest,
        store
            .lookup(&format!("{NANO}:multi"))
            .unwrap()
            .unwrap()
            .digest
    );
}

/// A registry that asks for a client certificate: with `client.cert` and `client.key` in the
/// host's certs.d directory a push and a pull go through; without them the TLS handshake is
/// refused, naming the registry.
#[test]
fn client_certificates_from_certs_d() {
    let work = tempdir("client-cert");
    private_ca(&work);
    // A client certificate the same CA signed.
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=wcbuild client",
        ],
        &work,
    );
    std::fs::write(
        work.join("client.cnf"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "client.crt",
            "-extfile",
            "client.cnf",
        ],
        &work,
    );
    let reg = Registry::start(&format!(
        "  tls:\n    certificate: {}\n    key: {}\n    clientcas: [{}]",
        work.join("registry.crt").display(),
        work.join("registry.key").display(),
        work.join("ca.crt").display()
    ));
    let host = reg.host();
    let with_cert = work.join("certs.d");
    std::fs::create_dir_all(with_cert.join(&host)).unwrap();
    std::fs::copy(work.join("ca.crt"), with_cert.join(&host).join("ca.crt")).unwrap();
    let without = work.join("certs-no-client");
    std::fs::create_dir_all(without.join(&host)).unwrap();
    std::fs::copy(work.join("ca.crt"), without.join(&host).join("ca.crt")).unwrap();
    std::fs::copy(
        work.join("client.crt"),
        with_cert.join(&host).join("client.cert"),
    )
    .unwrap();
    std::fs::copy(
        work.join("client.key"),
        with_cert.join(&host).join("client.key"),
    )
    .unwrap();
    let (store, _d) = empty_store();
    random_image(&store, "local/cc:1", 50_000, 77);
    let verified = |certs: &Path| ClientOptions {
        certs_dir: certs.to_path_buf(),
        loopback_insecure: false,
        ..opts()
    };
    let rt = rt();
    let dest = format!("{host}/wcb/cc:1");
    let err = rt
        .block_on(push(
            &store,
            &Client::new(verified(&without)),
            "local/cc:1",
            Some(&dest),
            &PushOptions::default(),
            &mut Silent,
        ))
        .unwrap_err();
    assert!(err.to_string().contains(&host), "{err}");
    let pushed = rt
        .block_on(push(
            &store,
            &Client::new(verified(&with_cert)),
            "local/cc:1",
            Some(&dest),
            &PushOptions::default(),
            &mut Silent,
        ))
        .unwrap();
    assert_eq!(pushed.uploaded, 2);
    let (fresh, _fd) = empty_store();
    let pulled = rt
        .block_on(pull(
            &fresh,
            &Client::new(verified(&with_cert)),
            &dest,
            &PullOptions::default(),
            &mut Silent,
        ))
        .unwrap();
    assert_eq!(pulled.digest, pushed.digest);
}

/// A foreign layer's URL gets no credentials, even for a host wcbuild has credentials for:
/// the URL's server (a registry that wants a password) refuses the fetch, while the same
/// credentials open it to an ordinary pull.
#[test]
fn foreign_layer_urls_get_no_credentials() {
    let work = tempdir("foreign-creds");
    private_ca(&work);
    let hp = Command::new("htpasswd")
        .args(["-Bbn", "wcb", "s3cret"])
        .output()
        .expect("htpasswd (apache2-utils)");
    std::fs::write(work.join("htpasswd"), &hp.stdout).unwrap();
    let origin = Registry::start(&format!(
        "  tls: {{certificate: {}, key: {}}}\nauth:\n  htpasswd: {{realm: wcbuild-test, path: {}}}",
        work.join("registry.crt").display(),
        work.join("registry.key").display(),
        work.join("htpasswd").display()
    ));
    let certs = work.join("certs.d");
    std::fs::create_dir_all(certs.join(origin.host())).unwrap();
    std::fs::copy(
        work.join("ca.crt"),
        certs.join(origin.host()).join("ca.crt"),
    )
    .unwrap();
    let creds = ClientOptions {
        certs_dir: certs.clone(),
        credentials: Some((
            origin.host(),
            Credentials {
                username: "wcb".into(),
                secret: "s3cret".into(),
            },
        )),
        ..opts()
    };
    let (store, _d) = empty_store();
    let layer: Vec<u8> = (0..70_000u32).map(|i| (i * 31 % 253) as u8).collect();
    image_with_layer(
        &store,
        "local/guarded:1",
        &layer,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &[],
    );
    let rt = rt();
    rt.block_on(push(
        &store,
        &Client::new(creds.clone()),
        "local/guarded:1",
        Some(&format!("{}/wcb/guarded:1", origin.host())),
        &PushOptions::default(),
        &mut Silent,
    ))
    .unwrap();
    let digest = format!("sha256:{}", sha256_hex(&layer));
    let url = format!("https://{}/v2/wcb/guarded/blobs/{digest}", origin.host());
    image_with_layer(
        &store,
        "local/foreign-guarded:1",
        &layer,
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        std::slice::from_ref(&url),
    );
    let reg = Registry::start("");
    let dest = format!("{}/wcb/foreign-guarded:1", reg.host());
    rt.block_on(push(
        &store,
        &Client::new(creds.clone()),
        "local/foreign-guarded:1",
        Some(&dest),
        &PushOptions::default(),
        &mut Silent,
    ))
    .unwrap();
    // The ordinary pull with those credentials works...
    let (a, _ad) = empty_store();
    rt.block_on(pull(
        &a,
        &Client::new(creds.clone()),
        &format!("{}/wcb/guarded:1", origin.host()),
        &PullOptions::default(),
        &mut Silent,
    ))
    .unwrap();
    // ...but the layer's URL, on the same host, is fetched without them: refused.
    let (b, bd) = empty_store();
    let err = rt
        .block_on(pull(
            &b,
            &Client::new(creds),
            &dest,
            &PullOptions::default(),
            &mut Silent,
        ))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&origin.host()) && text.contains("authentication required"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    assert!(!blob_names(&bd).contains(&sha256_hex(&layer)) && ingest_is_empty(&bd));
}
