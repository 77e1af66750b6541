//! The plain tar files `save` writes and `load` reads (image archives, not layers): regular
//! files and directories, ustar headers with PAX records for long names, read as a stream.

use std::io::{self, Read, Write};

const BLOCK: usize = 512;

/// Writes a tar archive of regular files and directories, deterministically (mode 0644/0755,
/// owner 0, mtime 0).
pub struct TarWriter<W: Write> {
    out: W,
}

fn octal(field: &mut [u8], value: u64) {
    let s = format!("{:0width$o}", value, width = field.len() - 1);
    let b = s.as_bytes();
    if b.len() < field.len() {
        field[..b.len()].copy_from_slice(b);
        field[b.len()] = 0;
    }
}

fn header(name: &str, size: u64, typeflag: u8, mode: u64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let n = name.as_bytes();
    let len = n.len().min(100);
    h[..len].copy_from_slice(&n[..len]);
    octal(&mut h[100..108], mode);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

impl<W: Write> TarWriter<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    fn name_header(&mut self, name: &str, size: u64, typeflag: u8, mode: u64) -> io::Result<()> {
        if name.len() > 100 {
            let record_body = format!(" path={name}\n");
            // The length prefix counts itself.
            let mut len = record_body.len() + 1;
            while format!("{len}{record_body}").len() != len {
                len += 1;
            }
            let record = format!("{len}{record_body}");
            self.out
                .write_all(&header("PaxHeaders/long", record.len() as u64, b'x', 0o644))?;
            self.out.write_all(record.as_bytes())?;
            self.pad(record.len() as u64)?;
        }
        self.out.write_all(&header(name, size, typeflag, mode))
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Adds a directory entry.
    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        let name = if name.ends_with('/') {
            name.to_string()
        } else {
            format!("{name}/")
        };
        self.name_header(&name, 0, b'5', 0o755)
    }

    /// Adds a file of `size` bytes read from `data` (exactly `size` must be available).
    pub fn file(&mut self, name: &str, size: u64, data: &mut dyn Read) -> io::Result<()> {
        self.name_header(name, size, b'0', 0o644)?;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("`{name}`: expected {size} bytes, got {copied}"),
            ));
        }
        self.pad(size)
    }

    /// Adds a file from memory.
    pub fn bytes(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.file(name, data.len() as u64, &mut &data[..])
    }

    /// Writes the end-of-archive marker and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; BLOCK * 2])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The kind of an archive entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// Anything else (links, devices), skipped by `load`.
    Other,
}

/// Reads a tar archive entry by entry.
pub struct TarReader<R: Read> {
    input: R,
    offset: u64,
    pending: u64,
    pad: u64,
}

/// One entry: its name, kind and size; the content is read with [`TarReader::content`].
#[derive(Debug, Clone)]
pub struct Entry {
    /// The path in the archive (`./` prefix removed).
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// Content size.
    pub size: u64,
    /// Byte offset of its header, for messages.
    pub offset: u64,
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // Base-256 (GNU) for large sizes.
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(v);
    }
    let s: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn bad(offset: u64, msg: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("invalid tar archive at byte {offset}: {msg}"),
    )
}

impl<R: Read> TarReader<R> {
    /// Starts reading.
    pub fn new(input: R) -> Self {
        TarReader {
            input,
            offset: 0,
            pending: 0,
            pad: 0,
        }
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = (n as usize).min(buf.len());
            self.input.read_exact(&mut buf[..k]).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    bad(self.offset, "truncated")
                } else {
                    e
                }
            })?;
            self.offset += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    fn read_block(&mut self) -> io::Result<Option<[u8; BLOCK]>> {
        let mut h = [0u8; BLOCK];
        let mut got = 0;
        while got < BLOCK {
            let n = self.input.read(&mut h[got..])?;
            if n == 0 {
                if got == 0 {
                    return Ok(None);
                }
                return Err(bad(self.offset, "truncated header"));
            }
            got += n;
        }
        self.offset += BLOCK as u64;
        Ok(Some(h))
    }

    /// The next entry, or `None` at the end of the archive.
    pub fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        let rest = self.pending + self.pad;
        self.skip(rest)?;
        self.pending = 0;
        self.pad = 0;
        let mut long_name: Option<String> = None;
        loop {
            let offset = self.offset;
            let Some(h) = self.read_block()? else {
                return Ok(None);
            };
            if h.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            let stored =
                parse_octal(&h[148..156]).ok_or_else(|| bad(offset, "bad checksum field"))?;
            let mut copy = h;
            copy[148..156].copy_from_slice(b"        ");
            let sum: u64 = copy.iter().map(|&b| b as u64).sum();
            if sum != stored {
                return Err(bad(offset, "header checksum mismatch"));
            }
            let size = parse_octal(&h[124..136]).ok_or_else(|| bad(offset, "bad size field"))?;
            let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
            let typeflag = h[156];
            let cstr = |b: &[u8]| -> String {
                String::from_utf8_lossy(&b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())])
                    .into_owned()
            };
            match typeflag {
                b'x' | b'L' => {
                    if size > 1 << 20 {
                        return Err(bad(offset, "extended header larger than 1 MiB"));
                    }
                    let mut data = vec![0u8; size as usize];
                    self.input
                        .read_exact(&mut data)
                        .map_err(|_| bad(offset, "truncated extended header"))?;
                    self.offset += size;
                    self.skip(pad)?;
                    if typeflag == b'L' {
                        long_name = Some(cstr(&data));
                    } else {
                        for rec in parse_pax(&data) {
                            if rec.0 == "path" {
                                long_name = Some(rec.1);
                            }
                        }
                    }
                    continue;
                }
                b'g' => {
                    self.skip(size + pad)?;
                    continue;
                }
                _ => {}
            }
            let mut name = long_name.take().unwrap_or_else(|| {
                let base = cstr(&h[0..100]);
                let prefix = if &h[257..262] == b"ustar" {
                    cstr(&h[345..500])
                } else {
                    String::new()
                };
                if prefix.is_empty() {
                    base
                } else {
                    format!("{prefix}/{base}")
                }
            });
            while let Some(r) = name.strip_prefix("./") {
                name = r.to_string();
            }
            let kind = match typeflag {
                b'0' | 0 | b'7' => EntryKind::File,
                b'5' => EntryKind::Dir,
                _ => EntryKind::Other,
            };
            let size = if kind == EntryKind::Dir { 0 } else { size };
            self.pending = size;
            self.pad = if kind == EntryKind::Dir { 0 } else { pad };
            return Ok(Some(Entry {
                name: name.trim_end_matches('/').to_string(),
                kind,
                size,
                offset,
            }));
        }
    }

    /// A reader of the current entry's content.
    pub fn content(&mut self) -> ContentReader<'_, R> {
        ContentReader { tar: self }
    }
}

fn parse_pax(data: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let Some(sp) = rest.iter().position(|&b| b == b' ') else {
            break;
        };
        let Ok(len) = std::str::from_utf8(&rest[..sp])
            .unwrap_or("x")
            .parse::<usize>()
        else {
            break;
        };
        if len <= sp || len > rest.len() {
            break;
        }
        let rec = &rest[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(eq) = rec.iter().position(|&b| b == b'=') {
            out.push((
                String::from_utf8_lossy(&rec[..eq]).into_owned(),
                String::from_utf8_lossy(&rec[eq + 1..]).into_owned(),
            ));
        }
        rest = &rest[len..];
    }
    out
}

/// Reads the current entry's content.
pub struct ContentReader<'a, R: Read> {
    tar: &'a mut TarReader<R>,
}

impl<R: Read> Read for ContentReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tar.pending == 0 {
            return Ok(0);
        }
        let k = (self.tar.pending as usize).min(buf.len());
        let n = self.tar.input.read(&mut buf[..k])?;
        if n == 0 {
            return Err(bad(self.tar.offset, "truncated entry content"));
        }
        self.tar.pending -= n as u64;
        self.tar.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_long_names() {
        let long = format!("blobs/sha256/{}", "a".repeat(120));
        let mut w = TarWriter::new(Vec::new());
        w.dir("blobs").unwrap();
        w.bytes("index.json", b"{}").unwrap();
        w.bytes(&long, &[7u8; 1000]).unwrap();
        let bytes = w.finish().unwrap();
        let mut r = TarReader::new(&bytes[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!((e.name.as_str(), e.kind), ("blobs", EntryKind::Dir));
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.name, "index.json");
        let mut s = String::new();
        r.content().read_to_string(&mut s).unwrap();
        assert_eq!(s, "{}");
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!((e.name.as_str(), e.size), (long.as_str(), 1000));
        // Content not read: next_entry skips it.
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn gnu_tar_reads_what_we_write() {
        let mut w = TarWriter::new(Vec::new());
        w.bytes("a/b.txt", b"hello").unwrap();
        let bytes = w.finish().unwrap();
        let Ok(mut child) = std::process::Command::new("tar")
            .args(["-tvf", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            return;
        };
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("a/b.txt"));
    }

    #[test]
    fn corrupt_archives_are_refused() {
        let mut w = TarWriter::new(Vec::new());
        w.bytes("x", b"data").unwrap();
        let mut bytes = w.finish().unwrap();
        bytes[10] ^= 1;
        let err = TarReader::new(&bytes[..]).next_entry().unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        let mut w = TarWriter::new(Vec::new());
        w.bytes("x", &[1u8; 2000]).unwrap();
        let bytes = w.finish().unwrap();
        let mut r = TarReader::new(&bytes[..700]);
        r.next_entry().unwrap();
        let mut sink = Vec::new();
        assert!(r.content().read_to_end(&mut sink).is_err());
    }
}
