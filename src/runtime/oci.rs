//! Steps in an OCI runtime (crun or runc) on Linux, as BuildKit's runc executor runs them.
//!
//! The runtime is chosen at run time (`--oci-runtime NAME|PATH`, or the first of `crun`,
//! `runc` that works here) and probed once per process: a real bundle with an (almost) empty
//! root is created and deleted. When the probe fails because cgroups are not delegated
//! (a read-only `/sys/fs/cgroup`), runc is run in its rootless cgroup mode (which tolerates
//! cgroup errors and needs no cgroup path) and crun with `--cgroup-manager=disabled`; when
//! `pivot_root` is refused (a ramdisk root), with `--no-pivot`.
//!
//! Each step runs on a thread of its own that first leaves the process's mount namespace:
//! the overlay root, the secrets' tmpfs and the private overlays of read-write binds are
//! mounted there, so they disappear with the step even if wcbuild dies, and nothing of it
//! is visible on the host. The runtime (`run`, foreground, stdio pipes) is started from that
//! thread; its output is read concurrently and handed to the caller's callback on the
//! calling thread. Dropping out of `run` (cancel, or a panic in the callback) kills and
//! deletes the container. Containers of earlier wcbuild processes that died are deleted at
//! the first probe.

use super::fsutil::{clean_stubs, mkdir_all_chown, record_stubs, resolve_in_root};
use super::overlay::{OverlayMount, copy_lowers, unmount};
use super::spec::{self, SpecInput, SpecMount};
use super::user;
use super::{
    Changes, MountKind, Network, OutputStream, Rootfs, RunOutcome, Runtime, RuntimeError, Step,
    Timings,
};
use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The runtimes tried, in order, when none is named.
pub const CANDIDATES: [&str; 2] = ["crun", "runc"];

/// How many output lines [`RunOutcome::tail`] keeps.
pub const TAIL_LINES: usize = 20;

const TAIL_LINE_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Runc,
    Crun,
    Other,
}

/// What the probe found out about a runtime binary.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Probed {
    version: String,
    /// Global flags (before the sub-command).
    global: Vec<String>,
    /// Flags of `create` / `run`.
    run_flags: Vec<String>,
    /// The spec may name a cgroup path.
    cgroups: bool,
    notes: Vec<String>,
    took: Duration,
}

/// An OCI runtime binary that works here.
#[derive(Debug, Clone)]
pub struct OciRuntime {
    binary: PathBuf,
    state: PathBuf,
    probed: Probed,
    force_copy: bool,
}

static PROBES: OnceLock<Mutex<HashMap<PathBuf, Result<Probed, String>>>> = OnceLock::new();
static LIVE: Mutex<Vec<(PathBuf, PathBuf, String)>> = Mutex::new(Vec::new());
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn flavor_of(binary: &Path) -> Flavor {
    match binary.file_name().and_then(|n| n.to_str()) {
        Some(n) if n.starts_with("crun") => Flavor::Crun,
        Some(n) if n.starts_with("runc") => Flavor::Runc,
        _ => Flavor::Other,
    }
}

/// The state directory of a runtime binary: `/run/wcbuild/<name>` (on tmpfs, as runtimes
/// want), else under the temporary directory.
fn state_dir(binary: &Path) -> PathBuf {
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "oci".into());
    for base in [
        PathBuf::from("/run/wcbuild"),
        std::env::temp_dir().join("wcbuild-run"),
    ] {
        let dir = base.join(&name);
        if fs::create_dir_all(&dir).is_ok() {
            let _ = fs::set_permissions(&base, fs::Permissions::from_mode(0o700));
            return dir;
        }
    }
    std::env::temp_dir().join(format!("wcbuild-run-{name}"))
}

fn new_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("wcbuild-{}-{n}-{:06x}", std::process::id(), t & 0xff_ffff)
}

/// Error messages from a runtime's `--log-format json` log.
fn log_errors(log: &Path) -> Vec<String> {
    let Ok(text) = fs::read_to_string(log) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| matches!(v["level"].as_str(), Some("error" | "fatal")))
        .filter_map(|v| v["msg"].as_str().map(str::to_string))
        .collect()
}

impl OciRuntime {
    /// The runtime to use: `choice` is a name looked up in `PATH` or a path; `None` takes
    /// the first of [`CANDIDATES`] that works here. Probed once per process.
    pub fn select(choice: Option<&str>) -> Result<OciRuntime, RuntimeError> {
        if let Some(c) = choice {
            let binary = if c.contains('/') {
                PathBuf::from(c)
            } else {
                find_in_path(c).ok_or_else(|| RuntimeError::Unusable {
                    binary: PathBuf::from(c),
                    reason: "not found in PATH".into(),
                })?
            };
            return Self::probe(&binary).map_err(|reason| RuntimeError::Unusable {
                binary: binary.clone(),
                reason,
            });
        }
        let mut why = Vec::new();
        for c in CANDIDATES {
            let Some(binary) = find_in_path(c) else {
                why.push(format!("{c}: not found in PATH"));
                continue;
            };
            match Self::probe(&binary) {
                Ok(mut rt) => {
                    for w in &why {
                        rt.probed
                            .notes
                            .insert(0, format!("{w}; using {}", binary.display()));
                    }
                    return Ok(rt);
                }
                Err(e) => why.push(format!("{}: {e}", binary.display())),
            }
        }
        Err(RuntimeError::NoRuntime(why.join("; ")))
    }

    fn probe(binary: &Path) -> Result<OciRuntime, String> {
        let binary =
            fs::canonicalize(binary).map_err(|e| format!("`{}`: {e}", binary.display()))?;
        let flavor = flavor_of(&binary);
        let state = state_dir(&binary);
        let probes = PROBES.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = probes.lock().unwrap_or_else(|e| e.into_inner());
        let result = map
            .entry(binary.clone())
            .or_insert_with(|| match remembered(&binary, &state) {
                // Probed by an earlier wcbuild on this boot, binary and mount namespace: only
                // the leftovers of killed builds are cleaned.
                Some(Ok(p)) => {
                    delete_stale(&binary, &state, &p.global);
                    Ok(p)
                }
                Some(Err(e)) => Err(e),
                None => {
                    let r = probe_binary(&binary, flavor, &state);
                    remember(&binary, &state, &r);
                    r
                }
            })
            .clone();
        result.map(|probed| OciRuntime {
            binary,
            state,
            probed,
            force_copy: false,
        })
    }

    /// Always copies the root file system instead of mounting overlayfs (for hosts where
    /// overlayfs misbehaves, and to test the fallback).
    pub fn force_copy(mut self, yes: bool) -> OciRuntime {
        self.force_copy = yes;
        self
    }

    /// The runtime binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// What the probe decided (e.g. running without cgroups), for the build's log.
    pub fn notes(&self) -> &[String] {
        &self.probed.notes
    }

    /// How long the probe took (once per process).
    pub fn probe_time(&self) -> Duration {
        self.probed.took
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.state);
        c.args(&self.probed.global);
        c
    }

    fn kill(&self, id: &str) {
        let _ = self
            .command()
            .args(["kill", id, "KILL"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn delete(&self, id: &str) {
        let _ = self
            .command()
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Kills every step container this process has running (for an interrupt handler).
pub fn abort_running() {
    let live = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
    for (binary, root, id) in live {
        kill_and_delete(&binary, &root, &[], &id);
    }
}

/// `BINARY --root STATE [GLOBAL…] kill ID KILL`, then `delete --force ID`, output discarded
/// (the container may be gone already).
fn kill_and_delete(binary: &Path, state: &Path, global: &[String], id: &str) {
    for args in [
        ["kill", id, "KILL"].as_slice(),
        ["delete", "--force", id].as_slice(),
    ] {
        let _ = Command::new(binary)
            .arg("--root")
            .arg(state)
            .args(global)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Deletes containers left by wcbuild processes that are gone: those the runtime lists, and
/// the directories of containers whose creation a kill cut short (no state the runtime can
/// load, so it neither lists nor deletes them), with their processes and cgroups.
fn delete_stale(binary: &Path, state: &Path, global: &[String]) {
    let mut ids: Vec<String> = Command::new(binary)
        .arg("--root")
        .arg(state)
        .args(global)
        .args(["list", "-q"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Ok(rd) = fs::read_dir(state) {
        ids.extend(
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        );
    }
    ids.sort();
    ids.dedup();
    for id in &ids {
        let Some(pid) = id
            .strip_prefix("wcbuild-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        kill_and_delete(binary, state, global, id);
        remove_stale_cgroups(id);
        let dir = state.join(id);
        if dir.exists() {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// Kills what is left in a stale container's cgroups (`/buildkit/ID`, in the unified
/// hierarchy or in each v1 controller) and removes them.
fn remove_stale_cgroups(id: &str) {
    let base = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![base.join("buildkit").join(id)];
    if let Ok(rd) = fs::read_dir(base) {
        dirs.extend(rd.flatten().map(|e| e.path().join("buildkit").join(id)));
    }
    for dir in dirs {
        if !dir.is_dir() {
            continue;
        }
        for _ in 0..20 {
            if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill(2) with a pid read from the stale container's cgroup.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
            if fs::remove_dir(&dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

fn cgroupns_supported() -> bool {
    Path::new("/proc/self/ns/cgroup").exists()
        && Path::new("/sys/fs/cgroup/cgroup.subtree_control").exists()
}

/// What a remembered probe holds good for: the binary as it is, the kernel and boot, the
/// mount namespace (and so the cgroup and /proc mounts it sees), the user.
fn fingerprint(binary: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(binary).ok()?;
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default().trim().to_string();
    let mnt_ns = fs::metadata("/proc/self/ns/mnt")
        .map(|m| m.ino())
        .unwrap_or(0);
    let cgroup_mounts: Vec<String> = read("/proc/self/mountinfo")
        .lines()
        .filter(|l| l.contains(" /sys/fs/cgroup"))
        .map(|l| l.split(' ').skip(4).take(2).collect::<Vec<_>>().join(" "))
        .collect();
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    Some(format!(
        "{} {} {} {} {} {} {} {}",
        binary.display(),
        m.len(),
        m.mtime_nsec() + m.mtime() * 1_000_000_000,
        read("/proc/sys/kernel/osrelease"),
        read("/proc/sys/kernel/random/boot_id"),
        mnt_ns,
        euid,
        cgroup_mounts.join(",")
    ))
}

/// Where a probe is remembered: beside the runtime's state directory (on tmpfs, so a reboot
/// forgets it).
fn probe_file(state: &Path) -> PathBuf {
    state.with_extension("probe.json")
}

fn remembered(binary: &Path, state: &Path) -> Option<Result<Probed, String>> {
    let bytes = fs::read(probe_file(state)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if v["fingerprint"].as_str()? != fingerprint(binary)? {
        return None;
    }
    if let Some(e) = v["refused"].as_str() {
        return Some(Err(e.to_string()));
    }
    serde_json::from_value(v["probed"].clone()).ok().map(Ok)
}

fn remember(binary: &Path, state: &Path, r: &Result<Probed, String>) {
    let Some(fp) = fingerprint(binary) else {
        return;
    };
    let body = match r {
        Ok(p) => serde_json::json!({"fingerprint": fp, "probed": p}),
        // A runtime that needs root is not remembered as refused: root may come later.
        Err(e) if e.contains("need root") => return,
        Err(e) => serde_json::json!({"fingerprint": fp, "refused": e}),
    };
    let path = probe_file(state);
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    if fs::write(&tmp, body.to_string()).is_ok() && fs::rename(&tmp, &path).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

fn probe_binary(binary: &Path, flavor: Flavor, state: &Path) -> Result<Probed, String> {
    let started = Instant::now();
    let version = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot execute: {e}"))?;
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("steps need root (rootless runtimes are not supported yet)".into());
    }
    // Beside the state directory, not in it: runtimes read every directory there as a
    // container.
    let dir = state.with_file_name(format!(
        "probe-{}-{}",
        state
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(&rootfs).map_err(|e| format!("`{}`: {e}", rootfs.display()))?;
    let exe = rootfs.join("p");
    fs::write(&exe, b"").map_err(|e| format!("`{}`: {e}", exe.display()))?;
    let _ = fs::set_permissions(&exe, fs::Permissions::from_mode(0o755));
    let hosts = dir.join("hosts");
    let _ = fs::write(&hosts, spec::hosts_file("", &[]).unwrap_or_default());
    let mut global: Vec<String> = Vec::new();
    let mut run_flags: Vec<String> = Vec::new();
    let mut cgroups = true;
    let mut notes = Vec::new();
    let mut result = Err(String::new());
    for _attempt in 0..3 {
        let id = new_id();
        let input = SpecInput {
            root: rootfs.display().to_string(),
            args: vec!["/p".into()],
            env: vec![],
            cwd: "/".into(),
            user: user::ExecUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![0],
            },
            hostname: "buildkitsandbox".into(),
            new_netns: true,
            cgroupns: cgroupns_supported(),
            cgroups_path: cgroups.then(|| format!("/buildkit/{id}")),
            resolv_conf: hosts.display().to_string(),
            hosts: hosts.display().to_string(),
            mounts: vec![],
            insecure: None,
        };
        let cfg = spec::config(&input);
        if let Err(e) = fs::write(dir.join("config.json"), cfg.to_string()) {
            return Err(format!("`{}`: {e}", dir.display()));
        }
        let log = dir.join("log.json");
        let _ = fs::remove_file(&log);
        // Not a pipe: the container's init keeps the runtime's stdio open until it is deleted.
        let errfile = dir.join("stderr");
        let errout =
            fs::File::create(&errfile).map_err(|e| format!("`{}`: {e}", errfile.display()))?;
        let status = Command::new(binary)
            .arg("--root")
            .arg(state)
            .arg("--log")
            .arg(&log)
            .args(["--log-format", "json"])
            .args(&global)
            .arg("create")
            .arg("--bundle")
            .arg(&dir)
            .args(&run_flags)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errout)
            .status()
            .map_err(|e| format!("cannot execute: {e}"))?;
        if status.success() {
            let _ = Command::new(binary)
                .arg("--root")
                .arg(state)
                .args(&global)
                .args(["delete", "--force", &id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            result = Ok(());
            break;
        }
        let mut msg = log_errors(&log).join("; ");
        let stderr = fs::read_to_string(&errfile)
            .unwrap_or_default()
            .trim()
            .to_string();
        if msg.is_empty() {
            msg = stderr;
        }
        let lower = msg.to_lowercase();
        result = Err(msg.clone());
        if lower.contains("cgroup") && cgroups && !lower.contains("hybrid") {
            cgroups = false;
            match flavor {
                Flavor::Crun => global.push("--cgroup-manager=disabled".into()),
                _ => global.extend(["--rootless".to_string(), "true".to_string()]),
            }
            notes.push(format!(
                "cgroups are not writable here ({msg}): steps run without cgroups of their own"
            ));
            continue;
        }
        if lower.contains("pivot_root") && !run_flags.iter().any(|f| f == "--no-pivot") {
            run_flags.push("--no-pivot".into());
            notes.push(format!(
                "pivot_root is refused here ({msg}): steps run with --no-pivot"
            ));
            continue;
        }
        break;
    }
    let _ = fs::remove_dir_all(&dir);
    result?;
    delete_stale(binary, state, &global);
    Ok(Probed {
        version,
        global,
        run_flags,
        cgroups,
        notes,
        took: started.elapsed(),
    })
}

enum Msg {
    Output(OutputStream, Vec<u8>),
}

/// Keeps the last lines of the output.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        for &b in data {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                self.lines.push_back(line);
                if self.lines.len() > TAIL_LINES {
                    self.lines.pop_front();
                }
            } else if self.partial.len() < TAIL_LINE_MAX {
                self.partial.push(b);
            }
        }
    }
    fn finish(mut self) -> Vec<String> {
        if !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&self.partial).into_owned();
            self.lines.push_back(line);
            if self.lines.len() > TAIL_LINES {
                self.lines.pop_front();
            }
        }
        self.lines.into()
    }
}

/// Kills and deletes the container unless the step ended normally.
struct KillGuard<'a> {
    rt: &'a OciRuntime,
    id: &'a str,
    armed: bool,
}

impl Drop for KillGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.rt.kill(self.id);
            self.rt.delete(self.id);
        }
    }
}

impl Runtime for OciRuntime {
    fn name(&self) -> String {
        if self.probed.version.is_empty() {
            self.binary.display().to_string()
        } else {
            format!("{} ({})", self.probed.version, self.binary.display())
        }
    }

    fn run(
        &self,
        rootfs: &Rootfs,
        step: &Step,
        output: &mut dyn FnMut(OutputStream, &[u8]),
    ) -> Result<RunOutcome, RuntimeError> {
        let started = Instant::now();
        let id = new_id();
        let (tx, rx) = mpsc::channel::<Msg>();
        let mut tail = Tail::default();
        let result = std::thread::scope(|s| {
            let worker = std::thread::Builder::new()
                .name("wcbuild-step".into())
                .spawn_scoped(s, || {
                    let r = Worker {
                        rt: self,
                        rootfs,
                        step,
                        id: &id,
                        tx,
                    }
                    .run();
                    if r.is_err() {
                        // Nothing may stay behind a failed step.
                        self.delete(&id);
                    }
                    r
                })
                .map_err(|e| RuntimeError::Io {
                    op: "start a thread for",
                    path: rootfs.scratch.clone(),
                    source: e,
                })?;
            let mut guard = KillGuard {
                rt: self,
                id: &id,
                armed: true,
            };
            let mut cancelled = false;
            loop {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(Msg::Output(stream, data)) => {
                        tail.push(&data);
                        output(stream, &data);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
                if step.cancel.is_cancelled() {
                    cancelled = true;
                    self.kill(&id);
                }
            }
            guard.armed = cancelled;
            let r = worker.join().unwrap_or_else(|_| {
                Err(RuntimeError::Invalid("the step's thread panicked".into()))
            });
            drop(guard);
            if cancelled {
                return Err(RuntimeError::Cancelled);
            }
            r
        });
        let (exit_code, changes, notes, mut timings) = result?;
        timings.total = started.elapsed();
        Ok(RunOutcome {
            exit_code,
            changes,
            tail: tail.finish(),
            notes,
            timings,
        })
    }
}

struct Worker<'a> {
    rt: &'a OciRuntime,
    rootfs: &'a Rootfs,
    step: &'a Step,
    id: &'a str,
    tx: mpsc::Sender<Msg>,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RuntimeError + use<> {
    let path = path.to_path_buf();
    move |source| RuntimeError::Io { op, path, source }
}

fn mkdir(p: &Path) -> Result<(), RuntimeError> {
    fs::create_dir(p).map_err(io_err("create", p))
}

/// A mount made on the step's thread (its private namespace), undone in reverse order.
enum Held {
    /// Unmounted by its own drop.
    #[allow(dead_code)]
    Overlay(OverlayMount),
    Tmpfs(PathBuf),
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Held::Tmpfs(p) = self {
            let _ = unmount(p);
        }
    }
}

fn mount_tmpfs(target: &Path, options: &str, noexec: bool) -> io::Result<()> {
    let t = super::fsutil::cstr(target)?;
    let o = std::ffi::CString::new(options).map_err(io::Error::other)?;
    // SAFETY: NUL-terminated strings.
    let r = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            t.as_ptr(),
            c"tmpfs".as_ptr(),
            (libc::MS_NODEV | libc::MS_NOSUID | if noexec { libc::MS_NOEXEC } else { 0 })
                as libc::c_ulong,
            o.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

type WorkerOut = (i32, Changes, Vec<String>, Timings);

impl Worker<'_> {
    fn run(self) -> Result<WorkerOut, RuntimeError> {
        let mut timings = Timings::default();
        let t0 = Instant::now();
        // Leave the process's mount namespace: everything mounted from here on is private to
        // this thread (and the runtime it starts) and goes away with it.
        // SAFETY: unshare and mount with constant arguments.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(RuntimeError::Unsupported(format!(
                    "cannot make a private mount namespace: {}",
                    io::Error::last_os_error()
                )));
            }
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                (libc::MS_REC | libc::MS_PRIVATE) as libc::c_ulong,
                std::ptr::null(),
            ) != 0
            {
                return Err(RuntimeError::Unsupported(format!(
                    "cannot make the mounts private: {}",
                    io::Error::last_os_error()
                )));
            }
        }
        let scratch = &self.rootfs.scratch;
        let mut notes = Vec::new();
        let mut held: Vec<Held> = Vec::new();
        // The root file system.
        let upper = scratch.join("upper");
        let (root, changes) = {
            let mut overlay_err = None;
            let mut result = None;
            if !self.rt.force_copy {
                let work = scratch.join("work");
                let merged = scratch.join("merged");
                mkdir(&upper)?;
                mkdir(&work)?;
                mkdir(&merged)?;
                let mut lowers = self.rootfs.lowers.clone();
                if lowers.is_empty() {
                    let empty = scratch.join("empty");
                    mkdir(&empty)?;
                    lowers.push(empty);
                }
                match OverlayMount::mount(&lowers, &upper, &work, &merged) {
                    Ok(m) => {
                        held.push(Held::Overlay(m));
                        result = Some((
                            merged,
                            Changes::Overlay {
                                upper: upper.clone(),
                                lowers: self.rootfs.lowers.clone(),
                            },
                        ));
                    }
                    Err(e) => {
                        overlay_err = Some(e.to_string());
                        let _ = fs::remove_dir(&upper);
                    }
                }
            }
            match result {
                Some(r) => r,
                None => {
                    notes.push(match overlay_err {
                        Some(e) => {
                            format!("overlayfs unavailable ({e}): copying the root file system")
                        }
                        None => "copying the root file system (overlayfs not used)".to_string(),
                    });
                    let root = scratch.join("root");
                    mkdir(&root)?;
                    let before = copy_lowers(&self.rootfs.lowers, &root)
                        .map_err(io_err("copy the layers into", &root))?;
                    (
                        root.clone(),
                        Changes::Snapshot {
                            root: root.clone(),
                            before,
                        },
                    )
                }
            }
        };
        timings.mount = t0.elapsed();
        let t1 = Instant::now();
        let step = self.step;
        if step.args.is_empty() {
            return Err(RuntimeError::Invalid("the step has no command".into()));
        }
        // Mount stubs: what the runtime creates for targets missing in the root.
        let mut targets = vec!["/etc/resolv.conf".to_string(), "/etc/hosts".to_string()];
        for m in &step.mounts {
            if matches!(m.kind, MountKind::SecretEnv { .. }) {
                continue;
            }
            if !m.target.starts_with('/') {
                return Err(RuntimeError::Invalid(format!(
                    "mount target `{}` is not absolute",
                    m.target
                )));
            }
            if Path::new(&m.target) == Path::new("/") {
                return Err(RuntimeError::Invalid("`/` cannot be a mount target".into()));
            }
            targets.push(m.target.clone());
        }
        let stubs = record_stubs(&root, &targets);
        let exec_user =
            user::resolve(&root, &step.user).map_err(|e| RuntimeError::User(e.to_string()))?;
        let cwd = if step.cwd.is_empty() {
            "/".to_string()
        } else if step.cwd.starts_with('/') {
            step.cwd.clone()
        } else {
            format!("/{}", step.cwd)
        };
        let cwd_host = resolve_in_root(&root, &cwd).map_err(|e| RuntimeError::Cwd {
            cwd: cwd.clone(),
            reason: e.to_string(),
        })?;
        if fs::metadata(&cwd_host).is_err() {
            mkdir_all_chown(&cwd_host, exec_user.uid, exec_user.gid).map_err(|e| {
                RuntimeError::Cwd {
                    cwd: cwd.clone(),
                    reason: e.to_string(),
                }
            })?;
        }
        let home = user::home_for(&root, exec_user.uid);
        let mut env = user::with_home(&step.env, &home);
        // Mounts.
        let mounts_dir = scratch.join("mounts");
        mkdir(&mounts_dir)?;
        let mut spec_mounts = Vec::new();
        let mut proxies = Vec::new();
        let mut first_ssh: Option<String> = None;
        for (i, m) in step.mounts.iter().enumerate() {
            let here = mounts_dir.join(i.to_string());
            let merr = |reason: String| RuntimeError::Mount {
                target: m.target.clone(),
                reason,
            };
            let bind = |source: &Path, opts: &[&str]| SpecMount {
                destination: m.target.clone(),
                kind: "bind".into(),
                source: source.display().to_string(),
                options: opts.iter().map(|s| s.to_string()).collect(),
            };
            match &m.kind {
                MountKind::Bind { source } => {
                    let meta = fs::metadata(source)
                        .map_err(|e| merr(format!("source `{}`: {e}", source.display())))?;
                    if m.readonly {
                        spec_mounts.push(bind(source, &["rbind", "ro"]));
                    } else if meta.is_dir() {
                        mkdir(&here)?;
                        let (u, w, t) =
                            (here.join("upper"), here.join("work"), here.join("merged"));
                        for d in [&u, &w, &t] {
                            mkdir(d)?;
                        }
                        match OverlayMount::mount(std::slice::from_ref(source), &u, &w, &t) {
                            Ok(o) => {
                                held.push(Held::Overlay(o));
                                spec_mounts.push(bind(&t, &["rbind"]));
                            }
                            Err(_) => {
                                let copy = here.join("copy");
                                mkdir(&copy)?;
                                copy_lowers(std::slice::from_ref(source), &copy).map_err(|e| {
                                    merr(format!("copy of `{}`: {e}", source.display()))
                                })?;
                                spec_mounts.push(bind(&copy, &["rbind"]));
                            }
                        }
                    } else {
                        mkdir(&here)?;
                        let copy = here.join("file");
                        fs::copy(source, &copy)
                            .map_err(|e| merr(format!("copy of `{}`: {e}", source.display())))?;
                        spec_mounts.push(bind(&copy, &["rbind"]));
                    }
                }
                MountKind::Cache { dir } => {
                    if !dir.is_dir() {
                        return Err(merr(format!(
                            "cache directory `{}` does not exist",
                            dir.display()
                        )));
                    }
                    let opts: &[&str] = if m.readonly {
                        &["rbind", "ro"]
                    } else {
                        &["rbind"]
                    };
                    spec_mounts.push(bind(dir, opts));
                }
                MountKind::Tmpfs { size } => {
                    let mut options = vec!["nosuid".to_string()];
                    if m.readonly {
                        options.push("ro".into());
                    }
                    if let Some(s) = size {
                        options.push(format!("size={s}"));
                    }
                    spec_mounts.push(SpecMount {
                        destination: m.target.clone(),
                        kind: "tmpfs".into(),
                        source: "tmpfs".into(),
                        options,
                    });
                }
                MountKind::Secret {
                    data,
                    mode,
                    uid,
                    gid,
                } => {
                    mkdir(&here)?;
                    let noexec = mode & 0o111 == 0;
                    mount_tmpfs(&here, "mode=0700", noexec)
                        .map_err(|e| merr(format!("tmpfs for the secret: {e}")))?;
                    held.push(Held::Tmpfs(here.clone()));
                    let file = here.join("secret");
                    fs::write(&file, data).map_err(|e| merr(format!("write the secret: {e}")))?;
                    super::fsutil::lchown(&file, *uid, *gid)
                        .map_err(|e| merr(format!("chown the secret: {e}")))?;
                    fs::set_permissions(&file, fs::Permissions::from_mode(mode & 0o7777))
                        .map_err(|e| merr(format!("chmod the secret: {e}")))?;
                    let mut o = vec!["ro", "rbind", "nodev", "nosuid"];
                    if noexec {
                        o.push("noexec");
                    }
                    spec_mounts.push(bind(&file, &o));
                }
                MountKind::SecretEnv { name, data } => {
                    let value = String::from_utf8(data.clone()).map_err(|_| {
                        RuntimeError::Invalid(format!("secret env `{name}` is not UTF-8"))
                    })?;
                    if name.is_empty() || name.contains('=') {
                        return Err(RuntimeError::Invalid(format!(
                            "secret env `{name}` is not a variable name"
                        )));
                    }
                    env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(name));
                    env.push(format!("{name}={value}"));
                }
                MountKind::Ssh {
                    socket,
                    mode,
                    uid,
                    gid,
                } => {
                    // Short (socket paths are limited to 108 bytes), beside the state
                    // directory.
                    let sock = self.rt.state.with_file_name(format!(
                        "{}-ssh{i}.sock",
                        self.id.trim_start_matches("wcbuild-")
                    ));
                    let proxy = SshProxy::start(socket, &sock, *mode, *uid, *gid)
                        .map_err(|e| merr(format!("agent socket `{}`: {e}", socket.display())))?;
                    proxies.push(proxy);
                    spec_mounts.push(bind(&sock, &["rbind"]));
                    if first_ssh.is_none() {
                        first_ssh = Some(m.target.clone());
                    }
                }
            }
        }
        if let Some(t) = first_ssh
            && !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK="))
        {
            env.push(format!("SSH_AUTH_SOCK={t}"));
        }
        // hosts and resolv.conf.
        let hosts = scratch.join("hosts");
        let text =
            spec::hosts_file(&step.hostname, &step.extra_hosts).map_err(RuntimeError::Invalid)?;
        write_0644(&hosts, text.as_bytes())?;
        let host_net = step.network == Network::Host;
        let etc = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let source = spec::resolv_source(host_net, &etc);
        let host_text = if source == "/etc/resolv.conf" {
            etc
        } else {
            fs::read_to_string(source).unwrap_or_default()
        };
        let resolv = scratch.join("resolv.conf");
        write_0644(&resolv, spec::resolv_conf(&host_text, host_net).as_bytes())?;
        let insecure = step.insecure.then(|| {
            (
                spec::current_caps(),
                spec::insecure_devices(spec::next_free_loop()),
            )
        });
        let hostname = if step.hostname.is_empty() {
            "buildkitsandbox".to_string()
        } else {
            step.hostname.clone()
        };
        let input = SpecInput {
            root: root.display().to_string(),
            args: step.args.clone(),
            env,
            cwd,
            user: exec_user,
            hostname,
            new_netns: !host_net,
            cgroupns: cgroupns_supported(),
            cgroups_path: self
                .rt
                .probed
                .cgroups
                .then(|| format!("/buildkit/{}", self.id)),
            resolv_conf: resolv.display().to_string(),
            hosts: hosts.display().to_string(),
            mounts: spec_mounts,
            insecure,
        };
        let bundle = scratch.join("bundle");
        mkdir(&bundle)?;
        let config = bundle.join("config.json");
        fs::write(&config, spec::config(&input).to_string()).map_err(io_err("write", &config))?;
        timings.bundle = t1.elapsed();
        // Run.
        let t2 = Instant::now();
        let log = bundle.join("log.json");
        let mut cmd = self.rt.command();
        cmd.arg("--log")
            .arg(&log)
            .args(["--log-format", "json"])
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .args(&self.rt.probed.run_flags)
            .arg(self.id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; the runtime dies with this thread.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        if let Ok(mut l) = LIVE.lock() {
            l.push((
                self.rt.binary.clone(),
                self.rt.state.clone(),
                self.id.to_string(),
            ));
        }
        let spawned = cmd.spawn();
        let status = match spawned {
            Ok(mut child) => {
                let out = child.stdout.take();
                let err = child.stderr.take();
                std::thread::scope(|s| {
                    if let Some(o) = out {
                        let tx = self.tx.clone();
                        s.spawn(move || pump(o, OutputStream::Stdout, tx));
                    }
                    if let Some(e) = err {
                        let tx = self.tx.clone();
                        s.spawn(move || pump(e, OutputStream::Stderr, tx));
                    }
                    child.wait()
                })
            }
            Err(e) => Err(e),
        };
        if let Ok(mut l) = LIVE.lock() {
            l.retain(|(_, _, id)| id != self.id);
        }
        let status = status.map_err(|e| RuntimeError::Start {
            binary: self.rt.binary.clone(),
            bundle: bundle.clone(),
            message: e.to_string(),
        })?;
        timings.runtime = t2.elapsed();
        let t3 = Instant::now();
        drop(proxies);
        clean_stubs(&root, &stubs);
        drop(held.drain(..).rev().collect::<Vec<_>>());
        let _ = fs::remove_dir_all(&mounts_dir);
        timings.cleanup = t3.elapsed();
        use std::os::unix::process::ExitStatusExt;
        let code = match (status.code(), status.signal()) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            _ => 255,
        };
        if code != 0 {
            let errors = log_errors(&log);
            if !errors.is_empty() {
                return Err(RuntimeError::Start {
                    binary: self.rt.binary.clone(),
                    bundle,
                    message: errors.join("; "),
                });
            }
        }
        Ok((code, changes, notes, timings))
    }
}

fn write_0644(path: &Path, data: &[u8]) -> Result<(), RuntimeError> {
    fs::write(path, data).map_err(io_err("write", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).map_err(io_err("chmod", path))
}

fn pump(mut r: impl Read, stream: OutputStream, tx: mpsc::Sender<Msg>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            // Keep draining when the caller is gone, so the process never blocks on a pipe.
            Ok(n) => {
                let _ = tx.send(Msg::Output(stream, buf[..n].to_vec()));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// Forwards connections from a socket owned as a mount asks to an SSH agent's socket.
struct SshProxy {
    path: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SshProxy {
    fn start(agent: &Path, path: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<SshProxy> {
        use std::os::unix::net::{UnixListener, UnixStream};
        if !agent.exists() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such socket"));
        }
        let _ = fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        super::fsutil::lchown(path, uid, gid)?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let agent = agent.to_path_buf();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(upstream) = UnixStream::connect(&agent) else {
                    continue;
                };
                let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
                    continue;
                };
                let (mut c1, mut u1) = (client, upstream);
                std::thread::spawn(move || {
                    let _ = io::copy(&mut c1, &mut u1);
                    let _ = u1.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = io::copy(&mut u2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Ok(SshProxy {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for SshProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}
