//! The distribution client: talks to OCI/Docker registries over HTTP(S) — ping, manifests,
//! blobs, uploads (monolithic first, chunked fallback, resume from the upload's status),
//! cross-repository mounts, tags, referrers — with basic and bearer auth (tokens cached per
//! scope set, renewed on a 401), retries with backoff, `Range` resume of downloads, and every
//! byte checked against its digest while it streams.
//!
//! It knows nothing of the store or of layers: downloads go into any [`BlobSink`], uploads
//! read a file. `ops` joins it to the store. Secrets never reach errors or logs: URLs carry
//! none, and [`auth::Credentials`] hides its secret from `Debug`.

pub mod auth;
mod client;

pub use client::{
    BlobSink, Client, ClientOptions, Fetched, MANIFEST_LIMIT, PushOutcome, Repo, accept_header,
};

/// What can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered with an error status.
    #[error("{registry}: {what}: {status}{}", detail_suffix(.code, .message))]
    Status {
        /// Host.
        registry: String,
        /// What was asked for.
        what: String,
        /// HTTP status.
        status: u16,
        /// The distribution error code (`MANIFEST_UNKNOWN`, `DENIED`, ...).
        code: Option<String>,
        /// The registry's message.
        message: String,
    },
    /// Authentication failed or is needed.
    #[error(
        "{registry}: {what}: authentication required or refused{}; log in with `wcbuild login {registry}`",
        detail_suffix(&None, .message)
    )]
    Unauthorized {
        /// Host.
        registry: String,
        /// What was asked for.
        what: String,
        /// The registry's or token server's message.
        message: String,
    },
    /// Nothing under that name.
    #[error("{registry}/{repo}: {what} not found")]
    NotFound {
        /// Host.
        registry: String,
        /// Repository.
        repo: String,
        /// What was asked for.
        what: String,
    },
    /// The connection failed (after retries).
    #[error("{registry}: {what}: {}", root_cause(.cause))]
    Transport {
        /// Host.
        registry: String,
        /// What was being done.
        what: String,
        /// The cause (its innermost reason is shown).
        cause: reqwest::Error,
    },
    /// Received bytes do not hash to the digest they were asked by.
    #[error(
        "{what}: the bytes received hash to {actual}, not {expected}; refused (nothing was stored)"
    )]
    DigestMismatch {
        /// What was fetched.
        what: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what came.
        actual: String,
    },
    /// The registry's `Docker-Content-Digest` header disagrees with the content.
    #[error(
        "{registry}: {what}: the registry says its digest is {header}, but the content hashes to {actual}; refused"
    )]
    WrongHeaderDigest {
        /// Host.
        registry: String,
        /// What was fetched.
        what: String,
        /// The header's value.
        header: String,
        /// The content's digest.
        actual: String,
    },
    /// A blob's size differs from its descriptor.
    #[error("{what}: expected {expected} bytes, received {actual}; refused")]
    SizeMismatch {
        /// What was fetched.
        what: String,
        /// Descriptor size.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// A manifest is larger than we accept.
    #[error("{what}: the manifest is larger than the {limit}-byte limit; refused")]
    TooLarge {
        /// What was fetched.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// Credentials could not be read or written.
    #[error("credentials: {0}")]
    Credentials(String),
    /// TLS configuration (certs.d) is wrong.
    #[error("{registry}: TLS setup: {message}")]
    Tls {
        /// Host.
        registry: String,
        /// What is wrong.
        message: String,
    },
    /// The registry broke the protocol.
    #[error("{registry}: {message}")]
    Protocol {
        /// Host.
        registry: String,
        /// What it did.
        message: String,
    },
    /// Reading a local file or writing a sink failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The innermost reason of a transport error ("connection refused", "too many redirects").
fn root_cause(e: &reqwest::Error) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(s) = last.source() {
        last = s;
    }
    let text = last.to_string();
    if e.is_timeout() && !text.contains("timed out") {
        format!("timed out ({text})")
    } else {
        text
    }
}

fn detail_suffix(code: &Option<String>, message: &str) -> String {
    match (code, message.is_empty()) {
        (Some(c), false) => format!(" ({c}: {message})"),
        (Some(c), true) => format!(" ({c})"),
        (None, false) => format!(" ({message})"),
        (None, true) => String::new(),
    }
}
