//! Images in the store: list, inspect, tag, remove, save to and load from archives, prune.

use super::archive::TarWriter;
use crate::image::{ImageConfig, Index, Manifest, Platform, Reference, ReferenceError, media};
use crate::layer::tar::{Kind, TarReader};
use crate::store::{IndexEntry, PruneReport, Store, StoreError};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The annotation docker and containerd use for an image's full name in archives.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// What can go wrong with images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A reference does not parse.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// No image has this name.
    #[error("no image `{0}` in the store (see `wcbuild images`)")]
    NotFound(String),
    /// A document in the store or an archive is not what it claims.
    #[error("`{what}` is not a valid {kind}: {message}")]
    Invalid {
        /// The digest or path.
        what: String,
        /// Manifest, index, config, archive.
        kind: &'static str,
        /// Why.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{op} `{path}`: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

pub(crate) fn io_err(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ImageError + use<> {
    let path = path.to_path_buf();
    move |source| ImageError::Io { op, path, source }
}

/// Parses a user's image name into the full reference the store tags with.
pub fn normalize(name: &str) -> Result<String, ImageError> {
    Ok(Reference::parse(name)?.to_string())
}

/// Finds a tagged image.
pub fn resolve(store: &Store, name: &str) -> Result<IndexEntry, ImageError> {
    let full = normalize(name)?;
    store
        .lookup(&full)?
        .ok_or_else(|| ImageError::NotFound(name.to_string()))
}

fn read_json<T: serde::de::DeserializeOwned>(
    store: &Store,
    digest: &str,
    kind: &'static str,
) -> Result<T, ImageError> {
    let bytes = store.read_blob(digest)?;
    serde_json::from_slice(&bytes).map_err(|e| ImageError::Invalid {
        what: digest.to_string(),
        kind,
        message: e.to_string(),
    })
}

/// One line of `wcbuild images`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageRow {
    /// Full reference.
    pub reference: String,
    /// Manifest or index digest.
    pub digest: String,
    /// Manifest or index media type.
    pub media_type: String,
    /// The platforms it holds (with os.version).
    pub platforms: Vec<String>,
    /// Its size as Docker shows it: the uncompressed tars of its distinct layers (a layer whose
    /// uncompressed size is not known yet counts its blob).
    pub size: u64,
    /// Bytes of every distinct blob it references, as stored.
    pub stored: u64,
    /// What a push would send at most (config, manifests and every layer compressed), when it
    /// is known: layers kept uncompressed count only once their compressed form exists.
    pub push: Option<u64>,
}

/// What [`describe`] finds.
struct Described {
    platforms: Vec<String>,
    size: u64,
    stored: u64,
    push: Option<u64>,
}

/// The platforms and sizes of a manifest or index.
fn describe(store: &Store, entry_media: &str, digest: &str) -> Result<Described, ImageError> {
    let mut platforms = Vec::new();
    // Distinct blobs: digest → (stored bytes, uncompressed bytes, bytes a push sends).
    let mut blobs: BTreeMap<String, (u64, u64, Option<u64>)> = BTreeMap::new();
    let mut todo = vec![(
        entry_media.to_string(),
        digest.to_string(),
        None::<Platform>,
    )];
    while let Some((mt, d, plat)) = todo.pop() {
        let size = store.blob_size(&d)?.unwrap_or(0);
        blobs.insert(d.clone(), (size, 0, Some(size)));
        if media::is_index(&mt) {
            let idx: Index = read_json(store, &d, "index")?;
            for m in idx.manifests {
                if store.blob_size(&m.digest)?.is_some() {
                    todo.push((m.media_type, m.digest, m.platform));
                }
            }
        } else {
            let m: Manifest = read_json(store, &d, "manifest")?;
            let config: ImageConfig = read_json(store, &m.config.digest, "config")?;
            let p = plat
                .filter(|p| p.os_version.is_some())
                .unwrap_or_else(|| config.platform());
            platforms.push(p.to_string());
            blobs.insert(
                m.config.digest.clone(),
                (m.config.size, 0, Some(m.config.size)),
            );
            for (i, l) in m.layers.into_iter().enumerate() {
                let diff_id = config.rootfs.diff_ids.get(i).cloned().unwrap_or_default();
                let tar = store.layer_size(&diff_id).unwrap_or(l.size);
                let push = if l.media_type == media::OCI_LAYER {
                    store
                        .compressed(&l.digest, crate::layer::Compression::DEFAULT.media_type())?
                        .map(|(_, s)| s)
                } else {
                    Some(l.size)
                };
                let stored = if store.blob_size(&l.digest)?.is_some() {
                    l.size
                } else {
                    0
                };
                blobs.insert(l.digest, (stored, tar, push));
            }
        }
    }
    platforms.sort();
    Ok(Described {
        platforms,
        size: blobs.values().map(|b| b.1).sum(),
        stored: blobs.values().map(|b| b.0).sum(),
        push: blobs.values().map(|b| b.2).sum(),
    })
}

/// Every tagged image.
pub fn list(store: &Store) -> Result<Vec<ImageRow>, ImageError> {
    let mut rows = Vec::new();
    for e in store.entries()? {
        let Some(reference) = e.reference().map(String::from) else {
            continue;
        };
        let d = describe(store, &e.media_type, &e.digest)?;
        rows.push(ImageRow {
            reference,
            digest: e.digest,
            media_type: e.media_type,
            platforms: d.platforms,
            size: d.size,
            stored: d.stored,
            push: d.push,
        });
    }
    rows.sort_by(|a, b| a.reference.cmp(&b.reference));
    Ok(rows)
}

/// `wcbuild inspect`: the manifest (or index) and config exactly as stored.
pub fn inspect(store: &Store, name: &str) -> Result<serde_json::Value, ImageError> {
    let e = resolve(store, name)?;
    let manifest: serde_json::Value = read_json(store, &e.digest, "manifest")?;
    let config = if media::is_index(&e.media_type) {
        serde_json::Value::Null
    } else {
        match manifest["config"]["digest"].as_str() {
            Some(d) => read_json(store, d, "config")?,
            None => serde_json::Value::Null,
        }
    };
    Ok(json!({
        "reference": e.reference(),
        "digest": e.digest,
        "manifest": manifest,
        "config": config,
    }))
}

/// `wcbuild tag SRC DST`.
pub fn tag(store: &Store, src: &str, dst: &str) -> Result<String, ImageError> {
    let e = resolve(store, src)?;
    let full = normalize(dst)?;
    store.tag(&full, e)?;
    Ok(full)
}

/// `wcbuild rmi REF...`: removes names (blobs go at the next prune).
pub fn remove(store: &Store, names: &[String]) -> Result<Vec<String>, ImageError> {
    let mut removed = Vec::new();
    for n in names {
        let full = normalize(n)?;
        if !store.untag(&full)? {
            return Err(ImageError::NotFound(n.clone()));
        }
        removed.push(full);
    }
    Ok(removed)
}

/// `wcbuild prune`: removes blobs no tag reaches. Layers the build cache refers to are kept
/// unless `drop_cache`, which removes the build cache first.
pub fn prune(store: Store, drop_cache: bool) -> Result<PruneReport, ImageError> {
    prune_waiting(store, drop_cache, || {})
}

/// [`prune`], calling `waiting` when another wcbuild has the store open and prune waits for
/// it to finish (prune needs the store to itself: it never removes what a build uses).
pub fn prune_waiting(
    store: Store,
    drop_cache: bool,
    waiting: impl FnOnce(),
) -> Result<PruneReport, ImageError> {
    // The cache records are read (or dropped) once no build can add any.
    let store = store.into_exclusive(waiting)?;
    let roots = if drop_cache {
        store.drop_build_cache()?;
        store.remove_cache_mounts()?;
        Vec::new()
    } else {
        store.step_roots()
    };
    Ok(store.prune(&roots)?)
}

/// Archive formats for `save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    /// An OCI image layout in a tar.
    Oci,
    /// What `docker save` writes: an OCI layout plus `manifest.json` and `repositories`,
    /// which every `docker load` reads.
    Docker,
}

/// The blobs an image reaches, in a stable order; foreign layers absent from the store are
/// left out (their descriptors keep their `urls`).
fn reachable(
    store: &Store,
    media_type: &str,
    digest: &str,
) -> Result<Vec<(String, u64)>, ImageError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut todo = vec![(media_type.to_string(), digest.to_string())];
    while let Some((mt, d)) = todo.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let Some(size) = store.blob_size(&d)? else {
            if media::is_foreign(&mt) {
                continue;
            }
            return Err(StoreError::BlobNotFound(d).into());
        };
        out.push((d.clone(), size));
        if media::is_index(&mt) {
            let idx: Index = read_json(store, &d, "index")?;
            for m in idx.manifests {
                todo.push((m.media_type, m.digest));
            }
        } else if media::is_manifest(&mt) {
            let m: Manifest = read_json(store, &d, "manifest")?;
            todo.push((m.config.media_type, m.config.digest));
            for l in m.layers {
                todo.push((l.media_type, l.digest));
            }
        }
    }
    Ok(out)
}

/// `wcbuild save`: writes the named images to `out` as a tar archive.
pub fn save(
    store: &Store,
    names: &[String],
    format: SaveFormat,
    out: impl Write,
) -> Result<(), ImageError> {
    let mut images = Vec::new();
    for n in names {
        images.push((Some(Reference::parse(n)?), resolve(store, n)?));
    }
    save_entries(store, &images, format, out)
}

/// Writes images given by descriptor (with the name to give them, if any) as an archive.
pub fn save_entries(
    store: &Store,
    images: &[(Option<Reference>, IndexEntry)],
    format: SaveFormat,
    out: impl Write,
) -> Result<(), ImageError> {
    let mut entries = Vec::new();
    let mut blobs: BTreeMap<String, u64> = BTreeMap::new();
    let mut docker_manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (r, e) in images {
        for (d, s) in reachable(store, &e.media_type, &e.digest)? {
            blobs.insert(d, s);
        }
        let mut annotations = BTreeMap::new();
        if let Some(r) = r {
            annotations.insert(CONTAINERD_NAME_ANNOTATION.to_string(), r.to_string());
            if let Some(t) = &r.tag {
                annotations.insert(crate::store::REF_NAME_ANNOTATION.to_string(), t.clone());
            }
        }
        entries.push(json!({
            "mediaType": e.media_type,
            "digest": e.digest,
            "size": e.size,
            "annotations": annotations,
        }));
        if format == SaveFormat::Docker {
            // docker load takes one platform image per entry: the host's, else the first.
            let (manifest_digest, manifest) = pick_manifest(store, e)?;
            let tag = r.as_ref().map(|r| r.familiar()).unwrap_or_default();
            let layers: Vec<String> = manifest
                .layers
                .iter()
                .map(|l| format!("blobs/sha256/{}", l.digest.trim_start_matches("sha256:")))
                .collect();
            if let (Some(t), Some(last)) = (
                r.as_ref().and_then(|r| r.tag.as_ref()),
                manifest.layers.last(),
            ) {
                let repo = tag
                    .rsplit_once(':')
                    .map(|x| x.0)
                    .unwrap_or(&tag)
                    .to_string();
                repositories.entry(repo).or_default().insert(
                    t.clone(),
                    last.digest.trim_start_matches("sha256:").to_string(),
                );
            }
            let _ = manifest_digest;
            docker_manifest.push(json!({
                "Config": format!("blobs/sha256/{}", manifest.config.digest.trim_start_matches("sha256:")),
                "RepoTags": if r.as_ref().is_some_and(|r| r.tag.is_some()) { vec![tag] } else { Vec::new() },
                "Layers": layers,
            }));
        }
    }
    let mut w = TarWriter::new(out);
    let tar = |e: std::io::Error| ImageError::Io {
        op: "write archive",
        path: PathBuf::from("-"),
        source: e,
    };
    w.dir("blobs").map_err(tar)?;
    w.dir("blobs/sha256").map_err(tar)?;
    for (d, size) in &blobs {
        let mut f = store.open_blob(d)?;
        w.file(
            &format!("blobs/sha256/{}", d.trim_start_matches("sha256:")),
            *size,
            &mut f,
        )
        .map_err(tar)?;
    }
    let index = json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": entries});
    w.bytes(
        "index.json",
        &serde_json::to_vec(&index).unwrap_or_default(),
    )
    .map_err(tar)?;
    if format == SaveFormat::Docker {
        w.bytes(
            "manifest.json",
            &serde_json::to_vec(&docker_manifest).unwrap_or_default(),
        )
        .map_err(tar)?;
        w.bytes(
            "repositories",
            &serde_json::to_vec(&repositories).unwrap_or_default(),
        )
        .map_err(tar)?;
    }
    w.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(tar)?;
    w.finish().map_err(tar)?;
    Ok(())
}

/// The manifest of an entry, or for an index the entry matching this host (else the first).
fn pick_manifest(store: &Store, e: &IndexEntry) -> Result<(String, Manifest), ImageError> {
    if !media::is_index(&e.media_type) {
        return Ok((e.digest.clone(), read_json(store, &e.digest, "manifest")?));
    }
    let idx: Index = read_json(store, &e.digest, "index")?;
    let host = Platform::host();
    let candidates: Vec<Option<&Platform>> =
        idx.manifests.iter().map(|m| m.platform.as_ref()).collect();
    let i = crate::image::platform::choose(&host, &candidates).unwrap_or(0);
    let m = idx.manifests.get(i).ok_or_else(|| ImageError::Invalid {
        what: e.digest.clone(),
        kind: "index",
        message: "it lists no manifest".into(),
    })?;
    Ok((m.digest.clone(), read_json(store, &m.digest, "manifest")?))
}

/// One image `load` put into the store.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The name it was tagged with (`None` when the archive gave none).
    pub reference: Option<String>,
    /// Its manifest or index digest.
    pub digest: String,
}

const MAX_META: u64 = 32 * 1024 * 1024;

fn detect_layer_media(store: &Store, digest: &str) -> Result<&'static str, ImageError> {
    let mut f = store.open_blob(digest)?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).unwrap_or(0);
    Ok(if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        media::OCI_LAYER_GZIP
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        media::OCI_LAYER_ZSTD
    } else {
        media::OCI_LAYER
    })
}

/// `wcbuild load -i FILE`: reads an OCI layout tar, a `docker save` tar (either layout), or
/// an OCI layout directory, verifying every blob against its digest.
pub fn load(store: &Store, path: &Path) -> Result<Vec<Loaded>, ImageError> {
    let mut meta: HashMap<String, Vec<u8>> = HashMap::new();
    let mut files: HashMap<String, (String, u64)> = HashMap::new();
    if path.is_dir() {
        for name in ["index.json", "oci-layout", "manifest.json", "repositories"] {
            let p = path.join(name);
            if p.is_file() {
                meta.insert(name.into(), std::fs::read(&p).map_err(io_err("read", &p))?);
            }
        }
        let blobs = path.join("blobs/sha256");
        if blobs.is_dir() {
            for e in std::fs::read_dir(&blobs).map_err(io_err("read directory", &blobs))? {
                let e = e.map_err(io_err("read directory", &blobs))?;
                let hex = e.file_name().to_string_lossy().into_owned();
                let p = e.path();
                let f = std::fs::File::open(&p).map_err(io_err("open", &p))?;
                let size = f.metadata().map_err(io_err("stat", &p))?.len();
                let d = store.put_reader(f, Some(&format!("sha256:{hex}")), Some(size))?;
                files.insert(format!("blobs/sha256/{hex}"), (d, size));
            }
        }
    } else {
        let f = std::fs::File::open(path).map_err(io_err("open", path))?;
        let mut tar = TarReader::new(std::io::BufReader::with_capacity(1 << 20, f));
        loop {
            let entry = match tar.next_entry() {
                Ok(Some(e)) => e.header,
                Ok(None) => break,
                Err(e) => {
                    return Err(ImageError::Invalid {
                        what: path.display().to_string(),
                        kind: "image archive",
                        message: e.to_string(),
                    });
                }
            };
            if entry.kind != Kind::File {
                continue;
            }
            let mut name = entry.path.as_str();
            while let Some(r) = name.strip_prefix("./") {
                name = r;
            }
            let name = name.to_string();
            let is_meta = matches!(
                name.as_str(),
                "index.json" | "oci-layout" | "manifest.json" | "repositories"
            ) || (name.ends_with(".json") && !name.contains('/'));
            if is_meta && entry.size <= MAX_META {
                let mut buf = Vec::with_capacity(entry.size as usize);
                tar.content()
                    .read_to_end(&mut buf)
                    .map_err(io_err("read archive", path))?;
                let d = store.put_blob(&buf, None)?;
                files.insert(name.clone(), (d, entry.size));
                meta.insert(name, buf);
                continue;
            }
            let expected = name
                .strip_prefix("blobs/sha256/")
                .map(|hex| format!("sha256:{hex}"));
            let d = store.put_reader(tar.content(), expected.as_deref(), Some(entry.size))?;
            files.insert(name, (d, entry.size));
        }
    }
    let invalid = |message: String| ImageError::Invalid {
        what: path.display().to_string(),
        kind: "image archive",
        message,
    };
    let mut loaded = Vec::new();
    if let Some(bytes) = meta.get("index.json") {
        let idx: Index =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("index.json: {e}")))?;
        for m in idx.manifests {
            if store.blob_size(&m.digest)?.is_none() {
                return Err(invalid(format!(
                    "index.json names `{}`, which the archive does not hold",
                    m.digest
                )));
            }
            let name = m
                .annotations
                .get(CONTAINERD_NAME_ANNOTATION)
                .cloned()
                .or_else(|| {
                    m.annotations
                        .get(crate::store::REF_NAME_ANNOTATION)
                        .filter(|r| r.contains('/') || r.contains(':') || r.contains('@'))
                        .cloned()
                });
            let reference = match name {
                Some(n) => {
                    let full = normalize(&n)?;
                    let mut e = IndexEntry::new(&m.media_type, &m.digest, m.size);
                    e.platform = m
                        .platform
                        .as_ref()
                        .and_then(|p| serde_json::to_value(p).ok());
                    store.tag(&full, e)?;
                    Some(full)
                }
                None => None,
            };
            loaded.push(Loaded {
                reference,
                digest: m.digest,
            });
        }
        return Ok(loaded);
    }
    let Some(bytes) = meta.get("manifest.json") else {
        return Err(invalid("neither index.json nor manifest.json found".into()));
    };
    #[derive(serde::Deserialize)]
    struct DockerItem {
        #[serde(rename = "Config")]
        config: String,
        #[serde(rename = "RepoTags", default)]
        repo_tags: Option<Vec<String>>,
        #[serde(rename = "Layers", default)]
        layers: Vec<String>,
    }
    let items: Vec<DockerItem> =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("manifest.json: {e}")))?;
    for item in items {
        let lookup = |p: &str| {
            files
                .get(p.trim_start_matches("./"))
                .cloned()
                .ok_or_else(|| {
                    invalid(format!(
                        "manifest.json names `{p}`, which the archive does not hold"
                    ))
                })
        };
        let (config_digest, config_size) = lookup(&item.config)?;
        let mut layers = Vec::new();
        for l in &item.layers {
            let (d, s) = lookup(l)?;
            layers
                .push(json!({"mediaType": detect_layer_media(store, &d)?, "digest": d, "size": s}));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let d = store.put_blob(&bytes, None)?;
        let config: ImageConfig = read_json(store, &config_digest, "config")?;
        let mut tagged = false;
        for t in item.repo_tags.unwrap_or_default() {
            let full = normalize(&t)?;
            let mut e = IndexEntry::new(media::OCI_MANIFEST, &d, bytes.len() as u64);
            e.platform = serde_json::to_value(config.platform()).ok();
            store.tag(&full, e)?;
            loaded.push(Loaded {
                reference: Some(full),
                digest: d.clone(),
            });
            tagged = true;
        }
        if !tagged {
            loaded.push(Loaded {
                reference: None,
                digest: d,
            });
        }
    }
    Ok(loaded)
}

/// The manifest (or index) an image leaves the machine as: the same one, unless some of its
/// layers are kept uncompressed in the store (local builds keep them so, as Docker does); those
/// are compressed once (gzip, in parallel blocks, remembered by diff_id) and a manifest naming
/// the compressed blobs is stored and returned. Pushes and build cache exports use it;
/// archives (`save`) keep the store's bytes, so a save and a load give back the same digests.
pub fn distributable(store: &Store, digest: &str, media_type: &str) -> Result<String, ImageError> {
    let mut v: serde_json::Value = read_json(store, digest, "manifest")?;
    let mut changed = false;
    if media::is_index(media_type) {
        if let Some(list) = v["manifests"].as_array_mut() {
            for m in list {
                let (Some(d), Some(mt)) = (m["digest"].as_str(), m["mediaType"].as_str()) else {
                    continue;
                };
                if !media::is_manifest(mt) || store.blob_size(d)?.is_none() {
                    continue;
                }
                let nd = distributable(store, d, mt)?;
                if nd != d {
                    m["size"] = store.blob_size(&nd)?.unwrap_or(0).into();
                    m["digest"] = nd.into();
                    changed = true;
                }
            }
        }
    } else if let Some(layers) = v["layers"].as_array_mut() {
        for l in layers {
            let (Some(d), Some(mt)) = (l["digest"].as_str(), l["mediaType"].as_str()) else {
                continue;
            };
            if mt != media::OCI_LAYER {
                continue;
            }
            let c = compressed_layer(store, d, crate::layer::Compression::Gzip(6))?;
            l["mediaType"] = c.media_type.into();
            l["digest"] = c.digest.into();
            l["size"] = c.size.into();
            changed = true;
        }
    }
    if !changed {
        return Ok(digest.to_string());
    }
    let out = serde_json::to_vec(&v).expect("JSON values serialize");
    Ok(store.put_blob(&out, None)?)
}

/// The layer `layer` (whose uncompressed tar is `diff_id`) in `compression`: itself when it
/// already is; else its uncompressed form (decompressed once into the store, verified against
/// the diff_id) and, for gzip or zstd, the compressed form made once from that.
pub fn layer_in(
    store: &Store,
    layer: &crate::image::Descriptor,
    diff_id: &str,
    compression: crate::layer::Compression,
) -> Result<crate::image::Descriptor, ImageError> {
    if layer.media_type == compression.media_type() {
        return Ok(layer.clone());
    }
    let size = match store.blob_size(diff_id)? {
        Some(size) => size,
        None => {
            let blob = store.open_blob(&layer.digest)?;
            let mut tar = crate::layer::reader::open(
                std::io::BufReader::with_capacity(1 << 20, blob),
                crate::layer::ReadLimits::default(),
            )
            .map_err(io_err("decompress layer", Path::new(&layer.digest)))?;
            let mut w = store.blob_writer()?;
            std::io::copy(&mut tar, &mut w)
                .map_err(io_err("decompress layer", Path::new(&layer.digest)))?;
            let size = w.size();
            // The store refuses bytes that are not the diff_id.
            w.commit(Some(diff_id), None)?;
            size
        }
    };
    store.remember_layer_size(diff_id, size);
    if compression == crate::layer::Compression::None {
        return Ok(crate::image::Descriptor::new(
            compression.media_type(),
            diff_id,
            size,
        ));
    }
    compressed_layer(store, diff_id, compression)
}

/// The compressed blob of an uncompressed layer blob, made once and remembered: the first
/// call compresses (streaming, hashing as it writes) and records `diff_id → digest`; later
/// calls return the record. This is what a push or an export of an image whose layers are
/// kept uncompressed uses.
pub fn compressed_layer(
    store: &Store,
    uncompressed: &str,
    compression: crate::layer::Compression,
) -> Result<crate::image::Descriptor, ImageError> {
    let media_type = compression.media_type();
    if let Some((digest, size)) = store.compressed(uncompressed, media_type)? {
        return Ok(crate::image::Descriptor::new(media_type, &digest, size));
    }
    let mut input = std::io::BufReader::with_capacity(1 << 20, store.open_blob(uncompressed)?);
    let mut writer = store.blob_writer()?;
    let (digest, size) = crate::layer::compress_stream(&mut input, &mut writer, compression, 2)
        .map_err(|e| ImageError::Io {
            op: "compress layer",
            path: PathBuf::from(uncompressed),
            source: e,
        })?;
    let stored = writer.commit(Some(&digest), Some(size))?;
    store.remember_compressed(uncompressed, media_type, &stored, size)?;
    Ok(crate::image::Descriptor::new(media_type, &stored, size))
}
