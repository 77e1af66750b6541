//! What a stage's file system holds at a path, without assembling it: the entries of its
//! layers (names, kinds, link targets; never contents) merged in order, whiteouts and opaque
//! markers applied. COPY asks it whether a destination is an existing directory (following
//! symlinks inside the stage, as BuildKit's copy does), which decides whether a file goes *to*
//! the destination or *into* it.
//!
//! Each layer's entries are read once (headers only) and kept in the store's cache by
//! diff_id (`cache/v1/paths/`), so later builds on the same base read no layer.

use crate::image::Descriptor;
use crate::layer::ReadLimits;
use crate::layer::tar::Kind;
use crate::store::Store;
use std::collections::BTreeMap;

/// Version of the path records in the cache; bump when their meaning changes.
const PATHS_VERSION: u32 = 2;

/// What a path is, as far as COPY cares.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum Node {
    /// A directory, with the mode and owner a COPY into it leaves as they are.
    Dir {
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u64,
        /// Group.
        gid: u64,
    },
    /// A symlink and its target as written.
    Link(String),
    /// Anything else (files, hard links, devices).
    Other,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PathRecord {
    version: u32,
    /// `(path, node)` in tar order; whiteouts as `(path, None)`, opaque markers as
    /// `(dir + "/", None)`.
    entries: Vec<(String, Option<Node>)>,
}

/// The merged view of a stage's layers.
#[derive(Debug, Default, Clone)]
pub(super) struct StageView {
    /// Path (relative, `/`-separated; lower case on Windows stages) → node.
    nodes: BTreeMap<String, Node>,
    windows: bool,
}

impl StageView {
    /// An empty view (a stage from scratch).
    pub(super) fn new(windows: bool) -> StageView {
        StageView {
            nodes: BTreeMap::new(),
            windows,
        }
    }

    /// Applies a layer (the next one up) to the view.
    pub(super) fn push_layer(&mut self, store: &Store, layer: &Descriptor) -> Result<(), String> {
        for (path, node) in layer_paths(store, layer)? {
            self.apply(&path, node);
        }
        Ok(())
    }

    fn key(&self, path: &str) -> String {
        let p = path.trim_matches('/');
        if self.windows {
            p.to_lowercase()
        } else {
            p.to_string()
        }
    }

    /// Applies one layer entry (as [`layer_paths`] gives it) on top.
    fn apply(&mut self, path: &str, node: Option<Node>) {
        match node {
            Some(n) => {
                let k = self.key(path);
                if !matches!(n, Node::Dir { .. }) {
                    self.remove_under(&k);
                }
                self.nodes.insert(k, n);
            }
            None if path.ends_with('/') => {
                // Opaque: the directory stays, its lower content goes.
                let k = self.key(path);
                self.remove_under(&k);
            }
            None => {
                let k = self.key(path);
                self.nodes.remove(&k);
                self.remove_under(&k);
            }
        }
    }

    fn remove_under(&mut self, key: &str) {
        let prefix = if key.is_empty() {
            String::new()
        } else {
            format!("{key}/")
        };
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// Resolves `path` (absolute or relative to `/`) through the stage's symlinks at every
    /// component (absolute targets from the stage's root, `..` never above it), as the
    /// kernel inside the container would: the real path (relative, `/`-separated, as
    /// written in the layers) and what is there (`None` when nothing is, in which case the
    /// path's missing tail is kept as given).
    pub(super) fn resolve(&self, path: &str) -> (String, Option<Node>) {
        let mut todo: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(String::from)
            .rev()
            .collect();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        let mut missing = false;
        while let Some(c) = todo.pop() {
            if c == ".." {
                cur.pop();
                continue;
            }
            cur.push(c);
            if missing {
                continue;
            }
            match self.nodes.get(&self.key(&cur.join("/"))) {
                None => missing = true,
                Some(Node::Link(target)) => {
                    hops += 1;
                    if hops > 40 {
                        // A loop: nothing usable is there.
                        missing = true;
                        continue;
                    }
                    cur.pop();
                    let t = if self.windows {
                        windows_target(target)
                    } else {
                        target.clone()
                    };
                    if t.starts_with('/') {
                        cur.clear();
                    }
                    for part in t.split('/').rev() {
                        if !part.is_empty() && part != "." {
                            todo.push(part.to_string());
                        }
                    }
                }
                Some(Node::Dir { .. }) => {}
                Some(Node::Other) if todo.is_empty() => {}
                Some(Node::Other) => missing = true,
            }
        }
        let real = cur.join("/");
        if missing {
            return (real, None);
        }
        if real.is_empty() {
            return (
                real,
                Some(Node::Dir {
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                }),
            );
        }
        let node = self.nodes.get(&self.key(&real)).cloned();
        (real, node)
    }

    /// What `path` is, through symlinks (see [`Self::resolve`]).
    pub(super) fn stat(&self, path: &str) -> Option<Node> {
        self.resolve(path).1
    }

    /// True when `path` is an existing directory (through symlinks).
    #[cfg(test)]
    fn is_dir(&self, path: &str) -> bool {
        matches!(self.stat(path), Some(Node::Dir { .. }))
    }
}

/// A Windows link target (`C:\x\y`, `..\y`) as a `/`-separated path in the container.
fn windows_target(t: &str) -> String {
    let s = t.replace('\\', "/");
    match s.as_bytes() {
        [d, b':', ..] if d.is_ascii_alphabetic() => s[2..].to_string(),
        _ => s,
    }
}

/// The entries of one layer as the view applies them: container paths (a Windows layer's
/// `Files/` prefix removed, its other trees left out), whiteouts as `(path, None)`, opaque
/// markers as `(dir/, None)`. From the cache when this layer was read before.
fn layer_paths(store: &Store, layer: &Descriptor) -> Result<Vec<(String, Option<Node>)>, String> {
    let hex = layer.digest.trim_start_matches("sha256:").to_string();
    let rel = std::path::PathBuf::from("cache")
        .join(format!("v{}", crate::store::CACHE_VERSION))
        .join("paths")
        .join(format!("{hex}.json"));
    if let Ok(bytes) = std::fs::read(store.root().join(&rel))
        && let Ok(rec) = serde_json::from_slice::<PathRecord>(&bytes)
        && rec.version == PATHS_VERSION
    {
        return Ok(rec.entries);
    }
    let blob = store
        .open_blob(&layer.digest)
        .map_err(|e| format!("layer `{}`: {e}", layer.digest))?;
    let mut tar = crate::layer::tar_reader(std::io::BufReader::new(blob), ReadLimits::default())
        .map_err(|e| format!("layer `{}`: {e}", layer.digest))?;
    let mut entries = Vec::new();
    let mut windows: Option<bool> = None;
    while let Some(e) = tar
        .next_entry()
        .map_err(|e| format!("layer `{}`: {e}", layer.digest))?
    {
        let h = &e.header;
        let raw = h.path.trim_start_matches("./").trim_matches('/');
        let win = *windows.get_or_insert_with(|| {
            raw == "Files"
                || raw == "Hives"
                || raw.starts_with("Files/")
                || raw.starts_with("Hives/")
        });
        let path = if win {
            match raw.strip_prefix("Files/") {
                Some(p) => p,
                None => continue,
            }
        } else {
            raw
        };
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (Some(d), b),
            None => (None, path),
        };
        let join = |name: &str| match dir {
            Some(d) => format!("{d}/{name}"),
            None => name.to_string(),
        };
        if base == ".wh..wh..opq" {
            entries.push((format!("{}/", dir.unwrap_or("")), None));
            continue;
        }
        if let Some(hidden) = base.strip_prefix(".wh.") {
            if !hidden.is_empty() && hidden != "." && hidden != ".." {
                entries.push((join(hidden), None));
            }
            continue;
        }
        if path.split('/').any(|c| c == "..") {
            continue;
        }
        let node = match h.kind {
            Kind::Dir => Node::Dir {
                mode: h.mode & 0o7777,
                uid: h.uid,
                gid: h.gid,
            },
            Kind::Symlink => Node::Link(h.link.clone()),
            _ => Node::Other,
        };
        entries.push((path.to_string(), Some(node)));
    }
    let rec = PathRecord {
        version: PATHS_VERSION,
        entries,
    };
    if let Ok(bytes) = serde_json::to_vec(&rec)
        && let Err(e) = store.write_cache_record(&rel, &bytes)
    {
        tracing::debug!("path record of `{}` not kept: {e}", layer.digest);
    }
    Ok(rec.entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Node = Node::Dir {
        mode: 0o755,
        uid: 0,
        gid: 0,
    };

    fn view(entries: &[(&str, Option<Node>)], windows: bool) -> StageView {
        let mut v = StageView {
            nodes: BTreeMap::new(),
            windows,
        };
        for (p, n) in entries {
            v.apply(p, n.clone());
        }
        v
    }

    #[test]
    fn directories_through_links_whiteouts_and_opaque_markers() {
        let v = view(
            &[
                ("app", Some(D)),
                ("etc", Some(D)),
                ("etc/nginx", Some(D)),
                ("etc/conf", Some(Node::Link("nginx".into()))),
                ("etc/abs", Some(Node::Link("/app".into()))),
                ("etc/up", Some(Node::Link("../../../../app".into()))),
                ("etc/file", Some(Node::Other)),
                ("gone", Some(D)),
                ("gone/x", Some(Node::Other)),
                ("gone", None),
                ("opq", Some(D)),
                ("opq/old", Some(D)),
                ("opq/", None),
                ("loop", Some(Node::Link("loop".into()))),
            ],
            false,
        );
        assert!(v.is_dir("/app"));
        assert!(v.is_dir("/"));
        assert!(v.is_dir("etc/conf"), "a link to a directory is a directory");
        assert!(v.is_dir("/etc/abs"));
        assert!(v.is_dir("/etc/up"), "`..` stops at the root");
        assert!(!v.is_dir("/etc/file"));
        assert_eq!(v.stat("/etc/file/x"), None);
        assert_eq!(v.stat("/gone"), None);
        assert_eq!(v.stat("/gone/x"), None);
        assert!(v.is_dir("/opq"));
        assert_eq!(v.stat("/opq/old"), None);
        assert_eq!(v.stat("/loop"), None, "a link loop is nothing");
        assert_eq!(v.stat("/missing"), None);
        assert_eq!(v.resolve("/etc/conf/x/y").0, "etc/nginx/x/y");
        assert_eq!(v.resolve("/etc/abs").0, "app");
        assert_eq!(v.resolve("etc/up/new").0, "app/new");
        assert_eq!(v.resolve("/etc/./nginx/../conf").0, "etc/nginx");
    }

    #[test]
    fn windows_stages_compare_without_case_and_read_drive_targets() {
        let v = view(
            &[
                ("App", Some(D)),
                ("link", Some(Node::Link("C:\\App".into()))),
            ],
            true,
        );
        assert!(v.is_dir("/app"));
        assert!(v.is_dir("/APP"));
        assert!(v.is_dir("/link"));
    }
}
