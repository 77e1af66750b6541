//! Reading, parsing, checking, linting and expanding a Dockerfile without building it: the
//! I/O around the pure front end (the Dockerfile, its `.dockerignore`) and the renderers
//! `wcbuild dockerfile check` and a build's `--check` print.

use crate::dockerfile::check::Command;
use crate::dockerfile::ignore::{self, IgnoreFile};
use crate::dockerfile::lint::{self, LintOptions, LintWarning};
use crate::dockerfile::{self, Diagnostic, Dockerfile, ParseError, Severity};
use crate::image::Reference;
use crate::plan::{self, Plan, PlanOptions, command_words, format_platform};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A Dockerfile's bytes and the name to call it by in messages.
#[derive(Debug, Clone)]
pub struct Source {
    /// `Dockerfile`, `build/Dockerfile.win`, or `-` for standard input.
    pub name: String,
    /// Where it was read from (`None` for standard input).
    pub path: Option<PathBuf>,
    /// The content.
    pub bytes: Vec<u8>,
}

/// Reading the Dockerfile failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("cannot read Dockerfile `{path}`: {source}")]
    Io {
        /// The path tried.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Standard input could not be read.
    #[error("cannot read the Dockerfile from standard input: {0}")]
    Stdin(std::io::Error),
}

/// Reads `file` (`-` for standard input), or `Dockerfile` in `context` when `file` is `None`
/// (falling back to `dockerfile`, as the Docker CLI does).
pub fn read(file: Option<&Path>, context: &Path) -> Result<Source, ReadError> {
    match file {
        Some(p) if p == Path::new("-") => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(ReadError::Stdin)?;
            Ok(Source {
                name: "-".into(),
                path: None,
                bytes,
            })
        }
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|source| ReadError::Io {
                path: p.to_path_buf(),
                source,
            })?;
            Ok(Source {
                name: p.display().to_string(),
                path: Some(p.to_path_buf()),
                bytes,
            })
        }
        None => {
            let primary = context.join("Dockerfile");
            let path = if !primary.exists() && context.join("dockerfile").exists() {
                context.join("dockerfile")
            } else {
                primary
            };
            read(Some(&path), context)
        }
    }
}

/// Parses a Dockerfile (directives, lines, heredocs, arguments; no expansion).
pub fn parse(src: &Source) -> Result<Dockerfile, ParseError> {
    dockerfile::parse(&src.bytes, &src.name)
}

/// Everything `check` found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Errors, and wcbuild's own warnings (flags BuildKit ignores, …), in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// BuildKit's lint findings, in the order BuildKit reports them.
    pub lints: Vec<LintWarning>,
    /// Stages found.
    pub stages: usize,
    /// Instructions found.
    pub instructions: usize,
}

impl CheckReport {
    /// Number of errors: error diagnostics, and lint findings under `# check=error=true`.
    pub fn errors(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
            + self
                .lints
                .iter()
                .filter(|w| w.severity == Severity::Error)
                .count()
    }

    /// Number of warnings (diagnostics and lint findings).
    pub fn warnings(&self) -> usize {
        self.diagnostics.len() + self.lints.len() - self.errors()
    }

    /// Nothing found at all.
    pub fn is_clean(&self) -> bool {
        self.diagnostics.is_empty() && self.lints.is_empty()
    }

    /// BuildKit's `lint violation found for rules: …` when `error=true` made findings errors.
    pub fn lint_error(&self) -> Option<String> {
        lint::lint_error(&self.lints)
    }

    /// The first error, for the JSON result's `buildError`.
    pub fn build_error(&self) -> Option<lint::BuildError> {
        let d = self
            .diagnostics
            .iter()
            .find(|d| d.severity == Severity::Error);
        match d {
            Some(d) => Some(lint::BuildError {
                message: d.error.message.clone(),
                ranges: (d.error.location.line > 0)
                    .then(|| lint::Range::line(d.error.location.line))
                    .into_iter()
                    .collect(),
            }),
            None => self.lint_error().map(|message| lint::BuildError {
                message,
                ranges: Vec::new(),
            }),
        }
    }
}

/// Reading the `.dockerignore` for the linter failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot use `{path}`: {message}")]
pub struct IgnoreFileError {
    /// The ignore file.
    pub path: PathBuf,
    /// Why.
    pub message: String,
}

/// The ignore file BuildKit would use for this Dockerfile and context
/// (`<Dockerfile>.dockerignore`, else `CONTEXT/.dockerignore`), parsed; `None` when there is
/// none.
pub fn read_ignore(src: &Source, context: &Path) -> Result<Option<IgnoreFile>, IgnoreFileError> {
    for candidate in ignore::ignore_file_candidates(context, src.path.as_deref()) {
        match std::fs::read(&candidate) {
            Ok(bytes) => {
                return IgnoreFile::parse(&bytes)
                    .map(Some)
                    .map_err(|e| IgnoreFileError {
                        path: candidate.clone(),
                        message: e.to_string(),
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(IgnoreFileError {
                    path: candidate.clone(),
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(None)
}

/// Validates a Dockerfile without building and runs the linter over every stage (the
/// stages `--target` needs when one is given), without a `.dockerignore`: see [`check_with`].
pub fn check(src: &Source, opts: &PlanOptions) -> Result<CheckReport, ParseError> {
    let lint = LintOptions {
        all_stages: opts.target.is_none(),
        ..LintOptions::default()
    };
    check_with(src, opts, &lint)
}

/// Validates a Dockerfile without building: every instruction, stage names, `--from`
/// targets, ARG expansion in `FROM`, platforms, base references, `--target`; and BuildKit's
/// lint rules with `lint`'s `.dockerignore` and base-image facts.
pub fn check_with(
    src: &Source,
    opts: &PlanOptions,
    lint: &LintOptions,
) -> Result<CheckReport, ParseError> {
    let df = parse(src)?;
    let checked = dockerfile::check(&df);
    let mut diagnostics: Vec<Diagnostic> = checked.diagnostics.clone();
    let planned = plan::plan_and_lint(&df, &checked, opts, lint);
    let mut more = planned.diagnostics;
    if let Some(plan) = &planned.plan {
        for stage in &plan.stages {
            if stage.base_stage.is_some() || stage.base.eq_ignore_ascii_case("scratch") {
                continue;
            }
            if let Err(e) = Reference::parse(&stage.base) {
                let info = &checked.stages[stage.index];
                let inst = &df.instructions[info.instruction];
                more.push(Diagnostic {
                    severity: Severity::Error,
                    error: ParseError {
                        location: dockerfile::check::locate(&df, inst, Some(&info.base)),
                        message: format!("invalid base image: {e}"),
                    },
                });
            }
        }
    }
    for d in more {
        if !diagnostics.contains(&d) {
            diagnostics.push(d);
        }
    }
    diagnostics.sort_by_key(|d| (d.error.location.line, d.error.location.column));
    Ok(CheckReport {
        diagnostics,
        lints: planned.lints,
        stages: checked.stages.len(),
        instructions: df.instructions.len(),
    })
}

/// The text `wcbuild dockerfile check` prints for lint findings: BuildKit's blocks
/// (`WARNING: Rule - URL`, the detail, the quoted lines), ordered by line.
pub fn render_lints_text(report: &CheckReport, src: &Source) -> String {
    lint::render_text(&report.lints, &src.name, &src.bytes)
}

/// The JSON result of `docker buildx build --call=check,format=json` for this report.
pub fn render_lints_json(report: &CheckReport, src: &Source) -> String {
    lint::render_json(
        &report.lints,
        &src.name,
        &src.bytes,
        report.build_error().as_ref(),
    )
}

/// The JSON result for a Dockerfile that does not parse: no findings, the error.
pub fn render_parse_error_json(e: &ParseError, src: &Source) -> String {
    let err = lint::BuildError {
        message: e.message.clone(),
        ranges: (e.location.line > 0)
            .then(|| lint::Range::line(e.location.line))
            .into_iter()
            .collect(),
    };
    lint::render_json(&[], &src.name, &src.bytes, Some(&err))
}

/// What `expand` found.
#[derive(Debug, Clone)]
pub struct Expanded {
    /// The parsed file.
    pub dockerfile: Dockerfile,
    /// The plan; `None` when there is an error.
    pub plan: Option<Plan>,
    /// Errors and warnings.
    pub diagnostics: Vec<Diagnostic>,
    /// `UndefinedVar` findings: variables that expanded from nothing.
    pub undefined: Vec<LintWarning>,
}

/// Parses, checks and expands: what each stage's instructions mean with these settings.
pub fn expand(
    src: &Source,
    opts: &PlanOptions,
) -> Result<(Dockerfile, Option<Plan>, Vec<Diagnostic>), ParseError> {
    let e = expand_full(src, opts)?;
    Ok((e.dockerfile, e.plan, e.diagnostics))
}

/// [`expand`], with the `UndefinedVar` findings of every stage.
pub fn expand_full(src: &Source, opts: &PlanOptions) -> Result<Expanded, ParseError> {
    let df = parse(src)?;
    let checked = dockerfile::check(&df);
    let mut diagnostics = checked.diagnostics.clone();
    let lint = LintOptions {
        all_stages: true,
        ..LintOptions::default()
    };
    let planned = plan::plan_and_lint(&df, &checked, opts, &lint);
    diagnostics.extend(planned.diagnostics);
    let plan = if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        None
    } else {
        planned.plan
    };
    let undefined = planned
        .lints
        .into_iter()
        .filter(|w| w.rule.name == lint::UNDEFINED_VAR.name)
        .collect();
    Ok(Expanded {
        dockerfile: df,
        plan,
        diagnostics,
        undefined,
    })
}

/// The expanded plan as JSON: global ARGs, and per stage its base, platform, steps (line,
/// instruction, expanded words) and final ENV.
pub fn expand_json(df: &Dockerfile, plan: &Plan) -> serde_json::Value {
    let stages: Vec<_> = plan
        .stages
        .iter()
        .map(|s| {
            let steps: Vec<_> = s
                .steps
                .iter()
                .map(|st| {
                    let (name, words) = command_words(&st.command);
                    let mut step = json!({
                        "line": df.instructions[st.instruction].line,
                        "cmd": name.to_lowercase(),
                        "args": words,
                    });
                    if !st.unset.is_empty() {
                        // Variables that expanded from nothing (not set when used).
                        step["unset"] = json!(st.unset);
                    }
                    if let Command::Copy(spec) | Command::Add(spec) = &st.command
                        && !spec.inline.is_empty()
                    {
                        step["heredocs"] = spec
                            .inline
                            .iter()
                            .map(|d| json!({"name": d.name, "content": d.content}))
                            .collect();
                    }
                    step
                })
                .collect();
            json!({
                "index": s.index,
                "name": s.name,
                "base": s.base,
                "platform": format_platform(&s.platform, true),
                "steps": steps,
                "env": s.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            })
        })
        .collect();
    let global: BTreeMap<_, _> = plan.global.vars().iter().cloned().collect();
    json!({
        "global": global,
        "stages": stages,
        "target": plan.target,
        "unused_build_args": plan.unused_build_args,
    })
}
