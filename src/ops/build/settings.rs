//! What a build is asked to do and what it gives back: settings, named contexts, outcomes
//! and errors.

use crate::dockerfile::{self, Diagnostic};
use crate::image::Platform;
use crate::layer::Compression;
use crate::ops::dockerfile::ReadError;
use crate::ops::images::ImageError;
use crate::store::StoreError;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile (`None`: `CONTEXT/Dockerfile`; `-`: standard input).
    pub file: Option<PathBuf>,
    /// Names to tag the result with.
    pub tags: Vec<String>,
    /// `--build-arg`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--platform` (one).
    pub platform: Option<Platform>,
    /// The compression new layers are written with.
    pub compression: Compression,
    /// `--compression` was given: a layer the cache holds in another compression is converted
    /// (once, remembered). Otherwise (`auto`) any form of a cached layer is used as it is.
    pub compression_explicit: bool,
    /// `SOURCE_DATE_EPOCH`: clamps file times and sets the config and history times.
    pub source_date_epoch: Option<i64>,
    /// `--label K=V`.
    pub labels: Vec<(String, String)>,
    /// `--no-cache`: build every step (results are still recorded for later builds).
    pub no_cache: bool,
    /// `--build-context NAME=…`: named contexts for `FROM` and `COPY --from`.
    pub contexts: BTreeMap<String, NamedContext>,
    /// Where to pull base images the store does not have (`None`: never pull); also the
    /// registry settings of `cache_from` and `cache_to`.
    pub registry: Option<crate::registry::ClientOptions>,
    /// `--cache-from`: build caches in registries to import (earlier ones win).
    pub cache_from: Vec<String>,
    /// `--cache-to`: where to export this build's cache.
    pub cache_to: Option<String>,
    /// `mode=max`: export every step's layer, not only those in the final image.
    pub cache_max: bool,
    /// `--oci-runtime NAME|PATH` for RUN on Linux stages (`None`: the first of crun and runc
    /// that works here).
    pub oci_runtime: Option<String>,
    /// `--network`: what `RUN --network=default` means for this build.
    pub network: NetworkMode,
    /// `--secret id=ID,src=FILE|env=VAR`: where each secret's value is read from when a RUN
    /// step mounts it (never before, never stored).
    pub secrets: BTreeMap<String, SecretSource>,
    /// `--ssh ID=SOCKET`: agent sockets `RUN --mount=type=ssh` forwards.
    pub ssh: BTreeMap<String, PathBuf>,
    /// `--allow security.insecure`: `RUN --security=insecure` may run.
    pub allow_insecure: bool,
    /// Where RUN steps run: the runtime, the isolation of Windows steps, the Docker engine,
    /// memory and processors.
    pub engine: EngineSettings,
}

/// Which runtime runs RUN steps (`--runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// An OCI runtime (runc or crun): Linux steps on a Linux host.
    Oci,
    /// The Host Compute Service: Windows steps on a Windows host.
    Hcs,
    /// A Docker engine, local or remote: any step its OS runs.
    Docker,
}

impl RuntimeKind {
    /// `oci`, `hcs` or `docker`.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Oci => "oci",
            RuntimeKind::Hcs => "hcs",
            RuntimeKind::Docker => "docker",
        }
    }
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<RuntimeKind, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "oci" => Ok(RuntimeKind::Oci),
            "hcs" => Ok(RuntimeKind::Hcs),
            "docker" => Ok(RuntimeKind::Docker),
            _ => Err(format!(
                "unknown runtime `{s}`: expected oci, hcs or docker"
            )),
        }
    }
}

/// Where and how RUN steps run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineSettings {
    /// `--runtime` (`None`: by the stage's OS and the host: oci for Linux stages on Linux,
    /// hcs for Windows stages on Windows; docker when `docker_host` is given).
    pub runtime: Option<RuntimeKind>,
    /// `--isolation` for Windows steps: `auto` decides per step with
    /// `image::compat::decide`.
    pub isolation: crate::image::Isolation,
    /// `--docker-host` (else `DOCKER_HOST`; `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`
    /// come from the environment).
    pub docker_host: Option<String>,
    /// `--memory` in bytes: the utility VM of Hyper-V steps, the container's limit in a
    /// Docker engine.
    pub memory: Option<u64>,
    /// `--cpus`: processors of the utility VM, the container's limit in a Docker engine.
    pub cpus: Option<f64>,
}

/// The isolation one Windows RUN step got, and why (for progress and `--metadata-file`;
/// never written into the image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationRecord {
    /// The stage's index.
    pub stage: usize,
    /// The Dockerfile line of the RUN.
    pub line: usize,
    /// `process` or `hyperv`.
    pub isolation: crate::image::Isolation,
    /// Why (the compatibility rule's sentence).
    pub reason: String,
}

/// A build's network for RUN steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// The host's network (what standalone BuildKit does without CNI).
    #[default]
    Host,
    /// No network: a namespace with loopback only.
    None,
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file's content.
    File(PathBuf),
    /// An environment variable of the build's own process.
    Env(String),
}

impl SecretSource {
    /// Reads the value (only when a step needs it).
    pub fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            SecretSource::File(p) => {
                std::fs::read(p).map_err(|e| format!("`{}`: {e}", p.display()))
            }
            SecretSource::Env(v) => std::env::var_os(v)
                .map(|x| x.to_string_lossy().into_owned().into_bytes())
                .ok_or_else(|| format!("the environment variable `{v}` is not set")),
        }
    }
}

/// A `--build-context` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory (`NAME=DIR`): `COPY --from=NAME` reads it.
    Dir(PathBuf),
    /// An image in the store (`NAME=docker-image://REF`), or one loaded from an OCI layout
    /// (`NAME=oci-layout://DIR[:TAG]`, named by its digest): `FROM NAME` and `COPY
    /// --from=NAME` use it.
    Image(String),
}

/// What a build made.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The manifest digest (the image ID users see).
    pub digest: String,
    /// The config digest.
    pub config_digest: String,
    /// The platform built.
    pub platform: Platform,
    /// The full references tagged.
    pub tags: Vec<String>,
    /// The build cache records this build used or made (step key → layer).
    pub cache: BTreeMap<String, crate::store::StepRecord>,
    /// BuildKit's end-of-build summary of lint findings (` 1 warning found:` …), empty when
    /// there are none.
    pub lint_summary: String,
    /// The isolation each Windows RUN step that ran got (cache hits decide nothing).
    pub isolation: Vec<IsolationRecord>,
}

/// Why a build stopped.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The Dockerfile does not parse.
    #[error(transparent)]
    Parse(#[from] dockerfile::ParseError),
    /// The Dockerfile does not check.
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Check(Vec<Diagnostic>),
    /// Lint findings are errors (`# check=error=true`).
    #[error("{report}\n{message}")]
    Lint {
        /// BuildKit's message (`lint violation found for rules: …`).
        message: String,
        /// The findings in BuildKit's text format.
        report: String,
    },
    /// An instruction cannot be carried out (the error quotes its line).
    #[error("{0}")]
    At(dockerfile::ParseError),
    /// Something outside an instruction cannot be carried out.
    #[error("{location}: {message}")]
    Step {
        /// `file:line`.
        location: String,
        /// What went wrong.
        message: String,
    },
    /// Image or store trouble.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Store trouble.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Pushing the result failed.
    #[error(transparent)]
    Push(#[from] crate::ops::registry::TransferError),
    /// Writing the result's archive failed.
    #[error("write `{path}`: {message}")]
    Export {
        /// The archive.
        path: PathBuf,
        /// Why.
        message: String,
    },
}
