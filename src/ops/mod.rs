//! The use cases behind the commands: each function joins the parts (parser, planner, …) for
//! one thing a user asks for. Commands in `cli` resolve settings and call these; nothing here
//! prints.

pub mod archive;
pub mod build;
pub mod cache;
pub mod cancel;
pub mod check;
pub mod compat;
pub mod dedup;
pub mod dockerfile;
pub mod fixtures;
pub mod host;
pub mod images;
pub mod layer;
pub mod registry;
