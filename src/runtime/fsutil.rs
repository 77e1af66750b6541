//! File system helpers for a step's root: paths resolved inside the root (symlinks never
//! leave it), directories made with an owner, mount stubs recorded before a step and removed
//! after it (BuildKit's `MountStubsCleaner`), times restored.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

const MAX_LINKS: usize = 255;

pub(crate) fn cstr(p: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{}` contains NUL", p.display()),
        )
    })
}

/// Resolves `path` (absolute or relative, container view) inside `root` as if `root` were `/`:
/// `..` stops at the root, symlinks (absolute or relative) are followed inside the root, and a
/// missing component ends the resolution with the rest appended as written.
pub fn resolve_in_root(root: &Path, path: &str) -> io::Result<PathBuf> {
    let mut todo: Vec<std::ffi::OsString> = Path::new(path)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut cur: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            cur.pop();
            continue;
        }
        let mut full = root.to_path_buf();
        full.extend(&cur);
        full.push(&c);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("`{path}`: too many levels of symbolic links"),
                    ));
                }
                let target = fs::read_link(&full)?;
                if target.is_absolute() {
                    cur.clear();
                }
                for t in target.components().rev() {
                    match t {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(_) => cur.push(c),
            Err(_) => {
                cur.push(c);
                while let Some(rest) = todo.pop() {
                    if rest == ".." {
                        cur.pop();
                    } else {
                        cur.push(rest);
                    }
                }
            }
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&cur);
    Ok(out)
}

/// `lchown` without following a symlink.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: `c` is NUL-terminated.
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates `path` and its missing parents, each mode 0755 and owned by `uid:gid` (moby's
/// `MkdirAllAndChown`: existing directories are left alone).
pub fn mkdir_all_chown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut p = path;
    loop {
        match fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("`{}` exists and is not a directory", p.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(p.to_path_buf());
                match p.parent() {
                    Some(parent) => p = parent,
                    None => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    use std::os::unix::fs::PermissionsExt;
    for d in missing.iter().rev() {
        fs::create_dir(d)?;
        fs::set_permissions(d, fs::Permissions::from_mode(0o755))?;
        lchown(d, uid, gid)?;
    }
    Ok(())
}

/// Sets atime and mtime (nanoseconds) of `path` without following a symlink.
pub fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let c = cstr(path)?;
    let ts = [
        libc::timespec {
            tv_sec: atime.0 as libc::time_t,
            tv_nsec: atime.1 as _,
        },
        libc::timespec {
            tv_sec: mtime.0 as libc::time_t,
            tv_nsec: mtime.1 as _,
        },
    ];
    // SAFETY: `c` is NUL-terminated and `ts` holds two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The paths a step's mounts may create in the root that did not exist before (BuildKit's
/// `MountStubsCleaner` with `RemoveMountStubsRecursive`): for each target, the target and
/// each missing parent, deepest first.
pub fn record_stubs(root: &Path, targets: &[String]) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for t in targets {
        let joined = Path::new("/").join(t.trim_start_matches('/'));
        if joined == Path::new("/") {
            continue;
        }
        let Ok(mut real) = resolve_in_root(root, &joined.to_string_lossy()) else {
            continue;
        };
        loop {
            match fs::symlink_metadata(&real) {
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENOTDIR) => {}
                _ => break,
            }
            paths.push(real.clone());
            let Some(next) = real.parent().map(Path::to_path_buf) else {
                break;
            };
            if next == real || next == root {
                break;
            }
            real = next;
        }
    }
    paths
}

/// Removes the recorded stubs that are still an empty directory or an empty file, keeping
/// the parent's times (BuildKit #3148).
pub fn clean_stubs(root: &Path, stubs: &[PathBuf]) {
    for p in stubs {
        let Ok(rel) = p.strip_prefix(root) else {
            continue;
        };
        let Ok(p) = resolve_in_root(root, &rel.to_string_lossy()) else {
            continue;
        };
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            let empty = fs::read_dir(&p).map(|mut d| d.next().is_none());
            if !matches!(empty, Ok(true)) {
                continue;
            }
        } else if m.len() != 0 {
            continue;
        }
        let Some(parent) = p.parent() else { continue };
        let Ok(prel) = parent.strip_prefix(root) else {
            continue;
        };
        match resolve_in_root(root, &prel.to_string_lossy()) {
            Ok(real) if real == parent => {}
            _ => continue,
        }
        let Ok(pm) = fs::metadata(parent) else {
            continue;
        };
        let removed = if m.is_dir() {
            fs::remove_dir(&p)
        } else {
            fs::remove_file(&p)
        };
        if removed.is_ok() {
            let _ = set_times(
                parent,
                (pm.atime(), pm.atime_nsec()),
                (pm.mtime(), pm.mtime_nsec()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_in_the_root() {
        let root = std::env::temp_dir().join(format!("wcbuild-fsutil-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/a", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../a/b", root.join("a/up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let r = |p: &str| resolve_in_root(&root, p).unwrap();
        assert_eq!(r("/abs/b"), root.join("a/b"));
        assert_eq!(r("a/up/x/y"), root.join("a/b/x/y"));
        assert_eq!(r("/../../etc"), root.join("etc"));
        assert_eq!(r("/missing/../a"), root.join("a"));
        assert!(resolve_in_root(&root, "/loop").is_err());
        let stubs = record_stubs(&root, &["/new/dir/file".into(), "/a/b".into()]);
        assert_eq!(
            stubs,
            [
                root.join("new/dir/file"),
                root.join("new/dir"),
                root.join("new")
            ]
        );
        fs::create_dir_all(root.join("new/dir")).unwrap();
        fs::write(root.join("new/dir/file"), "").unwrap();
        clean_stubs(&root, &stubs);
        assert!(!root.join("new").exists());
        // A stub that received content stays, and so do its parents.
        fs::create_dir_all(root.join("new/dir")).unwrap();
        fs::write(root.join("new/dir/file"), "x").unwrap();
        clean_stubs(&root, &stubs);
        assert!(root.join("new/dir/file").exists());
        let _ = fs::remove_dir_all(&root);
    }
}
