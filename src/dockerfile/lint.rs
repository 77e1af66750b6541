//! BuildKit's Dockerfile linter (`frontend/dockerfile/linter`): the rule set with its names,
//! descriptions, URLs and message texts; the `# check=` / `BUILDKIT_DOCKERFILE_CHECK`
//! configuration and the per-instruction `# check=` comments; the rules that need only the
//! parsed file (casing, stage names, `MAINTAINER`, empty continuation lines, descriptions);
//! and the renderers of findings (BuildKit's text blocks, the JSON of `docker buildx build
//! --call=check,format=json`, the one-line summary a build prints).
//!
//! Pure. The rules that need variable scopes and base images (`UndefinedVar`,
//! `WorkdirRelativePath`, `InvalidBaseImagePlatform`, …) run in the planner, which walks the
//! stages as BuildKit's dispatcher does, and report through the same [`Linter`].
//!
//! Locations are BuildKit's: one range per source line of the instruction (heredoc bodies
//! included), columns 0; `NoEmptyContinuation` points at the last line of the instruction.

use super::check::{Checked, Command};
use super::error::{Severity, go_quote};
use super::ignore::IgnoreFile;
use super::parser::{Dockerfile, Instruction, directive_parts, find_directive};
use std::collections::BTreeMap;

/// One lint rule, as `linter/ruleset.go` defines it.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// `FromAsCasing`.
    pub name: &'static str,
    /// The rule's description.
    pub description: &'static str,
    /// Its documentation page; empty for `InvalidBaseImagePlatform`, which has none.
    pub url: &'static str,
    /// Runs only when `# check=experimental=` names it (or says `all`).
    pub experimental: bool,
}

macro_rules! rules {
    ($($id:ident = $name:literal, $slug:literal, $exp:literal, $desc:literal;)*) => {
        $(
            #[doc = concat!("`", $name, "`: ", $desc)]
            pub const $id: Rule = Rule {
                name: $name,
                description: $desc,
                url: if $slug.is_empty() {
                    ""
                } else {
                    concat!("https://docs.docker.com/go/dockerfile/rule/", $slug, "/")
                },
                experimental: $exp,
            };
        )*
        /// Every rule, in `ruleset.go` order.
        pub const RULES: &[&Rule] = &[$(&$id),*];
    };
}

rules! {
    STAGE_NAME_CASING = "StageNameCasing", "stage-name-casing", false,
        "Stage names should be lowercase";
    FROM_AS_CASING = "FromAsCasing", "from-as-casing", false,
        "The 'as' keyword should match the case of the 'from' keyword";
    NO_EMPTY_CONTINUATION = "NoEmptyContinuation", "no-empty-continuation", false,
        "Empty continuation lines will become errors in a future release";
    CONSISTENT_INSTRUCTION_CASING = "ConsistentInstructionCasing", "consistent-instruction-casing", false,
        "All commands within the Dockerfile should use the same casing (either upper or lower)";
    DUPLICATE_STAGE_NAME = "DuplicateStageName", "duplicate-stage-name", false,
        "Stage names should be unique";
    RESERVED_STAGE_NAME = "ReservedStageName", "reserved-stage-name", false,
        "Reserved words should not be used as stage names";
    JSON_ARGS_RECOMMENDED = "JSONArgsRecommended", "json-args-recommended", false,
        "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals";
    MAINTAINER_DEPRECATED = "MaintainerDeprecated", "maintainer-deprecated", false,
        "The MAINTAINER instruction is deprecated, use a label instead to define an image author";
    UNDEFINED_ARG_IN_FROM = "UndefinedArgInFrom", "undefined-arg-in-from", false,
        "FROM command must use declared ARGs";
    WORKDIR_RELATIVE_PATH = "WorkdirRelativePath", "workdir-relative-path", false,
        "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes";
    UNDEFINED_VAR = "UndefinedVar", "undefined-var", false,
        "Variables should be defined before their use";
    MULTIPLE_INSTRUCTIONS_DISALLOWED = "MultipleInstructionsDisallowed", "multiple-instructions-disallowed", false,
        "Multiple instructions of the same type should not be used in the same stage";
    LEGACY_KEY_VALUE_FORMAT = "LegacyKeyValueFormat", "legacy-key-value-format", false,
        "Legacy key/value format with whitespace separator should not be used";
    INVALID_BASE_IMAGE_PLATFORM = "InvalidBaseImagePlatform", "", false,
        "Base image platform does not match expected target platform";
    REDUNDANT_TARGET_PLATFORM = "RedundantTargetPlatform", "redundant-target-platform", false,
        "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior";
    SECRETS_USED_IN_ARG_OR_ENV = "SecretsUsedInArgOrEnv", "secrets-used-in-arg-or-env", false,
        "Sensitive data should not be used in the ARG or ENV commands";
    INVALID_DEFAULT_ARG_IN_FROM = "InvalidDefaultArgInFrom", "invalid-default-arg-in-from", false,
        "Default value for global ARG results in an empty or invalid base image name";
    FROM_PLATFORM_FLAG_CONST_DISALLOWED = "FromPlatformFlagConstDisallowed", "from-platform-flag-const-disallowed", false,
        "FROM --platform flag should not use a constant value";
    COPY_IGNORED_FILE = "CopyIgnoredFile", "copy-ignored-file", false,
        "Attempting to Copy file that is excluded by .dockerignore";
    INVALID_DEFINITION_DESCRIPTION = "InvalidDefinitionDescription", "invalid-definition-description", true,
        "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.";
    EXPOSE_PROTO_CASING = "ExposeProtoCasing", "expose-proto-casing", false,
        "Protocol in EXPOSE instruction should be lowercase";
    EXPOSE_INVALID_FORMAT = "ExposeInvalidFormat", "expose-invalid-format", false,
        "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release";
}

/// The rule called `name` (exact case, as `# check=skip=` compares).
pub fn rule_by_name(name: &str) -> Option<&'static Rule> {
    RULES.iter().copied().find(|r| r.name == name)
}

/// The message texts, as BuildKit formats them.
pub mod detail {
    /// StageNameCasing.
    pub fn stage_name_casing(name: &str) -> String {
        format!("Stage name '{name}' should be lowercase")
    }
    /// FromAsCasing.
    pub fn from_as_casing(from: &str, as_: &str) -> String {
        format!("'{as_}' and '{from}' keywords' casing do not match")
    }
    /// NoEmptyContinuation.
    pub fn no_empty_continuation() -> String {
        "Empty continuation line".into()
    }
    /// ConsistentInstructionCasing.
    pub fn consistent_instruction_casing(command: &str, casing: &str) -> String {
        format!("Command '{command}' should match the case of the command majority ({casing})")
    }
    /// DuplicateStageName.
    pub fn duplicate_stage_name(name: &str) -> String {
        format!(
            "Duplicate stage name {}, stage names should be unique",
            super::go_quote(name)
        )
    }
    /// ReservedStageName.
    pub fn reserved_stage_name(name: &str) -> String {
        format!(
            "Stage name should not use the same name as reserved stage {}",
            super::go_quote(name)
        )
    }
    /// JSONArgsRecommended.
    pub fn json_args_recommended(instruction: &str) -> String {
        format!(
            "JSON arguments recommended for {instruction} to prevent unintended behavior related to OS signals"
        )
    }
    /// MaintainerDeprecated.
    pub fn maintainer_deprecated() -> String {
        "Maintainer instruction is deprecated in favor of using label".into()
    }
    /// UndefinedArgInFrom.
    pub fn undefined_arg_in_from(arg: &str, suggestion: Option<&str>) -> String {
        let mut s = format!("FROM argument '{arg}' is not declared");
        if let Some(m) = suggestion {
            s.push_str(&format!(" (did you mean {m}?)"));
        }
        s
    }
    /// WorkdirRelativePath.
    pub fn workdir_relative_path(workdir: &str) -> String {
        format!(
            "Relative workdir {} can have unexpected results if the base image changes",
            super::go_quote(workdir)
        )
    }
    /// UndefinedVar.
    pub fn undefined_var(var: &str, suggestion: Option<&str>) -> String {
        let mut s = format!("Usage of undefined variable '${var}'");
        if let Some(m) = suggestion {
            s.push_str(&format!(" (did you mean ${m}?)"));
        }
        s
    }
    /// MultipleInstructionsDisallowed.
    pub fn multiple_instructions_disallowed(instruction: &str) -> String {
        format!(
            "Multiple {instruction} instructions should not be used in the same stage because only the last one will be used"
        )
    }
    /// LegacyKeyValueFormat.
    pub fn legacy_key_value_format(cmd: &str) -> String {
        format!("\"{cmd} key=value\" should be used instead of legacy \"{cmd} key value\" format")
    }
    /// InvalidBaseImagePlatform.
    pub fn invalid_base_image_platform(image: &str, expected: &str, actual: &str) -> String {
        format!(
            "Base image {image} was pulled with platform {}, expected {} for current build",
            super::go_quote(actual),
            super::go_quote(expected)
        )
    }
    /// RedundantTargetPlatform.
    pub fn redundant_target_platform(written: &str) -> String {
        format!(
            "Setting platform to predefined {written} in FROM is redundant as this is the default behavior"
        )
    }
    /// SecretsUsedInArgOrEnv.
    pub fn secrets_used_in_arg_or_env(instruction: &str, key: &str) -> String {
        format!(
            "Do not use ARG or ENV instructions for sensitive data ({instruction} {})",
            super::go_quote(key)
        )
    }
    /// InvalidDefaultArgInFrom.
    pub fn invalid_default_arg_in_from(base: &str) -> String {
        format!("Default value for ARG {base} results in empty or invalid base image name")
    }
    /// FromPlatformFlagConstDisallowed.
    pub fn from_platform_flag_const_disallowed(platform: &str) -> String {
        format!(
            "FROM --platform flag should not use constant value {}",
            super::go_quote(platform)
        )
    }
    /// CopyIgnoredFile (`cmd` is `Copy` or `Add`).
    pub fn copy_ignored_file(cmd: &str, file: &str) -> String {
        format!(
            "Attempting to {cmd} file {} that is excluded by .dockerignore",
            super::go_quote(file)
        )
    }
    /// InvalidDefinitionDescription.
    pub fn invalid_definition_description(instruction: &str, name: &str) -> String {
        format!("Comment for {instruction} should follow the format: `# {name} <description>`")
    }
    /// ExposeProtoCasing.
    pub fn expose_proto_casing(port: &str) -> String {
        format!("Defined protocol '{port}' in EXPOSE instruction should be lowercase")
    }
    /// ExposeInvalidFormat.
    pub fn expose_invalid_format(port: &str) -> String {
        format!(
            "EXPOSE instruction should not define an IP address or host-port mapping, found '{port}'"
        )
    }
}

/// `skip=<rules|all>;error=<bool>;experimental=<rules|all>`, as BuildKit's
/// `ParseLintOptions` reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LintConfig {
    /// `skip=all`.
    pub skip_all: bool,
    /// Rules named in `skip=`.
    pub skip: Vec<String>,
    /// `error=true`: findings fail the build.
    pub error: bool,
    /// `experimental=all`.
    pub experimental_all: bool,
    /// Experimental rules named in `experimental=`.
    pub experimental: Vec<String>,
}

/// The build argument that replaces the `# check=` directive.
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

impl LintConfig {
    /// Reads a `# check=` directive value: only the text before the first space counts.
    pub fn parse(directive: &str) -> Result<LintConfig, String> {
        LintConfig::parse_value(directive.split(' ').next().unwrap_or(""))
    }

    /// Reads a whole value (`BUILDKIT_DOCKERFILE_CHECK` is not cut at spaces); the messages
    /// are BuildKit's.
    pub fn parse_value(value: &str) -> Result<LintConfig, String> {
        let value = value.trim();
        let mut cfg = LintConfig::default();
        if value.is_empty() {
            return Ok(cfg);
        }
        let list =
            |v: &str| -> Vec<String> { v.split(',').map(|r| r.trim().to_string()).collect() };
        for part in value.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("invalid check option {}", go_quote(part)));
            };
            match k.trim() {
                "skip" if v.trim() == "all" => cfg.skip_all = true,
                "skip" => cfg.skip = list(v.trim()),
                "experimental" if v.trim() == "all" => cfg.experimental_all = true,
                "experimental" => cfg.experimental = list(v.trim()),
                "error" => {
                    let b = v.trim();
                    cfg.error = parse_go_bool(b).ok_or_else(|| {
                        format!(
                            "failed to parse check option {}: strconv.ParseBool: parsing {}: invalid syntax",
                            go_quote(part),
                            go_quote(b)
                        )
                    })?;
                }
                other => return Err(format!("invalid check option {}", go_quote(other))),
            }
        }
        Ok(cfg)
    }

    /// BuildKit's `WithMergedConfig`: skips and experimental rules are added; `error` stays.
    pub fn merged(&self, other: &LintConfig) -> LintConfig {
        let mut out = self.clone();
        out.skip_all |= other.skip_all;
        out.experimental_all |= other.experimental_all;
        out.skip.extend(other.skip.iter().cloned());
        out.experimental.extend(other.experimental.iter().cloned());
        out
    }

    /// The configuration for one instruction: the first of its comments that reads as a
    /// `check=` directive is merged in (one that does not parse leaves the configuration as
    /// it is), as BuildKit's `WithMergedConfigFromComments` does.
    pub fn with_comments(&self, comments: &[String]) -> LintConfig {
        for c in comments {
            let Some((key, value)) = directive_parts(c) else {
                continue;
            };
            if key != "check" {
                continue;
            }
            return match LintConfig::parse(value) {
                Ok(cfg) => self.merged(&cfg),
                Err(_) => self.clone(),
            };
        }
        self.clone()
    }

    /// Whether `rule` runs, and how its findings count: `None` when it is skipped (or is
    /// experimental and not enabled; `skip=` does not apply to experimental rules).
    pub fn severity(&self, rule: &Rule) -> Option<Severity> {
        let enabled = if rule.experimental {
            self.experimental_all || self.experimental.iter().any(|r| r == rule.name)
        } else {
            !(self.skip_all || self.skip.iter().any(|r| r == rule.name))
        };
        match (enabled, self.error) {
            (false, _) => None,
            (true, true) => Some(Severity::Error),
            (true, false) => Some(Severity::Warning),
        }
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

/// The file-wide configuration: `BUILDKIT_DOCKERFILE_CHECK` when given (it replaces the
/// directive), else `# check=`. An unreadable value gives the default configuration and the
/// error BuildKit fails with.
pub fn base_config(
    df: &Dockerfile,
    build_args: &BTreeMap<String, String>,
) -> (LintConfig, Option<String>) {
    if let Some(v) = build_args.get(CHECK_BUILD_ARG) {
        return match LintConfig::parse_value(v) {
            Ok(c) => (c, None),
            Err(e) => (
                LintConfig::default(),
                Some(format!("failed to parse build-arg:{CHECK_BUILD_ARG}: {e}")),
            ),
        };
    }
    match find_directive(&df.lines, "check") {
        None => (LintConfig::default(), None),
        Some((v, _)) => match LintConfig::parse(&v) {
            Ok(c) => (c, None),
            Err(e) => (
                LintConfig::default(),
                Some(format!("failed to parse check options: {e}")),
            ),
        },
    }
}

/// A place in the file, BuildKit style: 1-based line, 0-based character (always 0 for the
/// linter's ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 0-based character.
    pub character: usize,
}

/// A span of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range {
    /// First position.
    pub start: Position,
    /// Last position.
    pub end: Position,
}

impl Range {
    /// The whole of one line (character 0 to 0, as BuildKit writes it).
    pub fn line(line: usize) -> Range {
        let p = Position { line, character: 0 };
        Range { start: p, end: p }
    }
}

/// BuildKit's `toRanges`: one range per line from `start` to `end`.
pub fn line_ranges(start: usize, end: usize) -> Vec<Range> {
    (start..=end.max(start)).map(Range::line).collect()
}

/// Where BuildKit places a finding about `inst`: every line it spans.
pub fn instruction_ranges(inst: &Instruction) -> Vec<Range> {
    line_ranges(inst.line, inst.end_line)
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintWarning {
    /// The rule.
    pub rule: &'static Rule,
    /// The message, in BuildKit's words.
    pub detail: String,
    /// Where.
    pub ranges: Vec<Range>,
    /// A warning, or an error under `# check=error=true`.
    pub severity: Severity,
}

impl LintWarning {
    /// The first line it points at (0 when it has no place).
    pub fn line(&self) -> usize {
        self.ranges.first().map_or(0, |r| r.start.line)
    }

    /// BuildKit's short form, as a build's progress shows it:
    /// `FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 2)`.
    pub fn short(&self) -> String {
        let mut s = format!("{}: {}", self.rule.name, self.detail);
        if self.line() > 0 {
            s.push_str(&format!(" (line {})", self.line()));
        }
        s
    }
}

/// Collects findings, applying each instruction's configuration.
#[derive(Debug, Default, Clone)]
pub struct Linter {
    /// Findings in the order BuildKit reports them.
    pub warnings: Vec<LintWarning>,
}

impl Linter {
    /// Reports `rule` at `ranges` unless `cfg` skips it.
    pub fn run(
        &mut self,
        cfg: &LintConfig,
        rule: &'static Rule,
        ranges: Vec<Range>,
        detail: String,
    ) {
        if let Some(severity) = cfg.severity(rule) {
            self.warnings.push(LintWarning {
                rule,
                detail,
                ranges,
                severity,
            });
        }
    }
}

/// What the linter needs from outside the Dockerfile.
#[derive(Debug, Clone, Default)]
pub struct LintOptions {
    /// The build context's `.dockerignore` (for `CopyIgnoredFile`), when there is one.
    pub ignore: Option<IgnoreFile>,
    /// Lint every stage (`check` without `--target`, as `--call=check` does) rather than
    /// only the stages the target needs (a build).
    pub all_stages: bool,
    /// `--platform` was given: the base image's own platform is then not adopted, so a
    /// base for another platform is reported (`InvalidBaseImagePlatform`).
    pub explicit_platform: bool,
    /// The `Shell` of base images' configs, by the reference `FROM` names after expansion
    /// (a base with a `SHELL` silences `JSONArgsRecommended`).
    pub image_shells: BTreeMap<String, Vec<String>>,
}

/// The rules that need only the parsed file, in BuildKit's order: empty continuation lines,
/// then per instruction `MAINTAINER`, stage-name and `AS` casing and descriptions, then
/// reserved and duplicate stage names, then instruction casing.
pub fn lint_parsed(df: &Dockerfile, checked: &Checked, base: &LintConfig, out: &mut Linter) {
    for w in &df.warnings {
        out.run(
            base,
            &NO_EMPTY_CONTINUATION,
            vec![Range::line(w.location.line)],
            detail::no_empty_continuation(),
        );
    }
    for (i, inst) in df.instructions.iter().enumerate() {
        let cfg = base.with_comments(&inst.comments);
        let at = instruction_ranges(inst);
        match inst.cmd.as_str() {
            "maintainer" => out.run(
                &cfg,
                &MAINTAINER_DEPRECATED,
                at,
                detail::maintainer_deprecated(),
            ),
            "from" => {
                let args = &inst.args;
                if args.len() == 3 && args[2] != args[2].to_lowercase() {
                    out.run(
                        &cfg,
                        &STAGE_NAME_CASING,
                        at.clone(),
                        detail::stage_name_casing(&args[2]),
                    );
                }
                if args.len() >= 3 {
                    let kw = &inst.keyword;
                    let lower = *kw == kw.to_lowercase();
                    let upper = *kw == kw.to_uppercase();
                    let mismatch = (lower && args[1] != args[1].to_lowercase())
                        || (!lower && upper && args[1] != args[1].to_uppercase());
                    if mismatch {
                        out.run(
                            &cfg,
                            &FROM_AS_CASING,
                            at.clone(),
                            detail::from_as_casing(kw, &args[1]),
                        );
                    }
                }
                if let Some(Some(Command::From { name: Some(n), .. })) = checked.commands.get(i) {
                    definition_description(out, &cfg, "FROM", std::slice::from_ref(n), inst, at);
                }
            }
            "arg" => {
                if let Some(Some(Command::Arg(decls))) = checked.commands.get(i) {
                    let keys: Vec<String> = decls.iter().map(|d| d.name.clone()).collect();
                    definition_description(out, &cfg, "ARG", &keys, inst, at);
                }
            }
            _ => {}
        }
    }
    let mut seen: Vec<&str> = Vec::new();
    for st in &checked.stages {
        let Some(name) = st.name.as_deref() else {
            continue;
        };
        let inst = &df.instructions[st.instruction];
        if name == "scratch" || name == "context" {
            out.run(
                base,
                &RESERVED_STAGE_NAME,
                instruction_ranges(inst),
                detail::reserved_stage_name(name),
            );
        }
        if seen.contains(&name) {
            out.run(
                base,
                &DUPLICATE_STAGE_NAME,
                instruction_ranges(inst),
                detail::duplicate_stage_name(name),
            );
        }
        seen.push(name);
    }
    // Casing: the FROM keywords and every instruction of a stage (ARGs before the first
    // FROM are not counted); a tie counts as upper case.
    if let Some(first) = checked.stages.first() {
        let staged = &df.instructions[first.instruction..];
        let consistent = |k: &str| k == k.to_lowercase() || k == k.to_uppercase();
        let lower = staged
            .iter()
            .filter(|i| consistent(&i.keyword) && i.keyword == i.keyword.to_lowercase())
            .count();
        let upper = staged
            .iter()
            .filter(|i| consistent(&i.keyword) && i.keyword != i.keyword.to_lowercase())
            .count();
        let majority_lower = lower > upper;
        for inst in staged {
            let k = &inst.keyword;
            let casing = if majority_lower && *k != k.to_lowercase() {
                "lowercase"
            } else if !majority_lower && *k != k.to_uppercase() {
                "uppercase"
            } else {
                continue;
            };
            out.run(
                base,
                &CONSISTENT_INSTRUCTION_CASING,
                instruction_ranges(inst),
                detail::consistent_instruction_casing(k, casing),
            );
        }
    }
}

/// InvalidDefinitionDescription: the last comment before a named `FROM` or an `ARG` must
/// start with the name it describes.
fn definition_description(
    out: &mut Linter,
    cfg: &LintConfig,
    instruction: &str,
    keys: &[String],
    inst: &Instruction,
    at: Vec<Range>,
) {
    let (Some(last), Some(first_key)) = (inst.comments.last(), keys.first()) else {
        return;
    };
    let word = last.split(' ').next().unwrap_or("");
    if keys.iter().any(|k| k == word) {
        return;
    }
    let example = if keys.len() > 1 {
        "<arg_key>"
    } else {
        first_key.as_str()
    };
    out.run(
        cfg,
        &INVALID_DEFINITION_DESCRIPTION,
        at,
        detail::invalid_definition_description(instruction, example),
    );
}

/// SecretsUsedInArgOrEnv's test: one of `apikey auth credential credentials key password
/// pword passwd secret token` as a whole `_`-separated part of the name, in any case, and
/// none of `public file version`.
pub fn is_secret_key(key: &str) -> bool {
    // Go's (?i) folds the Kelvin sign to k and the long s to s.
    let fold = |s: &str| -> String {
        s.chars()
            .map(|c| match c {
                '\u{212a}' => 'k',
                '\u{17f}' => 's',
                c => c.to_ascii_lowercase(),
            })
            .collect()
    };
    let parts: Vec<String> = key.split('_').map(fold).collect();
    let has = |words: &[&str]| parts.iter().any(|p| words.contains(&p.as_str()));
    has(&[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ]) && !has(&["public", "file", "version"])
}

/// The message BuildKit fails a build with under `# check=error=true`, when a finding counts
/// as an error: `lint violation found for rules: A, B` (rules in order of first finding).
pub fn lint_error(warnings: &[LintWarning]) -> Option<String> {
    let mut rules: Vec<&str> = Vec::new();
    for w in warnings.iter().filter(|w| w.severity == Severity::Error) {
        if !rules.contains(&w.rule.name) {
            rules.push(w.rule.name);
        }
    }
    (!rules.is_empty()).then(|| format!("lint violation found for rules: {}", rules.join(", ")))
}

/// Findings ordered as BuildKit prints them: by first line, otherwise as found.
pub fn sorted(warnings: &[LintWarning]) -> Vec<&LintWarning> {
    let mut v: Vec<&LintWarning> = warnings.iter().collect();
    v.sort_by_key(|w| (!w.ranges.is_empty(), w.line()));
    v
}

/// The quoted source of `ranges` as BuildKit prints it under a finding: the file name and
/// first line, then the lines with `>>>` on those in range and a little context around.
pub fn source_excerpt(file: &str, source: &[u8], ranges: &[Range]) -> String {
    let text = String::from_utf8_lossy(source);
    let lines: Vec<&str> = text.split('\n').collect();
    let Some(first) = ranges.iter().map(|r| r.start.line).min() else {
        return String::new();
    };
    let last = ranges
        .iter()
        .map(|r| r.end.line.max(r.start.line))
        .max()
        .unwrap_or(first);
    if first > lines.len() || first < 1 {
        return String::new();
    }
    let (mut start, mut end) = (first, last.min(lines.len()));
    // errdefs.Source.Print's padding: up to two lines each side, four for a single line.
    let pad = if end == start { 4 } else { 2 };
    let mut p = 0;
    while p < pad {
        if start > 1 {
            start -= 1;
            p += 1;
        }
        if end != lines.len() {
            end += 1;
            p += 1;
        }
        p += 1;
    }
    let mut out = format!("{file}:{first}\n--------------------\n");
    for i in start..=end {
        let marked = ranges
            .iter()
            .any(|r| r.start.line <= i && r.end.line.max(r.start.line) >= i);
        let line = lines[i - 1].strip_suffix('\r').unwrap_or(lines[i - 1]);
        let pfx = if marked { ">>>" } else { "   " };
        out.push_str(&format!(" {i:>3} | {pfx} {line}\n"));
    }
    out.push_str("--------------------\n");
    out
}

/// Findings as BuildKit's check result prints them: per finding a blank line,
/// `WARNING: Rule - URL`, the detail, and the quoted source; ordered by line.
pub fn render_text(warnings: &[LintWarning], file: &str, source: &[u8]) -> String {
    let mut out = String::new();
    for w in sorted(warnings) {
        out.push_str(&format!("\nWARNING: {}", w.rule.name));
        if !w.rule.url.is_empty() {
            out.push_str(&format!(" - {}", w.rule.url));
        }
        out.push_str(&format!("\n{}\n", w.detail));
        out.push_str(&source_excerpt(file, source, &w.ranges));
    }
    out
}

/// The end-of-build summary BuildKit's clients print:
/// ` 2 warnings found:` then ` - Rule: detail (line N)` per finding; empty when none.
pub fn render_summary(warnings: &[LintWarning]) -> String {
    if warnings.is_empty() {
        return String::new();
    }
    let mut out = match warnings.len() {
        1 => " 1 warning found:\n".to_string(),
        n => format!(" {n} warnings found:\n"),
    };
    for w in warnings {
        out.push_str(&format!(" - {}\n", w.short()));
    }
    out
}

/// An error to put in the JSON result's `buildError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    /// The message.
    pub message: String,
    /// Where (may be empty).
    pub ranges: Vec<Range>,
}

// BuildKit's `LintResults` as Go marshals it: fields in struct order, `omitempty` honoured.
#[derive(serde::Serialize)]
struct JsonPosition {
    #[serde(skip_serializing_if = "is_zero")]
    line: usize,
    #[serde(skip_serializing_if = "is_zero")]
    character: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(serde::Serialize)]
struct JsonRange {
    start: JsonPosition,
    end: JsonPosition,
}

#[derive(serde::Serialize)]
struct JsonLocation {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ranges: Vec<JsonRange>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonWarning<'a> {
    rule_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    url: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    detail: &'a str,
    location: JsonLocation,
}

#[derive(serde::Serialize)]
struct JsonSource<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    filename: &'a str,
    #[serde(skip_serializing_if = "String::is_empty")]
    data: String,
    language: &'a str,
}

#[derive(serde::Serialize)]
struct JsonBuildError<'a> {
    message: &'a str,
    location: JsonLocation,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonResults<'a> {
    warnings: Option<Vec<JsonWarning<'a>>>,
    sources: Vec<JsonSource<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    build_error: Option<JsonBuildError<'a>>,
}

fn json_location(ranges: &[Range]) -> JsonLocation {
    let pos = |p: &Position| JsonPosition {
        line: p.line,
        character: p.character,
    };
    JsonLocation {
        ranges: ranges
            .iter()
            .map(|r| JsonRange {
                start: pos(&r.start),
                end: pos(&r.end),
            })
            .collect(),
    }
}

/// The JSON `docker buildx build --call=check,format=json` prints (BuildKit's `LintResults`,
/// indented as Go's `MarshalIndent` does, `<`, `>` and `&` escaped as Go escapes them):
/// `{"warnings": [{"ruleName", "description", "url", "detail", "location": {"ranges": […]}}],
/// "sources": [{"filename", "data", "language"}], "buildError": {…}}`. `warnings` is `null`
/// when there is none, as in BuildKit; `sourceIndex` 0 and characters 0 are left out (Go's
/// `omitempty`); `data` is the Dockerfile in base64. The source's `definition` (BuildKit's
/// LLB of the Dockerfile's context) has no wcbuild equivalent and is left out.
pub fn render_json(
    warnings: &[LintWarning],
    file: &str,
    source: &[u8],
    error: Option<&BuildError>,
) -> String {
    use base64::Engine as _;
    let list: Vec<JsonWarning> = warnings
        .iter()
        .map(|w| JsonWarning {
            rule_name: w.rule.name,
            description: w.rule.description,
            url: w.rule.url,
            detail: &w.detail,
            location: json_location(&w.ranges),
        })
        .collect();
    let results = JsonResults {
        warnings: (!list.is_empty()).then_some(list),
        sources: vec![JsonSource {
            filename: file,
            data: base64::engine::general_purpose::STANDARD.encode(source),
            language: "Dockerfile",
        }],
        build_error: error.map(|e| JsonBuildError {
            message: &e.message,
            location: json_location(&e.ranges),
        }),
    };
    let text = serde_json::to_string_pretty(&results).unwrap_or_default();
    go_html_escape(&text)
}

/// Go's `encoding/json` escapes `<`, `>`, `&`, U+2028 and U+2029 inside strings; in JSON
/// text they can only be inside strings, so a plain replacement is exact.
fn go_html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::{check, parse};

    fn lints(src: &str) -> Vec<String> {
        let df = parse(src.as_bytes(), "Dockerfile").unwrap();
        let checked = check(&df);
        let (cfg, _) = base_config(&df, &BTreeMap::new());
        let mut l = Linter::default();
        lint_parsed(&df, &checked, &cfg, &mut l);
        l.warnings
            .iter()
            .map(|w| format!("{}:{}:{}", w.line(), w.rule.name, w.detail))
            .collect()
    }

    #[test]
    fn rule_table_is_buildkits() {
        assert_eq!(RULES.len(), 22);
        assert_eq!(
            FROM_AS_CASING.url,
            "https://docs.docker.com/go/dockerfile/rule/from-as-casing/"
        );
        assert_eq!(INVALID_BASE_IMAGE_PLATFORM.url, "");
        assert!(
            RULES
                .iter()
                .any(|r| r.experimental && r.name == "InvalidDefinitionDescription")
        );
        assert_eq!(RULES.iter().filter(|r| r.experimental).count(), 1);
        assert_eq!(rule_by_name("UndefinedVar"), Some(&UNDEFINED_VAR));
        assert_eq!(rule_by_name("undefinedvar"), None);
    }

    #[test]
    fn config_parsing_merging_and_comments() {
        let c = LintConfig::parse("skip=A,B;error=true;experimental=all").unwrap();
        assert_eq!(c.skip, ["A", "B"]);
        assert!(c.error && c.experimental_all);
        assert!(!LintConfig::parse("skip=all error=maybe").unwrap().error);
        assert!(
            LintConfig::parse_value("skip=all error=maybe")
                .unwrap()
                .skip
                == ["all error=maybe"]
        );
        assert_eq!(
            LintConfig::parse("nope").unwrap_err(),
            "invalid check option \"nope\""
        );
        assert_eq!(
            LintConfig::parse("bogus=1").unwrap_err(),
            "invalid check option \"bogus\""
        );
        let base = LintConfig::parse("error=true").unwrap();
        let merged = base.with_comments(&[
            "not a directive".into(),
            "check=skip=FromAsCasing // why".into(),
            "check=skip=all".into(),
        ]);
        assert_eq!(merged.skip, ["FromAsCasing"]);
        assert!(merged.error && !merged.skip_all);
        assert_eq!(base.with_comments(&["check=broken".into()]), base);
        // skip= does not reach experimental rules; experimental= enables them.
        let all = LintConfig::parse("skip=all").unwrap();
        assert_eq!(all.severity(&FROM_AS_CASING), None);
        assert_eq!(all.severity(&INVALID_DEFINITION_DESCRIPTION), None);
        let exp = LintConfig::parse("skip=all;experimental=InvalidDefinitionDescription").unwrap();
        assert_eq!(
            exp.severity(&INVALID_DEFINITION_DESCRIPTION),
            Some(Severity::Warning)
        );
        assert_eq!(base.severity(&FROM_AS_CASING), Some(Severity::Error));
    }

    #[test]
    fn build_arg_replaces_the_directive() {
        let df = parse(b"#check=skip=all\nFROM scratch as base\n", "D").unwrap();
        let mut args = BTreeMap::new();
        assert!(base_config(&df, &args).0.skip_all);
        args.insert(
            CHECK_BUILD_ARG.to_string(),
            "skip=ConsistentInstructionCasing;error=true".into(),
        );
        let (c, e) = base_config(&df, &args);
        assert!(!c.skip_all && c.error && e.is_none());
        args.insert(CHECK_BUILD_ARG.to_string(), "error=maybe".into());
        assert!(base_config(&df, &args).1.unwrap().starts_with(
            "failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: failed to parse check option"
        ));
    }

    #[test]
    fn parse_level_rules() {
        assert_eq!(
            lints(
                "\n# c\n#\nFROM scratch AS BadStageName\n\nFROM scratch as base2\n\nFROM scratch AS base3\n"
            ),
            [
                "4:StageNameCasing:Stage name 'BadStageName' should be lowercase",
                "6:FromAsCasing:'as' and 'FROM' keywords' casing do not match",
            ]
        );
        assert_eq!(
            lints("from scratch AS base\nfrom scratch as base2\n"),
            ["1:FromAsCasing:'AS' and 'from' keywords' casing do not match"]
        );
        assert_eq!(
            lints("From scratch as base\nFROM scratch AS base2\n"),
            [
                "1:ConsistentInstructionCasing:Command 'From' should match the case of the command majority (uppercase)"
            ]
        );
        assert_eq!(
            lints("from scratch\nCOPY a /b\ncopy a /c\n"),
            [
                "2:ConsistentInstructionCasing:Command 'COPY' should match the case of the command majority (lowercase)"
            ]
        );
        // ARGs before the first FROM do not count.
        assert!(lints("arg A\narg B\nFROM scratch\nCOPY a b\n").is_empty());
        assert_eq!(
            lints("FROM scratch AS scratch\nFROM scratch AS context\nFROM scratch AS context\n"),
            [
                "1:ReservedStageName:Stage name should not use the same name as reserved stage \"scratch\"",
                "2:ReservedStageName:Stage name should not use the same name as reserved stage \"context\"",
                "3:ReservedStageName:Stage name should not use the same name as reserved stage \"context\"",
                "3:DuplicateStageName:Duplicate stage name \"context\", stage names should be unique",
            ]
        );
        assert_eq!(
            lints(
                "FROM scratch\nMAINTAINER me\n# check=skip=MaintainerDeprecated\nMAINTAINER you\n"
            ),
            ["2:MaintainerDeprecated:Maintainer instruction is deprecated in favor of using label"]
        );
        assert_eq!(
            lints("FROM scratch\nCOPY a \\\n\nb\n"),
            ["4:NoEmptyContinuation:Empty continuation line"]
        );
    }

    #[test]
    fn definition_descriptions() {
        let src = "# check=experimental=InvalidDefinitionDescription\n# bar this is the bar\nARG foo=bar\n# BasE this is the BasE image\nFROM scratch AS base\n# definitely a bad comment\nARG version=latest\n# definitely a bad comment\nARG foo=baz bar=qux baz=quux\n# foo ok\nARG foo\n#\nARG x\n";
        assert_eq!(
            lints(src),
            [
                "3:InvalidDefinitionDescription:Comment for ARG should follow the format: `# foo <description>`",
                "5:InvalidDefinitionDescription:Comment for FROM should follow the format: `# base <description>`",
                "7:InvalidDefinitionDescription:Comment for ARG should follow the format: `# version <description>`",
                "9:InvalidDefinitionDescription:Comment for ARG should follow the format: `# <arg_key> <description>`",
            ]
        );
        // Not run unless enabled.
        assert!(lints("# bar\nARG foo=bar\nFROM scratch\n").is_empty());
    }

    #[test]
    fn secret_names() {
        for yes in [
            "SECRET_PASSPHRASE",
            "SUPER_Secret",
            "password",
            "super_duper_secret_token",
            "auth",
            "apikey",
            "git_key",
            "\u{212a}EY",
        ] {
            assert!(is_secret_key(yes), "{yes}");
        }
        for no in [
            "sunflower",
            "PUBLIC_KEY",
            "public_token",
            "SECRET_PASSPHRASE_FILE",
            "password_file",
            "AUTH_MODULE_VERSION",
            "keys",
            "mykey",
        ] {
            assert!(!is_secret_key(no), "{no}");
        }
    }

    #[test]
    fn renderers() {
        let src =
            b"#check=skip=ConsistentInstructionCasing\nFROM scratch as base\ncopy Dockerfile .\n";
        let w = LintWarning {
            rule: &FROM_AS_CASING,
            detail: "'as' and 'FROM' keywords' casing do not match".into(),
            ranges: vec![Range::line(2)],
            severity: Severity::Warning,
        };
        assert_eq!(
            render_text(std::slice::from_ref(&w), "Dockerfile", src),
            "\nWARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n'as' and 'FROM' keywords' casing do not match\nDockerfile:2\n--------------------\n   1 |     #check=skip=ConsistentInstructionCasing\n   2 | >>> FROM scratch as base\n   3 |     copy Dockerfile .\n   4 |     \n--------------------\n"
        );
        assert_eq!(
            w.short(),
            "FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 2)"
        );
        assert_eq!(
            render_summary(std::slice::from_ref(&w)),
            " 1 warning found:\n - FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 2)\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render_json(
            std::slice::from_ref(&w),
            "Dockerfile",
            src,
            None,
        ))
        .unwrap();
        assert_eq!(json["warnings"][0]["ruleName"], "FromAsCasing");
        assert_eq!(
            json["warnings"][0]["location"],
            serde_json::json!({"ranges": [{"start": {"line": 2}, "end": {"line": 2}}]})
        );
        assert_eq!(json["sources"][0]["language"], "Dockerfile");
        assert!(json.get("buildError").is_none());
        let empty = render_json(&[], "Dockerfile", src, None);
        assert!(
            empty.starts_with("{\n  \"warnings\": null,\n  \"sources\": ["),
            "{empty}"
        );
        let d = LintWarning {
            rule: &INVALID_DEFINITION_DESCRIPTION,
            detail: detail::invalid_definition_description("ARG", "<arg_key>"),
            ranges: vec![],
            severity: Severity::Error,
        };
        assert!(
            render_json(std::slice::from_ref(&d), "D", b"", None).contains("\\u003carg_key\\u003e")
        );
        assert_eq!(
            lint_error(&[w.clone(), d.clone(), d]).as_deref(),
            Some("lint violation found for rules: InvalidDefinitionDescription")
        );
        assert_eq!(lint_error(&[w]), None);
    }
}
