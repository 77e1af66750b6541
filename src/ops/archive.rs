//! The plain tar files `save` writes (image archives, not layers): directories and regular
//! files with deterministic headers (mode 0644/0755, owner 0, mtime 0), written with the
//! layer module's tar encoder. Reading uses `layer::tar::TarReader`.

use crate::layer::tar::{END, Header, Kind, write_entry};
use std::io::{self, Read, Write};

/// Writes a deterministic tar archive.
pub struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    /// Adds a directory entry.
    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        write_entry(
            &mut self.out,
            &Header::new(name.trim_end_matches('/'), Kind::Dir),
            false,
            None,
        )
        .map(|_| ())
    }

    /// Adds a file of `size` bytes read from `data` (exactly `size` must be available).
    pub fn file(&mut self, name: &str, size: u64, data: &mut dyn Read) -> io::Result<()> {
        let mut h = Header::new(name, Kind::File);
        h.size = size;
        write_entry(&mut self.out, &h, false, Some(data)).map(|_| ())
    }

    /// Adds a file from memory.
    pub fn bytes(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.file(name, data.len() as u64, &mut &data[..])
    }

    /// Writes the end-of-archive marker and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&END)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tar::TarReader;

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
        assert_eq!(
            (e.header.path.as_str(), e.header.kind),
            ("blobs", Kind::Dir)
        );
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.header.path, "index.json");
        let mut s = String::new();
        r.content().read_to_string(&mut s).unwrap();
        assert_eq!(s, "{}");
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(
            (e.header.path.as_str(), e.header.size),
            (long.as_str(), 1000)
        );
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn short_content_is_an_error() {
        let mut w = TarWriter::new(Vec::new());
        assert!(w.file("x", 10, &mut &b"short"[..]).is_err());
    }
}
