//! The HTTP side: hosts (scheme, TLS, challenge), auth, retries and the distribution endpoints.

use super::RegistryError;
use super::auth::{self, Challenge, Credentials, pct};
use crate::image::Descriptor;
use crate::image::reference::{Reference, short_digest as short};
use futures_util::StreamExt as _;
use reqwest::header::{self, HeaderMap};
use reqwest::{RequestBuilder, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The largest manifest or index we accept (as containerd and distribution do).
pub const MANIFEST_LIMIT: u64 = 4 * 1024 * 1024;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The `Accept` header for manifests: every image manifest and index type we read.
pub fn accept_header() -> String {
    [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(", ")
}

/// A repository in a registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repo {
    /// The registry as users name it (`docker.io`, `localhost:5000`).
    pub registry: String,
    /// The repository path (`library/app`).
    pub name: String,
}

impl Repo {
    /// The repository a reference names.
    pub fn of(reference: &Reference) -> Repo {
        Repo {
            registry: reference.domain.clone(),
            name: reference.path.clone(),
        }
    }

    fn pull_scope(&self) -> String {
        format!("repository:{}:pull", self.name)
    }

    fn push_scope(&self) -> String {
        format!("repository:{}:pull,push", self.name)
    }
}

impl std::fmt::Display for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.name)
    }
}

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries (`host` or `host:port`) that may be reached over plain HTTP or with an
    /// unverified certificate. Loopback registries always may, as Docker allows.
    pub insecure: Vec<String>,
    /// Treat loopback registries as insecure, as Docker does (default true).
    pub loopback_insecure: bool,
    /// Docker's `certs.d` layout: `<dir>/<host[:port]>/*.crt` are extra CAs, `client.cert` +
    /// `client.key` a client certificate.
    pub certs_dir: PathBuf,
    /// The directory of Docker's `config.json` (credentials).
    pub config_dir: PathBuf,
    /// Credentials to use for one registry instead of `config.json` (`login` checks them).
    pub credentials: Option<(String, Credentials)>,
    /// How many times a failed request is tried again (429, 5xx, dropped connections).
    pub retries: u32,
    /// The first retry delay; it doubles each time (capped at 10 s), unless `Retry-After` says.
    pub retry_base: Duration,
    /// Chunk size of chunked uploads (raised to the registry's `OCI-Chunk-Min-Length`).
    pub chunk_size: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure: Vec::new(),
            loopback_insecure: true,
            certs_dir: if cfg!(windows) {
                PathBuf::from(r"C:\ProgramData\docker\certs.d")
            } else {
                PathBuf::from("/etc/docker/certs.d")
            },
            config_dir: auth::default_config_dir(),
            credentials: None,
            retries: 5,
            retry_base: Duration::from_millis(200),
            chunk_size: 8 * 1024 * 1024,
        }
    }
}

/// Where downloaded bytes go.
pub trait BlobSink {
    /// Appends bytes.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Forgets everything written (the server restarted the transfer from byte 0).
    fn restart(&mut self) -> io::Result<()>;
    /// The `sha256:` digest of what was written so far, when the sink hashes as it writes;
    /// the client then checks that instead of hashing the bytes itself. Default: `None`.
    fn digest(&self) -> Option<String> {
        None
    }
}

/// A manifest or index as fetched.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The exact bytes.
    pub bytes: Vec<u8>,
    /// Its media type (from the document, else the `Content-Type` header).
    pub media_type: String,
    /// `sha256:` of the bytes.
    pub digest: String,
}

/// What a blob push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The repository had it already.
    Existed,
    /// Mounted from another repository of the registry, without uploading.
    Mounted {
        /// The repository it came from.
        from: String,
    },
    /// Uploaded.
    Uploaded,
}

struct Host {
    name: String,
    base: String,
    http: reqwest::Client,
    challenge: Option<Challenge>,
    creds: Option<Credentials>,
}

struct Token {
    value: String,
    expires: Instant,
}

struct Inner {
    opts: ClientOptions,
    hosts: tokio::sync::Mutex<HashMap<String, Arc<Host>>>,
    tokens: std::sync::Mutex<HashMap<String, Token>>,
}

/// A registry client; cheap to clone, shared by concurrent transfers.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

fn user_agent() -> String {
    format!("wcbuild/{}", env!("CARGO_PKG_VERSION"))
}

fn is_loopback(host: &str) -> bool {
    let h = host
        .rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// `docker.io` is served by `registry-1.docker.io`.
fn api_host(registry: &str) -> &str {
    if registry == "docker.io" || registry == "index.docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    }
}

fn header_str(resp: &Response, name: impl header::AsHeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

/// True when retrying will not help: a name that does not resolve, a certificate refused.
fn is_dns(e: &reqwest::Error) -> bool {
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        let text = s.to_string();
        if text.contains("dns error") || text.contains("certificate") {
            return true;
        }
        src = s.source();
    }
    false
}

fn sha256_of(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    format!("sha256:{:x}", h.finalize())
}

impl Client {
    /// A client with these settings.
    pub fn new(opts: ClientOptions) -> Client {
        // reqwest uses rustls without a built-in provider; ring is ours.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client {
            inner: Arc::new(Inner {
                opts,
                hosts: tokio::sync::Mutex::new(HashMap::new()),
                tokens: std::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The settings.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    fn insecure(&self, host: &str) -> bool {
        (self.inner.opts.loopback_insecure && is_loopback(host))
            || self.inner.opts.insecure.iter().any(|h| h == host)
    }

    fn http_client(
        &self,
        host: &str,
        verify: bool,
        https_only: bool,
    ) -> Result<reqwest::Client, RegistryError> {
        let tls = |message: String| RegistryError::Tls {
            registry: host.to_string(),
            message,
        };
        let mut b = reqwest::Client::builder()
            .user_agent(user_agent())
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(8)
            .https_only(https_only);
        let dir = self
            .inner
            .opts
            .certs_dir
            .join(host.replace(':', if cfg!(windows) { "" } else { ":" }));
        let dir = if dir.is_dir() {
            dir
        } else {
            self.inner.opts.certs_dir.join(host)
        };
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            names.sort();
            for p in &names {
                if p.extension().is_some_and(|e| e == "crt") {
                    let pem = std::fs::read(p)
                        .map_err(|e| tls(format!("cannot read {}: {e}", p.display())))?;
                    let certs = reqwest::Certificate::from_pem_bundle(&pem)
                        .map_err(|e| tls(format!("{}: {e}", p.display())))?;
                    b = b.tls_certs_merge(certs);
                }
            }
            let (cert, key) = (dir.join("client.cert"), dir.join("client.key"));
            if cert.exists() || key.exists() {
                let c = std::fs::read(&cert)
                    .map_err(|e| tls(format!("cannot read {}: {e}", cert.display())))?;
                let k = std::fs::read(&key)
                    .map_err(|e| tls(format!("cannot read {}: {e}", key.display())))?;
                let id = reqwest::Identity::from_pem(&[k.as_slice(), b"\n", c.as_slice()].concat())
                    .map_err(|e| tls(format!("client certificate: {e}")))?;
                b = b.identity(id);
            }
        }
        if !verify {
            b = b.danger_accept_invalid_certs(true);
        }
        b.build().map_err(|e| tls(e.to_string()))
    }

    async fn host(&self, registry: &str) -> Result<Arc<Host>, RegistryError> {
        let mut hosts = self.inner.hosts.lock().await;
        if let Some(h) = hosts.get(registry) {
            return Ok(h.clone());
        }
        let name = api_host(registry).to_string();
        let insecure = self.insecure(registry);
        let creds = match &self.inner.opts.credentials {
            Some((h, c)) if h == registry => Some(c.clone()),
            _ => auth::lookup(&self.inner.opts.config_dir, registry)?,
        };
        // HTTPS first; plain HTTP only for insecure registries, when HTTPS does not answer.
        let mut attempts = vec![(
            "https",
            self.http_client(registry, !insecure, false)?,
            !insecure,
        )];
        if insecure {
            attempts.push(("http", self.http_client(registry, true, false)?, true));
        }
        let mut last = None;
        for (scheme, http, retry) in attempts {
            let base = format!("{scheme}://{name}");
            match self.ping(&http, &base, registry, retry).await {
                Ok(challenge) => {
                    tracing::debug!(registry, %base, ?challenge, "registry reached");
                    let host = Arc::new(Host {
                        name: registry.to_string(),
                        base,
                        http,
                        challenge,
                        creds,
                    });
                    hosts.insert(registry.to_string(), host.clone());
                    return Ok(host);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one scheme was tried"))
    }

    async fn ping(
        &self,
        http: &reqwest::Client,
        base: &str,
        registry: &str,
        retry: bool,
    ) -> Result<Option<Challenge>, RegistryError> {
        // A refused connection may heal (a registry restarting).
        let what = format!("cannot reach {base}");
        let resp = self
            .send_plain(registry, &what, retry, || http.get(format!("{base}/v2/")))
            .await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return Ok(
                header_str(&resp, header::WWW_AUTHENTICATE).and_then(|v| auth::parse_challenge(&v))
            );
        }
        if status.is_success() {
            return Ok(None);
        }
        Err(error_of(registry, "", "registry ping", resp).await)
    }

    /// Sends a request made by `make` without registry auth (pings, token servers, URLs),
    /// retrying 408/429/5xx answers with backoff (honouring `Retry-After`), and refused or
    /// timed-out connections when `retry_connect` (never DNS or certificate failures).
    async fn send_plain(
        &self,
        registry: &str,
        what: &str,
        retry_connect: bool,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let retries = self.inner.opts.retries;
        let mut attempt = 0;
        loop {
            match make().send().await {
                Ok(r) if self.retryable_status(r.status()) && attempt < retries => {
                    self.backoff(attempt, retry_after(r.headers())).await;
                }
                Ok(r) => return Ok(r),
                Err(e)
                    if retry_connect
                        && attempt < retries
                        && (e.is_connect() || e.is_timeout())
                        && !is_dns(&e) =>
                {
                    self.backoff(attempt, None).await;
                }
                Err(e) => {
                    return Err(RegistryError::Transport {
                        registry: registry.to_string(),
                        what: what.to_string(),
                        cause: e,
                    });
                }
            }
            attempt += 1;
        }
    }

    fn retryable_status(&self, s: StatusCode) -> bool {
        matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
    }

    async fn backoff(&self, attempt: u32, wait: Option<Duration>) {
        let base = self.inner.opts.retry_base;
        let d = wait.unwrap_or_else(|| {
            base.saturating_mul(1 << attempt.min(10))
                .min(Duration::from_secs(10))
        });
        tracing::debug!(?d, attempt, "retrying");
        tokio::time::sleep(d).await;
    }

    /// A bearer token for `scopes`, from the cache unless `fresh`.
    async fn token(
        &self,
        host: &Host,
        ch: &Challenge,
        scopes: &[String],
        fresh: bool,
    ) -> Result<String, RegistryError> {
        let key = format!("{}|{}", host.name, scopes.join(" "));
        if !fresh {
            let tokens = self.inner.tokens.lock().expect("token cache lock");
            if let Some(t) = tokens.get(&key)
                && t.expires > Instant::now()
            {
                return Ok(t.value.clone());
            }
        }
        let unauthorized = |message: String| RegistryError::Unauthorized {
            registry: host.name.clone(),
            what: "token request".to_string(),
            message,
        };
        let realm = ch
            .params
            .get("realm")
            .ok_or_else(|| RegistryError::Protocol {
                registry: host.name.clone(),
                message: "a Bearer challenge without a realm".into(),
            })?;
        let service = ch.params.get("service").cloned().unwrap_or_default();
        let make = || match &host.creds {
            Some(c) if c.is_identity_token() => {
                let mut form = format!(
                    "grant_type=refresh_token&client_id=wcbuild&refresh_token={}&service={}",
                    pct(&c.secret),
                    pct(&service)
                );
                if !scopes.is_empty() {
                    form.push_str(&format!("&scope={}", pct(&scopes.join(" "))));
                }
                host.http
                    .post(realm)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form)
            }
            creds => {
                let mut url = format!(
                    "{realm}{}service={}",
                    if realm.contains('?') { '&' } else { '?' },
                    pct(&service)
                );
                for s in scopes {
                    url.push_str(&format!("&scope={}", pct(s)));
                }
                let mut rb = host.http.get(url);
                if let Some(c) = creds {
                    rb = rb.header(header::AUTHORIZATION, c.basic());
                }
                rb
            }
        };
        let resp = self
            .send_plain(&host.name, "token request", true, make)
            .await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(unauthorized(format!(
                "the token server refused the credentials ({})",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            return Err(error_of(&host.name, "", "token request", resp).await);
        }
        let body = read_limited(resp, 1 << 20)
            .await
            .map_err(|e| unauthorized(format!("token response: {e}")))?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| unauthorized("the token server did not answer JSON".into()))?;
        let token = v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("the token server sent no token".into()))?
            .to_string();
        let lifetime = v["expires_in"].as_u64().unwrap_or(60).max(1);
        // Renew a little before the server would refuse it.
        let keep = Duration::from_secs(lifetime).mul_f64(0.9);
        self.inner.tokens.lock().expect("token cache lock").insert(
            key,
            Token {
                value: token.clone(),
                expires: Instant::now() + keep,
            },
        );
        Ok(token)
    }

    fn forget_token(&self, host: &Host, scopes: &[String]) {
        let key = format!("{}|{}", host.name, scopes.join(" "));
        self.inner
            .tokens
            .lock()
            .expect("token cache lock")
            .remove(&key);
    }

    async fn authorize(
        &self,
        host: &Host,
        rb: RequestBuilder,
        scopes: &[String],
        fresh: bool,
    ) -> Result<RequestBuilder, RegistryError> {
        Ok(match &host.challenge {
            Some(ch) if ch.scheme == "bearer" => {
                let t = self.token(host, ch, scopes, fresh).await?;
                rb.header(header::AUTHORIZATION, format!("Bearer {t}"))
            }
            Some(ch) if ch.scheme == "basic" => match &host.creds {
                Some(c) => rb.header(header::AUTHORIZATION, c.basic()),
                None => rb,
            },
            _ => rb,
        })
    }

    /// Sends a request made by `make`, with auth; renews the token once on a 401; when
    /// `idempotent`, retries 429/5xx and connection failures with backoff. Returns the
    /// response whatever its status.
    async fn send(
        &self,
        host: &Host,
        what: &str,
        scopes: &[String],
        idempotent: bool,
        mut make: impl FnMut(&reqwest::Client) -> Result<RequestBuilder, RegistryError>,
    ) -> Result<Response, RegistryError> {
        let mut attempt = 0;
        let mut renewed = false;
        loop {
            let rb = make(&host.http)?;
            let rb = self.authorize(host, rb, scopes, renewed).await?;
            match rb.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED
                        && !renewed
                        && host
                            .challenge
                            .as_ref()
                            .is_some_and(|c| c.scheme == "bearer")
                    {
                        tracing::debug!(what, "401: renewing the token");
                        self.forget_token(host, scopes);
                        renewed = true;
                        continue;
                    }
                    let retry = self.retryable_status(status)
                        && (idempotent || status == StatusCode::TOO_MANY_REQUESTS);
                    if retry && attempt < self.inner.opts.retries {
                        let wait = retry_after(resp.headers());
                        self.backoff(attempt, wait).await;
                        attempt += 1;
                        continue;
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    let transient =
                        (e.is_connect() || e.is_timeout() || e.is_request()) && !is_dns(&e);
                    if idempotent && transient && attempt < self.inner.opts.retries {
                        self.backoff(attempt, None).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(RegistryError::Transport {
                        registry: host.name.clone(),
                        what: what.to_string(),
                        cause: e,
                    });
                }
            }
        }
    }

    fn url(host: &Host, repo: &Repo, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", host.base, repo.name)
    }

    /// Checks that the registry answers, with the credentials we have (as `docker login`
    /// does: a token for no particular scope).
    pub async fn check_login(&self, registry: &str) -> Result<(), RegistryError> {
        let host = self.host(registry).await?;
        let resp = self
            .send(&host, "login", &[], true, |c| {
                Ok(c.get(format!("{}/v2/", host.base)))
            })
            .await?;
        if resp.status().is_success() {
            return Ok(());
        }
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(RegistryError::Unauthorized {
                registry: registry.to_string(),
                what: "login".into(),
                message: "the registry refused the credentials".into(),
            });
        }
        Err(error_of(registry, "", "login", resp).await)
    }

    /// Fetches a manifest or index by tag or digest, checking its digest (and the registry's
    /// `Docker-Content-Digest`) and refusing documents over [`MANIFEST_LIMIT`].
    pub async fn get_manifest(
        &self,
        repo: &Repo,
        reference: &str,
    ) -> Result<Fetched, RegistryError> {
        let host = self.host(&repo.registry).await?;
        let what = format!("manifest {reference}");
        let url = Self::url(&host, repo, &format!("manifests/{reference}"));
        let scopes = [repo.pull_scope()];
        let resp = self
            .send(&host, &what, &scopes, true, |c| {
                Ok(c.get(&url).header(header::ACCEPT, accept_header()))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(error_of(&repo.registry, &repo.name, &what, resp).await);
        }
        if resp.content_length().is_some_and(|n| n > MANIFEST_LIMIT) {
            return Err(RegistryError::TooLarge {
                what,
                limit: MANIFEST_LIMIT,
            });
        }
        let header_digest = header_str(&resp, "docker-content-digest");
        let content_type = header_str(&resp, header::CONTENT_TYPE)
            .map(|t| t.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let bytes = match read_limited(resp, MANIFEST_LIMIT).await {
            Ok(b) => b,
            Err(ReadError::TooLarge) => {
                return Err(RegistryError::TooLarge {
                    what,
                    limit: MANIFEST_LIMIT,
                });
            }
            Err(ReadError::Http(e)) => {
                return Err(RegistryError::Transport {
                    registry: repo.registry.clone(),
                    what,
                    cause: e,
                });
            }
            Err(ReadError::Slow(m)) => {
                return Err(RegistryError::Protocol {
                    registry: repo.registry.clone(),
                    message: format!("{what}: {m}"),
                });
            }
        };
        let digest = sha256_of(&bytes);
        if reference.contains(':') && reference != digest {
            return Err(RegistryError::DigestMismatch {
                what: format!("{repo}@{reference}"),
                expected: reference.to_string(),
                actual: digest,
            });
        }
        if let Some(h) = header_digest.filter(|h| h.starts_with("sha256:"))
            && h != digest
        {
            return Err(RegistryError::WrongHeaderDigest {
                registry: repo.registry.clone(),
                what: format!("{repo}:{reference}"),
                header: h,
                actual: digest,
            });
        }
        let doc_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string));
        let media_type = doc_type.unwrap_or(content_type);
        Ok(Fetched {
            bytes,
            media_type,
            digest,
        })
    }

    /// `HEAD` of a manifest: its digest, size and media type, or `None` when absent.
    pub async fn head_manifest(
        &self,
        repo: &Repo,
        reference: &str,
    ) -> Result<Option<(String, u64, String)>, RegistryError> {
        let host = self.host(&repo.registry).await?;
        let what = format!("manifest {reference}");
        let url = Self::url(&host, repo, &format!("manifests/{reference}"));
        let scopes = [repo.pull_scope()];
        let resp = self
            .send(&host, &what, &scopes, true, |c| {
                Ok(c.head(&url).header(header::ACCEPT, accept_header()))
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(error_of(&repo.registry, &repo.name, &what, resp).await);
        }
        let digest = header_str(&resp, "docker-content-digest").unwrap_or_default();
        let size = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        let media = header_str(&resp, header::CONTENT_TYPE).unwrap_or_default();
        Ok(Some((digest, size, media)))
    }

    /// Uploads a manifest or index under `reference` (a tag or its digest).
    pub async fn put_manifest(
        &self,
        repo: &Repo,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<String, RegistryError> {
        let host = self.host(&repo.registry).await?;
        let what = format!("manifest upload {reference}");
        let url = Self::url(&host, repo, &format!("manifests/{reference}"));
        let scopes = [repo.push_scope()];
        let body = bytes.to_vec();
        let resp = self
            .send(&host, &what, &scopes, true, |c| {
                Ok(c.put(&url)
                    .header(header::CONTENT_TYPE, media_type)
                    .body(body.clone()))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(error_of(&repo.registry, &repo.name, &what, resp).await);
        }
        let digest = sha256_of(bytes);
        if let Some(h) =
            header_str(&resp, "docker-content-digest").filter(|h| h.starts_with("sha256:"))
            && h != digest
        {
            return Err(RegistryError::WrongHeaderDigest {
                registry: repo.registry.clone(),
                what: format!("{repo}:{reference} (upload)"),
                header: h,
                actual: digest,
            });
        }
        Ok(digest)
    }

    /// Deletes a manifest by digest.
    pub async fn delete_manifest(&self, repo: &Repo, digest: &str) -> Result<(), RegistryError> {
        let host = self.host(&repo.registry).await?;
        let what = format!("manifest delete {digest}");
        let url = Self::url(&host, repo, &format!("manifests/{digest}"));
        let scopes = [format!("repository:{}:delete", repo.name)];
        let resp = self
            .send(&host, &what, &scopes, true, |c| Ok(c.delete(&url)))
            .await?;
        if !resp.status().is_success() {
            return Err(error_of(&repo.registry, &repo.name, &what, resp).await);
        }
        Ok(())
    }

    /// The size of a blob in the repository, or `None`.
    pub async fn blob_size(&self, repo: &Repo, digest: &str) -> Result<Option<u64>, RegistryError> {
        let host = self.host(&repo.registry).await?;
        self.blob_size_with(&host, repo, digest, &[repo.pull_scope()])
            .await
    }

    async fn blob_size_with(
        &self,
        host: &Host,
        repo: &Repo,
        digest: &str,
        scopes: &[String],
    ) -> Result<Option<u64>, RegistryError> {
        let what = format!("blob {}", short(digest));
        let url = Self::url(host, repo, &format!("blobs/{digest}"));
        let resp = self
            .send(host, &what, scopes, true, |c| Ok(c.head(&url)))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(Some(
                resp.headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(error_of(&repo.registry, &repo.name, &what, resp).await),
        }
    }

    /// Downloads a blob into `sink`, resuming with `Range` after a dropped connection and
    /// checking size and digest as it streams. A foreign layer the registry does not have is
    /// fetched from its `urls` (https only, no credentials sent). `progress` gets the bytes
    /// received so far.
    pub async fn get_blob(
        &self,
        repo: &Repo,
        desc: &Descriptor,
        sink: &mut (dyn BlobSink + Send),
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), RegistryError> {
        let host = self.host(&repo.registry).await?;
        let url = Self::url(&host, repo, &format!("blobs/{}", desc.digest));
        match self
            .download(Some(&host), repo, &url, desc, sink, progress)
            .await
        {
            Err(RegistryError::NotFound { .. }) if !desc.urls.is_empty() => {
                let mut last = None;
                for u in desc.urls.iter().filter(|u| u.starts_with("https://")) {
                    match self.download(None, repo, u, desc, sink, progress).await {
                        Ok(()) => return Ok(()),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| RegistryError::NotFound {
                    registry: repo.registry.clone(),
                    repo: repo.name.clone(),
                    what: format!(
                        "foreign layer {} (none of its urls is https)",
                        short(&desc.digest)
                    ),
                }))
            }
            other => other,
        }
    }

    async fn download(
        &self,
        host: Option<&Host>,
        repo: &Repo,
        url: &str,
        desc: &Descriptor,
        sink: &mut (dyn BlobSink + Send),
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), RegistryError> {
        let what = format!("blob {}", short(&desc.digest));
        let scopes = [repo.pull_scope()];
        // A foreign layer's URL (no host): https only, verified with the certs.d CAs of its
        // host, no credentials. Its client is made once for all attempts.
        let direct = match host {
            Some(_) => None,
            None => {
                let url_host = url
                    .strip_prefix("https://")
                    .and_then(|r| r.split('/').next())
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| RegistryError::Protocol {
                        registry: repo.registry.clone(),
                        message: format!("{what}: `{url}` is not an https URL"),
                    })?;
                Some(self.http_client(url_host, true, true)?)
            }
        };
        // Errors name the host that answered: the URL's, for a foreign layer.
        let who = match host {
            Some(_) => repo.registry.clone(),
            None => url
                .strip_prefix("https://")
                .and_then(|r| r.split('/').next())
                .unwrap_or(&repo.registry)
                .to_string(),
        };
        // When the sink hashes what it is given (the store does), its digest is used rather
        // than hashing every byte a second time here.
        let sink_hashes = sink.digest().is_some();
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        let mut failures = 0u32;
        let io_err = |e: io::Error| RegistryError::Io {
            what: format!("writing {what}"),
            source: e,
        };
        loop {
            let ranged = |rb: RequestBuilder| {
                if done > 0 {
                    rb.header(header::RANGE, format!("bytes={done}-"))
                } else {
                    rb
                }
            };
            let resp = match (host, &direct) {
                (Some(h), _) => {
                    self.send(h, &what, &scopes, true, |c| Ok(ranged(c.get(url))))
                        .await?
                }
                (None, Some(http)) => {
                    let what = format!("{what} from {url}");
                    self.send_plain(&who, &what, true, || ranged(http.get(url)))
                        .await?
                }
                (None, None) => unreachable!("a client is made for every URL"),
            };
            match resp.status() {
                StatusCode::OK => {
                    if done > 0 {
                        // The server ignored the range: start again.
                        sink.restart().map_err(io_err)?;
                        hasher = Sha256::new();
                        done = 0;
                    }
                }
                StatusCode::PARTIAL_CONTENT => {
                    let range = header_str(&resp, header::CONTENT_RANGE).unwrap_or_default();
                    if !range.starts_with(&format!("bytes {done}-")) {
                        return Err(RegistryError::Protocol {
                            registry: repo.registry.clone(),
                            message: format!(
                                "{what}: asked for bytes from {done}, got range `{range}`"
                            ),
                        });
                    }
                }
                _ => return Err(error_of(&who, &repo.name, &what, resp).await),
            }
            let mut stream = resp.bytes_stream();
            let mut broken = None;
            let mut pace = Pace::new();
            while let Some(item) = stream.next().await {
                match item {
                    Ok(chunk) => {
                        if let Err(m) = pace.feed(chunk.len()) {
                            return Err(RegistryError::Protocol {
                                registry: repo.registry.clone(),
                                message: format!(
                                    "{what} (after {done} of {} bytes): {m}",
                                    desc.size
                                ),
                            });
                        }
                        if done + chunk.len() as u64 > desc.size {
                            return Err(RegistryError::SizeMismatch {
                                what,
                                expected: desc.size,
                                actual: done + chunk.len() as u64,
                            });
                        }
                        if !sink_hashes {
                            hasher.update(&chunk);
                        }
                        sink.write_all(&chunk).map_err(io_err)?;
                        done += chunk.len() as u64;
                        progress(done);
                    }
                    Err(e) => {
                        broken = Some(e);
                        break;
                    }
                }
            }
            if broken.is_none() && done == desc.size {
                let actual = match sink.digest() {
                    Some(d) if sink_hashes => d,
                    _ => format!("sha256:{:x}", hasher.finalize()),
                };
                if actual != desc.digest {
                    return Err(RegistryError::DigestMismatch {
                        what: format!("{repo}@{}", desc.digest),
                        expected: desc.digest.clone(),
                        actual,
                    });
                }
                return Ok(());
            }
            failures += 1;
            if failures > self.inner.opts.retries {
                return match broken {
                    Some(e) => Err(RegistryError::Transport {
                        registry: repo.registry.clone(),
                        what: format!("{what} (after {done} of {} bytes)", desc.size),
                        cause: e,
                    }),
                    None => Err(RegistryError::SizeMismatch {
                        what,
                        expected: desc.size,
                        actual: done,
                    }),
                };
            }
            tracing::debug!(what, done, "download interrupted; resuming");
            self.backoff(failures - 1, None).await;
        }
    }

    /// Downloads any http(s) URL (for `ADD`) into `out`, with no credentials: TLS verified
    /// against the system roots plus the `certs.d` CAs of its host, up to 10 redirects,
    /// retries on 429/5xx and refused connections. Returns the content's `sha256:` digest, its
    /// size and its `Last-Modified` header.
    pub async fn fetch_url(
        &self,
        url: &str,
        out: &mut dyn std::io::Write,
    ) -> Result<(String, u64, Option<String>), RegistryError> {
        let host = url
            .split_once("://")
            .map(|(_, r)| r.split(['/', '?', '#']).next().unwrap_or(""))
            .unwrap_or("")
            .to_string();
        let http = self.http_client(&host, true, false)?;
        let resp = self
            .send_plain(&host, &format!("GET {url}"), true, || http.get(url))
            .await?;
        if !resp.status().is_success() {
            return Err(RegistryError::Status {
                registry: host,
                what: format!("GET {url}"),
                status: resp.status().as_u16(),
                code: None,
                message: String::new(),
            });
        }
        let modified = header_str(&resp, header::LAST_MODIFIED);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut stream = resp.bytes_stream();
        while let Some(item) = stream.next().await {
            let chunk = item.map_err(|e| RegistryError::Transport {
                registry: host.clone(),
                what: format!("GET {url}"),
                cause: e,
            })?;
            hasher.update(&chunk);
            out.write_all(&chunk).map_err(|e| RegistryError::Io {
                what: format!("writing the download of {url}"),
                source: e,
            })?;
            size += chunk.len() as u64;
        }
        Ok((format!("sha256:{:x}", hasher.finalize()), size, modified))
    }

    /// Pushes the blob in file `path` (`size` bytes, `digest`) unless the repository has it:
    /// first a mount from one of `mount_from` (repositories of the same registry known to
    /// hold it), else an upload — one monolithic `PUT`, and, when that breaks off, the rest in
    /// chunks from where the registry's upload status says it stopped. `progress` gets bytes
    /// sent.
    pub async fn push_blob(
        &self,
        repo: &Repo,
        digest: &str,
        size: u64,
        path: &Path,
        mount_from: &[String],
        progress: &mut dyn FnMut(u64),
    ) -> Result<PushOutcome, RegistryError> {
        let host = self.host(&repo.registry).await?;
        let scopes = [repo.push_scope()];
        if self
            .blob_size_with(&host, repo, digest, &scopes)
            .await?
            .is_some()
        {
            return Ok(PushOutcome::Existed);
        }
        let what = format!("blob upload {}", short(digest));
        let mut location = None;
        let mut min_chunk = 0;
        for from in mount_from.iter().filter(|f| **f != repo.name) {
            let mscopes = [repo.push_scope(), format!("repository:{from}:pull")];
            let url = format!(
                "{}?mount={}&from={}",
                Self::url(&host, repo, "blobs/uploads/"),
                pct(digest),
                pct(from)
            );
            let resp = self
                .send(&host, &what, &mscopes, true, |c| {
                    Ok(c.post(&url).header(header::CONTENT_LENGTH, 0))
                })
                .await?;
            match resp.status() {
                StatusCode::CREATED => {
                    return Ok(PushOutcome::Mounted { from: from.clone() });
                }
                StatusCode::ACCEPTED => {
                    location = header_str(&resp, header::LOCATION);
                    min_chunk = chunk_min(&resp);
                    break;
                }
                s => tracing::debug!(status = s.as_u16(), from, "mount refused"),
            }
        }
        let mut location = match location {
            Some(l) => l,
            None => {
                let (l, m) = self.start_upload(&host, repo, &what, &scopes).await?;
                min_chunk = m;
                l
            }
        };
        let chunk = self.inner.opts.chunk_size.max(min_chunk).max(1);
        // Monolithic first.
        let sent = Arc::new(AtomicU64::new(0));
        let put_url = with_digest(&join(&host, &location), digest);
        let mono = {
            let sent = sent.clone();
            let fut = self.send(&host, &what, &scopes, false, |c| {
                sent.store(0, Ordering::Relaxed);
                Ok(c.put(&put_url)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::CONTENT_LENGTH, size)
                    .body(file_body(path, 0, size, sent.clone())?))
            });
            with_ticks(fut, &sent, progress).await
        };
        match mono {
            Ok(resp) if resp.status() == StatusCode::CREATED => {
                progress(size);
                return Ok(PushOutcome::Uploaded);
            }
            Ok(resp)
                if resp.status().is_client_error() && resp.status() != StatusCode::UNAUTHORIZED =>
            {
                // Some registries refuse monolithic uploads: go chunked from a new session.
                tracing::debug!(
                    status = resp.status().as_u16(),
                    "monolithic upload refused; chunked"
                );
                let (l, m) = self.start_upload(&host, repo, &what, &scopes).await?;
                location = l;
                let chunk = chunk.max(m);
                self.upload_chunks(
                    &host, repo, &what, &scopes, location, 0, size, chunk, digest, path, progress,
                )
                .await?;
                return Ok(PushOutcome::Uploaded);
            }
            Ok(resp) => return Err(error_of(&repo.registry, &repo.name, &what, resp).await),
            Err(RegistryError::Transport { .. }) => {
                tracing::debug!("monolithic upload broke off; asking where it stands");
            }
            Err(e) => return Err(e),
        }
        // Resume from the upload's status, or start over.
        let offset = match self
            .upload_status(&host, repo, &what, &scopes, &location)
            .await
        {
            Ok((l, n)) => {
                location = l;
                n
            }
            Err(_) => {
                let (l, _) = self.start_upload(&host, repo, &what, &scopes).await?;
                location = l;
                0
            }
        };
        self.upload_chunks(
            &host, repo, &what, &scopes, location, offset, size, chunk, digest, path, progress,
        )
        .await?;
        Ok(PushOutcome::Uploaded)
    }

    async fn start_upload(
        &self,
        host: &Host,
        repo: &Repo,
        what: &str,
        scopes: &[String],
    ) -> Result<(String, u64), RegistryError> {
        let url = Self::url(host, repo, "blobs/uploads/");
        let resp = self
            .send(host, what, scopes, true, |c| {
                Ok(c.post(&url).header(header::CONTENT_LENGTH, 0))
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(error_of(&repo.registry, &repo.name, what, resp).await);
        }
        let l = header_str(&resp, header::LOCATION).ok_or_else(|| RegistryError::Protocol {
            registry: repo.registry.clone(),
            message: format!("{what}: no Location for the upload"),
        })?;
        Ok((l, chunk_min(&resp)))
    }

    /// Where an upload stands: its current location and the number of bytes it holds.
    async fn upload_status(
        &self,
        host: &Host,
        repo: &Repo,
        what: &str,
        scopes: &[String],
        location: &str,
    ) -> Result<(String, u64), RegistryError> {
        let url = join(host, location);
        let resp = self
            .send(host, what, scopes, true, |c| Ok(c.get(&url)))
            .await?;
        if resp.status() != StatusCode::NO_CONTENT && !resp.status().is_success() {
            return Err(error_of(&repo.registry, &repo.name, what, resp).await);
        }
        let next = header_str(&resp, header::LOCATION).unwrap_or_else(|| location.to_string());
        Ok((next, range_end(&resp)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_chunks(
        &self,
        host: &Host,
        repo: &Repo,
        what: &str,
        scopes: &[String],
        mut location: String,
        mut offset: u64,
        size: u64,
        chunk: u64,
        digest: &str,
        path: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), RegistryError> {
        let mut failures = 0;
        while offset < size {
            let len = chunk.min(size - offset);
            let url = join(host, &location);
            let sent = Arc::new(AtomicU64::new(0));
            let res = {
                let fut = self.send(host, what, scopes, false, |c| {
                    Ok(c.patch(&url)
                        .header(header::CONTENT_TYPE, "application/octet-stream")
                        .header(header::CONTENT_LENGTH, len)
                        .header(
                            header::CONTENT_RANGE,
                            format!("{}-{}", offset, offset + len - 1),
                        )
                        .body(file_body(path, offset, len, sent.clone())?))
                });
                let base = offset;
                with_ticks(fut, &sent, &mut |n| progress(base + n)).await
            };
            match res {
                Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                    location = header_str(&resp, header::LOCATION).unwrap_or(location);
                    let end = range_end(&resp);
                    offset = if end > offset { end } else { offset + len };
                    progress(offset);
                }
                Ok(resp) => return Err(error_of(&repo.registry, &repo.name, what, resp).await),
                Err(e @ RegistryError::Transport { .. }) => {
                    failures += 1;
                    if failures > self.inner.opts.retries {
                        return Err(e);
                    }
                    self.backoff(failures - 1, None).await;
                    let (l, n) = self
                        .upload_status(host, repo, what, scopes, &location)
                        .await?;
                    location = l;
                    offset = n;
                }
                Err(e) => return Err(e),
            }
        }
        let url = with_digest(&join(host, &location), digest);
        let resp = self
            .send(host, what, scopes, false, |c| {
                Ok(c.put(&url).header(header::CONTENT_LENGTH, 0))
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(error_of(&repo.registry, &repo.name, what, resp).await);
        }
        Ok(())
    }

    /// The repository's tags (all pages).
    pub async fn tags(&self, repo: &Repo) -> Result<Vec<String>, RegistryError> {
        let host = self.host(&repo.registry).await?;
        let scopes = [repo.pull_scope()];
        let mut url = Self::url(&host, repo, "tags/list?n=1000");
        let mut tags = Vec::new();
        for _ in 0..10_000 {
            let resp = self
                .send(&host, "tag list", &scopes, true, |c| Ok(c.get(&url)))
                .await?;
            if !resp.status().is_success() {
                return Err(error_of(&repo.registry, &repo.name, "tag list", resp).await);
            }
            let next = header_str(&resp, header::LINK).and_then(|l| {
                let s = l.split(';').next()?.trim();
                Some(s.trim_start_matches('<').trim_end_matches('>').to_string())
            });
            let body = read_limited(resp, 64 << 20)
                .await
                .map_err(|e| RegistryError::Protocol {
                    registry: repo.registry.clone(),
                    message: format!("tag list: {e}"),
                })?;
            let v: serde_json::Value =
                serde_json::from_slice(&body).map_err(|_| RegistryError::Protocol {
                    registry: repo.registry.clone(),
                    message: "tag list: not JSON".into(),
                })?;
            if let Some(a) = v["tags"].as_array() {
                tags.extend(a.iter().filter_map(|t| t.as_str().map(str::to_string)));
            }
            match next {
                Some(n) => url = join(&host, &n),
                None => return Ok(tags),
            }
        }
        Ok(tags)
    }

    /// Manifests that refer to `digest` (the referrers API, else the `sha256-<hex>` tag
    /// schema), optionally only those of `artifact_type`.
    pub async fn referrers(
        &self,
        repo: &Repo,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, RegistryError> {
        let host = self.host(&repo.registry).await?;
        let scopes = [repo.pull_scope()];
        let mut url = Self::url(&host, repo, &format!("referrers/{digest}"));
        if let Some(t) = artifact_type {
            url.push_str(&format!("?artifactType={}", pct(t)));
        }
        let resp = self
            .send(&host, "referrers", &scopes, true, |c| {
                Ok(c.get(&url).header(header::ACCEPT, OCI_INDEX))
            })
            .await?;
        let (bytes, filtered) = if resp.status().is_success() {
            let filtered = header_str(&resp, "oci-filters-applied").is_some();
            let b =
                read_limited(resp, MANIFEST_LIMIT)
                    .await
                    .map_err(|e| RegistryError::Protocol {
                        registry: repo.registry.clone(),
                        message: format!("referrers: {e}"),
                    })?;
            (b, filtered)
        } else if resp.status() == StatusCode::NOT_FOUND {
            let tag = digest.replace(':', "-");
            match self.get_manifest(repo, &tag).await {
                Ok(f) => (f.bytes, false),
                Err(RegistryError::NotFound { .. }) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        } else {
            return Err(error_of(&repo.registry, &repo.name, "referrers", resp).await);
        };
        let index: crate::image::Index =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
                registry: repo.registry.clone(),
                message: format!("referrers: not an index: {e}"),
            })?;
        Ok(index
            .manifests
            .into_iter()
            .filter(|d| {
                filtered || artifact_type.is_none_or(|t| d.artifact_type.as_deref() == Some(t))
            })
            .collect())
    }
}

fn chunk_min(resp: &Response) -> u64 {
    header_str(resp, "oci-chunk-min-length")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The byte count an upload's `Range: 0-N` header reports (N + 1), or 0.
fn range_end(resp: &Response) -> u64 {
    header_str(resp, header::RANGE)
        .and_then(|r| {
            let r = r.trim().trim_start_matches("bytes=");
            let (_, end) = r.split_once('-')?;
            end.trim().parse::<u64>().ok()
        })
        .map_or(0, |e| e + 1)
}

fn join(host: &Host, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if location.starts_with('/') {
        format!("{}{location}", host.base)
    } else {
        format!("{}/{location}", host.base)
    }
}

fn with_digest(url: &str, digest: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}digest={}", pct(digest))
}

/// A request body streaming `len` bytes of `path` from `offset`, counting them in `sent`.
fn file_body(
    path: &Path,
    offset: u64,
    len: u64,
    sent: Arc<AtomicU64>,
) -> Result<reqwest::Body, RegistryError> {
    use std::io::Seek as _;
    let mut f = std::fs::File::open(path).map_err(|e| RegistryError::Io {
        what: format!("open {}", path.display()),
        source: e,
    })?;
    f.seek(io::SeekFrom::Start(offset))
        .map_err(|e| RegistryError::Io {
            what: format!("seek {}", path.display()),
            source: e,
        })?;
    // A reader thread keeps up to 4 MiB ready ahead of the socket (tokio's file reads go
    // through the blocking pool one small read at a time, which is slower).
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(4);
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut left = len;
        while left > 0 {
            let mut buf = vec![0u8; (1 << 20).min(left) as usize];
            let r = f.read(&mut buf).and_then(|n| {
                if n == 0 {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank",
                    ))
                } else {
                    Ok(n)
                }
            });
            let item = r.map(|n| {
                buf.truncate(n);
                left -= n as u64;
                bytes::Bytes::from(buf)
            });
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .map(move |r| {
        if let Ok(b) = &r {
            sent.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        r
    });
    Ok(reqwest::Body::wrap_stream(stream))
}

/// Runs `fut`, reporting `sent` to `progress` every 200 ms meanwhile.
async fn with_ticks<T>(
    fut: impl std::future::Future<Output = T>,
    sent: &AtomicU64,
    progress: &mut dyn FnMut(u64),
) -> T {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tick.tick() => progress(sent.load(Ordering::Relaxed)),
        }
    }
}

enum ReadError {
    TooLarge,
    Http(reqwest::Error),
    Slow(String),
}

/// The least average rate a response body must keep up, over each [`stall_window`], before
/// it counts as stalled: a registry that trickles bytes would otherwise keep a transfer going
/// for hours (the read timeout restarts with every byte).
const MIN_BYTES_PER_SEC: u64 = 1024;

/// The window over which [`MIN_BYTES_PER_SEC`] is measured: 30 s, or
/// `WCBUILD_REGISTRY_STALL_SECS`.
fn stall_window() -> Duration {
    static W: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *W.get_or_init(|| {
        std::env::var("WCBUILD_REGISTRY_STALL_SECS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&s| s > 0)
            .map_or(Duration::from_secs(30), Duration::from_secs)
    })
}

/// Watches the rate of a response body: [`Pace::feed`] fails when a whole window passed
/// with fewer bytes than [`MIN_BYTES_PER_SEC`] asks.
struct Pace {
    since: std::time::Instant,
    bytes: u64,
}

impl Pace {
    fn new() -> Pace {
        Pace {
            since: std::time::Instant::now(),
            bytes: 0,
        }
    }

    fn feed(&mut self, n: usize) -> Result<(), String> {
        self.bytes += n as u64;
        let window = stall_window();
        let elapsed = self.since.elapsed();
        if elapsed >= window {
            if self.bytes < MIN_BYTES_PER_SEC * window.as_secs().max(1) {
                return Err(format!(
                    "timed out: the answer came too slowly ({} bytes in {:.1} s, less than {MIN_BYTES_PER_SEC} bytes/s)",
                    self.bytes,
                    elapsed.as_secs_f64()
                ));
            }
            self.since = std::time::Instant::now();
            self.bytes = 0;
        }
        Ok(())
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooLarge => f.write_str("response too large"),
            ReadError::Http(e) => write!(f, "{e}"),
            ReadError::Slow(m) => f.write_str(m),
        }
    }
}

async fn read_limited(resp: Response, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    let mut pace = Pace::new();
    while let Some(item) = stream.next().await {
        let chunk = item.map_err(ReadError::Http)?;
        pace.feed(chunk.len()).map_err(ReadError::Slow)?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(ReadError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Turns an error response into a [`RegistryError`], with the registry's error code and
/// message when it sent the distribution error body.
async fn error_of(registry: &str, repo: &str, what: &str, resp: Response) -> RegistryError {
    let status = resp.status();
    let body = read_limited(resp, 64 * 1024).await.unwrap_or_default();
    let (code, message) = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let e = v["errors"].get(0)?.clone();
            Some((
                e["code"].as_str().map(str::to_string),
                e["message"].as_str().unwrap_or("").to_string(),
            ))
        })
        .unwrap_or((None, String::new()));
    match status {
        StatusCode::UNAUTHORIZED => RegistryError::Unauthorized {
            registry: registry.to_string(),
            what: what.to_string(),
            message,
        },
        StatusCode::NOT_FOUND => RegistryError::NotFound {
            registry: registry.to_string(),
            repo: repo.to_string(),
            what: what.to_string(),
        },
        _ => RegistryError::Status {
            registry: registry.to_string(),
            what: what.to_string(),
            status: status.as_u16(),
            code,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example:5000"));
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(
            with_digest("/a?x=1", "sha256:ab"),
            "/a?x=1&digest=sha256%3Aab"
        );
    }
}
