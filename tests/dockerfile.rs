//! The Dockerfile front end against the corpus in `testdata/`: golden `parse --json` output for
//! every positive case (and again with CRLF line endings), pinned error text for every negative
//! case, golden expansion results, the command line's exit codes, and a fuzz test that feeds
//! arbitrary bytes.
//!
//! Set `WCBUILD_BLESS=1` to rewrite the golden files after a deliberate change; review the diff.

use std::path::{Path, PathBuf};
use std::process::Command;
use wcbuild::dockerfile::{self, Severity};
use wcbuild::image::Platform;
use wcbuild::ops::dockerfile::{Source, check, expand, expand_json};
use wcbuild::plan::PlanOptions;

fn testdata(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(sub)
}

fn cases(sub: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(testdata(sub))
        .unwrap_or_else(|e| panic!("testdata/{sub}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    v.sort();
    v
}

/// `WCBUILD_BLESS=1` (and only `1`) rewrites the golden files.
fn bless() -> bool {
    std::env::var("WCBUILD_BLESS").as_deref() == Ok("1")
}

/// Compares `actual` with the golden file, or writes it when blessing. Returns a failure
/// description instead of panicking so that one run reports every mismatch.
fn golden(path: &Path, actual: &str) -> Option<String> {
    golden_of(path, actual, false)
}

/// [`golden`] for an output that is an error where the case expects none (`error`): blessing
/// never pins such an error as a new golden; it may only rewrite a golden that already was
/// an error.
fn golden_of(path: &Path, actual: &str, error: bool) -> Option<String> {
    if bless() {
        let was_error = std::fs::read_to_string(path)
            .is_ok_and(|g| g.starts_with("error") || g.contains("error:"));
        if error && !was_error {
            return Some(format!(
                "{}: not blessed: the case now fails, and an error is never pinned as a new golden:\n{actual}",
                path.display()
            ));
        }
        std::fs::write(path, actual).unwrap();
        return None;
    }
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => None,
        Ok(expected) => Some(format!(
            "{}: output differs\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        )),
        Err(e) => Some(format!(
            "{}: {e} (run with WCBUILD_BLESS=1 to create it)",
            path.display()
        )),
    }
}

fn name_of(dir: &Path) -> String {
    format!("{}/Dockerfile", dir.file_name().unwrap().to_string_lossy())
}

fn parse_json(bytes: &[u8], name: &str) -> Result<String, String> {
    let df = dockerfile::parse(bytes, name).map_err(|e| e.to_string())?;
    Ok(serde_json::to_string_pretty(&df).unwrap() + "\n")
}

#[test]
fn corpus_parses_to_golden_json() {
    let all = cases("dockerfiles");
    assert!(
        all.len() >= 80,
        "the corpus has {} cases, expected at least 80",
        all.len()
    );
    let mut failures = Vec::new();
    for dir in &all {
        let bytes = std::fs::read(dir.join("Dockerfile")).unwrap();
        match parse_json(&bytes, &name_of(dir)) {
            Ok(json) => failures.extend(golden(&dir.join("parse.json"), &json)),
            Err(e) => failures.push(format!("{}: does not parse: {e}", dir.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

/// The whole corpus again with CRLF line endings gives the same result (heredoc bodies keep
/// their line endings as BuildKit keeps them, so those are compared with CR removed).
#[test]
fn corpus_parses_the_same_with_crlf() {
    let mut failures = Vec::new();
    let mut compared = 0;
    for dir in cases("dockerfiles") {
        let bytes = std::fs::read(dir.join("Dockerfile")).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        if text.contains('\r') {
            continue;
        }
        let crlf = text.replace('\n', "\r\n");
        let lf = dockerfile::parse(text.as_bytes(), "Dockerfile").unwrap();
        let mut cr = match dockerfile::parse(crlf.as_bytes(), "Dockerfile") {
            Ok(df) => df,
            Err(e) => {
                failures.push(format!(
                    "{}: CRLF version does not parse: {e}",
                    dir.display()
                ));
                continue;
            }
        };
        for inst in &mut cr.instructions {
            for doc in inst
                .heredocs
                .iter_mut()
                .chain(inst.onbuild.iter_mut().flat_map(|i| i.heredocs.iter_mut()))
            {
                assert!(doc.content.is_empty() || doc.content.ends_with("\r\n"));
                doc.content = doc.content.replace("\r\n", "\n");
            }
        }
        let a = serde_json::to_string_pretty(&lf).unwrap();
        let b = serde_json::to_string_pretty(&cr).unwrap();
        if a != b {
            failures.push(format!("{}: CRLF differs\n{a}\n---\n{b}", dir.display()));
        }
        compared += 1;
    }
    assert!(compared >= 80, "only {compared} cases compared");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn linux() -> PlanOptions {
    PlanOptions {
        build_args: Default::default(),
        target_platform: Platform::parse("linux/amd64").unwrap(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
        target: None,
        images: Default::default(),
    }
}

/// Every positive case also passes `check` without errors (warnings are allowed), unless
/// its folder holds a `check.txt` with the expected diagnostics.
#[test]
fn corpus_checks_clean_or_as_pinned() {
    let mut failures = Vec::new();
    for dir in cases("dockerfiles") {
        let src = Source {
            name: name_of(&dir),
            path: None,
            bytes: std::fs::read(dir.join("Dockerfile")).unwrap(),
        };
        let report = check(&src, &linux()).unwrap();
        let mut text: String = report
            .diagnostics
            .iter()
            .map(|d| format!("{d}\n"))
            .collect();
        let pinned = dir.join("check.txt");
        if pinned.exists() {
            text.extend(
                report
                    .lints
                    .iter()
                    .map(|w| format!("lint: {}\n", w.short())),
            );
        }
        if pinned.exists() || report.errors() > 0 {
            let new_error = !pinned.exists() && report.errors() > 0;
            failures.extend(golden_of(&pinned, &text, new_error));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Negative cases: the first error, as the user sees it, is pinned in `error.txt`.
#[test]
fn negative_cases_fail_with_pinned_errors() {
    let all = cases("dockerfiles-negative");
    assert!(all.len() >= 25, "only {} negative cases", all.len());
    let mut failures = Vec::new();
    for dir in &all {
        let src = Source {
            name: name_of(dir),
            path: None,
            bytes: std::fs::read(dir.join("Dockerfile")).unwrap(),
        };
        let message = match check(&src, &linux()) {
            Err(e) => format!("error: {e}\n"),
            Ok(report) => match report
                .diagnostics
                .iter()
                .find(|d| d.severity == Severity::Error)
            {
                Some(d) => format!("{d}\n"),
                None => {
                    failures.push(format!(
                        "{}: accepted, but it is a negative case",
                        dir.display()
                    ));
                    continue;
                }
            },
        };
        failures.extend(golden(&dir.join("error.txt"), &message));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// ARG scoping and expansion: each case has `args` (one `K=V` build argument a line, `@platform
/// P` or `@target T` lines for the other settings) and a golden `expand.json`.
#[test]
fn expansion_cases_match_golden() {
    let all = cases("expand");
    assert!(all.len() >= 15, "only {} expansion cases", all.len());
    let mut failures = Vec::new();
    for dir in &all {
        let mut opts = linux();
        if let Ok(args) = std::fs::read_to_string(dir.join("args")) {
            for line in args
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                if let Some(p) = line.strip_prefix("@platform ") {
                    opts.target_platform = Platform::parse(p.trim()).unwrap();
                } else if let Some(t) = line.strip_prefix("@target ") {
                    opts.target = Some(t.trim().to_string());
                } else if let Some((k, v)) = line.split_once('=') {
                    opts.build_args.insert(k.to_string(), v.to_string());
                }
            }
        }
        let src = Source {
            name: name_of(dir),
            path: None,
            bytes: std::fs::read(dir.join("Dockerfile")).unwrap(),
        };
        let (actual, error) = match expand(&src, &opts) {
            Err(e) => (format!("error: {e}\n"), true),
            Ok((df, Some(plan), _)) => (
                serde_json::to_string_pretty(&expand_json(&df, &plan)).unwrap() + "\n",
                false,
            ),
            Ok((_, None, diags)) => (diags.iter().map(|d| format!("{d}\n")).collect(), true),
        };
        failures.extend(golden_of(&dir.join("expand.json"), &actual, error));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A small deterministic generator, so the fuzz test needs no dependency and repeats exactly.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// No input makes the parser, the checker or the planner panic: arbitrary bytes, bytes drawn
/// from the Dockerfile alphabet, and mutations of every corpus file.
#[test]
fn fuzz_never_panics() {
    let corpus: Vec<Vec<u8>> = cases("dockerfiles")
        .iter()
        .chain(cases("dockerfiles-negative").iter())
        .map(|d| std::fs::read(d.join("Dockerfile")).unwrap())
        .collect();
    let alphabet: &[u8] = b"FROM RUN COPY ADD ENV ARG ONBUILD HEALTHCHECK CMD SHELL\n\r\t \\`#=\"'${}:-+?%/[]<<-EOF--from=--mount=type,\xef\xbb\xbf\xc3\xa9\x00\xff";
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let iterations: usize = std::env::var("WCBUILD_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6000);
    let opts = linux();
    for i in 0..iterations {
        let input: Vec<u8> = match i % 3 {
            0 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
            1 => (0..rng.below(400))
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect(),
            _ => {
                let mut b = corpus[rng.below(corpus.len())].clone();
                for _ in 0..1 + rng.below(8) {
                    if b.is_empty() {
                        break;
                    }
                    let at = rng.below(b.len());
                    match rng.below(4) {
                        0 => b[at] = alphabet[rng.below(alphabet.len())],
                        1 => {
                            b.remove(at);
                        }
                        2 => b.insert(at, alphabet[rng.below(alphabet.len())]),
                        _ => {
                            let end = (at + rng.below(40)).min(b.len());
                            let chunk = b[at..end].to_vec();
                            let to = rng.below(b.len());
                            b.splice(to..to, chunk);
                        }
                    }
                }
                b
            }
        };
        let result = std::panic::catch_unwind(|| {
            let src = Source {
                name: "fuzz".into(),
                path: None,
                bytes: input.clone(),
            };
            let _ = check(&src, &opts);
            let _ = expand(&src, &opts);
        });
        if result.is_err() {
            let path = std::env::temp_dir().join(format!("wcbuild-fuzz-crash-{i}"));
            std::fs::write(&path, &input).unwrap();
            panic!("input {i} panicked; saved to {}", path.display());
        }
    }
}

fn wcbuild(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_wcbuild"))
        .args(args)
        .env_remove("WCBUILD_ROOT")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_parse_json_from_stdin() {
    let (code, out, err) = wcbuild(
        &["dockerfile", "parse", "-f", "-", "--json"],
        Some(
            "# escape=`\nFROM mcr.microsoft.com/windows/nanoserver:ltsc2022\nCOPY --from=build --chmod=755 a C:\\app\\\n",
        ),
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["directives"]["escape"], "`");
    let copy = &v["instructions"][1];
    assert_eq!(copy["cmd"], "copy");
    assert_eq!(copy["line"], 3);
    assert_eq!(copy["end_line"], 3);
    assert_eq!(
        copy["flags"],
        serde_json::json!(["--from=build", "--chmod=755"])
    );
    assert_eq!(copy["json"], false);
    assert_eq!(copy["args"], serde_json::json!(["a", "C:\\app\\"]));
}

#[test]
fn cli_parse_errors_exit_1_and_point_at_the_line() {
    let (code, out, err) = wcbuild(
        &["dockerfile", "parse", "-f", "-"],
        Some("FROM a\n\nFORM b\n"),
    );
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.starts_with("error: -:3:1: unknown instruction: FORM (did you mean FROM?)"),
        "{err}"
    );
    assert!(err.contains(" 3 | FORM b\n   | ^^^^"), "{err}");
}

#[test]
fn cli_check_reports_every_problem() {
    let (code, _, err) = wcbuild(
        &["dockerfile", "check", "-f", "-"],
        Some("FROM a AS x\nCOPY --form=x a b\nRUN --network=bridge true\nFROM b AS X\n"),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("-:2:6: unknown flag: --form (did you mean from?)"),
        "{err}"
    );
    assert!(
        err.contains("-:3:15: invalid network mode \"bridge\""),
        "{err}"
    );
    // A duplicate stage name is only a lint (BuildKit's DuplicateStageName), printed as
    // BuildKit prints it...
    assert!(
        err.contains("\nWARNING: DuplicateStageName - https://docs.docker.com/go/dockerfile/rule/duplicate-stage-name/\nDuplicate stage name \"x\", stage names should be unique\n-:4\n--------------------\n"),
        "{err}"
    );
    assert!(err.contains("   4 | >>> FROM b AS X\n"), "{err}");
    assert!(err.contains("WARNING: StageNameCasing"), "{err}");
    assert!(err.contains("2 errors, 2 warnings"), "{err}");
    // ...an error with `# check=error=true`, which fails as BuildKit fails.
    let (code, _, err) = wcbuild(
        &["dockerfile", "check", "-f", "-"],
        Some("# check=error=true\nFROM a AS x\nFROM b AS x\n"),
    );
    assert_eq!(code, 1);
    assert!(err.contains("WARNING: DuplicateStageName"), "{err}");
    assert!(
        err.contains("error: lint violation found for rules: DuplicateStageName\n"),
        "{err}"
    );
    assert!(err.contains("1 error, 0 warnings"), "{err}");
    // Lint findings alone exit 1, as `docker buildx build --call=check` does; skipped
    // rules leave a clean file.
    let (code, _, err) = wcbuild(
        &["dockerfile", "check", "-f", "-"],
        Some("FROM a\nMAINTAINER me\n"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("0 errors, 1 warning"), "{err}");
    let (code, _, err) = wcbuild(
        &["dockerfile", "check", "-f", "-"],
        Some("# check=skip=MaintainerDeprecated\nFROM a\nMAINTAINER me\n"),
    );
    assert_eq!(code, 0, "{err}");
    // BUILDKIT_DOCKERFILE_CHECK replaces the directive.
    let (code, _, err) = wcbuild(
        &[
            "dockerfile",
            "check",
            "-f",
            "-",
            "--build-arg",
            "BUILDKIT_DOCKERFILE_CHECK=skip=all",
        ],
        Some("# check=error=true\nFROM a\nMAINTAINER me\n"),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = wcbuild(
        &["dockerfile", "check", "-f", "-"],
        Some("FROM a\nRUN true\n"),
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn cli_expand_applies_build_args_and_platform() {
    let df = "ARG TAG=1\nFROM --platform=$BUILDPLATFORM img:${TAG} AS b\nARG TARGETOS\nENV OS=$TARGETOS\nFROM b\nRUN echo $OS\n";
    let (code, out, err) = wcbuild(
        &[
            "dockerfile",
            "expand",
            "-f",
            "-",
            "--build-arg",
            "TAG=2",
            "--platform",
            "windows/amd64",
        ],
        Some(df),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("FROM img:2 AS b"), "{out}");
    assert!(out.contains("ENV OS=windows"), "{out}");
}

#[test]
fn cli_commands_not_built_exit_2_and_say_so() {
    // `check` is built: an argument it does not take is a usage error, not "not built".
    let (code, _, err) = wcbuild(&["check", "app:1.0"], None);
    assert_eq!(code, 2);
    assert!(!err.contains("not built yet"), "{err}");
}

#[test]
fn cli_usage_errors_exit_2() {
    let (code, _, _) = wcbuild(&["dockerfile", "parse", "--no-such-flag"], None);
    assert_eq!(code, 2);
    let (code, out, _) = wcbuild(&["--help"], None);
    assert_eq!(code, 0);
    for cmd in [
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
        "prune",
        "check",
        "layer",
        "dockerfile",
    ] {
        assert!(
            out.contains(&format!("  {cmd}")),
            "--help lacks {cmd}:\n{out}"
        );
    }
    let (code, _, _) = wcbuild(&["layer", "--help"], None);
    assert_eq!(code, 0);
}

#[test]
fn cli_check_json_is_buildkits_result() {
    let df = "FROM scratch as base\nCOPY a <b>/\n";
    let (code, out, err) = wcbuild(
        &["dockerfile", "check", "-f", "-", "--format", "json"],
        Some(df),
    );
    assert_eq!(code, 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 2, "{out}");
    let w = &v["warnings"][0];
    assert_eq!(w["ruleName"], "FromAsCasing");
    assert_eq!(
        w["description"],
        "The 'as' keyword should match the case of the 'from' keyword"
    );
    assert_eq!(
        w["url"],
        "https://docs.docker.com/go/dockerfile/rule/from-as-casing/"
    );
    assert_eq!(w["detail"], "'as' and 'FROM' keywords' casing do not match");
    assert_eq!(
        w["location"],
        serde_json::json!({"ranges": [{"start": {"line": 1}, "end": {"line": 1}}]})
    );
    assert_eq!(v["sources"][0]["filename"], "-");
    assert_eq!(v["sources"][0]["language"], "Dockerfile");
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD
        .decode(v["sources"][0]["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(data, df.as_bytes());
    // Field order and indentation are Go's MarshalIndent.
    assert!(
        out.starts_with("{\n  \"warnings\": [\n    {\n      \"ruleName\": \"FromAsCasing\",\n      \"description\""),
        "{out}"
    );
    // A clean file: `warnings` is null, as in BuildKit; exit 0.
    let (code, out, _) = wcbuild(
        &["dockerfile", "check", "-f", "-", "--format", "json"],
        Some("FROM scratch\nCOPY a /b\n"),
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["warnings"].is_null());
    // An error is the result's buildError.
    let (code, out, _) = wcbuild(
        &["dockerfile", "check", "-f", "-", "--format", "json"],
        Some("FROM scratch\nCOPY --form=x a b\n"),
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["buildError"]["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown flag: --form"),
        "{out}"
    );
    assert_eq!(v["buildError"]["location"]["ranges"][0]["start"]["line"], 2);
    // So is a file that does not parse.
    let (code, out, _) = wcbuild(
        &["dockerfile", "check", "-f", "-", "--format", "json"],
        Some("FROM scratch\nFORM x\n"),
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["warnings"].is_null());
    assert!(
        v["buildError"]["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown instruction: FORM"),
        "{out}"
    );
}

#[test]
fn cli_expand_shows_undefined_variables() {
    let (code, out, err) = wcbuild(
        // A Linux stage on any host (on a Windows host `FROM scratch` is a Windows stage).
        &[
            "dockerfile",
            "expand",
            "-f",
            "-",
            "--json",
            "--platform",
            "linux/amd64",
        ],
        Some("FROM scratch\nARG DIR_ASSETS=a\nCOPY $DIR_ASSET /x\nENV P=$PATH\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: -:3: UndefinedVar: Usage of undefined variable '$DIR_ASSET' (did you mean $DIR_ASSETS?)"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let steps = &v["stages"][0]["steps"];
    assert_eq!(steps[1]["unset"], serde_json::json!(["DIR_ASSET"]));
    assert!(steps[0].get("unset").is_none());
    // A Linux stage without PATH gets BuildKit's default, so $PATH is not blank.
    assert_eq!(
        steps[2]["args"][0],
        "P=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
}

/// The linter against `testdata/lint/<case>/`: each case is a build context (`Dockerfile`,
/// maybe `.dockerignore`) with `args` (`K=V` build arguments, `@target T`, `@platform P`,
/// `@image REF os/arch [K=V...]` for what a base image would tell the build) and a golden
/// `lint.txt`: one line per finding in BuildKit's order (`LINE[-END] Rule: detail`, `(error)`
/// under `error=true`), then the errors. Cases with a `lint.json` also pin the JSON result.
#[test]
fn lint_cases_match_golden() {
    use wcbuild::dockerfile::LintOptions;
    use wcbuild::ops::dockerfile::{check_with, read_ignore, render_lints_json};
    use wcbuild::plan::BaseImage;
    let all = cases("lint");
    assert!(all.len() >= 40, "only {} lint cases", all.len());
    let mut failures = Vec::new();
    let mut rules_seen = std::collections::BTreeSet::new();
    for dir in &all {
        let mut opts = linux();
        let mut explicit = false;
        if let Ok(args) = std::fs::read_to_string(dir.join("args")) {
            for line in args
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                if let Some(p) = line.strip_prefix("@platform ") {
                    opts.target_platform = Platform::parse(p.trim()).unwrap();
                    explicit = true;
                } else if let Some(t) = line.strip_prefix("@target ") {
                    opts.target = Some(t.trim().to_string());
                } else if let Some(img) = line.strip_prefix("@image ") {
                    let mut words = img.split_whitespace();
                    let name = words.next().unwrap().to_string();
                    let platform = Platform::parse(words.next().unwrap()).unwrap();
                    let env = words.map(String::from).collect();
                    opts.images.insert(name, BaseImage { platform, env });
                } else if let Some((k, v)) = line.split_once('=') {
                    opts.build_args.insert(k.to_string(), v.to_string());
                }
            }
        }
        let path = dir.join("Dockerfile");
        let src = Source {
            name: "Dockerfile".into(),
            path: Some(path.clone()),
            bytes: std::fs::read(&path).unwrap(),
        };
        let lint = LintOptions {
            ignore: read_ignore(&src, dir).unwrap(),
            all_stages: opts.target.is_none(),
            explicit_platform: explicit,
            ..LintOptions::default()
        };
        let report = check_with(&src, &opts, &lint).unwrap();
        let mut text = String::new();
        for w in &report.lints {
            rules_seen.insert(w.rule.name);
            let first = w.line();
            let last = w.ranges.last().map_or(first, |r| r.end.line);
            let span = if last > first {
                format!("{first}-{last}")
            } else {
                first.to_string()
            };
            let sev = if w.severity == Severity::Error {
                " (error)"
            } else {
                ""
            };
            text.push_str(&format!("{span} {}{sev}: {}\n", w.rule.name, w.detail));
        }
        for d in report
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
        {
            text.push_str(&format!(
                "error {}: {}\n",
                d.error.location.line, d.error.message
            ));
        }
        if let Some(e) = report.lint_error() {
            text.push_str(&format!("error: {e}\n"));
        }
        failures.extend(golden(&dir.join("lint.txt"), &text));
        let pinned_json = dir.join("lint.json");
        if pinned_json.exists() {
            failures.extend(golden(
                &pinned_json,
                &(render_lints_json(&report, &src) + "\n"),
            ));
        }
        let pinned_text = dir.join("lint-text.txt");
        if pinned_text.exists() {
            failures.extend(golden(
                &pinned_text,
                &wcbuild::ops::dockerfile::render_lints_text(&report, &src),
            ));
        }
    }
    // Every rule has a case that fires it.
    for rule in wcbuild::dockerfile::lint::RULES {
        if !rules_seen.contains(rule.name) {
            failures.push(format!("no lint case fires {}", rule.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
