//! The streaming layer writer: entries in, tar out through compression into any `Write`, with
//! the diff_id (sha256 of the tar) and the blob digest and size computed in the same pass.
//! Memory stays constant whatever the layer size.

use super::compress::{Compression, Compressor, HashingWriter};
use super::tar::{END, Header, Kind, write_entry};
use super::windows;
use std::collections::BTreeSet;
use std::io::{self, Read, Write};

/// Which layer format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An ordinary OCI layer.
    Linux,
    /// A Windows container layer: `Files/`, `Hives/`, PAX Windows records.
    Windows,
}

/// How to write a layer.
#[derive(Debug, Clone)]
pub struct LayerOptions {
    /// Linux or Windows.
    pub format: Format,
    /// gzip (default), zstd or none.
    pub compression: Compression,
    /// Clamp every mtime to this (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: Option<i64>,
    /// Compression threads.
    pub threads: usize,
    /// Windows: the owner SID written into security descriptors (default: the builders'
    /// descriptors, owned by BUILTIN\Administrators).
    pub windows_owner: Option<String>,
    /// Windows: write a base layer (no `Hives/`; `UtilityVM/` allowed through
    /// [`LayerWriter::append_at`]).
    pub windows_base: bool,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            format: Format::Linux,
            compression: Compression::DEFAULT,
            source_date_epoch: None,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .min(4),
            windows_owner: None,
            windows_base: false,
        }
    }
}

/// What a finished layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDigests {
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
    /// sha256 of the blob as written.
    pub digest: String,
    /// Blob size in bytes.
    pub size: u64,
    /// Uncompressed tar size.
    pub tar_size: u64,
    /// The OCI media type of the blob.
    pub media_type: &'static str,
}

/// Writes one layer.
pub struct LayerWriter<W: Write> {
    tar: HashingWriter<Compressor<HashingWriter<W>>>,
    opts: LayerOptions,
    emitted_dirs: BTreeSet<String>,
    started: bool,
}

impl<W: Write> LayerWriter<W> {
    /// Starts a layer written into `out`.
    pub fn new(out: W, opts: LayerOptions) -> io::Result<Self> {
        let blob = HashingWriter::new(out);
        let compressor = Compressor::new(blob, opts.compression, opts.threads)?;
        Ok(LayerWriter {
            tar: HashingWriter::new(compressor),
            opts,
            emitted_dirs: BTreeSet::new(),
            started: false,
        })
    }

    /// The format being written.
    pub fn format(&self) -> Format {
        self.opts.format
    }

    fn start(&mut self) -> io::Result<()> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        if self.opts.format == Format::Windows {
            // Hives before Files, as BuildKit's and hcsshim's writers order them; a base layer
            // has no Hives.
            let tops: &[&str] = if self.opts.windows_base {
                &["Files"]
            } else {
                &["Hives", "Files"]
            };
            for &top in tops {
                let mut h = Header::new(top, Kind::Dir);
                h.mtime = self.clamp(0);
                windows::decorate(&mut h, self.opts.windows_owner.as_deref(), false);
                write_entry(&mut self.tar, &h, true, None)?;
                self.emitted_dirs.insert(top.to_string());
            }
        }
        Ok(())
    }

    fn clamp(&self, mtime: i64) -> i64 {
        match self.opts.source_date_epoch {
            Some(e) => mtime.min(e),
            None => mtime,
        }
    }

    fn tar_path(&self, path: &str) -> String {
        match self.opts.format {
            Format::Linux => path.to_string(),
            Format::Windows => format!("Files/{path}"),
        }
    }

    /// Emits entries for any missing parent directories of `tar_path`.
    fn parents(&mut self, tar_path: &str, mtime: i64) -> io::Result<()> {
        let mut end = 0;
        let mut missing = Vec::new();
        while let Some(i) = tar_path[end..].find('/') {
            end += i;
            let dir = &tar_path[..end];
            if !self.emitted_dirs.contains(dir) {
                missing.push(dir.to_string());
            }
            end += 1;
        }
        for dir in missing {
            let mut h = Header::new(&dir, Kind::Dir);
            h.mtime = self.clamp(mtime);
            if self.opts.format == Format::Windows {
                windows::decorate(&mut h, self.opts.windows_owner.as_deref(), false);
            }
            write_entry(&mut self.tar, &h, self.opts.format == Format::Windows, None)?;
            self.emitted_dirs.insert(dir);
        }
        Ok(())
    }

    /// Appends an entry. `header.path` is the path inside the container, relative, `/`-
    /// separated (the writer adds `Files/` for Windows layers); hard-link targets likewise.
    /// For Windows layers, `dir_link` marks a symlink to a directory.
    pub fn append(
        &mut self,
        mut header: Header,
        content: Option<&mut dyn Read>,
        dir_link: bool,
    ) -> io::Result<()> {
        self.start()?;
        let path = header.path.trim_matches('/').to_string();
        if path.is_empty() || path.split('/').any(|c| c == ".." || c == ".") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}` is not a relative path inside the layer", header.path),
            ));
        }
        header.path = self.tar_path(&path);
        header.mtime = self.clamp(header.mtime);
        self.parents(&header.path, header.mtime)?;
        let windows = self.opts.format == Format::Windows;
        if windows {
            match header.kind {
                Kind::Hardlink => header.link = self.tar_path(header.link.trim_matches('/')),
                Kind::Symlink => header.link = windows::windows_link_target(&header.link),
                Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("`{path}`: devices and pipes cannot go into a Windows layer"),
                    ));
                }
                _ => {}
            }
            windows::decorate(&mut header, self.opts.windows_owner.as_deref(), dir_link);
        }
        if header.kind == Kind::Dir {
            if self.emitted_dirs.contains(&header.path) {
                return Ok(());
            }
            self.emitted_dirs.insert(header.path.clone());
        }
        write_entry(&mut self.tar, &header, windows, content)?;
        Ok(())
    }

    /// Appends an entry at an exact tar path (Windows layers: `Files/…`, `UtilityVM/Files/…`),
    /// decorated with the Windows records. Parents are synthesized as for [`Self::append`].
    pub fn append_at(
        &mut self,
        mut header: Header,
        content: Option<&mut dyn Read>,
    ) -> io::Result<()> {
        self.start()?;
        let path = header.path.trim_matches('/').to_string();
        if path.is_empty() || path.split('/').any(|c| c == ".." || c == ".") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}` is not a relative tar path", header.path),
            ));
        }
        header.path = path;
        header.mtime = self.clamp(header.mtime);
        self.parents(&header.path, header.mtime)?;
        let windows = self.opts.format == Format::Windows;
        if windows {
            windows::decorate(&mut header, self.opts.windows_owner.as_deref(), false);
        }
        if header.kind == Kind::Dir {
            if self.emitted_dirs.contains(&header.path) {
                return Ok(());
            }
            self.emitted_dirs.insert(header.path.clone());
        }
        write_entry(&mut self.tar, &header, windows, content)?;
        Ok(())
    }

    /// Appends a whiteout that deletes `path` (in the parent layers).
    pub fn whiteout(&mut self, path: &str) -> io::Result<()> {
        self.start()?;
        let path = path.trim_matches('/');
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (Some(d), n),
            None => (None, path),
        };
        let wh = match dir {
            Some(d) => format!("{d}/.wh.{name}"),
            None => format!(".wh.{name}"),
        };
        let tar_path = self.tar_path(&wh);
        self.parents(&tar_path, 0)?;
        let mut h = Header::new(&tar_path, Kind::File);
        if self.opts.format == Format::Windows {
            // hcsshim writes a name-only ustar header.
            h.mode = 0;
        }
        write_entry(&mut self.tar, &h, false, None)?;
        Ok(())
    }

    /// Appends an opaque-directory marker (Linux layers only: Windows has none; the caller
    /// writes one whiteout per entry instead).
    pub fn opaque(&mut self, dir: &str) -> io::Result<()> {
        if self.opts.format == Format::Windows {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "Windows layers have no opaque whiteouts",
            ));
        }
        self.start()?;
        let p = format!("{}/.wh..wh..opq", dir.trim_matches('/'));
        self.parents(&p, 0)?;
        write_entry(&mut self.tar, &Header::new(&p, Kind::File), false, None)?;
        Ok(())
    }

    /// Ends the tar and the compressed stream. Returns the digests and the inner writer.
    pub fn finish(mut self) -> io::Result<(LayerDigests, W)> {
        self.start()?;
        self.tar.write_all(&END)?;
        let (diff_id, tar_size, compressor) = self.tar.finish();
        let blob = compressor.finish()?;
        let (digest, size, out) = blob.finish();
        Ok((
            LayerDigests {
                diff_id,
                digest,
                size,
                tar_size,
                media_type: self.opts.compression.media_type(),
            },
            out,
        ))
    }
}
