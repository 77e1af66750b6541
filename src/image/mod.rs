//! Image vocabulary shared by every other part: references and digests, platforms with
//! Windows `os.version` matching, Windows version compatibility and isolation, media types,
//! and the manifest, index and config documents.
//!
//! Pure code with no I/O; it uses no other part of wcbuild.

pub mod compat;
pub mod media;
pub mod platform;
pub mod reference;
pub mod types;

pub use compat::{Isolation, Sku, WindowsHost};
pub use platform::{Platform, PlatformError, WindowsVersion};
pub use reference::{Digest, Reference, ReferenceError};
pub use types::{
    ContainerConfig, Descriptor, Healthcheck, History, ImageConfig, Index, Manifest, RootFs,
};
