//! Media types of manifests, indexes, configs and layers, OCI and Docker schema 2, including
//! non-distributable (foreign) layers.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI layer, uncompressed.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI non-distributable layer (deprecated by the spec, still met in old Windows images).
pub const OCI_LAYER_NONDIST: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// OCI non-distributable layer, gzip.
pub const OCI_LAYER_NONDIST_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// OCI non-distributable layer, zstd.
pub const OCI_LAYER_NONDIST_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer (gzip).
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker foreign layer (gzip), as old Windows base images used.
pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker foreign layer, uncompressed.
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// True for image manifests (OCI or Docker).
pub fn is_manifest(media: &str) -> bool {
    media == OCI_MANIFEST || media == DOCKER_MANIFEST
}

/// True for indexes and manifest lists.
pub fn is_index(media: &str) -> bool {
    media == OCI_INDEX || media == DOCKER_MANIFEST_LIST
}

/// True for configs.
pub fn is_config(media: &str) -> bool {
    media == OCI_CONFIG || media == DOCKER_CONFIG
}

/// True for layers of any kind.
pub fn is_layer(media: &str) -> bool {
    layer_compression(media).is_some()
}

/// True for non-distributable (foreign) layers.
pub fn is_foreign(media: &str) -> bool {
    media.contains(".nondistributable.") || media.contains(".foreign.")
}

/// The compression of a layer media type; `None` when it is not a layer type.
pub fn layer_compression(media: &str) -> Option<Compression> {
    match media {
        OCI_LAYER | OCI_LAYER_NONDIST | DOCKER_FOREIGN_LAYER => Some(Compression::None),
        OCI_LAYER_GZIP | OCI_LAYER_NONDIST_GZIP | DOCKER_LAYER_GZIP | DOCKER_FOREIGN_LAYER_GZIP => {
            Some(Compression::Gzip)
        }
        OCI_LAYER_ZSTD | OCI_LAYER_NONDIST_ZSTD => Some(Compression::Zstd),
        _ => None,
    }
}

/// The OCI layer media type for a compression (foreign when `foreign`).
pub fn oci_layer(compression: Compression, foreign: bool) -> &'static str {
    match (compression, foreign) {
        (Compression::None, false) => OCI_LAYER,
        (Compression::Gzip, false) => OCI_LAYER_GZIP,
        (Compression::Zstd, false) => OCI_LAYER_ZSTD,
        (Compression::None, true) => OCI_LAYER_NONDIST,
        (Compression::Gzip, true) => OCI_LAYER_NONDIST_GZIP,
        (Compression::Zstd, true) => OCI_LAYER_NONDIST_ZSTD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(is_manifest(DOCKER_MANIFEST) && is_index(DOCKER_MANIFEST_LIST));
        assert!(is_foreign(DOCKER_FOREIGN_LAYER_GZIP) && is_foreign(OCI_LAYER_NONDIST_GZIP));
        assert!(!is_foreign(OCI_LAYER_GZIP));
        assert_eq!(
            layer_compression(DOCKER_LAYER_GZIP),
            Some(Compression::Gzip)
        );
        assert_eq!(layer_compression(OCI_LAYER_ZSTD), Some(Compression::Zstd));
        assert_eq!(layer_compression(OCI_CONFIG), None);
        assert_eq!(oci_layer(Compression::Gzip, true), OCI_LAYER_NONDIST_GZIP);
    }
}
