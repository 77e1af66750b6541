//! `wcbuild build [OPTIONS] CONTEXT` (also `wcbuild [OPTIONS] CONTEXT`).

use super::{CliError, GlobalArgs};
use crate::image::Platform;
use crate::image::reference::short_digest;
use crate::layer::Compression;
use crate::ops::build::{self as ops, BuildError, BuildRequest, BuildSettings, Output};
/// `1.5 MB`-style sizes (powers of 1000), as the other commands print them.
pub(super) use crate::report::human_bytes as human;
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LayerCompression {
    /// uncompressed while the image stays in the store (as Docker keeps it), gzip when it
    /// leaves: compressed in the build's pass with --push or --output type=oci, once and
    /// remembered by a later push
    Auto,
    /// gzip level 6 (what every registry and runtime reads)
    Gzip,
    /// zstd level 3
    Zstd,
    /// plain tar
    Uncompressed,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The build context directory
    pub context: PathBuf,
    /// Name the image (repeatable): `app:1.0`, `registry:5000/team/app:tag`
    #[arg(short, long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,
    /// The Dockerfile (`-` for standard input) [default: CONTEXT/Dockerfile]
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A build argument (`K=V`, or `K` to take it from the environment)
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// The stage to build
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// The target platform, or several separated by commas (`windows/amd64:ltsc2019,windows/amd64:ltsc2022`): one image per platform, tied in an index
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Layer compression
    #[arg(long, value_enum, default_value = "auto")]
    pub compression: LayerCompression,
    /// Clamp file times and set the image's times to this Unix time (reproducible builds)
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECONDS")]
    pub source_date_epoch: Option<i64>,
    /// Add a label to the image (repeatable)
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Write the image digest to this file
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// A named context (repeatable): `NAME=DIR` for `COPY --from=NAME`, or
    /// `NAME=docker-image://REF` (an image in the store) or `NAME=oci-layout://DIR[:TAG]` for
    /// `FROM NAME` and `COPY --from=NAME`
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Write build metadata (image digest, config digest, per-platform digests) as JSON
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Print only the image digest
    #[arg(short, long)]
    pub quiet: bool,
    /// Build every step, ignoring the build cache (results are still recorded)
    #[arg(long)]
    pub no_cache: bool,
    /// Check the Dockerfile with BuildKit's lint rules (bases resolved) and exit without
    /// building: 0 when nothing is found, 1 otherwise
    #[arg(long)]
    pub check: bool,
    /// How to show progress on stderr: `tty` (a live view), `plain` (a line per step), `json`
    /// (an object per event), `quiet` (nothing); `auto` is `tty` on a terminal, else `plain`
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Where the result goes: `type=image` (the store, the default), `type=oci,dest=FILE` or
    /// `type=docker,dest=FILE` (an archive, as `wcbuild save` writes; the image stays in the store)
    #[arg(short, long, value_name = "SPEC")]
    pub output: Option<String>,
    /// Push the result to the registry of each tag (same as --output type=registry)
    #[arg(long)]
    pub push: bool,
    /// Import a build cache from a registry: `type=registry,ref=REG/REPO:TAG` (or just the
    /// reference); repeatable, earlier ones win
    #[arg(long, value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Export this build's cache to a registry: `type=registry,ref=REG/REPO:TAG[,mode=min|max]`
    /// (`min`, the default, keeps the final image's layers; `max` every step's)
    #[arg(long, value_name = "SPEC")]
    pub cache_to: Option<String>,
    /// The OCI runtime for RUN on Linux stages: a name on PATH (`crun`, `runc`) or a path
    /// [default: the first of crun and runc that works here]
    #[arg(long, value_name = "NAME|PATH")]
    pub oci_runtime: Option<String>,
    /// The network RUN steps get unless they say: `host` (the default, as BuildKit without CNI),
    /// `none` (loopback only), `default` (= host)
    #[arg(long, value_name = "MODE", default_value = "default")]
    pub network: String,
    /// A secret RUN steps may mount (repeatable): `id=ID,src=FILE` or `id=ID,env=VAR`
    /// (`type=file|env`, `source=` also accepted); read only when a step mounts it
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,
    /// An SSH agent socket RUN steps may mount (repeatable): `default` (`$SSH_AUTH_SOCK`) or
    /// `ID=SOCKET`
    #[arg(long = "ssh", value_name = "SPEC")]
    pub ssh: Vec<String>,
    /// Allow an entitlement (repeatable): `security.insecure` lets `RUN --security=insecure`
    /// run; `network.host` is always allowed
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
    /// Where RUN steps run: `oci` (runc or crun; Linux stages on Linux), `hcs` (the Host
    /// Compute Service; Windows stages on Windows), `docker` (a Docker engine, local or
    /// remote) [default: by the stage's OS and the host; docker when --docker-host is given]
    #[arg(long, value_name = "RUNTIME")]
    pub runtime: Option<String>,
    /// The isolation of Windows RUN steps: `auto` (Microsoft's compatibility table and
    /// Docker's defaults, decided per step), `process` or `hyperv`
    #[arg(long, value_name = "ISOLATION", default_value = "auto")]
    pub isolation: String,
    /// The Docker engine for --runtime docker: `unix:///PATH`, `npipe:////./pipe/NAME` or
    /// `tcp://HOST:PORT` (TLS from DOCKER_TLS_VERIFY and DOCKER_CERT_PATH) [default:
    /// DOCKER_HOST, else the platform's default socket]
    #[arg(long, value_name = "URL")]
    pub docker_host: Option<String>,
    /// Memory for each RUN step (`4g`, `512m`): the utility VM of Hyper-V steps, the
    /// container's limit in a Docker engine
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Processors for each RUN step (`2`, `1.5`): the utility VM of Hyper-V steps, the
    /// container's limit in a Docker engine
    #[arg(long, value_name = "N")]
    pub cpus: Option<String>,
    #[command(flatten)]
    pub registry: super::registry::RegistryArgs,
}

/// `--memory`: `4g`, `512m`, `1024k`, plain bytes (Docker's units, powers of 1024).
fn parse_memory(s: &str) -> Result<u64, CliError> {
    let bad = || CliError::Usage(format!("--memory `{s}`: expected a size like 4g or 512m"));
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mul) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    if !n.is_finite() || n <= 0.0 {
        return Err(bad());
    }
    let bytes = n * mul as f64;
    if bytes < (4 << 20) as f64 || bytes > u64::MAX as f64 {
        return Err(CliError::Usage(format!(
            "--memory `{s}`: at least 4m (a step needs some memory)"
        )));
    }
    Ok(bytes as u64)
}

/// `--cpus`: a positive number of processors.
fn parse_cpus(s: &str) -> Result<f64, CliError> {
    match s.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n <= 1024.0 => Ok(n),
        _ => Err(CliError::Usage(format!(
            "--cpus `{s}`: expected a number of processors above 0 (e.g. 2 or 1.5)"
        ))),
    }
}

/// `--secret id=ID,src=FILE|env=VAR` as Docker reads it.
fn parse_secret(spec: &str) -> Result<(String, ops::SecretSource), CliError> {
    let (mut id, mut kind, mut src, mut env) = (None, None, None, None);
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("type", v)) => kind = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(v.to_string()),
            Some(("env", v)) => env = Some(v.to_string()),
            _ => {
                return Err(CliError::Usage(format!(
                    "--secret `{spec}`: expected id=ID,src=FILE or id=ID,env=VAR"
                )));
            }
        }
    }
    let source = match (kind.as_deref(), src, env) {
        (Some("env"), Some(v), None) | (None | Some("env"), None, Some(v)) => {
            ops::SecretSource::Env(v)
        }
        (None | Some("file"), Some(f), None) => ops::SecretSource::File(PathBuf::from(f)),
        (None, None, None) => {
            // `id=X` alone: an environment variable of that name, as buildx does.
            let Some(id) = &id else {
                return Err(CliError::Usage(format!(
                    "--secret `{spec}`: id=ID is required"
                )));
            };
            ops::SecretSource::Env(id.clone())
        }
        _ => {
            return Err(CliError::Usage(format!(
                "--secret `{spec}`: give one of src=FILE or env=VAR"
            )));
        }
    };
    let id = match id {
        Some(i) => i,
        None => match &source {
            ops::SecretSource::File(f) => f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            ops::SecretSource::Env(v) => v.clone(),
        },
    };
    if id.is_empty() {
        return Err(CliError::Usage(format!(
            "--secret `{spec}`: id=ID is required"
        )));
    }
    Ok((id, source))
}

/// `--ssh default|ID=SOCKET`.
fn parse_ssh(spec: &str) -> Result<(String, PathBuf), CliError> {
    let (id, path) = match spec.split_once('=') {
        Some((id, p)) => (id.to_string(), Some(PathBuf::from(p))),
        None => (spec.to_string(), None),
    };
    let path = match path {
        Some(p) => p,
        None => std::env::var_os("SSH_AUTH_SOCK")
            .map(PathBuf::from)
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "--ssh `{spec}`: no socket given and SSH_AUTH_SOCK is not set"
                ))
            })?,
    };
    if id.is_empty() {
        return Err(CliError::Usage(format!(
            "--ssh `{spec}`: expected ID=SOCKET"
        )));
    }
    Ok((id, path))
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ProgressMode {
    /// A live view on a terminal, plain lines otherwise
    Auto,
    /// A live view: a line per step, a bar while a layer is packed
    Tty,
    /// A line per event
    Plain,
    /// A JSON object per event
    Json,
    /// Nothing
    Quiet,
}

/// Draws progress events on stderr in the chosen mode.
pub(super) struct Drawer {
    mode: ProgressMode,
    multi: Option<indicatif::MultiProgress>,
    step: Option<indicatif::ProgressBar>,
    bar: Option<indicatif::ProgressBar>,
    started: std::time::Instant,
    transfers: std::collections::HashMap<String, indicatif::ProgressBar>,
}

fn state_name(state: crate::progress::TransferState) -> &'static str {
    use crate::progress::TransferState as S;
    match state {
        S::Started => "started",
        S::Progress => "progress",
        S::Present => "present",
        S::Mounted => "mounted",
        S::Skipped => "skipped",
        S::Done => "done",
    }
}

impl Drawer {
    pub(super) fn new(mode: ProgressMode) -> Drawer {
        use std::io::IsTerminal;
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        let multi = (mode == ProgressMode::Tty).then(|| {
            // Drawn at most every 100 ms.
            indicatif::MultiProgress::with_draw_target(
                indicatif::ProgressDrawTarget::stderr_with_hz(10),
            )
        });
        Drawer {
            mode,
            multi,
            step: None,
            bar: None,
            started: std::time::Instant::now(),
            transfers: std::collections::HashMap::new(),
        }
    }

    pub(super) fn event(&mut self, event: crate::progress::Event) {
        use crate::progress::Event;
        match self.mode {
            ProgressMode::Quiet => {}
            ProgressMode::Json => {
                let v = match &event {
                    Event::Stage {
                        index,
                        name,
                        base,
                        platform,
                    } => serde_json::json!({
                        "type": "stage", "stage": index, "name": name, "base": base, "platform": platform,
                    }),
                    Event::StepStart { stage, line, text } => serde_json::json!({
                        "type": "step-start", "stage": stage, "line": line, "instruction": text,
                    }),
                    Event::Packing { stage, done, total } => serde_json::json!({
                        "type": "bytes", "stage": stage, "done": done, "total": total,
                    }),
                    Event::Output {
                        stage,
                        stderr,
                        line,
                    } => serde_json::json!({
                        "type": "output", "stage": stage,
                        "stream": if *stderr { "stderr" } else { "stdout" }, "line": line,
                    }),
                    Event::Note { stage, text } => serde_json::json!({
                        "type": "note", "stage": stage, "text": text,
                    }),
                    Event::Step {
                        stage,
                        line,
                        text,
                        layer,
                        cached,
                    } => serde_json::json!({
                        "type": "step", "stage": stage, "line": line, "instruction": text, "layer": layer, "cached": cached,
                    }),
                    Event::Transfer {
                        action,
                        digest,
                        kind,
                        done,
                        total,
                        state,
                    } => serde_json::json!({
                        "type": "transfer", "action": action, "kind": kind, "digest": digest,
                        "done": done, "total": total, "state": state_name(*state),
                    }),
                };
                eprintln!("{v}");
            }
            ProgressMode::Tty => self.tty(event),
            _ => match event {
                Event::Stage {
                    index,
                    name,
                    base,
                    platform,
                } => {
                    let n = name.map(|n| format!(" {n}")).unwrap_or_default();
                    eprintln!("[stage {index}{n}] FROM {base} ({platform})");
                }
                Event::Step {
                    stage,
                    line,
                    text,
                    cached,
                    ..
                } => {
                    let tag = if cached { " CACHED" } else { "" };
                    eprintln!("[stage {stage}] {line:>4}  {text}{tag}");
                }
                Event::Transfer {
                    action,
                    digest,
                    kind,
                    total,
                    state,
                    ..
                } => {
                    use crate::progress::TransferState as S;
                    if !matches!(state, S::Started | S::Progress) {
                        eprintln!(
                            "{action} {kind} {} {} {}",
                            short_digest(&digest),
                            human(total),
                            state_name(state)
                        );
                    }
                }
                Event::Output { stage, line, .. } => {
                    eprintln!("[stage {stage}]       {line}");
                }
                Event::Note { stage, text } => {
                    eprintln!("[stage {stage}]       note: {text}");
                }
                Event::StepStart { .. } | Event::Packing { .. } => {}
            },
        }
    }

    fn tty(&mut self, event: crate::progress::Event) {
        use crate::progress::Event;
        use indicatif::{ProgressBar, ProgressStyle};
        let Some(multi) = &self.multi else { return };
        match event {
            Event::Stage {
                index,
                name,
                base,
                platform,
            } => {
                let n = name.map(|n| format!(" {n}")).unwrap_or_default();
                let _ = multi.println(format!("[stage {index}{n}] FROM {base} ({platform})"));
            }
            Event::StepStart { stage, line, text } => {
                let pb = multi.add(ProgressBar::new_spinner());
                pb.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                pb.set_message(format!("[stage {stage}] {line:>4}  {text}"));
                pb.enable_steady_tick(std::time::Duration::from_millis(100));
                self.step = Some(pb);
                self.started = std::time::Instant::now();
            }
            Event::Output { line, .. } => {
                let _ = multi.println(format!("       {line}"));
            }
            Event::Note { text, .. } => {
                let _ = multi.println(format!("       note: {text}"));
            }
            Event::Packing { done, total, .. } => {
                let bar = self.bar.get_or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(total));
                    b.set_style(
                        ProgressStyle::with_template("       packing [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    b
                });
                bar.set_length(total);
                bar.set_position(done);
            }
            Event::Step {
                stage,
                line,
                text,
                cached,
                ..
            } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                let tag = if cached {
                    " CACHED".to_string()
                } else {
                    format!(" {:.1}s", self.started.elapsed().as_secs_f64())
                };
                let done = format!("\u{2714} [stage {stage}] {line:>4}  {text}{tag}");
                match self.step.take() {
                    Some(pb) => {
                        pb.set_style(
                            ProgressStyle::with_template("{msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        pb.finish_with_message(done);
                    }
                    None => {
                        let _ = multi.println(done);
                    }
                }
            }
            Event::Transfer {
                action,
                digest,
                kind,
                done,
                total,
                state,
            } => {
                use crate::progress::TransferState as S;
                let label = format!("{action} {kind} {}", short_digest(&digest));
                match state {
                    S::Started | S::Progress => {
                        let pb = self.transfers.entry(digest).or_insert_with(|| {
                            let b = multi.add(ProgressBar::new(total));
                            b.set_style(
                                ProgressStyle::with_template(
                                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
                                )
                                .unwrap_or_else(|_| ProgressStyle::default_bar()),
                            );
                            b.set_message(label.clone());
                            b
                        });
                        pb.set_position(done);
                    }
                    _ => {
                        let line =
                            format!("\u{2714} {label} {} {}", human(total), state_name(state));
                        match self.transfers.remove(&digest) {
                            Some(pb) => {
                                pb.set_style(
                                    ProgressStyle::with_template("{msg}")
                                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                                );
                                pb.finish_with_message(line);
                            }
                            None => {
                                let _ = multi.println(line);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn parse_output(spec: &str) -> Result<Output, CliError> {
    let mut kind = None;
    let mut dest = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("type", t)) => kind = Some(t.to_string()),
            Some(("dest", d)) => dest = Some(PathBuf::from(d)),
            _ => {
                return Err(CliError::Usage(format!(
                    "--output `{spec}`: expected type=image|registry|oci|docker[,dest=FILE]"
                )));
            }
        }
    }
    use crate::ops::images::SaveFormat;
    match (kind.as_deref(), dest) {
        (Some("image") | None, None) => Ok(Output::Store),
        (Some("registry"), None) => Ok(Output::Registry),
        (Some("oci"), Some(d)) => Ok(Output::Archive(SaveFormat::Oci, d)),
        (Some("docker"), Some(d)) => Ok(Output::Archive(SaveFormat::Docker, d)),
        (Some("oci" | "docker"), None) => Err(CliError::Usage(format!(
            "--output `{spec}`: dest=FILE is required"
        ))),
        _ => Err(CliError::Usage(format!(
            "--output `{spec}`: expected type=image, type=oci,dest=FILE or type=docker,dest=FILE"
        ))),
    }
}

/// Parses `type=registry,ref=R[,mode=min|max]` or a bare `R`: (reference, max).
fn parse_cache(flag: &str, spec: &str) -> Result<(String, bool), CliError> {
    if !spec.contains('=') {
        crate::image::Reference::parse(spec)
            .map_err(|e| CliError::Usage(format!("{flag}: {e}")))?;
        return Ok((spec.to_string(), false));
    }
    let (mut kind, mut reference, mut max) = (None, None, false);
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("type", t)) => kind = Some(t.to_string()),
            Some(("ref", r)) => reference = Some(r.to_string()),
            Some(("mode", "max")) => max = true,
            Some(("mode", "min")) => max = false,
            // Options of other builders that do not change what is stored.
            Some(("oci-mediatypes" | "image-manifest" | "ignore-error" | "compression", _)) => {}
            _ => {
                return Err(CliError::Usage(format!(
                    "{flag} `{spec}`: expected type=registry,ref=REF[,mode=min|max]"
                )));
            }
        }
    }
    match (kind.as_deref(), reference) {
        (Some("registry") | None, Some(r)) => {
            crate::image::Reference::parse(&r)
                .map_err(|e| CliError::Usage(format!("{flag}: {e}")))?;
            Ok((r, max))
        }
        (Some(other), _) if other != "registry" => Err(CliError::Usage(format!(
            "{flag}: cache type `{other}` is not supported; use type=registry"
        ))),
        _ => Err(CliError::Usage(format!(
            "{flag} `{spec}`: ref=REF is required"
        ))),
    }
}

pub fn run(global: &GlobalArgs, args: BuildArgs) -> Result<ExitCode, CliError> {
    let build_args = super::build_args(&args.build_args);
    let mut platforms = Vec::new();
    if let Some(list) = &args.platform {
        for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            platforms
                .push(Platform::parse(p).map_err(|e| CliError::Usage(format!("--platform: {e}")))?);
        }
    }
    let mut labels = Vec::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--label `{l}`: expected K=V")))?;
        labels.push((k.to_string(), v.to_string()));
    }
    for t in &args.tags {
        crate::image::Reference::parse(t).map_err(|e| CliError::Usage(format!("-t: {e}")))?;
    }
    let mut settings = BuildSettings {
        context: args.context.clone(),
        file: args.file.clone(),
        tags: args.tags.clone(),
        build_args,
        target: args.target.clone(),
        platform: None,
        compression: match args.compression {
            LayerCompression::Auto | LayerCompression::Uncompressed => Compression::None,
            LayerCompression::Gzip => Compression::Gzip(6),
            LayerCompression::Zstd => Compression::Zstd(3),
        },
        compression_explicit: args.compression != LayerCompression::Auto,
        source_date_epoch: args.source_date_epoch,
        labels,
        no_cache: args.no_cache,
        contexts: BTreeMap::new(),
        registry: Some(args.registry.options()),
        cache_from: args
            .cache_from
            .iter()
            .map(|c| parse_cache("--cache-from", c).map(|(r, _)| r))
            .collect::<Result<_, _>>()?,
        cache_to: None,
        cache_max: false,
        oci_runtime: args.oci_runtime.clone(),
        network: match args.network.as_str() {
            "default" | "host" => ops::NetworkMode::Host,
            "none" => ops::NetworkMode::None,
            other => {
                return Err(CliError::Usage(format!(
                    "--network `{other}`: expected default, host or none"
                )));
            }
        },
        secrets: BTreeMap::new(),
        ssh: BTreeMap::new(),
        allow_insecure: false,
        engine: ops::EngineSettings {
            runtime: args
                .runtime
                .as_deref()
                .map(|r| {
                    r.parse()
                        .map_err(|e: String| CliError::Usage(format!("--runtime: {e}")))
                })
                .transpose()?,
            isolation: args.isolation.parse().map_err(
                |e: crate::image::compat::IsolationError| {
                    CliError::Usage(format!("--isolation: {e}"))
                },
            )?,
            docker_host: args.docker_host.clone(),
            memory: args.memory.as_deref().map(parse_memory).transpose()?,
            cpus: args.cpus.as_deref().map(parse_cpus).transpose()?,
        },
    };
    for s in &args.secrets {
        let (id, src) = parse_secret(s)?;
        settings.secrets.insert(id, src);
    }
    for s in &args.ssh {
        let (id, path) = parse_ssh(s)?;
        settings.ssh.insert(id, path);
    }
    for a in &args.allow {
        match a.as_str() {
            "security.insecure" => settings.allow_insecure = true,
            "network.host" => {}
            other => {
                return Err(CliError::Usage(format!(
                    "--allow `{other}`: expected security.insecure or network.host"
                )));
            }
        }
    }
    for c in &args.build_contexts {
        let (name, value) = c.split_once('=').ok_or_else(|| {
            CliError::Usage(format!("--build-context `{c}`: expected NAME=VALUE"))
        })?;
        let ctx = if let Some(r) = value.strip_prefix("docker-image://") {
            crate::image::Reference::parse(r)
                .map_err(|e| CliError::Usage(format!("--build-context: {e}")))?;
            crate::ops::build::NamedContext::Image(r.to_string())
        } else if let Some(layout) = value.strip_prefix("oci-layout://") {
            // DIR[:TAG]; a Windows path like C:\x keeps its drive colon.
            let (dir, tag) = match layout.rsplit_once(':') {
                Some((d, t)) if !t.contains(['/', '\\']) && d.len() > 1 => (d, Some(t)),
                _ => (layout, None),
            };
            let store = super::images::open_store(global)?;
            let digest =
                crate::ops::build::load_layout_context(&store, std::path::Path::new(dir), tag)
                    .map_err(|e| CliError::Failed(anyhow::anyhow!("--build-context `{c}`: {e}")))?;
            crate::ops::build::NamedContext::Image(digest)
        } else if value.contains("://") {
            return Err(CliError::Usage(format!(
                "--build-context `{c}`: expected NAME=DIR, NAME=docker-image://REF or NAME=oci-layout://DIR[:TAG]"
            )));
        } else {
            crate::ops::build::NamedContext::Dir(PathBuf::from(value))
        };
        settings.contexts.insert(name.to_string(), ctx);
    }
    if let Some(spec) = &args.cache_to {
        let (r, max) = parse_cache("--cache-to", spec)?;
        settings.cache_to = Some(r);
        settings.cache_max = max;
    }
    let mode = if args.quiet {
        ProgressMode::Quiet
    } else {
        args.progress
    };
    let output = match &args.output {
        Some(o) => parse_output(o)?,
        None => Output::Store,
    };
    let output = if args.push { Output::Registry } else { output };
    if output == Output::Registry && args.tags.is_empty() {
        return Err(CliError::Usage(
            "--push needs at least one -t NAME to push to".into(),
        ));
    }
    let request = BuildRequest {
        settings,
        platforms,
        output,
        push_jobs: args.registry.jobs,
    };
    let store = super::images::open_store(global)?;
    if args.check {
        let mut settings = request.settings.clone();
        settings.platform = request.platforms.first().cloned();
        return match ops::check(&store, &settings) {
            Ok(c) => {
                if c.report.is_empty() {
                    println!("Check complete, no warnings found.");
                } else {
                    println!("{}", c.report.trim_start_matches('\n'));
                }
                if let Some(e) = &c.error {
                    eprintln!("error: {e}");
                }
                Ok(ExitCode::from(u8::from(
                    c.warnings > 0 || c.error.is_some(),
                )))
            }
            Err(BuildError::Check(diags)) => {
                for d in diags {
                    eprintln!("{d}");
                }
                Ok(ExitCode::from(1))
            }
            Err(e) => Err(CliError::Failed(e.into())),
        };
    }
    let mut drawer = Drawer::new(mode);
    let mut reporter = |e: crate::progress::Event| drawer.event(e);
    let result = match ops::build_and_export(&store, &request, &mut reporter) {
        Ok(r) => r,
        Err(BuildError::Check(diags)) => {
            for d in diags {
                eprintln!("{d}");
            }
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(CliError::Failed(e.into())),
    };
    let talk = !matches!(mode, ProgressMode::Quiet | ProgressMode::Json);
    let out = &result.built;
    if talk {
        for p in &result.pushed {
            eprintln!(
                "pushed {}: {} blobs uploaded, {} already there, {} mounted",
                p.reference, p.uploaded, p.existed, p.mounted
            );
        }
        if let Some(dest) = &result.wrote {
            eprintln!("wrote {}", dest.display());
        }
    }
    if let Some(f) = &args.metadata_file {
        std::fs::write(
            f,
            serde_json::to_vec_pretty(&result.metadata()).unwrap_or_default(),
        )
        .map_err(|e| anyhow::anyhow!("write `{}`: {e}", f.display()))?;
    }
    if let Some(f) = &args.iidfile {
        std::fs::write(f, result.image_id())
            .map_err(|e| anyhow::anyhow!("write `{}`: {e}", f.display()))?;
    }
    if talk {
        if let Some(c) = &out.cache_export {
            eprintln!(
                "exported {} cache records to {} ({} blobs uploaded, {} already there)",
                c.records,
                c.reference,
                c.pushed.uploaded,
                c.pushed.existed + c.pushed.mounted
            );
        }
        for img in &out.images {
            eprintln!(
                "built {} ({}; manifest {})",
                img.config_digest, img.platform, img.digest
            );
        }
        if out.images.len() > 1 {
            eprintln!("index {} ({} platforms)", out.digest, out.images.len());
        }
        for t in &out.tags {
            eprintln!("tagged {t}");
        }
    }
    // Lint findings once, at the end, as `docker build` prints them.
    if !matches!(mode, ProgressMode::Json | ProgressMode::Quiet)
        && let Some(first) = out.images.first()
        && !first.lint_summary.is_empty()
    {
        eprint!("\n{}", first.lint_summary);
    }
    // The image ID on stdout, as `docker build -q` prints it.
    println!("{}", result.image_id());
    Ok(ExitCode::SUCCESS)
}
