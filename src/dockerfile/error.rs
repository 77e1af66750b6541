//! Errors and diagnostics that point into a Dockerfile: file, line, column, the quoted line and
//! what was expected.

use std::fmt;

/// A position in a Dockerfile and the text of that line, for messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// The file name as the user gave it (`Dockerfile`, `build/Dockerfile.win`, `-`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// How many characters the underline covers (at least 1).
    pub width: usize,
    /// The source line, without its line ending.
    pub text: String,
}

/// A Dockerfile that cannot be parsed, or an instruction that does not validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Where the problem is.
    pub location: Location,
    /// What is wrong, in BuildKit's words where BuildKit has words for it.
    pub message: String,
}

impl std::error::Error for ParseError {}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.location;
        if l.line == 0 {
            return write!(f, "{}: {}", l.file, self.message);
        }
        write!(f, "{}:{}:{}: {}", l.file, l.line, l.column, self.message)?;
        if l.line > 0 {
            let num = l.line.to_string();
            let pad = " ".repeat(num.len());
            // Tabs would misalign the caret; show them as single spaces.
            let text: String = l
                .text
                .chars()
                .map(|c| if c == '\t' { ' ' } else { c })
                .collect();
            write!(f, "\n {pad} |\n {num} | {text}")?;
            if l.column > 0 {
                let caret = "^".repeat(l.width.max(1));
                write!(f, "\n {pad} | {}{caret}", " ".repeat(l.column - 1))?;
            }
        }
        Ok(())
    }
}

/// How serious a diagnostic from `check` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The build would fail.
    Error,
    /// The build works, but probably not as meant.
    Warning,
}

/// One problem found by `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where, and what.
    pub error: ParseError,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{label}: {}", self.error)
    }
}

/// The closest of `options` to `value` (Levenshtein distance under 3), in the letter case the
/// user wrote `value` in, as BuildKit suggests it. `None` when `value` is one of the options.
pub fn suggest<'a>(
    value: &str,
    options: impl IntoIterator<Item = &'a str>,
    case_sensitive: bool,
) -> Option<String> {
    let v = if case_sensitive {
        value.to_string()
    } else {
        value.to_lowercase()
    };
    let mut best: Option<String> = None;
    let mut min = 3;
    for opt in options {
        let o = if case_sensitive {
            opt.to_string()
        } else {
            opt.to_lowercase()
        };
        if o == v {
            return None;
        }
        let d = levenshtein(&v, &o);
        if d < min {
            min = d;
            best = Some(if case_sensitive {
                o
            } else if value == value.to_lowercase() {
                o.to_lowercase()
            } else if value == value.to_uppercase() {
                o.to_uppercase()
            } else {
                o
            });
        }
    }
    best
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            '\u{fffd}' => out.push_str("\\ufffd"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() || c == '\u{feff}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_follow_the_users_case() {
        let names = ["FROM", "RUN", "COPY"];
        assert_eq!(suggest("FORM", names, false).as_deref(), Some("FROM"));
        assert_eq!(suggest("form", names, false).as_deref(), Some("from"));
        assert_eq!(suggest("Cpy", names, false).as_deref(), Some("copy"));
        assert_eq!(suggest("from", names, false), None);
        assert_eq!(suggest("WHATEVER", names, false), None);
    }

    #[test]
    fn display_quotes_the_line_with_a_caret() {
        let e = ParseError {
            location: Location {
                file: "Dockerfile".into(),
                line: 12,
                column: 5,
                width: 3,
                text: "RUN\tfoo".into(),
            },
            message: "boom".into(),
        };
        assert_eq!(
            e.to_string(),
            "Dockerfile:12:5: boom\n    |\n 12 | RUN foo\n    |     ^^^"
        );
    }
}
