//! Base images: resolving `FROM` references in the store (choosing an index entry by platform),
//! pulling what the store lacks, and loading images named by `oci-layout://` contexts.

use super::settings::{BuildSettings, NamedContext};
use crate::dockerfile::Dockerfile;
use crate::dockerfile::check::Checked;
use crate::image::{Descriptor, ImageConfig, Index, Manifest, Platform, media};
use crate::ops::images::{self, ImageError};
use crate::plan::{self, PlanOptions};
use crate::store::{IndexEntry, Store};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// Loads the image an `oci-layout://DIR[:TAG]` build context names into the store (verifying
/// every blob) and returns its digest, to use as `NamedContext::Image`.
pub fn load_layout_context(store: &Store, dir: &Path, tag: Option<&str>) -> Result<String, String> {
    let index_path = dir.join("index.json");
    let bytes = fs::read(&index_path).map_err(|e| format!("`{}`: {e}", index_path.display()))?;
    let index: Index =
        serde_json::from_slice(&bytes).map_err(|e| format!("`{}`: {e}", index_path.display()))?;
    let chosen = match tag {
        Some(t) => index.manifests.iter().find(|m| {
            m.annotations
                .get(crate::store::REF_NAME_ANNOTATION)
                .is_some_and(|r| r == t || r.ends_with(&format!(":{t}")))
        }),
        None if index.manifests.len() == 1 => index.manifests.first(),
        None => None,
    }
    .ok_or_else(|| match tag {
        Some(t) => format!("`{}` has no image tagged `{t}`", dir.display()),
        None => format!(
            "`{}` holds several images; name one with oci-layout://DIR:TAG",
            dir.display()
        ),
    })?;
    images::load(store, dir).map_err(|e| e.to_string())?;
    Ok(chosen.digest.clone())
}

/// The image bases of a first plan (with each one's SHELL), resolved (and pulled when the store lacks them and a
/// registry may be used; several at the same time, one thread each): their platforms and ENV
/// shape the real plan (a Windows base makes a Windows stage, its ENV is in scope). Errors are
/// left for the stage to report with its Dockerfile line.
pub(super) fn base_images(
    store: &Store,
    settings: &BuildSettings,
    df: &Dockerfile,
    checked: &Checked,
    opts: &PlanOptions,
) -> BTreeMap<String, (plan::BaseImage, Option<Vec<String>>)> {
    let mut images = BTreeMap::new();
    if let (Some(first), _) = plan::plan(df, checked, opts) {
        // Each image base once: (the stages' base names, reference, platform, explicit).
        let mut bases: Vec<(Vec<String>, String, Platform, bool)> = Vec::new();
        for st in first.stages.iter().filter(|s| s.base_stage.is_none()) {
            if st.base.eq_ignore_ascii_case("scratch") {
                continue;
            }
            let base_ref = match settings.contexts.get(&st.base) {
                Some(NamedContext::Image(r)) => r.clone(),
                Some(NamedContext::Dir(_)) => continue,
                None => st.base.clone(),
            };
            let explicit =
                checked.stages[st.index].platform.is_some() || settings.platform.is_some();
            match bases
                .iter_mut()
                .find(|(_, r, p, e)| *r == base_ref && *p == st.platform && *e == explicit)
            {
                Some((names, ..)) => names.push(st.base.clone()),
                None => bases.push((
                    vec![st.base.clone()],
                    base_ref,
                    st.platform.clone(),
                    explicit,
                )),
            }
        }
        // Bases that may have to be pulled are resolved at the same time, one thread each.
        // Errors are left for the stage to report with its Dockerfile line.
        let remote = settings.registry.as_ref();
        let resolve = |(_, r, p, e): &(Vec<String>, String, Platform, bool)| {
            resolve_base(store, r, p, *e, remote)
        };
        let resolved: Vec<_> = if remote.is_some() && bases.len() > 1 {
            std::thread::scope(|scope| {
                let handles: Vec<_> = bases
                    .iter()
                    .map(|b| scope.spawn(move || resolve(b)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            })
        } else {
            bases.iter().map(resolve).collect()
        };
        for ((names, ..), r) in bases.iter().zip(resolved) {
            if let Ok((config, _)) = r {
                for name in names {
                    images.insert(
                        name.clone(),
                        (
                            plan::BaseImage {
                                platform: config.platform(),
                                env: config.config.env.clone().unwrap_or_default(),
                            },
                            config.config.shell.clone(),
                        ),
                    );
                }
            }
        }
    }
    images
}

/// Resolves a base image reference to its config and layers for `platform` (choosing from an
/// index; `explicit` when a platform was asked for), pulling it when the store lacks it and
/// `remote` allows.
pub(super) fn resolve_base(
    store: &Store,
    base: &str,
    platform: &Platform,
    explicit: bool,
    remote: Option<&crate::registry::ClientOptions>,
) -> Result<(ImageConfig, Vec<Descriptor>), String> {
    let pull_err = |e: crate::ops::registry::TransferError| {
        format!(
            "base image `{base}` is not in the store and pulling it failed: {e}; load it (e.g. `wcbuild load -i fixtures/nanoserver.tar`) or check the registry"
        )
    };
    let entry = if base.starts_with("sha256:") {
        // An untagged image named by digest (an `oci-layout://` build context).
        let bytes = store.read_blob(base).map_err(|e| e.to_string())?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("`{base}`: {e}"))?;
        let media_type = v["mediaType"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| {
                if v.get("manifests").is_some() {
                    media::OCI_INDEX.into()
                } else {
                    media::OCI_MANIFEST.into()
                }
            });
        IndexEntry::new(&media_type, base, bytes.len() as u64)
    } else {
        match images::resolve(store, base) {
            Ok(e) => e,
            Err(ImageError::NotFound(_)) if remote.is_some() => {
                // Keep the index (if it is one) and fetch platforms as they are chosen below.
                let client = crate::ops::registry::client(remote.cloned().unwrap_or_default());
                let opts = crate::ops::registry::PullOptions {
                    platform: explicit.then(|| platform.clone()),
                    keep_index: true,
                    ..Default::default()
                };
                crate::ops::registry::runtime()
                    .block_on(crate::ops::registry::pull(
                        store,
                        &client,
                        base,
                        &opts,
                        &mut crate::progress::Silent,
                    ))
                    .map_err(pull_err)?;
                images::resolve(store, base).map_err(|e| e.to_string())?
            }
            Err(ImageError::NotFound(_)) => {
                return Err(format!(
                    "base image `{base}` is not in the store; load it first (e.g. `wcbuild load -i fixtures/nanoserver.tar`) or pull it"
                ));
            }
            Err(other) => return Err(other.to_string()),
        }
    };
    let read =
        |d: &str| -> Result<Vec<u8>, String> { store.read_blob(d).map_err(|e| e.to_string()) };
    let manifest_digest = if media::is_index(&entry.media_type) {
        let idx: Index =
            serde_json::from_slice(&read(&entry.digest)?).map_err(|e| e.to_string())?;
        let candidates: Vec<Option<&Platform>> =
            idx.manifests.iter().map(|m| m.platform.as_ref()).collect();
        let mut wanted = platform.clone();
        if !explicit {
            // No platform asked for: a Windows-only index builds for its newest version.
            if idx
                .manifests
                .iter()
                .all(|m| m.platform.as_ref().is_some_and(|p| p.is_windows()))
            {
                wanted = Platform::new("windows", &platform.architecture);
            }
        }
        // No platform asked for on a Windows host: the entry `pull` takes (image::compat).
        let on_windows_host = if explicit {
            None
        } else {
            crate::ops::compat::base_entry(base, &candidates)?
        };
        match on_windows_host.or_else(|| crate::image::platform::choose(&wanted, &candidates)) {
            Some(i) => idx.manifests[i].digest.clone(),
            None => {
                let have: Vec<String> = idx
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref().map(|p| p.to_string()))
                    .collect();
                return Err(format!(
                    "`{base}` has no image for {wanted}; it has {}; choose one with --platform",
                    have.join(", ")
                ));
            }
        }
    } else {
        entry.digest.clone()
    };
    if let Some(remote) = remote
        && store
            .blob_size(&manifest_digest)
            .map_err(|e| e.to_string())?
            .is_none()
    {
        // A platform of a kept index that was not fetched yet.
        let client = crate::ops::registry::client(remote.clone());
        crate::ops::registry::runtime()
            .block_on(crate::ops::registry::fetch_manifest(
                store,
                &client,
                base,
                &manifest_digest,
                &mut crate::progress::Silent,
            ))
            .map_err(pull_err)?;
    }
    let manifest: Manifest =
        serde_json::from_slice(&read(&manifest_digest)?).map_err(|e| e.to_string())?;
    let config: ImageConfig =
        serde_json::from_slice(&read(&manifest.config.digest)?).map_err(|e| e.to_string())?;
    if explicit {
        let p = config.platform();
        if p.os != platform.os || p.architecture != platform.architecture {
            return Err(format!("`{base}` is {p}, not the requested {platform}"));
        }
        if let (Some(want), Some(have)) = (platform.windows_version(), p.windows_version())
            && (want.major, want.minor, want.build) != (have.major, have.minor, have.build)
        {
            return Err(format!(
                "`{base}` is for Windows {have}, not the requested {want}"
            ));
        }
    }
    Ok((config, manifest.layers))
}
