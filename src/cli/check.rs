//! `wcbuild check [--repair] [--json]`: verifies the store and lists every defect (stdout:
//! one line each, or one JSON object); exit 1 when any defect is left.

use super::{CliError, GlobalArgs};
use crate::store::{CheckOptions, CheckReport};
use clap::Args;
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Remove what cannot be trusted (blobs whose bytes do not match their digest, tags of
    /// broken images, bad cache records, leftovers of killed processes); never a blob that
    /// verifies
    #[arg(long)]
    pub repair: bool,
    /// Print the report as one JSON object
    #[arg(long)]
    pub json: bool,
    /// Blobs hashed at once [default: the number of cores]
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}

pub fn run(global: &GlobalArgs, args: CheckArgs) -> Result<ExitCode, CliError> {
    if args.jobs == Some(0) {
        return Err(CliError::Usage("--jobs must be at least 1".into()));
    }
    let store = super::images::open_store(global)?;
    let root = store.root().to_path_buf();
    let mut opts = CheckOptions {
        repair: args.repair,
        ..CheckOptions::default()
    };
    if let Some(j) = args.jobs {
        opts.jobs = j;
    }
    let report = crate::ops::check::check(store, &opts, || {
        eprintln!(
            "waiting for the other wcbuild processes using the store `{}` to finish",
            root.display()
        );
    })?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let v = serde_json::json!({
            "store": root,
            "sound": report.sound(),
            "blobs": report.blobs,
            "bytes": report.bytes,
            "tags": report.tags,
            "records": report.records,
            "defects": report.defects,
        });
        writeln!(out, "{v}")
    } else {
        text(&mut out, &report)
    };
    if written.is_err() {
        return Err(CliError::Quiet);
    }
    let left = report.defects.iter().filter(|d| !d.repaired).count();
    let fixed = report.defects.len() - left;
    eprintln!(
        "checked {} blob(s) ({} bytes), {} tag(s), {} cache record(s) in `{}`: {}",
        report.blobs,
        report.bytes,
        report.tags,
        report.records,
        root.display(),
        match (left, fixed) {
            (0, 0) => "no defect".to_string(),
            (0, f) => format!("{f} defect(s), all repaired"),
            (l, 0) => format!("{l} defect(s)"),
            (l, f) => format!("{l} defect(s) left, {f} repaired"),
        }
    );
    Ok(if left == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn text(out: &mut impl Write, report: &CheckReport) -> std::io::Result<()> {
    for d in &report.defects {
        let kind = serde_json::to_value(d.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let fixed = if d.repaired { " (repaired)" } else { "" };
        writeln!(out, "{kind}: {}: {}{fixed}", d.path, d.message)?;
    }
    Ok(())
}
