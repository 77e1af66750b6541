//! `wcbuild layer check|extract`: one layer blob on its own.

use crate::layer::windows::CheckReport;
use crate::layer::{self, ExtractError, ExtractOptions, ExtractSummary, ReadLimits};
use std::path::Path;

/// Why a layer command failed.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The file could not be opened.
    #[error("open `{path}`: {source}")]
    Open {
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The tar is malformed.
    #[error("`{path}`: {source}")]
    Tar {
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        source: crate::layer::tar::TarError,
    },
    /// Extraction refused or failed.
    #[error(transparent)]
    Extract(#[from] ExtractError),
}

fn open(path: &Path) -> Result<std::fs::File, LayerError> {
    std::fs::File::open(path).map_err(|source| LayerError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// Checks a layer blob against the Windows layer rules.
pub fn check(path: &Path) -> Result<CheckReport, LayerError> {
    let f = open(path)?;
    layer::check_windows_layer(std::io::BufReader::new(f), ReadLimits::default()).map_err(
        |source| LayerError::Tar {
            path: path.to_path_buf(),
            source,
        },
    )
}

/// Extracts a layer blob into a new or empty directory, safely.
pub fn extract(
    path: &Path,
    dir: &Path,
    max_ratio: Option<u64>,
) -> Result<ExtractSummary, LayerError> {
    let f = open(path)?;
    let mut opts = ExtractOptions::default();
    if let Some(r) = max_ratio {
        opts.limits.max_ratio = r;
    }
    Ok(layer::extract(f, dir, &opts)?)
}
