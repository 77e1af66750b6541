//! The Windows layer format (portable code, tested on Linux): the `Files/` and `Hives/` layout,
//! the PAX records Windows reads (`MSWINDOWS.fileattr`, `MSWINDOWS.rawsd`,
//! `LIBARCHIVE.creationtime`, `atime`, `ctime`), security descriptors, the names NTFS and
//! Windows' importer cannot hold, and a checker that validates a layer against the rules
//! Windows' importer enforces (docs: windows-images.md §1).

use super::reader::ReadLimits;
use super::tar::{BLOCK, Entry, Header, Kind, TarError, TarReader, parse_pax};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::{self, Read};
use std::rc::Rc;

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
/// PAX record: access time (the importer's LastAccessTime; zero time when absent).
pub const PAX_ATIME: &str = "atime";
/// PAX record: change time (the importer's ChangeTime; zero time when absent).
pub const PAX_CTIME: &str = "ctime";

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

/// Sets the Windows records on a header being written under `Files/`, as Microsoft's exporter
/// writes them (go-winio `BasicInfoHeader`): `MSWINDOWS.fileattr`, `LIBARCHIVE.creationtime`,
/// PAX `atime` and `ctime` (all the entry's mtime, so the output stays deterministic), and a
/// security descriptor. A hard link is written as the exporter writes one: mode 0644, size 0,
/// no descriptor of its own (NTFS keeps one per file, shared by every name).
pub fn decorate(h: &mut Header, owner: Option<&str>, dir_link: bool) {
    let (attr, mode) = match h.kind {
        Kind::Dir => (ATTR_DIRECTORY, 0o40755),
        Kind::Symlink => (
            ATTR_REPARSE_POINT | if dir_link { ATTR_DIRECTORY } else { 0 },
            0o120777,
        ),
        Kind::Hardlink => (ATTR_ARCHIVE, 0o644),
        _ => (ATTR_ARCHIVE, 0o100644 | (h.mode & 0o111)),
    };
    h.mode = mode;
    h.uid = 0;
    h.gid = 0;
    if h.kind != Kind::File {
        h.size = 0;
    }
    h.pax.insert(PAX_FILEATTR.into(), attr.to_string());
    let time = format_creation_time(h.mtime, 0);
    h.pax.insert(PAX_CREATIONTIME.into(), time.clone());
    h.pax.insert(PAX_ATIME.into(), time.clone());
    h.pax.insert(PAX_CTIME.into(), time);
    if h.kind == Kind::Hardlink {
        h.pax.remove(PAX_RAWSD);
        return;
    }
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
}

/// NTFS's longest name component, in UTF-16 code units.
pub const MAX_COMPONENT_UNITS: usize = 255;

/// Why a path cannot go into a Windows layer: NTFS (under the importer's `NtCreateFile`
/// calls) refuses it, or the importer reads it as something else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameProblem {
    /// A character NTFS does not allow in a name (`< > : " | ? *`, or `\`, which Windows
    /// reads as a separator). The importer refuses `:` itself (it means an alternate data
    /// stream there).
    Character(char),
    /// A control character (U+0001 to U+001F).
    Control(char),
    /// A component longer than NTFS's 255 UTF-16 units.
    TooLong {
        /// The component.
        component: String,
        /// Its length in UTF-16 units.
        units: usize,
    },
    /// A name starting with `.wh.`: the importer reads it as a deletion.
    Whiteout,
    /// A name ending in `.$wcidirs$`: the importer keeps its own directory records under such
    /// names, so the entry collides with the directory's record or is dropped on export.
    TransportSuffix,
    /// Another entry of the layer has the same name in another case (NTFS compares names
    /// case-insensitively; the second create fails).
    Case {
        /// The tar path written first.
        other: String,
    },
    /// The layer already has an entry of this name (the second create fails).
    Duplicate,
    /// A parent directory of the path is a file in this layer.
    ParentNotDirectory {
        /// The parent, as a tar path.
        parent: String,
    },
    /// A whiteout and an entry for the same path in one layer: the importer deletes the
    /// entry again after importing it.
    DeletedInSameLayer,
    /// A hard link to a directory (NTFS links files only).
    LinkToDirectory {
        /// The target, as a tar path.
        target: String,
    },
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameProblem::Character(c) => write!(f, "NTFS does not allow `{c}` in a name"),
            NameProblem::Control(c) => write!(
                f,
                "NTFS does not allow control characters in a name (U+{:04X})",
                *c as u32
            ),
            NameProblem::TooLong { component, units } => write!(
                f,
                "`{component}` is {units} UTF-16 units long; NTFS allows {MAX_COMPONENT_UNITS}"
            ),
            NameProblem::Whiteout => write!(
                f,
                "a name starting with `.wh.` is read as a deletion by the importer"
            ),
            NameProblem::TransportSuffix => write!(
                f,
                "a name ending in `.$wcidirs$` collides with the importer's directory records"
            ),
            NameProblem::Case { other } => write!(
                f,
                "it differs only in case from `{other}`, and NTFS compares names case-insensitively"
            ),
            NameProblem::Duplicate => write!(f, "the layer already has an entry of that name"),
            NameProblem::ParentNotDirectory { parent } => {
                write!(f, "its parent `{parent}` is a file in this layer")
            }
            NameProblem::DeletedInSameLayer => write!(
                f,
                "the same layer has a whiteout for it, and the importer applies whiteouts after the entries"
            ),
            NameProblem::LinkToDirectory { target } => write!(
                f,
                "it is a hard link to the directory `{target}`; NTFS links files only"
            ),
        }
    }
}

/// A path refused for a Windows layer. The writer returns it inside an `io::Error` of kind
/// `InvalidInput` (`err.get_ref()` and `downcast_ref::<WindowsNameError>()` find it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{path}` cannot go into a Windows layer: {problem}")]
pub struct WindowsNameError {
    /// The path as the caller gave it.
    pub path: String,
    /// What is wrong with it.
    pub problem: NameProblem,
}

impl From<WindowsNameError> for io::Error {
    fn from(e: WindowsNameError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// What is wrong with one name component for NTFS and the importer, if anything.
pub fn component_problem(name: &str) -> Option<NameProblem> {
    for c in name.chars() {
        match c {
            '<' | '>' | ':' | '"' | '|' | '?' | '*' | '\\' => {
                return Some(NameProblem::Character(c));
            }
            '\u{1}'..='\u{1f}' => return Some(NameProblem::Control(c)),
            _ => {}
        }
    }
    let units = name.encode_utf16().count();
    if units > MAX_COMPONENT_UNITS {
        return Some(NameProblem::TooLong {
            component: name.to_string(),
            units,
        });
    }
    if name.starts_with(".wh.") {
        return Some(NameProblem::Whiteout);
    }
    if fold_case(name).ends_with(".$WCIDIRS$") {
        return Some(NameProblem::TransportSuffix);
    }
    None
}

/// The first problem of any `/`-separated component of `path`.
pub fn path_problem(path: &str) -> Option<NameProblem> {
    path.split('/').find_map(component_problem)
}

/// Names NTFS holds but Windows programs cannot open by name: a trailing dot or space (Win32
/// strips them from paths), and the device names (`CON`, `NUL`, `COM1`…, with or without an
/// extension). The importer creates them (it calls `NtCreateFile`, below the Win32 rules).
pub fn component_warning(name: &str) -> Option<&'static str> {
    if name.ends_with('.') || name.ends_with(' ') {
        return Some("Windows programs cannot open a name ending in a dot or a space");
    }
    let stem = name.split('.').next().unwrap_or("").trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    let device = matches!(
        upper.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) || ((upper.starts_with("COM") || upper.starts_with("LPT"))
        && upper.len() == 4
        && upper.as_bytes()[3].is_ascii_digit());
    device.then_some("Windows programs open a device, not this file, under a device name")
}

/// A name as NTFS compares names: each UTF-16 unit upper-cased on its own (the volume's
/// `$UpCase` table maps single units; characters whose upper case is longer stay as they are).
pub fn fold_case(s: &str) -> String {
    s.chars()
        .map(|c| {
            if (c as u32) < 0x10000 {
                let mut up = c.to_uppercase();
                if let (Some(u), None) = (up.next(), up.next())
                    && (u as u32) < 0x10000
                {
                    return u;
                }
            }
            c
        })
        .collect()
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
    /// in a parent layer), or what imports but not as written (times, names Windows programs
    /// cannot open).
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

/// One entry as it is in the tar, before the reader normalizes it: the raw name (with a
/// directory's trailing `/`, if it has one) and every PAX record, `path`, `atime` and `ctime`
/// included (the reader consumes those).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRecords {
    /// The name as stored (PAX `path`, GNU long name, or ustar prefix and name).
    pub name: String,
    /// Every PAX record of the entry's extended header.
    pub pax: BTreeMap<String, String>,
}

fn raw_octal(field: &[u8]) -> Option<u64> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let s = std::str::from_utf8(&field[..end]).ok()?.trim_matches(' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn raw_cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl RawRecords {
    /// Parses the header blocks of one entry: extended headers (`x`, `g`, `L`), then the main
    /// ustar header. `None` when the bytes are not that.
    pub fn parse(bytes: &[u8]) -> Option<RawRecords> {
        let mut at = 0usize;
        let mut pax = BTreeMap::new();
        let mut gnu_name = None;
        loop {
            let block = bytes.get(at..at + BLOCK)?;
            let flag = block[156];
            if matches!(flag, b'x' | b'g' | b'L' | b'K') {
                let size = raw_octal(&block[124..136])? as usize;
                let data = bytes.get(at + BLOCK..at + BLOCK + size)?;
                match flag {
                    b'x' => {
                        for (k, v) in parse_pax(data).ok()? {
                            pax.insert(k, String::from_utf8_lossy(&v).into_owned());
                        }
                    }
                    b'L' => gnu_name = Some(raw_cstr(data)),
                    _ => {}
                }
                at += BLOCK + size.div_ceil(BLOCK) * BLOCK;
                continue;
            }
            let name = match (pax.get("path"), gnu_name) {
                (Some(p), _) => p.clone(),
                (None, Some(g)) => g,
                (None, None) => {
                    let base = raw_cstr(&block[0..100]);
                    let prefix = if &block[257..263] == b"ustar\0" && &block[263..265] == b"00" {
                        raw_cstr(&block[345..500])
                    } else {
                        String::new()
                    };
                    if prefix.is_empty() {
                        base
                    } else {
                        format!("{prefix}/{base}")
                    }
                }
            };
            return Some(RawRecords { name, pax });
        }
    }
}

/// The last bytes a reader passed on, so the checker can see an entry's raw headers.
struct Ring {
    buf: Vec<u8>,
    total: u64,
}

impl Ring {
    fn push(&mut self, mut b: &[u8]) {
        let cap = self.buf.len();
        if b.len() > cap {
            self.total += (b.len() - cap) as u64;
            b = &b[b.len() - cap..];
        }
        let mut at = (self.total % cap as u64) as usize;
        self.total += b.len() as u64;
        while !b.is_empty() {
            let n = (cap - at).min(b.len());
            self.buf[at..at + n].copy_from_slice(&b[..n]);
            b = &b[n..];
            at = 0;
        }
    }

    fn range(&self, start: u64, end: u64) -> Option<Vec<u8>> {
        let cap = self.buf.len() as u64;
        if end > self.total || start > end || self.total - start > cap {
            return None;
        }
        Some((start..end).map(|i| self.buf[(i % cap) as usize]).collect())
    }
}

/// How many header bytes of one entry the checker keeps to read its raw records.
const RAW_WINDOW: usize = 2 << 20;

struct Tap<R> {
    inner: R,
    ring: Rc<RefCell<Ring>>,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ring.borrow_mut().push(&buf[..n]);
        Ok(n)
    }
}

/// Reads a layer blob (any compression) and checks it against the Windows layer rules,
/// raw names and time records included.
pub fn check_blob(blob: impl Read + 'static, limits: ReadLimits) -> Result<CheckReport, TarError> {
    let ring = Rc::new(RefCell::new(Ring {
        buf: vec![0; RAW_WINDOW],
        total: 0,
    }));
    let mut tar = TarReader::new(Tap {
        inner: super::reader::open(blob, limits)?,
        ring: Rc::clone(&ring),
    });
    let mut checker = Checker::new();
    while let Some(e) = tar.next_entry()? {
        let raw = ring
            .borrow()
            .range(e.offset, tar.offset())
            .and_then(|b| RawRecords::parse(&b));
        checker.entry_raw(&e, raw.as_ref());
    }
    tar.drain()?;
    Ok(checker.finish())
}

/// One name of the layer, for collisions.
struct Named {
    path: String,
    dir: bool,
}

/// Validates a Windows layer's entries, in order.
pub struct Checker {
    report: CheckReport,
    seen: BTreeSet<String>,
    dirs: BTreeSet<String>,
    has_files: bool,
    has_hives: bool,
    whiteouts: Vec<(String, u64)>,
    /// Folded tar path → the entry of that name.
    names: HashMap<String, Named>,
    /// Folded tar paths the layer's whiteouts delete.
    deleted: HashMap<String, String>,
    /// Entries without PAX `atime`/`ctime`: count and the first.
    untimed: (u64, Option<(String, u64)>),
    /// Directories named with a trailing `/`: count and the first.
    slashed: (u64, Option<(String, u64)>),
    /// A `UtilityVM` entry with a descriptor (offset): fine in a base layer only.
    uvm_with_data: Option<u64>,
    /// The last regular file and its alternate data streams so far: `<file>:<stream>`
    /// entries right after a file are its streams (go-winio reads them so).
    last_file: Option<String>,
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
            names: HashMap::new(),
            deleted: HashMap::new(),
            untimed: (0, None),
            slashed: (0, None),
            uvm_with_data: None,
            last_file: None,
        }
    }

    fn violation(&mut self, e: &Entry, message: impl Into<String>) {
        self.report.violations.push(Violation {
            entry: e.header.path.clone(),
            offset: e.offset,
            message: message.into(),
        });
    }

    fn warning(&mut self, e: &Entry, message: impl Into<String>) {
        self.report.warnings.push(Violation {
            entry: e.header.path.clone(),
            offset: e.offset,
            message: message.into(),
        });
    }

    /// Looks at one entry (without its raw records: names and times as the reader gives
    /// them).
    pub fn entry(&mut self, e: &Entry) {
        self.entry_raw(e, None)
    }

    /// Looks at one entry together with its raw records (see [`check_blob`]), which show a
    /// directory's trailing `/` and the `atime`/`ctime` records.
    pub fn entry_raw(&mut self, e: &Entry, raw: Option<&RawRecords>) {
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
            let target = match path.rsplit_once('/') {
                Some((d, _)) => format!("{d}/{name}"),
                None => name.to_string(),
            };
            let folded = fold_case(&target);
            if self.names.contains_key(&folded) {
                self.violation(
                    e,
                    format!(
                        "it deletes `{target}`, which this layer adds: {}",
                        NameProblem::DeletedInSameLayer
                    ),
                );
            }
            self.deleted.insert(folded, target);
            self.whiteouts.push((path.to_string(), e.offset));
            self.seen.insert(path.to_string());
            return;
        }
        // An alternate data stream: a regular entry `<file>:<stream>` right after its file.
        let file = self.last_file.take();
        if h.kind == Kind::File
            && let Some(f) = file.filter(|f| {
                path.strip_prefix(f.as_str())
                    .and_then(|r| r.strip_prefix(':'))
                    .is_some_and(|s| !s.is_empty() && !s.contains('/'))
            })
        {
            self.last_file = Some(f);
            self.seen.insert(path.to_string());
            return;
        }
        if h.kind == Kind::File {
            self.last_file = Some(path.to_string());
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
        if let Some(p) = path_problem(path) {
            self.violation(e, p.to_string());
        } else if let Some(w) = path.split('/').find_map(component_warning) {
            self.warning(e, w);
        }
        let folded = fold_case(path);
        if let Some(other) = self.names.get(&folded) {
            let problem = if other.path != path {
                NameProblem::Case {
                    other: other.path.clone(),
                }
            } else {
                NameProblem::Duplicate
            };
            self.violation(e, format!("{problem} (a second create of the name fails)"));
        }
        if self.deleted.contains_key(&folded) {
            self.violation(e, NameProblem::DeletedInSameLayer.to_string());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            if let Some(p) = self.names.get(&fold_case(parent)).filter(|p| !p.dir) {
                let parent = p.path.clone();
                self.violation(e, NameProblem::ParentNotDirectory { parent }.to_string());
            } else if !self.dirs.contains(parent) {
                self.violation(e, format!("its parent directory `{parent}` has no entry before it (Windows creates paths relative to their parent)"));
            }
        }
        if let Some(raw) = raw {
            self.raw_records(e, raw);
        }
        if path == "UtilityVM" && h.pax.contains_key(PAX_RAWSD) {
            self.uvm_with_data = Some(e.offset);
        }
        if !e.had_pax {
            self.violation(
                e,
                "not a PAX entry: Windows reads attributes and security from PAX records",
            );
        }
        // The importer reads nothing of a hard link but its name and target.
        let link = h.kind == Kind::Hardlink;
        match h.pax.get(PAX_FILEATTR) {
            None if !link => self.violation(e, format!("missing `{PAX_FILEATTR}`")),
            None => {}
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
        // Microsoft's exporter writes descriptors for what is under `Files/` (and everything
        // of a base layer); `Files`, `Hives` and the utility VM of a layer with parents it
        // reads without security.
        let needs_sd = !link && path.starts_with("Files/");
        match h.pax.get(PAX_RAWSD) {
            None if needs_sd && !h.pax.contains_key("MSWINDOWS.sd") => {
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
                } else if let Some(t) = self.names.get(&fold_case(&h.link)) {
                    if t.dir {
                        let target = t.path.clone();
                        self.violation(e, NameProblem::LinkToDirectory { target }.to_string());
                    } else if t.path != h.link {
                        let msg = format!(
                            "hard link target `{}` is written `{}` in this layer; the importer looks targets up by their exact name",
                            h.link, t.path
                        );
                        self.violation(e, msg);
                    }
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
        self.names.entry(folded).or_insert(Named {
            path: path.to_string(),
            dir: h.kind == Kind::Dir,
        });
        self.seen.insert(path.to_string());
    }

    fn raw_records(&mut self, e: &Entry, raw: &RawRecords) {
        let path = e.header.path.as_str();
        if e.header.kind == Kind::Dir && raw.name.ends_with('/') {
            if path == "UtilityVM" {
                self.violation(e, format!("the directory is named `{}`: the importer of a layer with parents compares the raw name with `UtilityVM`, so it does not clone the parent's utility VM and the layer fails with \"missing UtilityVM directory\"", raw.name));
            } else if path == "UtilityVM/Files" {
                self.violation(e, format!("the directory is named `{}`: the base layer importer compares the raw name with `UtilityVM/Files`, so the utility VM is not recognised and never processed", raw.name));
            } else {
                self.slashed.0 += 1;
                self.slashed.1.get_or_insert((path.to_string(), e.offset));
            }
        }
        if e.header.kind != Kind::Hardlink
            && !(raw.pax.contains_key(PAX_ATIME) && raw.pax.contains_key(PAX_CTIME))
        {
            self.untimed.0 += 1;
            self.untimed.1.get_or_insert((path.to_string(), e.offset));
        }
    }

    /// Ends the check with the layer-wide rules.
    pub fn finish(mut self) -> CheckReport {
        for (count, first, what) in [
            (
                self.slashed.0,
                self.slashed.1.take(),
                "directory names end in `/`; Microsoft's exporter writes none, and the importer compares some names raw",
            ),
            (
                self.untimed.0,
                self.untimed.1.take(),
                "entries have no PAX `atime`/`ctime`: the importer converts Go's zero time and sets LastAccessTime and ChangeTime to 1754-08-30",
            ),
        ] {
            if let Some((entry, offset)) = first {
                self.report.warnings.push(Violation {
                    entry,
                    offset,
                    message: format!("this and {} more {what}", count - 1),
                });
            }
        }
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
            if (self.seen.contains("UtilityVM/Files")
                || self.seen.iter().any(|p| p.starts_with("UtilityVM/Files/")))
                && !self.seen.contains("UtilityVM/Files/EFI/Microsoft/Boot/BCD")
            {
                self.report.violations.push(Violation {
                    entry: String::new(),
                    offset: 0,
                    message: "a base layer with a UtilityVM needs `UtilityVM/Files/EFI/Microsoft/Boot/BCD`".into(),
                });
            }
        } else {
            if let Some(offset) = self.uvm_with_data {
                self.report.violations.push(Violation {
                    entry: "UtilityVM".into(),
                    offset,
                    message: format!("in a layer with parents `UtilityVM` must carry no `{PAX_RAWSD}`: the importer clones the parent's utility VM for it and has no file to write the descriptor to (\"closed\")"),
                });
            }
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
    fn names_ntfs_refuses_and_names_win32_cannot_open() {
        assert_eq!(component_problem("a:b"), Some(NameProblem::Character(':')));
        assert_eq!(
            component_problem("x\u{7}"),
            Some(NameProblem::Control('\u{7}'))
        );
        assert_eq!(component_problem(".wh.x"), Some(NameProblem::Whiteout));
        assert_eq!(
            component_problem("d.$WcIdIrS$"),
            Some(NameProblem::TransportSuffix)
        );
        assert_eq!(
            component_problem(&"é".repeat(255)),
            None,
            "255 units, 510 bytes"
        );
        assert!(matches!(
            component_problem(&"é".repeat(256)),
            Some(NameProblem::TooLong { units: 256, .. })
        ));
        assert_eq!(
            path_problem("ok/also ok/what?"),
            Some(NameProblem::Character('?'))
        );
        for (name, warn) in [
            ("file.", true),
            ("file ", true),
            ("CON", true),
            ("con.txt", true),
            ("Lpt9", true),
            ("COM10", false),
            ("CONSOLE", false),
            ("file.txt", false),
        ] {
            assert_eq!(component_warning(name).is_some(), warn, "{name}");
        }
        assert_eq!(fold_case("ReadMe.txt"), "README.TXT");
        assert_eq!(fold_case("ǆ"), "Ǆ");
        assert_eq!(fold_case("ß"), "ß");
    }

    #[test]
    fn the_ring_keeps_the_last_bytes() {
        let mut r = Ring {
            buf: vec![0; 8],
            total: 0,
        };
        r.push(b"abcdef");
        r.push(b"ghij");
        assert_eq!(r.range(4, 10).as_deref(), Some(&b"efghij"[..]));
        assert_eq!(r.range(1, 10), None, "more than the ring holds");
        r.push(&[b'z'; 20]);
        assert_eq!(r.total, 30);
        assert_eq!(r.range(22, 30).as_deref(), Some(&[b'z'; 8][..]));
    }

    #[test]
    fn link_targets() {
        assert_eq!(windows_link_target("../lib/x.dll"), "..\\lib\\x.dll");
        assert_eq!(windows_link_target("/app/bin"), "C:\\app\\bin");
        assert_eq!(windows_link_target("C:\\already"), "C:\\already");
    }
}
