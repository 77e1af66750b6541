//! What `RUN` keeps in the store besides blobs: layers unpacked once as overlayfs lower
//! directories (`unpacked/<diff_id hex>/`, derived from blobs and made again when missing) and
//! `RUN --mount=type=cache` directories (`cache/v1/mounts/<sha256 of the id>/`, kept across
//! builds until `prune --cache`).

use super::{Store, StoreError, digest_hex, io_err};
use std::fs::{self, File, OpenOptions};
use std::path::PathBuf;

impl Store {
    /// Where the layer with this diff_id is (or goes) unpacked as an overlayfs lower
    /// directory. The directory appears only complete (the unpacker stages and renames).
    pub fn unpacked_dir(&self, diff_id: &str) -> Result<PathBuf, StoreError> {
        let hex = digest_hex(diff_id)?;
        let dir = self.root().join("unpacked");
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        Ok(dir.join(hex))
    }

    /// The directory of the cache mount `id` (any string), created when missing.
    pub fn cache_mount_dir(&self, id: &str) -> Result<PathBuf, StoreError> {
        let dir = self
            .cache_dir()
            .join("mounts")
            .join(super::sha256_digest(id.as_bytes()).trim_start_matches("sha256:"));
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        Ok(dir)
    }

    /// Takes the lock of cache mount `id` (`sharing=locked`: waits for other holders;
    /// `sharing=private` asks with `wait = false` and gets `None` when it is held). The lock
    /// goes with the returned file.
    pub fn lock_cache_mount(&self, id: &str, wait: bool) -> Result<Option<File>, StoreError> {
        let dir = self.cache_mount_dir(id)?;
        let path = dir.with_extension("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        if wait {
            f.lock().map_err(io_err("lock", &path))?;
            return Ok(Some(f));
        }
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io_err("lock", &path)(e)),
        }
    }

    /// Removes every unpacked layer (they are made again from their blobs when a RUN needs
    /// them). Returns how many.
    pub fn remove_unpacked(&self) -> Result<u64, StoreError> {
        remove_children(&self.root().join("unpacked"))
    }

    /// Removes every cache mount (`prune --cache`). Returns how many.
    pub fn remove_cache_mounts(&self) -> Result<u64, StoreError> {
        remove_children(&self.cache_dir().join("mounts"))
    }
}

fn remove_children(dir: &std::path::Path) -> Result<u64, StoreError> {
    let mut n = 0;
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("read directory", dir)(e)),
    };
    for e in rd.flatten() {
        let p = e.path();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let r = if is_dir {
            make_writable(&p);
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        r.map_err(io_err("remove", &p))?;
        if is_dir {
            n += 1;
        }
    }
    Ok(n)
}

/// Gives every directory under `p` an owner-writable mode, so a tree that holds read-only
/// directories (as images do) can be removed.
fn make_writable(p: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = fs::symlink_metadata(p)
            && m.is_dir()
        {
            if m.permissions().mode() & 0o700 != 0o700 {
                let _ = fs::set_permissions(
                    p,
                    fs::Permissions::from_mode(m.permissions().mode() | 0o700),
                );
            }
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    make_writable(&e.path());
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = p;
}
