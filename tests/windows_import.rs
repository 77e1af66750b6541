//! A model of how Windows imports a container layer, written from Microsoft's import code and
//! not from wcbuild's writer or checker, run over every fixture layer and over layers wcbuild
//! builds, so a mistake the writer and the checker share shows here.
//!
//! The path modelled is hcsshim's `ociwclayer.ImportLayerFromTar`: Go's `archive/tar` reader,
//! `writeLayerFromTar`, go-winio's `backuptar` (`FileInfoFromHeader`,
//! `WriteBackupStreamFromTarFile`), hcsshim's `baseLayerWriter` (a layer without parents) and
//! `legacyLayerWriter` (a layer with parents), `safefile` (relative NT opens), and below them
//! what NTFS accepts. Each rule names, in a comment, the function it comes from. What Windows
//! does inside `vmcompute.dll` (`ImportLayer`, `ProcessBaseImage`, `ProcessUtilityImage`) is
//! not public; the model only records that those calls happen, with what hcsshim checks before
//! them.
#![cfg(unix)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use wcbuild::layer::tar::{END, Header, HeaderStyle, Kind, write_entry_styled};
use wcbuild::layer::windows::{self, NameProblem, WindowsNameError};
use wcbuild::layer::{
    Compression, Format, LayerOptions, LayerWriter, ReadLimits, check_windows_layer, pack_dir,
};

mod model {
    //! The importer, as data: Go tar headers in, an NTFS-like volume out.

    use std::collections::{BTreeMap, HashSet};

    // ---------------------------------------------------------------- Go's archive/tar

    /// A `time.Time` as Go's tar reader fills it: `None` is Go's zero time (no record).
    pub type GoTime = Option<(i64, u32)>;

    /// One header as Go's `tar.Reader.Next` returns it.
    #[derive(Debug, Clone)]
    pub struct GoHeader {
        pub name: String,
        pub typeflag: u8,
        pub linkname: String,
        pub size: i64,
        pub mod_time: GoTime,
        pub access_time: GoTime,
        pub change_time: GoTime,
        pub pax: BTreeMap<String, String>,
        pub data: Vec<u8>,
    }

    fn octal(f: &[u8]) -> Result<i64, String> {
        // Go's parser.parseNumeric: base-256 when the high bit is set, else octal with NULs
        // and spaces trimmed.
        if f.first().is_some_and(|b| b & 0x80 != 0) {
            let mut v: i64 = (f[0] & 0x7f) as i64;
            for &b in &f[1..] {
                v = v.checked_mul(256).ok_or("numeric overflow")? + b as i64;
            }
            return Ok(v);
        }
        let s: String = String::from_utf8_lossy(f)
            .trim_matches(|c| c == ' ' || c == '\0')
            .to_string();
        if s.is_empty() {
            return Ok(0);
        }
        i64::from_str_radix(&s, 8).map_err(|_| format!("archive/tar: invalid tar header ({s:?})"))
    }

    fn cstr(b: &[u8]) -> String {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    }

    /// Go's `parsePAXTime` (archive/tar strconv.go; go-winio copies it for creationtime).
    pub fn parse_pax_time(s: &str) -> Result<(i64, u32), String> {
        let (ss, sn) = match s.find('.') {
            Some(p) => (&s[..p], &s[p + 1..]),
            None => (s, ""),
        };
        let secs: i64 = ss.parse().map_err(|_| "archive/tar: invalid tar header")?;
        if sn.is_empty() {
            return Ok((secs, 0));
        }
        if !sn.bytes().all(|b| b.is_ascii_digit()) {
            return Err("archive/tar: invalid tar header".into());
        }
        let mut digits = sn.to_string();
        digits.truncate(9);
        while digits.len() < 9 {
            digits.push('0');
        }
        let n: i64 = digits.parse().unwrap();
        // time.Unix(secs, -n) for negative seconds normalizes into the previous second.
        if ss.starts_with('-') && n > 0 {
            return Ok((secs - 1, (1_000_000_000 - n) as u32));
        }
        Ok((secs, n as u32))
    }

    fn parse_pax_records(data: &[u8]) -> Result<Vec<(String, String)>, String> {
        // Go's parsePAXRecord: "%d %s=%s\n", the length counting itself.
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let sp = rest
                .iter()
                .position(|&b| b == b' ')
                .ok_or("bad PAX record")?;
            let n: usize = std::str::from_utf8(&rest[..sp])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("bad PAX record length")?;
            if n <= sp + 1 || n > rest.len() || rest[n - 1] != b'\n' {
                return Err("bad PAX record".into());
            }
            let rec = &rest[sp + 1..n - 1];
            let eq = rec
                .iter()
                .position(|&b| b == b'=')
                .ok_or("bad PAX record")?;
            out.push((
                String::from_utf8_lossy(&rec[..eq]).into_owned(),
                String::from_utf8_lossy(&rec[eq + 1..]).into_owned(),
            ));
            rest = &rest[n..];
        }
        Ok(out)
    }

    /// Reads an uncompressed tar as Go's `archive/tar` Reader does, as far as the importer
    /// depends on it: names are taken as stored (PAX `path`, GNU long name, or ustar prefix
    /// and name) with no trailing `/` removed; PAX `mtime`, `atime`, `ctime` set the times;
    /// a missing `atime`/`ctime` leaves Go's zero time.
    pub fn go_tar(tar: &[u8]) -> Result<Vec<GoHeader>, String> {
        let mut at = 0usize;
        let mut out = Vec::new();
        let mut pax: BTreeMap<String, String> = BTreeMap::new();
        let mut globals: BTreeMap<String, String> = BTreeMap::new();
        let mut long_name: Option<String> = None;
        let mut long_link: Option<String> = None;
        loop {
            let Some(block) = tar.get(at..at + 512) else {
                return Err("unexpected EOF".into());
            };
            if block.iter().all(|&b| b == 0) {
                return Ok(out);
            }
            // Reader.readHeader: the checksum must match (unsigned or signed sum).
            let stored = octal(&block[148..156])?;
            let mut copy = block.to_vec();
            copy[148..156].fill(b' ');
            let unsigned: i64 = copy.iter().map(|&b| b as i64).sum();
            let signed: i64 = copy.iter().map(|&b| b as i8 as i64).sum();
            if stored != unsigned && stored != signed {
                return Err("archive/tar: invalid tar header".into());
            }
            let flag = block[156];
            let size = octal(&block[124..136])?;
            let data_start = at + 512;
            let data_len = match pax.get("size") {
                Some(s) if !matches!(flag, b'x' | b'g' | b'L' | b'K') => {
                    s.parse().map_err(|_| "bad size")?
                }
                _ => size,
            } as usize;
            let data = tar
                .get(data_start..data_start + data_len)
                .ok_or("unexpected EOF")?
                .to_vec();
            at = data_start + data_len.div_ceil(512) * 512;
            match flag {
                b'x' => {
                    for (k, v) in parse_pax_records(&data)? {
                        pax.insert(k, v);
                    }
                    continue;
                }
                b'g' => {
                    for (k, v) in parse_pax_records(&data)? {
                        globals.insert(k, v);
                    }
                    continue;
                }
                b'L' => {
                    long_name = Some(cstr(&data));
                    continue;
                }
                b'K' => {
                    long_link = Some(cstr(&data));
                    continue;
                }
                _ => {}
            }
            let mut records = globals.clone();
            records.extend(std::mem::take(&mut pax));
            let ustar = &block[257..263] == b"ustar\0" && &block[263..265] == b"00";
            let gnu = &block[257..265] == b"ustar  \0";
            let mut name = cstr(&block[0..100]);
            if ustar {
                let prefix = cstr(&block[345..500]);
                if !prefix.is_empty() {
                    name = format!("{prefix}/{name}");
                }
            }
            if let Some(n) = long_name.take() {
                name = n;
            }
            let mut linkname = cstr(&block[157..257]);
            if let Some(l) = long_link.take() {
                linkname = l;
            }
            let mut h = GoHeader {
                name,
                typeflag: flag,
                linkname,
                size: data_len as i64,
                mod_time: Some((octal(&block[136..148])?, 0)),
                access_time: None,
                change_time: None,
                pax: BTreeMap::new(),
                data,
            };
            if gnu {
                // GNU format keeps atime and ctime in the header itself.
                let a = octal(&block[345..357])?;
                let c = octal(&block[357..369])?;
                if a != 0 {
                    h.access_time = Some((a, 0));
                }
                if c != 0 {
                    h.change_time = Some((c, 0));
                }
            }
            // Reader.mergePAX.
            for (k, v) in &records {
                match k.as_str() {
                    "path" => h.name = v.clone(),
                    "linkpath" => h.linkname = v.clone(),
                    "mtime" => h.mod_time = Some(parse_pax_time(v)?),
                    "atime" => h.access_time = Some(parse_pax_time(v)?),
                    "ctime" => h.change_time = Some(parse_pax_time(v)?),
                    _ => {}
                }
            }
            h.pax = records;
            // Reader.Next: the legacy '\0' type is a directory when the name ends in `/`.
            if h.typeflag == 0 {
                h.typeflag = if h.name.ends_with('/') { b'5' } else { b'0' };
            }
            out.push(h);
        }
    }

    // ---------------------------------------------------------------- times

    /// Go's `Time.UnixNano` (wrapping, as int64 arithmetic does for years outside 1678–2262).
    pub fn unix_nano(t: GoTime) -> i64 {
        // Go's zero Time is January 1, year 1: -62135596800 Unix seconds.
        let (s, n) = t.unwrap_or((-62_135_596_800, 0));
        s.wrapping_mul(1_000_000_000).wrapping_add(n as i64)
    }

    /// x/sys/windows `NsecToFiletime`: 100 ns units since 1601, split into two u32 halves.
    pub fn nsec_to_filetime(nsec: i64) -> u64 {
        (nsec / 100 + 116_444_736_000_000_000) as u64
    }

    /// The calendar date of a FILETIME, `YYYY-MM-DD`, for messages and assertions.
    pub fn filetime_date(ft: u64) -> String {
        let days = (ft / 10_000_000 / 86_400) as i64;
        // Days from 1601-01-01 to 1970-01-01 are 134774; civil_from_days counts from 1970.
        let z = days - 134_774 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
        format!("{y:04}-{m:02}-{d:02}")
    }

    /// winio.FileBasicInfo.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct BasicInfo {
        pub creation: u64,
        pub last_access: u64,
        pub last_write: u64,
        pub change: u64,
        pub attributes: u32,
    }

    pub const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x10;
    pub const FILE_ATTRIBUTE_REPARSE_POINT: u32 = 0x400;

    /// go-winio backuptar `FileInfoFromHeader`: the size counts for regular files only; the
    /// times come from ModTime/AccessTime/ChangeTime through UnixNano and NsecToFiletime
    /// (a missing atime or ctime is Go's zero time); CreationTime is ModTime unless
    /// `LIBARCHIVE.creationtime` parses; `MSWINDOWS.fileattr` is a base-10 uint32
    /// (`strconv.ParseUint(s, 10, 32)`), and without it a directory entry gets
    /// FILE_ATTRIBUTE_DIRECTORY and anything else 0.
    pub fn file_info_from_header(h: &GoHeader) -> Result<(String, i64, BasicInfo), String> {
        let size = if h.typeflag == b'0' { h.size } else { 0 };
        let mut fi = BasicInfo {
            last_access: nsec_to_filetime(unix_nano(h.access_time)),
            last_write: nsec_to_filetime(unix_nano(h.mod_time)),
            change: nsec_to_filetime(unix_nano(h.change_time)),
            creation: nsec_to_filetime(unix_nano(h.mod_time)),
            attributes: 0,
        };
        match h.pax.get("MSWINDOWS.fileattr") {
            Some(s) => {
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("strconv.ParseUint: parsing {s:?}: invalid syntax"));
                }
                fi.attributes = s
                    .parse::<u32>()
                    .map_err(|_| format!("strconv.ParseUint: parsing {s:?}: value out of range"))?;
            }
            None if h.typeflag == b'5' => fi.attributes |= FILE_ATTRIBUTE_DIRECTORY,
            None => {}
        }
        if let Some(s) = h.pax.get("LIBARCHIVE.creationtime") {
            fi.creation = nsec_to_filetime(unix_nano(Some(parse_pax_time(s)?)));
        }
        Ok((h.name.clone(), size, fi))
    }

    // ---------------------------------------------------------------- base64 and descriptors

    /// Go's `base64.StdEncoding.DecodeString`: padding required, `\r` and `\n` skipped.
    pub fn std_base64(s: &str) -> Result<Vec<u8>, String> {
        let clean: Vec<u8> = s.bytes().filter(|&b| b != b'\r' && b != b'\n').collect();
        if !clean.len().is_multiple_of(4) {
            return Err("illegal base64 data at input byte".into());
        }
        let val = |c: u8| -> Option<u32> {
            Some(match c {
                b'A'..=b'Z' => (c - b'A') as u32,
                b'a'..=b'z' => (c - b'a') as u32 + 26,
                b'0'..=b'9' => (c - b'0') as u32 + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            })
        };
        let mut out = Vec::new();
        let chunks = clean.len() / 4;
        for (i, ch) in clean.chunks(4).enumerate() {
            let pad = ch.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 || (pad > 0 && i + 1 != chunks) || ch[..4 - pad].contains(&b'=') {
                return Err("illegal base64 data at input byte".into());
            }
            let mut n = 0u32;
            for (j, &c) in ch.iter().enumerate() {
                let v = if j >= 4 - pad {
                    0
                } else {
                    val(c).ok_or("illegal base64 data at input byte")?
                };
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
        Ok(out)
    }

    /// The owner SID of a self-relative descriptor, when it has one.
    pub fn sd_owner(sd: &[u8]) -> Option<String> {
        let off = u32::from_le_bytes(sd.get(4..8)?.try_into().ok()?) as usize;
        if off == 0 {
            return None;
        }
        sid_at(sd, off)
    }

    fn sid_at(b: &[u8], off: usize) -> Option<String> {
        let sid = b.get(off..)?;
        let (rev, count) = (*sid.first()?, *sid.get(1)? as usize);
        if rev != 1 || count > 15 {
            return None;
        }
        let mut auth = [0u8; 8];
        auth[2..].copy_from_slice(sid.get(2..8)?);
        let mut s = format!("S-1-{}", u64::from_be_bytes(auth));
        for i in 0..count {
            let v = u32::from_le_bytes(sid.get(8 + i * 4..12 + i * 4)?.try_into().ok()?);
            s.push_str(&format!("-{v}"));
        }
        Some(s)
    }

    /// What `BackupWrite` accepts as a security stream: it hands the bytes to the kernel's
    /// security code (`NtSetSecurityObject`), which takes only a valid self-relative
    /// descriptor: revision 1, SE_SELF_RELATIVE set, every offset inside the buffer, valid
    /// SIDs and ACL headers.
    pub fn sd_valid(sd: &[u8]) -> Result<(), String> {
        if sd.len() < 20 || sd[0] != 1 {
            return Err("the security descriptor is not revision 1".into());
        }
        let control = u16::from_le_bytes([sd[2], sd[3]]);
        if control & 0x8000 == 0 {
            return Err("the security descriptor is not self-relative".into());
        }
        let field = |i: usize| u32::from_le_bytes(sd[4 + i * 4..8 + i * 4].try_into().unwrap());
        for (i, what) in ["owner", "group"].iter().enumerate() {
            let off = field(i) as usize;
            if off != 0 && sid_at(sd, off).is_none() {
                return Err(format!("the descriptor's {what} SID is invalid"));
            }
        }
        for (i, what) in [(2usize, "SACL"), (3, "DACL")] {
            let off = field(i) as usize;
            if off == 0 {
                continue;
            }
            let acl = sd
                .get(off..off + 8)
                .ok_or(format!("the {what} is outside the descriptor"))?;
            let size = u16::from_le_bytes([acl[2], acl[3]]) as usize;
            if !(acl[0] == 2 || acl[0] == 4) || off + size > sd.len() || size < 8 {
                return Err(format!("the {what} header is invalid"));
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- paths

    /// Go's `path.Clean` (slash-separated).
    pub fn clean_slash(p: &str) -> String {
        clean_with(p, |c| c == '/', "/")
    }

    /// Go's `filepath.Clean` on Windows for names without a volume: `\` and `/` both separate,
    /// the result uses `\`.
    pub fn clean_windows(p: &str) -> String {
        clean_with(p, |c| c == '/' || c == '\\', "\\")
    }

    fn clean_with(p: &str, sep: impl Fn(char) -> bool, out_sep: &str) -> String {
        let rooted = p.starts_with(&sep);
        let mut parts: Vec<&str> = Vec::new();
        for c in p.split(&sep) {
            match c {
                "" | "." => {}
                ".." => {
                    if parts.last().is_some_and(|l| *l != "..") {
                        parts.pop();
                    } else if !rooted {
                        parts.push("..");
                    }
                }
                c => parts.push(c),
            }
        }
        let body = parts.join(out_sep);
        match (rooted, body.is_empty()) {
            (true, _) => format!("{out_sep}{body}"),
            (false, true) => ".".into(),
            (false, false) => body,
        }
    }

    /// Go's `path.Base`.
    pub fn base_slash(p: &str) -> String {
        let t = p.trim_end_matches('/');
        if p.is_empty() {
            return ".".into();
        }
        if t.is_empty() {
            return "/".into();
        }
        t.rsplit('/').next().unwrap().to_string()
    }

    /// Go's `path.Dir`.
    pub fn dir_slash(p: &str) -> String {
        match p.rfind('/') {
            Some(i) => clean_slash(&p[..=i]),
            None => ".".into(),
        }
    }

    /// `filepath.FromSlash` on Windows.
    pub fn from_slash(p: &str) -> String {
        p.replace('/', "\\")
    }

    /// hcsshim safefile `cleanGoStringRelativePath`: `filepath.Clean`, then no `:` anywhere
    /// (an alternate data stream out of order) and no leading `\`.
    pub fn clean_relative(p: &str) -> Result<String, String> {
        let c = clean_windows(p);
        if c.contains(':') {
            return Err("path contains invalid character `:`".into());
        }
        if c.starts_with('\\') {
            return Err("expected relative path".into());
        }
        Ok(c)
    }

    /// hcsshim legacy.go `hasPathPrefix`.
    pub fn has_path_prefix(p: &str, prefix: &str) -> bool {
        p.starts_with(prefix) && p.len() > prefix.len() && p.as_bytes()[prefix.len()] == b'\\'
    }

    // ---------------------------------------------------------------- NTFS

    /// How NTFS compares names: each UTF-16 unit through the volume's upper-case table (the
    /// object manager's default `obcaseinsensitive` makes every open case-insensitive, even
    /// the ones safefile makes without OBJ_CASE_INSENSITIVE).
    pub fn upcase(s: &str) -> String {
        s.chars()
            .map(|c| {
                let mut u = c.to_uppercase();
                match (u.next(), u.next()) {
                    (Some(x), None) if (x as u32) < 0x10000 && (c as u32) < 0x10000 => x,
                    _ => c,
                }
            })
            .collect()
    }

    /// What NTFS accepts as one name through `NtCreateFile` (STATUS_OBJECT_NAME_INVALID
    /// otherwise): no control characters, none of `" * / : < > ? \ |`, at most 255 UTF-16
    /// units, not `.` or `..`. Trailing dots and spaces and device names (`CON`) are Win32
    /// rules, which NT opens relative to a directory handle do not apply.
    pub fn ntfs_name_ok(name: &str) -> Result<(), String> {
        if name.is_empty() || name == "." || name == ".." {
            return Err(format!(
                "`{name}`: the filename, directory name, or volume label syntax is incorrect"
            ));
        }
        if let Some(c) = name
            .chars()
            .find(|&c| (c as u32) < 0x20 || "\"*/:<>?\\|".contains(c))
        {
            return Err(format!(
                "`{name}`: the filename, directory name, or volume label syntax is incorrect (U+{:04X})",
                c as u32
            ));
        }
        if name.encode_utf16().count() > 255 {
            return Err(format!("`{name}`: the file name is too long"));
        }
        Ok(())
    }

    /// One file object (several names when hard-linked).
    #[derive(Debug, Clone, Default)]
    pub struct Object {
        pub info: BasicInfo,
        pub sd: Option<Vec<u8>>,
        pub eas: Vec<(String, Vec<u8>)>,
        /// Reparse point: target (print name) and whether it is a mount point.
        pub reparse: Option<(String, bool)>,
        pub data: Vec<u8>,
        pub streams: Vec<(String, Vec<u8>)>,
    }

    /// A name in a directory.
    #[derive(Debug, Clone)]
    pub struct Node {
        /// The path as created (case kept), `\`-separated.
        pub path: String,
        pub dir: bool,
        pub object: usize,
    }

    /// A volume (or a directory tree on one): names compared as NTFS compares them.
    #[derive(Debug, Clone, Default)]
    pub struct Volume {
        pub nodes: BTreeMap<String, Node>,
        pub objects: Vec<Object>,
    }

    impl Volume {
        pub fn get(&self, path: &str) -> Option<&Node> {
            self.nodes.get(&upcase(path))
        }

        pub fn object(&self, path: &str) -> Option<&Object> {
            self.get(path).map(|n| &self.objects[n.object])
        }

        pub fn object_mut(&mut self, path: &str) -> Option<&mut Object> {
            let i = self.get(path)?.object;
            Some(&mut self.objects[i])
        }

        fn parent_ok(&self, path: &str) -> Result<(), String> {
            if let Some((parent, _)) = path.rsplit_once('\\') {
                match self.get(parent) {
                    None => {
                        return Err(format!(
                            "`{path}`: the system cannot find the path specified"
                        ));
                    }
                    Some(n) if !n.dir => {
                        return Err(format!(
                            "`{path}`: the directory name is invalid (`{parent}` is a file)"
                        ));
                    }
                    Some(n) if self.objects[n.object].reparse.is_some() => {
                        // safefile opens with OBJ_DONT_REPARSE: no reparse point on the way.
                        return Err(format!(
                            "`{path}`: a reparse point was encountered on the way"
                        ));
                    }
                    _ => {}
                }
            }
            Ok(())
        }

        /// `NtCreateFile` with FILE_CREATE relative to the root: every component a legal NTFS
        /// name, the parent an existing directory reached without a reparse point, the name
        /// new (case-insensitively).
        pub fn create(&mut self, path: &str, dir: bool) -> Result<usize, String> {
            for c in path.split('\\') {
                ntfs_name_ok(c)?;
            }
            self.parent_ok(path)?;
            let key = upcase(path);
            if let Some(n) = self.nodes.get(&key) {
                return Err(format!(
                    "`{path}`: cannot create a file when that file already exists (`{}`)",
                    n.path
                ));
            }
            self.objects.push(Object::default());
            let object = self.objects.len() - 1;
            self.nodes.insert(
                key,
                Node {
                    path: path.to_string(),
                    dir,
                    object,
                },
            );
            Ok(object)
        }

        /// Removes a name and everything under it.
        pub fn remove_all(&mut self, path: &str) {
            let key = upcase(path);
            let under = format!("{key}\\");
            self.nodes
                .retain(|k, _| *k != key && !k.starts_with(&under));
        }

        /// A new name for an existing file (`NtSetInformationFile` FileLinkInformation,
        /// no replace): the target a file (NTFS links no directories) opened without
        /// FILE_OPEN_REPARSE_POINT under OBJ_DONT_REPARSE (so not a reparse point), the new
        /// name's parent a directory, the name new.
        pub fn link_from(&mut self, src: &Volume, target: &str, name: &str) -> Result<(), String> {
            let t = src.get(target).ok_or(format!(
                "`{target}`: the system cannot find the file specified"
            ))?;
            if t.dir {
                return Err(format!(
                    "`{target}`: access is denied (a directory cannot be hard-linked)"
                ));
            }
            if src.objects[t.object].reparse.is_some() {
                return Err(format!(
                    "`{target}`: the name of the file cannot be resolved by the system (a reparse point)"
                ));
            }
            for c in name.split('\\') {
                ntfs_name_ok(c)?;
            }
            self.parent_ok(name)?;
            if self.get(name).is_some() {
                return Err(format!(
                    "`{name}`: cannot create a file when that file already exists"
                ));
            }
            let object = if std::ptr::eq(src, self) {
                t.object
            } else {
                self.objects.push(src.objects[t.object].clone());
                self.objects.len() - 1
            };
            self.nodes.insert(
                upcase(name),
                Node {
                    path: name.to_string(),
                    dir: false,
                    object,
                },
            );
            Ok(())
        }

        /// A link inside this volume.
        pub fn link_here(&mut self, target: &str, name: &str) -> Result<(), String> {
            let me = self.clone();
            self.link_from(&me, target, name)?;
            // Same volume: share the object instead of the copy link_from made.
            let t = self.get(target).unwrap().object;
            let key = upcase(name);
            self.nodes.get_mut(&key).unwrap().object = t;
            self.objects.pop();
            Ok(())
        }
    }

    // ---------------------------------------------------------------- backup streams

    /// What `WriteBackupStreamFromTarFile` writes for one entry: the security descriptor
    /// (`MSWINDOWS.rawsd` base64, else the legacy SDDL `MSWINDOWS.sd`), the extended
    /// attributes (`MSWINDOWS.xattr.*`, base64), the reparse data of a symlink
    /// (`EncodeReparsePointFromTarHeader`: Linkname with `/` made `\`, `MSWINDOWS.mountpoint`
    /// makes it a junction), the data of a regular file, then every following regular entry
    /// named `<name>:<stream>` as an alternate data stream.
    #[derive(Debug, Clone, Default)]
    pub struct Stream {
        pub sd: Option<Vec<u8>>,
        pub sddl: Option<String>,
        pub eas: Vec<(String, Vec<u8>)>,
        pub reparse: Option<(String, bool)>,
        pub data: Option<Vec<u8>>,
        pub streams: Vec<(String, Vec<u8>)>,
    }

    // ---------------------------------------------------------------- the layer writers

    /// What an import produced.
    #[derive(Debug, Clone, Default)]
    pub struct Imported {
        /// The layer's own files (`Files\…`, `UtilityVM\…`, `Hives\…`).
        pub volume: Volume,
        /// Paths deleted from the parents (`Files\…`).
        pub tombstones: Vec<String>,
        /// ProcessBaseImage ran (base layers).
        pub base_processed: bool,
        /// ProcessUtilityImage ran on `UtilityVM`.
        pub utility_vm_processed: bool,
        /// Files the import saved before ProcessUtilityImage changes them (`bcd.bak`…).
        pub backups: Vec<String>,
        /// The files' total size as ImportLayerFromTar returns it.
        pub size: i64,
    }

    impl Imported {
        /// The container's view: the parents' view, minus this layer's tombstones, plus this
        /// layer's files. `parents` lowest first.
        pub fn view(&self, parents: &[&Imported]) -> Volume {
            let mut v = match parents.split_last() {
                Some((top, rest)) => top.view(rest),
                None => Volume::default(),
            };
            for t in &self.tombstones {
                v.remove_all(t);
            }
            // A directory of this layer replaces only the directory's own record (the parents'
            // children stay visible); anything else replaces the whole subtree.
            for (k, n) in &self.volume.nodes {
                if n.dir && v.nodes.get(k).is_some_and(|l| l.dir) {
                    v.nodes.remove(k);
                } else {
                    v.remove_all(&n.path);
                }
            }
            let base = v.objects.len();
            v.objects.extend(self.volume.objects.iter().cloned());
            for (k, n) in &self.volume.nodes {
                let mut n = n.clone();
                n.object += base;
                v.nodes.insert(k.clone(), n);
            }
            v
        }
    }

    enum Current {
        None,
        /// A file of the volume being written.
        Dest(String),
        /// A file of the legacy writer's transport folder.
        Transport(String),
    }

    /// hcsshim `LayerWriter`: `baseLayerWriter` when there are no parents, else
    /// `legacyLayerWriter` (with its transport folder and `ImportLayer`).
    pub struct Writer<'p> {
        parents: Vec<&'p Imported>,
        base: bool,
        dest: Volume,
        /// legacyLayerWriter: the transport folder (`w.root`).
        transport: Volume,
        current: Current,
        has_utility_vm: bool,
        tombstones: Vec<String>,
        /// legacyLayerWriter `addedFiles`: exact (cleaned) names, a Go map (case-sensitive).
        added: HashSet<String>,
        /// legacyLayerWriter `PendingLinks`: (name, target, target is in this layer).
        pending_links: Vec<(String, String, Option<usize>)>,
        backups: Vec<String>,
    }

    impl<'p> Writer<'p> {
        /// `NewLayerWriter`: no parents → baseLayerWriter.
        pub fn new(parents: Vec<&'p Imported>) -> Writer<'p> {
            Writer {
                base: parents.is_empty(),
                parents,
                dest: Volume::default(),
                transport: Volume::default(),
                current: Current::None,
                has_utility_vm: false,
                tombstones: Vec::new(),
                added: HashSet::new(),
                pending_links: Vec::new(),
                backups: Vec::new(),
            }
        }

        /// The parents' merged view, lowest first as ImportLayerFromTar's caller gives them.
        fn parent_view(&self) -> Volume {
            match self.parents.split_last() {
                Some((top, rest)) => top.view(rest),
                None => Volume::default(),
            }
        }

        /// legacyLayerWriter `initUtilityVM`: makes `UtilityVM` and clones the parent's
        /// `UtilityVM\Files` (cloneTree first checks it exists and is no reparse point).
        fn init_utility_vm(&mut self) -> Result<(), String> {
            if self.has_utility_vm {
                return Ok(());
            }
            self.dest.create("UtilityVM", true)?;
            let parent = self.parent_view();
            match parent.get("UtilityVM\\Files") {
                Some(n) if n.dir && parent.objects[n.object].reparse.is_none() => {}
                _ => {
                    return Err("cloning the parent utility VM image failed: `UtilityVM\\Files`: the system cannot find the file specified".into());
                }
            }
            let prefix = upcase("UtilityVM\\Files");
            for (k, n) in &parent.nodes {
                if *k == prefix || k.starts_with(&format!("{prefix}\\")) {
                    self.dest.objects.push(parent.objects[n.object].clone());
                    let mut n = n.clone();
                    n.object = self.dest.objects.len() - 1;
                    self.dest.nodes.insert(k.clone(), n);
                }
            }
            self.has_utility_vm = true;
            Ok(())
        }

        /// `LayerWriter.Add`.
        pub fn add(&mut self, name: &str, fi: &BasicInfo) -> Result<(), String> {
            self.current = Current::None;
            let dir = fi.attributes & FILE_ATTRIBUTE_DIRECTORY != 0;
            if self.base {
                // baseLayerWriter.Add compares the raw name (after ToSlash) with
                // `UtilityVM/Files`: only an exact match marks the layer as having a UVM.
                if name.replace('\\', "/") == "UtilityVM/Files" {
                    self.has_utility_vm = true;
                }
                // safefile.OpenRelative(name, root, …, FILE_CREATE, FILE_DIRECTORY_FILE for
                // directories).
                let path = clean_relative(name)?;
                let o = self.dest.create(&path, dir)?;
                self.dest.objects[o].info = *fi;
                self.current = Current::Dest(path);
                return Ok(());
            }
            // legacyLayerWriter.Add: the raw name is compared with `UtilityVM` before any
            // cleaning.
            if name == "UtilityVM" {
                return self.init_utility_vm();
            }
            let name = clean_windows(name);
            if has_path_prefix(&name, "UtilityVM") {
                if !self.has_utility_vm {
                    return Err("missing UtilityVM directory".into());
                }
                if !has_path_prefix(&name, "UtilityVM\\Files") && name != "UtilityVM\\Files" {
                    return Err("invalid UtilityVM layer".into());
                }
                let path = clean_relative(&name)?;
                if dir {
                    let replace = self.dest.object(&path).is_some_and(|o| {
                        (o.info.attributes ^ fi.attributes)
                            & (FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_REPARSE_POINT)
                            != 0
                    });
                    if replace {
                        self.dest.remove_all(&path);
                    }
                    if self.dest.get(&path).is_none() {
                        self.dest.create(&path, true)?;
                    }
                } else {
                    // Overwrite any existing hard link, then FILE_CREATE.
                    self.dest.remove_all(&path);
                    self.dest.create(&path, false)?;
                }
                self.dest.object_mut(&path).unwrap().info = *fi;
                self.current = Current::Dest(path.clone());
                self.added.insert(name);
                return Ok(());
            }
            // Everything else goes into the transport folder: a directory is made there and
            // its metadata goes into a sibling `<dir>.$wcidirs$` file; files are created
            // with FILE_CREATE.
            let path = clean_relative(&name)?;
            let record = if dir {
                self.transport.create(&path, true)?;
                format!("{path}.$wcidirs$")
            } else {
                path.clone()
            };
            let o = self.transport.create(&record, false)?;
            self.transport.objects[o].info = *fi;
            self.current = Current::Transport(record);
            self.added.insert(name);
            Ok(())
        }

        /// The backup stream of the current file (`LayerWriter.Write`).
        pub fn write(&mut self, s: Stream) -> Result<(), String> {
            // Only a stream with something in it reaches the writer: the tar side buffers
            // (bufio) and flushes nothing for an entry with no descriptor, attributes,
            // reparse data, data or streams.
            let empty = s.sd.is_none()
                && s.eas.is_empty()
                && s.reparse.is_none()
                && s.data.is_none()
                && s.streams.is_empty();
            if empty {
                return Ok(());
            }
            // legacyLayerWriter.Write with no file open (after `Add("UtilityVM")`): "closed".
            let (vol, path) = match &self.current {
                Current::None => return Err("closed".into()),
                Current::Dest(p) => (&mut self.dest, p.clone()),
                Current::Transport(p) => (&mut self.transport, p.clone()),
            };
            if let Some(sd) = &s.sd {
                sd_valid(sd).map_err(|e| format!("`{path}`: {e}"))?;
            }
            let o = vol.object_mut(&path).unwrap();
            o.sd = s.sd;
            o.eas = s.eas;
            if s.reparse.is_some() {
                o.reparse = s.reparse;
            }
            if let Some(d) = s.data {
                o.data = d;
            }
            o.streams = s.streams;
            Ok(())
        }

        /// A file the import saves before changing it (import.go `mutatedFiles`).
        pub fn backup(&mut self, name: &str) {
            self.backups.push(name.to_string());
        }

        /// `LayerWriter.AddLink`.
        pub fn add_link(&mut self, name: &str, target: &str) -> Result<(), String> {
            self.current = Current::None;
            if self.base {
                // baseLayerWriter.AddLink: safefile.LinkRelative(target, root, name, root):
                // both names cleaned (no `:`), the target already written.
                let t = clean_relative(target)?;
                let n = clean_relative(name)?;
                return self.dest.link_here(&t, &n);
            }
            // legacyLayerWriter.AddLink: the target must be under `Files\` (looked up in the
            // parents) or `UtilityVM\Files\` (in the cloned UVM), the name likewise.
            let target = clean_windows(target);
            let in_files = has_path_prefix(&target, "Files");
            let in_uvm = has_path_prefix(&target, "UtilityVM\\Files");
            if !(in_files || in_uvm)
                || !(has_path_prefix(name, "Files") || has_path_prefix(name, "UtilityVM\\Files"))
            {
                return Err("invalid hard link in layer".into());
            }
            // A target written earlier in this layer is found by its exact name (a Go map).
            let here = self.added.contains(&target);
            if !here {
                let found = if in_files {
                    self.parent_view().get(&target).is_some()
                } else {
                    self.dest.get(&target).is_some()
                };
                if !found {
                    return Err(format!(
                        "failed to find link target for '{name}' -> '{target}'"
                    ));
                }
            }
            self.pending_links.push((
                name.to_string(),
                target,
                if here || in_uvm { Some(0) } else { None },
            ));
            self.added.insert(name.to_string());
            Ok(())
        }

        /// `LayerWriter.Remove`.
        pub fn remove(&mut self, name: &str) -> Result<(), String> {
            if self.base {
                return Err("base layer cannot have tombstones".into());
            }
            let name = clean_windows(name);
            if has_path_prefix(&name, "Files") {
                self.tombstones.push(name);
            } else if has_path_prefix(&name, "UtilityVM\\Files") {
                self.init_utility_vm()?;
                if self.dest.get(&name).is_none() {
                    return Err(format!(
                        "`{name}`: the system cannot find the file specified"
                    ));
                }
                self.dest.remove_all(&name);
            } else {
                return Err(format!("invalid tombstone {name}"));
            }
            Ok(())
        }

        /// `LayerWriter.Close`.
        pub fn close(mut self) -> Result<Imported, String> {
            let mut out = Imported::default();
            if self.base {
                // baseLayerWriter.Close: ProcessBaseLayer, then ProcessUtilityVMImage only
                // when Add saw `UtilityVM/Files`. convertToBaseLayer (the same processing for
                // a folder) shows what they need: the five hives, and the UVM's BCD.
                for hive in ["DEFAULT", "SAM", "SECURITY", "SOFTWARE", "SYSTEM"] {
                    let p = format!("Files\\Windows\\System32\\config\\{hive}");
                    if self.dest.get(&p).is_none_or(|n| n.dir) {
                        return Err(format!("ProcessBaseImage: `{p}` is missing"));
                    }
                }
                out.base_processed = true;
                if self.has_utility_vm {
                    if self
                        .dest
                        .object("UtilityVM")
                        .is_some_and(|o| o.reparse.is_some())
                    {
                        return Err("`UtilityVM` is a reparse point".into());
                    }
                    let bcd = "UtilityVM\\Files\\EFI\\Microsoft\\Boot\\BCD";
                    if self.dest.get(bcd).is_none_or(|n| n.dir) {
                        return Err(format!("ProcessUtilityImage: `{bcd}` is missing"));
                    }
                    out.utility_vm_processed = true;
                }
                out.volume = self.dest;
                out.backups = self.backups;
                return Ok(out);
            }
            // legacyLayerWriterWrapper.Close: ImportLayer reads the transport folder. Its
            // `Files`/`Hives` trees become the layer's; anything else at the top is not
            // something Windows documents, so the model refuses it.
            let mut dest = std::mem::take(&mut self.dest);
            for n in self.transport.nodes.values() {
                if let Some(dir) = n.path.strip_suffix(".$wcidirs$")
                    && self.transport.get(dir).is_some_and(|d| d.dir)
                {
                    continue;
                }
                let top = n.path.split('\\').next().unwrap();
                if top != "Files" && top != "Hives" {
                    return Err(format!(
                        "ImportLayer: `{}` is outside `Files` and `Hives` (not modelled)",
                        n.path
                    ));
                }
            }
            for n in self.transport.nodes.values() {
                if n.path.ends_with(".$wcidirs$")
                    && self
                        .transport
                        .get(n.path.strip_suffix(".$wcidirs$").unwrap())
                        .is_some_and(|d| d.dir)
                {
                    continue;
                }
                let info = if n.dir {
                    self.transport
                        .object(&format!("{}.$wcidirs$", n.path))
                        .cloned()
                        .unwrap_or_default()
                } else {
                    self.transport.objects[n.object].clone()
                };
                dest.objects.push(info);
                let object = dest.objects.len() - 1;
                dest.nodes.insert(
                    upcase(&n.path),
                    Node {
                        path: n.path.clone(),
                        dir: n.dir,
                        object,
                    },
                );
            }
            // Tombstones are removed from the imported layer afterwards: a path this layer
            // also writes is deleted again.
            for t in &self.tombstones {
                dest.remove_all(t);
            }
            // Then the pending hard links: the name is removed and linked to its target, in
            // this layer or in a parent.
            let parent = self.parent_view();
            for (name, target, here) in &self.pending_links {
                dest.remove_all(name);
                match here {
                    Some(_) => dest.link_here(target, name)?,
                    None => dest.link_from(&parent, target, name)?,
                }
            }
            if self.has_utility_vm {
                out.utility_vm_processed = true;
            }
            out.volume = dest;
            out.tombstones = self.tombstones;
            out.backups = self.backups;
            Ok(out)
        }
    }

    // ---------------------------------------------------------------- ImportLayerFromTar

    /// import.go `mutatedFiles`: the UVM boot files ProcessUtilityImage changes.
    const MUTATED: [(&str, &str); 4] = [
        ("UtilityVM/Files/EFI/Microsoft/Boot/BCD", "bcd.bak"),
        ("UtilityVM/Files/EFI/Microsoft/Boot/BCD.LOG", "bcd.log.bak"),
        (
            "UtilityVM/Files/EFI/Microsoft/Boot/BCD.LOG1",
            "bcd.log1.bak",
        ),
        (
            "UtilityVM/Files/EFI/Microsoft/Boot/BCD.LOG2",
            "bcd.log2.bak",
        ),
    ];

    /// `ImportLayerFromTar` over an uncompressed tar, with the parents lowest first.
    pub fn import(tar: &[u8], parents: &[&Imported]) -> Result<Imported, String> {
        let headers = go_tar(tar)?;
        let mut w = Writer::new(parents.to_vec());
        let mut total = 0i64;
        let mut i = 0;
        // writeLayerFromTar.
        while i < headers.len() {
            let h = &headers[i];
            let base = base_slash(&h.name);
            if let Some(rest) = base.strip_prefix(".wh.") {
                // A whiteout: path.Join(path.Dir(name), base without the prefix).
                let name = clean_slash(&format!("{}/{rest}", dir_slash(&h.name)));
                w.remove(&from_slash(&name))
                    .map_err(|e| format!("`{}`: {e}", h.name))?;
                i += 1;
                continue;
            }
            if h.typeflag == b'1' {
                w.add_link(&from_slash(&h.name), &from_slash(&h.linkname))
                    .map_err(|e| format!("`{}`: {e}", h.name))?;
                i += 1;
                continue;
            }
            let (name, size, fi) =
                file_info_from_header(h).map_err(|e| format!("`{}`: {e}", h.name))?;
            w.add(&from_slash(&name), &fi)
                .map_err(|e| format!("`{}`: {e}", h.name))?;
            if let Some((_, b)) = MUTATED.iter().find(|(n, _)| *n == h.name) {
                w.backup(b);
            }
            // WriteBackupStreamFromTarFile.
            let mut s = Stream::default();
            if let Some(raw) = h.pax.get("MSWINDOWS.rawsd") {
                let sd = std_base64(raw).map_err(|e| format!("`{}`: {e}", h.name))?;
                if !sd.is_empty() {
                    s.sd = Some(sd);
                }
            } else if let Some(sddl) = h.pax.get("MSWINDOWS.sd") {
                s.sddl = Some(sddl.clone());
            }
            for (k, v) in &h.pax {
                if let Some(ea) = k.strip_prefix("MSWINDOWS.xattr.") {
                    let data = std_base64(v).map_err(|e| format!("`{}`: {e}", h.name))?;
                    s.eas.push((ea.to_string(), data));
                }
            }
            if h.typeflag == b'2' {
                s.reparse = Some((
                    from_slash(&h.linkname),
                    h.pax.contains_key("MSWINDOWS.mountpoint"),
                ));
            }
            if h.typeflag == b'0' {
                s.data = Some(h.data.clone());
            }
            i += 1;
            while let Some(a) = headers.get(i) {
                if a.typeflag != b'0' || !a.name.starts_with(&format!("{}:", h.name)) {
                    break;
                }
                s.streams
                    .push((a.name[h.name.len()..].to_string(), a.data.clone()));
                i += 1;
            }
            w.write(s).map_err(|e| format!("`{}`: {e}", h.name))?;
            total += size;
        }
        let mut imported = w.close()?;
        imported.size = total;
        Ok(imported)
    }
}

use model::Imported;

// ==================================================================== helpers

fn tempdir(name: &str) -> PathBuf {
    common::tempdir("windows-import", name)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn gunzip(blob: &[u8]) -> Vec<u8> {
    if blob.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(blob)
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        blob.to_vec()
    }
}

/// The layers of every image in an OCI archive (`wcbuild save` / the fixtures), each image's
/// layers lowest first, uncompressed, keyed by the manifest digest.
fn archive_images(archive: &[u8]) -> BTreeMap<String, Vec<Vec<u8>>> {
    let files: HashMap<String, Vec<u8>> = model::go_tar(archive)
        .unwrap()
        .into_iter()
        .filter(|h| h.typeflag == b'0')
        .map(|h| (h.name, h.data))
        .collect();
    let blob =
        |d: &str| files[&format!("blobs/sha256/{}", d.trim_start_matches("sha256:"))].clone();
    let mut out = BTreeMap::new();
    let mut pending: Vec<String> =
        serde_json::from_slice::<serde_json::Value>(&files["index.json"]).unwrap()["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap().to_string())
            .collect();
    while let Some(d) = pending.pop() {
        let v: serde_json::Value = serde_json::from_slice(&blob(&d)).unwrap();
        if let Some(ms) = v["manifests"].as_array() {
            pending.extend(ms.iter().map(|m| m["digest"].as_str().unwrap().to_string()));
            continue;
        }
        let layers = v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| gunzip(&blob(l["digest"].as_str().unwrap())))
            .collect();
        out.insert(d, layers);
    }
    out
}

/// Imports an image's layers, lowest first, each on the ones below.
fn import_chain(layers: &[Vec<u8>]) -> Result<Vec<Imported>, String> {
    let mut done: Vec<Imported> = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let parents: Vec<&Imported> = done.iter().collect();
        let imported = model::import(l, &parents).map_err(|e| format!("layer {i}: {e}"))?;
        done.push(imported);
    }
    Ok(done)
}

fn view(chain: &[Imported]) -> model::Volume {
    let (top, rest) = chain.split_last().unwrap();
    let parents: Vec<&Imported> = rest.iter().collect();
    top.view(&parents)
}

/// A raw Windows-style entry (decorated, PAX, no trailing `/`), bypassing `LayerWriter`.
fn raw(out: &mut Vec<u8>, path: &str, kind: Kind, data: &[u8]) {
    raw_styled(out, path, kind, data, HeaderStyle::WINDOWS, "");
}

fn raw_styled(
    out: &mut Vec<u8>,
    path: &str,
    kind: Kind,
    data: &[u8],
    style: HeaderStyle,
    link: &str,
) {
    let mut h = Header::new(path, kind);
    h.size = data.len() as u64;
    h.mtime = 1_700_000_000;
    h.link = link.to_string();
    windows::decorate(&mut h, None, false);
    write_entry_styled(out, &h, style, Some(&mut &data[..])).unwrap();
}

/// A minimal base layer (the five hives, a file), with a utility VM when asked, written raw
/// in `style`.
fn tiny_base(style: HeaderStyle, utility_vm: bool) -> Vec<u8> {
    let mut t = Vec::new();
    for d in [
        "Files",
        "Files/Windows",
        "Files/Windows/System32",
        "Files/Windows/System32/config",
    ] {
        raw_styled(&mut t, d, Kind::Dir, b"", style, "");
    }
    for hive in ["DEFAULT", "SAM", "SECURITY", "SOFTWARE", "SYSTEM"] {
        raw_styled(
            &mut t,
            &format!("Files/Windows/System32/config/{hive}"),
            Kind::File,
            b"regf",
            style,
            "",
        );
    }
    raw_styled(
        &mut t,
        "Files/Windows/System32/cmd.exe",
        Kind::File,
        b"MZ",
        style,
        "",
    );
    if utility_vm {
        for d in [
            "UtilityVM",
            "UtilityVM/Files",
            "UtilityVM/Files/EFI",
            "UtilityVM/Files/EFI/Microsoft",
            "UtilityVM/Files/EFI/Microsoft/Boot",
        ] {
            raw_styled(&mut t, d, Kind::Dir, b"", style, "");
        }
        raw_styled(
            &mut t,
            "UtilityVM/Files/EFI/Microsoft/Boot/BCD",
            Kind::File,
            b"regf",
            style,
            "",
        );
    }
    t.extend_from_slice(&END);
    t
}

/// A non-base layer's opening (`Hives`, `Files`) written raw.
fn layer_start() -> Vec<u8> {
    let mut t = Vec::new();
    raw(&mut t, "Hives", Kind::Dir, b"");
    raw(&mut t, "Files", Kind::Dir, b"");
    t
}

fn finish(mut t: Vec<u8>) -> Vec<u8> {
    t.extend_from_slice(&END);
    t
}

fn checker_violations(tar: &[u8]) -> Vec<String> {
    check_windows_layer(std::io::Cursor::new(tar.to_vec()), ReadLimits::default())
        .unwrap()
        .violations
        .into_iter()
        .map(|v| format!("`{}`: {}", v.entry, v.message))
        .collect()
}

fn opts(base: bool) -> LayerOptions {
    LayerOptions {
        format: Format::Windows,
        compression: Compression::None,
        source_date_epoch: Some(1_700_000_000),
        threads: 1,
        windows_owner: None,
        windows_base: base,
    }
}

fn name_error(e: &std::io::Error) -> &WindowsNameError {
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    e.get_ref()
        .and_then(|e| e.downcast_ref::<WindowsNameError>())
        .unwrap_or_else(|| panic!("not a WindowsNameError: {e}"))
}

const ZERO_TIME_DATE: &str = "1754-08-30";

/// Every name the import made: times as written (never Go's zero time), a descriptor BackupWrite
/// took, and directories where the tar said so.
fn assert_times_and_descriptors(v: &model::Volume, what: &str) {
    for n in v.nodes.values() {
        let o = &v.objects[n.object];
        let i = o.info;
        for (t, which) in [
            (i.last_access, "LastAccessTime"),
            (i.change, "ChangeTime"),
            (i.creation, "CreationTime"),
        ] {
            assert_ne!(
                model::filetime_date(t),
                ZERO_TIME_DATE,
                "{what}: `{}` {which}",
                n.path
            );
            assert_eq!(
                t, i.last_write,
                "{what}: `{}` {which} is not its mtime",
                n.path
            );
        }
        assert_eq!(
            n.dir,
            i.attributes & model::FILE_ATTRIBUTE_DIRECTORY != 0,
            "{what}: `{}`",
            n.path
        );
        if n.path.starts_with("Files") || n.path.starts_with("UtilityVM") {
            let sd =
                o.sd.as_ref()
                    .unwrap_or_else(|| panic!("{what}: `{}` has no descriptor", n.path));
            assert_eq!(
                model::sd_owner(sd).as_deref(),
                Some("S-1-5-32-544"),
                "{what}: `{}`",
                n.path
            );
        }
    }
}

// ==================================================================== the model's own rules

#[test]
fn the_model_reads_times_as_go_and_go_winio_do() {
    // No atime/ctime: Go's zero time, through a wrapping UnixNano, is 1754-08-30 22:43:41.
    let zero = model::nsec_to_filetime(model::unix_nano(None));
    assert_eq!(zero, 48_491_090_211_286_549);
    assert_eq!(model::filetime_date(zero), ZERO_TIME_DATE);
    // A whole-second time converts exactly; 1601 + 11644473600 s is the Unix epoch.
    assert_eq!(model::nsec_to_filetime(0), 116_444_736_000_000_000);
    assert_eq!(
        model::filetime_date(model::nsec_to_filetime(0)),
        "1970-01-01"
    );
    assert_eq!(
        model::filetime_date(model::nsec_to_filetime(1_700_000_000 * 1_000_000_000)),
        "2023-11-14"
    );
    assert_eq!(model::parse_pax_time("1.5").unwrap(), (1, 500_000_000));
    assert_eq!(model::parse_pax_time("1.0000000019").unwrap(), (1, 1));
    assert_eq!(model::parse_pax_time("-1.5").unwrap(), (-2, 500_000_000));
    assert!(model::parse_pax_time("1.x").is_err());
    assert!(model::parse_pax_time("").is_err());
    // A header written by hand: no atime, ctime or creationtime.
    let mut t = Vec::new();
    let mut h = Header::new("Files", Kind::Dir);
    h.mtime = 1_700_000_000;
    h.pax.insert("MSWINDOWS.fileattr".into(), "16".into());
    write_entry_styled(&mut t, &h, HeaderStyle::WINDOWS, None).unwrap();
    let hs = model::go_tar(&finish(t)).unwrap();
    let (_, _, fi) = model::file_info_from_header(&hs[0]).unwrap();
    assert_eq!(model::filetime_date(fi.last_access), ZERO_TIME_DATE);
    assert_eq!(model::filetime_date(fi.change), ZERO_TIME_DATE);
    assert_eq!(fi.creation, fi.last_write, "no creationtime: the mtime");
    // What LayerWriter writes: all four times equal the (clamped) mtime.
    let mut w = LayerWriter::new(Vec::new(), opts(false)).unwrap();
    let mut f = Header::new("a.txt", Kind::File);
    f.size = 1;
    f.mtime = 1_800_000_000; // later than SOURCE_DATE_EPOCH: clamped
    w.append(f, Some(&mut &b"x"[..]), false).unwrap();
    let tar = w.finish().unwrap().1;
    for h in model::go_tar(&tar).unwrap() {
        let (_, _, fi) = model::file_info_from_header(&h).unwrap();
        assert_eq!(
            (fi.last_access, fi.change, fi.creation),
            (fi.last_write, fi.last_write, fi.last_write),
            "{}",
            h.name
        );
        if h.name == "Files/a.txt" {
            assert_eq!(
                fi.last_write,
                model::nsec_to_filetime(1_700_000_000 * 1_000_000_000)
            );
        }
    }
}

#[test]
fn the_model_parses_fileattr_and_rawsd_as_go_winio_does() {
    let header = |attr: Option<&str>, kind: Kind| {
        let mut t = Vec::new();
        let mut h = Header::new("Files/x", kind);
        if let Some(a) = attr {
            h.pax.insert("MSWINDOWS.fileattr".into(), a.into());
        }
        write_entry_styled(&mut t, &h, HeaderStyle::WINDOWS, None).unwrap();
        model::go_tar(&finish(t)).unwrap().remove(0)
    };
    let attrs = |a, k| model::file_info_from_header(&header(a, k)).map(|(_, _, fi)| fi.attributes);
    assert_eq!(attrs(Some("16"), Kind::Dir), Ok(16));
    assert_eq!(
        attrs(Some("0032"), Kind::File),
        Ok(32),
        "leading zeros parse"
    );
    assert_eq!(
        attrs(None, Kind::Dir),
        Ok(16),
        "a directory without the record"
    );
    assert_eq!(attrs(None, Kind::File), Ok(0));
    for bad in ["", "abc", "-1", "+16", "4294967296", "1_6", " 16"] {
        assert!(attrs(Some(bad), Kind::File).is_err(), "{bad:?}");
    }
    assert_eq!(model::std_base64("aGVsbG8=").unwrap(), b"hello");
    assert_eq!(
        model::std_base64("aGVs\nbG8=").unwrap(),
        b"hello",
        "newlines are skipped"
    );
    for bad in ["aGVsbG8", "aGVsbG8==", "aG=sbG8=", "aGVsbG8*"] {
        assert!(model::std_base64(bad).is_err(), "{bad:?}");
    }
    let dir_sd = model::std_base64(windows::DEFAULT_DIR_SD).unwrap();
    assert!(model::sd_valid(&dir_sd).is_ok());
    assert_eq!(model::sd_owner(&dir_sd).as_deref(), Some("S-1-5-32-544"));
    let mut not_self_relative = dir_sd.clone();
    not_self_relative[3] &= 0x7f;
    assert!(model::sd_valid(&not_self_relative).is_err());
    assert!(
        model::sd_valid(&dir_sd[..20]).is_err(),
        "offsets outside the buffer"
    );
}

#[test]
fn the_model_handles_paths_as_go_on_windows_does() {
    assert_eq!(model::base_slash("UtilityVM/Files/"), "Files");
    assert_eq!(model::dir_slash("Files/a/.wh.b"), "Files/a");
    assert_eq!(model::clean_windows("Files\\a\\"), "Files\\a");
    assert_eq!(model::clean_windows("a/../../b"), "..\\b");
    assert_eq!(
        model::clean_relative("Files\\a:b").unwrap_err(),
        "path contains invalid character `:`"
    );
    assert!(model::has_path_prefix("UtilityVM\\Files", "UtilityVM"));
    assert!(!model::has_path_prefix("UtilityVM", "UtilityVM"));
    assert!(!model::has_path_prefix("UtilityVMx\\a", "UtilityVM"));
    assert_eq!(model::upcase("readme.TXT"), "README.TXT");
    assert_eq!(
        model::upcase("straße"),
        "STRAßE",
        "no multi-unit upper case"
    );
    let (n255, n256) = ("n".repeat(255), "n".repeat(256));
    for ok in [
        "a",
        "trailing.",
        "trailing ",
        "CON",
        "nul.txt",
        "ünïcode",
        &n255,
    ] {
        assert!(model::ntfs_name_ok(ok).is_ok(), "{ok:?}");
    }
    for bad in [
        "a:b", "what?", "<", ">", "|", "\"", "*", "\u{1}", "\u{1f}", "a\\b", &n256, "..", ".",
    ] {
        assert!(model::ntfs_name_ok(bad).is_err(), "{bad:?}");
    }
    // 128 characters outside the BMP are 256 UTF-16 units.
    assert!(model::ntfs_name_ok(&"😀".repeat(128)).is_err());
}

// ==================================================================== fixtures

#[test]
fn every_fixture_layer_imports_as_a_base_layer() {
    for (file, utility_vm) in [("nanoserver.tar", false), ("servercore.tar", true)] {
        let archive = fs::read(fixture(file)).unwrap();
        let images = archive_images(&archive);
        assert!(images.len() >= 3, "{file}: {} images", images.len());
        for (digest, layers) in &images {
            let what = format!("{file} {digest}");
            assert_eq!(layers.len(), 1, "{what}");
            let chain = import_chain(layers).unwrap_or_else(|e| panic!("{what}: {e}"));
            let l = &chain[0];
            assert!(l.base_processed, "{what}");
            assert_eq!(
                l.utility_vm_processed, utility_vm,
                "{what}: ProcessUtilityVMImage"
            );
            if utility_vm {
                assert_eq!(
                    l.backups,
                    ["bcd.bak"],
                    "{what}: the BCD is saved before it changes"
                );
            }
            let v = view(&chain);
            assert!(
                v.get("Files\\Windows\\System32\\cmd.exe").is_some(),
                "{what}"
            );
            assert!(
                v.get("Hives").is_none(),
                "{what}: a base layer has no Hives"
            );
            assert_times_and_descriptors(&v, &what);
            // The checker agrees.
            assert!(checker_violations(&layers[0]).is_empty(), "{what}");
        }
    }
}

#[test]
fn a_trailing_slash_hides_the_utility_vm_from_the_importer() {
    // What wcbuild wrote before: directories named `UtilityVM/Files/`.
    let slashed = tiny_base(
        HeaderStyle {
            always_pax: true,
            dir_slash: true,
        },
        true,
    );
    let names: Vec<String> = model::go_tar(&slashed)
        .unwrap()
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert!(names.contains(&"UtilityVM/Files/".to_string()), "{names:?}");
    let l = model::import(&slashed, &[]).unwrap();
    assert!(l.base_processed);
    assert!(
        !l.utility_vm_processed,
        "`UtilityVM/Files/` is not `UtilityVM/Files`"
    );
    let text = checker_violations(&slashed).join("\n");
    assert!(
        text.contains("`UtilityVM/Files`") && text.contains("not recognised"),
        "{text}"
    );
    // As Microsoft's exporter names it, the UVM is processed.
    let plain = tiny_base(HeaderStyle::WINDOWS, true);
    assert!(model::import(&plain, &[]).unwrap().utility_vm_processed);
    assert!(checker_violations(&plain).is_empty());
    // In a layer with parents the same naming fails outright.
    let base = model::import(&plain, &[]).unwrap();
    let mut t = layer_start();
    for d in ["UtilityVM", "UtilityVM/Files"] {
        raw_styled(
            &mut t,
            d,
            Kind::Dir,
            b"",
            HeaderStyle {
                always_pax: true,
                dir_slash: true,
            },
            "",
        );
    }
    let err = model::import(&finish(t), &[&base]).unwrap_err();
    assert!(err.contains("missing UtilityVM directory"), "{err}");
    // `UtilityVM` itself carries no descriptor in a layer with parents (the exporter reads
    // paths outside `Files` without security): the importer has no file open for it.
    let mut t = layer_start();
    raw(&mut t, "UtilityVM", Kind::Dir, b"");
    let tar = finish(t);
    assert_eq!(
        model::import(&tar, &[&base]).unwrap_err(),
        "`UtilityVM`: closed"
    );
    assert!(
        checker_violations(&tar)
            .iter()
            .any(|v| v.contains("closed")),
        "{:?}",
        checker_violations(&tar)
    );
    let mut t = layer_start();
    let mut u = Header::new("UtilityVM", Kind::Dir);
    windows::decorate(&mut u, None, false);
    u.pax.remove(windows::PAX_RAWSD);
    write_entry_styled(&mut t, &u, HeaderStyle::WINDOWS, None).unwrap();
    raw(&mut t, "UtilityVM/Files", Kind::Dir, b"");
    raw(&mut t, "UtilityVM/Files/patch.dll", Kind::File, b"x");
    let tar = finish(t);
    assert!(
        checker_violations(&tar).is_empty(),
        "{:?}",
        checker_violations(&tar)
    );
    let l = model::import(&tar, &[&base]).unwrap();
    assert!(l.utility_vm_processed);
    assert!(
        l.volume
            .get("UtilityVM\\Files\\EFI\\Microsoft\\Boot\\BCD")
            .is_some(),
        "cloned from the parent"
    );
    // Without a parent UVM, the clone fails; and `UtilityVM/Files` without `UtilityVM` first.
    let no_uvm = model::import(&tiny_base(HeaderStyle::WINDOWS, false), &[]).unwrap();
    let mut t = layer_start();
    write_entry_styled(&mut t, &u, HeaderStyle::WINDOWS, None).unwrap();
    assert!(
        model::import(&finish(t), &[&no_uvm])
            .unwrap_err()
            .contains("cloning the parent utility VM")
    );
    let mut t = layer_start();
    raw(&mut t, "UtilityVM/Files/x", Kind::File, b"x");
    assert!(
        model::import(&finish(t), &[&base])
            .unwrap_err()
            .contains("missing UtilityVM directory")
    );
    let mut t = layer_start();
    write_entry_styled(&mut t, &u, HeaderStyle::WINDOWS, None).unwrap();
    raw(&mut t, "UtilityVM/Other", Kind::Dir, b"");
    assert!(
        model::import(&finish(t), &[&base])
            .unwrap_err()
            .contains("invalid UtilityVM layer")
    );
}

#[test]
fn a_base_layer_needs_its_hives_and_its_bcd() {
    let mut t = Vec::new();
    raw(&mut t, "Files", Kind::Dir, b"");
    raw(&mut t, "Files/x", Kind::File, b"x");
    assert!(
        model::import(&finish(t), &[])
            .unwrap_err()
            .contains("ProcessBaseImage")
    );
    let mut t = tiny_base(HeaderStyle::WINDOWS, false);
    t.truncate(t.len() - END.len());
    raw(&mut t, "UtilityVM", Kind::Dir, b"");
    raw(&mut t, "UtilityVM/Files", Kind::Dir, b"");
    let err = model::import(&finish(t.clone()), &[]).unwrap_err();
    assert!(err.contains("ProcessUtilityImage"), "{err}");
    let v = checker_violations(&finish(t)).join("\n");
    assert!(v.contains("BCD"), "{v}");
}

// ==================================================================== layers wcbuild builds

fn make_context(dir: &Path) {
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("bin/sub")).unwrap();
    fs::create_dir_all(tree.join("conf")).unwrap();
    fs::write(tree.join("bin/app.exe"), b"MZ\x90\x00app").unwrap();
    fs::write(tree.join("bin/sub/deep.dll"), vec![7u8; 70_000]).unwrap();
    fs::write(tree.join("conf/settings.json"), b"{\"a\":1}\n").unwrap();
    fs::write(tree.join("README.md"), b"readme\n").unwrap();
    fs::hard_link(tree.join("bin/app.exe"), tree.join("bin/app-alias.exe")).unwrap();
    std::os::unix::fs::symlink("../conf/settings.json", tree.join("bin/settings.json")).unwrap();
    std::os::unix::fs::symlink("bin/sub", tree.join("sublink")).unwrap();
    fs::write(
        dir.join("Dockerfile"),
        "FROM mcr.microsoft.com/windows/nanoserver:ltsc2022\nCOPY tree/ /app/\nWORKDIR /app/work\n",
    )
    .unwrap();
}

/// The image's layers (lowest first, uncompressed) from a store, by reference.
fn store_layers(root: &Path, reference: &str) -> Vec<Vec<u8>> {
    let (code, out, err) = common::wcbuild_at(root, &["inspect", reference]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let d = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
            gunzip(&fs::read(root.join("blobs/sha256").join(d)).unwrap())
        })
        .collect()
}

#[test]
fn a_copy_into_a_windows_stage_imports_on_its_base() {
    let dir = tempdir("build");
    let root = dir.join("store");
    let (code, _, err) = common::wcbuild_at(
        &root,
        &["load", "-i", fixture("nanoserver.tar").to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let ctx = dir.join("ctx");
    make_context(&ctx);
    let (code, _, err) = common::wcbuild_at(
        &root,
        &[
            "build",
            "-t",
            "wcbuild.local/import:1",
            "--source-date-epoch",
            "1700000000",
            "--progress",
            "quiet",
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let layers = store_layers(&root, "wcbuild.local/import:1");
    assert_eq!(layers.len(), 3, "base, COPY, WORKDIR");
    for (i, l) in layers.iter().enumerate() {
        assert!(
            checker_violations(l).is_empty(),
            "layer {i}: {:?}",
            checker_violations(l)
        );
    }
    let chain = import_chain(&layers).unwrap_or_else(|e| panic!("{e}"));
    assert!(!chain[1].base_processed && chain[1].tombstones.is_empty());
    let v = view(&chain);
    assert_times_and_descriptors(&v, "built image");
    // Every context file is where COPY put it, with its bytes.
    let src = ctx.join("tree");
    for (rel, nt) in [
        ("bin/app.exe", "Files\\app\\bin\\app.exe"),
        ("bin/app-alias.exe", "Files\\app\\bin\\app-alias.exe"),
        ("bin/sub/deep.dll", "Files\\app\\bin\\sub\\deep.dll"),
        ("conf/settings.json", "Files\\app\\conf\\settings.json"),
        ("README.md", "Files\\app\\README.md"),
    ] {
        let o = v.object(nt).unwrap_or_else(|| panic!("`{nt}` missing"));
        assert_eq!(o.data, fs::read(src.join(rel)).unwrap(), "{nt}");
        assert_eq!(
            o.info.last_write,
            model::nsec_to_filetime(1_700_000_000 * 1_000_000_000),
            "{nt}: clamped mtime"
        );
    }
    // The context's hard link is one file with two names, as the importer's AddLink makes it.
    assert_eq!(
        v.get("Files\\app\\bin\\app.exe").unwrap().object,
        v.get("Files\\app\\bin\\app-alias.exe").unwrap().object,
        "hard links in the context stay links"
    );
    // Symlinks became reparse points with Windows targets; the one to a directory is one.
    let s = v.object("Files\\app\\bin\\settings.json").unwrap();
    assert_eq!(
        s.reparse,
        Some(("..\\conf\\settings.json".to_string(), false))
    );
    assert_eq!(s.info.attributes & model::FILE_ATTRIBUTE_DIRECTORY, 0);
    let d = v.get("Files\\app\\sublink").unwrap();
    assert!(d.dir, "a directory symlink is created as a directory");
    assert_eq!(
        v.objects[d.object].reparse,
        Some(("bin\\sub".to_string(), false))
    );
    assert!(v.get("Files\\app\\work").is_some_and(|n| n.dir), "WORKDIR");
    // The base is still there under the new layers.
    assert!(v.get("Files\\Windows\\System32\\cmd.exe").is_some());
}

#[test]
fn a_packed_tree_with_hard_links_imports_them_as_links() {
    let dir = tempdir("pack");
    make_context(&dir);
    fs::hard_link(
        dir.join("tree/bin/app.exe"),
        dir.join("tree/conf/third-name.exe"),
    )
    .unwrap();
    let mut w = LayerWriter::new(Vec::new(), opts(false)).unwrap();
    pack_dir(&dir.join("tree"), &mut w, false).unwrap();
    let tar = w.finish().unwrap().1;
    let hs = model::go_tar(&tar).unwrap();
    let links: Vec<(&str, &str, i64)> = hs
        .iter()
        .filter(|h| h.typeflag == b'1')
        .map(|h| (h.name.as_str(), h.linkname.as_str(), h.size))
        .collect();
    assert_eq!(
        links,
        [
            ("Files/bin/app.exe", "Files/bin/app-alias.exe", 0),
            ("Files/conf/third-name.exe", "Files/bin/app-alias.exe", 0)
        ],
        "later names link to the first, under Files/, size 0"
    );
    assert!(
        checker_violations(&tar).is_empty(),
        "{:?}",
        checker_violations(&tar)
    );
    let base = model::import(&tiny_base(HeaderStyle::WINDOWS, false), &[]).unwrap();
    let l = model::import(&tar, &[&base]).unwrap();
    let v = l.view(&[&base]);
    let ids: HashSet<usize> = [
        "Files\\bin\\app.exe",
        "Files\\bin\\app-alias.exe",
        "Files\\conf\\third-name.exe",
    ]
    .iter()
    .map(|p| v.get(p).unwrap().object)
    .collect();
    assert_eq!(ids.len(), 1, "three names of one file");
    assert_eq!(
        v.object("Files\\bin\\app.exe").unwrap().data,
        b"MZ\x90\x00app"
    );
}

// ==================================================================== names

/// What a refused name's problem must be.
type Expect = fn(&NameProblem) -> bool;

/// Names Windows cannot hold: the importer fails (or makes something else), LayerWriter refuses
/// them with a WindowsNameError, and the checker reports them.
#[test]
fn names_windows_cannot_hold_are_refused_everywhere() {
    let base = model::import(&tiny_base(HeaderStyle::WINDOWS, false), &[]).unwrap();
    let long = "n".repeat(256);
    let cases: [(&str, Expect); 11] = [
        ("a:b.txt", |p| *p == NameProblem::Character(':')),
        ("what?.txt", |p| *p == NameProblem::Character('?')),
        ("less<", |p| *p == NameProblem::Character('<')),
        ("more>", |p| *p == NameProblem::Character('>')),
        ("pipe|", |p| *p == NameProblem::Character('|')),
        ("quote\"", |p| *p == NameProblem::Character('"')),
        ("star*", |p| *p == NameProblem::Character('*')),
        ("ctl\u{1}", |p| *p == NameProblem::Control('\u{1}')),
        ("ctl\u{1f}", |p| *p == NameProblem::Control('\u{1f}')),
        ("back\\slash", |p| *p == NameProblem::Character('\\')),
        (&long, |p| {
            matches!(p, NameProblem::TooLong { units: 256, .. })
        }),
    ];
    for (name, expect) in cases {
        // The importer, given the entry raw.
        let mut t = layer_start();
        raw(&mut t, "Files/dir", Kind::Dir, b"");
        raw(&mut t, &format!("Files/dir/{name}"), Kind::File, b"x");
        let tar = finish(t);
        let imported = model::import(&tar, &[&base]);
        match name {
            // `\` is a separator on Windows: the entry lands at another path, whose parent
            // does not exist.
            n if n.contains('\\') => assert!(
                imported.unwrap_err().contains("cannot find the path"),
                "{name:?}"
            ),
            _ => assert!(imported.is_err(), "{name:?}: the importer took it"),
        }
        // The checker reports it.
        assert!(
            checker_violations(&tar)
                .iter()
                .any(|v| v.contains(&format!("Files/dir/{name}"))),
            "{name:?}: {:?}",
            checker_violations(&tar)
        );
        // LayerWriter refuses it, naming the path as given.
        let mut w = LayerWriter::new(Vec::new(), opts(false)).unwrap();
        let mut h = Header::new(&format!("dir/{name}"), Kind::File);
        h.size = 1;
        let e = w.append(h, Some(&mut &b"x"[..]), false).unwrap_err();
        let ne = name_error(&e);
        assert_eq!(ne.path, format!("dir/{name}"));
        assert!(expect(&ne.problem), "{name:?}: {:?}", ne.problem);
        assert!(
            e.to_string()
                .starts_with(&format!("`dir/{name}` cannot go into a Windows layer")),
            "{e}"
        );
    }
}

#[test]
fn names_that_differ_only_in_case_collide() {
    let base = model::import(&tiny_base(HeaderStyle::WINDOWS, false), &[]).unwrap();
    for (first, second) in [("README", "readme"), ("Dir/a", "dir/b"), ("x", "x")] {
        let mut t = layer_start();
        let mut written = HashSet::new();
        for p in [first, second] {
            let mut acc = String::from("Files");
            let parts: Vec<&str> = p.split('/').collect();
            for (i, c) in parts.iter().enumerate() {
                acc = format!("{acc}/{c}");
                let dir = i + 1 < parts.len();
                if dir && !written.insert(acc.clone()) {
                    continue;
                }
                raw(
                    &mut t,
                    &acc,
                    if dir { Kind::Dir } else { Kind::File },
                    if dir { b"" } else { b"x" },
                );
            }
        }
        let tar = finish(t);
        let err = model::import(&tar, &[&base]).unwrap_err();
        assert!(err.contains("already exists"), "{first} {second}: {err}");
        assert!(!checker_violations(&tar).is_empty(), "{first} {second}");
        let mut w = LayerWriter::new(Vec::new(), opts(false)).unwrap();
        for (i, p) in [first, second].iter().enumerate() {
            let mut h = Header::new(p, Kind::File);
            h.size = 1;
            let r = w.append(h, Some(&mut &b"x"[..]), false);
            if i == 0 {
                r.unwrap();
                continue;
            }
            let e = r.unwrap_err();
            let ne = name_error(&e);
            assert_eq!(ne.path, *p);
            if first == second {
                assert_eq!(ne.problem, NameProblem::Duplicate);
            } else {
                assert!(
                    matches!(&ne.problem, NameProblem::Case { other } if other.eq_ignore_ascii_case(&format!("Files/{}", first.rsplit_once('/').map_or(first, |x| x.0)))),
                    "{:?}",
                    ne.problem
                );
            }
        }
    }
    // A directory written twice is one entry; the same directory in another case is refused.
    let mut w = LayerWriter::new(Vec::new(), opts(false)).unwrap();
    w.append(Header::new("app", Kind::Dir), None, false)
        .unwrap();
    w.append(Header::new("app", Kind::Dir), None, false)
        .unwrap();
    let e = w
        .append(Header::new("APP", Kind::Dir), None, false)
        .unwrap_err();
    assert!(matches!(name_error(&e).problem, NameProblem::Case { .. }));
    let mut f = Header::new("app/x", Kind::File);
    f.size = 1;
    w.append(f, Some(&mut &b"x"[..]), false).unwrap();
    let e = w
        .append(Header::new("app/x/y", Kind::Dir), None, false)
        .unwrap_err();
    assert_eq!(
        name_error(&e).problem,
        NameProblem::ParentNotDirectory {
            parent: "Files/app/x".into()
        }
    );
    let tar = w.finish().unwrap().1;
    model::import(&tar, &[&base]).unwrap();
}

#[test]
fn names_windows_programs_cannot_open_still_import() {
    let base = model::import(&tiny_base(HeaderStyle::WINDOWS, false), &[]).unwrap();
    let mut w = LayerWriter::new(Vec::new(), opts(false)).unwrap();
    for name in ["trailing.", "trailing ", "CON", "nul.txt", "com1"] {
        let mut h = Header::new(name, Kind::File);
        h.size = 1;
        w.append(h, Some(&mut &b"x"[..]), false).unwrap();
    }
    let tar = w.finish().unwrap().1;
    let l = model::import(&tar, &[&base]).unwrap();
    assert!(l.volume.get("Files\\CON").is_some() && l.volume.get("Files\\trailing.").is_some());
    let r = check_windows_layer(std::io::Cursor::new(tar), ReadLimits::default()).unwrap();
    assert!(r.violations.is_empty(), "{r}");
    assert_eq!(r.warnings.len(), 5, "{r}");
}

#[test]
fn whiteout_prefixed_and_transport_names_are_refused() {
    let base = model::import(&tiny_base(HeaderStyle::WINDOWS, false), &[]).unwrap();
    let mut w = LayerWriter::new(Vec::new(), opts(false)).unwrap();
    let mut h = Header::new("app/.wh.config", Kind::File);
    h.size = 1;
    let e = w.append(h, Some(&mut &b"x"[..]), false).unwrap_err();
    assert_eq!(name_error(&e).problem, NameProblem::Whiteout);
    // The importer would have read that entry as a deletion: no file, a tombstone.
    let mut t = layer_start();
    raw(&mut t, "Files/app", Kind::Dir, b"");
    raw(&mut t, "Files/app/.wh.config", Kind::File, b"x");
    let l = model::import(&finish(t), &[&base]).unwrap();
    assert_eq!(l.tombstones, ["Files\\app\\config"]);
    // A directory's record in the transport folder is `<dir>.$wcidirs$`: a file of that name
    // next to it collides.
    let mut t = layer_start();
    raw(&mut t, "Files/app", Kind::Dir, b"");
    raw(&mut t, "Files/app.$wcidirs$", Kind::File, b"x");
    let tar = finish(t);
    assert!(
        model::import(&tar, &[&base])
            .unwrap_err()
            .contains("already exists")
    );
    assert!(!checker_violations(&tar).is_empty());
    let mut h = Header::new("app.$WCIDIRS$", Kind::File);
    h.size = 1;
    let e = w.append(h, Some(&mut &b"x"[..]), false).unwrap_err();
    assert_eq!(name_error(&e).problem, NameProblem::TransportSuffix);
}

// ==================================================================== structure

#[test]
fn parents_come_before_children() {
    let base = model::import(&tiny_base(HeaderStyle::WINDOWS, false), &[]).unwrap();
    let mut t = layer_start();
    raw(&mut t, "Files/a/b.txt", Kind::File, b"x");
    let tar = finish(t);
    assert!(
        model::import(&tar, &[&base])
            .unwrap_err()
            .contains("cannot find the path")
    );
    assert!(
        checker_violations(&tar)
            .iter()
            .any(|v| v.contains("parent directory `Files/a`"))
    );
    // No `Files` entry at all.
    let mut t = Vec::new();
    raw(&mut t, "Hives", Kind::Dir, b"");
    raw(&mut t, "Files/x", Kind::File, b"x");
    assert!(model::import(&finish(t), &[&base]).is_err());
    // The importer decides what is a directory from `MSWINDOWS.fileattr`, not the type flag.
    let mut t = layer_start();
    let mut h = Header::new("Files/d", Kind::Dir);
    windows::decorate(&mut h, None, false);
    h.pax.insert("MSWINDOWS.fileattr".into(), "32".into());
    write_entry_styled(&mut t, &h, HeaderStyle::WINDOWS, None).unwrap();
    raw(&mut t, "Files/d/child", Kind::File, b"x");
    let tar = finish(t);
    assert!(
        model::import(&tar, &[&base])
            .unwrap_err()
            .contains("is a file")
    );
    assert!(
        checker_violations(&tar)
            .iter()
            .any(|v| v.contains("FILE_ATTRIBUTE_DIRECTORY"))
    );
    // And nothing outside Files and Hives.
    let mut t = layer_start();
    raw(&mut t, "Other", Kind::Dir, b"");
    let tar = finish(t);
    assert!(
        model::import(&tar, &[&base])
            .unwrap_err()
            .contains("outside")
    );
    assert!(!checker_violations(&tar).is_empty());
}

#[test]
fn whiteouts_are_tombstones_under_files_only() {
    let base = model::import(&tiny_base(HeaderStyle::WINDOWS, false), &[]).unwrap();
    let mut w = LayerWriter::new(Vec::new(), opts(false)).unwrap();
    w.whiteout("Windows/System32/cmd.exe").unwrap();
    let tar = w.finish().unwrap().1;
    assert!(checker_violations(&tar).is_empty());
    let l = model::import(&tar, &[&base]).unwrap();
    let v = l.view(&[&base]);
    assert!(v.get("Files\\Windows\\System32\\cmd.exe").is_none());
    assert!(v.get("Files\\Windows\\System32\\config\\SAM").is_some());
    // In a base layer, and outside Files: refused by the importer, the checker, the writer.
    let mut t = tiny_base(HeaderStyle::WINDOWS, false);
    t.truncate(t.len() - END.len());
    let mut wh = Vec::new();
    write_entry_styled(
        &mut wh,
        &Header::new("Files/.wh.gone", Kind::File),
        HeaderStyle::LINUX,
        None,
    )
    .unwrap();
    t.extend_from_slice(&wh);
    let tar = finish(t);
    assert_eq!(
        model::import(&tar, &[]).unwrap_err(),
        "`Files/.wh.gone`: base layer cannot have tombstones"
    );
    assert!(
        checker_violations(&tar)
            .iter()
            .any(|v| v.contains("base layer cannot have tombstones"))
    );
    let mut bw = LayerWriter::new(Vec::new(), opts(true)).unwrap();
    assert!(bw.whiteout("gone").is_err());
    let mut t = layer_start();
    let mut wh = Vec::new();
    write_entry_styled(
        &mut wh,
        &Header::new("Hives/.wh.Sam_Delta", Kind::File),
        HeaderStyle::LINUX,
        None,
    )
    .unwrap();
    t.extend_from_slice(&wh);
    let tar = finish(t);
    assert!(
        model::import(&tar, &[&base])
            .unwrap_err()
            .contains("invalid tombstone")
    );
    assert!(!checker_violations(&tar).is_empty());
    // A whiteout and an entry for the same path in one layer: the import deletes the entry.
    let mut t = layer_start();
    let mut wh = Vec::new();
    write_entry_styled(
        &mut wh,
        &Header::new("Files/.wh.new.txt", Kind::File),
        HeaderStyle::LINUX,
        None,
    )
    .unwrap();
    t.extend_from_slice(&wh);
    raw(&mut t, "Files/new.txt", Kind::File, b"x");
    let tar = finish(t);
    let l = model::import(&tar, &[&base]).unwrap();
    assert!(
        l.view(&[&base]).get("Files\\new.txt").is_none(),
        "the entry is gone"
    );
    assert!(!checker_violations(&tar).is_empty());
    let mut w = LayerWriter::new(Vec::new(), opts(false)).unwrap();
    w.whiteout("new.txt").unwrap();
    let mut h = Header::new("new.txt", Kind::File);
    h.size = 1;
    let e = w.append(h, Some(&mut &b"x"[..]), false).unwrap_err();
    assert_eq!(name_error(&e).problem, NameProblem::DeletedInSameLayer);
}

#[test]
fn hard_links_follow_add_link() {
    let base = model::import(&tiny_base(HeaderStyle::WINDOWS, false), &[]).unwrap();
    // A link to a file of the parent layer: found there.
    let mut w = LayerWriter::new(Vec::new(), opts(false)).unwrap();
    let mut l = Header::new("cmd-copy.exe", Kind::Hardlink);
    l.link = "Windows/System32/cmd.exe".into();
    w.append(l, None, false).unwrap();
    let tar = w.finish().unwrap().1;
    let v = model::import(&tar, &[&base]).unwrap().view(&[&base]);
    assert_eq!(v.object("Files\\cmd-copy.exe").unwrap().data, b"MZ");
    // A link to nothing, to outside Files, to a directory, to a symlink.
    let cases: [(&str, Kind, &str); 4] = [
        (
            "Files/missing.exe",
            Kind::File,
            "failed to find link target",
        ),
        ("Hives/Sam_Delta", Kind::File, "invalid hard link in layer"),
        ("Files/dir", Kind::Dir, "directory cannot be hard-linked"),
        ("Files/sym", Kind::Symlink, "reparse point"),
    ];
    for (target, kind, message) in cases {
        let mut t = layer_start();
        if target != "Files/missing.exe" {
            raw_styled(
                &mut t,
                target,
                kind,
                if kind == Kind::File { b"x" } else { b"" },
                HeaderStyle::WINDOWS,
                "C:\\x",
            );
        }
        raw_styled(
            &mut t,
            "Files/link",
            Kind::Hardlink,
            b"",
            HeaderStyle::WINDOWS,
            target,
        );
        let err = model::import(&finish(t), &[&base]).unwrap_err();
        assert!(err.contains(message), "{target}: {err}");
    }
    // The importer finds a target of this layer by its exact name; LayerWriter writes it so.
    let mut t = layer_start();
    raw(&mut t, "Files/App.exe", Kind::File, b"x");
    raw_styled(
        &mut t,
        "Files/alias.exe",
        Kind::Hardlink,
        b"",
        HeaderStyle::WINDOWS,
        "Files/app.exe",
    );
    let tar = finish(t);
    assert!(
        model::import(&tar, &[&base])
            .unwrap_err()
            .contains("failed to find link target")
    );
    assert!(
        checker_violations(&tar)
            .iter()
            .any(|v| v.contains("exact name"))
    );
    let mut w = LayerWriter::new(Vec::new(), opts(false)).unwrap();
    let mut f = Header::new("App.exe", Kind::File);
    f.size = 1;
    w.append(f, Some(&mut &b"x"[..]), false).unwrap();
    let mut l = Header::new("alias.exe", Kind::Hardlink);
    l.link = "app.exe".into();
    w.append(l, None, false).unwrap();
    let mut l = Header::new("bad", Kind::Hardlink);
    l.link = "".into();
    assert!(w.append(l, None, false).is_err(), "a link to no path");
    let tar = w.finish().unwrap().1;
    let l = model::import(&tar, &[&base]).unwrap();
    assert_eq!(
        l.volume.get("Files\\alias.exe").unwrap().object,
        l.volume.get("Files\\App.exe").unwrap().object
    );
}

#[test]
fn reparse_points_and_descriptors_are_read_from_their_records() {
    let base = model::import(&tiny_base(HeaderStyle::WINDOWS, false), &[]).unwrap();
    let mut w = LayerWriter::new(Vec::new(), opts(false)).unwrap();
    let mut s = Header::new("abs", Kind::Symlink);
    s.link = "/Windows/System32".into();
    w.append(s, None, true).unwrap();
    let tar = w.finish().unwrap().1;
    let l = model::import(&tar, &[&base]).unwrap();
    let n = l.volume.get("Files\\abs").unwrap();
    assert!(n.dir);
    let o = &l.volume.objects[n.object];
    assert_eq!(
        o.reparse,
        Some(("C:\\Windows\\System32".to_string(), false))
    );
    assert_eq!(o.info.attributes, 0x410);
    // A junction.
    let mut t = layer_start();
    let mut j = Header::new("Files/junction", Kind::Symlink);
    j.link = "C:\\data".into();
    windows::decorate(&mut j, None, true);
    j.pax.insert("MSWINDOWS.mountpoint".into(), "1".into());
    write_entry_styled(&mut t, &j, HeaderStyle::WINDOWS, None).unwrap();
    let l = model::import(&finish(t), &[&base]).unwrap();
    assert_eq!(
        l.volume.object("Files\\junction").unwrap().reparse,
        Some(("C:\\data".to_string(), true))
    );
    // Owner SIDs from `windows_owner` reach the volume.
    let mut o = opts(false);
    o.windows_owner = Some(windows::CONTAINER_USER_SID.into());
    let mut w = LayerWriter::new(Vec::new(), o).unwrap();
    let mut f = Header::new("mine.txt", Kind::File);
    f.size = 1;
    w.append(f, Some(&mut &b"x"[..]), false).unwrap();
    let l = model::import(&w.finish().unwrap().1, &[&base]).unwrap();
    let sd = l
        .volume
        .object("Files\\mine.txt")
        .unwrap()
        .sd
        .clone()
        .unwrap();
    assert_eq!(
        model::sd_owner(&sd).as_deref(),
        Some(windows::CONTAINER_USER_SID)
    );
    // Malformed records fail the import, and the checker says so.
    for (key, value) in [
        ("MSWINDOWS.rawsd", "not base64!"),
        ("MSWINDOWS.rawsd", "AQAAAA=="),
        ("MSWINDOWS.fileattr", "sixteen"),
        ("LIBARCHIVE.creationtime", "1.x"),
    ] {
        let mut t = layer_start();
        let mut h = Header::new("Files/f", Kind::File);
        windows::decorate(&mut h, None, false);
        h.pax.insert(key.into(), value.into());
        write_entry_styled(&mut t, &h, HeaderStyle::WINDOWS, None).unwrap();
        let tar = finish(t);
        assert!(model::import(&tar, &[&base]).is_err(), "{key}={value}");
        assert!(!checker_violations(&tar).is_empty(), "{key}={value}");
    }
    // An alternate data stream follows its file and is not a file of its own.
    let mut t = layer_start();
    raw(&mut t, "Files/f", Kind::File, b"main");
    let mut ads = Header::new("Files/f:Zone.Identifier", Kind::File);
    ads.size = 3;
    write_entry_styled(&mut t, &ads, HeaderStyle::WINDOWS, Some(&mut &b"ads"[..])).unwrap();
    let tar = finish(t);
    assert!(
        checker_violations(&tar).is_empty(),
        "{:?}",
        checker_violations(&tar)
    );
    let l = model::import(&tar, &[&base]).unwrap();
    let o = l.volume.object("Files\\f").unwrap();
    assert_eq!((o.data.as_slice(), o.streams.len()), (&b"main"[..], 1));
    assert!(l.volume.nodes.len() == 3, "Hives, Files, f");
}

/// The checker is never more lenient than the importer: over mutated layers wcbuild wrote,
/// every layer the model refuses gets at least one violation.
#[test]
fn what_the_importer_refuses_the_checker_reports() {
    let base = model::import(&tiny_base(HeaderStyle::WINDOWS, false), &[]).unwrap();
    let dir = tempdir("mutate");
    make_context(&dir);
    let mut w = LayerWriter::new(Vec::new(), opts(false)).unwrap();
    pack_dir(&dir.join("tree"), &mut w, false).unwrap();
    w.whiteout("Windows/System32/cmd.exe").unwrap();
    let good = w.finish().unwrap().1;
    model::import(&good, &[&base]).unwrap();
    let headers = model::go_tar(&good).unwrap();
    // Re-write the layer with one record changed at a time.
    let mutations: [(&str, &str); 8] = [
        ("MSWINDOWS.fileattr", "x"),
        ("MSWINDOWS.fileattr", "4294967296"),
        ("MSWINDOWS.rawsd", "AAAA"),
        ("MSWINDOWS.rawsd", "%%%%"),
        ("LIBARCHIVE.creationtime", "now"),
        ("path", "Files/bin/a:b"),
        ("path", "Files/missing/x"),
        ("path", "Files/README.MD"),
    ];
    let mut refused = 0;
    for (i, h) in headers.iter().enumerate() {
        if h.typeflag == b'1' || h.name.contains(".wh.") || !h.name.starts_with("Files/") {
            continue;
        }
        for (key, value) in mutations {
            let mut t = Vec::new();
            for (j, g) in headers.iter().enumerate() {
                let mut hdr = Header::new(
                    &g.name,
                    match g.typeflag {
                        b'5' => Kind::Dir,
                        b'2' => Kind::Symlink,
                        b'1' => Kind::Hardlink,
                        _ => Kind::File,
                    },
                );
                hdr.link = g.linkname.clone();
                hdr.size = g.data.len() as u64;
                hdr.mtime = g.mod_time.unwrap().0;
                let mut pax = g.pax.clone();
                if i == j {
                    if key == "path" {
                        hdr.path = value.to_string();
                    } else {
                        pax.insert(key.to_string(), value.to_string());
                    }
                }
                pax.remove("path");
                hdr.pax = pax;
                let style = if g.pax.is_empty() {
                    HeaderStyle::LINUX
                } else {
                    HeaderStyle::WINDOWS
                };
                write_entry_styled(&mut t, &hdr, style, Some(&mut &g.data[..])).unwrap();
            }
            let tar = finish(t);
            if model::import(&tar, &[&base]).is_err() {
                refused += 1;
                assert!(
                    !checker_violations(&tar).is_empty(),
                    "the importer refuses `{}` with {key}={value}, the checker finds nothing",
                    h.name
                );
            }
        }
    }
    assert!(refused > 50, "only {refused} mutations were refused");
}

#[test]
fn raw_records_show_what_the_reader_normalizes() {
    // The checker sees the missing atime/ctime records and trailing slashes of old layers.
    let mut t = Vec::new();
    for (p, k) in [
        ("Hives", Kind::Dir),
        ("Files", Kind::Dir),
        ("Files/app", Kind::Dir),
    ] {
        let mut h = Header::new(p, k);
        windows::decorate(&mut h, None, false);
        h.pax.remove("atime");
        h.pax.remove("ctime");
        write_entry_styled(
            &mut t,
            &h,
            HeaderStyle {
                always_pax: true,
                dir_slash: true,
            },
            None,
        )
        .unwrap();
    }
    let r = check_windows_layer(std::io::Cursor::new(finish(t)), ReadLimits::default()).unwrap();
    assert!(r.violations.is_empty(), "{r}");
    let text = r.to_string();
    assert!(
        text.contains(
            "warning: `Hives` (at byte 0): this and 2 more entries have no PAX `atime`/`ctime`"
        ),
        "{text}"
    );
    assert!(text.contains("1754-08-30"), "{text}");
    assert!(
        text.contains("this and 2 more directory names end in `/`"),
        "{text}"
    );
}
