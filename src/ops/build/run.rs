//! `RUN`: the step's command as BuildKit forms it (shell form through the stage's SHELL, JSON
//! form as given, heredocs), its environment (the image's ENV and the stage's ARGs), its
//! `--mount`s resolved to host paths (the context, stages, images, cache directories kept in the
//! store, tmpfs, secrets read only now, ssh agents), a cache key over all of it (never a
//! secret's value), and — on a miss — the container: the parent layers unpacked once into the
//! store as overlayfs lower directories, the runtime run, its change set written as a layer in
//! the stage's format.

use super::cache::cache_key;
use super::context::resolve_beneath;
use super::paths::join_clean;
use super::rootfs::RootfsCache;
use super::settings::{BuildSettings, NamedContext, NetworkMode};
use super::state::{Ctx, StageState, add_layer, in_compression};
use crate::dockerfile::check::{CommandLine, Mount, MountType};
use crate::dockerfile::ignore::IgnoreFile;
use crate::progress::Event;
use crate::runtime::{self, MountKind};
use std::fs;
use std::path::{Path, PathBuf};

/// Build arguments BuildKit never puts in a RUN's environment.
pub(super) const NON_ENV_ARGS: [&str; 2] =
    ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// Proxy variables that reach RUN from `--build-arg` without a declaration (and never the
/// history), as in BuildKit.
const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What a RUN did.
pub(super) struct RunDone {
    /// The history text (`RUN |1 A=1 /bin/sh -c …`).
    pub(super) message: String,
    /// The new cache chain key.
    pub(super) chain: String,
    /// True when the layer came from the cache (no container ran).
    pub(super) cached: bool,
}

/// What the step may use besides the stage: the file systems `--mount=from=` names.
pub(super) struct Sources<'a> {
    /// Assembled stage and image file systems.
    pub(super) rootfs: &'a mut RootfsCache,
    /// Built stages so far.
    pub(super) states: &'a std::collections::BTreeMap<usize, StageState>,
    /// Their cache chain keys.
    pub(super) chains: &'a std::collections::BTreeMap<usize, String>,
    /// Finds a stage by name or index.
    pub(super) stage_of: &'a dyn Fn(&str) -> Option<usize>,
    /// The context's `.dockerignore`.
    pub(super) ignore: &'a IgnoreFile,
}

/// A script a RUN heredoc becomes: its name (mounted at `/dev/pipes/NAME`) and content.
pub(super) type Script = (String, Vec<u8>);

/// The command a RUN runs: heredocs as BuildKit turns them into a command, then the shell for
/// the shell form. Returns argv and, for a single heredoc with a shebang on a Linux stage, the
/// script to mount at `/dev/pipes/NAME`.
pub(super) fn command(
    line: &CommandLine,
    shell: &[String],
    windows: bool,
) -> Result<(Vec<String>, Option<Script>), String> {
    let mut args = line.args.clone();
    let mut script = None;
    if !line.heredocs.is_empty() {
        if args.len() != 1 || !line.prepend_shell {
            return Err(format!("parsing produced an invalid run command: {args:?}"));
        }
        let single = crate::dockerfile::parser::parse_heredoc(&args[0])
            .ok()
            .flatten()
            .is_some();
        if single {
            let doc = &line.heredocs[0];
            let data = doc.body();
            if !windows && data.starts_with("#!") {
                // A script with a shebang is run as a file.
                let path = format!("/dev/pipes/{}", doc.name);
                script = Some((doc.name.clone(), data.into_bytes()));
                args = vec![path];
            } else {
                args = vec![data];
            }
        } else {
            // The shell reads the heredocs itself.
            let mut b = args[0].clone();
            for doc in &line.heredocs {
                b.push('\n');
                b.push_str(&doc.content);
                b.push_str(&doc.name);
            }
            args = vec![b];
        }
    }
    if line.prepend_shell && script.is_none() {
        let mut argv = shell.to_vec();
        argv.push(args.join(" "));
        args = argv;
    }
    Ok((args, script))
}

/// The stage's SHELL, or the OS default.
pub(super) fn shell_of(state: &StageState) -> Vec<String> {
    state.config.config.shell.clone().unwrap_or_else(|| {
        if state.windows() {
            vec!["cmd".into(), "/S".into(), "/C".into()]
        } else {
            vec!["/bin/sh".into(), "-c".into()]
        }
    })
}

/// The history text BuildKit writes: `RUN`, the stage's build args (`|N K=V…`, current
/// values), the argv.
pub(super) fn history_text(state: &StageState, args: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (k, default) in &state.build_args {
        let v = state
            .run_env
            .iter()
            .rev()
            .find(|(rk, _)| rk == k)
            .map(|(_, v)| v.clone())
            .or_else(|| default.clone())
            .unwrap_or_default();
        match seen.iter().find(|(sk, _)| sk == k) {
            Some((_, i)) => parts[*i] = format!("{k}={v}"),
            None => {
                seen.push((k.clone(), parts.len()));
                parts.push(format!("{k}={v}"));
            }
        }
    }
    let mut out = String::from("RUN ");
    if !parts.is_empty() {
        out.push_str(&format!("|{} {} ", parts.len(), parts.join(" ")));
    }
    out.push_str(&args.join(" "));
    out
}

fn mount_opt<'m>(m: &'m Mount, keys: &[&str]) -> Option<&'m str> {
    m.options
        .iter()
        .rev()
        .find(|(k, _)| keys.contains(&k.as_str()))
        .map(|(_, v)| v.as_str())
}

fn mount_flag(m: &Mount, names: &[&str]) -> Option<bool> {
    if let Some(v) = mount_opt(m, names) {
        return Some(!matches!(v, "false" | "0"));
    }
    m.switches
        .iter()
        .any(|s| names.contains(&s.as_str()))
        .then_some(true)
}

/// Go's `path.Clean`: `.` and `..` resolved lexically, repeated and trailing slashes gone.
fn clean_path(p: &str) -> String {
    let abs = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !abs {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    let joined = out.join("/");
    match (abs, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// `64m`, `1g`, `512k`, plain bytes (Docker's `RAMInBytes`).
fn ram_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: f64 = num.parse().map_err(|_| format!("invalid size: '{s}'"))?;
    let mul: u64 = match unit.trim_end_matches(['b', 'i']) {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return Err(format!("invalid size: '{s}'")),
    };
    Ok((n * mul as f64) as u64)
}

/// One `--mount` resolved: what the runtime gets, and what the cache key records of it.
struct Resolved {
    mount: Option<runtime::Mount>,
    identity: String,
    /// Held for the step (a `sharing=locked` cache mount).
    _lock: Option<fs::File>,
    /// A filtered copy of the context, removed after the step.
    _scratch: Option<crate::store::ScratchDir>,
}

/// Resolves the step's `--mount`s (targets relative to `workdir`).
fn resolve_mounts(
    ctx: &mut Ctx<'_>,
    sources: &mut Sources<'_>,
    mounts: &[Mount],
    workdir: &str,
    stage_platform: &crate::image::Platform,
) -> Result<Vec<Resolved>, String> {
    let settings: &BuildSettings = ctx.settings;
    let mut out = Vec::new();
    let mut ssh_index = 0;
    for m in mounts {
        let kind = m.kind.unwrap_or(MountType::Bind);
        let target_raw = mount_opt(m, &["target", "dst", "destination"]);
        let target = |default: Option<String>| -> Result<String, String> {
            let t = match (target_raw, default) {
                (Some(t), _) => t.to_string(),
                (None, Some(d)) => d,
                (None, None) => return Err("mount: target is required".into()),
            };
            let p = join_clean(if workdir.is_empty() { "/" } else { workdir }, &t);
            if p == "/" {
                return Err("mount: target cannot be the root directory".into());
            }
            Ok(p)
        };
        let uid = mount_opt(m, &["uid"])
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| format!("mount: uid `{v}`: not a number"))
            })
            .transpose()?;
        let gid = mount_opt(m, &["gid"])
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| format!("mount: gid `{v}`: not a number"))
            })
            .transpose()?;
        let mode = mount_opt(m, &["mode"])
            .map(|v| u32::from_str_radix(v, 8).map_err(|_| format!("mount: mode `{v}`: not octal")))
            .transpose()?;
        let from = mount_opt(m, &["from"]);
        let source = mount_opt(m, &["source", "src"]);
        match kind {
            MountType::Bind => {
                let target = target(None)?;
                let readonly = !mount_flag(m, &["rw", "readwrite"]).unwrap_or(false);
                let (root, origin, scratch) = bind_root(ctx, sources, from, stage_platform)?;
                let sub = source.unwrap_or("/");
                let path = resolve_beneath(&root, &root.join(sub.trim_start_matches('/')))?;
                if fs::symlink_metadata(&path).is_err() {
                    return Err(format!(
                        "mount: source `{sub}` not found in {}",
                        from.unwrap_or("the build context")
                    ));
                }
                let content = match origin.as_str() {
                    "context" => tree_key(ctx, &path)?,
                    _ => origin.clone(),
                };
                out.push(Resolved {
                    identity: format!("bind {target} ro={readonly} {origin} {sub} {content}"),
                    mount: Some(runtime::Mount {
                        target,
                        readonly,
                        kind: MountKind::Bind { source: path },
                    }),
                    _lock: None,
                    _scratch: scratch,
                });
            }
            MountType::Cache => {
                let target = target(None)?;
                // BuildKit's id: as given, else the target as written, cleaned; under the
                // BUILDKIT_CACHE_MOUNT_NS build argument's namespace.
                let id = mount_opt(m, &["id"])
                    .map(String::from)
                    .unwrap_or_else(|| clean_path(target_raw.unwrap_or_default()));
                let ns = settings
                    .build_args
                    .get("BUILDKIT_CACHE_MOUNT_NS")
                    .cloned()
                    .unwrap_or_default();
                let id = format!("{ns}/{id}");
                let sharing = mount_opt(m, &["sharing"]).unwrap_or("shared");
                let readonly = mount_flag(m, &["ro", "readonly"]).unwrap_or(false);
                let key = match from {
                    Some(f) => format!("{id}:{f}"),
                    None => id.clone(),
                };
                let store = ctx.store;
                let (dir, lock) = match sharing {
                    "shared" => (
                        store.cache_mount_dir(&key).map_err(|e| e.to_string())?,
                        None,
                    ),
                    "locked" => {
                        let l = store
                            .lock_cache_mount(&key, true)
                            .map_err(|e| e.to_string())?;
                        (store.cache_mount_dir(&key).map_err(|e| e.to_string())?, l)
                    }
                    "private" => match store
                        .lock_cache_mount(&key, false)
                        .map_err(|e| e.to_string())?
                    {
                        Some(l) => (
                            store.cache_mount_dir(&key).map_err(|e| e.to_string())?,
                            Some(l),
                        ),
                        None => {
                            // Held by another build: a directory of this step's own.
                            let k = format!("{key}#private-{}", std::process::id());
                            (store.cache_mount_dir(&k).map_err(|e| e.to_string())?, None)
                        }
                    },
                    other => {
                        return Err(format!(
                            "mount: sharing `{other}`: expected shared, private or locked"
                        ));
                    }
                };
                prepare_cache_dir(
                    ctx,
                    sources,
                    &dir,
                    from,
                    source,
                    mode,
                    uid,
                    gid,
                    stage_platform,
                )?;
                out.push(Resolved {
                    identity: format!(
                        "cache {target} id={key} sharing={sharing} ro={readonly} {mode:?} {uid:?} {gid:?}"
                    ),
                    mount: Some(runtime::Mount {
                        target,
                        readonly,
                        kind: MountKind::Cache { dir },
                    }),
                    _lock: lock,
                    _scratch: None,
                });
            }
            MountType::Tmpfs => {
                let target = target(None)?;
                let size = mount_opt(m, &["size"]).map(ram_bytes).transpose()?;
                out.push(Resolved {
                    identity: format!("tmpfs {target} {size:?}"),
                    mount: Some(runtime::Mount {
                        target,
                        readonly: mount_flag(m, &["ro", "readonly"]).unwrap_or(false),
                        kind: MountKind::Tmpfs { size },
                    }),
                    _lock: None,
                    _scratch: None,
                });
            }
            MountType::Secret => {
                let id = match (source, mount_opt(m, &["id"])) {
                    (Some(_), Some(_)) => {
                        return Err("mount: secret: source and id cannot both be given".into());
                    }
                    (Some(s), None) | (None, Some(s)) => s.to_string(),
                    (None, None) => match target_raw {
                        Some(t) => t.rsplit('/').next().unwrap_or(t).to_string(),
                        None => return Err("mount: secret: id is required".into()),
                    },
                };
                let env = mount_opt(m, &["env"]).map(String::from);
                let required = mount_flag(m, &["required"]).unwrap_or(false);
                let identity = format!(
                    "secret id={id} target={target_raw:?} env={env:?} {mode:?} {uid:?} {gid:?}"
                );
                let Some(src) = settings.secrets.get(&id) else {
                    if required {
                        return Err(format!("secret {id}: not found"));
                    }
                    out.push(Resolved {
                        identity: format!("{identity} missing"),
                        mount: None,
                        _lock: None,
                        _scratch: None,
                    });
                    continue;
                };
                // The value is read now, for this step only; it is in no key, log or error.
                let data = src.read().map_err(|e| format!("secret {id}: {e}"))?;
                if let Some(name) = &env {
                    out.push(Resolved {
                        identity: identity.clone(),
                        mount: Some(runtime::Mount {
                            target: String::new(),
                            readonly: true,
                            kind: MountKind::SecretEnv {
                                name: name.clone(),
                                data: data.clone(),
                            },
                        }),
                        _lock: None,
                        _scratch: None,
                    });
                }
                if env.is_none() || target_raw.is_some() {
                    let default = format!("/run/secrets/{}", id.rsplit('/').next().unwrap_or(&id));
                    out.push(Resolved {
                        identity,
                        mount: Some(runtime::Mount {
                            target: target(Some(default))?,
                            readonly: true,
                            kind: MountKind::Secret {
                                data,
                                mode: mode.unwrap_or(0o400),
                                uid: uid.unwrap_or(0),
                                gid: gid.unwrap_or(0),
                            },
                        }),
                        _lock: None,
                        _scratch: None,
                    });
                }
            }
            MountType::Ssh => {
                if source.is_some() {
                    return Err("mount: ssh: source is not allowed".into());
                }
                let id = mount_opt(m, &["id"]).unwrap_or("default").to_string();
                let required = mount_flag(m, &["required"]).unwrap_or(false);
                let default = format!("/run/buildkit/ssh_agent.{ssh_index}");
                ssh_index += 1;
                let target = target(Some(default))?;
                let identity = format!("ssh id={id} {target} {mode:?} {uid:?} {gid:?}");
                let Some(socket) = settings.ssh.get(&id) else {
                    if required {
                        return Err(format!(
                            "no SSH key or agent socket given for `{id}` (build --ssh {id}=SOCKET)"
                        ));
                    }
                    out.push(Resolved {
                        identity: format!("{identity} missing"),
                        mount: None,
                        _lock: None,
                        _scratch: None,
                    });
                    continue;
                };
                out.push(Resolved {
                    identity,
                    mount: Some(runtime::Mount {
                        target,
                        readonly: true,
                        kind: MountKind::Ssh {
                            socket: socket.clone(),
                            mode: mode.unwrap_or(0o600),
                            uid: uid.unwrap_or(0),
                            gid: gid.unwrap_or(0),
                        },
                    }),
                    _lock: None,
                    _scratch: None,
                });
            }
        }
    }
    Ok(out)
}

/// The directory a bind or cache mount's `from` names (the context when none), what the
/// cache key records of it, and a filtered copy of the context to remove afterwards.
fn bind_root(
    ctx: &mut Ctx<'_>,
    sources: &mut Sources<'_>,
    from: Option<&str>,
    stage_platform: &crate::image::Platform,
) -> Result<(PathBuf, String, Option<crate::store::ScratchDir>), String> {
    let settings = ctx.settings;
    let store = ctx.store;
    match from {
        None | Some("") => {
            // The context as a build sees it: without what .dockerignore leaves out.
            if sources.ignore.is_empty() {
                return Ok((settings.context.clone(), "context".into(), None));
            }
            let scratch = store.scratch_dir("context").map_err(|e| e.to_string())?;
            let dir = scratch.path().join("ctx");
            filtered_copy(&settings.context, &dir, "", sources.ignore)?;
            Ok((dir, "context".into(), Some(scratch)))
        }
        Some(f) => {
            if let Some(dep) = (sources.stage_of)(f) {
                let Some(state) = sources.states.get(&dep) else {
                    return Err(format!("mount: from={f}: the stage is not built yet"));
                };
                let key = sources.chains.get(&dep).cloned().unwrap_or_default();
                let r = sources.rootfs.of_stage(store, dep, state)?;
                return Ok((r.path.clone(), format!("stage {key}"), None));
            }
            match settings.contexts.get(f) {
                Some(NamedContext::Dir(d)) => Ok((d.clone(), format!("dir {}", d.display()), None)),
                Some(NamedContext::Image(r)) => {
                    let rf = sources.rootfs.of_image(
                        store,
                        r,
                        stage_platform,
                        settings.registry.as_ref(),
                    )?;
                    Ok((rf.path.clone(), format!("image {r}"), None))
                }
                None => {
                    let rf = sources.rootfs.of_image(
                        store,
                        f,
                        stage_platform,
                        settings.registry.as_ref(),
                    )?;
                    Ok((rf.path.clone(), format!("image {f}"), None))
                }
            }
        }
    }
}

/// Copies `src` into `dest` leaving out what `ignore` excludes (paths relative to the
/// context), hard-linking files where it can.
fn filtered_copy(src: &Path, dest: &Path, rel: &str, ignore: &IgnoreFile) -> Result<(), String> {
    fs::create_dir_all(dest).map_err(|e| format!("`{}`: {e}", dest.display()))?;
    let rd = fs::read_dir(src).map_err(|e| format!("read `{}`: {e}", src.display()))?;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if ignore.is_excluded(&r) {
            continue;
        }
        let (from, to) = (e.path(), dest.join(&name));
        let ft = e
            .file_type()
            .map_err(|e| format!("`{}`: {e}", from.display()))?;
        if ft.is_dir() {
            filtered_copy(&from, &to, &r, ignore)?;
        } else if ft.is_symlink() {
            let t = fs::read_link(&from).map_err(|e| format!("`{}`: {e}", from.display()))?;
            #[cfg(unix)]
            std::os::unix::fs::symlink(&t, &to).map_err(|e| format!("`{}`: {e}", to.display()))?;
            #[cfg(not(unix))]
            let _ = t;
        } else if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to).map_err(|e| format!("`{}`: {e}", from.display()))?;
        }
    }
    Ok(())
}

/// A key over a context tree's paths, kinds, modes and contents (file contents through the
/// build's stat cache), so a bind mount of changed files runs the step again.
fn tree_key(ctx: &mut Ctx<'_>, root: &Path) -> Result<String, String> {
    let mut parts: Vec<String> = Vec::new();
    fn walk(ctx: &mut Ctx<'_>, p: &Path, rel: &str, parts: &mut Vec<String>) -> Result<(), String> {
        let meta = fs::symlink_metadata(p).map_err(|e| format!("`{}`: {e}", p.display()))?;
        #[cfg(unix)]
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            meta.permissions().mode()
        };
        #[cfg(not(unix))]
        let mode = 0u32;
        if meta.is_dir() {
            parts.push(format!("{rel}/ {mode:o}"));
            let mut names: Vec<_> = fs::read_dir(p)
                .map_err(|e| format!("read `{}`: {e}", p.display()))?
                .flatten()
                .map(|e| e.file_name())
                .collect();
            names.sort();
            for n in names {
                let r = format!("{rel}/{}", n.to_string_lossy());
                walk(ctx, &p.join(&n), &r, parts)?;
            }
        } else if meta.file_type().is_symlink() {
            let t = fs::read_link(p).map_err(|e| format!("`{}`: {e}", p.display()))?;
            parts.push(format!("{rel} -> {}", t.display()));
        } else {
            let h = ctx
                .cache
                .file_hash(p)
                .map_err(|e| format!("`{}`: {e}", p.display()))?;
            parts.push(format!("{rel} {mode:o} {h}"));
        }
        Ok(())
    }
    walk(ctx, root, "", &mut parts)?;
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    Ok(cache_key(&refs))
}

/// Makes a cache mount's directory ready: on first use, filled from `from`/`source` when
/// given, else given `mode`, `uid` and `gid` (0755 0:0 by default), as BuildKit makes it.
#[allow(clippy::too_many_arguments)]
fn prepare_cache_dir(
    ctx: &mut Ctx<'_>,
    sources: &mut Sources<'_>,
    dir: &Path,
    from: Option<&str>,
    source: Option<&str>,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    stage_platform: &crate::image::Platform,
) -> Result<(), String> {
    let marker = dir.with_extension("ready");
    if marker.exists() {
        return Ok(());
    }
    if let Some(f) = from {
        let (root, _, _scratch) = bind_root(ctx, sources, Some(f), stage_platform)?;
        let sub = resolve_beneath(
            &root,
            &root.join(source.unwrap_or("").trim_start_matches('/')),
        )?;
        copy_tree(&sub, dir)?;
    } else {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(mode.unwrap_or(0o755)))
                .map_err(|e| format!("`{}`: {e}", dir.display()))?;
            let _ = std::os::unix::fs::chown(dir, Some(uid.unwrap_or(0)), Some(gid.unwrap_or(0)));
        }
        #[cfg(not(unix))]
        let _ = (mode, uid, gid);
    }
    fs::write(&marker, b"").map_err(|e| format!("`{}`: {e}", marker.display()))?;
    Ok(())
}

/// Copies a tree (contents of `src` into `dest`), symlinks as links.
fn copy_tree(src: &Path, dest: &Path) -> Result<(), String> {
    let meta = fs::symlink_metadata(src).map_err(|e| format!("`{}`: {e}", src.display()))?;
    if !meta.is_dir() {
        return Err(format!("mount: `{}` is not a directory", src.display()));
    }
    fs::create_dir_all(dest).map_err(|e| format!("`{}`: {e}", dest.display()))?;
    for e in fs::read_dir(src)
        .map_err(|e| format!("`{}`: {e}", src.display()))?
        .flatten()
    {
        let (from, to) = (e.path(), dest.join(e.file_name()));
        let ft = e.file_type().map_err(|e| e.to_string())?;
        if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            #[cfg(unix)]
            {
                let t = fs::read_link(&from).map_err(|e| e.to_string())?;
                std::os::unix::fs::symlink(t, &to).map_err(|e| e.to_string())?;
            }
        } else {
            fs::copy(&from, &to).map_err(|e| format!("`{}`: {e}", from.display()))?;
        }
    }
    Ok(())
}

/// Runs a RUN step (or takes its layer from the cache).
// The step needs the build, the stage, its sources and its own parts.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_step(
    ctx: &mut Ctx<'_>,
    state: &mut StageState,
    sources: &mut Sources<'_>,
    line: &CommandLine,
    mounts: &[Mount],
    network: &str,
    security: &str,
    chain: &str,
    stage_platform: &crate::image::Platform,
    line_no: usize,
) -> Result<RunDone, String> {
    let line_of_step = line_no;
    let settings = ctx.settings;
    let windows = state.windows();
    let shell = shell_of(state);
    let (args, script) = command(line, &shell, windows)?;
    let message = history_text(state, &args);
    let insecure = match security {
        "" | "sandbox" => false,
        "insecure" if settings.allow_insecure => true,
        "insecure" => {
            return Err(
                "security.insecure is not allowed: build with --allow security.insecure to run this step"
                    .into(),
            );
        }
        other => return Err(format!("--security={other}: expected sandbox or insecure")),
    };
    let net = match network {
        "" | "default" => settings.network,
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        other => return Err(format!("--network={other}: expected default, none or host")),
    };
    // The environment: the image's ENV and the stage's ARGs, in order; proxies from
    // --build-arg.
    let mut env: Vec<String> = state
        .run_env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for p in PROXY_ARGS {
        if let Some(v) = settings.build_args.get(p)
            && !state.run_env.iter().any(|(k, _)| k == p)
        {
            env.push(format!("{p}={v}"));
        }
    }
    let user = state.config.config.user.clone().unwrap_or_default();
    let workdir = state.config.config.working_dir.clone().unwrap_or_default();
    let cwd = if workdir.is_empty() {
        "/".to_string()
    } else {
        workdir.clone()
    };
    let resolved = resolve_mounts(ctx, sources, mounts, &cwd, stage_platform)?;
    // The key: the chain and everything the process sees, a secret by its id only.
    let mut parts: Vec<String> = vec![
        chain.to_string(),
        "RUN".into(),
        args.join("\0"),
        env.join("\0"),
        user.clone(),
        cwd.clone(),
        format!("{net:?} insecure={insecure}"),
    ];
    if let Some((name, data)) = &script {
        parts.push(format!(
            "script {name} {}",
            cache_key(&[&String::from_utf8_lossy(data)])
        ));
    }
    parts.extend(resolved.iter().map(|r| r.identity.clone()));
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let key = cache_key(&refs);
    // A hit reuses the recorded layer: no container starts.
    if let Some((layer, diff_id)) = ctx.cache.lookup(ctx.store, &key) {
        let layer = in_compression(ctx, layer, &diff_id)?;
        state.layers.push(layer);
        state.config.rootfs.diff_ids.push(diff_id);
        return Ok(RunDone {
            message,
            chain: key,
            cached: true,
        });
    }
    let kind = super::engine::choose(&settings.engine, windows)?;
    let rt = super::engine::runtime(ctx, kind, windows)?;
    let isolation = super::engine::isolation(ctx, rt.as_ref(), kind, state, line_of_step)?;
    let parent = match rt.needs() {
        runtime::Needs::Image => Some(super::engine::parent_image(ctx, state)?),
        runtime::Needs::Lowers => None,
    };
    let mut rt_mounts: Vec<runtime::Mount> =
        resolved.iter().filter_map(|r| r.mount.clone()).collect();
    let secrets: Vec<Vec<u8>> = rt_mounts
        .iter()
        .filter_map(|m| match &m.kind {
            MountKind::Secret { data, .. } | MountKind::SecretEnv { data, .. } => {
                Some(data.clone())
            }
            _ => None,
        })
        .filter(|d| !d.is_empty())
        .collect();
    let mut script_dir = None;
    if let Some((name, data)) = &script {
        let d = ctx.store.scratch_dir("script").map_err(|e| e.to_string())?;
        let file = d.path().join(name);
        fs::write(&file, data).map_err(|e| format!("`{}`: {e}", file.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&file, fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("`{}`: {e}", file.display()))?;
        }
        rt_mounts.push(runtime::Mount {
            target: format!("/dev/pipes/{name}"),
            readonly: true,
            kind: MountKind::Bind { source: file },
        });
        script_dir = Some(d);
    }
    let has_ssh_env = env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK="));
    if !has_ssh_env
        && let Some(first) = rt_mounts
            .iter()
            .find(|m| matches!(m.kind, MountKind::Ssh { .. }))
    {
        env.push(format!("SSH_AUTH_SOCK={}", first.target));
    }
    let step = runtime::Step {
        args: args.clone(),
        env,
        user,
        cwd,
        hostname: "buildkitsandbox".into(),
        network: match net {
            NetworkMode::Host => runtime::Network::Host,
            NetworkMode::None => runtime::Network::None,
        },
        mounts: rt_mounts,
        insecure,
        extra_hosts: Vec::new(),
        // SIGINT/SIGTERM kill the step's container.
        cancel: crate::ops::cancel::token(),
        isolation,
        resources: runtime::Resources {
            memory: settings.engine.memory,
            cpus: settings.engine.cpus,
        },
    };
    let printed = args.join(" ");
    let stage_index = ctx.stage;
    let store = ctx.store;
    let parents: Vec<(crate::image::Descriptor, String)> = state
        .layers
        .iter()
        .cloned()
        .zip(state.config.rootfs.diff_ids.iter().cloned())
        .collect();
    let cached = add_layer(ctx, state, &key, None, |w, reporter| {
        let lowers = match parent {
            None => unpack_lowers(store, &parents)?,
            Some(_) => Vec::new(),
        };
        let scratch = store.scratch_dir("run").map_err(std::io::Error::other)?;
        let rootfs = runtime::Rootfs {
            lowers,
            scratch: scratch.path().to_path_buf(),
            image: parent,
        };
        let mut lines = Lines::new(&secrets);
        let outcome = rt
            .run(&rootfs, &step, &mut |stream, bytes| {
                for (stderr, line) in lines.push(stream == runtime::OutputStream::Stderr, bytes) {
                    reporter.event(Event::Output {
                        stage: stage_index,
                        stderr,
                        line,
                    });
                }
            })
            .map_err(|e| std::io::Error::other(lines.mask(&e.to_string())))?;
        for (stderr, line) in lines.finish() {
            reporter.event(Event::Output {
                stage: stage_index,
                stderr,
                line,
            });
        }
        for n in &outcome.notes {
            reporter.event(Event::Note {
                stage: stage_index,
                text: n.clone(),
            });
        }
        if outcome.exit_code != 0 {
            let tail: Vec<String> = outcome.tail.iter().map(|l| lines.mask(l)).collect();
            let mut msg = format!(
                "process \"{}\" did not complete successfully: exit code: {}",
                lines.mask(&printed),
                outcome.exit_code
            );
            if !tail.is_empty() {
                msg.push_str("\n  the last lines of its output:\n");
                for l in &tail {
                    msg.push_str(&format!("    {l}\n"));
                }
            }
            return Err(std::io::Error::other(msg.trim_end().to_string()));
        }
        match &outcome.changes {
            runtime::Changes::Overlay { upper, lowers } => {
                crate::layer::diff::write_overlay_changes(upper, lowers, w)?;
            }
            runtime::Changes::Snapshot { root, before } => {
                crate::layer::diff::write_snapshot_changes(root, before, w)?;
            }
            runtime::Changes::Layer { tar, skip } => {
                super::engine::write_engine_layer(tar, skip, w)?;
            }
        }
        drop(scratch);
        Ok(())
    })?;
    drop(script_dir);
    drop(resolved);
    Ok(RunDone {
        message,
        chain: key,
        cached,
    })
}

/// The parent layers as overlayfs lower directories, top first: each unpacked once into the
/// store (`unpacked/<diff_id>/`), staged and renamed so a directory there is always whole.
fn unpack_lowers(
    store: &crate::store::Store,
    parents: &[(crate::image::Descriptor, String)],
) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (layer, diff_id) in parents {
        let dir = store.unpacked_dir(diff_id).map_err(std::io::Error::other)?;
        if !dir.is_dir() {
            let blob = store
                .open_blob(&layer.digest)
                .map_err(std::io::Error::other)?;
            let r = crate::layer::unpack_overlay(
                std::io::BufReader::new(blob),
                &dir,
                &crate::layer::ExtractOptions::default(),
            );
            // Another build may have unpacked it meanwhile.
            if let Err(e) = r
                && !dir.is_dir()
            {
                return Err(std::io::Error::other(format!(
                    "unpacking layer `{}`: {e}",
                    layer.digest
                )));
            }
        }
        out.push(dir);
    }
    out.reverse();
    Ok(out)
}

/// Splits a process's output into lines per stream, masking secret values.
struct Lines {
    out: Vec<u8>,
    err: Vec<u8>,
    secrets: Vec<String>,
}

impl Lines {
    fn new(secrets: &[Vec<u8>]) -> Lines {
        Lines {
            out: Vec::new(),
            err: Vec::new(),
            secrets: secrets
                .iter()
                .map(|s| {
                    String::from_utf8_lossy(s)
                        .trim_end_matches('\n')
                        .to_string()
                })
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }

    /// `text` with every secret value replaced by `****`.
    fn mask(&self, text: &str) -> String {
        let mut t = text.to_string();
        for s in &self.secrets {
            if t.contains(s.as_str()) {
                t = t.replace(s.as_str(), "****");
            }
        }
        t
    }

    fn push(&mut self, stderr: bool, bytes: &[u8]) -> Vec<(bool, String)> {
        let buf = if stderr { &mut self.err } else { &mut self.out };
        buf.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let rest = buf.split_off(i + 1);
            let line = std::mem::replace(buf, rest);
            let text = String::from_utf8_lossy(&line[..line.len() - 1])
                .trim_end_matches('\r')
                .to_string();
            lines.push((stderr, text));
        }
        lines.into_iter().map(|(e, l)| (e, self.mask(&l))).collect()
    }

    fn finish(&mut self) -> Vec<(bool, String)> {
        let mut lines = Vec::new();
        for (stderr, buf) in [(false, &mut self.out), (true, &mut self.err)] {
            if !buf.is_empty() {
                lines.push((stderr, String::from_utf8_lossy(buf).into_owned()));
                buf.clear();
            }
        }
        lines.into_iter().map(|(e, l)| (e, self.mask(&l))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::Heredoc;

    fn line(args: &[&str], shell: bool, docs: &[(&str, &str, bool)]) -> CommandLine {
        CommandLine {
            args: args.iter().map(|s| s.to_string()).collect(),
            prepend_shell: shell,
            heredocs: docs
                .iter()
                .map(|(n, c, chomp)| Heredoc {
                    name: n.to_string(),
                    content: c.to_string(),
                    expand: true,
                    chomp: *chomp,
                    fd: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn commands_as_buildkit_forms_them() {
        let sh = ["/bin/sh".to_string(), "-c".to_string()];
        let c = |l: &CommandLine| command(l, &sh, false).unwrap();
        assert_eq!(
            c(&line(&["echo hi"], true, &[])).0,
            ["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(c(&line(&["echo", "hi"], false, &[])).0, ["echo", "hi"]);
        // A heredoc alone: its body through the shell.
        assert_eq!(
            c(&line(
                &["<<EOF"],
                true,
                &[("EOF", "echo a\necho b\n", false)]
            ))
            .0,
            ["/bin/sh", "-c", "echo a\necho b\n"]
        );
        // <<- strips leading tabs.
        assert_eq!(
            c(&line(&["<<-EOF"], true, &[("EOF", "\techo a\n", true)])).0,
            ["/bin/sh", "-c", "echo a\n"]
        );
        // With a shebang: a script file.
        let (argv, script) = c(&line(
            &["<<EOF"],
            true,
            &[("EOF", "#!/bin/sh\necho s\n", false)],
        ));
        assert_eq!(argv, ["/dev/pipes/EOF"]);
        assert_eq!(script.unwrap().1, b"#!/bin/sh\necho s\n");
        // A command with heredocs: the shell reads them.
        assert_eq!(
            c(&line(
                &["cat <<A >a && cat <<B >b"],
                true,
                &[("A", "1\n", false), ("B", "2\n", false)]
            ))
            .0,
            ["/bin/sh", "-c", "cat <<A >a && cat <<B >b\n1\nA\n2\nB"]
        );
    }

    #[test]
    fn cache_ids_are_clean_paths() {
        assert_eq!(clean_path("node_modules/"), "node_modules");
        assert_eq!(clean_path("/root/.cache//pip/"), "/root/.cache/pip");
        assert_eq!(clean_path("a/../../b"), "../b");
        assert_eq!(clean_path("/../x"), "/x");
        assert_eq!(clean_path(""), ".");
    }

    #[test]
    fn sizes_and_masked_lines() {
        assert_eq!(ram_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(ram_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(ram_bytes("512").unwrap(), 512);
        assert!(ram_bytes("x").is_err());
        let mut l = Lines::new(&[b"hunter2\n".to_vec()]);
        assert_eq!(
            l.push(false, b"a hunter2 b\npart"),
            [(false, "a **** b".to_string())]
        );
        assert_eq!(l.finish(), [(false, "part".to_string())]);
    }
}
