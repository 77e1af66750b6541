//! `wcbuild dockerfile parse|check|expand`: the Dockerfile front end on its own.

use super::CliError;
use crate::dockerfile::{Instruction, LintOptions, go_quote};
use crate::image::Platform;
use crate::ops::dockerfile as ops;
use crate::plan::{PlanOptions, command_words, format_platform};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum DockerfileCommand {
    /// Print the instructions as parsed: directives applied, lines joined, heredocs read,
    /// nothing expanded
    Parse(ParseArgs),
    /// Validate every instruction, stage and flag and run BuildKit's lint rules, without
    /// building; exit 1 if anything is found
    Check(CheckArgs),
    /// Print each stage's instructions with ARG and ENV values substituted
    Expand(ExpandArgs),
}

#[derive(Debug, Args)]
pub struct FileArgs {
    /// The Dockerfile (`-` reads standard input) [default: CONTEXT/Dockerfile]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The build context, where the default Dockerfile is looked for
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,
}

#[derive(Debug, Args)]
pub struct ParseArgs {
    #[command(flatten)]
    pub file: FileArgs,
    /// Print JSON: {"directives": {...}, "instructions": [...]}
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub file: FileArgs,
    /// Set a build argument (`K=V`, or `K` to take the value from the environment)
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// The target platform (`linux/amd64`, `windows/amd64:10.0.20348`, `windows/amd64:ltsc2022`)
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// The stage to build
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// `text` (errors as file:line:column, lint findings as BuildKit prints them) or `json`
    /// (the result of `docker buildx build --call=check,format=json`, on stdout)
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct ExpandArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: DockerfileCommand) -> Result<ExitCode, CliError> {
    match cmd {
        DockerfileCommand::Parse(a) => parse(a),
        DockerfileCommand::Check(a) => check(a),
        DockerfileCommand::Expand(a) => expand(a),
    }
}

fn read(args: &FileArgs) -> Result<ops::Source, CliError> {
    Ok(ops::read(args.file.as_deref(), &args.context)?)
}

fn parse(args: ParseArgs) -> Result<ExitCode, CliError> {
    let src = read(&args.file)?;
    let df = match ops::parse(&src) {
        Ok(df) => df,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &df)
            .map_err(std::io::Error::from)
            .and_then(|_| writeln!(out))
    } else {
        let mut r = writeln!(
            out,
            "# escape={}{}{}",
            df.directives.escape,
            df.directives
                .syntax
                .as_ref()
                .map(|s| format!(" syntax={s}"))
                .unwrap_or_default(),
            df.directives
                .check
                .as_ref()
                .map(|s| format!(" check={s}"))
                .unwrap_or_default()
        );
        for inst in &df.instructions {
            if r.is_ok() {
                r = writeln!(out, "{:>4}  ({})", inst.line, dump(inst));
            }
        }
        r
    };
    finish_output(written)?;
    for w in &df.warnings {
        eprintln!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A broken pipe (`| head`) is not an error.
fn finish_output(r: std::io::Result<()>) -> Result<(), CliError> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// One instruction in BuildKit's parse-tree dump notation: `run ["--mount=…"] "make"`.
pub fn dump(inst: &Instruction) -> String {
    let mut s = inst.cmd.clone();
    if !inst.flags.is_empty() {
        let flags: Vec<String> = inst.flags.iter().map(|f| go_quote(f)).collect();
        s.push_str(&format!(" [{}]", flags.join(" ")));
    }
    if let Some(inner) = &inst.onbuild {
        s.push_str(&format!(" ({})", dump(inner)));
        return s;
    }
    if matches!(inst.cmd.as_str(), "env" | "label") {
        let sep = if inst.legacy_key_value { "" } else { "=" };
        for (k, v) in inst.pairs() {
            s.push_str(&format!(
                " {} {} {}",
                go_quote(k),
                go_quote(v),
                go_quote(sep)
            ));
        }
        return s;
    }
    for a in &inst.args {
        s.push(' ');
        s.push_str(&go_quote(a));
    }
    s
}

fn plan_options(args: &PlanArgs) -> Result<PlanOptions, CliError> {
    let build_args = super::build_args(&args.build_args);
    let host = Platform::host();
    let target_platform = match &args.platform {
        Some(p) => Platform::parse(p)
            .map_err(|e| CliError::Usage(format!("invalid --platform `{p}`: {e}")))?,
        None => host.clone(),
    };
    Ok(PlanOptions {
        build_args,
        target_platform,
        build_platform: host,
        target: args.target.clone(),
        images: Default::default(),
    })
}

fn check(args: CheckArgs) -> Result<ExitCode, CliError> {
    let opts = plan_options(&args.plan)?;
    let src = read(&args.plan.file)?;
    let json = args.format == "json";
    let ignore = match ops::read_ignore(&src, &args.plan.file.context) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let lint = LintOptions {
        ignore,
        all_stages: opts.target.is_none(),
        explicit_platform: args.plan.platform.is_some(),
        ..LintOptions::default()
    };
    let report = match ops::check_with(&src, &opts, &lint) {
        Ok(r) => r,
        Err(e) => {
            if json {
                let out = ops::render_parse_error_json(&e, &src);
                finish_output(writeln!(std::io::stdout().lock(), "{out}"))?;
            }
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    for d in &report.diagnostics {
        eprintln!("{d}");
    }
    if json {
        let out = ops::render_lints_json(&report, &src);
        finish_output(writeln!(std::io::stdout().lock(), "{out}"))?;
    } else {
        eprint!("{}", ops::render_lints_text(&report, &src));
        if let Some(e) = report.lint_error() {
            eprintln!("error: {e}");
        }
        let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
        eprintln!(
            "{}: {}, {} ({}, {})",
            src.name,
            plural(report.errors(), "error"),
            plural(report.warnings(), "warning"),
            plural(report.instructions, "instruction"),
            plural(report.stages, "stage"),
        );
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn expand(args: ExpandArgs) -> Result<ExitCode, CliError> {
    let opts = plan_options(&args.plan)?;
    let src = read(&args.plan.file)?;
    let ops::Expanded {
        dockerfile: df,
        plan,
        diagnostics,
        undefined,
    } = match ops::expand_full(&src, &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    for d in &diagnostics {
        eprintln!("{d}");
    }
    // Variables that expanded from nothing are shown, not silently blanked.
    for w in &undefined {
        eprintln!(
            "warning: {}:{}: {}: {}",
            src.name,
            w.line(),
            w.rule.name,
            w.detail
        );
    }
    let Some(plan) = plan else {
        return Ok(ExitCode::from(1));
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &ops::expand_json(&df, &plan))
            .map_err(std::io::Error::from)
            .and_then(|_| writeln!(out))
    } else {
        let mut r = Ok(());
        for s in &plan.stages {
            let name = s
                .name
                .clone()
                .map(|n| format!(" AS {n}"))
                .unwrap_or_default();
            r = r.and_then(|_| {
                writeln!(
                    out,
                    "# stage {}: FROM {}{name} ({}){}",
                    s.index,
                    s.base,
                    format_platform(&s.platform, true),
                    if s.index == plan.target {
                        " [target]"
                    } else {
                        ""
                    }
                )
            });
            for st in &s.steps {
                let (n, words) = command_words(&st.command);
                let line = df.instructions[st.instruction].line;
                r = r.and_then(|_| writeln!(out, "{line:>4}  {n} {}", words.join(" ")));
            }
        }
        r
    };
    finish_output(written)?;
    if !plan.unused_build_args.is_empty() {
        eprintln!(
            "warning: build arguments given but not declared with ARG: {}",
            plan.unused_build_args.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
