//! Compression of layer blobs, and digests computed while bytes stream.
//!
//! gzip is written pigz-style as ONE standard gzip member: the input is cut into fixed 1 MiB
//! blocks (fixed, so the bytes never depend on how callers chunk their writes); each block is
//! deflated on a worker thread with the previous 32 KiB of input as its dictionary and ends
//! with a sync flush (the last with a final block); the CRC-32s are combined. Every gzip reader
//! reads it whole (no multi-member tricks), and the same input gives the same bytes whatever
//! the thread count. The header carries no time and no name.

use flate2::{Compress, Crc, FlushCompress, Status};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// gzip input block size.
pub const GZIP_BLOCK: usize = 1 << 20;
/// Dictionary carried from one block to the next.
pub const GZIP_WINDOW: usize = 32 * 1024;
/// Blocks in flight at most (bounds memory to about this many MiB of input plus output).
const IN_FLIGHT: usize = 4;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip at a level (1–9).
    Gzip(u32),
    /// zstd at a level (1–19).
    Zstd(i32),
}

impl Compression {
    /// gzip at the default level, 6.
    pub const DEFAULT: Compression = Compression::Gzip(6);

    /// The OCI layer media type for this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip(_) => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd(_) => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// `sha256:<hex>`.
pub fn format_digest(hash: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(7 + hash.len() * 2);
    s.push_str("sha256:");
    for b in hash {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Passes bytes through while counting and hashing them.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// The digest and byte count so far, and the inner writer.
    pub fn finish(self) -> (String, u64, W) {
        (
            format_digest(&self.hasher.finalize()),
            self.count,
            self.inner,
        )
    }
    /// Bytes so far.
    pub fn count(&self) -> u64 {
        self.count
    }
    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Bytes of each of the three samples taken from a block to decide whether it is worth
/// compressing.
const SAMPLE: usize = 16 * 1024;

/// True when samples from the start, middle and end of `data` all fail to shrink by 2% at
/// level 1: random or already compressed content, which deflate would only re-encode at full
/// cost.
fn incompressible(data: &[u8]) -> bool {
    if data.len() < 8 * SAMPLE {
        return false;
    }
    let starts = [0, data.len() / 2 - SAMPLE / 2, data.len() - SAMPLE];
    starts.iter().all(|&at| {
        let sample = &data[at..at + SAMPLE];
        let mut c = Compress::new(flate2::Compression::new(1), false);
        let mut out = Vec::with_capacity(SAMPLE + 1024);
        c.compress_vec(sample, &mut out, FlushCompress::Finish)
            .is_ok()
            && c.total_in() as usize == SAMPLE
            && out.len() * 100 >= SAMPLE * 98
    })
}

/// Deflates one block: raw deflate primed with `dict`, sync-flushed, or finished when `last`.
/// A block that does not compress is written as stored deflate blocks (level 0) instead,
/// which every inflater reads and which costs a copy instead of a search; the choice depends
/// only on the block's bytes, so output stays deterministic.
pub fn deflate_block(level: u32, dict: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let level = if level > 0 && incompressible(data) {
        0
    } else {
        level
    };
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() && level > 0 {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 4096);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done_input = c.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => break,
            _ if done_input && !last && out.len() < out.capacity() => break,
            _ => {}
        }
    }
    Ok(out)
}

type Job = (u64, Vec<u8>, Vec<u8>, bool);
type Done = (u64, io::Result<Vec<u8>>);

/// A gzip writer that compresses fixed blocks on worker threads into one gzip member.
pub struct ParallelGzip<W: Write> {
    out: Option<W>,
    buf: Vec<u8>,
    window: Vec<u8>,
    crc: Crc,
    next_seq: u64,
    next_write: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    jobs: Option<mpsc::SyncSender<Job>>,
    done: mpsc::Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    in_flight: usize,
    header_written: bool,
}

impl<W: Write> ParallelGzip<W> {
    /// Compresses at `level` with `threads` workers (at least 1).
    pub fn new(out: W, level: u32, threads: usize) -> Self {
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(IN_FLIGHT);
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads.max(1))
            .map(|_| {
                let rx = Arc::clone(&job_rx);
                let tx = done_tx.clone();
                std::thread::spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        let Ok((seq, dict, data, last)) = job else {
                            return;
                        };
                        let result = deflate_block(level, &dict, &data, last);
                        if tx.send((seq, result)).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        ParallelGzip {
            out: Some(out),
            buf: Vec::with_capacity(GZIP_BLOCK),
            window: Vec::new(),
            crc: Crc::new(),
            next_seq: 0,
            next_write: 0,
            pending: BTreeMap::new(),
            jobs: Some(job_tx),
            done: done_rx,
            workers,
            in_flight: 0,
            header_written: false,
        }
    }

    fn sink(&mut self) -> io::Result<&mut W> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip writer already finished"))
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_written {
            // ID1 ID2 CM=8 FLG=0 MTIME=0 XFL=0 OS=255 (unknown: the same on every system).
            self.sink()?
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
            self.header_written = true;
        }
        Ok(())
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(GZIP_BLOCK));
        self.crc.update(&data);
        let dict = std::mem::take(&mut self.window);
        let keep = data.len().min(GZIP_WINDOW);
        let mut window = dict.clone();
        window.extend_from_slice(&data[data.len() - keep..]);
        if window.len() > GZIP_WINDOW {
            window.drain(..window.len() - GZIP_WINDOW);
        }
        self.window = window;
        while self.in_flight >= IN_FLIGHT {
            self.collect_one()?;
        }
        let job = (self.next_seq, dict, data, last);
        self.next_seq += 1;
        self.jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip writer already finished"))?
            .send(job)
            .map_err(|_| io::Error::other("gzip worker stopped"))?;
        self.in_flight += 1;
        Ok(())
    }

    fn collect_one(&mut self) -> io::Result<()> {
        let (seq, result) = self
            .done
            .recv()
            .map_err(|_| io::Error::other("gzip worker stopped"))?;
        self.in_flight -= 1;
        self.pending.insert(seq, result?);
        self.header()?;
        while let Some(bytes) = self.pending.remove(&self.next_write) {
            self.sink()?.write_all(&bytes)?;
            self.next_write += 1;
        }
        Ok(())
    }

    /// Ends the stream (final block, trailer) and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        self.jobs.take();
        while self.in_flight > 0 {
            self.collect_one()?;
        }
        self.header()?;
        let crc = self.crc.sum();
        let isize = self.crc.amount();
        let out = self.sink()?;
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(&isize.to_le_bytes())?;
        out.flush()?;
        for w in std::mem::take(&mut self.workers) {
            let _ = w.join();
        }
        self.out
            .take()
            .ok_or_else(|| io::Error::other("gzip writer already finished"))
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let room = GZIP_BLOCK - self.buf.len();
            let k = room.min(rest.len());
            self.buf.extend_from_slice(&rest[..k]);
            rest = &rest[k..];
            if self.buf.len() == GZIP_BLOCK {
                self.submit(false)?;
            }
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        // Closing the job channel stops the workers.
        self.jobs.take();
        for w in std::mem::take(&mut self.workers) {
            let _ = w.join();
        }
    }
}

/// A compressor for one of the [`Compression`] kinds, writing into `W`.
pub enum Compressor<W: Write> {
    /// Bytes pass through.
    None(W),
    /// Parallel gzip.
    Gzip(ParallelGzip<W>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    /// Starts compressing into `out`.
    pub fn new(out: W, compression: Compression, threads: usize) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Compressor::None(out),
            Compression::Gzip(level) => Compressor::Gzip(ParallelGzip::new(out, level, threads)),
            Compression::Zstd(level) => {
                Compressor::Zstd(zstd::stream::write::Encoder::new(out, level)?)
            }
        })
    }
    /// Ends the stream and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(g) => g.flush(),
            Compressor::Zstd(z) => z.flush(),
        }
    }
}

/// Compresses an existing uncompressed tar (e.g. a layer the store keeps uncompressed, at push
/// or export time) into `out`. Returns the compressed digest and size.
pub fn compress_stream(
    input: &mut impl io::Read,
    out: impl Write,
    compression: Compression,
    threads: usize,
) -> io::Result<(String, u64)> {
    let hashed = HashingWriter::new(out);
    let mut c = Compressor::new(hashed, compression, threads)?;
    io::copy(input, &mut c)?;
    let hashed = c.finish()?;
    let (digest, size, _) = hashed.finish();
    Ok((digest, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(n: usize) -> Vec<u8> {
        let mut x: u64 = 42;
        (0..n)
            .map(|i| {
                if (i / 70_000) % 2 == 0 {
                    b"the quick brown fox jumps over the lazy dog "[i % 44]
                } else {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                }
            })
            .collect()
    }

    fn gzip(data: &[u8], threads: usize, chunk: usize) -> Vec<u8> {
        let mut g = ParallelGzip::new(Vec::new(), 6, threads);
        for c in data.chunks(chunk) {
            g.write_all(c).unwrap();
        }
        g.finish().unwrap()
    }

    #[test]
    #[cfg_attr(
        windows,
        ignore = "runs gzip, a Linux program a Windows process cannot start"
    )]
    fn parallel_gzip_is_one_standard_member() {
        let data = sample(3 * GZIP_BLOCK + 12345);
        let gz = gzip(&data, 2, 7777);
        let mut d = flate2::read::GzDecoder::new(&gz[..]);
        let mut back = Vec::new();
        d.read_to_end(&mut back).unwrap();
        assert_eq!(back, data, "a single-member reader sees every byte");
        assert!(gz.len() < data.len() * 3 / 4);
        // gzip(1) agrees.
        let mut child = std::process::Command::new("gzip")
            .args(["-t"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&gz).unwrap();
        assert!(child.wait().unwrap().success());
    }

    #[test]
    fn bytes_do_not_depend_on_threads_or_chunking() {
        let data = sample(2 * GZIP_BLOCK + 99);
        let a = gzip(&data, 1, 1 << 16);
        let b = gzip(&data, 2, 333);
        let c = gzip(&data, 3, data.len());
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(&a[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    }

    #[test]
    fn empty_and_tiny_inputs() {
        for n in [0, 1, 100] {
            let data = sample(n);
            let gz = gzip(&data, 2, 10);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
    }

    #[test]
    fn compress_stream_hashes_what_it_writes() {
        let data = sample(100_000);
        for c in [
            Compression::None,
            Compression::Gzip(1),
            Compression::Zstd(3),
        ] {
            let mut out = Vec::new();
            let (digest, size) = compress_stream(&mut &data[..], &mut out, c, 2).unwrap();
            assert_eq!(size, out.len() as u64);
            assert_eq!(digest, format_digest(&Sha256::digest(&out)));
        }
    }
}

#[cfg(test)]
mod stored_tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn random_blocks_are_stored_and_text_is_compressed() {
        let mut x: u64 = 7;
        let random: Vec<u8> = (0..GZIP_BLOCK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(incompressible(&random));
        let text = b"lorem ipsum dolor sit amet ".repeat(GZIP_BLOCK / 27);
        assert!(!incompressible(&text));
        // Random start, compressible rest: still compressed.
        let mut mixed = random[..GZIP_BLOCK / 4].to_vec();
        mixed.extend_from_slice(&text[..GZIP_BLOCK * 3 / 4]);
        assert!(!incompressible(&mixed));
        // Stored blocks decode like any other.
        let mut g = ParallelGzip::new(Vec::new(), 6, 2);
        g.write_all(&random).unwrap();
        g.write_all(&text).unwrap();
        let gz = g.finish().unwrap();
        assert!(gz.len() < random.len() + text.len() / 10);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back.len(), random.len() + text.len());
        assert!(back[..random.len()] == random[..] && back[random.len()..] == text[..]);
    }
}
