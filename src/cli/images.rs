//! `wcbuild images | inspect | tag | rmi | save | load | prune`: the store's images.

use super::{CliError, GlobalArgs};
use crate::ops::images::{self as ops, SaveFormat};
use crate::store::Store;
use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print JSON: one object per image
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image (`app:1.0`, `registry:5000/team/app@sha256:…`)
    pub reference: String,
    /// Print JSON (the default; kept for symmetry with other commands)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// An image in the store
    pub source: String,
    /// The new name
    pub target: String,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Image names to remove (their blobs go at the next `wcbuild prune`)
    #[arg(required = true)]
    pub references: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// An OCI image layout in a tar
    Oci,
    /// The `docker save` format that `docker load` reads
    Docker,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Images to save
    #[arg(required = true)]
    pub references: Vec<String>,
    /// The archive to write (`-` for standard output)
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Archive format
    #[arg(long, value_enum, default_value = "oci")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// An OCI layout tar, a `docker save` tar, or an OCI layout directory
    #[arg(short, long, value_name = "FILE")]
    pub input: PathBuf,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also drop the build cache (and the layers only it kept)
    #[arg(long)]
    pub cache: bool,
}

pub fn open_store(global: &GlobalArgs) -> Result<Store, CliError> {
    let root = global
        .root
        .clone()
        .unwrap_or_else(crate::store::default_root);
    Ok(Store::open(root)?)
}

fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", units[u])
    }
}

fn out_err(e: std::io::Error) -> CliError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        CliError::Quiet
    } else {
        CliError::Failed(e.into())
    }
}

pub fn images(global: &GlobalArgs, args: ImagesArgs) -> Result<ExitCode, CliError> {
    let store = open_store(global)?;
    let rows = ops::list(&store)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows).map_err(|e| out_err(e.into()))?;
        writeln!(out).map_err(out_err)?;
        return Ok(ExitCode::SUCCESS);
    }
    let width = rows
        .iter()
        .map(|r| r.reference.len())
        .max()
        .unwrap_or(9)
        .max(9);
    writeln!(
        out,
        "{:<width$}  {:<19}  {:>9}  {:>9}  PLATFORMS",
        "REFERENCE", "DIGEST", "SIZE", "PUSH"
    )
    .map_err(out_err)?;
    for r in rows {
        let short = r
            .digest
            .trim_start_matches("sha256:")
            .get(..12)
            .unwrap_or("")
            .to_string();
        writeln!(
            out,
            "{:<width$}  sha256:{short}  {:>9}  {:>9}  {}",
            r.reference,
            human(r.size),
            r.push.map(human).unwrap_or_else(|| "-".into()),
            r.platforms.join(", ")
        )
        .map_err(out_err)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(global: &GlobalArgs, args: InspectArgs) -> Result<ExitCode, CliError> {
    let store = open_store(global)?;
    let v = ops::inspect(&store, &args.reference)?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &v).map_err(|e| out_err(e.into()))?;
    writeln!(out).map_err(out_err)?;
    Ok(ExitCode::SUCCESS)
}

pub fn tag(global: &GlobalArgs, args: TagArgs) -> Result<ExitCode, CliError> {
    let store = open_store(global)?;
    let full = ops::tag(&store, &args.source, &args.target)?;
    eprintln!("tagged {full}");
    Ok(ExitCode::SUCCESS)
}

pub fn rmi(global: &GlobalArgs, args: RmiArgs) -> Result<ExitCode, CliError> {
    let store = open_store(global)?;
    for r in ops::remove(&store, &args.references)? {
        eprintln!("untagged {r}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn save(global: &GlobalArgs, args: SaveArgs) -> Result<ExitCode, CliError> {
    let store = open_store(global)?;
    let format = match args.format {
        Format::Oci => SaveFormat::Oci,
        Format::Docker => SaveFormat::Docker,
    };
    if args.output.as_os_str() == "-" {
        let out = std::io::BufWriter::new(std::io::stdout().lock());
        ops::save(&store, &args.references, format, out)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Write next to the target and rename, so a failed save leaves no partial archive.
    let dir = args
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(
        ".{}.wcbuild-partial-{}",
        args.output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| -> Result<(), CliError> {
        let f = std::fs::File::create(&tmp)
            .map_err(|e| anyhow::anyhow!("create `{}`: {e}", tmp.display()))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        ops::save(&store, &args.references, format, &mut w)?;
        let f = w
            .into_inner()
            .map_err(|e| anyhow::anyhow!("write `{}`: {e}", tmp.display()))?;
        f.sync_all()
            .map_err(|e| anyhow::anyhow!("fsync `{}`: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &args.output)
            .map_err(|e| anyhow::anyhow!("rename to `{}`: {e}", args.output.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    eprintln!(
        "saved {} image(s) to {}",
        args.references.len(),
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn load(global: &GlobalArgs, args: LoadArgs) -> Result<ExitCode, CliError> {
    let store = open_store(global)?;
    let loaded = ops::load(&store, &args.input)?;
    let mut out = std::io::stdout().lock();
    for l in loaded {
        match l.reference {
            Some(r) => writeln!(out, "loaded {r} {}", l.digest),
            None => writeln!(out, "loaded (untagged) {}", l.digest),
        }
        .map_err(out_err)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn prune(global: &GlobalArgs, args: PruneArgs) -> Result<ExitCode, CliError> {
    let store = open_store(global)?;
    let root = store.root().to_path_buf();
    let report = ops::prune_waiting(store, args.cache, || {
        eprintln!(
            "waiting for the other wcbuild processes using the store `{}` to finish",
            root.display()
        );
    })?;
    eprintln!(
        "removed {} blob(s) and {} stale partial file(s), {} freed",
        report.blobs_removed,
        report.ingest_removed,
        human(report.bytes_freed)
    );
    Ok(ExitCode::SUCCESS)
}
