//! The streaming layer writer: entries in, tar out through compression into any `Write`, with
//! the diff_id (sha256 of the tar) and the blob digest and size computed in the same pass.
//! Memory stays constant whatever the layer size.

use super::compress::{Compression, Compressor, HashingWriter};
use super::tar::{END, Header, HeaderStyle, Kind, write_entry, write_entry_styled};
use super::windows::{self, NameProblem, WindowsNameError};
use std::collections::{BTreeSet, HashMap, HashSet};
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

/// One name written into a Windows layer.
struct Written {
    /// The tar path as written.
    path: String,
    dir: bool,
}

/// Writes one layer.
///
/// Windows layers are checked as they are written: a name NTFS or the importer cannot hold
/// (see [`windows::component_problem`]), two names of one directory that differ only in case,
/// the same name twice, an entry under a file, a whiteout for a path the layer adds, or a hard
/// link to a directory is refused with an `io::Error` of kind `InvalidInput` carrying a
/// [`windows::WindowsNameError`] that names the path as given.
pub struct LayerWriter<W: Write> {
    tar: HashingWriter<Compressor<HashingWriter<W>>>,
    opts: LayerOptions,
    emitted_dirs: BTreeSet<String>,
    /// Windows: every name written, by its case-folded tar path.
    names: HashMap<String, Written>,
    /// Windows: the case-folded tar paths this layer's whiteouts delete.
    deleted: HashSet<String>,
    started: bool,
    /// The tar path of the last regular file written (its alternate data streams may follow).
    last_file: Option<String>,
}

impl<W: Write> LayerWriter<W> {
    /// Starts a layer written into `out`.
    pub fn new(out: W, opts: LayerOptions) -> io::Result<Self> {
        // An uncompressed blob is the tar itself: its digest is the diff_id, hashed once.
        let blob = if opts.compression == Compression::None {
            HashingWriter::counting(out)
        } else {
            HashingWriter::new(out)
        };
        let compressor = Compressor::new(blob, opts.compression, opts.threads)?;
        Ok(LayerWriter {
            tar: HashingWriter::new(compressor),
            opts,
            emitted_dirs: BTreeSet::new(),
            names: HashMap::new(),
            deleted: HashSet::new(),
            started: false,
            last_file: None,
        })
    }

    /// The format being written.
    pub fn format(&self) -> Format {
        self.opts.format
    }

    fn windows(&self) -> bool {
        self.opts.format == Format::Windows
    }

    fn style(&self) -> HeaderStyle {
        if self.windows() {
            HeaderStyle::WINDOWS
        } else {
            HeaderStyle::LINUX
        }
    }

    fn start(&mut self) -> io::Result<()> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        if self.windows() {
            // Hives before Files, as BuildKit's writer orders them; a base layer has no Hives.
            let tops: &[&str] = if self.opts.windows_base {
                &["Files"]
            } else {
                &["Hives", "Files"]
            };
            for &top in tops {
                let mut h = Header::new(top, Kind::Dir);
                h.mtime = self.clamp(0);
                windows::decorate(&mut h, self.opts.windows_owner.as_deref(), false);
                write_entry_styled(&mut self.tar, &h, HeaderStyle::WINDOWS, None)?;
                self.emitted_dirs.insert(top.to_string());
                self.names.insert(
                    windows::fold_case(top),
                    Written {
                        path: top.to_string(),
                        dir: true,
                    },
                );
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

    /// Windows: refuses `tar_path` (a new entry, a directory when `dir`) when a name of the
    /// layer collides with it. Returns true when it is a directory already written, which is
    /// skipped.
    fn collides(&self, given: &str, tar_path: &str, dir: bool) -> Result<bool, WindowsNameError> {
        let refuse = |problem| WindowsNameError {
            path: given.to_string(),
            problem,
        };
        let folded = windows::fold_case(tar_path);
        if let Some(w) = self.names.get(&folded) {
            if w.path != tar_path {
                return Err(refuse(NameProblem::Case {
                    other: w.path.clone(),
                }));
            }
            if dir && w.dir {
                return Ok(true);
            }
            return Err(refuse(NameProblem::Duplicate));
        }
        if self.deleted.contains(&folded) {
            return Err(refuse(NameProblem::DeletedInSameLayer));
        }
        Ok(false)
    }

    fn remember(&mut self, tar_path: &str, dir: bool) {
        if self.windows() {
            self.names.insert(
                windows::fold_case(tar_path),
                Written {
                    path: tar_path.to_string(),
                    dir,
                },
            );
        }
    }

    /// Emits entries for any missing parent directories of `tar_path` (`given` names the entry
    /// in errors).
    fn parents(&mut self, given: &str, tar_path: &str, mtime: i64) -> io::Result<()> {
        let mut end = 0;
        let mut missing = Vec::new();
        while let Some(i) = tar_path[end..].find('/') {
            end += i;
            let dir = &tar_path[..end];
            if !self.emitted_dirs.contains(dir) {
                if self.windows() {
                    if let Some(w) = self.names.get(&windows::fold_case(dir)) {
                        let problem = if w.path != dir {
                            NameProblem::Case {
                                other: w.path.clone(),
                            }
                        } else {
                            NameProblem::ParentNotDirectory {
                                parent: w.path.clone(),
                            }
                        };
                        return Err(WindowsNameError {
                            path: given.to_string(),
                            problem,
                        }
                        .into());
                    }
                    self.collides(given, dir, true)?;
                }
                missing.push(dir.to_string());
            }
            end += 1;
        }
        for dir in missing {
            let mut h = Header::new(&dir, Kind::Dir);
            h.mtime = self.clamp(mtime);
            if self.windows() {
                windows::decorate(&mut h, self.opts.windows_owner.as_deref(), false);
                self.utility_vm_root(&mut h);
            }
            let style = self.style();
            write_entry_styled(&mut self.tar, &h, style, None)?;
            self.remember(&dir, true);
            self.emitted_dirs.insert(dir);
        }
        Ok(())
    }

    /// Windows: the checks every new entry passes (names, collisions, links). Returns true
    /// when the entry is a directory already written.
    fn admit(&mut self, given: &str, header: &mut Header) -> io::Result<bool> {
        let refuse = |problem| WindowsNameError {
            path: given.to_string(),
            problem,
        };
        if let Some(p) = windows::path_problem(&header.path) {
            return Err(refuse(p).into());
        }
        if self.collides(given, &header.path, header.kind == Kind::Dir)? {
            return Ok(true);
        }
        if header.kind == Kind::Hardlink {
            let target = header.link.strip_prefix("Files/").unwrap_or(&header.link);
            if target.is_empty()
                || target
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "`{given}`: the hard link target `{}` is not a relative path inside the layer",
                        header.link
                    ),
                ));
            }
            if let Some(p) = windows::path_problem(&header.link) {
                return Err(refuse(p).into());
            }
            if let Some(t) = self.names.get(&windows::fold_case(&header.link)) {
                if t.dir {
                    return Err(refuse(NameProblem::LinkToDirectory {
                        target: t.path.clone(),
                    })
                    .into());
                }
                // The importer finds targets written in this layer by their exact name.
                header.link = t.path.clone();
            }
        }
        Ok(false)
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
        let given = header.path.clone();
        let path = header.path.trim_matches('/').to_string();
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c == ".." || c == "." || (c.is_empty() && self.windows()))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{given}` is not a relative path inside the layer"),
            ));
        }
        header.path = self.tar_path(&path);
        header.mtime = self.clamp(header.mtime);
        let windows = self.windows();
        if windows {
            match header.kind {
                Kind::Hardlink => header.link = self.tar_path(header.link.trim_matches('/')),
                Kind::Symlink => header.link = windows::windows_link_target(&header.link),
                Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("`{given}`: devices and pipes cannot go into a Windows layer"),
                    ));
                }
                _ => {}
            }
            if self.admit(&given, &mut header)? {
                return Ok(());
            }
        }
        self.parents(&given, &header.path, header.mtime)?;
        if windows {
            windows::decorate(&mut header, self.opts.windows_owner.as_deref(), dir_link);
        }
        self.write(header, content)
    }

    fn write(&mut self, mut header: Header, content: Option<&mut dyn Read>) -> io::Result<()> {
        if header.kind == Kind::Dir {
            if self.emitted_dirs.contains(&header.path) {
                return Ok(());
            }
            self.emitted_dirs.insert(header.path.clone());
        }
        if header.kind != Kind::File {
            // Only regular files have content; a size on anything else would desynchronize
            // the tar.
            header.size = 0;
        }
        self.remember(&header.path, header.kind == Kind::Dir);
        self.last_file = (header.kind == Kind::File).then(|| header.path.clone());
        let style = self.style();
        write_entry_styled(&mut self.tar, &header, style, content)?;
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
        let given = header.path.clone();
        let path = header.path.trim_matches('/').to_string();
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c == ".." || c == "." || (c.is_empty() && self.windows()))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{given}` is not a relative tar path"),
            ));
        }
        header.path = path;
        header.mtime = self.clamp(header.mtime);
        let windows = self.windows();
        if windows && self.admit(&given, &mut header)? {
            return Ok(());
        }
        self.parents(&given, &header.path, header.mtime)?;
        if windows {
            windows::decorate(&mut header, self.opts.windows_owner.as_deref(), false);
            self.utility_vm_root(&mut header);
        }
        self.write(header, content)
    }

    /// Appends an entry another Windows exporter wrote (a Docker engine's diff, the Host
    /// Compute Service's export), at its exact tar path (`Files/…`, `Hives/…`), keeping its
    /// own Windows records (attributes, security descriptor, times) when it has them; an
    /// entry without `MSWINDOWS.fileattr` is decorated as [`Self::append_at`] does. Names are
    /// checked and parents synthesized as for [`Self::append_at`]. Linux layers take the
    /// entry as [`Self::append`] does.
    pub fn append_verbatim(
        &mut self,
        mut header: Header,
        content: Option<&mut dyn Read>,
    ) -> io::Result<()> {
        if !self.windows() {
            return self.append(header, content, false);
        }
        if !header.pax.contains_key(windows::PAX_FILEATTR) {
            return self.append_at(header, content);
        }
        self.start()?;
        let given = header.path.clone();
        let path = header.path.trim_matches('/').to_string();
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c == ".." || c == "." || c.is_empty())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{given}` is not a relative tar path"),
            ));
        }
        header.path = path;
        header.mtime = self.clamp(header.mtime);
        // An alternate data stream of the file just written (`Files/x:stream`), as the
        // exporter writes one.
        if let Some((base, stream)) = header.path.rsplit_once(':')
            && header.kind == Kind::File
            && self.last_file.as_deref() == Some(base)
            && !stream.is_empty()
            && !stream.contains(['/', '\\', ':', '*', '?', '"', '<', '>', '|'])
        {
            let style = self.style();
            write_entry_styled(&mut self.tar, &header, style, content)?;
            return Ok(());
        }
        if self.admit(&given, &mut header)? {
            return Ok(());
        }
        self.parents(&given, &header.path, header.mtime)?;
        self.write(header, content)
    }

    /// In a layer with parents the importer clones the parent's utility VM for the
    /// `UtilityVM` entry and has no file to write a descriptor to: write it without one, as
    /// the exporter does (it reads paths outside `Files` without security).
    fn utility_vm_root(&self, h: &mut Header) {
        if !self.opts.windows_base && h.path == "UtilityVM" {
            h.pax.remove(windows::PAX_RAWSD);
        }
    }

    /// Appends a whiteout that deletes `path` (in the parent layers).
    pub fn whiteout(&mut self, path: &str) -> io::Result<()> {
        self.start()?;
        let given = path;
        let path = path.trim_matches('/');
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c == ".." || c == "." || (c.is_empty() && self.windows()))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{given}` is not a relative path inside the layer"),
            ));
        }
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (Some(d), n),
            None => (None, path),
        };
        let wh = match dir {
            Some(d) => format!("{d}/.wh.{name}"),
            None => format!(".wh.{name}"),
        };
        let tar_path = self.tar_path(&wh);
        if self.windows() {
            if self.opts.windows_base {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{given}`: a Windows base layer cannot have whiteouts"),
                ));
            }
            let refuse = |problem| WindowsNameError {
                path: given.to_string(),
                problem,
            };
            if let Some(p) = windows::path_problem(path) {
                return Err(refuse(p).into());
            }
            let folded = windows::fold_case(&self.tar_path(path));
            if self.names.contains_key(&folded) {
                return Err(refuse(NameProblem::DeletedInSameLayer).into());
            }
            self.deleted.insert(folded);
        }
        self.parents(given, &tar_path, 0)?;
        let mut h = Header::new(&tar_path, Kind::File);
        if self.windows() {
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
        self.parents(dir, &p, 0)?;
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
        let digest = if self.opts.compression == Compression::None {
            diff_id.clone()
        } else {
            digest
        };
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
