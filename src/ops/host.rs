//! What the host is, for choosing among an index's platforms and an isolation: on Windows the
//! OS version (major.minor.build from the kernel's `RtlGetVersion`, the revision (UBR) from
//! the registry) and whether it is Windows Server or client Windows (`wProductType`);
//! elsewhere the os/arch alone.
//!
//! `WCBUILD_HOST_WINDOWS_VERSION` (and `WCBUILD_HOST_WINDOWS_SKU`, default `server`) describe
//! a Windows host instead of asking the machine: a test and CI override, so that the Windows
//! host paths of `pull`, `FROM` and `compat` run (and are tested) on any machine.

use crate::image::{Platform, Sku, WindowsHost, WindowsVersion};

/// Environment variable describing the Windows host's version, `10.0.B[.R]` (tests and CI).
pub const ENV_HOST_WINDOWS_VERSION: &str = "WCBUILD_HOST_WINDOWS_VERSION";
/// Environment variable with the described host's SKU, `server` (default) or `client`.
pub const ENV_HOST_WINDOWS_SKU: &str = "WCBUILD_HOST_WINDOWS_SKU";

/// A host description that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Not `major.minor.build[.revision]`.
    #[error(
        "{name}=`{value}` is not a Windows version (expected major.minor.build[.revision], e.g. 10.0.20348.2227)"
    )]
    Version {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// Not `server` or `client`.
    #[error("{name}=`{value}` is not a Windows SKU (expected server or client)")]
    Sku {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
}

/// The Windows host described by the override variables' values, if the version is set.
pub fn parse_override(
    version: Option<&str>,
    sku: Option<&str>,
) -> Result<Option<WindowsHost>, HostError> {
    let Some(version) = version.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let v = WindowsVersion::parse(version.trim()).ok_or_else(|| HostError::Version {
        name: ENV_HOST_WINDOWS_VERSION,
        value: version.to_string(),
    })?;
    let sku = match sku.filter(|s| !s.trim().is_empty()) {
        None => Sku::Server,
        Some(s) => s.parse().map_err(|_| HostError::Sku {
            name: ENV_HOST_WINDOWS_SKU,
            value: s.to_string(),
        })?,
    };
    Ok(Some(WindowsHost::new(v, sku)))
}

/// The Windows host wcbuild runs on: the override variables when set, else (on Windows) the
/// machine's own version and SKU; `None` on other systems.
pub fn windows_host() -> Result<Option<WindowsHost>, HostError> {
    let version = std::env::var(ENV_HOST_WINDOWS_VERSION).ok();
    let sku = std::env::var(ENV_HOST_WINDOWS_SKU).ok();
    if let Some(host) = parse_override(version.as_deref(), sku.as_deref())? {
        return Ok(Some(host));
    }
    Ok(detect())
}

/// The host's platform, with `os.version` on a Windows host (or a described one).
pub fn platform() -> Result<Platform, HostError> {
    let mut p = Platform::host();
    if let Some(h) = windows_host()? {
        p.os = "windows".into();
        p.os_version = Some(h.version.to_string());
    }
    Ok(p)
}

/// The machine's Windows version and SKU (`None` when the kernel does not say).
#[cfg(windows)]
pub fn detect() -> Option<WindowsHost> {
    use windows_sys::Wdk::System::SystemServices::RtlGetVersion;
    use windows_sys::Win32::System::SystemInformation::{OSVERSIONINFOEXW, OSVERSIONINFOW};
    // SAFETY: RtlGetVersion fills the struct whose size we set (the EX form, which it
    // accepts through the plain pointer type); it does not keep the pointer.
    let mut info: OSVERSIONINFOEXW = unsafe { std::mem::zeroed() };
    info.dwOSVersionInfoSize = std::mem::size_of::<OSVERSIONINFOEXW>() as u32;
    let status =
        unsafe { RtlGetVersion(&mut info as *mut OSVERSIONINFOEXW as *mut OSVERSIONINFOW) };
    if status != 0 {
        return None;
    }
    let version = WindowsVersion {
        major: info.dwMajorVersion,
        minor: info.dwMinorVersion,
        build: info.dwBuildNumber,
        revision: update_build_revision().unwrap_or(0),
    };
    // wProductType: 1 VER_NT_WORKSTATION, 2 domain controller, 3 server.
    let sku = if info.wProductType == 1 {
        Sku::Client
    } else {
        Sku::Server
    };
    Some(WindowsHost::new(version, sku))
}

/// `HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\UBR`: the revision the kernel does not
/// report.
#[cfg(windows)]
fn update_build_revision() -> Option<u32> {
    use windows_sys::Win32::System::Registry::{
        HKEY_LOCAL_MACHINE, RRF_RT_REG_DWORD, RegGetValueW,
    };
    let wide = |s: &str| s.encode_utf16().chain(Some(0)).collect::<Vec<u16>>();
    let key = wide(r"SOFTWARE\Microsoft\Windows NT\CurrentVersion");
    let value = wide("UBR");
    let mut data: u32 = 0;
    let mut size = std::mem::size_of::<u32>() as u32;
    // SAFETY: the strings are NUL-terminated and live across the call; data/size describe a
    // u32 the call writes at most `size` bytes into.
    let status = unsafe {
        RegGetValueW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            value.as_ptr(),
            RRF_RT_REG_DWORD,
            std::ptr::null_mut(),
            &mut data as *mut u32 as *mut core::ffi::c_void,
            &mut size,
        )
    };
    (status == 0).then_some(data)
}

/// Not Windows: no Windows version to detect.
#[cfg(not(windows))]
pub fn detect() -> Option<WindowsHost> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_describe_a_host() {
        assert_eq!(parse_override(None, Some("client")), Ok(None));
        assert_eq!(parse_override(Some(" "), None), Ok(None));
        let h = parse_override(Some("10.0.26200.6584"), None)
            .unwrap()
            .unwrap();
        assert_eq!(h.version.to_string(), "10.0.26200.6584");
        assert_eq!(h.sku, Sku::Server);
        let h = parse_override(Some("10.0.22631"), Some("Client"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.version.build, h.version.revision, h.sku),
            (22631, 0, Sku::Client)
        );
        let e = parse_override(Some("ltsc2022"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "WCBUILD_HOST_WINDOWS_VERSION=`ltsc2022` is not a Windows version (expected major.minor.build[.revision], e.g. 10.0.20348.2227)"
        );
        let e = parse_override(Some("10.0.20348"), Some("desktop")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("WCBUILD_HOST_WINDOWS_SKU=`desktop`"),
            "{e}"
        );
    }

    /// Under Wine this is Wine's answer (Windows 10 by default), on Windows the machine's.
    #[cfg(windows)]
    #[test]
    fn the_kernel_reports_a_windows_version_that_parses() {
        let h = detect().expect("RtlGetVersion answers");
        assert!(h.version.major >= 6, "{h:?}");
        assert!(h.version.build >= 7600, "{h:?}");
        // The Wine runner (.ci/wine/runner) sets the registry's UBR and says to what.
        if let Some(ubr) = std::env::var("WCBUILD_WINE_UBR")
            .ok()
            .and_then(|u| u.parse::<u32>().ok())
        {
            assert_eq!(h.version.revision, ubr, "{h:?}");
        }
        let again = WindowsVersion::parse(&h.version.to_string()).unwrap();
        assert_eq!(again, h.version);
        let p = {
            let mut p = Platform::host();
            p.os_version = Some(h.version.to_string());
            p
        };
        assert!(p.is_windows());
        assert_eq!(p.windows_version(), Some(h.version));
    }

    #[cfg(not(windows))]
    #[test]
    fn other_systems_detect_no_windows_version() {
        assert_eq!(detect(), None);
    }
}
