//! The build cache in a registry (`--cache-to type=registry,ref=…`, `--cache-from …`), so that
//! CI runners starting with an empty store still get cache hits.
//!
//! The export is an OCI artifact: a manifest with artifact type [`ARTIFACT_TYPE`] whose config
//! is the cache records (step key → layer descriptor and diff_id) and whose layers are the
//! layer blobs those records name — by digest, so the registry stores each layer once whether
//! an image or the cache refers to it. An import reads only the manifest and the records; a
//! layer is downloaded when a step hits its record.

use super::registry::{self as transfer, TransferError};
use crate::image::{Descriptor, Manifest, Reference};
use crate::registry::{Client, ClientOptions, Repo};
use crate::store::Store;
use std::collections::BTreeMap;

/// The artifact type of an exported build cache.
pub const ARTIFACT_TYPE: &str = "application/vnd.wcbuild.cache.v1";
/// The media type of its config (the records).
pub const RECORDS_TYPE: &str = "application/vnd.wcbuild.cache.records.v1+json";

/// One cache record: a step's layer (the record the local store keeps, too).
pub use crate::store::StepRecord as Record;

#[derive(serde::Serialize, serde::Deserialize)]
struct Records {
    schema: u32,
    /// The step-key format the records were made with.
    key_version: String,
    records: BTreeMap<String, Record>,
}

/// Records imported from registries, and where their layers are.
pub struct Imported {
    client: Client,
    rt: tokio::runtime::Runtime,
    records: BTreeMap<String, (Record, Repo)>,
}

impl std::fmt::Debug for Imported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imported")
            .field("records", &self.records.len())
            .finish()
    }
}

impl Imported {
    /// How many records were imported.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when none were.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The record for `key`, its layer downloaded into the store (verified) when missing.
    pub fn get(&self, store: &Store, key: &str) -> Option<Record> {
        let (rec, repo) = self.records.get(key)?;
        if store.blob_size(&rec.layer.digest).ok()? != Some(rec.layer.size) {
            let fetched =
                self.rt
                    .block_on(transfer::fetch_one(store, &self.client, repo, &rec.layer));
            if let Err(e) = fetched {
                tracing::warn!("cache layer {} could not be fetched: {e}", rec.layer.digest);
                return None;
            }
        }
        Some(rec.clone())
    }
}

/// Reads the cache records of every `refs` (earlier ones win on the same key). A reference
/// that does not exist yet is skipped with a note (the first CI run has no cache).
pub fn import(
    store: &Store,
    opts: &ClientOptions,
    refs: &[String],
    key_version: &str,
) -> Result<Imported, TransferError> {
    let client = Client::new(opts.clone());
    let rt = transfer::runtime();
    let mut records = BTreeMap::new();
    for r in refs {
        let reference = Reference::parse(r)?;
        let repo = Repo::of(&reference);
        let tag = reference
            .digest
            .as_ref()
            .map(|d| d.to_string())
            .or_else(|| reference.tag.clone())
            .unwrap_or_else(|| "latest".into());
        let fetched = match rt.block_on(client.get_manifest(&repo, &tag)) {
            Ok(f) => f,
            Err(crate::registry::RegistryError::NotFound { .. }) => {
                tracing::info!("no build cache at {r} yet");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let m: Manifest =
            serde_json::from_slice(&fetched.bytes).map_err(|e| TransferError::Invalid {
                what: r.clone(),
                kind: "cache manifest",
                message: e.to_string(),
            })?;
        if m.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
            return Err(TransferError::Invalid {
                what: r.clone(),
                kind: "build cache",
                message: format!(
                    "its artifact type is {:?}, not {ARTIFACT_TYPE}",
                    m.artifact_type
                ),
            });
        }
        rt.block_on(transfer::fetch_one(store, &client, &repo, &m.config))?;
        let body: Records =
            serde_json::from_slice(&store.read_blob(&m.config.digest)?).map_err(|e| {
                TransferError::Invalid {
                    what: r.clone(),
                    kind: "cache records",
                    message: e.to_string(),
                }
            })?;
        if body.key_version != key_version {
            tracing::info!(
                "the build cache at {r} was made with step keys `{}`, this wcbuild uses `{key_version}`; ignored",
                body.key_version
            );
            continue;
        }
        for (k, rec) in body.records {
            records.entry(k).or_insert((rec, repo.clone()));
        }
    }
    Ok(Imported {
        client,
        rt,
        records,
    })
}

/// What an export did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exported {
    /// Where.
    pub reference: String,
    /// The cache manifest's digest.
    pub digest: String,
    /// Records exported.
    pub records: usize,
    /// The push.
    pub pushed: transfer::Pushed,
}

/// Pushes `records` (step key → layer) as a cache artifact to `reference`.
pub fn export(
    store: &Store,
    opts: &ClientOptions,
    reference: &str,
    records: &BTreeMap<String, Record>,
    key_version: &str,
) -> Result<Exported, TransferError> {
    // Layers kept uncompressed leave compressed (once, remembered by diff_id); the records
    // name what the registry will hold.
    let mut records = records.clone();
    for r in records.values_mut() {
        if r.layer.media_type == crate::image::media::OCI_LAYER {
            r.layer = super::images::compressed_layer(
                store,
                &r.layer.digest,
                crate::layer::Compression::DEFAULT,
            )
            .map_err(|e| TransferError::Invalid {
                what: r.layer.digest.clone(),
                kind: "layer",
                message: e.to_string(),
            })?;
        }
    }
    let records = &records;
    let body = Records {
        schema: 1,
        key_version: key_version.to_string(),
        records: records.clone(),
    };
    let config = serde_json::to_vec(&body).expect("records serialize");
    let config_digest = store.put_blob(&config, None)?;
    let mut layers: Vec<Descriptor> = Vec::new();
    for r in records.values() {
        if !layers.iter().any(|l| l.digest == r.layer.digest) {
            layers.push(r.layer.clone());
        }
    }
    layers.sort_by(|a, b| a.digest.cmp(&b.digest));
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(crate::image::media::OCI_MANIFEST.into()),
        artifact_type: Some(ARTIFACT_TYPE.into()),
        config: Descriptor::new(RECORDS_TYPE, &config_digest, config.len() as u64),
        layers,
        subject: None,
        annotations: BTreeMap::new(),
        extra: serde_json::Map::new(),
    };
    let bytes = serde_json::to_vec(&manifest).expect("manifests serialize");
    let digest = store.put_blob(&bytes, None)?;
    let client = Client::new(opts.clone());
    let rt = transfer::runtime();
    let pushed = rt.block_on(transfer::push(
        store,
        &client,
        &digest,
        Some(reference),
        &transfer::PushOptions::default(),
        &mut crate::progress::Silent,
    ))?;
    Ok(Exported {
        reference: reference.to_string(),
        digest,
        records: records.len(),
        pushed,
    })
}
