//! wcbuild builds container images for Windows (and Linux) from Dockerfiles.
//!
//! The crate map (see ARCHITECTURE.md for the data flow):
//! - [`dockerfile`]: the Dockerfile language (parser, expansion lexer, validation, .dockerignore)
//! - [`plan`]: stages, ARG scoping and expansion, per platform
//! - [`image`]: references, platforms and os.version matching, manifests, configs, media types
//! - [`runtime`]: `RUN` steps in a container (OCI runtimes on Linux) and their change sets
//! - [`report`]: dedup analysis over layer indexes, and its table, JSON and HTML renderers
//! - [`ops`]: the use cases the commands call
//! - [`cli`]: the command line; the only part that prints

pub mod cli;
pub mod dockerfile;
pub mod image;
pub mod layer;
pub mod ops;
pub mod plan;
pub mod progress;
pub mod registry;
pub mod report;
pub mod runtime;
pub mod store;
