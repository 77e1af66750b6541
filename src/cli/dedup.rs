//! `wcbuild dedup`: what a set of images shares and wastes, as a table, JSON or an HTML page;
//! with CI gates that exit 3 when a limit is broken.

use super::images::open_store;
use super::{CliError, GlobalArgs};
use crate::ops::dedup::{self as ops, DedupOptions, DedupReporter, Source};
use crate::report::{self, Gates};
use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The exit code when a CI gate fails.
pub const GATE_FAILED: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// A summary and the top offenders, for people
    Table,
    /// The whole report as JSON (`"schema": 1`, sizes in bytes)
    Json,
    /// One self-contained HTML page with charts and sortable tables (needs -o)
    Html,
}

#[derive(Debug, Args)]
pub struct DedupArgs {
    /// Images in the store [default: every tagged image, when no --from is given]
    pub references: Vec<String>,
    /// Every tagged image in the store, as well as the --from sources
    #[arg(long)]
    pub all: bool,
    /// More images: `oci-layout:DIR`, `docker-archive:FILE` or `registry:REF` (repeatable;
    /// a registry's layers are streamed once and not stored)
    #[arg(long, value_name = "SOURCE")]
    pub from: Vec<String>,
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
    /// Write the report to FILE instead of standard output
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// How many offenders and duplicate groups to list
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,
    /// Layers indexed at once
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub threads: usize,
    /// Read every layer again instead of using the cached layer indexes
    #[arg(long)]
    pub no_cache: bool,
    /// Gate: fail (exit 3) when an image wastes more than BYTES
    #[arg(long, value_name = "BYTES")]
    pub max_wasted_bytes: Option<u64>,
    /// Gate: fail (exit 3) when an image's wasted ÷ file bytes is above RATIO (0–1)
    #[arg(long, value_name = "RATIO")]
    pub max_wasted_ratio: Option<f64>,
    /// Gate: fail (exit 3) when an image's efficiency is below RATIO (0–1)
    #[arg(long, value_name = "RATIO")]
    pub min_efficiency: Option<f64>,
    /// Gate: fail (exit 3) when the set's compressed dedup ratio is below RATIO
    #[arg(long, value_name = "RATIO")]
    pub min_dedup_ratio: Option<f64>,
    #[command(flatten)]
    pub registry: super::registry::RegistryArgs,
}

fn ratio_arg(name: &str, v: Option<f64>, max: Option<f64>) -> Result<(), CliError> {
    if let Some(v) = v {
        let ok = v.is_finite() && v >= 0.0 && max.is_none_or(|m| v <= m);
        if !ok {
            let range = match max {
                Some(m) => format!("between 0 and {m}"),
                None => "0 or more".to_string(),
            };
            return Err(CliError::Usage(format!(
                "`{name} {v}`: the value must be {range}"
            )));
        }
    }
    Ok(())
}

/// Checks the arguments without touching anything; returns the sources and gates.
fn validate(args: &DedupArgs) -> Result<(Vec<Source>, Gates), CliError> {
    let mut sources = Vec::new();
    for f in &args.from {
        sources.push(Source::parse(f).map_err(CliError::Usage)?);
    }
    if !args.references.is_empty() {
        if args.all {
            return Err(CliError::Usage(
                "give image names or --all, not both".into(),
            ));
        }
        sources.insert(0, Source::Store(args.references.clone()));
    } else if args.all || sources.is_empty() {
        sources.insert(0, Source::Store(Vec::new()));
    }
    if args.format == ReportFormat::Html && args.output.is_none() {
        return Err(CliError::Usage(
            "`--format html` writes a file: give it with `-o report.html`".into(),
        ));
    }
    if args.top == 0 {
        return Err(CliError::Usage("`--top` must be at least 1".into()));
    }
    ratio_arg("--max-wasted-ratio", args.max_wasted_ratio, Some(1.0))?;
    ratio_arg("--min-efficiency", args.min_efficiency, Some(1.0))?;
    ratio_arg("--min-dedup-ratio", args.min_dedup_ratio, None)?;
    let gates = Gates {
        max_wasted_bytes: args.max_wasted_bytes,
        max_wasted_ratio: args.max_wasted_ratio,
        min_efficiency: args.min_efficiency,
        min_dedup_ratio: args.min_dedup_ratio,
    };
    Ok((sources, gates))
}

fn render(format: ReportFormat, r: &report::Report, out: &mut impl Write) -> std::io::Result<()> {
    match format {
        ReportFormat::Table => report::table::render(r, out),
        ReportFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, r).map_err(std::io::Error::other)?;
            writeln!(out)
        }
        ReportFormat::Html => report::html::render(r, out),
    }
}

/// A progress bar of the layer bytes read, drawn on stderr when it is a terminal.
struct BarReporter {
    bar: Option<indicatif::ProgressBar>,
}

impl BarReporter {
    fn new() -> Arc<BarReporter> {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::with_draw_target(
                Some(0),
                indicatif::ProgressDrawTarget::stderr_with_hz(10),
            );
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "indexing {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        Arc::new(BarReporter { bar })
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl DedupReporter for BarReporter {
    fn start(&self, layers: u64, bytes: u64) {
        if let Some(b) = &self.bar {
            b.set_length(bytes);
            b.set_message(format!("{layers} layer(s)"));
        }
    }
    fn read(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }
}

pub fn run(global: &GlobalArgs, args: DedupArgs) -> Result<ExitCode, CliError> {
    let (sources, gates) = validate(&args)?;
    let store = open_store(global)?;
    let options = DedupOptions {
        top: args.top,
        threads: args.threads.max(1),
        cache: !args.no_cache,
        registry: args.registry.options(),
        ..DedupOptions::default()
    };
    let bar = BarReporter::new();
    let outcome = ops::dedup_with(&store, &sources, &options, bar.clone());
    bar.finish();
    let outcome = outcome?;
    eprintln!(
        "indexed {} layer(s) ({} read, {} uncompressed), {} from the cache",
        outcome.layers_read,
        report::human_bytes(outcome.bytes_read),
        report::human_bytes(outcome.tar_bytes_read),
        outcome.layers_cached
    );
    match &args.output {
        Some(path) if path.as_os_str() != "-" => {
            let mut buf = Vec::new();
            render(args.format, &outcome.report, &mut buf)?;
            std::fs::write(path, &buf)
                .map_err(|e| anyhow::anyhow!("write `{}`: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        _ => {
            let mut out = std::io::stdout().lock();
            render(args.format, &outcome.report, &mut out).map_err(|e| {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    CliError::Quiet
                } else {
                    CliError::Failed(e.into())
                }
            })?;
        }
    }
    let failures = report::gates::check(&outcome.report, &gates);
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for f in &failures {
        eprintln!("gate failed: {f}");
    }
    Ok(ExitCode::from(GATE_FAILED))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> DedupArgs {
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: DedupArgs,
        }
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap()
            .a
    }

    #[test]
    fn arguments_are_checked_before_acting() {
        let (s, _) = validate(&parse(&[])).unwrap();
        assert_eq!(s, vec![Source::Store(vec![])]);
        let (s, _) = validate(&parse(&["--from", "oci-layout:/x"])).unwrap();
        assert_eq!(s, vec![Source::OciLayout("/x".into())]);
        let (s, _) = validate(&parse(&["--all", "--from", "oci-layout:/x"])).unwrap();
        assert_eq!(s.len(), 2);
        let (s, _) = validate(&parse(&["a:1", "--from", "docker-archive:/y.tar"])).unwrap();
        assert_eq!(s[0], Source::Store(vec!["a:1".into()]));
        for bad in [
            &["a", "--all"][..],
            &["--format", "html"],
            &["--max-wasted-ratio", "1.5"],
            &["--min-efficiency=-1"],
            &["--from", "registry:a//b"],
            &["--top", "0"],
        ] {
            assert!(
                matches!(validate(&parse(bad)), Err(CliError::Usage(_))),
                "{bad:?}"
            );
        }
    }
}
