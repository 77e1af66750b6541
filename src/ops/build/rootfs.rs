//! The file systems `COPY --from` reads: an earlier stage's or an image's layers applied in
//! order into a directory of their own, once per build, removed when the build ends; or a
//! directory named with `--build-context`, used in place.

use super::base::resolve_base;
use super::state::StageState;
use crate::image::{Descriptor, Platform};
use crate::store::{ScratchDir, Store};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// A stage's or image's file system, assembled from its layers for `COPY --from` (or a
/// directory named with `--build-context`).
pub struct Rootfs {
    pub(super) path: PathBuf,
    pub(super) windows: bool,
    pub(super) label: String,
    /// The private directory it was assembled in (removed with it); `None` for a user's
    /// directory, which is used in place and never removed.
    _scratch: Option<ScratchDir>,
}

/// Root file systems made during one build, removed when the build ends.
#[derive(Default)]
pub(super) struct RootfsCache {
    stages: BTreeMap<usize, Rootfs>,
    images: BTreeMap<String, Rootfs>,
}

pub(super) fn assemble(
    store: &Store,
    layers: &[Descriptor],
    windows: bool,
    label: String,
) -> Result<Rootfs, String> {
    // A private (0700) directory inside the store, never beside the user's files: whatever a
    // layer names, the parent of the root is ours.
    let scratch = store
        .scratch_dir("rootfs")
        .map_err(|e| format!("{label}: {e}"))?;
    let path = scratch.path().join("root");
    let opts = crate::layer::ExtractOptions::default();
    for l in layers {
        let blob = store
            .open_blob(&l.digest)
            .map_err(|e| format!("{label}: {e}"))?;
        crate::layer::apply(std::io::BufReader::new(blob), &path, &opts)
            .map_err(|e| format!("{label}: layer `{}`: {e}", l.digest))?;
    }
    fs::create_dir_all(&path).map_err(|e| format!("`{}`: {e}", path.display()))?;
    Ok(Rootfs {
        path,
        windows,
        label,
        _scratch: Some(scratch),
    })
}

impl RootfsCache {
    pub(super) fn of_dir(&mut self, name: &str, dir: &Path) -> &Rootfs {
        let key = format!("dir:{name}");
        self.images.entry(key).or_insert_with(|| Rootfs {
            path: dir.to_path_buf(),
            windows: false,
            label: format!("the build context `{name}` ({})", dir.display()),
            _scratch: None,
        })
    }

    pub(super) fn of_stage(
        &mut self,
        store: &Store,
        index: usize,
        state: &StageState,
    ) -> Result<&Rootfs, String> {
        if let std::collections::btree_map::Entry::Vacant(e) = self.stages.entry(index) {
            let r = assemble(
                store,
                &state.layers,
                state.windows(),
                format!("stage {index}"),
            )?;
            e.insert(r);
        }
        Ok(&self.stages[&index])
    }

    pub(super) fn of_image(
        &mut self,
        store: &Store,
        reference: &str,
        platform: &Platform,
        remote: Option<&crate::registry::ClientOptions>,
    ) -> Result<&Rootfs, String> {
        if !self.images.contains_key(reference) {
            let (config, layers) = resolve_base(store, reference, platform, false, remote)?;
            let r = assemble(
                store,
                &layers,
                config.os == "windows",
                format!("image `{reference}`"),
            )?;
            self.images.insert(reference.to_string(), r);
        }
        Ok(&self.images[reference])
    }
}
