//! The lint rules that need the planner's view of the build: variable scopes, base images and
//! stage reachability (`UndefinedVar`, `UndefinedArgInFrom`, `InvalidDefaultArgInFrom`,
//! `RedundantTargetPlatform`, `FromPlatformFlagConstDisallowed`, `InvalidBaseImagePlatform`,
//! `WorkdirRelativePath`, `JSONArgsRecommended`, `MultipleInstructionsDisallowed`,
//! `LegacyKeyValueFormat`, `SecretsUsedInArgOrEnv`, `ExposeProtoCasing`,
//! `ExposeInvalidFormat`, `CopyIgnoredFile`), each at the point of BuildKit's dispatcher where
//! it fires. The planner calls these helpers as it walks the stages; the findings are kept in
//! BuildKit's order: file-level rules, then `FROM` rules of every stage, then base-image
//! platforms, then each dispatched instruction.

use super::{Scope, format_platform};
use crate::dockerfile::check::CopySpec;
use crate::dockerfile::error::suggest;
use crate::dockerfile::expose;
use crate::dockerfile::ignore::{IgnoreFile, clean};
use crate::dockerfile::lint::{self, LintConfig, LintWarning, Linter, Range, detail};
use crate::dockerfile::{Dockerfile, Instruction};
use crate::image::Platform;
use std::collections::BTreeSet;

/// Build arguments BuildKit never reports as undefined (`nonEnvArgs`).
pub const NON_ENV_ARGS: [&str; 2] = ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// Findings gathered while planning, by phase.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// File-level rules and `InvalidDefaultArgInFrom`.
    pub parsed: Vec<LintWarning>,
    /// `FROM` rules of every stage.
    pub from: Vec<LintWarning>,
    /// Base-image platforms, by stage (kept only for stages that are linted).
    pub resolve: Vec<(usize, LintWarning)>,
    /// Instruction rules, by stage (likewise).
    pub dispatch: Vec<(usize, LintWarning)>,
}

impl Findings {
    /// Everything, in order, keeping the per-stage findings of `linted` stages only.
    pub fn finish(self, linted: &[bool]) -> Vec<LintWarning> {
        let keep =
            |(s, w): (usize, LintWarning)| linted.get(s).copied().unwrap_or(true).then_some(w);
        let mut out = self.parsed;
        out.extend(self.from);
        out.extend(self.resolve.into_iter().filter_map(keep));
        out.extend(self.dispatch.into_iter().filter_map(keep));
        out
    }
}

/// Runs `f` against a fresh linter and returns what it found.
pub(crate) fn collect(f: impl FnOnce(&mut Linter)) -> Vec<LintWarning> {
    let mut l = Linter::default();
    f(&mut l);
    l.warnings
}

/// What BuildKit's dispatch state carries that the linter reads, per stage; a stage built on
/// another starts with its base's.
#[derive(Debug, Clone, Default)]
pub(crate) struct StageLint {
    /// ARG names declared so far (with or without a value), base stages included.
    pub args: Vec<String>,
    /// A WORKDIR was given in this stage or a stage it is built on.
    pub workdir_set: bool,
    /// A SHELL is set (by the stage chain or the base image's config).
    pub shell_set: bool,
    /// The last CMD, ENTRYPOINT and HEALTHCHECK of this stage (instruction indexes); not
    /// inherited.
    pub cmd: Option<usize>,
    /// See `cmd`.
    pub entrypoint: Option<usize>,
    /// See `cmd`.
    pub healthcheck: Option<usize>,
}

impl StageLint {
    /// The state a stage built on this one starts with.
    pub fn child(&self) -> StageLint {
        StageLint {
            args: self.args.clone(),
            workdir_set: self.workdir_set,
            shell_set: self.shell_set,
            ..StageLint::default()
        }
    }
}

/// UndefinedVar for the names one expanded word left unset: ARGs declared in the stage (even
/// without a value) and BuildKit's internal names do not count; the suggestion comes from the
/// variables set (case-sensitive, as BuildKit's Linux frontend compares).
pub(crate) fn undefined_vars(
    out: &mut Linter,
    cfg: &LintConfig,
    at: &[Range],
    unmatched: &BTreeSet<String>,
    declared: &[String],
    scope: &Scope,
) {
    for name in unmatched {
        if declared.contains(name) || NON_ENV_ARGS.contains(&name.as_str()) {
            continue;
        }
        // An empty key (`ENV $UNSET=x`) is never offered: BuildKit drops an empty match.
        let keys = scope
            .vars()
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !k.is_empty());
        let hint = suggest(name, keys, true);
        out.run(
            cfg,
            &lint::UNDEFINED_VAR,
            at.to_vec(),
            detail::undefined_var(name, hint.as_deref()),
        );
    }
}

/// UndefinedArgInFrom for names a `FROM` line left unset that no global ARG declares.
pub(crate) fn undefined_from_args(
    out: &mut Linter,
    cfg: &LintConfig,
    at: &[Range],
    unmatched: &BTreeSet<String>,
    known: &BTreeSet<String>,
) {
    for name in unmatched {
        if known.contains(name) {
            continue;
        }
        let hint = suggest(name, known.iter().map(String::as_str), true);
        out.run(
            cfg,
            &lint::UNDEFINED_ARG_IN_FROM,
            at.to_vec(),
            detail::undefined_arg_in_from(name, hint.as_deref()),
        );
    }
}

/// BuildKit's `system.IsAbs` for a WORKDIR path on `os`: on Windows an optional `C:` drive
/// (any other drive, `C:` alone and UNC paths are not absolute) and `\` or `/` separators.
pub fn is_abs_path(path: &str, os: &str) -> bool {
    if os != "windows" {
        return path.starts_with('/');
    }
    let b = path.as_bytes();
    if b.len() == 2 && b[1] == b':' {
        return false;
    }
    let slash = |s: &str| s.replace('\\', "/");
    if path.len() >= 2 && path.is_char_boundary(2) && slash(&path[..2]) == "//" {
        return false;
    }
    match path.split_once(':') {
        None => slash(path).starts_with('/'),
        Some((drive, rest)) => drive.eq_ignore_ascii_case("c") && slash(rest).starts_with('/'),
    }
}

/// The platform BuildKit asks the registry for when neither `FROM --platform` nor
/// `--platform` says: the target's, unless the image is for the build platform
/// (`autoDetectPlatform`).
pub fn autodetect_platform(image: &Platform, target: &Platform, build: &Platform) -> Platform {
    // wcbuild builds Windows stages on any host: with no --platform, a Windows base is what
    // the stage is for (a deliberate difference: BuildKit on Linux would report it).
    if image.os == "windows" && target.os != "windows" {
        return image.clone();
    }
    if target.os == image.os && target.architecture == image.architecture {
        target.clone()
    } else if build.os == image.os && build.architecture == image.architecture {
        build.clone()
    } else {
        target.clone()
    }
}

/// InvalidBaseImagePlatform: the base image's os/arch is not the one asked for.
pub(crate) fn base_image_platform(
    out: &mut Linter,
    cfg: &LintConfig,
    at: &[Range],
    image: &str,
    expected: &Platform,
    actual: &Platform,
) {
    if expected.os != actual.os || expected.architecture != actual.architecture {
        out.run(
            cfg,
            &lint::INVALID_BASE_IMAGE_PLATFORM,
            at.to_vec(),
            detail::invalid_base_image_platform(
                image,
                &format_platform(expected, true),
                &format_platform(actual, true),
            ),
        );
    }
}

/// The `FROM --platform` rules, given how its value expanded.
pub(crate) fn from_platform(
    out: &mut Linter,
    cfg: &LintConfig,
    at: &[Range],
    written: &str,
    expanded: &crate::dockerfile::lexer::Processed,
    target_platform: Option<&str>,
    stage_name: &str,
) {
    let (m, u) = (&expanded.matched, &expanded.unmatched);
    if m.len() == 1
        && u.is_empty()
        && m.contains("TARGETPLATFORM")
        && target_platform == Some(expanded.result.as_str())
    {
        out.run(
            cfg,
            &lint::REDUNDANT_TARGET_PLATFORM,
            at.to_vec(),
            detail::redundant_target_platform(written),
        );
    }
    if m.is_empty()
        && u.is_empty()
        && let Ok(p) = Platform::parse(&expanded.result)
        && !stage_name.contains(&p.os)
        && !stage_name.contains(&p.architecture)
    {
        out.run(
            cfg,
            &lint::FROM_PLATFORM_FLAG_CONST_DISALLOWED,
            at.to_vec(),
            detail::from_platform_flag_const_disallowed(&expanded.result),
        );
    }
}

/// ExposeProtoCasing and ExposeInvalidFormat for the expanded port words.
pub(crate) fn expose_ports(out: &mut Linter, cfg: &LintConfig, at: &[Range], ports: &[String]) {
    for p in ports {
        let Ok(spec) = expose::parse_spec(p) else {
            return;
        };
        if spec.proto_not_lowercase {
            out.run(
                cfg,
                &lint::EXPOSE_PROTO_CASING,
                at.to_vec(),
                detail::expose_proto_casing(p),
            );
        }
        if spec.has_host_part {
            out.run(
                cfg,
                &lint::EXPOSE_INVALID_FORMAT,
                at.to_vec(),
                detail::expose_invalid_format(p),
            );
        }
    }
}

/// CopyIgnoredFile for the local sources of a `COPY` from the context or an `ADD`. Skipped
/// without a `.dockerignore`, or when it has `!` exceptions (BuildKit cannot tell then); the
/// context root (`.`, `/`) counts only when a pattern is `*`, `**` or `**/*`.
pub(crate) fn copy_ignored(
    out: &mut Linter,
    cfg: &LintConfig,
    at: &[Range],
    ignore: Option<&IgnoreFile>,
    spec: &CopySpec,
    add: bool,
) {
    let Some(ignore) = ignore.filter(|i| !i.is_empty() && !i.has_exceptions()) else {
        return;
    };
    for src in &spec.sources {
        if src.starts_with("http://")
            || src.starts_with("https://")
            || crate::dockerfile::check::is_remote_source(src)
        {
            continue;
        }
        let src = clean(src);
        if (src == "." || src == "/")
            && !ignore
                .patterns()
                .iter()
                .any(|p| matches!(p.text(), "*" | "**" | "**/*"))
        {
            continue;
        }
        if ignore.matches_or_parent_matches(&src) {
            out.run(
                cfg,
                &lint::COPY_IGNORED_FILE,
                at.to_vec(),
                detail::copy_ignored_file(if add { "Add" } else { "Copy" }, &src),
            );
        }
    }
}

/// Where a finding about instruction `i` goes.
pub(crate) fn at(df: &Dockerfile, i: usize) -> Vec<Range> {
    df.instructions
        .get(i)
        .map(lint::instruction_ranges)
        .unwrap_or_default()
}

/// The configuration for instruction `i` (its `# check=` comments merged).
pub(crate) fn config_for(base: &LintConfig, inst: Option<&Instruction>) -> LintConfig {
    match inst {
        Some(i) => base.with_comments(&i.comments),
        None => base.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_per_os() {
        assert!(is_abs_path("/app", "linux"));
        assert!(!is_abs_path("app/", "linux"));
        assert!(!is_abs_path("C:\\app", "linux"));
        for abs in ["C:\\app", "c:/app", "\\app", "/app"] {
            assert!(is_abs_path(abs, "windows"), "{abs}");
        }
        for rel in ["app", "C:", "C:app", "D:\\app", "\\\\server\\share", "//x"] {
            assert!(!is_abs_path(rel, "windows"), "{rel}");
        }
    }

    #[test]
    fn platform_autodetection() {
        let linux = Platform::parse("linux/amd64").unwrap();
        let arm = Platform::parse("linux/arm64").unwrap();
        let win = Platform::parse("windows/amd64").unwrap();
        assert_eq!(autodetect_platform(&win, &win, &linux), win);
        assert_eq!(autodetect_platform(&linux, &arm, &linux), linux);
        // A Windows base on a Linux target is what a Windows stage is for in wcbuild.
        assert_eq!(autodetect_platform(&win, &arm, &linux), win);
        assert_eq!(autodetect_platform(&win, &linux, &linux), win);
    }
}
