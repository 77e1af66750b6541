//! CI gates: limits a report must keep (`--max-wasted-bytes`, `--max-wasted-ratio`,
//! `--min-efficiency`, `--min-dedup-ratio`). Each failure names the image (or the set) and the
//! figure, so a CI log says what to fix.

use super::analysis::Report;
use std::fmt;

/// The limits; `None` means not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gates {
    /// Largest `wasted_bytes` allowed per image.
    pub max_wasted_bytes: Option<u64>,
    /// Largest `wasted_ratio` allowed per image.
    pub max_wasted_ratio: Option<f64>,
    /// Smallest `efficiency` allowed per image.
    pub min_efficiency: Option<f64>,
    /// Smallest `dedup_ratio` (compressed) allowed for the set.
    pub min_dedup_ratio: Option<f64>,
}

impl Gates {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Gates::default()
    }
}

/// One limit a report breaks.
#[derive(Debug, Clone, PartialEq)]
pub struct GateFailure {
    /// The flag (`--max-wasted-bytes`).
    pub gate: &'static str,
    /// The image, or `None` for a figure of the whole set.
    pub image: Option<String>,
    /// The figure's name in the report (`wasted_bytes`).
    pub figure: &'static str,
    /// Its value, as the report has it.
    pub value: String,
    /// The limit.
    pub limit: String,
}

impl fmt::Display for GateFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = if self.gate.starts_with("--max") {
            "above"
        } else {
            "below"
        };
        match &self.image {
            Some(i) => write!(f, "image `{i}`: ")?,
            None => write!(f, "the image set: ")?,
        }
        write!(
            f,
            "{} is {}, {word} the limit {} {}",
            self.figure, self.value, self.gate, self.limit
        )
    }
}

/// Checks every limit; returns the failures (empty when all pass).
pub fn check(report: &Report, gates: &Gates) -> Vec<GateFailure> {
    let mut out = Vec::new();
    for img in &report.images {
        let f = &img.files;
        if let Some(max) = gates.max_wasted_bytes
            && f.wasted_bytes > max
        {
            out.push(GateFailure {
                gate: "--max-wasted-bytes",
                image: Some(img.name.clone()),
                figure: "wasted_bytes",
                value: f.wasted_bytes.to_string(),
                limit: max.to_string(),
            });
        }
        if let Some(max) = gates.max_wasted_ratio
            && f.wasted_ratio > max
        {
            out.push(GateFailure {
                gate: "--max-wasted-ratio",
                image: Some(img.name.clone()),
                figure: "wasted_ratio",
                value: format!("{:.4}", f.wasted_ratio),
                limit: max.to_string(),
            });
        }
        if let Some(min) = gates.min_efficiency
            && f.efficiency < min
        {
            out.push(GateFailure {
                gate: "--min-efficiency",
                image: Some(img.name.clone()),
                figure: "efficiency",
                value: format!("{:.4}", f.efficiency),
                limit: min.to_string(),
            });
        }
    }
    if let Some(min) = gates.min_dedup_ratio
        && report.summary.dedup_ratio.compressed < min
    {
        out.push(GateFailure {
            gate: "--min-dedup-ratio",
            image: None,
            figure: "dedup_ratio.compressed",
            value: format!("{:.4}", report.summary.dedup_ratio.compressed),
            limit: min.to_string(),
        });
    }
    out
}
