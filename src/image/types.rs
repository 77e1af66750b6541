//! The JSON documents of an image: descriptors, manifests, indexes and configs, in the OCI
//! and Docker schema 2 shapes (which share field names).
//!
//! Field order follows the OCI and Docker Go types, so documents written here serialize the
//! way other tools write them. Every type keeps fields it does not know in `extra`, so reading
//! and writing a document loses nothing.

use super::platform::Platform;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

type Extra = serde_json::Map<String, serde_json::Value>;

fn is_false(b: &bool) -> bool {
    !*b
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type of the referenced content.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Where else the blob may be fetched (foreign layers).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub urls: Vec<String>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
    /// The platform (index entries).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub platform: Option<Platform>,
    /// Artifact type.
    #[serde(
        rename = "artifactType",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub artifact_type: Option<String>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Descriptor {
    /// A descriptor with nothing but media type, digest and size.
    pub fn new(media_type: &str, digest: &str, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
            extra: Extra::new(),
        }
    }
}

/// An image manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The manifest's own media type.
    #[serde(rename = "mediaType", skip_serializing_if = "Option::is_none", default)]
    pub media_type: Option<String>,
    /// Artifact type.
    #[serde(
        rename = "artifactType",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// Layer blobs, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An image index or manifest list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The index's own media type.
    #[serde(rename = "mediaType", skip_serializing_if = "Option::is_none", default)]
    pub media_type: Option<String>,
    /// Artifact type.
    #[serde(
        rename = "artifactType",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub artifact_type: Option<String>,
    /// The entries.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A healthcheck as Docker stores it (durations in nanoseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", "..."]`.
    #[serde(rename = "Test", skip_serializing_if = "Vec::is_empty", default)]
    pub test: Vec<String>,
    /// Between checks.
    #[serde(rename = "Interval", skip_serializing_if = "is_zero", default)]
    pub interval: i64,
    /// For one check.
    #[serde(rename = "Timeout", skip_serializing_if = "is_zero", default)]
    pub timeout: i64,
    /// Start-up grace.
    #[serde(rename = "StartPeriod", skip_serializing_if = "is_zero", default)]
    pub start_period: i64,
    /// Between checks during the start period.
    #[serde(rename = "StartInterval", skip_serializing_if = "is_zero", default)]
    pub start_interval: i64,
    /// Failures before unhealthy.
    #[serde(rename = "Retries", skip_serializing_if = "is_zero", default)]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The runtime part of an image config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ContainerConfig {
    /// `USER`.
    #[serde(rename = "User", skip_serializing_if = "Option::is_none", default)]
    pub user: Option<String>,
    /// `EXPOSE`, `port/proto` → `{}`.
    #[serde(
        rename = "ExposedPorts",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// `ENV`, `K=V`.
    #[serde(rename = "Env", skip_serializing_if = "Option::is_none", default)]
    pub env: Option<Vec<String>>,
    /// `ENTRYPOINT`.
    #[serde(
        rename = "Entrypoint",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(rename = "Cmd", skip_serializing_if = "Option::is_none", default)]
    pub cmd: Option<Vec<String>>,
    /// `VOLUME`, path → `{}`.
    #[serde(rename = "Volumes", skip_serializing_if = "Option::is_none", default)]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// `WORKDIR`.
    #[serde(
        rename = "WorkingDir",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub working_dir: Option<String>,
    /// `LABEL`.
    #[serde(rename = "Labels", skip_serializing_if = "Option::is_none", default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// `STOPSIGNAL`.
    #[serde(
        rename = "StopSignal",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub stop_signal: Option<String>,
    /// True when `Cmd`/`Entrypoint` hold one pre-escaped Windows command line.
    #[serde(rename = "ArgsEscaped", skip_serializing_if = "is_false", default)]
    pub args_escaped: bool,
    /// `HEALTHCHECK`.
    #[serde(
        rename = "Healthcheck",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub healthcheck: Option<Healthcheck>,
    /// `ONBUILD` triggers.
    #[serde(rename = "OnBuild", skip_serializing_if = "Option::is_none", default)]
    pub on_build: Option<Vec<String>>,
    /// `SHELL`.
    #[serde(rename = "Shell", skip_serializing_if = "Option::is_none", default)]
    pub shell: Option<Vec<String>>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The layers of an image config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// sha256 of each uncompressed layer tar, base first.
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

/// One history entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct History {
    /// RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub created: Option<String>,
    /// The instruction that made the entry.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub created_by: Option<String>,
    /// Author.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub author: Option<String>,
    /// Comment.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comment: Option<String>,
    /// True when the entry added no layer.
    #[serde(skip_serializing_if = "is_false", default)]
    pub empty_layer: bool,
}

/// An image config (OCI and Docker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    /// RFC 3339 creation time.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub created: Option<String>,
    /// Author (`MAINTAINER`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub author: Option<String>,
    /// CPU architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// Windows version.
    #[serde(
        rename = "os.version",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub os_version: Option<String>,
    /// Required OS features.
    #[serde(rename = "os.features", skip_serializing_if = "Vec::is_empty", default)]
    pub os_features: Vec<String>,
    /// Architecture variant.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variant: Option<String>,
    /// The runtime defaults.
    #[serde(default)]
    pub config: ContainerConfig,
    /// The layers' diff IDs.
    #[serde(default)]
    pub rootfs: RootFs,
    /// How each layer (and empty step) was made.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub history: Vec<History>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ImageConfig {
    /// The config's platform.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
            variant: self.variant.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_round_trip_without_loss() {
        let src = r#"{"created":"2024-01-01T00:00:00Z","architecture":"amd64","os":"windows","os.version":"10.0.20348.2966","config":{"User":"ContainerUser","Env":["PATH=C:\\Windows"],"Cmd":["cmd"],"Healthcheck":{"Test":["CMD-SHELL","x"],"Interval":30000000000,"Retries":3},"Unknown":1},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created_by":"COPY x","empty_layer":true}],"future":{"a":1}}"#;
        let c: ImageConfig = serde_json::from_str(src).unwrap();
        assert_eq!(c.platform().to_string(), "windows/amd64:10.0.20348.2966");
        assert_eq!(
            c.config.healthcheck.as_ref().unwrap().interval,
            30_000_000_000
        );
        assert!(c.history[0].empty_layer);
        let back = serde_json::to_string(&c).unwrap();
        let a: serde_json::Value = serde_json::from_str(src).unwrap();
        let b: serde_json::Value = serde_json::from_str(&back).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn manifests_keep_foreign_urls() {
        let src = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:c","size":1},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"sha256:l","size":2,"urls":["https://mcr.microsoft.com/v2/windows/servercore/blobs/sha256:l"]}]}"#;
        let m: Manifest = serde_json::from_str(src).unwrap();
        assert_eq!(m.layers[0].urls.len(), 1);
        assert_eq!(serde_json::to_string(&m).unwrap(), src);
    }
}
