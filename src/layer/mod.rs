//! Layers: the tar streams container images are made of, in the Linux (OCI) and Windows
//! formats; compression; digests computed while bytes stream; extraction that cannot write or delete outside its
//! target (names checked in `names`, operations made beneath a descriptor in `beneath`);
//! packing trees.
//!
//! This part uses `image` only; it knows nothing of the store or registries (callers hand it
//! any `Read`/`Write`). The Windows format code is portable and tested on Linux.

pub mod beneath;
pub mod compress;
pub mod diff;
pub mod extract;
pub mod names;
pub mod pack;
pub mod reader;
pub mod tar;
pub mod windows;
pub mod writer;
pub mod xattr;

pub use compress::{Compression, compress_stream};
pub use diff::{Change, ChangeSet, diff_trees, write_changes};
pub use extract::{ExtractError, ExtractOptions, ExtractSummary, apply, extract, unpack_overlay};
pub use pack::pack_dir;
pub use reader::{ReadLimits, tar_reader};
pub use writer::{Format, LayerDigests, LayerOptions, LayerWriter};

use std::io::Read;

/// Reads a layer blob (any compression) and checks it against the Windows layer rules (raw
/// names and time records included; see [`windows::check_blob`]).
pub fn check_windows_layer(
    blob: impl Read + 'static,
    limits: ReadLimits,
) -> Result<windows::CheckReport, tar::TarError> {
    windows::check_blob(blob, limits)
}
