//! Build planning: stages, ARG scoping, platform arguments, and the expansion of each
//! instruction's variables as BuildKit's Dockerfile frontend performs them.
//!
//! This part is pure (no I/O): it takes a parsed, checked Dockerfile and the user's settings
//! (`--build-arg`, `--platform`, `--target`) and says, stage by stage, what every instruction
//! means once ARG and ENV values are substituted. The build (`ops`) executes that; `wcbuild
//! dockerfile expand` prints it. It uses `dockerfile` and `image` and nothing else.
//!
//! The scoping rules, from BuildKit's `dockerfile2llb`:
//! - ARGs before the first `FROM` are the global scope, seeded with the platform ARGs
//!   (`BUILDPLATFORM`, `TARGETOS`, …); they expand `FROM` lines only.
//! - In a stage, `ARG NAME` without a default takes the `--build-arg` value, else the global
//!   value; `ARG NAME=default` takes the `--build-arg` value, else the default expanded with the
//!   stage's variables so far. ARG and ENV share one scope in which the later write wins.
//! - A stage built `FROM` another stage starts with that stage's variables; other stages do not
//!   see them.
//! - Every `$` in one instruction sees the values from before that instruction.
//! - Variable names compare case-insensitively in Windows stages, as Windows does.

pub mod lint;

use crate::dockerfile::check::{self, ArgDecl, Checked, Command, CopySpec, KeyValue, Mount};
use crate::dockerfile::lexer::{Env, Lexer};
use crate::dockerfile::lint::{self as dflint, LintOptions, LintWarning, Linter};
use crate::dockerfile::{Diagnostic, Dockerfile, Location, ParseError, Severity, check::locate};
use crate::image::Platform;
use lint as plint;
use lint::{Findings, StageLint, collect};
use std::collections::{BTreeMap, BTreeSet};

/// The `PATH` BuildKit gives a non-Windows stage whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The build arguments BuildKit defines without an `ARG` in the file; they still need an `ARG`
/// in a stage to be expanded there (they are passed to `RUN` steps regardless).
pub const PROXY_ARGS: [&str; 10] = [
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

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// `--build-arg K=V` values.
    pub build_args: BTreeMap<String, String>,
    /// The platform being built for.
    pub target_platform: Platform,
    /// The platform of the machine building.
    pub build_platform: Platform,
    /// `--target`, when given.
    pub target: Option<String>,
    /// What the build knows of base images, by the reference a `FROM` names (after
    /// expansion): their platform (which a stage without `--platform` takes) and ENV (which
    /// `$` references in the stage see). Empty when planning without a store.
    pub images: BTreeMap<String, BaseImage>,
}

/// A base image's platform and environment, for planning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseImage {
    /// Its platform.
    pub platform: Platform,
    /// Its `Env`, as `K=V`.
    pub env: Vec<String>,
}

/// An ordered variable scope: later writes win, lookups may ignore case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    vars: Vec<(String, String)>,
    ignore_case: bool,
}

impl Scope {
    /// An empty scope; `ignore_case` for Windows stages.
    pub fn new(ignore_case: bool) -> Scope {
        Scope {
            vars: Vec::new(),
            ignore_case,
        }
    }
    fn same(&self, a: &str, b: &str) -> bool {
        if self.ignore_case {
            a.eq_ignore_ascii_case(b) || a.to_uppercase() == b.to_uppercase()
        } else {
            a == b
        }
    }
    /// Sets (or replaces) a variable, keeping its first position.
    pub fn set(&mut self, key: &str, value: &str) {
        let pos = self.vars.iter().position(|(k, _)| self.same(k, key));
        match pos {
            Some(i) => self.vars[i] = (key.to_string(), value.to_string()),
            None => self.vars.push((key.to_string(), value.to_string())),
        }
    }
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| self.same(k, key))
            .map(|(_, v)| v.as_str())
    }
    /// All variables in order.
    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }
}

impl Env for Scope {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).map(String::from)
    }
}

/// One instruction after expansion.
#[derive(Debug, Clone)]
pub struct Step {
    /// Index of the instruction in the Dockerfile.
    pub instruction: usize,
    /// The command with every builder-expanded value substituted.
    pub command: Command,
    /// Variables this step referenced that were not set.
    pub unset: Vec<String>,
}

/// One stage after expansion.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Position in the file.
    pub index: usize,
    /// `AS` name, lower case.
    pub name: Option<String>,
    /// The base after expansion: an image reference, `scratch`, or a stage name.
    pub base: String,
    /// The stage this one is built on, when the base names an earlier stage.
    pub base_stage: Option<usize>,
    /// The platform: `FROM --platform`, else the base stage's, else the target platform.
    pub platform: Platform,
    /// The expanded steps (the FROM itself excluded).
    pub steps: Vec<Step>,
    /// Variables (ARG and ENV) at the end of the stage.
    pub scope: Scope,
    /// ENV values at the end of the stage, as the image config will hold them.
    pub env: Vec<(String, String)>,
}

impl Stage {
    /// True for a Windows stage.
    pub fn is_windows(&self) -> bool {
        self.platform.os == "windows"
    }
}

/// The expanded build: global ARGs and every stage.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The global scope after the ARGs before the first FROM.
    pub global: Scope,
    /// Every stage, in file order.
    pub stages: Vec<Stage>,
    /// The stage `--target` names (or the last).
    pub target: usize,
    /// Build arguments that were given but never declared (BuildKit warns about these).
    pub unused_build_args: Vec<String>,
}

/// `os/arch[/variant]`, with `(os.version)` after the os when `with_version`, as containerd's
/// `platforms.Format`/`FormatAll` print it.
pub fn format_platform(p: &Platform, with_version: bool) -> String {
    let mut s = p.os.clone();
    if with_version && let Some(v) = p.os_version.as_deref().filter(|v| !v.is_empty()) {
        s.push_str(&format!("({v})"));
    }
    s.push('/');
    s.push_str(&p.architecture);
    if let Some(v) = p.variant.as_deref().filter(|v| !v.is_empty()) {
        s.push('/');
        s.push_str(v);
    }
    s
}

/// The global scope BuildKit starts with: platform ARGs and `TARGETSTAGE`, each overridable
/// by a `--build-arg` of the same name.
pub fn default_args(opts: &PlanOptions, target: &str) -> Scope {
    let b = &opts.build_platform;
    let t = &opts.target_platform;
    let pairs = [
        ("BUILDPLATFORM", format_platform(b, false)),
        ("BUILDOS", b.os.clone()),
        ("BUILDOSVERSION", b.os_version.clone().unwrap_or_default()),
        ("BUILDARCH", b.architecture.clone()),
        ("BUILDVARIANT", b.variant.clone().unwrap_or_default()),
        ("TARGETPLATFORM", format_platform(t, true)),
        ("TARGETOS", t.os.clone()),
        ("TARGETOSVERSION", t.os_version.clone().unwrap_or_default()),
        ("TARGETARCH", t.architecture.clone()),
        ("TARGETVARIANT", t.variant.clone().unwrap_or_default()),
        ("TARGETSTAGE", target.to_string()),
    ];
    let mut scope = Scope::new(false);
    for (k, v) in pairs {
        let v = opts.build_args.get(k).cloned().unwrap_or(v);
        scope.set(k, &v);
    }
    scope
}

struct Ctx<'a> {
    df: &'a Dockerfile,
    lexer: Lexer,
    diagnostics: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn error(&mut self, instruction: usize, message: String, near: Option<&str>) {
        let inst = &self.df.instructions[instruction];
        self.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            error: ParseError {
                location: locate(self.df, inst, near),
                message,
            },
        });
    }
}

/// A word expander bound to a scope; remembers unset names.
struct Expander<'a> {
    lexer: &'a Lexer,
    scope: &'a Scope,
    unset: Vec<String>,
    /// The names each expanded word left unset, word by word (BuildKit reports per word).
    per_word: Vec<BTreeSet<String>>,
}

impl Expander<'_> {
    fn word(&mut self, w: &str) -> Result<String, String> {
        let p = self
            .lexer
            .process_word(w, self.scope)
            .map_err(|e| e.to_string())?;
        self.note(&p.unmatched);
        Ok(p.result)
    }
    fn note(&mut self, unmatched: &BTreeSet<String>) {
        for u in unmatched {
            if !self.unset.contains(u) {
                self.unset.push(u.clone());
            }
        }
        if !unmatched.is_empty() {
            self.per_word.push(unmatched.clone());
        }
    }
    fn words(&mut self, w: &str) -> Result<Vec<String>, String> {
        self.lexer
            .process_words(w, self.scope)
            .map_err(|e| e.to_string())
    }
    fn opt(&mut self, w: &Option<String>) -> Result<Option<String>, String> {
        w.as_ref().map(|v| self.word(v)).transpose()
    }
}

/// What planning found.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The expanded build; `None` when a problem is an error.
    pub plan: Option<Plan>,
    /// Expansion errors, undefined `--target`, `STOPSIGNAL` in a Windows stage, …
    pub diagnostics: Vec<Diagnostic>,
    /// BuildKit's lint findings, in the order BuildKit reports them (empty when planning
    /// without linting).
    pub lints: Vec<LintWarning>,
}

/// Expands every stage of a checked Dockerfile. Returns the plan and the problems found
/// (expansion errors, `STOPSIGNAL` in a Windows stage, an unknown `--target`, …); the plan is
/// `None` when a problem is an error. Lint rules are not run; see [`plan_and_lint`].
pub fn plan(
    df: &Dockerfile,
    checked: &Checked,
    opts: &PlanOptions,
) -> (Option<Plan>, Vec<Diagnostic>) {
    let p = plan_inner(df, checked, opts, None);
    (p.plan, p.diagnostics)
}

/// [`plan`], and every BuildKit lint rule with it: the file-level rules of
/// [`crate::dockerfile::lint::lint_parsed`] and those that need scopes, base images and the
/// stage graph. `# check=` and `BUILDKIT_DOCKERFILE_CHECK` (from `opts.build_args`) decide
/// which rules run and whether findings are errors. Instruction rules cover the stages
/// `--target` needs, or every stage with `lint.all_stages`.
pub fn plan_and_lint(
    df: &Dockerfile,
    checked: &Checked,
    opts: &PlanOptions,
    lint: &LintOptions,
) -> Planned {
    plan_inner(df, checked, opts, Some(lint))
}

fn plan_inner(
    df: &Dockerfile,
    checked: &Checked,
    opts: &PlanOptions,
    lint_opts: Option<&LintOptions>,
) -> Planned {
    let mut ctx = Ctx {
        df,
        lexer: Lexer::new(df.directives.escape),
        diagnostics: Vec::new(),
    };
    let linting = lint_opts.is_some();
    let no_lint = LintOptions::default();
    let lo = lint_opts.unwrap_or(&no_lint);
    let (base_cfg, cfg_error) = dflint::base_config(df, &opts.build_args);
    if let Some(message) =
        cfg_error.filter(|_| opts.build_args.contains_key(dflint::CHECK_BUILD_ARG))
    {
        // (A bad `# check=` directive is reported by `check` already.)
        ctx.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            error: ParseError {
                location: Location {
                    file: df.file.clone(),
                    ..Location::default()
                },
                message,
            },
        });
    }
    let mut findings = Findings::default();
    if linting {
        findings.parsed = collect(|l| dflint::lint_parsed(df, checked, &base_cfg, l));
    }
    // TARGETSTAGE: the stage being built, the last one unless `--target` says.
    let target_name = match &opts.target {
        Some(t) => t.clone(),
        None => checked
            .stages
            .last()
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| "default".into()),
    };
    let mut global = default_args(opts, &target_name);
    let mut declared: Vec<String> = Vec::new();

    // Global ARGs: defaults expanded with the global scope so far; --build-arg wins.
    let first_from = checked
        .stages
        .first()
        .map(|s| s.instruction)
        .unwrap_or(df.instructions.len());
    let mut meta_args: Vec<&ArgDecl> = Vec::new();
    for (i, cmd) in checked.commands.iter().enumerate().take(first_from) {
        let Some(Command::Arg(decls)) = cmd else {
            continue;
        };
        for decl in decls {
            let ArgDecl { name, default } = decl;
            meta_args.push(decl);
            declared.push(name.clone());
            let value = match opts.build_args.get(name) {
                Some(v) => Some(v.clone()),
                None => match default {
                    Some(d) => match ctx.lexer.process_word(d, &global) {
                        Ok(p) => Some(p.result),
                        Err(e) => {
                            ctx.error(i, e.to_string(), Some(d));
                            None
                        }
                    },
                    None => None,
                },
            };
            if let Some(v) = value {
                global.set(name, &v);
            }
        }
    }
    // The names UndefinedArgInFrom accepts: every global ARG and predefined argument.
    let mut from_known: BTreeSet<String> = meta_args.iter().map(|d| d.name.clone()).collect();
    from_known.extend(global.vars().iter().map(|(k, _)| k.clone()));
    if linting {
        findings.parsed.extend(collect(|l| {
            invalid_default_args(
                l,
                &ctx.lexer,
                df,
                checked,
                opts,
                &target_name,
                &meta_args,
                &base_cfg,
            )
        }));
    }

    let mut stages: Vec<Stage> = Vec::new();
    let mut stage_lints: Vec<StageLint> = Vec::new();
    for info in &checked.stages {
        let from_idx = info.instruction;
        let from_inst = df.instructions.get(from_idx);
        let stage_cfg = plint::config_for(&base_cfg, from_inst);
        let from_at = plint::at(df, from_idx);
        // FROM: base and platform expanded with the global scope only.
        let base = match ctx.lexer.process_word(&info.base, &global) {
            Ok(p) => {
                if linting {
                    findings.from.extend(collect(|l| {
                        plint::undefined_from_args(
                            l,
                            &stage_cfg,
                            &from_at,
                            &p.unmatched,
                            &from_known,
                        )
                    }));
                }
                p.result
            }
            Err(e) => {
                ctx.error(from_idx, e.to_string(), Some(&info.base));
                String::new()
            }
        };
        if base.is_empty()
            && ctx
                .diagnostics
                .iter()
                .all(|d| d.severity != Severity::Error)
        {
            ctx.error(
                from_idx,
                format!("base name ({}) should not be blank", info.base),
                Some(&info.base),
            );
        }
        // With duplicate stage names the later stage wins, as in BuildKit.
        let base_stage = stages
            .iter()
            .rposition(|s| s.name.as_deref() == Some(base.to_lowercase().as_str()));
        let mut platform = match &info.platform {
            Some(p) => match ctx.lexer.process_word(p, &global) {
                Ok(r) => {
                    if linting {
                        findings.from.extend(collect(|l| {
                            plint::undefined_from_args(
                                l,
                                &stage_cfg,
                                &from_at,
                                &r.unmatched,
                                &from_known,
                            );
                            plint::from_platform(
                                l,
                                &stage_cfg,
                                &from_at,
                                p,
                                &r,
                                global.get("TARGETPLATFORM"),
                                info.name.as_deref().unwrap_or(""),
                            );
                        }));
                    }
                    if r.result.is_empty() {
                        // BuildKit suggests a global name for a misspelt variable.
                        let hint = r
                            .unmatched
                            .iter()
                            .find_map(|u| {
                                crate::dockerfile::error::suggest(
                                    u,
                                    global.vars().iter().map(|(k, _)| k.as_str()),
                                    true,
                                )
                            })
                            .map(|m| format!(" (did you mean {m}?)"))
                            .unwrap_or_default();
                        ctx.error(
                            from_idx,
                            format!("empty platform value from expression {p}{hint}"),
                            Some(p),
                        );
                        opts.target_platform.clone()
                    } else {
                        match Platform::parse(&r.result) {
                            Ok(pl) => pl,
                            Err(e) => {
                                ctx.error(
                                    from_idx,
                                    format!("failed to parse platform {p}: {e}"),
                                    Some(p),
                                );
                                opts.target_platform.clone()
                            }
                        }
                    }
                }
                Err(e) => {
                    ctx.error(
                        from_idx,
                        format!("failed to process arguments for platform {p}: {e}"),
                        Some(p),
                    );
                    opts.target_platform.clone()
                }
            },
            None => opts.target_platform.clone(),
        };
        let image = opts.images.get(&base).filter(|_| base_stage.is_none());
        if let Some(img) = image
            && linting
        {
            // What BuildKit asks the registry for, compared with what came back.
            let expected = if info.platform.is_some() || lo.explicit_platform {
                platform.clone()
            } else {
                plint::autodetect_platform(
                    &img.platform,
                    &opts.target_platform,
                    &opts.build_platform,
                )
            };
            let found = collect(|l| {
                plint::base_image_platform(l, &base_cfg, &from_at, &base, &expected, &img.platform)
            });
            findings
                .resolve
                .extend(found.into_iter().map(|w| (info.index, w)));
        }
        if let (None, Some(img)) = (&info.platform, image) {
            platform = img.platform.clone();
        }
        let windows_hint = platform.os == "windows";
        let (mut scope, mut env) = match base_stage {
            Some(b) => {
                if info.platform.is_none() {
                    platform = stages[b].platform.clone();
                }
                (stages[b].scope.clone(), stages[b].env.clone())
            }
            None => {
                let mut scope = Scope::new(windows_hint);
                let mut env = Vec::new();
                for kv in image.map(|i| i.env.as_slice()).unwrap_or_default() {
                    if let Some((k, v)) = kv.split_once('=') {
                        scope.set(k, v);
                        env.push((k.to_string(), v.to_string()));
                    }
                }
                // BuildKit sets a PATH on every non-Windows stage whose image has none
                // (`FROM scratch` included).
                if platform.os != "windows" && !env.iter().any(|(k, _)| k == "PATH") {
                    scope.set("PATH", DEFAULT_PATH);
                    env.push(("PATH".into(), DEFAULT_PATH.into()));
                }
                (scope, env)
            }
        };
        scope.ignore_case = platform.os == "windows";
        let mut sl = match base_stage {
            Some(b) => stage_lints[b].child(),
            None => StageLint {
                shell_set: lo.image_shells.get(&base).is_some_and(|s| !s.is_empty()),
                ..StageLint::default()
            },
        };
        let end = checked
            .stages
            .get(info.index + 1)
            .map(|s| s.instruction)
            .unwrap_or(df.instructions.len());
        let mut steps = Vec::new();
        for i in from_idx + 1..end {
            let Some(cmd) = &checked.commands[i] else {
                continue;
            };
            let inst = &df.instructions[i];
            let cfg = plint::config_for(&base_cfg, Some(inst));
            let here = plint::at(df, i);
            let mut found = Linter::default();
            let mut x = Expander {
                lexer: &ctx.lexer,
                scope: &scope,
                unset: Vec::new(),
                per_word: Vec::new(),
            };
            let result = expand_command(cmd, &mut x, &platform);
            let mut unset = x.unset;
            if linting {
                for u in &x.per_word {
                    plint::undefined_vars(&mut found, &cfg, &here, u, &sl.args, &scope);
                }
            }
            let command = match result {
                Ok(c) => c,
                Err(e) => {
                    ctx.error(i, e, None);
                    findings
                        .dispatch
                        .extend(found.warnings.into_iter().map(|w| (info.index, w)));
                    continue;
                }
            };
            // The rules of each instruction, then the step applied to the scope.
            match &command {
                Command::Env(pairs) => {
                    for kv in pairs {
                        if inst.legacy_key_value {
                            found.run(
                                &cfg,
                                &dflint::LEGACY_KEY_VALUE_FORMAT,
                                here.clone(),
                                dflint::detail::legacy_key_value_format(&inst.keyword),
                            );
                        }
                        if dflint::is_secret_key(&kv.key) {
                            found.run(
                                &cfg,
                                &dflint::SECRETS_USED_IN_ARG_OR_ENV,
                                here.clone(),
                                dflint::detail::secrets_used_in_arg_or_env("ENV", &kv.key),
                            );
                        }
                    }
                }
                Command::Label(_) if inst.legacy_key_value => found.run(
                    &cfg,
                    &dflint::LEGACY_KEY_VALUE_FORMAT,
                    here.clone(),
                    dflint::detail::legacy_key_value_format(&inst.keyword),
                ),
                Command::Workdir(w) => {
                    if !sl.workdir_set && !plint::is_abs_path(w, &platform.os) {
                        found.run(
                            &cfg,
                            &dflint::WORKDIR_RELATIVE_PATH,
                            here.clone(),
                            dflint::detail::workdir_relative_path(w),
                        );
                    }
                    sl.workdir_set = true;
                }
                Command::Cmd(line) | Command::Entrypoint(line) => {
                    let tracker = if matches!(command, Command::Cmd(_)) {
                        &mut sl.cmd
                    } else {
                        &mut sl.entrypoint
                    };
                    if let Some(prev) = tracker.replace(i) {
                        found.run(
                            &cfg,
                            &dflint::MULTIPLE_INSTRUCTIONS_DISALLOWED,
                            plint::at(df, prev),
                            dflint::detail::multiple_instructions_disallowed(&inst.keyword),
                        );
                    }
                    if line.prepend_shell && !sl.shell_set {
                        found.run(
                            &cfg,
                            &dflint::JSON_ARGS_RECOMMENDED,
                            here.clone(),
                            dflint::detail::json_args_recommended(&inst.keyword),
                        );
                    }
                }
                Command::Healthcheck(_) => {
                    if let Some(prev) = sl.healthcheck.replace(i) {
                        found.run(
                            &cfg,
                            &dflint::MULTIPLE_INSTRUCTIONS_DISALLOWED,
                            plint::at(df, prev),
                            dflint::detail::multiple_instructions_disallowed(&inst.keyword),
                        );
                    }
                }
                Command::Shell(_) => sl.shell_set = true,
                Command::Expose(ports) => plint::expose_ports(&mut found, &cfg, &here, ports),
                Command::Copy(spec) if spec.from.is_none() => {
                    plint::copy_ignored(&mut found, &cfg, &here, lo.ignore.as_ref(), spec, false)
                }
                Command::Add(spec) => {
                    plint::copy_ignored(&mut found, &cfg, &here, lo.ignore.as_ref(), spec, true)
                }
                _ => {}
            }
            match &command {
                Command::Env(pairs) => {
                    for kv in pairs {
                        scope.set(&kv.key, &kv.value);
                        if let Some(e) = env.iter_mut().find(|(k, _)| {
                            if scope.ignore_case {
                                k.eq_ignore_ascii_case(&kv.key)
                            } else {
                                *k == kv.key
                            }
                        }) {
                            e.1 = kv.value.clone();
                        } else {
                            env.push((kv.key.clone(), kv.value.clone()));
                        }
                    }
                }
                Command::Arg(decls) => {
                    let mut resolved = Vec::new();
                    for d in decls {
                        declared.push(d.name.clone());
                        if dflint::is_secret_key(&d.name) {
                            found.run(
                                &cfg,
                                &dflint::SECRETS_USED_IN_ARG_OR_ENV,
                                here.clone(),
                                dflint::detail::secrets_used_in_arg_or_env("ARG", &d.name),
                            );
                        }
                        let value = if let Some(v) = opts.build_args.get(&d.name) {
                            Some(v.clone())
                        } else if let Some(def) = &d.default {
                            match ctx.lexer.process_word(def, &scope) {
                                Ok(p) => {
                                    if linting {
                                        plint::undefined_vars(
                                            &mut found,
                                            &cfg,
                                            &here,
                                            &p.unmatched,
                                            &sl.args,
                                            &scope,
                                        );
                                    }
                                    for u in &p.unmatched {
                                        if !unset.contains(u) {
                                            unset.push(u.clone());
                                        }
                                    }
                                    Some(p.result)
                                }
                                Err(e) => {
                                    ctx.error(i, e.to_string(), Some(def));
                                    None
                                }
                            }
                        } else {
                            global.get(&d.name).map(String::from)
                        };
                        if let Some(v) = &value {
                            scope.set(&d.name, v);
                        }
                        sl.args.push(d.name.clone());
                        resolved.push(ArgDecl {
                            name: d.name.clone(),
                            default: value,
                        });
                    }
                    findings
                        .dispatch
                        .extend(found.warnings.into_iter().map(|w| (info.index, w)));
                    steps.push(Step {
                        instruction: i,
                        command: Command::Arg(resolved),
                        unset,
                    });
                    continue;
                }
                Command::StopSignal(_) if platform.os == "windows" => {
                    ctx.error(
                        i,
                        "The daemon on this platform does not support the command stopsignal (STOPSIGNAL is not available for Windows images)".into(),
                        None,
                    );
                }
                _ => {}
            }
            findings
                .dispatch
                .extend(found.warnings.into_iter().map(|w| (info.index, w)));
            steps.push(Step {
                instruction: i,
                command,
                unset,
            });
        }
        stage_lints.push(sl);
        stages.push(Stage {
            index: info.index,
            name: info.name.clone(),
            base,
            base_stage,
            platform,
            steps,
            scope,
            env,
        });
    }

    let target = match &opts.target {
        Some(t) => match stages
            .iter()
            .rposition(|s| s.name.as_deref() == Some(t.to_lowercase().as_str()))
        {
            Some(i) => i,
            None => {
                let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
                let hint = crate::dockerfile::error::suggest(t, names.iter().copied(), false)
                    .map(|s| format!(" (did you mean {s}?)"))
                    .unwrap_or_default();
                ctx.diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    error: ParseError {
                        location: Location {
                            file: df.file.clone(),
                            ..Location::default()
                        },
                        message: format!(
                            "target stage \"{t}\" could not be found{hint}; stages: {}",
                            if names.is_empty() {
                                "(none named)".to_string()
                            } else {
                                names.join(", ")
                            }
                        ),
                    },
                });
                stages.len().saturating_sub(1)
            }
        },
        None => stages.len().saturating_sub(1),
    };
    let bases: Vec<Option<usize>> = stages.iter().map(|s| s.base_stage).collect();
    ctx.diagnostics
        .extend(checked.later_stage_errors(df, &bases, target));
    let unused_build_args = opts
        .build_args
        .keys()
        .filter(|k| {
            !declared.contains(k)
                && !PROXY_ARGS.contains(&k.as_str())
                && global.get(k).is_none()
                && !k.starts_with("BUILDKIT_")
                && k.as_str() != "SOURCE_DATE_EPOCH"
        })
        .cloned()
        .collect();
    let failed = ctx
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error);
    // Instruction rules run where BuildKit dispatches: every stage for a check without
    // `--target`, else the stages the target needs.
    let linted: Vec<bool> = if lo.all_stages {
        vec![true; stages.len()]
    } else {
        reachable_stages(checked, &stages, target)
    };
    let lints = if linting {
        findings.finish(&linted)
    } else {
        Vec::new()
    };
    let plan = (!failed && !stages.is_empty()).then_some(Plan {
        global,
        stages,
        target,
        unused_build_args,
    });
    Planned {
        plan,
        diagnostics: ctx.diagnostics,
        lints,
    }
}

/// The stages building `target` needs: its base stages and the stages `COPY --from` and
/// `RUN --mount=from=` read, transitively.
fn reachable_stages(checked: &Checked, stages: &[Stage], target: usize) -> Vec<bool> {
    let mut reach = vec![false; stages.len()];
    let mut todo = vec![target];
    while let Some(s) = todo.pop() {
        if s >= reach.len() || reach[s] {
            continue;
        }
        reach[s] = true;
        if let Some(b) = stages[s].base_stage {
            todo.push(b);
        }
        todo.extend(
            checked
                .stage_refs
                .iter()
                .filter(|r| r.stage == s)
                .map(|r| r.source),
        );
    }
    reach
}

/// InvalidDefaultArgInFrom: each stage's base expanded with the global ARGs' defaults alone
/// (no `--build-arg`) must still be an image reference. Gives up at the first expansion
/// error, as BuildKit does.
#[allow(clippy::too_many_arguments)]
fn invalid_default_args(
    out: &mut Linter,
    lexer: &Lexer,
    df: &Dockerfile,
    checked: &Checked,
    opts: &PlanOptions,
    target_name: &str,
    meta_args: &[&ArgDecl],
    cfg: &dflint::LintConfig,
) {
    let mut defaults = default_args(opts, target_name);
    for d in meta_args {
        if let Some(v) = &d.default {
            match lexer.process_word(v, &defaults) {
                Ok(p) => defaults.set(&d.name, &p.result),
                Err(_) => return,
            }
        }
    }
    for st in &checked.stages {
        let Ok(p) = lexer.process_word(&st.base, &defaults) else {
            return;
        };
        if crate::image::Reference::parse(&p.result).is_err() {
            out.run(
                cfg,
                &dflint::INVALID_DEFAULT_ARG_IN_FROM,
                plint::at(df, st.instruction),
                dflint::detail::invalid_default_arg_in_from(&st.base),
            );
        }
    }
}

fn expand_pairs(pairs: &[KeyValue], x: &mut Expander) -> Result<Vec<KeyValue>, String> {
    pairs
        .iter()
        .map(|kv| {
            Ok(KeyValue {
                key: x.word(&kv.key)?,
                value: x.word(&kv.value)?,
            })
        })
        .collect()
}

fn expand_copy(spec: &CopySpec, x: &mut Expander) -> Result<CopySpec, String> {
    let mut out = spec.clone();
    out.chown = x.opt(&spec.chown)?.filter(|s| !s.is_empty());
    out.chmod = x.opt(&spec.chmod)?.filter(|s| !s.is_empty());
    out.checksum = x.opt(&spec.checksum)?.filter(|s| !s.is_empty());
    out.sources = spec
        .sources
        .iter()
        .map(|s| x.word(s))
        .collect::<Result<_, _>>()?;
    out.dest = x.word(&spec.dest)?;
    // Inline (heredoc) sources expand with quotes kept, unless the delimiter was quoted.
    let mut raw = Lexer::new('\\');
    raw.skip_process_quotes = true;
    for doc in &mut out.inline {
        if doc.expand {
            let p = raw
                .process_word(&doc.content, x.scope)
                .map_err(|e| e.to_string())?;
            x.note(&p.unmatched);
            doc.content = p.result;
        }
    }
    Ok(out)
}

fn expand_mount(m: &Mount, x: &mut Expander) -> Result<Mount, String> {
    let mut out = m.clone();
    for (k, v) in &mut out.options {
        if k != "from" {
            *v = x.word(v)?;
        }
    }
    let text: Vec<String> = out
        .options
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(out.switches.iter().cloned())
        .collect();
    crate::dockerfile::check::parse_mount(&text.join(",")).map_err(|p| p.message)?;
    Ok(out)
}

fn expand_command(
    cmd: &Command,
    x: &mut Expander,
    _platform: &Platform,
) -> Result<Command, String> {
    Ok(match cmd {
        Command::Env(p) => Command::Env(expand_pairs(p, x)?),
        Command::Label(p) => Command::Label(expand_pairs(p, x)?),
        Command::Expose(ports) => {
            let mut out = Vec::new();
            for p in ports {
                out.extend(x.words(p)?);
            }
            for p in &out {
                check::check_expose_port(p)?;
            }
            Command::Expose(out)
        }
        Command::Add(s) => {
            let add = expand_copy(s, x)?;
            if add.checksum.is_some() {
                check::check_checksum_sources(&add)?;
            }
            Command::Add(add)
        }
        Command::Copy(s) => Command::Copy(expand_copy(s, x)?),
        Command::Workdir(w) => Command::Workdir(x.word(w)?),
        Command::User(u) => Command::User(x.word(u)?),
        Command::StopSignal(s) => {
            let sig = x.word(s)?;
            check::check_stop_signal(&sig)?;
            Command::StopSignal(sig)
        }
        Command::Volume(v) => {
            let vols: Vec<String> = v.iter().map(|s| x.word(s)).collect::<Result<_, _>>()?;
            if vols.iter().any(String::is_empty) {
                return Err("VOLUME specified can not be an empty string".into());
            }
            Command::Volume(vols)
        }
        Command::Run {
            command,
            mounts,
            network,
            security,
        } => Command::Run {
            command: command.clone(),
            mounts: mounts
                .iter()
                .map(|m| expand_mount(m, x))
                .collect::<Result<_, _>>()?,
            network: network.clone(),
            security: security.clone(),
        },
        other => other.clone(),
    })
}

/// An expanded command as a name and words, for printing.
pub fn command_words(c: &Command) -> (&'static str, Vec<String>) {
    let copy = |s: &CopySpec| {
        let mut w = Vec::new();
        for (flag, v) in [
            ("from", &s.from),
            ("chown", &s.chown),
            ("chmod", &s.chmod),
            ("checksum", &s.checksum),
        ] {
            if let Some(v) = v {
                w.push(format!("--{flag}={v}"));
            }
        }
        if s.link {
            w.push("--link".into());
        }
        if s.parents {
            w.push("--parents".into());
        }
        for e in &s.excludes {
            w.push(format!("--exclude={e}"));
        }
        w.extend(s.sources.iter().cloned());
        for doc in &s.inline {
            w.push(format!("<<{}", doc.name));
        }
        w.push(s.dest.clone());
        w
    };
    match c {
        Command::From {
            base,
            name,
            platform,
        } => {
            let mut w: Vec<String> = platform.iter().map(|p| format!("--platform={p}")).collect();
            w.push(base.clone());
            if let Some(n) = name {
                w.extend(["AS".into(), n.clone()]);
            }
            ("FROM", w)
        }
        Command::Run {
            command,
            mounts,
            network,
            ..
        } => {
            let mut w: Vec<String> = mounts
                .iter()
                .map(|m| {
                    let parts: Vec<String> = m
                        .options
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .chain(m.switches.iter().cloned())
                        .collect();
                    format!("--mount={}", parts.join(","))
                })
                .collect();
            if network != "default" {
                w.push(format!("--network={network}"));
            }
            w.extend(line_words(command));
            ("RUN", w)
        }
        Command::Cmd(l) => ("CMD", line_words(l)),
        Command::Entrypoint(l) => ("ENTRYPOINT", line_words(l)),
        Command::Label(p) => (
            "LABEL",
            p.iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect(),
        ),
        Command::Env(p) => (
            "ENV",
            p.iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect(),
        ),
        Command::Maintainer(m) => ("MAINTAINER", vec![m.clone()]),
        Command::Expose(p) => ("EXPOSE", p.clone()),
        Command::Add(s) => ("ADD", copy(s)),
        Command::Copy(s) => ("COPY", copy(s)),
        Command::Volume(v) => ("VOLUME", v.clone()),
        Command::User(u) => ("USER", vec![u.clone()]),
        Command::Workdir(w) => ("WORKDIR", vec![w.clone()]),
        Command::Arg(a) => (
            "ARG",
            a.iter()
                .map(|d| match &d.default {
                    Some(v) => format!("{}={v}", d.name),
                    None => d.name.clone(),
                })
                .collect(),
        ),
        Command::Onbuild(e) => ("ONBUILD", vec![e.clone()]),
        Command::StopSignal(s) => ("STOPSIGNAL", vec![s.clone()]),
        Command::Healthcheck(h) => ("HEALTHCHECK", h.test.clone()),
        Command::Shell(s) => ("SHELL", vec![serde_json::to_string(s).unwrap_or_default()]),
    }
}

/// A command line as written: the shell-form string, or the exec form as a JSON array.
fn line_words(l: &crate::dockerfile::check::CommandLine) -> Vec<String> {
    if l.prepend_shell {
        l.args.clone()
    } else {
        vec![serde_json::to_string(&l.args).unwrap_or_default()]
    }
}
