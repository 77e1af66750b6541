//! Instructions that change only the config: each sets its field as BuildKit does and gives
//! the history text BuildKit writes for it. ONBUILD triggers of a base image are parsed here
//! into steps.

use super::state::StageState;
use crate::dockerfile::check::{Command, CommandLine};
use crate::dockerfile::{self, Severity};
use crate::image::ImageConfig;
use crate::plan::{self, PlanOptions};
use std::collections::BTreeMap;

/// Applies a metadata instruction to the stage's config. Returns the history text (`None` for
/// ONBUILD, which records none), or `Err` for a value the instruction refuses. Instructions
/// that are not metadata are not handled here.
pub(super) fn apply(state: &mut StageState, command: &Command) -> Result<Option<String>, String> {
    let windows = state.windows();
    let text = match command {
        Command::Env(pairs) => {
            let mut msg = String::from("ENV");
            let env = state.config.config.env.get_or_insert_with(Vec::new);
            for kv in pairs {
                set_env(env, &kv.key, &kv.value, windows);
                msg.push_str(&format!(" {}={}", kv.key, kv.value));
            }
            Some(msg)
        }
        Command::Label(pairs) => {
            let mut msg = String::from("LABEL");
            let labels = state.config.config.labels.get_or_insert_with(BTreeMap::new);
            for kv in pairs {
                labels.insert(kv.key.clone(), kv.value.clone());
                msg.push_str(&format!(" {}={}", kv.key, kv.value));
            }
            Some(msg)
        }
        Command::Arg(decls) => {
            let parts: Vec<String> = decls
                .iter()
                .map(|d| match &d.default {
                    Some(v) => format!("{}={v}", d.name),
                    None => d.name.clone(),
                })
                .collect();
            Some(format!("ARG {}", parts.join(" ")))
        }
        Command::Maintainer(m) => {
            state.config.author = Some(m.clone());
            Some(format!("MAINTAINER {m}"))
        }
        Command::Expose(ports) => {
            let specs = crate::dockerfile::expose::parse_all(ports)?;
            let exposed = state
                .config
                .config
                .exposed_ports
                .get_or_insert_with(BTreeMap::new);
            for s in &specs {
                exposed.insert(s.clone(), serde_json::json!({}));
            }
            Some(crate::dockerfile::expose::history(&specs))
        }
        Command::User(u) => {
            state.config.config.user = Some(u.clone());
            Some(format!("USER {u}"))
        }
        Command::Volume(v) => {
            let vols = state
                .config
                .config
                .volumes
                .get_or_insert_with(BTreeMap::new);
            for p in v {
                vols.insert(p.clone(), serde_json::json!({}));
            }
            Some(format!("VOLUME {}", go_list(v)))
        }
        Command::Cmd(line) => {
            let args = with_shell(&state.config, line);
            state.config.config.cmd = Some(args.clone());
            state.config.config.args_escaped = true;
            state.cmd_set = true;
            Some(format!("CMD {}", go_quote_list(&args)))
        }
        Command::Entrypoint(line) => {
            let args = with_shell(&state.config, line);
            state.config.config.entrypoint = Some(args.clone());
            if !state.cmd_set {
                state.config.config.cmd = None;
            }
            Some(format!("ENTRYPOINT {}", go_quote_list(&args)))
        }
        Command::Shell(s) => {
            state.config.config.shell = Some(s.clone());
            Some(format!("SHELL {}", go_list(s)))
        }
        Command::StopSignal(s) => {
            state.config.config.stop_signal = Some(s.clone());
            Some(format!("STOPSIGNAL {s}"))
        }
        Command::Healthcheck(h) => {
            let hc = crate::image::Healthcheck {
                test: h.test.clone(),
                interval: h.interval,
                timeout: h.timeout,
                start_period: h.start_period,
                start_interval: h.start_interval,
                retries: h.retries,
            };
            let msg = format!(
                "HEALTHCHECK &{{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
                go_list(&hc.test),
                go_duration(hc.interval),
                go_duration(hc.timeout),
                go_duration(hc.start_period),
                go_duration(hc.start_interval),
                hc.retries
            );
            state.config.config.healthcheck = Some(hc);
            Some(msg.replacen('&', "", 1))
        }
        Command::Onbuild(expr) => {
            state
                .config
                .config
                .on_build
                .get_or_insert_with(Vec::new)
                .push(expr.clone());
            None
        }
        _ => None,
    };
    Ok(text)
}

/// True for the instructions [`apply`] handles.
pub(super) fn is_metadata(command: &Command) -> bool {
    matches!(
        command,
        Command::Env(_)
            | Command::Label(_)
            | Command::Arg(_)
            | Command::Maintainer(_)
            | Command::Expose(_)
            | Command::User(_)
            | Command::Volume(_)
            | Command::Cmd(_)
            | Command::Entrypoint(_)
            | Command::Shell(_)
            | Command::StopSignal(_)
            | Command::Healthcheck(_)
            | Command::Onbuild(_)
    )
}

fn go_quote_list(args: &[String]) -> String {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| crate::dockerfile::go_quote(a))
        .collect();
    format!("[{}]", quoted.join(" "))
}

fn go_list(args: &[String]) -> String {
    format!("[{}]", args.join(" "))
}

/// Adds or replaces `K=V` in an environment list (case-insensitively on Windows).
fn set_env(env: &mut Vec<String>, key: &str, value: &str, windows: bool) {
    let same = |e: &String| {
        let k = e.split_once('=').map(|x| x.0).unwrap_or(e);
        if windows {
            k.eq_ignore_ascii_case(key)
        } else {
            k == key
        }
    };
    let entry = format!("{key}={value}");
    match env.iter_mut().find(|e| same(e)) {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

/// Go's `time.Duration.String()` for whole nanoseconds.
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let mut n = ns.unsigned_abs();
    let mut out = String::new();
    if n < 1_000_000_000 {
        let (unit, div) = if n < 1_000 {
            ("ns", 1)
        } else if n < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        out = format!("{}{}", trim_frac(n as f64 / div as f64), unit);
    } else {
        let h = n / 3_600_000_000_000;
        n %= 3_600_000_000_000;
        let m = n / 60_000_000_000;
        n %= 60_000_000_000;
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&format!("{}s", trim_frac(n as f64 / 1e9)));
    }
    if neg { format!("-{out}") } else { out }
}

fn trim_frac(v: f64) -> String {
    let s = format!("{v:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

pub(super) fn with_shell(config: &ImageConfig, line: &CommandLine) -> Vec<String> {
    if !line.prepend_shell {
        return line.args.clone();
    }
    let mut shell = config.config.shell.clone().unwrap_or_else(|| {
        if config.os == "windows" {
            vec!["cmd".into(), "/S".into(), "/C".into()]
        } else {
            vec!["/bin/sh".into(), "-c".into()]
        }
    });
    shell.push(line.args.join(" "));
    shell
}

/// Parses and expands a base image's ONBUILD triggers into steps.
pub(super) fn trigger_steps(
    triggers: &[String],
    directives: &dockerfile::Directives,
    opts: &PlanOptions,
) -> Result<Vec<plan::Step>, String> {
    let mut text = format!("# escape={}\nFROM scratch\n", directives.escape);
    for t in triggers {
        text.push_str(t);
        text.push('\n');
    }
    let df = dockerfile::parse(text.as_bytes(), "ONBUILD").map_err(|e| e.message)?;
    let checked = dockerfile::check(&df);
    if let Some(d) = checked
        .diagnostics
        .iter()
        .find(|d| d.severity == Severity::Error)
    {
        return Err(d.error.message.clone());
    }
    let (plan, diags) = plan::plan(&df, &checked, opts);
    let plan = plan.ok_or_else(|| {
        diags
            .first()
            .map(|d| d.error.message.clone())
            .unwrap_or_else(|| "cannot be planned".into())
    })?;
    Ok(plan
        .stages
        .into_iter()
        .next()
        .map(|s| s.steps)
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000), "1.5ms");
    }
}
