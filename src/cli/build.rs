//! `wcbuild build [OPTIONS] CONTEXT` (also `wcbuild [OPTIONS] CONTEXT`).

use super::{CliError, GlobalArgs};
use crate::image::Platform;
use crate::layer::Compression;
use crate::ops::build::{self as ops, BuildError, BuildSettings};
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LayerCompression {
    /// gzip level 6 (what every registry and runtime reads)
    Gzip,
    /// zstd level 3
    Zstd,
    /// plain tar
    Uncompressed,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The build context directory
    pub context: PathBuf,
    /// Name the image (repeatable): `app:1.0`, `registry:5000/team/app:tag`
    #[arg(short, long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,
    /// The Dockerfile (`-` for standard input) [default: CONTEXT/Dockerfile]
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A build argument (`K=V`, or `K` to take it from the environment)
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// The stage to build
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// The target platform (`windows/amd64:ltsc2022`, `linux/amd64`)
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Layer compression
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: LayerCompression,
    /// Clamp file times and set the image's times to this Unix time (reproducible builds)
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECONDS")]
    pub source_date_epoch: Option<i64>,
    /// Add a label to the image (repeatable)
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Write the image digest to this file
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Print only the image digest
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(global: &GlobalArgs, args: BuildArgs) -> Result<ExitCode, CliError> {
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    build_args.insert(a.clone(), v);
                }
            }
        }
    }
    let platform = match &args.platform {
        Some(p) if p.contains(',') => {
            return Err(CliError::Usage(format!(
                "--platform `{p}`: building several platforms at once is not supported yet in this version; build them one at a time"
            )));
        }
        Some(p) => {
            Some(Platform::parse(p).map_err(|e| CliError::Usage(format!("--platform: {e}")))?)
        }
        None => None,
    };
    let mut labels = Vec::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--label `{l}`: expected K=V")))?;
        labels.push((k.to_string(), v.to_string()));
    }
    for t in &args.tags {
        crate::image::Reference::parse(t).map_err(|e| CliError::Usage(format!("-t: {e}")))?;
    }
    let settings = BuildSettings {
        context: args.context.clone(),
        file: args.file.clone(),
        tags: args.tags.clone(),
        build_args,
        target: args.target.clone(),
        platform,
        compression: match args.compression {
            LayerCompression::Gzip => Compression::Gzip(6),
            LayerCompression::Zstd => Compression::Zstd(3),
            LayerCompression::Uncompressed => Compression::None,
        },
        source_date_epoch: args.source_date_epoch,
        labels,
    };
    let store = super::images::open_store(global)?;
    match ops::build(&store, &settings) {
        Ok(out) => {
            if let Some(f) = &args.iidfile {
                std::fs::write(f, &out.digest)
                    .map_err(|e| anyhow::anyhow!("write `{}`: {e}", f.display()))?;
            }
            if !args.quiet {
                for t in &out.tags {
                    eprintln!("tagged {t}");
                }
                eprintln!("built {} ({})", out.digest, out.platform);
            }
            println!("{}", out.digest);
            Ok(ExitCode::SUCCESS)
        }
        Err(BuildError::Check(diags)) => {
            for d in diags {
                eprintln!("{d}");
            }
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(CliError::Failed(e.into())),
    }
}
