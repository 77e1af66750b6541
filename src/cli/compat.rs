//! `wcbuild compat`: can this Windows image run on this host (or the one described), under
//! which isolation, and why not otherwise.

use super::images::open_store;
use super::{CliError, GlobalArgs};
use crate::image::compat::describe;
use crate::image::{Sku, WindowsVersion};
use crate::ops::compat::{self as ops, CompatError, CompatReport};
use clap::{ArgGroup, Args, ValueEnum};
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SkuArg {
    /// Windows Server (Docker's default isolation there: process)
    Server,
    /// Windows 10 or 11 (Docker's default isolation there: Hyper-V)
    Client,
}

/// Exit codes: 0 when some isolation runs the image, 1 when none does, 2 for usage errors
/// (among them: no Windows host to answer for).
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("image").required(true).args(["reference", "image_os_version"])))]
pub struct CompatArgs {
    /// An image or multi-version index in the store (`wcbuild images`); it is not pulled
    pub reference: Option<String>,
    /// Answer for this image os.version instead of an image (`10.0.20348.2227`)
    #[arg(long, value_name = "10.0.B.R")]
    pub image_os_version: Option<String>,
    /// The Windows host to answer for [default: this host, which must then be Windows]
    #[arg(long, value_name = "10.0.B.R")]
    pub host_version: Option<String>,
    /// The host's SKU [default: this host's, or server for a described host]
    #[arg(long, value_enum, value_name = "SKU")]
    pub host_sku: Option<SkuArg>,
    /// Print JSON: {"image_os_version", "host_version", "host_sku", "process": {"allowed",
    /// "reason"}, "hyperv": {…}, "auto"} (with "reference", "entry" and "entries" for an image)
    #[arg(long)]
    pub json: bool,
}

fn fail(e: CompatError) -> CliError {
    if e.is_usage() {
        CliError::Usage(e.to_string())
    } else {
        CliError::Failed(e.into())
    }
}

fn out_err(e: std::io::Error) -> CliError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        CliError::Quiet
    } else {
        CliError::Failed(e.into())
    }
}

pub fn run(global: &GlobalArgs, args: CompatArgs) -> Result<ExitCode, CliError> {
    let sku = args.host_sku.map(|s| match s {
        SkuArg::Server => Sku::Server,
        SkuArg::Client => Sku::Client,
    });
    let (host, host_version) =
        ops::resolve_host(args.host_version.as_deref(), sku).map_err(fail)?;
    let report = match (&args.reference, &args.image_os_version) {
        (_, Some(v)) => ops::check_version(&host, &host_version, v).map_err(fail)?,
        (Some(r), None) => {
            let store = open_store(global)?;
            ops::check_reference(&store, &host, &host_version, r).map_err(fail)?
        }
        (None, None) => unreachable!("clap requires a reference or --image-os-version"),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).map_err(|e| out_err(e.into()))?;
        writeln!(out).map_err(out_err)?;
    } else {
        write_text(&mut out, &report).map_err(out_err)?;
    }
    drop(out);
    if report.runs() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("error: {}", report.auto_reason);
    Ok(ExitCode::from(1))
}

fn yes_no(allowed: bool) -> &'static str {
    if allowed { "yes" } else { "no" }
}

fn named(version: &str, sku: Option<Sku>) -> String {
    match WindowsVersion::parse(version) {
        Some(v) => {
            let d = describe(v, sku);
            // Keep the version as written (10.0.26100 stays without a revision).
            match d.split_once(' ') {
                Some((_, name)) => format!("{version} {name}"),
                None => version.to_string(),
            }
        }
        None => version.to_string(),
    }
}

fn write_text(out: &mut impl Write, r: &CompatReport) -> std::io::Result<()> {
    let sku = if r.host_sku == "client" {
        Sku::Client
    } else {
        Sku::Server
    };
    if let Some(reference) = &r.reference {
        writeln!(out, "image:    {reference}")?;
        if let Some(e) = &r.entry {
            let note = match (&r.entries, r.no_runnable_entry) {
                (None, _) => "",
                (Some(_), false) => " (the entry this host pulls)",
                (Some(_), true) => " (the newest entry; this host runs none)",
            };
            writeln!(out, "entry:    {} {}{note}", e.platform, e.digest)?;
        }
    }
    writeln!(out, "os:       {}", named(&r.image_os_version, None))?;
    writeln!(
        out,
        "host:     {}, {}",
        named(&r.host_version, Some(sku)),
        r.host_sku
    )?;
    writeln!(
        out,
        "process:  {}: {}",
        yes_no(r.process.allowed),
        r.process.reason
    )?;
    writeln!(
        out,
        "hyperv:   {}: {}",
        yes_no(r.hyperv.allowed),
        r.hyperv.reason
    )?;
    match r.auto {
        Some(a) => writeln!(out, "auto:     {a}: {}", r.auto_reason)?,
        None => writeln!(out, "auto:     none")?,
    }
    if let Some(entries) = &r.entries {
        writeln!(out, "entries:")?;
        for e in entries {
            writeln!(
                out,
                "  {} {:<32} process {:<3}  hyperv {:<3}  auto {:<7}  {}",
                if e.chosen { "*" } else { " " },
                e.platform,
                yes_no(e.process),
                yes_no(e.hyperv),
                e.auto.unwrap_or("none"),
                e.digest
            )?;
        }
    }
    Ok(())
}
