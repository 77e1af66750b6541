//! Change sets between two directory trees (a `RUN` step's root before and after), and the
//! layer that records them in either format.
//!
//! Rule for "modified": the kind, mode, owner, symlink target or size differ; or the mtime
//! differs and the content differs too (compared byte by byte, so a `touch` alone is not a
//! change). Deleted paths become whiteouts; a deleted directory is one whiteout (its entries go
//! with it); a directory replaced by something else is a deletion plus an addition. Windows
//! layers have no opaque whiteouts, so none are ever written.

use super::tar::{Header, Kind};
use super::writer::{Format, LayerWriter};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

/// What happened to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Only in the upper tree.
    Added,
    /// In both, different.
    Modified,
    /// Only in the lower tree.
    Deleted,
}

/// The changes from `lower` to `upper`, by relative `/`-separated path, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// Path → change.
    pub changes: BTreeMap<String, Change>,
    /// Modified paths whose lower version was a directory replaced by something else: the
    /// layer whites the directory out before writing the new entry.
    pub replaced_dirs: std::collections::BTreeSet<String>,
}

impl ChangeSet {
    /// Paths with a given change.
    pub fn paths(&self, c: Change) -> Vec<&str> {
        self.changes
            .iter()
            .filter(|(_, v)| **v == c)
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Info {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, u32),
    link: Option<std::path::PathBuf>,
}

fn info(path: &Path) -> io::Result<Info> {
    let m = fs::symlink_metadata(path)?;
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else {
        Kind::File
    };
    #[cfg(unix)]
    let (mode, uid, gid, mtime) = {
        use std::os::unix::fs::MetadataExt;
        (
            m.mode(),
            m.uid(),
            m.gid(),
            (m.mtime(), m.mtime_nsec() as u32),
        )
    };
    #[cfg(not(unix))]
    let (mode, uid, gid, mtime) = (0, 0, 0, (0, 0));
    Ok(Info {
        kind,
        mode,
        uid,
        gid,
        size: if kind == Kind::File { m.len() } else { 0 },
        mtime,
        link: if kind == Kind::Symlink {
            fs::read_link(path).ok()
        } else {
            None
        },
    })
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let mut fa = fs::File::open(a)?;
    let mut fb = fs::File::open(b)?;
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

fn names(dir: &Path) -> io::Result<Vec<String>> {
    let mut v: Vec<String> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    v.sort();
    Ok(v)
}

/// Compares two trees.
pub fn diff_trees(lower: &Path, upper: &Path) -> io::Result<ChangeSet> {
    let mut out = ChangeSet::default();
    walk(lower, upper, "", &mut out)?;
    Ok(out)
}

fn walk(lower: &Path, upper: &Path, rel: &str, out: &mut ChangeSet) -> io::Result<()> {
    let lower_names = if lower.is_dir() {
        names(lower)?
    } else {
        Vec::new()
    };
    let upper_names = names(upper)?;
    let join = |n: &str| {
        if rel.is_empty() {
            n.to_string()
        } else {
            format!("{rel}/{n}")
        }
    };
    for n in &lower_names {
        if upper_names.binary_search(n).is_err() {
            out.changes.insert(join(n), Change::Deleted);
        }
    }
    for n in &upper_names {
        let (lp, up) = (lower.join(n), upper.join(n));
        let u = info(&up)?;
        let path = join(n);
        match info(&lp) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                out.changes.insert(path.clone(), Change::Added);
                if u.kind == Kind::Dir {
                    add_all(&up, &path, out)?;
                }
            }
            Err(e) => return Err(e),
            Ok(l) => {
                if l.kind != u.kind {
                    // Replaced: the old one goes, the new one comes.
                    out.changes.insert(path.clone(), Change::Modified);
                    if l.kind == Kind::Dir {
                        out.replaced_dirs.insert(path.clone());
                    }
                    if u.kind == Kind::Dir {
                        add_all(&up, &path, out)?;
                    }
                    continue;
                }
                let meta_changed = l.mode != u.mode
                    || l.uid != u.uid
                    || l.gid != u.gid
                    || l.link != u.link
                    || l.size != u.size;
                let changed = match u.kind {
                    Kind::Dir => meta_changed,
                    Kind::File => meta_changed || (l.mtime != u.mtime && !same_content(&lp, &up)?),
                    _ => meta_changed,
                };
                if changed {
                    out.changes.insert(path.clone(), Change::Modified);
                }
                if u.kind == Kind::Dir {
                    walk(&lp, &up, &path, out)?;
                }
            }
        }
    }
    Ok(())
}

fn add_all(dir: &Path, rel: &str, out: &mut ChangeSet) -> io::Result<()> {
    for n in names(dir)? {
        let p = dir.join(&n);
        let r = format!("{rel}/{n}");
        out.changes.insert(r.clone(), Change::Added);
        if fs::symlink_metadata(&p)?.is_dir() {
            add_all(&p, &r, out)?;
        }
    }
    Ok(())
}

/// Writes the changes as a layer: whiteouts for deletions (and for directories replaced by
/// something else), entries from `upper` for additions and modifications, with the parents
/// of changed entries included so their metadata is recorded.
pub fn write_changes<W: Write>(
    changes: &ChangeSet,
    upper: &Path,
    writer: &mut LayerWriter<W>,
) -> io::Result<()> {
    for (path, change) in &changes.changes {
        if *change == Change::Deleted {
            // A deleted directory's entries are not listed separately: one whiteout suffices.
            writer.whiteout(path)?;
            continue;
        }
        // Windows applies a layer's whiteouts after its entries, so a whiteout would delete
        // the replacement too; there the new entry alone replaces the directory.
        if changes.replaced_dirs.contains(path) && writer.format() != Format::Windows {
            writer.whiteout(path)?;
        }
        let full = upper.join(path);
        let i = info(&full)?;
        let mut h = Header::new(path, i.kind);
        h.mode = i.mode & 0o7777;
        h.uid = i.uid as u64;
        h.gid = i.gid as u64;
        h.mtime = i.mtime.0;
        match i.kind {
            Kind::Dir => writer.append(h, None, false)?,
            Kind::Symlink => {
                h.link = i
                    .link
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let dir_link = fs::metadata(&full).map(|m| m.is_dir()).unwrap_or(false);
                writer.append(h, None, dir_link)?;
            }
            _ => {
                h.size = i.size;
                let mut f = fs::File::open(&full)?;
                writer.append(h, Some(&mut f), false)?;
            }
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::layer::{Compression, Format, LayerOptions};

    fn tree(root: &Path, files: &[(&str, &str)]) {
        for (p, c) in files {
            let path = root.join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            if let Some(d) = p.strip_suffix('/') {
                fs::create_dir_all(root.join(d)).unwrap();
            } else {
                fs::write(path, c).unwrap();
            }
        }
    }

    #[test]
    fn changes_and_their_layers() {
        let base = std::env::temp_dir().join(format!("wcbuild-diff-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let (lower, upper) = (base.join("lower"), base.join("upper"));
        tree(
            &lower,
            &[
                ("keep.txt", "same"),
                ("touched.txt", "same"),
                ("edit.txt", "old"),
                ("gone.txt", "x"),
                ("olddir/a", "1"),
                ("swap/inner", "1"),
            ],
        );
        tree(
            &upper,
            &[
                ("keep.txt", "same"),
                ("touched.txt", "same"),
                ("edit.txt", "new"),
                ("new/deep/file", "n"),
                ("swap", "now a file"),
            ],
        );
        // Same content, different mtime: not a change.
        let f = fs::File::options()
            .write(true)
            .open(upper.join("touched.txt"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000))
            .unwrap();
        let keep = fs::metadata(lower.join("keep.txt"))
            .unwrap()
            .modified()
            .unwrap();
        fs::File::options()
            .write(true)
            .open(upper.join("keep.txt"))
            .unwrap()
            .set_modified(keep)
            .unwrap();
        let cs = diff_trees(&lower, &upper).unwrap();
        assert_eq!(cs.paths(Change::Deleted), ["gone.txt", "olddir"]);
        assert_eq!(
            cs.paths(Change::Added),
            ["new", "new/deep", "new/deep/file"]
        );
        assert_eq!(cs.paths(Change::Modified), ["edit.txt", "swap"]);
        assert!(cs.replaced_dirs.contains("swap"));
        for format in [Format::Linux, Format::Windows] {
            let opts = LayerOptions {
                format,
                compression: Compression::None,
                ..LayerOptions::default()
            };
            let mut w = LayerWriter::new(Vec::new(), opts).unwrap();
            write_changes(&cs, &upper, &mut w).unwrap();
            let tar = w.finish().unwrap().1;
            let mut r = crate::layer::tar::TarReader::new(&tar[..]);
            let mut names = Vec::new();
            while let Some(e) = r.next_entry().unwrap() {
                names.push(e.header.path);
            }
            let prefix = if format == Format::Windows {
                "Files/"
            } else {
                ""
            };
            for want in [
                "edit.txt",
                ".wh.gone.txt",
                ".wh.olddir",
                ".wh.swap",
                "swap",
                "new/deep/file",
            ] {
                let present = names.contains(&format!("{prefix}{want}"));
                if want == ".wh.swap" && format == Format::Windows {
                    assert!(!present, "{format:?}: {want} in {names:?}");
                    continue;
                }
                assert!(present, "{format:?}: {want} not in {names:?}");
            }
            assert!(
                !names
                    .iter()
                    .any(|n| n.ends_with("touched.txt") || n.ends_with("keep.txt")),
                "{names:?}"
            );
            assert!(!names.iter().any(|n| n.contains(".wh..wh..opq")));
        }
        let _ = fs::remove_dir_all(&base);
    }
}
