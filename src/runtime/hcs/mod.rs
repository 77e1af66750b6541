//! placeholder
use super::{Runtime, RuntimeError};
use std::sync::Arc;
/// placeholder
pub fn host_runtime() -> Result<Arc<dyn Runtime>, RuntimeError> {
    Err(RuntimeError::Unsupported(
        "the Host Compute Service runs on Windows only".into(),
    ))
}
