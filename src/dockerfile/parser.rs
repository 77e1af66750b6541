//! The line-level parser: directives, comments, continuation lines, heredocs, flags, and each
//! instruction's arguments split as BuildKit's parser splits them. No variable is expanded
//! here; `parse` output is the Dockerfile as written, joined and split.

use super::error::{Location, ParseError, suggest};
use super::lexer::{Lexer, NoEnv};
use serde::Serialize;

/// The instructions the Dockerfile language has, lower case.
pub const INSTRUCTIONS: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// The longest physical line BuildKit reads, in bytes without the line ending.
pub const MAX_LINE_BYTES: usize = 64 * 1024 - 1;

/// A parsed Dockerfile: its directives and instructions, unexpanded.
#[derive(Debug, Clone, Serialize)]
pub struct Dockerfile {
    /// The parser directives found at the top.
    pub directives: Directives,
    /// The instructions, in order.
    pub instructions: Vec<Instruction>,
    /// Empty continuation lines and similar notes BuildKit warns about.
    #[serde(skip)]
    pub warnings: Vec<ParseError>,
    /// The file's name, for messages.
    #[serde(skip)]
    pub file: String,
    /// The source lines (without line endings), for messages.
    #[serde(skip)]
    pub lines: Vec<String>,
}

/// Parser directives (`# syntax=`, `# escape=`, `# check=`).
#[derive(Debug, Clone, Serialize)]
pub struct Directives {
    /// The escape character, `\` unless `# escape=` said `` ` ``.
    pub escape: char,
    /// `# syntax=` as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syntax: Option<String>,
    /// `# check=` as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

/// One heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word, unquoted.
    pub name: String,
    /// The body, raw: every line with its line ending, leading tabs kept even for `<<-`.
    pub content: String,
    /// False when the delimiter was quoted, which turns expansion off.
    pub expand: bool,
    /// True for `<<-`: leading tabs are stripped from the body when it is used.
    pub chomp: bool,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub fd: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl Heredoc {
    /// The body as it is used: leading tabs stripped from each line for `<<-`.
    pub fn body(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        let mut out = String::with_capacity(self.content.len());
        for line in self.content.split_inclusive('\n') {
            out.push_str(line.trim_start_matches('\t'));
        }
        out
    }
}

/// One instruction as written, after line joining and before expansion.
#[derive(Debug, Clone, Serialize)]
pub struct Instruction {
    /// The instruction's name in lower case (`from`, `run`, …; unknown names are kept).
    pub cmd: String,
    /// First source line, 1-based.
    pub line: usize,
    /// Last source line, including continuation lines and heredoc bodies.
    pub end_line: usize,
    /// The flags as written (`--from=build`).
    pub flags: Vec<String>,
    /// True when the arguments were a JSON array.
    pub json: bool,
    /// The arguments, split as BuildKit's parser splits them for this instruction.
    pub args: Vec<String>,
    /// Heredocs, in the order they appear.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub heredocs: Vec<Heredoc>,
    /// For `ONBUILD`: the instruction it holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onbuild: Option<Box<Instruction>>,
    /// The instruction keyword as written (`Run`).
    #[serde(skip)]
    pub keyword: String,
    /// The joined line (continuations removed).
    #[serde(skip)]
    pub original: String,
    /// 1-based column of the keyword on the first line.
    #[serde(skip)]
    pub column: usize,
    /// For `ENV`/`LABEL`: written in the legacy `KEY value` form.
    #[serde(skip)]
    pub legacy_key_value: bool,
    /// The comment lines BuildKit attaches to the instruction (its `PrevComment`): every
    /// comment since the previous instruction, `#` and blanks trimmed, reset by a bare `#`,
    /// parser directives left out. They carry `# check=` overrides and descriptions.
    #[serde(skip)]
    pub comments: Vec<String>,
}

impl Instruction {
    /// `ENV`/`LABEL` pairs as (key, value), values unexpanded.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.args
            .chunks(2)
            .map(|c| (c[0].as_str(), c.get(1).map(String::as_str).unwrap_or("")))
            .collect()
    }
}

struct Directive<'a> {
    name: String,
    value: &'a str,
}

/// The parser's state for directives at the top of the file.
struct DirectiveParser {
    done: bool,
    seen: Vec<String>,
}

impl DirectiveParser {
    /// A directive on this line, an error for a repeated one, or `None` (and no more
    /// directives from here on).
    fn parse_line<'a>(&mut self, line: &'a str) -> Result<Option<Directive<'a>>, String> {
        if self.done {
            return Ok(None);
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(None);
        };
        let Some((key, value)) = directive_parts(rest) else {
            self.done = true;
            return Ok(None);
        };
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(None);
        }
        if self.seen.contains(&key) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        self.seen.push(key.clone());
        Ok(Some(Directive { name: key, value }))
    }
}

/// `key=value` as a directive reads it once its prefix (`#`) is gone: leading blanks
/// skipped, then `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`. The key comes back in lower case.
pub fn directive_parts(rest: &str) -> Option<(String, &str)> {
    let rest = rest.trim_start();
    let key_len = rest
        .char_indices()
        .take_while(|&(i, c)| {
            if i == 0 {
                c.is_ascii_alphabetic()
            } else {
                c.is_ascii_alphanumeric()
            }
        })
        .count();
    let after = rest[key_len..].trim_start_matches(is_re_space);
    let value = after.strip_prefix('=').map(directive_value)?;
    if key_len == 0 || value.is_empty() || value.contains('\n') {
        return None;
    }
    Some((rest[..key_len].to_ascii_lowercase(), value))
}

/// A directive as BuildKit's frontend looks one up for its own use (`# check=` for the
/// linter): after a `#!` first line, over the lines as they are (an indented `# key=` ends
/// the search), stopping at a repeated directive. Returns the value and its 1-based line.
pub fn find_directive(lines: &[String], key: &str) -> Option<(String, usize)> {
    let skip = usize::from(lines.first().is_some_and(|l| l.starts_with("#!")));
    let mut parser = DirectiveParser {
        done: false,
        seen: Vec::new(),
    };
    for (i, line) in lines.iter().enumerate().skip(skip) {
        match parser.parse_line(line) {
            Ok(Some(d)) if d.name == key => return Some((d.value.to_string(), i + 1)),
            Ok(Some(_)) => {}
            Ok(None) if parser.done => return None,
            Ok(None) => {}
            Err(_) => return None,
        }
    }
    None
}

/// The value part of `\s*(.+?)\s*$` after a directive's `=`: trimmed of blanks, except that
/// a value made only of blanks is its last blank (the lazy group must take one character), so
/// `# escape= ` sets the escape to a space, which is then rejected.
fn directive_value(after_eq: &str) -> &str {
    let trimmed = after_eq.trim_matches(is_re_space);
    if !trimmed.is_empty() || after_eq.is_empty() {
        return trimmed;
    }
    let last = after_eq.chars().next_back().map_or(0, char::len_utf8);
    &after_eq[after_eq.len() - last..]
}

/// `\s` in Go's regular expressions.
fn is_re_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c')
}

/// The whitespace BuildKit splits arguments on: `[\t\v\f\r ]`.
pub(crate) fn is_split_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\r')
}

/// Splits `s` at runs of `[\t\v\f\r ]`, at most `n` pieces (`0` for all), as Go's
/// `Regexp.Split` does.
fn split_ws(s: &str, n: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if n != 0 && out.len() + 1 == n {
            out.push(rest);
            return out;
        }
        match rest.find(is_split_space) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = rest[i..].trim_start_matches(is_split_space);
            }
            None => {
                out.push(rest);
                return out;
            }
        }
    }
}

/// Parses a Dockerfile's bytes. `file` names it in messages.
pub fn parse(source: &[u8], file: &str) -> Result<Dockerfile, ParseError> {
    let text = String::from_utf8_lossy(source);
    Parser::new(&text, file).run()
}

struct Parser<'a> {
    file: &'a str,
    /// Physical lines with their endings.
    raw: Vec<&'a str>,
    /// Physical lines without endings (BOM removed from the first).
    lines: Vec<String>,
    escape: char,
    directives: DirectiveParser,
    syntax: Option<String>,
    check: Option<String>,
    /// Set by `process_line` when the line was a parser directive.
    was_directive: bool,
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(s: &str) -> bool {
    s.trim_start().starts_with('#')
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, file: &'a str) -> Parser<'a> {
        let mut raw: Vec<&str> = text.split_inclusive('\n').collect();
        if let Some(first) = raw.first_mut() {
            *first = first.strip_prefix('\u{feff}').unwrap_or(first);
        }
        let lines = raw.iter().map(|l| trim_newline(l).to_string()).collect();
        Parser {
            file,
            raw,
            lines,
            escape: '\\',
            directives: DirectiveParser {
                done: false,
                seen: Vec::new(),
            },
            syntax: None,
            check: None,
            was_directive: false,
        }
    }

    fn error(&self, line: usize, column: usize, width: usize, message: String) -> ParseError {
        ParseError {
            location: Location {
                file: self.file.to_string(),
                line,
                column,
                width,
                text: self
                    .lines
                    .get(line.wrapping_sub(1))
                    .cloned()
                    .unwrap_or_default(),
            },
            message,
        }
    }

    /// Column (1-based, in characters) of the first non-blank character of a line.
    fn first_column(&self, line: usize) -> usize {
        let text = self
            .lines
            .get(line.wrapping_sub(1))
            .map(String::as_str)
            .unwrap_or("");
        text.chars().take_while(|c| c.is_whitespace()).count() + 1
    }

    /// Removes a line-continuation escape (and the blanks after it) from the end of `line`;
    /// false when the line does not continue.
    fn trim_continuation(&self, line: &str) -> (String, bool) {
        let body = line.trim_end_matches([' ', '\t']);
        if let Some(before) = body.strip_suffix(self.escape) {
            // `([^\\])\\[ \t]*$|^\\[ \t]*$`: an escaped escape does not continue.
            if before.is_empty() || !before.ends_with(self.escape) {
                return (before.to_string(), false);
            }
        }
        (line.to_string(), true)
    }

    /// Handles a possible directive and strips comments, as BuildKit's `processLine` does.
    fn process_line(
        &mut self,
        line: &str,
        strip_left: bool,
        number: usize,
    ) -> Result<String, ParseError> {
        let mut token = trim_newline(line);
        if strip_left {
            token = token.trim_start();
        }
        self.was_directive = false;
        match self.directives.parse_line(token) {
            Err(m) => return Err(self.error(number, 1, 1, m)),
            Ok(Some(d)) => {
                match d.name.as_str() {
                    "escape" => {
                        if d.value != "`" && d.value != "\\" {
                            return Err(self.error(
                                number,
                                1,
                                token.chars().count().max(1),
                                format!(
                                    "invalid escape token '{}' does not match ` or \\",
                                    d.value
                                ),
                            ));
                        }
                        self.escape = d.value.chars().next().unwrap_or('\\');
                    }
                    "syntax" => self.syntax = Some(d.value.to_string()),
                    _ => self.check = Some(d.value.to_string()),
                }
                self.was_directive = true;
                return Ok(String::new());
            }
            Ok(None) => {}
        }
        if is_comment(token) {
            return Ok(String::new());
        }
        Ok(token.to_string())
    }

    fn run(mut self) -> Result<Dockerfile, ParseError> {
        let mut instructions = Vec::new();
        let mut warnings = Vec::new();
        let mut comments: Vec<String> = Vec::new();
        let mut i = 0; // index of the next physical line
        let raw = self.raw.clone();
        while i < raw.len() {
            let number = i + 1;
            let first = if i == 0 {
                raw[0].strip_prefix('\u{feff}').unwrap_or(raw[0])
            } else {
                raw[i]
            };
            self.check_length(first, number)?;
            i += 1;
            if is_comment(first) {
                // BuildKit drops the line's first byte, not the `#`: an indented comment
                // keeps its `#` (`  # x` gives `# x`).
                let mut rest = first.chars();
                rest.next();
                let comment = rest.as_str().trim();
                if comment.is_empty() {
                    comments.clear();
                } else {
                    comments.push(comment.to_string());
                }
            }
            let processed = self.process_line(first, true, number)?;
            if self.was_directive {
                comments.pop();
            }
            let start_line = number;
            let (mut joined, mut ended) = self.trim_continuation(&processed);
            if ended && joined.is_empty() {
                continue;
            }
            let mut empty_continuation = false;
            while !ended && i < raw.len() {
                let n = i + 1;
                self.check_length(raw[i], n)?;
                let line = self.process_line(raw[i], false, n)?;
                let physical = raw[i];
                i += 1;
                if is_comment(physical) {
                    continue;
                }
                if line.trim_start().is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (piece, e) = self.trim_continuation(&line);
                joined.push_str(&piece);
                ended = e;
            }
            let mut end_line = i;
            if empty_continuation {
                // BuildKit reports it at the last line of the joined instruction.
                warnings.push(self.error(
                    i,
                    self.first_column(i),
                    1,
                    "NoEmptyContinuation: Empty continuation line (empty continuation lines will become errors in a future release)".into(),
                ));
            }
            let column = self.first_column(start_line);
            let mut inst = self
                .node_from_line(&joined, column, true)
                .map_err(|(m, w)| self.locate_error(start_line, end_line, &m, w.as_deref()))?;
            inst.line = start_line;
            if can_contain_heredoc(&inst) && joined.contains("<<") {
                let docs = heredocs_from_line(&joined)
                    .map_err(|m| self.error(start_line, column, 1, m))?;
                let mut filled = Vec::new();
                for mut doc in docs {
                    let mut terminated = false;
                    let mut content = String::new();
                    while i < raw.len() {
                        let line = raw[i];
                        i += 1;
                        end_line = i;
                        let mut candidate = trim_newline(line);
                        if doc.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == doc.name {
                            terminated = true;
                            break;
                        }
                        content.push_str(line);
                    }
                    if !terminated {
                        return Err(self.error(
                            start_line,
                            column,
                            self.lines[start_line - 1].chars().count().saturating_sub(column - 1).max(1),
                            format!("unterminated heredoc `{}`: no line `{}` closes it before the end of the file", doc.name, doc.name),
                        ));
                    }
                    doc.content = content;
                    filled.push(doc);
                }
                match inst.onbuild.as_mut() {
                    Some(inner) => inner.heredocs = filled,
                    None => inst.heredocs = filled,
                }
            }
            inst.end_line = end_line;
            inst.comments = std::mem::take(&mut comments);
            if let Some(inner) = inst.onbuild.as_mut() {
                inner.line = start_line;
                inner.end_line = end_line;
            }
            instructions.push(inst);
        }
        if instructions.is_empty() {
            let line = self.lines.len();
            return Err(ParseError {
                location: Location {
                    file: self.file.to_string(),
                    line: 0,
                    column: 0,
                    width: 0,
                    text: String::new(),
                },
                message: format!(
                    "file with no instructions: expected at least one instruction such as `FROM` (read {line} line{})",
                    if line == 1 { "" } else { "s" }
                ),
            });
        }
        Ok(Dockerfile {
            directives: Directives {
                escape: self.escape,
                syntax: self.syntax,
                check: self.check,
            },
            instructions,
            warnings,
            file: self.file.to_string(),
            lines: self.lines,
        })
    }

    fn check_length(&self, line: &str, number: usize) -> Result<(), ParseError> {
        let len = line.strip_suffix('\n').unwrap_or(line).len();
        if len > MAX_LINE_BYTES {
            let mut e = self.error(
                number,
                1,
                1,
                format!(
                    "dockerfile line greater than max allowed size of {MAX_LINE_BYTES} bytes (this line has {len})"
                ),
            );
            // Do not quote a 64 KiB line.
            e.location.text = e.location.text.chars().take(80).collect::<String>() + "…";
            return Err(e);
        }
        Ok(())
    }

    /// Places a message about an instruction spanning `start..=end`: at `needle` when it can be
    /// found in those lines, else at the keyword.
    fn locate_error(
        &self,
        start: usize,
        end: usize,
        message: &str,
        needle: Option<&str>,
    ) -> ParseError {
        if let Some(needle) = needle.filter(|n| !n.is_empty()) {
            for n in start..=end.min(self.lines.len()) {
                if let Some(idx) = self.lines[n - 1].find(needle) {
                    let col = self.lines[n - 1][..idx].chars().count() + 1;
                    return self.error(n, col, needle.chars().count(), message.to_string());
                }
            }
        }
        let col = self.first_column(start);
        let width = self.lines[start - 1]
            .chars()
            .skip(col - 1)
            .take_while(|c| !c.is_whitespace())
            .count();
        self.error(start, col, width, message.to_string())
    }

    /// Splits one joined instruction line into an [`Instruction`]. Errors carry a piece of
    /// the line to point at.
    fn node_from_line(
        &self,
        line: &str,
        column: usize,
        top: bool,
    ) -> Result<Instruction, (String, Option<String>)> {
        let trimmed = line.trim();
        let parts = split_ws(trimmed, 2);
        let keyword = parts[0].to_string();
        let (flags, args_text) = if parts.len() == 2 {
            let (rest, flags) = extract_flags(parts[1], self.escape);
            (flags, rest.trim().to_string())
        } else {
            (Vec::new(), String::new())
        };
        let cmd = keyword.to_lowercase();
        let mut inst = Instruction {
            cmd: cmd.clone(),
            line: 0,
            end_line: 0,
            flags,
            json: false,
            args: Vec::new(),
            heredocs: Vec::new(),
            onbuild: None,
            keyword: keyword.clone(),
            original: line.to_string(),
            column,
            legacy_key_value: false,
            comments: Vec::new(),
        };
        let rest = args_text.as_str();
        match cmd.as_str() {
            "add" | "copy" | "volume" => match parse_json(rest) {
                Json::Array(a) => {
                    inst.args = a;
                    inst.json = true;
                }
                Json::NotStrings => return Err((not_strings(), None)),
                Json::Shell => inst.args = split_fields(rest),
            },
            "run" | "cmd" | "entrypoint" | "shell" => {
                if !rest.is_empty() {
                    match parse_json(rest) {
                        Json::Array(a) => {
                            inst.args = a;
                            inst.json = true;
                        }
                        Json::NotStrings => return Err((not_strings(), None)),
                        Json::Shell => inst.args = vec![rest.to_string()],
                    }
                }
            }
            "env" | "label" => {
                let (args, legacy) = parse_name_val(rest, &keyword.to_uppercase(), self.escape)?;
                inst.args = args;
                inst.legacy_key_value = legacy;
            }
            "arg" => inst.args = parse_words(rest, self.escape),
            "expose" | "from" => inst.args = split_fields(rest),
            "maintainer" | "workdir" | "user" | "stopsignal" => {
                if !rest.is_empty() {
                    inst.args = vec![rest.to_string()];
                }
            }
            "healthcheck" => {
                let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
                if sep > 0 {
                    let typ = &rest[..sep];
                    let cmdtext = rest[sep..].trim_start();
                    inst.args.push(typ.to_string());
                    if !cmdtext.is_empty() {
                        match parse_json(cmdtext) {
                            Json::Array(a) => {
                                inst.args.extend(a);
                                inst.json = true;
                            }
                            Json::NotStrings => return Err((not_strings(), None)),
                            Json::Shell => inst.args.push(cmdtext.to_string()),
                        }
                    }
                }
            }
            "onbuild" => {
                if !rest.is_empty() {
                    let inner = self.node_from_line(rest, column, false)?;
                    inst.onbuild = Some(Box::new(inner));
                }
            }
            // BuildKit accepts an unknown instruction inside ONBUILD until it is triggered;
            // `check` warns about it.
            _ if !top => {}
            _ => {
                let hint = suggest(&keyword, INSTRUCTIONS, false)
                    .map(|s| format!(" (did you mean {s}?)"))
                    .unwrap_or_default();
                return Err((
                    format!(
                        "unknown instruction: {keyword}{hint}; expected one of {}",
                        INSTRUCTIONS.map(|s| s.to_uppercase()).join(", ")
                    ),
                    Some(keyword),
                ));
            }
        }
        Ok(inst)
    }
}

fn not_strings() -> String {
    "when using JSON array syntax, arrays must be comprised of strings only".into()
}

fn can_contain_heredoc(inst: &Instruction) -> bool {
    let inst = match &inst.onbuild {
        Some(inner) => inner,
        None => inst,
    };
    matches!(inst.cmd.as_str(), "add" | "copy" | "run") && !inst.json
}

/// Heredocs announced on a joined instruction line (bodies still empty).
fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let mut lexer = Lexer::new('\\');
    lexer.raw_quotes = true;
    lexer.raw_escapes = true;
    lexer.skip_unset_env = true;
    let words = lexer.process_words(line, &NoEnv).unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// The heredoc a word announces (`<<EOF`, `<<-"EOF"`, `3<<EOF`), if it is one.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, String> {
    // ^(\d*)<<(-?)\s*([^<]*)$
    let digits = word.chars().take_while(|c| c.is_ascii_digit()).count();
    let Some(rest) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches(is_re_space);
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    let fd = if digits == 0 {
        0
    } else {
        word[..digits].parse::<u32>().unwrap_or(0)
    };
    let mut lexer = Lexer::new('\\');
    lexer.skip_unset_env = true;
    let words = lexer
        .process_words(rest, &NoEnv)
        .map_err(|e| e.to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    lexer.raw_quotes = true;
    let raw = lexer
        .process_words(rest, &NoEnv)
        .map_err(|e| e.to_string())?;
    if raw.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    Ok(Some(Heredoc {
        name: words[0].clone(),
        content: String::new(),
        expand: quotes(&words[0]) == quotes(&raw[0]),
        chomp,
        fd,
    }))
}

/// Splits builder flags (`--name[=value]`) off the front of an instruction's arguments.
/// Returns the rest of the line and the flags. Quotes and escapes inside a flag are removed.
pub fn extract_flags(line: &str, escape: char) -> (&str, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut k = 0;
    while k <= chars.len() {
        let at_end = k == chars.len();
        let (pos, ch) = if at_end { (line.len(), '\0') } else { chars[k] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                k += 1;
                continue;
            }
            if ch != '-' || chars.get(k + 1).map(|c| c.1) != Some('-') {
                return (&line[pos..], words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (&line[pos..], words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                k += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                k += 1;
                continue;
            }
            let mut c = ch;
            if ch == escape {
                if k + 1 == chars.len() {
                    k += 1;
                    continue;
                }
                k += 1;
                c = chars[k].1;
            }
            word.push(c);
            k += 1;
            continue;
        }
        // In quotes.
        if ch == quote {
            phase = Phase::Word;
            k += 1;
            continue;
        }
        let mut c = ch;
        if ch == escape {
            if k + 1 == chars.len() {
                phase = Phase::Word;
                k += 1;
                continue;
            }
            k += 1;
            c = chars[k].1;
        }
        word.push(c);
        k += 1;
    }
    ("", words)
}

/// Splits words at whitespace keeping quotes and escapes as written (BuildKit's
/// `parseWords`, used by `ARG`, `ENV` and `LABEL`).
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut k = 0;
    while k <= chars.len() {
        let at_end = k == chars.len();
        let ch = if at_end { '\0' } else { chars[k] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                k += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                k += 1;
                continue;
            }
            let mut c = ch;
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if k + 1 == chars.len() {
                    k += 1;
                    continue;
                }
                word.push(ch);
                k += 1;
                c = chars[k];
            }
            word.push(c);
            k += 1;
            continue;
        }
        // In quotes.
        if ch == quote {
            phase = Phase::Word;
        }
        let mut c = ch;
        if ch == escape && quote != '\'' {
            if k + 1 == chars.len() {
                phase = Phase::Word;
                k += 1;
                continue;
            }
            k += 1;
            word.push(ch);
            c = chars[k];
        }
        word.push(c);
        k += 1;
    }
    words
}

/// `ENV`/`LABEL` arguments as a flat key, value list, and whether the legacy form was used.
fn parse_name_val(
    rest: &str,
    key: &str,
    escape: char,
) -> Result<(Vec<String>, bool), (String, Option<String>)> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok((Vec::new(), false));
    }
    if !words[0].contains('=') {
        let parts = split_ws(rest, 2);
        if parts.len() < 2 {
            return Err((
                format!(
                    "{key} must have two arguments: expected `{key} name=value` (or the legacy `{key} name value`)"
                ),
                Some(parts[0].to_string()),
            ));
        }
        return Ok((vec![parts[0].to_string(), parts[1].to_string()], true));
    }
    let mut out = Vec::new();
    for word in words {
        match word.split_once('=') {
            Some((k, v)) => {
                out.push(k.to_string());
                out.push(v.to_string());
            }
            None => {
                return Err((
                    format!(
                        "Syntax error - can't find = in {word:?}. Must be of the form: name=value"
                    ),
                    Some(word),
                ));
            }
        }
    }
    Ok((out, false))
}

/// Whitespace-separated words (`[\t\v\f\r ]+`), nothing else interpreted.
fn split_fields(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    split_ws(rest, 0).into_iter().map(String::from).collect()
}

enum Json {
    Array(Vec<String>),
    NotStrings,
    Shell,
}

/// A JSON array of strings, as BuildKit's `parseJSON` accepts it.
fn parse_json(rest: &str) -> Json {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Json::Shell;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(rest) {
        Ok(values) => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return Json::NotStrings,
                }
            }
            Json::Array(out)
        }
        Err(_) => Json::Shell,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Dockerfile {
        parse(src.as_bytes(), "Dockerfile").unwrap()
    }

    #[test]
    fn flags_are_split_off() {
        assert_eq!(
            extract_flags("--from=build --chmod=755 a b", '\\'),
            (
                "a b",
                vec!["--from=build".to_string(), "--chmod=755".to_string()]
            )
        );
        assert_eq!(extract_flags("-- --x y", '\\'), (" --x y", vec![]));
        assert_eq!(
            extract_flags("--chown=\"1 2\" x", '\\').1,
            vec!["--chown=1 2"]
        );
        assert_eq!(
            extract_flags("--link", '\\'),
            ("", vec!["--link".to_string()])
        );
        assert_eq!(
            extract_flags("--a=é b", '\\'),
            ("b", vec!["--a=é".to_string()])
        );
    }

    #[test]
    fn words_keep_quotes() {
        assert_eq!(
            parse_words(r#"a="1 2" b=\"x"#, '\\'),
            [r#"a="1 2""#, r#"b=\"x"#]
        );
        assert_eq!(parse_words("x 'y z'", '\\'), ["x", "'y z'"]);
    }

    #[test]
    fn continuation_comments_and_directives() {
        let d = p("# escape=`\nFROM x\nRUN a `\n  # c\n\n  b\n");
        assert_eq!(d.directives.escape, '`');
        assert_eq!(d.instructions[1].args, ["a   b"]);
        assert_eq!((d.instructions[1].line, d.instructions[1].end_line), (3, 6));
        assert_eq!(d.warnings.len(), 1);
    }

    #[test]
    fn env_forms() {
        let d = p("FROM x\nENV a b c\nENV k=v k2=\"a b\"\n");
        assert_eq!(d.instructions[1].args, ["a", "b c"]);
        assert!(d.instructions[1].legacy_key_value);
        assert_eq!(d.instructions[2].args, ["k", "v", "k2", "\"a b\""]);
    }

    #[test]
    fn heredocs() {
        let d = p("FROM x\nRUN <<A cat >a && <<-\"B\" cat >b\nhello\nA\n\tworld\n\tB\nCMD x\n");
        let r = &d.instructions[1];
        assert_eq!(r.heredocs.len(), 2);
        assert_eq!(r.heredocs[0].content, "hello\n");
        assert!(r.heredocs[0].expand);
        assert_eq!(r.heredocs[1].content, "\tworld\n");
        assert_eq!(r.heredocs[1].body(), "world\n");
        assert!(!r.heredocs[1].expand && r.heredocs[1].chomp);
        assert_eq!(r.end_line, 6);
        assert_eq!(d.instructions[2].line, 7);
    }

    #[test]
    fn errors_point_at_the_line() {
        let e = parse(b"FROM x\nFORM y\n", "Dockerfile").unwrap_err();
        assert_eq!(e.location.line, 2);
        assert!(
            e.message
                .starts_with("unknown instruction: FORM (did you mean FROM?)")
        );
        let e = parse(b"\n# only\n", "Dockerfile").unwrap_err();
        assert!(e.message.starts_with("file with no instructions"));
        let e = parse(b"FROM x\nRUN <<EOF\nno end\n", "Dockerfile").unwrap_err();
        assert!(e.message.starts_with("unterminated heredoc"), "{e}");
        let e = parse(b"FROM x\nENV foo\n", "Dockerfile").unwrap_err();
        assert!(e.message.starts_with("ENV must have two arguments"), "{e}");
        let e = parse(b"FROM x\nCMD [\"a\", [\"b\"]]\n", "Dockerfile").unwrap_err();
        assert!(e.message.contains("strings only"), "{e}");
    }

    #[test]
    fn directive_values_made_of_blanks() {
        assert_eq!(directive_value(" x "), "x");
        assert_eq!(directive_value(" "), " ");
        assert_eq!(directive_value(" \t"), "\t");
        assert_eq!(directive_value(""), "");
        let e = parse(b"# escape= \nFROM x\n", "Dockerfile").unwrap_err();
        assert!(e.message.starts_with("invalid escape token ' '"), "{e}");
        // No value at all is a comment.
        assert_eq!(p("# escape=\nFROM x\n").directives.escape, '\\');
        let lines = |s: &str| s.lines().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            find_directive(
                &lines("#!/bin/x\n# escape=`\n# check=error=true\nFROM x"),
                "check"
            ),
            Some(("error=true".to_string(), 3))
        );
        assert_eq!(
            find_directive(&lines("  # check=error=true\nFROM x"), "check"),
            None
        );
        assert_eq!(
            find_directive(&lines("# x=1\n# check=error=true"), "check"),
            None
        );
    }

    #[test]
    fn bom_crlf_and_json() {
        let d = p("\u{feff}FROM x\r\nCMD [\"a\",  \"b\"]\r\nRUN [\"c:\\windows\"]\r\n");
        assert_eq!(d.instructions[1].args, ["a", "b"]);
        assert!(d.instructions[1].json);
        assert!(!d.instructions[2].json);
    }
}
