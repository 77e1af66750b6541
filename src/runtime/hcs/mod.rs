//! Windows RUN steps through the Host Compute Service. This part owns the call sequence of
//! one step and everything it hands the service: the parent layers imported once each
//! (converted from the store's tars to the service's transport folder, [`transport`]), a
//! writable layer, the schema v1 container (`HvPartition` for Hyper-V isolation, the
//! writable layer's volume for process isolation, [`docs`]), the process and its output,
//! the exit code, the writable layer exported and converted back to the Windows layer tar
//! the `layer` module re-writes and checks; mounts as mapped directories (cache, bind,
//! secrets), `--memory` and `--cpus` sizing the utility VM, long paths.
//!
//! The calls go through [`api::HcsApi`]: [`windows::WindowsHcs`] (Windows only) makes them
//! for real; [`fake::FakeHcs`] checks every argument against the documented shapes and
//! plays the service, so the sequence is tested for both isolations on any system. This
//! backend has not yet run on a real Windows host.

pub mod api;
pub mod docs;
pub mod fake;
pub mod transport;
#[cfg(windows)]
pub mod windows;

use super::{
    Changes, MountKind, Needs, OutputStream, Rootfs, RunOutcome, Runtime, RuntimeError, Step,
    Timings,
};
use crate::image::{Isolation, WindowsHost};
use api::{Handle, HcsApi, HcsError};
use docs::{ContainerDoc, LayerRef, MappedDir};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The utility VM's memory when `--memory` is not given, MiB (the service's own default,
/// 1 GiB, is too small for real builds).
pub const DEFAULT_UVM_MEMORY_MB: u64 = 2048;
/// The utility VM's processors when `--cpus` is not given.
pub const DEFAULT_UVM_PROCESSORS: u32 = 2;
/// Lines of output kept for a failed step's error.
const TAIL: usize = 20;

fn hcs(e: HcsError) -> RuntimeError {
    RuntimeError::Hcs {
        call: e.call,
        message: e.to_string(),
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + use<> {
    let path = path.to_path_buf();
    move |source| RuntimeError::Io { op, path, source }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Runs Windows steps through an [`HcsApi`].
pub struct HcsRuntime<A: HcsApi> {
    api: A,
    /// Where imported parent layers live, one folder per diff_id.
    layers_root: PathBuf,
    host: Option<WindowsHost>,
    /// Imports are made one at a time.
    import: Mutex<()>,
}

/// What a step made that must be undone, whatever happens.
struct Undo<'a, A: HcsApi> {
    api: &'a A,
    writable: Option<String>,
    attached: bool,
    system: Option<Handle>,
    process: Option<Handle>,
}

impl<A: HcsApi> Undo<'_, A> {
    fn close_system(&mut self, force: bool) -> Result<(), HcsError> {
        if let Some(p) = self.process.take() {
            if force {
                let _ = self.api.terminate_process(p);
            }
            self.api.close_process(p);
        }
        let mut r = Ok(());
        if let Some(sys) = self.system.take() {
            r = self.api.shut_down_compute_system(sys, force);
            self.api.close_compute_system(sys);
        }
        r
    }
    fn detach(&mut self) -> Result<(), HcsError> {
        if self.attached {
            self.attached = false;
            if let Some(w) = &self.writable {
                return self.api.detach_layer_storage_filter(w);
            }
        }
        Ok(())
    }
}

impl<A: HcsApi> Drop for Undo<'_, A> {
    fn drop(&mut self) {
        let _ = self.close_system(true);
        let _ = self.detach();
        if let Some(w) = self.writable.take() {
            let _ = self.api.destroy_layer(&w);
        }
    }
}

impl<A: HcsApi> HcsRuntime<A> {
    /// A runtime over `api`, importing parent layers under `layers_root`, running on
    /// `host` (for the isolation decision).
    pub fn new(api: A, layers_root: PathBuf, host: Option<WindowsHost>) -> HcsRuntime<A> {
        HcsRuntime {
            api,
            layers_root,
            host,
            import: Mutex::new(()),
        }
    }

    /// The API (the fake's record, in tests).
    pub fn api(&self) -> &A {
        &self.api
    }

    /// Imports the parents not imported yet (bottom first); returns them topmost first and
    /// the `UtilityVM` folder of the topmost one that has one.
    fn import_parents(
        &self,
        rootfs: &Rootfs,
    ) -> Result<(Vec<LayerRef>, Option<String>), RuntimeError> {
        let image = rootfs.image.as_ref().ok_or_else(|| {
            RuntimeError::Invalid("the Host Compute Service needs the parent's layers".into())
        })?;
        if image.layers.is_empty() {
            return Err(RuntimeError::Invalid(
                "a Windows step needs a base layer (FROM scratch cannot run)".into(),
            ));
        }
        let _one = self.import.lock().unwrap_or_else(|p| p.into_inner());
        fs::create_dir_all(&self.layers_root).map_err(io("create", &self.layers_root))?;
        let mut below: Vec<LayerRef> = Vec::new();
        let mut uvm = None;
        for (i, l) in image.layers.iter().enumerate() {
            let hex = l.diff_id.strip_prefix("sha256:").unwrap_or(&l.diff_id);
            if hex.is_empty() || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(RuntimeError::Invalid(format!(
                    "layer diff_id `{}` is not sha256",
                    l.diff_id
                )));
            }
            let folder = self.layers_root.join(hex);
            let done = self.layers_root.join(format!("{hex}.imported"));
            let has_uvm_marker = self.layers_root.join(format!("{hex}.uvm"));
            let r = LayerRef {
                path: s(&folder),
                id: docs::layer_id(hex),
            };
            if !done.exists() {
                let _ = fs::remove_dir_all(&folder);
                let staging = rootfs.scratch.join(format!("import-{i}"));
                let _ = fs::remove_dir_all(&staging);
                let blob = fs::File::open(&l.path).map_err(io("open", &l.path))?;
                let has = transport::tar_to_folder(std::io::BufReader::new(blob), &staging)
                    .map_err(|e| RuntimeError::Invalid(format!("layer {}: {e}", l.diff_id)))?;
                self.api
                    .import_layer(&r.path, &s(&staging), &docs::layer_data(&below))
                    .map_err(hcs)?;
                if i == 0 {
                    self.api
                        .setup_base_os_layer(&r.path, &docs::base_layer_options())
                        .map_err(hcs)?;
                }
                let _ = fs::remove_dir_all(&staging);
                if has {
                    fs::write(&has_uvm_marker, b"").map_err(io("write", &has_uvm_marker))?;
                }
                fs::write(&done, b"").map_err(io("write", &done))?;
            }
            if has_uvm_marker.exists() {
                uvm = Some(s(&folder.join("UtilityVM")));
            }
            below.insert(0, r);
        }
        Ok((below, uvm))
    }

    /// Mapped directories (and extra environment) for the step's mounts.
    fn mapped(
        &self,
        step: &Step,
        scratch: &Path,
    ) -> Result<(Vec<MappedDir>, Vec<String>), RuntimeError> {
        let mut dirs: Vec<MappedDir> = Vec::new();
        let mut env = Vec::new();
        let mut secret_dirs: Vec<(String, PathBuf)> = Vec::new();
        for m in &step.mounts {
            let target = docs::container_path(&m.target);
            match &m.kind {
                MountKind::Bind { source } | MountKind::Cache { dir: source } => {
                    let meta = fs::metadata(source).map_err(io("stat", source))?;
                    if !meta.is_dir() {
                        return Err(RuntimeError::Mount {
                            target: m.target.clone(),
                            reason: "Windows containers map directories, not single files: mount the file's directory".into(),
                        });
                    }
                    let readonly = match m.kind {
                        // BuildKit discards a read-write bind's writes; the service cannot,
                        // so the step gets it read-only.
                        MountKind::Bind { .. } => true,
                        _ => m.readonly,
                    };
                    dirs.push(MappedDir {
                        host: s(source),
                        container: target,
                        readonly,
                    });
                }
                MountKind::Secret { data, .. } => {
                    // A file in a private directory mapped read-only at the target's parent.
                    let (parent, name) = match target.rsplit_once('\\') {
                        Some((p, n)) if !n.is_empty() => (p.to_string(), n.to_string()),
                        _ => {
                            return Err(RuntimeError::Mount {
                                target: m.target.clone(),
                                reason: "a secret needs a file path".into(),
                            });
                        }
                    };
                    let dir = match secret_dirs
                        .iter()
                        .find(|(p, _)| p.eq_ignore_ascii_case(&parent))
                    {
                        Some((_, d)) => d.clone(),
                        None => {
                            let d = scratch.join(format!("secrets-{}", secret_dirs.len()));
                            fs::create_dir_all(&d).map_err(io("create", &d))?;
                            secret_dirs.push((parent.clone(), d.clone()));
                            dirs.push(MappedDir {
                                host: s(&d),
                                container: parent.clone(),
                                readonly: true,
                            });
                            d
                        }
                    };
                    let f = dir.join(&name);
                    fs::write(&f, data).map_err(io("write", &f))?;
                }
                MountKind::SecretEnv { name, data } => {
                    env.push(format!("{name}={}", String::from_utf8_lossy(data)));
                }
                MountKind::Tmpfs { .. } => {
                    return Err(RuntimeError::Mount {
                        target: m.target.clone(),
                        reason: "Windows containers have no tmpfs".into(),
                    });
                }
                MountKind::Ssh { .. } => {
                    return Err(RuntimeError::Mount {
                        target: m.target.clone(),
                        reason: "SSH agent forwarding is not supported on Windows stages".into(),
                    });
                }
            }
        }
        Ok((dirs, env))
    }
}

/// The runtime for Windows steps on this host: the real service (`layers_root` holds the
/// imported parents).
#[cfg(windows)]
pub fn host_runtime(
    layers_root: PathBuf,
    host: Option<WindowsHost>,
) -> Result<Arc<dyn Runtime>, RuntimeError> {
    Ok(Arc::new(HcsRuntime::new(
        windows::WindowsHcs::new()?,
        layers_root,
        host,
    )))
}

/// The runtime for Windows steps on this host: none off Windows.
#[cfg(not(windows))]
pub fn host_runtime(
    _layers_root: PathBuf,
    _host: Option<WindowsHost>,
) -> Result<Arc<dyn Runtime>, RuntimeError> {
    Err(RuntimeError::Unsupported(
        "the Host Compute Service (--runtime hcs) runs on Windows only; on this host a Windows RUN needs a Docker engine on Windows (--runtime docker, --docker-host)".into(),
    ))
}

impl<A: HcsApi + 'static> Runtime for HcsRuntime<A> {
    fn name(&self) -> String {
        format!("the Host Compute Service ({})", self.api.name())
    }

    fn needs(&self) -> Needs {
        Needs::Image
    }

    fn windows_host(&self) -> Result<Option<WindowsHost>, RuntimeError> {
        Ok(self.host)
    }

    fn run(
        &self,
        rootfs: &Rootfs,
        step: &Step,
        output: &mut dyn FnMut(OutputStream, &[u8]),
    ) -> Result<RunOutcome, RuntimeError> {
        let started = Instant::now();
        let mut timings = Timings::default();
        let hyperv = match step.isolation {
            Some(Isolation::Process) => false,
            Some(Isolation::HyperV) => true,
            _ => {
                return Err(RuntimeError::Invalid(
                    "a Windows step needs its isolation decided (process or hyperv)".into(),
                ));
            }
        };
        let mut notes = Vec::new();
        if step.network == super::Network::Host {
            notes.push("the step runs without a network: the Host Compute Service backend attaches no HNS endpoint yet".to_string());
        }
        let (parents, uvm) = self.import_parents(rootfs)?;
        let utility_vm = if hyperv {
            Some(uvm.ok_or_else(|| {
                RuntimeError::Invalid(
                    "Hyper-V isolation needs a utility VM, and no parent layer has one (UtilityVM/)".into(),
                )
            })?)
        } else {
            None
        };
        timings.mount = started.elapsed();
        let layer_data = docs::layer_data(&parents);
        let writable = rootfs.scratch.join("writable");
        let (mapped, extra_env) = self.mapped(step, &rootfs.scratch)?;
        let mut undo = Undo {
            api: &self.api,
            writable: None,
            attached: false,
            system: None,
            process: None,
        };
        self.api
            .initialize_writable_layer(&s(&writable), &layer_data, "")
            .map_err(hcs)?;
        undo.writable = Some(s(&writable));
        let volume = if hyperv {
            None
        } else {
            self.api
                .attach_layer_storage_filter(&s(&writable), &layer_data)
                .map_err(hcs)?;
            undo.attached = true;
            Some(self.api.layer_mount_path(&s(&writable)).map_err(hcs)?)
        };
        let name = {
            use sha2::Digest;
            let seed = format!("{} {:?} {}", s(&writable), started, std::process::id());
            docs::guid_of(&sha2::Sha256::digest(seed.as_bytes()))
        };
        let (memory_mb, processors) = match (hyperv, step.resources.memory, step.resources.cpus) {
            (true, m, c) => (
                Some(
                    m.map(|b| b.div_ceil(1 << 20))
                        .unwrap_or(DEFAULT_UVM_MEMORY_MB),
                ),
                Some(
                    c.map(|c| c.ceil().max(1.0) as u32)
                        .unwrap_or(DEFAULT_UVM_PROCESSORS),
                ),
            ),
            (false, m, c) => (
                m.map(|b| b.div_ceil(1 << 20)),
                c.map(|c| c.ceil().max(1.0) as u32),
            ),
        };
        let config = docs::container_config(&ContainerDoc {
            name: name.clone(),
            owner: "wcbuild".into(),
            hostname: if step.hostname.is_empty() {
                "buildkitsandbox".into()
            } else {
                step.hostname.clone()
            },
            writable: s(&writable),
            volume,
            layers: parents.clone(),
            utility_vm,
            mapped,
            memory_mb,
            processors,
        });
        let mut env = step.env.clone();
        env.extend(extra_env);
        let params = docs::process_parameters(&step.args, &step.user, &step.cwd, &env)
            .map_err(RuntimeError::Invalid)?;
        timings.bundle = started.elapsed() - timings.mount;
        let run_started = Instant::now();
        let sys = self
            .api
            .create_compute_system(&name, &config)
            .map_err(hcs)?;
        undo.system = Some(sys);
        self.api.start_compute_system(sys, "").map_err(hcs)?;
        let (proc_, pipes) = self.api.create_process(sys, &params).map_err(hcs)?;
        undo.process = Some(proc_);
        // Both pipes read at once, so neither fills while the other is read.
        let (tx, rx) = std::sync::mpsc::channel::<(OutputStream, Vec<u8>)>();
        let mut readers = Vec::new();
        for (which, mut r) in [
            (OutputStream::Stdout, pipes.stdout),
            (OutputStream::Stderr, pipes.stderr),
        ] {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 32 << 10];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 || tx.send((which, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }));
        }
        drop(tx);
        let mut tail: Vec<String> = Vec::new();
        let mut partial = [Vec::new(), Vec::new()];
        loop {
            if step.cancel.is_cancelled() {
                let _ = undo.close_system(true);
                return Err(RuntimeError::Cancelled);
            }
            match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok((which, data)) => {
                    output(which, &data);
                    let buf = &mut partial[(which == OutputStream::Stderr) as usize];
                    buf.extend_from_slice(&data);
                    while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=i).collect();
                        tail.push(
                            String::from_utf8_lossy(&line[..line.len() - 1])
                                .trim_end_matches('\r')
                                .to_string(),
                        );
                        if tail.len() > TAIL {
                            tail.remove(0);
                        }
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        for r in readers {
            let _ = r.join();
        }
        for b in &partial {
            if !b.is_empty() {
                tail.push(String::from_utf8_lossy(b).into_owned());
            }
        }
        let exit_code = self
            .api
            .wait_for_process_exit(proc_, u32::MAX)
            .map_err(hcs)?;
        timings.runtime = run_started.elapsed();
        let cleanup_started = Instant::now();
        // The container stops before its layer is exported.
        undo.close_system(false).map_err(hcs)?;
        undo.detach().map_err(hcs)?;
        let skip: Vec<String> = step
            .mounts
            .iter()
            .filter(|m| !matches!(m.kind, MountKind::SecretEnv { .. }))
            .map(|m| {
                let p = docs::container_path(&m.target);
                p[3..].replace('\\', "/")
            })
            .collect();
        let changes = if exit_code == 0 {
            let folder = rootfs.scratch.join("export");
            let _ = fs::remove_dir_all(&folder);
            self.api
                .export_layer(
                    &s(&writable),
                    &s(&folder),
                    &layer_data,
                    &docs::export_options(),
                )
                .map_err(hcs)?;
            let tar = rootfs.scratch.join("hcs-layer.tar");
            let mut f =
                std::io::BufWriter::new(fs::File::create(&tar).map_err(io("create", &tar))?);
            transport::folder_to_tar(&folder, &mut f).map_err(|e| {
                RuntimeError::Invalid(format!("the exported layer `{}`: {e}", folder.display()))
            })?;
            std::io::Write::flush(&mut f).map_err(io("write", &tar))?;
            Changes::Layer { tar, skip }
        } else {
            Changes::Layer {
                tar: PathBuf::new(),
                skip,
            }
        };
        drop(undo);
        timings.cleanup = cleanup_started.elapsed();
        timings.total = started.elapsed();
        Ok(RunOutcome {
            exit_code,
            changes,
            tail,
            notes,
            timings,
        })
    }
}
