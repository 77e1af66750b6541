//! `wcbuild layer check FILE` and `wcbuild layer extract FILE DIR`.

use super::CliError;
use crate::ops::layer as ops;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum LayerCommand {
    /// Check a layer blob (gzip, zstd or plain tar) against the Windows layer format rules;
    /// exit 1 when it breaks any
    Check(CheckArgs),
    /// Extract a layer blob (either format, any compression) into a new or empty directory,
    /// refusing any entry that would write outside it; exit 1 on a hostile entry
    Extract(ExtractArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The layer blob
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// The layer blob
    pub file: PathBuf,
    /// The directory to create (or an empty one)
    pub dir: PathBuf,
    /// Refuse to decompress more than this many bytes per compressed byte [default: 1000]
    #[arg(long, value_name = "RATIO")]
    pub max_ratio: Option<u64>,
}

pub fn run(cmd: LayerCommand) -> Result<ExitCode, CliError> {
    match cmd {
        LayerCommand::Check(a) => {
            let report = ops::check(&a.file)?;
            println!("{report}");
            Ok(if report.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        LayerCommand::Extract(a) => {
            let s = ops::extract(&a.file, &a.dir, a.max_ratio)?;
            eprintln!(
                "extracted {} entries ({} files, {} directories, {} links, {} bytes{}{}) into {}",
                s.entries,
                s.files,
                s.dirs,
                s.links,
                s.bytes,
                if s.windows {
                    "; Windows layer: Files/ is the root"
                } else {
                    ""
                },
                if s.skipped > 0 {
                    format!("; {} skipped", s.skipped)
                } else {
                    String::new()
                },
                a.dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
