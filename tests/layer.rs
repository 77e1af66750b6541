//! Layers with real tar and gzip streams: Windows layer golden bytes and header fields, round
//! trips through pack → blob → extract in both formats and all compressions, determinism,
//! hostile archives that must be refused without leaving anything behind, and the checker.
//! Unix only: the trees use Unix permissions, symlinks and inodes.
#![cfg(unix)]

mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use wcbuild::layer::tar::{END, Header, Kind, TarReader, write_entry};
use wcbuild::layer::windows::{self, PAX_CREATIONTIME, PAX_FILEATTR, PAX_RAWSD};
use wcbuild::layer::{
    Compression, ExtractOptions, Format, LayerOptions, LayerWriter, ReadLimits,
    check_windows_layer, extract, pack_dir,
};

fn tempdir(name: &str) -> PathBuf {
    common::tempdir("layer", name)
}

fn opts(format: Format, compression: Compression) -> LayerOptions {
    LayerOptions {
        format,
        compression,
        source_date_epoch: None,
        threads: 2,
        windows_owner: None,
        windows_base: false,
    }
}

/// The small tree of the golden test: a file, a directory, a hard link, a directory symlink,
/// and a whiteout.
fn golden_layer(format: Format) -> Vec<u8> {
    let mut w = LayerWriter::new(Vec::new(), opts(format, Compression::None)).unwrap();
    let mut d = Header::new("app", Kind::Dir);
    d.mtime = 1_700_000_000;
    w.append(d, None, false).unwrap();
    let mut f = Header::new("app/app.exe", Kind::File);
    f.size = 5;
    f.mtime = 1_700_000_001;
    w.append(f, Some(&mut &b"MZ\x90\x00\x03"[..]), false)
        .unwrap();
    let mut l = Header::new("app/alias.exe", Kind::Hardlink);
    l.link = "app/app.exe".into();
    w.append(l, None, false).unwrap();
    let mut s = Header::new("data", Kind::Symlink);
    s.link = "app".into();
    s.mtime = 1_700_000_002;
    w.append(s, None, true).unwrap();
    w.whiteout("app/old.dll").unwrap();
    w.finish().unwrap().1
}

/// Each entry's raw name and PAX records, parsed from the blocks between the offsets the
/// reader reports.
fn raw_entries(tar: &[u8]) -> Vec<windows::RawRecords> {
    let mut r = TarReader::new(tar);
    let mut out = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        let end = r.offset() as usize;
        out.push(windows::RawRecords::parse(&tar[e.offset as usize..end]).unwrap());
    }
    out
}

fn entries(tar: &[u8]) -> Vec<wcbuild::layer::tar::Entry> {
    let mut r = TarReader::new(tar);
    let mut out = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        out.push(e);
    }
    out
}

#[test]
fn windows_golden_layer() {
    let tar = golden_layer(Format::Windows);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/layer/windows-small.tar");
    if std::env::var("WCBUILD_BLESS").as_deref() == Ok("1") {
        fs::create_dir_all(golden.parent().unwrap()).unwrap();
        fs::write(&golden, &tar).unwrap();
    }
    assert!(
        tar == fs::read(&golden).unwrap(),
        "Windows layer bytes changed; check, then bless"
    );
    // The fields that matter, one by one, so a wrong golden cannot pass unnoticed.
    let es = entries(&tar);
    let names: Vec<&str> = es.iter().map(|e| e.header.path.as_str()).collect();
    assert_eq!(
        names,
        [
            "Hives",
            "Files",
            "Files/app",
            "Files/app/app.exe",
            "Files/app/alias.exe",
            "Files/data",
            "Files/app/.wh.old.dll"
        ]
    );
    for e in &es[..6] {
        assert!(e.had_pax, "{} must be a PAX entry", e.header.path);
        // A hard link has no descriptor of its own, as Microsoft's exporter writes it.
        assert_eq!(
            e.header.pax.contains_key(PAX_RAWSD),
            e.header.kind != Kind::Hardlink,
            "{}",
            e.header.path
        );
        assert!(e.header.pax.contains_key(PAX_CREATIONTIME));
    }
    // Directory names carry no trailing `/`, and every decorated entry has PAX atime and
    // ctime equal to its mtime (the reader above consumes those, so read the raw blocks).
    let raw = raw_entries(&tar);
    assert_eq!(raw.len(), es.len());
    for (r, e) in raw.iter().zip(&es) {
        assert_eq!(
            r.name, e.header.path,
            "the raw name is the path, no `/` added"
        );
        if e.had_pax {
            let t = e.header.mtime.to_string();
            assert_eq!(r.pax.get("atime"), Some(&t), "{}", e.header.path);
            assert_eq!(r.pax.get("ctime"), Some(&t), "{}", e.header.path);
        } else {
            assert!(r.pax.is_empty());
        }
    }
    assert_eq!(
        (es[4].header.mode, es[4].header.size),
        (0o644, 0),
        "hard links as the exporter writes them"
    );
    let attr = |i: usize| es[i].header.pax[PAX_FILEATTR].as_str();
    assert_eq!((attr(0), attr(1), attr(2)), ("16", "16", "16"));
    assert_eq!(attr(3), "32");
    assert_eq!(
        attr(5),
        "1040",
        "directory symlink: REPARSE_POINT | DIRECTORY"
    );
    assert_eq!(es[2].header.pax[PAX_RAWSD], windows::DEFAULT_DIR_SD);
    assert_eq!(es[3].header.pax[PAX_RAWSD], windows::DEFAULT_FILE_SD);
    assert_eq!(es[3].header.pax[PAX_CREATIONTIME], "1700000001");
    assert_eq!(
        (es[4].header.kind, es[4].header.link.as_str()),
        (Kind::Hardlink, "Files/app/app.exe")
    );
    assert_eq!(
        (es[5].header.kind, es[5].header.link.as_str()),
        (Kind::Symlink, "app")
    );
    let wh = &es[6];
    assert!(!wh.had_pax && wh.header.size == 0 && wh.header.kind == Kind::File);
    // And the checker accepts it.
    let report = check_windows_layer(std::io::Cursor::new(tar), ReadLimits::default()).unwrap();
    assert!(report.violations.is_empty(), "{report}");
    assert!(!report.base_layer);
}

#[test]
fn windows_owner_sid_goes_into_every_descriptor() {
    let mut o = opts(Format::Windows, Compression::None);
    o.windows_owner = Some(windows::CONTAINER_USER_SID.into());
    let mut w = LayerWriter::new(Vec::new(), o).unwrap();
    let mut f = Header::new("a/b.txt", Kind::File);
    f.size = 1;
    w.append(f, Some(&mut &b"x"[..]), false).unwrap();
    let tar = w.finish().unwrap().1;
    for e in entries(&tar) {
        assert_eq!(
            windows::descriptor_owner(&e.header.pax[PAX_RAWSD]).as_deref(),
            Some(windows::CONTAINER_USER_SID)
        );
    }
}

fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/conf.d")).unwrap();
    fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::write(root.join("etc/conf.d/a.conf"), vec![b'a'; 300_000]).unwrap();
    let big: Vec<u8> = (0..2_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(root.join("big.bin"), big).unwrap();
    fs::hard_link(root.join("etc/hosts"), root.join("hosts-link")).unwrap();
    std::os::unix::fs::symlink("etc/conf.d", root.join("conf")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root.join("big.bin"), fs::Permissions::from_mode(0o755)).unwrap();
}

fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn go(dir: &Path, rel: &str, out: &mut Vec<String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let r = format!("{rel}/{}", n.to_string_lossy());
            let m = fs::symlink_metadata(&p).unwrap();
            use std::os::unix::fs::PermissionsExt;
            if m.file_type().is_symlink() {
                out.push(format!("{r} -> {}", fs::read_link(&p).unwrap().display()));
            } else if m.is_dir() {
                out.push(format!("{r}/"));
                go(&p, &r, out);
            } else {
                let data = fs::read(&p).unwrap();
                out.push(format!(
                    "{r} {} {:o} {}",
                    data.len(),
                    m.permissions().mode() & 0o777,
                    wcbuild::store::sha256_digest(&data)
                ));
            }
        }
    }
    go(root, "", &mut out);
    out
}

#[test]
fn round_trips_in_both_formats_and_all_compressions() {
    let src = tempdir("src");
    make_tree(&src);
    let expected = listing(&src);
    for format in [Format::Linux, Format::Windows] {
        for compression in [
            Compression::None,
            Compression::Gzip(6),
            Compression::Zstd(3),
        ] {
            let mut w = LayerWriter::new(Vec::new(), opts(format, compression)).unwrap();
            pack_dir(&src, &mut w, false).unwrap();
            let (digests, blob) = w.finish().unwrap();
            assert_eq!(digests.size, blob.len() as u64);
            assert_eq!(digests.digest, wcbuild::store::sha256_digest(&blob));
            if let Compression::Gzip(_) = compression {
                // One gzip member that a single-member reader reads whole, and whose tar
                // hashes to the diff_id.
                let mut tar = Vec::new();
                flate2::read::GzDecoder::new(&blob[..])
                    .read_to_end(&mut tar)
                    .unwrap();
                assert_eq!(wcbuild::store::sha256_digest(&tar), digests.diff_id);
                let mut gz = std::process::Command::new("gzip")
                    .arg("-t")
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                gz.stdin.take().unwrap().write_all(&blob).unwrap();
                assert!(gz.wait().unwrap().success());
            }
            let dest = tempdir("dest").join("root");
            let summary = extract(
                std::io::Cursor::new(blob),
                &dest,
                &ExtractOptions::default(),
            )
            .unwrap();
            assert_eq!(summary.windows, format == Format::Windows);
            let mut got = listing(&dest);
            if format == Format::Windows {
                // Windows keeps the symlink target in Windows form.
                let want = "/conf -> etc\\conf.d".to_string();
                assert!(got.contains(&want), "{got:?}");
                got.retain(|l| l != &want);
                let exp: Vec<String> = expected
                    .iter()
                    .filter(|l| !l.starts_with("/conf ->"))
                    .cloned()
                    .collect();
                assert_eq!(got, exp);
            } else {
                assert_eq!(got, expected, "{format:?} {compression:?}");
            }
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                fs::metadata(dest.join("etc/hosts")).unwrap().ino(),
                fs::metadata(dest.join("hosts-link")).unwrap().ino(),
                "hard links share an inode"
            );
        }
    }
}

#[test]
fn same_files_give_the_same_digests() {
    let a = tempdir("det-a");
    let b = tempdir("det-b");
    make_tree(&a);
    make_tree(&b);
    // Different mtimes, clamped by SOURCE_DATE_EPOCH.
    let f = fs::File::open(b.join("etc/hosts")).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
        .unwrap();
    let digest = |root: &Path| {
        let mut o = opts(Format::Windows, Compression::Gzip(6));
        o.source_date_epoch = Some(1_000_000);
        let mut w = LayerWriter::new(Vec::new(), o).unwrap();
        pack_dir(root, &mut w, false).unwrap();
        w.finish().unwrap().0
    };
    let (x, y) = (digest(&a), digest(&b));
    assert_eq!(x, y);
}

/// Builds a raw tar from headers (content given per file), for hostile inputs.
fn raw_tar(entries: &[(Header, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (h, data) in entries {
        let mut h = h.clone();
        if h.kind == Kind::File {
            h.size = data.len() as u64;
        }
        write_entry(&mut out, &h, false, Some(&mut &data[..])).unwrap();
    }
    out.extend_from_slice(&END);
    out
}

fn file(path: &str) -> Header {
    Header::new(path, Kind::File)
}

fn link(path: &str, kind: Kind, target: &str) -> Header {
    let mut h = Header::new(path, kind);
    h.link = target.into();
    h
}

#[test]
fn hostile_archives_are_refused_and_leave_nothing() {
    let big_name = format!("{}/x", "d".repeat(1_000_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot", raw_tar(&[(file("../escape"), b"x")])),
        ("absolute", raw_tar(&[(file("/etc/escape"), b"x")])),
        ("nested-dotdot", raw_tar(&[(file("a/../../escape"), b"x")])),
        (
            "symlink-then-write",
            raw_tar(&[
                (link("evil", Kind::Symlink, "/"), b""),
                (file("evil/escape"), b"x"),
            ]),
        ),
        (
            "symlink-dotdot-chain",
            raw_tar(&[
                (link("up", Kind::Symlink, ".."), b""),
                (file("up/escape"), b"x"),
            ]),
        ),
        (
            "hardlink-outside",
            raw_tar(&[(link("h", Kind::Hardlink, "../outside"), b"")]),
        ),
        (
            "hardlink-missing",
            raw_tar(&[(link("h", Kind::Hardlink, "nothere"), b"")]),
        ),
        ("huge-name", raw_tar(&[(file(&big_name), b"x")])),
    ];
    for (name, tar) in cases {
        let parent = tempdir(&format!("hostile-{name}"));
        let target = parent.join("root");
        fs::create_dir(&target).unwrap();
        let before: Vec<_> = fs::read_dir(&parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let err = extract(
            std::io::Cursor::new(tar),
            &target,
            &ExtractOptions::default(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("nothing was extracted"), "{name}: {msg}");
        let after: Vec<_> = fs::read_dir(&parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(before, after, "{name}: the staging directory must be gone");
        assert_eq!(
            fs::read_dir(&target).unwrap().count(),
            0,
            "{name}: the target must stay empty"
        );
        assert!(
            !parent.join("escape").exists()
                && !Path::new("/escape").exists()
                && !Path::new("/etc/escape").exists()
        );
    }
}

#[test]
fn truncated_corrupt_and_bomb_streams_are_refused() {
    let src = tempdir("trunc-src");
    make_tree(&src);
    let mut w = LayerWriter::new(Vec::new(), opts(Format::Linux, Compression::Gzip(6))).unwrap();
    pack_dir(&src, &mut w, false).unwrap();
    let blob = w.finish().unwrap().1;
    for cut in [100, blob.len() / 2, blob.len() - 10] {
        let target = tempdir("trunc").join("root");
        assert!(
            extract(
                std::io::Cursor::new(blob[..cut].to_vec()),
                &target,
                &ExtractOptions::default()
            )
            .is_err(),
            "cut at {cut}"
        );
        assert!(!target.exists());
    }
    let mut bad = raw_tar(&[(file("a"), b"hello")]);
    bad[0] ^= 1;
    let target = tempdir("badsum").join("root");
    let err = extract(
        std::io::Cursor::new(bad),
        &target,
        &ExtractOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    // 16 MiB of zeros compress ~1000:1; a ratio limit of 100 stops it.
    let zeros = vec![0u8; 16 << 20];
    let tar = raw_tar(&[(file("zeros"), &zeros)]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar).unwrap();
    let bomb = gz.finish().unwrap();
    let target = tempdir("bomb").join("root");
    let opts = ExtractOptions {
        limits: ReadLimits {
            max_ratio: 100,
            max_bytes: 1 << 40,
        },
        preserve_owner: false,
    };
    let err = extract(std::io::Cursor::new(bomb), &target, &opts).unwrap_err();
    assert!(err.to_string().contains("decompression bomb"), "{err}");
    assert!(!target.exists());
}

#[test]
fn checker_names_what_is_wrong() {
    // A Linux layer is not a Windows layer.
    let tar = raw_tar(&[(file("etc/passwd"), b"root")]);
    let r = check_windows_layer(std::io::Cursor::new(tar), ReadLimits::default()).unwrap();
    let text = r.to_string();
    assert!(text.contains("must be under `Files/`"), "{text}");
    assert!(text.contains("not a PAX entry"), "{text}");
    // Parent missing, opaque whiteout, hard link outside Files.
    let mut d = Header::new("Files", Kind::Dir);
    windows::decorate(&mut d, None, false);
    let mut hv = Header::new("Hives", Kind::Dir);
    windows::decorate(&mut hv, None, false);
    let mut f = Header::new("Files/a/b.txt", Kind::File);
    windows::decorate(&mut f, None, false);
    let mut l = link("Files/c", Kind::Hardlink, "etc/x");
    windows::decorate(&mut l, None, false);
    let mut out = Vec::new();
    for h in [&hv, &d, &f, &l] {
        let data: &[u8] = b"";
        write_entry(&mut out, h, true, Some(&mut &data[..])).unwrap();
    }
    write_entry(&mut out, &file("Files/.wh..wh..opq"), false, None).unwrap();
    out.extend_from_slice(&END);
    let r = check_windows_layer(std::io::Cursor::new(out), ReadLimits::default()).unwrap();
    let text = r.to_string();
    assert!(
        text.contains("`Files/a/b.txt`") && text.contains("parent directory `Files/a`"),
        "{text}"
    );
    assert!(text.contains("not under `Files/`"), "{text}");
    assert!(text.contains("opaque whiteouts"), "{text}");
}

fn wcbuild(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wcbuild"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn layer_commands() {
    let dir = tempdir("cli");
    let good = dir.join("good.tar");
    fs::write(&good, golden_layer(Format::Windows)).unwrap();
    let (code, out, err) = wcbuild(&["layer", "check", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 violations"), "{out}");
    let linux = dir.join("linux.tar");
    fs::write(&linux, golden_layer(Format::Linux)).unwrap();
    let (code, out, _) = wcbuild(&["layer", "check", linux.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("must be under `Files/`"), "{out}");
    let target = dir.join("tree");
    let (code, _, err) = wcbuild(&[
        "layer",
        "extract",
        good.to_str().unwrap(),
        target.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        fs::read(target.join("app/app.exe")).unwrap(),
        b"MZ\x90\x00\x03"
    );
    let evil = dir.join("evil.tar");
    fs::write(
        &evil,
        raw_tar(&[
            (link("evil", Kind::Symlink, "/tmp"), b""),
            (file("evil/owned"), b"x"),
        ]),
    )
    .unwrap();
    let (code, _, err) = wcbuild(&[
        "layer",
        "extract",
        evil.to_str().unwrap(),
        dir.join("t2").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("refused entry `evil/owned`"), "{err}");
    assert!(!Path::new("/tmp/owned").exists());
}

#[test]
fn linux_layers_carry_xattrs() {
    let src = tempdir("xattr-src");
    fs::write(src.join("f"), "data").unwrap();
    wcbuild::layer::xattr::set(&src.join("f"), "user.wcbuild.test", b"\x00binary\xff").unwrap();
    let mut w = LayerWriter::new(Vec::new(), opts(Format::Linux, Compression::Gzip(6))).unwrap();
    pack_dir(&src, &mut w, false).unwrap();
    let blob = w.finish().unwrap().1;
    let dest = tempdir("xattr-dest").join("root");
    let s = extract(
        std::io::Cursor::new(blob),
        &dest,
        &ExtractOptions::default(),
    )
    .unwrap();
    assert_eq!(s.xattrs_skipped, 0);
    let got = wcbuild::layer::xattr::list(&dest.join("f")).unwrap();
    assert_eq!(
        got.get("user.wcbuild.test").map(Vec::as_slice),
        Some(&b"\x00binary\xff"[..])
    );
}

#[test]
fn a_hard_link_into_a_parent_layer_is_a_warning_not_a_violation() {
    let mut w = LayerWriter::new(Vec::new(), opts(Format::Windows, Compression::None)).unwrap();
    let mut l = Header::new("app/copy.dll", Kind::Hardlink);
    l.link = "Windows/System32/base.dll".into();
    w.append(l, None, false).unwrap();
    let tar = w.finish().unwrap().1;
    let r = check_windows_layer(std::io::Cursor::new(tar), ReadLimits::default()).unwrap();
    assert!(r.violations.is_empty(), "{r}");
    assert_eq!(r.warnings.len(), 1);
    assert!(
        r.to_string().contains("warning: `Files/app/copy.dll`"),
        "{r}"
    );
}

/// Mutated layers (plain and gzip) never make the reader, the checker or extraction panic,
/// and extraction never leaves a partial tree.
#[test]
fn fuzzed_layers_never_panic() {
    let mut seeds = vec![golden_layer(Format::Windows), golden_layer(Format::Linux)];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&seeds[0]).unwrap();
    seeds.push(gz.finish().unwrap());
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let parent = tempdir("fuzz");
    for i in 0..600 {
        let mut b = seeds[(next() % seeds.len() as u64) as usize].clone();
        for _ in 0..1 + next() % 6 {
            let at = (next() % b.len() as u64) as usize;
            match next() % 3 {
                0 => b[at] = next() as u8,
                1 => b.truncate(at.max(1)),
                _ => b[at] ^= 1 << (next() % 8),
            }
        }
        let _ = check_windows_layer(std::io::Cursor::new(b.clone()), ReadLimits::default());
        let target = parent.join(format!("t{i}"));
        match extract(std::io::Cursor::new(b), &target, &ExtractOptions::default()) {
            Ok(_) => {}
            Err(_) => assert!(
                !target.exists(),
                "a failed extraction left {}",
                target.display()
            ),
        }
    }
    let leftovers: Vec<_> = fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("wcbuild-extract"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staging directories left: {leftovers:?}"
    );
}

#[test]
fn applying_layers_stacks_them_with_whiteouts() {
    let root = tempdir("apply").join("rootfs");
    let lower = raw_tar(&[
        (Header::new("etc", Kind::Dir), b""),
        (file("etc/keep"), b"keep"),
        (file("etc/gone"), b"gone"),
        (Header::new("cache", Kind::Dir), b""),
        (file("cache/a"), b"a"),
    ]);
    let upper = raw_tar(&[
        (file("etc/.wh.gone"), b""),
        (file("cache/.wh..wh..opq"), b""),
        (file("cache/new"), b"new"),
        (file("etc/keep"), b"changed"),
    ]);
    let o = ExtractOptions::default();
    wcbuild::layer::apply(std::io::Cursor::new(lower), &root, &o).unwrap();
    wcbuild::layer::apply(std::io::Cursor::new(upper), &root, &o).unwrap();
    assert_eq!(
        fs::read_to_string(root.join("etc/keep")).unwrap(),
        "changed"
    );
    assert!(!root.join("etc/gone").exists());
    assert!(!root.join("cache/a").exists());
    assert_eq!(fs::read_to_string(root.join("cache/new")).unwrap(), "new");
    // A whiteout cannot reach outside the tree.
    let evil = raw_tar(&[(file("../.wh.outside"), b"")]);
    assert!(wcbuild::layer::apply(std::io::Cursor::new(evil), &root, &o).is_err());
}

#[test]
fn directory_names_end_in_a_slash_in_linux_layers_only() {
    for (format, names) in [
        (Format::Linux, vec!["app/", "app/x"]),
        (
            Format::Windows,
            vec!["Hives", "Files", "Files/app", "Files/app/x"],
        ),
    ] {
        let mut w = LayerWriter::new(Vec::new(), opts(format, Compression::None)).unwrap();
        w.append(Header::new("app", Kind::Dir), None, false)
            .unwrap();
        let mut f = Header::new("app/x", Kind::File);
        f.size = 1;
        w.append(f, Some(&mut &b"x"[..]), false).unwrap();
        let tar = w.finish().unwrap().1;
        let raw: Vec<String> = raw_entries(&tar).into_iter().map(|r| r.name).collect();
        assert_eq!(raw, names, "{format:?}");
    }
}

#[test]
fn hard_links_are_recognised_by_device_and_inode() {
    let dir = tempdir("hardlinks");
    fs::write(dir.join("a"), "data").unwrap();
    fs::hard_link(dir.join("a"), dir.join("b")).unwrap();
    fs::hard_link(dir.join("a"), dir.join("c")).unwrap();
    fs::write(dir.join("single"), "one name").unwrap();
    std::os::unix::fs::symlink("a", dir.join("sym")).unwrap();
    let meta = |n: &str| fs::symlink_metadata(dir.join(n)).unwrap();
    let mut links = wcbuild::layer::pack::HardLinks::new();
    assert!(links.is_empty());
    assert_eq!(links.observe(&meta("b"), "x/b"), None, "first name seen");
    assert_eq!(links.observe(&meta("a"), "x/a").as_deref(), Some("x/b"));
    assert_eq!(links.observe(&meta("c"), "y/c").as_deref(), Some("x/b"));
    assert_eq!(links.observe(&meta("single"), "single"), None);
    assert_eq!(
        links.observe(&meta("single"), "again"),
        None,
        "one link: never a link"
    );
    assert_eq!(
        links.observe(&meta("sym"), "sym"),
        None,
        "symlinks are not files"
    );
    assert_eq!(
        links.observe(&fs::symlink_metadata(&dir).unwrap(), "dir"),
        None
    );
    assert_eq!(links.len(), 1);
}

#[test]
fn windows_layer_errors_name_the_path_as_given() {
    let mut w = LayerWriter::new(Vec::new(), opts(Format::Windows, Compression::None)).unwrap();
    let mut f = Header::new("site/a:b.txt", Kind::File);
    f.size = 1;
    let e = w.append(f, Some(&mut &b"x"[..]), false).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(
        e.to_string(),
        "`site/a:b.txt` cannot go into a Windows layer: NTFS does not allow `:` in a name"
    );
    let typed = e
        .get_ref()
        .and_then(|e| e.downcast_ref::<windows::WindowsNameError>())
        .unwrap();
    assert_eq!(typed.problem, windows::NameProblem::Character(':'));
    // The same names are fine in a Linux layer.
    let mut w = LayerWriter::new(Vec::new(), opts(Format::Linux, Compression::None)).unwrap();
    for p in ["site/a:b.txt", "README", "readme"] {
        let mut f = Header::new(p, Kind::File);
        f.size = 1;
        w.append(f, Some(&mut &b"x"[..]), false).unwrap();
    }
    // A hard link header's size never reaches the tar: the stream stays readable.
    let mut l = Header::new("link", Kind::Hardlink);
    l.link = "README".into();
    l.size = 4096;
    w.append(l, None, false).unwrap();
    let tar = w.finish().unwrap().1;
    let es = entries(&tar);
    assert_eq!(es.len(), 5);
    assert_eq!((es[4].header.kind, es[4].header.size), (Kind::Hardlink, 0));
}
