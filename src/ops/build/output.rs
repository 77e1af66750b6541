//! `wcbuild build` as one use case: build for the platforms asked, then send the result where
//! it was asked to go (the store only, a registry, or an archive), and describe what was made
//! for `--metadata-file`.

use super::platforms::{MultiOutcome, build_platforms};
use super::settings::{BuildError, BuildSettings};
use crate::image::{Platform, Reference, media};
use crate::layer::Compression;
use crate::ops::images::{self, SaveFormat};
use crate::ops::registry::{self as transfer, PushOptions, Pushed};
use crate::progress::Reporter;
use crate::store::{IndexEntry, Store};
use std::path::PathBuf;

/// Where a build's result goes besides the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The store only (`type=image`, the default).
    Store,
    /// Pushed to the registry of each tag (`--push`, `type=registry`).
    Registry,
    /// An archive, as `wcbuild save` writes it (`type=oci|docker,dest=FILE`).
    Archive(SaveFormat, PathBuf),
}

/// A whole `wcbuild build`.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// What to build.
    pub settings: BuildSettings,
    /// The platforms (none: the default one).
    pub platforms: Vec<Platform>,
    /// Where the result goes.
    pub output: Output,
    /// Blobs pushed at once.
    pub push_jobs: usize,
}

/// What a `wcbuild build` made and where it went.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// The images (and index) built.
    pub built: MultiOutcome,
    /// One entry per tag pushed.
    pub pushed: Vec<Pushed>,
    /// The archive written.
    pub wrote: Option<PathBuf>,
}

impl BuildResult {
    /// The image ID, as Docker's is: the config digest of a single-platform image (it does not
    /// change when its layers are compressed later), the index digest of several platforms.
    pub fn image_id(&self) -> &str {
        match self.built.images.as_slice() {
            [one] => &one.config_digest,
            _ => &self.built.digest,
        }
    }

    /// What `--metadata-file` holds, with BuildKit's keys: `containerimage.config.digest`,
    /// `containerimage.digest` (the manifest or index, as pushed when it was pushed),
    /// `image.name`; per platform the same.
    pub fn metadata(&self) -> serde_json::Value {
        let out = &self.built;
        let platforms: Vec<serde_json::Value> = out
            .images
            .iter()
            .map(|i| {
                serde_json::json!({
                    "platform": i.platform.to_string(),
                    "containerimage.digest": i.digest,
                    "containerimage.config.digest": i.config_digest,
                })
            })
            .collect();
        let digest = self
            .pushed
            .first()
            .map(|p| p.digest.clone())
            .unwrap_or_else(|| out.digest.clone());
        let mut meta = serde_json::json!({
            "containerimage.digest": digest,
            "image.name": out.tags.join(","),
            "platforms": platforms,
        });
        if out.images.len() == 1 {
            meta["containerimage.config.digest"] = out.images[0].config_digest.clone().into();
        }
        // The isolation each Windows RUN step ran with, and why (never in the image).
        let isolation: Vec<serde_json::Value> = out
            .images
            .iter()
            .flat_map(|i| {
                i.isolation.iter().map(|r| {
                    serde_json::json!({
                        "platform": i.platform.to_string(),
                        "stage": r.stage,
                        "line": r.line,
                        "isolation": r.isolation.as_str(),
                        "reason": r.reason,
                    })
                })
            })
            .collect();
        if !isolation.is_empty() {
            meta["wcbuild.isolation"] = isolation.into();
        }
        meta
    }
}

/// Builds, then pushes or writes the archive as `request.output` says.
pub fn build_and_export(
    store: &Store,
    request: &BuildRequest,
    reporter: &mut dyn Reporter,
) -> Result<BuildResult, BuildError> {
    // Compression when it is needed, in the build's one pass: a result that leaves the machine
    // compressed (a registry, an OCI archive) is written with gzip layers; one that stays
    // (the store, a docker archive) is kept uncompressed, as Docker keeps it, and compressed
    // once later if it is pushed.
    let mut resolved = request.settings.clone();
    if !resolved.compression_explicit {
        resolved.compression = match request.output {
            Output::Registry | Output::Archive(SaveFormat::Oci, _) => Compression::Gzip(6),
            Output::Store | Output::Archive(SaveFormat::Docker, _) => Compression::None,
        };
    }
    let settings = &resolved;
    if request.output == Output::Registry && settings.tags.is_empty() {
        return Err(BuildError::Step {
            location: "--push".into(),
            message: "--push needs at least one -t NAME to push to".into(),
        });
    }
    let built = build_platforms(store, settings, &request.platforms, reporter)?;
    let mut result = BuildResult {
        built,
        pushed: Vec::new(),
        wrote: None,
    };
    match &request.output {
        Output::Store => {}
        Output::Registry => {
            let client = transfer::client(settings.registry.clone().unwrap_or_default());
            let rt = transfer::runtime();
            let opts = PushOptions {
                include_foreign: false,
                concurrency: request.push_jobs,
            };
            for t in &result.built.tags {
                let pushed =
                    rt.block_on(transfer::push(store, &client, t, None, &opts, reporter))?;
                result.pushed.push(pushed);
            }
        }
        Output::Archive(format, dest) => {
            write_archive(store, &result.built, settings, *format, dest)?;
            result.wrote = Some(dest.clone());
        }
    }
    Ok(result)
}

/// Writes the built image (or index) as an archive at `dest`, atomically.
fn write_archive(
    store: &Store,
    built: &MultiOutcome,
    settings: &BuildSettings,
    format: SaveFormat,
    dest: &std::path::Path,
) -> Result<(), BuildError> {
    let media = if built.images.len() > 1 {
        media::OCI_INDEX
    } else {
        media::OCI_MANIFEST
    };
    let size = store.blob_size(&built.digest)?.unwrap_or(0);
    let entry = IndexEntry::new(media, &built.digest, size);
    let name = match settings.tags.first() {
        Some(t) => Some(Reference::parse(t).map_err(|e| BuildError::Step {
            location: "-t".into(),
            message: e.to_string(),
        })?),
        None => None,
    };
    let tmp = dest.with_extension("wcbuild-partial");
    let written = (|| -> Result<(), BuildError> {
        let io = |source: std::io::Error| BuildError::Export {
            path: dest.to_path_buf(),
            message: source.to_string(),
        };
        let f = std::fs::File::create(&tmp).map_err(io)?;
        let mut w = std::io::BufWriter::new(f);
        images::save_entries(store, &[(name, entry)], format, &mut w)?;
        w.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)?;
        std::fs::rename(&tmp, dest).map_err(io)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
