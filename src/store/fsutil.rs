//! Small file helpers: atomic writes (temp file, fsync, rename) and uniquely named temp files.

use super::{StoreError, io_err};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates a new file with a unique name in `dir`.
pub(crate) fn temp_file(dir: &Path, prefix: &str) -> Result<(File, PathBuf), StoreError> {
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = dir.join(format!("{prefix}-{}-{n}-{nanos:x}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create", &path)(e)),
        }
    }
}

/// Renames `from` over `to`. On Windows replacing a file fails (access denied, sharing
/// violation) while another process holds it open without delete sharing, as a reader of
/// `index.json` may for the moment of its read; the rename is retried ([`while_shared`]).
pub(crate) fn rename_over(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(windows)]
    return while_shared(|| fs::rename(from, to));
    #[cfg(not(windows))]
    fs::rename(from, to)
}

/// Reads a file that writers replace by renaming: on Windows it is opened with delete sharing
/// (so a writer's rename over it is not refused) and an open refused in the moment of a
/// rename is retried, as [`rename_over`] retries.
pub(crate) fn read_replaced(path: &Path) -> std::io::Result<Vec<u8>> {
    #[cfg(windows)]
    {
        use std::io::Read;
        use std::os::windows::fs::OpenOptionsExt;
        // FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
        const SHARE_ALL: u32 = 7;
        let mut f = while_shared(|| {
            OpenOptions::new()
                .read(true)
                .share_mode(SHARE_ALL)
                .open(path)
        })?;
        let mut out = Vec::new();
        f.read_to_end(&mut out)?;
        Ok(out)
    }
    #[cfg(not(windows))]
    fs::read(path)
}

/// Runs `op` again while Windows refuses it because another process has the file open
/// (ERROR_ACCESS_DENIED, ERROR_SHARING_VIOLATION), for up to two seconds: such opens are
/// short.
#[cfg(windows)]
fn while_shared<T>(mut op: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut pause = Duration::from_millis(1);
    loop {
        match op() {
            Err(e) if matches!(e.raw_os_error(), Some(5 | 32)) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Writes `bytes` to `path` so that readers see the old or the new content, never a mix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let (mut f, tmp) = temp_file(dir, ".tmp")?;
    let result = f
        .write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io_err("write", &tmp));
    drop(f);
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = rename_over(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("rename", path)(e));
    }
    sync_dir(dir);
    Ok(())
}

/// Replaces `path` by a temp file renamed into place, without fsync: readers see all of it or
/// none, but a crash may lose it. For caches and hints, which are made again when missing.
pub(crate) fn write_replace(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let (mut f, tmp) = temp_file(dir, ".tmp")?;
    let result = f.write_all(bytes).map_err(io_err("write", &tmp));
    drop(f);
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    rename_over(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("rename", path)(e)
    })
}

/// Makes a rename in `dir` durable (best effort; not possible on Windows).
pub(crate) fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Asks the kernel to start writing `len` bytes of `file` from `offset` to disk, without
/// waiting (Linux `sync_file_range`); elsewhere a no-op. Durability still comes from the fsync
/// at commit; this only moves the work earlier.
pub(crate) fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        // SAFETY: a plain syscall on a descriptor we own; errors are harmless and ignored.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}
