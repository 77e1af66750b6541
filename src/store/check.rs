//! `wcbuild check`: verifies everything the store holds and, with repair, removes what cannot
//! be trusted. Also the cleaning every open does of what killed processes left behind.
//!
//! What is checked, under the store's exclusive lock (so no other wcbuild writes meanwhile):
//! the layout files; every blob in `blobs/sha256/`, hashed again (streaming, on several
//! threads) and compared with its name; every `index.json` entry and everything it reaches
//! (indexes, manifests, configs, layers: present, of the size their descriptor says, and
//! parsing); every cache record (step records, compressed forms, mount locations, stat
//! caches, dedup and path indexes) parsing and naming blobs that verify; and leftovers of
//! killed processes: files in `ingest/`, entries of `tmp/`, staging directories of
//! `unpacked/`, temp files of atomic writes. Repair never removes a blob that verifies: it
//! removes blobs whose bytes do not match their name, tags whose images are broken, records
//! that do not parse or name a missing blob, and leftovers.

use super::{MAX_METADATA_BYTES, STORE_MARKER, Store, StoreError, digest_hex, index, io_err};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What kind of problem a [`Defect`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefectKind {
    /// `oci-layout`, the marker or `index.json` is missing or does not parse.
    Layout,
    /// A blob whose bytes do not hash to its name.
    CorruptBlob,
    /// Something in `blobs/sha256/` that is not a blob (a bad name, a directory, a link).
    StrayBlob,
    /// A tag that is not a valid descriptor, or whose image is broken.
    BrokenTag,
    /// A blob a descriptor names is not in the store.
    MissingBlob,
    /// A blob is not of the size its descriptor says.
    SizeMismatch,
    /// A manifest, index or config that does not parse or does not agree with itself.
    BadDocument,
    /// A cache record that does not parse or names a blob the store does not have.
    BadRecord,
    /// A partial write in `ingest/` no writer holds.
    StaleIngest,
    /// A leftover of a killed process: a `tmp/` entry, a staging directory, a temp file.
    StaleTemp,
    /// An entry of `unpacked/` that is not a layer unpacked whole.
    BadUnpacked,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Defect {
    /// What kind of problem.
    pub kind: DefectKind,
    /// The file or directory concerned, relative to the store root.
    pub path: String,
    /// What is wrong, naming the digest or reference concerned.
    pub message: String,
    /// True when repair removed it.
    pub repaired: bool,
}

/// How to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Remove what cannot be trusted.
    pub repair: bool,
    /// Threads hashing blobs (at least 1).
    pub jobs: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            repair: false,
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    /// Blobs hashed again.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// `index.json` entries.
    pub tags: u64,
    /// Cache records read.
    pub records: u64,
    /// Every problem, in the order found.
    pub defects: Vec<Defect>,
}

impl CheckReport {
    /// True when nothing is wrong, or everything wrong was repaired.
    pub fn sound(&self) -> bool {
        self.defects.iter().all(|d| d.repaired)
    }
}

/// How a blob verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobState {
    Good(u64),
    Corrupt,
}

struct Checker<'a> {
    store: &'a Store,
    repair: bool,
    report: CheckReport,
    blobs: HashMap<String, BlobState>,
    /// Documents already walked: digest → the first problem below it, if any.
    walked: HashMap<String, Option<String>>,
}

/// A path relative to the store root, `/`-separated on every host (reports read the same).
fn rel(store: &Store, path: &Path) -> String {
    path.strip_prefix(store.root())
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Removes a file, or a directory with everything in it (unmounting what is mounted below it
/// first, so nothing is removed through a mount).
pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    unmount_below(path);
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            // Directories a layer left without write permission: open them up and try again.
            make_writable(path);
            fs::remove_dir_all(path)
        }
    }
}

fn make_writable(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    make_writable(&e.path());
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Detaches every mount at or below `dir` (deepest first), as a killed build may leave its
/// overlay or tmpfs mounts behind.
fn unmount_below(dir: &Path) {
    #[cfg(target_os = "linux")]
    {
        let Ok(canon) = fs::canonicalize(dir) else {
            return;
        };
        let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let mut points: Vec<PathBuf> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(unescape_mountinfo)
            .map(PathBuf::from)
            .filter(|p| p.starts_with(&canon))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in points {
            use std::os::unix::ffi::OsStrExt;
            let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
                continue;
            };
            // SAFETY: a plain syscall with a NUL-terminated path we own.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = dir;
}

#[cfg(target_os = "linux")]
fn unescape_mountinfo(s: &str) -> String {
    // mountinfo writes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(((b[i + 1] - b'0') << 6) | ((b[i + 2] - b'0') << 3) | (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The process id in the name of a file or directory a wcbuild process made for itself:
/// `<purpose>-<pid>-…` (`tmp/`, `ingest/`, `.tmp-<pid>-…` temp files) or
/// `.<name>.wcbuild-extract-<pid>-<n>` (staging directories).
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    let rest = match name.find("wcbuild-extract-") {
        Some(i) => &name[i + "wcbuild-extract-".len()..],
        None => name.split_once('-')?.1,
    };
    // The purpose may hold dashes itself: the pid is the first all-digit part.
    rest.split('-')
        .find(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()
}

/// True when a process with this id exists (on this machine's pid namespace).
pub(crate) fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        let Ok(p) = libc::pid_t::try_from(pid) else {
            return false;
        };
        if p <= 0 {
            return false;
        }
        // SAFETY: signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(p, 0) };
        r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        // No cheap check: treat it as alive, so nothing of a running process is removed.
        true
    }
}

/// A blob's sha256 (hex) and size, or why it could not be read.
type HashResult = io::Result<(String, u64)>;

fn hash_file(path: &Path) -> HashResult {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, n))
}

impl Store {
    /// Checks the store (see the module doc); with `opts.repair`, removes what cannot be
    /// trusted. Waits for the store's exclusive lock (calling `waiting` first when another
    /// wcbuild holds it), so it never disturbs a running build.
    pub fn check(
        self,
        opts: &CheckOptions,
        waiting: impl FnOnce(),
    ) -> Result<CheckReport, StoreError> {
        self.check_holding(opts, waiting).map(|(report, _)| report)
    }

    /// [`Store::check`], returning the store still held alone, for callers that check more
    /// (the unpacked layers) before anyone else may write.
    pub fn check_holding(
        self,
        opts: &CheckOptions,
        waiting: impl FnOnce(),
    ) -> Result<(CheckReport, Store), StoreError> {
        let store = self.into_exclusive(waiting)?;
        let mut c = Checker {
            store: &store,
            repair: opts.repair,
            report: CheckReport::default(),
            blobs: HashMap::new(),
            walked: HashMap::new(),
        };
        c.layout()?;
        c.verify_blobs(opts.jobs.max(1))?;
        c.tags()?;
        c.records();
        c.leftovers();
        let report = c.report;
        Ok((report, store))
    }

    /// Removes what processes that no longer run left behind: `tmp/` entries, `ingest/`
    /// files (that no writer holds), `unpacked/` staging directories and temp files of
    /// atomic writes at the root, when the process id in their name is not alive. Cheap (a
    /// few directory reads); every open does it. Returns how many were removed.
    pub fn clean_dead_leftovers(&self) -> u64 {
        let mut removed = 0;
        let dirs = [
            (self.root.join("tmp"), None),
            (self.root.join("ingest"), None),
            (self.root.join("unpacked"), Some("wcbuild-extract-")),
            (self.root.clone(), Some(".tmp-")),
        ];
        for (dir, only) in dirs {
            let Ok(rd) = fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if only.is_some_and(|o| !name.contains(o)) {
                    continue;
                }
                let Some(pid) = owner_pid(&name) else {
                    continue;
                };
                if pid_alive(pid) {
                    continue;
                }
                let path = e.path();
                // An ingest file is held (locked) by its writer, a scratch directory by the
                // process using it: a process of another pid namespace looks dead from here.
                if let Ok(f) = fs::File::open(&path)
                    && f.try_lock().is_err()
                {
                    continue;
                }
                if remove_any(&path).is_ok() {
                    tracing::debug!("removed `{}`, left by process {pid}", path.display());
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Removes every leftover (`ingest/`, `tmp/`, staging directories, temp files), whoever
    /// left it: only for a caller holding the exclusive lock (prune). Returns the count and
    /// bytes of ingest files, and the count of other leftovers.
    pub(crate) fn remove_all_leftovers(&self) -> (u64, u64, u64) {
        let (mut ingest, mut bytes, mut other) = (0, 0, 0);
        for (path, kind) in leftovers(&self.root) {
            let len = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
            if kind == DefectKind::StaleIngest {
                if let Ok(f) = fs::File::open(&path)
                    && f.try_lock().is_err()
                {
                    continue;
                }
                if fs::remove_file(&path).is_ok() {
                    ingest += 1;
                    bytes += len;
                }
            } else if remove_any(&path).is_ok() {
                other += 1;
            }
        }
        (ingest, bytes, other)
    }
}

/// Every leftover in the store: ingest files, tmp entries, staging directories of
/// `unpacked/`, temp files of atomic writes (at the root and under `cache/`).
pub(crate) fn leftovers(root: &Path) -> Vec<(PathBuf, DefectKind)> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(root.join("ingest")) {
        for e in rd.flatten() {
            out.push((e.path(), DefectKind::StaleIngest));
        }
    }
    if let Ok(rd) = fs::read_dir(root.join("tmp")) {
        for e in rd.flatten() {
            out.push((e.path(), DefectKind::StaleTemp));
        }
    }
    if let Ok(rd) = fs::read_dir(root.join("unpacked")) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().contains("wcbuild-extract-") {
                out.push((e.path(), DefectKind::StaleTemp));
            }
        }
    }
    fn temp_files(dir: &Path, out: &mut Vec<(PathBuf, DefectKind)>, depth: u32) {
        let Ok(rd) = fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if name.starts_with(".tmp-") && !is_dir {
                out.push((e.path(), DefectKind::StaleTemp));
            } else if is_dir && depth > 0 && name != "mounts" {
                temp_files(&e.path(), out, depth - 1);
            }
        }
    }
    temp_files(root, &mut out, 0);
    temp_files(&root.join("cache"), &mut out, 4);
    out
}

impl Checker<'_> {
    fn defect(&mut self, kind: DefectKind, path: &Path, message: String, repaired: bool) {
        let path = rel(self.store, path);
        self.report.defects.push(Defect {
            kind,
            path,
            message,
            repaired,
        });
    }

    /// Removes `path` when repairing; records the defect either way.
    fn remove(&mut self, kind: DefectKind, path: &Path, message: String) {
        let repaired = self.repair && remove_any(path).is_ok();
        self.defect(kind, path, message, repaired);
    }

    fn layout(&mut self) -> Result<(), StoreError> {
        let root = self.store.root().to_path_buf();
        let layout = root.join("oci-layout");
        let ok = fs::read(&layout)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["imageLayoutVersion"].is_string());
        if !ok {
            let repaired = self.repair
                && super::fsutil::write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)
                    .is_ok();
            self.defect(
                DefectKind::Layout,
                &layout,
                "`oci-layout` is missing or not an OCI layout file".into(),
                repaired,
            );
        }
        let marker = root.join(STORE_MARKER);
        if !marker.is_file() {
            let repaired = self.repair
                && super::fsutil::write_atomic(
                    &marker,
                    b"This directory is a wcbuild image store (OCI image layout).\n",
                )
                .is_ok();
            self.defect(
                DefectKind::Layout,
                &marker,
                format!("the marker `{STORE_MARKER}` is missing"),
                repaired,
            );
        }
        Ok(())
    }

    fn verify_blobs(&mut self, jobs: usize) -> Result<(), StoreError> {
        let dir = self.store.root().join("blobs/sha256");
        let mut todo = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
            let e = e.map_err(io_err("read directory", &dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let ty = e.file_type().map_err(io_err("stat", &e.path()))?;
            let digest = format!("sha256:{name}");
            if digest_hex(&digest).is_err() || !ty.is_file() {
                let what = if ty.is_symlink() {
                    "a symbolic link"
                } else if ty.is_dir() {
                    "a directory"
                } else if ty.is_file() {
                    "a file whose name is not a sha256 digest"
                } else {
                    "a special file"
                };
                self.remove(
                    DefectKind::StrayBlob,
                    &e.path(),
                    format!("`blobs/sha256/{name}` is {what}, not a blob"),
                );
                continue;
            }
            todo.push((name, e.path()));
        }
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<(usize, HashResult)>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..jobs.min(todo.len().max(1)) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((_, path)) = todo.get(i) else { break };
                        let r = hash_file(path);
                        results
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((i, r));
                    }
                });
            }
        });
        let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        results.sort_by_key(|(i, _)| *i);
        for (i, r) in results {
            let (name, path) = &todo[i];
            let digest = format!("sha256:{name}");
            match r {
                Ok((hex, size)) if hex == *name => {
                    self.report.blobs += 1;
                    self.report.bytes += size;
                    self.blobs.insert(digest, BlobState::Good(size));
                }
                Ok((hex, size)) => {
                    self.blobs.insert(digest.clone(), BlobState::Corrupt);
                    self.remove(
                        DefectKind::CorruptBlob,
                        path,
                        format!(
                            "blob `{digest}` is corrupt: its {size} bytes hash to `sha256:{hex}`"
                        ),
                    );
                }
                Err(e) => {
                    // Unreadable: not trusted, but not removed either (it may be a
                    // permission problem, not bad bytes).
                    self.blobs.insert(digest.clone(), BlobState::Corrupt);
                    self.defect(
                        DefectKind::CorruptBlob,
                        path,
                        format!("blob `{digest}` cannot be read: {e}"),
                        false,
                    );
                }
            }
        }
        Ok(())
    }

    /// The size of a blob that verified, or why it cannot be used.
    fn good(&self, digest: &str) -> Result<u64, (DefectKind, String)> {
        if digest_hex(digest).is_err() {
            return Err((
                DefectKind::BadDocument,
                format!("`{digest}` is not a sha256 digest"),
            ));
        }
        match self.blobs.get(digest) {
            Some(BlobState::Good(n)) => Ok(*n),
            Some(BlobState::Corrupt) => Err((
                DefectKind::CorruptBlob,
                format!("blob `{digest}` is corrupt"),
            )),
            None => Err((
                DefectKind::MissingBlob,
                format!("blob `{digest}` is not in the store"),
            )),
        }
    }

    fn document(&self, digest: &str, size: u64) -> Result<serde_json::Value, String> {
        if size > MAX_METADATA_BYTES {
            return Err(format!(
                "`{digest}` is {size} bytes, more than a manifest, index or config may be"
            ));
        }
        let bytes = self.store.read_blob(digest).map_err(|e| e.to_string())?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("`{digest}` is not JSON: {e}"))?;
        if !v.is_object() {
            return Err(format!("`{digest}` is not a JSON object"));
        }
        Ok(v)
    }

    /// Walks a descriptor: the blob verified, of the size it says, and for manifests and
    /// indexes everything they reach. Returns the first problem (and records it once).
    fn walk(
        &mut self,
        media_type: &str,
        digest: &str,
        size: u64,
        path: &[String],
    ) -> Option<String> {
        let at = || path.join(" → ");
        let found = match self.good(digest) {
            Ok(n) => n,
            Err((kind, message)) => {
                let m = format!("{}: {message}", at());
                self.defect(
                    kind,
                    &self.store.root().join("index.json"),
                    m.clone(),
                    false,
                );
                return Some(m);
            }
        };
        if found != size {
            let m = format!(
                "{}: `{digest}` is {found} bytes, its descriptor says {size}",
                at()
            );
            self.defect(
                DefectKind::SizeMismatch,
                &self.store.root().join("index.json"),
                m.clone(),
                false,
            );
            return Some(m);
        }
        let manifest = crate::image::media::is_manifest(media_type);
        let index = crate::image::media::is_index(media_type);
        if !manifest && !index {
            return None;
        }
        if let Some(done) = self.walked.get(digest) {
            return done.clone();
        }
        let blob = self.store.blob_path(digest).unwrap_or_default();
        let problem = match self.document(digest, found) {
            Err(m) => {
                let m = format!("{}: {m}", at());
                self.defect(DefectKind::BadDocument, &blob, m.clone(), false);
                Some(m)
            }
            Ok(doc) if index => self.walk_index(&doc, digest, path),
            Ok(doc) => self.walk_manifest(&doc, digest, path),
        };
        self.walked.insert(digest.to_string(), problem.clone());
        problem
    }

    fn descriptor(v: &serde_json::Value) -> Option<(String, String, u64, bool)> {
        let digest = v.get("digest")?.as_str()?.to_string();
        let size = v.get("size")?.as_u64()?;
        let media = v
            .get("mediaType")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_string();
        let urls = v
            .get("urls")
            .and_then(|u| u.as_array())
            .is_some_and(|u| !u.is_empty());
        Some((media, digest, size, urls))
    }

    fn walk_index(
        &mut self,
        doc: &serde_json::Value,
        digest: &str,
        path: &[String],
    ) -> Option<String> {
        let blob = self.store.blob_path(digest).unwrap_or_default();
        let Some(list) = doc.get("manifests").and_then(|m| m.as_array()) else {
            let m = format!(
                "{}: index `{digest}` has no `manifests` list",
                path.join(" → ")
            );
            self.defect(DefectKind::BadDocument, &blob, m.clone(), false);
            return Some(m);
        };
        let mut first = None;
        for (i, entry) in list.iter().enumerate() {
            let Some((media, child, size, _)) = Self::descriptor(entry) else {
                let m = format!(
                    "{}: entry {i} of index `{digest}` is not a descriptor",
                    path.join(" → ")
                );
                self.defect(DefectKind::BadDocument, &blob, m.clone(), false);
                first.get_or_insert(m);
                continue;
            };
            // An index keeps the entries of platforms that were not pulled: a child that is
            // absent is not a defect; one that is present must be sound.
            if !self.blobs.contains_key(&child) && digest_hex(&child).is_ok() {
                continue;
            }
            let mut p = path.to_vec();
            p.push(format!("manifest `{child}`"));
            if let Some(m) = self.walk(&media, &child, size, &p) {
                first.get_or_insert(m);
            }
        }
        first
    }

    fn walk_manifest(
        &mut self,
        doc: &serde_json::Value,
        digest: &str,
        path: &[String],
    ) -> Option<String> {
        let blob = self.store.blob_path(digest).unwrap_or_default();
        let mut first = None;
        let Some((cmedia, config, csize, _)) = doc.get("config").and_then(Self::descriptor) else {
            let m = format!(
                "{}: manifest `{digest}` has no config descriptor",
                path.join(" → ")
            );
            self.defect(DefectKind::BadDocument, &blob, m.clone(), false);
            return Some(m);
        };
        let mut p = path.to_vec();
        p.push(format!("config `{config}`"));
        if let Some(m) = self.walk(&cmedia, &config, csize, &p) {
            first.get_or_insert(m);
        }
        let layers = doc
            .get("layers")
            .and_then(|l| l.as_array())
            .cloned()
            .unwrap_or_default();
        for (i, layer) in layers.iter().enumerate() {
            let Some((media, d, size, urls)) = Self::descriptor(layer) else {
                let m = format!(
                    "{}: layer {i} of manifest `{digest}` is not a descriptor",
                    path.join(" → ")
                );
                self.defect(DefectKind::BadDocument, &blob, m.clone(), false);
                first.get_or_insert(m);
                continue;
            };
            // Foreign layers are fetched from their URLs when needed; the store may lack them.
            if (crate::image::media::is_foreign(&media) || urls) && !self.blobs.contains_key(&d) {
                continue;
            }
            let mut p = path.to_vec();
            p.push(format!("layer `{d}`"));
            if let Some(m) = self.walk(&media, &d, size, &p) {
                first.get_or_insert(m);
            }
        }
        // An image config lists one diff_id per layer.
        if crate::image::media::is_config(&cmedia)
            && let Ok(n) = self.good(&config)
            && n == csize
        {
            match self.document(&config, n) {
                Ok(cfg) => {
                    let diff_ids = cfg
                        .get("rootfs")
                        .and_then(|r| r.get("diff_ids"))
                        .and_then(|d| d.as_array());
                    let count = diff_ids.map_or(0, |d| d.len());
                    let valid = diff_ids.is_some_and(|d| {
                        d.iter()
                            .all(|x| x.as_str().is_some_and(|s| digest_hex(s).is_ok()))
                    });
                    if count != layers.len() || !valid {
                        let m = format!(
                            "{}: config `{config}` lists {count} valid diff_id(s) for {} layer(s)",
                            path.join(" → "),
                            layers.len()
                        );
                        self.defect(
                            DefectKind::BadDocument,
                            &self.store.blob_path(&config).unwrap_or_default(),
                            m.clone(),
                            false,
                        );
                        first.get_or_insert(m);
                    }
                }
                Err(m) => {
                    let m = format!("{}: {m}", path.join(" → "));
                    self.defect(
                        DefectKind::BadDocument,
                        &self.store.blob_path(&config).unwrap_or_default(),
                        m.clone(),
                        false,
                    );
                    first.get_or_insert(m);
                }
            }
        }
        first
    }

    fn tags(&mut self) -> Result<(), StoreError> {
        let path = self.store.root().join("index.json");
        let doc = match index::read_document(&path) {
            Ok(d) => d,
            Err(e) => {
                let mut repaired = false;
                if self.repair {
                    // Keep the bytes for a person to look at; start an empty index.
                    let aside = self.store.root().join(format!(
                        "index.json.broken-{}",
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs())
                    ));
                    let _ = fs::copy(&path, &aside);
                    repaired =
                        super::fsutil::write_atomic(&path, index::empty_index().as_bytes()).is_ok();
                }
                self.defect(DefectKind::Layout, &path, e.to_string(), repaired);
                return Ok(());
            }
        };
        let list = doc
            .get("manifests")
            .and_then(|m| m.as_array())
            .cloned()
            .unwrap_or_default();
        let mut broken: HashSet<usize> = HashSet::new();
        let first_walk_defect = self.report.defects.len();
        for (i, raw) in list.iter().enumerate() {
            self.report.tags += 1;
            let entry: index::IndexEntry = match serde_json::from_value(raw.clone()) {
                Ok(e) => e,
                Err(e) => {
                    self.defect(
                        DefectKind::BrokenTag,
                        &path,
                        format!("entry {i} of `index.json` is not a descriptor: {e}"),
                        false,
                    );
                    broken.insert(i);
                    continue;
                }
            };
            let name = entry
                .reference()
                .map_or_else(|| format!("entry {i}"), |r| format!("tag `{r}`"));
            if let Some(problem) = self.walk(
                &entry.media_type,
                &entry.digest,
                entry.size,
                std::slice::from_ref(&name),
            ) {
                self.defect(
                    DefectKind::BrokenTag,
                    &path,
                    format!("{name} is broken ({problem})"),
                    false,
                );
                broken.insert(i);
            }
        }
        if self.repair && !broken.is_empty() {
            let bad: HashSet<String> = list
                .iter()
                .enumerate()
                .filter(|(i, _)| broken.contains(i))
                .map(|(_, v)| v.to_string())
                .collect();
            let doc_path = path.clone();
            let result = (|| -> Result<(), StoreError> {
                let _guard = self.store.index_lock()?;
                let mut doc = index::read_document(&doc_path)?;
                if let Some(m) = doc.get_mut("manifests").and_then(|m| m.as_array_mut()) {
                    m.retain(|v| !bad.contains(&v.to_string()));
                }
                let bytes = serde_json::to_vec(&doc).map_err(|e| StoreError::BadIndex {
                    path: doc_path.clone(),
                    message: e.to_string(),
                })?;
                super::fsutil::write_atomic(&doc_path, &bytes)
            })();
            if result.is_ok() {
                // Every defect found below a tag belongs to a broken tag, now removed: nothing
                // reaches those documents any more.
                for d in &mut self.report.defects[first_walk_defect..] {
                    d.repaired = true;
                }
            }
        }
        Ok(())
    }

    fn blob_ok(&self, digest: &str, size: Option<u64>) -> Result<(), String> {
        match self.good(digest) {
            Ok(n) if size.is_none_or(|s| s == n) => Ok(()),
            Ok(n) => Err(format!(
                "names `{digest}` of {} bytes; the blob is {n}",
                size.unwrap_or(0)
            )),
            Err((_, m)) => Err(format!("names a blob that cannot be used: {m}")),
        }
    }

    fn record<F>(&mut self, dir: &Path, what: &str, mut judge: F)
    where
        F: FnMut(&Self, &str, &[u8]) -> Result<(), String>,
    {
        let Ok(rd) = fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                continue; // leftovers, reported with the others
            }
            let path = e.path();
            self.report.records += 1;
            let verdict = match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => match fs::read(&path) {
                    Ok(bytes) => judge(self, &name, &bytes),
                    Err(e) => Err(format!("cannot be read: {e}")),
                },
                Ok(_) => Err("is not a regular file".into()),
                Err(e) => Err(format!("cannot be read: {e}")),
            };
            if let Err(m) = verdict {
                self.remove(
                    DefectKind::BadRecord,
                    &path,
                    format!("{what} `{}` {m}", rel(self.store, &path)),
                );
            }
        }
    }

    fn records(&mut self) {
        let cache = self.store.cache_dir();
        // Step records: `<key>.json` → a layer that verifies.
        self.record(&cache.join("steps"), "step record", |c, name, bytes| {
            let key = name.strip_suffix(".json").unwrap_or("");
            if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("is not named by a cache key".into());
            }
            let rec: super::StepRecord =
                serde_json::from_slice(bytes).map_err(|e| format!("does not parse: {e}"))?;
            digest_hex(&rec.diff_id).map_err(|e| format!("has a bad diff_id: {e}"))?;
            c.blob_ok(&rec.layer.digest, Some(rec.layer.size))
        });
        // Compressed forms: `compressed/<diff_id hex>/<media type>`.
        let compressed = cache.join("compressed");
        let mut dirs: Vec<_> = fs::read_dir(&compressed)
            .map(|rd| rd.flatten().collect())
            .unwrap_or_default();
        dirs.sort_by_key(|e| e.file_name());
        for d in dirs {
            let name = d.file_name().to_string_lossy().into_owned();
            let path = d.path();
            if digest_hex(&format!("sha256:{name}")).is_err() || !path.is_dir() {
                self.report.records += 1;
                self.remove(
                    DefectKind::BadRecord,
                    &path,
                    format!(
                        "compressed-form record `{}` is not named by a diff_id",
                        rel(self.store, &path)
                    ),
                );
                continue;
            }
            self.record(&path, "compressed-form record", |c, _, bytes| {
                let v: serde_json::Value =
                    serde_json::from_slice(bytes).map_err(|e| format!("does not parse: {e}"))?;
                let (Some(digest), Some(size)) = (v["digest"].as_str(), v["size"].as_u64()) else {
                    return Err("has no digest and size".into());
                };
                c.blob_ok(digest, Some(size))
            });
            if self.repair && fs::read_dir(&path).is_ok_and(|mut r| r.next().is_none()) {
                let _ = fs::remove_dir(&path);
            }
        }
        // Context stat caches (the build's): `<key>.bin`, a format marker then fixed-size
        // records (v2: 72 bytes each: path key, size, mtime, inode, sha256); older `.json`
        // ones are a JSON object. A marker of another version is the build's to ignore.
        self.record(&cache.join("stat"), "stat cache", |_, name, bytes| {
            const V2: &[u8] = b"wcbuild-stat-v2\n";
            if name.ends_with(".json") {
                serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(bytes)
                    .map_err(|e| format!("does not parse: {e}"))?;
                return Ok(());
            }
            if !name.ends_with(".bin") || !bytes.starts_with(b"wcbuild-stat-v") {
                return Err("is not a stat cache".into());
            }
            if let Some(rest) = bytes.strip_prefix(V2)
                && rest.len() % 72 != 0
            {
                return Err(format!(
                    "is cut short ({} bytes of records, not a multiple of 72)",
                    rest.len()
                ));
            }
            Ok(())
        });
        // Dedup layer indexes: named by their diff_id.
        self.record(
            &cache.join("dedup-index"),
            "dedup index",
            |_, name, bytes| {
                let v: serde_json::Value =
                    serde_json::from_slice(bytes).map_err(|e| format!("does not parse: {e}"))?;
                if v["diff_id"].as_str() != Some(&format!("sha256:{name}")) {
                    return Err("is not the index of the layer it is named after".into());
                }
                Ok(())
            },
        );
        // COPY's path records: `<layer hex>.json`.
        self.record(&cache.join("paths"), "path record", |_, name, bytes| {
            let hex = name.strip_suffix(".json").unwrap_or("");
            digest_hex(&format!("sha256:{hex}")).map_err(|_| "is not named by a digest")?;
            let v: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|e| format!("does not parse: {e}"))?;
            if !v["version"].is_u64() || !v["entries"].is_array() {
                return Err("has no version and entries".into());
            }
            Ok(())
        });
        // Where pushed blobs are known to be (mount hints).
        let locations = self.store.root().join("cache/locations");
        self.record(&locations, "location record", |_, name, bytes| {
            digest_hex(&format!("sha256:{name}")).map_err(|_| "is not named by a digest")?;
            let text = std::str::from_utf8(bytes).map_err(|_| "is not text")?;
            if text
                .lines()
                .any(|l| l.trim().is_empty() || !l.contains('/'))
            {
                return Err("holds a line that is not a repository".into());
            }
            Ok(())
        });
        // RUN cache mounts: directories, each with its sharing lock (`<id>.lock`) and, once
        // made ready (mode, owner, seeded from a source), a marker (`<id>.ready`).
        let mounts = cache.join("mounts");
        if let Ok(rd) = fs::read_dir(&mounts) {
            for e in rd.flatten() {
                let path = e.path();
                self.report.records += 1;
                let name = e.file_name().to_string_lossy().into_owned();
                let is_file = fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
                if is_file && name.ends_with(".lock") {
                    continue;
                }
                if is_file
                    && let Some(id) = name.strip_suffix(".ready")
                    && mounts.join(id).is_dir()
                {
                    continue;
                }
                if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                    self.remove(
                        DefectKind::BadRecord,
                        &path,
                        format!(
                            "cache mount `{}` is not a directory",
                            rel(self.store, &path)
                        ),
                    );
                }
            }
        }
    }

    fn leftovers(&mut self) {
        for (path, kind) in leftovers(self.store.root()) {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let who = match owner_pid(&name) {
                Some(pid) if pid_alive(pid) => {
                    format!("process {pid} runs but does not hold the store")
                }
                Some(pid) => format!("process {pid} is gone"),
                None => "no process holds it".into(),
            };
            let what = match kind {
                DefectKind::StaleIngest => "partial write",
                _ if path.starts_with(self.store.root().join("tmp")) => "scratch directory",
                _ if path.is_dir() => "staging directory",
                _ => "temp file",
            };
            self.remove(
                kind,
                &path,
                format!("{what} `{}` left behind ({who})", rel(self.store, &path)),
            );
        }
        // unpacked/<diff_id hex>/: derived data, a directory per layer.
        let unpacked = self.store.root().join("unpacked");
        if let Ok(rd) = fs::read_dir(&unpacked) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.contains("wcbuild-extract-") {
                    continue;
                }
                let path = e.path();
                let is_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
                if digest_hex(&format!("sha256:{name}")).is_err() || !is_dir {
                    self.remove(
                        DefectKind::BadUnpacked,
                        &path,
                        format!(
                            "`{}` is not a layer unpacked by its diff_id",
                            rel(self.store, &path)
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pids_are_read_from_names() {
        assert_eq!(owner_pid("rootfs-1234-0-5f"), Some(1234));
        assert_eq!(owner_pid("blob-77-3-abc"), Some(77));
        assert_eq!(owner_pid(".tmp-42-1-ff"), Some(42));
        assert_eq!(owner_pid("run-bundle-9-1-a"), Some(9));
        assert_eq!(owner_pid(".abc.wcbuild-extract-555-2"), Some(555));
        assert_eq!(owner_pid("nothing"), None);
        assert_eq!(owner_pid("x-y-z"), None);
    }

    #[test]
    fn this_process_is_alive_and_an_unused_pid_is_not() {
        assert!(pid_alive(std::process::id()));
        #[cfg(unix)]
        assert!(!pid_alive(u32::MAX - 1));
    }
}
