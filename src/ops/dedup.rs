//! `wcbuild dedup`: gathers a set of images from their sources (the store, OCI layout folders,
//! `docker save` archives), expands indexes into their platform images, indexes every distinct
//! layer once (in parallel, streaming, each index cached in the store by diff_id) and hands the
//! lot to `report::analyze`.
//!
//! Layer indexes live in `<store>/cache/v1/dedup-index/<diff_id hex>` (JSON, versioned by
//! `report::index::INDEX_VERSION`; an index of another version is made again). They hold no
//! blob, so `prune` keeps none because of them and removing the folder only costs a re-read.

use super::images::{self, ImageError};
use crate::image::{ImageConfig, Index, Manifest, Platform, media};
use crate::layer::ReadLimits;
use crate::layer::tar::{Kind, TarReader};
use crate::report::index::{Expected, INDEX_VERSION};
use crate::report::{self, ImageInput, IndexError, LayerIndex, LayerInput, Report};
use crate::store::{MAX_METADATA_BYTES, Store, StoreError, sha256_digest};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The annotation docker and containerd use for an image's full name.
const CONTAINERD_NAME: &str = images::CONTAINERD_NAME_ANNOTATION;

/// Where images come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Images in the store: these names, or every tagged image when the list is empty.
    Store(Vec<String>),
    /// Every image of an OCI image-layout folder (`oci-layout:DIR`).
    OciLayout(PathBuf),
    /// Every image of a `docker save` tar, either layout (`docker-archive:FILE`).
    DockerArchive(PathBuf),
    /// An image or index in a registry (`registry:REF`): manifests and configs are fetched,
    /// each layer is streamed once into the indexer (verified) and never stored.
    Registry(String),
}

impl Source {
    /// Parses a `--from` value: `oci-layout:DIR` or `docker-archive:FILE`.
    pub fn parse(s: &str) -> Result<Source, String> {
        if let Some(d) = s.strip_prefix("oci-layout:") {
            let d = d.strip_prefix("//").unwrap_or(d);
            if d.is_empty() {
                return Err("`oci-layout:` needs a folder: `oci-layout:DIR`".into());
            }
            return Ok(Source::OciLayout(PathBuf::from(d)));
        }
        if let Some(f) = s.strip_prefix("docker-archive:") {
            if f.is_empty() {
                return Err("`docker-archive:` needs a file: `docker-archive:FILE`".into());
            }
            return Ok(Source::DockerArchive(PathBuf::from(f)));
        }
        if let Some(r) = s
            .strip_prefix("registry:")
            .or_else(|| s.strip_prefix("docker://"))
        {
            crate::image::Reference::parse(r).map_err(|e| format!("`{s}`: {e}"))?;
            return Ok(Source::Registry(r.to_string()));
        }
        Err(format!(
            "`{s}` is not a source: expected `oci-layout:DIR`, `docker-archive:FILE` or `registry:REF`"
        ))
    }

    fn label(&self) -> String {
        match self {
            Source::Store(_) => "store".into(),
            Source::OciLayout(d) => format!("oci-layout:{}", d.display()),
            Source::DockerArchive(f) => format!("docker-archive:{}", f.display()),
            Source::Registry(r) => format!("registry:{r}"),
        }
    }
}

/// How to report.
#[derive(Debug, Clone)]
pub struct DedupOptions {
    /// How many offenders and duplicate groups to list.
    pub top: usize,
    /// Layers indexed at once.
    pub threads: usize,
    /// Limits for reading layers.
    pub limits: ReadLimits,
    /// Read the layer index cache in the store (indexes made are written either way).
    pub cache: bool,
    /// How to reach registries (`Source::Registry`).
    pub registry: crate::registry::ClientOptions,
}

impl Default for DedupOptions {
    fn default() -> Self {
        DedupOptions {
            top: 20,
            threads: 2,
            limits: ReadLimits::default(),
            cache: true,
            registry: crate::registry::ClientOptions::default(),
        }
    }
}

/// The report, and what it took to make it.
#[derive(Debug, Clone)]
pub struct DedupOutcome {
    /// The report.
    pub report: Report,
    /// Layers read (not found in the index cache).
    pub layers_read: u64,
    /// Compressed bytes of the layers read.
    pub bytes_read: u64,
    /// Uncompressed bytes of the layers read.
    pub tar_bytes_read: u64,
    /// Layers whose index came from the cache.
    pub layers_cached: u64,
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An image name is unknown or invalid.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A registry could not be read.
    #[error("{0}")]
    Registry(String),
    /// A blob the images need is missing from its source.
    #[error("blob `{digest}` is not in {source_label}")]
    Missing {
        /// The digest.
        digest: String,
        /// The source.
        source_label: String,
    },
    /// A layer could not be indexed.
    #[error("layer `{digest}` (from {source_label}): {error}")]
    Layer {
        /// The blob digest.
        digest: String,
        /// The source.
        source_label: String,
        /// Why.
        error: IndexError,
    },
    /// No image to report on.
    #[error("no images to report on: {0}")]
    Empty(String),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DedupError + use<> {
    let f = images::io_err(op, path);
    move |source| f(source).into()
}

/// A layer blob being read.
type BlobStream = Box<dyn Read + Send>;

/// A blob holding a diff_id, in one source.
struct Candidate {
    source: usize,
    digest: String,
    /// The size its descriptor gives.
    bytes: u64,
    foreign: bool,
}

/// The blobs holding one diff_id, the first found first.
type Candidates = Vec<Candidate>;

/// Read access to the blobs of one source.
trait Blobs: Sync {
    /// For messages: `store`, `oci-layout:DIR`, ….
    fn label(&self) -> String;
    /// A manifest, index or config, checked against its digest.
    fn read_small(&self, digest: &str) -> Result<Vec<u8>, DedupError>;
    /// A layer blob as a stream, or `None` when the source does not have it.
    fn open(&self, digest: &str) -> Result<Option<BlobStream>, DedupError>;
    /// True when the source only ever holds blobs whose bytes match their digest (the store
    /// verifies every blob before it enters), so reading need not hash the blob again. The
    /// diff_id is checked either way.
    fn verified(&self) -> bool {
        false
    }
}

struct StoreBlobs<'a>(&'a Store);

impl Blobs for StoreBlobs<'_> {
    fn label(&self) -> String {
        format!("the store `{}`", self.0.root().display())
    }
    fn read_small(&self, digest: &str) -> Result<Vec<u8>, DedupError> {
        Ok(self.0.read_blob(digest)?)
    }
    fn open(&self, digest: &str) -> Result<Option<BlobStream>, DedupError> {
        match self.0.open_blob(digest) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(StoreError::BlobNotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
    fn verified(&self) -> bool {
        true
    }
}

fn check_small(bytes: &[u8], digest: &str, label: &str) -> Result<(), DedupError> {
    let actual = sha256_digest(bytes);
    if actual != digest {
        return Err(DedupError::Image(ImageError::Invalid {
            what: format!("{digest} in {label}"),
            kind: "blob",
            message: format!("its bytes hash to `{actual}`"),
        }));
    }
    Ok(())
}

/// An OCI image-layout folder.
struct LayoutBlobs {
    dir: PathBuf,
}

impl LayoutBlobs {
    fn path(&self, digest: &str) -> Result<PathBuf, DedupError> {
        let hex = crate::store::digest_hex(digest)?;
        Ok(self.dir.join("blobs/sha256").join(hex))
    }
}

impl Blobs for LayoutBlobs {
    fn label(&self) -> String {
        format!("oci-layout:{}", self.dir.display())
    }
    fn read_small(&self, digest: &str) -> Result<Vec<u8>, DedupError> {
        let p = self.path(digest)?;
        let f = File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                DedupError::Missing {
                    digest: digest.to_string(),
                    source_label: self.label(),
                }
            } else {
                io_err("open", &p)(e)
            }
        })?;
        let mut buf = Vec::new();
        f.take(MAX_METADATA_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(io_err("read", &p))?;
        if buf.len() as u64 > MAX_METADATA_BYTES {
            return Err(DedupError::Image(ImageError::Invalid {
                what: p.display().to_string(),
                kind: "manifest, index or config",
                message: format!("larger than {MAX_METADATA_BYTES} bytes"),
            }));
        }
        check_small(&buf, digest, &self.label())?;
        Ok(buf)
    }
    fn open(&self, digest: &str) -> Result<Option<BlobStream>, DedupError> {
        let p = self.path(digest)?;
        match File::open(&p) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("open", &p)(e)),
        }
    }
}

/// A repository in a registry: small documents fetched and checked, layers streamed through
/// a bounded pipe from a download task (verified by the client as they come), never stored.
struct RegistryBlobs {
    client: crate::registry::Client,
    repo: crate::registry::Repo,
    rt: Arc<tokio::runtime::Runtime>,
}

impl Blobs for RegistryBlobs {
    fn label(&self) -> String {
        format!("registry {}", self.repo)
    }
    fn read_small(&self, digest: &str) -> Result<Vec<u8>, DedupError> {
        let err = |e: crate::registry::RegistryError| DedupError::Registry(e.to_string());
        // Configs come from the blob endpoint; manifests and indexes (which registries do not
        // serve as blobs) from the manifest one.
        let size = match self
            .rt
            .block_on(self.client.blob_size(&self.repo, digest))
            .map_err(err)?
        {
            Some(size) => size,
            None => {
                return match self
                    .rt
                    .block_on(self.client.get_manifest(&self.repo, digest))
                {
                    Ok(f) => Ok(f.bytes),
                    Err(crate::registry::RegistryError::NotFound { .. }) => {
                        Err(DedupError::Missing {
                            digest: digest.to_string(),
                            source_label: self.label(),
                        })
                    }
                    Err(e) => Err(err(e)),
                };
            }
        };
        if size > MAX_METADATA_BYTES {
            return Err(DedupError::Image(ImageError::Invalid {
                what: digest.to_string(),
                kind: "manifest, index or config",
                message: format!("larger than {MAX_METADATA_BYTES} bytes"),
            }));
        }
        struct VecSink(Vec<u8>);
        impl crate::registry::BlobSink for VecSink {
            fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
                self.0.extend_from_slice(buf);
                Ok(())
            }
            fn restart(&mut self) -> io::Result<()> {
                self.0.clear();
                Ok(())
            }
        }
        let desc = crate::image::Descriptor::new("application/octet-stream", digest, size);
        let mut sink = VecSink(Vec::new());
        self.rt
            .block_on(
                self.client
                    .get_blob(&self.repo, &desc, &mut sink, &mut |_| {}),
            )
            .map_err(err)?;
        Ok(sink.0)
    }
    fn open(&self, digest: &str) -> Result<Option<BlobStream>, DedupError> {
        let err = |e: crate::registry::RegistryError| DedupError::Registry(e.to_string());
        let Some(size) = self
            .rt
            .block_on(self.client.blob_size(&self.repo, digest))
            .map_err(err)?
        else {
            return Ok(None);
        };
        let desc = crate::image::Descriptor::new("application/octet-stream", digest, size);
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(16);
        struct PipeSink(std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>);
        impl crate::registry::BlobSink for PipeSink {
            fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
                self.0
                    .send(Ok(buf.to_vec()))
                    .map_err(|_| io::Error::other("the reader stopped"))
            }
            fn restart(&mut self) -> io::Result<()> {
                Err(io::Error::other(
                    "the registry restarted the download; bytes already read cannot be taken back",
                ))
            }
        }
        let (client, repo) = (self.client.clone(), self.repo.clone());
        self.rt.spawn(async move {
            let mut sink = PipeSink(tx.clone());
            let r = client.get_blob(&repo, &desc, &mut sink, &mut |_| {}).await;
            // The end of the stream is the channel closing; an error is sent first, so that a
            // corrupt download never reads as a clean end.
            if let Err(e) = r {
                let _ = tx.send(Err(io::Error::other(e.to_string())));
            }
        });
        struct PipeReader {
            rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
            buf: Vec<u8>,
            pos: usize,
        }
        impl Read for PipeReader {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                while self.pos == self.buf.len() {
                    match self.rx.recv() {
                        Ok(chunk) => {
                            self.buf = chunk?;
                            self.pos = 0;
                        }
                        Err(_) => return Ok(0),
                    }
                }
                let n = out.len().min(self.buf.len() - self.pos);
                out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                Ok(n)
            }
        }
        Ok(Some(Box::new(PipeReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        })))
    }
    fn verified(&self) -> bool {
        // The client checks size and digest as the bytes stream and sends its error through
        // the pipe before the end, so a bad blob never reads as a clean one.
        true
    }
}

/// A `docker save` (or OCI layout) tar, read in place: the files' offsets are found in one
/// pass, then each blob is read from its offset.
struct ArchiveBlobs {
    path: PathBuf,
    /// Entry name → (content offset, size).
    files: HashMap<String, (u64, u64)>,
    /// Digest → entry name, for blobs not stored under `blobs/sha256/` (older archives).
    aliases: HashMap<String, String>,
}

impl ArchiveBlobs {
    fn scan(path: &Path) -> Result<ArchiveBlobs, DedupError> {
        let f = File::open(path).map_err(io_err("open", path))?;
        let mut tar = TarReader::new(io::BufReader::with_capacity(1 << 20, f));
        let mut files = HashMap::new();
        loop {
            let e = match tar.next_entry() {
                Ok(Some(e)) => e.header,
                Ok(None) => break,
                Err(e) => {
                    return Err(DedupError::Image(ImageError::Invalid {
                        what: path.display().to_string(),
                        kind: "image archive",
                        message: e.to_string(),
                    }));
                }
            };
            if e.kind == Kind::File {
                let name = report::index::normalize_path(&e.path).to_string();
                files.insert(name, (tar.offset(), e.size));
            }
        }
        Ok(ArchiveBlobs {
            path: path.to_path_buf(),
            files,
            aliases: HashMap::new(),
        })
    }

    fn open_name(&self, name: &str) -> Result<Option<(BlobStream, u64)>, DedupError> {
        let Some(&(offset, size)) = self.files.get(name) else {
            return Ok(None);
        };
        let mut f = File::open(&self.path).map_err(io_err("open", &self.path))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(io_err("seek in", &self.path))?;
        Ok(Some((
            Box::new(io::BufReader::with_capacity(256 * 1024, f).take(size)),
            size,
        )))
    }

    fn read_name(&self, name: &str) -> Result<Option<Vec<u8>>, DedupError> {
        let Some((mut r, size)) = self.open_name(name)? else {
            return Ok(None);
        };
        if size > MAX_METADATA_BYTES {
            return Err(DedupError::Image(ImageError::Invalid {
                what: format!("{} in {}", name, self.label()),
                kind: "manifest, index or config",
                message: format!("larger than {MAX_METADATA_BYTES} bytes"),
            }));
        }
        let mut buf = Vec::with_capacity(size as usize);
        r.read_to_end(&mut buf)
            .map_err(io_err("read", &self.path))?;
        Ok(Some(buf))
    }

    fn name_of(&self, digest: &str) -> Result<String, DedupError> {
        if let Some(n) = self.aliases.get(digest) {
            return Ok(n.clone());
        }
        Ok(format!(
            "blobs/sha256/{}",
            crate::store::digest_hex(digest)?
        ))
    }
}

impl Blobs for ArchiveBlobs {
    fn label(&self) -> String {
        format!("docker-archive:{}", self.path.display())
    }
    fn read_small(&self, digest: &str) -> Result<Vec<u8>, DedupError> {
        let name = self.name_of(digest)?;
        let buf = self.read_name(&name)?.ok_or_else(|| DedupError::Missing {
            digest: digest.to_string(),
            source_label: self.label(),
        })?;
        check_small(&buf, digest, &self.label())?;
        Ok(buf)
    }
    fn open(&self, digest: &str) -> Result<Option<BlobStream>, DedupError> {
        let name = self.name_of(digest)?;
        Ok(self.open_name(&name)?.map(|(r, _)| r))
    }
}

/// A descriptor to start from, with the name it was given.
struct Root {
    name: Option<String>,
    media_type: String,
    digest: String,
    platform: Option<Platform>,
}

fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
    kind: &'static str,
) -> Result<T, DedupError> {
    serde_json::from_slice(bytes).map_err(|e| {
        DedupError::Image(ImageError::Invalid {
            what: what.to_string(),
            kind,
            message: e.to_string(),
        })
    })
}

/// Adds the image (or, for an index, its platform images) of `root` to `out`; an image
/// already there (same manifest) gets the name added instead.
fn expand(
    blobs: &dyn Blobs,
    source: usize,
    label: &str,
    root: Root,
    out: &mut Vec<(ImageInput, usize)>,
    depth: u32,
) -> Result<(), DedupError> {
    let name = root.name.clone().unwrap_or_else(|| root.digest.clone());
    if media::is_index(&root.media_type) {
        if depth > 4 {
            return Err(DedupError::Image(ImageError::Invalid {
                what: root.digest,
                kind: "index",
                message: "indexes nested more than 4 deep".into(),
            }));
        }
        let idx: Index = parse_json(&blobs.read_small(&root.digest)?, &root.digest, "index")?;
        for m in idx.manifests {
            if !media::is_index(&m.media_type) && !media::is_manifest(&m.media_type) {
                continue;
            }
            // Attestation manifests (BuildKit) say `unknown/unknown`.
            if m.platform.as_ref().is_some_and(|p| p.os == "unknown") {
                continue;
            }
            let child_name = match &m.platform {
                Some(p) => format!("{name} [{p}]"),
                None => format!("{name} [{}]", m.digest),
            };
            expand(
                blobs,
                source,
                label,
                Root {
                    name: Some(child_name),
                    media_type: m.media_type,
                    digest: m.digest,
                    platform: m.platform,
                },
                out,
                depth + 1,
            )?;
        }
        return Ok(());
    }
    if let Some((img, _)) = out.iter_mut().find(|(i, _)| i.digest == root.digest) {
        if !img.names.contains(&name) {
            img.names.push(name);
        }
        return Ok(());
    }
    let manifest_bytes = blobs.read_small(&root.digest)?;
    let m: Manifest = parse_json(&manifest_bytes, &root.digest, "manifest")?;
    // Artifacts (charts, signatures, SBOMs) are not images: no rootfs to report on.
    if !media::is_config(&m.config.media_type)
        || m.layers.iter().any(|l| {
            !media::is_layer(&l.media_type)
                && !l.media_type.contains(".rootfs.")
                && !l.media_type.contains(".image.layer.")
        })
    {
        tracing::info!(
            "`{name}` ({}) is not a container image: left out",
            root.digest
        );
        return Ok(());
    }
    let config_bytes = blobs.read_small(&m.config.digest)?;
    let config: ImageConfig = parse_json(&config_bytes, &m.config.digest, "config")?;
    let image = image_input(
        vec![name],
        label,
        root.digest.clone(),
        manifest_bytes.len() as u64,
        m.config.digest.clone(),
        config_bytes.len() as u64,
        &config,
        root.platform.as_ref(),
        m.layers
            .iter()
            .map(|l| {
                (
                    l.digest.clone(),
                    l.media_type.clone(),
                    l.size,
                    l.urls.clone(),
                )
            })
            .collect(),
    )?;
    out.push((image, source));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn image_input(
    names: Vec<String>,
    label: &str,
    digest: String,
    manifest_bytes: u64,
    config_digest: String,
    config_bytes: u64,
    config: &ImageConfig,
    platform: Option<&Platform>,
    layers: Vec<(String, String, u64, Vec<String>)>,
) -> Result<ImageInput, DedupError> {
    if layers.len() != config.rootfs.diff_ids.len() {
        return Err(DedupError::Image(ImageError::Invalid {
            what: digest,
            kind: "image",
            message: format!(
                "the manifest lists {} layer(s) but the config {} diff_id(s)",
                layers.len(),
                config.rootfs.diff_ids.len()
            ),
        }));
    }
    let created: Vec<Option<String>> = config
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .map(|h| h.created_by.clone())
        .collect();
    let os_version = config
        .os_version
        .clone()
        .or_else(|| platform.and_then(|p| p.os_version.clone()));
    Ok(ImageInput {
        names,
        source: label.to_string(),
        digest,
        manifest_bytes,
        config_digest,
        config_bytes,
        os: config.os.clone(),
        architecture: config.architecture.clone(),
        variant: config.variant.clone(),
        os_version,
        layers: layers
            .into_iter()
            .zip(&config.rootfs.diff_ids)
            .enumerate()
            .map(
                |(k, ((digest, media_type, bytes, urls), diff_id))| LayerInput {
                    digest,
                    media_type,
                    bytes,
                    diff_id: diff_id.clone(),
                    urls,
                    created_by: created.get(k).cloned().flatten(),
                },
            )
            .collect(),
    })
}

fn layout_roots(index: &[u8], what: &str) -> Result<Vec<Root>, DedupError> {
    let idx: Index = parse_json(index, what, "OCI index")?;
    Ok(idx
        .manifests
        .into_iter()
        .filter(|m| media::is_index(&m.media_type) || media::is_manifest(&m.media_type))
        .map(|m| {
            let name = m
                .annotations
                .get(CONTAINERD_NAME)
                .or_else(|| m.annotations.get(crate::store::REF_NAME_ANNOTATION))
                .cloned();
            Root {
                name,
                media_type: m.media_type,
                digest: m.digest,
                platform: m.platform,
            }
        })
        .collect())
}

/// Reads an older `docker save` archive (no `index.json`): `manifest.json` names the config
/// and layer files by path.
fn legacy_archive(
    blobs: &mut ArchiveBlobs,
    source: usize,
    out: &mut Vec<(ImageInput, usize)>,
) -> Result<(), DedupError> {
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(rename = "Config")]
        config: String,
        #[serde(rename = "RepoTags", default)]
        repo_tags: Option<Vec<String>>,
        #[serde(rename = "Layers", default)]
        layers: Vec<String>,
    }
    let label = blobs.label();
    let Some(bytes) = blobs.read_name("manifest.json")? else {
        return Err(DedupError::Image(ImageError::Invalid {
            what: blobs.path.display().to_string(),
            kind: "image archive",
            message: "neither index.json nor manifest.json found".into(),
        }));
    };
    let items: Vec<Item> = parse_json(&bytes, "manifest.json", "docker manifest")?;
    for item in items {
        let name = report::index::normalize_path(&item.config).to_string();
        let config_bytes = blobs.read_name(&name)?.ok_or_else(|| DedupError::Missing {
            digest: item.config.clone(),
            source_label: label.clone(),
        })?;
        let config_digest = sha256_digest(&config_bytes);
        let config: ImageConfig = parse_json(&config_bytes, &item.config, "config")?;
        let mut layers = Vec::new();
        for l in &item.layers {
            let lname = report::index::normalize_path(l).to_string();
            let Some((mut r, size)) = blobs.open_name(&lname)? else {
                return Err(DedupError::Missing {
                    digest: l.clone(),
                    source_label: label.clone(),
                });
            };
            let digest = match lname.strip_prefix("blobs/sha256/") {
                Some(hex) => format!("sha256:{hex}"),
                None => {
                    // Named by path only: hash it to learn its digest.
                    let mut h = HashingSink::default();
                    io::copy(&mut r, &mut h).map_err(io_err("read", &blobs.path))?;
                    let d = h.digest();
                    blobs.aliases.insert(d.clone(), lname.clone());
                    d
                }
            };
            let mut magic = [0u8; 4];
            let n = blobs
                .open_name(&lname)?
                .map(|(mut r, _)| r.read(&mut magic).unwrap_or(0))
                .unwrap_or(0);
            let media_type = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
                media::DOCKER_LAYER_GZIP
            } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
                media::OCI_LAYER_ZSTD
            } else {
                media::OCI_LAYER
            };
            layers.push((digest, media_type.to_string(), size, Vec::new()));
        }
        let names = item
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| images::normalize(t).unwrap_or_else(|_| t.clone()))
            .collect::<Vec<_>>();
        let names = if names.is_empty() {
            vec![config_digest.clone()]
        } else {
            names
        };
        let image = image_input(
            names,
            &label,
            config_digest.clone(),
            0,
            config_digest,
            config_bytes.len() as u64,
            &config,
            None,
            layers,
        )?;
        if !out.iter().any(|(i, _)| i.digest == image.digest) {
            out.push((image, source));
        }
    }
    Ok(())
}

#[derive(Default)]
struct HashingSink(sha2::Sha256);

impl io::Write for HashingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sha2::Digest::update(&mut self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl HashingSink {
    fn digest(self) -> String {
        crate::layer::compress::format_digest(&sha2::Digest::finalize(self.0))
    }
}

/// Where the index of `diff_id` is cached.
fn cache_file(store: &Store, diff_id: &str) -> Result<PathBuf, DedupError> {
    let hex = crate::store::digest_hex(diff_id)?;
    Ok(store.cache_dir().join("dedup-index").join(hex))
}

fn cached_index(store: &Store, diff_id: &str) -> Option<LayerIndex> {
    let path = cache_file(store, diff_id).ok()?;
    let bytes = std::fs::read(path).ok()?;
    let idx: LayerIndex = serde_json::from_slice(&bytes).ok()?;
    (idx.version == INDEX_VERSION && idx.diff_id == diff_id).then_some(idx)
}

/// Writes an index record (not fsynced: it is a cache, made again when missing; an fsync per
/// layer would put the disk's latency into every report).
fn write_cached_index(store: &Store, idx: &LayerIndex) -> Result<(), DedupError> {
    let path = cache_file(store, &idx.diff_id)?;
    let bytes = serde_json::to_vec(idx).map_err(|e| {
        DedupError::Image(ImageError::Io {
            op: "encode",
            path: path.clone(),
            source: e.into(),
        })
    })?;
    let rel = path.strip_prefix(store.root()).unwrap_or(&path);
    Ok(store.write_cache_record(rel, &bytes)?)
}

/// What `dedup` tells while it works; `cli` draws it. Called from the indexing threads.
pub trait DedupReporter: Send + Sync {
    /// The layers that must be read (not in the cache): how many, and their blob bytes.
    fn start(&self, _layers: u64, _bytes: u64) {}
    /// `bytes` more blob bytes were read.
    fn read(&self, _bytes: u64) {}
    /// A layer is indexed.
    fn layer_done(&self, _diff_id: &str) {}
}

/// Reports nothing.
pub struct NoReporter;

impl DedupReporter for NoReporter {}

/// Gathers the images of `sources` (the store's tagged images when none is given), indexes
/// their layers and computes the report.
pub fn dedup(
    store: &Store,
    sources: &[Source],
    options: &DedupOptions,
) -> Result<DedupOutcome, DedupError> {
    dedup_with(store, sources, options, Arc::new(NoReporter))
}

/// [`dedup`], telling `reporter` how the reading goes.
pub fn dedup_with(
    store: &Store,
    sources: &[Source],
    options: &DedupOptions,
    reporter: Arc<dyn DedupReporter>,
) -> Result<DedupOutcome, DedupError> {
    let default = [Source::Store(Vec::new())];
    let sources = if sources.is_empty() {
        &default[..]
    } else {
        sources
    };
    // Within a source, images are taken in name order (unnamed ones last, by digest).
    let sorted = |mut roots: Vec<Root>| {
        roots.sort_by(|a, b| {
            (a.name.is_none(), &a.name, &a.digest).cmp(&(b.name.is_none(), &b.name, &b.digest))
        });
        roots
    };
    let mut providers: Vec<Box<dyn Blobs + '_>> = Vec::new();
    let mut found: Vec<(ImageInput, usize)> = Vec::new();
    for source in sources {
        let k = providers.len();
        let label = source.label();
        match source {
            Source::Store(names) => {
                let mut roots = Vec::new();
                if names.is_empty() {
                    let mut entries: Vec<_> = store
                        .entries()?
                        .into_iter()
                        .filter(|e| e.reference().is_some())
                        .collect();
                    entries.sort_by(|a, b| a.reference().cmp(&b.reference()));
                    for e in entries {
                        roots.push(Root {
                            name: e.reference().map(String::from),
                            platform: e
                                .platform
                                .as_ref()
                                .and_then(|p| serde_json::from_value(p.clone()).ok()),
                            media_type: e.media_type,
                            digest: e.digest,
                        });
                    }
                } else {
                    for n in names {
                        let e = images::resolve(store, n)?;
                        roots.push(Root {
                            name: Some(images::normalize(n)?),
                            platform: e
                                .platform
                                .as_ref()
                                .and_then(|p| serde_json::from_value(p.clone()).ok()),
                            media_type: e.media_type,
                            digest: e.digest,
                        });
                    }
                }
                let blobs = StoreBlobs(store);
                for r in roots {
                    expand(&blobs, k, &label, r, &mut found, 0)?;
                }
                providers.push(Box::new(blobs));
            }
            Source::OciLayout(dir) => {
                let p = dir.join("index.json");
                let bytes = std::fs::read(&p).map_err(io_err("read", &p))?;
                let blobs = LayoutBlobs { dir: dir.clone() };
                for r in sorted(layout_roots(&bytes, &p.display().to_string())?) {
                    expand(&blobs, k, &label, r, &mut found, 0)?;
                }
                providers.push(Box::new(blobs));
            }
            Source::DockerArchive(file) => {
                let mut blobs = ArchiveBlobs::scan(file)?;
                if let Some(bytes) = blobs.read_name("index.json")? {
                    for r in sorted(layout_roots(
                        &bytes,
                        &format!("{}: index.json", file.display()),
                    )?) {
                        expand(&blobs, k, &label, r, &mut found, 0)?;
                    }
                } else {
                    legacy_archive(&mut blobs, k, &mut found)?;
                }
                providers.push(Box::new(blobs));
            }
            Source::Registry(r) => {
                let reference = crate::image::Reference::parse(r)
                    .map_err(|e| DedupError::Registry(e.to_string()))?;
                let blobs = RegistryBlobs {
                    client: crate::registry::Client::new(options.registry.clone()),
                    repo: crate::registry::Repo::of(&reference),
                    rt: Arc::new(super::registry::runtime()),
                };
                let tag = match (&reference.digest, &reference.tag) {
                    (Some(d), _) => d.to_string(),
                    (None, Some(t)) => t.clone(),
                    (None, None) => "latest".into(),
                };
                let top = blobs
                    .rt
                    .block_on(blobs.client.get_manifest(&blobs.repo, &tag))
                    .map_err(|e| DedupError::Registry(e.to_string()))?;
                let root = Root {
                    name: Some(reference.to_string()),
                    media_type: top.media_type,
                    digest: top.digest,
                    platform: None,
                };
                expand(&blobs, k, &label, root, &mut found, 0)?;
                providers.push(Box::new(blobs));
            }
        }
    }
    if found.is_empty() {
        let what = if sources.iter().all(|s| matches!(s, Source::Store(_))) {
            "the store has no tagged image (see `wcbuild images`)"
        } else {
            "the sources hold no image"
        };
        return Err(DedupError::Empty(what.into()));
    }

    // One job per distinct diff_id: every blob (and source) that holds it, first one first.
    let mut jobs: BTreeMap<String, Candidates> = BTreeMap::new();
    for (img, source) in &found {
        for l in &img.layers {
            let foreign = !l.urls.is_empty() || media::is_foreign(&l.media_type);
            let c = jobs.entry(l.diff_id.clone()).or_default();
            if !c
                .iter()
                .any(|x| x.source == *source && x.digest == l.digest)
            {
                c.push(Candidate {
                    source: *source,
                    digest: l.digest.clone(),
                    bytes: l.bytes,
                    foreign,
                });
            }
        }
    }
    let mut indexes: HashMap<String, LayerIndex> = HashMap::new();
    let mut todo: Vec<(String, Candidates)> = Vec::new();
    let mut layers_cached = 0;
    for (diff_id, candidates) in jobs {
        if options.cache
            && let Some(idx) = cached_index(store, &diff_id)
        {
            indexes.insert(diff_id, idx);
            layers_cached += 1;
            continue;
        }
        todo.push((diff_id, candidates));
    }
    // Largest first, so that two threads finish together.
    let size_of = |c: &Candidates| c.first().map(|x| x.bytes).unwrap_or(0);
    todo.sort_by(|a, b| size_of(&b.1).cmp(&size_of(&a.1)).then(a.0.cmp(&b.0)));
    reporter.start(
        todo.len() as u64,
        todo.iter().map(|(_, c)| size_of(c)).sum(),
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(String, LayerIndex, u64)>> = Mutex::new(Vec::new());
    let failure: Mutex<Option<DedupError>> = Mutex::new(None);
    let providers = &providers;
    let index_one = |diff_id: &str,
                     candidates: &[Candidate]|
     -> Result<Option<(LayerIndex, u64)>, DedupError> {
        for Candidate {
            source,
            digest,
            bytes,
            ..
        } in candidates
        {
            let Some(blob) = providers[*source].open(digest)? else {
                continue;
            };
            let total = Arc::new(AtomicU64::new(0));
            let counted = CountingRead {
                inner: blob,
                total: Arc::clone(&total),
                reporter: Arc::clone(&reporter),
            };
            let idx = report::index_layer(
                counted,
                options.limits,
                Expected {
                    digest: (!providers[*source].verified()).then_some(digest.as_str()),
                    diff_id: Some(diff_id),
                },
            )
            .map_err(|error| DedupError::Layer {
                digest: digest.clone(),
                source_label: providers[*source].label(),
                error,
            })?;
            let read = total.load(Ordering::Relaxed);
            if read != *bytes {
                return Err(DedupError::Image(ImageError::Invalid {
                    what: format!("{digest} in {}", providers[*source].label()),
                    kind: "layer descriptor",
                    message: format!("it gives {bytes} bytes, the blob has {read}"),
                }));
            }
            // Written even with the cache off (`--no-cache` only stops reading it), as
            // `build --no-cache` still records its steps.
            if let Err(e) = write_cached_index(store, &idx) {
                tracing::warn!("could not cache the index of layer `{diff_id}`: {e}");
            }
            reporter.layer_done(diff_id);
            return Ok(Some((idx, read)));
        }
        if candidates.iter().all(|c| c.foreign) {
            tracing::info!("foreign layer `{diff_id}` is not available: its files are left out");
            return Ok(None);
        }
        let first = &candidates[0];
        Err(DedupError::Missing {
            digest: first.digest.clone(),
            source_label: providers[first.source].label(),
        })
    };
    let workers = options.threads.max(1).min(todo.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some((diff_id, candidates)) = todo.get(k) else {
                        break;
                    };
                    if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                        break;
                    }
                    tracing::info!("indexing layer {diff_id}");
                    match index_one(diff_id, candidates) {
                        Ok(Some((idx, read))) => {
                            if let Ok(mut r) = results.lock() {
                                r.push((diff_id.clone(), idx, read));
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            if let Ok(mut f) = failure.lock() {
                                f.get_or_insert(e);
                            }
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut layers_read = 0;
    let mut bytes_read = 0;
    let mut tar_bytes_read = 0;
    for (diff_id, idx, read) in results.into_inner().unwrap_or_default() {
        layers_read += 1;
        bytes_read += read;
        tar_bytes_read += idx.tar_bytes;
        indexes.insert(diff_id, idx);
    }
    let images: Vec<ImageInput> = found.into_iter().map(|(i, _)| i).collect();
    let report = report::analyze(&images, &indexes, options.top);
    Ok(DedupOutcome {
        report,
        layers_read,
        bytes_read,
        tar_bytes_read,
        layers_cached,
    })
}

/// Counts the blob bytes read, for the outcome and the reporter.
struct CountingRead {
    inner: BlobStream,
    total: Arc<AtomicU64>,
    reporter: Arc<dyn DedupReporter>,
}

impl Read for CountingRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total.fetch_add(n as u64, Ordering::Relaxed);
        self.reporter.read(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(
            Source::parse("oci-layout:/tmp/x").unwrap(),
            Source::OciLayout(PathBuf::from("/tmp/x"))
        );
        assert_eq!(
            Source::parse("oci-layout:///tmp/x").unwrap(),
            Source::OciLayout(PathBuf::from("/tmp/x"))
        );
        assert_eq!(
            Source::parse("docker-archive:a.tar").unwrap(),
            Source::DockerArchive(PathBuf::from("a.tar"))
        );
        assert_eq!(
            Source::parse("registry:ghcr.io/x/y").unwrap(),
            Source::Registry("ghcr.io/x/y".into())
        );
        assert!(Source::parse("registry:a//b").is_err());
        assert!(Source::parse("oci-layout:").is_err());
        assert!(Source::parse("/tmp/x").is_err());
    }
}
