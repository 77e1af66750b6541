//! The dedup analysis: from a set of images (their layer descriptors and history) and the file
//! index of each layer, every metric of `docs/dedup.md` (blob level and file level). Pure: no
//! I/O, the same input always gives the same report.

use super::index::{EntryKind, LayerIndex};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// The JSON schema version of [`Report`]. Fields are only ever added within a version; a
/// change in meaning or a removal bumps it.
pub const SCHEMA: u32 = 1;

/// One layer of an image, as the analysis needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInput {
    /// The blob digest (compressed, as in the manifest).
    pub digest: String,
    /// The descriptor's media type.
    pub media_type: String,
    /// The blob's size (compressed).
    pub bytes: u64,
    /// The config's diff_id for this layer.
    pub diff_id: String,
    /// Where else the blob may be fetched (foreign layers).
    pub urls: Vec<String>,
    /// The `created_by` of the history entry that made this layer.
    pub created_by: Option<String>,
}

/// One platform image of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInput {
    /// Its names, the one to show first (a reference, or `ref [os/arch:version]` for an
    /// index's child).
    pub names: Vec<String>,
    /// Where it was read from (`store`, `oci-layout:DIR`, `docker-archive:FILE`).
    pub source: String,
    /// The manifest digest.
    pub digest: String,
    /// The manifest's size.
    pub manifest_bytes: u64,
    /// The config digest.
    pub config_digest: String,
    /// The config's size.
    pub config_bytes: u64,
    /// `os`.
    pub os: String,
    /// `architecture`.
    pub architecture: String,
    /// `variant`.
    pub variant: Option<String>,
    /// `os.version`.
    pub os_version: Option<String>,
    /// The layers, base first.
    pub layers: Vec<LayerInput>,
}

impl ImageInput {
    /// The name shown for the image.
    pub fn name(&self) -> &str {
        self.names
            .first()
            .map(String::as_str)
            .unwrap_or(&self.digest)
    }

    /// `os/arch[/variant][:os.version]`.
    pub fn platform(&self) -> String {
        let mut s = format!("{}/{}", self.os, self.architecture);
        if let Some(v) = &self.variant {
            s.push('/');
            s.push_str(v);
        }
        if let Some(v) = &self.os_version {
            s.push(':');
            s.push_str(v);
        }
        s
    }

    /// The group images are compared within for incremental pulls: `os/arch`, and for
    /// Windows the build too (`windows/amd64 build 20348`), since layers never cross builds.
    pub fn group(&self) -> String {
        let mut s = format!("{}/{}", self.os, self.architecture);
        if let Some(v) = &self.variant {
            s.push('/');
            s.push_str(v);
        }
        if self.os == "windows"
            && let Some(b) = self
                .os_version
                .as_deref()
                .and_then(crate::image::WindowsVersion::parse)
        {
            s.push_str(&format!(" build {}", b.build));
        }
        s
    }
}

/// A pair of sizes: the blobs as stored or pulled (compressed) and as unpacked (the tar).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sizes {
    /// Bytes of the blobs (compressed).
    pub compressed: u64,
    /// Bytes of the uncompressed tars.
    pub uncompressed: u64,
}

impl Sizes {
    fn add(&mut self, c: u64, u: u64) {
        self.compressed += c;
        self.uncompressed += u;
    }
}

/// A pair of ratios, compressed and uncompressed.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Ratios {
    /// On compressed sizes.
    pub compressed: f64,
    /// On uncompressed sizes.
    pub uncompressed: f64,
}

/// The whole report (`"schema": 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: u32,
    /// Totals over the set.
    pub summary: Summary,
    /// Each platform image.
    pub images: Vec<ImageReport>,
    /// Each distinct layer blob.
    pub layers: Vec<LayerReport>,
    /// Incremental pull matrices, one per group (`os/arch`, Windows build).
    pub incremental_pull: Vec<PullGroup>,
    /// diff_ids stored as several compressed blobs.
    pub missed_dedup: Vec<MissedDedup>,
    /// Foreign (non-distributable) layers.
    pub foreign: Vec<ForeignLayer>,
    /// Identical file contents stored more than once.
    pub duplicates: Duplicates,
    /// The largest hidden or rewritten files, largest first.
    pub offenders: Vec<Offender>,
}

/// Totals over the set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Platform images in the set.
    pub images: u64,
    /// Distinct layer blobs.
    pub layers: u64,
    /// Σ over images of the sizes of their (distinct) layer blobs.
    pub logical_bytes: Sizes,
    /// Σ over distinct layer blobs.
    pub stored_bytes: Sizes,
    /// logical − stored.
    pub dedup_savings: Sizes,
    /// logical ÷ stored (1 when nothing is stored).
    pub dedup_ratio: Ratios,
    /// Σ over distinct config blobs (not in the figures above).
    pub config_bytes: u64,
    /// Σ over distinct manifests (not in the figures above).
    pub manifest_bytes: u64,
    /// Σ over diff_ids stored as ≥2 blobs of (Σ blob sizes − the smallest).
    pub missed_dedup_bytes: u64,
    /// Σ over distinct foreign layer blobs.
    pub foreign_bytes: u64,
    /// Σ over images of their file bytes in all layers.
    pub file_bytes: u64,
    /// Σ over images of their wasted bytes.
    pub wasted_bytes: u64,
    /// Layers whose blob was not available to index (foreign layers not pulled); the file
    /// figures of the images using them leave them out.
    pub unindexed_layers: u64,
}

/// One platform image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageReport {
    /// The name shown.
    pub name: String,
    /// Every name it has in the inputs.
    pub names: Vec<String>,
    /// Where it was read from.
    pub source: String,
    /// Manifest digest.
    pub digest: String,
    /// `os/arch[:os.version]`.
    pub platform: String,
    /// The incremental-pull group.
    pub group: String,
    /// Its layers, base first.
    pub layers: Vec<ImageLayer>,
    /// Σ of its (distinct) layers: what a pull costs with nothing present.
    pub pull_bytes: Sizes,
    /// Σ of its layers that another image of the set also uses.
    pub shared_bytes: Sizes,
    /// Σ of its layers no other image of the set uses.
    pub unique_bytes: Sizes,
    /// Σ of its layers' sizes divided by their refcount (integer bytes, remainders given to
    /// the first images using the layer, so that the images add up to `stored_bytes`).
    pub amortized_bytes: Sizes,
    /// File-level figures.
    pub files: FileMetrics,
}

/// One layer of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageLayer {
    /// Position, 0 = base.
    pub index: u64,
    /// Blob digest.
    pub digest: String,
    /// diff_id.
    pub diff_id: String,
    /// Blob size.
    pub compressed_bytes: u64,
    /// Tar size (0 when not indexed).
    pub uncompressed_bytes: u64,
    /// Images of the set using this blob.
    pub refcount: u64,
    /// The history entry's `created_by`.
    pub created_by: Option<String>,
}

/// File-level figures of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FileMetrics {
    /// Σ of every regular file's size in every layer.
    pub file_bytes: u64,
    /// Σ of the sizes of the files in the final root file system.
    pub visible_bytes: u64,
    /// Σ of file versions a later layer hides by adding the same path again.
    pub overwritten_bytes: u64,
    /// Σ of file versions a later whiteout or opaque directory removes.
    pub deleted_bytes: u64,
    /// overwritten + deleted: shipped but invisible, reclaimable by squashing.
    pub wasted_bytes: u64,
    /// wasted ÷ file bytes (0 when there are no file bytes).
    pub wasted_ratio: f64,
    /// visible ÷ file bytes (1 when there are no file bytes).
    pub efficiency: f64,
    /// Σ of files re-added with the same path, content and mode (metadata-only churn).
    pub unchanged_rewrite_bytes: u64,
    /// Identical content in several layers of this image: Σ (layers − 1) · size.
    pub dup_across_layers_bytes: u64,
    /// Windows: Σ of registry hive files (`Hives/`) in all layers (part of `file_bytes`).
    pub hive_bytes: u64,
    /// Windows: Σ of hive versions a later layer's hive of the same name hides (part of
    /// `overwritten_bytes`).
    pub hive_overwritten_bytes: u64,
    /// False when a layer could not be indexed (its files are left out).
    pub complete: bool,
}

/// One distinct layer blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    /// Blob digest.
    pub digest: String,
    /// diff_id.
    pub diff_id: String,
    /// Media type (as the first image using it lists it).
    pub media_type: String,
    /// Blob size.
    pub compressed_bytes: u64,
    /// Tar size (0 when not indexed).
    pub uncompressed_bytes: u64,
    /// Images using it.
    pub refcount: u64,
    /// Indexes (into `images`) of the images using it.
    pub images: Vec<u64>,
    /// Foreign (non-distributable media type or `urls`).
    pub foreign: bool,
    /// True when its files were indexed.
    pub indexed: bool,
    /// Regular files in it.
    pub files: u64,
    /// Σ of its regular files' sizes.
    pub file_bytes: u64,
    /// Identical content within this layer: Σ (copies − 1) · size.
    pub dup_within_bytes: u64,
}

/// The incremental pull matrix of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullGroup {
    /// `os/arch`, plus the Windows build.
    pub group: String,
    /// The images (names) of the group, in report order.
    pub images: Vec<String>,
    /// `bytes[i][j]`: compressed bytes to pull `images[i]` when `images[j]` is present.
    pub bytes: Vec<Vec<u64>>,
}

/// One diff_id stored as several compressed blobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MissedDedup {
    /// The diff_id.
    pub diff_id: String,
    /// Its blobs.
    pub blobs: Vec<BlobSize>,
    /// Σ blob sizes − the smallest.
    pub missed_bytes: u64,
}

/// A blob and its size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobSize {
    /// Digest.
    pub digest: String,
    /// Media type.
    pub media_type: String,
    /// Size.
    pub bytes: u64,
}

/// A foreign layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForeignLayer {
    /// Digest.
    pub digest: String,
    /// Media type.
    pub media_type: String,
    /// Size.
    pub bytes: u64,
    /// Its URLs.
    pub urls: Vec<String>,
}

/// Identical file contents stored more than once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Duplicates {
    /// (a) Within one layer (hard-link candidates): Σ over distinct layers of Σ (copies − 1)
    /// · size.
    pub within_layer_bytes: u64,
    /// (b) Across layers of one image: Σ over images of Σ (layers holding it − 1) · size.
    pub across_layers_bytes: u64,
    /// (c) Across images outside shared layers (common base-layer candidates): Σ over
    /// contents of (images holding it in a layer of their own − 1) · size.
    pub across_images_bytes: u64,
    /// The contents with the most redundant bytes over the distinct layers of the set.
    pub groups: Vec<DupGroup>,
}

/// One content stored several times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DupGroup {
    /// sha256 of the content.
    pub sha256: String,
    /// Its size.
    pub size: u64,
    /// Copies over the distinct layers of the set.
    pub copies: u64,
    /// (copies − 1) · size.
    pub redundant_bytes: u64,
    /// Where (at most 10 places).
    pub locations: Vec<Location>,
}

/// A file in a layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// The first image using the layer.
    pub image: String,
    /// The layer's position in that image.
    pub layer: u64,
    /// The path in the layer.
    pub path: String,
    /// The history entry that made the layer.
    pub created_by: Option<String>,
}

/// What makes a file an offender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffenderKind {
    /// Hidden by the same path in a later layer.
    Overwritten,
    /// Removed by a later whiteout or opaque directory.
    Deleted,
    /// Re-added with the same content and mode.
    UnchangedRewrite,
}

/// A file version shipped but hidden (or rewritten for nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offender {
    /// What it is.
    pub kind: OffenderKind,
    /// The image.
    pub image: String,
    /// The path in the layer.
    pub path: String,
    /// The layer that added it (position in the image).
    pub layer: u64,
    /// Its size.
    pub bytes: u64,
    /// The `created_by` of the history entry that added it.
    pub created_by: Option<String>,
    /// The layer that hid it (for a rewrite: the layer that rewrote it).
    pub hidden_by_layer: u64,
    /// The `created_by` of that layer.
    pub hidden_by: Option<String>,
}

struct Blob {
    digest: String,
    media_type: String,
    bytes: u64,
    diff_id: String,
    urls: Vec<String>,
    foreign: bool,
    /// The media type an image lists it with as a foreign layer, if one does.
    foreign_media_type: Option<String>,
    images: Vec<usize>,
}

#[derive(Clone, Copy)]
struct Live<'a> {
    /// The path as the layer wrote it (the key may be case-folded).
    path: &'a str,
    layer: usize,
    size: u64,
    sha: Option<&'a str>,
    mode: u32,
    kind: EntryKind,
}

fn ratio(num: u64, den: u64, empty: f64) -> f64 {
    if den == 0 {
        empty
    } else {
        num as f64 / den as f64
    }
}

/// The key a path is tracked under: Windows file systems ignore case, so `Files/Windows/x.dll`
/// and `Files/WINDOWS/X.DLL` are one file there.
fn path_key(path: &str, windows: bool) -> Cow<'_, str> {
    if windows && path.chars().any(char::is_uppercase) {
        Cow::Owned(path.to_lowercase())
    } else {
        Cow::Borrowed(path)
    }
}

type Tree<'a> = BTreeMap<Cow<'a, str>, Live<'a>>;

/// Removes `key` (when `with_self`) and everything under it; returns what was removed.
fn remove_tree<'a>(state: &mut Tree<'a>, key: &str, with_self: bool) -> Vec<Live<'a>> {
    let mut keys: Vec<Cow<'a, str>> = Vec::new();
    if key.is_empty() {
        keys.extend(state.keys().cloned());
    } else {
        if with_self && let Some((k, _)) = state.get_key_value(key) {
            keys.push(k.clone());
        }
        let lo = format!("{key}/");
        let hi = format!("{key}0");
        keys.extend(
            state
                .range::<str, _>((
                    std::ops::Bound::Included(lo.as_str()),
                    std::ops::Bound::Excluded(hi.as_str()),
                ))
                .map(|(k, _)| k.clone()),
        );
    }
    keys.into_iter()
        .filter_map(|k| state.remove(k.as_ref()))
        .collect()
}

/// Computes the report. `indexes` maps diff_ids to layer indexes; a layer without one is
/// counted at blob level only. `top` bounds the offender and duplicate lists.
pub fn analyze(images: &[ImageInput], indexes: &HashMap<String, LayerIndex>, top: usize) -> Report {
    // Distinct blobs, in order of first use.
    let mut blobs: Vec<Blob> = Vec::new();
    let mut by_digest: HashMap<&str, usize> = HashMap::new();
    let mut image_blobs: Vec<Vec<usize>> = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let mut mine: Vec<usize> = Vec::new();
        for l in &img.layers {
            let b = *by_digest.entry(l.digest.as_str()).or_insert_with(|| {
                blobs.push(Blob {
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                    bytes: l.bytes,
                    diff_id: l.diff_id.clone(),
                    urls: Vec::new(),
                    foreign: false,
                    foreign_media_type: None,
                    images: Vec::new(),
                });
                blobs.len() - 1
            });
            let blob = &mut blobs[b];
            if !l.urls.is_empty() || crate::image::media::is_foreign(&l.media_type) {
                blob.foreign = true;
                if crate::image::media::is_foreign(&l.media_type) {
                    blob.foreign_media_type
                        .get_or_insert_with(|| l.media_type.clone());
                }
                for u in &l.urls {
                    if !blob.urls.contains(u) {
                        blob.urls.push(u.clone());
                    }
                }
            }
            if !mine.contains(&b) {
                mine.push(b);
                blob.images.push(i);
            }
        }
        image_blobs.push(mine);
    }
    let tar_bytes = |b: &Blob| indexes.get(&b.diff_id).map(|x| x.tar_bytes).unwrap_or(0);

    // Blob level.
    let mut logical = Sizes::default();
    let mut stored = Sizes::default();
    for b in &blobs {
        let n = b.images.len() as u64;
        logical.add(b.bytes * n, tar_bytes(b) * n);
        stored.add(b.bytes, tar_bytes(b));
    }
    let mut amortized = vec![Sizes::default(); images.len()];
    for b in &blobs {
        let r = b.images.len() as u64;
        let (c, u) = (b.bytes, tar_bytes(b));
        for (k, &i) in b.images.iter().enumerate() {
            let k = k as u64;
            amortized[i].add(c / r + u64::from(k < c % r), u / r + u64::from(k < u % r));
        }
    }
    let mut config_seen = HashSet::new();
    let mut config_bytes = 0;
    let mut manifest_seen = HashSet::new();
    let mut manifest_bytes = 0;
    for img in images {
        if config_seen.insert(img.config_digest.as_str()) {
            config_bytes += img.config_bytes;
        }
        if manifest_seen.insert(img.digest.as_str()) {
            manifest_bytes += img.manifest_bytes;
        }
    }
    let mut by_diff: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (k, b) in blobs.iter().enumerate() {
        by_diff.entry(b.diff_id.as_str()).or_default().push(k);
    }
    let mut missed_dedup = Vec::new();
    for (diff, ks) in &by_diff {
        if ks.len() < 2 {
            continue;
        }
        let sizes: Vec<u64> = ks.iter().map(|&k| blobs[k].bytes).collect();
        let missed = sizes.iter().sum::<u64>() - sizes.iter().min().copied().unwrap_or(0);
        missed_dedup.push(MissedDedup {
            diff_id: diff.to_string(),
            blobs: ks
                .iter()
                .map(|&k| BlobSize {
                    digest: blobs[k].digest.clone(),
                    media_type: blobs[k].media_type.clone(),
                    bytes: blobs[k].bytes,
                })
                .collect(),
            missed_bytes: missed,
        });
    }
    missed_dedup.sort_by(|a, b| {
        b.missed_bytes
            .cmp(&a.missed_bytes)
            .then(a.diff_id.cmp(&b.diff_id))
    });
    let foreign: Vec<ForeignLayer> = blobs
        .iter()
        .filter(|b| b.foreign)
        .map(|b| ForeignLayer {
            digest: b.digest.clone(),
            media_type: b
                .foreign_media_type
                .clone()
                .unwrap_or_else(|| b.media_type.clone()),
            bytes: b.bytes,
            urls: b.urls.clone(),
        })
        .collect();

    // Incremental pulls, per group.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let g = img.group();
        match groups.iter_mut().find(|(name, _)| *name == g) {
            Some((_, members)) => members.push(i),
            None => groups.push((g, vec![i])),
        }
    }
    let incremental_pull = groups
        .iter()
        .map(|(g, members)| PullGroup {
            group: g.clone(),
            images: members
                .iter()
                .map(|&i| images[i].name().to_string())
                .collect(),
            bytes: members
                .iter()
                .map(|&i| {
                    members
                        .iter()
                        .map(|&j| {
                            image_blobs[i]
                                .iter()
                                .filter(|b| !image_blobs[j].contains(b))
                                .map(|&b| blobs[b].bytes)
                                .sum()
                        })
                        .collect()
                })
                .collect(),
        })
        .collect();

    // Per-layer file figures and duplicates within a layer.
    let mut layer_reports = Vec::new();
    let mut within_layer_bytes = 0;
    let mut seen_diff: HashSet<&str> = HashSet::new();
    let mut unindexed = 0;
    for b in &blobs {
        let idx = indexes.get(&b.diff_id);
        let (mut files, mut file_bytes, mut dup) = (0, 0, 0);
        if let Some(idx) = idx {
            let mut counts: HashMap<&str, u64> = HashMap::new();
            for e in &idx.entries {
                if e.kind == EntryKind::File {
                    files += 1;
                    file_bytes += e.size;
                    if e.size > 0
                        && let Some(s) = &e.sha256
                    {
                        let c = counts.entry(s.as_str()).or_default();
                        if *c > 0 {
                            dup += e.size;
                        }
                        *c += 1;
                    }
                }
            }
            if seen_diff.insert(b.diff_id.as_str()) {
                within_layer_bytes += dup;
            }
        } else {
            unindexed += 1;
        }
        layer_reports.push(LayerReport {
            digest: b.digest.clone(),
            diff_id: b.diff_id.clone(),
            media_type: b.media_type.clone(),
            compressed_bytes: b.bytes,
            uncompressed_bytes: tar_bytes(b),
            refcount: b.images.len() as u64,
            images: b.images.iter().map(|&i| i as u64).collect(),
            foreign: b.foreign,
            indexed: idx.is_some(),
            files,
            file_bytes,
            dup_within_bytes: dup,
        });
    }

    // Per image: blob figures, file replay, duplicates across its layers.
    let mut image_reports = Vec::new();
    let mut offenders: Vec<Offender> = Vec::new();
    let mut across_layers_bytes = 0;
    for (i, img) in images.iter().enumerate() {
        let mut pull = Sizes::default();
        let mut shared = Sizes::default();
        let mut unique = Sizes::default();
        for &b in &image_blobs[i] {
            let (c, u) = (blobs[b].bytes, tar_bytes(&blobs[b]));
            pull.add(c, u);
            if blobs[b].images.len() >= 2 {
                shared.add(c, u);
            } else {
                unique.add(c, u);
            }
        }
        let windows = img.os == "windows";
        let mut m = FileMetrics {
            complete: true,
            ..FileMetrics::default()
        };
        let mut state: Tree = BTreeMap::new();
        let created = |k: usize| img.layers.get(k).and_then(|l| l.created_by.clone());
        let mut offend = |kind, path: &str, old: &Live, by: usize, bytes: u64| {
            if bytes > 0 {
                offenders.push(Offender {
                    kind,
                    image: img.name().to_string(),
                    path: path.to_string(),
                    layer: old.layer as u64,
                    bytes,
                    created_by: created(old.layer),
                    hidden_by_layer: by as u64,
                    hidden_by: created(by),
                });
            }
        };
        for (k, l) in img.layers.iter().enumerate() {
            let Some(idx) = indexes.get(&l.diff_id) else {
                m.complete = false;
                continue;
            };
            // Whiteouts apply to the layers below, wherever they sit in this layer's tar.
            for e in &idx.entries {
                let with_self = match e.kind {
                    EntryKind::Whiteout => true,
                    EntryKind::Opaque => false,
                    _ => continue,
                };
                for old in remove_tree(&mut state, &path_key(&e.path, windows), with_self) {
                    if old.kind == EntryKind::File {
                        m.deleted_bytes += old.size;
                        offend(OffenderKind::Deleted, old.path, &old, k, old.size);
                    }
                }
            }
            for e in &idx.entries {
                if matches!(e.kind, EntryKind::Whiteout | EntryKind::Opaque) {
                    continue;
                }
                if e.kind != EntryKind::Dir {
                    // A non-directory replacing a directory hides what was under it.
                    for old in remove_tree(&mut state, &path_key(&e.path, windows), false) {
                        if old.kind == EntryKind::File {
                            m.overwritten_bytes += old.size;
                            offend(OffenderKind::Overwritten, old.path, &old, k, old.size);
                        }
                    }
                }
                let new = Live {
                    path: &e.path,
                    layer: k,
                    size: e.size,
                    sha: e.sha256.as_deref(),
                    mode: e.mode,
                    kind: e.kind,
                };
                if let Some(old) = state.insert(path_key(&e.path, windows), new)
                    && old.kind == EntryKind::File
                {
                    m.overwritten_bytes += old.size;
                    let hive = windows && e.path.starts_with("Hives/");
                    if hive {
                        m.hive_overwritten_bytes += old.size;
                    }
                    offend(OffenderKind::Overwritten, old.path, &old, k, old.size);
                    if e.kind == EntryKind::File
                        && old.sha == new.sha
                        // Permission bits only: Docker writes `0100644` where wcbuild writes
                        // `0644`, the same mode.
                        && old.mode & 0o7777 == new.mode & 0o7777
                    {
                        m.unchanged_rewrite_bytes += e.size;
                        let rewritten = Live { layer: k, ..new };
                        offend(
                            OffenderKind::UnchangedRewrite,
                            &e.path,
                            &rewritten,
                            k,
                            e.size,
                        );
                    }
                }
                if e.kind == EntryKind::File {
                    m.file_bytes += e.size;
                    if windows && e.path.starts_with("Hives/") {
                        m.hive_bytes += e.size;
                    }
                }
            }
        }
        m.visible_bytes = state
            .values()
            .filter(|l| l.kind == EntryKind::File)
            .map(|l| l.size)
            .sum();
        m.wasted_bytes = m.overwritten_bytes + m.deleted_bytes;
        m.wasted_ratio = ratio(m.wasted_bytes, m.file_bytes, 0.0);
        m.efficiency = ratio(m.visible_bytes, m.file_bytes, 1.0);
        // Identical content in several (distinct) layers of this image.
        let mut layers_of: HashMap<&str, (u64, u64)> = HashMap::new();
        let mut diffs_done: HashSet<&str> = HashSet::new();
        for l in &img.layers {
            if !diffs_done.insert(l.diff_id.as_str()) {
                continue;
            }
            let Some(idx) = indexes.get(&l.diff_id) else {
                continue;
            };
            let mut here: HashSet<&str> = HashSet::new();
            for e in &idx.entries {
                if e.kind == EntryKind::File
                    && e.size > 0
                    && let Some(s) = &e.sha256
                    && here.insert(s.as_str())
                {
                    let c = layers_of.entry(s.as_str()).or_insert((0, e.size));
                    c.0 += 1;
                }
            }
        }
        m.dup_across_layers_bytes = layers_of.values().map(|(n, size)| (n - 1) * size).sum();
        across_layers_bytes += m.dup_across_layers_bytes;
        image_reports.push(ImageReport {
            name: img.name().to_string(),
            names: img.names.clone(),
            source: img.source.clone(),
            digest: img.digest.clone(),
            platform: img.platform(),
            group: img.group(),
            layers: img
                .layers
                .iter()
                .enumerate()
                .map(|(k, l)| {
                    let b = &blobs[by_digest[l.digest.as_str()]];
                    ImageLayer {
                        index: k as u64,
                        digest: l.digest.clone(),
                        diff_id: l.diff_id.clone(),
                        compressed_bytes: l.bytes,
                        uncompressed_bytes: tar_bytes(b),
                        refcount: b.images.len() as u64,
                        created_by: l.created_by.clone(),
                    }
                })
                .collect(),
            pull_bytes: pull,
            shared_bytes: shared,
            unique_bytes: unique,
            amortized_bytes: amortized[i],
            files: m,
        });
    }

    // (c) Identical content in several images' own (unshared) layers.
    let mut owners: HashMap<&str, (BTreeSet<usize>, u64)> = HashMap::new();
    for b in blobs.iter().filter(|b| b.images.len() == 1) {
        let Some(idx) = indexes.get(&b.diff_id) else {
            continue;
        };
        for e in &idx.entries {
            if e.kind == EntryKind::File
                && e.size > 0
                && let Some(s) = &e.sha256
            {
                owners
                    .entry(s.as_str())
                    .or_insert_with(|| (BTreeSet::new(), e.size))
                    .0
                    .insert(b.images[0]);
            }
        }
    }
    let across_images_bytes = owners
        .values()
        .filter(|(o, _)| o.len() >= 2)
        .map(|(o, size)| (o.len() as u64 - 1) * size)
        .sum();

    // Duplicate groups over the distinct layers (by diff_id) of the set.
    struct Group<'a> {
        size: u64,
        copies: u64,
        places: Vec<(usize, usize, &'a str)>,
    }
    let mut content: HashMap<&str, Group> = HashMap::new();
    let mut diffs_done: HashSet<&str> = HashSet::new();
    for b in &blobs {
        if !diffs_done.insert(b.diff_id.as_str()) {
            continue;
        }
        let Some(idx) = indexes.get(&b.diff_id) else {
            continue;
        };
        let img = b.images[0];
        let pos = images[img]
            .layers
            .iter()
            .position(|l| l.digest == b.digest)
            .unwrap_or(0);
        for e in &idx.entries {
            if e.kind == EntryKind::File
                && e.size > 0
                && let Some(s) = &e.sha256
            {
                let g = content.entry(s.as_str()).or_insert(Group {
                    size: e.size,
                    copies: 0,
                    places: Vec::new(),
                });
                g.copies += 1;
                if g.places.len() < 10 {
                    g.places.push((img, pos, e.path.as_str()));
                }
            }
        }
    }
    let mut dup_groups: Vec<DupGroup> = content
        .into_iter()
        .filter(|(_, g)| g.copies >= 2)
        .map(|(sha, g)| DupGroup {
            sha256: sha.to_string(),
            size: g.size,
            copies: g.copies,
            redundant_bytes: (g.copies - 1) * g.size,
            locations: g
                .places
                .iter()
                .map(|&(i, k, p)| Location {
                    image: images[i].name().to_string(),
                    layer: k as u64,
                    path: p.to_string(),
                    created_by: images[i].layers.get(k).and_then(|l| l.created_by.clone()),
                })
                .collect(),
        })
        .collect();
    dup_groups.sort_by(|a, b| {
        b.redundant_bytes
            .cmp(&a.redundant_bytes)
            .then(a.sha256.cmp(&b.sha256))
    });
    dup_groups.truncate(top);

    offenders.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(a.image.cmp(&b.image))
            .then(a.path.cmp(&b.path))
            .then(a.kind.cmp(&b.kind))
            .then(a.layer.cmp(&b.layer))
    });
    offenders.truncate(top);

    let summary = Summary {
        images: images.len() as u64,
        layers: blobs.len() as u64,
        logical_bytes: logical,
        stored_bytes: stored,
        dedup_savings: Sizes {
            compressed: logical.compressed - stored.compressed,
            uncompressed: logical.uncompressed - stored.uncompressed,
        },
        dedup_ratio: Ratios {
            compressed: ratio(logical.compressed, stored.compressed, 1.0),
            uncompressed: ratio(logical.uncompressed, stored.uncompressed, 1.0),
        },
        config_bytes,
        manifest_bytes,
        missed_dedup_bytes: missed_dedup.iter().map(|m| m.missed_bytes).sum(),
        foreign_bytes: foreign.iter().map(|f| f.bytes).sum(),
        file_bytes: image_reports.iter().map(|r| r.files.file_bytes).sum(),
        wasted_bytes: image_reports.iter().map(|r| r.files.wasted_bytes).sum(),
        unindexed_layers: unindexed,
    };
    Report {
        schema: SCHEMA,
        summary,
        images: image_reports,
        layers: layer_reports,
        incremental_pull,
        missed_dedup,
        foreign,
        duplicates: Duplicates {
            within_layer_bytes,
            across_layers_bytes,
            across_images_bytes,
            groups: dup_groups,
        },
        offenders,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::index::{INDEX_VERSION, IndexedEntry};

    fn file(path: &str, size: u64, sha: &str) -> IndexedEntry {
        IndexedEntry {
            path: path.into(),
            kind: EntryKind::File,
            size,
            mode: 0o644,
            sha256: Some(sha.into()),
        }
    }

    fn marker(path: &str, kind: EntryKind) -> IndexedEntry {
        IndexedEntry {
            path: path.into(),
            kind,
            size: 0,
            mode: 0,
            sha256: None,
        }
    }

    fn set(os: &str, layers: Vec<Vec<IndexedEntry>>) -> Report {
        let mut indexes = HashMap::new();
        let mut inputs = Vec::new();
        for (k, entries) in layers.into_iter().enumerate() {
            let diff_id = format!("sha256:{k:064}");
            indexes.insert(
                diff_id.clone(),
                LayerIndex {
                    version: INDEX_VERSION,
                    diff_id: diff_id.clone(),
                    tar_bytes: 10_240,
                    entries,
                },
            );
            inputs.push(LayerInput {
                digest: format!("sha256:{:064}", k + 100),
                media_type: crate::image::media::OCI_LAYER_GZIP.into(),
                bytes: 1_001,
                diff_id,
                urls: Vec::new(),
                created_by: Some(format!("step {k}")),
            });
        }
        let image = ImageInput {
            names: vec!["x".into()],
            source: "store".into(),
            digest: "sha256:aa".into(),
            manifest_bytes: 1,
            config_digest: "sha256:bb".into(),
            config_bytes: 1,
            os: os.into(),
            architecture: "amd64".into(),
            variant: None,
            os_version: None,
            layers: inputs,
        };
        analyze(&[image], &indexes, 10)
    }

    #[test]
    fn opaque_directories_hide_what_is_below_them_only() {
        let r = set(
            "linux",
            vec![
                vec![file("var/cache/a", 100, "a"), file("var/cache2", 7, "c")],
                vec![
                    file("var/cache/b", 30, "b"),
                    marker("var/cache", EntryKind::Opaque),
                ],
            ],
        );
        let f = &r.images[0].files;
        // The opaque marker of layer 1 hides layer 0's var/cache/a, not its own var/cache/b
        // and not var/cache2 (a sibling with the same prefix).
        assert_eq!((f.deleted_bytes, f.visible_bytes), (100, 37));
        assert_eq!(f.file_bytes, 137);
    }

    #[test]
    fn unchanged_rewrites_compare_permission_bits_not_type_bits() {
        // Docker writes a file's mode with its type bits (0100644); wcbuild writes 0644.
        let mut docker = file("etc/app.conf", 70, "c");
        docker.mode = 0o100644;
        let same = file("etc/app.conf", 70, "c");
        let mut chmodded = file("etc/app.conf", 70, "c");
        chmodded.mode = 0o755;
        let r = set("linux", vec![vec![docker.clone()], vec![same]]);
        assert_eq!(r.images[0].files.unchanged_rewrite_bytes, 70);
        let r = set("linux", vec![vec![docker], vec![chmodded]]);
        assert_eq!(
            r.images[0].files.unchanged_rewrite_bytes, 0,
            "a new mode is a change"
        );
    }

    #[test]
    fn a_file_over_a_directory_hides_its_content() {
        let r = set(
            "linux",
            vec![
                vec![file("opt/app/x", 40, "x"), file("opt/app/y", 2, "y")],
                vec![IndexedEntry {
                    path: "opt/app".into(),
                    kind: EntryKind::Symlink,
                    size: 0,
                    mode: 0o777,
                    sha256: None,
                }],
            ],
        );
        let f = &r.images[0].files;
        assert_eq!(
            (f.overwritten_bytes, f.visible_bytes, f.wasted_bytes),
            (42, 0, 42)
        );
        assert_eq!(f.efficiency, 0.0);
    }

    #[test]
    fn windows_paths_ignore_case_and_linux_paths_do_not() {
        let layers = || {
            vec![
                vec![file("Files/App/A.txt", 10, "a")],
                vec![file("Files/app/a.txt", 10, "a")],
            ]
        };
        let w = set("windows", layers());
        assert_eq!(w.images[0].files.overwritten_bytes, 10);
        assert_eq!(w.images[0].files.unchanged_rewrite_bytes, 10);
        assert_eq!(w.offenders[0].path, "Files/App/A.txt");
        let l = set("linux", layers());
        assert_eq!(l.images[0].files.overwritten_bytes, 0);
        assert_eq!(l.images[0].files.visible_bytes, 20);
    }

    #[test]
    fn amortized_bytes_add_up_to_the_stored_bytes() {
        // Three images over one 1,001-byte layer: 334 + 334 + 333.
        let entries = vec![file("a", 1, "a")];
        let mut indexes = HashMap::new();
        indexes.insert(
            "sha256:d".to_string(),
            LayerIndex {
                version: INDEX_VERSION,
                diff_id: "sha256:d".into(),
                tar_bytes: 2_048,
                entries,
            },
        );
        let image = |n: &str| ImageInput {
            names: vec![n.into()],
            source: "store".into(),
            digest: format!("sha256:{n}"),
            manifest_bytes: 1,
            config_digest: format!("sha256:c{n}"),
            config_bytes: 1,
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
            os_version: None,
            layers: vec![LayerInput {
                digest: "sha256:l".into(),
                media_type: crate::image::media::OCI_LAYER_GZIP.into(),
                bytes: 1_001,
                diff_id: "sha256:d".into(),
                urls: Vec::new(),
                created_by: None,
            }],
        };
        let r = analyze(&[image("a"), image("b"), image("c")], &indexes, 10);
        let a: Vec<(u64, u64)> = r
            .images
            .iter()
            .map(|i| (i.amortized_bytes.compressed, i.amortized_bytes.uncompressed))
            .collect();
        assert_eq!(a, [(334, 683), (334, 683), (333, 682)]);
        assert_eq!(r.summary.stored_bytes.compressed, 1_001);
        assert_eq!(r.summary.dedup_ratio.compressed, 3.0);
        assert_eq!(r.summary.config_bytes, 3);
    }
}
