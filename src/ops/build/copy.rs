//! `COPY` and `ADD`: sources (the context through `.dockerignore`, an earlier stage's or an
//! image's file system, archives ADD unpacks, downloads, git checkouts, heredocs) collected into
//! entries under the destination, a cache key over their content, and one layer.

use super::cache::cache_key;
use super::context::{CopyItem, collect_dir, context_matches, item_for, resolve_beneath};
use super::paths::{join_clean, windows_path};
use super::rootfs::Rootfs;
use super::sources::{ArchiveKind, archive_kind, git_checkout, http_download, is_git_source};
use super::state::{Ctx, StageState, add_layer, write_layer};
use super::user::stage_owner;
use super::view::{Node, StageView};
use crate::dockerfile::check::CopySpec;
use crate::dockerfile::ignore::IgnoreFile;
use crate::layer::tar::{Header, Kind};
use crate::progress::Event;
use std::fs;
use std::path::PathBuf;

/// What a COPY or ADD did: its history text, the new cache chain key, and whether the layer
/// came from the cache.
pub(super) struct CopyDone {
    pub(super) message: String,
    pub(super) chain: String,
    pub(super) cached: bool,
}

// The step needs the build, the stage, and its own inputs; a struct for the latter would only
// rename the parameters.
#[allow(clippy::too_many_arguments)]
pub(super) fn copy_step(
    ctx: &mut Ctx<'_>,
    state: &mut StageState,
    ignore: &IgnoreFile,
    spec: &CopySpec,
    add: bool,
    now: i64,
    source: Option<&Rootfs>,
    chain: &str,
) -> Result<CopyDone, String> {
    let settings = ctx.settings;
    let name = if add { "ADD" } else { "COPY" };
    let no_ignore = IgnoreFile::default();
    let (src_root, ignore, keep_owner) = match source {
        Some(r) => (r.path.clone(), &no_ignore, true),
        None => (settings.context.clone(), ignore, false),
    };
    let windows = state.windows();
    let mode_override: Option<Chmod> = match &spec.chmod {
        None => None,
        Some(m) => Some(Chmod::parse(m).map_err(|e| format!("{name} --chmod={m}: {e}"))?),
    };
    let (uid, gid, owner) = match &spec.chown {
        None => (0, 0, None),
        Some(c) if windows => {
            let sid = match c.as_str() {
                "ContainerUser" => crate::layer::windows::CONTAINER_USER_SID.to_string(),
                "ContainerAdministrator" => {
                    crate::layer::windows::CONTAINER_ADMINISTRATOR_SID.to_string()
                }
                s if s.starts_with("S-1-") => s.to_string(),
                other => {
                    return Err(format!(
                        "{name} --chown={other}: a Windows user must be ContainerUser, ContainerAdministrator or a SID (S-1-…) in this version"
                    ));
                }
            };
            (0, 0, Some(sid))
        }
        Some(c) => {
            let (uid, gid) = stage_owner(ctx.store, &state.layers, c)?;
            (uid, gid, None)
        }
    };
    let excludes =
        IgnoreFile::from_patterns(&spec.excludes).map_err(|e| format!("--exclude: {e}"))?;
    // Destination, in the container's terms.
    let workdir = state.config.config.working_dir.clone().unwrap_or_default();
    let (dest_raw, base) = if windows {
        (windows_path(&spec.dest)?, windows_path(&workdir)?)
    } else {
        (spec.dest.clone(), workdir)
    };
    // A destination that is `.`, ends in `/` (or `\` on Windows stages), or is an existing
    // directory is a directory: files go into it. Otherwise a file goes to it, and each later
    // source replaces the earlier one, as BuildKit copies.
    let slash = names_a_directory(&spec.dest, windows);
    let dest = join_clean(if base.is_empty() { "/" } else { &base }, &dest_raw);
    // The destination through the stage's symlinks, as the copy inside the container would
    // resolve it (`/www` → `/srv` when the base links them).
    state.refresh_view(ctx.store)?;
    let view = state.view().expect("refreshed above");
    let dest_rel = view.resolve(&dest).0;
    let mut target = Destination {
        rel: dest_rel.clone(),
        slash,
        view,
        windows,
        used: false,
    };
    let mut items: Vec<CopyItem> = Vec::new();
    let mut printed = Vec::new();
    // Archives ADD unpacks, removed when the step ends, however it ends.
    let mut unpacked: Vec<crate::store::ScratchDir> = Vec::new();
    let mut scratch = |purpose: &str| -> Result<PathBuf, String> {
        let d = ctx.store.scratch_dir(purpose).map_err(|e| e.to_string())?;
        let p = d.path().join("x");
        unpacked.push(d);
        Ok(p)
    };
    // Entries are marked with the source they came from when the next source starts.
    let mut marked = 0;
    for (origin, src) in spec.sources.iter().enumerate() {
        for it in &mut items[marked..] {
            it.origin = origin.saturating_sub(1);
        }
        marked = items.len();
        if add && is_git_source(src) {
            printed.push(src.clone());
            let dir = scratch("git")?;
            let (root, commit) = git_checkout(src, &dir, spec.keep_git_dir == Some(true))?;
            if let Some(want) = &spec.checksum
                && !commit.starts_with(want.trim_start_matches("sha1:"))
            {
                return Err(format!(
                    "ADD {src}: checksum mismatch: --checksum={want}, the commit is {commit}"
                ));
            }
            target.check_dir(&items)?;
            collect_dir(&root, "", &dest_rel, &no_ignore, &excludes, &mut items)?;
            continue;
        }
        if add && (src.starts_with("http://") || src.starts_with("https://")) {
            printed.push(src.clone());
            let dir = scratch("download")?;
            fs::create_dir_all(&dir).map_err(|e| format!("`{}`: {e}", dir.display()))?;
            let file = dir.join("download");
            let digest = http_download(src, &file, settings.registry.as_ref())?;
            if let Some(want) = &spec.checksum
                && *want != digest
            {
                return Err(format!(
                    "ADD {src}: checksum mismatch: --checksum={want}, the download is {digest}"
                ));
            }
            let name = src
                .split(['?', '#'])
                .next()
                .unwrap_or(src)
                .rsplit('/')
                .next()
                .filter(|n| !n.is_empty())
                .unwrap_or("index.html")
                .to_string();
            let to = target.file(&items, &name)?;
            let meta = fs::metadata(&file).map_err(|e| e.to_string())?;
            let mut it = item_for(&file, &meta, &to)?;
            // Downloads get mode 600, as BuildKit gives them.
            it.mode = 0o600;
            items.push(it);
            continue;
        }
        if add && (src.contains("://") || src.starts_with("git@")) {
            return Err(format!(
                "ADD of `{src}` is not supported: http(s) URLs, git repositories and local files are"
            ));
        }
        printed.push(src.clone());
        let raw = if source.is_some_and(|r| r.windows) {
            windows_path(src)?
        } else {
            src.clone()
        };
        let pattern = crate::dockerfile::ignore::clean(raw.trim_start_matches('/'));
        let pattern = pattern.trim_start_matches("../").to_string();
        let wildcard = has_wildcards(&pattern);
        let matches = context_matches(&src_root, &pattern, ignore)?;
        if matches.is_empty() && wildcard {
            // A wildcard that matches nothing copies nothing, as in BuildKit.
            continue;
        }
        if matches.is_empty() {
            return Err(match source {
                Some(r) => format!("{name} source `{src}` not found in {}", r.label),
                None => format!(
                    "{name} source `{src}` not found in the build context (or excluded by .dockerignore)"
                ),
            });
        }
        for (rel, named) in matches {
            // The path a source names is followed when it is a symlink (inside its root), as
            // BuildKit does; links inside directories stay links.
            let path = resolve_beneath(&src_root, &named).map_err(|e| match source {
                Some(r) => format!("{name} source `{src}` in {}: {e}", r.label),
                None => format!("{name} source `{src}`: {e}"),
            })?;
            let meta =
                fs::symlink_metadata(&path).map_err(|e| format!("`{}`: {e}", path.display()))?;
            if meta.is_dir() {
                // A directory's contents go into the destination (under its kept parents
                // with --parents).
                let dir_target = match kept_path(spec.parents, &raw, &rel) {
                    Some(k) => {
                        target.used = true;
                        format!("{}/{k}", dest_rel.trim_end_matches('/'))
                    }
                    None => {
                        target.check_dir(&items)?;
                        dest_rel.clone()
                    }
                };
                collect_dir(&path, &rel, &dir_target, ignore, &excludes, &mut items)?;
            } else {
                if add && spec.unpack != Some(false) && source.is_none() {
                    match archive_kind(&path) {
                        Some(ArchiveKind::Tar) => {
                            // A local tar (plain, gzip or zstd) is unpacked into the
                            // destination, merging with what is there, owners kept.
                            let tmp = scratch("add")?;
                            let f = fs::File::open(&path)
                                .map_err(|e| format!("`{}`: {e}", path.display()))?;
                            crate::layer::extract(
                                std::io::BufReader::new(f),
                                &tmp,
                                &crate::layer::ExtractOptions::default(),
                            )
                            .map_err(|e| format!("ADD `{src}`: {e}"))?;
                            let before = items.len();
                            target.check_dir(&items)?;
                            collect_dir(&tmp, "", &dest_rel, &no_ignore, &excludes, &mut items)?;
                            for it in &mut items[before..] {
                                it.from_archive = true;
                            }
                            continue;
                        }
                        Some(ArchiveKind::Unsupported(what)) => {
                            return Err(format!(
                                "ADD `{src}`: {what} archives are not unpacked by this version of wcbuild (gzip, zstd and plain tar are); use --unpack=false to copy it as a file"
                            ));
                        }
                        None => {}
                    }
                }
                let to = match kept_path(spec.parents, &raw, &rel) {
                    // --parents: the destination is the directory the kept path goes under.
                    Some(k) => {
                        target.used = true;
                        format!("{}/{k}", dest_rel.trim_end_matches('/'))
                            .trim_start_matches('/')
                            .to_string()
                    }
                    None => {
                        let base_name = rel.rsplit('/').next().unwrap_or(&rel);
                        target.file(&items, base_name)?
                    }
                };
                items.push(item_for(&path, &meta, &to)?);
            }
        }
    }
    for it in &mut items[marked..] {
        it.origin = spec.sources.len().saturating_sub(1);
    }
    for doc in &spec.inline {
        printed.push(format!("<<{}", doc.name));
        let to = target.file(&items, &doc.name)?;
        items.push(CopyItem {
            dest: to,
            source: None,
            inline: Some(doc.content.clone().into_bytes()),
            kind: Kind::File,
            mode: 0o644,
            mtime: now,
            link: String::new(),
            uid: 0,
            gid: 0,
            from_archive: false,
            exact: false,
            origin: usize::MAX,
            stat: None,
            link_id: None,
        });
    }
    // The directories the copy goes through or creates: those that exist keep their mode and
    // owner; new ones are 0755, owned by the --chown user (root without one), as BuildKit's
    // copy makes them.
    let created_owner = if owner.is_some() { (0, 0) } else { (uid, gid) };
    target.parents(&mut items, created_owner, now);
    // One entry per path, the last source's winning (a stable sort keeps their order).
    items.reverse();
    items.sort_by(|a, b| a.dest.cmp(&b.dest));
    items.dedup_by(|a, b| a.dest == b.dest);
    // A file with several names among the sources keeps them as hard links to its first
    // name (in tar order), as BuildKit's copy does and as Windows' importer expects.
    // Each source is its own copy, so links are kept within one source only.
    let mut first_names: std::collections::HashMap<(usize, u64, u64), String> =
        std::collections::HashMap::new();
    for it in &mut items {
        if it.kind == Kind::File
            && it.inline.is_none()
            && let Some((dev, ino)) = it.link_id
        {
            match first_names.entry((it.origin, dev, ino)) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    it.kind = Kind::Hardlink;
                    it.link = first.get().clone();
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(it.dest.clone());
                }
            }
        }
    }
    // The cache key: the chain so far and every item's path, kind, mode, owner, link and
    // content (times are not part of it). Contents come from the stat cache when it knows
    // them; when some file must be read, it is hashed while it is written into the layer
    // (read once), and the key is known when the layer is.
    let head = format!("{owner:?} {uid} {gid} {mode_override:?} {keep_owner}");
    let item_part = |it: &CopyItem, content: &str| {
        format!(
            "{}\0{:?}\0{:o}\0{}:{}\0{}\0{content}",
            it.dest, it.kind, it.mode, it.uid, it.gid, it.link
        )
    };
    let content_of = |cache: &super::cache::BuildCache, it: &CopyItem| -> Option<String> {
        match (&it.source, &it.inline) {
            (_, Some(data)) => Some(cache_key(&[&String::from_utf8_lossy(data)])),
            (Some(p), None) if it.kind == Kind::File => {
                it.stat.and_then(|m| cache.known_hash(p, m))
            }
            _ => Some(String::new()),
        }
    };
    let known_key = {
        let mut k = super::cache::KeyHasher::new();
        k.part(chain);
        k.part(&head);
        let mut all = true;
        for it in &items {
            match content_of(&ctx.cache, it) {
                Some(c) => k.part(&item_part(it, &c)),
                None => {
                    all = false;
                    break;
                }
            }
        }
        all.then(|| k.finish())
    };
    let total: u64 = items
        .iter()
        .map(|it| match (&it.source, &it.inline) {
            (_, Some(d)) => d.len() as u64,
            (Some(_), None) if it.kind == Kind::File => it.stat.map(|s| s.0).unwrap_or(0),
            _ => 0,
        })
        .sum();
    let stage_index = ctx.stage;
    let mut done = 0u64;
    let mut last_report = std::time::Instant::now();
    // Content hashes of the files read while writing (when the stat cache did not know them).
    let mut read_hashes: Vec<Option<[u8; 32]>> = Vec::new();
    let mut fill = |w: &mut crate::layer::LayerWriter<&mut crate::store::BlobWriter<'_>>,
                    reporter: &mut dyn crate::progress::Reporter,
                    read_hashes: &mut Vec<Option<[u8; 32]>>|
     -> std::io::Result<()> {
        for it in &items {
            let mut hashed = None;
            if it.dest.is_empty() {
                read_hashes.push(None);
                continue;
            }
            let mut h = Header::new(&it.dest, it.kind);
            h.mode = match (&mode_override, it.kind) {
                _ if it.exact => it.mode,
                (Some(m), Kind::File) | (Some(m), Kind::Dir) => {
                    m.apply(it.mode, it.kind == Kind::Dir)
                }
                _ => it.mode,
            };
            if it.exact || ((keep_owner || it.from_archive) && spec.chown.is_none()) {
                h.uid = it.uid;
                h.gid = it.gid;
            } else {
                h.uid = uid;
                h.gid = gid;
            }
            h.mtime = it.mtime;
            h.link = it.link.clone();
            // A name Windows cannot hold is reported with the source it came from.
            let named = |e: std::io::Error| -> std::io::Error {
                let bad = e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<crate::layer::windows::WindowsNameError>())
                    .cloned();
                match bad {
                    Some(b) => {
                        let from = it
                            .source
                            .as_ref()
                            .map(|p| {
                                let rel = p.strip_prefix(&src_root).unwrap_or(p);
                                format!("`{}` ", rel.display())
                            })
                            .unwrap_or_default();
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            format!(
                                "{from}cannot go into a Windows layer as `{}`: {}",
                                b.path, b.problem
                            ),
                        )
                    }
                    None => e,
                }
            };
            match (&it.source, &it.inline) {
                (_, Some(data)) => {
                    h.size = data.len() as u64;
                    done += h.size;
                    w.append(h, Some(&mut &data[..]), false).map_err(named)?;
                }
                (Some(p), None) if it.kind == Kind::File => {
                    let f = fs::File::open(p)?;
                    h.size = f.metadata()?.len();
                    done += h.size;
                    let mut r = HashingReader::new(f);
                    w.append(h, Some(&mut r), false).map_err(named)?;
                    hashed = Some(r.finish());
                }
                _ => {
                    let dir_link = it.kind == Kind::Symlink
                        && it
                            .source
                            .as_ref()
                            .is_some_and(|p| fs::metadata(p).map(|m| m.is_dir()).unwrap_or(false));
                    w.append(h, None, dir_link).map_err(named)?;
                }
            }
            read_hashes.push(hashed);
            if last_report.elapsed() >= std::time::Duration::from_millis(100) {
                last_report = std::time::Instant::now();
                reporter.event(Event::Packing {
                    stage: stage_index,
                    done,
                    total,
                });
            }
        }
        reporter.event(Event::Packing {
            stage: stage_index,
            done,
            total,
        });
        Ok(())
    };
    let (key, cached) = match known_key {
        // Every content known without reading: a hit reads nothing.
        Some(key) => {
            let cached = add_layer(ctx, state, &key, owner, |w, reporter| {
                fill(w, reporter, &mut Vec::new())
            })?;
            (key, cached)
        }
        // Some file must be read: written and hashed in one pass, then the key and the cache.
        None => {
            let (layer, diff_id) = write_layer(ctx, state.windows(), owner, |w, reporter| {
                fill(w, reporter, &mut read_hashes)
            })?;
            let mut k = super::cache::KeyHasher::new();
            k.part(chain);
            k.part(&head);
            for (it, read) in items.iter().zip(&read_hashes) {
                let content = match (read, &it.source, it.stat) {
                    (Some(sha), Some(p), Some(meta)) => {
                        ctx.cache.remember_hash(p, meta, *sha);
                        sha.iter().map(|b| format!("{b:02x}")).collect()
                    }
                    _ => content_of(&ctx.cache, it).unwrap_or_default(),
                };
                k.part(&item_part(it, &content));
            }
            let key = k.finish();
            match ctx.cache.lookup(ctx.store, &key) {
                // The same content under other times (a `touch`): the recorded layer stands,
                // and the blob just written is left for prune.
                Some((recorded, recorded_diff)) => {
                    let recorded = super::state::in_compression(ctx, recorded, &recorded_diff)?;
                    state.layers.push(recorded);
                    state.config.rootfs.diff_ids.push(recorded_diff);
                    (key, true)
                }
                None => {
                    ctx.cache.record(ctx.store, &key, &layer, &diff_id);
                    state.layers.push(layer);
                    state.config.rootfs.diff_ids.push(diff_id);
                    (key, false)
                }
            }
        }
    };
    let mut msg = String::from(name);
    if let Some(c) = &spec.chown {
        msg.push_str(&format!(" --chown={c}"));
    }
    if let Some(c) = &spec.chmod {
        msg.push_str(&format!(" --chmod={c}"));
    }
    for p in printed {
        msg.push(' ');
        msg.push_str(&p);
    }
    msg.push(' ');
    msg.push_str(&spec.dest);
    Ok(CopyDone {
        message: msg,
        chain: key,
        cached,
    })
}

/// Hashes what passes through it (a file's content while it is written into a layer).
struct HashingReader<R> {
    inner: R,
    hash: sha2::Sha256,
}

impl<R: std::io::Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        use sha2::Digest as _;
        HashingReader {
            inner,
            hash: sha2::Sha256::new(),
        }
    }

    fn finish(self) -> [u8; 32] {
        use sha2::Digest as _;
        self.hash.finalize().into()
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// True when a source pattern has wildcards (`*`, `?`, `[`; an escaped one does not count).
fn has_wildcards(pattern: &str) -> bool {
    let b = pattern.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'*' | b'?' | b'[' => return true,
            b'\\' => i += 1,
            _ => {}
        }
        i += 1;
    }
    false
}

/// True when a COPY destination, as written, names a directory: `.`, empty, ending in `/`
/// or `/.` (and `\\` on Windows stages).
fn names_a_directory(dest: &str, windows: bool) -> bool {
    let d = if windows {
        dest.replace('\\', "/")
    } else {
        dest.to_string()
    };
    d.is_empty() || d == "." || d.ends_with('/') || d.ends_with("/.")
}

/// Where the sources of one COPY go: into the destination when it names or is a directory,
/// else to it.
struct Destination<'v> {
    /// The destination, relative to `/`, its existing part resolved through symlinks.
    rel: String,
    /// Written as a directory (`.`, trailing `/`).
    slash: bool,
    /// The stage's file system before this step.
    view: &'v StageView,
    windows: bool,
    /// Some source went to or into the destination (a directory destination is then made even
    /// when nothing lands in it).
    used: bool,
}

impl Destination<'_> {
    fn same(&self, a: &str, b: &str) -> bool {
        if self.windows {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    }

    /// What is at the destination now: an entry this COPY already collected, else what the
    /// stage's layers hold there.
    fn node(&self, items: &[CopyItem]) -> Option<Node> {
        if let Some(it) = items.iter().rev().find(|it| self.same(&it.dest, &self.rel)) {
            return Some(match it.kind {
                Kind::Dir => Node::Dir {
                    mode: it.mode,
                    uid: it.uid,
                    gid: it.gid,
                },
                Kind::Symlink => Node::Link(it.link.clone()),
                _ => Node::Other,
            });
        }
        self.view.stat(&self.rel)
    }

    /// The path (relative to `/`) a file called `name` goes to.
    fn file(&mut self, items: &[CopyItem], name: &str) -> Result<String, String> {
        self.used = true;
        let into =
            self.slash || self.rel.is_empty() || matches!(self.node(items), Some(Node::Dir { .. }));
        Ok(if into {
            format!("{}/{name}", self.rel.trim_end_matches('/'))
                .trim_start_matches('/')
                .to_string()
        } else {
            self.rel.clone()
        })
    }

    /// Checks that a directory's contents can go to the destination: it is missing or a
    /// directory.
    fn check_dir(&mut self, items: &[CopyItem]) -> Result<(), String> {
        self.used = true;
        if self.slash || self.rel.is_empty() {
            return Ok(());
        }
        match self.node(items) {
            Some(Node::Other) => Err(format!("cannot copy to non-directory: /{}", self.rel)),
            _ => Ok(()),
        }
    }

    /// Adds an entry for every directory the collected entries go under (and for the
    /// destination, when it is a directory something went to) that is not an entry already:
    /// an existing one with its mode and owner, a new one with 0755 and `created_owner`.
    fn parents(&self, items: &mut Vec<CopyItem>, created_owner: (u64, u64), now: i64) {
        let mut have: std::collections::HashSet<String> = items
            .iter()
            .map(|it| {
                if self.windows {
                    it.dest.to_lowercase()
                } else {
                    it.dest.clone()
                }
            })
            .collect();
        let mut wanted: Vec<String> = Vec::new();
        let dest_is_dir = self.slash
            || items
                .iter()
                .any(|it| it.dest.starts_with(&format!("{}/", self.rel)));
        if self.used && dest_is_dir && !self.rel.is_empty() {
            wanted.push(self.rel.clone());
        }
        for it in items.iter() {
            let mut p = it.dest.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                wanted.push(parent.to_string());
                p = parent;
            }
        }
        for dir in wanted {
            let key = if self.windows {
                dir.to_lowercase()
            } else {
                dir.clone()
            };
            if !have.insert(key) {
                continue;
            }
            let (mode, uid, gid) = match self.view.stat(&dir) {
                Some(Node::Dir { mode, uid, gid }) => (mode, uid, gid),
                _ => (0o755, created_owner.0, created_owner.1),
            };
            items.push(CopyItem {
                dest: dir,
                source: None,
                inline: None,
                kind: Kind::Dir,
                mode,
                mtime: now,
                link: String::new(),
                uid,
                gid,
                from_archive: false,
                exact: true,
                origin: usize::MAX,
                stat: None,
                link_id: None,
            });
        }
    }
}

/// A `--chmod` value: octal (`755`) or symbolic (`u=rwX,go=rX`, `+x`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Chmod {
    Octal(u32),
    Symbolic(Vec<(u32, char, String)>),
}

impl Chmod {
    fn parse(s: &str) -> Result<Chmod, String> {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
            return match u32::from_str_radix(s, 8) {
                Ok(m) if m <= 0o7777 => Ok(Chmod::Octal(m)),
                _ => Err("an octal mode is at most 7777".into()),
            };
        }
        let mut clauses = Vec::new();
        for clause in s.split(',') {
            let who_len = clause.chars().take_while(|c| "ugoa".contains(*c)).count();
            let who = clause[..who_len].chars().fold(0u32, |m, c| {
                m | match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    _ => 0o7777,
                }
            });
            let who = if who_len == 0 { 0o7777 } else { who };
            let mut rest = &clause[who_len..];
            if rest.is_empty() {
                return Err("expected [ugoa][+-=][rwxXst] clauses".into());
            }
            while let Some(op) = rest.chars().next() {
                if !"+-=".contains(op) {
                    return Err(format!("unexpected `{op}`: expected +, - or ="));
                }
                rest = &rest[1..];
                let n = rest.chars().take_while(|c| "rwxXst".contains(*c)).count();
                clauses.push((who, op, rest[..n].to_string()));
                rest = &rest[n..];
            }
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The new mode for an entry whose mode is `mode`.
    fn apply(&self, mode: u32, dir: bool) -> u32 {
        let clauses = match self {
            Chmod::Octal(m) => return *m,
            Chmod::Symbolic(c) => c,
        };
        let mut m = mode & 0o7777;
        for (who, op, perms) in clauses {
            let mut bits = 0u32;
            for p in perms.chars() {
                bits |= match p {
                    'r' => 0o444,
                    'w' => 0o222,
                    'x' => 0o111,
                    'X' if dir || mode & 0o111 != 0 => 0o111,
                    's' => 0o6000,
                    't' => 0o1000,
                    _ => 0,
                };
            }
            let bits = bits & who;
            m = match op {
                '+' => m | bits,
                '-' => m & !bits,
                _ => (m & !who) | bits,
            };
        }
        m
    }
}

/// With `--parents`, the part of a matched source path kept under the destination: the
/// whole path, or what follows a `./` pivot in the source (`./x/./y/*.txt` keeps `y/…`).
fn kept_path(parents: bool, source: &str, rel: &str) -> Option<String> {
    if !parents {
        return None;
    }
    let s = source.trim_start_matches('/');
    let kept = match s.find("/./") {
        Some(i) => {
            let prefix = crate::dockerfile::ignore::clean(&s[..i]);
            rel.strip_prefix(&format!("{prefix}/"))
                .unwrap_or(rel)
                .to_string()
        }
        None => rel.to_string(),
    };
    Some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_octal_and_symbolic() {
        let c = |s: &str, mode: u32, dir: bool| Chmod::parse(s).unwrap().apply(mode, dir);
        assert_eq!(c("755", 0o600, false), 0o755);
        assert_eq!(c("u=rwX,go=rX", 0o600, false), 0o644);
        assert_eq!(c("u=rwX,go=rX", 0o700, true), 0o755);
        assert_eq!(
            c("u=rwX,go=rX", 0o744, false),
            0o755,
            "X when any x bit is set"
        );
        assert_eq!(c("+x", 0o644, false), 0o755);
        assert_eq!(c("go-w", 0o666, false), 0o644);
        assert_eq!(c("a=r", 0o777, false), 0o444);
        assert!(Chmod::parse("9999").is_err());
        assert!(Chmod::parse("u*x").is_err());
    }
}
