//! Packing a directory tree into a layer: a sorted walk (so the same tree always gives the
//! same bytes), hard links detected by device and inode ([`HardLinks`], which callers that
//! collect files themselves use too), file contents streamed.

use super::tar::{Header, Kind};
use super::writer::LayerWriter;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::UNIX_EPOCH;

fn mtime_of(m: &fs::Metadata) -> i64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Mode, uid, gid, and device numbers.
type UnixBits = (u32, u64, u64, (u32, u32));

/// Recognises the names of one file: feed it every regular file in the order the entries are
/// written into the layer, and it says when a file is another name of one seen before, so
/// the entry can be a hard link to the earlier path instead of a second copy (the importer of
/// Windows layers makes links with `AddLink`; Linux layers keep them too).
///
/// Keyed by (device, inode) for files with more than one link, on Unix; on other hosts it
/// never finds links.
#[derive(Debug, Default)]
pub struct HardLinks {
    first: HashMap<(u64, u64), String>,
}

impl HardLinks {
    /// An empty tracker.
    pub fn new() -> Self {
        HardLinks::default()
    }

    /// Looks at the file `path` (as it will be named in the layer) with its metadata (from
    /// `symlink_metadata`). Returns the earlier path when this is another name of a file
    /// already seen; `None` the first time (the path is remembered) and for anything that
    /// is not a regular file with several links.
    pub fn observe(&mut self, meta: &fs::Metadata, path: &str) -> Option<String> {
        let id = file_id(meta)?;
        if let Some(first) = self.first.get(&id) {
            return Some(first.clone());
        }
        self.first.insert(id, path.to_string());
        None
    }

    /// The number of files with several names seen so far.
    pub fn len(&self) -> usize {
        self.first.len()
    }

    /// True when no file with several names was seen.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }
}

#[cfg(unix)]
fn file_id(m: &fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    (m.file_type().is_file() && m.nlink() > 1).then(|| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_m: &fs::Metadata) -> Option<(u64, u64)> {
    None
}

#[cfg(unix)]
fn unix_bits(m: &fs::Metadata) -> UnixBits {
    use std::os::unix::fs::MetadataExt;
    let rdev = m.rdev();
    (
        m.mode(),
        m.uid() as u64,
        m.gid() as u64,
        (libc::major(rdev), libc::minor(rdev)),
    )
}

#[cfg(not(unix))]
fn unix_bits(m: &fs::Metadata) -> UnixBits {
    let mode = if m.is_dir() { 0o755 } else { 0o644 };
    (mode, 0, 0, (0, 0))
}

/// Adds every entry under `root` to the layer, sorted by name at each level. Owners are
/// kept only when `keep_owners` (otherwise 0:0, the usual for COPY without --chown).
pub fn pack_dir<W: Write>(
    root: &Path,
    writer: &mut LayerWriter<W>,
    keep_owners: bool,
) -> io::Result<u64> {
    let mut links = HardLinks::new();
    let mut count = 0;
    walk(root, "", writer, keep_owners, &mut links, &mut count)?;
    Ok(count)
}

fn walk<W: Write>(
    dir: &Path,
    rel: &str,
    writer: &mut LayerWriter<W>,
    keep_owners: bool,
    links: &mut HardLinks,
    count: &mut u64,
) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("read directory `{}`: {e}", dir.display())))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    for name in names {
        let path = dir.join(&name);
        let name = name.to_string_lossy();
        let entry_rel = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let m = fs::symlink_metadata(&path)?;
        let (mode, uid, gid, dev) = unix_bits(&m);
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_file() {
            Kind::File
        } else {
            special_kind(&m).unwrap_or(Kind::File)
        };
        let mut h = Header::new(&entry_rel, kind);
        h.mode = mode & 0o7777;
        h.mtime = mtime_of(&m);
        if keep_owners {
            h.uid = uid;
            h.gid = gid;
        }
        if kind != Kind::Symlink {
            h.xattrs = super::xattr::list(&path).unwrap_or_default();
        }
        *count += 1;
        match kind {
            Kind::Dir => {
                writer.append(h, None, false)?;
                walk(&path, &entry_rel, writer, keep_owners, links, count)?;
            }
            Kind::Symlink => {
                h.link = fs::read_link(&path)?.to_string_lossy().into_owned();
                let dir_link = fs::metadata(&path).map(|t| t.is_dir()).unwrap_or(false);
                writer.append(h, None, dir_link)?;
            }
            Kind::File => {
                if let Some(first) = links.observe(&m, &entry_rel) {
                    h.kind = Kind::Hardlink;
                    h.link = first;
                    writer.append(h, None, false)?;
                    continue;
                }
                h.size = m.len();
                let mut f = fs::File::open(&path)?;
                writer.append(h, Some(&mut f), false)?;
            }
            _ => {
                h.dev = dev;
                writer.append(h, None, false)?;
            }
        }
    }
    Ok(())
}

#[cfg(unix)]
fn special_kind(m: &fs::Metadata) -> Option<Kind> {
    use std::os::unix::fs::FileTypeExt;
    let ft = m.file_type();
    if ft.is_char_device() {
        Some(Kind::CharDevice)
    } else if ft.is_block_device() {
        Some(Kind::BlockDevice)
    } else if ft.is_fifo() {
        Some(Kind::Fifo)
    } else {
        None
    }
}

#[cfg(not(unix))]
fn special_kind(_m: &fs::Metadata) -> Option<Kind> {
    None
}
