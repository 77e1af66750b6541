//! Several platforms from one Dockerfile (e.g. every Windows version of a multi-version base
//! index), tied in an OCI index whose entries carry `os.version`; and the export of the build
//! cache to a registry once the images are built.

use super::cache::CACHE_KEY_VERSION;
use super::executor::build_source;
use super::settings::{BuildError, BuildOutcome, BuildSettings};
use crate::image::{Descriptor, Index, Manifest, Platform, media};
use crate::ops::dockerfile as df_ops;
use crate::ops::images;
use crate::progress::Reporter;
use crate::store::{IndexEntry, Store};
use std::collections::BTreeMap;

/// What a build for several platforms made.
#[derive(Debug, Clone)]
pub struct MultiOutcome {
    /// The index digest (tagged), or the single image's digest when one platform was asked.
    pub digest: String,
    /// One outcome per platform, in the order asked.
    pub images: Vec<BuildOutcome>,
    /// The full references tagged.
    pub tags: Vec<String>,
    /// The build cache export (`cache_to`), when asked.
    pub cache_export: Option<crate::ops::cache::Exported>,
}

/// Pushes the cache records of `images` to `settings.cache_to` (only the final images' layers
/// unless `cache_max`).
fn export_cache(
    store: &Store,
    settings: &BuildSettings,
    images: &[BuildOutcome],
) -> Result<Option<crate::ops::cache::Exported>, BuildError> {
    let Some(to) = &settings.cache_to else {
        return Ok(None);
    };
    let mut records = BTreeMap::new();
    for out in images {
        let keep: std::collections::BTreeSet<String> = if settings.cache_max {
            Default::default()
        } else {
            let m: Manifest =
                serde_json::from_slice(&store.read_blob(&out.digest)?).map_err(|e| {
                    BuildError::Step {
                        location: "--cache-to".into(),
                        message: e.to_string(),
                    }
                })?;
            m.layers.into_iter().map(|l| l.digest).collect()
        };
        for (k, r) in &out.cache {
            if settings.cache_max || keep.contains(&r.layer.digest) {
                records.insert(k.clone(), r.clone());
            }
        }
    }
    let opts = settings.registry.clone().unwrap_or_default();
    crate::ops::cache::export(store, &opts, to, &records, CACHE_KEY_VERSION)
        .map(Some)
        .map_err(|e| BuildError::Step {
            location: "--cache-to".into(),
            message: e.to_string(),
        })
}

/// Builds the same Dockerfile for several platforms (for example every Windows version of a
/// multi-version base index) and ties the images together in an OCI index whose entries carry
/// `platform.os.version`. Layers that do not depend on the base come out byte-identical and
/// are stored once.
pub fn build_platforms(
    store: &Store,
    settings: &BuildSettings,
    platforms: &[Platform],
    reporter: &mut dyn Reporter,
) -> Result<MultiOutcome, BuildError> {
    // Read once: `-f -` is standard input, which a second read would find empty.
    let src = df_ops::read(settings.file.as_deref(), &settings.context)?;
    if platforms.len() <= 1 {
        let mut s = settings.clone();
        s.platform = platforms.first().cloned().or(s.platform);
        let out = build_source(store, &s, &src, reporter)?;
        let images = vec![out];
        let cache_export = export_cache(store, settings, &images)?;
        return Ok(MultiOutcome {
            digest: images[0].digest.clone(),
            tags: images[0].tags.clone(),
            images,
            cache_export,
        });
    }
    let mut images = Vec::new();
    for p in platforms {
        let mut s = settings.clone();
        s.platform = Some(p.clone());
        s.tags.clear();
        images.push(build_source(store, &s, &src, reporter)?);
    }
    let mut manifests = Vec::new();
    for out in &images {
        let size = store.blob_size(&out.digest)?.unwrap_or(0);
        let mut d = Descriptor::new(media::OCI_MANIFEST, &out.digest, size);
        d.platform = Some(out.platform.clone());
        manifests.push(d);
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.into()),
        artifact_type: None,
        manifests,
        subject: None,
        annotations: BTreeMap::new(),
        extra: serde_json::Map::new(),
    };
    let bytes = serde_json::to_vec(&index).map_err(|e| BuildError::Step {
        location: "index".into(),
        message: e.to_string(),
    })?;
    let digest = store.put_blob(&bytes, None)?;
    let mut tags = Vec::new();
    for t in &settings.tags {
        let full = images::normalize(t)?;
        store.tag(
            &full,
            IndexEntry::new(media::OCI_INDEX, &digest, bytes.len() as u64),
        )?;
        tags.push(full);
    }
    let cache_export = export_cache(store, settings, &images)?;
    Ok(MultiOutcome {
        digest,
        images,
        tags,
        cache_export,
    })
}
