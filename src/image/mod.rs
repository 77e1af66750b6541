//! Image vocabulary shared by every other part: references and digests, platforms with
//! Windows `os.version` matching, and media types.
//!
//! Pure code with no I/O; it uses no other part of wcbuild.

pub mod media;
pub mod platform;
pub mod reference;

pub use platform::{Platform, PlatformError, WindowsVersion};
pub use reference::{Digest, Reference, ReferenceError};
