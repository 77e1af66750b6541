//! Writing layers onto disk: [`extract`] (one layer into a new directory), [`apply`] (a layer
//! on top of the tree of the layers below it; whiteouts delete) and [`unpack_overlay`] (one
//! layer as an overlayfs lower directory; whiteouts become 0/0 character devices and opaque
//! markers the `trusted.overlay.opaque` attribute).
//!
//! Nothing an entry says can write or delete outside the target, at two depths:
//! - every name an entry carries is checked as path components first ([`super::names`]): its
//!   own path, a whiteout's hidden name, an opaque marker's directory, a hard link's target;
//!   Windows-format layers (and every layer on a Windows host) also by Windows' reading;
//! - every operation is then made beneath a descriptor of the target ([`super::beneath`]),
//!   resolving one component at a time without following any symlink, so a symlink planted by
//!   an earlier entry (or layer) makes the entry fail instead of leaving the tree.
//!
//! Policy for the rest, the same in all three: hard links must name something already in the
//! tree (this layer or, for `apply`, a lower one), never a directory, and link a symlink itself
//! (it is not followed); symlink targets are stored as written and never followed here;
//! devices are made only as root (else skipped and counted); FIFOs are made; setuid, setgid
//! and sticky bits are kept (they are set through a descriptor of the file itself, after its
//! owner); owners are restored when running as root; owner ids past 32 bits are refused;
//! `trusted.overlay.*` and `user.overlay.*` attributes from a tar are never restored (they
//! would steer overlayfs); the entry `./` (the root itself) is accepted as a directory and
//! changes nothing. Malformed tar (bad checksums, absurd PAX records, truncated content,
//! decompression past the ratio limit) is refused by the reader.
//!
//! [`extract`] and [`unpack_overlay`] write into a fresh staging directory next to the target
//! that is renamed into place only when everything succeeded, so an error leaves nothing.

use super::beneath::{self, BeneathError, Meta, NodeKind, Root, Special};
use super::names::{self, Rules, Whiteout, WindowsEntry};
use super::reader::{Decompressed, ReadLimits, open};
use super::tar::{Header, Kind, TarError, TarReader};
use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How to extract.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Decompression limits.
    pub limits: ReadLimits,
    /// Restore uid/gid (default: when running as root).
    pub preserve_owner: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            limits: ReadLimits::default(),
            preserve_owner: is_root(),
        }
    }
}

fn is_root() -> bool {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// What an extraction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractSummary {
    /// True when the layer was in the Windows format (`Files/` became the root).
    pub windows: bool,
    /// Entries read.
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks and hard links created.
    pub links: u64,
    /// Devices and FIFOs created.
    pub devices: u64,
    /// Content bytes written.
    pub bytes: u64,
    /// Whiteouts and opaque markers seen (`extract` only counts them: a single layer has
    /// nothing below it to delete).
    pub whiteouts: u64,
    /// Entries skipped: Windows `Hives/` and `UtilityVM/`, devices when not root, AUFS
    /// bookkeeping (`.wh..wh.*`).
    pub skipped: u64,
    /// Extended attributes not restored: refused by the file system (e.g. `security.*`
    /// without privilege), on a symlink or special file, or overlayfs' own.
    pub xattrs_skipped: u64,
}

/// Why an extraction stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// An entry tried to reach outside the target or is otherwise unsafe.
    #[error("refused entry `{entry}` (at byte {offset}): {reason}; nothing was extracted")]
    Hostile {
        /// The entry's name as written.
        entry: String,
        /// Offset of its header.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// The tar stream is malformed, truncated, or a bomb.
    #[error("{0}; nothing was extracted")]
    Tar(#[from] TarError),
    /// A file system operation failed.
    #[error("{op} `{path}`: {source}; nothing was extracted")]
    Io {
        /// What.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The target already has content.
    #[error("`{0}` exists and is not an empty directory; extract into a new or empty one")]
    TargetNotEmpty(PathBuf),
    /// [`unpack_overlay`] was given a Windows-format layer.
    #[error(
        "`{0}`: a Windows layer cannot be an overlayfs lower directory (only Linux layers can); nothing was extracted"
    )]
    WindowsOverlay(PathBuf),
    /// An entry needs privileges this process does not have.
    #[error("entry `{entry}` (at byte {offset}): {what}, which needs root; nothing was extracted")]
    NeedsRoot {
        /// The entry's name as written.
        entry: String,
        /// Offset of its header.
        offset: u64,
        /// What it needed.
        what: &'static str,
    },
}

fn io_at(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ExtractError + use<> {
    let path = path.to_path_buf();
    move |source| ExtractError::Io { op, path, source }
}

/// What writing a layer does with whiteouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One layer on its own: whiteouts are counted.
    Extract,
    /// Onto the layers below: whiteouts delete, opaque markers empty their directory.
    Apply,
    /// An overlayfs lower directory: whiteouts become 0/0 devices, opaque markers an xattr.
    Overlay,
}

struct Writer {
    root: Root,
    mode: Mode,
    preserve_owner: bool,
    root_user: bool,
    /// Directories whose mode and time are set at the end (deepest first).
    deferred_dirs: Vec<(Vec<String>, u32, i64)>,
    /// What this layer wrote, and their parents (`apply` only): an opaque marker keeps them.
    written: HashSet<String>,
}

fn hostile(h: &Header, offset: u64, reason: impl Into<String>) -> ExtractError {
    ExtractError::Hostile {
        entry: h.path.clone(),
        offset,
        reason: reason.into(),
    }
}

/// An error of an operation beneath the root, as an extraction error of the entry.
fn refused(h: &Header, offset: u64) -> impl FnOnce(BeneathError) -> ExtractError + '_ {
    move |e| match e {
        BeneathError::Symlink { path } => hostile(
            h,
            offset,
            format!(
                "`{path}` on its way is a symlink, and writing through it could leave the target"
            ),
        ),
        BeneathError::NotDir { path } => {
            hostile(h, offset, format!("`{path}` on its way is not a directory"))
        }
        BeneathError::Component { component } => hostile(
            h,
            offset,
            format!("`{component}` is not a single path component"),
        ),
        BeneathError::Io { op, path, source } => ExtractError::Io { op, path, source },
    }
}

fn is_windows_layer(first: &str) -> bool {
    first == "Files"
        || first == "Hives"
        || first.starts_with("Files/")
        || first.starts_with("Hives/")
}

static STAGING: AtomicU64 = AtomicU64::new(0);

/// Extracts a layer blob (gzip, zstd or plain; Linux or Windows format) into `target`, which
/// must not exist or be an empty directory. Whiteouts are counted, not applied.
pub fn extract(
    blob: impl Read + 'static,
    target: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractSummary, ExtractError> {
    staged(blob, target, opts, Mode::Extract)
}

/// Extracts ONE Linux layer blob into `target` (new or empty) as an overlayfs lower
/// directory: `.wh.NAME` becomes a character device 0/0 named `NAME`, `.wh..wh..opq` the
/// attribute `trusted.overlay.opaque=y` on its directory (which needs root). Windows layers
/// are refused. The same safety rules and staging as [`extract`].
pub fn unpack_overlay(
    blob: impl Read + 'static,
    target: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractSummary, ExtractError> {
    staged(blob, target, opts, Mode::Overlay)
}

fn staged(
    blob: impl Read + 'static,
    target: &Path,
    opts: &ExtractOptions,
    mode: Mode,
) -> Result<ExtractSummary, ExtractError> {
    match fs::read_dir(target) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(ExtractError::TargetNotEmpty(target.to_path_buf()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at("read directory", target)(e)),
    }
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_at("create directory", parent))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "layer".into());
    let stage_dir = parent.join(format!(
        ".{name}.wcbuild-extract-{}-{}",
        std::process::id(),
        STAGING.fetch_add(1, Ordering::Relaxed)
    ));
    if fs::symlink_metadata(&stage_dir).is_ok() {
        fs::remove_dir_all(&stage_dir).map_err(io_at("remove", &stage_dir))?;
    }
    fs::create_dir(&stage_dir).map_err(io_at("create directory", &stage_dir))?;
    let result = Root::open(&stage_dir)
        .map_err(|e| match e {
            BeneathError::Io { op, path, source } => ExtractError::Io { op, path, source },
            e => ExtractError::Io {
                op: "open directory",
                path: stage_dir.clone(),
                source: io::Error::other(e.to_string()),
            },
        })
        .and_then(|root| {
            let d = open(blob, opts.limits).map_err(|e| ExtractError::Io {
                op: "open layer",
                path: target.to_path_buf(),
                source: e,
            })?;
            let mut w = Writer::new(root, mode, opts);
            w.run(TarReader::new(d), target)
        });
    match result {
        Ok(summary) => {
            if target.exists() {
                fs::remove_dir(target).map_err(io_at("remove", target))?;
            }
            fs::rename(&stage_dir, target).map_err(io_at("rename into place", target))?;
            Ok(summary)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&stage_dir);
            Err(e)
        }
    }
}

/// Applies a layer on top of the tree at `root` (which holds the layers below it), as a
/// container runtime stacks layers: entries are written, whiteouts delete what they name,
/// opaque markers empty their directory of what lower layers put there. The same safety
/// rules as [`extract`], but there is no staging: on error the tree is left part-applied, so
/// callers apply into a directory of their own that they discard on failure.
pub fn apply(
    blob: impl Read + 'static,
    root: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractSummary, ExtractError> {
    fs::create_dir_all(root).map_err(io_at("create directory", root))?;
    let r = Root::open(root).map_err(|e| ExtractError::Io {
        op: "open directory",
        path: root.to_path_buf(),
        source: io::Error::other(e.to_string()),
    })?;
    let d = open(blob, opts.limits).map_err(|e| ExtractError::Io {
        op: "open layer",
        path: root.to_path_buf(),
        source: e,
    })?;
    Writer::new(r, Mode::Apply, opts).run(TarReader::new(d), root)
}

impl Writer {
    fn new(root: Root, mode: Mode, opts: &ExtractOptions) -> Writer {
        Writer {
            root,
            mode,
            preserve_owner: opts.preserve_owner,
            root_user: is_root(),
            deferred_dirs: Vec::new(),
            written: HashSet::new(),
        }
    }

    fn run(
        &mut self,
        mut tar: TarReader<Decompressed>,
        target: &Path,
    ) -> Result<ExtractSummary, ExtractError> {
        let mut summary = ExtractSummary::default();
        let mut windows: Option<bool> = None;
        while let Some(entry) = tar.next_entry()? {
            summary.entries += 1;
            let h = &entry.header;
            let offset = entry.offset;
            let win = *windows.get_or_insert_with(|| is_windows_layer(&h.path));
            summary.windows = win;
            if win && self.mode == Mode::Overlay {
                return Err(ExtractError::WindowsOverlay(target.to_path_buf()));
            }
            let rules = Rules::for_layer(win);
            let comps: Vec<&str> = if win {
                match names::windows_entry(&h.path)
                    .map_err(|e| hostile(h, offset, e.to_string()))?
                {
                    WindowsEntry::Files(c) => c,
                    WindowsEntry::Skipped => {
                        summary.skipped += 1;
                        continue;
                    }
                    WindowsEntry::Outside => {
                        return Err(hostile(
                            h,
                            offset,
                            "a Windows layer entry outside `Files/`, `Hives/` and `UtilityVM/`",
                        ));
                    }
                }
            } else {
                names::components(&h.path, rules).map_err(|e| hostile(h, offset, e.to_string()))?
            };
            let Some((&base, parent)) = comps.split_last() else {
                if h.kind == Kind::Dir {
                    // `./` (or `Files`): the root itself, which is ours.
                    continue;
                }
                return Err(hostile(
                    h,
                    offset,
                    "it names the root directory itself, which only a directory entry may",
                ));
            };
            match names::whiteout(base, rules).map_err(|e| hostile(h, offset, e.to_string()))? {
                None => {}
                Some(Whiteout::Meta) => {
                    summary.skipped += 1;
                    continue;
                }
                Some(Whiteout::Opaque) => {
                    summary.whiteouts += 1;
                    match self.mode {
                        Mode::Extract => {}
                        Mode::Apply => self.opaque(parent).map_err(refused(h, offset))?,
                        Mode::Overlay => self.overlay_opaque(parent, h, offset)?,
                    }
                    continue;
                }
                Some(Whiteout::Hides(hidden)) => {
                    summary.whiteouts += 1;
                    let mut victim = parent.to_vec();
                    victim.push(hidden);
                    match self.mode {
                        Mode::Extract => {}
                        Mode::Apply => {
                            self.root.remove(&victim).map_err(refused(h, offset))?;
                        }
                        Mode::Overlay => self.overlay_whiteout(&victim, h, offset)?,
                    }
                    continue;
                }
            }
            if !win && (h.uid >= u32::MAX as u64 || h.gid >= u32::MAX as u64) {
                return Err(hostile(
                    h,
                    offset,
                    format!("owner {}:{} is out of range", h.uid, h.gid),
                ));
            }
            self.entry(&mut tar, h, offset, &comps, win, &mut summary)?;
            if self.mode == Mode::Apply {
                for i in 1..=comps.len() {
                    self.written.insert(comps[..i].join("/"));
                }
            }
        }
        tar.drain()?;
        // Directory modes and times last, deepest first, so that read-only directories and
        // children written later do not get in the way.
        let mut dirs = std::mem::take(&mut self.deferred_dirs);
        dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.len()));
        for (p, mode, mtime) in dirs {
            let rel: Vec<&str> = p.iter().map(String::as_str).collect();
            // A later entry may have replaced the directory; then it has its own metadata.
            if let Ok(Some(NodeKind::Dir)) = self.root.kind(&rel) {
                let meta = Meta {
                    mode: Some(if summary.windows { 0o755 } else { mode }),
                    mtime: Some(mtime),
                    ..Meta::default()
                };
                let _ = self.root.set_meta(&rel, &meta);
            }
        }
        Ok(summary)
    }

    /// The owner and extended attributes an entry's metadata carries (`xattrs` left out of
    /// Windows layers, overlayfs' own counted as skipped).
    fn meta<'h>(&self, h: &'h Header, win: bool, summary: &mut ExtractSummary) -> Meta<'h> {
        let mut m = Meta {
            owner: (self.preserve_owner && !win).then_some((h.uid as u32, h.gid as u32)),
            ..Meta::default()
        };
        if !win {
            for (k, v) in &h.xattrs {
                if beneath::is_overlay_xattr(k) {
                    tracing::debug!("xattr `{k}` of `{}` not restored: overlayfs' own", h.path);
                    summary.xattrs_skipped += 1;
                } else {
                    m.xattrs.push((k.as_str(), v.as_slice()));
                }
            }
        }
        m
    }

    fn entry(
        &mut self,
        tar: &mut TarReader<Decompressed>,
        h: &Header,
        offset: u64,
        comps: &[&str],
        win: bool,
        summary: &mut ExtractSummary,
    ) -> Result<(), ExtractError> {
        let root = &self.root;
        let be = || refused(h, offset);
        let mut meta = self.meta(h, win, summary);
        match h.kind {
            Kind::Dir => {
                match root.kind(comps).map_err(be())? {
                    Some(NodeKind::Dir) => {}
                    Some(_) => {
                        root.remove(comps).map_err(be())?;
                        root.create_dir(comps).map_err(be())?;
                        summary.dirs += 1;
                    }
                    None => {
                        root.create_dir(comps).map_err(be())?;
                        summary.dirs += 1;
                    }
                }
                summary.xattrs_skipped += root.set_meta(comps, &meta).map_err(be())?;
                self.deferred_dirs.push((
                    comps.iter().map(|s| s.to_string()).collect(),
                    h.mode,
                    h.mtime,
                ));
            }
            Kind::File => {
                root.remove(comps).map_err(be())?;
                let mut f = root.create_file(comps).map_err(be())?;
                let path = root.display_path(comps);
                let n = io::copy(&mut tar.content(), &mut f).map_err(|e| {
                    if e.kind() == io::ErrorKind::InvalidData
                        || e.kind() == io::ErrorKind::UnexpectedEof
                    {
                        ExtractError::Tar(TarError::Malformed {
                            offset,
                            entry: Some(h.path.clone()),
                            message: e.to_string(),
                        })
                    } else {
                        io_at("write", &path)(e)
                    }
                })?;
                meta.mode = Some(if win {
                    0o644 | (h.mode & 0o111)
                } else {
                    h.mode
                });
                meta.mtime = Some(h.mtime);
                summary.xattrs_skipped += beneath::set_file_meta(&f, &path, &meta).map_err(be())?;
                summary.files += 1;
                summary.bytes += n;
            }
            Kind::Symlink => {
                names::check_symlink_target(&h.link)
                    .map_err(|e| hostile(h, offset, e.to_string()))?;
                root.remove(comps).map_err(be())?;
                root.symlink(&h.link, comps).map_err(be())?;
                meta.mtime = Some(h.mtime);
                summary.xattrs_skipped += root.set_meta(comps, &meta).map_err(be())?;
                summary.links += 1;
            }
            Kind::Hardlink => {
                let tcomps: Vec<&str> = if win {
                    match names::windows_entry(&h.link) {
                        Ok(WindowsEntry::Files(c)) if !c.is_empty() => c,
                        Ok(_) => {
                            return Err(hostile(
                                h,
                                offset,
                                format!("hard link to `{}`, outside `Files/`", h.link),
                            ));
                        }
                        Err(e) => {
                            return Err(hostile(
                                h,
                                offset,
                                format!("hard link target `{}`: {e}", h.link),
                            ));
                        }
                    }
                } else {
                    names::components_nonempty(&h.link, Rules::for_layer(false)).map_err(|e| {
                        hostile(h, offset, format!("hard link target `{}`: {e}", h.link))
                    })?
                };
                if tcomps == comps {
                    return Err(hostile(h, offset, "a hard link to itself"));
                }
                match root.kind(&tcomps).map_err(be())? {
                    Some(NodeKind::Dir) => {
                        return Err(hostile(
                            h,
                            offset,
                            format!("hard link target `{}` is a directory", h.link),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        return Err(hostile(
                            h,
                            offset,
                            format!(
                                "hard link target `{}` does not exist earlier in the layer{}",
                                h.link,
                                if self.mode == Mode::Apply {
                                    " or a lower one"
                                } else {
                                    ""
                                }
                            ),
                        ));
                    }
                }
                root.remove(comps).map_err(be())?;
                root.hard_link(&tcomps, comps).map_err(be())?;
                summary.links += 1;
            }
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {
                if h.kind != Kind::Fifo && !self.root_user {
                    summary.skipped += 1;
                    return Ok(());
                }
                let special = match h.kind {
                    Kind::CharDevice => Special::Char,
                    Kind::BlockDevice => Special::Block,
                    _ => Special::Fifo,
                };
                root.remove(comps).map_err(be())?;
                match root.mknod(comps, special, h.mode & 0o777, h.dev) {
                    Ok(()) => {}
                    Err(e)
                        if e.io()
                            .is_some_and(|e| e.kind() == io::ErrorKind::Unsupported) =>
                    {
                        summary.skipped += 1;
                        return Ok(());
                    }
                    Err(e) => return Err(refused(h, offset)(e)),
                }
                meta.mode = Some(h.mode);
                meta.mtime = Some(h.mtime);
                summary.xattrs_skipped += root.set_meta(comps, &meta).map_err(be())?;
                summary.devices += 1;
            }
        }
        Ok(())
    }

    /// Empties `dir` of what lower layers put there, keeping what this layer wrote.
    fn opaque(&self, dir: &[&str]) -> Result<(), BeneathError> {
        let Some(names) = self.root.read_dir(dir)? else {
            return Ok(());
        };
        for n in &names {
            let mut p = dir.to_vec();
            p.push(n);
            if self.written.contains(&p.join("/")) {
                if self.root.kind(&p)? == Some(NodeKind::Dir) {
                    self.opaque(&p)?;
                }
            } else {
                self.root.remove(&p)?;
            }
        }
        Ok(())
    }

    fn overlay_whiteout(
        &self,
        victim: &[&str],
        h: &Header,
        offset: u64,
    ) -> Result<(), ExtractError> {
        self.root.remove(victim).map_err(refused(h, offset))?;
        match self.root.mknod(victim, Special::Char, 0, (0, 0)) {
            Ok(()) => {}
            Err(e)
                if e.io()
                    .is_some_and(|e| e.kind() == io::ErrorKind::PermissionDenied) =>
            {
                return Err(ExtractError::NeedsRoot {
                    entry: h.path.clone(),
                    offset,
                    what: "a whiteout is a 0/0 character device",
                });
            }
            Err(e) => return Err(refused(h, offset)(e)),
        }
        let meta = Meta {
            owner: self.preserve_owner.then_some((h.uid as u32, h.gid as u32)),
            mtime: Some(h.mtime),
            ..Meta::default()
        };
        self.root
            .set_meta(victim, &meta)
            .map_err(refused(h, offset))?;
        Ok(())
    }

    fn overlay_opaque(&self, dir: &[&str], h: &Header, offset: u64) -> Result<(), ExtractError> {
        self.root.create_dir_all(dir).map_err(refused(h, offset))?;
        match self.root.set_xattr(dir, "trusted.overlay.opaque", b"y") {
            Ok(()) => Ok(()),
            Err(e)
                if e.io()
                    .is_some_and(|e| e.kind() == io::ErrorKind::PermissionDenied) =>
            {
                Err(ExtractError::NeedsRoot {
                    entry: h.path.clone(),
                    offset,
                    what: "an opaque directory is the attribute `trusted.overlay.opaque`",
                })
            }
            Err(e) => Err(refused(h, offset)(e)),
        }
    }
}
