//! Writing and deleting beneath a root directory, and never outside it, by construction.
//!
//! A [`Root`] is an open directory; every operation names its object by checked components
//! relative to it (`&["etc", "passwd"]`), never by a joined path. On unix the parent of the
//! object is resolved beneath the root's file descriptor: with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` when the kernel has it, else one component at a time with
//! `openat(O_DIRECTORY | O_NOFOLLOW)`; the operation itself is then made relative to the
//! parent's descriptor (`mkdirat`, `openat(O_CREAT | O_EXCL | O_NOFOLLOW)`, `symlinkat`,
//! `linkat`, `mknodat`, `unlinkat`, `fchownat`/`utimensat` with `AT_SYMLINK_NOFOLLOW`, and
//! `fchmod`/`fsetxattr`/`futimens` on a descriptor). No symlink is ever followed, so a symlink
//! a layer planted (to `/`, to `..`, in a chain) makes the operation fail instead of leaving the
//! root. A recursive removal walks descriptors too and climbs back with `..` only after
//! checking that it reached the directory it came from.
//!
//! Elsewhere (and on request, for tests) the same operations walk joined paths, checking every
//! component with `symlink_metadata` first ([`Resolver::PathWalk`]); that is safe against the
//! layer itself, though not against another process changing the tree at the same time.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// What is at a name (never following a symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symlink.
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

/// A special file [`Root::mknod`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
}

/// How names are resolved beneath the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (Linux 5.6 and later).
    Openat2,
    /// `openat(O_DIRECTORY | O_NOFOLLOW)` one component at a time.
    FdWalk,
    /// Joined paths, every component checked with `symlink_metadata` (non-unix hosts).
    PathWalk,
}

/// Why an operation beneath the root failed.
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    /// A component on the way is a symlink.
    #[error("`{path}` is a symlink, and nothing is written or deleted through one")]
    Symlink {
        /// The components up to the symlink, `/`-joined.
        path: String,
    },
    /// A component on the way is not a directory.
    #[error("`{path}` is not a directory")]
    NotDir {
        /// The components up to it, `/`-joined.
        path: String,
    },
    /// A name given is not a single component.
    #[error("`{component}` is not a single path component")]
    Component {
        /// The name.
        component: String,
    },
    /// A file system operation failed.
    #[error("{op} `{}`: {source}", path.display())]
    Io {
        /// What.
        op: &'static str,
        /// Where (the root joined with the components).
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl BeneathError {
    /// The underlying I/O error, for an [`BeneathError::Io`].
    pub fn io(&self) -> Option<&io::Error> {
        match self {
            BeneathError::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    /// True when the object (or its parent) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.io()
            .is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
    }
}

/// Metadata to set on an object. `None` leaves that part as it is.
#[derive(Debug, Clone, Default)]
pub struct Meta<'a> {
    /// Owner and group.
    pub owner: Option<(u32, u32)>,
    /// Permission bits (`0o7777`; setuid, setgid and sticky included).
    pub mode: Option<u32>,
    /// Modification time, seconds since the epoch (negative values are left alone).
    pub mtime: Option<i64>,
    /// Extended attributes (set on files and directories only).
    pub xattrs: Vec<(&'a str, &'a [u8])>,
}

fn check_component(c: &str) -> Result<(), BeneathError> {
    if c.is_empty() || c == "." || c == ".." || c.contains('/') || c.contains('\0') {
        return Err(BeneathError::Component {
            component: c.to_string(),
        });
    }
    if cfg!(windows) && (c.contains('\\') || (c.len() >= 2 && c.as_bytes()[1] == b':')) {
        return Err(BeneathError::Component {
            component: c.to_string(),
        });
    }
    Ok(())
}

fn check_all(rel: &[&str]) -> Result<(), BeneathError> {
    rel.iter().try_for_each(|c| check_component(c))
}

fn split<'a>(rel: &'a [&'a str]) -> Result<(&'a [&'a str], &'a str), BeneathError> {
    check_all(rel)?;
    match rel.split_last() {
        Some((last, init)) => Ok((init, last)),
        None => Err(BeneathError::Component {
            component: String::new(),
        }),
    }
}

/// A directory that operations stay beneath.
pub struct Root {
    path: PathBuf,
    imp: Imp,
}

enum Imp {
    #[cfg(unix)]
    Fd(fd::FdRoot),
    Walk,
}

impl Root {
    /// Opens an existing directory as a root, with the best resolver this host has.
    pub fn open(path: &Path) -> Result<Root, BeneathError> {
        #[cfg(unix)]
        {
            Root::open_with(path, Resolver::Openat2)
        }
        #[cfg(not(unix))]
        {
            Root::open_with(path, Resolver::PathWalk)
        }
    }

    /// Opens a root with a chosen resolver. `Openat2` falls back to `FdWalk` when the kernel
    /// does not have it; the descriptor resolvers fall back to `PathWalk` off unix.
    pub fn open_with(path: &Path, resolver: Resolver) -> Result<Root, BeneathError> {
        let io_err = |source| BeneathError::Io {
            op: "open directory",
            path: path.to_path_buf(),
            source,
        };
        #[cfg(unix)]
        if resolver != Resolver::PathWalk {
            let f = fd::FdRoot::open(path, resolver == Resolver::Openat2).map_err(io_err)?;
            return Ok(Root {
                path: path.to_path_buf(),
                imp: Imp::Fd(f),
            });
        }
        let _ = resolver;
        match fs::metadata(path) {
            Ok(m) if m.is_dir() => Ok(Root {
                path: path.to_path_buf(),
                imp: Imp::Walk,
            }),
            Ok(_) => Err(io_err(io::Error::other("not a directory"))),
            Err(e) => Err(io_err(e)),
        }
    }

    /// The resolver in use (after any fallback).
    pub fn resolver(&self) -> Resolver {
        match &self.imp {
            #[cfg(unix)]
            Imp::Fd(f) => f.resolver(),
            Imp::Walk => Resolver::PathWalk,
        }
    }

    /// The root's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root joined with `rel`, for messages.
    pub fn display_path(&self, rel: &[&str]) -> PathBuf {
        let mut p = self.path.clone();
        for c in rel {
            p.push(c);
        }
        p
    }

    fn walk(&self) -> walk::Walk<'_> {
        walk::Walk { root: self }
    }

    /// What is at `rel` (`None` when it or a parent does not exist). A symlink on the way is
    /// an error; a symlink at `rel` itself is reported as one.
    pub fn kind(&self, rel: &[&str]) -> Result<Option<NodeKind>, BeneathError> {
        let (init, name) = split(rel)?;
        match &self.imp {
            #[cfg(unix)]
            Imp::Fd(f) => f.kind(self, init, name),
            Imp::Walk => self.walk().kind(init, name),
        }
    }

    /// Makes every component of `rel` a directory, creating missing ones (mode 0755).
    pub fn create_dir_all(&self, rel: &[&str]) -> Result<(), BeneathError> {
        check_all(rel)?;
        match &self.imp {
            #[cfg(unix)]
            Imp::Fd(f) => f.dir(self, rel, true).map(|_| ()),
            Imp::Walk => self.walk().dir(rel, true).map(|_| ()),
        }
    }

    /// Creates the directory `rel` (parents too); `Ok(false)` when a directory is there.
    pub fn create_dir(&self, rel: &[&str]) -> Result<bool, BeneathError> {
        let (init, name) = split(rel)?;
        match &self.imp {
            #[cfg(unix)]
            Imp::Fd(f) => f.create_dir(self, init, name),
            Imp::Walk => self.walk().create_dir(init, name),
        }
    }

    /// Creates the regular file `rel` (parents too), which must not exist, for writing.
    pub fn create_file(&self, rel: &[&str]) -> Result<File, BeneathError> {
        let (init, name) = split(rel)?;
        match &self.imp {
            #[cfg(unix)]
            Imp::Fd(f) => f.create_file(self, init, name),
            Imp::Walk => self.walk().create_file(init, name),
        }
    }

    /// Creates the symlink `rel` (parents too) pointing at `target`, which is stored as it
    /// is and never followed here.
    pub fn symlink(&self, target: &str, rel: &[&str]) -> Result<(), BeneathError> {
        let (init, name) = split(rel)?;
        match &self.imp {
            #[cfg(unix)]
            Imp::Fd(f) => f.symlink(self, target, init, name),
            Imp::Walk => self.walk().symlink(target, init, name),
        }
    }

    /// Creates the hard link `rel` (parents too) to the existing `existing`, which is linked
    /// itself (a symlink is not followed).
    pub fn hard_link(&self, existing: &[&str], rel: &[&str]) -> Result<(), BeneathError> {
        let (einit, ename) = split(existing)?;
        let (init, name) = split(rel)?;
        match &self.imp {
            #[cfg(unix)]
            Imp::Fd(f) => f.hard_link(self, einit, ename, init, name),
            Imp::Walk => self.walk().hard_link(einit, ename, init, name),
        }
    }

    /// Creates a device or FIFO at `rel` (parents too).
    pub fn mknod(
        &self,
        rel: &[&str],
        kind: Special,
        mode: u32,
        dev: (u32, u32),
    ) -> Result<(), BeneathError> {
        let (init, name) = split(rel)?;
        match &self.imp {
            #[cfg(unix)]
            Imp::Fd(f) => f.mknod(self, init, name, kind, mode, dev),
            Imp::Walk => self.walk().mknod(init, name, kind, mode, dev),
        }
    }

    /// Removes whatever is at `rel`, a directory with everything in it, never following a
    /// symlink. `Ok(false)` when nothing was there.
    pub fn remove(&self, rel: &[&str]) -> Result<bool, BeneathError> {
        let (init, name) = split(rel)?;
        match &self.imp {
            #[cfg(unix)]
            Imp::Fd(f) => f.remove(self, init, name),
            Imp::Walk => self.walk().remove(init, name),
        }
    }

    /// The names in the directory `rel` (the root when empty); `None` when it does not
    /// exist. Names that are not UTF-8 are left out.
    pub fn read_dir(&self, rel: &[&str]) -> Result<Option<Vec<String>>, BeneathError> {
        check_all(rel)?;
        match &self.imp {
            #[cfg(unix)]
            Imp::Fd(f) => f.read_dir(self, rel),
            Imp::Walk => self.walk().read_dir(rel),
        }
    }

    /// Sets metadata on what is at `rel` without following it: owner, mode and time on
    /// anything (mode not on symlinks), extended attributes on files and directories.
    /// Returns how many extended attributes the file system refused. Ownership changes that
    /// are not permitted are left out quietly.
    pub fn set_meta(&self, rel: &[&str], meta: &Meta) -> Result<u64, BeneathError> {
        let (init, name) = split(rel)?;
        match &self.imp {
            #[cfg(unix)]
            Imp::Fd(f) => f.set_meta(self, init, name, meta),
            Imp::Walk => self.walk().set_meta(init, name, meta),
        }
    }

    /// Sets one extended attribute on the directory or file `rel` (the root when empty),
    /// reporting any failure.
    pub fn set_xattr(&self, rel: &[&str], name: &str, value: &[u8]) -> Result<(), BeneathError> {
        check_all(rel)?;
        match &self.imp {
            #[cfg(unix)]
            Imp::Fd(f) => f.set_xattr(self, rel, name, value),
            Imp::Walk => self.walk().set_xattr(rel, name, value),
        }
    }
}

/// Sets metadata on a file through its descriptor (as [`Root::create_file`] returned it):
/// owner first (a change of owner clears setuid bits), then mode, extended attributes, time.
/// Returns how many extended attributes the file system refused.
pub fn set_file_meta(file: &File, path: &Path, meta: &Meta) -> Result<u64, BeneathError> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        fd::fd_meta(file.as_raw_fd(), path, meta)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        if let Some(t) = meta.mtime.and_then(system_time) {
            let _ = file.set_modified(t);
        }
        Ok(meta.xattrs.len() as u64)
    }
}

fn system_time(secs: i64) -> Option<std::time::SystemTime> {
    (secs >= 0).then(|| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64))
}

fn io_at(op: &'static str, path: PathBuf) -> impl FnOnce(io::Error) -> BeneathError {
    move |source| BeneathError::Io { op, path, source }
}

/// Extended attributes written only by overlayfs itself; a layer that carries them could
/// redirect or hide what other layers hold, so they are never restored from a tar.
pub fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}

#[cfg(unix)]
mod fd {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::ffi::{CStr, CString};
    use std::mem::MaybeUninit;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::sync::Arc;

    pub(super) struct FdRoot {
        fd: Arc<OwnedFd>,
        openat2: Cell<bool>,
        /// The last directory resolved, by its components. It stays right because nothing
        /// is renamed, and every removal of a directory forgets it.
        cache: RefCell<Option<(Vec<String>, Arc<OwnedFd>)>>,
    }

    fn cname(s: &str) -> io::Result<CString> {
        CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
    }

    fn cvt(rc: libc::c_int) -> io::Result<()> {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        loop {
            match f() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    pub(super) fn openat(
        dir: RawFd,
        name: &CStr,
        flags: libc::c_int,
        mode: libc::mode_t,
    ) -> io::Result<OwnedFd> {
        retry(|| {
            // SAFETY: `name` is NUL-terminated; the result is checked before use.
            let fd = unsafe {
                libc::openat(
                    dir,
                    name.as_ptr(),
                    flags | libc::O_CLOEXEC,
                    mode as libc::c_uint,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` was just returned by openat and is owned by nobody else.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })
    }

    #[cfg(target_os = "linux")]
    fn openat2(dir: RawFd, path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: libc::RESOLVE_BENEATH
                | libc::RESOLVE_NO_SYMLINKS
                | libc::RESOLVE_NO_MAGICLINKS,
        };
        retry(|| {
            // SAFETY: `path` is NUL-terminated and `how` is a valid `struct open_how` of the
            // size passed.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    dir,
                    path.as_ptr(),
                    &how as *const OpenHow,
                    std::mem::size_of::<OpenHow>(),
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a new descriptor owned by nobody else.
            Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn openat2(_dir: RawFd, _path: &CStr, _flags: libc::c_int) -> io::Result<OwnedFd> {
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }

    pub(super) fn fstatat(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
        let mut st = MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `st` has room for a stat; `name` is NUL-terminated.
        cvt(unsafe {
            libc::fstatat(
                dir,
                name.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        // SAFETY: fstatat succeeded, so it filled `st`.
        Ok(unsafe { st.assume_init() })
    }

    fn fstat(fd: RawFd) -> io::Result<libc::stat> {
        let mut st = MaybeUninit::<libc::stat>::uninit();
        // SAFETY: as above.
        cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
        // SAFETY: fstat succeeded.
        Ok(unsafe { st.assume_init() })
    }

    pub(super) fn kind_of(st: &libc::stat) -> NodeKind {
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => NodeKind::Dir,
            libc::S_IFREG => NodeKind::File,
            libc::S_IFLNK => NodeKind::Symlink,
            _ => NodeKind::Other,
        }
    }

    const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;

    impl FdRoot {
        pub(super) fn open(path: &Path, use_openat2: bool) -> io::Result<FdRoot> {
            use std::os::unix::ffi::OsStrExt;
            let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
            // The root itself is the caller's: it may be reached through symlinks.
            let fd = openat(libc::AT_FDCWD, &c, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            let root = FdRoot {
                fd: Arc::new(fd),
                openat2: Cell::new(use_openat2 && cfg!(target_os = "linux")),
                cache: RefCell::new(None),
            };
            if root.openat2.get() {
                // Probe once: ENOSYS (old kernel) or a seccomp filter's EPERM turn it off.
                match openat2(root.fd.as_raw_fd(), c".", DIR_FLAGS) {
                    Ok(_) => {}
                    Err(_) => root.openat2.set(false),
                }
            }
            Ok(root)
        }

        pub(super) fn resolver(&self) -> Resolver {
            if self.openat2.get() {
                Resolver::Openat2
            } else {
                Resolver::FdWalk
            }
        }

        fn forget(&self) {
            *self.cache.borrow_mut() = None;
        }

        /// The directory `rel`, resolved beneath the root without following symlinks;
        /// created when missing and `create`, else `None`.
        pub(super) fn dir(
            &self,
            root: &Root,
            rel: &[&str],
            create: bool,
        ) -> Result<Option<Arc<OwnedFd>>, BeneathError> {
            if rel.is_empty() {
                return Ok(Some(Arc::clone(&self.fd)));
            }
            let mut start = (Arc::clone(&self.fd), 0);
            if let Some((p, fd)) = &*self.cache.borrow()
                && p.len() <= rel.len()
                && p.iter().zip(rel).all(|(a, b)| a == b)
            {
                if p.len() == rel.len() {
                    return Ok(Some(Arc::clone(fd)));
                }
                start = (Arc::clone(fd), p.len());
            }
            if self.openat2.get() {
                let joined = cname(&rel.join("/"))
                    .map_err(io_at("open directory", root.display_path(rel)))?;
                match openat2(self.fd.as_raw_fd(), &joined, DIR_FLAGS) {
                    Ok(fd) => return Ok(Some(self.remember(rel, fd))),
                    Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => self.openat2.set(false),
                    // Anything else: walk, which creates what is missing and says precisely
                    // which component is in the way.
                    Err(_) => {}
                }
            }
            let (mut cur, from) = start;
            for i in from..rel.len() {
                let c = cname(rel[i])
                    .map_err(io_at("open directory", root.display_path(&rel[..=i])))?;
                let next = match openat(cur.as_raw_fd(), &c, DIR_FLAGS, 0) {
                    Ok(fd) => fd,
                    Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                        // SAFETY: `c` is NUL-terminated.
                        let rc = unsafe { libc::mkdirat(cur.as_raw_fd(), c.as_ptr(), 0o755) };
                        if rc != 0 {
                            let e = io::Error::last_os_error();
                            if e.kind() != io::ErrorKind::AlreadyExists {
                                return Err(io_at(
                                    "create directory",
                                    root.display_path(&rel[..=i]),
                                )(e));
                            }
                        }
                        openat(cur.as_raw_fd(), &c, DIR_FLAGS, 0)
                            .map_err(|e| classify(root, cur.as_raw_fd(), &c, &rel[..=i], e))?
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(classify(root, cur.as_raw_fd(), &c, &rel[..=i], e)),
                };
                cur = Arc::new(next);
            }
            *self.cache.borrow_mut() = Some((
                rel.iter().map(|s| s.to_string()).collect(),
                Arc::clone(&cur),
            ));
            Ok(Some(cur))
        }

        fn remember(&self, rel: &[&str], fd: OwnedFd) -> Arc<OwnedFd> {
            let fd = Arc::new(fd);
            *self.cache.borrow_mut() =
                Some((rel.iter().map(|s| s.to_string()).collect(), Arc::clone(&fd)));
            fd
        }

        fn parent(
            &self,
            root: &Root,
            init: &[&str],
            create: bool,
        ) -> Result<Arc<OwnedFd>, BeneathError> {
            self.dir(root, init, create)?
                .ok_or_else(|| BeneathError::Io {
                    op: "open directory",
                    path: root.display_path(init),
                    source: io::Error::from(io::ErrorKind::NotFound),
                })
        }

        pub(super) fn kind(
            &self,
            root: &Root,
            init: &[&str],
            name: &str,
        ) -> Result<Option<NodeKind>, BeneathError> {
            let Some(dir) = self.dir(root, init, false)? else {
                return Ok(None);
            };
            let c = cname(name).map_err(io_at("stat", root.display_path(init)))?;
            match fstatat(dir.as_raw_fd(), &c) {
                Ok(st) => Ok(Some(kind_of(&st))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_at("stat", join(root, init, name))(e)),
            }
        }

        pub(super) fn create_dir(
            &self,
            root: &Root,
            init: &[&str],
            name: &str,
        ) -> Result<bool, BeneathError> {
            let dir = self.parent(root, init, true)?;
            let c = cname(name).map_err(io_at("create directory", join(root, init, name)))?;
            // SAFETY: `c` is NUL-terminated.
            let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) };
            if rc == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::AlreadyExists
                && let Ok(st) = fstatat(dir.as_raw_fd(), &c)
                && kind_of(&st) == NodeKind::Dir
            {
                return Ok(false);
            }
            Err(io_at("create directory", join(root, init, name))(e))
        }

        pub(super) fn create_file(
            &self,
            root: &Root,
            init: &[&str],
            name: &str,
        ) -> Result<File, BeneathError> {
            let dir = self.parent(root, init, true)?;
            let path = || join(root, init, name);
            let c = cname(name).map_err(io_at("create", path()))?;
            let fd = openat(
                dir.as_raw_fd(),
                &c,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                0o600,
            )
            .map_err(io_at("create", path()))?;
            Ok(File::from(fd))
        }

        pub(super) fn symlink(
            &self,
            root: &Root,
            target: &str,
            init: &[&str],
            name: &str,
        ) -> Result<(), BeneathError> {
            let dir = self.parent(root, init, true)?;
            let path = || join(root, init, name);
            let c = cname(name).map_err(io_at("create symlink", path()))?;
            let t = cname(target).map_err(io_at("create symlink", path()))?;
            // SAFETY: both strings are NUL-terminated.
            cvt(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })
                .map_err(io_at("create symlink", path()))
        }

        pub(super) fn hard_link(
            &self,
            root: &Root,
            einit: &[&str],
            ename: &str,
            init: &[&str],
            name: &str,
        ) -> Result<(), BeneathError> {
            let from = self.parent(root, einit, false)?;
            let to = self.parent(root, init, true)?;
            let path = || join(root, init, name);
            let e = cname(ename).map_err(io_at("create hard link", path()))?;
            let c = cname(name).map_err(io_at("create hard link", path()))?;
            // SAFETY: both names are NUL-terminated; flags 0 links a symlink itself.
            cvt(unsafe {
                libc::linkat(from.as_raw_fd(), e.as_ptr(), to.as_raw_fd(), c.as_ptr(), 0)
            })
            .map_err(io_at("create hard link", path()))
        }

        pub(super) fn mknod(
            &self,
            root: &Root,
            init: &[&str],
            name: &str,
            kind: Special,
            mode: u32,
            dev: (u32, u32),
        ) -> Result<(), BeneathError> {
            let dir = self.parent(root, init, true)?;
            let path = || join(root, init, name);
            let c = cname(name).map_err(io_at("mknod", path()))?;
            mknodat(dir.as_raw_fd(), &c, kind, mode, dev).map_err(io_at("mknod", path()))
        }

        pub(super) fn remove(
            &self,
            root: &Root,
            init: &[&str],
            name: &str,
        ) -> Result<bool, BeneathError> {
            let Some(dir) = self.dir(root, init, false)? else {
                return Ok(false);
            };
            let path = || join(root, init, name);
            let c = cname(name).map_err(io_at("remove", path()))?;
            let st = match fstatat(dir.as_raw_fd(), &c) {
                Ok(st) => st,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(io_at("stat", path())(e)),
            };
            if kind_of(&st) == NodeKind::Dir {
                self.forget();
                remove_tree(dir.as_raw_fd(), &c).map_err(io_at("remove", path()))?;
            } else {
                // SAFETY: `c` is NUL-terminated.
                cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) })
                    .map_err(io_at("remove", path()))?;
            }
            Ok(true)
        }

        pub(super) fn read_dir(
            &self,
            root: &Root,
            rel: &[&str],
        ) -> Result<Option<Vec<String>>, BeneathError> {
            let Some(dir) = self.dir(root, rel, false)? else {
                return Ok(None);
            };
            let names =
                list(dir.as_raw_fd()).map_err(io_at("read directory", root.display_path(rel)))?;
            Ok(Some(
                names
                    .into_iter()
                    .filter_map(|n| n.into_string().ok())
                    .collect(),
            ))
        }

        pub(super) fn set_meta(
            &self,
            root: &Root,
            init: &[&str],
            name: &str,
            meta: &Meta,
        ) -> Result<u64, BeneathError> {
            let dir = self.parent(root, init, false)?;
            let path = join(root, init, name);
            let c = cname(name).map_err(io_at("stat", path.clone()))?;
            let st = fstatat(dir.as_raw_fd(), &c).map_err(io_at("stat", path.clone()))?;
            match kind_of(&st) {
                k @ (NodeKind::Dir | NodeKind::File) => {
                    let flags = if k == NodeKind::Dir {
                        DIR_FLAGS
                    } else {
                        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK
                    };
                    let fd = openat(dir.as_raw_fd(), &c, flags, 0)
                        .map_err(io_at("open", path.clone()))?;
                    fd_meta(fd.as_raw_fd(), &path, meta)
                }
                k => {
                    if let Some((uid, gid)) = meta.owner {
                        // SAFETY: `c` is NUL-terminated. Errors (no privilege) are left out.
                        let _ = unsafe {
                            libc::fchownat(
                                dir.as_raw_fd(),
                                c.as_ptr(),
                                uid,
                                gid,
                                libc::AT_SYMLINK_NOFOLLOW,
                            )
                        };
                    }
                    if let (Some(mode), NodeKind::Other) = (meta.mode, k) {
                        // Never follows: glibc refuses (EOPNOTSUPP) rather than follow a symlink.
                        // SAFETY: as above.
                        let rc = unsafe {
                            libc::fchmodat(
                                dir.as_raw_fd(),
                                c.as_ptr(),
                                (mode & 0o7777) as libc::mode_t,
                                libc::AT_SYMLINK_NOFOLLOW,
                            )
                        };
                        if rc != 0 {
                            tracing::debug!(
                                "mode of `{}` not set: {}",
                                path.display(),
                                io::Error::last_os_error()
                            );
                        }
                    }
                    if let Some(t) = meta.mtime.filter(|t| *t >= 0) {
                        let ts = [
                            libc::timespec {
                                tv_sec: 0,
                                tv_nsec: libc::UTIME_OMIT,
                            },
                            libc::timespec {
                                tv_sec: t as libc::time_t,
                                tv_nsec: 0,
                            },
                        ];
                        // SAFETY: `ts` holds two timespecs; `c` is NUL-terminated.
                        let _ = unsafe {
                            libc::utimensat(
                                dir.as_raw_fd(),
                                c.as_ptr(),
                                ts.as_ptr(),
                                libc::AT_SYMLINK_NOFOLLOW,
                            )
                        };
                    }
                    Ok(meta.xattrs.len() as u64)
                }
            }
        }

        pub(super) fn set_xattr(
            &self,
            root: &Root,
            rel: &[&str],
            name: &str,
            value: &[u8],
        ) -> Result<(), BeneathError> {
            let path = root.display_path(rel);
            let fd = match rel.split_last() {
                None => None,
                Some((last, init)) => {
                    let dir = self.parent(root, init, false)?;
                    let c = cname(last).map_err(io_at("open", path.clone()))?;
                    let st = fstatat(dir.as_raw_fd(), &c).map_err(io_at("stat", path.clone()))?;
                    let flags = match kind_of(&st) {
                        NodeKind::Dir => DIR_FLAGS,
                        NodeKind::File => libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
                        _ => {
                            return Err(BeneathError::Io {
                                op: "set extended attribute",
                                path,
                                source: io::Error::new(
                                    io::ErrorKind::Unsupported,
                                    "only files and directories carry extended attributes here",
                                ),
                            });
                        }
                    };
                    Some(
                        openat(dir.as_raw_fd(), &c, flags, 0)
                            .map_err(io_at("open", path.clone()))?,
                    )
                }
            };
            let raw = fd
                .as_ref()
                .map(|f| f.as_raw_fd())
                .unwrap_or(self.fd.as_raw_fd());
            fsetxattr(raw, name, value).map_err(io_at("set extended attribute", path))
        }
    }

    fn join(root: &Root, init: &[&str], name: &str) -> PathBuf {
        let mut p = root.display_path(init);
        p.push(name);
        p
    }

    fn classify(root: &Root, dir: RawFd, name: &CStr, rel: &[&str], e: io::Error) -> BeneathError {
        let path = rel.join("/");
        if matches!(
            e.raw_os_error(),
            Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EMLINK)
        ) && let Ok(st) = fstatat(dir, name)
        {
            return if kind_of(&st) == NodeKind::Symlink {
                BeneathError::Symlink { path }
            } else {
                BeneathError::NotDir { path }
            };
        }
        io_at("open directory", root.display_path(rel))(e)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn mknodat(
        dir: RawFd,
        name: &CStr,
        kind: Special,
        mode: u32,
        dev: (u32, u32),
    ) -> io::Result<()> {
        let t = match kind {
            Special::Char => libc::S_IFCHR,
            Special::Block => libc::S_IFBLK,
            Special::Fifo => libc::S_IFIFO,
        };
        let devno = if kind == Special::Fifo {
            0
        } else {
            libc::makedev(dev.0, dev.1)
        };
        // SAFETY: `name` is NUL-terminated.
        cvt(unsafe {
            libc::mknodat(
                dir,
                name.as_ptr(),
                t | (mode & 0o7777) as libc::mode_t,
                devno,
            )
        })
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn mknodat(
        _dir: RawFd,
        _name: &CStr,
        _kind: Special,
        _mode: u32,
        _dev: (u32, u32),
    ) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "special files are not made on this system",
        ))
    }

    #[cfg(target_os = "linux")]
    fn fsetxattr(fd: RawFd, name: &str, value: &[u8]) -> io::Result<()> {
        let n = cname(name)?;
        // SAFETY: pointers are valid for the lengths given; flags 0 = create or replace.
        cvt(unsafe { libc::fsetxattr(fd, n.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
    }

    #[cfg(not(target_os = "linux"))]
    fn fsetxattr(_fd: RawFd, _name: &str, _value: &[u8]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "extended attributes are not set on this system",
        ))
    }

    /// Owner, mode, extended attributes and time, on a descriptor.
    pub(super) fn fd_meta(fd: RawFd, path: &Path, meta: &Meta) -> Result<u64, BeneathError> {
        if let Some((uid, gid)) = meta.owner {
            // SAFETY: a valid descriptor. Not being permitted is not an error here.
            let _ = unsafe { libc::fchown(fd, uid, gid) };
        }
        if let Some(mode) = meta.mode {
            // SAFETY: a valid descriptor.
            cvt(unsafe { libc::fchmod(fd, (mode & 0o7777) as libc::mode_t) })
                .map_err(io_at("chmod", path.to_path_buf()))?;
        }
        let mut refused = 0;
        for (k, v) in &meta.xattrs {
            if let Err(e) = fsetxattr(fd, k, v) {
                tracing::debug!("xattr `{k}` on `{}` not restored: {e}", path.display());
                refused += 1;
            }
        }
        if let Some(t) = meta.mtime.filter(|t| *t >= 0) {
            let ts = [
                libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
                libc::timespec {
                    tv_sec: t as libc::time_t,
                    tv_nsec: 0,
                },
            ];
            // SAFETY: `ts` holds two timespecs.
            let _ = unsafe { libc::futimens(fd, ts.as_ptr()) };
        }
        Ok(refused)
    }

    /// The names in a directory (without `.` and `..`), read through a duplicate of `fd`.
    fn list(fd: RawFd) -> io::Result<Vec<std::ffi::OsString>> {
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: duplicating a valid descriptor.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dup` is ours; fdopendir takes it over on success.
        let dirp = unsafe { libc::fdopendir(dup) };
        if dirp.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so `dup` is still ours to close.
            unsafe { libc::close(dup) };
            return Err(e);
        }
        // The duplicate shares its offset with `fd`, which an earlier listing moved.
        // SAFETY: `dirp` is a valid stream.
        unsafe { libc::rewinddir(dirp) };
        let mut out = Vec::new();
        let result = loop {
            set_errno0();
            // SAFETY: `dirp` is a valid stream.
            let ent = unsafe { libc::readdir(dirp) };
            if ent.is_null() {
                let e = io::Error::last_os_error();
                break if e.raw_os_error().unwrap_or(0) != 0 && cfg!(target_os = "linux") {
                    Err(e)
                } else {
                    Ok(())
                };
            }
            // SAFETY: readdir returned an entry whose name is NUL-terminated.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
            let b = name.to_bytes();
            if b != b"." && b != b".." {
                out.push(std::ffi::OsStr::from_bytes(b).to_os_string());
            }
        };
        // SAFETY: `dirp` is valid and closed once.
        unsafe { libc::closedir(dirp) };
        result.map(|()| out)
    }

    fn set_errno0() {
        #[cfg(target_os = "linux")]
        // SAFETY: errno is thread-local and writable.
        unsafe {
            *libc::__errno_location() = 0
        };
    }

    /// Removes the directory `name` in `parent` with everything in it, never following a
    /// symlink and holding one descriptor at a time: it climbs back with `..` only after
    /// checking (device and inode) that `..` is the directory it came down from.
    fn remove_tree(parent: RawFd, name: &CStr) -> io::Result<()> {
        struct Level {
            name: CString,
            id: (u64, u64),
            left: Vec<std::ffi::OsString>,
        }
        // The field types differ between systems.
        #[allow(clippy::unnecessary_cast)]
        let id = |st: &libc::stat| (st.st_dev as u64, st.st_ino as u64);
        let mut cur = openat(parent, name, DIR_FLAGS, 0)?;
        let top = fstat(cur.as_raw_fd())?;
        let mut stack = vec![Level {
            name: name.to_owned(),
            id: id(&top),
            left: list(cur.as_raw_fd())?,
        }];
        loop {
            let top = stack
                .last_mut()
                .expect("the stack holds the current directory");
            if let Some(n) = top.left.pop() {
                use std::os::unix::ffi::OsStrExt;
                let c = CString::new(n.as_bytes()).map_err(io::Error::other)?;
                let st = match fstatat(cur.as_raw_fd(), &c) {
                    Ok(st) => st,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if kind_of(&st) == NodeKind::Dir {
                    let child = openat(cur.as_raw_fd(), &c, DIR_FLAGS, 0)?;
                    let cst = fstat(child.as_raw_fd())?;
                    let left = list(child.as_raw_fd())?;
                    stack.push(Level {
                        name: c,
                        id: id(&cst),
                        left,
                    });
                    cur = child;
                } else {
                    // SAFETY: `c` is NUL-terminated.
                    cvt(unsafe { libc::unlinkat(cur.as_raw_fd(), c.as_ptr(), 0) })?;
                }
                continue;
            }
            let done = stack.pop().expect("not empty");
            match stack.last() {
                None => {
                    // SAFETY: `name` is NUL-terminated.
                    return cvt(unsafe {
                        libc::unlinkat(parent, done.name.as_ptr(), libc::AT_REMOVEDIR)
                    });
                }
                Some(up) => {
                    let p = openat(cur.as_raw_fd(), c"..", DIR_FLAGS, 0)?;
                    if id(&fstat(p.as_raw_fd())?) != up.id {
                        return Err(io::Error::other(
                            "a directory moved while it was being removed",
                        ));
                    }
                    // SAFETY: as above.
                    cvt(unsafe {
                        libc::unlinkat(p.as_raw_fd(), done.name.as_ptr(), libc::AT_REMOVEDIR)
                    })?;
                    cur = p;
                }
            }
        }
    }
}

/// The checked path walk: portable, and what non-unix hosts use.
mod walk {
    use super::*;

    pub(super) struct Walk<'a> {
        pub(super) root: &'a Root,
    }

    fn is_link(m: &fs::Metadata) -> bool {
        if m.file_type().is_symlink() {
            return true;
        }
        #[cfg(windows)]
        {
            use std::os::windows::fs::MetadataExt;
            // Junctions and every other reparse point count as links.
            if m.file_attributes() & 0x400 != 0 {
                return true;
            }
        }
        false
    }

    fn kind(m: &fs::Metadata) -> NodeKind {
        if is_link(m) {
            NodeKind::Symlink
        } else if m.is_dir() {
            NodeKind::Dir
        } else if m.is_file() {
            NodeKind::File
        } else {
            NodeKind::Other
        }
    }

    impl Walk<'_> {
        pub(super) fn dir(
            &self,
            rel: &[&str],
            create: bool,
        ) -> Result<Option<PathBuf>, BeneathError> {
            let mut p = self.root.path.clone();
            for (i, c) in rel.iter().enumerate() {
                p.push(c);
                let mut created = false;
                loop {
                    match fs::symlink_metadata(&p) {
                        Ok(m) if is_link(&m) => {
                            return Err(BeneathError::Symlink {
                                path: rel[..=i].join("/"),
                            });
                        }
                        Ok(m) if m.is_dir() => break,
                        Ok(_) => {
                            return Err(BeneathError::NotDir {
                                path: rel[..=i].join("/"),
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound && create && !created => {
                            match fs::create_dir(&p) {
                                Ok(()) => {}
                                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                                Err(e) => return Err(io_at("create directory", p)(e)),
                            }
                            created = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                        Err(e) => return Err(io_at("stat", p)(e)),
                    }
                }
            }
            Ok(Some(p))
        }

        fn parent(&self, init: &[&str], create: bool) -> Result<PathBuf, BeneathError> {
            self.dir(init, create)?.ok_or_else(|| BeneathError::Io {
                op: "open directory",
                path: self.root.display_path(init),
                source: io::Error::from(io::ErrorKind::NotFound),
            })
        }

        pub(super) fn kind(
            &self,
            init: &[&str],
            name: &str,
        ) -> Result<Option<NodeKind>, BeneathError> {
            let Some(mut p) = self.dir(init, false)? else {
                return Ok(None);
            };
            p.push(name);
            match fs::symlink_metadata(&p) {
                Ok(m) => Ok(Some(kind(&m))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_at("stat", p)(e)),
            }
        }

        pub(super) fn create_dir(&self, init: &[&str], name: &str) -> Result<bool, BeneathError> {
            let p = self.parent(init, true)?.join(name);
            match fs::create_dir(&p) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    match fs::symlink_metadata(&p) {
                        Ok(m) if kind(&m) == NodeKind::Dir => Ok(false),
                        _ => Err(io_at("create directory", p)(e)),
                    }
                }
                Err(e) => Err(io_at("create directory", p)(e)),
            }
        }

        pub(super) fn create_file(&self, init: &[&str], name: &str) -> Result<File, BeneathError> {
            let p = self.parent(init, true)?.join(name);
            let mut o = fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                o.custom_flags(libc::O_NOFOLLOW).mode(0o600);
            }
            o.open(&p).map_err(io_at("create", p))
        }

        pub(super) fn symlink(
            &self,
            target: &str,
            init: &[&str],
            name: &str,
        ) -> Result<(), BeneathError> {
            let p = self.parent(init, true)?.join(name);
            #[cfg(unix)]
            let r = std::os::unix::fs::symlink(target, &p);
            #[cfg(windows)]
            let r = std::os::windows::fs::symlink_file(target, &p);
            #[cfg(not(any(unix, windows)))]
            let r = Err::<(), _>(io::Error::from(io::ErrorKind::Unsupported));
            r.map_err(io_at("create symlink", p))
        }

        pub(super) fn hard_link(
            &self,
            einit: &[&str],
            ename: &str,
            init: &[&str],
            name: &str,
        ) -> Result<(), BeneathError> {
            let from = self.parent(einit, false)?.join(ename);
            let to = self.parent(init, true)?.join(name);
            fs::hard_link(&from, &to).map_err(io_at("create hard link", to))
        }

        pub(super) fn mknod(
            &self,
            init: &[&str],
            name: &str,
            kind: Special,
            mode: u32,
            dev: (u32, u32),
        ) -> Result<(), BeneathError> {
            let p = self.parent(init, true)?.join(name);
            #[cfg(any(target_os = "linux", target_os = "android"))]
            {
                use std::os::unix::ffi::OsStrExt;
                let c = std::ffi::CString::new(p.as_os_str().as_bytes())
                    .map_err(|e| io_at("mknod", p.clone())(io::Error::other(e)))?;
                let t = match kind {
                    Special::Char => libc::S_IFCHR,
                    Special::Block => libc::S_IFBLK,
                    Special::Fifo => libc::S_IFIFO,
                };
                let devno = if kind == Special::Fifo {
                    0
                } else {
                    libc::makedev(dev.0, dev.1)
                };
                // SAFETY: `c` is NUL-terminated.
                if unsafe { libc::mknod(c.as_ptr(), t | (mode & 0o7777) as libc::mode_t, devno) }
                    != 0
                {
                    return Err(io_at("mknod", p)(io::Error::last_os_error()));
                }
                Ok(())
            }
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            {
                let _ = (kind, mode, dev);
                Err(io_at("mknod", p)(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "special files are not made on this system",
                )))
            }
        }

        pub(super) fn remove(&self, init: &[&str], name: &str) -> Result<bool, BeneathError> {
            let Some(mut p) = self.dir(init, false)? else {
                return Ok(false);
            };
            p.push(name);
            let m = match fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(io_at("stat", p)(e)),
            };
            let r = match kind(&m) {
                // std's remove_dir_all never follows a symlink inside the tree.
                NodeKind::Dir => fs::remove_dir_all(&p),
                // A directory symlink or junction on Windows is removed as a directory.
                _ => fs::remove_file(&p).or_else(|e| {
                    if m.is_dir() {
                        fs::remove_dir(&p)
                    } else {
                        Err(e)
                    }
                }),
            };
            r.map_err(io_at("remove", p))?;
            Ok(true)
        }

        pub(super) fn read_dir(&self, rel: &[&str]) -> Result<Option<Vec<String>>, BeneathError> {
            let Some(p) = self.dir(rel, false)? else {
                return Ok(None);
            };
            let mut out = Vec::new();
            for e in fs::read_dir(&p).map_err(io_at("read directory", p.clone()))? {
                let e = e.map_err(io_at("read directory", p.clone()))?;
                if let Ok(n) = e.file_name().into_string() {
                    out.push(n);
                }
            }
            Ok(Some(out))
        }

        pub(super) fn set_meta(
            &self,
            init: &[&str],
            name: &str,
            meta: &Meta,
        ) -> Result<u64, BeneathError> {
            let p = self.parent(init, false)?.join(name);
            let m = fs::symlink_metadata(&p).map_err(io_at("stat", p.clone()))?;
            let k = kind(&m);
            #[cfg(unix)]
            if let Some((uid, gid)) = meta.owner {
                let _ = std::os::unix::fs::lchown(&p, Some(uid), Some(gid));
            }
            if k == NodeKind::Symlink {
                return Ok(meta.xattrs.len() as u64);
            }
            #[cfg(unix)]
            if let Some(mode) = meta.mode {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(io_at("chmod", p.clone()))?;
            }
            let mut refused = 0;
            for (k2, v) in &meta.xattrs {
                if k == NodeKind::Other || crate::layer::xattr::set(&p, k2, v).is_err() {
                    refused += 1;
                }
            }
            if let Some(t) = meta.mtime.and_then(system_time)
                && matches!(k, NodeKind::File | NodeKind::Dir)
                && let Ok(f) = File::open(&p)
            {
                let _ = f.set_modified(t);
            }
            Ok(refused)
        }

        pub(super) fn set_xattr(
            &self,
            rel: &[&str],
            name: &str,
            value: &[u8],
        ) -> Result<(), BeneathError> {
            let p = match rel.split_last() {
                None => self.root.path.clone(),
                Some((last, init)) => {
                    let p = self.parent(init, false)?.join(last);
                    match fs::symlink_metadata(&p) {
                        Ok(m) if matches!(kind(&m), NodeKind::Dir | NodeKind::File) => p,
                        Ok(_) => {
                            return Err(io_at("set extended attribute", p)(io::Error::new(
                                io::ErrorKind::Unsupported,
                                "only files and directories carry extended attributes here",
                            )));
                        }
                        Err(e) => return Err(io_at("stat", p)(e)),
                    }
                }
            };
            crate::layer::xattr::set(&p, name, value).map_err(io_at("set extended attribute", p))
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn base(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "wcbuild-beneath-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        fs::create_dir_all(d.join("root")).unwrap();
        fs::create_dir_all(d.join("outside/sub")).unwrap();
        fs::write(d.join("outside/canary"), "canary").unwrap();
        fs::write(d.join("outside/sub/canary"), "canary").unwrap();
        d
    }

    fn resolvers() -> Vec<Resolver> {
        vec![Resolver::Openat2, Resolver::FdWalk, Resolver::PathWalk]
    }

    fn outside_intact(d: &Path) {
        assert_eq!(
            fs::read_to_string(d.join("outside/canary")).unwrap(),
            "canary"
        );
        assert_eq!(
            fs::read_to_string(d.join("outside/sub/canary")).unwrap(),
            "canary"
        );
        let mut names: Vec<_> = fs::read_dir(d.join("outside"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["canary", "sub"]);
    }

    #[test]
    fn every_resolver_writes_and_removes_inside() {
        for r in resolvers() {
            let d = base(&format!("basic-{r:?}"));
            let root = Root::open_with(&d.join("root"), r).unwrap();
            if r == Resolver::Openat2 && cfg!(target_os = "linux") {
                assert_eq!(
                    root.resolver(),
                    Resolver::Openat2,
                    "this kernel has openat2"
                );
            }
            use std::io::Write;
            root.create_file(&["a", "b", "f"])
                .unwrap()
                .write_all(b"hi")
                .unwrap();
            assert_eq!(fs::read_to_string(d.join("root/a/b/f")).unwrap(), "hi");
            assert_eq!(root.kind(&["a", "b"]).unwrap(), Some(NodeKind::Dir));
            assert_eq!(root.kind(&["a", "b", "f"]).unwrap(), Some(NodeKind::File));
            assert_eq!(root.kind(&["a", "nope", "f"]).unwrap(), None);
            assert!(root.create_file(&["a", "b", "f"]).is_err(), "O_EXCL");
            assert!(!root.create_dir(&["a"]).unwrap());
            assert!(root.create_dir(&["a", "c"]).unwrap());
            root.symlink("/", &["a", "up"]).unwrap();
            assert_eq!(root.kind(&["a", "up"]).unwrap(), Some(NodeKind::Symlink));
            root.hard_link(&["a", "b", "f"], &["h"]).unwrap();
            assert_eq!(fs::read_to_string(d.join("root/h")).unwrap(), "hi");
            let mut names = root.read_dir(&["a"]).unwrap().unwrap();
            names.sort();
            assert_eq!(names, ["b", "c", "up"]);
            assert!(root.remove(&["a"]).unwrap());
            assert!(!root.remove(&["a"]).unwrap());
            assert!(!d.join("root/a").exists());
            assert!(d.join("root/h").exists());
            outside_intact(&d);
            fs::remove_dir_all(&d).unwrap();
        }
    }

    #[test]
    fn symlinks_on_the_way_are_refused_by_every_operation() {
        for r in resolvers() {
            let d = base(&format!("links-{r:?}"));
            let outside = d.join("outside");
            std::os::unix::fs::symlink(&outside, d.join("root/abs")).unwrap();
            std::os::unix::fs::symlink("../outside", d.join("root/rel")).unwrap();
            std::os::unix::fs::symlink("rel", d.join("root/chain")).unwrap();
            fs::create_dir(d.join("root/dir")).unwrap();
            std::os::unix::fs::symlink("../../outside", d.join("root/dir/climb")).unwrap();
            fs::write(d.join("root/file"), "x").unwrap();
            let root = Root::open_with(&d.join("root"), r).unwrap();
            for via in [
                vec!["abs"],
                vec!["rel"],
                vec!["chain"],
                vec!["dir", "climb"],
            ] {
                let mut p = via.clone();
                p.push("canary");
                let what = format!("{r:?} {p:?}");
                assert!(
                    matches!(root.remove(&p), Err(BeneathError::Symlink { .. })),
                    "{what}"
                );
                assert!(
                    matches!(root.create_file(&p), Err(BeneathError::Symlink { .. })),
                    "{what}"
                );
                assert!(root.create_dir(&p).is_err(), "{what}");
                assert!(root.symlink("x", &p).is_err(), "{what}");
                assert!(root.hard_link(&p, &["h"]).is_err(), "{what}");
                assert!(root.hard_link(&["file"], &p).is_err(), "{what}");
                assert!(
                    root.mknod(&p, Special::Fifo, 0o644, (0, 0)).is_err(),
                    "{what}"
                );
                assert!(
                    root.set_meta(
                        &p,
                        &Meta {
                            mode: Some(0o777),
                            ..Meta::default()
                        }
                    )
                    .is_err(),
                    "{what}"
                );
                assert!(root.set_xattr(&p, "user.x", b"y").is_err(), "{what}");
                assert!(root.read_dir(&via).is_err(), "{what}");
                assert!(root.create_dir_all(&p).is_err(), "{what}");
                let mut sub = via.clone();
                sub.extend(["sub", "canary"]);
                assert!(root.remove(&sub).is_err(), "{what}");
            }
            // The symlinks themselves can be removed and changed, without following them.
            root.set_meta(
                &["abs"],
                &Meta {
                    mode: Some(0o777),
                    mtime: Some(5),
                    ..Meta::default()
                },
            )
            .unwrap();
            assert!(root.remove(&["abs"]).unwrap());
            // A file on the way is not a directory.
            assert!(matches!(
                root.create_file(&["file", "x"]),
                Err(BeneathError::NotDir { .. })
            ));
            // Components are single components.
            for bad in ["..", ".", "", "a/b"] {
                assert!(
                    matches!(root.remove(&[bad]), Err(BeneathError::Component { .. })),
                    "{bad}"
                );
                assert!(
                    matches!(
                        root.create_file(&["dir", bad]),
                        Err(BeneathError::Component { .. })
                    ),
                    "{bad}"
                );
            }
            outside_intact(&d);
            let m = fs::metadata(d.join("outside")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            assert_ne!(m.permissions().mode() & 0o777, 0o777);
            fs::remove_dir_all(&d).unwrap();
        }
    }

    #[test]
    fn a_symlink_swapped_in_after_a_directory_was_used_is_not_followed() {
        for r in resolvers() {
            let d = base(&format!("swap-{r:?}"));
            let root = Root::open_with(&d.join("root"), r).unwrap();
            root.create_file(&["dir", "one"]).unwrap();
            // The directory is remembered; replace it with a symlink to outside.
            assert!(root.remove(&["dir"]).unwrap());
            root.symlink(d.join("outside").to_str().unwrap(), &["dir"])
                .unwrap();
            assert!(root.create_file(&["dir", "two"]).is_err(), "{r:?}");
            assert!(root.remove(&["dir", "canary"]).is_err(), "{r:?}");
            // Even when something other than the layer swaps it behind our back, the
            // descriptor resolvers never reach outside: the remembered directory is gone.
            fs::remove_file(d.join("root/dir")).unwrap();
            root.create_file(&["dir2", "one"]).unwrap();
            fs::rename(d.join("root/dir2"), d.join("root/moved")).unwrap();
            std::os::unix::fs::symlink(d.join("outside"), d.join("root/dir2")).unwrap();
            let r2 = root.create_file(&["dir2", "three"]);
            if r != Resolver::PathWalk {
                // The cached descriptor is the moved directory, inside the root.
                assert!(r2.is_ok(), "{r:?}: {r2:?}");
                assert!(d.join("root/moved/three").exists());
            }
            assert!(!d.join("outside/three").exists(), "{r:?}");
            outside_intact(&d);
            fs::remove_dir_all(&d).unwrap();
        }
    }

    #[test]
    fn removal_never_follows_symlinks_inside_the_tree() {
        for r in resolvers() {
            let d = base(&format!("rm-{r:?}"));
            let root = Root::open_with(&d.join("root"), r).unwrap();
            // A deep tree with symlinks to outside at every level.
            let mut p: Vec<String> = Vec::new();
            for i in 0..50 {
                p.push(format!("d{i}"));
                let refs: Vec<&str> = p.iter().map(String::as_str).collect();
                root.create_dir(&refs).unwrap();
                let mut l = refs.clone();
                l.push("out");
                root.symlink(d.join("outside").to_str().unwrap(), &l)
                    .unwrap();
                let mut f = refs.clone();
                f.push("f");
                root.create_file(&f).unwrap();
            }
            assert!(root.remove(&["d0"]).unwrap());
            assert_eq!(root.read_dir(&[]).unwrap().unwrap(), Vec::<String>::new());
            outside_intact(&d);
            fs::remove_dir_all(&d).unwrap();
        }
    }

    #[test]
    fn metadata_is_set_without_following() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        for r in resolvers() {
            let d = base(&format!("meta-{r:?}"));
            let root = Root::open_with(&d.join("root"), r).unwrap();
            let f = root.create_file(&["f"]).unwrap();
            set_file_meta(
                &f,
                &d.join("root/f"),
                &Meta {
                    mode: Some(0o4755),
                    mtime: Some(1000),
                    ..Meta::default()
                },
            )
            .unwrap();
            drop(f);
            let m = fs::metadata(d.join("root/f")).unwrap();
            assert_eq!(
                m.permissions().mode() & 0o7777,
                0o4755,
                "{r:?}: setuid kept"
            );
            assert_eq!(m.mtime(), 1000);
            root.create_dir(&["dir"]).unwrap();
            root.set_meta(
                &["dir"],
                &Meta {
                    mode: Some(0o700),
                    mtime: Some(2000),
                    ..Meta::default()
                },
            )
            .unwrap();
            let m = fs::metadata(d.join("root/dir")).unwrap();
            assert_eq!((m.permissions().mode() & 0o7777, m.mtime()), (0o700, 2000));
            root.symlink(d.join("outside/canary").to_str().unwrap(), &["l"])
                .unwrap();
            root.set_meta(
                &["l"],
                &Meta {
                    mode: Some(0o777),
                    mtime: Some(3000),
                    ..Meta::default()
                },
            )
            .unwrap();
            let m = fs::metadata(d.join("outside/canary")).unwrap();
            assert_ne!(m.permissions().mode() & 0o777, 0o777);
            assert_ne!(m.mtime(), 3000);
            outside_intact(&d);
            fs::remove_dir_all(&d).unwrap();
        }
    }
}
