//! The real Host Compute Service calls (Windows only): computecore.dll and
//! computestorage.dll with the types of `windows-sys` (`Win32_System_HostComputeSystem`),
//! each compute-system call made synchronous with an operation and its result document
//! freed with `LocalFree`; the base layer's VHD made with virtdisk.dll (`CreateVirtualDisk`);
//! vmcompute.dll's `GetLayerMountPath`, which no binding declares. The DLLs are loaded from
//! System32 when the runtime is made, not linked: wcbuild.exe starts on hosts without the
//! Containers feature (and under Wine), and `--runtime hcs` there says which DLL is missing.
//! Type-checked and linted for `x86_64-pc-windows-gnu`; not yet run on a real Windows host.

use super::api::{Handle, HcsApi, HcsError, ProcessIo};
use crate::runtime::RuntimeError;
use std::ffi::c_void;
use std::os::windows::io::FromRawHandle;
use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, HMODULE, LocalFree};
use windows_sys::Win32::Security::PSECURITY_DESCRIPTOR;
use windows_sys::Win32::Storage::Vhd;
use windows_sys::Win32::System::HostComputeSystem as hcs;
use windows_sys::Win32::System::IO::OVERLAPPED;
use windows_sys::Win32::System::LibraryLoader::{
    GetProcAddress, LOAD_LIBRARY_SEARCH_SYSTEM32, LoadLibraryExW,
};
use windows_sys::core::{HRESULT, PCWSTR, PWSTR};

/// `INFINITE`.
const INFINITE: u32 = u32::MAX;
/// `E_FAIL`, for failures that come with no HRESULT.
const E_FAIL: u32 = 0x8000_4005;
/// The size of a base layer's scratch VHD (what hcsshim makes: 20 GiB, 1 MiB blocks).
const BASE_VHD_BYTES: u64 = 20 << 30;

/// vmcompute.dll's `DriverInfo`: the filter driver (flavour 1) and the layers' home folder.
#[repr(C)]
struct DriverInfo {
    flavour: i32,
    home_dir: PCWSTR,
}

/// What `GetProcAddress` returns.
type Proc = unsafe extern "system" fn() -> isize;

/// Loads a DLL from System32.
fn library(name: &str) -> Result<HMODULE, RuntimeError> {
    let w = wide(name);
    // SAFETY: a NUL-terminated name; System32 only, so no planted DLL is found first.
    let m = unsafe {
        LoadLibraryExW(
            w.as_ptr(),
            std::ptr::null_mut(),
            LOAD_LIBRARY_SEARCH_SYSTEM32,
        )
    };
    if m.is_null() {
        return Err(RuntimeError::Unsupported(format!(
            "{name} cannot be loaded ({}): the Host Compute Service needs the Containers feature (and Hyper-V for Hyper-V isolation)",
            std::io::Error::last_os_error()
        )));
    }
    Ok(m)
}

/// A function of a loaded DLL.
fn symbol(m: HMODULE, dll: &str, name: &str) -> Result<Proc, RuntimeError> {
    // SAFETY: a loaded module and a NUL-terminated name.
    unsafe { GetProcAddress(m, name.as_ptr()) }.ok_or_else(|| {
        RuntimeError::Unsupported(format!(
            "{dll} has no {}: this Windows is too old for the Host Compute Service calls wcbuild makes",
            name.trim_end_matches('\0')
        ))
    })
}

/// Declares the functions taken from one DLL and loads them.
macro_rules! dll {
    ($table:ident, $dll:literal, { $($name:ident: fn($($arg:ty),* $(,)?) $(-> $ret:ty)?;)* }) => {
        #[allow(non_snake_case)]
        struct $table {
            $($name: unsafe extern "system" fn($($arg),*) $(-> $ret)?,)*
        }
        impl $table {
            fn load() -> Result<$table, RuntimeError> {
                let m = library($dll)?;
                Ok($table {
                    $($name: {
                        let p = symbol(m, $dll, concat!(stringify!($name), "\0"))?;
                        // SAFETY: the documented signature of this export.
                        unsafe {
                            std::mem::transmute::<Proc, unsafe extern "system" fn($($arg),*) $(-> $ret)?>(p)
                        }
                    },)*
                })
            }
        }
    };
}

dll!(Core, "computecore.dll", {
    HcsCreateOperation: fn(*const c_void, hcs::HCS_OPERATION_COMPLETION) -> hcs::HCS_OPERATION;
    HcsCloseOperation: fn(hcs::HCS_OPERATION);
    HcsWaitForOperationResult: fn(hcs::HCS_OPERATION, u32, *mut PWSTR) -> HRESULT;
    HcsWaitForOperationResultAndProcessInfo: fn(hcs::HCS_OPERATION, u32, *mut hcs::HCS_PROCESS_INFORMATION, *mut PWSTR) -> HRESULT;
    HcsCreateComputeSystem: fn(PCWSTR, PCWSTR, hcs::HCS_OPERATION, *const c_void, *mut hcs::HCS_SYSTEM) -> HRESULT;
    HcsStartComputeSystem: fn(hcs::HCS_SYSTEM, hcs::HCS_OPERATION, PCWSTR) -> HRESULT;
    HcsShutDownComputeSystem: fn(hcs::HCS_SYSTEM, hcs::HCS_OPERATION, PCWSTR) -> HRESULT;
    HcsTerminateComputeSystem: fn(hcs::HCS_SYSTEM, hcs::HCS_OPERATION, PCWSTR) -> HRESULT;
    HcsCloseComputeSystem: fn(hcs::HCS_SYSTEM);
    HcsCreateProcess: fn(hcs::HCS_SYSTEM, PCWSTR, hcs::HCS_OPERATION, *const c_void, *mut hcs::HCS_PROCESS) -> HRESULT;
    HcsWaitForProcessExit: fn(hcs::HCS_PROCESS, u32, *mut PWSTR) -> HRESULT;
    HcsTerminateProcess: fn(hcs::HCS_PROCESS, hcs::HCS_OPERATION, PCWSTR) -> HRESULT;
    HcsCloseProcess: fn(hcs::HCS_PROCESS);
});

dll!(Storage, "computestorage.dll", {
    HcsImportLayer: fn(PCWSTR, PCWSTR, PCWSTR) -> HRESULT;
    HcsExportLayer: fn(PCWSTR, PCWSTR, PCWSTR, PCWSTR) -> HRESULT;
    HcsDestroyLayer: fn(PCWSTR) -> HRESULT;
    HcsSetupBaseOSLayer: fn(PCWSTR, HANDLE, PCWSTR) -> HRESULT;
    HcsInitializeWritableLayer: fn(PCWSTR, PCWSTR, PCWSTR) -> HRESULT;
    HcsAttachLayerStorageFilter: fn(PCWSTR, PCWSTR) -> HRESULT;
    HcsDetachLayerStorageFilter: fn(PCWSTR) -> HRESULT;
});

dll!(VirtDisk, "virtdisk.dll", {
    CreateVirtualDisk: fn(*const Vhd::VIRTUAL_STORAGE_TYPE, PCWSTR, Vhd::VIRTUAL_DISK_ACCESS_MASK, PSECURITY_DESCRIPTOR, Vhd::CREATE_VIRTUAL_DISK_FLAG, u32, *const Vhd::CREATE_VIRTUAL_DISK_PARAMETERS, *const OVERLAPPED, *mut HANDLE) -> u32;
});

dll!(VmCompute, "vmcompute.dll", {
    GetLayerMountPath: fn(*const DriverInfo, PCWSTR, *mut usize, PWSTR) -> HRESULT;
});

/// A NUL-terminated UTF-16 copy of `s`.
fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// `s` as a PCWSTR argument: null when empty (the calls take null for "no options").
fn opt(s: &[u16]) -> PCWSTR {
    if s.len() <= 1 {
        std::ptr::null()
    } else {
        s.as_ptr()
    }
}

/// Takes a string the service allocated, freeing it.
fn take(p: PWSTR) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the service returns a NUL-terminated string it allocated with LocalAlloc.
    unsafe {
        let mut n = 0;
        while *p.add(n) != 0 {
            n += 1;
        }
        let s = String::from_utf16_lossy(std::slice::from_raw_parts(p, n));
        LocalFree(p as *mut c_void);
        s
    }
}

fn check(call: &'static str, hr: HRESULT, result: String) -> Result<(), HcsError> {
    if hr < 0 {
        return Err(HcsError {
            call,
            code: hr as u32,
            result,
        });
    }
    Ok(())
}

/// An operation, closed when dropped.
struct Operation<'a>(hcs::HCS_OPERATION, &'a Core);

impl<'a> Operation<'a> {
    fn new(core: &'a Core, call: &'static str) -> Result<Operation<'a>, HcsError> {
        // SAFETY: no context and no callback: the operation is waited for.
        let op = unsafe { (core.HcsCreateOperation)(std::ptr::null(), None) };
        if op.is_null() {
            return Err(HcsError {
                call,
                code: E_FAIL,
                result: "HcsCreateOperation returned no operation".into(),
            });
        }
        Ok(Operation(op, core))
    }

    fn wait(&self, call: &'static str) -> Result<String, HcsError> {
        let mut result: PWSTR = std::ptr::null_mut();
        // SAFETY: a live operation; the result is freed by `take`.
        let hr = unsafe { (self.1.HcsWaitForOperationResult)(self.0, INFINITE, &mut result) };
        let doc = take(result);
        check(call, hr, doc.clone())?;
        Ok(doc)
    }
}

impl Drop for Operation<'_> {
    fn drop(&mut self) {
        // SAFETY: created by HcsCreateOperation, closed once.
        unsafe { (self.1.HcsCloseOperation)(self.0) };
    }
}

fn handle(h: *mut c_void) -> Handle {
    h as usize as Handle
}

fn ptr(h: Handle) -> *mut c_void {
    h as usize as *mut c_void
}

/// The real service: the functions of its DLLs, loaded once.
pub struct WindowsHcs {
    core: Core,
    storage: Storage,
    virtdisk: VirtDisk,
    vmcompute: VmCompute,
}

// SAFETY: the tables hold only function pointers of thread-safe system DLLs.
unsafe impl Send for WindowsHcs {}
// SAFETY: as above.
unsafe impl Sync for WindowsHcs {}

impl WindowsHcs {
    /// The service of this machine: its DLLs loaded from System32, or an error naming the
    /// one that is missing.
    pub fn new() -> Result<WindowsHcs, RuntimeError> {
        Ok(WindowsHcs {
            core: Core::load()?,
            storage: Storage::load()?,
            virtdisk: VirtDisk::load()?,
            vmcompute: VmCompute::load()?,
        })
    }
}

impl HcsApi for WindowsHcs {
    fn name(&self) -> String {
        "computecore.dll and computestorage.dll".into()
    }

    fn import_layer(&self, layer: &str, source: &str, layer_data: &str) -> Result<(), HcsError> {
        let (l, s, d) = (wide(layer), wide(source), wide(layer_data));
        // SAFETY: NUL-terminated strings that outlive the call.
        let hr = unsafe { (self.storage.HcsImportLayer)(l.as_ptr(), s.as_ptr(), d.as_ptr()) };
        check("HcsImportLayer", hr, format!("layer `{layer}`"))
    }

    fn setup_base_os_layer(&self, layer: &str, options: &str) -> Result<(), HcsError> {
        let vhd = wide(&format!("{layer}\\blank-base.vhdx"));
        let storage = Vhd::VIRTUAL_STORAGE_TYPE {
            DeviceId: Vhd::VIRTUAL_STORAGE_TYPE_DEVICE_VHDX,
            VendorId: Vhd::VIRTUAL_STORAGE_TYPE_VENDOR_MICROSOFT,
        };
        let mut params = Vhd::CREATE_VIRTUAL_DISK_PARAMETERS {
            Version: Vhd::CREATE_VIRTUAL_DISK_VERSION_2,
            ..Default::default()
        };
        params.Anonymous.Version2 = Vhd::CREATE_VIRTUAL_DISK_PARAMETERS_0_1 {
            MaximumSize: BASE_VHD_BYTES,
            BlockSizeInBytes: 1 << 20,
            ..Default::default()
        };
        let mut disk: HANDLE = std::ptr::null_mut();
        // SAFETY: valid parameters of version 2; the handle is closed below.
        let err = unsafe {
            (self.virtdisk.CreateVirtualDisk)(
                &storage,
                vhd.as_ptr(),
                Vhd::VIRTUAL_DISK_ACCESS_NONE,
                std::ptr::null_mut(),
                Vhd::CREATE_VIRTUAL_DISK_FLAG_NONE,
                0,
                &params,
                std::ptr::null(),
                &mut disk,
            )
        };
        if err != 0 {
            return Err(HcsError {
                call: "CreateVirtualDisk",
                code: 0x8007_0000 | (err & 0xffff),
                result: format!("`{layer}\\blank-base.vhdx`"),
            });
        }
        let (l, o) = (wide(layer), wide(options));
        // SAFETY: a live VHD handle and NUL-terminated strings.
        let hr = unsafe { (self.storage.HcsSetupBaseOSLayer)(l.as_ptr(), disk, o.as_ptr()) };
        // SAFETY: the handle CreateVirtualDisk returned, closed once.
        unsafe { CloseHandle(disk) };
        check("HcsSetupBaseOSLayer", hr, format!("layer `{layer}`"))
    }

    fn initialize_writable_layer(
        &self,
        writable: &str,
        layer_data: &str,
        options: &str,
    ) -> Result<(), HcsError> {
        let (w, d, o) = (wide(writable), wide(layer_data), wide(options));
        // SAFETY: NUL-terminated strings (or null options).
        let hr =
            unsafe { (self.storage.HcsInitializeWritableLayer)(w.as_ptr(), d.as_ptr(), opt(&o)) };
        check(
            "HcsInitializeWritableLayer",
            hr,
            format!("layer `{writable}`"),
        )
    }

    fn attach_layer_storage_filter(&self, layer: &str, layer_data: &str) -> Result<(), HcsError> {
        let (l, d) = (wide(layer), wide(layer_data));
        // SAFETY: NUL-terminated strings.
        let hr = unsafe { (self.storage.HcsAttachLayerStorageFilter)(l.as_ptr(), d.as_ptr()) };
        check(
            "HcsAttachLayerStorageFilter",
            hr,
            format!("layer `{layer}`"),
        )
    }

    fn layer_mount_path(&self, layer: &str) -> Result<String, HcsError> {
        let p = std::path::Path::new(layer);
        let home = wide(
            &p.parent()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let id = wide(
            &p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let info = DriverInfo {
            flavour: 1,
            home_dir: home.as_ptr(),
        };
        let mut len: usize = 0;
        // SAFETY: the first call asks for the length only.
        let hr = unsafe {
            (self.vmcompute.GetLayerMountPath)(&info, id.as_ptr(), &mut len, std::ptr::null_mut())
        };
        check("GetLayerMountPath", hr, format!("layer `{layer}`"))?;
        let mut buf = vec![0u16; len.max(1) + 1];
        let mut cap = buf.len();
        // SAFETY: a buffer of `cap` characters.
        let hr = unsafe {
            (self.vmcompute.GetLayerMountPath)(&info, id.as_ptr(), &mut cap, buf.as_mut_ptr())
        };
        check("GetLayerMountPath", hr, format!("layer `{layer}`"))?;
        let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
        Ok(String::from_utf16_lossy(&buf[..end]))
    }

    fn detach_layer_storage_filter(&self, layer: &str) -> Result<(), HcsError> {
        let l = wide(layer);
        // SAFETY: a NUL-terminated string.
        let hr = unsafe { (self.storage.HcsDetachLayerStorageFilter)(l.as_ptr()) };
        check(
            "HcsDetachLayerStorageFilter",
            hr,
            format!("layer `{layer}`"),
        )
    }

    fn create_compute_system(&self, id: &str, config: &str) -> Result<Handle, HcsError> {
        let op = Operation::new(&self.core, "HcsCreateComputeSystem")?;
        let (i, c) = (wide(id), wide(config));
        let mut sys: hcs::HCS_SYSTEM = std::ptr::null_mut();
        // SAFETY: NUL-terminated strings, a live operation, no security descriptor.
        let hr = unsafe {
            (self.core.HcsCreateComputeSystem)(
                i.as_ptr(),
                c.as_ptr(),
                op.0,
                std::ptr::null(),
                &mut sys,
            )
        };
        check("HcsCreateComputeSystem", hr, String::new())?;
        if let Err(e) = op.wait("HcsCreateComputeSystem") {
            if !sys.is_null() {
                // SAFETY: the handle just returned, closed once.
                unsafe { (self.core.HcsCloseComputeSystem)(sys) };
            }
            return Err(e);
        }
        Ok(handle(sys))
    }

    fn start_compute_system(&self, system: Handle, options: &str) -> Result<(), HcsError> {
        let op = Operation::new(&self.core, "HcsStartComputeSystem")?;
        let o = wide(options);
        // SAFETY: a live system handle and operation.
        let hr = unsafe { (self.core.HcsStartComputeSystem)(ptr(system), op.0, opt(&o)) };
        check("HcsStartComputeSystem", hr, String::new())?;
        op.wait("HcsStartComputeSystem").map(|_| ())
    }

    fn create_process(
        &self,
        system: Handle,
        params: &str,
    ) -> Result<(Handle, ProcessIo), HcsError> {
        let op = Operation::new(&self.core, "HcsCreateProcess")?;
        let p = wide(params);
        let mut process: hcs::HCS_PROCESS = std::ptr::null_mut();
        // SAFETY: a live system handle and operation, no security descriptor.
        let hr = unsafe {
            (self.core.HcsCreateProcess)(
                ptr(system),
                p.as_ptr(),
                op.0,
                std::ptr::null(),
                &mut process,
            )
        };
        check("HcsCreateProcess", hr, String::new())?;
        let mut info = hcs::HCS_PROCESS_INFORMATION::default();
        let mut result: PWSTR = std::ptr::null_mut();
        // SAFETY: a live operation; the result is freed by `take`.
        let hr = unsafe {
            (self.core.HcsWaitForOperationResultAndProcessInfo)(
                op.0,
                INFINITE,
                &mut info,
                &mut result,
            )
        };
        let doc = take(result);
        if let Err(e) = check("HcsCreateProcess", hr, doc) {
            if !process.is_null() {
                // SAFETY: the handle just returned, closed once.
                unsafe { (self.core.HcsCloseProcess)(process) };
            }
            return Err(e);
        }
        if !info.StdInput.is_null() {
            // SAFETY: a pipe handle the service gave us and we do not use.
            unsafe { CloseHandle(info.StdInput) };
        }
        let pipe = |h: HANDLE| -> Box<dyn std::io::Read + Send> {
            if h.is_null() {
                Box::new(std::io::empty())
            } else {
                // SAFETY: a pipe handle the service gave us; the File owns and closes it.
                Box::new(unsafe { std::fs::File::from_raw_handle(h) })
            }
        };
        Ok((
            handle(process),
            ProcessIo {
                stdout: pipe(info.StdOutput),
                stderr: pipe(info.StdError),
            },
        ))
    }

    fn wait_for_process_exit(&self, process: Handle, timeout_ms: u32) -> Result<i32, HcsError> {
        let mut result: PWSTR = std::ptr::null_mut();
        // SAFETY: a live process handle; the result is freed by `take`.
        let hr =
            unsafe { (self.core.HcsWaitForProcessExit)(ptr(process), timeout_ms, &mut result) };
        let doc = take(result);
        check("HcsWaitForProcessExit", hr, doc.clone())?;
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap_or(serde_json::Value::Null);
        v["ExitCode"]
            .as_i64()
            .map(|c| c as i32)
            .ok_or_else(|| HcsError {
                call: "HcsWaitForProcessExit",
                code: E_FAIL,
                result: format!("no ExitCode in `{doc}`"),
            })
    }

    fn terminate_process(&self, process: Handle) -> Result<(), HcsError> {
        let op = Operation::new(&self.core, "HcsTerminateProcess")?;
        // SAFETY: a live process handle and operation.
        let hr = unsafe { (self.core.HcsTerminateProcess)(ptr(process), op.0, std::ptr::null()) };
        check("HcsTerminateProcess", hr, String::new())?;
        op.wait("HcsTerminateProcess").map(|_| ())
    }

    fn close_process(&self, process: Handle) {
        // SAFETY: a process handle, closed once (the runtime forgets it here).
        unsafe { (self.core.HcsCloseProcess)(ptr(process)) };
    }

    fn shut_down_compute_system(&self, system: Handle, force: bool) -> Result<(), HcsError> {
        let call = if force {
            "HcsTerminateComputeSystem"
        } else {
            "HcsShutDownComputeSystem"
        };
        let op = Operation::new(&self.core, call)?;
        // SAFETY: a live system handle and operation.
        let hr = unsafe {
            if force {
                (self.core.HcsTerminateComputeSystem)(ptr(system), op.0, std::ptr::null())
            } else {
                (self.core.HcsShutDownComputeSystem)(ptr(system), op.0, std::ptr::null())
            }
        };
        check(call, hr, String::new())?;
        op.wait(call).map(|_| ())
    }

    fn close_compute_system(&self, system: Handle) {
        // SAFETY: a system handle, closed once (the runtime forgets it here).
        unsafe { (self.core.HcsCloseComputeSystem)(ptr(system)) };
    }

    fn export_layer(
        &self,
        layer: &str,
        folder: &str,
        layer_data: &str,
        options: &str,
    ) -> Result<(), HcsError> {
        let (l, f, d, o) = (wide(layer), wide(folder), wide(layer_data), wide(options));
        // SAFETY: NUL-terminated strings.
        let hr = unsafe {
            (self.storage.HcsExportLayer)(l.as_ptr(), f.as_ptr(), d.as_ptr(), o.as_ptr())
        };
        check(
            "HcsExportLayer",
            hr,
            format!("layer `{layer}` into `{folder}`"),
        )
    }

    fn destroy_layer(&self, layer: &str) -> Result<(), HcsError> {
        let l = wide(layer);
        // SAFETY: a NUL-terminated string.
        let hr = unsafe { (self.storage.HcsDestroyLayer)(l.as_ptr()) };
        check("HcsDestroyLayer", hr, format!("layer `{layer}`"))
    }
}
