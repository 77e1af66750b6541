//! The Windows layer format (portable code, tested on Linux): the `Files/` and `Hives/` layout,
//! the PAX records Windows reads (`MSWINDOWS.fileattr`, `MSWINDOWS.rawsd`,
//! `LIBARCHIVE.creationtime`), security descriptors, and a checker that validates a layer
//! against the rules Windows' importer enforces (docs: windows-images.md §1).

use super::tar::{Entry, Header, Kind};
use std::collections::BTreeSet;
use std::fmt;

/// `FILE_ATTRIBUTE_DIRECTORY`.
pub const ATTR_DIRECTORY: u32 = 0x10;
/// `FILE_ATTRIBUTE_ARCHIVE`.
pub const ATTR_ARCHIVE: u32 = 0x20;
/// `FILE_ATTRIBUTE_REPARSE_POINT`.
pub const ATTR_REPARSE_POINT: u32 = 0x400;

/// PAX record: file attributes (decimal).
pub const PAX_FILEATTR: &str = "MSWINDOWS.fileattr";
/// PAX record: self-relative security descriptor (base64).
pub const PAX_RAWSD: &str = "MSWINDOWS.rawsd";
/// PAX record: creation time (`secs[.frac]`).
pub const PAX_CREATIONTIME: &str = "LIBARCHIVE.creationtime";
/// PAX record: the symlink is a directory junction.
pub const PAX_MOUNTPOINT: &str = "MSWINDOWS.mountpoint";

/// The descriptor BuildKit gives directories in Windows layers built on Linux:
/// `O:BAG:SYD:(A;OICI;FA;;;BA)(A;OICI;FA;;;SY)(A;;FA;;;BA)(A;OICIIO;GA;;;CO)(A;OICI;0x1200a9;;;BU)(A;CI;LC;;;BU)(A;CI;DC;;;BU)`.
pub const DEFAULT_DIR_SD: &str = "AQAEgBQAAAAkAAAAAAAAADAAAAABAgAAAAAABSAAAAAgAgAAAQEAAAAAAAUSAAAAAgCoAAcAAAAAAxgA/wEfAAECAAAAAAAFIAAAACACAAAAAxQA/wEfAAEBAAAAAAAFEgAAAAAAGAD/AR8AAQIAAAAAAAUgAAAAIAIAAAALFAAAAAAQAQEAAAAAAAMAAAAAAAMYAKkAEgABAgAAAAAABSAAAAAhAgAAAAIYAAQAAAABAgAAAAAABSAAAAAhAgAAAAIYAAIAAAABAgAAAAAABSAAAAAhAgAA";
/// The descriptor for files: `O:BAG:SYD:(A;;FA;;;BA)(A;;FA;;;SY)(A;;0x1200a9;;;BU)`.
pub const DEFAULT_FILE_SD: &str = "AQAEgBQAAAAkAAAAAAAAADAAAAABAgAAAAAABSAAAAAgAgAAAQEAAAAAAAUSAAAAAgBMAAMAAAAAABgA/wEfAAECAAAAAAAFIAAAACACAAAAABQA/wEfAAEBAAAAAAAFEgAAAAAAGACpABIAAQIAAAAAAAUgAAAAIQIAAA==";

/// The SID of the built-in `ContainerAdministrator`.
pub const CONTAINER_ADMINISTRATOR_SID: &str = "S-1-5-93-2-1";
/// The SID of the built-in `ContainerUser`.
pub const CONTAINER_USER_SID: &str = "S-1-5-93-2-2";

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

/// Decodes standard base64 (padding required); `None` when malformed.
pub fn unbase64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for chunk in b.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if i >= 4 - pad { 0 } else { val(c)? };
            n = n << 6 | v;
        }
        out.push((n >> 16) as u8);
        if pad < 2 {
            out.push((n >> 8) as u8);
        }
        if pad < 1 {
            out.push(n as u8);
        }
    }
    Some(out)
}

/// Parses `S-1-5-93-2-1` into binary SID form.
pub fn sid_bytes(sid: &str) -> Option<Vec<u8>> {
    let mut parts = sid.strip_prefix("S-")?.split('-');
    let rev: u8 = parts.next()?.parse().ok()?;
    let auth: u64 = parts.next()?.parse().ok()?;
    if auth >= 1 << 48 {
        return None;
    }
    let subs: Vec<u32> = parts.map(|p| p.parse().ok()).collect::<Option<_>>()?;
    if subs.is_empty() || subs.len() > 15 {
        return None;
    }
    let mut b = vec![rev, subs.len() as u8];
    b.extend_from_slice(&auth.to_be_bytes()[2..]);
    for s in subs {
        b.extend_from_slice(&s.to_le_bytes());
    }
    Some(b)
}

/// A self-relative security descriptor with `owner` and group set to `owner`, DACL copied from
/// the default for the kind (so ACEs stay as Windows builders write them), as base64.
/// `None` for a malformed SID.
pub fn descriptor_with_owner(owner: &str, dir: bool) -> Option<String> {
    let sid = sid_bytes(owner)?;
    let default = unbase64(if dir { DEFAULT_DIR_SD } else { DEFAULT_FILE_SD })?;
    let dacl_off = u32::from_le_bytes(default[16..20].try_into().ok()?) as usize;
    let dacl = default.get(dacl_off..)?.to_vec();
    let mut sd = vec![1u8, 0];
    sd.extend_from_slice(&0x8004u16.to_le_bytes()); // SE_SELF_RELATIVE | SE_DACL_PRESENT
    let owner_off = 20u32;
    let group_off = owner_off + sid.len() as u32;
    let dacl_off = group_off + sid.len() as u32;
    sd.extend_from_slice(&owner_off.to_le_bytes());
    sd.extend_from_slice(&group_off.to_le_bytes());
    sd.extend_from_slice(&0u32.to_le_bytes());
    sd.extend_from_slice(&dacl_off.to_le_bytes());
    sd.extend_from_slice(&sid);
    sd.extend_from_slice(&sid);
    sd.extend_from_slice(&dacl);
    Some(base64(&sd))
}

/// The owner SID of a base64 self-relative descriptor, as `S-…`.
pub fn descriptor_owner(rawsd: &str) -> Option<String> {
    let b = unbase64(rawsd)?;
    let off = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?) as usize;
    let sid = b.get(off..)?;
    let count = *sid.get(1)? as usize;
    let mut auth = [0u8; 8];
    auth[2..].copy_from_slice(sid.get(2..8)?);
    let mut s = format!("S-{}-{}", sid[0], u64::from_be_bytes(auth));
    for i in 0..count {
        let v = u32::from_le_bytes(sid.get(8 + i * 4..12 + i * 4)?.try_into().ok()?);
        s.push_str(&format!("-{v}"));
    }
    Some(s)
}

/// A time as go-winio writes `LIBARCHIVE.creationtime`: seconds, then a 9-digit fraction with
/// trailing zeros trimmed, omitted when zero.
pub fn format_creation_time(secs: i64, nanos: u32) -> String {
    if nanos == 0 {
        return secs.to_string();
    }
    let frac = format!("{nanos:09}");
    format!("{secs}.{}", frac.trim_end_matches('0'))
}

/// Converts a symlink target to Windows form: `/` becomes `\`, an absolute target gets `C:`.
pub fn windows_link_target(target: &str) -> String {
    if target.contains('\\') || target.get(1..2) == Some(":") {
        return target.to_string();
    }
    let t = target.replace('/', "\\");
    if t.starts_with('\\') {
        format!("C:{t}")
    } else {
        t
    }
}

/// Sets the Windows records on a header being written under `Files/`.
pub fn decorate(h: &mut Header, owner: Option<&str>, dir_link: bool) {
    let (attr, mode) = match h.kind {
        Kind::Dir => (ATTR_DIRECTORY, 0o40755),
        Kind::Symlink => (
            ATTR_REPARSE_POINT | if dir_link { ATTR_DIRECTORY } else { 0 },
            0o120777,
        ),
        _ => (ATTR_ARCHIVE, 0o100644 | (h.mode & 0o111)),
    };
    h.mode = mode;
    h.uid = 0;
    h.gid = 0;
    h.pax.insert(PAX_FILEATTR.into(), attr.to_string());
    let is_dir = h.kind == Kind::Dir || dir_link;
    let sd = owner
        .and_then(|o| descriptor_with_owner(o, is_dir))
        .unwrap_or_else(|| {
            (if is_dir {
                DEFAULT_DIR_SD
            } else {
                DEFAULT_FILE_SD
            })
            .to_string()
        });
    h.pax.insert(PAX_RAWSD.into(), sd);
    h.pax
        .insert(PAX_CREATIONTIME.into(), format_creation_time(h.mtime, 0));
}

/// One rule a Windows layer breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The entry concerned (empty for layer-wide problems).
    pub entry: String,
    /// Offset of its header in the tar.
    pub offset: u64,
    /// What is wrong.
    pub message: String,
}

/// The result of checking a Windows layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Entries read.
    pub entries: u64,
    /// True when the layer looks like a base layer (no `Hives/`, OS files under `Files/`).
    pub base_layer: bool,
    /// Everything wrong, in tar order.
    pub violations: Vec<Violation>,
    /// What may be fine but cannot be verified from this layer alone (a hard link to a file
    /// in a parent layer).
    pub warnings: Vec<Violation>,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (label, list) in [("", &self.violations), ("warning: ", &self.warnings)] {
            for v in list {
                if v.entry.is_empty() {
                    writeln!(f, "{label}layer: {}", v.message)?;
                } else {
                    writeln!(
                        f,
                        "{label}`{}` (at byte {}): {}",
                        v.entry, v.offset, v.message
                    )?;
                }
            }
        }
        write!(
            f,
            "{} entries, {} layer, {} violation{}",
            self.entries,
            if self.base_layer { "base" } else { "non-base" },
            self.violations.len(),
            if self.violations.len() == 1 { "" } else { "s" }
        )
    }
}

/// Validates a Windows layer's entries, in order.
pub struct Checker {
    report: CheckReport,
    seen: BTreeSet<String>,
    dirs: BTreeSet<String>,
    has_files: bool,
    has_hives: bool,
    whiteouts: Vec<(String, u64)>,
}

impl Default for Checker {
    fn default() -> Self {
        Self::new()
    }
}

impl Checker {
    /// A new checker.
    pub fn new() -> Self {
        Checker {
            report: CheckReport::default(),
            seen: BTreeSet::new(),
            dirs: BTreeSet::new(),
            has_files: false,
            has_hives: false,
            whiteouts: Vec::new(),
        }
    }

    fn violation(&mut self, e: &Entry, message: impl Into<String>) {
        self.report.violations.push(Violation {
            entry: e.header.path.clone(),
            offset: e.offset,
            message: message.into(),
        });
    }

    /// Looks at one entry.
    pub fn entry(&mut self, e: &Entry) {
        self.report.entries += 1;
        let h = &e.header;
        let path = h.path.as_str();
        if path.starts_with('/')
            || path
                .split('/')
                .any(|c| c == ".." || c == "." || c.is_empty())
        {
            self.violation(
                e,
                "names must be relative, `/`-separated, without `.`, `..` or empty components",
            );
            return;
        }
        let top = path.split('/').next().unwrap_or("");
        let base = path.rsplit('/').next().unwrap_or("");
        if let Some(name) = base.strip_prefix(".wh.") {
            if name == ".wh..opq" || base == ".wh..wh..opq" {
                self.violation(
                    e,
                    "opaque whiteouts are not supported by Windows; write a whiteout per entry",
                );
            } else if !(path.starts_with("Files/") || path.starts_with("UtilityVM/Files/")) {
                self.violation(e, "whiteouts are only valid under `Files/` or `UtilityVM/Files/` (\"invalid tombstone\")");
            }
            if h.kind != Kind::File || h.size != 0 {
                self.violation(e, "a whiteout is an empty regular-file entry");
            }
            self.whiteouts.push((path.to_string(), e.offset));
            self.seen.insert(path.to_string());
            return;
        }
        match top {
            "Files" => self.has_files = true,
            "Hives" => self.has_hives = true,
            "UtilityVM" => {}
            _ => {
                self.violation(
                    e,
                    "entries must be under `Files/`, `Hives/` or `UtilityVM/`",
                );
            }
        }
        if let Some((parent, _)) = path.rsplit_once('/')
            && !self.dirs.contains(parent)
        {
            self.violation(e, format!("its parent directory `{parent}` has no entry before it (Windows creates paths relative to their parent)"));
        }
        if !e.had_pax {
            self.violation(
                e,
                "not a PAX entry: Windows reads attributes and security from PAX records",
            );
        }
        match h.pax.get(PAX_FILEATTR) {
            None => self.violation(e, format!("missing `{PAX_FILEATTR}`")),
            Some(v) => match v.parse::<u32>() {
                Err(_) => self.violation(
                    e,
                    format!("`{PAX_FILEATTR}` is not a decimal number: `{v}`"),
                ),
                Ok(a) => {
                    let dir_bit = a & ATTR_DIRECTORY != 0;
                    if h.kind == Kind::Dir && !dir_bit {
                        self.violation(e, format!("a directory needs FILE_ATTRIBUTE_DIRECTORY (16) in `{PAX_FILEATTR}`, found {a}"));
                    }
                    if h.kind == Kind::File && dir_bit {
                        self.violation(
                            e,
                            format!(
                                "a file has FILE_ATTRIBUTE_DIRECTORY in `{PAX_FILEATTR}` ({a})"
                            ),
                        );
                    }
                    if h.kind == Kind::Symlink && a & ATTR_REPARSE_POINT == 0 {
                        self.violation(e, format!("a symlink needs FILE_ATTRIBUTE_REPARSE_POINT (1024) in `{PAX_FILEATTR}`, found {a}"));
                    }
                }
            },
        }
        match h.pax.get(PAX_RAWSD) {
            None if !h.pax.contains_key("MSWINDOWS.sd") => {
                self.violation(e, format!("missing `{PAX_RAWSD}`"))
            }
            Some(v) if unbase64(v).is_none_or(|b| b.len() < 20 || b[0] != 1) => self.violation(
                e,
                format!("`{PAX_RAWSD}` is not a base64 self-relative security descriptor"),
            ),
            _ => {}
        }
        if let Some(v) = h.pax.get(PAX_CREATIONTIME) {
            let ok = match v.split_once('.') {
                None => v.parse::<i64>().is_ok(),
                Some((s, f)) => {
                    s.parse::<i64>().is_ok()
                        && !f.is_empty()
                        && f.len() <= 9
                        && f.bytes().all(|b| b.is_ascii_digit())
                        && !f.ends_with('0')
                }
            };
            if !ok {
                self.violation(
                    e,
                    format!(
                        "`{PAX_CREATIONTIME}` is not `secs[.frac]` as go-winio writes it: `{v}`"
                    ),
                );
            }
        }
        match h.kind {
            Kind::Hardlink => {
                if !(h.link.starts_with("Files/") || h.link.starts_with("UtilityVM/Files/")) {
                    self.violation(
                        e,
                        format!(
                            "hard link target `{}` is not under `Files/` or `UtilityVM/Files/`",
                            h.link
                        ),
                    );
                } else if !self.seen.contains(&h.link) {
                    // Allowed when the target is in a parent layer; a linter can only warn.
                    self.report.warnings.push(Violation {
                        entry: h.path.clone(),
                        offset: e.offset,
                        message: format!("hard link target `{}` is not earlier in this layer; the import fails unless a parent layer has it", h.link),
                    });
                }
            }
            Kind::Symlink if h.link.contains('/') && !h.link.contains('\\') => {
                self.violation(e, format!("symlink target `{}` is in Unix form; Windows stores `\\`-separated targets", h.link));
            }
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {
                self.violation(e, "devices and pipes cannot exist in a Windows layer");
            }
            _ => {}
        }
        if h.kind == Kind::Dir {
            self.dirs.insert(path.to_string());
        }
        self.seen.insert(path.to_string());
    }

    /// Ends the check with the layer-wide rules.
    pub fn finish(mut self) -> CheckReport {
        let base = !self.has_hives && self.has_files;
        self.report.base_layer = base;
        if base {
            for (w, off) in std::mem::take(&mut self.whiteouts) {
                self.report.violations.push(Violation {
                    entry: w,
                    offset: off,
                    message: "a base layer cannot have tombstones (whiteouts)".into(),
                });
            }
            if self.seen.iter().any(|p| p.starts_with("UtilityVM/Files/"))
                && !self.seen.contains("UtilityVM/Files/EFI/Microsoft/Boot/BCD")
            {
                self.report.violations.push(Violation {
                    entry: String::new(),
                    offset: 0,
                    message: "a base layer with a UtilityVM needs `UtilityVM/Files/EFI/Microsoft/Boot/BCD`".into(),
                });
            }
        } else {
            for (dir, present) in [
                ("Files", self.dirs.contains("Files")),
                ("Hives", self.dirs.contains("Hives")),
            ] {
                if !present {
                    self.report.violations.push(Violation {
                        entry: String::new(),
                        offset: 0,
                        message: format!("no `{dir}` directory entry (every Windows layer producer writes `Files` and `Hives`)"),
                    });
                }
            }
        }
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for n in 0..10 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
            assert_eq!(unbase64(&base64(&data)).unwrap(), data);
        }
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert!(unbase64("abc").is_none());
    }

    #[test]
    fn default_descriptors_decode_with_the_expected_owners() {
        // O:BA = BUILTIN\Administrators, S-1-5-32-544.
        assert_eq!(
            descriptor_owner(DEFAULT_DIR_SD).as_deref(),
            Some("S-1-5-32-544")
        );
        assert_eq!(
            descriptor_owner(DEFAULT_FILE_SD).as_deref(),
            Some("S-1-5-32-544")
        );
    }

    #[test]
    fn owner_descriptors() {
        let sd = descriptor_with_owner(CONTAINER_USER_SID, false).unwrap();
        assert_eq!(descriptor_owner(&sd).as_deref(), Some(CONTAINER_USER_SID));
        let raw = unbase64(&sd).unwrap();
        assert_eq!(raw[0], 1);
        assert_eq!(
            u16::from_le_bytes([raw[2], raw[3]]) & 0x8000,
            0x8000,
            "self-relative"
        );
        assert!(descriptor_with_owner("not-a-sid", true).is_none());
        assert_eq!(
            sid_bytes("S-1-5-93-2-1").unwrap(),
            [1, 3, 0, 0, 0, 0, 0, 5, 93, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0]
        );
    }

    #[test]
    fn creation_time_format() {
        assert_eq!(format_creation_time(1_700_000_000, 0), "1700000000");
        assert_eq!(format_creation_time(1, 500_000_000), "1.5");
        assert_eq!(format_creation_time(1, 1), "1.000000001");
    }

    #[test]
    fn link_targets() {
        assert_eq!(windows_link_target("../lib/x.dll"), "..\\lib\\x.dll");
        assert_eq!(windows_link_target("/app/bin"), "C:\\app\\bin");
        assert_eq!(windows_link_target("C:\\already"), "C:\\already");
    }
}
