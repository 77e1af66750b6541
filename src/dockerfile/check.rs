//! Per-instruction validation: flag names and values, argument counts, `RUN --mount` options,
//! `HEALTHCHECK` durations, stage names, `--from` targets. Turns each parsed [`Instruction`]
//! into a typed [`Command`] the planner builds from, and collects every problem with its
//! place in the file (BuildKit stops at the first; `wcbuild dockerfile check` lists them all).

use super::error::{Diagnostic, Location, ParseError, Severity, suggest};
use super::lexer::{Lexer, NoEnv};
use super::parser::{Dockerfile, Heredoc, INSTRUCTIONS, Instruction, parse_heredoc};

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
    if let Some(sum) = &spec.checksum
        && !sum.contains('$')
    {
        check_checksum(sum)?;
    }
    Ok(spec)
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
        no_flags(inst)?;
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
    Ok(m)
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
                    .parse("RUN")?;
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
                    if v.is_empty() {
                        return Err(problem("VOLUME specified can not be an empty string", None));
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
                no_flags(inst)?;
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
                let s = exactly_one(inst, "STOPSIGNAL")?;
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
}

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
    for inst in &df.instructions {
        let cmd = match Command::from_instruction(inst) {
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
                if let Some(n) = name {
                    if n == "scratch" || n == "context" {
                        let written = inst.args.get(2).map(String::as_str);
                        diag(
                            &mut out,
                            inst,
                            Severity::Warning,
                            format!(
                                "Stage name should not use the same name as reserved stage {n:?}"
                            ),
                            written,
                        );
                    }
                    if out.stages.iter().any(|s| s.name.as_deref() == Some(n)) {
                        let written = inst.args.get(2).map(String::as_str);
                        diag(
                            &mut out,
                            inst,
                            Severity::Error,
                            format!("Duplicate stage name {n:?}, stage names should be unique"),
                            written,
                        );
                    }
                }
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
            _ if out.stages.is_empty() && inst.cmd != "from" => {
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
                if let Some(from) = &spec.from {
                    let current = out.stages.len() - 1;
                    if let Ok(i) = from.parse::<i64>() {
                        if i < 0 || i as usize >= out.stages.len() {
                            let m = format!(
                                "invalid stage index {i}: --from takes a stage name or the index of an earlier stage (0 to {})",
                                out.stages.len() - 1
                            );
                            diag(&mut out, inst, Severity::Error, m, Some(from));
                        } else if i as usize == current {
                            let m = format!(
                                "circular dependency detected on stage: {}",
                                stage_label(&out.stages[current])
                            );
                            diag(&mut out, inst, Severity::Error, m, Some(from));
                        }
                    } else if out.stages[current].name.as_deref() == Some(&from.to_lowercase()) {
                        diag(
                            &mut out,
                            inst,
                            Severity::Error,
                            format!(
                                "circular dependency detected on stage: {}",
                                from.to_lowercase()
                            ),
                            Some(from),
                        );
                    }
                }
            }
            _ => {}
        }
        out.commands.push(cmd);
    }
    out
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
        assert!(problems("FROM a AS b\nFROM c AS B\n")[0].starts_with("Duplicate stage name"));
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
