//! The shell-like word lexer that BuildKit applies to Dockerfile arguments: quote removal, the
//! escape character, and `$` variable expansion with the `${…}` modifiers.
//!
//! The same lexer serves three callers, with different switches: the parser (finding heredoc
//! words, with raw quotes and raw escapes, leaving unset variables as written), the expansion
//! step of a build (`ENV`, `COPY`, `WORKDIR`, …), and `EXPOSE`/heredoc word splitting. Its
//! behaviour follows BuildKit's `shell/lex.go` closely, quirks included, because users'
//! Dockerfiles depend on those quirks; each deliberate quirk is marked below.

use std::collections::BTreeSet;

/// Where the lexer looks variables up.
pub trait Env {
    /// The value of `name`, or `None` when it is not set.
    fn lookup(&self, name: &str) -> Option<String>;
}

/// No variable is set: what the parser uses when it only needs word boundaries.
pub struct NoEnv;

impl Env for NoEnv {
    fn lookup(&self, _name: &str) -> Option<String> {
        None
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn lookup(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// An error from expanding one word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process `{word}`: {message}")]
pub struct LexError {
    /// The word being processed, as written.
    pub word: String,
    /// What went wrong (`syntax error: missing '}'`, `NAME: is not allowed to be unset`, …).
    pub message: String,
}

/// The result of processing one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Processed {
    /// The word with quotes removed and variables expanded.
    pub result: String,
    /// The same, split into words at unquoted whitespace (after expansion).
    pub words: Vec<String>,
    /// Variables that were referenced and set.
    pub matched: BTreeSet<String>,
    /// Variables that were referenced and not set.
    pub unmatched: BTreeSet<String>,
}

/// The lexer's switches; see BuildKit's `shell.Lex`.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    escape: char,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Do not treat quotes specially.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written (`$X`, `${X:-w}`).
    pub skip_unset_env: bool,
}

impl Lexer {
    /// A lexer with the given escape character (`\` or `` ` ``).
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Expands `word` into one string (quotes removed, whitespace kept).
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<Processed, LexError> {
        let mut state = State {
            lexer: *self,
            chars: word.chars().collect(),
            pos: 0,
            env,
            raw_escapes: self.raw_escapes,
            words_buf: String::new(),
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        match state.process_stop_on(None, self.raw_escapes) {
            Ok((result, words)) => Ok(Processed {
                result,
                words,
                matched: state.matched,
                unmatched: state.unmatched,
            }),
            Err(message) => Err(LexError {
                word: word.to_string(),
                message,
            }),
        }
    }

    /// Expands `word` and splits it into words at unquoted whitespace.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, LexError> {
        self.process_word(word, env).map(|p| p.words)
    }
}

struct State<'a> {
    lexer: Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn Env,
    raw_escapes: bool,
    // BuildKit shares one word buffer between a word and the `${…}` words nested in it, and
    // clears it when a nested word starts; kept as is so that word splitting matches.
    words_buf: String,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

struct Words {
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, buf: &mut String, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !buf.is_empty() {
                self.words.push(std::mem::take(buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(buf, ch);
        }
    }
    fn add_raw_char(&mut self, buf: &mut String, ch: char) {
        buf.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, buf: &mut String, s: &str) {
        for ch in s.chars() {
            self.add_char(buf, ch);
        }
    }
    fn add_raw_string(&mut self, buf: &mut String, s: &str) {
        buf.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self, buf: &mut String) -> Vec<String> {
        if !buf.is_empty() {
            self.words.push(std::mem::take(buf));
        }
        self.words
    }
}

impl State<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v)
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        self.words_buf.clear();
        let mut words = Words {
            words: Vec::new(),
            in_word: false,
        };
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let out = self.process_loop(stop, &mut result, &mut words);
        self.raw_escapes = saved;
        out?;
        let mut buf = std::mem::take(&mut self.words_buf);
        let words = words.finish(&mut buf);
        self.words_buf = buf;
        Ok((result, words))
    }

    fn process_loop(
        &mut self,
        stop: Option<char>,
        result: &mut String,
        words: &mut Words,
    ) -> Result<(), String> {
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                return Ok(());
            }
            let special = match ch {
                '$' => Some(self.process_dollar()?),
                '<' => Some(self.process_possible_heredoc()),
                '\'' if !self.lexer.skip_process_quotes => Some(self.process_single_quote()?),
                '"' if !self.lexer.skip_process_quotes => Some(self.process_double_quote()?),
                _ => None,
            };
            if let Some(tmp) = special {
                result.push_str(&tmp);
                let mut buf = std::mem::take(&mut self.words_buf);
                if ch == '$' {
                    words.add_string(&mut buf, &tmp);
                } else {
                    words.add_raw_string(&mut buf, &tmp);
                }
                self.words_buf = buf;
                continue;
            }
            let mut ch = self.next().unwrap_or_default();
            let mut buf = std::mem::take(&mut self.words_buf);
            if ch == self.lexer.escape {
                if self.raw_escapes {
                    words.add_raw_char(&mut buf, ch);
                    result.push(ch);
                }
                match self.next() {
                    None => {
                        self.words_buf = buf;
                        break;
                    }
                    Some(c) => {
                        ch = c;
                        words.add_raw_char(&mut buf, ch);
                    }
                }
            } else {
                words.add_char(&mut buf, ch);
            }
            self.words_buf = buf;
            result.push(ch);
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok(())
    }

    fn process_single_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let open = self.next().unwrap_or('\'');
        if self.lexer.raw_quotes {
            result.push(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    );
                }
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let open = self.next().unwrap_or('"');
        if self.lexer.raw_quotes {
            result.push(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    );
                }
                Some('"') => {
                    self.next();
                    if self.lexer.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.lexer.escape {
                        if self.raw_escapes {
                            // BuildKit writes the escape here and again below when the next
                            // character is not one it escapes; kept for identical heredoc words.
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lexer.escape => {
                                ch = c;
                                self.next();
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(d) = self.peek() {
                    if !is_digit(d) {
                        break;
                    }
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.next();
                return ch.to_string();
            }
            if !(ch.is_alphabetic() || is_digit(ch) || ch == '_') {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    fn process_dollar(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{') | Some('}') | Some(':') => {
                return Err("syntax error: bad substitution".into());
            }
            _ => {}
        }
        let name = self.process_name();
        let Some(mut ch) = self.next() else {
            return Err("syntax error: missing '}'".into());
        };
        let mut chs = ch.to_string();
        let mut null_is_unset = false;
        match ch {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                if ch == ':' {
                    null_is_unset = true;
                    match self.next() {
                        Some(c) => {
                            ch = c;
                            chs.push(c);
                        }
                        None => return Err("syntax error: missing '}'".into()),
                    }
                }
                let raw = ch == '#' || ch == '%';
                if null_is_unset && raw {
                    return Err(format!("unsupported modifier ({chs}) in substitution"));
                }
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".into());
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.lexer.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let set = value.is_some();
                let value = value.unwrap_or_default();
                match ch {
                    '-' => Ok(if !set || (null_is_unset && value.is_empty()) {
                        word
                    } else {
                        value
                    }),
                    '+' => Ok(if !set || (null_is_unset && value.is_empty()) {
                        String::new()
                    } else {
                        word
                    }),
                    '?' => {
                        if !set {
                            let m = if word.is_empty() {
                                "is not allowed to be unset".to_string()
                            } else {
                                word
                            };
                            return Err(format!("{name}: {m}"));
                        }
                        if null_is_unset && value.is_empty() {
                            let m = if word.is_empty() {
                                "is not allowed to be empty".to_string()
                            } else {
                                word
                            };
                            return Err(format!("{name}: {m}"));
                        }
                        Ok(value)
                    }
                    '%' | '#' => {
                        let mut word = word;
                        let mut greedy = false;
                        if word.starts_with(ch) {
                            greedy = true;
                            word.remove(0);
                        }
                        if ch == '%' {
                            trim_suffix(&word, &value, greedy)
                        } else {
                            trim_prefix(&word, &value, greedy)
                        }
                    }
                    _ => Err(format!("unsupported modifier ({chs}) in substitution")),
                }
            }
            '/' => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '/' in ${}".into());
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".into());
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.lexer.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let value = value.unwrap_or_default();
                let glob = Glob::compile(&pattern, true)
                    .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
                Ok(if replace_all {
                    glob.replace_all(&value, &replacement)
                } else {
                    glob.replace_first(&value, &replacement)
                })
            }
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    fn process_possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.next();
        let mut result = String::from("<<");
        while let Some(c) = self.peek() {
            if c == '\t' || c == '\r' || c == ' ' {
                result.push(c);
                self.next();
            } else {
                break;
            }
        }
        result
    }
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// A shell wildcard pattern (`*`, `?`, `\` escapes; no brackets) as BuildKit converts it to a
/// regular expression: wildcards do not match a newline, and the first match in the regular
/// expression's leftmost-first order wins.
#[derive(Debug)]
struct Glob {
    tokens: Vec<Token>,
    greedy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token {
    Star,
    One,
    Lit(char),
}

impl Glob {
    fn compile(pattern: &str, greedy: bool) -> Result<Glob, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::One),
                '\\' => {
                    // `\}` and `\/` belong to the `${}` syntax, not to the pattern.
                    if matches!(chars.get(i), Some('}') | Some('/')) {
                        continue;
                    }
                    match chars.get(i) {
                        Some(&n) if n == '*' || n == '?' || n == '\\' => {
                            tokens.push(Token::Lit(n));
                            i += 1;
                        }
                        Some(&n) => return Err(format!("invalid escape '\\{n}'")),
                        None => return Err("invalid escape '\\'".into()),
                    }
                }
                c => tokens.push(Token::Lit(c)),
            }
        }
        Ok(Glob { tokens, greedy })
    }

    /// The end of the preferred match starting at `start`, if any.
    fn match_at(&self, text: &[char], start: usize) -> Option<usize> {
        let mut failed = std::collections::HashSet::new();
        self.match_from(text, 0, start, &mut failed)
    }

    fn match_from(
        &self,
        text: &[char],
        pi: usize,
        ti: usize,
        failed: &mut std::collections::HashSet<(usize, usize)>,
    ) -> Option<usize> {
        if pi == self.tokens.len() {
            return Some(ti);
        }
        if failed.contains(&(pi, ti)) {
            return None;
        }
        let found = match self.tokens[pi] {
            Token::Lit(c) => {
                if text.get(ti) == Some(&c) {
                    self.match_from(text, pi + 1, ti + 1, failed)
                } else {
                    None
                }
            }
            Token::One => match text.get(ti) {
                Some(&c) if c != '\n' => self.match_from(text, pi + 1, ti + 1, failed),
                _ => None,
            },
            Token::Star => {
                let mut max = ti;
                while max < text.len() && text[max] != '\n' {
                    max += 1;
                }
                let mut found = None;
                if self.greedy {
                    for end in (ti..=max).rev() {
                        if let Some(e) = self.match_from(text, pi + 1, end, failed) {
                            found = Some(e);
                            break;
                        }
                    }
                } else {
                    for end in ti..=max {
                        if let Some(e) = self.match_from(text, pi + 1, end, failed) {
                            found = Some(e);
                            break;
                        }
                    }
                }
                found
            }
        };
        if found.is_none() {
            failed.insert((pi, ti));
        }
        found
    }

    fn find(&self, text: &[char], from: usize) -> Option<(usize, usize)> {
        (from..=text.len()).find_map(|s| self.match_at(text, s).map(|e| (s, e)))
    }

    fn replace_first(&self, value: &str, replacement: &str) -> String {
        let text: Vec<char> = value.chars().collect();
        match self.find(&text, 0) {
            Some((s, e)) => {
                let mut out: String = text[..s].iter().collect();
                out.push_str(replacement);
                out.extend(&text[e..]);
                out
            }
            None => value.to_string(),
        }
    }

    /// Every non-overlapping match replaced, as Go's `Regexp.ReplaceAllString` does it (an
    /// empty match right after a match is skipped; `$0`/`${0}` in the replacement is the match,
    /// other `$name` references are empty and `$$` is a dollar).
    fn replace_all(&self, value: &str, replacement: &str) -> String {
        let text: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut last_end = 0;
        let mut search = 0;
        while search <= text.len() {
            let Some((s, e)) = self.find(&text, search) else {
                break;
            };
            out.extend(&text[last_end..s]);
            if e > last_end || s == 0 {
                let matched: String = text[s..e].iter().collect();
                expand_template(&mut out, replacement, &matched);
            }
            last_end = e;
            if search + 1 > e {
                search += 1;
            } else {
                search = e;
            }
        }
        out.extend(&text[last_end.min(text.len())..]);
        out
    }
}

fn expand_template(out: &mut String, template: &str, matched: &str) {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let (name, after) = if let Some(r) = rest.strip_prefix('{') {
            match r.find('}') {
                Some(end)
                    if end > 0 && r[..end].chars().all(|c| c.is_alphanumeric() || c == '_') =>
                {
                    (&r[..end], &r[end + 1..])
                }
                _ => {
                    out.push('$');
                    continue;
                }
            }
        } else {
            let end = rest
                .char_indices()
                .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
                .map(|(i, _)| i)
                .unwrap_or(rest.len());
            if end == 0 {
                out.push('$');
                continue;
            }
            (&rest[..end], &rest[end..])
        };
        if name.chars().all(|c| c.is_ascii_digit()) && name.parse::<u64>() == Ok(0) {
            out.push_str(matched);
        }
        rest = after;
    }
    out.push_str(rest);
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let glob = Glob::compile(pattern, greedy)
        .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
    let text: Vec<char> = value.chars().collect();
    Ok(match glob.match_at(&text, 0) {
        Some(end) => text[end..].iter().collect(),
        None => value.to_string(),
    })
}

fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let reversed = reverse_pattern(pattern);
    let word: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reversed, &word, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern keeping each `\x` escape in order (`a\*c` → `c\*a`).
fn reverse_pattern(pattern: &str) -> String {
    let p: Vec<char> = pattern.chars().collect();
    let mut out = vec!['\0'; p.len()];
    let last = p.len().wrapping_sub(1);
    let mut i = 0;
    while i < p.len() {
        let o = last - i;
        if p[i] == '\\' && i != last {
            out[o - 1] = '\\';
            out[o] = p[i + 1];
            i += 2;
        } else {
            out[o] = p[i];
            i += 1;
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    fn word(s: &str, e: &[(&str, &str)]) -> Result<String, String> {
        Lexer::new('\\')
            .process_word(s, &env(e))
            .map(|p| p.result)
            .map_err(|e| e.message)
    }

    fn words(s: &str, e: &[(&str, &str)]) -> Vec<String> {
        Lexer::new('\\').process_words(s, &env(e)).unwrap()
    }

    #[test]
    fn plain_and_braced_references() {
        assert_eq!(word("hello${hi}bye", &[]).unwrap(), "hellobye");
        assert_eq!(
            word("hello${hi}bye", &[("hi", "hi")]).unwrap(),
            "hellohibye"
        );
        assert_eq!(word("$hi-x", &[("hi", "A")]).unwrap(), "A-x");
        assert_eq!(word("he$1x", &[]).unwrap(), "hex");
        assert_eq!(word("a$.b", &[]).unwrap(), "a$.b");
        assert_eq!(word("cost $", &[]).unwrap(), "cost $");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(word(r#"hello" there  ""#, &[]).unwrap(), "hello there  ");
        assert_eq!(word(r"hello\ there", &[]).unwrap(), "hello there");
        assert_eq!(word(r#"hello"\\there""#, &[]).unwrap(), r"hello\there");
        assert_eq!(word(r#"hello"\there""#, &[]).unwrap(), r"hello\there");
        assert_eq!(word(r"hello'\\there'", &[]).unwrap(), r"hello\\there");
        assert_eq!(word("'$x'", &[("x", "1")]).unwrap(), "$x");
        assert_eq!(word(r"\$x", &[("x", "1")]).unwrap(), "$x");
        assert_eq!(word(r#""$x""#, &[("x", "1")]).unwrap(), "1");
        assert!(
            word(r#"hello" there"#, &[])
                .unwrap_err()
                .contains("double-quote")
        );
        assert!(word("it's", &[]).unwrap_err().contains("single-quote"));
    }

    #[test]
    fn word_splitting_after_expansion() {
        let e = [
            ("space", "abc  def"),
            ("leading", "  ab c"),
            ("trailing", "ab c   "),
        ];
        assert_eq!(words("hello${space}bye", &e), ["helloabc", "defbye"]);
        assert_eq!(words(r#"hello"${space}"bye"#, &e), ["helloabc  defbye"]);
        assert_eq!(words("hello${leading}def", &e), ["hello", "ab", "cdef"]);
        assert_eq!(words("hello${trailing}d", &e), ["helloab", "c", "d"]);
        assert_eq!(words("hello there     ", &e), ["hello", "there"]);
    }

    #[test]
    fn modifiers() {
        let e = [("set", "v"), ("empty", "")];
        assert_eq!(word("${set:-w}", &e).unwrap(), "v");
        assert_eq!(word("${empty:-w}", &e).unwrap(), "w");
        assert_eq!(word("${empty-w}", &e).unwrap(), "");
        assert_eq!(word("${unset-w}", &e).unwrap(), "w");
        assert_eq!(word("${set:+w}", &e).unwrap(), "w");
        assert_eq!(word("${empty:+w}", &e).unwrap(), "");
        assert_eq!(word("${empty+w}", &e).unwrap(), "w");
        assert_eq!(word("${unset+w}", &e).unwrap(), "");
        assert_eq!(word("${set:?boom}", &e).unwrap(), "v");
        assert_eq!(
            word("${unset?}", &e).unwrap_err(),
            "unset: is not allowed to be unset"
        );
        assert_eq!(
            word("${empty:?}", &e).unwrap_err(),
            "empty: is not allowed to be empty"
        );
        assert_eq!(word("${unset:?need it}", &e).unwrap_err(), "unset: need it");
        assert_eq!(word("${set:-${empty:-x}}", &e).unwrap(), "v");
        assert_eq!(word("${unset:-${empty:-x}}", &e).unwrap(), "x");
    }

    #[test]
    fn trimming() {
        let e = [("p", "/usr/local/bin/tool.tar.gz")];
        assert_eq!(word("${p#*/}", &e).unwrap(), "usr/local/bin/tool.tar.gz");
        assert_eq!(word("${p##*/}", &e).unwrap(), "tool.tar.gz");
        assert_eq!(word("${p%.*}", &e).unwrap(), "/usr/local/bin/tool.tar");
        assert_eq!(word("${p%%.*}", &e).unwrap(), "/usr/local/bin/tool");
        assert_eq!(
            word("${p#nomatch}", &e).unwrap(),
            "/usr/local/bin/tool.tar.gz"
        );
        assert_eq!(word(r"${v%\*}", &[("v", "a*")]).unwrap(), "a");
        assert_eq!(word("${v%?}", &[("v", "abc")]).unwrap(), "ab");
        assert!(
            word("${p:#x}", &e)
                .unwrap_err()
                .contains("unsupported modifier (:#)")
        );
    }

    #[test]
    fn replacing() {
        let e = [("v", "a-b-c")];
        assert_eq!(word("${v/-/_}", &e).unwrap(), "a_b-c");
        assert_eq!(word("${v//-/_}", &e).unwrap(), "a_b_c");
        assert_eq!(word("${v//x/_}", &e).unwrap(), "a-b-c");
        assert_eq!(word("${v/*-/}", &e).unwrap(), "c");
        assert_eq!(word("${v//?/x}", &e).unwrap(), "xxxxx");
        assert_eq!(word(r"${v/\//_}", &[("v", "a/b")]).unwrap(), "a_b");
        assert_eq!(word("${v//b*/[$0]}", &e).unwrap(), "a-[]");
        assert_eq!(word(r"${v//b*/[\$0]}", &e).unwrap(), r"a-[\b-c]");
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            word("${}", &[]).unwrap_err(),
            "syntax error: bad substitution"
        );
        assert_eq!(
            word("${:a}", &[]).unwrap_err(),
            "syntax error: bad substitution"
        );
        assert_eq!(word("${a", &[]).unwrap_err(), "syntax error: missing '}'");
        assert_eq!(
            word("${a:-b", &[]).unwrap_err(),
            "syntax error: missing '}'"
        );
        assert_eq!(
            word("${a/b", &[]).unwrap_err(),
            "syntax error: missing '/' in ${}"
        );
        assert_eq!(
            word("${a b}", &[]).unwrap_err(),
            "unsupported modifier ( ) in substitution"
        );
    }

    #[test]
    fn skip_unset_keeps_references() {
        let mut l = Lexer::new('\\');
        l.skip_unset_env = true;
        let p = l.process_word("$a ${b} ${c:-d} ${e/f/g}", &NoEnv).unwrap();
        assert_eq!(p.result, "$a ${b} ${c:-d} ${e/f/g}");
        assert_eq!(p.unmatched.len(), 4);
    }

    #[test]
    fn backtick_escape() {
        let l = Lexer::new('`');
        assert_eq!(
            l.process_word(r"C:\app\$x", &NoEnv).unwrap().result,
            r"C:\app\"
        );
        assert_eq!(
            l.process_word(r"C:\app`$x", &NoEnv).unwrap().result,
            r"C:\app$x"
        );
    }

    #[test]
    fn heredoc_words_keep_spacing() {
        let mut l = Lexer::new('\\');
        l.raw_quotes = true;
        l.raw_escapes = true;
        l.skip_unset_env = true;
        let w = l
            .process_words(r#"RUN <<EOF cat && <<  "B" x"#, &NoEnv)
            .unwrap();
        assert_eq!(w, ["RUN", "<<EOF", "cat", "&&", "<<  \"B\"", "x"]);
    }

    #[test]
    fn pattern_reversal_keeps_escapes() {
        assert_eq!(reverse_pattern(r"a\*c"), r"c\*a");
        assert_eq!(reverse_pattern(""), "");
    }
}
