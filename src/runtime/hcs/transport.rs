//! The folder the Host Compute Service imports a layer from and exports one into (the
//! legacy transport layout vmcompute's `ImportLayer`/`ExportLayer` use, hcsshim
//! `internal/wclayer/legacy.go`): under `Files\` each file holds its 4-byte little-endian
//! attributes then its Win32 backup streams (`WIN32_STREAM_ID` headers: data, security,
//! alternate data, reparse data); each directory has a sibling `<dir>.$wcidirs$` in the same
//! encoding; `Hives\` files hold backup streams only; `tombstones.txt` is a UTF-8 BOM,
//! `Version 1.0`, then one `\path` per deleted path. Portable: both directions are
//! plain file operations, tested on Linux.
//!
//! Whether `HcsImportLayer`/`HcsExportLayer` (computestorage) use exactly this layout, as
//! vmcompute's calls do, is not confirmed by any source we found.

use crate::layer::names::{self, Rules};
use crate::layer::tar::{Entry, Header, Kind, TarReader, write_entry_styled};
use crate::layer::windows::{self, base64, unbase64};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// `BACKUP_DATA`.
pub const BACKUP_DATA: u32 = 1;
/// `BACKUP_EA_DATA`.
pub const BACKUP_EA_DATA: u32 = 2;
/// `BACKUP_SECURITY_DATA`.
pub const BACKUP_SECURITY_DATA: u32 = 3;
/// `BACKUP_ALTERNATE_DATA`.
pub const BACKUP_ALTERNATE_DATA: u32 = 4;
/// `BACKUP_REPARSE_DATA`.
pub const BACKUP_REPARSE_DATA: u32 = 8;
/// `BACKUP_SPARSE_BLOCK`.
pub const BACKUP_SPARSE_BLOCK: u32 = 9;
/// `IO_REPARSE_TAG_SYMLINK`.
pub const TAG_SYMLINK: u32 = 0xA000_000C;
/// `IO_REPARSE_TAG_MOUNT_POINT` (a junction).
pub const TAG_MOUNT_POINT: u32 = 0xA000_0003;
/// `FILE_ATTRIBUTE_DIRECTORY`.
const ATTR_DIRECTORY: u32 = 0x10;
/// `FILE_ATTRIBUTE_REPARSE_POINT`.
const ATTR_REPARSE_POINT: u32 = 0x400;
/// The suffix of a directory's metadata file.
pub const DIR_SUFFIX: &str = ".$wcidirs$";
/// The tombstone file.
pub const TOMBSTONES: &str = "tombstones.txt";
/// Its first line, after the BOM.
const TOMBSTONE_HEADER: &str = "Version 1.0";
/// The largest stream accepted from a folder (a layer's file is at most this).
const MAX_STREAM: u64 = 1 << 40;

/// One backup stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// `BACKUP_*`.
    pub id: u32,
    /// The stream's name (alternate data: `:name:$DATA`), UTF-16 decoded.
    pub name: String,
    /// Its bytes.
    pub data: Vec<u8>,
}

fn bad(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("`{}`: {what}", path.display()),
    )
}

/// Encodes streams as `BackupRead` writes them.
pub fn encode_streams(streams: &[Stream], out: &mut Vec<u8>) {
    for s in streams {
        let name: Vec<u8> = s
            .name
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        out.extend_from_slice(&s.id.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(s.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&name);
        out.extend_from_slice(&s.data);
    }
}

/// Decodes a sequence of backup streams; `path` names the file in errors.
pub fn decode_streams(mut data: &[u8], path: &Path) -> io::Result<Vec<Stream>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 20 {
            return Err(bad(
                path,
                format!("a backup stream header cut short ({} bytes)", data.len()),
            ));
        }
        let id = u32::from_le_bytes(data[0..4].try_into().unwrap());
        let size = u64::from_le_bytes(data[8..16].try_into().unwrap());
        let name_len = u32::from_le_bytes(data[16..20].try_into().unwrap()) as usize;
        data = &data[20..];
        if size > MAX_STREAM
            || !name_len.is_multiple_of(2)
            || name_len > data.len()
            || size > (data.len() - name_len) as u64
        {
            return Err(bad(
                path,
                format!(
                    "backup stream {id}: a size of {size} bytes and a name of {name_len} bytes do not fit the file"
                ),
            ));
        }
        let units: Vec<u16> = data[..name_len]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let name =
            String::from_utf16(&units).map_err(|_| bad(path, "a stream name is not UTF-16"))?;
        data = &data[name_len..];
        let (body, rest) = data.split_at(size as usize);
        out.push(Stream {
            id,
            name,
            data: body.to_vec(),
        });
        data = rest;
    }
    Ok(out)
}

/// A symlink or junction target from reparse data: `(target as printed, junction)`.
pub fn decode_reparse(data: &[u8], path: &Path) -> io::Result<(String, bool)> {
    if data.len() < 16 {
        return Err(bad(path, "reparse data cut short"));
    }
    let tag = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let (junction, buf_start) = match tag {
        TAG_SYMLINK => (false, 20),
        TAG_MOUNT_POINT => (true, 16),
        other => {
            return Err(bad(
                path,
                format!("reparse tag {other:#x} (only symlinks and junctions go into a layer)"),
            ));
        }
    };
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let (print_off, print_len) = (u16_at(12), u16_at(14));
    let start = buf_start + print_off;
    if data.len() < buf_start || start + print_len > data.len() || !print_len.is_multiple_of(2) {
        return Err(bad(path, "reparse data names a path outside it"));
    }
    let units: Vec<u16> = data[start..start + print_len]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let target =
        String::from_utf16(&units).map_err(|_| bad(path, "a reparse path is not UTF-16"))?;
    Ok((target, junction))
}

/// Reparse data for a symlink (relative when the target is) or a junction to `target`.
pub fn encode_reparse(target: &str, junction: bool) -> Vec<u8> {
    let absolute = target.len() >= 2 && target.as_bytes()[1] == b':';
    let substitute = if absolute || junction {
        format!(r"\??\{target}")
    } else {
        target.to_string()
    };
    let sub: Vec<u8> = substitute
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let print: Vec<u8> = target
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let mut body = Vec::new();
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&(sub.len() as u16).to_le_bytes());
    body.extend_from_slice(&(sub.len() as u16).to_le_bytes());
    body.extend_from_slice(&(print.len() as u16).to_le_bytes());
    if !junction {
        let relative: u32 = if absolute { 0 } else { 1 };
        body.extend_from_slice(&relative.to_le_bytes());
    }
    body.extend_from_slice(&sub);
    body.extend_from_slice(&print);
    let mut out = Vec::new();
    out.extend_from_slice(
        &(if junction {
            TAG_MOUNT_POINT
        } else {
            TAG_SYMLINK
        })
        .to_le_bytes(),
    );
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn tombstone_path(rel: &str) -> String {
    format!("\\{}", rel.replace('/', "\\"))
}

/// Writes `layer` (an uncompressed or compressed Windows layer tar, as the store holds
/// it) into `folder` in the transport layout. Returns true when the layer has a utility VM
/// (`UtilityVM/Files/…`).
pub fn tar_to_folder(layer: impl Read + 'static, folder: &Path) -> io::Result<bool> {
    let mut tar = crate::layer::tar_reader(layer, crate::layer::ReadLimits::default())
        .map_err(|e| io::Error::other(format!("layer: {e}")))?;
    fs::create_dir_all(folder.join("Files"))?;
    let mut tombstones: Vec<String> = Vec::new();
    let mut has_uvm = false;
    // The file the alternate data streams that follow belong to.
    let mut last_file: Option<(String, PathBuf)> = None;
    // Times are set at the end: appending a stream changes a file's time.
    let mut times: Vec<(PathBuf, i64)> = Vec::new();
    while let Some(Entry { header: h, .. }) = tar.next_entry().map_err(io::Error::other)? {
        let path = h.path.clone();
        // Under Windows rules on every host: `\` separates, drives and `..` are refused.
        let comps = names::components_nonempty(&path, Rules::Windows)
            .map_err(|e| bad(folder, format!("layer entry `{path}`: {e}")))?;
        let (top, rest) = (comps[0].to_string(), comps[1..].join("/"));
        if rest.is_empty() {
            // `Files`, `Hives`, `UtilityVM` themselves.
            if top == "UtilityVM" {
                has_uvm = true;
            }
            continue;
        }
        if !matches!(top.as_str(), "Files" | "Hives" | "UtilityVM") {
            return Err(bad(
                folder,
                format!("layer entry `{path}` is outside Files/, Hives/ and UtilityVM/"),
            ));
        }
        if top == "UtilityVM" {
            has_uvm = true;
        }
        let name = rest.rsplit('/').next().unwrap_or(&rest);
        let hidden = names::whiteout(name, Rules::Windows)
            .map_err(|e| bad(folder, format!("layer entry `{path}`: {e}")))?;
        if let Some(w) = hidden {
            let names::Whiteout::Hides(gone) = w else {
                return Err(bad(
                    folder,
                    format!("layer entry `{path}`: Windows layers have no opaque or AUFS markers"),
                ));
            };
            if top != "Files" {
                return Err(bad(
                    folder,
                    format!("layer entry `{path}`: a whiteout outside Files/"),
                ));
            }
            let parent = rest.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            let rel = if parent.is_empty() {
                gone.to_string()
            } else {
                format!("{parent}/{gone}")
            };
            tombstones.push(tombstone_path(&rel));
            continue;
        }
        let dest = folder
            .join(&top)
            .join(rest.replace('/', std::path::MAIN_SEPARATOR_STR));
        // `file:stream` right after `file`: an alternate data stream.
        if top == "Files"
            && let Some((base, stream)) = rest.rsplit_once(':')
            && let Some((file, at)) = &last_file
            && file == base
        {
            let mut data = Vec::new();
            tar.content().read_to_end(&mut data)?;
            let mut enc = Vec::new();
            encode_streams(
                &[Stream {
                    id: BACKUP_ALTERNATE_DATA,
                    name: format!(":{stream}:$DATA"),
                    data,
                }],
                &mut enc,
            );
            fs::OpenOptions::new()
                .append(true)
                .open(at)?
                .write_all(&enc)?;
            continue;
        }
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p)?;
        }
        if top == "Hives" {
            let mut data = Vec::new();
            tar.content().read_to_end(&mut data)?;
            let mut enc = Vec::new();
            encode_streams(
                &[Stream {
                    id: BACKUP_DATA,
                    name: String::new(),
                    data,
                }],
                &mut enc,
            );
            fs::write(&dest, enc)?;
            continue;
        }
        let attr: u32 = h
            .pax
            .get(windows::PAX_FILEATTR)
            .and_then(|a| a.parse().ok())
            .unwrap_or(match h.kind {
                Kind::Dir => ATTR_DIRECTORY,
                _ => 0x20,
            });
        let mut streams = Vec::new();
        if let Some(sd) = h.pax.get(windows::PAX_RAWSD) {
            let raw = unbase64(sd).ok_or_else(|| {
                bad(
                    folder,
                    format!("layer entry `{path}`: MSWINDOWS.rawsd is not base64"),
                )
            })?;
            streams.push(Stream {
                id: BACKUP_SECURITY_DATA,
                name: String::new(),
                data: raw,
            });
        }
        let mut enc = attr.to_le_bytes().to_vec();
        match h.kind {
            Kind::Dir => {
                fs::create_dir_all(&dest)?;
                encode_streams(&streams, &mut enc);
                let meta = PathBuf::from(format!("{}{DIR_SUFFIX}", dest.display()));
                fs::write(&meta, enc)?;
                times.push((meta, h.mtime));
                last_file = None;
            }
            Kind::File => {
                let mut data = Vec::new();
                tar.content().read_to_end(&mut data)?;
                streams.push(Stream {
                    id: BACKUP_DATA,
                    name: String::new(),
                    data,
                });
                encode_streams(&streams, &mut enc);
                fs::write(&dest, enc)?;
                times.push((dest.clone(), h.mtime));
                last_file = Some((rest.clone(), dest));
            }
            Kind::Symlink => {
                let junction = h.pax.contains_key("MSWINDOWS.mountpoint");
                streams.push(Stream {
                    id: BACKUP_REPARSE_DATA,
                    name: String::new(),
                    data: encode_reparse(&h.link, junction),
                });
                let enc_attr = (attr | ATTR_REPARSE_POINT).to_le_bytes();
                enc[..4].copy_from_slice(&enc_attr);
                encode_streams(&streams, &mut enc);
                fs::write(&dest, enc)?;
                times.push((dest, h.mtime));
                last_file = None;
            }
            Kind::Hardlink => {
                let target = names::components_nonempty(&h.link, Rules::Windows)
                    .ok()
                    .filter(|t| t.len() > 1 && matches!(t[0], "Files" | "Hives" | "UtilityVM"))
                    .ok_or_else(|| {
                        bad(
                            folder,
                            format!(
                                "layer entry `{path}`: hard link to `{}`, which is not an entry of the layer",
                                h.link
                            ),
                        )
                    })?;
                let src = folder.join(target.join(std::path::MAIN_SEPARATOR_STR));
                fs::hard_link(&src, &dest).map_err(|e| {
                    bad(
                        folder,
                        format!("layer entry `{path}`: hard link to `{}`: {e}", h.link),
                    )
                })?;
                last_file = None;
            }
            _ => {
                return Err(bad(
                    folder,
                    format!(
                        "layer entry `{path}`: devices and pipes cannot go into a Windows layer"
                    ),
                ));
            }
        }
    }
    for (p, t) in &times {
        set_mtime(p, *t);
    }
    if !tombstones.is_empty() {
        let mut t = String::from("\u{feff}");
        t.push_str(TOMBSTONE_HEADER);
        t.push('\n');
        for p in &tombstones {
            t.push_str(p);
            t.push('\n');
        }
        fs::write(folder.join(TOMBSTONES), t)?;
    }
    Ok(has_uvm)
}

fn set_mtime(p: &Path, secs: i64) {
    if secs <= 0 {
        return;
    }
    if let Ok(f) = fs::File::options().write(true).open(p) {
        let _ = f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64));
    }
}

fn mtime_of(m: &fs::Metadata) -> i64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Writes one tar entry (with its content, for files).
type Emit<'a> = dyn FnMut(&Header, Option<&[u8]>, &mut dyn Write) -> io::Result<()> + 'a;

/// Writes the layer an export `folder` holds as a Windows layer tar into `out`: `Hives/`
/// and `Files/` entries with `MSWINDOWS.fileattr`, `MSWINDOWS.rawsd` (when the security
/// stream is there) and times, alternate data streams as `file:stream` entries right after
/// their file, reparse points as symlinks (`MSWINDOWS.mountpoint` for junctions), and one
/// whiteout per tombstone. Errors name the file of the folder.
pub fn folder_to_tar(folder: &Path, out: &mut impl Write) -> io::Result<()> {
    let style = crate::layer::tar::HeaderStyle::WINDOWS;
    let mut emit = |h: &Header, data: Option<&[u8]>, out: &mut dyn Write| -> io::Result<()> {
        let mut r = data.unwrap_or(&[]);
        let content: Option<&mut dyn Read> = if data.is_some() { Some(&mut r) } else { None };
        write_entry_styled(&mut &mut *out, h, style, content).map(|_| ())
    };
    for top in ["Hives", "Files"] {
        let mut h = Header::new(top, Kind::Dir);
        h.mode = 0o40755;
        h.pax
            .insert(windows::PAX_FILEATTR.into(), ATTR_DIRECTORY.to_string());
        emit(&h, None, out)?;
    }
    let hives = folder.join("Hives");
    if hives.is_dir() {
        let mut names: Vec<_> = fs::read_dir(&hives)?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for n in names {
            let p = hives.join(&n);
            let streams = decode_streams(&fs::read(&p)?, &p)?;
            let data: Vec<u8> = streams
                .into_iter()
                .filter(|s| s.id == BACKUP_DATA)
                .flat_map(|s| s.data)
                .collect();
            let mut h = Header::new(&format!("Hives/{}", n.to_string_lossy()), Kind::File);
            h.size = data.len() as u64;
            h.mode = 0o100644;
            h.mtime = mtime_of(&fs::metadata(&p)?);
            h.pax.insert(windows::PAX_FILEATTR.into(), "32".into());
            h.pax.insert(
                windows::PAX_CREATIONTIME.into(),
                windows::format_creation_time(h.mtime, 0),
            );
            emit(&h, Some(&data), out)?;
        }
    }
    fn walk(dir: &Path, rel: &str, out: &mut dyn Write, emit: &mut Emit<'_>) -> io::Result<()> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("`{}`: {e}", dir.display())))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(DIR_SUFFIX))
            .collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let tar_path = format!("{rel}/{n}");
            let meta = fs::symlink_metadata(&p)?;
            if meta.is_dir() {
                let side = PathBuf::from(format!("{}{DIR_SUFFIX}", p.display()));
                let (attr, streams, mtime) = if side.is_file() {
                    let b = fs::read(&side)?;
                    if b.len() < 4 {
                        return Err(bad(&side, "shorter than its 4 attribute bytes"));
                    }
                    let attr = u32::from_le_bytes(b[..4].try_into().unwrap());
                    (
                        attr,
                        decode_streams(&b[4..], &side)?,
                        mtime_of(&fs::metadata(&side)?),
                    )
                } else {
                    (ATTR_DIRECTORY, Vec::new(), mtime_of(&meta))
                };
                let mut h = Header::new(&tar_path, Kind::Dir);
                h.mode = 0o40755;
                h.mtime = mtime;
                decorate(&mut h, attr, &streams);
                emit(&h, None, out)?;
                walk(&p, &tar_path, out, emit)?;
                continue;
            }
            let b = fs::read(&p)?;
            if b.len() < 4 {
                return Err(bad(&p, "shorter than its 4 attribute bytes"));
            }
            let attr = u32::from_le_bytes(b[..4].try_into().unwrap());
            let streams = decode_streams(&b[4..], &p)?;
            if streams.iter().any(|s| s.id == BACKUP_SPARSE_BLOCK) {
                return Err(bad(&p, "sparse streams are not supported"));
            }
            let mut h;
            let mut data = Vec::new();
            if let Some(rp) = streams.iter().find(|s| s.id == BACKUP_REPARSE_DATA) {
                let (target, junction) = decode_reparse(&rp.data, &p)?;
                h = Header::new(&tar_path, Kind::Symlink);
                h.mode = 0o120777;
                h.link = target;
                if junction {
                    h.pax.insert("MSWINDOWS.mountpoint".into(), "1".into());
                }
            } else {
                h = Header::new(&tar_path, Kind::File);
                h.mode = 0o100644;
                for s in streams.iter().filter(|s| s.id == BACKUP_DATA) {
                    data.extend_from_slice(&s.data);
                }
                h.size = data.len() as u64;
            }
            h.mtime = mtime_of(&meta);
            decorate(&mut h, attr, &streams);
            let is_file = h.kind == Kind::File;
            emit(&h, is_file.then_some(&data[..]), out)?;
            for s in streams.iter().filter(|s| s.id == BACKUP_ALTERNATE_DATA) {
                let name = s.name.trim_start_matches(':').trim_end_matches(":$DATA");
                let mut a = Header::new(&format!("{tar_path}:{name}"), Kind::File);
                a.mode = 0o100644;
                a.size = s.data.len() as u64;
                a.mtime = h.mtime;
                emit(&a, Some(&s.data), out)?;
            }
        }
        Ok(())
    }
    fn decorate(h: &mut Header, attr: u32, streams: &[Stream]) {
        h.pax.insert(windows::PAX_FILEATTR.into(), attr.to_string());
        let t = windows::format_creation_time(h.mtime, 0);
        h.pax.insert(windows::PAX_CREATIONTIME.into(), t);
        if let Some(sd) = streams.iter().find(|s| s.id == BACKUP_SECURITY_DATA) {
            h.pax.insert(windows::PAX_RAWSD.into(), base64(&sd.data));
        }
    }
    let files = folder.join("Files");
    if files.is_dir() {
        walk(&files, "Files", out, &mut emit)?;
    }
    let t = folder.join(TOMBSTONES);
    if t.is_file() {
        let text = fs::read_to_string(&t).map_err(|e| bad(&t, e))?;
        let mut lines = text.trim_start_matches('\u{feff}').lines();
        if lines.next().map(str::trim) != Some(TOMBSTONE_HEADER) {
            return Err(bad(&t, format!("does not start with `{TOMBSTONE_HEADER}`")));
        }
        for l in lines.map(str::trim).filter(|l| !l.is_empty()) {
            let rel = l.trim_start_matches('\\').replace('\\', "/");
            if rel
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(bad(
                    &t,
                    format!("tombstone `{l}` is not a path inside the layer"),
                ));
            }
            let (dir, name) = match rel.rsplit_once('/') {
                Some((d, n)) => (format!("Files/{d}/"), n.to_string()),
                None => ("Files/".to_string(), rel.clone()),
            };
            let mut h = Header::new(&format!("{dir}.wh.{name}"), Kind::File);
            h.mode = 0;
            emit(&h, Some(&[]), out)?;
        }
    }
    out.write_all(&crate::layer::tar::END)?;
    Ok(())
}

/// Reads every entry of a tar (for tests and checks): header and content.
pub fn entries(tar: &[u8]) -> io::Result<Vec<(Header, Vec<u8>)>> {
    let mut r = TarReader::new(tar);
    let mut out = Vec::new();
    while let Some(e) = r.next_entry().map_err(io::Error::other)? {
        let mut d = Vec::new();
        r.content().read_to_end(&mut d)?;
        out.push((e.header, d));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_reparse_points_round_trip() {
        let s = vec![
            Stream {
                id: BACKUP_SECURITY_DATA,
                name: String::new(),
                data: vec![1, 2, 3],
            },
            Stream {
                id: BACKUP_ALTERNATE_DATA,
                name: ":Zone.Identifier:$DATA".into(),
                data: b"[ZoneTransfer]".to_vec(),
            },
            Stream {
                id: BACKUP_DATA,
                name: String::new(),
                data: vec![],
            },
        ];
        let mut enc = Vec::new();
        encode_streams(&s, &mut enc);
        assert_eq!(decode_streams(&enc, Path::new("f")).unwrap(), s);
        // A header that claims more than the file has.
        let mut cut = enc.clone();
        cut.truncate(30);
        let e = decode_streams(&cut, Path::new("Files/x")).unwrap_err();
        assert!(e.to_string().contains("`Files/x`"), "{e}");
        for (t, j) in [
            (r"C:\target", false),
            (r"..\rel\t", false),
            (r"C:\junction", true),
        ] {
            assert_eq!(
                decode_reparse(&encode_reparse(t, j), Path::new("l")).unwrap(),
                (t.to_string(), j)
            );
        }
        let mut other = encode_reparse("x", false);
        other[0..4].copy_from_slice(&0x8000_0017u32.to_le_bytes());
        assert!(
            decode_reparse(&other, Path::new("l"))
                .unwrap_err()
                .to_string()
                .contains("0x80000017")
        );
    }
}
