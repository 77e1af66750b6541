//! The report for people: a summary, the images, the incremental pull matrices, then the top
//! offenders and duplicates, with sizes human-readable.

use super::analysis::{OffenderKind, Report};
use super::human_bytes as h;
use std::io::{self, Write};

fn pct(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}

use crate::image::reference::short_digest as short;

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Writes the table report.
pub fn render(report: &Report, out: &mut impl Write) -> io::Result<()> {
    let s = &report.summary;
    writeln!(
        out,
        "{} image(s), {} distinct layer blob(s)",
        s.images, s.layers
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<22} {:>12} {:>14}",
        "", "COMPRESSED", "UNCOMPRESSED"
    )?;
    for (name, v) in [
        ("logical bytes", s.logical_bytes),
        ("stored bytes", s.stored_bytes),
        ("dedup savings", s.dedup_savings),
    ] {
        writeln!(
            out,
            "{name:<22} {:>12} {:>14}",
            h(v.compressed),
            h(v.uncompressed)
        )?;
    }
    writeln!(
        out,
        "{:<22} {:>12} {:>14}",
        "dedup ratio",
        format!("{:.2}x", s.dedup_ratio.compressed),
        format!("{:.2}x", s.dedup_ratio.uncompressed)
    )?;
    writeln!(
        out,
        "configs {}, manifests {}, missed dedup {}, foreign layers {}",
        h(s.config_bytes),
        h(s.manifest_bytes),
        h(s.missed_dedup_bytes),
        h(s.foreign_bytes)
    )?;
    writeln!(
        out,
        "files {}, wasted {} (hidden by later layers, reclaimable)",
        h(s.file_bytes),
        h(s.wasted_bytes)
    )?;
    if s.unindexed_layers > 0 {
        writeln!(
            out,
            "{} layer(s) could not be read (foreign layers not in the store): their files are left out",
            s.unindexed_layers
        )?;
    }
    writeln!(out)?;

    let width = report
        .images
        .iter()
        .map(|i| i.name.chars().count().min(60))
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "{:<width$}  {:>6}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>7}",
        "IMAGE", "LAYERS", "PULL", "SHARED", "UNIQUE", "AMORTIZED", "WASTED", "EFFIC."
    )?;
    for i in &report.images {
        writeln!(
            out,
            "{:<width$}  {:>6}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>7}",
            clip(&i.name, 60),
            i.layers.len(),
            h(i.pull_bytes.compressed),
            h(i.shared_bytes.compressed),
            h(i.unique_bytes.compressed),
            h(i.amortized_bytes.compressed),
            h(i.files.wasted_bytes),
            pct(i.files.efficiency)
        )?;
    }
    writeln!(
        out,
        "(PULL, SHARED, UNIQUE, AMORTIZED: compressed blob bytes)"
    )?;

    for g in &report.incremental_pull {
        if g.images.len() < 2 {
            continue;
        }
        writeln!(out)?;
        writeln!(
            out,
            "incremental pull, {}: row = image pulled, column = image present",
            g.group
        )?;
        for (k, name) in g.images.iter().enumerate() {
            writeln!(out, "  [{k}] {name}")?;
        }
        write!(out, "  {:>5}", "")?;
        for k in 0..g.images.len() {
            write!(out, " {:>10}", format!("[{k}]"))?;
        }
        writeln!(out)?;
        for (k, row) in g.bytes.iter().enumerate() {
            write!(out, "  {:>5}", format!("[{k}]"))?;
            for v in row {
                write!(out, " {:>10}", h(*v))?;
            }
            writeln!(out)?;
        }
    }

    if !report.missed_dedup.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "missed dedup (one layer compressed into several blobs; use deterministic compression):"
        )?;
        for m in &report.missed_dedup {
            let blobs: Vec<String> = m
                .blobs
                .iter()
                .map(|b| format!("{} ({})", short(&b.digest), h(b.bytes)))
                .collect();
            writeln!(
                out,
                "  {} {}: {}",
                short(&m.diff_id),
                h(m.missed_bytes),
                blobs.join(", ")
            )?;
        }
    }
    if !report.foreign.is_empty() {
        writeln!(out)?;
        writeln!(out, "foreign layers (not pushed by default):")?;
        for f in &report.foreign {
            writeln!(
                out,
                "  {} {} {}",
                short(&f.digest),
                h(f.bytes),
                f.urls.join(" ")
            )?;
        }
    }

    writeln!(out)?;
    let d = &report.duplicates;
    writeln!(
        out,
        "duplicate content: within a layer {}, across layers of an image {}, across images outside shared layers {}",
        h(d.within_layer_bytes),
        h(d.across_layers_bytes),
        h(d.across_images_bytes)
    )?;
    for g in &d.groups {
        writeln!(
            out,
            "  {} redundant: {} copies of {} (sha256:{})",
            h(g.redundant_bytes),
            g.copies,
            h(g.size),
            short(&g.sha256)
        )?;
        for l in &g.locations {
            writeln!(out, "      {} layer {}: {}", l.image, l.layer, l.path)?;
        }
    }

    if !report.offenders.is_empty() {
        writeln!(out)?;
        writeln!(out, "top offenders:")?;
        writeln!(
            out,
            "  {:>10}  {:<17}  {:<30}  {:>5}  PATH / ADDED BY",
            "SIZE", "KIND", "IMAGE", "LAYER"
        )?;
        for o in &report.offenders {
            let kind = match o.kind {
                OffenderKind::Overwritten => "overwritten",
                OffenderKind::Deleted => "deleted",
                OffenderKind::UnchangedRewrite => "unchanged rewrite",
            };
            writeln!(
                out,
                "  {:>10}  {:<17}  {:<30}  {:>5}  {}",
                h(o.bytes),
                kind,
                clip(&o.image, 30),
                o.layer,
                o.path
            )?;
            if let Some(c) = &o.created_by {
                writeln!(
                    out,
                    "  {:>10}  {:<17}  {:<30}  {:>5}  ↳ {}",
                    "",
                    "",
                    "",
                    "",
                    clip(c, 100)
                )?;
            }
        }
    }
    Ok(())
}
