//! The command line: clap definitions, settings resolved from flags and environment, and one
//! file per command that calls `ops` and prints. This is the only part that prints; stdout
//! carries data (JSON, digests), stderr carries messages for people.
//!
//! Exit codes: 0 success, 1 the command failed, 2 usage errors (and commands not built yet),
//! 3 a CI gate of `wcbuild dedup` failed (the report is still written).

mod build;
mod check;
mod compat;
mod dedup;
mod dockerfile;
mod images;
mod layer;
mod registry;

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// Environment variable naming the store directory (same as `--root`).
pub const ENV_ROOT: &str = "WCBUILD_ROOT";
/// Environment variable with a `tracing` filter (`wcbuild=debug`); `-v` raises the level too.
pub const ENV_LOG: &str = "WCBUILD_LOG";

/// Builds container images for Windows and Linux from Dockerfiles, keeps them in an OCI
/// image-layout store, pulls and pushes them, and reports how their layers are shared.
///
/// `wcbuild -t app:1.0 .` is short for `wcbuild build -t app:1.0 .`.
#[derive(Debug, Parser)]
#[command(
    name = "wcbuild",
    version,
    max_term_width = 100,
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Commands,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The image store directory [default: $XDG_DATA_HOME/wcbuild, or %ProgramData%\wcbuild on Windows]
    #[arg(long, global = true, env = ENV_ROOT, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace); see also WCBUILD_LOG
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Build an image from a Dockerfile (also: `wcbuild [OPTIONS] CONTEXT`)
    Build(Box<build::BuildArgs>),
    /// Pull an image or index from a registry into the store
    Pull(registry::PullArgs),
    /// Push an image or index from the store to a registry
    Push(registry::PushArgs),
    /// List the images in the store
    Images(images::ImagesArgs),
    /// Show an image's manifest and config as JSON
    Inspect(images::InspectArgs),
    /// Give an image in the store another name
    Tag(images::TagArgs),
    /// Remove image names from the store
    Rmi(images::RmiArgs),
    /// Write images to an OCI or `docker save` tar file
    Save(images::SaveArgs),
    /// Read images from an OCI or `docker save` tar file or an OCI layout folder
    Load(images::LoadArgs),
    /// Report which layers and files images share and duplicate
    Dedup(dedup::DedupArgs),
    /// Say which Windows hosts and isolation modes can run an image
    Compat(compat::CompatArgs),
    /// Log in to a registry
    Login(registry::LoginArgs),
    /// Log out of a registry
    Logout(registry::LogoutArgs),
    /// Remove blobs no image reaches and stale partial downloads
    Prune(images::PruneArgs),
    /// Verify the store (every blob, tag, document and cache record); --repair removes what cannot be trusted
    Check(check::CheckArgs),
    /// Work with single layer blobs: check, extract
    #[command(subcommand)]
    Layer(layer::LayerCommand),
    /// Parse, check and expand Dockerfiles without building
    #[command(subcommand)]
    Dockerfile(dockerfile::DockerfileCommand),
}

/// The arguments of a command that is not built yet: it accepts anything and says so.
#[derive(Debug, Args)]
pub struct Pending {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<OsString>,
}

const SUBCOMMANDS: [&str; 17] = [
    "build",
    "pull",
    "push",
    "images",
    "inspect",
    "tag",
    "rmi",
    "save",
    "load",
    "dedup",
    "compat",
    "login",
    "logout",
    "prune",
    "check",
    "layer",
    "dockerfile",
];

/// Turns `wcbuild [global options] -t x .` into `wcbuild [global options] build -t x .`.
pub fn insert_build(args: Vec<OsString>) -> Vec<OsString> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--root" {
            i += 2;
            continue;
        }
        if a.starts_with("--root=")
            || a == "-v"
            || a == "--verbose"
            || (a.starts_with("-v") && a[1..].chars().all(|c| c == 'v'))
        {
            i += 1;
            continue;
        }
        let keep = SUBCOMMANDS.contains(&a.as_ref())
            || matches!(a.as_ref(), "-h" | "--help" | "-V" | "--version" | "help");
        let mut out = args;
        if !keep {
            out.insert(i, OsString::from("build"));
        }
        return out;
    }
    args
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let args = insert_build(std::env::args_os().collect());
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.global.verbose);
    #[cfg(unix)]
    signals::install();
    let g = &cli.global;
    let outcome = match cli.command {
        Commands::Dockerfile(cmd) => dockerfile::run(cmd),
        Commands::Build(a) => build::run(g, *a),
        Commands::Images(a) => images::images(g, a),
        Commands::Inspect(a) => images::inspect(g, a),
        Commands::Tag(a) => images::tag(g, a),
        Commands::Rmi(a) => images::rmi(g, a),
        Commands::Save(a) => images::save(g, a),
        Commands::Load(a) => images::load(g, a),
        Commands::Dedup(a) => dedup::run(g, a),
        Commands::Compat(a) => compat::run(g, a),
        Commands::Prune(a) => images::prune(g, a),
        Commands::Check(a) => check::run(g, a),
        Commands::Layer(cmd) => layer::run(cmd),
        Commands::Pull(a) => registry::pull(g, a),
        Commands::Push(a) => registry::push(g, a),
        Commands::Login(a) => registry::login(a),
        Commands::Logout(a) => registry::logout(a),
    };
    if let Some(code) = crate::ops::cancel::exit_code() {
        // Stopped by a signal: whatever the command returned, it unwound because of it.
        let sig = crate::ops::cancel::signal().unwrap_or_default();
        eprintln!(
            "error: stopped by {}; temporary files removed",
            crate::ops::cancel::signal_name(sig)
        );
        return ExitCode::from(code);
    }
    match outcome {
        Ok(code) => code,
        Err(CliError::NotBuilt(name)) => {
            eprintln!(
                "error: `wcbuild {name}` is not built yet in this version of wcbuild; nothing was done"
            );
            ExitCode::from(2)
        }
        Err(CliError::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(e)) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(1)
        }
        Err(CliError::Quiet) => ExitCode::SUCCESS,
    }
}

/// SIGINT, SIGTERM and SIGHUP: the handler only records the request (and wakes the watcher
/// through a pipe); the watcher thread cancels running steps and blob writes so the command
/// unwinds, removing its temp files, and exits 128 + the signal. If the command has not
/// finished [`signals::GRACE`] after the signal (or a second signal comes), the watcher removes
/// this process's leftovers in the stores it opened and exits itself: a stop never takes
/// more than a second.
#[cfg(unix)]
mod signals {
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::time::{Duration, Instant};

    /// How long the command gets to unwind after a stop request.
    pub const GRACE: Duration = Duration::from_millis(700);

    static WAKE: AtomicI32 = AtomicI32::new(-1);

    extern "C" fn on_signal(sig: libc::c_int) {
        crate::ops::cancel::request(sig);
        let fd = WAKE.load(Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: write(2) is async-signal-safe; the byte only wakes the watcher.
            unsafe {
                libc::write(fd, b"x".as_ptr().cast(), 1);
            }
        }
    }

    pub fn install() {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe(2) fills the two descriptors it is given.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return;
        }
        WAKE.store(fds[1], Ordering::SeqCst);
        let read_fd = fds[0];
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: a handler that only touches atomics and calls write(2).
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                libc::sigemptyset(&mut sa.sa_mask);
                sa.sa_flags = libc::SA_RESTART;
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        let _ = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || watch(read_fd));
    }

    fn wait_byte(fd: libc::c_int, timeout: Option<Duration>) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        // SAFETY: one pollfd we own.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r > 0 {
            let mut b = [0u8; 16];
            // SAFETY: reading into a buffer we own.
            unsafe {
                libc::read(fd, b.as_mut_ptr().cast(), b.len());
            }
            return true;
        }
        false
    }

    fn watch(fd: libc::c_int) {
        while !crate::ops::cancel::requested() {
            wait_byte(fd, None);
        }
        crate::ops::cancel::propagate();
        let deadline = Instant::now() + GRACE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || (wait_byte(fd, Some(left)) && crate::ops::cancel::requests() > 1) {
                break;
            }
        }
        let sig = crate::ops::cancel::signal().unwrap_or(libc::SIGTERM);
        crate::store::remove_own_leftovers();
        eprintln!(
            "error: stopped by {}; temporary files removed",
            crate::ops::cancel::signal_name(sig)
        );
        std::process::exit(crate::ops::cancel::exit_code().map_or(1, i32::from));
    }
}

/// An error and its causes, joined by `: `, leaving out a cause whose text the message
/// before it already holds (errors that print their source as part of their own message).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// `--build-arg K=V` values; a bare `K` takes its value from the environment (and is left
/// out when the environment has none), as `docker build` does.
pub(crate) fn build_args(list: &[String]) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for a in list {
        match a.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    out
}

/// How a command failed.
#[derive(Debug)]
pub enum CliError {
    /// The command exists in the interface but not yet in this version.
    NotBuilt(&'static str),
    /// The user asked for something invalid (exit 2).
    Usage(String),
    /// The work failed (exit 1).
    Failed(anyhow::Error),
    /// The reader of our output went away (a closed pipe): stop without a message.
    Quiet,
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError::Failed(e.into())
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = std::env::var(ENV_LOG)
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn bare_form_means_build() {
        assert_eq!(
            insert_build(os(&["wcbuild", "-t", "a", "."])),
            os(&["wcbuild", "build", "-t", "a", "."])
        );
        assert_eq!(
            insert_build(os(&["wcbuild", "--root", "r", "."])),
            os(&["wcbuild", "--root", "r", "build", "."])
        );
        assert_eq!(
            insert_build(os(&["wcbuild", "-vv", "pull", "x"])),
            os(&["wcbuild", "-vv", "pull", "x"])
        );
        assert_eq!(
            insert_build(os(&["wcbuild", "--help"])),
            os(&["wcbuild", "--help"])
        );
        assert_eq!(insert_build(os(&["wcbuild"])), os(&["wcbuild"]));
    }

    #[test]
    fn the_interface_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        assert_eq!(names, SUBCOMMANDS);
    }
}
