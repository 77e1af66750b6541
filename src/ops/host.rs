//! What the host is, for choosing among an index's platforms: on Windows the OS build, read
//! from the kernel, so that `pull` picks the entry the host can run (the same
//! major.minor.build, as process isolation needs); elsewhere the os/arch alone.

use crate::image::Platform;

/// The host's platform, with `os.version` on Windows.
pub fn platform() -> Platform {
    let mut p = Platform::host();
    p.os_version = windows_version();
    p
}

#[cfg(windows)]
fn windows_version() -> Option<String> {
    use windows_sys::Wdk::System::SystemServices::RtlGetVersion;
    use windows_sys::Win32::System::SystemInformation::OSVERSIONINFOW;
    // SAFETY: RtlGetVersion fills the struct whose size we set; it does not keep the pointer.
    let mut info: OSVERSIONINFOW = unsafe { std::mem::zeroed() };
    info.dwOSVersionInfoSize = std::mem::size_of::<OSVERSIONINFOW>() as u32;
    let status = unsafe { RtlGetVersion(&mut info) };
    (status == 0).then(|| {
        format!(
            "{}.{}.{}",
            info.dwMajorVersion, info.dwMinorVersion, info.dwBuildNumber
        )
    })
}

#[cfg(not(windows))]
fn windows_version() -> Option<String> {
    None
}
