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

fn bless() -> bool {
    std::env::var_os("WCBUILD_BLESS").is_some()
}

/// Compares `actual` with the golden file, or writes it when blessing. Returns a failure
/// description instead of panicking so that one run reports every mismatch.
fn golden(path: &Path, actual: &str) -> Option<String> {
    if bless() {
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
        let text: String = report
            .diagnostics
            .iter()
            .map(|d| format!("{d}\n"))
            .collect();
        let pinned = dir.join("check.txt");
        if pinned.exists() || report.errors() > 0 {
            failures.extend(golden(&pinned, &text));
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
        let actual = match expand(&src, &opts) {
            Err(e) => format!("error: {e}\n"),
            Ok((df, Some(plan), _)) => {
                serde_json::to_string_pretty(&expand_json(&df, &plan)).unwrap() + "\n"
            }
            Ok((_, None, diags)) => diags.iter().map(|d| format!("{d}\n")).collect(),
        };
        failures.extend(golden(&dir.join("expand.json"), &actual));
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
    // A duplicate stage name is only a lint (BuildKit's DuplicateStageName)...
    assert!(
        err.contains("warning: -:4:11: Duplicate stage name \"x\""),
        "{err}"
    );
    assert!(err.contains("2 errors, 1 warning"), "{err}");
    // ...an error with `# check=error=true`.
    let (code, _, err) = wcbuild(
        &["dockerfile", "check", "-f", "-"],
        Some("# check=error=true\nFROM a AS x\nFROM b AS x\n"),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("error: -:3:11: Duplicate stage name \"x\""),
        "{err}"
    );
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
    let (code, _, err) = wcbuild(&["compat", "alpine"], None);
    assert_eq!(code, 2);
    assert!(err.contains("`wcbuild compat` is not built yet"), "{err}");
    let (code, _, err) = wcbuild(&["check", "app:1.0"], None);
    assert_eq!(code, 2);
    assert!(err.contains("`wcbuild check` is not built yet"), "{err}");
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
