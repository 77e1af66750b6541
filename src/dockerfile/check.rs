//! Per-instruction validation: flag names and values, argument counts, `RUN --mount` options,
//! `HEALTHCHECK` durations, stage names, `--from` targets. Turns each parsed [`Instruction`]
//! into a typed [`Command`] the planner builds from, and collects every problem with its
//! place in the file (BuildKit stops at the first; `wcbuild dockerfile check` lists them all).

use super::error::{Diagnostic, Location, ParseError, Severity, go_quote, suggest};
use super::lexer::{Lexer, NoEnv};
use super::parser::{
    Dockerfile, Heredoc, INSTRUCTIONS, Instruction, find_directive, parse_heredoc,
};

/// A `KEY=value` pair of `ENV` or `LABEL`, unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key as written.
    pub key: String,
    /// The value as written (quotes kept; expansion removes them).
    pub value: String,
}

/// One `ARG` declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The name as written (may hold `$` references, expanded by the planner).
    pub name: String,
    /// The default value as written, if any.
    pub default: Option<String>,
}

/// A command line for `RUN`, `CMD`, `ENTRYPOINT` or `HEALTHCHECK CMD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The exec-form arguments, or one string in shell form.
    pub args: Vec<String>,
    /// Shell form: run through `SHELL`.
    pub prepend_shell: bool,
    /// Heredocs (only `RUN`).
    pub heredocs: Vec<Heredoc>,
}

/// A `RUN --mount` type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// A read-only (or throw-away writable) view of a stage, image or the context.
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An in-memory directory.
    Tmpfs,
    /// A secret file or variable.
    Secret,
    /// An SSH agent socket.
    Ssh,
}

/// A `RUN --mount=...`, values as written (the planner expands them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    /// `type=` (bind when absent).
    pub kind: Option<MountType>,
    /// Every `key=value` as written, keys lower-cased.
    pub options: Vec<(String, String)>,
    /// Bare keys (`ro`, `rw`, `required`).
    pub switches: Vec<String>,
}

/// `ADD` and `COPY`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopySpec {
    /// Source paths, URLs or patterns as written.
    pub sources: Vec<String>,
    /// Inline sources from heredocs.
    pub inline: Vec<Heredoc>,
    /// Destination as written.
    pub dest: String,
    /// `--from=` (COPY only).
    pub from: Option<String>,
    /// `--chown=`.
    pub chown: Option<String>,
    /// `--chmod=`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents` (COPY only).
    pub parents: bool,
    /// `--exclude=` patterns.
    pub excludes: Vec<String>,
    /// `--checksum=` (ADD only).
    pub checksum: Option<String>,
    /// `--keep-git-dir` (ADD only), when given.
    pub keep_git_dir: Option<bool>,
    /// `--unpack` (ADD only), when given.
    pub unpack: Option<bool>,
    /// Written in JSON form.
    pub json: bool,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", "…"]`, as Docker stores it.
    pub test: Vec<String>,
    /// Nanoseconds; 0 means the default.
    pub interval: i64,
    /// Nanoseconds; 0 means the default.
    pub timeout: i64,
    /// Nanoseconds; 0 means the default.
    pub start_period: i64,
    /// Nanoseconds; 0 means the default.
    pub start_interval: i64,
    /// 0 means the default.
    pub retries: i64,
}

/// A validated instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `FROM [--platform=P] base [AS name]`.
    From {
        /// The base as written.
        base: String,
        /// The stage name, lower-cased.
        name: Option<String>,
        /// `--platform=` as written.
        platform: Option<String>,
    },
    /// `RUN`.
    Run {
        /// What to run.
        command: CommandLine,
        /// `--mount=` values.
        mounts: Vec<Mount>,
        /// `--network=`.
        network: String,
        /// `--security=`.
        security: String,
    },
    /// `CMD`.
    Cmd(CommandLine),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `LABEL`.
    Label(Vec<KeyValue>),
    /// `MAINTAINER`.
    Maintainer(String),
    /// `EXPOSE`.
    Expose(Vec<String>),
    /// `ENV`.
    Env(Vec<KeyValue>),
    /// `ADD`.
    Add(CopySpec),
    /// `COPY`.
    Copy(CopySpec),
    /// `VOLUME`.
    Volume(Vec<String>),
    /// `USER`.
    User(String),
    /// `WORKDIR`.
    Workdir(String),
    /// `ARG`.
    Arg(Vec<ArgDecl>),
    /// `ONBUILD`: the trigger's source text (heredoc bodies appended), run in child builds.
    Onbuild(String),
    /// `STOPSIGNAL`.
    StopSignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `SHELL`.
    Shell(Vec<String>),
}

/// A problem with one instruction, and the text in it to point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong.
    pub message: String,
    /// A piece of the instruction's source to underline, when there is one.
    pub near: Option<String>,
}

fn problem(message: impl Into<String>, near: Option<&str>) -> Problem {
    Problem {
        message: message.into(),
        near: near.map(String::from),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum FlagKind {
    Bool,
    String,
    Strings,
}

/// BuildKit's builder-flag rules: `--name=value`, bare booleans, repeatable lists, `--` ends.
struct Flags<'a> {
    given: &'a [String],
    defs: Vec<(&'static str, FlagKind)>,
}

#[derive(Default)]
struct FlagValues {
    values: Vec<(String, String)>,
}

impl FlagValues {
    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn bool(&self, name: &str) -> Option<bool> {
        self.get(name).map(|v| v == "true")
    }
}

impl<'a> Flags<'a> {
    fn new(given: &'a [String]) -> Self {
        Flags {
            given,
            defs: Vec::new(),
        }
    }
    fn add(mut self, name: &'static str, kind: FlagKind) -> Self {
        self.defs.push((name, kind));
        self
    }
    fn parse(&self, cmd: &str) -> Result<FlagValues, Problem> {
        let mut out = FlagValues::default();
        let mut used: Vec<&str> = Vec::new();
        for a in self.given {
            if a == "--" {
                break;
            }
            let Some(body) = a.strip_prefix("--") else {
                return Err(problem(format!("arg should start with -- : {a}"), Some(a)));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let flag_name = format!("--{name}");
            let Some(&(def, kind)) = self.defs.iter().find(|(n, _)| *n == name) else {
                let known: Vec<&str> = self.defs.iter().map(|(n, _)| *n).collect();
                let hint = match suggest(name, known.iter().copied(), true) {
                    Some(s) => format!(" (did you mean {s}?)"),
                    None if known.is_empty() => format!("; {cmd} takes no flags"),
                    None => format!(
                        "; {cmd} takes {}",
                        known
                            .iter()
                            .map(|k| format!("--{k}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                return Err(problem(
                    format!("unknown flag: {flag_name}{hint}"),
                    Some(&flag_name),
                ));
            };
            if used.contains(&def) && kind != FlagKind::Strings {
                return Err(problem(
                    format!("duplicate flag specified: {flag_name}"),
                    Some(a),
                ));
            }
            used.push(def);
            let value = match kind {
                FlagKind::Bool => match value {
                    Some("") => {
                        return Err(problem(
                            format!("missing a value on flag: {flag_name}"),
                            Some(a),
                        ));
                    }
                    None => "true".to_string(),
                    Some(v) => match v.to_lowercase().as_str() {
                        "true" => "true".into(),
                        "false" => "false".into(),
                        _ => {
                            return Err(problem(
                                format!("expecting boolean value for flag {flag_name}, not: {v}"),
                                Some(a),
                            ));
                        }
                    },
                },
                FlagKind::String | FlagKind::Strings => match value {
                    Some(v) => v.to_string(),
                    None => {
                        return Err(problem(
                            format!(
                                "missing a value on flag: {flag_name} (write {flag_name}=VALUE)"
                            ),
                            Some(a),
                        ));
                    }
                },
            };
            out.values.push((def.to_string(), value));
        }
        Ok(out)
    }
}

fn no_flags(inst: &Instruction) -> Result<(), Problem> {
    Flags::new(&inst.flags)
        .parse(&inst.cmd.to_uppercase())
        .map(|_| ())
}

fn command_line(inst: &Instruction, args: &[String]) -> CommandLine {
    let args = if inst.json || args.is_empty() {
        args.to_vec()
    } else {
        vec![args.join(" ")]
    };
    CommandLine {
        args,
        prepend_shell: !inst.json,
        heredocs: inst.heredocs.clone(),
    }
}

fn key_values(inst: &Instruction, name: &str) -> Result<Vec<KeyValue>, Problem> {
    if inst.args.is_empty() {
        return Err(problem(
            format!("{name} requires at least one argument"),
            None,
        ));
    }
    let mut out = Vec::new();
    for pair in inst.args.chunks(2) {
        if pair[0].is_empty() {
            return Err(problem(format!("{name} names can not be blank"), Some("=")));
        }
        out.push(KeyValue {
            key: pair[0].clone(),
            value: pair.get(1).cloned().unwrap_or_default(),
        });
    }
    Ok(out)
}

fn exactly_one(inst: &Instruction, name: &str) -> Result<String, Problem> {
    if inst.args.len() != 1 {
        return Err(problem(
            format!("{name} requires exactly one argument"),
            None,
        ));
    }
    Ok(inst.args[0].clone())
}

/// The allowed stage-name shape: `^[a-z][a-z0-9-_.]*$` after lower-casing.
pub fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn copy_spec(inst: &Instruction, add: bool) -> Result<CopySpec, Problem> {
    let name = if add { "ADD" } else { "COPY" };
    if inst.args.len() < 2 {
        return Err(problem(
            format!(
                "{name} requires at least two arguments, but only one was provided. Destination could not be determined"
            ),
            None,
        ));
    }
    let mut flags = Flags::new(&inst.flags)
        .add("chown", FlagKind::String)
        .add("chmod", FlagKind::String)
        .add("link", FlagKind::Bool)
        .add("exclude", FlagKind::Strings);
    flags = if add {
        flags
            .add("keep-git-dir", FlagKind::Bool)
            .add("checksum", FlagKind::String)
            .add("unpack", FlagKind::Bool)
    } else {
        flags
            .add("from", FlagKind::String)
            .add("parents", FlagKind::Bool)
    };
    let v = flags.parse(name)?;
    let (srcs, dest) = inst.args.split_at(inst.args.len() - 1);
    let dest = dest[0].clone();
    if parse_heredoc(&dest).ok().flatten().is_some() {
        return Err(problem(
            format!("{name} cannot accept a heredoc as a destination"),
            Some(&dest),
        ));
    }
    let mut spec = CopySpec {
        dest,
        json: inst.json,
        from: v.get("from").map(String::from).filter(|s| !s.is_empty()),
        chown: v.get("chown").map(String::from).filter(|s| !s.is_empty()),
        chmod: v.get("chmod").map(String::from).filter(|s| !s.is_empty()),
        link: v.bool("link").unwrap_or(false),
        parents: v.bool("parents").unwrap_or(false),
        excludes: v.all("exclude"),
        checksum: v
            .get("checksum")
            .map(String::from)
            .filter(|s| !s.is_empty()),
        keep_git_dir: v.bool("keep-git-dir"),
        unpack: v.bool("unpack"),
        ..CopySpec::default()
    };
    for src in srcs {
        match parse_heredoc(src).ok().flatten() {
            Some(h) => {
                let mut doc = inst
                    .heredocs
                    .iter()
                    .find(|d| d.name == h.name)
                    .cloned()
                    .unwrap_or(h);
                doc.content = doc.body();
                doc.chomp = false;
                spec.inline.push(doc);
            }
            None => spec.sources.push(src.clone()),
        }
    }
    if let Some(from) = &spec.from {
        let expanded = Lexer::new('\\')
            .process_word(from, &NoEnv)
            .map(|p| p.result);
        if expanded.as_deref() != Ok(from.as_str()) {
            return Err(problem(
                "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                Some(from),
            ));
        }
    }
    if let Some(chmod) = &spec.chmod
        && !chmod.contains('$')
    {
        check_chmod(chmod)?;
    }
    if let Some(sum) = &spec.checksum {
        check_checksum_sources(&spec).map_err(|m| problem(m, Some(sum)))?;
        if !sum.contains('$') {
            check_checksum(sum)?;
        }
    }
    Ok(spec)
}

/// A word as the lexer reads it without variables: quotes and escapes removed.
fn unquote(word: &str) -> String {
    Lexer::new('\\')
        .process_word(word, &NoEnv)
        .map(|p| p.result)
        .unwrap_or_else(|_| word.to_string())
}

/// `ADD --checksum` needs exactly one source, an HTTP(S) URL or a Git repository. Sources that
/// still hold a `$` reference are judged after expansion, by the planner.
pub fn check_checksum_sources(spec: &CopySpec) -> Result<(), String> {
    if spec.sources.len() != 1 {
        return Err("checksum can't be specified for multiple sources".into());
    }
    let src = &spec.sources[0];
    if !src.contains('$') && !is_remote_source(src) {
        return Err(format!(
            "checksum requires HTTP(S) or Git sources (`{src}` is a local path)"
        ));
    }
    Ok(())
}

/// An `ADD` source BuildKit fetches itself: an `http(s)://` URL or a Git repository
/// (`git://`, `ssh://`, `git@host:path`, `github.com/…`).
pub fn is_remote_source(src: &str) -> bool {
    if src.starts_with("http://") || src.starts_with("https://") || src.starts_with("github.com/") {
        return true;
    }
    if let Some((proto, _)) = src.split_once("://")
        && !proto.is_empty()
        && proto.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return matches!(
            proto.to_ascii_lowercase().as_str(),
            "git" | "ssh" | "http" | "https"
        ) && (proto.eq_ignore_ascii_case("git")
            || proto.eq_ignore_ascii_case("ssh")
            || src
                .split(['#', '?'])
                .next()
                .is_some_and(|u| u.ends_with(".git")));
    }
    // scp-like `user@host:path`: ^[a-zA-Z0-9-_]+@[a-zA-Z0-9-.]+:
    let Some((user, rest)) = src.split_once('@') else {
        return false;
    };
    let Some((host, _)) = rest.split_once(':') else {
        return false;
    };
    !user.is_empty()
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// `STOPSIGNAL`: a signal number (not 0) or a Linux signal name, `SIG` optional, any case.
pub fn check_stop_signal(sig: &str) -> Result<(), String> {
    let invalid = || format!("invalid signal: {sig}");
    let digits = sig.strip_prefix(['+', '-']).unwrap_or(sig);
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        return match sig.parse::<i64>() {
            Ok(0) => Err(invalid()),
            Ok(_) => Ok(()),
            Err(_) => Err(invalid()),
        };
    }
    let upper = sig.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    const NAMES: [&str; 34] = [
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
    ];
    let realtime = name == "RTMIN"
        || name == "RTMAX"
        || (1..=15).any(|k| name == format!("RTMIN+{k}"))
        || (1..=14).any(|k| name == format!("RTMAX-{k}"));
    if NAMES.contains(&name) || realtime {
        return Ok(());
    }
    Err(invalid())
}

/// One `EXPOSE` word after expansion, as BuildKit reads a port spec
/// (`[[ip:]host:]port[-end][/proto]`); see [`super::expose`].
pub fn check_expose_port(raw: &str) -> Result<(), String> {
    super::expose::parse(raw).map(|_| ())
}

/// `--chmod`: octal (`755`, `0644`) or symbolic (`u=rwX,go=rX`, `+x`).
fn check_chmod(value: &str) -> Result<(), Problem> {
    if value.chars().all(|c| c.is_ascii_digit()) {
        if value.chars().all(|c| c < '8')
            && u32::from_str_radix(value, 8).is_ok_and(|m| m <= 0o7777)
        {
            return Ok(());
        }
        return Err(problem(
            format!("invalid chmod parameter `{value}`: octal mode must be at most 7777"),
            Some(value),
        ));
    }
    for clause in value.split(',') {
        let who_len = clause.chars().take_while(|c| "ugoa".contains(*c)).count();
        let mut rest = &clause[who_len..];
        if rest.is_empty() {
            return Err(problem(
                format!(
                    "invalid chmod parameter `{value}`: expected an octal mode or [ugoa][+-=][rwxXst]"
                ),
                Some(value),
            ));
        }
        while !rest.is_empty() {
            let Some(op) = rest.chars().next().filter(|c| "+-=".contains(*c)) else {
                return Err(problem(
                    format!(
                        "invalid chmod parameter `{value}`: expected an octal mode or [ugoa][+-=][rwxXst]"
                    ),
                    Some(value),
                ));
            };
            rest = &rest[op.len_utf8()..];
            let perm_len = rest
                .chars()
                .take_while(|c| "rwxXstugo".contains(*c))
                .count();
            rest = &rest[perm_len..];
        }
    }
    Ok(())
}

fn check_checksum(value: &str) -> Result<(), Problem> {
    let ok = match value.split_once(':') {
        Some(("sha256", hex)) => hex.len() == 64,
        Some(("sha384", hex)) => hex.len() == 96,
        Some(("sha512", hex)) => hex.len() == 128,
        _ => false,
    } && value
        .split_once(':')
        .is_some_and(|(_, h)| h.chars().all(|c| c.is_ascii_hexdigit()));
    // A git commit checksum (hex prefix) is also valid for git sources.
    let git = value.len() >= 7 && value.chars().all(|c| c.is_ascii_hexdigit());
    if ok || git {
        Ok(())
    } else {
        Err(problem(
            format!(
                "invalid checksum `{value}`: expected sha256:<64 hex digits> (or a git commit)"
            ),
            Some(value),
        ))
    }
}

/// Go's `time.ParseDuration`, in nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<i64, String> {
    let err = || format!("time: invalid duration {s:?}");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(err());
        }
        rest = &rest[num_len..];
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            _ => return Err(format!("time: unknown unit {unit:?} in duration {s:?}")),
        };
        let n: f64 = num.parse().map_err(|_| err())?;
        total += n * scale;
    }
    if total > i64::MAX as f64 {
        return Err(err());
    }
    let v = total.round() as i64;
    Ok(if neg { -v } else { v })
}

fn interval(values: &FlagValues, name: &str) -> Result<i64, Problem> {
    let Some(v) = values.get(name).filter(|v| !v.is_empty()) else {
        return Ok(0);
    };
    let d = parse_go_duration(v).map_err(|m| problem(m, Some(v)))?;
    if d == 0 {
        return Ok(0);
    }
    if d < 1_000_000 {
        return Err(problem(
            format!("Interval {name:?} cannot be less than 1ms"),
            Some(v),
        ));
    }
    Ok(d)
}

fn healthcheck(inst: &Instruction) -> Result<Healthcheck, Problem> {
    if inst.args.is_empty() {
        return Err(problem("HEALTHCHECK requires at least one argument", None));
    }
    let typ = inst.args[0].to_uppercase();
    let args = &inst.args[1..];
    if typ == "NONE" {
        if !args.is_empty() {
            return Err(problem("HEALTHCHECK NONE takes no arguments", None));
        }
        // BuildKit never reads flags on `HEALTHCHECK NONE`.
        return Ok(Healthcheck {
            test: vec!["NONE".into()],
            interval: 0,
            timeout: 0,
            start_period: 0,
            start_interval: 0,
            retries: 0,
        });
    }
    let v = Flags::new(&inst.flags)
        .add("interval", FlagKind::String)
        .add("timeout", FlagKind::String)
        .add("start-period", FlagKind::String)
        .add("start-interval", FlagKind::String)
        .add("retries", FlagKind::String)
        .parse("HEALTHCHECK")?;
    if typ != "CMD" {
        return Err(problem(
            format!(
                "Unknown type {:?} in HEALTHCHECK (try CMD)",
                inst.args[0].to_uppercase()
            ),
            Some(&inst.args[0]),
        ));
    }
    let line = command_line(inst, args);
    if line.args.is_empty() {
        return Err(problem("Missing command after HEALTHCHECK CMD", None));
    }
    let mut test = vec![if inst.json { "CMD" } else { "CMD-SHELL" }.to_string()];
    test.extend(line.args);
    let retries = match v.get("retries").filter(|r| !r.is_empty()) {
        None => 0,
        Some(r) => {
            let n: i64 = r
                .parse()
                .ok()
                .filter(|n: &i64| i32::try_from(*n).is_ok())
                .ok_or_else(|| {
                    problem(
                        format!("strconv.ParseInt: parsing {r:?}: invalid syntax"),
                        Some(r),
                    )
                })?;
            if n < 0 {
                return Err(problem(
                    format!("--retries cannot be negative ({n})"),
                    Some(r),
                ));
            }
            n
        }
    };
    Ok(Healthcheck {
        test,
        interval: interval(&v, "interval")?,
        timeout: interval(&v, "timeout")?,
        start_period: interval(&v, "start-period")?,
        start_interval: interval(&v, "start-interval")?,
        retries,
    })
}

/// CSV fields as Go's `encoding/csv` reads one record (quotes double to escape).
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut at_start = true;
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                    match chars.peek() {
                        None | Some(',') => {}
                        Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
                    }
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            ',' => {
                out.push(std::mem::take(&mut cur));
                at_start = true;
                continue;
            }
            '"' if at_start => quoted = true,
            '"' => return Err("bare \" in non-quoted-field".into()),
            _ => cur.push(c),
        }
        at_start = false;
    }
    if quoted {
        return Err("extraneous or missing \" in quoted-field".into());
    }
    out.push(cur);
    Ok(out)
}

const MOUNT_KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// Validates one `--mount` value the way BuildKit does once values are expanded; values that
/// still hold a `$` reference are only checked after expansion, by the planner.
pub fn parse_mount(value: &str) -> Result<Mount, Problem> {
    let fields = csv_fields(value)
        .map_err(|e| problem(format!("failed to parse csv mounts: {e}"), Some(value)))?;
    let mut m = Mount::default();
    let mut kind = MountType::Bind;
    for field in &fields {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (field.to_lowercase(), None),
        };
        let Some(val) = val else {
            match key.as_str() {
                "readonly" | "ro" | "readwrite" | "rw" => {}
                "required" => {
                    if !matches!(kind, MountType::Secret | MountType::Ssh) {
                        return Err(problem(
                            format!(
                                "unexpected key '{key}' for mount type '{}'",
                                mount_name(kind)
                            ),
                            Some(field),
                        ));
                    }
                }
                _ => {
                    return Err(problem(
                        format!("invalid field '{field}' must be a key=value pair"),
                        Some(field),
                    ));
                }
            }
            m.switches.push(key);
            continue;
        };
        if key == "from"
            && let Some(i) = val.find('$')
            && i != val.len() - 1
        {
            return Err(problem(
                "'from' doesn't support variable expansion, define alias stage instead",
                Some(field),
            ));
        }
        let deferred = val.contains('$');
        let bad_value = || problem(format!("invalid value for {key}: {val}"), Some(field));
        match key.as_str() {
            "type" => {
                if !deferred {
                    kind = match val.to_lowercase().as_str() {
                        "bind" => MountType::Bind,
                        "cache" => MountType::Cache,
                        "tmpfs" => MountType::Tmpfs,
                        "secret" => MountType::Secret,
                        "ssh" => MountType::Ssh,
                        _ => {
                            let hint =
                                suggest(val, ["bind", "cache", "tmpfs", "secret", "ssh"], true)
                                    .map(|s| format!(" (did you mean {s}?)"))
                                    .unwrap_or_default();
                            return Err(problem(
                                format!("unsupported mount type {val:?}{hint}"),
                                Some(field),
                            ));
                        }
                    };
                    m.kind = Some(kind);
                }
            }
            "from" | "source" | "src" | "target" | "dst" | "destination" | "id" | "env" => {}
            "readonly" | "ro" | "readwrite" | "rw" => {
                if !deferred && parse_go_bool(val).is_none() {
                    return Err(bad_value());
                }
            }
            "required" => {
                if !matches!(kind, MountType::Secret | MountType::Ssh) {
                    return Err(problem(
                        format!(
                            "unexpected key '{key}' for mount type '{}'",
                            mount_name(kind)
                        ),
                        Some(field),
                    ));
                }
                if !deferred && parse_go_bool(val).is_none() {
                    return Err(bad_value());
                }
            }
            "size" => {
                if kind != MountType::Tmpfs {
                    return Err(problem(
                        format!(
                            "unexpected key '{key}' for mount type '{}'",
                            mount_name(kind)
                        ),
                        Some(field),
                    ));
                }
                if !deferred && ram_in_bytes(val).is_none() {
                    return Err(bad_value());
                }
            }
            "sharing" => {
                if !deferred
                    && !matches!(val.to_lowercase().as_str(), "shared" | "private" | "locked")
                {
                    let hint = suggest(val, ["shared", "private", "locked"], true)
                        .map(|s| format!(" (did you mean {s}?)"))
                        .unwrap_or_default();
                    return Err(problem(
                        format!("unsupported sharing value {val:?}{hint}"),
                        Some(field),
                    ));
                }
            }
            "mode" => {
                if !deferred && u32::from_str_radix(val, 8).is_err() {
                    return Err(problem(
                        format!("invalid value {val} for mode"),
                        Some(field),
                    ));
                }
            }
            "uid" | "gid" => {
                if !deferred && val.parse::<u32>().is_err() {
                    return Err(problem(
                        format!("invalid value {val} for {key}"),
                        Some(field),
                    ));
                }
            }
            _ => {
                let hint = suggest(&key, MOUNT_KEYS, true)
                    .map(|s| format!(" (did you mean {s}?)"))
                    .unwrap_or_default();
                return Err(problem(
                    format!("unexpected key '{key}' in '{field}'{hint}"),
                    Some(field),
                ));
            }
        }
        m.options.push((key, val.to_string()));
    }
    let has = |k: &str| m.options.iter().any(|(n, _)| n == k);
    if !matches!(kind, MountType::Secret | MountType::Ssh | MountType::Cache) {
        for k in ["mode", "uid", "gid"] {
            if has(k) {
                return Err(problem(
                    format!("{k} not allowed for {:?} type mounts", mount_name(kind)),
                    Some(k),
                ));
            }
        }
    }
    if kind == MountType::Secret {
        if has("from") {
            return Err(problem("secret mount should not have a from", Some("from")));
        }
        if has("sharing") {
            return Err(problem(
                "secret mount should not define sharing",
                Some("sharing"),
            ));
        }
        let src = has("source") || has("src");
        let tgt = has("target") || has("dst") || has("destination");
        if !src && !tgt && !has("id") {
            return Err(problem(
                "invalid secret mount. one of source, target required",
                None,
            ));
        }
        if src && has("id") {
            return Err(problem("both source and id can't be set", None));
        }
    }
    if has("sharing") && kind != MountType::Cache {
        return Err(problem(
            format!("invalid cache sharing set for {} mount", mount_name(kind)),
            Some("sharing"),
        ));
    }
    let target = m
        .options
        .iter()
        .rev()
        .find(|(k, _)| matches!(k.as_str(), "target" | "dst" | "destination"));
    if let Some((key, value)) = target
        && value == "/"
        && !matches!(kind, MountType::Secret | MountType::Ssh)
    {
        return Err(problem(
            "invalid mount target \"/\": a mount cannot replace the root filesystem",
            Some(&format!("{key}=/")),
        ));
    }
    Ok(m)
}

/// Validates one `RUN --device` value (`name[,required[=bool]]` or `name=…`), as BuildKit reads
/// it. The stable frontend then refuses devices; see [`check`].
pub fn parse_device(value: &str) -> Result<(), String> {
    let fields = csv_fields(value).map_err(|e| format!("failed to parse csv devices: {e}"))?;
    let mut name = String::new();
    for field in &fields {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (field.to_lowercase(), None),
        };
        match (key.as_str(), val) {
            ("required", None) => {}
            (_, None) if name.is_empty() => name = field.clone(),
            (_, None) => return Err(format!("invalid field '{field}' must be a key=value pair")),
            ("name", Some(v)) => {
                if !name.is_empty() {
                    return Err(format!("device name already set to {name}"));
                }
                name = v.to_string();
            }
            ("required", Some(v)) => {
                if parse_go_bool(v).is_none() {
                    return Err(format!("invalid value for {key}: {v}"));
                }
            }
            (_, Some(_)) if name.is_empty() => name = field.clone(),
            (_, Some(_)) => {
                let hint = suggest(&key, ["name", "required"], true)
                    .map(|s| format!(" (did you mean {s}?)"))
                    .unwrap_or_default();
                return Err(format!("unexpected key '{key}' in '{field}'{hint}"));
            }
        }
    }
    Ok(())
}

fn mount_name(k: MountType) -> &'static str {
    match k {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// docker/go-units `RAMInBytes`: `64m`, `1.5g`, `512kb`, `1024` (binary multiples).
fn ram_in_bytes(s: &str) -> Option<i64> {
    let s = s.trim();
    let num_len = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let n: f64 = s[..num_len].parse().ok()?;
    let unit = s[num_len..].trim().to_lowercase();
    let mult: f64 = match unit.trim_end_matches(['b', 'i']) {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    if unit.len() > 3 {
        return None;
    }
    Some((n * mult) as i64)
}

impl Command {
    /// Validates one instruction and returns it typed.
    pub fn from_instruction(inst: &Instruction) -> Result<Command, Problem> {
        Ok(match inst.cmd.as_str() {
            "from" => {
                let args = &inst.args;
                let stage = match args.len() {
                    3 if args[1].eq_ignore_ascii_case("as") => {
                        let n = args[2].to_lowercase();
                        if !valid_stage_name(&n) {
                            return Err(problem(
                                format!(
                                    "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                                    args[2]
                                ),
                                Some(&args[2]),
                            ));
                        }
                        Some(n)
                    }
                    1 => None,
                    _ => {
                        return Err(problem(
                            "FROM requires either one or three arguments (FROM image [AS name])",
                            None,
                        ));
                    }
                };
                let v = Flags::new(&inst.flags)
                    .add("platform", FlagKind::String)
                    .parse("FROM")?;
                Command::From {
                    base: args[0].clone(),
                    name: stage,
                    platform: v
                        .get("platform")
                        .map(String::from)
                        .filter(|p| !p.is_empty()),
                }
            }
            "run" => {
                let v = Flags::new(&inst.flags)
                    .add("mount", FlagKind::Strings)
                    .add("network", FlagKind::String)
                    .add("security", FlagKind::String)
                    .add("device", FlagKind::Strings)
                    .parse("RUN")?;
                for d in v.all("device") {
                    parse_device(&d).map_err(|m| problem(m, Some(&d)))?;
                }
                let network = v.get("network").unwrap_or("default").to_string();
                let mut mounts = Vec::new();
                for m in v.all("mount") {
                    mounts.push(parse_mount(&m)?);
                }
                if !matches!(network.as_str(), "default" | "none" | "host") {
                    return Err(problem(
                        format!(
                            "invalid network mode {network:?} (expected default, none or host)"
                        ),
                        Some(&network),
                    ));
                }
                let security = v.get("security").unwrap_or("sandbox").to_string();
                if !matches!(security.as_str(), "sandbox" | "insecure") {
                    return Err(problem(
                        format!(
                            "security {security:?} is not valid (expected sandbox or insecure)"
                        ),
                        Some(&security),
                    ));
                }
                Command::Run {
                    command: command_line(inst, &inst.args),
                    mounts,
                    network,
                    security,
                }
            }
            "cmd" => {
                no_flags(inst)?;
                Command::Cmd(command_line(inst, &inst.args))
            }
            "entrypoint" => {
                no_flags(inst)?;
                Command::Entrypoint(command_line(inst, &inst.args))
            }
            "label" => {
                no_flags(inst)?;
                Command::Label(key_values(inst, "LABEL")?)
            }
            "env" => {
                no_flags(inst)?;
                Command::Env(key_values(inst, "ENV")?)
            }
            "maintainer" => {
                let m = exactly_one(inst, "MAINTAINER")?;
                no_flags(inst)?;
                Command::Maintainer(m)
            }
            "expose" => {
                if inst.args.is_empty() {
                    return Err(problem("EXPOSE requires at least one argument", None));
                }
                no_flags(inst)?;
                for raw in inst.args.iter().filter(|a| !a.contains('$')) {
                    let words = Lexer::new('\\')
                        .process_words(raw, &NoEnv)
                        .unwrap_or_default();
                    for w in words {
                        check_expose_port(&w).map_err(|m| problem(m, Some(raw)))?;
                    }
                }
                Command::Expose(inst.args.clone())
            }
            "add" => Command::Add(copy_spec(inst, true)?),
            "copy" => Command::Copy(copy_spec(inst, false)?),
            "volume" => {
                if inst.args.is_empty() {
                    return Err(problem("VOLUME requires at least one argument", None));
                }
                no_flags(inst)?;
                let mut vols = Vec::new();
                for v in &inst.args {
                    let v = v.trim();
                    // Shell-form words are expanded before use: `""` becomes empty.
                    if v.is_empty() || (!inst.json && !v.contains('$') && unquote(v).is_empty()) {
                        return Err(problem(
                            "VOLUME specified can not be an empty string",
                            Some(v).filter(|v| !v.is_empty()),
                        ));
                    }
                    vols.push(v.to_string());
                }
                Command::Volume(vols)
            }
            "user" => {
                let u = exactly_one(inst, "USER")?;
                no_flags(inst)?;
                Command::User(u)
            }
            "workdir" => {
                let w = exactly_one(inst, "WORKDIR")?;
                no_flags(inst)?;
                Command::Workdir(w)
            }
            "arg" => {
                if inst.args.is_empty() {
                    return Err(problem("ARG requires at least one argument", None));
                }
                // BuildKit never reads flags on ARG: `ARG --x=1 NAME` declares NAME.
                let mut decls = Vec::new();
                for a in &inst.args {
                    match a.split_once('=') {
                        Some(("", _)) => {
                            return Err(problem("ARG names can not be blank", Some(a)));
                        }
                        Some((k, v)) => decls.push(ArgDecl {
                            name: k.to_string(),
                            default: Some(v.to_string()),
                        }),
                        None => decls.push(ArgDecl {
                            name: a.clone(),
                            default: None,
                        }),
                    }
                }
                Command::Arg(decls)
            }
            "onbuild" => {
                let Some(inner) = &inst.onbuild else {
                    return Err(problem("ONBUILD requires at least one argument", None));
                };
                no_flags(inst)?;
                let trigger = inner.keyword.to_uppercase();
                match trigger.as_str() {
                    "ONBUILD" => {
                        return Err(problem(
                            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                            Some(&inner.keyword),
                        ));
                    }
                    "MAINTAINER" | "FROM" => {
                        return Err(problem(
                            format!("{trigger} isn't allowed as an ONBUILD trigger"),
                            Some(&inner.keyword),
                        ));
                    }
                    _ => {}
                }
                // The trigger itself must be valid, or every child build fails.
                if INSTRUCTIONS.contains(&inner.cmd.as_str()) {
                    Command::from_instruction(inner).map_err(|p| Problem {
                        message: format!("invalid ONBUILD trigger: {}", p.message),
                        near: p.near,
                    })?;
                }
                let original = inst.original.trim_start();
                let expr = original
                    .get(inst.keyword.len()..)
                    .unwrap_or("")
                    .trim_start()
                    .to_string();
                let mut expr = expr;
                for h in &inner.heredocs {
                    expr.push('\n');
                    expr.push_str(&h.content);
                    expr.push_str(&h.name);
                }
                Command::Onbuild(expr)
            }
            "stopsignal" => {
                // BuildKit never reads flags on STOPSIGNAL.
                let s = exactly_one(inst, "STOPSIGNAL")?;
                if !s.contains('$') {
                    let word = unquote(&s);
                    check_stop_signal(&word).map_err(|m| problem(m, Some(&s)))?;
                }
                Command::StopSignal(s)
            }
            "healthcheck" => Command::Healthcheck(healthcheck(inst)?),
            "shell" => {
                no_flags(inst)?;
                let line = command_line(inst, &inst.args);
                if line.args.is_empty() {
                    return Err(problem("SHELL requires at least one argument", None));
                }
                if !inst.json {
                    return Err(problem(not_json("SHELL", &inst.original), None));
                }
                Command::Shell(line.args)
            }
            _ => {
                let hint = suggest(&inst.keyword, INSTRUCTIONS, false)
                    .map(|s| format!(" (did you mean {s}?)"))
                    .unwrap_or_default();
                return Err(problem(
                    format!("unknown instruction: {}{hint}", inst.keyword),
                    Some(&inst.keyword),
                ));
            }
        })
    }
}

/// BuildKit's hint for `SHELL` (and other JSON-only forms) written with unescaped Windows paths.
fn not_json(command: &str, original: &str) -> String {
    let lower = original
        .to_lowercase()
        .replacen(&format!("{} ", command.to_lowercase()), "", 1);
    let unescaped_path = lower.contains('[')
        && lower.contains(']')
        && !lower.contains("\\\\")
        && lower
            .as_bytes()
            .windows(4)
            .any(|w| w[0] == b'"' && w[1].is_ascii_lowercase() && w[2] == b':' && w[3] == b'\\');
    let extra = if unescaped_path {
        format!(
            ". It looks like '{lower}' includes a file path without an escaped back-slash. JSON requires back-slashes to be escaped such as [\"c:\\\\path\\\\to\\\\file.exe\", \"/parameter\"]"
        )
    } else {
        String::new()
    };
    format!("{command} requires the arguments to be in JSON form{extra}")
}

/// A stage as `check` sees it.
#[derive(Debug, Clone)]
pub struct StageInfo {
    /// Index in the file.
    pub index: usize,
    /// Name (lower case), if any.
    pub name: Option<String>,
    /// Base as written.
    pub base: String,
    /// `--platform` as written.
    pub platform: Option<String>,
    /// Index of the `FROM` instruction.
    pub instruction: usize,
}

/// The result of checking a whole Dockerfile.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    /// One entry per instruction: the typed command, or `None` where it did not validate.
    pub commands: Vec<Option<Command>>,
    /// ARGs before the first FROM.
    pub global_args: Vec<ArgDecl>,
    /// Stages, in order.
    pub stages: Vec<StageInfo>,
    /// Everything wrong, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// `COPY --from` and `RUN --mount=from=` naming a stage of this file.
    pub stage_refs: Vec<StageRef>,
}

/// A `COPY --from` or `RUN --mount=from=` that names a stage of the Dockerfile.
#[derive(Debug, Clone)]
pub struct StageRef {
    /// Index of the instruction.
    pub instruction: usize,
    /// The stage the instruction is in.
    pub stage: usize,
    /// The stage it reads from.
    pub source: usize,
    /// `--from` / `from=` as written.
    pub written: String,
    /// For a mount: its target as written.
    pub mount_target: Option<String>,
}

pub use super::lint::LintConfig;

/// Where to point for a problem in `inst`.
pub fn locate(df: &Dockerfile, inst: &Instruction, near: Option<&str>) -> Location {
    let text = |n: usize| df.lines.get(n.wrapping_sub(1)).cloned().unwrap_or_default();
    if let Some(needle) = near.filter(|n| !n.is_empty()) {
        for n in inst.line..=inst.end_line.min(df.lines.len()) {
            let t = text(n);
            if let Some(idx) = t.find(needle) {
                return Location {
                    file: df.file.clone(),
                    line: n,
                    column: t[..idx].chars().count() + 1,
                    width: needle.chars().count(),
                    text: t,
                };
            }
        }
    }
    let t = text(inst.line);
    let col = t.chars().take_while(|c| c.is_whitespace()).count() + 1;
    let width = t
        .chars()
        .skip(col - 1)
        .take_while(|c| !c.is_whitespace())
        .count();
    Location {
        file: df.file.clone(),
        line: inst.line,
        column: col,
        width,
        text: t,
    }
}

/// Validates every instruction of a parsed Dockerfile, and the stage structure.
pub fn check(df: &Dockerfile) -> Checked {
    let mut out = Checked::default();
    let diag = |out: &mut Checked,
                inst: &Instruction,
                sev: Severity,
                message: String,
                near: Option<&str>| {
        out.diagnostics.push(Diagnostic {
            severity: sev,
            error: ParseError {
                location: locate(df, inst, near),
                message,
            },
        });
    };
    // BuildKit's linter finds `# check=` on its own (see `find_directive`).
    let directive = find_directive(&df.lines, "check");
    if let Some((Err(m), line)) = directive.map(|(v, line)| (LintConfig::parse(&v), line)) {
        {
            let text = df
                .lines
                .get(line.wrapping_sub(1))
                .cloned()
                .unwrap_or_default();
            out.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                error: ParseError {
                    location: Location {
                        file: df.file.clone(),
                        line,
                        column: 1,
                        width: text.chars().count().max(1),
                        text,
                    },
                    message: format!("failed to parse check options: {m}"),
                },
            });
        }
    }
    // `RUN --device` needs a labs frontend (`# syntax=docker/dockerfile:1-labs`).
    let labs = df
        .directives
        .syntax
        .as_deref()
        .is_some_and(|s| s.contains("labs"));
    // (instruction, stage, --from as written, mount target)
    let mut refs: Vec<(usize, usize, String, Option<String>)> = Vec::new();
    let mut seen_from = false;
    for inst in &df.instructions {
        seen_from |= inst.cmd == "from";
        let ignored_flags = match inst.cmd.as_str() {
            "arg" | "stopsignal" => true,
            "healthcheck" => inst
                .args
                .first()
                .is_some_and(|t| t.eq_ignore_ascii_case("none")),
            _ => false,
        };
        if ignored_flags && !inst.flags.is_empty() {
            let first = format!("--{}", inst.flags[0].trim_start_matches('-'));
            let first = first.split('=').next().unwrap_or("").to_string();
            diag(
                &mut out,
                inst,
                Severity::Warning,
                format!(
                    "{} ignored: BuildKit does not read flags on {}",
                    inst.flags.join(" "),
                    if inst.cmd == "healthcheck" {
                        "HEALTHCHECK NONE".to_string()
                    } else {
                        inst.cmd.to_uppercase()
                    }
                ),
                Some(&first),
            );
        }
        let cmd = match Command::from_instruction(inst) {
            Ok(_) if uses_devices(inst) && !labs => {
                let near = inst.flags.iter().find(|f| f.starts_with("--device"));
                let near = near.map(|f| f.split('=').next().unwrap_or(f).to_string());
                diag(
                    &mut out,
                    inst,
                    Severity::Error,
                    "device feature is only supported in Dockerfile frontend 1.14.0-labs or later (add `# syntax=docker/dockerfile:1-labs`)".into(),
                    near.as_deref(),
                );
                None
            }
            Ok(c) => Some(c),
            Err(p) => {
                diag(
                    &mut out,
                    inst,
                    Severity::Error,
                    p.message,
                    p.near.as_deref(),
                );
                None
            }
        };
        if let Some(inner) = &inst.onbuild
            && !INSTRUCTIONS.contains(&inner.cmd.as_str())
        {
            let hint = suggest(&inner.keyword, INSTRUCTIONS, false)
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default();
            diag(
                &mut out,
                inst,
                Severity::Warning,
                format!(
                    "unknown instruction in ONBUILD trigger: {}{hint}; builds FROM this image will fail",
                    inner.keyword
                ),
                Some(&inner.keyword),
            );
        }
        match &cmd {
            Some(Command::From {
                base,
                name,
                platform,
            }) => {
                let index = out.stages.len();
                out.stages.push(StageInfo {
                    index,
                    name: name.clone(),
                    base: base.clone(),
                    platform: platform.clone(),
                    instruction: out.commands.len(),
                });
            }
            Some(Command::Arg(decls)) if out.stages.is_empty() => {
                out.global_args.extend(decls.iter().cloned());
            }
            // A FROM that did not validate still opens a stage.
            _ if !seen_from && inst.cmd != "from" => {
                diag(
                    &mut out,
                    inst,
                    Severity::Error,
                    "no build stage in current context: only ARG may come before the first FROM"
                        .into(),
                    None,
                );
            }
            Some(Command::Copy(spec)) => {
                if let (Some(from), Some(current)) = (&spec.from, out.stages.len().checked_sub(1)) {
                    refs.push((out.commands.len(), current, from.clone(), None));
                }
            }
            Some(Command::Run { mounts, .. }) if !out.stages.is_empty() => {
                for m in mounts {
                    let get = |k: &str| {
                        m.options
                            .iter()
                            .rev()
                            .find(|(n, _)| n == k)
                            .map(|(_, v)| v.clone())
                    };
                    if let Some(from) = get("from").filter(|f| !f.is_empty()) {
                        let target = get("target")
                            .or_else(|| get("dst"))
                            .or_else(|| get("destination"))
                            .unwrap_or_default();
                        refs.push((out.commands.len(), out.stages.len() - 1, from, Some(target)));
                    }
                }
            }
            _ => {}
        }
        out.commands.push(cmd);
    }
    resolve_stage_refs(df, &mut out, refs);
    out
}

/// A RUN with a `--device` flag (under ONBUILD it only matters in the child build).
fn uses_devices(inst: &Instruction) -> bool {
    inst.cmd == "run"
        && inst
            .flags
            .iter()
            .take_while(|f| *f != "--")
            .any(|f| f == "--device" || f.starts_with("--device="))
}

/// Resolves `--from` names once every stage is known (a later stage of the same name wins, and
/// an index may name any stage) and reports dependency cycles, as BuildKit does before it
/// builds anything.
fn resolve_stage_refs(
    df: &Dockerfile,
    out: &mut Checked,
    refs: Vec<(usize, usize, String, Option<String>)>,
) {
    for (instruction, stage, written, mount_target) in refs {
        let inst = &df.instructions[instruction];
        let by_name = out
            .stages
            .iter()
            .rposition(|s| s.name.as_deref() == Some(written.to_lowercase().as_str()));
        let source = match written.parse::<i64>() {
            Ok(i) if mount_target.is_none() => {
                if i < 0 || i as usize >= out.stages.len() {
                    let m = format!(
                        "invalid stage index {i}: --from takes a stage name or a stage's index (0 to {})",
                        out.stages.len() - 1
                    );
                    out.diagnostics.push(Diagnostic {
                        severity: Severity::Error,
                        error: ParseError {
                            location: locate(df, inst, Some(&written)),
                            message: m,
                        },
                    });
                    continue;
                }
                i as usize
            }
            _ => match by_name {
                Some(i) => i,
                None => continue,
            },
        };
        out.stage_refs.push(StageRef {
            instruction,
            stage,
            source,
            written,
            mount_target,
        });
    }
    // A cycle: named after the first stage (in file order) whose dependencies lead into one.
    let n = out.stages.len();
    for root in 0..n {
        let mut path: Vec<usize> = Vec::new();
        let mut first_ref: Option<usize> = None;
        if let Some(r) = find_cycle(
            &out.stage_refs,
            root,
            &mut path,
            &mut vec![false; n],
            &mut first_ref,
        ) {
            let r = &out.stage_refs[first_ref.unwrap_or(r)];
            let inst = &df.instructions[r.instruction];
            let message = format!(
                "circular dependency detected on stage: {}",
                stage_label(&out.stages[root])
            );
            let location = locate(df, inst, Some(&r.written));
            out.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                error: ParseError { location, message },
            });
            return;
        }
    }
}

/// Depth-first search over stage references from `stage`; the reference that closes a cycle.
/// `first` is set to the reference the path started with.
fn find_cycle(
    refs: &[StageRef],
    stage: usize,
    path: &mut Vec<usize>,
    visited: &mut Vec<bool>,
    first: &mut Option<usize>,
) -> Option<usize> {
    if visited[stage] {
        return None;
    }
    visited[stage] = true;
    path.push(stage);
    for (i, r) in refs.iter().enumerate().filter(|(_, r)| r.stage == stage) {
        if path.len() == 1 {
            *first = Some(i);
        }
        if path.contains(&r.source) {
            return Some(i);
        }
        if let Some(c) = find_cycle(refs, r.source, path, visited, first) {
            return Some(c);
        }
    }
    path.pop();
    None
}

impl Checked {
    /// Errors for stages the build of `target` runs that copy or mount from a stage defined
    /// after them: BuildKit builds stages in file order, so that stage is not built yet.
    /// `bases` gives each stage's base stage, if it is built on one.
    pub fn later_stage_errors(
        &self,
        df: &Dockerfile,
        bases: &[Option<usize>],
        target: usize,
    ) -> Vec<Diagnostic> {
        let n = self.stages.len();
        if target >= n {
            return Vec::new();
        }
        let mut reachable = vec![false; n];
        let mut todo = vec![target];
        while let Some(s) = todo.pop() {
            if s >= n || reachable[s] {
                continue;
            }
            reachable[s] = true;
            if let Some(Some(b)) = bases.get(s) {
                todo.push(*b);
            }
            todo.extend(
                self.stage_refs
                    .iter()
                    .filter(|r| r.stage == s)
                    .map(|r| r.source),
            );
        }
        let mut out = Vec::new();
        for r in &self.stage_refs {
            if !reachable[r.stage] || r.source <= r.stage {
                continue;
            }
            let message = match &r.mount_target {
                None => format!(
                    "cannot copy from stage {}, it needs to be defined before current stage {}",
                    go_quote(&r.written),
                    go_quote(&stage_label(&self.stages[r.stage]))
                ),
                Some(t) => format!(
                    "cannot mount from stage {} to {}, stage needs to be defined before current command",
                    go_quote(&r.written),
                    go_quote(t)
                ),
            };
            let inst = &df.instructions[r.instruction];
            out.push(Diagnostic {
                severity: Severity::Error,
                error: ParseError {
                    location: locate(df, inst, Some(&r.written)),
                    message,
                },
            });
        }
        out
    }
}

fn stage_label(s: &StageInfo) -> String {
    s.name
        .clone()
        .unwrap_or_else(|| format!("stage-{}", s.index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::parse;

    fn problems(src: &str) -> Vec<String> {
        let df = parse(src.as_bytes(), "Dockerfile").unwrap();
        check(&df)
            .diagnostics
            .iter()
            .map(|d| d.error.message.clone())
            .collect()
    }

    #[test]
    fn flags_are_validated_with_suggestions() {
        assert_eq!(
            problems("FROM a\nCOPY --form=b x y\n"),
            ["unknown flag: --form (did you mean from?)"]
        );
        assert!(
            problems("FROM a\nCOPY --chown=a --chown=b x y\n")[0].starts_with("duplicate flag")
        );
        assert!(problems("FROM a\nCOPY --link=maybe x y\n")[0].starts_with("expecting boolean"));
        assert!(
            problems("FROM a\nCOPY --from x y\n")[0].starts_with("missing a value on flag: --from")
        );
        assert!(problems("FROM a\nENV --x=1 a=b\n")[0].contains("ENV takes no flags"));
        assert!(problems("FROM a\nCOPY --exclude=a --exclude=b -- --x y\n").is_empty());
    }

    #[test]
    fn mounts() {
        assert!(parse_mount("type=cache,target=/root/.cache,sharing=locked,id=x").is_ok());
        assert!(parse_mount("type=secret,id=npmrc,target=/x,required").is_ok());
        assert_eq!(
            parse_mount("type=foo,target=/x").unwrap_err().message,
            "unsupported mount type \"foo\""
        );
        assert_eq!(
            parse_mount("type=bnid").unwrap_err().message,
            "unsupported mount type \"bnid\" (did you mean bind?)"
        );
        assert!(
            parse_mount("type=secret,from=x,target=/y")
                .unwrap_err()
                .message
                .contains("should not have a from")
        );
        assert!(
            parse_mount("type=bind,mode=0755")
                .unwrap_err()
                .message
                .contains("mode not allowed")
        );
        assert!(parse_mount("type=tmpfs,size=64m").is_ok());
        assert!(parse_mount("type=bind,size=64m").is_err());
        assert!(parse_mount("type=cache,target=$T,uid=$UID").is_ok());
        assert!(parse_mount("from=$X,target=/x").is_err());
        assert!(
            parse_mount("type=bind,tagret=/x")
                .unwrap_err()
                .message
                .contains("did you mean target?")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("30s"), Ok(30_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert!(parse_go_duration("abc").is_err());
        assert!(parse_go_duration("10").is_err());
        assert!(
            problems("FROM a\nHEALTHCHECK --interval=1us CMD x\n")[0]
                .contains("cannot be less than 1ms")
        );
        assert!(
            problems("FROM a\nHEALTHCHECK --retries=-1 CMD x\n")[0].contains("cannot be negative")
        );
    }

    #[test]
    fn stages_and_from_targets() {
        assert!(problems("FROM a AS 1x\n")[0].starts_with("invalid name for build stage"));
        assert!(problems("FROM a AS b\nCOPY --from=b x y\n")[0].starts_with("circular dependency"));
        assert!(problems("FROM a\nCOPY --from=3 x y\n")[0].starts_with("invalid stage index 3"));
        assert!(
            problems("FROM a\nCOPY --from=$X x y\n")[0]
                .starts_with("variable expansion is not supported for --from")
        );
        assert!(problems("RUN x\nFROM a\n")[0].starts_with("no build stage"));
        assert!(problems("ARG X\nFROM a\nCOPY --from=other/image:1 x y\n").is_empty());
    }

    #[test]
    fn build_setup_checks() {
        assert_eq!(
            problems("FROM a\nEXPOSE 80/http\n"),
            ["invalid port: \"80/http\": invalid proto: http"]
        );
        assert_eq!(
            problems("FROM a\nEXPOSE 70000\n"),
            ["invalid containerPort: 70000"]
        );
        assert!(check_expose_port("9000-8000").is_err());
        for ok in [
            "80",
            "80/TCP",
            "7000-7010/udp",
            "8080/sctp",
            "127.0.0.1:8080:80",
            "[::1]:1:2",
            "5-5",
        ] {
            assert_eq!(check_expose_port(ok), Ok(()), "{ok}");
        }
        for ok in [
            "SIGTERM",
            "sigusr1",
            "KILL",
            "9",
            "-5",
            "SIGRTMIN+3",
            "RTMAX-14",
            "RTMAX",
        ] {
            assert_eq!(check_stop_signal(ok), Ok(()), "{ok}");
        }
        for bad in ["SIGBOGUS", "0", "RTMIN+16", "RTMAX-15", "SIGRTMIN+03", ""] {
            assert!(check_stop_signal(bad).is_err(), "{bad}");
        }
        assert_eq!(
            problems("FROM a\nVOLUME \"\"\n"),
            ["VOLUME specified can not be an empty string"]
        );
        assert!(
            problems("FROM a\nRUN --mount=type=cache,target=/ true\n")[0]
                .starts_with("invalid mount target \"/\"")
        );
        assert!(problems("FROM a\nRUN --mount=type=secret,id=x,target=/ true\n").is_empty());
        assert!(
            problems("FROM a\nADD --checksum=sha256:0 a b /c/\n")[0]
                .starts_with("checksum can't be specified for multiple sources")
        );
        assert!(
            problems("FROM a\nADD --checksum=sha256:0 a /c/\n")[0]
                .starts_with("checksum requires HTTP(S) or Git sources")
        );
        for remote in [
            "https://x/y.tgz",
            "git@github.com:a/b.git",
            "ssh://git@h/x",
            "git://h/x",
            "github.com/a/b",
            "HTTPS://h/x.git",
        ] {
            assert!(is_remote_source(remote), "{remote}");
        }
        for local in ["a.tgz", "./git@x:y", "HTTPS://h/x", "ftp://h/x"] {
            assert!(!is_remote_source(local), "{local}");
        }
    }

    #[test]
    fn lint_rules_are_not_check_problems() {
        // Stage-name lints are the linter's (see `lint`); `check` reports only a bad
        // `# check=` value.
        assert!(problems("FROM a AS b\nFROM c AS B\n").is_empty());
        assert!(problems("# check=error=true\nFROM a AS b\nFROM c AS B\n").is_empty());
        assert_eq!(
            problems("# check=error=maybe\nFROM a\n"),
            [
                "failed to parse check options: failed to parse check option \"error=maybe\": strconv.ParseBool: parsing \"maybe\": invalid syntax"
            ]
        );
        // Flags BuildKit never reads are only a warning.
        let df = parse(
            b"FROM a\nARG --x=1 V\nHEALTHCHECK --interval=1s NONE\n",
            "D",
        )
        .unwrap();
        let c = check(&df);
        assert!(
            c.diagnostics
                .iter()
                .all(|d| d.severity == Severity::Warning)
        );
        assert_eq!(
            c.commands[1],
            Some(Command::Arg(vec![ArgDecl {
                name: "V".into(),
                default: None
            }]))
        );
    }

    #[test]
    fn stage_references() {
        let df = parse(
            b"FROM a AS x\nCOPY --from=y a b\nFROM b AS y\nCOPY --from=x a b\n",
            "D",
        );
        assert_eq!(
            problems_of(&df.unwrap()),
            ["circular dependency detected on stage: x"]
        );
        let df = parse(
            b"FROM a AS x\nCOPY --from=y a b\nFROM b AS y\nFROM c\n",
            "D",
        )
        .unwrap();
        let c = check(&df);
        assert!(c.diagnostics.is_empty());
        assert!(c.later_stage_errors(&df, &[None, None, None], 2).is_empty());
        assert_eq!(
            c.later_stage_errors(&df, &[None, None, None], 0)[0]
                .error
                .message,
            "cannot copy from stage \"y\", it needs to be defined before current stage \"x\""
        );
        // An index may name a later stage too.
        assert!(problems("FROM a\nCOPY --from=1 a b\nFROM b\n").is_empty());
        assert!(problems("FROM a\nRUN --device=gpu x\n")[0].starts_with("device feature"));
        assert!(
            problems("# syntax=docker/dockerfile:1-labs\nFROM a\nRUN --device=gpu x\n").is_empty()
        );
    }

    fn problems_of(df: &crate::dockerfile::Dockerfile) -> Vec<String> {
        check(df)
            .diagnostics
            .iter()
            .map(|d| d.error.message.clone())
            .collect()
    }

    #[test]
    fn instruction_shapes() {
        assert_eq!(
            problems("FROM a\nSHELL powershell -c\n"),
            ["SHELL requires the arguments to be in JSON form"]
        );
        assert!(problems("FROM a\nSHELL [\"c:\\x.exe\"]\n")[0].contains("escaped back-slash"));
        assert!(problems("FROM a\nHEALTHCHECK CONNECT x\n")[0].contains("try CMD"));
        assert!(problems("FROM a\nONBUILD ONBUILD RUN x\n")[0].contains("Chaining ONBUILD"));
        assert!(
            problems("FROM a\nONBUILD FROM x\n")[0].contains("isn't allowed as an ONBUILD trigger")
        );
        assert!(
            problems("FROM a\nCOPY <<EOF <<EOF2\nx\nEOF\ny\nEOF2\n")[0]
                .contains("heredoc as a destination")
        );
        assert!(problems("FROM a\nUSER\n")[0].contains("exactly one argument"));
        assert!(problems("FROM a\nCOPY --chmod=999 a b\n")[0].contains("invalid chmod"));
        assert!(problems("FROM a\nCOPY --chmod=u=rwX,go=rX a b\n").is_empty());
    }
}
