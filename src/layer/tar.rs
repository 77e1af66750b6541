//! The tar format as layers use it: ustar headers, PAX extended records (long names, xattrs,
//! Windows records), GNU long names on input. Writing is deterministic; reading is streaming
//! and strict (checksums verified, sizes bounded, errors name the entry and its offset).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

/// The tar block size.
pub const BLOCK: usize = 512;

/// Largest PAX or GNU long-name record accepted when reading.
pub const MAX_EXTENDED_HEADER: u64 = 1024 * 1024;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A hard link to an earlier entry.
    Hardlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
}

impl Kind {
    fn typeflag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::CharDevice => b'3',
            Kind::BlockDevice => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        }
    }
}

/// One tar header's worth of metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The path as stored (`/`-separated, relative; directories without a trailing `/`).
    pub path: String,
    /// What it is.
    pub kind: Kind,
    /// Content size (files only).
    pub size: u64,
    /// Permission and type bits as written in the mode field.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Symlink target or hard-link source path.
    pub link: String,
    /// Device numbers.
    pub dev: (u32, u32),
    /// PAX records other than those the fields above carry (xattrs, Windows records).
    pub pax: BTreeMap<String, String>,
    /// Extended attributes (PAX `SCHILY.xattr.<name>`), values as raw bytes.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Header {
    /// A header with defaults: mode 0644 (0755 for directories), owner 0, mtime 0.
    pub fn new(path: &str, kind: Kind) -> Header {
        Header {
            path: path.to_string(),
            kind,
            size: 0,
            mode: if kind == Kind::Dir { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: 0,
            link: String::new(),
            dev: (0, 0),
            pax: BTreeMap::new(),
            xattrs: BTreeMap::new(),
        }
    }
}

fn put_octal(field: &mut [u8], value: u64) -> bool {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    if s.len() > width {
        return false;
    }
    field[..width].copy_from_slice(s.as_bytes());
    field[width] = 0;
    true
}

fn put_str(field: &mut [u8], s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() > field.len() {
        return false;
    }
    field[..b.len()].copy_from_slice(b);
    true
}

fn checksum(h: &mut [u8; BLOCK]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body_len + 1;
    while len.to_string().len() + body_len != len {
        len = len.to_string().len() + body_len;
    }
    let mut out = len.to_string().into_bytes();
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// How headers are written: the two layer formats name directories differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderStyle {
    /// Write a PAX extended header for every entry, even when ustar could hold it.
    pub always_pax: bool,
    /// End directory names with `/` (as BuildKit and GNU tar write Linux layers). Windows
    /// layers have none: Microsoft's exporter writes `UtilityVM/Files`, and the importer
    /// compares the raw name with that.
    pub dir_slash: bool,
}

impl HeaderStyle {
    /// Linux layers: ustar unless PAX is needed, directories with a trailing `/`.
    pub const LINUX: HeaderStyle = HeaderStyle {
        always_pax: false,
        dir_slash: true,
    };
    /// Windows layers: PAX always, directories without a trailing `/`.
    pub const WINDOWS: HeaderStyle = HeaderStyle {
        always_pax: true,
        dir_slash: false,
    };
}

/// Encodes one header (with a PAX extended header before it when needed, or when
/// `always_pax`) into `out`, directories named with a trailing `/`. Content and padding are
/// the caller's.
pub fn encode_header(h: &Header, always_pax: bool, out: &mut Vec<u8>) {
    encode_header_styled(
        h,
        HeaderStyle {
            always_pax,
            dir_slash: true,
        },
        out,
    )
}

/// Encodes one header in the given style (see [`encode_header`]).
pub fn encode_header_styled(h: &Header, style: HeaderStyle, out: &mut Vec<u8>) {
    let always_pax = style.always_pax;
    let mut records: BTreeMap<String, String> = h.pax.clone();
    let mut block = [0u8; BLOCK];
    let trimmed = h.path.trim_end_matches('/');
    let name = if h.kind == Kind::Dir && style.dir_slash {
        format!("{trimmed}/")
    } else if h.kind == Kind::Dir && !trimmed.is_empty() {
        trimmed.to_string()
    } else {
        h.path.clone()
    };
    if !put_str(&mut block[0..100], &name) || !name.is_ascii() {
        records.insert("path".into(), name.clone());
        put_str(&mut block[0..100], truncate_ascii(&name, 100));
    }
    if !h.link.is_empty() && (!put_str(&mut block[157..257], &h.link) || !h.link.is_ascii()) {
        records.insert("linkpath".into(), h.link.clone());
        block[157..257].fill(0);
        put_str(&mut block[157..257], truncate_ascii(&h.link, 100));
    }
    put_octal(&mut block[100..108], (h.mode & 0o7777777) as u64);
    if !put_octal(&mut block[108..116], h.uid) {
        records.insert("uid".into(), h.uid.to_string());
        put_octal(&mut block[108..116], 0);
    }
    if !put_octal(&mut block[116..124], h.gid) {
        records.insert("gid".into(), h.gid.to_string());
        put_octal(&mut block[116..124], 0);
    }
    if !put_octal(&mut block[124..136], h.size) {
        records.insert("size".into(), h.size.to_string());
        put_octal(&mut block[124..136], 0);
    }
    if h.mtime < 0 || !put_octal(&mut block[136..148], h.mtime as u64) {
        records.insert("mtime".into(), h.mtime.to_string());
        put_octal(&mut block[136..148], 0);
    }
    block[156] = h.kind.typeflag();
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    if matches!(h.kind, Kind::CharDevice | Kind::BlockDevice) {
        put_octal(&mut block[329..337], h.dev.0 as u64);
        put_octal(&mut block[337..345], h.dev.1 as u64);
    } else {
        put_octal(&mut block[329..337], 0);
        put_octal(&mut block[337..345], 0);
    }
    checksum(&mut block);
    if !records.is_empty() || !h.xattrs.is_empty() || always_pax {
        let mut body: Vec<u8> = Vec::new();
        let mut all: BTreeMap<String, Vec<u8>> = records
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        for (k, v) in &h.xattrs {
            all.insert(format!("SCHILY.xattr.{k}"), v.clone());
        }
        for (k, v) in &all {
            body.extend_from_slice(&pax_record(k, v));
        }
        let mut ph = [0u8; BLOCK];
        let (dir, base) = match name.trim_end_matches('/').rsplit_once('/') {
            Some((d, b)) => (format!("{d}/"), b),
            None => (String::new(), name.trim_end_matches('/')),
        };
        let pax_name = format!("{dir}PaxHeaders.0/{base}");
        put_str(&mut ph[0..100], truncate_ascii(&pax_name, 100));
        put_octal(&mut ph[100..108], 0o644);
        put_octal(&mut ph[108..116], 0);
        put_octal(&mut ph[116..124], 0);
        put_octal(&mut ph[124..136], body.len() as u64);
        put_octal(&mut ph[136..148], 0);
        ph[156] = b'x';
        ph[257..263].copy_from_slice(b"ustar\0");
        ph[263..265].copy_from_slice(b"00");
        checksum(&mut ph);
        out.extend_from_slice(&ph);
        out.extend_from_slice(&body);
        pad_to_block(out, body.len() as u64);
    }
    out.extend_from_slice(&block);
}

fn truncate_ascii(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Appends zeros so that `len` bytes of content end on a block boundary.
pub fn pad_to_block(out: &mut Vec<u8>, len: u64) {
    let rem = (len % BLOCK as u64) as usize;
    if rem != 0 {
        out.extend(std::iter::repeat_n(0u8, BLOCK - rem));
    }
}

/// The two zero blocks that end an archive.
pub const END: [u8; BLOCK * 2] = [0u8; BLOCK * 2];

/// An error reading a tar stream.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// The stream could not be read.
    #[error("reading the layer: {0}")]
    Io(#[from] io::Error),
    /// A header or record is malformed.
    #[error("malformed tar at byte {offset}{}: {message}", entry.as_ref().map(|e| format!(" (entry `{e}`)")).unwrap_or_default())]
    Malformed {
        /// Byte offset of the header.
        offset: u64,
        /// The entry's name, when known.
        entry: Option<String>,
        /// What is wrong.
        message: String,
    },
}

/// An entry read from a stream.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The metadata (PAX values applied; `pax` holds the other records).
    pub header: Header,
    /// Byte offset of the entry's first header in the uncompressed tar.
    pub offset: u64,
    /// True when this entry had a PAX extended header.
    pub had_pax: bool,
}

/// Reads entries from an uncompressed tar stream.
pub struct TarReader<R: Read> {
    input: R,
    offset: u64,
    remaining: u64,
    padding: u64,
    globals: BTreeMap<String, String>,
    ended: bool,
}

fn parse_num(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            // A negative base-256 number: no size, id or device is negative.
            return None;
        }
        let mut v: u64 = (field[0] & 0x3f) as u64;
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(v);
    }
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let s = std::str::from_utf8(&field[..end]).ok()?.trim_matches(' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// A time field: octal, or base-256 two's complement (negative times are before 1970).
fn parse_time(field: &[u8]) -> Option<i64> {
    let Some(&first) = field.first() else {
        return Some(0);
    };
    if first & 0x80 == 0 {
        return parse_num(field).and_then(|v| i64::try_from(v).ok());
    }
    // Bit 7 marks base-256 and is not part of the number; bit 6 is its sign.
    let invert = if first & 0x40 != 0 { 0xff } else { 0 };
    let mut x: u64 = 0;
    for (i, &b) in field.iter().enumerate() {
        let mut c = b ^ invert;
        if i == 0 {
            c &= 0x7f;
        }
        if x >> 56 != 0 {
            return None;
        }
        x = x << 8 | c as u64;
    }
    if x >> 63 != 0 {
        return None;
    }
    Some(if invert != 0 { !(x as i64) } else { x as i64 })
}

/// A PAX decimal number (`uid`, `gid`, `size`): digits only.
fn pax_unsigned(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// A PAX time, `[-]secs[.frac]`: the whole seconds.
fn pax_time(v: &str) -> Option<i64> {
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = secs.strip_prefix('-').unwrap_or(secs);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    secs.parse().ok()
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Parses PAX records (`len key=value\n`).
pub fn parse_pax(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("PAX record without a length")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("PAX record with a bad length")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err("PAX record length does not fit".into());
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or("PAX record without `=`")?;
        out.push((
            String::from_utf8_lossy(&rec[..eq]).into_owned(),
            rec[eq + 1..].to_vec(),
        ));
        rest = &rest[len..];
    }
    Ok(out)
}

impl<R: Read> TarReader<R> {
    /// Reads from an uncompressed tar stream.
    pub fn new(input: R) -> Self {
        TarReader {
            input,
            offset: 0,
            remaining: 0,
            padding: 0,
            globals: BTreeMap::new(),
            ended: false,
        }
    }

    /// Bytes of the tar consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn malformed(&self, offset: u64, entry: Option<&str>, message: impl Into<String>) -> TarError {
        TarError::Malformed {
            offset,
            entry: entry.map(String::from),
            message: message.into(),
        }
    }

    fn read_exact_counted(&mut self, buf: &mut [u8], what: &str) -> Result<(), TarError> {
        let at = self.offset;
        match self.input.read_exact(buf) {
            Ok(()) => {
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(self.malformed(at, None, format!("the stream ends inside {what}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn skip(&mut self, mut n: u64, what: &str) -> Result<(), TarError> {
        let mut buf = [0u8; 16 * 1024];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.read_exact_counted(&mut buf[..k], what)?;
            n -= k as u64;
        }
        Ok(())
    }

    /// The next entry; `None` at the end-of-archive marker (or a clean end of stream).
    pub fn next_entry(&mut self) -> Result<Option<Entry>, TarError> {
        if self.ended {
            return Ok(None);
        }
        let rest = self.remaining + self.padding;
        self.skip(rest, "an entry's content")?;
        self.remaining = 0;
        self.padding = 0;
        let mut pax: BTreeMap<String, String> = self.globals.clone();
        let mut xattrs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut had_pax = false;
        let mut gnu_name: Option<String> = None;
        let mut gnu_link: Option<String> = None;
        let mut first_offset = None;
        loop {
            let offset = self.offset;
            first_offset.get_or_insert(offset);
            let mut block = [0u8; BLOCK];
            let mut got = 0;
            while got < BLOCK {
                let n = self.input.read(&mut block[got..])?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            if got == 0 {
                self.ended = true;
                if had_pax || gnu_name.is_some() {
                    return Err(self.malformed(
                        offset,
                        None,
                        "the stream ends after an extended header",
                    ));
                }
                return Ok(None);
            }
            if got < BLOCK {
                return Err(self.malformed(offset, None, "the stream ends inside a header"));
            }
            self.offset += BLOCK as u64;
            if block.iter().all(|&b| b == 0) {
                self.ended = true;
                return Ok(None);
            }
            let name_hint = cstr(&block[0..100]);
            let stored = parse_num(&block[148..156])
                .ok_or_else(|| self.malformed(offset, Some(&name_hint), "unreadable checksum"))?;
            let mut copy = block;
            copy[148..156].copy_from_slice(b"        ");
            let unsigned: u64 = copy.iter().map(|&b| b as u64).sum();
            let signed: i64 = copy.iter().map(|&b| b as i8 as i64).sum();
            if stored != unsigned && stored as i64 != signed {
                return Err(self.malformed(offset, Some(&name_hint), "header checksum mismatch"));
            }
            let size = parse_num(&block[124..136])
                .ok_or_else(|| self.malformed(offset, Some(&name_hint), "unreadable size"))?;
            let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
            let typeflag = block[156];
            match typeflag {
                b'x' | b'g' | b'L' | b'K' => {
                    if size > MAX_EXTENDED_HEADER {
                        return Err(self.malformed(
                            offset,
                            Some(&name_hint),
                            format!("extended header of {size} bytes is larger than the {MAX_EXTENDED_HEADER} allowed"),
                        ));
                    }
                    let mut data = vec![0u8; size as usize];
                    self.read_exact_counted(&mut data, "an extended header")?;
                    self.skip(pad, "an extended header")?;
                    // One of each per entry: two would leave readers to disagree on which
                    // one counts.
                    let twice = match typeflag {
                        b'L' => gnu_name.is_some(),
                        b'K' => gnu_link.is_some(),
                        b'x' => had_pax,
                        _ => false,
                    };
                    if twice {
                        return Err(self.malformed(
                            offset,
                            Some(&name_hint),
                            format!(
                                "a second `{}` extended header for the same entry",
                                typeflag as char
                            ),
                        ));
                    }
                    match typeflag {
                        b'L' => gnu_name = Some(cstr(&data)),
                        b'K' => gnu_link = Some(cstr(&data)),
                        _ => {
                            let recs = parse_pax(&data)
                                .map_err(|m| self.malformed(offset, Some(&name_hint), m))?;
                            let mut seen = std::collections::BTreeSet::new();
                            for (k, v) in recs {
                                let bad = |m: String| self.malformed(offset, Some(&name_hint), m);
                                if !seen.insert(k.clone()) {
                                    return Err(bad(format!("the PAX record `{k}` appears twice")));
                                }
                                if k.contains('\0') || k.is_empty() {
                                    return Err(bad(
                                        "a PAX record with an empty key or NUL in its key".into(),
                                    ));
                                }
                                if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                                    xattrs.insert(name.to_string(), v);
                                    continue;
                                }
                                if matches!(k.as_str(), "path" | "linkpath" | "uname" | "gname")
                                    && v.contains(&0)
                                {
                                    return Err(bad(format!("the PAX record `{k}` contains NUL")));
                                }
                                if typeflag == b'g'
                                    && matches!(k.as_str(), "path" | "linkpath" | "size")
                                {
                                    return Err(bad(format!(
                                        "a global PAX header sets `{k}`, which would apply to every entry"
                                    )));
                                }
                                let v = String::from_utf8_lossy(&v).into_owned();
                                if typeflag == b'g' {
                                    self.globals.insert(k.clone(), v.clone());
                                }
                                pax.insert(k, v);
                            }
                            had_pax |= typeflag == b'x';
                        }
                    }
                    continue;
                }
                _ => {}
            }
            let ustar = &block[257..262] == b"ustar";
            let mut path = match (pax.remove("path"), gnu_name.take()) {
                (Some(p), _) => p,
                (None, Some(g)) => g,
                (None, None) => {
                    let base = cstr(&block[0..100]);
                    let prefix = if ustar && &block[263..265] == b"00" {
                        cstr(&block[345..500])
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
            let link = pax
                .remove("linkpath")
                .or(gnu_link.take())
                .unwrap_or_else(|| cstr(&block[157..257]));
            let kind = match typeflag {
                b'0' | 0 | b'7' => {
                    if path.ends_with('/') {
                        Kind::Dir
                    } else {
                        Kind::File
                    }
                }
                b'1' => Kind::Hardlink,
                b'2' => Kind::Symlink,
                b'3' => Kind::CharDevice,
                b'4' => Kind::BlockDevice,
                b'5' => Kind::Dir,
                b'6' => Kind::Fifo,
                other => {
                    return Err(self.malformed(
                        offset,
                        Some(&path),
                        format!("unsupported entry type `{}`", other as char),
                    ));
                }
            };
            while path.len() > 1 && path.ends_with('/') {
                path.pop();
            }
            let bad_field = |what: &str, value: &str| {
                self.malformed(offset, Some(&path), format!("unreadable {what} `{value}`"))
            };
            let field = |b: &[u8]| cstr(b).trim_matches(|c| c == ' ' || c == '\0').to_string();
            let size = match pax.remove("size") {
                Some(v) => pax_unsigned(&v).ok_or_else(|| bad_field("PAX size", &v))?,
                None => size,
            };
            let mode = parse_num(&block[100..108])
                .and_then(|m| u32::try_from(m).ok())
                .ok_or_else(|| bad_field("mode", &field(&block[100..108])))?;
            let mut id = |key: &str, range: std::ops::Range<usize>| -> Result<u64, TarError> {
                match pax.remove(key) {
                    Some(v) => pax_unsigned(&v).ok_or_else(|| bad_field(&format!("PAX {key}"), &v)),
                    None => parse_num(&block[range.clone()])
                        .ok_or_else(|| bad_field(key, &field(&block[range]))),
                }
            };
            let uid = id("uid", 108..116)?;
            let gid = id("gid", 116..124)?;
            let mtime = match pax.remove("mtime") {
                Some(v) => pax_time(&v).ok_or_else(|| bad_field("PAX mtime", &v))?,
                None => parse_time(&block[136..148])
                    .ok_or_else(|| bad_field("mtime", &field(&block[136..148])))?,
            };
            for k in ["atime", "ctime", "uname", "gname"] {
                pax.remove(k);
            }
            let dev = if matches!(kind, Kind::CharDevice | Kind::BlockDevice) {
                let major = parse_num(&block[329..337]).and_then(|v| u32::try_from(v).ok());
                let minor = parse_num(&block[337..345]).and_then(|v| u32::try_from(v).ok());
                match (major, minor) {
                    (Some(a), Some(b)) => (a, b),
                    _ => {
                        return Err(bad_field(
                            "device number",
                            &format!("{}:{}", field(&block[329..337]), field(&block[337..345])),
                        ));
                    }
                }
            } else {
                (0, 0)
            };
            // Links, directories, devices and FIFOs are header-only, whatever size they
            // claim (as Go's archive/tar, and so Docker, reads them): the next header follows.
            let content = if matches!(kind, Kind::File) { size } else { 0 };
            self.remaining = content;
            self.padding = (BLOCK as u64 - content % BLOCK as u64) % BLOCK as u64;
            return Ok(Some(Entry {
                header: Header {
                    path,
                    kind,
                    size: content,
                    mode,
                    uid,
                    gid,
                    mtime,
                    link,
                    dev,
                    pax,
                    xattrs,
                },
                offset: first_offset.unwrap_or(offset),
                had_pax,
            }));
        }
    }

    /// Reads whatever follows the end-of-archive marker to the end of the stream, so that a
    /// compressed stream's trailer and checksum are verified. Returns the bytes skipped.
    pub fn drain(mut self) -> Result<u64, TarError> {
        let at = self.offset;
        io::copy(&mut self.input, &mut io::sink()).map_err(|e| TarError::Malformed {
            offset: at,
            entry: None,
            message: format!("the stream after the archive's end is unreadable (truncated or corrupt compression?): {e}"),
        })
    }

    /// Reads the current entry's content.
    pub fn content(&mut self) -> Content<'_, R> {
        Content { tar: self }
    }
}

/// The current entry's content, as a reader.
pub struct Content<'a, R: Read> {
    tar: &'a mut TarReader<R>,
}

impl<R: Read> Read for Content<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tar.remaining == 0 {
            return Ok(0);
        }
        let k = (self.tar.remaining.min(buf.len() as u64)) as usize;
        let n = self.tar.input.read(&mut buf[..k])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the layer ends inside an entry's content (at byte {})",
                    self.tar.offset
                ),
            ));
        }
        self.tar.remaining -= n as u64;
        self.tar.offset += n as u64;
        Ok(n)
    }
}

/// Writes raw tar bytes (headers then content) to a sink, directories named with a trailing
/// `/`.
pub fn write_entry(
    out: &mut impl Write,
    h: &Header,
    always_pax: bool,
    content: Option<&mut dyn Read>,
) -> io::Result<u64> {
    write_entry_styled(
        out,
        h,
        HeaderStyle {
            always_pax,
            dir_slash: true,
        },
        content,
    )
}

/// Writes raw tar bytes (headers then content) in the given style; used by the layer writer.
pub fn write_entry_styled(
    out: &mut impl Write,
    h: &Header,
    style: HeaderStyle,
    content: Option<&mut dyn Read>,
) -> io::Result<u64> {
    let mut buf = Vec::with_capacity(BLOCK * 4);
    encode_header_styled(h, style, &mut buf);
    out.write_all(&buf)?;
    let mut written = buf.len() as u64;
    if h.kind == Kind::File && h.size > 0 {
        let Some(r) = content else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}`: no content given", h.path),
            ));
        };
        let n = io::copy(&mut r.take(h.size), out)?;
        if n != h.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "`{}`: expected {} bytes of content, read {n} (did the file change while being read?)",
                    h.path, h.size
                ),
            ));
        }
        let mut pad = Vec::new();
        pad_to_block(&mut pad, h.size);
        out.write_all(&pad)?;
        written += n + pad.len() as u64;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_with_pax() {
        let mut h = Header::new(&format!("deep/{}", "n".repeat(150)), Kind::File);
        h.size = 3;
        h.mtime = 1_700_000_000;
        h.uid = 1000;
        h.xattrs
            .insert("user.test".into(), vec![0, 1, 2, b'\n', 255]);
        let mut buf = Vec::new();
        write_entry(&mut buf, &h, false, Some(&mut &b"abc"[..])).unwrap();
        let mut l = Header::new("link", Kind::Symlink);
        l.link = "../target".into();
        write_entry(&mut buf, &l, false, None).unwrap();
        buf.extend_from_slice(&END);
        let mut r = TarReader::new(&buf[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.header.path, h.path);
        assert_eq!(
            (e.header.size, e.header.mtime, e.header.uid),
            (3, 1_700_000_000, 1000)
        );
        assert_eq!(
            e.header.xattrs.get("user.test").map(Vec::as_slice),
            Some(&[0u8, 1, 2, b'\n', 255][..])
        );
        let mut s = String::new();
        r.content().read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(
            (e.header.kind, e.header.link.as_str()),
            (Kind::Symlink, "../target")
        );
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    #[cfg_attr(
        windows,
        ignore = "runs GNU tar, a Linux program a Windows process cannot start"
    )]
    fn gnu_tar_agrees() {
        let mut buf = Vec::new();
        let mut h = Header::new(&format!("x/{}", "y".repeat(120)), Kind::File);
        h.size = 5;
        write_entry(&mut buf, &h, true, Some(&mut &b"hello"[..])).unwrap();
        buf.extend_from_slice(&END);
        let mut child = std::process::Command::new("tar")
            .args(["-tf", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&buf).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), h.path);
    }

    #[test]
    fn malformed_input_is_refused() {
        let mut buf = Vec::new();
        let mut h = Header::new("f", Kind::File);
        h.size = 1000;
        write_entry(&mut buf, &h, false, Some(&mut &[1u8; 1000][..])).unwrap();
        let mut bad = buf.clone();
        bad[0] = b'g';
        assert!(
            TarReader::new(&bad[..])
                .next_entry()
                .unwrap_err()
                .to_string()
                .contains("checksum")
        );
        let truncated = &buf[..700];
        let mut r = TarReader::new(truncated);
        r.next_entry().unwrap();
        let mut sink = Vec::new();
        assert!(r.content().read_to_end(&mut sink).is_err());
        assert!(TarReader::new(&buf[..100]).next_entry().is_err());
        assert!(parse_pax(b"5 a=b\n").is_err());
        assert!(parse_pax(b"999 a=b\n").is_err());
    }
}
