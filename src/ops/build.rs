//! `wcbuild build`: a Dockerfile and a context in, an image in the store out.
//!
//! This first version builds every instruction but `RUN` (which needs a runtime), on Linux and
//! Windows stages: metadata instructions change the config and add history entries as
//! BuildKit writes them; `COPY` and `ADD` of local files (from the context, honouring
//! `.dockerignore` and `--exclude`, or from heredocs) become a layer in the stage's format.
//! `COPY --from` reads an earlier stage's or a store image's file system, assembled from its
//! layers in a temporary directory. ONBUILD triggers of an image base run after its FROM.
//! `ADD` of git repositories uses the system's `git` (shallow fetch of the named ref).

use super::dockerfile::{self as df_ops, ReadError};
use super::images::{self, ImageError};
use crate::dockerfile::check::{Command, CommandLine, CopySpec};
use crate::dockerfile::ignore::IgnoreFile;
use crate::dockerfile::{self, Diagnostic, Severity};
use crate::image::{Descriptor, History, ImageConfig, Index, Manifest, Platform, media};
use crate::layer::tar::{Header, Kind};
use crate::layer::{Compression, Format, LayerOptions, LayerWriter};
use crate::plan::{self, PlanOptions};
use crate::progress::{Event, Reporter, Silent};
use crate::store::{IndexEntry, Store, StoreError};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile (`None`: `CONTEXT/Dockerfile`; `-`: standard input).
    pub file: Option<PathBuf>,
    /// Names to tag the result with.
    pub tags: Vec<String>,
    /// `--build-arg`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--platform` (one).
    pub platform: Option<Platform>,
    /// Layer compression.
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: clamps file times and sets the config and history times.
    pub source_date_epoch: Option<i64>,
    /// `--label K=V`.
    pub labels: Vec<(String, String)>,
    /// `--no-cache`: build every step (results are still recorded for later builds).
    pub no_cache: bool,
    /// `--build-context NAME=…`: named contexts for `FROM` and `COPY --from`.
    pub contexts: BTreeMap<String, NamedContext>,
    /// Where to pull base images the store does not have (`None`: never pull); also the
    /// registry settings of `cache_from` and `cache_to`.
    pub registry: Option<crate::registry::ClientOptions>,
    /// `--cache-from`: build caches in registries to import (earlier ones win).
    pub cache_from: Vec<String>,
    /// `--cache-to`: where to export this build's cache.
    pub cache_to: Option<String>,
    /// `mode=max`: export every step's layer, not only those in the final image.
    pub cache_max: bool,
}

/// A `--build-context` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory (`NAME=DIR`): `COPY --from=NAME` reads it.
    Dir(PathBuf),
    /// An image in the store (`NAME=docker-image://REF`), or one loaded from an OCI layout
    /// (`NAME=oci-layout://DIR[:TAG]`, named by its digest): `FROM NAME` and `COPY
    /// --from=NAME` use it.
    Image(String),
}

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

/// What a build made.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The manifest digest (the image ID users see).
    pub digest: String,
    /// The config digest.
    pub config_digest: String,
    /// The platform built.
    pub platform: Platform,
    /// The full references tagged.
    pub tags: Vec<String>,
    /// The build cache records this build used or made (step key → layer).
    pub cache: BTreeMap<String, super::cache::Record>,
}

/// Why a build stopped.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The Dockerfile does not parse.
    #[error(transparent)]
    Parse(#[from] dockerfile::ParseError),
    /// The Dockerfile does not check.
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Check(Vec<Diagnostic>),
    /// An instruction cannot be carried out (the error quotes its line).
    #[error("{0}")]
    At(dockerfile::ParseError),
    /// Something outside an instruction cannot be carried out.
    #[error("{location}: {message}")]
    Step {
        /// `file:line`.
        location: String,
        /// What went wrong.
        message: String,
    },
    /// Image or store trouble.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Store trouble.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// RFC 3339 (UTC, seconds) for a Unix time.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

struct StageState {
    config: ImageConfig,
    layers: Vec<Descriptor>,
    cmd_set: bool,
}

impl StageState {
    fn windows(&self) -> bool {
        self.config.os == "windows"
    }
}

fn go_quote_list(args: &[String]) -> String {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| crate::dockerfile::go_quote(a))
        .collect();
    format!("[{}]", quoted.join(" "))
}

fn go_list(args: &[String]) -> String {
    format!("[{}]", args.join(" "))
}

/// Adds or replaces `K=V` in an environment list (case-insensitively on Windows).
fn set_env(env: &mut Vec<String>, key: &str, value: &str, windows: bool) {
    let same = |e: &String| {
        let k = e.split_once('=').map(|x| x.0).unwrap_or(e);
        if windows {
            k.eq_ignore_ascii_case(key)
        } else {
            k == key
        }
    };
    let entry = format!("{key}={value}");
    match env.iter_mut().find(|e| same(e)) {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

/// Where a Windows path (`C:\app`, `\app`, `app`, `c:/x`) lives in the container, as a
/// `/`-separated path; other drives are refused.
pub fn windows_path(p: &str) -> Result<String, String> {
    let mut s = p.replace('\\', "/");
    if s.len() >= 2 && s.as_bytes()[1] == b':' {
        let drive = s.as_bytes()[0].to_ascii_uppercase();
        if drive != b'C' {
            return Err(format!(
                "`{p}` is not on the system drive (C:); Windows containers only have C:"
            ));
        }
        s = s[2..].to_string();
    }
    Ok(s)
}

fn join_clean(base: &str, rel: &str) -> String {
    let joined = if rel.starts_with('/') {
        rel.to_string()
    } else {
        format!("{}/{rel}", base.trim_end_matches('/'))
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Builds an image and tags it in the store, reporting nothing.
pub fn build(store: &Store, settings: &BuildSettings) -> Result<BuildOutcome, BuildError> {
    build_with(store, settings, &mut Silent)
}

/// Builds an image and tags it in the store, reporting each stage and step.
pub fn build_with(
    store: &Store,
    settings: &BuildSettings,
    reporter: &mut dyn Reporter,
) -> Result<BuildOutcome, BuildError> {
    let src = df_ops::read(settings.file.as_deref(), &settings.context)?;
    let df = df_ops::parse(&src)?;
    let checked = dockerfile::check(&df);
    let host = Platform::host();
    let mut opts = PlanOptions {
        build_args: settings.build_args.clone(),
        target_platform: settings.platform.clone().unwrap_or_else(|| host.clone()),
        build_platform: host,
        target: settings.target.clone(),
        images: BTreeMap::new(),
    };
    // A first pass finds the image bases (FROM lines may use ARGs); their platforms and ENV
    // then shape the real plan (a Windows base makes a Windows stage, its ENV is in scope).
    if let (Some(first), _) = plan::plan(&df, &checked, &opts) {
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
                    opts.images.insert(
                        name.clone(),
                        plan::BaseImage {
                            platform: config.platform(),
                            env: config.config.env.clone().unwrap_or_default(),
                        },
                    );
                }
            }
        }
    }
    let (plan, more) = plan::plan(&df, &checked, &opts);
    let errors: Vec<Diagnostic> = checked
        .diagnostics
        .iter()
        .chain(more.iter())
        .filter(|d| d.severity == Severity::Error)
        .cloned()
        .collect();
    let Some(plan) = plan.filter(|_| errors.is_empty()) else {
        return Err(BuildError::Check(errors));
    };
    let ignore = load_ignore(&settings.context, src.path.as_deref())?;
    let mut ctx = Ctx {
        store,
        settings,
        cache: BuildCache::open(store, &settings.context, !settings.no_cache),
        reporter,
        stage: 0,
    };
    if !settings.cache_from.is_empty() && !settings.no_cache {
        let opts = settings.registry.clone().unwrap_or_default();
        let imported = super::cache::import(store, &opts, &settings.cache_from, CACHE_KEY_VERSION)
            .map_err(|e| BuildError::Step {
                location: "--cache-from".into(),
                message: e.to_string(),
            })?;
        tracing::info!("{} build cache records imported", imported.len());
        ctx.cache.remote = Some(imported);
    }
    let mut chains: BTreeMap<usize, String> = BTreeMap::new();
    let now = settings.source_date_epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    let created = rfc3339(now);

    // Stages the target needs: its bases and the stages its COPY --from name, transitively.
    let stage_of = |from: &str| -> Option<usize> {
        match from.parse::<usize>() {
            Ok(i) => Some(i),
            Err(_) => plan
                .stages
                .iter()
                .rposition(|s| s.name.as_deref() == Some(from.to_lowercase().as_str())),
        }
    };
    let mut needed = std::collections::BTreeSet::new();
    let mut todo = vec![plan.target];
    while let Some(i) = todo.pop() {
        if !needed.insert(i) {
            continue;
        }
        let st = &plan.stages[i];
        if let Some(b) = st.base_stage {
            todo.push(b);
        }
        for step in &st.steps {
            if let Command::Copy(spec) = &step.command
                && let Some(dep) = spec.from.as_deref().and_then(stage_of)
            {
                if dep >= i {
                    return Err(BuildError::Step {
                        location: format!("{}:{}", df.file, df.instructions[step.instruction].line),
                        message: format!(
                            "COPY --from={} names a stage defined later; this version builds stages in file order",
                            spec.from.as_deref().unwrap_or_default()
                        ),
                    });
                }
                todo.push(dep);
            }
        }
    }
    let mut rootfs = RootfsCache::default();
    let mut states: BTreeMap<usize, StageState> = BTreeMap::new();
    for &si in &needed {
        let stage = &plan.stages[si];
        let from_inst = checked.stages[si].instruction;
        // Where an instruction is, for errors that quote its line.
        let at = |i: usize, message: String| {
            BuildError::At(dockerfile::ParseError {
                location: dockerfile::check::locate(&df, &df.instructions[i], None),
                message,
            })
        };
        let explicit = checked.stages[si].platform.is_some() || settings.platform.is_some();
        let mut state = match stage.base_stage {
            Some(b) => {
                let s = &states[&b];
                StageState {
                    config: s.config.clone(),
                    layers: s.layers.clone(),
                    cmd_set: false,
                }
            }
            None if stage.base.eq_ignore_ascii_case("scratch") => StageState {
                config: ImageConfig {
                    architecture: stage.platform.architecture.clone(),
                    os: stage.platform.os.clone(),
                    os_version: stage.platform.os_version.clone(),
                    variant: stage.platform.variant.clone(),
                    ..ImageConfig::default()
                },
                layers: Vec::new(),
                cmd_set: false,
            },
            None => {
                let base_ref = match settings.contexts.get(&stage.base) {
                    Some(NamedContext::Image(r)) => r.clone(),
                    Some(NamedContext::Dir(d)) => {
                        return Err(at(
                            from_inst,
                            format!(
                                "`FROM {}` names the directory context `{}`; this version uses directory contexts with COPY --from only",
                                stage.base,
                                d.display()
                            ),
                        ));
                    }
                    None => stage.base.clone(),
                };
                let (config, layers) = resolve_base(
                    store,
                    &base_ref,
                    &stage.platform,
                    explicit,
                    settings.registry.as_ref(),
                )
                .map_err(|message| at(from_inst, message))?;
                StageState {
                    config,
                    layers,
                    cmd_set: false,
                }
            }
        };
        // The cache chain starts from what the stage is built on and what decides layer bytes.
        let base_id = match stage.base_stage {
            Some(b) => chains.get(&b).cloned().unwrap_or_default(),
            None => {
                let layers: Vec<&str> = state.layers.iter().map(|l| l.digest.as_str()).collect();
                format!("{} {}", stage.base, layers.join(","))
            }
        };
        let mut chain = cache_key(&[
            CACHE_KEY_VERSION,
            &base_id,
            &serde_json::to_string(&state.config.platform()).unwrap_or_default(),
            &format!(
                "{:?} {:?}",
                settings.compression, settings.source_date_epoch
            ),
        ]);
        ctx.stage = si;
        ctx.reporter.event(Event::Stage {
            index: si,
            name: stage.name.clone(),
            base: stage.base.clone(),
            platform: state.config.platform().to_string(),
        });
        // A new image's history and time start from the base's.
        state.config.created = Some(created.clone());
        if state.config.os.is_empty() {
            state.config.os = stage.platform.os.clone();
            state.config.architecture = stage.platform.architecture.clone();
        }
        if !state.windows() && state.config.config.env.is_none() && stage.base_stage.is_none() {
            // BuildKit's default PATH for Linux images.
            state.config.config.env = Some(vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ]);
        }
        // ONBUILD triggers of an image base run first, as if written right after FROM; the
        // new image does not inherit them.
        let mut steps: Vec<plan::Step> = Vec::new();
        if stage.base_stage.is_none()
            && let Some(triggers) = state.config.config.on_build.take()
        {
            steps = trigger_steps(&triggers, &df.directives, &opts)
                .map_err(|m| {
                    at(
                        from_inst,
                        format!("in an ONBUILD trigger of `{}`: {m}", stage.base),
                    )
                })?
                .into_iter()
                .map(|mut st| {
                    st.instruction = from_inst;
                    st
                })
                .collect();
        }
        steps.extend(stage.steps.iter().cloned());
        for step in &steps {
            chain = cache_key(&[&chain, &format!("{:?}", step.command)]);
            let history_before = state.config.history.len();
            {
                let (name, words) = plan::command_words(&step.command);
                ctx.reporter.event(Event::StepStart {
                    stage: si,
                    line: df.instructions[step.instruction].line,
                    text: format!("{name} {}", words.join(" ")),
                });
            }
            let mut step_cached = false;
            let err = |message: String| at(step.instruction, message);
            let history = |state: &mut StageState, created_by: String, layer: bool| {
                state.config.history.push(History {
                    created: Some(created.clone()),
                    created_by: Some(created_by),
                    comment: Some("buildkit.dockerfile.v0".into()),
                    empty_layer: !layer,
                    ..History::default()
                });
            };
            let windows = state.windows();
            match &step.command {
                Command::Env(pairs) => {
                    let mut msg = String::from("ENV");
                    let env = state.config.config.env.get_or_insert_with(Vec::new);
                    for kv in pairs {
                        set_env(env, &kv.key, &kv.value, windows);
                        msg.push_str(&format!(" {}={}", kv.key, kv.value));
                    }
                    history(&mut state, msg, false);
                }
                Command::Label(pairs) => {
                    let mut msg = String::from("LABEL");
                    let labels = state.config.config.labels.get_or_insert_with(BTreeMap::new);
                    for kv in pairs {
                        labels.insert(kv.key.clone(), kv.value.clone());
                        msg.push_str(&format!(" {}={}", kv.key, kv.value));
                    }
                    history(&mut state, msg, false);
                }
                Command::Arg(decls) => {
                    let parts: Vec<String> = decls
                        .iter()
                        .map(|d| match &d.default {
                            Some(v) => format!("{}={v}", d.name),
                            None => d.name.clone(),
                        })
                        .collect();
                    history(&mut state, format!("ARG {}", parts.join(" ")), false);
                }
                Command::Maintainer(m) => {
                    state.config.author = Some(m.clone());
                    history(&mut state, format!("MAINTAINER {m}"), false);
                }
                Command::Expose(ports) => {
                    let mut specs = Vec::new();
                    for p in ports {
                        let (port, proto) = match p.split_once('/') {
                            Some((a, b)) => (a, b.to_lowercase()),
                            None => (p.as_str(), "tcp".to_string()),
                        };
                        let ok =
                            !port.is_empty() && port.split('-').all(|n| n.parse::<u16>().is_ok());
                        if !ok || !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
                            return Err(err(format!(
                                "invalid port `{p}`: expected PORT[-PORT][/tcp|udp|sctp]"
                            )));
                        }
                        specs.push(format!("{port}/{proto}"));
                    }
                    let exposed = state
                        .config
                        .config
                        .exposed_ports
                        .get_or_insert_with(BTreeMap::new);
                    for s in &specs {
                        exposed.insert(s.clone(), serde_json::json!({}));
                    }
                    history(&mut state, format!("EXPOSE {}", go_list(&specs)), false);
                }
                Command::User(u) => {
                    state.config.config.user = Some(u.clone());
                    history(&mut state, format!("USER {u}"), false);
                }
                Command::Workdir(w) => {
                    let current = state.config.config.working_dir.clone().unwrap_or_default();
                    let (wd, stored) = if windows {
                        let rel = windows_path(w).map_err(err)?;
                        let base = windows_path(&current).map_err(err)?;
                        let p = join_clean(if base.is_empty() { "/" } else { &base }, &rel);
                        let stored = p.replace('/', "\\");
                        (p, stored)
                    } else {
                        let p = join_clean(if current.is_empty() { "/" } else { &current }, w);
                        (p.clone(), p)
                    };
                    state.config.config.working_dir = Some(stored);
                    let layer = wd != "/";
                    if layer {
                        let mut dirs = Vec::new();
                        let mut acc = String::new();
                        for c in wd.trim_matches('/').split('/') {
                            acc = if acc.is_empty() {
                                c.to_string()
                            } else {
                                format!("{acc}/{c}")
                            };
                            dirs.push(acc.clone());
                        }
                        step_cached = add_layer(&mut ctx, &mut state, &chain, None, |w, _| {
                            for d in &dirs {
                                let mut h = Header::new(d, Kind::Dir);
                                h.mtime = now;
                                w.append(h, None, false)?;
                            }
                            Ok(())
                        })
                        .map_err(|e| err(format!("creating the working directory: {e}")))?;
                    }
                    history(&mut state, format!("WORKDIR {wd}"), layer);
                }
                Command::Volume(v) => {
                    let vols = state
                        .config
                        .config
                        .volumes
                        .get_or_insert_with(BTreeMap::new);
                    for p in v {
                        vols.insert(p.clone(), serde_json::json!({}));
                    }
                    history(&mut state, format!("VOLUME {}", go_list(v)), false);
                }
                Command::Cmd(line) => {
                    let args = with_shell(&state.config, line);
                    state.config.config.cmd = Some(args.clone());
                    state.config.config.args_escaped = true;
                    state.cmd_set = true;
                    history(&mut state, format!("CMD {}", go_quote_list(&args)), false);
                }
                Command::Entrypoint(line) => {
                    let args = with_shell(&state.config, line);
                    state.config.config.entrypoint = Some(args.clone());
                    if !state.cmd_set {
                        state.config.config.cmd = None;
                    }
                    history(
                        &mut state,
                        format!("ENTRYPOINT {}", go_quote_list(&args)),
                        false,
                    );
                }
                Command::Shell(s) => {
                    state.config.config.shell = Some(s.clone());
                    history(&mut state, format!("SHELL {}", go_list(s)), false);
                }
                Command::StopSignal(s) => {
                    state.config.config.stop_signal = Some(s.clone());
                    history(&mut state, format!("STOPSIGNAL {s}"), false);
                }
                Command::Healthcheck(h) => {
                    let hc = crate::image::Healthcheck {
                        test: h.test.clone(),
                        interval: h.interval,
                        timeout: h.timeout,
                        start_period: h.start_period,
                        start_interval: h.start_interval,
                        retries: h.retries,
                    };
                    let msg = format!(
                        "HEALTHCHECK &{{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
                        go_list(&hc.test),
                        go_duration(hc.interval),
                        go_duration(hc.timeout),
                        go_duration(hc.start_period),
                        go_duration(hc.start_interval),
                        hc.retries
                    );
                    state.config.config.healthcheck = Some(hc);
                    history(&mut state, msg.replacen('&', "", 1), false);
                }
                Command::Onbuild(expr) => {
                    state
                        .config
                        .config
                        .on_build
                        .get_or_insert_with(Vec::new)
                        .push(expr.clone());
                }
                Command::Copy(spec) | Command::Add(spec) => {
                    let add = matches!(step.command, Command::Add(_));
                    let source = match spec.from.as_deref() {
                        None => None,
                        Some(from) => Some(match (stage_of(from), settings.contexts.get(from)) {
                            (Some(dep), _) => {
                                rootfs.of_stage(store, dep, &states[&dep]).map_err(err)?
                            }
                            (None, Some(NamedContext::Dir(d))) => rootfs.of_dir(from, d),
                            (None, Some(NamedContext::Image(r))) => rootfs
                                .of_image(store, r, &stage.platform, settings.registry.as_ref())
                                .map_err(err)?,
                            (None, None) => rootfs
                                .of_image(store, from, &stage.platform, settings.registry.as_ref())
                                .map_err(err)?,
                        }),
                    };
                    let done = copy_step(
                        &mut ctx, &mut state, &ignore, spec, add, now, source, &chain,
                    )
                    .map_err(err)?;
                    chain = done.chain;
                    step_cached = done.cached;
                    history(&mut state, format!("{} # buildkit", done.message), true);
                }
                Command::Run { .. } => {
                    return Err(err(
                        "RUN needs a container runtime, and no runtime is available in this version of wcbuild (builds without RUN work: COPY, ADD of local files, and every metadata instruction)".into(),
                    ));
                }
                Command::From { .. } => {}
            }
            let text = match state.config.history.get(history_before) {
                Some(h) => h
                    .created_by
                    .clone()
                    .unwrap_or_default()
                    .trim_end_matches(" # buildkit")
                    .to_string(),
                None => format!("{:?}", step.command),
            };
            let layer = state
                .config
                .history
                .get(history_before)
                .is_some_and(|h| !h.empty_layer);
            ctx.reporter.event(Event::Step {
                stage: si,
                line: df.instructions[step.instruction].line,
                text,
                layer,
                cached: step_cached,
            });
        }
        chains.insert(si, chain);
        states.insert(si, state);
    }
    let mut state = states
        .remove(&plan.target)
        .ok_or_else(|| BuildError::Step {
            location: df.file.clone(),
            message: "the target stage was not built".into(),
        })?;
    for (k, v) in &settings.labels {
        state
            .config
            .config
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(k.clone(), v.clone());
    }
    ctx.cache.save(store);
    let mut out = finish(store, state, settings)?;
    out.cache = std::mem::take(&mut ctx.cache.used);
    Ok(out)
}

/// Go's `time.Duration.String()` for whole nanoseconds.
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let mut n = ns.unsigned_abs();
    let mut out = String::new();
    if n < 1_000_000_000 {
        let (unit, div) = if n < 1_000 {
            ("ns", 1)
        } else if n < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        out = format!("{}{}", trim_frac(n as f64 / div as f64), unit);
    } else {
        let h = n / 3_600_000_000_000;
        n %= 3_600_000_000_000;
        let m = n / 60_000_000_000;
        n %= 60_000_000_000;
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&format!("{}s", trim_frac(n as f64 / 1e9)));
    }
    if neg { format!("-{out}") } else { out }
}

fn trim_frac(v: f64) -> String {
    let s = format!("{v:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn with_shell(config: &ImageConfig, line: &CommandLine) -> Vec<String> {
    if !line.prepend_shell {
        return line.args.clone();
    }
    let mut shell = config.config.shell.clone().unwrap_or_else(|| {
        if config.os == "windows" {
            vec!["cmd".into(), "/S".into(), "/C".into()]
        } else {
            vec!["/bin/sh".into(), "-c".into()]
        }
    });
    shell.push(line.args.join(" "));
    shell
}

fn load_ignore(context: &Path, dockerfile: Option<&Path>) -> Result<IgnoreFile, BuildError> {
    for candidate in dockerfile::ignore::ignore_file_candidates(context, dockerfile) {
        if let Ok(bytes) = fs::read(&candidate) {
            return IgnoreFile::parse(&bytes).map_err(|e| BuildError::Step {
                location: candidate.display().to_string(),
                message: e.to_string(),
            });
        }
    }
    Ok(IgnoreFile::default())
}

fn resolve_base(
    store: &Store,
    base: &str,
    platform: &Platform,
    explicit: bool,
    remote: Option<&crate::registry::ClientOptions>,
) -> Result<(ImageConfig, Vec<Descriptor>), String> {
    let pull_err = |e: super::registry::TransferError| {
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
                let client = super::registry::client(remote.cloned().unwrap_or_default());
                let opts = super::registry::PullOptions {
                    platform: explicit.then(|| platform.clone()),
                    keep_index: true,
                    ..Default::default()
                };
                super::registry::runtime()
                    .block_on(super::registry::pull(
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
        match crate::image::platform::choose(&wanted, &candidates) {
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
        let client = super::registry::client(remote.clone());
        super::registry::runtime()
            .block_on(super::registry::fetch_manifest(
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

/// Writes a layer through `fill`, stores it, and appends it to the stage.
/// Writes a layer through `fill` unless the build cache has one for `key`; stores it and
/// appends it to the stage. Returns true on a cache hit.
fn add_layer(
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
        state.layers.push(layer);
        state.config.rootfs.diff_ids.push(diff_id);
        return Ok(true);
    }
    let opts = LayerOptions {
        format: if state.windows() {
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
    let mut w = LayerWriter::new(&mut blob, opts).map_err(|e| e.to_string())?;
    fill(&mut w, &mut *ctx.reporter).map_err(|e| e.to_string())?;
    let (d, _) = w.finish().map_err(|e| e.to_string())?;
    let digest = blob
        .commit(Some(&d.digest), Some(d.size))
        .map_err(|e| e.to_string())?;
    let layer = Descriptor::new(d.media_type, &digest, d.size);
    ctx.cache.record(ctx.store, key, &layer, &d.diff_id);
    state.layers.push(layer);
    state.config.rootfs.diff_ids.push(d.diff_id);
    Ok(false)
}

/// What the steps of one build share.
struct Ctx<'a> {
    store: &'a Store,
    settings: &'a BuildSettings,
    cache: BuildCache,
    reporter: &'a mut dyn Reporter,
    stage: usize,
}

struct CopyItem {
    /// Unpacked from an archive by ADD: its owner is kept.
    from_archive: bool,
    /// Owner kept from the source (COPY --from keeps it; the context gives 0:0).
    uid: u64,
    /// Group kept from the source.
    gid: u64,
    /// Path in the image, relative to `/`.
    dest: String,
    /// Where the content comes from (`None`: a directory to create, or inline content).
    source: Option<PathBuf>,
    inline: Option<Vec<u8>>,
    kind: Kind,
    mode: u32,
    mtime: i64,
    link: String,
}

/// What a COPY or ADD did: its history text, the new cache chain key, and whether the layer
/// came from the cache.
struct CopyDone {
    message: String,
    chain: String,
    cached: bool,
}

// The step needs the build, the stage, and its own inputs; a struct for the latter would only
// rename the parameters.
#[allow(clippy::too_many_arguments)]
fn copy_step(
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

/// Parses and expands a base image's ONBUILD triggers into steps.
fn trigger_steps(
    triggers: &[String],
    directives: &dockerfile::Directives,
    opts: &PlanOptions,
) -> Result<Vec<plan::Step>, String> {
    let mut text = format!("# escape={}\nFROM scratch\n", directives.escape);
    for t in triggers {
        text.push_str(t);
        text.push('\n');
    }
    let df = dockerfile::parse(text.as_bytes(), "ONBUILD").map_err(|e| e.message)?;
    let checked = dockerfile::check(&df);
    if let Some(d) = checked
        .diagnostics
        .iter()
        .find(|d| d.severity == Severity::Error)
    {
        return Err(d.error.message.clone());
    }
    let (plan, diags) = plan::plan(&df, &checked, opts);
    let plan = plan.ok_or_else(|| {
        diags
            .first()
            .map(|d| d.error.message.clone())
            .unwrap_or_else(|| "cannot be planned".into())
    })?;
    Ok(plan
        .stages
        .into_iter()
        .next()
        .map(|s| s.steps)
        .unwrap_or_default())
}

/// Downloads an http(s) URL into `file`, returning the content's `sha256:` digest.
fn http_download(
    url: &str,
    file: &Path,
    remote: Option<&crate::registry::ClientOptions>,
) -> Result<String, String> {
    let client = crate::registry::Client::new(remote.cloned().unwrap_or_default());
    let mut out = fs::File::create(file).map_err(|e| format!("`{}`: {e}", file.display()))?;
    let (digest, _, _) = super::registry::runtime()
        .block_on(client.fetch_url(url, &mut out))
        .map_err(|e| format!("ADD {url}: {e}"))?;
    Ok(digest)
}

/// True for the sources `ADD` treats as git repositories, as BuildKit recognises them:
/// `git@host:…`, `git://…`, `ssh://…`, and http(s) URLs whose path ends in `.git`.
fn is_git_source(src: &str) -> bool {
    let url = src.split('#').next().unwrap_or(src);
    src.starts_with("git@")
        || src.starts_with("git://")
        || src.starts_with("ssh://")
        || ((url.starts_with("https://") || url.starts_with("http://"))
            && url.trim_end_matches('/').ends_with(".git"))
}

/// Checks out `URL[#REF][:SUBDIR]` (shallow, with the system's `git`) into `dir`. Returns the
/// directory to copy (the subdirectory when one is named) and the commit.
fn git_checkout(src: &str, dir: &Path, keep_git_dir: bool) -> Result<(PathBuf, String), String> {
    let (url, fragment) = src.split_once('#').unwrap_or((src, ""));
    let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
    fs::create_dir_all(dir).map_err(|e| format!("`{}`: {e}", dir.display()))?;
    let git = |args: &[&str]| -> Result<String, String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("ADD {src}: cannot run git: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ADD {src}: git {} failed: {}",
                args.first().copied().unwrap_or(""),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    git(&["init", "-q"])?;
    let want = if reference.is_empty() {
        "HEAD"
    } else {
        reference
    };
    git(&["fetch", "-q", "--depth", "1", "--no-tags", url, want])?;
    git(&[
        "-c",
        "advice.detachedHead=false",
        "checkout",
        "-q",
        "FETCH_HEAD",
    ])?;
    let commit = git(&["rev-parse", "HEAD"])?;
    if !keep_git_dir {
        fs::remove_dir_all(dir.join(".git")).map_err(|e| format!("ADD {src}: {e}"))?;
    }
    let sub = crate::dockerfile::ignore::clean(subdir.trim_start_matches('/'));
    if sub.starts_with("..") {
        return Err(format!("ADD {src}: the subdirectory leaves the repository"));
    }
    let root = if sub.is_empty() || sub == "." {
        dir.to_path_buf()
    } else {
        dir.join(&sub)
    };
    if !root.is_dir() {
        return Err(format!(
            "ADD {src}: `{subdir}` is not a directory of the repository"
        ));
    }
    Ok((root, commit))
}

/// Directories removed when dropped.
struct TempDirs(Vec<PathBuf>);

impl Drop for TempDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = fs::remove_dir_all(d);
        }
    }
}

enum ArchiveKind {
    /// A tar, plain or compressed with gzip or zstd.
    Tar,
    /// A compression this version does not read (bzip2, xz).
    Unsupported(&'static str),
}

/// Detects a local archive by its content, never by its name, as BuildKit does.
fn archive_kind(path: &Path) -> Option<ArchiveKind> {
    use std::io::Read;
    let mut head = [0u8; 512];
    let mut f = fs::File::open(path).ok()?;
    let n = f.read(&mut head).unwrap_or(0);
    let h = &head[..n];
    if h.starts_with(b"BZh") {
        return Some(ArchiveKind::Unsupported("bzip2"));
    }
    if h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Some(ArchiveKind::Unsupported("xz"));
    }
    if h.starts_with(&[0x1f, 0x8b]) || h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        // Compressed: it is an archive only if a tar header follows.
        let f = fs::File::open(path).ok()?;
        let mut tar = crate::layer::tar_reader(
            std::io::BufReader::new(f),
            crate::layer::ReadLimits::default(),
        )
        .ok()?;
        return tar.next_entry().ok().flatten().map(|_| ArchiveKind::Tar);
    }
    (n == 512 && &head[257..262] == b"ustar").then_some(ArchiveKind::Tar)
}

fn mtime_of(meta: &fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn owner_of(meta: &fs::Metadata) -> (u64, u64) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (meta.uid() as u64, meta.gid() as u64)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        (0, 0)
    }
}

fn mode_of(meta: &fs::Metadata) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o7777
    }
    #[cfg(not(unix))]
    {
        if meta.is_dir() { 0o755 } else { 0o644 }
    }
}

fn item_for(path: &Path, meta: &fs::Metadata, dest: &str) -> Result<CopyItem, String> {
    let ft = meta.file_type();
    let (kind, link) = if ft.is_symlink() {
        (
            Kind::Symlink,
            fs::read_link(path)
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )
    } else if ft.is_dir() {
        (Kind::Dir, String::new())
    } else if ft.is_file() {
        (Kind::File, String::new())
    } else {
        return Err(format!(
            "`{}` is not a file, directory or symlink",
            path.display()
        ));
    };
    Ok(CopyItem {
        dest: dest.to_string(),
        source: Some(path.to_path_buf()),
        inline: None,
        kind,
        mode: mode_of(meta),
        mtime: mtime_of(meta),
        link,
        uid: owner_of(meta).0,
        gid: owner_of(meta).1,
        from_archive: false,
    })
}

/// Context paths matching a source pattern (a path or a glob), not excluded by `.dockerignore`.
fn context_matches(
    context: &Path,
    pattern: &str,
    ignore: &IgnoreFile,
) -> Result<Vec<(String, PathBuf)>, String> {
    let globbed = pattern.contains(['*', '?', '[']);
    if !globbed {
        if pattern == "." || pattern.is_empty() {
            return Ok(vec![(String::new(), context.to_path_buf())]);
        }
        let p = context.join(pattern);
        if fs::symlink_metadata(&p).is_ok() && !ignore.is_excluded(pattern) {
            return Ok(vec![(pattern.to_string(), p)]);
        }
        return Ok(Vec::new());
    }
    // Walk component by component, matching each against the pattern's component.
    let comps: Vec<&str> = pattern.split('/').collect();
    let mut current: Vec<(String, PathBuf)> = vec![(String::new(), context.to_path_buf())];
    for (i, comp) in comps.iter().enumerate() {
        let mut next = Vec::new();
        for (rel, path) in &current {
            let Ok(rd) = fs::read_dir(path) else { continue };
            let mut names: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for n in names {
                if crate::dockerfile::ignore::glob_matches(comp, &n) {
                    let r = if rel.is_empty() {
                        n.clone()
                    } else {
                        format!("{rel}/{n}")
                    };
                    let p = path.join(&n);
                    if i + 1 < comps.len() && !p.is_dir() {
                        continue;
                    }
                    if !ignore.is_excluded(&r) {
                        next.push((r, p));
                    }
                }
            }
        }
        current = next;
    }
    Ok(current)
}

fn collect_dir(
    dir: &Path,
    rel: &str,
    dest: &str,
    ignore: &IgnoreFile,
    excludes: &IgnoreFile,
    out: &mut Vec<CopyItem>,
) -> Result<(), String> {
    let dest = dest.trim_matches('/');
    if !dest.is_empty() {
        let meta = fs::metadata(dir).map_err(|e| format!("`{}`: {e}", dir.display()))?;
        // Parents of the destination, then the destination itself.
        let mut acc = String::new();
        for c in dest.split('/') {
            acc = if acc.is_empty() {
                c.to_string()
            } else {
                format!("{acc}/{c}")
            };
            let mut it = item_for(dir, &meta, &acc)?;
            it.source = None;
            if acc != dest {
                it.mode = 0o755;
            }
            out.push(it);
        }
    }
    walk_dir(dir, rel, dest, "", ignore, excludes, out)
}

fn walk_dir(
    dir: &Path,
    ctx_rel: &str,
    dest: &str,
    sub: &str,
    ignore: &IgnoreFile,
    excludes: &IgnoreFile,
    out: &mut Vec<CopyItem>,
) -> Result<(), String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(|e| format!("read `{}`: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names {
        let ctx_path = if ctx_rel.is_empty() {
            n.clone()
        } else {
            format!("{ctx_rel}/{n}")
        };
        let sub_path = if sub.is_empty() {
            n.clone()
        } else {
            format!("{sub}/{n}")
        };
        if ignore.is_excluded(&ctx_path) || excludes.is_excluded(&sub_path) {
            continue;
        }
        let p = dir.join(&n);
        let meta = fs::symlink_metadata(&p).map_err(|e| format!("`{}`: {e}", p.display()))?;
        let target = if dest.is_empty() {
            sub_path.clone()
        } else {
            format!("{dest}/{sub_path}")
        };
        let mut it = item_for(&p, &meta, &target)?;
        let is_dir = meta.is_dir();
        if is_dir {
            it.source = None;
        }
        out.push(it);
        if is_dir {
            walk_dir(&p, &ctx_path, dest, &sub_path, ignore, excludes, out)?;
        }
    }
    Ok(())
}

fn finish(
    store: &Store,
    state: StageState,
    settings: &BuildSettings,
) -> Result<BuildOutcome, BuildError> {
    let config_bytes = serde_json::to_vec(&state.config).map_err(|e| BuildError::Step {
        location: "config".into(),
        message: e.to_string(),
    })?;
    let config_digest = store.put_blob(&config_bytes, None)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor::new(media::OCI_CONFIG, &config_digest, config_bytes.len() as u64),
        layers: state.layers.clone(),
        subject: None,
        annotations: BTreeMap::new(),
        extra: serde_json::Map::new(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| BuildError::Step {
        location: "manifest".into(),
        message: e.to_string(),
    })?;
    let digest = store.put_blob(&manifest_bytes, None)?;
    let platform = state.config.platform();
    let mut tags = Vec::new();
    for t in &settings.tags {
        let full = images::normalize(t)?;
        let mut e = IndexEntry::new(media::OCI_MANIFEST, &digest, manifest_bytes.len() as u64);
        e.platform = serde_json::to_value(&platform).ok();
        store.tag(&full, e)?;
        tags.push(full);
    }
    Ok(BuildOutcome {
        digest,
        config_digest,
        platform,
        tags,
        cache: BTreeMap::new(),
    })
}

/// A stage's or image's file system, assembled from its layers for `COPY --from` (or a
/// directory named with `--build-context`).
pub struct Rootfs {
    path: PathBuf,
    windows: bool,
    label: String,
    /// False for a user's directory, which must not be removed.
    owned: bool,
}

/// Root file systems made during one build, removed when the build ends.
#[derive(Default)]
struct RootfsCache {
    stages: BTreeMap<usize, Rootfs>,
    images: BTreeMap<String, Rootfs>,
}

impl Drop for RootfsCache {
    fn drop(&mut self) {
        for r in self.stages.values().chain(self.images.values()) {
            if r.owned {
                let _ = fs::remove_dir_all(&r.path);
            }
        }
    }
}

fn assemble(
    store: &Store,
    layers: &[Descriptor],
    windows: bool,
    label: String,
) -> Result<Rootfs, String> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "wcbuild-rootfs-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
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
        owned: true,
    })
}

impl RootfsCache {
    fn of_dir(&mut self, name: &str, dir: &Path) -> &Rootfs {
        let key = format!("dir:{name}");
        self.images.entry(key).or_insert_with(|| Rootfs {
            path: dir.to_path_buf(),
            windows: false,
            label: format!("the build context `{name}` ({})", dir.display()),
            owned: false,
        })
    }

    fn of_stage(
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

    fn of_image(
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

/// What a build for several platforms made.
#[derive(Debug, Clone)]
pub struct MultiOutcome {
    /// The index digest (tagged), or the single image's digest when one platform was asked.
    pub digest: String,
    /// One outcome per platform, in the order asked.
    pub images: Vec<BuildOutcome>,
    /// The full references tagged.
    pub tags: Vec<String>,
    /// The build cache export (`cache_to`), when asked.
    pub cache_export: Option<super::cache::Exported>,
}

/// Pushes the cache records of `images` to `settings.cache_to` (only the final images' layers
/// unless `cache_max`).
fn export_cache(
    store: &Store,
    settings: &BuildSettings,
    images: &[BuildOutcome],
) -> Result<Option<super::cache::Exported>, BuildError> {
    let Some(to) = &settings.cache_to else {
        return Ok(None);
    };
    let mut records = BTreeMap::new();
    for out in images {
        let keep: std::collections::BTreeSet<String> = if settings.cache_max {
            Default::default()
        } else {
            let m: Manifest =
                serde_json::from_slice(&store.read_blob(&out.digest)?).map_err(|e| {
                    BuildError::Step {
                        location: "--cache-to".into(),
                        message: e.to_string(),
                    }
                })?;
            m.layers.into_iter().map(|l| l.digest).collect()
        };
        for (k, r) in &out.cache {
            if settings.cache_max || keep.contains(&r.layer.digest) {
                records.insert(k.clone(), r.clone());
            }
        }
    }
    let opts = settings.registry.clone().unwrap_or_default();
    super::cache::export(store, &opts, to, &records, CACHE_KEY_VERSION)
        .map(Some)
        .map_err(|e| BuildError::Step {
            location: "--cache-to".into(),
            message: e.to_string(),
        })
}

/// Builds the same Dockerfile for several platforms (for example every Windows version of a
/// multi-version base index) and ties the images together in an OCI index whose entries carry
/// `platform.os.version`. Layers that do not depend on the base come out byte-identical and
/// are stored once.
pub fn build_platforms(
    store: &Store,
    settings: &BuildSettings,
    platforms: &[Platform],
    reporter: &mut dyn Reporter,
) -> Result<MultiOutcome, BuildError> {
    if platforms.len() <= 1 {
        let mut s = settings.clone();
        s.platform = platforms.first().cloned().or(s.platform);
        let out = build_with(store, &s, reporter)?;
        let images = vec![out];
        let cache_export = export_cache(store, settings, &images)?;
        return Ok(MultiOutcome {
            digest: images[0].digest.clone(),
            tags: images[0].tags.clone(),
            images,
            cache_export,
        });
    }
    let mut images = Vec::new();
    for p in platforms {
        let mut s = settings.clone();
        s.platform = Some(p.clone());
        s.tags.clear();
        images.push(build_with(store, &s, reporter)?);
    }
    let mut manifests = Vec::new();
    for out in &images {
        let size = store.blob_size(&out.digest)?.unwrap_or(0);
        let mut d = Descriptor::new(media::OCI_MANIFEST, &out.digest, size);
        d.platform = Some(out.platform.clone());
        manifests.push(d);
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.into()),
        artifact_type: None,
        manifests,
        subject: None,
        annotations: BTreeMap::new(),
        extra: serde_json::Map::new(),
    };
    let bytes = serde_json::to_vec(&index).map_err(|e| BuildError::Step {
        location: "index".into(),
        message: e.to_string(),
    })?;
    let digest = store.put_blob(&bytes, None)?;
    let mut tags = Vec::new();
    for t in &settings.tags {
        let full = images::normalize(t)?;
        store.tag(
            &full,
            IndexEntry::new(media::OCI_INDEX, &digest, bytes.len() as u64),
        )?;
        tags.push(full);
    }
    let cache_export = export_cache(store, settings, &images)?;
    Ok(MultiOutcome {
        digest,
        images,
        tags,
        cache_export,
    })
}

/// What goes into every cache key first. Bump it when anything that decides a layer's bytes
/// changes (the layer writer, COPY semantics, the key recipe), so old records stop matching.
pub const CACHE_KEY_VERSION: &str = "wcbuild build cache v1";

/// A sha256 over length-prefixed parts, as hex.
pub fn cache_key(parts: &[&str]) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct StatEntry {
    size: u64,
    mtime_ns: i128,
    ino: u64,
    sha256: String,
}

/// The build cache: step records (key → layer) and a stat cache of context file hashes, so
/// that a rebuild re-hashes only files whose size, mtime or inode changed.
pub(crate) struct BuildCache {
    dir: PathBuf,
    enabled: bool,
    /// Records imported from registries (`--cache-from`).
    remote: Option<super::cache::Imported>,
    /// Records this build used or made.
    used: BTreeMap<String, super::cache::Record>,
    stat_path: Option<PathBuf>,
    stat: BTreeMap<String, StatEntry>,
    stat_dirty: bool,
}

impl BuildCache {
    fn open(store: &Store, context: &Path, enabled: bool) -> BuildCache {
        let dir = store.cache_dir();
        let ctx = fs::canonicalize(context).unwrap_or_else(|_| context.to_path_buf());
        let stat_path = dir
            .join("stat")
            .join(cache_key(&[&ctx.to_string_lossy()]) + ".json");
        let stat = fs::read(&stat_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        BuildCache {
            dir,
            enabled,
            remote: None,
            used: BTreeMap::new(),
            stat_path: Some(stat_path),
            stat,
            stat_dirty: false,
        }
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.dir.join("steps").join(format!("{key}.json"))
    }

    fn lookup(&mut self, store: &Store, key: &str) -> Option<(Descriptor, String)> {
        if !self.enabled {
            return None;
        }
        let local = self.lookup_local(store, key);
        let found = match local {
            Some(hit) => Some(hit),
            None => {
                let rec = self.remote.as_ref()?.get(store, key)?;
                self.record(store, key, &rec.layer, &rec.diff_id);
                Some((rec.layer, rec.diff_id))
            }
        }?;
        self.used.insert(
            key.to_string(),
            super::cache::Record {
                layer: found.0.clone(),
                diff_id: found.1.clone(),
            },
        );
        Some(found)
    }

    fn lookup_local(&self, store: &Store, key: &str) -> Option<(Descriptor, String)> {
        let bytes = fs::read(self.record_path(key)).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let d: Descriptor = serde_json::from_value(v["layer"].clone()).ok()?;
        let diff_id = v["diff_id"].as_str()?.to_string();
        (store.blob_size(&d.digest).ok()?? == d.size).then_some((d, diff_id))
    }

    fn record(&mut self, store: &Store, key: &str, layer: &Descriptor, diff_id: &str) {
        self.used.insert(
            key.to_string(),
            super::cache::Record {
                layer: layer.clone(),
                diff_id: diff_id.to_string(),
            },
        );
        let body = serde_json::json!({"layer": layer, "diff_id": diff_id});
        let path = self.record_path(key);
        let rel = path
            .strip_prefix(store.root())
            .unwrap_or(&path)
            .to_path_buf();
        if let Err(e) = store.write_record(&rel, body.to_string().as_bytes()) {
            tracing::warn!(
                "could not record build cache entry `{}`: {e}",
                path.display()
            );
        }
    }

    /// sha256 of a file's content, from the stat cache when size, mtime and inode match.
    fn file_hash(&mut self, path: &Path) -> std::io::Result<String> {
        let meta = fs::metadata(path)?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        #[cfg(unix)]
        let ino = {
            use std::os::unix::fs::MetadataExt;
            meta.ino()
        };
        #[cfg(not(unix))]
        let ino = 0;
        let key = path.to_string_lossy().into_owned();
        if let Some(e) = self.stat.get(&key)
            && e.size == meta.len()
            && e.mtime_ns == mtime_ns
            && e.ino == ino
        {
            return Ok(e.sha256.clone());
        }
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        let mut f = fs::File::open(path)?;
        std::io::copy(&mut f, &mut h)?;
        let sha = h
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        self.stat.insert(
            key,
            StatEntry {
                size: meta.len(),
                mtime_ns,
                ino,
                sha256: sha.clone(),
            },
        );
        self.stat_dirty = true;
        Ok(sha)
    }

    fn save(&mut self, store: &Store) {
        if let (true, Some(p)) = (self.stat_dirty, &self.stat_path) {
            let rel = p.strip_prefix(store.root()).unwrap_or(p).to_path_buf();
            if let Ok(bytes) = serde_json::to_vec(&self.stat) {
                let _ = store.write_record(&rel, &bytes);
            }
            self.stat_dirty = false;
        }
    }
}

/// Every layer digest the build cache refers to (kept by `prune` unless the cache is dropped).
pub fn cache_roots(store: &Store) -> Vec<String> {
    let dir = store.cache_dir().join("steps");
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(&dir) {
        for e in rd.flatten() {
            if let Ok(b) = fs::read(e.path())
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b)
                && let Some(d) = v["layer"]["digest"].as_str()
            {
                out.push(d.to_string());
            }
        }
    }
    out
}

/// Drops the build cache (step records and the stat cache).
pub fn drop_cache(store: &Store) -> std::io::Result<()> {
    // Build steps, the context stat cache, and the dedup reports' layer indexes.
    for sub in ["steps", "stat", "dedup-index"] {
        let p = store.cache_dir().join(sub);
        if p.exists() {
            fs::remove_dir_all(&p)?;
        }
    }
    Ok(())
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

    #[test]
    fn times_durations_and_paths() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(windows_path("C:\\app\\bin").unwrap(), "/app/bin");
        assert_eq!(windows_path("c:/x").unwrap(), "/x");
        assert_eq!(windows_path("app").unwrap(), "app");
        assert!(
            windows_path("D:\\data")
                .unwrap_err()
                .contains("not on the system drive")
        );
        assert_eq!(join_clean("/app", "../etc/./x"), "/etc/x");
    }
}
