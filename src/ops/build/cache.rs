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
    let mut h = KeyHasher::new();
    for p in parts {
        h.part(p);
    }
    h.finish()
}

/// [`cache_key`] fed one part at a time (the same digest for the same parts), so a step with
/// many files never holds their texts at once.
pub(super) struct KeyHasher(sha2::Sha256);

impl KeyHasher {
    pub(super) fn new() -> KeyHasher {
        use sha2::Digest as _;
        KeyHasher(sha2::Sha256::new())
    }

    pub(super) fn part(&mut self, p: &str) {
        use sha2::Digest as _;
        self.0.update((p.len() as u64).to_le_bytes());
        self.0.update(p.as_bytes());
    }

    pub(super) fn finish(self) -> String {
        use sha2::Digest as _;
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The stat cache's format marker; a file with another one is ignored (and rewritten).
const STAT_MAGIC: &[u8; 16] = b"wcbuild-stat-v2\n";

/// What the stat cache knows of one context file: it had this size, mtime and inode when its
/// content had this sha256. Keyed by a hash of its path, so 100,000 files take a few MiB.
#[derive(Clone, Copy, PartialEq, Eq)]
struct StatEntry {
    size: u64,
    mtime_ns: i64,
    ino: u64,
    sha256: [u8; 32],
}

/// The stat-cache key of a path.
fn path_key(path: &Path) -> [u8; 16] {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(path.as_os_str().as_encoded_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

/// A file's size, mtime (ns) and inode, as the stat cache compares them.
pub(super) fn stat_of(meta: &fs::Metadata) -> (u64, i64, u64) {
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    #[cfg(unix)]
    let ino = {
        use std::os::unix::fs::MetadataExt;
        meta.ino()
    };
    #[cfg(not(unix))]
    let ino = 0;
    (meta.len(), mtime_ns, ino)
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_stat(path: &Path) -> std::collections::HashMap<[u8; 16], StatEntry> {
    let mut map = std::collections::HashMap::new();
    let Ok(bytes) = fs::read(path) else {
        return map;
    };
    let Some(rest) = bytes.strip_prefix(STAT_MAGIC.as_slice()) else {
        return map;
    };
    const REC: usize = 16 + 8 + 8 + 8 + 32;
    map.reserve(rest.len() / REC);
    for r in rest.chunks_exact(REC) {
        let u = |a: usize| u64::from_le_bytes(r[a..a + 8].try_into().expect("8 bytes"));
        let mut k = [0u8; 16];
        k.copy_from_slice(&r[..16]);
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&r[40..72]);
        map.insert(
            k,
            StatEntry {
                size: u(16),
                mtime_ns: u(24) as i64,
                ino: u(32),
                sha256,
            },
        );
    }
    map
}

pub(super) struct BuildCache {
    enabled: bool,
    /// Records imported from registries (`--cache-from`).
    pub(super) remote: Option<crate::ops::cache::Imported>,
    /// Records this build used or made.
    pub(super) used: BTreeMap<String, StepRecord>,
    stat_path: Option<PathBuf>,
    stat: std::collections::HashMap<[u8; 16], StatEntry>,
    stat_dirty: bool,
}

impl BuildCache {
    pub(super) fn open(store: &Store, context: &Path, enabled: bool) -> BuildCache {
        let dir = store.cache_dir();
        let ctx = fs::canonicalize(context).unwrap_or_else(|_| context.to_path_buf());
        let stat_path = dir
            .join("stat")
            .join(cache_key(&[&ctx.to_string_lossy()]) + ".bin");
        let stat = read_stat(&stat_path);
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

    /// sha256 of a file's content from the stat cache, when its size, mtime and inode (from
    /// `meta`, taken when the file was collected) match what was seen when it was hashed;
    /// `None` when the content must be read.
    pub(super) fn known_hash(&self, path: &Path, meta: (u64, i64, u64)) -> Option<String> {
        let e = self.stat.get(&path_key(path))?;
        ((e.size, e.mtime_ns, e.ino) == meta).then(|| hex(&e.sha256))
    }

    /// Remembers that the file at `path`, as `meta` describes it, has this content hash.
    pub(super) fn remember_hash(&mut self, path: &Path, meta: (u64, i64, u64), sha256: [u8; 32]) {
        let e = StatEntry {
            size: meta.0,
            mtime_ns: meta.1,
            ino: meta.2,
            sha256,
        };
        if self.stat.insert(path_key(path), e) != Some(e) {
            self.stat_dirty = true;
        }
    }

    /// sha256 of a file's content, from the stat cache when size, mtime and inode match, else
    /// read (and remembered).
    pub(super) fn file_hash(&mut self, path: &Path) -> std::io::Result<String> {
        let meta = stat_of(&fs::metadata(path)?);
        if let Some(h) = self.known_hash(path, meta) {
            return Ok(h);
        }
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        let mut f = fs::File::open(path)?;
        std::io::copy(&mut f, &mut h)?;
        let sha: [u8; 32] = h.finalize().into();
        self.remember_hash(path, meta, sha);
        Ok(hex(&sha))
    }

    pub(super) fn save(&mut self, store: &Store) {
        if let (true, Some(p)) = (self.stat_dirty, &self.stat_path) {
            let rel = p.strip_prefix(store.root()).unwrap_or(p).to_path_buf();
            let mut bytes = Vec::with_capacity(STAT_MAGIC.len() + self.stat.len() * 72);
            bytes.extend_from_slice(STAT_MAGIC);
            for (k, e) in &self.stat {
                bytes.extend_from_slice(k);
                bytes.extend_from_slice(&e.size.to_le_bytes());
                bytes.extend_from_slice(&e.mtime_ns.to_le_bytes());
                bytes.extend_from_slice(&e.ino.to_le_bytes());
                bytes.extend_from_slice(&e.sha256);
            }
            // A cache: made again when lost, so no fsync.
            let _ = store.write_cache_record(&rel, &bytes);
            self.stat_dirty = false;
        }
    }
}
