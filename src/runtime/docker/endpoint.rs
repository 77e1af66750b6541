//! Where the engine is and how to reach it: `DOCKER_HOST` (or `--docker-host`) as a unix
//! socket, a Windows named pipe or TCP, with TLS from `DOCKER_TLS_VERIFY` and
//! `DOCKER_CERT_PATH` (`ca.pem`, `cert.pem`, `key.pem`: the engine is verified against
//! `ca.pem` and we present `cert.pem`), as the Docker CLI reads them.

use super::http::Conn;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Docker's default socket on Linux.
pub const DEFAULT_UNIX: &str = "unix:///var/run/docker.sock";
/// Docker's default named pipe on Windows.
pub const DEFAULT_NPIPE: &str = "npipe:////./pipe/docker_engine";

/// What the environment (or the flags) say about the engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointOptions {
    /// `DOCKER_HOST` / `--docker-host` (`None`: the platform's default).
    pub host: Option<String>,
    /// `DOCKER_TLS_VERIFY` is set (non-empty).
    pub tls_verify: bool,
    /// `DOCKER_CERT_PATH` (default `~/.docker` when TLS is asked).
    pub cert_path: Option<PathBuf>,
}

impl EndpointOptions {
    /// From the environment, `host` (the flag) winning over `DOCKER_HOST`.
    pub fn from_env(host: Option<&str>) -> EndpointOptions {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        EndpointOptions {
            host: host.map(String::from).or_else(|| var("DOCKER_HOST")),
            tls_verify: var("DOCKER_TLS_VERIFY").is_some(),
            cert_path: var("DOCKER_CERT_PATH").map(PathBuf::from),
        }
    }
}

/// An address of an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A unix socket.
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String, u16),
    /// A Windows named pipe (`\\.\pipe\docker_engine`).
    Npipe(String),
}

/// A reachable engine.
#[derive(Clone)]
pub struct Endpoint {
    /// Where.
    pub address: Address,
    /// How it was written (for messages).
    pub display: String,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Parses `unix:///path`, `npipe:////./pipe/name`, `tcp://host[:port]` (also `http://`,
/// `https://`, a bare `host:port`). `tls` picks TCP's default port (2376, else 2375).
pub fn parse_address(s: &str, tls: bool) -> Result<Address, String> {
    let s = s.trim();
    if let Some(p) = s.strip_prefix("unix://") {
        if p.is_empty() || !p.starts_with('/') {
            return Err(format!(
                "docker host `{s}`: a unix socket needs an absolute path"
            ));
        }
        return Ok(Address::Unix(PathBuf::from(p)));
    }
    if let Some(p) = s.strip_prefix("npipe://") {
        // npipe:////./pipe/docker_engine → \\.\pipe\docker_engine
        let p = p.replace('/', "\\");
        if !p.starts_with("\\\\") || !p.to_ascii_lowercase().contains("\\pipe\\") {
            return Err(format!(
                "docker host `{s}`: a named pipe is npipe:////./pipe/NAME"
            ));
        }
        return Ok(Address::Npipe(p));
    }
    let rest = ["tcp://", "http://", "https://"]
        .iter()
        .find_map(|p| s.strip_prefix(p))
        .unwrap_or(s);
    if rest.contains("://") {
        return Err(format!(
            "docker host `{s}`: expected unix://, npipe:// or tcp://"
        ));
    }
    let rest = rest.trim_end_matches('/');
    let default_port = if tls { 2376 } else { 2375 };
    let port_of = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("docker host `{s}`: port `{p}` is not a number"))
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        // [::1]:2376
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("docker host `{s}`: an unclosed `[`"))?;
        match after.strip_prefix(':') {
            Some(p) => (h, port_of(p)?),
            None if after.is_empty() => (h, default_port),
            None => return Err(format!("docker host `{s}`: `{after}` after the address")),
        }
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, port_of(p)?),
            None => (rest, default_port),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(format!("docker host `{s}`: no host name"));
    }
    Ok(Address::Tcp(host.to_string(), port))
}

fn pem_error(path: &Path, what: &str, e: impl std::fmt::Display) -> String {
    format!("`{}`: {what}: {e}", path.display())
}

/// A TLS client config: the engine verified against `ca.pem`, `cert.pem` and `key.pem`
/// presented.
fn tls_config(dir: &Path) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca = dir.join("ca.pem");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    for p in [&ca, &cert, &key] {
        if !p.is_file() {
            return Err(format!(
                "`{}`: missing (TLS to a docker engine needs ca.pem, cert.pem and key.pem in DOCKER_CERT_PATH)",
                p.display()
            ));
        }
    }
    let mut roots = rustls::RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&ca)
        .map_err(|e| pem_error(&ca, "not PEM", e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(&ca, "not PEM", e))?;
    if cas.is_empty() {
        return Err(format!("`{}`: no certificate in it", ca.display()));
    }
    for c in cas {
        roots
            .add(c)
            .map_err(|e| pem_error(&ca, "not a CA certificate", e))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .map_err(|e| pem_error(&cert, "not PEM", e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(&cert, "not PEM", e))?;
    if chain.is_empty() {
        return Err(format!("`{}`: no certificate in it", cert.display()));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(&key).map_err(|e| pem_error(&key, "no private key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| pem_error(&key, "does not fit cert.pem", e))
}

impl Endpoint {
    /// Resolves the options: the address, and TLS when `DOCKER_TLS_VERIFY` or
    /// `DOCKER_CERT_PATH` is set (TCP only; the engine is always verified, never trusted
    /// blindly).
    pub fn new(opts: &EndpointOptions) -> Result<Endpoint, String> {
        let default = if cfg!(windows) {
            DEFAULT_NPIPE
        } else {
            DEFAULT_UNIX
        };
        let display = opts.host.clone().unwrap_or_else(|| default.to_string());
        let want_tls =
            opts.tls_verify || opts.cert_path.is_some() || display.starts_with("https://");
        let address = parse_address(&display, want_tls)?;
        let tls = match (&address, want_tls) {
            (Address::Tcp(host, _), true) => {
                let dir = opts.cert_path.clone().unwrap_or_else(|| {
                    std::env::var_os("HOME")
                        .or_else(|| std::env::var_os("USERPROFILE"))
                        .map(PathBuf::from)
                        .unwrap_or_default()
                        .join(".docker")
                });
                let config = tls_config(&dir)?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("docker host `{display}`: {e}"))?;
                Some((Arc::new(config), name))
            }
            _ => None,
        };
        Ok(Endpoint {
            address,
            display,
            tls,
        })
    }

    /// True when the engine runs on this machine (a socket or a pipe): host paths can be
    /// bind-mounted into its containers.
    pub fn is_local(&self) -> bool {
        !matches!(self.address, Address::Tcp(..))
    }

    /// The Host header to send.
    pub fn host_header(&self) -> String {
        match &self.address {
            Address::Tcp(h, p) => format!("{h}:{p}"),
            _ => "docker".into(),
        }
    }

    /// Opens a connection.
    pub fn connect(&self) -> io::Result<Box<dyn Conn>> {
        match &self.address {
            #[cfg(unix)]
            Address::Unix(p) => {
                let s = std::os::unix::net::UnixStream::connect(p)?;
                Ok(Box::new(s))
            }
            #[cfg(not(unix))]
            Address::Unix(p) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("`{}`: unix sockets are not supported here", p.display()),
            )),
            Address::Npipe(p) => open_pipe(p),
            Address::Tcp(h, port) => {
                let s = std::net::TcpStream::connect((h.as_str(), *port))?;
                let _ = s.set_nodelay(true);
                match &self.tls {
                    None => Ok(Box::new(s)),
                    Some((config, name)) => {
                        let c = rustls::ClientConnection::new(config.clone(), name.clone())
                            .map_err(io::Error::other)?;
                        Ok(Box::new(rustls::StreamOwned::new(c, s)))
                    }
                }
            }
        }
    }
}

/// Opens a named pipe (the engine's; busy pipes are retried for a few seconds).
#[cfg(windows)]
fn open_pipe(p: &str) -> io::Result<Box<dyn Conn>> {
    // ERROR_PIPE_BUSY: every instance is in use; the engine makes another soon.
    const ERROR_PIPE_BUSY: i32 = 231;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match std::fs::OpenOptions::new().read(true).write(true).open(p) {
            Ok(f) => return Ok(Box::new(f)),
            Err(e)
                if e.raw_os_error() == Some(ERROR_PIPE_BUSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(not(windows))]
fn open_pipe(p: &str) -> io::Result<Box<dyn Conn>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("`{p}`: named pipes exist on Windows only"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_the_docker_cli_writes_them() {
        assert_eq!(
            parse_address("unix:///var/run/docker.sock", false).unwrap(),
            Address::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            parse_address("npipe:////./pipe/docker_engine", false).unwrap(),
            Address::Npipe(r"\\.\pipe\docker_engine".into())
        );
        assert_eq!(
            parse_address("tcp://10.0.0.5:2376", true).unwrap(),
            Address::Tcp("10.0.0.5".into(), 2376)
        );
        assert_eq!(
            parse_address("tcp://build-host", true).unwrap(),
            Address::Tcp("build-host".into(), 2376)
        );
        assert_eq!(
            parse_address("tcp://build-host", false).unwrap(),
            Address::Tcp("build-host".into(), 2375)
        );
        assert_eq!(
            parse_address("tcp://[::1]:1234", false).unwrap(),
            Address::Tcp("::1".into(), 1234)
        );
        for bad in [
            "unix://relative",
            "ssh://user@host",
            "tcp://host:port",
            "tcp://:2375",
            "npipe://docker",
        ] {
            assert!(parse_address(bad, false).is_err(), "{bad}");
        }
    }

    /// A pipe nobody serves: the error names it (on Windows, through the real pipe API; the
    /// Windows build's tests run under Wine).
    #[test]
    fn a_missing_named_pipe_is_named() {
        let name = format!("npipe:////./pipe/wcbuild-test-none-{}", std::process::id());
        let e = Endpoint::new(&EndpointOptions {
            host: Some(name.clone()),
            ..Default::default()
        })
        .unwrap();
        assert!(e.is_local());
        assert_eq!(
            e.address,
            Address::Npipe(format!(
                r"\\.\pipe\wcbuild-test-none-{}",
                std::process::id()
            ))
        );
        let err = e.connect().err().expect("no pipe server").to_string();
        if cfg!(windows) {
            assert!(!err.is_empty());
        } else {
            assert!(err.contains("named pipes exist on Windows only"), "{err}");
        }
    }

    #[test]
    fn tls_needs_all_three_files() {
        let dir = std::env::temp_dir().join(format!("wcbuild-docker-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), "not pem").unwrap();
        let opts = EndpointOptions {
            host: Some("tcp://127.0.0.1:1".into()),
            tls_verify: true,
            cert_path: Some(dir.clone()),
        };
        let e = Endpoint::new(&opts).unwrap_err();
        assert!(e.contains("cert.pem") && e.contains("missing"), "{e}");
        std::fs::write(dir.join("cert.pem"), "x").unwrap();
        std::fs::write(dir.join("key.pem"), "x").unwrap();
        let e = Endpoint::new(&opts).unwrap_err();
        assert!(e.contains("ca.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
        // No TLS asked: a plain TCP endpoint, not local.
        let plain = Endpoint::new(&EndpointOptions {
            host: Some("tcp://127.0.0.1:2375".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(!plain.is_local());
        assert_eq!(plain.host_header(), "127.0.0.1:2375");
    }
}
