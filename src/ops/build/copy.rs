//! `COPY` and `ADD`: sources (the context through `.dockerignore`, an earlier stage's or an
//! image's file system, archives ADD unpacks, downloads, git checkouts, heredocs) collected into
//! entries under the destination, a cache key over their content, and one layer.

use super::cache::cache_key;
use super::context::{CopyItem, collect_dir, context_matches, item_for};
use super::paths::{join_clean, windows_path};
use super::rootfs::{Rootfs, assemble};
use super::sources::{
    ArchiveKind, TempDirs, archive_kind, git_checkout, http_download, is_git_source,
};
use super::state::{Ctx, StageState, add_layer};
use crate::dockerfile::check::CopySpec;
use crate::dockerfile::ignore::IgnoreFile;
use crate::layer::tar::{Header, Kind};
use crate::progress::Event;
use std::fs;

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
            let (u, g) = match c.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (c.as_str(), None),
            };
            let numeric = u.parse::<u64>().is_ok() && g.is_none_or(|g| g.parse::<u64>().is_ok());
            let (passwd, group) = if numeric {
                (String::new(), String::new())
            } else {
                // Names resolve through the stage's own /etc/passwd and /etc/group.
                let fs = assemble(ctx.store, &state.layers, false, "the stage".into())?;
                let read = |p: &str| fs::read_to_string(fs.path.join(p)).unwrap_or_default();
                let files = (read("etc/passwd"), read("etc/group"));
                let _ = fs::remove_dir_all(&fs.path);
                files
            };
            let lookup = |table: &str, name: &str, what: &str| -> Result<u64, String> {
                if let Ok(n) = name.parse::<u64>() {
                    return Ok(n);
                }
                table
                    .lines()
                    .filter_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() >= 3 && f[0] == name).then(|| f[2].parse::<u64>().ok()).flatten()
                    })
                    .next()
                    .ok_or_else(|| format!("{name_kw} --chown={c}: no {what} `{name}` in the image's /etc/{table_name}", name_kw = name_kw(add), table_name = if what == "user" { "passwd" } else { "group" }))
            };
            let uid = lookup(&passwd, u, "user")?;
            // A user without a group gets gid = uid, as BuildKit does.
            let gid = match g {
                Some(g) => lookup(&group, g, "group")?,
                None => uid,
            };
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
    let dest_is_dir = dest_raw.ends_with('/') || spec.sources.len() + spec.inline.len() > 1;
    let dest = join_clean(if base.is_empty() { "/" } else { &base }, &dest_raw);
    let dest_rel = dest.trim_start_matches('/').to_string();
    let mut items: Vec<CopyItem> = Vec::new();
    let mut printed = Vec::new();
    // Archives ADD unpacks, removed when the step ends, however it ends.
    let mut unpacked = TempDirs(Vec::new());
    for src in &spec.sources {
        if add && is_git_source(src) {
            printed.push(src.clone());
            let dir = std::env::temp_dir().join(format!(
                "wcbuild-git-{}-{}",
                std::process::id(),
                cache_key(&[src]).get(..12).unwrap_or("x")
            ));
            let _ = fs::remove_dir_all(&dir);
            unpacked.0.push(dir.clone());
            let (root, commit) = git_checkout(src, &dir, spec.keep_git_dir == Some(true))?;
            if let Some(want) = &spec.checksum
                && !commit.starts_with(want.trim_start_matches("sha1:"))
            {
                return Err(format!(
                    "ADD {src}: checksum mismatch: --checksum={want}, the commit is {commit}"
                ));
            }
            collect_dir(&root, "", &dest_rel, &no_ignore, &excludes, &mut items)?;
            continue;
        }
        if add && (src.starts_with("http://") || src.starts_with("https://")) {
            printed.push(src.clone());
            let dir = std::env::temp_dir().join(format!(
                "wcbuild-url-{}-{}",
                std::process::id(),
                cache_key(&[src]).get(..12).unwrap_or("x")
            ));
            fs::create_dir_all(&dir).map_err(|e| format!("`{}`: {e}", dir.display()))?;
            unpacked.0.push(dir.clone());
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
            let target = if dest_is_dir {
                format!("{}/{name}", dest_rel.trim_end_matches('/'))
            } else {
                dest_rel.clone()
            };
            let meta = fs::metadata(&file).map_err(|e| e.to_string())?;
            let mut it = item_for(&file, &meta, target.trim_start_matches('/'))?;
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
        let matches = context_matches(&src_root, &pattern, ignore)?;
        if matches.is_empty() {
            return Err(match source {
                Some(r) => format!("{name} source `{src}` not found in {}", r.label),
                None => format!(
                    "{name} source `{src}` not found in the build context (or excluded by .dockerignore)"
                ),
            });
        }
        let single = matches.len() == 1 && spec.sources.len() == 1 && spec.inline.is_empty();
        for (rel, path) in matches {
            let meta =
                fs::symlink_metadata(&path).map_err(|e| format!("`{}`: {e}", path.display()))?;
            if meta.is_dir() {
                // A directory's contents go into the destination (under its kept parents
                // with --parents).
                let target = match kept_path(spec.parents, &raw, &rel) {
                    Some(k) => format!("{}/{k}", dest_rel.trim_end_matches('/')),
                    None => dest_rel.clone(),
                };
                collect_dir(&path, &rel, &target, ignore, &excludes, &mut items)?;
            } else {
                if add && spec.unpack != Some(false) && source.is_none() {
                    match archive_kind(&path) {
                        Some(ArchiveKind::Tar) => {
                            // A local tar (plain, gzip or zstd) is unpacked into the
                            // destination, merging with what is there, owners kept.
                            let tmp = std::env::temp_dir().join(format!(
                                "wcbuild-add-{}-{}",
                                std::process::id(),
                                cache_key(&[&path.to_string_lossy()])
                                    .get(..12)
                                    .unwrap_or("x")
                            ));
                            let _ = fs::remove_dir_all(&tmp);
                            let f = fs::File::open(&path)
                                .map_err(|e| format!("`{}`: {e}", path.display()))?;
                            crate::layer::extract(
                                std::io::BufReader::new(f),
                                &tmp,
                                &crate::layer::ExtractOptions::default(),
                            )
                            .map_err(|e| format!("ADD `{src}`: {e}"))?;
                            let before = items.len();
                            let r =
                                collect_dir(&tmp, "", &dest_rel, &no_ignore, &excludes, &mut items);
                            // Keep the extracted files until the layer is written.
                            unpacked.0.push(tmp);
                            r?;
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
                let base_name = match kept_path(spec.parents, &raw, &rel) {
                    Some(k) => k,
                    None => rel.rsplit('/').next().unwrap_or(&rel).to_string(),
                };
                let target = if dest_is_dir || !single || spec.parents {
                    format!("{}/{base_name}", dest_rel.trim_end_matches('/'))
                } else {
                    dest_rel.clone()
                };
                items.push(item_for(&path, &meta, target.trim_start_matches('/'))?);
            }
        }
    }
    for doc in &spec.inline {
        printed.push(format!("<<{}", doc.name));
        let target = if dest_is_dir {
            format!("{}/{}", dest_rel.trim_end_matches('/'), doc.name)
        } else {
            dest_rel.clone()
        };
        items.push(CopyItem {
            dest: target.trim_start_matches('/').to_string(),
            source: None,
            inline: Some(doc.content.clone().into_bytes()),
            kind: Kind::File,
            mode: 0o644,
            mtime: now,
            link: String::new(),
            uid: 0,
            gid: 0,
            from_archive: false,
        });
    }
    items.sort_by(|a, b| a.dest.cmp(&b.dest));
    items.dedup_by(|a, b| a.dest == b.dest);
    // The cache key: the chain so far and every item's path, kind, mode, owner, link and
    // content (file contents hashed through the stat cache; times are not part of it).
    let mut parts: Vec<String> = vec![
        chain.to_string(),
        format!("{owner:?} {uid} {gid} {mode_override:?} {keep_owner}"),
    ];
    for it in &items {
        let content = match (&it.source, &it.inline) {
            (_, Some(data)) => cache_key(&[&String::from_utf8_lossy(data)]),
            (Some(p), None) if it.kind == Kind::File => ctx
                .cache
                .file_hash(p)
                .map_err(|e| format!("`{}`: {e}", p.display()))?,
            _ => String::new(),
        };
        parts.push(format!(
            "{}\0{:?}\0{:o}\0{}:{}\0{}\0{content}",
            it.dest, it.kind, it.mode, it.uid, it.gid, it.link
        ));
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let key = cache_key(&refs);
    let total: u64 = items
        .iter()
        .map(|it| match (&it.source, &it.inline) {
            (_, Some(d)) => d.len() as u64,
            (Some(p), None) if it.kind == Kind::File => {
                fs::metadata(p).map(|m| m.len()).unwrap_or(0)
            }
            _ => 0,
        })
        .sum();
    let stage_index = ctx.stage;
    let mut done = 0u64;
    let mut last_report = std::time::Instant::now();
    let cached = add_layer(ctx, state, &key, owner, |w, reporter| {
        for it in &items {
            if it.dest.is_empty() {
                continue;
            }
            let mut h = Header::new(&it.dest, it.kind);
            h.mode = match (&mode_override, it.kind) {
                (Some(m), Kind::File) | (Some(m), Kind::Dir) => {
                    m.apply(it.mode, it.kind == Kind::Dir)
                }
                _ => it.mode,
            };
            if (keep_owner || it.from_archive) && spec.chown.is_none() {
                h.uid = it.uid;
                h.gid = it.gid;
            } else {
                h.uid = uid;
                h.gid = gid;
            }
            h.mtime = it.mtime;
            h.link = it.link.clone();
            match (&it.source, &it.inline) {
                (_, Some(data)) => {
                    h.size = data.len() as u64;
                    done += h.size;
                    w.append(h, Some(&mut &data[..]), false)?;
                }
                (Some(p), None) if it.kind == Kind::File => {
                    let mut f = fs::File::open(p)?;
                    h.size = f.metadata()?.len();
                    done += h.size;
                    w.append(h, Some(&mut f), false)?;
                }
                _ => {
                    let dir_link = it.kind == Kind::Symlink
                        && it
                            .source
                            .as_ref()
                            .is_some_and(|p| fs::metadata(p).map(|m| m.is_dir()).unwrap_or(false));
                    w.append(h, None, dir_link)?;
                }
            }
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
    })?;
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

fn name_kw(add: bool) -> &'static str {
    if add { "ADD" } else { "COPY" }
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
