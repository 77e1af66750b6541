//! The content-addressed local store, in the OCI image-layout format so that other tools
//! (`skopeo inspect oci:<root>:<ref>`, `umoci`) read it as it is.
//!
//! ```text
//! <root>/
//!   oci-layout            {"imageLayoutVersion":"1.0.0"}
//!   index.json            tagged images; annotation org.opencontainers.image.ref.name = full reference
//!   blobs/sha256/<hex>    every blob, immutable, verified before it enters
//!   ingest/               partial writes (temp files), removed by prune when no writer holds them
//!   cache/                build cache records, versioned (cache/v1/steps/<key>.json: a step's layer)
//!   tmp/                  private (0700) scratch: root file systems a build assembles,
//!                         named `<purpose>-<pid>-…`
//!   unpacked/<hex>/       layers unpacked once for RUN's overlayfs (derived; prune removes them)
//!   cache/v1/mounts/      RUN --mount=type=cache directories (prune --cache removes them)
//!   wcbuild-store-v1      format marker
//!   lock                  shared by every open store, exclusive for prune and check
//! ```
//!
//! Crash safety: a process killed at any moment leaves at most partial files in `ingest/`,
//! scratch directories in `tmp/`, staging directories in `unpacked/` and `.tmp-<pid>-…` temp
//! files of atomic writes, each named with its process id; the next [`Store::open`] removes
//! those whose process is gone, and `prune` and `check --repair` (which hold the store alone)
//! remove them all. [`cancel_writes`] makes every blob write fail from then on, so that a
//! process asked to stop (SIGINT, SIGTERM) unwinds at its next write.
//!
//! Blobs are written into `ingest/` while their sha256 is computed, fsynced, checked against
//! the expected digest and renamed into `blobs/`; a blob whose bytes do not match never enters.
//! `index.json` is rewritten atomically (temp file, fsync, rename) under an exclusive lock, so
//! two wcbuild processes updating tags at once lose nothing. Every open [`Store`] holds a shared
//! lock on `lock`; [`Store::prune`] takes it exclusively, so it never removes what a running
//! wcbuild is writing.
//!
//! This part knows nothing of layers or registries; it stores bytes and names.

mod check;
mod fsutil;
mod index;
mod run;
mod steps;

pub use check::{CheckOptions, CheckReport, Defect, DefectKind};
pub use index::{IndexEntry, REF_NAME_ANNOTATION};
pub use steps::{ScratchDir, StepRecord};

use sha2::{Digest as _, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file that marks a wcbuild store and its layout version. Bump the number when the layout
/// changes incompatibly; readers refuse a newer one.
pub const STORE_MARKER: &str = "wcbuild-store-v1";

/// Version of the records under `cache/`; a reader ignores records of other versions.
pub const CACHE_VERSION: u32 = 1;

/// How old an ingest file must be before it counts as abandoned when its writer cannot be
/// told apart (prune and check hold the store alone and remove every unheld one).
pub const STALE_INGEST: Duration = Duration::from_secs(60 * 60);

/// The largest manifest, index or config [`Store::read_blob`] loads into memory.
pub const MAX_METADATA_BYTES: u64 = 32 * 1024 * 1024;

/// What can go wrong in the store. Every variant names the path or digest concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{op} `{path}`: {source}")]
    Io {
        /// What was being done (`create`, `read`, `rename`, …).
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The bytes written do not hash to the digest they were announced with.
    #[error(
        "digest mismatch: expected `{expected}`, the bytes hash to `{actual}` ({size} bytes); nothing was stored"
    )]
    DigestMismatch {
        /// The announced digest.
        expected: String,
        /// The computed digest.
        actual: String,
        /// How many bytes arrived.
        size: u64,
    },
    /// The bytes are not as long as announced.
    #[error(
        "size mismatch for `{digest}`: expected {expected} bytes, got {actual}; nothing was stored"
    )]
    SizeMismatch {
        /// The digest.
        digest: String,
        /// Announced size.
        expected: u64,
        /// Received size.
        actual: u64,
    },
    /// A digest string is not `sha256:<64 lowercase hex>`.
    #[error("invalid digest `{0}`: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),
    /// The blob is not in the store.
    #[error("blob `{0}` is not in the store")]
    BlobNotFound(String),
    /// A metadata blob is too large to load.
    #[error(
        "blob `{digest}` is {size} bytes, larger than the {limit} bytes allowed for a manifest, index or config"
    )]
    TooLarge {
        /// The digest.
        digest: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The directory holds a store of another (newer) layout.
    #[error(
        "`{path}` holds a store of an unknown layout ({found}); this wcbuild reads `{STORE_MARKER}`"
    )]
    UnknownLayout {
        /// The root.
        path: PathBuf,
        /// The marker found.
        found: String,
    },
    /// `index.json` is not valid.
    #[error("`{path}` is not a valid OCI index: {message}")]
    BadIndex {
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Another wcbuild holds the store and prune could not get it to itself.
    #[error("the store `{0}` is in use by another wcbuild process; try again when it has finished")]
    Busy(PathBuf),
}

pub(crate) fn io_err(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// Checks a `sha256:<hex>` digest and returns the hex part.
pub fn digest_hex(digest: &str) -> Result<&str, StoreError> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(StoreError::InvalidDigest(digest.to_string())),
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
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

/// An open store. Holds a shared lock on the store for as long as it (or a clone) lives;
/// clones are cheap and share the lock.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    _lock: std::sync::Arc<File>,
    /// True when the lock is held exclusively (prune, check).
    exclusive: bool,
}

static WRITES_CANCELLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every [`BlobWriter`] write of this process fail from now on (with an error saying the
/// process was asked to stop), so that work in progress unwinds and removes its partial files.
/// For a process that is stopping; there is no way back.
pub fn cancel_writes() {
    WRITES_CANCELLED.store(true, std::sync::atomic::Ordering::SeqCst);
}

static OPENED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes what this process has in the stores it opened: its `tmp/` entries, its ingest
/// files, its staging directories and temp files (all named with its process id). For a
/// process about to exit without unwinding (a second signal, or a stop that took too long).
pub fn remove_own_leftovers() {
    let me = std::process::id();
    let roots = OPENED.lock().map(|r| r.clone()).unwrap_or_default();
    for root in roots {
        for (path, _) in check::leftovers(&root) {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if check::owner_pid(&name) == Some(me) {
                let _ = check::remove_any(&path);
            }
        }
    }
}

/// The default store directory: `$XDG_DATA_HOME/wcbuild` (or `~/.local/share/wcbuild`) on Linux,
/// `%ProgramData%\wcbuild` on Windows.
pub fn default_root() -> PathBuf {
    if cfg!(windows) {
        let base = std::env::var_os("ProgramData").unwrap_or_else(|| "C:\\ProgramData".into());
        return PathBuf::from(base).join("wcbuild");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("wcbuild");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".local/share/wcbuild")
}

impl Store {
    /// Opens the store at `root`, creating the layout if the directory is new or empty.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_err("create directory", &root))?;
        for sub in ["blobs/sha256", "ingest", "cache"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err("create directory", &p))?;
        }
        let lock_path = root.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        lock.lock_shared().map_err(io_err("lock", &lock_path))?;
        let store = Store {
            root,
            _lock: std::sync::Arc::new(lock),
            exclusive: false,
        };
        store.init_files()?;
        store.clean_dead_leftovers();
        if let Ok(mut roots) = OPENED.lock()
            && !roots.contains(&store.root)
        {
            roots.push(store.root.clone());
        }
        Ok(store)
    }

    /// Trades this handle's shared lock for the exclusive one, which no other wcbuild holds
    /// while it is held. When another process has the store open, calls `waiting` once and
    /// waits for it. Other clones of this handle must be dropped first (they hold the shared
    /// lock, and the wait would never end).
    pub fn into_exclusive(self, waiting: impl FnOnce()) -> Result<Store, StoreError> {
        if self.exclusive {
            return Ok(self);
        }
        let lock_path = self.root.join("lock");
        let root = self.root.clone();
        drop(self._lock);
        let lock = OpenOptions::new()
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        if lock.try_lock().is_err() {
            waiting();
            lock.lock().map_err(io_err("lock", &lock_path))?;
        }
        Ok(Store {
            root,
            _lock: std::sync::Arc::new(lock),
            exclusive: true,
        })
    }

    fn init_files(&self) -> Result<(), StoreError> {
        // Another marker of a newer layout means we must not touch this store.
        if let Ok(rd) = fs::read_dir(&self.root) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("wcbuild-store-v") && name != STORE_MARKER {
                    return Err(StoreError::UnknownLayout {
                        path: self.root.clone(),
                        found: name,
                    });
                }
            }
        }
        let layout = self.root.join("oci-layout");
        if !layout.exists() {
            fsutil::write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = self.root.join("index.json");
        if !index.exists() {
            let _guard = self.index_lock()?;
            if !index.exists() {
                fsutil::write_atomic(&index, index::empty_index().as_bytes())?;
            }
        }
        let marker = self.root.join(STORE_MARKER);
        if !marker.exists() {
            fsutil::write_atomic(
                &marker,
                b"This directory is a wcbuild image store (OCI image layout).\n",
            )?;
        }
        Ok(())
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives (whether or not it is there).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        let hex = digest_hex(digest)?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    /// The size of a blob, if the store has it.
    pub fn blob_size(&self, digest: &str) -> Result<Option<u64>, StoreError> {
        let path = self.blob_path(digest)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", &path)(e)),
        }
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &str) -> Result<File, StoreError> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobNotFound(digest.to_string())
            } else {
                io_err("open", &path)(e)
            }
        })
    }

    /// Reads a small blob (manifest, index, config) into memory.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest)?;
        let f = self.open_blob(digest)?;
        let size = f.metadata().map_err(io_err("stat", &path))?.len();
        if size > MAX_METADATA_BYTES {
            return Err(StoreError::TooLarge {
                digest: digest.to_string(),
                size,
                limit: MAX_METADATA_BYTES,
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        f.take(MAX_METADATA_BYTES)
            .read_to_end(&mut buf)
            .map_err(io_err("read", &path))?;
        Ok(buf)
    }

    /// Starts writing a blob into `ingest/`. The bytes are hashed as they are written.
    pub fn blob_writer(&self) -> Result<BlobWriter<'_>, StoreError> {
        let (file, path) = fsutil::temp_file(&self.root.join("ingest"), "blob")?;
        file.try_lock().ok();
        Ok(BlobWriter {
            store: self,
            file: Some(file),
            path,
            hasher: Some(Sha256::new()),
            size: 0,
        })
    }

    /// Stores `bytes`, checking them against `expected` when given. Returns the digest.
    pub fn put_blob(&self, bytes: &[u8], expected: Option<&str>) -> Result<String, StoreError> {
        let digest = sha256_digest(bytes);
        if let Some(e) = expected {
            digest_hex(e)?;
            if e != digest {
                return Err(StoreError::DigestMismatch {
                    expected: e.to_string(),
                    actual: digest,
                    size: bytes.len() as u64,
                });
            }
        }
        if self.blob_size(&digest)? == Some(bytes.len() as u64) {
            return Ok(digest);
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes)
            .map_err(io_err("write", &self.root.join("ingest")))?;
        w.commit(Some(&digest), Some(bytes.len() as u64))
    }

    /// Copies a stream into the store, verifying it against `expected` (digest and size) when
    /// given. On any error nothing enters `blobs/` and the partial file is removed.
    pub fn put_reader(
        &self,
        mut reader: impl Read,
        expected: Option<&str>,
        expected_size: Option<u64>,
    ) -> Result<String, StoreError> {
        let mut w = self.blob_writer()?;
        let ingest = w.path.clone();
        io::copy(&mut reader, &mut w).map_err(io_err("copy into", &ingest))?;
        w.commit(expected, expected_size)
    }

    /// The tagged images: every entry of `index.json`.
    pub fn entries(&self) -> Result<Vec<IndexEntry>, StoreError> {
        index::read(&self.root.join("index.json"))
    }

    /// The entry for a full reference (`docker.io/library/app:1.0`), if tagged.
    pub fn lookup(&self, reference: &str) -> Result<Option<IndexEntry>, StoreError> {
        Ok(self
            .entries()?
            .into_iter()
            .find(|e| e.reference() == Some(reference)))
    }

    fn index_lock(&self) -> Result<File, StoreError> {
        let path = self.root.join("index.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        f.lock().map_err(io_err("lock", &path))?;
        Ok(f)
    }

    /// Changes `index.json` under an exclusive lock: reads it, lets `change` edit the entries,
    /// and writes it back atomically. Other processes' changes in between are never lost.
    pub fn update_index<T>(
        &self,
        change: impl FnOnce(&mut Vec<IndexEntry>) -> T,
    ) -> Result<T, StoreError> {
        let _guard = self.index_lock()?;
        let path = self.root.join("index.json");
        let mut doc = index::read_document(&path)?;
        let mut entries = index::entries_of(&doc, &path)?;
        let out = change(&mut entries);
        index::set_entries(&mut doc, &entries);
        let bytes = serde_json::to_vec(&doc).map_err(|e| StoreError::BadIndex {
            path: path.clone(),
            message: e.to_string(),
        })?;
        fsutil::write_atomic(&path, &bytes)?;
        Ok(out)
    }

    /// Points `reference` at a descriptor (replacing what it pointed at). The blob must be
    /// in the store.
    pub fn tag(&self, reference: &str, entry: IndexEntry) -> Result<(), StoreError> {
        if self.blob_size(&entry.digest)?.is_none() {
            return Err(StoreError::BlobNotFound(entry.digest.clone()));
        }
        let entry = entry.with_reference(reference);
        self.update_index(|entries| {
            entries.retain(|e| e.reference() != Some(reference));
            entries.push(entry);
        })
    }

    /// Removes a tag; true when it existed.
    pub fn untag(&self, reference: &str) -> Result<bool, StoreError> {
        self.update_index(|entries| {
            let before = entries.len();
            entries.retain(|e| e.reference() != Some(reference));
            before != entries.len()
        })
    }

    /// The directory for build cache records of the current version.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache").join(format!("v{CACHE_VERSION}"))
    }

    fn compressed_record(&self, diff_id: &str, media_type: &str) -> Result<PathBuf, StoreError> {
        let hex = digest_hex(diff_id)?;
        let kind: String = media_type
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Ok(self.cache_dir().join("compressed").join(hex).join(kind))
    }

    /// Remembers that the uncompressed layer `diff_id` is also in the store compressed as
    /// `digest` (`size` bytes, `media_type`), so that a push or an export never compresses
    /// the same layer twice.
    pub fn remember_compressed(
        &self,
        diff_id: &str,
        media_type: &str,
        digest: &str,
        size: u64,
    ) -> Result<(), StoreError> {
        digest_hex(digest)?;
        let path = self.compressed_record(diff_id, media_type)?;
        let rel = path.strip_prefix(&self.root).unwrap_or(&path).to_path_buf();
        let body = serde_json::json!({"digest": digest, "size": size, "mediaType": media_type});
        self.write_record(&rel, body.to_string().as_bytes())
    }

    /// The compressed form of the uncompressed layer `diff_id` in `media_type`, if it was
    /// made before and its blob is still in the store.
    pub fn compressed(
        &self,
        diff_id: &str,
        media_type: &str,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let path = self.compressed_record(diff_id, media_type)?;
        let Ok(bytes) = fs::read(&path) else {
            return Ok(None);
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Ok(None);
        };
        let (Some(d), Some(size)) = (v["digest"].as_str(), v["size"].as_u64()) else {
            return Ok(None);
        };
        Ok(match self.blob_size(d)? {
            Some(s) if s == size => Some((d.to_string(), size)),
            _ => None,
        })
    }

    /// Writes a small file under the store root atomically (for other parts' records).
    pub fn write_record(&self, relative: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.root.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
        }
        fsutil::write_atomic(&path, bytes)
    }

    /// Writes a small cache file under the store root atomically but without fsync (readers
    /// see all of it or none; a crash may lose it): for records that are made again when
    /// missing, where an fsync each would put the disk's latency into every use.
    pub fn write_cache_record(&self, relative: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.root.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
        }
        fsutil::write_replace(&path, bytes)
    }

    /// Removes every blob that no tag reaches (through indexes, manifests, configs and layers)
    /// and that no cache record names, every partial file in `ingest/` no writer holds, and
    /// what killed processes left in `tmp/` and `unpacked/`. `extra_roots` are digests to keep
    /// as well (cache records of other parts). Takes the store to itself first: when another
    /// wcbuild has it open, waits until it is done (see [`Store::prune_waiting`]).
    pub fn prune(self, extra_roots: &[String]) -> Result<PruneReport, StoreError> {
        self.prune_waiting(extra_roots, || {})
    }

    /// [`Store::prune`], calling `waiting` when another wcbuild holds the store and prune
    /// must wait for it.
    pub fn prune_waiting(
        self,
        extra_roots: &[String],
        waiting: impl FnOnce(),
    ) -> Result<PruneReport, StoreError> {
        let store = self.into_exclusive(waiting)?;
        store.prune_locked(extra_roots)
    }

    fn prune_locked(&self, extra_roots: &[String]) -> Result<PruneReport, StoreError> {
        // Unpacked layers are derived from blobs (RUN makes them again); no build runs now.
        self.remove_unpacked()?;
        let mut keep: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut todo: Vec<String> = self.entries()?.into_iter().map(|e| e.digest).collect();
        todo.extend(extra_roots.iter().cloned());
        while let Some(d) = todo.pop() {
            if !keep.insert(d.clone()) {
                continue;
            }
            // Follow manifests and indexes; other blobs are leaves.
            let Ok(Some(size)) = self.blob_size(&d) else {
                continue;
            };
            if size > MAX_METADATA_BYTES {
                continue;
            }
            let Ok(bytes) = self.read_blob(&d) else {
                continue;
            };
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                index::children(&v, &mut todo);
            }
        }
        let mut report = PruneReport::default();
        let dir = self.root.join("blobs/sha256");
        for e in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
            let e = e.map_err(io_err("read directory", &dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let digest = format!("sha256:{name}");
            if keep.contains(&digest) {
                continue;
            }
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(e.path()).map_err(io_err("remove", &e.path()))?;
            report.blobs_removed += 1;
            report.bytes_freed += size;
        }
        // Nobody else holds the store: every partial write and scratch directory is a
        // leftover.
        let (ingest, bytes, other) = self.remove_all_leftovers();
        report.ingest_removed += ingest;
        report.bytes_freed += bytes;
        report.temp_removed += other;
        Ok(report)
    }
}

/// What prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Blobs removed from `blobs/`.
    pub blobs_removed: u64,
    /// Stale files removed from `ingest/`.
    pub ingest_removed: u64,
    /// Leftovers of killed processes removed from `tmp/` and `unpacked/`, and temp files.
    pub temp_removed: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
}

/// Says which store is full when a write fails for want of space (ENOSPC, EDQUOT).
fn full(e: io::Error, root: &Path) -> io::Error {
    if matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) {
        io::Error::new(
            e.kind(),
            format!("the store `{}` is full: {e}", root.display()),
        )
    } else {
        e
    }
}

/// A blob being written into `ingest/`, hashed as it goes. Dropping it without
/// [`BlobWriter::commit`] removes the partial file.
#[derive(Debug)]
pub struct BlobWriter<'a> {
    store: &'a Store,
    file: Option<File>,
    path: PathBuf,
    /// `None` when the writer feeding it hashes the same bytes ([`BlobWriter::hashed_by_writer`]).
    hasher: Option<Sha256>,
    size: u64,
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if WRITES_CANCELLED.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io::Error::other(format!(
                "stopped writing `{}`: wcbuild was asked to stop",
                self.path.display()
            )));
        }
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already finished"))?;
        let n = f.write(buf).map_err(|e| full(e, &self.store.root))?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        let before = self.size;
        self.size += n as u64;
        // Start writing back every 8 MiB as it comes, so that the fsync at commit finds
        // little left to do (the disk works while the data still streams in).
        const STEP: u64 = 8 << 20;
        if before / STEP != self.size / STEP {
            fsutil::start_writeback(f, (before / STEP) * STEP, STEP);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl BlobWriter<'_> {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The `sha256:` digest of the bytes written so far (the blob's digest once all are in);
    /// empty for a blob its writer hashes.
    pub fn digest(&self) -> String {
        self.hasher
            .as_ref()
            .map(|h| format!("sha256:{}", hex(&h.clone().finalize())))
            .unwrap_or_default()
    }

    /// For a writer that hashes, in the same pass, exactly the bytes it writes here (a
    /// `LayerWriter`, whose digest comes from the bytes it hands on): the store does not hash
    /// them a second time, and [`BlobWriter::commit`] must be given that digest, which it
    /// then takes as the blob's. Called before anything is written.
    pub fn hashed_by_writer(&mut self) {
        debug_assert_eq!(self.size, 0, "called before anything is written");
        self.hasher = None;
    }

    /// Finishes the blob: fsync, verify against `expected` (and `expected_size`) when given,
    /// rename into `blobs/`. Returns the digest. On mismatch the partial file is removed.
    pub fn commit(
        mut self,
        expected: Option<&str>,
        expected_size: Option<u64>,
    ) -> Result<String, StoreError> {
        let file = self.file.take().expect("commit is called once");
        let digest = match (self.hasher.take(), expected) {
            (Some(h), _) => format!("sha256:{}", hex(&h.finalize())),
            (None, Some(e)) => {
                digest_hex(e)?;
                e.to_string()
            }
            (None, None) => {
                return Err(StoreError::InvalidDigest(
                    "a blob hashed by its writer is committed without that digest".into(),
                ));
            }
        };
        if let Some(e) = expected {
            digest_hex(e)?;
            if e != digest {
                return Err(StoreError::DigestMismatch {
                    expected: e.to_string(),
                    actual: digest,
                    size: self.size,
                });
            }
        }
        if let Some(s) = expected_size
            && s != self.size
        {
            return Err(StoreError::SizeMismatch {
                digest,
                expected: s,
                actual: self.size,
            });
        }
        file.sync_all()
            .map_err(|e| full(e, &self.store.root))
            .map_err(io_err("fsync", &self.path))?;
        drop(file);
        let target = self.store.blob_path(&digest)?;
        if target.exists() {
            // Already stored (same digest, so same bytes).
            let _ = fs::remove_file(&self.path);
        } else {
            fsutil::rename_over(&self.path, &target)
                .map_err(io_err("rename into blobs", &target))?;
            fsutil::sync_dir(target.parent().unwrap_or(&self.store.root));
        }
        self.path = PathBuf::new();
        Ok(digest)
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            self.file.take();
            let _ = fs::remove_file(&self.path);
        }
    }
}
