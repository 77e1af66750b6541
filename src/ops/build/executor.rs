//! The stage executor: a Dockerfile is parsed, checked and planned (with its image bases
//! resolved first), the stages the target needs are built in file order, each step of a stage
//! either changes the config or adds a layer, and the target stage becomes an image in the
//! store.

use super::base::{base_images, resolve_base};
use super::cache::{BuildCache, CACHE_KEY_VERSION, cache_key};
use super::context::load_ignore;
use super::copy::copy_step;
use super::metadata::{self, trigger_steps};
use super::paths::{join_clean, rfc3339, windows_path};
use super::rootfs::RootfsCache;
use super::run;
use super::settings::{BuildError, BuildOutcome, BuildSettings, NamedContext};
use super::state::{Ctx, StageState, add_layer};
use super::user::stage_owner;
use super::view::Node;
use crate::dockerfile::check::{Checked, Command};
use crate::dockerfile::ignore::IgnoreFile;
use crate::dockerfile::lint::{self, LintOptions};
use crate::dockerfile::{self, Diagnostic, Dockerfile, Severity};
use crate::image::{Descriptor, History, ImageConfig, Manifest, Platform, media};
use crate::layer::tar::{Header, Kind};
use crate::ops::dockerfile::{self as df_ops, Source};
use crate::ops::images;
use crate::plan::{self, Plan, PlanOptions};
use crate::progress::{Event, Reporter, Silent};
use crate::store::{IndexEntry, Store};
use std::collections::{BTreeMap, BTreeSet};

pub use crate::plan::DEFAULT_PATH;

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
    build_source(store, settings, &src, reporter)
}

/// Builds the Dockerfile `src` (already read) with `settings`.
pub(super) fn build_source(
    store: &Store,
    settings: &BuildSettings,
    src: &Source,
    reporter: &mut dyn Reporter,
) -> Result<BuildOutcome, BuildError> {
    let planned = prepare(store, settings, src)?;
    let ignore = load_ignore(&settings.context, src.path.as_deref())?;
    let mut ctx = Ctx {
        store,
        settings,
        cache: BuildCache::open(store, &settings.context, !settings.no_cache),
        reporter,
        stage: 0,
        runtime: None,
        engine: Default::default(),
    };
    if !settings.cache_from.is_empty() && !settings.no_cache {
        let opts = settings.registry.clone().unwrap_or_default();
        let imported =
            crate::ops::cache::import(store, &opts, &settings.cache_from, CACHE_KEY_VERSION)
                .map_err(|e| BuildError::Step {
                    location: "--cache-from".into(),
                    message: e.to_string(),
                })?;
        tracing::info!("{} build cache records imported", imported.len());
        ctx.cache.remote = Some(imported);
    }
    let now = settings.source_date_epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    let mut run = Execution {
        planned: &planned,
        ignore: &ignore,
        now,
        created: rfc3339(now),
        chains: BTreeMap::new(),
        states: BTreeMap::new(),
        rootfs: RootfsCache::default(),
    };
    for si in run.needed_stages()? {
        run.build_stage(&mut ctx, si)?;
    }
    let mut state = run
        .states
        .remove(&planned.plan.target)
        .ok_or_else(|| BuildError::Step {
            location: planned.df.file.clone(),
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
    out.lint_summary = lint::render_summary(&planned.lints);
    out.isolation = std::mem::take(&mut ctx.engine.isolation);
    Ok(out)
}

/// A Dockerfile parsed, checked and planned.
struct Planned {
    df: Dockerfile,
    checked: Checked,
    plan: Plan,
    opts: PlanOptions,
    lints: Vec<crate::dockerfile::lint::LintWarning>,
}

impl Planned {
    /// The stage a `--from` names (an index or a stage name), if any.
    fn stage_of(&self, from: &str) -> Option<usize> {
        match from.parse::<usize>() {
            Ok(i) => Some(i),
            Err(_) => self
                .plan
                .stages
                .iter()
                .rposition(|s| s.name.as_deref() == Some(from.to_lowercase().as_str())),
        }
    }

    /// An error that quotes the line of instruction `i`.
    fn at(&self, i: usize, message: String) -> BuildError {
        BuildError::At(dockerfile::ParseError {
            location: dockerfile::check::locate(&self.df, &self.df.instructions[i], None),
            message,
        })
    }
}

/// Parses, checks, plans and lints `src`: a first plan finds the image bases, whose
/// platforms and ENV then shape the real plan. Errors of either stop the build, and so do
/// lint findings under `# check=error=true`.
fn prepare(store: &Store, settings: &BuildSettings, src: &Source) -> Result<Planned, BuildError> {
    let df = df_ops::parse(src)?;
    let checked = dockerfile::check(&df);
    let host = Platform::host();
    let mut opts = PlanOptions {
        build_args: settings.build_args.clone(),
        target_platform: settings.platform.clone().unwrap_or_else(|| host.clone()),
        build_platform: host,
        target: settings.target.clone(),
        images: BTreeMap::new(),
    };
    let bases = base_images(store, settings, &df, &checked, &opts);
    let mut lint = LintOptions {
        ignore: df_ops::read_ignore(src, &settings.context).map_err(|e| BuildError::Step {
            location: e.path.display().to_string(),
            message: e.message.clone(),
        })?,
        all_stages: false,
        explicit_platform: settings.platform.is_some(),
        image_shells: BTreeMap::new(),
    };
    for (name, (image, shell)) in bases {
        if let Some(shell) = shell {
            lint.image_shells.insert(name.clone(), shell);
        }
        opts.images.insert(name, image);
    }
    let planned = plan::plan_and_lint(&df, &checked, &opts, &lint);
    let errors: Vec<Diagnostic> = checked
        .diagnostics
        .iter()
        .chain(planned.diagnostics.iter())
        .filter(|d| d.severity == Severity::Error)
        .cloned()
        .collect();
    let Some(plan) = planned.plan.filter(|_| errors.is_empty()) else {
        return Err(BuildError::Check(errors));
    };
    if let Some(message) = lint::lint_error(&planned.lints) {
        return Err(BuildError::Lint {
            message,
            report: lint::render_text(&planned.lints, &src.name, &src.bytes),
        });
    }
    Ok(Planned {
        df,
        checked,
        plan,
        opts,
        lints: planned.lints,
    })
}

/// What `build --check` finds: BuildKit's lint findings for the build as asked (bases resolved,
/// nothing built), as text in BuildKit's format and as the warnings themselves.
pub fn check(store: &Store, settings: &BuildSettings) -> Result<CheckOutcome, BuildError> {
    let src = df_ops::read(settings.file.as_deref(), &settings.context)?;
    let planned = match prepare(store, settings, &src) {
        Ok(p) => p,
        Err(BuildError::Lint { message, report }) => {
            return Ok(CheckOutcome {
                report,
                error: Some(message),
                warnings: 1,
            });
        }
        Err(e) => return Err(e),
    };
    Ok(CheckOutcome {
        report: lint::render_text(&planned.lints, &src.name, &src.bytes),
        error: None,
        warnings: planned.lints.len(),
    })
}

/// What [`check`] found.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    /// The findings in BuildKit's text format (empty when there are none).
    pub report: String,
    /// The error lint findings make under `# check=error=true`.
    pub error: Option<String>,
    /// How many findings.
    pub warnings: usize,
}

/// One build in progress: the stages built so far, their cache chains, and the file systems
/// `COPY --from` assembled.
struct Execution<'p> {
    planned: &'p Planned,
    ignore: &'p IgnoreFile,
    /// The build's time (`SOURCE_DATE_EPOCH` or now), for new entries and history.
    now: i64,
    created: String,
    chains: BTreeMap<usize, String>,
    states: BTreeMap<usize, StageState>,
    rootfs: RootfsCache,
}

impl Execution<'_> {
    /// The stage a `--from` names (an index or a stage name), if any.
    fn stage_of(&self, from: &str) -> Option<usize> {
        self.planned.stage_of(from)
    }

    /// An error that quotes the line of instruction `i`.
    fn at(&self, i: usize, message: String) -> BuildError {
        self.planned.at(i, message)
    }

    /// Stages the target needs: its bases and the stages its COPY --from name, transitively,
    /// in file order.
    fn needed_stages(&self) -> Result<BTreeSet<usize>, BuildError> {
        let plan = &self.planned.plan;
        let df = &self.planned.df;
        let mut needed = BTreeSet::new();
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
                let froms: Vec<&str> = match &step.command {
                    Command::Copy(spec) => spec.from.as_deref().into_iter().collect(),
                    Command::Run { mounts, .. } => mounts
                        .iter()
                        .filter_map(|m| {
                            m.options
                                .iter()
                                .rev()
                                .find(|(k, _)| k == "from")
                                .map(|(_, v)| v.as_str())
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                for dep in froms
                    .iter()
                    .filter_map(|f| self.stage_of(f).map(|d| (f, d)))
                {
                    let (from, dep) = dep;
                    if dep >= i {
                        return Err(BuildError::Step {
                            location: format!(
                                "{}:{}",
                                df.file, df.instructions[step.instruction].line
                            ),
                            message: format!(
                                "--from={from} names a stage defined later; this version builds stages in file order"
                            ),
                        });
                    }
                    todo.push(dep);
                }
            }
        }
        Ok(needed)
    }

    /// The state a stage starts from: an earlier stage, scratch, or a base image.
    fn base_state(&self, ctx: &Ctx<'_>, si: usize) -> Result<StageState, BuildError> {
        let stage = &self.planned.plan.stages[si];
        let checked = &self.planned.checked;
        let settings = ctx.settings;
        let from_inst = checked.stages[si].instruction;
        let explicit = checked.stages[si].platform.is_some() || settings.platform.is_some();
        Ok(match stage.base_stage {
            Some(b) => {
                let s = &self.states[&b];
                StageState {
                    config: s.config.clone(),
                    layers: s.layers.clone(),
                    cmd_set: false,
                    view: s.view.clone(),
                    run_env: s.run_env.clone(),
                    build_args: s.build_args.clone(),
                }
            }
            None if stage.base.eq_ignore_ascii_case("scratch") => {
                let mut config = ImageConfig {
                    architecture: stage.platform.architecture.clone(),
                    os: stage.platform.os.clone(),
                    os_version: stage.platform.os_version.clone(),
                    variant: stage.platform.variant.clone(),
                    ..ImageConfig::default()
                };
                // BuildKit's empty image works in `/` (Windows too).
                config.config.working_dir = Some("/".into());
                StageState {
                    config,
                    layers: Vec::new(),
                    cmd_set: false,
                    view: None,
                    run_env: Vec::new(),
                    build_args: Vec::new(),
                }
            }
            None => {
                let base_ref = match settings.contexts.get(&stage.base) {
                    Some(NamedContext::Image(r)) => r.clone(),
                    Some(NamedContext::Dir(d)) => {
                        return Err(self.at(
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
                    ctx.store,
                    &base_ref,
                    &stage.platform,
                    explicit,
                    settings.registry.as_ref(),
                )
                .map_err(|message| self.at(from_inst, message))?;
                StageState {
                    config,
                    layers,
                    cmd_set: false,
                    view: None,
                    run_env: Vec::new(),
                    build_args: Vec::new(),
                }
            }
        })
    }

    /// Builds stage `si`: its base, ONBUILD triggers of an image base, then its steps.
    fn build_stage(&mut self, ctx: &mut Ctx<'_>, si: usize) -> Result<(), BuildError> {
        let planned = self.planned;
        let stage = &planned.plan.stages[si];
        let from_inst = planned.checked.stages[si].instruction;
        let settings = ctx.settings;
        let mut state = self.base_state(ctx, si)?;
        // The cache chain starts from what the stage is built on and what decides layer bytes.
        let base_id = match stage.base_stage {
            Some(b) => self.chains.get(&b).cloned().unwrap_or_default(),
            None => {
                let layers: Vec<&str> = state.layers.iter().map(|l| l.digest.as_str()).collect();
                format!("{} {}", stage.base, layers.join(","))
            }
        };
        // The compression is not part of it: one layer is the same layer whether it is kept
        // uncompressed or compressed (the forms are tied by diff_id).
        let mut chain = cache_key(&[
            CACHE_KEY_VERSION,
            &base_id,
            &serde_json::to_string(&state.config.platform()).unwrap_or_default(),
            &format!("{:?}", settings.source_date_epoch),
        ]);
        ctx.stage = si;
        ctx.reporter.event(Event::Stage {
            index: si,
            name: stage.name.clone(),
            base: stage.base.clone(),
            platform: state.config.platform().to_string(),
        });
        // A new image's history and time start from the base's.
        state.config.created = Some(self.created.clone());
        if state.config.os.is_empty() {
            state.config.os = stage.platform.os.clone();
            state.config.architecture = stage.platform.architecture.clone();
        }
        // A Linux stage whose image has no PATH gets BuildKit's default one (Windows leaves
        // it to the OS).
        if !state.windows() {
            let env = state.config.config.env.get_or_insert_with(Vec::new);
            if !env
                .iter()
                .any(|e| e.split_once('=').map_or(e.as_str(), |x| x.0) == "PATH")
            {
                env.push(format!("PATH={DEFAULT_PATH}"));
            }
        }
        // RUN's environment starts from the image's ENV (a stage built on a stage keeps its
        // parent's, ARGs included).
        if stage.base_stage.is_none() {
            state.run_env = state
                .config
                .config
                .env
                .iter()
                .flatten()
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (e.clone(), String::new()),
                })
                .collect();
        }
        // ONBUILD triggers of an image base run first, as if written right after FROM; the
        // new image does not inherit them.
        let mut steps: Vec<plan::Step> = Vec::new();
        if stage.base_stage.is_none()
            && let Some(triggers) = state.config.config.on_build.take()
        {
            steps = trigger_steps(&triggers, &planned.df.directives, &planned.opts)
                .map_err(|m| {
                    self.at(
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
            if crate::ops::cancel::requested() {
                return Err(BuildError::Step {
                    location: planned.df.file.clone(),
                    message: "the build was stopped".into(),
                });
            }
            chain = cache_key(&[&chain, &format!("{:?}", step.command)]);
            self.step(ctx, &mut state, si, step, &mut chain)?;
        }
        self.chains.insert(si, chain);
        self.states.insert(si, state);
        Ok(())
    }

    /// Runs one step of stage `si`, reporting its start and end.
    fn step(
        &mut self,
        ctx: &mut Ctx<'_>,
        state: &mut StageState,
        si: usize,
        step: &plan::Step,
        chain: &mut String,
    ) -> Result<(), BuildError> {
        let df = &self.planned.df;
        let line = df.instructions[step.instruction].line;
        let history_before = state.config.history.len();
        {
            let (name, words) = plan::command_words(&step.command);
            ctx.reporter.event(Event::StepStart {
                stage: si,
                line,
                text: format!("{name} {}", words.join(" ")),
            });
        }
        let planned = self.planned;
        let err = |message: String| planned.at(step.instruction, message);
        let created = self.created.clone();
        let history = |state: &mut StageState, created_by: String, layer: bool| {
            state.config.history.push(History {
                created: Some(created.clone()),
                created_by: Some(created_by),
                comment: Some("buildkit.dockerfile.v0".into()),
                empty_layer: !layer,
                ..History::default()
            });
        };
        let mut step_cached = false;
        match &step.command {
            c if metadata::is_metadata(c) => {
                if let Some(text) = metadata::apply(state, c).map_err(err)? {
                    history(state, text, false);
                }
                match c {
                    Command::Env(pairs) => {
                        for kv in pairs {
                            state.set_run_env(&kv.key, &kv.value);
                        }
                    }
                    Command::Arg(decls) => {
                        for d in decls {
                            if let Some(v) = &d.default
                                && !run::NON_ENV_ARGS.contains(&d.name.as_str())
                            {
                                state.set_run_env(&d.name, v);
                            }
                            state.build_args.push((d.name.clone(), d.default.clone()));
                        }
                    }
                    _ => {}
                }
            }
            Command::Workdir(w) => {
                let (text, layer, cached) = self.workdir(ctx, state, w, chain).map_err(err)?;
                step_cached = cached;
                history(state, text, layer);
            }
            Command::Copy(spec) | Command::Add(spec) => {
                let add = matches!(step.command, Command::Add(_));
                let stage_platform = self.planned.plan.stages[si].platform.clone();
                let source = match spec.from.as_deref() {
                    None => None,
                    Some(from) => {
                        let settings = ctx.settings;
                        let store = ctx.store;
                        Some(match (self.stage_of(from), settings.contexts.get(from)) {
                            (Some(dep), _) => self
                                .rootfs
                                .of_stage(store, dep, &self.states[&dep])
                                .map_err(err)?,
                            (None, Some(NamedContext::Dir(d))) => self.rootfs.of_dir(from, d),
                            (None, Some(NamedContext::Image(r))) => self
                                .rootfs
                                .of_image(store, r, &stage_platform, settings.registry.as_ref())
                                .map_err(err)?,
                            (None, None) => self
                                .rootfs
                                .of_image(store, from, &stage_platform, settings.registry.as_ref())
                                .map_err(err)?,
                        })
                    }
                };
                let done = copy_step(ctx, state, self.ignore, spec, add, self.now, source, chain)
                    .map_err(err)?;
                *chain = done.chain;
                step_cached = done.cached;
                history(state, format!("{} # buildkit", done.message), true);
            }
            Command::Run {
                command,
                mounts,
                network,
                security,
            } => {
                let stage_platform = self.planned.plan.stages[si].platform.clone();
                let stage_of = |f: &str| planned.stage_of(f);
                let mut sources = run::Sources {
                    rootfs: &mut self.rootfs,
                    states: &self.states,
                    chains: &self.chains,
                    stage_of: &stage_of,
                    ignore: self.ignore,
                };
                let done = run::run_step(
                    ctx,
                    state,
                    &mut sources,
                    command,
                    mounts,
                    network,
                    security,
                    chain,
                    &stage_platform,
                    line,
                )
                .map_err(err)?;
                *chain = done.chain;
                step_cached = done.cached;
                history(state, format!("{} # buildkit", done.message), true);
            }
            _ => {}
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
            line,
            text,
            layer,
            cached: step_cached,
        });
        Ok(())
    }

    /// `WORKDIR`: sets the working directory (joined to the current one) and, unless it is
    /// `/`, adds a layer that creates it. Returns the history text, whether a layer was added,
    /// and whether it came from the cache.
    fn workdir(
        &self,
        ctx: &mut Ctx<'_>,
        state: &mut StageState,
        w: &str,
        chain: &str,
    ) -> Result<(String, bool, bool), String> {
        let windows = state.windows();
        let current = state.config.config.working_dir.clone().unwrap_or_default();
        let (wd, stored) = if windows {
            let rel = windows_path(w)?;
            let base = windows_path(&current)?;
            let p = join_clean(if base.is_empty() { "/" } else { &base }, &rel);
            let stored = p.replace('/', "\\");
            (p, stored)
        } else {
            let p = join_clean(if current.is_empty() { "/" } else { &current }, w);
            (p.clone(), p)
        };
        state.config.config.working_dir = Some(stored);
        let layer = wd != "/";
        let mut cached = false;
        if layer {
            // Directories that exist keep their mode and owner; missing ones are made 0755,
            // owned by the stage's USER, as BuildKit's mkdir does. A symlink on the way is
            // followed.
            let user = state.config.config.user.clone().unwrap_or_default();
            let created = if windows {
                (0, 0)
            } else {
                stage_owner(ctx.store, &state.layers, &user)?
            };
            state.refresh_view(ctx.store)?;
            let view = state.view().expect("refreshed above");
            let real = view.resolve(&wd).0;
            let mut dirs = Vec::new();
            let mut acc = String::new();
            for c in real.split('/').filter(|c| !c.is_empty()) {
                acc = if acc.is_empty() {
                    c.to_string()
                } else {
                    format!("{acc}/{c}")
                };
                let (mode, uid, gid) = match view.stat(&acc) {
                    Some(Node::Dir { mode, uid, gid }) => (mode, uid, gid),
                    _ => (0o755, created.0, created.1),
                };
                dirs.push((acc.clone(), mode, uid, gid));
            }
            let now = self.now;
            cached = add_layer(ctx, state, chain, None, |w, _| {
                for (d, mode, uid, gid) in &dirs {
                    let mut h = Header::new(d, Kind::Dir);
                    h.mtime = now;
                    h.mode = *mode;
                    h.uid = *uid;
                    h.gid = *gid;
                    w.append(h, None, false)?;
                }
                Ok(())
            })
            .map_err(|e| format!("creating the working directory: {e}"))?;
        }
        Ok((format!("WORKDIR {wd}"), layer, cached))
    }
}

/// Writes the target stage's config and manifest into the store and tags it.
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
        lint_summary: String::new(),
        isolation: Vec::new(),
    })
}
