//! `wcbuild build`: a Dockerfile and a context in, an image in the store out (and, when asked,
//! in a registry or an archive).
//!
//! Every instruction but `RUN` (which needs a runtime) builds, on Linux and Windows stages:
//! metadata instructions change the config and add history entries as BuildKit writes them;
//! `COPY` and `ADD` (from the context through `.dockerignore` and `--exclude`, heredocs,
//! archives, downloads, git) become a layer in the stage's format; `COPY --from` reads an
//! earlier stage's or an image's file system. ONBUILD triggers of an image base run after its
//! FROM.
//!
//! The parts, each importing only those listed before it:
//! - `settings`: what is asked (settings, named contexts) and what comes back (outcomes,
//!   errors);
//! - `paths`: Windows paths, lexical joins, RFC 3339 times;
//! - `cache`: step keys, the stat cache of context files, records of what each key made;
//! - `state`: the stage being built, the build's shared context, adding a layer;
//! - `user`: owners by name or number through the stage's passwd and group files;
//! - `base`: resolving `FROM` images (store, then registry), `oci-layout://` contexts;
//! - `rootfs`: the file systems `COPY --from` reads; `view`: what a stage holds at a path,
//!   from its layers' headers;
//! - `metadata`: config-only instructions and their history texts, ONBUILD triggers;
//! - `context`, `sources`, `copy`: what COPY/ADD collect and the layer they write;
//! - `engine`: which runtime runs a RUN step, the isolation of a Windows step, the parent
//!   as an image for a Docker engine, and an engine's layer re-written as ours;
//! - `run`: RUN's command, environment, mounts and cache key, and the container on a miss;
//! - `executor`: plan, then build the stages the target needs, step by step;
//! - `platforms`: several platforms tied in an index, the registry cache export;
//! - `output`: the whole command: build, then push or write an archive.

mod base;
mod cache;
mod context;
mod copy;
mod engine;
mod executor;
mod metadata;
mod output;
mod paths;
mod platforms;
mod rootfs;
mod run;
mod settings;
mod sources;
mod state;
mod user;
mod view;

pub use base::load_layout_context;
pub use cache::{CACHE_KEY_VERSION, cache_key};
pub use executor::{CheckOutcome, DEFAULT_PATH, build, build_with, check};
pub use output::{BuildRequest, BuildResult, Output, build_and_export};
pub use paths::{rfc3339, windows_path};
pub use platforms::{MultiOutcome, build_platforms};
pub use rootfs::Rootfs;
pub use settings::{
    BuildError, BuildOutcome, BuildSettings, EngineSettings, IsolationRecord, NamedContext,
    NetworkMode, RuntimeKind, SecretSource,
};
