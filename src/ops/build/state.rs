//! What the steps of one build share: the stage being built, the build's context (store,
//! settings, cache, progress), and how a step adds a layer (from the cache, or written once).

use super::cache::BuildCache;
use super::settings::BuildSettings;
use super::view::StageView;
use crate::image::{Descriptor, ImageConfig};
use crate::layer::{Compression, Format, LayerOptions, LayerWriter};
use crate::progress::Reporter;
use crate::store::Store;

/// A stage as it is being built: its config so far and its layers.
pub(super) struct StageState {
    pub(super) config: ImageConfig,
    pub(super) layers: Vec<Descriptor>,
    /// CMD was set in this stage (an ENTRYPOINT then keeps it).
    pub(super) cmd_set: bool,
    /// What the stage's layers hold by path, and how many layers it has applied; made when
    /// a step first asks.
    pub(super) view: Option<(StageView, usize)>,
    /// The environment a RUN step gets: the image's ENV, then ENV and ARG values in order.
    pub(super) run_env: Vec<(String, String)>,
    /// The stage's ARGs in order, with their values (BuildKit lists them in RUN's history).
    pub(super) build_args: Vec<(String, Option<String>)>,
}

impl StageState {
    /// Brings the stage's file system view up to date with its layers (made when first
    /// asked for).
    pub(super) fn refresh_view(&mut self, store: &Store) -> Result<(), String> {
        let windows = self.windows();
        let (view, applied) = self
            .view
            .get_or_insert_with(|| (StageView::new(windows), 0));
        for l in &self.layers[*applied..] {
            view.push_layer(store, l)?;
            *applied += 1;
        }
        Ok(())
    }

    /// The view [`Self::refresh_view`] made.
    pub(super) fn view(&self) -> Option<&StageView> {
        self.view.as_ref().map(|(v, _)| v)
    }

    /// Sets `key` in the RUN environment (in place when it is there; case-insensitively on
    /// Windows stages).
    pub(super) fn set_run_env(&mut self, key: &str, value: &str) {
        let windows = self.windows();
        let same = |k: &str| {
            if windows {
                k.eq_ignore_ascii_case(key)
            } else {
                k == key
            }
        };
        match self.run_env.iter_mut().find(|(k, _)| same(k)) {
            Some(e) => e.1 = value.to_string(),
            None => self.run_env.push((key.to_string(), value.to_string())),
        }
    }

    pub(super) fn windows(&self) -> bool {
        self.config.os == "windows"
    }
}

/// Writes a layer through `fill` unless the build cache has one for `key`; stores it and
/// appends it to the stage. Returns true on a cache hit.
pub(super) fn add_layer(
    ctx: &mut Ctx<'_>,
    state: &mut StageState,
    key: &str,
    windows_owner: Option<String>,
    fill: impl FnOnce(
        &mut LayerWriter<&mut crate::store::BlobWriter<'_>>,
        &mut dyn Reporter,
    ) -> std::io::Result<()>,
) -> Result<bool, String> {
    if let Some((layer, diff_id)) = ctx.cache.lookup(ctx.store, key) {
        let layer = in_compression(ctx, layer, &diff_id)?;
        state.layers.push(layer);
        state.config.rootfs.diff_ids.push(diff_id);
        return Ok(true);
    }
    let (layer, diff_id) = write_layer(ctx, state.windows(), windows_owner, fill)?;
    ctx.cache.record(ctx.store, key, &layer, &diff_id);
    state.layers.push(layer);
    state.config.rootfs.diff_ids.push(diff_id);
    Ok(false)
}

/// Writes a layer of the stage's format through `fill` into the store, in the build's
/// compression, hashing as it streams. Returns the layer and its diff_id (not recorded in
/// the cache, not added to a stage).
pub(super) fn write_layer(
    ctx: &mut Ctx<'_>,
    windows: bool,
    windows_owner: Option<String>,
    fill: impl FnOnce(
        &mut LayerWriter<&mut crate::store::BlobWriter<'_>>,
        &mut dyn Reporter,
    ) -> std::io::Result<()>,
) -> Result<(Descriptor, String), String> {
    let opts = LayerOptions {
        format: if windows {
            Format::Windows
        } else {
            Format::Linux
        },
        compression: ctx.settings.compression,
        source_date_epoch: ctx.settings.source_date_epoch,
        windows_owner,
        ..LayerOptions::default()
    };
    let mut blob = ctx.store.blob_writer().map_err(|e| e.to_string())?;
    // The layer writer hashes every byte it hands the blob (the tar for an uncompressed
    // layer, the compressed stream otherwise): one hash per stream, not two.
    blob.hashed_by_writer();
    let mut w = LayerWriter::new(&mut blob, opts).map_err(|e| e.to_string())?;
    fill(&mut w, &mut *ctx.reporter).map_err(|e| e.to_string())?;
    let (d, _) = w.finish().map_err(|e| e.to_string())?;
    let digest = blob
        .commit(Some(&d.digest), Some(d.size))
        .map_err(|e| e.to_string())?;
    ctx.store.remember_layer_size(&d.diff_id, d.tar_size);
    Ok((Descriptor::new(d.media_type, &digest, d.size), d.diff_id))
}

/// A cached layer in the compression the build asked for: as it is unless `--compression`
/// was given and it is in another one, or the result leaves the machine compressed and it is
/// uncompressed; then the other form, made once from the layer's uncompressed tar and
/// remembered by diff_id.
pub(super) fn in_compression(
    ctx: &Ctx<'_>,
    layer: Descriptor,
    diff_id: &str,
) -> Result<Descriptor, String> {
    let wanted = ctx.settings.compression;
    if layer.media_type == wanted.media_type() {
        return Ok(layer);
    }
    // `auto` takes any form, but a result that leaves the machine compressed (a push, an OCI
    // archive) gets an uncompressed cached layer compressed.
    let uncompressed = layer.media_type == crate::image::media::OCI_LAYER;
    let must_convert =
        ctx.settings.compression_explicit || (uncompressed && wanted != Compression::None);
    if !must_convert {
        return Ok(layer);
    }
    crate::ops::images::layer_in(ctx.store, &layer, diff_id, wanted).map_err(|e| e.to_string())
}

/// What the steps of one build share.
pub(super) struct Ctx<'a> {
    pub(super) store: &'a Store,
    pub(super) settings: &'a BuildSettings,
    pub(super) cache: BuildCache,
    pub(super) reporter: &'a mut dyn Reporter,
    /// The stage being built (for progress events).
    pub(super) stage: usize,
    /// The runtime Linux RUN steps use, chosen when the first one runs.
    pub(super) runtime: Option<std::sync::Arc<dyn crate::runtime::Runtime>>,
    /// The other runtimes (by kind) and the isolation each Windows step got.
    pub(super) engine: super::engine::EngineState,
}
