//! The local build cache: step keys chained from the previous step's key and the step's
//! inputs, the records of what each key made (kept by the store), and a stat cache of context
//! file hashes so that a rebuild reads only files whose size, mtime or inode changed.

use crate::image::Descriptor;
use crate::store::{StepRecord, Store};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// What goes into every cache key first. Bump it when anything that decides a layer's bytes
/// changes (the layer writer, COPY semantics, the key recipe), so old records stop matching.
pub const CACHE_KEY_VERSION: &str = "wcbuild build cache v2";

/// A sha256 over length-prefixed parts, as hex.
pub fn cache_key(parts: &[&str]) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct StatEntry {
    size: u64,
    mtime_ns: i128,
    ino: u64,
    sha256: String,
}

/// The build cache: step records (key → layer) and a stat cache of context file hashes, so
/// that a rebuild re-hashes only files whose size, mtime or inode changed.
pub(super) struct BuildCache {
    enabled: bool,
    /// Records imported from registries (`--cache-from`).
    pub(super) remote: Option<crate::ops::cache::Imported>,
    /// Records this build used or made.
    pub(super) used: BTreeMap<String, StepRecord>,
    stat_path: Option<PathBuf>,
    stat: BTreeMap<String, StatEntry>,
    stat_dirty: bool,
}

impl BuildCache {
    pub(super) fn open(store: &Store, context: &Path, enabled: bool) -> BuildCache {
        let dir = store.cache_dir();
        let ctx = fs::canonicalize(context).unwrap_or_else(|_| context.to_path_buf());
        let stat_path = dir
            .join("stat")
            .join(cache_key(&[&ctx.to_string_lossy()]) + ".json");
        let stat = fs::read(&stat_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        BuildCache {
            enabled,
            remote: None,
            used: BTreeMap::new(),
            stat_path: Some(stat_path),
            stat,
            stat_dirty: false,
        }
    }

    pub(super) fn lookup(&mut self, store: &Store, key: &str) -> Option<(Descriptor, String)> {
        if !self.enabled {
            return None;
        }
        let found = match store.step_record(key) {
            Some(hit) => hit,
            None => {
                let rec = self.remote.as_ref()?.get(store, key)?;
                self.record(store, key, &rec.layer, &rec.diff_id);
                rec
            }
        };
        self.used.insert(key.to_string(), found.clone());
        Some((found.layer, found.diff_id))
    }

    pub(super) fn record(&mut self, store: &Store, key: &str, layer: &Descriptor, diff_id: &str) {
        let rec = StepRecord {
            layer: layer.clone(),
            diff_id: diff_id.to_string(),
        };
        if let Err(e) = store.record_step(key, &rec) {
            tracing::warn!("could not record build cache entry `{key}`: {e}");
        }
        self.used.insert(key.to_string(), rec);
    }

    /// sha256 of a file's content, from the stat cache when size, mtime and inode match.
    pub(super) fn file_hash(&mut self, path: &Path) -> std::io::Result<String> {
        let meta = fs::metadata(path)?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        #[cfg(unix)]
        let ino = {
            use std::os::unix::fs::MetadataExt;
            meta.ino()
        };
        #[cfg(not(unix))]
        let ino = 0;
        let key = path.to_string_lossy().into_owned();
        if let Some(e) = self.stat.get(&key)
            && e.size == meta.len()
            && e.mtime_ns == mtime_ns
            && e.ino == ino
        {
            return Ok(e.sha256.clone());
        }
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        let mut f = fs::File::open(path)?;
        std::io::copy(&mut f, &mut h)?;
        let sha = h
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        self.stat.insert(
            key,
            StatEntry {
                size: meta.len(),
                mtime_ns,
                ino,
                sha256: sha.clone(),
            },
        );
        self.stat_dirty = true;
        Ok(sha)
    }

    pub(super) fn save(&mut self, store: &Store) {
        if let (true, Some(p)) = (self.stat_dirty, &self.stat_path) {
            let rel = p.strip_prefix(store.root()).unwrap_or(p).to_path_buf();
            if let Ok(bytes) = serde_json::to_vec(&self.stat) {
                let _ = store.write_record(&rel, &bytes);
            }
            self.stat_dirty = false;
        }
    }
}
