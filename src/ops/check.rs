//! `wcbuild check`: the store's own verification ([`crate::store::Store::check`]) plus what
//! needs the layer code: every `unpacked/<diff_id>/` directory (a layer unpacked once as an
//! overlayfs lower directory) is compared with its layer, entry by entry (kind, mode, size,
//! content, link target, whiteouts as 0/0 devices), while the store is still held alone. A
//! directory that does not match, or whose layer the store no longer has, is reported;
//! repair removes it (it is derived data: the next `RUN` unpacks the layer again).

use crate::layer::names::{self, Rules, Whiteout};
use crate::layer::tar::Kind;
use crate::store::{CheckOptions, CheckReport, Defect, DefectKind, Store, StoreError};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::path::Path;

/// Checks the store and its unpacked layers; with `opts.repair`, removes what cannot be
/// trusted. `waiting` is called when another wcbuild holds the store and check waits for it.
pub fn check(
    store: Store,
    opts: &CheckOptions,
    waiting: impl FnOnce(),
) -> Result<CheckReport, StoreError> {
    let (mut report, store) = store.check_holding(opts, waiting)?;
    let unpacked = store.root().join("unpacked");
    let Ok(rd) = fs::read_dir(&unpacked) else {
        return Ok(report);
    };
    let layers = layer_blobs(&store);
    let mut dirs: Vec<_> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    dirs.sort();
    for hex in dirs {
        let dir = unpacked.join(&hex);
        let diff_id = format!("sha256:{hex}");
        // A layer no image or record names yet (a build killed between writing it and
        // recording its step) is still known when its uncompressed blob is in the store.
        let blob = layers
            .get(&diff_id)
            .cloned()
            .or_else(|| matches!(store.blob_size(&diff_id), Ok(Some(_))).then(|| diff_id.clone()));
        let problem = match blob.as_ref() {
            None => Some(format!(
                "`unpacked/{hex}` is layer `{diff_id}`, which no image or record in the store has"
            )),
            Some(blob) => compare(&store, blob, &dir)
                .err()
                .map(|m| format!("`unpacked/{hex}` does not match layer `{diff_id}`: {m}")),
        };
        if let Some(message) = problem {
            let repaired = opts.repair && remove_tree(&dir).is_ok();
            report.defects.push(Defect {
                kind: DefectKind::BadUnpacked,
                path: format!("unpacked/{hex}"),
                message,
                repaired,
            });
        }
    }
    Ok(report)
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    fs::remove_dir_all(dir)
}

/// diff_id → the blob holding that layer (any compression), from every image the tags reach
/// and the step records.
fn layer_blobs(store: &Store) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut todo: Vec<String> = store
        .entries()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.digest)
        .collect();
    let mut seen = std::collections::HashSet::new();
    while let Some(d) = todo.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let Ok(bytes) = store.read_blob(&d) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if let Some(list) = v.get("manifests").and_then(|m| m.as_array()) {
            todo.extend(
                list.iter()
                    .filter_map(|m| m["digest"].as_str().map(str::to_string)),
            );
        }
        let (Some(config), Some(layers)) = (
            v["config"]["digest"].as_str(),
            v.get("layers").and_then(|l| l.as_array()),
        ) else {
            continue;
        };
        let Ok(cfg) = store
            .read_blob(config)
            .map_err(|_| ())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|_| ()))
        else {
            continue;
        };
        let diff_ids = cfg["rootfs"]["diff_ids"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (id, layer) in diff_ids.iter().zip(layers) {
            if let (Some(id), Some(l)) = (id.as_str(), layer["digest"].as_str()) {
                out.entry(id.to_string()).or_insert_with(|| l.to_string());
            }
        }
    }
    for rec in store.step_records() {
        out.entry(rec.diff_id).or_insert(rec.layer.digest);
    }
    out
}

/// What the tree must hold at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Dir(u32),
    File {
        mode: u32,
        size: u64,
        sha256: String,
    },
    Link(String),
    /// A hard link: the same content as the file at this path.
    Hard(String),
    /// A whiteout: a 0/0 character device.
    Whiteout,
    Special(Kind),
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the layer and compares the tree with it.
fn compare(store: &Store, blob: &str, dir: &Path) -> Result<(), String> {
    let f = store.open_blob(blob).map_err(|e| e.to_string())?;
    let mut tar = crate::layer::tar_reader(std::io::BufReader::new(f), Default::default())
        .map_err(|e| format!("layer blob `{blob}`: {e}"))?;
    let mut want: BTreeMap<String, Want> = BTreeMap::new();
    while let Some(entry) = tar.next_entry().map_err(|e| e.to_string())? {
        let h = entry.header;
        let comps = names::components(&h.path, Rules::Unix).map_err(|e| e.to_string())?;
        let Some((&base, parent)) = comps.split_last() else {
            continue;
        };
        let path = |name: &str| {
            let mut p = parent.join("/");
            if !p.is_empty() {
                p.push('/');
            }
            p.push_str(name);
            p
        };
        match names::whiteout(base, Rules::Unix).map_err(|e| e.to_string())? {
            Some(Whiteout::Hides(hidden)) => {
                want.insert(path(hidden), Want::Whiteout);
                continue;
            }
            Some(_) => continue,
            None => {}
        }
        let w = match h.kind {
            Kind::Dir => Want::Dir(h.mode & 0o7777),
            Kind::File => {
                let mut s = Sha256::new();
                std::io::copy(&mut tar.content(), &mut s).map_err(|e| e.to_string())?;
                Want::File {
                    mode: h.mode & 0o7777,
                    size: h.size,
                    sha256: hex(s.finalize()),
                }
            }
            Kind::Symlink => Want::Link(h.link.clone()),
            Kind::Hardlink => {
                let target = names::components(&h.link, Rules::Unix)
                    .map_err(|e| e.to_string())?
                    .join("/");
                Want::Hard(target)
            }
            k => Want::Special(k),
        };
        want.insert(path(base), w);
    }
    for (path, w) in &want {
        let p = dir.join(path);
        let meta = fs::symlink_metadata(&p).map_err(|_| format!("`{path}` is missing"))?;
        let ty = meta.file_type();
        let ok = match w {
            Want::Dir(_) => ty.is_dir(),
            Want::File { size, sha256, .. } => {
                ty.is_file() && meta.len() == *size && file_sha256(&p).as_deref() == Some(sha256)
            }
            Want::Link(target) => {
                ty.is_symlink() && fs::read_link(&p).is_ok_and(|t| t.as_os_str() == target.as_str())
            }
            Want::Hard(target) => match want.get(target) {
                Some(Want::File { sha256, .. }) => {
                    ty.is_file() && file_sha256(&p).as_deref() == Some(sha256)
                }
                _ => true,
            },
            Want::Whiteout => is_whiteout(&meta),
            Want::Special(_) => !ty.is_dir() && !ty.is_file() && !ty.is_symlink(),
        };
        if !ok {
            return Err(format!("`{path}` is not what the layer holds"));
        }
        #[cfg(unix)]
        if let Want::Dir(mode) | Want::File { mode, .. } = w {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o7777 != *mode {
                return Err(format!(
                    "`{path}` has mode {:o}, the layer says {mode:o}",
                    meta.permissions().mode() & 0o7777
                ));
            }
        }
    }
    // Nothing the layer does not hold (directories its entries imply are fine).
    let mut extra = None;
    walk(dir, "", &mut |rel, is_dir| {
        if extra.is_none()
            && !want.contains_key(rel)
            && !(is_dir && want.keys().any(|k| k.starts_with(&format!("{rel}/"))))
        {
            extra = Some(rel.to_string());
        }
    });
    match extra {
        Some(p) => Err(format!("`{p}` is not in the layer")),
        None => Ok(()),
    }
}

fn file_sha256(p: &Path) -> Option<String> {
    let mut f = fs::File::open(p).ok()?;
    let mut s = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        s.update(&buf[..n]);
    }
    Some(hex(s.finalize()))
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        meta.file_type().is_char_device() && meta.rdev() == 0
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

fn walk(dir: &Path, prefix: &str, f: &mut dyn FnMut(&str, bool)) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        f(&rel, is_dir);
        if is_dir {
            walk(&e.path(), &rel, f);
        }
    }
}
