//! The Host Compute Service calls one step makes, as a trait with one method per call, so
//! the call sequence runs against the real service on Windows ([`super::windows`]) and
//! against a fake that checks every argument on any system ([`super::fake`]). Layer and
//! storage calls are computestorage.dll's (`HcsImportLayer`, `HcsSetupBaseOSLayer`,
//! `HcsInitializeWritableLayer`, `HcsAttachLayerStorageFilter`,
//! `HcsDetachLayerStorageFilter`, `HcsExportLayer`, `HcsDestroyLayer`); compute systems and
//! processes are computecore.dll's (`HcsCreateComputeSystem`, `HcsStartComputeSystem`,
//! `HcsCreateProcess`, `HcsWaitForProcessExit`, `HcsTerminateProcess`, `HcsCloseProcess`,
//! `HcsShutDownComputeSystem`, `HcsTerminateComputeSystem`, `HcsCloseComputeSystem`), each
//! made synchronous through an operation (`HcsCreateOperation`,
//! `HcsWaitForOperationResult`); the writable layer's volume comes from vmcompute.dll's
//! `GetLayerMountPath`.

use std::io::Read;

/// A compute system or process handle, opaque to the caller.
pub type Handle = u64;

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call} failed: HRESULT {code:#010x}{}", if .result.is_empty() { String::new() } else { format!(": {}", .result) })]
pub struct HcsError {
    /// The function.
    pub call: &'static str,
    /// The HRESULT (as u32 bits).
    pub code: u32,
    /// The service's result document or message.
    pub result: String,
}

/// The pipes of a process.
pub struct ProcessIo {
    /// Its standard output.
    pub stdout: Box<dyn Read + Send>,
    /// Its standard error.
    pub stderr: Box<dyn Read + Send>,
}

/// One method per Host Compute Service call a step makes. Paths are host paths (Windows
/// paths on Windows); documents are JSON.
pub trait HcsApi: Send + Sync {
    /// A name for messages.
    fn name(&self) -> String;
    /// `HcsImportLayer(layerPath, sourceFolderPath, layerData)`.
    fn import_layer(&self, layer: &str, source: &str, layer_data: &str) -> Result<(), HcsError>;
    /// `HcsSetupBaseOSLayer(layerPath, vhdHandle, options)` for a base layer (the VHD made
    /// by the implementation).
    fn setup_base_os_layer(&self, layer: &str, options: &str) -> Result<(), HcsError>;
    /// `HcsInitializeWritableLayer(writableLayerPath, layerData, options)`.
    fn initialize_writable_layer(
        &self,
        writable: &str,
        layer_data: &str,
        options: &str,
    ) -> Result<(), HcsError>;
    /// `HcsAttachLayerStorageFilter(layerPath, layerData)`.
    fn attach_layer_storage_filter(&self, layer: &str, layer_data: &str) -> Result<(), HcsError>;
    /// The volume of an attached writable layer (`GetLayerMountPath`), `\\?\Volume{…}\`.
    fn layer_mount_path(&self, layer: &str) -> Result<String, HcsError>;
    /// `HcsDetachLayerStorageFilter(layerPath)`.
    fn detach_layer_storage_filter(&self, layer: &str) -> Result<(), HcsError>;
    /// `HcsCreateComputeSystem(id, configuration, …)`, waited for.
    fn create_compute_system(&self, id: &str, config: &str) -> Result<Handle, HcsError>;
    /// `HcsStartComputeSystem(system, …, options)`, waited for.
    fn start_compute_system(&self, system: Handle, options: &str) -> Result<(), HcsError>;
    /// `HcsCreateProcess(system, processParameters, …)`, waited for with its process
    /// information (the pipes).
    fn create_process(&self, system: Handle, params: &str)
    -> Result<(Handle, ProcessIo), HcsError>;
    /// `HcsWaitForProcessExit(process, timeoutMs, &result)`: the exit code from the
    /// result's `ExitCode`.
    fn wait_for_process_exit(&self, process: Handle, timeout_ms: u32) -> Result<i32, HcsError>;
    /// `HcsTerminateProcess(process, …)`.
    fn terminate_process(&self, process: Handle) -> Result<(), HcsError>;
    /// `HcsCloseProcess(process)`.
    fn close_process(&self, process: Handle);
    /// `HcsShutDownComputeSystem` (or `HcsTerminateComputeSystem` when `force`), waited for.
    fn shut_down_compute_system(&self, system: Handle, force: bool) -> Result<(), HcsError>;
    /// `HcsCloseComputeSystem(system)`.
    fn close_compute_system(&self, system: Handle);
    /// `HcsExportLayer(layerPath, exportFolderPath, layerData, options)`.
    fn export_layer(
        &self,
        layer: &str,
        folder: &str,
        layer_data: &str,
        options: &str,
    ) -> Result<(), HcsError>;
    /// `HcsDestroyLayer(layerPath)`.
    fn destroy_layer(&self, layer: &str) -> Result<(), HcsError>;
}
