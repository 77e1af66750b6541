//! A Host Compute Service that runs nowhere and checks everything: each call's arguments
//! against the shapes the service documents (absolute paths, GUIDs, schema 2.1 layer data
//! naming only imported layers topmost first, a schema v1 container whose layers, writable
//! folder, volume or utility VM agree with the storage calls made before, process
//! parameters with pipes), and the order of the calls (a process only in a started system,
//! an export only after the system is closed and the filter detached, every handle closed
//! and the writable layer destroyed at the end). A call that breaks a rule fails with
//! `E_INVALIDARG` and the rule it broke, and is kept in [`FakeHcs::violations`].
//!
//! It plays the service too: imports copy the transport folder into the layer folder, the
//! process writes what its [`FakeScript`] says, and the export writes those changes as a
//! transport folder.

use super::api::{Handle, HcsApi, HcsError, ProcessIo};
use super::docs;
use super::transport::{self, BACKUP_DATA, BACKUP_SECURITY_DATA, Stream};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// `E_INVALIDARG`.
pub const E_INVALIDARG: u32 = 0x8007_0057;

/// What the fake's processes do.
#[derive(Debug, Clone, Default)]
pub struct FakeScript {
    /// Written on standard output.
    pub stdout: Vec<u8>,
    /// Written on standard error.
    pub stderr: Vec<u8>,
    /// The exit code.
    pub exit_code: i32,
    /// Files the process writes (`app/x.txt` under `C:\`).
    pub files: Vec<(String, Vec<u8>)>,
    /// Paths it deletes.
    pub deletes: Vec<String>,
    /// A file the process writes holding its process parameters (the JSON it was given).
    pub record_params: Option<String>,
}

/// One call as made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The function.
    pub name: &'static str,
    /// Its string arguments, in order.
    pub args: Vec<String>,
}

#[derive(Default)]
struct Writable {
    path: String,
    layer_data: Value,
    attached: bool,
    mount: Option<String>,
    exported: bool,
}

#[derive(Default)]
struct System {
    started: bool,
    shut: bool,
    closed: bool,
    params: Option<String>,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    violations: Vec<String>,
    /// Imported layers in import order.
    imported: Vec<String>,
    base: Vec<String>,
    writables: Vec<Writable>,
    systems: BTreeMap<Handle, System>,
    processes: BTreeMap<Handle, (Handle, bool)>,
    next: Handle,
    /// What read-only mapped directories held when the system was created (host path →
    /// file name → content).
    mapped_seen: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

/// The checking fake.
pub struct FakeHcs {
    script: FakeScript,
    state: Mutex<State>,
    /// Layer folders an earlier fake imported (found on disk) count as imported.
    adopt: bool,
}

fn invalid(call: &'static str, why: String) -> HcsError {
    HcsError {
        call,
        code: E_INVALIDARG,
        result: why,
    }
}

fn abs(p: &str) -> bool {
    Path::new(p).is_absolute() || p.starts_with(r"\\?\") || (p.len() > 2 && &p[1..3] == ":\\")
}

impl FakeHcs {
    /// A fake whose processes do what `script` says.
    pub fn new(script: FakeScript) -> FakeHcs {
        FakeHcs {
            script,
            state: Mutex::new(State {
                next: 1,
                ..State::default()
            }),
            adopt: false,
        }
    }

    /// A fake that takes layer folders an earlier fake imported into the same place (a
    /// store used by several builds) as imported, the bottom one set up as a base.
    pub fn adopting(script: FakeScript) -> FakeHcs {
        FakeHcs {
            adopt: true,
            ..FakeHcs::new(script)
        }
    }

    /// Adopts the layers `layer_data` names that exist on disk but this fake never saw.
    fn adopt_from(&self, st: &mut State, layer_data: &str) {
        if !self.adopt {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(layer_data) else {
            return;
        };
        let paths: Vec<String> = v["Layers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["Path"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        // Bottom up: each unknown folder found on disk goes right above the layer below it.
        let mut pos = 0;
        for (i, p) in paths.iter().rev().enumerate() {
            if let Some(at) = st.imported.iter().position(|q| q == p) {
                pos = at + 1;
            } else if Path::new(p).join("Files").is_dir() {
                st.imported.insert(pos, p.clone());
                pos += 1;
                if i == 0 {
                    st.base.push(p.clone());
                }
            }
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call made, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.st().calls.clone()
    }

    /// The names of the calls made, in order.
    pub fn call_names(&self) -> Vec<&'static str> {
        self.st().calls.iter().map(|c| c.name).collect()
    }

    /// Every rule a call broke.
    pub fn violations(&self) -> Vec<String> {
        self.st().violations.clone()
    }

    /// What read-only mapped directories held while the process ran.
    pub fn mapped_seen(&self) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
        self.st().mapped_seen.clone()
    }

    /// The process parameters of the last process.
    pub fn last_params(&self) -> Option<Value> {
        self.st()
            .systems
            .values()
            .rev()
            .find_map(|s| s.params.clone())
            .and_then(|p| serde_json::from_str(&p).ok())
    }

    /// Ok when every handle was closed, every filter detached and every writable layer
    /// destroyed; else what was left.
    pub fn finished_cleanly(&self) -> Result<(), String> {
        let st = self.st();
        let mut left = Vec::new();
        for (h, s) in &st.systems {
            if !s.closed {
                left.push(format!("compute system {h} not closed"));
            }
        }
        for (h, (_, closed)) in &st.processes {
            if !closed {
                left.push(format!("process {h} not closed"));
            }
        }
        for w in &st.writables {
            if w.attached {
                left.push(format!("filter on `{}` not detached", w.path));
            }
            if Path::new(&w.path).exists() {
                left.push(format!("writable layer `{}` not destroyed", w.path));
            }
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(left.join("; "))
        }
    }

    /// Records the call; on a broken rule records it and fails.
    fn check(
        &self,
        st: &mut State,
        name: &'static str,
        args: &[&str],
        rule: impl FnOnce(&mut State) -> Result<(), String>,
    ) -> Result<(), HcsError> {
        st.calls.push(Call {
            name,
            args: args.iter().map(|s| s.to_string()).collect(),
        });
        for a in args.iter().filter(|a| a.contains("\"SchemaVersion\"")) {
            self.adopt_from(st, a);
        }
        rule(st).map_err(|why| {
            st.violations.push(format!("{name}: {why}"));
            invalid(name, why)
        })
    }
}

/// Checks schema 2.1 layer data: ids, absolute imported paths, topmost first.
fn check_layer_data(st: &State, data: &str) -> Result<Value, String> {
    let v: Value =
        serde_json::from_str(data).map_err(|e| format!("layer data is not JSON: {e}"))?;
    if v["SchemaVersion"] != serde_json::json!({"Major": 2, "Minor": 1}) {
        return Err(format!(
            "layer data SchemaVersion is not 2.1: {}",
            v["SchemaVersion"]
        ));
    }
    let layers = v["Layers"]
        .as_array()
        .ok_or("layer data has no Layers array")?;
    let mut last: Option<usize> = None;
    for l in layers {
        let id = l["Id"].as_str().unwrap_or("");
        let path = l["Path"].as_str().unwrap_or("");
        if !docs::is_guid(id) {
            return Err(format!("layer Id `{id}` is not a GUID"));
        }
        if l["PathType"] != "AbsolutePath" || !abs(path) {
            return Err(format!("layer Path `{path}` is not an absolute path"));
        }
        let base = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if id != docs::layer_id(&base) {
            return Err(format!("layer Id `{id}` is not the id of `{path}`"));
        }
        let at = st
            .imported
            .iter()
            .position(|p| p == path)
            .ok_or_else(|| format!("layer `{path}` was never imported"))?;
        if let Some(prev) = last
            && at >= prev
        {
            return Err(format!("layers are not topmost first at `{path}`"));
        }
        last = Some(at);
    }
    Ok(v)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)?.flatten() {
        let (f, t) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_dir(&f, &t)?;
        } else {
            fs::copy(&f, &t)?;
        }
    }
    Ok(())
}

impl HcsApi for FakeHcs {
    fn name(&self) -> String {
        "a checking fake".into()
    }

    fn import_layer(&self, layer: &str, source: &str, layer_data: &str) -> Result<(), HcsError> {
        let mut st = self.st();
        self.check(
            &mut st,
            "HcsImportLayer",
            &[layer, source, layer_data],
            |st| {
                if !abs(layer) || !abs(source) {
                    return Err("paths must be absolute".into());
                }
                if st.imported.iter().any(|p| p == layer) {
                    return Err(format!("`{layer}` is imported already"));
                }
                if !Path::new(source).join("Files").is_dir() {
                    return Err(format!("`{source}` has no Files folder"));
                }
                let v = check_layer_data(st, layer_data)?;
                // The parents named are every layer imported before it in this chain.
                let n = v["Layers"].as_array().map(Vec::len).unwrap_or(0);
                if n == 0 && !st.imported.is_empty() && st.base.is_empty() {
                    return Err("a base layer was imported without HcsSetupBaseOSLayer".into());
                }
                copy_dir(Path::new(source), Path::new(layer))
                    .map_err(|e| format!("copying `{source}`: {e}"))?;
                st.imported.push(layer.to_string());
                Ok(())
            },
        )
    }

    fn setup_base_os_layer(&self, layer: &str, options: &str) -> Result<(), HcsError> {
        let mut st = self.st();
        self.check(&mut st, "HcsSetupBaseOSLayer", &[layer, options], |st| {
            if st.imported.last().map(String::as_str) != Some(layer) {
                return Err(format!("`{layer}` is not the layer just imported"));
            }
            let o: Value = serde_json::from_str(options).map_err(|e| format!("options: {e}"))?;
            if o["Type"] != "Container" {
                return Err(format!(
                    "options Type is {} (a container base is \"Container\")",
                    o["Type"]
                ));
            }
            st.base.push(layer.to_string());
            Ok(())
        })
    }

    fn initialize_writable_layer(
        &self,
        writable: &str,
        layer_data: &str,
        options: &str,
    ) -> Result<(), HcsError> {
        let mut st = self.st();
        self.check(
            &mut st,
            "HcsInitializeWritableLayer",
            &[writable, layer_data, options],
            |st| {
                if !abs(writable) {
                    return Err("the writable layer path must be absolute".into());
                }
                if Path::new(writable).exists() {
                    return Err(format!("`{writable}` exists already"));
                }
                let v = check_layer_data(st, layer_data)?;
                if v["Layers"].as_array().is_none_or(Vec::is_empty) {
                    return Err("a writable layer needs its parents".into());
                }
                let bottom = v["Layers"]
                    .as_array()
                    .and_then(|a| a.last())
                    .and_then(|l| l["Path"].as_str())
                    .unwrap_or("");
                if !st.base.iter().any(|b| b == bottom) {
                    return Err(format!(
                        "the bottom layer `{bottom}` was not set up as a base layer"
                    ));
                }
                fs::create_dir_all(writable).map_err(|e| e.to_string())?;
                st.writables.push(Writable {
                    path: writable.to_string(),
                    layer_data: v,
                    ..Default::default()
                });
                Ok(())
            },
        )
    }

    fn attach_layer_storage_filter(&self, layer: &str, layer_data: &str) -> Result<(), HcsError> {
        let mut st = self.st();
        self.check(
            &mut st,
            "HcsAttachLayerStorageFilter",
            &[layer, layer_data],
            |st| {
                let v = check_layer_data(st, layer_data)?;
                let w = st
                    .writables
                    .iter_mut()
                    .find(|w| w.path == layer)
                    .ok_or_else(|| format!("`{layer}` is not an initialized writable layer"))?;
                if w.attached {
                    return Err("attached twice".into());
                }
                if w.layer_data != v {
                    return Err("the layer data differs from the writable layer's".into());
                }
                w.attached = true;
                Ok(())
            },
        )
    }

    fn layer_mount_path(&self, layer: &str) -> Result<String, HcsError> {
        let mut st = self.st();
        let vol = format!("\\\\?\\Volume{{{}}}\\", docs::layer_id(layer));
        let v2 = vol.clone();
        self.check(&mut st, "GetLayerMountPath", &[layer], |st| {
            let w = st
                .writables
                .iter_mut()
                .find(|w| w.path == layer)
                .ok_or_else(|| format!("`{layer}` is not a writable layer"))?;
            if !w.attached {
                return Err("the filter is not attached".into());
            }
            w.mount = Some(v2);
            Ok(())
        })?;
        Ok(vol)
    }

    fn detach_layer_storage_filter(&self, layer: &str) -> Result<(), HcsError> {
        let mut st = self.st();
        self.check(&mut st, "HcsDetachLayerStorageFilter", &[layer], |st| {
            let open = st.systems.values().any(|s| !s.closed);
            let w = st
                .writables
                .iter_mut()
                .find(|w| w.path == layer)
                .ok_or_else(|| format!("`{layer}` is not a writable layer"))?;
            if !w.attached {
                return Err("the filter is not attached".into());
            }
            if open {
                return Err("detached while a compute system is open".into());
            }
            w.attached = false;
            Ok(())
        })
    }

    fn create_compute_system(&self, id: &str, config: &str) -> Result<Handle, HcsError> {
        let mut st = self.st();
        let h = st.next;
        self.check(&mut st, "HcsCreateComputeSystem", &[id, config], |st| {
            if !docs::is_guid(id) {
                return Err(format!("id `{id}` is not a GUID"));
            }
            let c: Value = serde_json::from_str(config).map_err(|e| format!("configuration is not JSON: {e}"))?;
            if c["SystemType"] != "Container" || c["Name"] != id {
                return Err("SystemType must be Container and Name the id".into());
            }
            if c["Owner"].as_str().is_none_or(str::is_empty) {
                return Err("no Owner".into());
            }
            let folder = c["LayerFolderPath"].as_str().unwrap_or("");
            let w = st.writables.iter().find(|w| w.path == folder).ok_or_else(|| format!("LayerFolderPath `{folder}` is not an initialized writable layer"))?;
            let want: Vec<Value> = w.layer_data["Layers"].as_array().cloned().unwrap_or_default().iter().map(|l| serde_json::json!({"ID": l["Id"], "Path": l["Path"]})).collect();
            if c["Layers"].as_array() != Some(&want) {
                return Err(format!("Layers {} are not the writable layer's parents {}", c["Layers"], Value::Array(want)));
            }
            let hv = c["HvPartition"].as_bool().ok_or("HvPartition must be a boolean")?;
            if hv {
                if c.get("VolumePath").is_some() {
                    return Err("a Hyper-V container has no VolumePath".into());
                }
                let uvm = c["HvRuntime"]["ImagePath"].as_str().ok_or("a Hyper-V container needs HvRuntime.ImagePath")?;
                let in_layer = want.iter().any(|l| l["Path"].as_str().is_some_and(|p| Path::new(uvm) == Path::new(p).join("UtilityVM")));
                if !in_layer || !Path::new(uvm).is_dir() {
                    return Err(format!("HvRuntime.ImagePath `{uvm}` is not the UtilityVM of a parent layer"));
                }
                let mem = c["MemoryMaximumInMB"].as_u64().ok_or("a utility VM needs MemoryMaximumInMB")?;
                if mem < 256 {
                    return Err(format!("MemoryMaximumInMB {mem} is too small for a utility VM"));
                }
                if c["ProcessorCount"].as_u64().is_none_or(|n| n == 0) {
                    return Err("a utility VM needs a ProcessorCount of at least 1".into());
                }
            } else {
                if c.get("HvRuntime").is_some() {
                    return Err("a process-isolated container has no HvRuntime".into());
                }
                let vol = c["VolumePath"].as_str().unwrap_or("");
                if w.mount.as_deref().map(|m| m.trim_end_matches('\\')) != Some(vol) || vol.ends_with('\\') {
                    return Err(format!("VolumePath `{vol}` is not the attached writable layer's volume without its trailing backslash"));
                }
            }
            let mut seen = BTreeMap::new();
            for m in c["MappedDirectories"].as_array().ok_or("MappedDirectories must be an array")? {
                let host = m["HostPath"].as_str().unwrap_or("");
                let cont = m["ContainerPath"].as_str().unwrap_or("");
                if !Path::new(host).is_dir() {
                    return Err(format!("mapped HostPath `{host}` is not a directory"));
                }
                if !cont.starts_with("C:\\") || cont.contains('/') {
                    return Err(format!("mapped ContainerPath `{cont}` is not a C:\\ path"));
                }
                let ro = m["ReadOnly"].as_bool().ok_or("mapped ReadOnly must be a boolean")?;
                if ro {
                    let mut files = BTreeMap::new();
                    for e in fs::read_dir(host).map_err(|e| e.to_string())?.flatten() {
                        if let Ok(d) = fs::read(e.path()) {
                            files.insert(e.file_name().to_string_lossy().into_owned(), d);
                        }
                    }
                    seen.insert(host.to_string(), files);
                }
            }
            st.mapped_seen.extend(seen);
            st.systems.insert(h, System::default());
            st.next += 1;
            Ok(())
        })?;
        Ok(h)
    }

    fn start_compute_system(&self, system: Handle, options: &str) -> Result<(), HcsError> {
        let mut st = self.st();
        self.check(
            &mut st,
            "HcsStartComputeSystem",
            &[&system.to_string(), options],
            |st| {
                let s = st
                    .systems
                    .get_mut(&system)
                    .ok_or("no such compute system")?;
                if s.started || s.closed {
                    return Err("started twice or after closing".into());
                }
                s.started = true;
                Ok(())
            },
        )
    }

    fn create_process(
        &self,
        system: Handle,
        params: &str,
    ) -> Result<(Handle, ProcessIo), HcsError> {
        let mut st = self.st();
        let h = st.next;
        self.check(
            &mut st,
            "HcsCreateProcess",
            &[&system.to_string(), params],
            |st| {
                let s = st
                    .systems
                    .get_mut(&system)
                    .ok_or("no such compute system")?;
                if !s.started || s.shut {
                    return Err("the compute system is not running".into());
                }
                let p: Value = serde_json::from_str(params)
                    .map_err(|e| format!("process parameters are not JSON: {e}"))?;
                if p["CommandLine"].as_str().is_none_or(str::is_empty) {
                    return Err("no CommandLine".into());
                }
                if !p["WorkingDirectory"]
                    .as_str()
                    .is_some_and(|w| w.starts_with("C:\\"))
                {
                    return Err(format!(
                        "WorkingDirectory {} is not a C:\\ path",
                        p["WorkingDirectory"]
                    ));
                }
                if !p["Environment"]
                    .as_object()
                    .is_some_and(|e| e.values().all(Value::is_string))
                {
                    return Err("Environment must map names to strings".into());
                }
                if p["CreateStdOutPipe"] != true
                    || p["CreateStdErrPipe"] != true
                    || p["CreateStdInPipe"] != false
                    || p["EmulateConsole"] != false
                {
                    return Err(
                        "stdout and stderr must be pipes, with no stdin and no console".into(),
                    );
                }
                s.params = Some(params.to_string());
                st.processes.insert(h, (system, false));
                st.next += 1;
                Ok(())
            },
        )?;
        Ok((
            h,
            ProcessIo {
                stdout: Box::new(std::io::Cursor::new(self.script.stdout.clone())),
                stderr: Box::new(std::io::Cursor::new(self.script.stderr.clone())),
            },
        ))
    }

    fn wait_for_process_exit(&self, process: Handle, timeout_ms: u32) -> Result<i32, HcsError> {
        let mut st = self.st();
        self.check(
            &mut st,
            "HcsWaitForProcessExit",
            &[&process.to_string(), &timeout_ms.to_string()],
            |st| match st.processes.get(&process) {
                Some((_, false)) => Ok(()),
                _ => Err("no such open process".into()),
            },
        )?;
        Ok(self.script.exit_code)
    }

    fn terminate_process(&self, process: Handle) -> Result<(), HcsError> {
        let mut st = self.st();
        self.check(
            &mut st,
            "HcsTerminateProcess",
            &[&process.to_string()],
            |st| {
                st.processes
                    .get(&process)
                    .map(|_| ())
                    .ok_or_else(|| "no such process".into())
            },
        )
    }

    fn close_process(&self, process: Handle) {
        let mut st = self.st();
        let _ = self.check(
            &mut st,
            "HcsCloseProcess",
            &[&process.to_string()],
            |st| match st.processes.get_mut(&process) {
                Some((_, closed @ false)) => {
                    *closed = true;
                    Ok(())
                }
                _ => Err("closed twice or unknown".into()),
            },
        );
    }

    fn shut_down_compute_system(&self, system: Handle, force: bool) -> Result<(), HcsError> {
        let name = if force {
            "HcsTerminateComputeSystem"
        } else {
            "HcsShutDownComputeSystem"
        };
        let mut st = self.st();
        self.check(&mut st, name, &[&system.to_string()], |st| {
            let open = st
                .processes
                .values()
                .any(|(s, closed)| *s == system && !closed);
            let s = st
                .systems
                .get_mut(&system)
                .ok_or("no such compute system")?;
            if s.shut || s.closed {
                return Err("stopped twice".into());
            }
            if open {
                return Err("a process of it is still open".into());
            }
            s.shut = true;
            Ok(())
        })
    }

    fn close_compute_system(&self, system: Handle) {
        let mut st = self.st();
        let _ = self.check(
            &mut st,
            "HcsCloseComputeSystem",
            &[&system.to_string()],
            |st| {
                let s = st
                    .systems
                    .get_mut(&system)
                    .ok_or("no such compute system")?;
                if s.closed {
                    return Err("closed twice".into());
                }
                s.closed = true;
                Ok(())
            },
        );
    }

    fn export_layer(
        &self,
        layer: &str,
        folder: &str,
        layer_data: &str,
        options: &str,
    ) -> Result<(), HcsError> {
        let mut st = self.st();
        let params = st.systems.values().rev().find_map(|s| s.params.clone());
        self.check(
            &mut st,
            "HcsExportLayer",
            &[layer, folder, layer_data, options],
            |st| {
                let v = check_layer_data(st, layer_data)?;
                if st.systems.values().any(|s| !s.closed) {
                    return Err("exported while its compute system is open".into());
                }
                let w = st
                    .writables
                    .iter_mut()
                    .find(|w| w.path == layer)
                    .ok_or_else(|| format!("`{layer}` is not a writable layer"))?;
                if w.attached {
                    return Err("exported with the filter attached".into());
                }
                if w.layer_data != v {
                    return Err("the layer data differs from the writable layer's".into());
                }
                let o: Value =
                    serde_json::from_str(options).map_err(|e| format!("options: {e}"))?;
                if o["IsWritableLayer"] != true {
                    return Err("options must say IsWritableLayer: true".into());
                }
                if Path::new(folder).exists() {
                    return Err(format!("export folder `{folder}` exists already"));
                }
                w.exported = true;
                write_export(Path::new(folder), &self.script, params.as_deref())
                    .map_err(|e| format!("writing the export: {e}"))
            },
        )
    }

    fn destroy_layer(&self, layer: &str) -> Result<(), HcsError> {
        let mut st = self.st();
        self.check(&mut st, "HcsDestroyLayer", &[layer], |st| {
            let w = st
                .writables
                .iter()
                .find(|w| w.path == layer)
                .ok_or_else(|| format!("`{layer}` is not a writable layer"))?;
            if w.attached {
                return Err("destroyed with the filter attached".into());
            }
            fs::remove_dir_all(layer).map_err(|e| e.to_string())
        })
    }
}

/// The process's changes as a transport folder.
fn write_export(folder: &Path, script: &FakeScript, params: Option<&str>) -> std::io::Result<()> {
    let files_root = folder.join("Files");
    fs::create_dir_all(&files_root)?;
    let sd =
        crate::layer::windows::unbase64(crate::layer::windows::DEFAULT_FILE_SD).unwrap_or_default();
    let mut files = script.files.clone();
    if let (Some(p), Some(params)) = (&script.record_params, params) {
        files.push((p.clone(), params.as_bytes().to_vec()));
    }
    for (rel, data) in &files {
        let rel = rel.trim_matches('/');
        let dest: PathBuf = files_root.join(rel);
        let mut dir = files_root.clone();
        if let Some((parents, _)) = rel.rsplit_once('/') {
            for c in parents.split('/') {
                dir = dir.join(c);
                if !dir.is_dir() {
                    fs::create_dir_all(&dir)?;
                    let mut enc = 0x10u32.to_le_bytes().to_vec();
                    transport::encode_streams(
                        &[Stream {
                            id: BACKUP_SECURITY_DATA,
                            name: String::new(),
                            data: sd.clone(),
                        }],
                        &mut enc,
                    );
                    fs::write(format!("{}{}", dir.display(), transport::DIR_SUFFIX), enc)?;
                }
            }
        }
        let mut enc = 0x20u32.to_le_bytes().to_vec();
        transport::encode_streams(
            &[
                Stream {
                    id: BACKUP_SECURITY_DATA,
                    name: String::new(),
                    data: sd.clone(),
                },
                Stream {
                    id: BACKUP_DATA,
                    name: String::new(),
                    data: data.clone(),
                },
            ],
            &mut enc,
        );
        fs::write(dest, enc)?;
    }
    fs::create_dir_all(folder.join("Hives"))?;
    let mut hive = Vec::new();
    transport::encode_streams(
        &[Stream {
            id: BACKUP_DATA,
            name: String::new(),
            data: b"regf".to_vec(),
        }],
        &mut hive,
    );
    fs::write(folder.join("Hives").join("Software_Delta"), hive)?;
    if !script.deletes.is_empty() {
        let mut t = String::from("\u{feff}Version 1.0\n");
        for d in &script.deletes {
            t.push_str(&format!("\\{}\n", d.trim_matches('/').replace('/', "\\")));
        }
        fs::write(folder.join(transport::TOMBSTONES), t)?;
    }
    Ok(())
}
