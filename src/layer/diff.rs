//! Change sets between two directory trees (a `RUN` step's root before and after), and the
//! layer that records them in either format.
//!
//! Two families live here:
//! - [`diff_trees`] + [`write_changes`]: a plain comparison of two trees. Rule for "modified":
//!   the kind, mode, owner, symlink target or size differ; or the mtime differs and the content
//!   differs too (compared byte by byte, so a `touch` alone is not a change). Deleted paths
//!   become whiteouts; a deleted directory is one whiteout (its entries go with it); a
//!   directory replaced by something else is a deletion plus an addition.
//! - [`write_overlay_changes`] and [`write_snapshot_changes`]: a `RUN` step's change set as
//!   BuildKit makes it. The first reads an overlayfs upper directory over lower directories in
//!   overlayfs format (whiteouts are 0/0 character devices, opaque directories carry
//!   `trusted.overlay.opaque=y`), the second compares a tree with a [`Snapshot`] taken before
//!   the step. Both follow BuildKit's "same file" rule (mode, owner, device, the
//!   `security.capability` xattr; for non-directories also size and mtime, the content only when
//!   both mtimes have no nanoseconds; a directory's mtime alone is no change), emit the parents
//!   of every change first with their new metadata, never write an opaque marker (an opaque
//!   directory becomes one whiteout per entry the lowers had), keep hard links as links and skip
//!   sockets.
//!
//! Windows layers have no opaque whiteouts, so none are ever written.

use super::tar::{Header, Kind};
use super::writer::{Format, LayerWriter};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// What happened to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Only in the upper tree.
    Added,
    /// In both, different.
    Modified,
    /// Only in the lower tree.
    Deleted,
}

/// The changes from `lower` to `upper`, by relative `/`-separated path, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// Path → change.
    pub changes: BTreeMap<String, Change>,
    /// Modified paths whose lower version was a directory replaced by something else: the
    /// layer whites the directory out before writing the new entry.
    pub replaced_dirs: std::collections::BTreeSet<String>,
}

impl ChangeSet {
    /// Paths with a given change.
    pub fn paths(&self, c: Change) -> Vec<&str> {
        self.changes
            .iter()
            .filter(|(_, v)| **v == c)
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Info {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, u32),
    link: Option<std::path::PathBuf>,
}

fn info(path: &Path) -> io::Result<Info> {
    let m = fs::symlink_metadata(path)?;
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else {
        Kind::File
    };
    #[cfg(unix)]
    let (mode, uid, gid, mtime) = {
        use std::os::unix::fs::MetadataExt;
        (
            m.mode(),
            m.uid(),
            m.gid(),
            (m.mtime(), m.mtime_nsec() as u32),
        )
    };
    #[cfg(not(unix))]
    let (mode, uid, gid, mtime) = (0, 0, 0, (0, 0));
    Ok(Info {
        kind,
        mode,
        uid,
        gid,
        size: if kind == Kind::File { m.len() } else { 0 },
        mtime,
        link: if kind == Kind::Symlink {
            fs::read_link(path).ok()
        } else {
            None
        },
    })
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let mut fa = fs::File::open(a)?;
    let mut fb = fs::File::open(b)?;
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

fn names(dir: &Path) -> io::Result<Vec<String>> {
    let mut v: Vec<String> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    v.sort();
    Ok(v)
}

/// Compares two trees.
pub fn diff_trees(lower: &Path, upper: &Path) -> io::Result<ChangeSet> {
    let mut out = ChangeSet::default();
    walk(lower, upper, "", &mut out)?;
    Ok(out)
}

fn walk(lower: &Path, upper: &Path, rel: &str, out: &mut ChangeSet) -> io::Result<()> {
    let lower_names = if lower.is_dir() {
        names(lower)?
    } else {
        Vec::new()
    };
    let upper_names = names(upper)?;
    let join = |n: &str| {
        if rel.is_empty() {
            n.to_string()
        } else {
            format!("{rel}/{n}")
        }
    };
    for n in &lower_names {
        if upper_names.binary_search(n).is_err() {
            out.changes.insert(join(n), Change::Deleted);
        }
    }
    for n in &upper_names {
        let (lp, up) = (lower.join(n), upper.join(n));
        let u = info(&up)?;
        let path = join(n);
        match info(&lp) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                out.changes.insert(path.clone(), Change::Added);
                if u.kind == Kind::Dir {
                    add_all(&up, &path, out)?;
                }
            }
            Err(e) => return Err(e),
            Ok(l) => {
                if l.kind != u.kind {
                    // Replaced: the old one goes, the new one comes.
                    out.changes.insert(path.clone(), Change::Modified);
                    if l.kind == Kind::Dir {
                        out.replaced_dirs.insert(path.clone());
                    }
                    if u.kind == Kind::Dir {
                        add_all(&up, &path, out)?;
                    }
                    continue;
                }
                let meta_changed = l.mode != u.mode
                    || l.uid != u.uid
                    || l.gid != u.gid
                    || l.link != u.link
                    || l.size != u.size;
                let changed = match u.kind {
                    Kind::Dir => meta_changed,
                    Kind::File => meta_changed || (l.mtime != u.mtime && !same_content(&lp, &up)?),
                    _ => meta_changed,
                };
                if changed {
                    out.changes.insert(path.clone(), Change::Modified);
                }
                if u.kind == Kind::Dir {
                    walk(&lp, &up, &path, out)?;
                }
            }
        }
    }
    Ok(())
}

fn add_all(dir: &Path, rel: &str, out: &mut ChangeSet) -> io::Result<()> {
    for n in names(dir)? {
        let p = dir.join(&n);
        let r = format!("{rel}/{n}");
        out.changes.insert(r.clone(), Change::Added);
        if fs::symlink_metadata(&p)?.is_dir() {
            add_all(&p, &r, out)?;
        }
    }
    Ok(())
}

/// Writes the changes as a layer: whiteouts for deletions (and for directories replaced by
/// something else), entries from `upper` for additions and modifications, with the parents
/// of changed entries included so their metadata is recorded.
pub fn write_changes<W: Write>(
    changes: &ChangeSet,
    upper: &Path,
    writer: &mut LayerWriter<W>,
) -> io::Result<()> {
    for (path, change) in &changes.changes {
        if *change == Change::Deleted {
            // A deleted directory's entries are not listed separately: one whiteout suffices.
            writer.whiteout(path)?;
            continue;
        }
        // Windows applies a layer's whiteouts after its entries, so a whiteout would delete
        // the replacement too; there the new entry alone replaces the directory.
        if changes.replaced_dirs.contains(path) && writer.format() != Format::Windows {
            writer.whiteout(path)?;
        }
        let full = upper.join(path);
        let i = info(&full)?;
        let mut h = Header::new(path, i.kind);
        h.mode = i.mode & 0o7777;
        h.uid = i.uid as u64;
        h.gid = i.gid as u64;
        h.mtime = i.mtime.0;
        match i.kind {
            Kind::Dir => writer.append(h, None, false)?,
            Kind::Symlink => {
                h.link = i
                    .link
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let dir_link = fs::metadata(&full).map(|m| m.is_dir()).unwrap_or(false);
                writer.append(h, None, dir_link)?;
            }
            _ => {
                h.size = i.size;
                let mut f = fs::File::open(&full)?;
                writer.append(h, Some(&mut f), false)?;
            }
        }
    }
    Ok(())
}

/// What [`write_overlay_changes`] and [`write_snapshot_changes`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSummary {
    /// Paths added (not in the lower layers).
    pub added: u64,
    /// Paths modified (in the lower layers, different now).
    pub modified: u64,
    /// Paths deleted (one whiteout each).
    pub deleted: u64,
    /// Unchanged parent directories written because something inside them changed.
    pub parents: u64,
    /// Content bytes written.
    pub bytes: u64,
}

impl ChangeSummary {
    /// True when the step changed nothing.
    pub fn is_empty(&self) -> bool {
        self.added + self.modified + self.deleted == 0
    }
}

/// One path's metadata as recorded before a step ran (the snapshot fallback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// `st_mode`, type bits included.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number of device nodes.
    pub rdev: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time: seconds and nanoseconds.
    pub mtime: (i64, u32),
    /// Status-change time: seconds and nanoseconds (an unchanged inode and ctime proves the
    /// entry was not touched, so its content need not be compared).
    pub ctime: (i64, u32),
    /// Inode number.
    pub ino: u64,
    /// Symlink target.
    pub link: Option<PathBuf>,
    /// The `security.capability` xattr.
    pub capability: Option<Vec<u8>>,
    /// Where the content was before the step, for the content comparison BuildKit makes when
    /// both mtimes have no nanoseconds (the lower layer file the tree was copied from).
    pub content: Option<PathBuf>,
}

/// A directory tree's metadata taken before a step runs in it, for [`write_snapshot_changes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    entries: BTreeMap<String, SnapshotNode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SnapshotNode {
    entry: SnapshotEntry,
    children: Option<Snapshot>,
}

impl Snapshot {
    /// Number of entries recorded (the root not included).
    pub fn len(&self) -> usize {
        self.entries
            .values()
            .map(|n| 1 + n.children.as_ref().map_or(0, Snapshot::len))
            .sum()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry at a relative `/`-separated path.
    pub fn get(&self, path: &str) -> Option<&SnapshotEntry> {
        let mut dir = self;
        let mut comps = path.trim_matches('/').split('/').peekable();
        while let Some(c) = comps.next() {
            let node = dir.entries.get(c)?;
            if comps.peek().is_none() {
                return Some(&node.entry);
            }
            dir = node.children.as_ref()?;
        }
        None
    }
}

#[cfg(unix)]
pub use unix_diff::{LowerDir, snapshot_tree, write_overlay_changes, write_snapshot_changes};

/// Not available on this system: overlay change sets are made on Linux.
#[cfg(not(unix))]
pub fn write_overlay_changes<W: Write>(
    upper: &Path,
    _lowers: &[PathBuf],
    _w: &mut LayerWriter<W>,
) -> io::Result<ChangeSummary> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("`{}`: overlay change sets need Linux", upper.display()),
    ))
}

/// Not available on this system.
#[cfg(not(unix))]
pub fn write_snapshot_changes<W: Write>(
    root: &Path,
    _before: &Snapshot,
    _w: &mut LayerWriter<W>,
) -> io::Result<ChangeSummary> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "`{}`: snapshot change sets need Unix metadata",
            root.display()
        ),
    ))
}

/// Not available on this system.
#[cfg(not(unix))]
pub fn snapshot_tree(root: &Path, _lowers: &[PathBuf]) -> io::Result<Snapshot> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("`{}`: snapshots need Unix metadata", root.display()),
    ))
}

#[cfg(unix)]
mod unix_diff {
    use super::{ChangeSummary, Snapshot, SnapshotEntry, SnapshotNode};
    use crate::layer::tar::{Header, Kind};
    use crate::layer::writer::{Format, LayerWriter};
    use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
    use std::fs;
    use std::io::{self, Read, Write};
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    const CAPABILITY: &str = "security.capability";
    const OPAQUE: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

    fn at(path: &Path, what: &str) -> impl FnOnce(io::Error) -> io::Error + use<> {
        let msg = format!("{what} `{}`", path.display());
        move |e| io::Error::new(e.kind(), format!("{msg}: {e}"))
    }

    /// The `lstat` fields the rules look at.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Stat {
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u64,
        size: u64,
        mtime: (i64, u32),
        ctime: (i64, u32),
        dev: u64,
        ino: u64,
        nlink: u64,
    }

    impl Stat {
        fn of(m: &fs::Metadata) -> Stat {
            Stat {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                rdev: m.rdev(),
                size: m.size(),
                mtime: (m.mtime(), m.mtime_nsec() as u32),
                ctime: (m.ctime(), m.ctime_nsec() as u32),
                dev: m.dev(),
                ino: m.ino(),
                nlink: m.nlink(),
            }
        }
        fn fmt(&self) -> u32 {
            self.mode & libc::S_IFMT
        }
        fn is_dir(&self) -> bool {
            self.fmt() == libc::S_IFDIR
        }
        fn is_symlink(&self) -> bool {
            self.fmt() == libc::S_IFLNK
        }
        fn is_whiteout(&self) -> bool {
            self.fmt() == libc::S_IFCHR && self.rdev == 0
        }
    }

    fn lstat(path: &Path) -> io::Result<Option<Stat>> {
        match fs::symlink_metadata(path) {
            Ok(m) => Ok(Some(Stat::of(&m))),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                Ok(None)
            }
            Err(e) => Err(at(path, "stat")(e)),
        }
    }

    fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
        let n = std::ffi::CString::new(name).map_err(io::Error::other)?;
        let mut buf = vec![0u8; 256];
        loop {
            // SAFETY: both strings are NUL-terminated; `buf` has `buf.len()` writable bytes.
            let r = unsafe {
                libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            };
            if r >= 0 {
                buf.truncate(r as usize);
                return Ok(Some(buf));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
                Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 8, 0),
                _ => return Err(at(path, &format!("read xattr {name} of"))(e)),
            }
        }
    }

    fn is_opaque(path: &Path) -> io::Result<bool> {
        for key in OPAQUE {
            if get_xattr(path, key)?.as_deref() == Some(b"y") {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn sorted_names(dir: &Path) -> io::Result<Vec<String>> {
        let mut v = Vec::new();
        for e in fs::read_dir(dir).map_err(at(dir, "read directory"))? {
            let e = e.map_err(at(dir, "read directory"))?;
            let name = e.file_name();
            let Some(s) = name.to_str() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "`{}`: the name is not UTF-8 and cannot go into a layer",
                        dir.join(&name).display()
                    ),
                ));
            };
            v.push(s.to_string());
        }
        v.sort();
        Ok(v)
    }

    fn join(dir: &str, name: &str) -> String {
        if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        }
    }

    // ---- the lower side: a merged view of overlay-format lower directories ----

    /// One directory of the merged lowers: the lower directories that contribute to it, top
    /// first, cut after the first opaque one.
    #[derive(Debug, Clone, Default)]
    pub(super) struct MergedDir {
        dirs: Vec<PathBuf>,
    }

    impl MergedDir {
        pub(super) fn root(lowers: &[PathBuf]) -> io::Result<MergedDir> {
            let mut dirs = Vec::new();
            for l in lowers {
                dirs.push(l.clone());
                if is_opaque(l)? {
                    break;
                }
            }
            Ok(MergedDir { dirs })
        }

        /// The entry `name` in this directory: its top path and metadata, and (for a
        /// directory) its own merged view.
        fn lookup(&self, name: &str) -> io::Result<Option<(PathBuf, Stat, MergedDir)>> {
            let mut top: Option<(PathBuf, Stat)> = None;
            let mut sub = Vec::new();
            for d in &self.dirs {
                let p = d.join(name);
                let Some(st) = lstat(&p)? else { continue };
                if st.is_whiteout() {
                    break;
                }
                if top.is_none() {
                    top = Some((p.clone(), st));
                    if !st.is_dir() {
                        break;
                    }
                } else if !st.is_dir() {
                    break;
                }
                let opaque = is_opaque(&p)?;
                sub.push(p);
                if opaque {
                    break;
                }
            }
            Ok(top.map(|(p, st)| (p, st, MergedDir { dirs: sub })))
        }

        fn names(&self) -> io::Result<Vec<String>> {
            let mut all = BTreeSet::new();
            for d in &self.dirs {
                all.extend(sorted_names(d)?);
            }
            let mut out = Vec::new();
            for n in all {
                if self.lookup(&n)?.is_some() {
                    out.push(n);
                }
            }
            Ok(out)
        }
    }

    /// A directory of the merged lower layers (top first, overlayfs format: whiteouts are 0/0
    /// character devices, opaque directories hide the layers below): what a container sees.
    #[derive(Debug, Clone, Default)]
    pub struct LowerDir(MergedDir);

    impl LowerDir {
        /// The root of the merged lowers.
        pub fn root(lowers: &[PathBuf]) -> io::Result<LowerDir> {
            MergedDir::root(lowers).map(LowerDir)
        }

        /// The visible names, sorted.
        pub fn names(&self) -> io::Result<Vec<String>> {
            self.0.names()
        }

        /// The visible entry `name`: the path of its top copy, and for a directory its own
        /// merged view.
        pub fn lookup(&self, name: &str) -> io::Result<Option<(PathBuf, Option<LowerDir>)>> {
            Ok(self
                .0
                .lookup(name)?
                .map(|(p, st, sub)| (p, st.is_dir().then_some(LowerDir(sub)))))
        }
    }

    /// What the rules need of an entry as it was before the step.
    struct Before {
        st: Stat,
        /// The entry itself (lower layers) or where its content was (snapshot).
        path: Option<PathBuf>,
        /// Known capability (snapshot); `None` = read it from `path`.
        capability: Option<Option<Vec<u8>>>,
        link: Option<PathBuf>,
    }

    fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
        let mut fa = fs::File::open(a).map_err(at(a, "open"))?;
        let mut fb = fs::File::open(b).map_err(at(b, "open"))?;
        let mut ba = vec![0u8; 32 * 1024];
        let mut bb = vec![0u8; 32 * 1024];
        loop {
            let na = super::read_full(&mut fa, &mut ba).map_err(at(a, "read"))?;
            let nb = super::read_full(&mut fb, &mut bb).map_err(at(b, "read"))?;
            if na != nb || ba[..na] != bb[..nb] {
                return Ok(false);
            }
            if na == 0 {
                return Ok(true);
            }
        }
    }

    /// BuildKit's `sameDirent` / continuity's `sameFile`, without the same-inode shortcut (the
    /// two sides are never the same file here) but with an exact one for snapshots: the same
    /// inode with the same ctime was not touched.
    fn same(b: &Before, a_path: &Path, a: &Stat, untouched: bool) -> io::Result<bool> {
        if b.st.mode != a.mode || b.st.uid != a.uid || b.st.gid != a.gid || b.st.rdev != a.rdev {
            return Ok(false);
        }
        let bcap = match &b.capability {
            Some(c) => c.clone(),
            None => match &b.path {
                Some(p) => get_xattr(p, CAPABILITY)?,
                None => None,
            },
        };
        if bcap != get_xattr(a_path, CAPABILITY)? {
            return Ok(false);
        }
        if a.is_dir() {
            return Ok(true);
        }
        if b.st.size != a.size || b.st.mtime.0 != a.mtime.0 {
            return Ok(false);
        }
        if b.st.mtime.1 == 0 && a.mtime.1 == 0 {
            if untouched {
                return Ok(true);
            }
            if a.is_symlink() {
                let bl = match (&b.link, &b.path) {
                    (Some(l), _) => l.clone(),
                    (None, Some(p)) => fs::read_link(p).map_err(at(p, "read link"))?,
                    (None, None) => return Ok(false),
                };
                return Ok(fs::read_link(a_path).map_err(at(a_path, "read link"))? == bl);
            }
            if a.size == 0 {
                return Ok(true);
            }
            return match &b.path {
                Some(p) if a.fmt() == libc::S_IFREG => same_content(p, a_path),
                _ => Ok(false),
            };
        }
        Ok(b.st.mtime.1 == a.mtime.1)
    }

    // ---- the tar side: containerd's ChangeWriter, over LayerWriter ----

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum ChangeKind {
        Add,
        Modify,
        Delete,
        Unmodified,
    }

    struct Emitter<'a, W: Write> {
        w: &'a mut LayerWriter<W>,
        /// The tree content and parent metadata are read from (upper dir, or the root).
        source: &'a Path,
        windows: bool,
        added_dirs: HashSet<String>,
        inode_src: HashMap<(u64, u64), String>,
        inode_refs: HashMap<(u64, u64), Vec<String>>,
        summary: ChangeSummary,
    }

    impl<W: Write> Emitter<'_, W> {
        fn include_parents(&mut self, name: &str, is_dir: bool) -> io::Result<()> {
            if let Some((parent, _)) = name.rsplit_once('/')
                && !self.added_dirs.contains(parent)
            {
                let parent = parent.to_string();
                self.added_dirs.insert(parent.clone());
                let full = self.source.join(&parent);
                let st = Stat::of(&fs::metadata(&full).map_err(at(&full, "stat"))?);
                self.summary.parents += 1;
                self.change(ChangeKind::Modify, &parent, &st, true)?;
            }
            if is_dir {
                self.added_dirs.insert(name.to_string());
            }
            Ok(())
        }

        fn change(
            &mut self,
            kind: ChangeKind,
            rel: &str,
            st: &Stat,
            as_parent: bool,
        ) -> io::Result<()> {
            if kind == ChangeKind::Delete {
                self.summary.deleted += 1;
                let (dir, base) = match rel.rsplit_once('/') {
                    Some((d, b)) => (Some(d), b),
                    None => (None, rel),
                };
                let wh = match dir {
                    Some(d) => format!("{d}/.wh.{base}"),
                    None => format!(".wh.{base}"),
                };
                self.include_parents(&wh, false)?;
                if self.windows {
                    return self.w.whiteout(rel);
                }
                let mut h = Header::new(&wh, Kind::File);
                h.mode = 0;
                return self.w.append(h, None, false);
            }
            let full = self.source.join(rel);
            let kind_of = match st.fmt() {
                libc::S_IFSOCK => return Ok(()),
                libc::S_IFDIR => Kind::Dir,
                libc::S_IFLNK => Kind::Symlink,
                libc::S_IFREG => Kind::File,
                libc::S_IFCHR => Kind::CharDevice,
                libc::S_IFBLK => Kind::BlockDevice,
                libc::S_IFIFO => Kind::Fifo,
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("`{}`: unknown file type", full.display()),
                    ));
                }
            };
            let mut h = Header::new(rel, kind_of);
            h.mode = st.mode & 0o7777;
            h.uid = st.uid as u64;
            h.gid = st.gid as u64;
            h.mtime = st.mtime.0;
            if matches!(kind_of, Kind::CharDevice | Kind::BlockDevice) {
                h.dev = (libc::major(st.rdev), libc::minor(st.rdev));
            }
            let mut dir_link = false;
            if kind_of == Kind::Symlink {
                h.link = fs::read_link(&full)
                    .map_err(at(&full, "read link"))?
                    .to_str()
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("`{}`: the link target is not UTF-8", full.display()),
                        )
                    })?
                    .to_string();
                dir_link = fs::metadata(&full).map(|m| m.is_dir()).unwrap_or(false);
            }
            let mut additional = Vec::new();
            let linked = kind_of != Kind::Dir && st.nlink > 1;
            if linked {
                let key = (st.dev, st.ino);
                if let Some(src) = self.inode_src.get(&key) {
                    h.kind = Kind::Hardlink;
                    h.link = src.clone();
                } else {
                    if kind == ChangeKind::Unmodified {
                        self.inode_refs
                            .entry(key)
                            .or_default()
                            .push(rel.to_string());
                        return Ok(());
                    }
                    self.inode_src.insert(key, rel.to_string());
                    additional = self.inode_refs.remove(&key).unwrap_or_default();
                }
            } else if kind == ChangeKind::Unmodified {
                return Ok(());
            }
            if !self.windows
                && let Some(c) = get_xattr(&full, CAPABILITY)?
                && !c.is_empty()
            {
                h.xattrs.insert(CAPABILITY.to_string(), c);
            }
            if !as_parent {
                match kind {
                    ChangeKind::Add => self.summary.added += 1,
                    ChangeKind::Modify => self.summary.modified += 1,
                    _ => {}
                }
            }
            self.include_parents(rel, kind_of == Kind::Dir)?;
            let first_name = rel.to_string();
            if h.kind == Kind::File {
                h.size = st.size;
                let mut f = fs::File::open(&full).map_err(at(&full, "open"))?;
                self.summary.bytes += st.size;
                self.w
                    .append(h.clone(), Some(&mut f as &mut dyn Read), false)
                    .map_err(at(&full, "add"))?;
            } else {
                self.w
                    .append(h.clone(), None, dir_link)
                    .map_err(at(&full, "add"))?;
            }
            for extra in additional {
                let mut l = h.clone();
                l.path = extra.clone();
                l.kind = Kind::Hardlink;
                l.link = first_name.clone();
                l.size = 0;
                self.include_parents(&extra, false)?;
                self.w.append(l, None, false)?;
            }
            Ok(())
        }
    }

    fn check_overlay_features(path: &Path, st: &Stat) -> io::Result<()> {
        for key in ["trusted.overlay.redirect", "trusted.overlay.metacopy"] {
            if (st.is_dir() || key.ends_with("metacopy")) && get_xattr(path, key)?.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "`{}` carries `{key}`: overlayfs redirect_dir/metacopy changes cannot be read as a layer",
                        path.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Writes the changes an overlayfs upper directory records over its lower directories
    /// (top first, each in overlayfs format) as a layer, as BuildKit's overlay differ does.
    pub fn write_overlay_changes<W: Write>(
        upper: &Path,
        lowers: &[PathBuf],
        w: &mut LayerWriter<W>,
    ) -> io::Result<ChangeSummary> {
        let windows = w_is_windows(w);
        let mut em = Emitter {
            w,
            source: upper,
            windows,
            added_dirs: HashSet::new(),
            inode_src: HashMap::new(),
            inode_refs: HashMap::new(),
            summary: ChangeSummary::default(),
        };
        let base = MergedDir::root(lowers)?;
        walk_upper(&mut em, upper, "", &base)?;
        Ok(em.summary)
    }

    fn w_is_windows<W: Write>(w: &LayerWriter<W>) -> bool {
        w.format() == Format::Windows
    }

    fn walk_upper<W: Write>(
        em: &mut Emitter<'_, W>,
        upper: &Path,
        rel_dir: &str,
        base: &MergedDir,
    ) -> io::Result<()> {
        for name in sorted_names(&upper.join(rel_dir))? {
            let rel = join(rel_dir, &name);
            let up = upper.join(&rel);
            let Some(st) = lstat(&up)? else { continue };
            check_overlay_features(&up, &st)?;
            let lower = base.lookup(&name)?;
            if st.is_whiteout() {
                if let Some((_, lst, _)) = &lower {
                    em.change(ChangeKind::Delete, &rel, lst, false)?;
                }
                continue;
            }
            match &lower {
                Some((lp, lst, _)) => {
                    let b = Before {
                        st: *lst,
                        path: Some(lp.clone()),
                        capability: None,
                        link: None,
                    };
                    if !same(&b, &up, &st, false)? {
                        em.change(ChangeKind::Modify, &rel, &st, false)?;
                    }
                }
                None => em.change(ChangeKind::Add, &rel, &st, false)?,
            }
            if st.is_dir() {
                match &lower {
                    Some((_, _, sub)) if is_opaque(&up)? => {
                        let before = if lower.as_ref().is_some_and(|l| l.1.is_dir()) {
                            Some(BeforeDir::Lower(sub.clone()))
                        } else {
                            None
                        };
                        double_walk(em, &up, &rel, before, true)?;
                    }
                    Some((_, lst, sub)) if lst.is_dir() => walk_upper(em, upper, &rel, sub)?,
                    _ => walk_upper(em, upper, &rel, &MergedDir::default())?,
                }
            }
        }
        Ok(())
    }

    /// A directory as it was before: a merged view of lower layers, or a snapshot.
    enum BeforeDir<'s> {
        Lower(MergedDir),
        Snap(&'s Snapshot),
    }

    impl<'s> BeforeDir<'s> {
        fn names(&self) -> io::Result<Vec<String>> {
            match self {
                BeforeDir::Lower(m) => m.names(),
                BeforeDir::Snap(s) => Ok(s.entries.keys().cloned().collect()),
            }
        }

        fn child(&self, name: &str) -> io::Result<Option<(Before, Option<BeforeDir<'s>>)>> {
            match self {
                BeforeDir::Lower(m) => Ok(m.lookup(name)?.map(|(p, st, sub)| {
                    let dir = st.is_dir().then_some(BeforeDir::Lower(sub));
                    (
                        Before {
                            st,
                            path: Some(p),
                            capability: None,
                            link: None,
                        },
                        dir,
                    )
                })),
                BeforeDir::Snap(s) => Ok(s.entries.get(name).map(|n| {
                    let e = &n.entry;
                    (
                        Before {
                            st: Stat {
                                mode: e.mode,
                                uid: e.uid,
                                gid: e.gid,
                                rdev: e.rdev,
                                size: e.size,
                                mtime: e.mtime,
                                ctime: e.ctime,
                                dev: 0,
                                ino: e.ino,
                                nlink: 1,
                            },
                            path: e.content.clone(),
                            capability: Some(e.capability.clone()),
                            link: e.link.clone(),
                        },
                        n.children.as_ref().map(BeforeDir::Snap),
                    )
                })),
            }
        }
    }

    /// continuity's double walk of one directory: `after` is a real directory (whiteout
    /// devices in it are invisible, as in BuildKit's upper view), `before` its earlier state.
    fn double_walk<W: Write>(
        em: &mut Emitter<'_, W>,
        after: &Path,
        rel_dir: &str,
        before: Option<BeforeDir<'_>>,
        hide_whiteouts: bool,
    ) -> io::Result<()> {
        let before_names = match &before {
            Some(b) => b.names()?,
            None => Vec::new(),
        };
        let mut after_entries = Vec::new();
        for n in sorted_names(after)? {
            let p = after.join(&n);
            if let Some(st) = lstat(&p)?
                && !(hide_whiteouts && st.is_whiteout())
            {
                after_entries.push((n, st));
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < before_names.len() || j < after_entries.len() {
            let order = match (before_names.get(i), after_entries.get(j)) {
                (Some(b), Some((a, _))) => b.cmp(a),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let name = &before_names[i];
                    i += 1;
                    let b = before.as_ref().and_then(|d| d.child(name).transpose());
                    if let Some(b) = b {
                        let (b, _) = b?;
                        em.change(ChangeKind::Delete, &join(rel_dir, name), &b.st, false)?;
                    }
                }
                std::cmp::Ordering::Greater => {
                    let (name, st) = &after_entries[j];
                    j += 1;
                    let rel = join(rel_dir, name);
                    em.change(ChangeKind::Add, &rel, st, false)?;
                    if st.is_dir() {
                        double_walk(em, &after.join(name), &rel, None, hide_whiteouts)?;
                    }
                }
                std::cmp::Ordering::Equal => {
                    let (name, st) = &after_entries[j];
                    i += 1;
                    j += 1;
                    let rel = join(rel_dir, name);
                    let ap = after.join(name);
                    let Some((b, bdir)) = before
                        .as_ref()
                        .map(|d| d.child(name))
                        .transpose()?
                        .flatten()
                    else {
                        continue;
                    };
                    let untouched = matches!(before, Some(BeforeDir::Snap(_)))
                        && b.st.ino == st.ino
                        && b.st.ctime == st.ctime;
                    let kind = if same(&b, &ap, st, untouched)? {
                        ChangeKind::Unmodified
                    } else {
                        ChangeKind::Modify
                    };
                    em.change(kind, &rel, st, false)?;
                    if st.is_dir() {
                        let sub = if b.st.is_dir() { bdir } else { None };
                        double_walk(em, &ap, &rel, sub, hide_whiteouts)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the changes of `root` since `before` was taken as a layer, as BuildKit's walking
    /// differ does (the snapshot fallback where overlayfs cannot be mounted).
    pub fn write_snapshot_changes<W: Write>(
        root: &Path,
        before: &Snapshot,
        w: &mut LayerWriter<W>,
    ) -> io::Result<ChangeSummary> {
        let windows = w_is_windows(w);
        let mut em = Emitter {
            w,
            source: root,
            windows,
            added_dirs: HashSet::new(),
            inode_src: HashMap::new(),
            inode_refs: HashMap::new(),
            summary: ChangeSummary::default(),
        };
        double_walk(&mut em, root, "", Some(BeforeDir::Snap(before)), false)?;
        Ok(em.summary)
    }

    /// Records the metadata of every entry under `root`. `lowers` (top first, overlay format)
    /// are where the tree was copied from: for files whose mtime has no nanoseconds the lower
    /// file is remembered, so the diff can compare content as BuildKit does.
    pub fn snapshot_tree(root: &Path, lowers: &[PathBuf]) -> io::Result<Snapshot> {
        let base = MergedDir::root(lowers)?;
        snap_dir(root, Some(&base))
    }

    fn snap_dir(dir: &Path, base: Option<&MergedDir>) -> io::Result<Snapshot> {
        let mut entries = BTreeMap::new();
        for name in sorted_names(dir)? {
            let p = dir.join(&name);
            let Some(st) = lstat(&p)? else { continue };
            let lower = match base {
                Some(b) => b.lookup(&name)?,
                None => None,
            };
            let content = match &lower {
                Some((lp, _, _)) if st.mtime.1 == 0 && st.fmt() == libc::S_IFREG => {
                    Some(lp.clone())
                }
                _ => None,
            };
            let link = if st.is_symlink() {
                Some(fs::read_link(&p).map_err(at(&p, "read link"))?)
            } else {
                None
            };
            let children = if st.is_dir() {
                let sub = lower.as_ref().filter(|l| l.1.is_dir()).map(|l| &l.2);
                Some(snap_dir(&p, sub)?)
            } else {
                None
            };
            entries.insert(
                name,
                SnapshotNode {
                    entry: SnapshotEntry {
                        mode: st.mode,
                        uid: st.uid,
                        gid: st.gid,
                        rdev: st.rdev,
                        size: st.size,
                        mtime: st.mtime,
                        ctime: st.ctime,
                        ino: st.ino,
                        link,
                        capability: get_xattr(&p, CAPABILITY)?,
                        content,
                    },
                    children,
                },
            );
        }
        Ok(Snapshot { entries })
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::layer::{Compression, Format, LayerOptions};

    fn tree(root: &Path, files: &[(&str, &str)]) {
        for (p, c) in files {
            let path = root.join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            if let Some(d) = p.strip_suffix('/') {
                fs::create_dir_all(root.join(d)).unwrap();
            } else {
                fs::write(path, c).unwrap();
            }
        }
    }

    #[test]
    fn changes_and_their_layers() {
        let base = std::env::temp_dir().join(format!("wcbuild-diff-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let (lower, upper) = (base.join("lower"), base.join("upper"));
        tree(
            &lower,
            &[
                ("keep.txt", "same"),
                ("touched.txt", "same"),
                ("edit.txt", "old"),
                ("gone.txt", "x"),
                ("olddir/a", "1"),
                ("swap/inner", "1"),
            ],
        );
        tree(
            &upper,
            &[
                ("keep.txt", "same"),
                ("touched.txt", "same"),
                ("edit.txt", "new"),
                ("new/deep/file", "n"),
                ("swap", "now a file"),
            ],
        );
        // Same content, different mtime: not a change.
        let f = fs::File::options()
            .write(true)
            .open(upper.join("touched.txt"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000))
            .unwrap();
        let keep = fs::metadata(lower.join("keep.txt"))
            .unwrap()
            .modified()
            .unwrap();
        fs::File::options()
            .write(true)
            .open(upper.join("keep.txt"))
            .unwrap()
            .set_modified(keep)
            .unwrap();
        let cs = diff_trees(&lower, &upper).unwrap();
        assert_eq!(cs.paths(Change::Deleted), ["gone.txt", "olddir"]);
        assert_eq!(
            cs.paths(Change::Added),
            ["new", "new/deep", "new/deep/file"]
        );
        assert_eq!(cs.paths(Change::Modified), ["edit.txt", "swap"]);
        assert!(cs.replaced_dirs.contains("swap"));
        for format in [Format::Linux, Format::Windows] {
            let opts = LayerOptions {
                format,
                compression: Compression::None,
                ..LayerOptions::default()
            };
            let mut w = LayerWriter::new(Vec::new(), opts).unwrap();
            write_changes(&cs, &upper, &mut w).unwrap();
            let tar = w.finish().unwrap().1;
            let mut r = crate::layer::tar::TarReader::new(&tar[..]);
            let mut names = Vec::new();
            while let Some(e) = r.next_entry().unwrap() {
                names.push(e.header.path);
            }
            let prefix = if format == Format::Windows {
                "Files/"
            } else {
                ""
            };
            for want in [
                "edit.txt",
                ".wh.gone.txt",
                ".wh.olddir",
                ".wh.swap",
                "swap",
                "new/deep/file",
            ] {
                let present = names.contains(&format!("{prefix}{want}"));
                if want == ".wh.swap" && format == Format::Windows {
                    assert!(!present, "{format:?}: {want} in {names:?}");
                    continue;
                }
                assert!(present, "{format:?}: {want} not in {names:?}");
            }
            assert!(
                !names
                    .iter()
                    .any(|n| n.ends_with("touched.txt") || n.ends_with("keep.txt")),
                "{names:?}"
            );
            assert!(!names.iter().any(|n| n.contains(".wh..wh..opq")));
        }
        let _ = fs::remove_dir_all(&base);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod overlay_tests {
    use super::*;
    use crate::layer::tar::TarReader;
    use crate::layer::{Compression, Format, LayerOptions};

    fn whiteout(p: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; a 0/0 character device.
        assert_eq!(
            unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, 0) },
            0
        );
    }

    fn entries(upper: &Path, lowers: &[PathBuf], format: Format) -> Vec<(String, Kind, u32)> {
        let opts = LayerOptions {
            format,
            compression: Compression::None,
            threads: 1,
            ..LayerOptions::default()
        };
        let mut w = LayerWriter::new(Vec::new(), opts).unwrap();
        write_overlay_changes(upper, lowers, &mut w).unwrap();
        let tar = w.finish().unwrap().1;
        let mut r = TarReader::new(&tar[..]);
        let mut v = Vec::new();
        while let Some(e) = r.next_entry().unwrap() {
            let cap = e.header.xattrs.contains_key("security.capability") as u32;
            v.push((e.header.path, e.header.kind, e.header.mode | cap << 20));
        }
        v
    }

    /// Hand-made upper and lowers (root needed for whiteout devices and trusted xattrs).
    #[test]
    fn overlay_upper_dirs() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let base = std::env::temp_dir().join(format!("wcbuild-ovl-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let (l1, l0, up) = (base.join("l1"), base.join("l0"), base.join("up"));
        for d in ["a/b", "o", "w"] {
            fs::create_dir_all(l0.join(d)).unwrap();
        }
        fs::write(l0.join("a/b/f"), "f").unwrap();
        fs::write(l0.join("o/x"), "x").unwrap();
        fs::write(l0.join("w/gone-in-l1"), "g").unwrap();
        fs::write(l0.join("bin"), "bin").unwrap();
        fs::create_dir_all(l1.join("w")).unwrap();
        whiteout(&l1.join("w/gone-in-l1"));
        fs::create_dir_all(up.join("a/b")).unwrap();
        fs::create_dir_all(up.join("o")).unwrap();
        fs::create_dir_all(up.join("w")).unwrap();
        whiteout(&up.join("a/b/f"));
        whiteout(&up.join("w/gone-in-l1"));
        whiteout(&up.join("never"));
        crate::layer::xattr::set(&up.join("o"), "trusted.overlay.opaque", b"y").unwrap();
        fs::write(up.join("o/new"), "n").unwrap();
        // A file capability (VFS v2: magic, permitted, inheritable).
        fs::write(up.join("bin"), "bin2").unwrap();
        let mut cap = vec![0u8; 20];
        cap[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
        cap[4] = 1 << 2;
        crate::layer::xattr::set(&up.join("bin"), "security.capability", &cap).unwrap();
        let lowers = vec![l1.clone(), l0.clone()];
        let got = entries(&up, &lowers, Format::Linux);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        // The whiteout of something the lowers do not have (any more) is dropped; the opaque
        // directory lists what went; the capability is kept.
        assert_eq!(
            names,
            ["a", "a/b", "a/b/.wh.f", "bin", "o", "o/new", "o/.wh.x"]
        );
        assert_eq!(got[3].2 >> 20, 1);
        assert_eq!(got[2].2, 0);
        let win = entries(&up, &lowers, Format::Windows);
        let names: Vec<&str> = win.iter().map(|e| e.0.as_str()).collect();
        assert!(
            names.contains(&"Files/o/.wh.x") && names.contains(&"Files/a/b/.wh.f"),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.contains(".wh..wh..opq")));
        // A redirect (renamed directory) cannot be followed.
        crate::layer::xattr::set(&up.join("a"), "trusted.overlay.redirect", b"/z").unwrap();
        let opts = LayerOptions {
            compression: Compression::None,
            ..LayerOptions::default()
        };
        let mut w = LayerWriter::new(Vec::new(), opts).unwrap();
        let err = write_overlay_changes(&up, &lowers, &mut w)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("trusted.overlay.redirect") && err.contains("/up/a"),
            "{err}"
        );
        let _ = fs::remove_dir_all(&base);
    }
}
