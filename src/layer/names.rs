//! The names a layer entry carries, checked as path components before anything touches the
//! disk: the entry's own path, a whiteout's hidden name, an opaque marker's directory, a hard
//! link's target and a symlink's target.
//!
//! Two rule sets, both portable (tested on Linux with Windows names):
//! - [`Rules::Unix`]: names split at `/`; empty and `.` components are dropped; `..`, NUL and
//!   absolute names are refused.
//! - [`Rules::Windows`], for Windows-format layers on every host and for every layer on a
//!   Windows host: names are also split at `\` (which Windows reads as a separator), and drives
//!   (`C:\x`, `a/C:x`), UNC names (`\\server\share`), reserved device names (`NUL`, `COM1.txt`),
//!   components Windows would rewrite (trailing dots and spaces, `...`) and characters Windows
//!   does not allow in names are refused. A `:` is allowed only as one alternate data stream
//!   separator in the last component (`file.txt:Zone.Identifier`), as Windows layers store
//!   streams.

/// Longest entry name accepted, in bytes (PATH_MAX less its NUL).
pub const MAX_NAME: usize = 4095;
/// Longest path component accepted, in bytes (NAME_MAX).
pub const MAX_COMPONENT: usize = 255;

/// Which host's reading of a name applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// `/` separates components; everything else is a byte of a name.
    Unix,
    /// `/` and `\` separate components; drives, UNC names and reserved names are refused.
    Windows,
}

impl Rules {
    /// The rules for a layer: Windows rules for Windows-format layers, and for every layer
    /// when this host is Windows.
    pub fn for_layer(windows_layer: bool) -> Rules {
        if windows_layer || cfg!(windows) {
            Rules::Windows
        } else {
            Rules::Unix
        }
    }
}

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing left once `.` and empty components are dropped, where a name is needed.
    #[error("empty name")]
    Empty,
    /// Starts at the file system's root.
    #[error("absolute names are not allowed")]
    Absolute,
    /// Names a drive or a UNC share.
    #[error("names with a drive (`{0}`) are not allowed")]
    Drive(String),
    /// Holds a NUL byte.
    #[error("names cannot contain NUL")]
    Nul,
    /// A `..` component.
    #[error("`..` would leave the target directory")]
    DotDot,
    /// Longer than [`MAX_NAME`].
    #[error("a name of {0} bytes is longer than the {MAX_NAME} allowed")]
    TooLong(usize),
    /// A component longer than [`MAX_COMPONENT`].
    #[error("a component of {0} bytes is longer than the {MAX_COMPONENT} allowed")]
    ComponentTooLong(usize),
    /// Not one component (it holds a separator, or is empty, `.` or `..`).
    #[error("`{0}` is not a single path component")]
    NotAComponent(String),
    /// A reserved device name on Windows.
    #[error("`{0}` is a device name on Windows")]
    Reserved(String),
    /// A character Windows does not allow in names.
    #[error("`{0}` holds {1:?}, which Windows does not allow in names")]
    BadChar(String, char),
    /// Windows drops trailing dots and spaces, so the name would mean another one.
    #[error("`{0}` ends with a dot or a space, which Windows drops")]
    Trailing(String),
    /// A `:` that is not one alternate data stream separator in the last component.
    #[error("`{0}` holds a `:` that is not an alternate data stream of a file")]
    Colon(String),
    /// A whiteout with nothing after `.wh.`.
    #[error("a whiteout must name what it hides (`.wh.` alone)")]
    EmptyWhiteout,
    /// A symlink target that cannot be stored.
    #[error("symlink target: {0}")]
    LinkTarget(&'static str),
}

fn is_separator(c: char, rules: Rules) -> bool {
    c == '/' || (rules == Rules::Windows && c == '\\')
}

/// Splits an entry name into checked components. `.` and empty components are dropped, so
/// the result may be empty (the root itself, as in `./`); callers decide whether that is
/// allowed.
pub fn components(name: &str, rules: Rules) -> Result<Vec<&str>, NameError> {
    if name.contains('\0') {
        return Err(NameError::Nul);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong(name.len()));
    }
    if name.starts_with(|c| is_separator(c, rules)) {
        if rules == Rules::Windows && (name.starts_with("\\\\") || name.starts_with("//")) {
            return Err(NameError::Drive(name.chars().take(32).collect()));
        }
        return Err(NameError::Absolute);
    }
    // A drive at the start means the same on every host that reads drives; refuse it under
    // both rule sets (`C:x` is relative to drive C's current directory on Windows).
    if has_drive(name) {
        return Err(NameError::Drive(name[..2].to_string()));
    }
    let mut out = Vec::new();
    for c in name.split(|c| is_separator(c, rules)) {
        match c {
            "" | "." => {}
            ".." => return Err(NameError::DotDot),
            c => {
                check(c, rules, true)?;
                out.push(c);
            }
        }
    }
    // Colons are allowed only in the last component; check the others now that it is known.
    if rules == Rules::Windows
        && let Some((_, init)) = out.split_last()
        && let Some(c) = init.iter().find(|c| c.contains(':'))
    {
        return Err(NameError::Colon(c.to_string()));
    }
    Ok(out)
}

/// Like [`components`], but the name must name something below the root.
pub fn components_nonempty(name: &str, rules: Rules) -> Result<Vec<&str>, NameError> {
    let c = components(name, rules)?;
    if c.is_empty() {
        return Err(NameError::Empty);
    }
    Ok(c)
}

fn has_drive(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

/// Checks one path component (a whiteout's hidden name, the last part of a name).
pub fn check_component(c: &str, rules: Rules) -> Result<(), NameError> {
    if c.is_empty()
        || c == "."
        || c == ".."
        || c.contains('/')
        || (rules == Rules::Windows && c.contains('\\'))
    {
        return Err(if c == ".." {
            NameError::DotDot
        } else {
            NameError::NotAComponent(c.to_string())
        });
    }
    if c.contains('\0') {
        return Err(NameError::Nul);
    }
    check(c, rules, true)
}

fn check(c: &str, rules: Rules, last: bool) -> Result<(), NameError> {
    if c.len() > MAX_COMPONENT {
        return Err(NameError::ComponentTooLong(c.len()));
    }
    if rules == Rules::Unix {
        return Ok(());
    }
    if has_drive(c) {
        return Err(NameError::Drive(c[..2].to_string()));
    }
    if let Some(bad) = c
        .chars()
        .find(|&ch| (ch as u32) < 0x20 || matches!(ch, '<' | '>' | '"' | '|' | '?' | '*'))
    {
        return Err(NameError::BadChar(c.to_string(), bad));
    }
    if c.ends_with('.') || c.ends_with(' ') {
        return Err(NameError::Trailing(c.to_string()));
    }
    // `file:stream` is an alternate data stream; anything else with a colon is not a name.
    let base = match c.split_once(':') {
        None => c,
        Some((base, stream)) => {
            if !last
                || base.is_empty()
                || stream.is_empty()
                || stream.contains(':')
                || stream.starts_with('$')
            {
                return Err(NameError::Colon(c.to_string()));
            }
            base
        }
    };
    if is_reserved(base) {
        return Err(NameError::Reserved(c.to_string()));
    }
    Ok(())
}

/// Windows' device names, which name a device in every directory (`NUL`, `com1.txt`).
fn is_reserved(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    if matches!(
        upper.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) {
        return true;
    }
    let mut chars = upper.chars();
    let prefix: String = chars.by_ref().take(3).collect();
    let rest: String = chars.collect();
    (prefix == "COM" || prefix == "LPT")
        && rest.chars().count() == 1
        && rest
            .chars()
            .next()
            .is_some_and(|d| d.is_ascii_digit() || matches!(d, '¹' | '²' | '³'))
}

/// What the last component of an entry says, when it starts with `.wh.`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteout<'a> {
    /// `.wh..wh..opq`: the directory hides everything lower layers put in it.
    Opaque,
    /// `.wh.NAME`: `NAME` (checked as a component) is deleted.
    Hides(&'a str),
    /// `.wh..wh.*` other than the opaque marker: AUFS bookkeeping, ignored.
    Meta,
}

/// Reads a whiteout from an entry's last component: `None` when it is not one.
pub fn whiteout(base: &str, rules: Rules) -> Result<Option<Whiteout<'_>>, NameError> {
    let Some(hidden) = base.strip_prefix(".wh.") else {
        return Ok(None);
    };
    if hidden == ".wh..opq" {
        return Ok(Some(Whiteout::Opaque));
    }
    if hidden.starts_with(".wh.") {
        return Ok(Some(Whiteout::Meta));
    }
    if hidden.is_empty() {
        return Err(NameError::EmptyWhiteout);
    }
    check_component(hidden, rules)?;
    Ok(Some(Whiteout::Hides(hidden)))
}

/// Checks a symlink target. Targets are stored as written and never followed while a layer
/// is written, so only what cannot be stored is refused: empty, NUL, too long.
pub fn check_symlink_target(target: &str) -> Result<(), NameError> {
    if target.is_empty() {
        return Err(NameError::LinkTarget("empty"));
    }
    if target.contains('\0') {
        return Err(NameError::LinkTarget("it contains NUL"));
    }
    if target.len() > MAX_NAME {
        return Err(NameError::LinkTarget("longer than 4095 bytes"));
    }
    Ok(())
}

/// Where an entry of a Windows-format layer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowsEntry<'a> {
    /// Under `Files/`: the components below it (empty for `Files` itself).
    Files(Vec<&'a str>),
    /// `Hives/…` or `UtilityVM/…` (or the directories themselves): not part of the file system.
    Skipped,
    /// Anything else at the top.
    Outside,
}

/// Splits a Windows-format layer entry (under Windows rules, on every host) and says which
/// part of the layer it is in.
pub fn windows_entry(name: &str) -> Result<WindowsEntry<'_>, NameError> {
    let comps = components(name, Rules::Windows)?;
    Ok(match comps.first().copied() {
        Some("Files") => WindowsEntry::Files(comps[1..].to_vec()),
        Some("Hives") | Some("UtilityVM") => WindowsEntry::Skipped,
        _ => WindowsEntry::Outside,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_names() {
        let u = Rules::Unix;
        assert_eq!(components("a/b/c", u).unwrap(), ["a", "b", "c"]);
        assert_eq!(components("./a//b/./", u).unwrap(), ["a", "b"]);
        assert_eq!(components("./", u).unwrap(), Vec::<&str>::new());
        assert_eq!(components_nonempty(".", u), Err(NameError::Empty));
        for bad in ["../x", "a/../x", "a/..", "..", "a/b/../../.."] {
            assert_eq!(components(bad, u), Err(NameError::DotDot), "{bad}");
        }
        assert_eq!(components("/etc/x", u), Err(NameError::Absolute));
        assert_eq!(components("a\0b", u), Err(NameError::Nul));
        assert!(matches!(components("C:x", u), Err(NameError::Drive(_))));
        // A backslash is an ordinary byte of a Unix name.
        assert_eq!(components("a\\..\\x", u).unwrap(), ["a\\..\\x"]);
        assert!(matches!(
            components(&"a/".repeat(3000), u),
            Err(NameError::TooLong(_))
        ));
        assert!(matches!(
            components(&"n".repeat(300), u),
            Err(NameError::ComponentTooLong(300))
        ));
    }

    #[test]
    fn windows_names() {
        let w = Rules::Windows;
        assert_eq!(components("a\\b/c", w).unwrap(), ["a", "b", "c"]);
        for bad in [
            "a\\..\\x",
            "Files\\..\\x",
            "a\\..\\..\\x",
            "Files/..\\x",
            "..\\x",
        ] {
            assert_eq!(components(bad, w), Err(NameError::DotDot), "{bad}");
        }
        assert_eq!(components("\\x", w), Err(NameError::Absolute));
        for bad in [
            "C:\\x",
            "c:x",
            "a/C:x",
            "a\\C:\\x",
            "\\\\server\\share",
            "//srv/s",
        ] {
            assert!(
                matches!(components(bad, w), Err(NameError::Drive(_))),
                "{bad}: {:?}",
                components(bad, w)
            );
        }
        for bad in ["NUL", "a/con", "com1.txt", "LPT9", "aux .c", "COM¹"] {
            assert!(
                matches!(components(bad, w), Err(NameError::Reserved(_))),
                "{bad}"
            );
        }
        for bad in ["a.", "a ", "...", ".. ", "a/. /b"] {
            assert!(
                matches!(components(bad, w), Err(NameError::Trailing(_))),
                "{bad}: {:?}",
                components(bad, w)
            );
        }
        for bad in ["a?b", "a*", "x<y", "t\u{1}"] {
            assert!(
                matches!(components(bad, w), Err(NameError::BadChar(..))),
                "{bad}"
            );
        }
        // Streams: only `file:stream` in the last component.
        assert_eq!(
            components("x/file.txt:Zone.Identifier", w).unwrap(),
            ["x", "file.txt:Zone.Identifier"]
        );
        for bad in ["dir:s/x", "file::$DATA", "file:a:b", ":s", "file:"] {
            assert!(
                matches!(components(bad, w), Err(NameError::Colon(_))),
                "{bad}: {:?}",
                components(bad, w)
            );
        }
        // The same names are fine under Unix rules (apart from the drive).
        assert!(components("aux.c", Rules::Unix).is_ok());
        assert!(components("a.", Rules::Unix).is_ok());
    }

    #[test]
    fn whiteouts() {
        let u = Rules::Unix;
        assert_eq!(whiteout("x", u), Ok(None));
        assert_eq!(whiteout(".wh.x", u), Ok(Some(Whiteout::Hides("x"))));
        assert_eq!(whiteout(".wh..wh..opq", u), Ok(Some(Whiteout::Opaque)));
        assert_eq!(whiteout(".wh..wh.plnk", u), Ok(Some(Whiteout::Meta)));
        assert_eq!(whiteout(".wh...", u), Err(NameError::DotDot));
        assert!(whiteout(".wh..", u).is_err());
        assert_eq!(whiteout(".wh.", u), Err(NameError::EmptyWhiteout));
        assert!(whiteout(".wh.a\\..\\..", Rules::Windows).is_err());
        assert!(whiteout(".wh.C:x", Rules::Windows).is_err());
        assert_eq!(whiteout(".wh.C:x", u), Ok(Some(Whiteout::Hides("C:x"))));
        assert_eq!(
            whiteout(".wh.a\\b", u),
            Ok(Some(Whiteout::Hides("a\\b"))),
            "a backslash is a name byte on Unix"
        );
    }

    #[test]
    fn windows_layout() {
        assert_eq!(
            windows_entry("Files/a/b").unwrap(),
            WindowsEntry::Files(vec!["a", "b"])
        );
        assert_eq!(
            windows_entry("Files\\a").unwrap(),
            WindowsEntry::Files(vec!["a"])
        );
        assert_eq!(windows_entry("Files").unwrap(), WindowsEntry::Files(vec![]));
        assert_eq!(
            windows_entry("Hives/Sam_Delta").unwrap(),
            WindowsEntry::Skipped
        );
        assert_eq!(
            windows_entry("UtilityVM/Files/x").unwrap(),
            WindowsEntry::Skipped
        );
        assert_eq!(windows_entry("HivesX/y").unwrap(), WindowsEntry::Outside);
        for bad in [
            "Files/../x",
            "Hives/../../x",
            "UtilityVM/Files/..",
            "Files\\..\\x",
        ] {
            assert_eq!(windows_entry(bad), Err(NameError::DotDot), "{bad}");
        }
    }

    #[test]
    fn symlink_targets() {
        assert!(check_symlink_target("/bin/busybox").is_ok());
        assert!(check_symlink_target("../../x").is_ok());
        assert!(check_symlink_target("").is_err());
        assert!(check_symlink_target("a\0b").is_err());
    }
}
