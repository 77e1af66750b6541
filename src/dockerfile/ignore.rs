//! `.dockerignore` files and `COPY --exclude` patterns, matched as BuildKit matches them
//! (moby's patternmatcher and ignorefile).
//!
//! Pure: the caller reads the file (see [`ignore_file_candidates`] for which one) and walks the
//! context; this module only decides. Rules:
//! - per line: a UTF-8 BOM is dropped from the first line; a line starting with `#` in column 1
//!   is a comment; whitespace is trimmed; blank lines are skipped; a leading `!` makes an
//!   exception; the pattern is cleaned like Go's `filepath.Clean` and a leading `/` removed;
//! - syntax: `*` (any run of characters but `/`), `?` (one character but `/`), `[...]` classes
//!   (`^` negates), `\` escapes, and `**` for any number of directories, zero included;
//! - the last pattern that matches decides; a pattern that matches a directory excludes
//!   everything below it (unless a later exception re-includes it).
//!
//! Paths are always `/`-separated relative paths; like BuildKit on Linux, a `\` in a pattern is
//! an escape, not a separator, even for Windows Dockerfiles.

use std::path::{Path, PathBuf};

/// A pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    /// Malformed pattern (unclosed `[`, trailing `\`, …).
    #[error("line {line}: invalid pattern `{pattern}`: {reason}")]
    BadPattern {
        /// 1-based line in the ignore file (0 for patterns not read from a file).
        line: usize,
        /// The pattern as cleaned.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
    /// A line that is only `!`.
    #[error("line {line}: illegal exclusion pattern `!`: an exception needs a pattern after `!`")]
    BareExclamation {
        /// 1-based line.
        line: usize,
    },
}

/// Where BuildKit looks for the ignore file, in priority order: `<Dockerfile>.dockerignore`
/// next to the Dockerfile, then `.dockerignore` at the context root. The first that exists
/// is used, alone.
pub fn ignore_file_candidates(context: &Path, dockerfile: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(df) = dockerfile
        && let Some(name) = df.file_name()
    {
        let mut n = name.to_os_string();
        n.push(".dockerignore");
        out.push(df.with_file_name(n));
    }
    out.push(context.join(".dockerignore"));
    out
}

/// Go's `filepath.Clean` for `/`-separated paths.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    /// `*`: any run of non-`/` characters.
    Star,
    /// `?`: one non-`/` character.
    One,
    /// `**/` in the middle: `(.*/)?`.
    AnyDirs,
    /// `**` at the end after other tokens: `.*`.
    AnyRest,
    /// `[...]`.
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Glob(Vec<Tok>),
}

/// One cleaned pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    text: String,
    exception: bool,
    line: usize,
    kind: Kind,
    dirs: Vec<String>,
}

impl Pattern {
    /// The pattern as cleaned (without `!`).
    pub fn text(&self) -> &str {
        &self.text
    }
    /// True for `!` exceptions.
    pub fn is_exception(&self) -> bool {
        self.exception
    }
    /// The ignore-file line it came from (0 when not from a file).
    pub fn line(&self) -> usize {
        self.line
    }

    fn compile(text: &str, exception: bool, line: usize) -> Result<Pattern, IgnoreError> {
        let bad = |reason: &str| IgnoreError::BadPattern {
            line,
            pattern: text.to_string(),
            reason: reason.to_string(),
        };
        validate_go_match(text).map_err(|r| bad(&r))?;
        let chars: Vec<char> = text.chars().collect();
        let mut toks = Vec::new();
        let mut kind = 0u8; // 0 exact, 1 prefix, 2 suffix, 3 glob
        let mut i = 0;
        let mut step = 0;
        while i < chars.len() {
            let ch = chars[i];
            i += 1;
            match ch {
                '*' => {
                    if chars.get(i) == Some(&'*') {
                        i += 1;
                        if chars.get(i) == Some(&'/') {
                            i += 1;
                        }
                        if i >= chars.len() {
                            if kind == 0 {
                                kind = 1;
                            } else {
                                toks.push(Tok::AnyRest);
                                kind = 3;
                            }
                        } else {
                            toks.push(Tok::AnyDirs);
                            kind = 3;
                        }
                        if step == 0 {
                            kind = 2;
                        }
                    } else {
                        toks.push(Tok::Star);
                        kind = 3;
                    }
                }
                '?' => {
                    toks.push(Tok::One);
                    kind = 3;
                }
                '\\' => match chars.get(i) {
                    Some(&n) => {
                        toks.push(Tok::Lit(n));
                        i += 1;
                        kind = 3;
                    }
                    None => toks.push(Tok::Lit('\\')),
                },
                '[' => {
                    let (tok, next) = parse_class(&chars, i).ok_or_else(|| bad("unclosed `[`"))?;
                    toks.push(tok);
                    i = next;
                    kind = 3;
                }
                c => toks.push(Tok::Lit(c)),
            }
            step += 1;
        }
        let kind = match kind {
            0 => Kind::Exact,
            1 => Kind::Prefix,
            2 => Kind::Suffix,
            _ => Kind::Glob(toks),
        };
        Ok(Pattern {
            text: text.to_string(),
            exception,
            line,
            kind,
            dirs: text.split('/').map(String::from).collect(),
        })
    }

    /// Whether this pattern matches the whole of `path` (no parent logic).
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix => path.starts_with(&self.text[..self.text.len() - 2]),
            Kind::Suffix => {
                let suffix = &self.text[2..];
                path.ends_with(suffix) || (suffix.starts_with('/') && path == &suffix[1..])
            }
            Kind::Glob(toks) => {
                let text: Vec<char> = path.chars().collect();
                let mut failed = std::collections::HashSet::new();
                glob_match(toks, 0, &text, 0, &mut failed)
            }
        }
    }

    /// Whether this pattern matches `path` or one of its parent directories.
    fn matches_or_parent(&self, path: &str) -> bool {
        if self.matches(path) {
            return true;
        }
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i;
            if self.matches(&path[..end]) {
                return true;
            }
            end += 1;
        }
        false
    }
}

fn parse_class(chars: &[char], mut i: usize) -> Option<(Tok, usize)> {
    let mut negated = false;
    if chars.get(i) == Some(&'^') {
        negated = true;
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((Tok::Class { negated, items }, i + 1));
        }
        first = false;
        let lo = if c == '\\' {
            i += 1;
            *chars.get(i)?
        } else {
            c
        };
        i += 1;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
            i += 1;
            hi = if chars[i] == '\\' {
                i += 1;
                *chars.get(i)?
            } else {
                chars[i]
            };
            i += 1;
        }
        items.push((lo, hi));
    }
}

/// The checks Go's `filepath.Match` makes on a pattern's syntax.
fn validate_go_match(p: &str) -> Result<(), String> {
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 >= chars.len() {
                    return Err("`\\` at the end escapes nothing".into());
                }
                i += 2;
            }
            '[' => {
                i += 1;
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut n = 0;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err("unclosed `[`".into());
                    };
                    if c == ']' && n > 0 {
                        i += 1;
                        break;
                    }
                    if c == '\\' {
                        i += 1;
                        if i >= chars.len() {
                            return Err("unclosed `[`".into());
                        }
                    } else if c == '-' || (c == ']' && n == 0) {
                        return Err(format!("unexpected `{c}` in a character class"));
                    }
                    i += 1;
                    if chars.get(i) == Some(&'-') {
                        i += 1;
                        match chars.get(i) {
                            None => return Err("unclosed `[`".into()),
                            Some(']') | Some('-') => {
                                return Err("incomplete range in a character class".into());
                            }
                            Some('\\') => i += 2,
                            Some(_) => i += 1,
                        }
                    }
                    n += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

fn glob_match(
    toks: &[Tok],
    ti: usize,
    text: &[char],
    pi: usize,
    failed: &mut std::collections::HashSet<(usize, usize)>,
) -> bool {
    if ti == toks.len() {
        return pi == text.len();
    }
    if failed.contains(&(ti, pi)) {
        return false;
    }
    let ok = match &toks[ti] {
        Tok::Lit(c) => text.get(pi) == Some(c) && glob_match(toks, ti + 1, text, pi + 1, failed),
        Tok::One => {
            text.get(pi).is_some_and(|c| *c != '/')
                && glob_match(toks, ti + 1, text, pi + 1, failed)
        }
        Tok::Class { negated, items } => {
            text.get(pi).is_some_and(|&c| {
                let inside = items.iter().any(|(lo, hi)| *lo <= c && c <= *hi);
                inside != *negated && c != '\n'
            }) && glob_match(toks, ti + 1, text, pi + 1, failed)
        }
        Tok::Star => {
            let mut end = pi;
            loop {
                if glob_match(toks, ti + 1, text, end, failed) {
                    break true;
                }
                if end >= text.len() || text[end] == '/' {
                    break false;
                }
                end += 1;
            }
        }
        Tok::AnyRest => {
            (pi..=text.len()).any(|e| e == text.len() && glob_match(toks, ti + 1, text, e, failed))
        }
        Tok::AnyDirs => {
            // `(.*/)?`: nothing, or anything ending with a `/`.
            glob_match(toks, ti + 1, text, pi, failed)
                || (pi..text.len())
                    .filter(|&k| text[k] == '/')
                    .any(|k| glob_match(toks, ti + 1, text, k + 1, failed))
        }
    };
    if !ok {
        failed.insert((ti, pi));
    }
    ok
}

/// Whether one path component matches one glob component (`*`, `?`, `[...]`, `\` escapes),
/// as `COPY` sources are matched. A malformed pattern matches nothing.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    Pattern::compile(pattern, false, 0).is_ok_and(|p| p.matches(name))
}

/// The parent-match state one directory passes to its entries during a walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// An ordered list of patterns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IgnoreFile {
    patterns: Vec<Pattern>,
}

impl IgnoreFile {
    /// Reads an ignore file's content.
    pub fn parse(bytes: &[u8]) -> Result<IgnoreFile, IgnoreError> {
        let text = String::from_utf8_lossy(bytes);
        let mut patterns = Vec::new();
        for (n, raw) in text.split('\n').enumerate() {
            let mut line = raw.strip_suffix('\r').unwrap_or(raw);
            if n == 0 {
                line = line.strip_prefix('\u{feff}').unwrap_or(line);
            }
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (exception, rest) = match line.strip_prefix('!') {
                Some(r) => (true, r.trim()),
                None => (false, line),
            };
            let mut pattern = rest.to_string();
            if !pattern.is_empty() {
                pattern = clean(&pattern);
                if pattern.len() > 1 && pattern.starts_with('/') {
                    pattern.remove(0);
                }
            }
            if let Some(p) = Self::compile_one(&pattern, exception, n + 1)? {
                patterns.push(p);
            }
        }
        Ok(IgnoreFile { patterns })
    }

    /// Patterns given directly (`COPY --exclude`), each optionally starting with `!`.
    pub fn from_patterns<I, S>(patterns: I) -> Result<IgnoreFile, IgnoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let (exception, rest) = match p.strip_prefix('!') {
                Some(r) => (true, r),
                None => (false, p),
            };
            if let Some(p) = Self::compile_one(&clean(rest), exception, 0)? {
                out.push(p);
            }
        }
        Ok(IgnoreFile { patterns: out })
    }

    /// Applies patternmatcher's own cleaning and validation to one pattern.
    fn compile_one(
        pattern: &str,
        exception: bool,
        line: usize,
    ) -> Result<Option<Pattern>, IgnoreError> {
        // patternmatcher trims and cleans again, then takes a leading `!` off what remains.
        let p = pattern.trim();
        if p.is_empty() {
            if exception {
                return Err(IgnoreError::BareExclamation { line });
            }
            return Ok(None);
        }
        let p = clean(p);
        Pattern::compile(&p, exception, line).map(Some)
    }

    /// The patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// True when there is no pattern.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True when some pattern is a `!` exception.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// Whether `path` (relative, `/`-separated) is excluded: the last pattern matching it or
    /// one of its parents decides (patternmatcher's `MatchesOrParentMatches`).
    pub fn is_excluded(&self, path: &str) -> bool {
        let path = clean(path);
        if path == "." {
            return false;
        }
        let mut matched = false;
        for p in &self.patterns {
            if p.exception != matched {
                continue;
            }
            if p.matches_or_parent(&path) {
                matched = !p.exception;
            }
        }
        matched
    }

    /// patternmatcher's `MatchesOrParentMatches` as it is, without the context-root rule of
    /// [`IgnoreFile::is_excluded`]: `.` is matched like any name (`*` matches it). The linter
    /// asks this about `COPY` sources.
    pub fn matches_or_parent_matches(&self, path: &str) -> bool {
        let path = clean(path);
        let mut matched = false;
        for p in &self.patterns {
            if p.exception != matched {
                continue;
            }
            if p.matches_or_parent(&path) {
                matched = !p.exception;
            }
        }
        matched
    }

    /// The incremental form for walkers: pass the parent directory's [`MatchInfo`] (or the
    /// default for entries at the root) and get this entry's verdict and its own info to pass
    /// to its children (patternmatcher's `MatchesUsingParentResults`).
    pub fn matches_with_parent(&self, path: &str, parent: &MatchInfo) -> (bool, MatchInfo) {
        let path = clean(path);
        let have_parent = !parent.parent_matched.is_empty();
        let mut matched = false;
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        for (i, p) in self.patterns.iter().enumerate() {
            let mut m = have_parent && parent.parent_matched.get(i).copied().unwrap_or(false);
            if !m {
                if p.exception != matched {
                    continue;
                }
                m = if have_parent {
                    p.matches(&path)
                } else {
                    p.matches_or_parent(&path)
                };
            }
            info.parent_matched[i] = m;
            if m {
                matched = !p.exception;
            }
        }
        (matched, info)
    }

    /// Whether a walker may skip the excluded directory `dir` without looking inside: true
    /// when it is excluded and no exception pattern could re-include anything below it.
    pub fn can_skip_dir(&self, dir: &str) -> bool {
        let dir = clean(dir);
        if !self.is_excluded(&dir) {
            return false;
        }
        let dir_parts: Vec<&str> = dir.split('/').collect();
        !self
            .patterns
            .iter()
            .filter(|p| p.exception)
            .any(|p| could_match_below(p, &dir_parts))
    }
}

/// Whether pattern `p` could match `dir` or something below it (conservative: true when unsure).
fn could_match_below(p: &Pattern, dir: &[&str]) -> bool {
    for (i, comp) in p.dirs.iter().enumerate() {
        if comp.contains("**") {
            return true;
        }
        let Some(d) = dir.get(i) else {
            // The pattern goes deeper than `dir` and its leading components matched.
            return true;
        };
        let Ok(single) = Pattern::compile(comp, false, 0) else {
            return true;
        };
        if !single.matches(d) {
            return false;
        }
    }
    // The pattern matches `dir` itself or an ancestor: it re-includes the whole subtree.
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(s: &str) -> IgnoreFile {
        IgnoreFile::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn cleaning_like_go() {
        assert_eq!(clean("./a//b/./c/"), "a/b/c");
        assert_eq!(clean("a/../../b"), "../b");
        assert_eq!(clean("/../x"), "/x");
        assert_eq!(clean(""), ".");
        assert_eq!(clean("/"), "/");
    }

    #[test]
    fn lines_comments_and_exceptions() {
        let f = file(
            "\u{feff}# comment\n  # not a comment: a pattern\r\n\n*.log\n!  keep.log\n/abs/path\n./rel\n",
        );
        let texts: Vec<(&str, bool)> = f
            .patterns()
            .iter()
            .map(|p| (p.text(), p.is_exception()))
            .collect();
        assert_eq!(
            texts,
            [
                ("# not a comment: a pattern", false),
                ("*.log", false),
                ("keep.log", true),
                ("abs/path", false),
                ("rel", false)
            ]
        );
        assert_eq!(f.patterns()[1].line(), 4);
        assert!(f.is_excluded("x.log"));
        assert!(!f.is_excluded("keep.log"));
        assert!(f.is_excluded("abs/path/below"));
        assert!(!f.is_excluded("abs"));
    }

    #[test]
    fn star_does_not_cross_slashes() {
        let f = file("*.md\ndocs/*.txt\n");
        assert!(f.is_excluded("README.md"));
        assert!(!f.is_excluded("sub/README.md"));
        assert!(f.is_excluded("docs/a.txt"));
        assert!(!f.is_excluded("docs/deep/a.txt"));
        assert!(!f.is_excluded("docs"));
    }

    #[test]
    fn double_star() {
        let f = file("**/*.go\n");
        assert!(f.is_excluded("main.go"));
        assert!(f.is_excluded("a/b/c.go"));
        assert!(!f.is_excluded("a/b/c.rs"));
        let f = file("a/**/b\n");
        assert!(f.is_excluded("a/b"));
        assert!(f.is_excluded("a/x/y/b"));
        assert!(f.is_excluded("a/x/b/file"));
        assert!(!f.is_excluded("a/xb"));
        let f = file("a/**\n");
        assert!(f.is_excluded("a/x"));
        assert!(f.is_excluded("a/x/y"));
        let f = file("**\n!keep\n");
        assert!(f.is_excluded("anything/at/all"));
        assert!(!f.is_excluded("keep"));
        let f = file("**/node_modules\n");
        assert!(f.is_excluded("node_modules/x"));
        assert!(f.is_excluded("web/node_modules/y/z"));
    }

    #[test]
    fn classes_question_and_escapes() {
        let f = file("file[0-9].txt\nx?y\n[^a]z\nlit\\*star\n");
        assert!(f.is_excluded("file7.txt"));
        assert!(!f.is_excluded("filea.txt"));
        assert!(f.is_excluded("xay"));
        assert!(!f.is_excluded("x/y"));
        assert!(f.is_excluded("bz"));
        assert!(!f.is_excluded("az"));
        assert!(f.is_excluded("lit*star"));
        assert!(!f.is_excluded("litXstar"));
    }

    #[test]
    fn directories_exclude_their_contents_and_exceptions_reinclude() {
        let f = file("node_modules\n!node_modules/keep.txt\n");
        assert!(f.is_excluded("node_modules"));
        assert!(f.is_excluded("node_modules/pkg/index.js"));
        assert!(!f.is_excluded("node_modules/keep.txt"));
        assert!(!f.can_skip_dir("node_modules"));
        let g = file("node_modules\n!src\n");
        assert!(g.can_skip_dir("node_modules"));
        assert!(!g.can_skip_dir("src"));
        let h = file("*\n!site\n");
        assert!(h.is_excluded("Dockerfile"));
        assert!(!h.is_excluded("site/index.html"));
    }

    #[test]
    fn incremental_matching_agrees_with_full_matching() {
        let f = file("build\n!build/keep\n**/*.tmp\nlogs/*\n!logs/important.log\n");
        let paths = [
            "build",
            "build/keep",
            "build/keep/a",
            "build/other",
            "src",
            "src/x.tmp",
            "logs",
            "logs/a.log",
            "logs/important.log",
        ];
        for path in paths {
            let mut info = MatchInfo::default();
            let mut verdict = false;
            let parts: Vec<&str> = path.split('/').collect();
            for i in 1..=parts.len() {
                let (v, next) = f.matches_with_parent(&parts[..i].join("/"), &info);
                verdict = v;
                info = next;
            }
            assert_eq!(verdict, f.is_excluded(path), "{path}");
        }
    }

    #[test]
    fn bad_patterns_name_the_line() {
        let e = IgnoreFile::parse(b"ok\n[a-\n").unwrap_err();
        assert!(
            e.to_string().starts_with("line 2: invalid pattern `[a-`"),
            "{e}"
        );
        assert!(IgnoreFile::parse(b"a\\").is_err());
        assert!(matches!(
            IgnoreFile::parse(b"!\n"),
            Err(IgnoreError::BareExclamation { line: 1 })
        ));
    }

    #[test]
    fn candidates() {
        let c = ignore_file_candidates(Path::new("ctx"), Some(Path::new("build/Dockerfile.win")));
        assert_eq!(
            c,
            [
                PathBuf::from("build/Dockerfile.win.dockerignore"),
                PathBuf::from("ctx/.dockerignore")
            ]
        );
        assert_eq!(
            ignore_file_candidates(Path::new("ctx"), None),
            [PathBuf::from("ctx/.dockerignore")]
        );
    }

    #[test]
    fn odd_input_never_panics() {
        for s in [
            "[",
            "]",
            "[]]",
            "[^]",
            "**/**",
            "\\",
            "!",
            "!!x",
            "[\\",
            "a/**/",
            "\u{ffff}*?",
            "[z-a]",
        ] {
            if let Ok(f) = IgnoreFile::parse(s.as_bytes()) {
                let _ = f.is_excluded("a/b/c");
                let _ = f.can_skip_dir("a");
            }
        }
    }
}
