//! Reading, parsing, checking and expanding a Dockerfile without building it.

use crate::dockerfile::check::Command;
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
    /// Problems in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// Stages found.
    pub stages: usize,
    /// Instructions found.
    pub instructions: usize,
}

impl CheckReport {
    /// Number of errors (as opposed to warnings).
    pub fn errors(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}

/// Validates a Dockerfile without building: every instruction, stage names, `--from`
/// targets, ARG expansion in `FROM`, platforms, base references, `--target`.
pub fn check(src: &Source, opts: &PlanOptions) -> Result<CheckReport, ParseError> {
    let df = parse(src)?;
    let checked = dockerfile::check(&df);
    let mut diagnostics: Vec<Diagnostic> = df
        .warnings
        .iter()
        .map(|w| Diagnostic {
            severity: Severity::Warning,
            error: w.clone(),
        })
        .collect();
    diagnostics.extend(checked.diagnostics.iter().cloned());
    let (plan, mut more) = plan::plan(&df, &checked, opts);
    if let Some(plan) = &plan {
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
        stages: checked.stages.len(),
        instructions: df.instructions.len(),
    })
}

/// Parses, checks and expands: what each stage's instructions mean with these settings.
pub fn expand(
    src: &Source,
    opts: &PlanOptions,
) -> Result<(Dockerfile, Option<Plan>, Vec<Diagnostic>), ParseError> {
    let df = parse(src)?;
    let checked = dockerfile::check(&df);
    let mut diagnostics = checked.diagnostics.clone();
    let (plan, more) = plan::plan(&df, &checked, opts);
    diagnostics.extend(more);
    let plan = if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        None
    } else {
        plan
    };
    Ok((df, plan, diagnostics))
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
