//! Dedup reports: what a set of images shares, what it wastes and what it costs, at the blob
//! level (layer descriptors) and the file level (an index of every layer's files).
//!
//! - [`index`] reads one layer blob once and indexes its entries (path, kind, size, mode,
//!   content sha256, whiteouts), checking the blob's digest and diff_id as it streams;
//! - [`analysis`] computes every metric from the images' descriptors and those indexes (pure);
//! - [`gates`] checks a report against CI limits;
//! - [`table`], [`html`] render a report (JSON is the [`Report`] type serialized).
//!
//! This part uses `image` and `layer` only. Where layer blobs come from (the store, an OCI
//! layout, an archive) and where indexes are cached is `ops::dedup`'s business; nothing here
//! prints: renderers write into any `Write`.

pub mod analysis;
pub mod gates;
pub mod html;
pub mod index;
pub mod table;

pub use analysis::{ImageInput, LayerInput, Report, SCHEMA, analyze};
pub use gates::{GateFailure, Gates};
pub use index::{IndexError, LayerIndex, index_layer};

/// Formats a byte count for people: `512 B`, `1.5 kB`, `3.2 GB` (powers of 1000).
pub fn human_bytes(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1500), "1.5 kB");
        assert_eq!(human_bytes(3_200_000_000), "3.2 GB");
    }
}
