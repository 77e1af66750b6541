//! `index.json`: the OCI image index at the store's root, whose entries are the tagged images.
//! Unknown fields (in the document and in each entry) are kept as they are.

use super::{StoreError, digest_hex};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The annotation holding an entry's full reference (`docker.io/library/app:1.0`).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// One entry of `index.json`: a descriptor, usually of a manifest or an index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The descriptor's media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// The platform, when the descriptor carries one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub platform: Option<serde_json::Value>,
    /// Annotations, the reference among them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl IndexEntry {
    /// A descriptor with no platform and no annotations.
    pub fn new(media_type: &str, digest: &str, size: u64) -> IndexEntry {
        IndexEntry {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size,
            platform: None,
            annotations: BTreeMap::new(),
            extra: serde_json::Map::new(),
        }
    }
    /// The full reference this entry is tagged with.
    pub fn reference(&self) -> Option<&str> {
        self.annotations
            .get(REF_NAME_ANNOTATION)
            .map(String::as_str)
    }
    /// The same entry tagged with `reference`.
    pub fn with_reference(mut self, reference: &str) -> IndexEntry {
        self.annotations
            .insert(REF_NAME_ANNOTATION.to_string(), reference.to_string());
        self
    }
}

pub(crate) fn empty_index() -> String {
    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#
        .to_string()
}

pub(crate) fn read_document(path: &Path) -> Result<serde_json::Value, StoreError> {
    let bytes = super::fsutil::read_replaced(path).map_err(super::io_err("read", path))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::BadIndex {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if !v.is_object() {
        return Err(StoreError::BadIndex {
            path: path.to_path_buf(),
            message: "not a JSON object".into(),
        });
    }
    Ok(v)
}

pub(crate) fn entries_of(
    doc: &serde_json::Value,
    path: &Path,
) -> Result<Vec<IndexEntry>, StoreError> {
    let Some(list) = doc.get("manifests") else {
        return Ok(Vec::new());
    };
    let entries: Vec<IndexEntry> =
        serde_json::from_value(list.clone()).map_err(|e| StoreError::BadIndex {
            path: path.to_path_buf(),
            message: format!("manifests: {e}"),
        })?;
    for e in &entries {
        digest_hex(&e.digest)?;
    }
    Ok(entries)
}

pub(crate) fn set_entries(doc: &mut serde_json::Value, entries: &[IndexEntry]) {
    if let Some(obj) = doc.as_object_mut() {
        obj.insert(
            "manifests".into(),
            serde_json::to_value(entries).unwrap_or_default(),
        );
        obj.entry("schemaVersion").or_insert(2.into());
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<IndexEntry>, StoreError> {
    entries_of(&read_document(path)?, path)
}

/// The digests a manifest or index refers to: its config, layers, manifests, subject.
pub(crate) fn children(v: &serde_json::Value, out: &mut Vec<String>) {
    let mut push = |d: &serde_json::Value| {
        if let Some(s) = d.get("digest").and_then(|s| s.as_str()) {
            out.push(s.to_string());
        }
    };
    if let Some(c) = v.get("config") {
        push(c);
    }
    if let Some(s) = v.get("subject") {
        push(s);
    }
    for key in ["layers", "manifests", "blobs"] {
        if let Some(list) = v.get(key).and_then(|l| l.as_array()) {
            for d in list {
                push(d);
            }
        }
    }
}
