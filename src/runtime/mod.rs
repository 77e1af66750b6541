//! Running a `RUN` step in a container and handing back what it changed. This part owns the
//! step model ([`Step`], [`Mount`], [`Rootfs`]), the [`Runtime`] trait the build calls, and
//! its Linux implementation over an OCI runtime ([`oci::OciRuntime`]: crun or runc, probed);
//! the bundle as BuildKit writes it ([`spec`]), `USER` resolution ([`user`]), the root file
//! system (overlayfs or a copy, [`overlay`]); Windows steps through the Host Compute Service
//! ([`hcs`]: documents and call sequence portable, the calls themselves on Windows only);
//! any step through a Docker engine ([`docker`]: the Engine API over a unix socket, a named
//! pipe or TCP with TLS).
//!
//! It uses `image` and `layer` only and knows nothing of the store, the cache or Dockerfiles:
//! the caller unpacks the lower layers, resolves `--mount` sources and secrets, and turns
//! [`Changes`] into a layer with `layer::diff::write_overlay_changes` or
//! `write_snapshot_changes`. A step that exits non-zero is not an error here: the exit code
//! and the last output lines come back in [`RunOutcome`].

pub mod docker;
#[cfg(target_os = "linux")]
mod fsutil;
pub mod hcs;
#[cfg(target_os = "linux")]
pub mod oci;
#[cfg(target_os = "linux")]
pub mod overlay;
#[cfg(target_os = "linux")]
pub mod spec;
#[cfg(target_os = "linux")]
pub mod user;

pub use crate::image::Isolation;
pub use crate::layer::diff::Snapshot;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The root file system a step starts from.
#[derive(Debug, Clone)]
pub struct Rootfs {
    /// The layers, top first; each a directory holding one layer unpacked in overlayfs format
    /// (whiteouts are 0/0 character devices, opaque directories carry
    /// `trusted.overlay.opaque=y`). Empty for `FROM scratch`.
    pub lowers: Vec<PathBuf>,
    /// A private (0700) directory the runtime may use: upper, work, merged, bundle. What
    /// [`Changes`] names lives here; the caller removes it after writing the layer.
    pub scratch: PathBuf,
    /// The parent as an image, for runtimes that keep images of their own (a Docker engine);
    /// `None` for the others, which read [`Rootfs::lowers`].
    pub image: Option<ParentImage>,
}

/// What a runtime needs of the parent to start a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// The parent layers unpacked as directories ([`Rootfs::lowers`]).
    Lowers,
    /// The parent as an image the build can stream ([`Rootfs::image`]); no lowers.
    Image,
}

/// Writes an image archive (`wcbuild save --format docker`) into the writer given.
pub type SaveFn = dyn Fn(&mut dyn std::io::Write) -> std::io::Result<()> + Send + Sync;

/// The parent of a step as an image the build has in its store.
#[derive(Clone)]
pub struct ParentImage {
    /// The config digest (`sha256:…`): the image ID a Docker engine gives the image once it
    /// has loaded it.
    pub id: String,
    /// The layers' diff_ids, bottom first.
    pub diff_ids: Vec<String>,
    /// The layer blobs (any compression), bottom first, for runtimes that import layers
    /// themselves (the Host Compute Service).
    pub layers: Vec<LayerBlob>,
    /// `linux` or `windows`.
    pub os: String,
    /// `os.version` of a Windows image.
    pub os_version: Option<String>,
    /// Streams the image as `wcbuild save --format docker` writes it (its name is the
    /// archive's only tag, if any).
    pub save: Arc<SaveFn>,
}

/// One parent layer as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// `sha256:…` of the uncompressed tar.
    pub diff_id: String,
    /// The blob's file.
    pub path: PathBuf,
}

impl std::fmt::Debug for ParentImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParentImage")
            .field("id", &self.id)
            .field("diff_ids", &self.diff_ids)
            .field("os", &self.os)
            .field("os_version", &self.os_version)
            .finish_non_exhaustive()
    }
}

/// What a step may use of the machine: `--memory` and `--cpus` (the utility VM of a
/// Hyper-V step, the container's limits elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Resources {
    /// Memory in bytes.
    pub memory: Option<u64>,
    /// Processors (fractions allowed where the runtime takes them).
    pub cpus: Option<f64>,
}

/// The network a step gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// The host's network (standalone BuildKit's default).
    #[default]
    Host,
    /// A new network namespace with only the loopback interface, up.
    None,
}

/// Asks a running step to stop: its container is killed and [`Runtime::run`] returns
/// [`RuntimeError::Cancelled`].
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A token that is not cancelled.
    pub fn new() -> Cancel {
        Cancel::default()
    }
    /// Cancels every step holding this token (or a clone of it).
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// True once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// One `RUN`, with everything resolved.
#[derive(Debug, Clone, Default)]
pub struct Step {
    /// argv (the shell form already wrapped by the caller).
    pub args: Vec<String>,
    /// `KEY=value` entries, exactly as the process gets them (`HOME` is added when missing).
    pub env: Vec<String>,
    /// `USER` as written: `""` (root), `name`, `uid`, `name:group`, `uid:gid`.
    pub user: String,
    /// The working directory (absolute); created, owned by the user, when missing.
    pub cwd: String,
    /// Host name; BuildKit's is `buildkitsandbox` (the empty string means that too).
    pub hostname: String,
    /// Host or none.
    pub network: Network,
    /// `RUN --mount`s, in order.
    pub mounts: Vec<Mount>,
    /// `--security=insecure`: every capability, no masked paths, writable sysfs and cgroupfs,
    /// all devices allowed.
    pub insecure: bool,
    /// `--add-host` entries: `(host, ip)`.
    pub extra_hosts: Vec<(String, String)>,
    /// Stops the step from another thread.
    pub cancel: Cancel,
    /// The isolation decided for the step (`None`: the runtime's own default; Linux steps).
    pub isolation: Option<Isolation>,
    /// Memory and processors.
    pub resources: Resources,
}

/// One `RUN --mount`.
#[derive(Debug, Clone)]
pub struct Mount {
    /// Absolute path in the container (ignored for [`MountKind::SecretEnv`]).
    pub target: String,
    /// Read-only.
    pub readonly: bool,
    /// What is mounted.
    pub kind: MountKind,
}

/// What a mount is.
#[derive(Debug, Clone)]
pub enum MountKind {
    /// A host directory or file. Read-only, or read-write with the writes discarded (a
    /// private overlay over the source).
    Bind {
        /// The host path.
        source: PathBuf,
    },
    /// A persistent host directory, shared, writes kept.
    Cache {
        /// The host directory.
        dir: PathBuf,
    },
    /// A tmpfs (`nosuid`, the kernel's default size unless given).
    Tmpfs {
        /// Size in bytes.
        size: Option<u64>,
    },
    /// A file at the target holding `data`, on a private tmpfs (never on disk).
    Secret {
        /// The secret.
        data: Vec<u8>,
        /// File mode (BuildKit's default 0400).
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// An environment variable holding the secret.
    SecretEnv {
        /// The variable.
        name: String,
        /// The secret (UTF-8).
        data: Vec<u8>,
    },
    /// An SSH agent socket, forwarded through a socket owned as given.
    Ssh {
        /// The agent's socket on the host.
        socket: PathBuf,
        /// Socket mode (BuildKit's default 0600).
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
}

/// Which output stream bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// The process's stdout.
    Stdout,
    /// The process's stderr.
    Stderr,
}

/// What the step changed, for the layer writer.
#[derive(Debug, Clone)]
pub enum Changes {
    /// An overlayfs upper directory over the step's lowers:
    /// `layer::diff::write_overlay_changes(&upper, &lowers, …)`.
    Overlay {
        /// The upper directory.
        upper: PathBuf,
        /// The lowers, top first.
        lowers: Vec<PathBuf>,
    },
    /// A tree the step ran in, and its state before:
    /// `layer::diff::write_snapshot_changes(&root, &before, …)`.
    Snapshot {
        /// The tree.
        root: PathBuf,
        /// Its metadata before the step.
        before: Snapshot,
    },
    /// A layer tar the runtime's own differ made (a Docker engine's top layer; the Host
    /// Compute Service's exported writable layer), uncompressed, in the stage's format
    /// (Windows: `Files/`, `Hives/`, PAX Windows records). The caller re-writes it into its
    /// own layer, entry by entry, so the layer's checks apply to it.
    Layer {
        /// The tar file (in the step's scratch directory).
        tar: PathBuf,
        /// Paths (relative, `/`-separated) the caller leaves out: mount points the runtime
        /// had to create.
        skip: Vec<String>,
    },
}

/// Where a step's time went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timings {
    /// Mounting (or copying) the root file system.
    pub mount: Duration,
    /// User resolution, cwd, mounts, hosts, resolv.conf and config.json.
    pub bundle: Duration,
    /// The runtime, from its start to its exit.
    pub runtime: Duration,
    /// Stub removal and unmounting.
    pub cleanup: Duration,
    /// The whole of [`Runtime::run`].
    pub total: Duration,
}

/// How a step ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The process's exit code (128 + the signal when killed).
    pub exit_code: i32,
    /// What it changed.
    pub changes: Changes,
    /// The last lines of its output (stdout and stderr as they came).
    pub tail: Vec<String>,
    /// What the build should know, e.g. "overlayfs unavailable: copying the root file system".
    pub notes: Vec<String>,
    /// Where the time went.
    pub timings: Timings,
}

/// Why a step could not run (its own failure is an exit code, not an error).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No runtime that works here.
    #[error("no OCI runtime works here: {0}")]
    NoRuntime(String),
    /// The chosen runtime does not work here.
    #[error("OCI runtime `{binary}` does not work here: {reason}")]
    Unusable {
        /// The binary.
        binary: PathBuf,
        /// What the probe saw.
        reason: String,
    },
    /// The runtime failed to start the container.
    #[error("`{binary}` could not run the step (bundle `{bundle}`): {message}")]
    Start {
        /// The binary.
        binary: PathBuf,
        /// The bundle.
        bundle: PathBuf,
        /// The runtime's error.
        message: String,
    },
    /// Preparing a mount failed.
    #[error("mount `{target}`: {reason}")]
    Mount {
        /// The mount's target.
        target: String,
        /// Why.
        reason: String,
    },
    /// `USER` could not be resolved.
    #[error("{0}")]
    User(String),
    /// The working directory could not be created.
    #[error("failed to create working directory {cwd}: {reason}")]
    Cwd {
        /// The working directory.
        cwd: String,
        /// Why.
        reason: String,
    },
    /// An invalid step (arguments, extra hosts, environment).
    #[error("invalid step: {0}")]
    Invalid(String),
    /// A file system operation failed.
    #[error("{op} `{path}`: {source}")]
    Io {
        /// What.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Cancelled through [`Step::cancel`].
    #[error("the step was cancelled")]
    Cancelled,
    /// Not available on this system.
    #[error("{0}")]
    Unsupported(String),
    /// A Docker engine refused or failed a request.
    #[error("docker engine at {endpoint}: {message}")]
    Engine {
        /// `unix:///…`, `tcp://…`, `npipe://…`.
        endpoint: String,
        /// What it said (its own message verbatim).
        message: String,
    },
    /// A Host Compute Service call failed.
    #[error("{call}: {message}")]
    Hcs {
        /// The function (`HcsCreateComputeSystem`).
        call: &'static str,
        /// The HRESULT and the result document.
        message: String,
    },
}

/// Something that runs steps.
pub trait Runtime: Send + Sync {
    /// A name for messages (`runc 1.1.5 (/usr/sbin/runc)`).
    fn name(&self) -> String;
    /// What the runtime needs of the parent (the OCI runtime: unpacked lowers).
    fn needs(&self) -> Needs {
        Needs::Lowers
    }
    /// The Windows host steps would run on (the machine for the Host Compute Service, the
    /// engine's host for a Docker engine), for the isolation decision; `None` when steps do
    /// not run on Windows.
    fn windows_host(&self) -> Result<Option<crate::image::WindowsHost>, RuntimeError> {
        Ok(None)
    }
    /// Runs a step on `rootfs`, streaming its output to `output` as it comes.
    fn run(
        &self,
        rootfs: &Rootfs,
        step: &Step,
        output: &mut dyn FnMut(OutputStream, &[u8]),
    ) -> Result<RunOutcome, RuntimeError>;
}
