//! Walking sources for COPY: context paths matched by a pattern (honouring `.dockerignore`),
//! directory trees collected under a destination, and each entry's kind, mode, owner and time.

use super::settings::BuildError;
use crate::dockerfile;
use crate::dockerfile::ignore::IgnoreFile;
use crate::layer::tar::Kind;
use std::fs;
use std::path::{Path, PathBuf};

/// One entry a COPY or ADD writes.
pub(super) struct CopyItem {
    /// Unpacked from an archive by ADD: its owner is kept.
    pub(super) from_archive: bool,
    /// Owner kept from the source (COPY --from keeps it; the context gives 0:0).
    pub(super) uid: u64,
    /// Group kept from the source.
    pub(super) gid: u64,
    /// Path in the image, relative to `/`.
    pub(super) dest: String,
    /// Where the content comes from (`None`: a directory to create, or inline content).
    pub(super) source: Option<PathBuf>,
    /// A directory the COPY creates or passes through: its mode and owner are final (no
    /// `--chmod`, no `--chown`).
    pub(super) exact: bool,
    /// Which source (in the order written) it came from: hard links are kept within one.
    pub(super) origin: usize,
    /// A regular file's size, mtime (ns) and inode when it was collected (the stat cache's
    /// comparison), and its (device, inode) when it has several names.
    pub(super) stat: Option<(u64, i64, u64)>,
    pub(super) link_id: Option<(u64, u64)>,
    pub(super) inline: Option<Vec<u8>>,
    pub(super) kind: Kind,
    pub(super) mode: u32,
    pub(super) mtime: i64,
    pub(super) link: String,
}

fn mtime_of(meta: &fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn owner_of(meta: &fs::Metadata) -> (u64, u64) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (meta.uid() as u64, meta.gid() as u64)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        (0, 0)
    }
}

fn mode_of(meta: &fs::Metadata) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o7777
    }
    #[cfg(not(unix))]
    {
        if meta.is_dir() { 0o755 } else { 0o644 }
    }
}

pub(super) fn item_for(path: &Path, meta: &fs::Metadata, dest: &str) -> Result<CopyItem, String> {
    let ft = meta.file_type();
    let (kind, link) = if ft.is_symlink() {
        (
            Kind::Symlink,
            fs::read_link(path)
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )
    } else if ft.is_dir() {
        (Kind::Dir, String::new())
    } else if ft.is_file() {
        (Kind::File, String::new())
    } else {
        return Err(format!(
            "`{}` is not a file, directory or symlink",
            path.display()
        ));
    };
    Ok(CopyItem {
        dest: dest.to_string(),
        source: Some(path.to_path_buf()),
        inline: None,
        kind,
        mode: mode_of(meta),
        mtime: mtime_of(meta),
        link,
        uid: owner_of(meta).0,
        gid: owner_of(meta).1,
        from_archive: false,
        exact: false,
        origin: 0,
        stat: (kind == Kind::File).then(|| super::cache::stat_of(meta)),
        link_id: (kind == Kind::File).then(|| link_id(meta)).flatten(),
    })
}

/// (device, inode) of a file with several names.
fn link_id(meta: &fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (meta.nlink() > 1).then(|| (meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Follows `path` (inside `root`) through symlinks the way a container would, but never out
/// of `root`: an absolute target starts again at `root`, `..` stops at it. Returns the real
/// path of what `path` names (which may not exist).
pub(super) fn resolve_beneath(root: &Path, path: &Path) -> Result<PathBuf, String> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut todo: Vec<std::ffi::OsString> = rel
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_os_string()),
            std::path::Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .rev()
        .collect();
    let mut cur = root.to_path_buf();
    let mut depth = 0usize;
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            if depth > 0 {
                cur.pop();
                depth -= 1;
            }
            continue;
        }
        let next = cur.join(&c);
        match fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 255 {
                    return Err(format!(
                        "too many levels of symbolic links at `{}`",
                        next.display()
                    ));
                }
                let target =
                    fs::read_link(&next).map_err(|e| format!("`{}`: {e}", next.display()))?;
                if target.has_root() {
                    cur = root.to_path_buf();
                    depth = 0;
                }
                for part in target.components().rev() {
                    match part {
                        std::path::Component::Normal(n) => todo.push(n.to_os_string()),
                        std::path::Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => {
                cur = next;
                depth += 1;
            }
        }
    }
    Ok(cur)
}

/// Context paths matching a source pattern (a path or a glob), not excluded by `.dockerignore`.
pub(super) fn context_matches(
    context: &Path,
    pattern: &str,
    ignore: &IgnoreFile,
) -> Result<Vec<(String, PathBuf)>, String> {
    let globbed = pattern.contains(['*', '?', '[']);
    if !globbed {
        if pattern == "." || pattern.is_empty() {
            return Ok(vec![(String::new(), context.to_path_buf())]);
        }
        let p = context.join(pattern);
        if fs::symlink_metadata(&p).is_ok() && !ignore.is_excluded(pattern) {
            return Ok(vec![(pattern.to_string(), p)]);
        }
        return Ok(Vec::new());
    }
    // Walk component by component, matching each against the pattern's component.
    let comps: Vec<&str> = pattern.split('/').collect();
    let mut current: Vec<(String, PathBuf)> = vec![(String::new(), context.to_path_buf())];
    for (i, comp) in comps.iter().enumerate() {
        let mut next = Vec::new();
        for (rel, path) in &current {
            let Ok(rd) = fs::read_dir(path) else { continue };
            let mut names: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for n in names {
                if crate::dockerfile::ignore::glob_matches(comp, &n) {
                    let r = if rel.is_empty() {
                        n.clone()
                    } else {
                        format!("{rel}/{n}")
                    };
                    let p = path.join(&n);
                    if i + 1 < comps.len() && !p.is_dir() {
                        continue;
                    }
                    if !ignore.is_excluded(&r) {
                        next.push((r, p));
                    }
                }
            }
        }
        current = next;
    }
    Ok(current)
}

pub(super) fn collect_dir(
    dir: &Path,
    rel: &str,
    dest: &str,
    ignore: &IgnoreFile,
    excludes: &IgnoreFile,
    out: &mut Vec<CopyItem>,
) -> Result<(), String> {
    let dest = dest.trim_matches('/');
    walk_dir(dir, rel, dest, "", ignore, excludes, out)
}

fn walk_dir(
    dir: &Path,
    ctx_rel: &str,
    dest: &str,
    sub: &str,
    ignore: &IgnoreFile,
    excludes: &IgnoreFile,
    out: &mut Vec<CopyItem>,
) -> Result<(), String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(|e| format!("read `{}`: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names {
        let ctx_path = if ctx_rel.is_empty() {
            n.clone()
        } else {
            format!("{ctx_rel}/{n}")
        };
        let sub_path = if sub.is_empty() {
            n.clone()
        } else {
            format!("{sub}/{n}")
        };
        if ignore.is_excluded(&ctx_path) || excludes.is_excluded(&sub_path) {
            continue;
        }
        let p = dir.join(&n);
        let meta = fs::symlink_metadata(&p).map_err(|e| format!("`{}`: {e}", p.display()))?;
        let target = if dest.is_empty() {
            sub_path.clone()
        } else {
            format!("{dest}/{sub_path}")
        };
        let mut it = item_for(&p, &meta, &target)?;
        let is_dir = meta.is_dir();
        if is_dir {
            it.source = None;
        }
        out.push(it);
        if is_dir {
            walk_dir(&p, &ctx_path, dest, &sub_path, ignore, excludes, out)?;
        }
    }
    Ok(())
}

/// The `.dockerignore` that applies: `<Dockerfile>.dockerignore` next to the Dockerfile, else
/// `CONTEXT/.dockerignore`, else none.
pub(super) fn load_ignore(
    context: &Path,
    dockerfile: Option<&Path>,
) -> Result<IgnoreFile, BuildError> {
    for candidate in dockerfile::ignore::ignore_file_candidates(context, dockerfile) {
        if let Ok(bytes) = fs::read(&candidate) {
            return IgnoreFile::parse(&bytes).map_err(|e| BuildError::Step {
                location: candidate.display().to_string(),
                message: e.to_string(),
            });
        }
    }
    Ok(IgnoreFile::default())
}
