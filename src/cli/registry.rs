//! `wcbuild pull`, `push`, `login`, `logout`.

use super::build::{Drawer, ProgressMode, human};
use super::images::open_store;
use super::{CliError, GlobalArgs};
use crate::image::Platform;
use crate::ops::registry::{Credentials, Stored};
use crate::ops::registry::{PullOptions, PushOptions};
use crate::registry::ClientOptions;
use clap::Args;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Options every registry command takes.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// A registry (`host[:port]`) that may be reached over plain HTTP or with an unverified
    /// certificate (loopback registries always may)
    #[arg(
        long = "insecure-registry",
        value_name = "HOST",
        env = "WCBUILD_INSECURE_REGISTRY",
        value_delimiter = ','
    )]
    pub insecure: Vec<String>,
    /// Extra CA certificates per registry, in Docker's layout: DIR/HOST[:PORT]/*.crt
    /// [default: /etc/docker/certs.d]
    #[arg(long, value_name = "DIR")]
    pub certs_dir: Option<PathBuf>,
    /// The directory of Docker's config.json with credentials [default: $DOCKER_CONFIG or ~/.docker]
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// Blobs transferred at once
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub jobs: usize,
}

impl RegistryArgs {
    pub fn options(&self) -> ClientOptions {
        let mut o = ClientOptions {
            insecure: self.insecure.clone(),
            ..ClientOptions::default()
        };
        if let Some(d) = &self.certs_dir {
            o.certs_dir = d.clone();
        }
        if let Some(d) = &self.config {
            o.config_dir = d.clone();
        }
        o
    }
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image (`[REGISTRY/]REPO[:TAG|@DIGEST]`)
    pub image: String,
    /// The platform to pull from a multi-platform index, e.g. `windows/amd64:10.0.20348` or
    /// `windows/amd64:ltsc2022` [default: the host's]
    #[arg(long)]
    pub platform: Option<String>,
    /// Pull every platform of an index and keep the index
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
    /// Print only the digest
    #[arg(short, long)]
    pub quiet: bool,
    /// How to show progress on stderr
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image in the store
    pub image: String,
    /// Where to push it [default: the image's own name]
    pub destination: Option<String>,
    /// Upload foreign (non-distributable) layers too; they are left out by default
    #[arg(long)]
    pub include_foreign: bool,
    /// Print only the digest
    #[arg(short, long)]
    pub quiet: bool,
    /// How to show progress on stderr
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry (`host[:port]`) [default: docker.io]
    pub server: Option<String>,
    /// User name
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password or token (prefer --password-stdin: command lines are visible to others)
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry (`host[:port]`) [default: docker.io]
    pub server: Option<String>,
    /// The directory of Docker's config.json [default: $DOCKER_CONFIG or ~/.docker]
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
}

fn parse_platform(p: &Option<String>) -> Result<Option<Platform>, CliError> {
    p.as_deref()
        .map(|p| Platform::parse(p).map_err(|e| CliError::Usage(format!("--platform: {e}"))))
        .transpose()
}

pub fn pull(global: &GlobalArgs, args: PullArgs) -> Result<ExitCode, CliError> {
    crate::image::Reference::parse(&args.image).map_err(|e| CliError::Usage(e.to_string()))?;
    let store = open_store(global)?;
    let opts = PullOptions {
        platform: parse_platform(&args.platform)?,
        all_platforms: args.all_platforms,
        keep_index: false,
        concurrency: args.registry.jobs,
    };
    let client = crate::ops::registry::client(args.registry.options());
    let mode = if args.quiet {
        ProgressMode::Quiet
    } else {
        args.progress
    };
    let mut drawer = Drawer::new(mode);
    let started = std::time::Instant::now();
    let rt = crate::ops::registry::runtime();
    let pulled = rt.block_on(crate::ops::registry::pull(
        &store,
        &client,
        &args.image,
        &opts,
        &mut |e| drawer.event(e),
    ))?;
    drop(drawer);
    if !args.quiet {
        eprintln!(
            "pulled {} ({}): {} blobs, {} downloaded in {:.1}s, {} already present",
            pulled.reference,
            pulled.platforms.join(", "),
            pulled.downloaded,
            human(pulled.downloaded_bytes),
            started.elapsed().as_secs_f64(),
            pulled.present
        );
    }
    println!("{}", pulled.digest);
    Ok(ExitCode::SUCCESS)
}

pub fn push(global: &GlobalArgs, args: PushArgs) -> Result<ExitCode, CliError> {
    if let Some(d) = &args.destination {
        crate::image::Reference::parse(d).map_err(|e| CliError::Usage(e.to_string()))?;
    }
    let store = open_store(global)?;
    let opts = PushOptions {
        include_foreign: args.include_foreign,
        concurrency: args.registry.jobs,
    };
    let client = crate::ops::registry::client(args.registry.options());
    let mode = if args.quiet {
        ProgressMode::Quiet
    } else {
        args.progress
    };
    let mut drawer = Drawer::new(mode);
    let started = std::time::Instant::now();
    let rt = crate::ops::registry::runtime();
    let pushed = rt.block_on(crate::ops::registry::push(
        &store,
        &client,
        &args.image,
        args.destination.as_deref(),
        &opts,
        &mut |e| drawer.event(e),
    ))?;
    drop(drawer);
    if !args.quiet {
        eprintln!(
            "pushed {}: {} blobs uploaded ({}) in {:.1}s, {} already there, {} mounted",
            pushed.reference,
            pushed.uploaded,
            human(pushed.uploaded_bytes),
            started.elapsed().as_secs_f64(),
            pushed.existed,
            pushed.mounted
        );
        if !pushed.skipped_foreign.is_empty() {
            eprintln!(
                "note: {} foreign layer(s) left out (the registry serves them from their URLs); --include-foreign uploads them",
                pushed.skipped_foreign.len()
            );
        }
    }
    println!("{}", pushed.digest);
    Ok(ExitCode::SUCCESS)
}

fn server_of(s: &Option<String>) -> String {
    let s = s.as_deref().unwrap_or("docker.io");
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    if host == "index.docker.io" || host == "registry-1.docker.io" {
        "docker.io".to_string()
    } else {
        host.to_string()
    }
}

pub fn login(args: LoginArgs) -> Result<ExitCode, CliError> {
    let server = server_of(&args.server);
    let username = args
        .username
        .clone()
        .ok_or_else(|| CliError::Usage("login: --username is required".into()))?;
    let password = match (&args.password, args.password_stdin) {
        (Some(_), true) => {
            return Err(CliError::Usage(
                "--password and --password-stdin are mutually exclusive".into(),
            ));
        }
        (Some(p), false) => {
            eprintln!(
                "warning: a password on the command line can be seen by other users; use --password-stdin"
            );
            p.clone()
        }
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => {
            return Err(CliError::Usage(
                "login: give the password with --password-stdin".into(),
            ));
        }
    };
    if password.is_empty() {
        return Err(CliError::Usage("login: the password is empty".into()));
    }
    let creds = Credentials {
        username,
        secret: password,
    };
    match crate::ops::registry::login(&args.registry.options(), &server, &creds)? {
        Stored::ConfigFile(p) => eprintln!(
            "credentials stored unencrypted in {}; configure a credential helper (credsStore) to avoid that",
            p.display()
        ),
        Stored::Helper(h) => eprintln!("credentials stored in docker-credential-{h}"),
    }
    eprintln!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

pub fn logout(args: LogoutArgs) -> Result<ExitCode, CliError> {
    let server = server_of(&args.server);
    let dir = args
        .config
        .clone()
        .unwrap_or_else(crate::ops::registry::default_config_dir);
    if crate::ops::registry::logout(&dir, &server)? {
        eprintln!("Removing login credentials for {server}");
    } else {
        eprintln!("Not logged in to {server}");
    }
    Ok(ExitCode::SUCCESS)
}
