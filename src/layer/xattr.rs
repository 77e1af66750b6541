//! Extended attributes of files, read when packing Linux layers and restored when extracting
//! them (never following symlinks). Linux only; elsewhere there are none to read or write.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

#[cfg(target_os = "linux")]
fn cpath(path: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// The extended attributes of `path` (not following a symlink).
#[cfg(target_os = "linux")]
pub fn list(path: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let c = cpath(path)?;
    let mut out = BTreeMap::new();
    // SAFETY: `c` is NUL-terminated; a null buffer with size 0 asks for the needed size.
    let size = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOTSUP) {
            Ok(out)
        } else {
            Err(e)
        };
    }
    if size == 0 {
        return Ok(out);
    }
    let mut names = vec![0u8; size as usize];
    // SAFETY: `names` has `names.len()` writable bytes.
    let size = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    names.truncate(size as usize);
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = std::ffi::CString::new(name).map_err(io::Error::other)?;
        // SAFETY: as above, sizing call.
        let vsize = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if vsize < 0 {
            continue;
        }
        let mut value = vec![0u8; vsize as usize];
        // SAFETY: `value` has `value.len()` writable bytes.
        let n = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n < 0 {
            continue;
        }
        value.truncate(n as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), value);
    }
    Ok(out)
}

/// Sets one extended attribute on `path` (not following a symlink).
#[cfg(target_os = "linux")]
pub fn set(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let n = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: pointers are valid for the given lengths; flags 0 = create or replace.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// No extended attributes on this system.
#[cfg(not(target_os = "linux"))]
pub fn list(_path: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    Ok(BTreeMap::new())
}

/// Extended attributes are not restored on this system.
#[cfg(not(target_os = "linux"))]
pub fn set(_path: &Path, _name: &str, _value: &[u8]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "extended attributes are not supported here",
    ))
}
