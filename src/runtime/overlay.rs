//! The step's root file system: an overlayfs mount of the lower layers under a fresh upper
//! directory, or, where overlayfs cannot be mounted, a copy of the lowers into one tree plus a
//! [`Snapshot`] taken before the step.
//!
//! The mount uses the new mount API (`fsopen("overlay")`, one `lowerdir+` per layer, no limit
//! on the number of layers but the kernel's) when the kernel has it (6.8 and later), else
//! `mount(2)` with the options in one page: when they do not fit, the calling thread changes
//! to the lowers' common parent and passes relative paths (as containerd does). Options:
//! `index=off` where the kernel has the parameter, `redirect_dir=off` and `metacopy=off` so
//! that the upper directory always holds whole files and plain directories (BuildKit's differ
//! refuses redirects). Unmounted on drop (lazily if busy).

use crate::layer::diff::{LowerDir, Snapshot, snapshot_tree};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::fsutil::{cstr, lchown, set_times};

fn param(name: &str) -> Option<String> {
    fs::read_to_string(format!("/sys/module/overlay/parameters/{name}"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The options besides the directories, as `key=value` pairs.
fn feature_options() -> Vec<(&'static str, &'static str)> {
    let mut v = Vec::new();
    if param("index").is_some() {
        v.push(("index", "off"));
    }
    if param("redirect_dir").is_some() {
        v.push(("redirect_dir", "off"));
    }
    if param("metacopy").is_some() {
        v.push(("metacopy", "off"));
    }
    v
}

/// A mounted overlay; unmounted when dropped.
#[derive(Debug)]
pub struct OverlayMount {
    target: PathBuf,
    /// How it was mounted: `new mount API` or `mount(2)`.
    pub method: &'static str,
}

impl OverlayMount {
    /// Mounts `lowers` (top first; at least one) under `upper` (with `work` on the same file
    /// system) at `target`.
    pub fn mount(
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> io::Result<OverlayMount> {
        if lowers.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("overlay at `{}`: no lower directory", target.display()),
            ));
        }
        match mount_new_api(lowers, upper, work, target) {
            Ok(()) => {
                return Ok(OverlayMount {
                    target: target.to_path_buf(),
                    method: "new mount API",
                });
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !lowerdir_plus_known() => {}
            Err(e) => return Err(e),
        }
        mount_legacy(lowers, upper, work, target)?;
        Ok(OverlayMount {
            target: target.to_path_buf(),
            method: "mount(2)",
        })
    }

    /// Where it is mounted.
    pub fn target(&self) -> &Path {
        &self.target
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = unmount(&self.target);
    }
}

/// Unmounts `target`, lazily when it is busy.
pub fn unmount(target: &Path) -> io::Result<()> {
    let c = cstr(target)?;
    // SAFETY: `c` is NUL-terminated.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EBUSY) {
        // SAFETY: as above.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            return Ok(());
        }
        return Err(io::Error::last_os_error());
    }
    Err(e)
}

fn lowerdir_plus_known() -> bool {
    // "lowerdir+" came with kernel 6.8.
    let Ok(r) = fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut it = r.trim().split(['.', '-']);
    let major: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 8)
}

struct Fd(i32);
impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

fn mount_new_api(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> io::Result<()> {
    let fstype = c"overlay";
    // SAFETY: fsopen takes a NUL-terminated name and flags.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_fsopen,
            fstype.as_ptr(),
            1, /* FSOPEN_CLOEXEC */
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = Fd(fd as i32);
    let set = |key: &str, value: &str| -> io::Result<()> {
        let k = std::ffi::CString::new(key).map_err(io::Error::other)?;
        let v = std::ffi::CString::new(value).map_err(io::Error::other)?;
        // SAFETY: FSCONFIG_SET_STRING (1) with NUL-terminated key and value.
        let r = unsafe { libc::syscall(libc::SYS_fsconfig, fd.0, 1, k.as_ptr(), v.as_ptr(), 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("overlay option {key}=`{value}`: {e}"),
            ));
        }
        Ok(())
    };
    let utf8 = |p: &Path| -> io::Result<String> {
        p.to_str().map(str::to_string).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}` is not UTF-8", p.display()),
            )
        })
    };
    for l in lowers {
        set("lowerdir+", &utf8(l)?).map_err(|e| keep_errno(e, l))?;
    }
    set("upperdir", &utf8(upper)?)?;
    set("workdir", &utf8(work)?)?;
    for (k, v) in feature_options() {
        set(k, v)?;
    }
    // SAFETY: FSCONFIG_CMD_CREATE (6) takes no key or value.
    if unsafe { libc::syscall(libc::SYS_fsconfig, fd.0, 6, 0, 0, 0) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("create the overlay for `{}`: {e}", target.display()),
        ));
    }
    // SAFETY: fsmount(fd, FSMOUNT_CLOEXEC, 0).
    let mfd = unsafe { libc::syscall(libc::SYS_fsmount, fd.0, 1, 0) };
    if mfd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mfd = Fd(mfd as i32);
    let t = cstr(target)?;
    // SAFETY: move_mount(mfd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH).
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mfd.0,
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            4,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn keep_errno(e: io::Error, p: &Path) -> io::Error {
    match e.raw_os_error() {
        Some(_) => e,
        None => io::Error::new(e.kind(), format!("`{}`: {e}", p.display())),
    }
}

fn common_parent(paths: &[PathBuf]) -> PathBuf {
    let mut prefix: Vec<_> = paths[0]
        .parent()
        .unwrap_or(Path::new("/"))
        .components()
        .collect();
    for p in &paths[1..] {
        let comps: Vec<_> = p.parent().unwrap_or(Path::new("/")).components().collect();
        let n = prefix
            .iter()
            .zip(&comps)
            .take_while(|(a, b)| a == b)
            .count();
        prefix.truncate(n);
    }
    prefix.iter().collect()
}

fn mount_legacy(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> io::Result<()> {
    for p in lowers.iter().map(PathBuf::as_path).chain([upper, work]) {
        let s = p.to_string_lossy();
        if s.contains([',', ':']) || !p.is_absolute() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{s}`: overlay paths must be absolute without `,` or `:`"),
            ));
        }
    }
    let features: String = feature_options()
        .iter()
        .map(|(k, v)| format!("{k}={v},"))
        .collect();
    let join = |ls: Vec<String>| {
        format!(
            "{features}lowerdir={},upperdir={},workdir={}",
            ls.join(":"),
            upper.display(),
            work.display()
        )
    };
    let page = 4096;
    let mut data = join(lowers.iter().map(|l| l.display().to_string()).collect());
    let mut chdir: Option<PathBuf> = None;
    if data.len() >= page - 512 {
        let dir = common_parent(lowers);
        let rel: Vec<String> = lowers
            .iter()
            .map(|l| {
                l.strip_prefix(&dir)
                    .map(|r| r.display().to_string())
                    .unwrap_or_default()
            })
            .collect();
        data = join(rel);
        if data.len() >= page {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "overlay at `{}`: {} lower directories do not fit in one page of mount options",
                    target.display(),
                    lowers.len()
                ),
            ));
        }
        chdir = Some(dir);
    }
    let old = std::env::current_dir().ok();
    if let Some(d) = &chdir {
        // The calling thread has its own working directory (it left the process's file
        // system context when it unshared its mount namespace).
        std::env::set_current_dir(d)?;
    }
    let src = c"overlay";
    let t = cstr(target)?;
    let d = std::ffi::CString::new(data).map_err(io::Error::other)?;
    // SAFETY: all strings are NUL-terminated.
    let r = unsafe { libc::mount(src.as_ptr(), t.as_ptr(), src.as_ptr(), 0, d.as_ptr().cast()) };
    let err = io::Error::last_os_error();
    if chdir.is_some()
        && let Some(o) = old
    {
        let _ = std::env::set_current_dir(o);
    }
    if r != 0 {
        return Err(io::Error::new(
            err.kind(),
            format!("mount overlay at `{}`: {err}", target.display()),
        ));
    }
    Ok(())
}

/// Copies the merged view of `lowers` (top first, overlay format) into `dest` (an empty
/// directory): owners, modes, times (nanoseconds), xattrs (not the overlay's own), hard links
/// inside a layer, devices and pipes; sockets are skipped. Returns the snapshot of `dest`.
pub fn copy_lowers(lowers: &[PathBuf], dest: &Path) -> io::Result<Snapshot> {
    let root = LowerDir::root(lowers)?;
    let mut links = HashMap::new();
    copy_dir(&root, dest, &mut links)?;
    snapshot_tree(dest, lowers)
}

fn at(path: &Path, what: &str) -> impl FnOnce(io::Error) -> io::Error + use<> {
    let msg = format!("{what} `{}`", path.display());
    move |e| io::Error::new(e.kind(), format!("{msg}: {e}"))
}

fn copy_dir(
    src: &LowerDir,
    dest: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    for name in src.names()? {
        let Some((path, sub)) = src.lookup(&name)? else {
            continue;
        };
        let to = dest.join(&name);
        let m = fs::symlink_metadata(&path).map_err(at(&path, "stat"))?;
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        if ft.is_socket() {
            continue;
        }
        if !ft.is_dir() && m.nlink() > 1 {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                fs::hard_link(first, &to).map_err(at(&to, "link"))?;
                continue;
            }
            links.insert((m.dev(), m.ino()), to.clone());
        }
        if ft.is_dir() {
            fs::create_dir(&to).map_err(at(&to, "create"))?;
            if let Some(sub) = &sub {
                copy_dir(sub, &to, links)?;
            }
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&path)?, &to).map_err(at(&to, "create"))?;
        } else if ft.is_file() {
            copy_file(&path, &to)?;
        } else {
            let c = cstr(&to)?;
            // SAFETY: `c` is NUL-terminated; mode and device come from an existing node.
            if unsafe { libc::mknod(c.as_ptr(), m.mode(), m.rdev()) } != 0 {
                return Err(at(&to, "create")(io::Error::last_os_error()));
            }
        }
        lchown(&to, m.uid(), m.gid()).map_err(at(&to, "chown"))?;
        if !ft.is_symlink() {
            fs::set_permissions(&to, fs::Permissions::from_mode(m.mode() & 0o7777))
                .map_err(at(&to, "chmod"))?;
            for (k, v) in crate::layer::xattr::list(&path).unwrap_or_default() {
                if !k.starts_with("trusted.overlay.") && !k.starts_with("user.overlay.") {
                    let _ = crate::layer::xattr::set(&to, &k, &v);
                }
            }
        }
        set_times(
            &to,
            (m.atime(), m.atime_nsec()),
            (m.mtime(), m.mtime_nsec()),
        )
        .map_err(at(&to, "set times of"))?;
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let src = fs::File::open(from).map_err(at(from, "open"))?;
    let dst = fs::File::create(to).map_err(at(to, "create"))?;
    // A reflink where the file system has them (btrfs, xfs), else a copy.
    // SAFETY: FICLONE takes the source descriptor; both descriptors are open.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if r == 0 {
        return Ok(());
    }
    let mut src = src;
    let mut dst = dst;
    io::copy(&mut src, &mut dst).map_err(at(to, "copy to"))?;
    Ok(())
}
