//! Safe extraction of a layer into a directory.
//!
//! Nothing an entry says can make us write outside the target: absolute names and `..` are
//! refused; no write ever goes through a symlink (every parent of every entry must be a real
//! directory, checked without following links, and remembered only while nothing replaces it);
//! hard links may only point at earlier entries inside the tree. Everything is written into a
//! fresh staging directory next to the target and renamed into place at the end, so an error
//! leaves the target exactly as it was and removes the staging directory.

use super::reader::{Decompressed, ReadLimits, open};
use super::tar::{Kind, TarError, TarReader};
use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

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
    /// Content bytes written.
    pub bytes: u64,
    /// Whiteouts seen (they delete from lower layers, which a single extraction has not).
    pub whiteouts: u64,
    /// Entries skipped: Windows `Hives/` and `UtilityVM/`, devices when not root.
    pub skipped: u64,
    /// Extended attributes the file system refused (e.g. `security.*` without privilege).
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
}

fn io_at(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ExtractError + use<> {
    let path = path.to_path_buf();
    move |source| ExtractError::Io { op, path, source }
}

/// Splits an entry name into safe components, or says why it is unsafe.
fn components(name: &str) -> Result<Vec<&str>, String> {
    if name.starts_with('/') || name.starts_with('\\') {
        return Err("absolute names are not allowed".into());
    }
    if name.len() >= 2 && name.as_bytes()[1] == b':' {
        return Err("names with a drive letter are not allowed".into());
    }
    if name.contains('\0') {
        return Err("names cannot contain NUL".into());
    }
    let mut out = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("`..` would leave the target directory".into()),
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return Err("empty name".into());
    }
    Ok(out)
}

struct Stage {
    root: PathBuf,
    /// Directories (relative) known to be real directories we created or checked.
    dirs: HashSet<String>,
    deferred_dirs: Vec<(PathBuf, u32, i64)>,
    preserve_owner: bool,
    /// Applying onto a tree that holds the lower layers: whiteouts delete.
    apply_whiteouts: bool,
}

impl Stage {
    /// Makes sure every parent of `comps` is a real directory (creating missing ones) and
    /// returns the full path of the entry.
    fn prepare(
        &mut self,
        comps: &[&str],
        entry: &str,
        offset: u64,
    ) -> Result<PathBuf, ExtractError> {
        let mut rel = String::new();
        let mut path = self.root.clone();
        for c in &comps[..comps.len() - 1] {
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(c);
            path.push(c);
            if self.dirs.contains(&rel) {
                continue;
            }
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(ExtractError::Hostile {
                        entry: entry.to_string(),
                        offset,
                        reason: format!(
                            "its parent `{rel}` is a symlink, and writing through it could leave the target"
                        ),
                    });
                }
                Ok(_) => {
                    return Err(ExtractError::Hostile {
                        entry: entry.to_string(),
                        offset,
                        reason: format!("its parent `{rel}` is not a directory"),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&path).map_err(io_at("create directory", &path))?;
                }
                Err(e) => return Err(io_at("stat", &path)(e)),
            }
            self.dirs.insert(rel.clone());
        }
        path.push(comps[comps.len() - 1]);
        Ok(path)
    }

    /// Removes whatever is at `path` (never following a link), unless it is a directory and
    /// `keep_dir`.
    fn clear(&mut self, path: &Path, rel: &str, keep_dir: bool) -> Result<bool, ExtractError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_dir() => {
                if keep_dir {
                    return Ok(true);
                }
                fs::remove_dir_all(path).map_err(io_at("remove", path))?;
                let prefix = format!("{rel}/");
                self.dirs.retain(|d| d != rel && !d.starts_with(&prefix));
                Ok(false)
            }
            Ok(_) => {
                fs::remove_file(path).map_err(io_at("remove", path))?;
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_at("stat", path)(e)),
        }
    }
}

fn set_mtime(file: &fs::File, mtime: i64) {
    if mtime >= 0 {
        let _ = file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime as u64));
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

fn make_symlink(target: &str, path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(target, path)
    }
    #[cfg(windows)]
    {
        std::os::windows::fs::symlink_file(target, path)
    }
}

/// Extracts a layer blob (gzip, zstd or plain; Linux or Windows format) into `target`, which
/// must not exist or be an empty directory.
pub fn extract(
    blob: impl Read + 'static,
    target: &Path,
    opts: &ExtractOptions,
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
    let stage_dir = parent.join(format!(".{name}.wcbuild-extract-{}", std::process::id()));
    if stage_dir.exists() {
        fs::remove_dir_all(&stage_dir).map_err(io_at("remove", &stage_dir))?;
    }
    fs::create_dir(&stage_dir).map_err(io_at("create directory", &stage_dir))?;
    let mut stage = Stage {
        root: stage_dir.clone(),
        dirs: HashSet::new(),
        deferred_dirs: Vec::new(),
        preserve_owner: opts.preserve_owner,
        apply_whiteouts: false,
    };
    let result = open(blob, opts.limits)
        .map_err(|e| ExtractError::Io {
            op: "open layer",
            path: target.to_path_buf(),
            source: e,
        })
        .and_then(|d| extract_into(TarReader::new(d), &mut stage));
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

fn extract_into(
    mut tar: TarReader<Decompressed>,
    stage: &mut Stage,
) -> Result<ExtractSummary, ExtractError> {
    let mut summary = ExtractSummary::default();
    let mut windows: Option<bool> = None;
    while let Some(entry) = tar.next_entry()? {
        summary.entries += 1;
        let h = &entry.header;
        let offset = entry.offset;
        let hostile = |reason: String| ExtractError::Hostile {
            entry: h.path.clone(),
            offset,
            reason,
        };
        let win = *windows.get_or_insert_with(|| {
            h.path == "Files"
                || h.path == "Hives"
                || h.path.starts_with("Files/")
                || h.path.starts_with("Hives/")
        });
        summary.windows = win;
        let mut name = h.path.as_str();
        if win {
            if name == "Files" {
                continue;
            }
            match name.strip_prefix("Files/") {
                Some(rest) => name = rest,
                None if name.starts_with("Hives") || name.starts_with("UtilityVM") => {
                    summary.skipped += 1;
                    continue;
                }
                None => {
                    return Err(hostile(
                        "a Windows layer entry outside `Files/`, `Hives/` and `UtilityVM/`".into(),
                    ));
                }
            }
        }
        // The archive's own root (`./`, as `tar -C DIR .` writes it) names the target itself.
        if name.trim_end_matches('/') == "." {
            continue;
        }
        let comps = components(name).map_err(hostile)?;
        let base = comps[comps.len() - 1];
        if let Some(hidden) = base.strip_prefix(".wh.") {
            summary.whiteouts += 1;
            if stage.apply_whiteouts {
                let parent = &comps[..comps.len() - 1];
                if hidden == ".wh..opq" {
                    // Opaque: the directory's lower contents go.
                    if !parent.is_empty() {
                        // Checks that every component of the directory is a real directory.
                        let mut dir_comps = parent.to_vec();
                        dir_comps.push("wcbuild-opaque-probe");
                        let dir = stage.prepare(&dir_comps, &h.path, offset)?;
                        let dir = dir.parent().map(Path::to_path_buf).unwrap_or(dir);
                        if let Ok(rd) = fs::read_dir(&dir) {
                            for e in rd.flatten() {
                                let p = e.path();
                                let rel = format!(
                                    "{}/{}",
                                    parent.join("/"),
                                    e.file_name().to_string_lossy()
                                );
                                stage.clear(&p, &rel, false)?;
                            }
                        }
                    }
                } else {
                    let mut victim = parent.to_vec();
                    victim.push(hidden);
                    let rel = victim.join("/");
                    let path = stage.prepare(&victim, &h.path, offset)?;
                    stage.clear(&path, &rel, false)?;
                }
            }
            continue;
        }
        let rel = comps.join("/");
        let path = stage.prepare(&comps, &h.path, offset)?;
        match h.kind {
            Kind::Dir => {
                if !stage.clear(&path, &rel, true)? {
                    fs::create_dir(&path).map_err(io_at("create directory", &path))?;
                    summary.dirs += 1;
                }
                stage.dirs.insert(rel.clone());
                stage.deferred_dirs.push((path.clone(), h.mode, h.mtime));
            }
            Kind::File => {
                stage.clear(&path, &rel, false)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io_at("create", &path))?;
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
                set_mtime(&f, h.mtime);
                drop(f);
                set_mode(
                    &path,
                    if win {
                        0o644 | (h.mode & 0o111)
                    } else {
                        h.mode
                    },
                )
                .map_err(io_at("chmod", &path))?;
                summary.files += 1;
                summary.bytes += n;
            }
            Kind::Symlink => {
                stage.clear(&path, &rel, false)?;
                make_symlink(&h.link, &path).map_err(io_at("create symlink", &path))?;
                summary.links += 1;
            }
            Kind::Hardlink => {
                let link = if win {
                    h.link.strip_prefix("Files/").ok_or_else(|| {
                        hostile(format!("hard link to `{}`, outside `Files/`", h.link))
                    })?
                } else {
                    h.link.as_str()
                };
                let tcomps = components(link)
                    .map_err(|r| hostile(format!("hard link target `{}`: {r}", h.link)))?;
                let target = stage.prepare(&tcomps, &h.path, offset)?;
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.file_type().is_file() => {}
                    Ok(_) => {
                        return Err(hostile(format!(
                            "hard link target `{}` is not a regular file",
                            h.link
                        )));
                    }
                    Err(_) => {
                        return Err(hostile(format!(
                            "hard link target `{}` does not exist earlier in the layer",
                            h.link
                        )));
                    }
                }
                stage.clear(&path, &rel, false)?;
                fs::hard_link(&target, &path).map_err(io_at("create hard link", &path))?;
                summary.links += 1;
            }
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {
                if !make_special(h.kind, &path, h.mode, h.dev)? {
                    summary.skipped += 1;
                }
            }
        }
        if !win && !h.xattrs.is_empty() && h.kind != Kind::Symlink {
            for (k, v) in &h.xattrs {
                if let Err(e) = super::xattr::set(&path, k, v) {
                    tracing::debug!("xattr `{k}` on `{}` not restored: {e}", path.display());
                    summary.xattrs_skipped += 1;
                }
            }
        }
        if stage.preserve_owner && !win {
            #[cfg(unix)]
            {
                let _ = std::os::unix::fs::lchown(&path, Some(h.uid as u32), Some(h.gid as u32));
            }
        }
    }
    tar.drain()?;
    // Directory modes and times last, deepest first, so that read-only directories and
    // children written later do not get in the way.
    let mut dirs = std::mem::take(&mut stage.deferred_dirs);
    dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
    for (p, mode, mtime) in dirs {
        if let Ok(d) = fs::File::open(&p) {
            set_mtime(&d, mtime);
        }
        let _ = set_mode(&p, if summary.windows { 0o755 } else { mode });
    }
    Ok(summary)
}

#[cfg(unix)]
fn make_special(kind: Kind, path: &Path, mode: u32, dev: (u32, u32)) -> Result<bool, ExtractError> {
    use std::os::unix::ffi::OsStrExt;
    if !is_root() && kind != Kind::Fifo {
        return Ok(false);
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io_at("mknod", path)(io::Error::other(e)))?;
    let type_bits = match kind {
        Kind::CharDevice => libc::S_IFCHR,
        Kind::BlockDevice => libc::S_IFBLK,
        _ => libc::S_IFIFO,
    };
    let devno = libc::makedev(dev.0, dev.1);
    // SAFETY: `c` is a valid NUL-terminated path; mknod has no other preconditions.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            type_bits | (mode & 0o7777) as libc::mode_t,
            devno,
        )
    };
    if rc != 0 {
        return Err(io_at("mknod", path)(io::Error::last_os_error()));
    }
    Ok(true)
}

#[cfg(not(unix))]
fn make_special(
    _kind: Kind,
    _path: &Path,
    _mode: u32,
    _dev: (u32, u32),
) -> Result<bool, ExtractError> {
    Ok(false)
}

/// Applies a layer on top of the tree at `root` (which holds the layers below it), as a
/// container runtime stacks layers: entries are written, whiteouts delete what they name,
/// opaque whiteouts empty their directory. The same safety rules as [`extract`] hold, but
/// there is no staging: on error the tree is left part-applied, so callers apply into a
/// directory of their own that they discard on failure.
pub fn apply(
    blob: impl Read + 'static,
    root: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractSummary, ExtractError> {
    fs::create_dir_all(root).map_err(io_at("create directory", root))?;
    let mut stage = Stage {
        root: root.to_path_buf(),
        dirs: HashSet::new(),
        deferred_dirs: Vec::new(),
        preserve_owner: opts.preserve_owner,
        apply_whiteouts: true,
    };
    let d = open(blob, opts.limits).map_err(|e| ExtractError::Io {
        op: "open layer",
        path: root.to_path_buf(),
        source: e,
    })?;
    extract_into(TarReader::new(d), &mut stage)
}
