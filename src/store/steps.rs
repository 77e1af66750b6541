//! Build step records: a step's cache key → the layer it made (`cache/v1/steps/<key>.json`),
//! and private scratch directories (`tmp/`) for root file systems a build assembles.
//!
//! The build decides what a key is made of; the store keeps the records, says which layers
//! they keep alive (so `prune` does not remove them) and drops them on `prune --cache`.

use super::{Store, StoreError, io_err};
use crate::image::Descriptor;
use std::fs;
use std::path::{Path, PathBuf};

/// What one step made.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepRecord {
    /// The layer blob.
    pub layer: Descriptor,
    /// Its diff_id (sha256 of the uncompressed tar).
    pub diff_id: String,
}

/// The sub-directories of the cache that `prune --cache` removes: step records, the context
/// stat caches, and the dedup reports' layer indexes.
const DROPPED_BY_PRUNE_CACHE: [&str; 3] = ["steps", "stat", "dedup-index"];

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Store {
    fn step_path(&self, key: &str) -> PathBuf {
        self.cache_dir().join("steps").join(format!("{key}.json"))
    }

    /// The record of the step with this key, when there is one whose layer is still in the
    /// store with the recorded size.
    pub fn step_record(&self, key: &str) -> Option<StepRecord> {
        if !valid_key(key) {
            return None;
        }
        let bytes = fs::read(self.step_path(key)).ok()?;
        let rec: StepRecord = serde_json::from_slice(&bytes).ok()?;
        (self.blob_size(&rec.layer.digest).ok()?? == rec.layer.size).then_some(rec)
    }

    /// Records what the step with this key made (atomically; without an fsync: a record lost
    /// in a crash is a cache miss, and the layer it names was made durable before).
    pub fn record_step(&self, key: &str, record: &StepRecord) -> Result<(), StoreError> {
        if !valid_key(key) {
            return Err(StoreError::Io {
                op: "record build step",
                path: self.step_path("invalid"),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("`{key}` is not a hex cache key"),
                ),
            });
        }
        let path = self.step_path(key);
        let rel = path
            .strip_prefix(self.root())
            .unwrap_or(&path)
            .to_path_buf();
        let body = serde_json::to_vec(record).unwrap_or_default();
        self.write_cache_record(&rel, &body)
    }

    /// Every layer digest a step record names (kept by `prune` unless the cache is dropped).
    pub fn step_roots(&self) -> Vec<String> {
        self.step_records()
            .into_iter()
            .map(|r| r.layer.digest)
            .collect()
    }

    /// Every step record that parses (whether or not its layer is still in the store).
    pub fn step_records(&self) -> Vec<StepRecord> {
        let dir = self.cache_dir().join("steps");
        let mut out = Vec::new();
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                if let Ok(b) = fs::read(e.path())
                    && let Ok(rec) = serde_json::from_slice::<StepRecord>(&b)
                {
                    out.push(rec);
                }
            }
        }
        out
    }

    /// Remembers the size of the uncompressed tar of layer `diff_id` (what Docker reports as
    /// an image's size), so `images` can say it without reading the layer. Best effort.
    pub fn remember_layer_size(&self, diff_id: &str, tar_size: u64) {
        let Ok(hex) = super::digest_hex(diff_id) else {
            return;
        };
        let rel = PathBuf::from("cache")
            .join(format!("v{}", super::CACHE_VERSION))
            .join("layer-sizes")
            .join(hex);
        if let Err(e) = self.write_cache_record(&rel, tar_size.to_string().as_bytes()) {
            tracing::debug!("layer size of `{diff_id}` not kept: {e}");
        }
    }

    /// The uncompressed size of layer `diff_id`: recorded, or its blob's size when the store
    /// holds it uncompressed.
    pub fn layer_size(&self, diff_id: &str) -> Option<u64> {
        let hex = super::digest_hex(diff_id).ok()?;
        let p = self.cache_dir().join("layer-sizes").join(hex);
        if let Ok(s) = fs::read_to_string(p)
            && let Ok(n) = s.trim().parse()
        {
            return Some(n);
        }
        self.blob_size(diff_id).ok().flatten()
    }

    /// Drops the build cache: step records, context stat caches and dedup layer indexes.
    pub fn drop_build_cache(&self) -> Result<(), StoreError> {
        for sub in DROPPED_BY_PRUNE_CACHE {
            let p = self.cache_dir().join(sub);
            if p.exists() {
                fs::remove_dir_all(&p).map_err(io_err("remove", &p))?;
            }
        }
        Ok(())
    }

    /// A new private scratch directory under `tmp/` (mode 0700, `tmp/` itself 0700), removed
    /// when the returned guard drops. Root file systems a build assembles live here, never
    /// beside the user's files in `$TMPDIR`.
    pub fn scratch_dir(&self, purpose: &str) -> Result<ScratchDir, StoreError> {
        let tmp = self.root().join("tmp");
        create_private_dir(&tmp, true)?;
        loop {
            let n = SCRATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = tmp.join(format!("{purpose}-{}-{n}-{nanos:x}", std::process::id()));
            match create_private_dir(&path, false) {
                Ok(()) => {
                    // Held while the directory is in use, so that no cleaner (another
                    // process, in another pid namespace perhaps) takes it for a leftover.
                    let lock = fs::File::open(&path).ok().filter(|f| f.try_lock().is_ok());
                    return Ok(ScratchDir { path, _lock: lock });
                }
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

static SCRATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Creates a directory with mode 0700 (`exist_ok`: an existing one is made 0700).
fn create_private_dir(path: &Path, exist_ok: bool) -> Result<(), StoreError> {
    #[cfg(unix)]
    let b = {
        use std::os::unix::fs::DirBuilderExt;
        let mut b = fs::DirBuilder::new();
        b.mode(0o700);
        b
    };
    #[cfg(not(unix))]
    let b = fs::DirBuilder::new();
    match b.create(path) {
        Ok(()) => Ok(()),
        Err(e) if exist_ok && e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let meta = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
                if !meta.is_dir() {
                    return Err(io_err("create directory", path)(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "exists and is not a directory",
                    )));
                }
                fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                    .map_err(io_err("chmod", path))?;
            }
            Ok(())
        }
        Err(e) => Err(io_err("create directory", path)(e)),
    }
}

/// A private scratch directory, removed (with everything in it) when dropped.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    /// A lock on the directory itself (where directories can be opened and locked).
    _lock: Option<fs::File>,
}

impl ScratchDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
