//! The file index of one layer, made in one streaming pass: every entry's path, kind, size and
//! mode, the sha256 of every regular file's content, and whiteouts. The reports are computed
//! from these indexes alone, so a layer is read once and its index can be kept (by diff_id) for
//! later reports.
//!
//! While it reads, the indexer hashes the blob (its digest) and the uncompressed tar (its
//! diff_id) and refuses a layer whose bytes do not match the digests it was announced with.
//! Memory stays constant whatever the layer size (the index grows with the number of entries).

use crate::layer::reader::{self, ReadLimits};
use crate::layer::tar::{Kind, TarError, TarReader};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

/// Version of [`LayerIndex`] as written to disk; a reader ignores indexes of other versions
/// (and makes them again). Bump it when the fields or their meaning change.
pub const INDEX_VERSION: u32 = 1;

/// What an indexed entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file (size and sha256 known).
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A hard link to an earlier entry (no content of its own).
    Hardlink,
    /// A device or a pipe.
    Other,
    /// A whiteout: `path` is what it deletes in the layers below.
    Whiteout,
    /// An opaque-directory marker: `path` is the directory whose lower content it hides.
    Opaque,
}

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedEntry {
    /// The path as stored in the tar, normalised (no leading `./` or `/`, no trailing `/`).
    /// Windows layers keep their `Files/`, `Hives/` and `UtilityVM/` prefixes.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Content bytes (regular files only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Mode bits as written in the header.
    #[serde(default)]
    pub mode: u32,
    /// sha256 of the content, lowercase hex (regular files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The index of one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerIndex {
    /// [`INDEX_VERSION`].
    pub version: u32,
    /// The diff_id (sha256 of the uncompressed tar), as computed while indexing.
    pub diff_id: String,
    /// Size of the uncompressed tar in bytes.
    pub tar_bytes: u64,
    /// The entries, in tar order.
    pub entries: Vec<IndexedEntry>,
}

/// Why a layer could not be indexed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The tar (or its compression) is unreadable or malformed.
    #[error(transparent)]
    Tar(#[from] TarError),
    /// The blob does not hash to its digest.
    #[error("the blob hashes to `{actual}`, not to its digest `{expected}`")]
    Digest {
        /// The announced digest.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// The uncompressed tar does not hash to the diff_id the image config gives.
    #[error(
        "the uncompressed layer hashes to `{actual}`, not to the config's diff_id `{expected}`"
    )]
    DiffId {
        /// The config's diff_id.
        expected: String,
        /// What the tar hashes to.
        actual: String,
    },
}

impl From<io::Error> for IndexError {
    fn from(e: io::Error) -> Self {
        IndexError::Tar(TarError::Io(e))
    }
}

/// What the indexer is told about a blob, to check it against.
#[derive(Debug, Clone, Default)]
pub struct Expected<'a> {
    /// The blob's digest (checked when given).
    pub digest: Option<&'a str>,
    /// The config's diff_id (checked when given).
    pub diff_id: Option<&'a str>,
}

type Shared = Rc<RefCell<(Sha256, u64)>>;

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    state: Shared,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut s = self.state.borrow_mut();
        s.0.update(&buf[..n]);
        s.1 += n as u64;
        Ok(n)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Normalises a tar path: no leading `./` or `/`, no trailing `/`.
pub fn normalize_path(p: &str) -> &str {
    let mut p = p;
    loop {
        if let Some(r) = p.strip_prefix("./") {
            p = r;
        } else if let Some(r) = p.strip_prefix('/') {
            p = r;
        } else {
            break;
        }
    }
    let p = p.trim_end_matches('/');
    if p == "." { "" } else { p }
}

/// Reads a layer blob (gzip, zstd or plain tar) once and indexes it, checking the blob's
/// digest and the tar's diff_id against `expected`.
pub fn index_layer(
    blob: impl Read + 'static,
    limits: ReadLimits,
    expected: Expected<'_>,
) -> Result<LayerIndex, IndexError> {
    // The blob is hashed only when there is a digest to check it against.
    let blob_state: Shared = Rc::new(RefCell::new((Sha256::new(), 0)));
    let decompressed = if expected.digest.is_some() {
        reader::open(
            Hashing {
                inner: blob,
                state: Rc::clone(&blob_state),
            },
            limits,
        )?
    } else {
        reader::open(blob, limits)?
    };
    let tar_state: Shared = Rc::new(RefCell::new((Sha256::new(), 0)));
    let mut tar = TarReader::new(Hashing {
        inner: decompressed,
        state: Rc::clone(&tar_state),
    });
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    while let Some(e) = tar.next_entry()? {
        let h = e.header;
        let path = normalize_path(&h.path);
        if path.is_empty() {
            continue;
        }
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (Some(d), n),
            None => (None, path),
        };
        if name == ".wh..wh..opq" {
            entries.push(IndexedEntry {
                path: dir.unwrap_or("").to_string(),
                kind: EntryKind::Opaque,
                size: 0,
                mode: 0,
                sha256: None,
            });
            continue;
        }
        if let Some(target) = name.strip_prefix(".wh.") {
            let path = match dir {
                Some(d) => format!("{d}/{target}"),
                None => target.to_string(),
            };
            entries.push(IndexedEntry {
                path,
                kind: EntryKind::Whiteout,
                size: 0,
                mode: 0,
                sha256: None,
            });
            continue;
        }
        let kind = match h.kind {
            Kind::File => EntryKind::File,
            Kind::Dir => EntryKind::Dir,
            Kind::Symlink => EntryKind::Symlink,
            Kind::Hardlink => EntryKind::Hardlink,
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => EntryKind::Other,
        };
        let mut sha256 = None;
        if kind == EntryKind::File {
            let mut hasher = Sha256::new();
            let mut content = tar.content();
            let mut got = 0u64;
            loop {
                let n = content.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                got += n as u64;
            }
            debug_assert_eq!(got, h.size);
            sha256 = Some(hex(&hasher.finalize()));
        }
        entries.push(IndexedEntry {
            path: path.to_string(),
            kind,
            size: if kind == EntryKind::File { h.size } else { 0 },
            mode: h.mode,
            sha256,
        });
    }
    // Read what follows the end marker so the compressed stream's trailer is checked and the
    // whole blob is hashed.
    tar.drain()?;
    let (tar_hash, tar_bytes) = {
        let mut s = tar_state.borrow_mut();
        let h = std::mem::take(&mut s.0);
        (format!("sha256:{}", hex(&h.finalize())), s.1)
    };
    let blob_hash = {
        let mut s = blob_state.borrow_mut();
        let h = std::mem::take(&mut s.0);
        format!("sha256:{}", hex(&h.finalize()))
    };
    if let Some(d) = expected.digest
        && d != blob_hash
    {
        return Err(IndexError::Digest {
            expected: d.to_string(),
            actual: blob_hash,
        });
    }
    if let Some(d) = expected.diff_id
        && d != tar_hash
    {
        return Err(IndexError::DiffId {
            expected: d.to_string(),
            actual: tar_hash,
        });
    }
    Ok(LayerIndex {
        version: INDEX_VERSION,
        diff_id: tar_hash,
        tar_bytes,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tar::Header;
    use crate::layer::{Compression, Format, LayerOptions, LayerWriter};

    fn layer(format: Format) -> (crate::layer::LayerDigests, Vec<u8>) {
        let mut w = LayerWriter::new(
            Vec::new(),
            LayerOptions {
                format,
                compression: Compression::Gzip(6),
                source_date_epoch: Some(0),
                threads: 1,
                windows_owner: None,
                windows_base: false,
            },
        )
        .unwrap();
        let mut h = Header::new("app/a.txt", Kind::File);
        h.size = 5;
        w.append(h, Some(&mut &b"hello"[..]), false).unwrap();
        w.whiteout("etc/gone").unwrap();
        if format == Format::Linux {
            w.opaque("var/cache").unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn linux_layer_is_indexed_and_checked() {
        let (d, blob) = layer(Format::Linux);
        let idx = index_layer(
            std::io::Cursor::new(blob.clone()),
            ReadLimits::default(),
            Expected {
                digest: Some(&d.digest),
                diff_id: Some(&d.diff_id),
            },
        )
        .unwrap();
        assert_eq!(idx.diff_id, d.diff_id);
        assert_eq!(idx.tar_bytes, d.tar_size);
        let file = idx.entries.iter().find(|e| e.path == "app/a.txt").unwrap();
        assert_eq!(file.kind, EntryKind::File);
        assert_eq!(file.size, 5);
        // sha256("hello")
        assert_eq!(
            file.sha256.as_deref(),
            Some("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
        assert!(
            idx.entries
                .iter()
                .any(|e| e.kind == EntryKind::Whiteout && e.path == "etc/gone")
        );
        assert!(
            idx.entries
                .iter()
                .any(|e| e.kind == EntryKind::Opaque && e.path == "var/cache")
        );
        let wrong = index_layer(
            std::io::Cursor::new(blob),
            ReadLimits::default(),
            Expected {
                digest: None,
                diff_id: Some("sha256:00"),
            },
        )
        .unwrap_err();
        assert!(wrong.to_string().contains("not to the config's diff_id"));
    }

    #[test]
    fn windows_layer_keeps_its_prefixes() {
        let (d, blob) = layer(Format::Windows);
        let idx = index_layer(
            std::io::Cursor::new(blob),
            ReadLimits::default(),
            Expected {
                digest: Some(&d.digest),
                diff_id: Some(&d.diff_id),
            },
        )
        .unwrap();
        assert!(
            idx.entries
                .iter()
                .any(|e| e.kind == EntryKind::File && e.path == "Files/app/a.txt" && e.size == 5)
        );
        assert!(
            idx.entries
                .iter()
                .any(|e| e.kind == EntryKind::Whiteout && e.path == "Files/etc/gone")
        );
        assert!(
            idx.entries
                .iter()
                .any(|e| e.kind == EntryKind::Dir && e.path == "Hives")
        );
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalize_path("./a/b/"), "a/b");
        assert_eq!(normalize_path("/a"), "a");
        assert_eq!(normalize_path("./"), "");
        assert_eq!(normalize_path("."), "");
    }
}
