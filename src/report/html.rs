//! The HTML report: one self-contained page (no network, no external scripts).

use super::analysis::Report;
use std::io::{self, Write};

/// Writes the HTML report.
pub fn render(report: &Report, out: &mut impl Write) -> io::Result<()> {
    let data = serde_json::to_string(report).map_err(io::Error::other)?;
    write!(
        out,
        "<!doctype html><pre>{}</pre>",
        data.replace('<', "&lt;")
    )
}
