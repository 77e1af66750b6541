//! Opening a layer blob: compression detected from its first bytes (gzip, zstd, or a plain
//! tar), decompressed as a stream behind a guard against decompression bombs.

use super::tar::TarReader;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Limits for reading untrusted layers.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Largest allowed ratio of uncompressed to compressed bytes (checked once past 1 MiB).
    pub max_ratio: u64,
    /// Largest allowed uncompressed size.
    pub max_bytes: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_ratio: 1000,
            max_bytes: 1 << 40,
        }
    }
}

/// The compression found at the start of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The decompressed stream of a layer, refusing to grow past the limits.
pub struct Decompressed {
    inner: Box<dyn Read>,
    compressed: Arc<AtomicU64>,
    produced: u64,
    limits: ReadLimits,
    /// What the blob was compressed with.
    pub detected: Detected,
}

impl Read for Decompressed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.produced += n as u64;
        if self.detected != Detected::None {
            let c = self.compressed.load(Ordering::Relaxed).max(1);
            if self.produced > 1 << 20 && self.produced / c > self.limits.max_ratio {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "decompression bomb: {} bytes from {c} compressed bytes exceeds the ratio limit of {}",
                        self.produced, self.limits.max_ratio
                    ),
                ));
            }
        }
        if self.produced > self.limits.max_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the layer is larger than the limit of {} bytes",
                    self.limits.max_bytes
                ),
            ));
        }
        Ok(n)
    }
}

/// Opens a layer blob for reading its tar, whatever its compression.
pub fn open(blob: impl Read + 'static, limits: ReadLimits) -> io::Result<Decompressed> {
    let count = Arc::new(AtomicU64::new(0));
    let mut buffered = BufReader::with_capacity(
        256 * 1024,
        Counting {
            inner: blob,
            count: Arc::clone(&count),
        },
    );
    let head = buffered.fill_buf()?;
    let detected = if head.starts_with(&[0x1f, 0x8b]) {
        Detected::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Detected::Zstd
    } else {
        Detected::None
    };
    let inner: Box<dyn Read> = match detected {
        // MultiGzDecoder: a gzip file may hold several members; read them all as Go does.
        Detected::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Detected::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Detected::None => Box::new(buffered),
    };
    Ok(Decompressed {
        inner,
        compressed: count,
        produced: 0,
        limits,
        detected,
    })
}

/// Opens a layer blob and returns a tar reader over its content.
pub fn tar_reader(
    blob: impl Read + 'static,
    limits: ReadLimits,
) -> io::Result<TarReader<Decompressed>> {
    Ok(TarReader::new(open(blob, limits)?))
}
