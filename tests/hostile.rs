//! Hostile layers and image archives, each run through every path that writes or deletes from
//! a layer: `wcbuild layer extract`, `layer::apply` through builds (`COPY --from=IMAGE` and
//! `COPY --from=STAGE` of an image loaded into a test store), `wcbuild load -i`, and
//! `layer::unpack_overlay`. Every case lays canary files above, beside and inside `$TMPDIR`
//! (and beside the store), snapshots the test's base directory (content, mode, mtime, every
//! entry) minus the roots being written, and checks afterwards that nothing outside changed
//! and that the outcome is the one expected: refused with an error naming the entry, or
//! applied harmlessly inside.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod common;

// ---------------------------------------------------------------------------------------------
// Raw tar writing: every field under the test's control, including what no writer would emit.

const BLOCK: usize = 512;

fn octal(field: &mut [u8], v: u64) {
    let w = field.len() - 1;
    let s = format!("{v:0w$o}");
    field[..w].copy_from_slice(&s.as_bytes()[s.len() - w..]);
    field[w] = 0;
}

fn header(name: &[u8], typeflag: u8, size: u64, link: &[u8], mode: u32) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_600_000_000);
    h[156] = typeflag;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], 0);
    octal(&mut h[337..345], 0);
    checksum(&mut h);
    h
}

fn checksum(h: &mut [u8; BLOCK]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len = len.to_string().len() + body;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

#[derive(Default)]
struct Tar {
    out: Vec<u8>,
}

impl Tar {
    fn raw(&mut self, h: [u8; BLOCK], data: &[u8]) -> &mut Self {
        self.out.extend_from_slice(&h);
        self.out.extend_from_slice(data);
        let rem = data.len() % BLOCK;
        if rem != 0 {
            self.out.extend(std::iter::repeat_n(0u8, BLOCK - rem));
        }
        self
    }
    fn ext(&mut self, typeflag: u8, body: &[u8]) -> &mut Self {
        self.raw(
            header(b"././@PaxHeader", typeflag, body.len() as u64, b"", 0o644),
            body,
        )
    }
    fn pax(&mut self, recs: &[(&str, &[u8])]) -> &mut Self {
        let body: Vec<u8> = recs.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        self.ext(b'x', &body)
    }
    fn entry(&mut self, name: &str, typeflag: u8, data: &[u8], link: &str, mode: u32) -> &mut Self {
        if name.len() > 100 || link.len() > 100 {
            let mut recs: Vec<(&str, &[u8])> = Vec::new();
            if name.len() > 100 {
                recs.push(("path", name.as_bytes()));
            }
            if link.len() > 100 {
                recs.push(("linkpath", link.as_bytes()));
            }
            self.pax(&recs);
        }
        self.raw(
            header(
                name.as_bytes(),
                typeflag,
                data.len() as u64,
                link.as_bytes(),
                mode,
            ),
            data,
        )
    }
    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name, b'0', data, "", 0o644)
    }
    fn file_mode(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.entry(name, b'0', data, "", mode)
    }
    fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(&format!("{name}/"), b'5', b"", "", 0o755)
    }
    fn dir_mode(&mut self, name: &str, mode: u32) -> &mut Self {
        self.entry(&format!("{name}/"), b'5', b"", "", mode)
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, b'2', b"", target, 0o777)
    }
    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, b'1', b"", target, 0o644)
    }
    fn device(&mut self, name: &str, typeflag: u8, major: u64, minor: u64) -> &mut Self {
        let mut h = header(name.as_bytes(), typeflag, 0, b"", 0o600);
        octal(&mut h[329..337], major);
        octal(&mut h[337..345], minor);
        checksum(&mut h);
        self.raw(h, b"")
    }
    fn end(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.out);
        v.extend_from_slice(&[0u8; BLOCK * 2]);
        v
    }
    fn cut(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

fn tar() -> Tar {
    Tar::default()
}

/// A Windows-format layer's first entries.
fn win() -> Tar {
    let mut t = tar();
    t.dir("Files").dir("Hives");
    t
}

// ---------------------------------------------------------------------------------------------
// The base directory: canaries around the roots, and a snapshot of everything but the roots.

struct Base {
    dir: PathBuf,
}

impl Base {
    fn new(case: &str) -> Base {
        let dir = common::tempdir("hostile", case);
        let b = Base { dir };
        // Above $TMPDIR, beside it, inside it, beside the store.
        fs::write(b.p("above-canary"), "above").unwrap();
        fs::create_dir_all(b.p("up/tmp/inside/sub")).unwrap();
        fs::create_dir_all(b.p("up/store")).unwrap();
        fs::write(b.p("up/beside-canary"), "beside").unwrap();
        fs::write(b.p("up/tmp/beside-roots-canary"), "beside roots").unwrap();
        fs::write(b.p("up/tmp/inside/canary"), "inside").unwrap();
        fs::write(b.p("up/tmp/inside/sub/canary"), "inside sub").unwrap();
        fs::set_permissions(b.p("up/tmp/inside"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(b.p("up/store-beside-canary"), "store").unwrap();
        fs::create_dir_all(b.p("ctx")).unwrap();
        fs::write(
            b.p("ctx/Dockerfile.image"),
            format!("FROM scratch\nCOPY --from={IMAGE} /benign.txt /got.txt\n"),
        )
        .unwrap();
        fs::write(
            b.p("ctx/Dockerfile.stage"),
            format!("FROM {IMAGE} AS s\nFROM scratch\nCOPY --from=s /benign.txt /got.txt\n"),
        )
        .unwrap();
        b
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
    fn s(&self, rel: &str) -> String {
        self.p(rel).to_str().unwrap().to_string()
    }
    fn tmp(&self) -> PathBuf {
        self.p("up/tmp")
    }
    fn store(&self) -> PathBuf {
        self.p("up/store")
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    len: u64,
    mtime: (i64, i64),
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
}

/// Everything under `base` but the roots written (the extract and overlay targets, and the
/// store, whose private `tmp/` holds the build's root file systems). `$TMPDIR`'s own mtime is
/// left out: roots come and go in it. A build leaves nothing in `$TMPDIR` at all.
fn snapshot(b: &Base) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let tmp = b.tmp();
    let skip = |p: &Path| p == b.store() || p == tmp.join("out") || p == tmp.join("ovl");
    fn walk(p: &Path, tmp: &Path, skip: &dyn Fn(&Path) -> bool, out: &mut BTreeMap<PathBuf, Node>) {
        let m = fs::symlink_metadata(p).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_symlink() {
            "symlink"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else {
            "special"
        };
        out.insert(
            p.to_path_buf(),
            Node {
                kind,
                mode: m.mode(),
                uid: m.uid(),
                len: if ft.is_dir() { 0 } else { m.len() },
                mtime: if p == tmp {
                    (0, 0)
                } else {
                    (m.mtime(), m.mtime_nsec())
                },
                content: ft.is_file().then(|| fs::read(p).unwrap()),
                link: ft.is_symlink().then(|| fs::read_link(p).unwrap()),
            },
        );
        if ft.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                let c = e.unwrap().path();
                if !skip(&c) {
                    walk(&c, tmp, skip, out);
                }
            }
        }
    }
    walk(&b.dir, &tmp, &skip, &mut out);
    out
}

fn diff(before: &BTreeMap<PathBuf, Node>, after: &BTreeMap<PathBuf, Node>) -> Vec<String> {
    let mut d = Vec::new();
    for (p, n) in before {
        match after.get(p) {
            None => d.push(format!("gone: {}", p.display())),
            Some(m) if m != n => d.push(format!("changed: {} {n:?} -> {m:?}", p.display())),
            _ => {}
        }
    }
    for p in after.keys() {
        if !before.contains_key(p) {
            d.push(format!("new: {}", p.display()));
        }
    }
    d
}

/// Places that are not under the base directory and must never gain an `escape*` file.
fn global_escapes() -> Vec<PathBuf> {
    [
        "/escape",
        "/etc/escape",
        "/tmp/escape",
        "/escape-root",
        "/tmp/escape-root",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| fs::symlink_metadata(p).is_ok())
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Images: an OCI layout tar with a benign first layer and the hostile layer.

const IMAGE: &str = "wcbuild.test/hostile:v1";

/// The benign lower layer: files, a directory, and symlinks pointing out of the root, which
/// the hostile layer may try to write through when it is applied on top.
fn benign(b: &Base, windows: bool) -> Vec<u8> {
    let mut t = if windows { win() } else { tar() };
    let pre = if windows { "Files/" } else { "" };
    t.file(&format!("{pre}benign.txt"), b"benign")
        .dir(&format!("{pre}dir"))
        .file(&format!("{pre}dir/keep.txt"), b"keep");
    if !windows {
        t.symlink("dir/out", &b.s("up/tmp/inside"))
            .symlink("lowlink", &b.s("up/tmp/inside"))
            .symlink("uplink", "../../..");
    }
    t.end()
}

fn layer_media(blob: &[u8]) -> &'static str {
    if blob.starts_with(&[0x1f, 0x8b]) {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    }
}

fn oci_archive(layers: &[Vec<u8>], windows: bool) -> Vec<u8> {
    use wcbuild::store::sha256_digest;
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let d = sha256_digest(l);
        descs.push(serde_json::json!({"mediaType": layer_media(l), "digest": d, "size": l.len()}));
        diff_ids.push(d.clone());
        blobs.push((d, l.clone()));
    }
    let mut config = serde_json::json!({
        "architecture": "amd64", "os": if windows { "windows" } else { "linux" },
        "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}
    });
    if windows {
        config["os.version"] = "10.0.20348.2227".into();
    }
    let config = config.to_string().into_bytes();
    let cd = sha256_digest(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs,
    })
    .to_string()
    .into_bytes();
    let md = sha256_digest(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
            "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": IMAGE}}]
    })
    .to_string();
    blobs.push((cd, config));
    blobs.push((md, manifest));
    let mut w = wcbuild::ops::archive::TarWriter::new(Vec::new());
    w.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .unwrap();
    w.bytes("index.json", index.as_bytes()).unwrap();
    w.dir("blobs").unwrap();
    w.dir("blobs/sha256").unwrap();
    for (d, bytes) in &blobs {
        w.bytes(&format!("blobs/sha256/{}", &d[7..]), bytes)
            .unwrap();
    }
    w.finish().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The cases.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `wcbuild layer extract FILE DIR`.
    Extract,
    /// A build's `COPY --from=IMAGE` (the image's layers applied with `layer::apply`).
    CopyImage,
    /// A build's `COPY --from=STAGE` where the stage is `FROM` the image.
    CopyStage,
    /// `layer::unpack_overlay`.
    Overlay,
}

use Via::*;

const ALL: &[Via] = &[Extract, CopyImage, CopyStage, Overlay];
const APPLY: &[Via] = &[CopyImage, CopyStage];
const NONE: &[Via] = &[];
/// Paths where whiteouts act on disk (`extract` only counts them).
const ACTING: &[Via] = &[CopyImage, CopyStage, Overlay];

type Check = fn(&Path, Via, &Base);
/// Makes a case's layer blob, given the base directory (for absolute targets).
type MakeLayer = Box<dyn Fn(&Base) -> Vec<u8>>;

struct Case {
    name: &'static str,
    windows: bool,
    layer: MakeLayer,
    /// Where the case must be refused; everywhere else it must succeed.
    refused: &'static [Via],
    /// What the refusal must name (the entry, or what is wrong).
    needle: &'static str,
    /// Checks on the extracted root (`Extract`, `Overlay`) when it succeeded.
    check: Option<Check>,
}

fn case(
    name: &'static str,
    refused: &'static [Via],
    needle: &'static str,
    layer: impl Fn(&Base) -> Vec<u8> + 'static,
) -> Case {
    Case {
        name,
        windows: false,
        layer: Box::new(layer),
        refused,
        needle,
        check: None,
    }
}

fn windows(mut c: Case) -> Case {
    c.windows = true;
    c
}

fn with(mut c: Case, check: Check) -> Case {
    c.check = Some(check);
    c
}

fn is_char_dev(p: &Path, major_minor: (u64, u64)) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| {
        m.file_type().is_char_device() && {
            let r = m.rdev();
            (libc_major(r), libc_minor(r)) == major_minor
        }
    })
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0fff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0x00ff)
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer of the given size.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| {
        buf.truncate(r as usize);
        buf
    })
}

fn zeros_bomb() -> Vec<u8> {
    // 256 MiB of zeros in one file compress far beyond the default 1000:1.
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    let mut h = header(b"zeros", b'0', 256 << 20, b"", 0o644);
    checksum(&mut h);
    e.write_all(&h).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..256 {
        e.write_all(&chunk).unwrap();
    }
    e.write_all(&[0u8; BLOCK * 2]).unwrap();
    e.finish().unwrap()
}

fn cases() -> Vec<Case> {
    vec![
        // `..`: plain, in the middle, at the end, deep.
        case("dotdot-plain", ALL, "`../escape`", |_| {
            tar().file("../escape", b"x").end()
        }),
        case("dotdot-canary", ALL, "`../../../above-canary`", |_| {
            tar().file("../../../above-canary", b"pwned").end()
        }),
        case("dotdot-middle", ALL, "`a/../../escape`", |_| {
            tar().dir("a").file("a/../../escape", b"x").end()
        }),
        case("dotdot-end", ALL, "`a/..`", |_| {
            tar().dir("a").dir_mode("a/..", 0o777).end()
        }),
        case("dotdot-deep", ALL, "`a/b/c/../../../../escape`", |_| {
            tar().file("a/b/c/../../../../escape", b"x").end()
        }),
        // Absolute names.
        case("absolute", ALL, "`/escape`", |_| {
            tar().file("/escape", b"x").end()
        }),
        case("absolute-into-base", ALL, "beside-canary", |b| {
            tar().file(&b.s("up/beside-canary"), b"pwned").end()
        }),
        // PAX and GNU names overriding a benign ustar name.
        case("pax-path-dotdot", ALL, "`../../beside-canary`", |_| {
            tar()
                .pax(&[("path", b"../../beside-canary")])
                .file("benign-name", b"pwned")
                .end()
        }),
        case("pax-path-absolute", ALL, "`/tmp/escape`", |_| {
            tar()
                .pax(&[("path", b"/tmp/escape")])
                .file("benign-name", b"x")
                .end()
        }),
        case(
            "pax-linkpath-hardlink-out",
            ALL,
            "`../../../above-canary`",
            |_| {
                tar()
                    .pax(&[("linkpath", b"../../../above-canary")])
                    .hardlink("h", "benign-target")
                    .end()
            },
        ),
        case("pax-linkpath-symlink-then-write", ALL, "`s/escape`", |b| {
            let target = b.s("up/tmp/inside");
            tar()
                .pax(&[("linkpath", target.as_bytes())])
                .symlink("s", "benign")
                .file("s/escape", b"x")
                .end()
        }),
        case("gnu-longname-dotdot", ALL, "/../escape", |_| {
            let name = format!("{}/../../escape", "a".repeat(120));
            let mut t = tar();
            t.ext(b'L', format!("{name}\0").as_bytes());
            t.file("benign-name", b"x").end()
        }),
        case("gnu-longlink-dotdot", ALL, "above-canary", |_| {
            let link = format!("{}/../../../../above-canary", "a".repeat(120));
            let mut t = tar();
            t.ext(b'K', link.as_bytes());
            t.hardlink("h", "benign-target").end()
        }),
        // Symlink escapes.
        case("symlink-to-root", ALL, "`evil/escape-root`", |_| {
            tar()
                .symlink("evil", "/")
                .file("evil/escape-root", b"x")
                .end()
        }),
        case("symlink-to-base", ALL, "`evil/above-canary`", |b| {
            tar()
                .symlink("evil", &b.s(""))
                .file("evil/above-canary", b"pwned")
                .end()
        }),
        case("symlink-dotdot", ALL, "`up/escape`", |_| {
            tar().symlink("up", "..").file("up/escape", b"x").end()
        }),
        case("symlink-chain", ALL, "`a/escape`", |_| {
            tar()
                .symlink("a", "b")
                .symlink("b", "c")
                .symlink("c", "../..")
                .file("a/escape", b"x")
                .end()
        }),
        case(
            "symlink-relative-climb",
            ALL,
            "`d/e/l/beside-canary`",
            |_| {
                tar()
                    .dir("d")
                    .dir("d/e")
                    .symlink("d/e/l", "../../../..")
                    .file("d/e/l/beside-canary", b"pwned")
                    .end()
            },
        ),
        case("symlink-dir-in-chain", ALL, "`x/y/escape`", |b| {
            tar()
                .dir("x")
                .symlink("x/y", &b.s("up/tmp/inside/sub"))
                .file("x/y/escape", b"x")
                .end()
        }),
        // A symlink swapped in between two entries.
        case("swap-dir-for-symlink", ALL, "`s/escape`", |b| {
            tar()
                .dir("s")
                .file("s/one", b"1")
                .symlink("s", &b.s("up/tmp/inside"))
                .file("s/escape", b"x")
                .end()
        }),
        with(
            case("swap-symlink-for-dir", NONE, "", |b| {
                tar()
                    .symlink("s", &b.s("up/tmp/inside"))
                    .dir_mode("s", 0o777)
                    .file("s/canary", b"mine")
                    .end()
            }),
            |root, _, _| {
                assert!(fs::symlink_metadata(root.join("s")).unwrap().is_dir());
                assert_eq!(fs::read_to_string(root.join("s/canary")).unwrap(), "mine");
            },
        ),
        with(
            case("file-replaces-symlink", NONE, "", |b| {
                tar()
                    .symlink("f", &b.s("up/tmp/beside-roots-canary"))
                    .file("f", b"pwned")
                    .end()
            }),
            |root, _, _| {
                assert!(fs::symlink_metadata(root.join("f")).unwrap().is_file());
            },
        ),
        // Hard links.
        case("hardlink-outside", ALL, "`h`", |_| {
            tar().hardlink("h", "../../../above-canary").end()
        }),
        case("hardlink-absolute", ALL, "`h`", |b| {
            tar().hardlink("h", &b.s("above-canary")).end()
        }),
        case(
            "hardlink-to-symlink-then-write-under",
            ALL,
            "`h/escape`",
            |b| {
                tar()
                    .symlink("l", &b.s("up/tmp/inside"))
                    .hardlink("h", "l")
                    .file("h/escape", b"x")
                    .end()
            },
        ),
        with(
            case("hardlink-to-symlink-then-overwrite", NONE, "", |b| {
                tar()
                    .symlink("l", &b.s("up/tmp/beside-roots-canary"))
                    .hardlink("h", "l")
                    .file("h", b"pwned")
                    .end()
            }),
            |root, _, b| {
                assert_eq!(fs::read_to_string(root.join("h")).unwrap(), "pwned");
                assert_eq!(
                    fs::read_link(root.join("l")).unwrap(),
                    b.p("up/tmp/beside-roots-canary")
                );
            },
        ),
        case(
            "hardlink-to-later-entry",
            ALL,
            "does not exist earlier",
            |_| tar().hardlink("h", "later").file("later", b"x").end(),
        ),
        with(
            case("hardlink-then-write-through", NONE, "", |_| {
                tar()
                    .file("f", b"orig")
                    .hardlink("h", "f")
                    .file("h", b"new")
                    .end()
            }),
            |root, _, _| {
                assert_eq!(fs::read_to_string(root.join("f")).unwrap(), "orig");
                assert_eq!(fs::read_to_string(root.join("h")).unwrap(), "new");
            },
        ),
        case("hardlink-to-dir", ALL, "is a directory", |_| {
            tar().dir("d").hardlink("h", "d").end()
        }),
        case("hardlink-to-itself", ALL, "`h`", |_| {
            tar().hardlink("h", "h").end()
        }),
        case("hardlink-to-lower-symlink-then-write", ALL, "`h", |_| {
            tar().hardlink("h", "lowlink").file("h/escape", b"x").end()
        }),
        // Writes through symlinks a lower layer left (only `apply` has the lower layer).
        case(
            "write-through-lower-symlink",
            APPLY,
            "`lowlink/escape`",
            |_| tar().file("lowlink/escape", b"x").end(),
        ),
        case(
            "write-through-lower-uplink",
            APPLY,
            "`uplink/above-canary`",
            |_| tar().file("uplink/above-canary", b"pwned").end(),
        ),
        case(
            "write-through-lower-dir-symlink",
            APPLY,
            "`dir/out/canary`",
            |_| tar().file("dir/out/canary", b"pwned").end(),
        ),
        with(
            case("dir-replaces-lower-symlink", NONE, "", |_| {
                tar()
                    .dir_mode("lowlink", 0o700)
                    .file("lowlink/canary", b"mine")
                    .end()
            }),
            |root, _, _| {
                assert_eq!(
                    fs::read_to_string(root.join("lowlink/canary")).unwrap(),
                    "mine"
                );
            },
        ),
        // Whiteouts and opaque markers.
        case("whiteout-dotdot", ALL, "`.wh...`", |_| {
            tar().file(".wh...", b"").end()
        }),
        case("whiteout-dot", ALL, "`.wh..`", |_| {
            tar().file(".wh..", b"").end()
        }),
        case("whiteout-empty", ALL, "`dir/.wh.`", |_| {
            tar().file("dir/.wh.", b"").end()
        }),
        case("whiteout-nested-dotdot", ALL, "`dir/.wh...`", |_| {
            tar().file("dir/.wh...", b"").end()
        }),
        case("whiteout-parent-dotdot", ALL, "`../.wh.inside`", |_| {
            tar().file("../.wh.inside", b"").end()
        }),
        case("whiteout-absolute", ALL, "`/tmp/.wh.escape`", |_| {
            tar().file("/tmp/.wh.escape", b"").end()
        }),
        case(
            "whiteout-through-symlink",
            ACTING,
            "`link/.wh.canary`",
            |b| {
                tar()
                    .symlink("link", &b.s("up/tmp/inside"))
                    .file("link/.wh.canary", b"")
                    .end()
            },
        ),
        case(
            "whiteout-through-lower-symlink",
            APPLY,
            "`lowlink/.wh.canary`",
            |_| tar().file("lowlink/.wh.canary", b"").end(),
        ),
        case(
            "whiteout-through-lower-uplink",
            APPLY,
            "`uplink/.wh.above-canary`",
            |_| tar().file("uplink/.wh.above-canary", b"").end(),
        ),
        case(
            "opaque-through-symlink",
            ACTING,
            "`link/.wh..wh..opq`",
            |b| {
                tar()
                    .symlink("link", &b.s("up/tmp/inside"))
                    .file("link/.wh..wh..opq", b"")
                    .end()
            },
        ),
        case(
            "opaque-through-lower-symlink",
            APPLY,
            "`lowlink/.wh..wh..opq`",
            |_| tar().file("lowlink/.wh..wh..opq", b"").end(),
        ),
        case("opaque-dotdot", ALL, "`../.wh..wh..opq`", |_| {
            tar().file("../.wh..wh..opq", b"").end()
        }),
        with(
            case("whiteout-of-lower-symlink", NONE, "", |_| {
                tar().file(".wh.lowlink", b"").file(".wh.uplink", b"").end()
            }),
            |root, via, _| {
                if via == Overlay {
                    assert!(is_char_dev(&root.join("lowlink"), (0, 0)));
                }
            },
        ),
        with(
            case("whiteout-of-lower-dir-holding-symlink", NONE, "", |_| {
                tar().file(".wh.dir", b"").end()
            }),
            |root, via, _| {
                if via == Overlay {
                    assert!(is_char_dev(&root.join("dir"), (0, 0)));
                } else {
                    assert!(!root.join("dir").exists());
                }
            },
        ),
        with(
            case("opaque-lower-dir-holding-symlink", NONE, "", |_| {
                tar()
                    .dir("dir")
                    .file("dir/.wh..wh..opq", b"")
                    .file("dir/new.txt", b"new")
                    .end()
            }),
            |root, via, _| {
                assert_eq!(fs::read_to_string(root.join("dir/new.txt")).unwrap(), "new");
                if via == Overlay {
                    assert_eq!(
                        xattr(&root.join("dir"), "trusted.overlay.opaque").as_deref(),
                        Some(&b"y"[..])
                    );
                }
            },
        ),
        with(
            case("opaque-at-root", NONE, "", |_| {
                tar()
                    .file(".wh..wh..opq", b"")
                    .file("benign.txt", b"again")
                    .end()
            }),
            |root, via, _| {
                assert_eq!(
                    fs::read_to_string(root.join("benign.txt")).unwrap(),
                    "again"
                );
                if via == Overlay {
                    assert_eq!(
                        xattr(root, "trusted.overlay.opaque").as_deref(),
                        Some(&b"y"[..])
                    );
                }
            },
        ),
        case("aufs-meta-is-ignored", NONE, "", |_| {
            tar()
                .file(".wh..wh.plnk", b"")
                .file(".wh..wh.aufs", b"")
                .end()
        }),
        // Windows layers: Files/, Hives/ and UtilityVM/ traversal, backslashes, drives.
        windows(case(
            "windows-files-dotdot",
            ALL,
            "`Files/../escape`",
            |_| win().file("Files/../escape", b"x").end(),
        )),
        windows(case(
            "windows-hives-dotdot",
            ALL,
            "`Hives/../../escape`",
            |_| win().file("Hives/../../escape", b"x").end(),
        )),
        windows(case(
            "windows-utilityvm-dotdot",
            ALL,
            "`UtilityVM/Files/..`",
            |_| win().dir("UtilityVM/Files/..").end(),
        )),
        windows(case(
            "windows-backslash-files",
            ALL,
            "`Files\\..\\escape`",
            |_| win().file("Files\\..\\escape", b"x").end(),
        )),
        windows(case(
            "windows-backslash-climb",
            ALL,
            "`Files/a\\..\\..\\escape`",
            |_| win().file("Files/a\\..\\..\\escape", b"x").end(),
        )),
        windows(case("windows-drive", ALL, "`Files/C:\\escape`", |_| {
            win().file("Files/C:\\escape", b"x").end()
        })),
        windows(case(
            "windows-drive-in-middle",
            ALL,
            "`Files/a/C:x`",
            |_| win().file("Files/a/C:x", b"x").end(),
        )),
        windows(case("windows-unc", ALL, "`\\\\server\\share\\x`", |_| {
            win().file("\\\\server\\share\\x", b"x").end()
        })),
        windows(case(
            "windows-whiteout-backslash",
            ALL,
            "`Files/.wh.a\\..\\..\\x`",
            |_| win().file("Files/.wh.a\\..\\..\\x", b"").end(),
        )),
        windows(case(
            "windows-hardlink-outside-files",
            ALL,
            "`Files/h`",
            |_| {
                win()
                    .file("Hives/x", b"x")
                    .hardlink("Files/h", "Hives/x")
                    .end()
            },
        )),
        windows(case("windows-device-name", ALL, "`Files/NUL`", |_| {
            win().file("Files/NUL", b"x").end()
        })),
        with(
            case("linux-backslash-is-a-name", NONE, "", |_| {
                tar().file("a\\..\\..\\escape", b"x").end()
            }),
            |root, _, _| {
                assert!(root.join("a\\..\\..\\escape").is_file());
            },
        ),
        // NUL bytes.
        case("pax-path-with-nul", ALL, "contains NUL", |_| {
            tar()
                .pax(&[("path", b"ok\0/../../escape")])
                .file("benign-name", b"x")
                .end()
        }),
        with(
            case("ustar-name-with-nul", NONE, "", |_| {
                let mut h = header(b"ok\0/../../escape", b'0', 1, b"", 0o644);
                checksum(&mut h);
                tar().raw(h, b"x").end()
            }),
            |root, _, _| assert!(root.join("ok").is_file()),
        ),
        // Devices, FIFOs, setuid bits.
        with(
            case("device-nodes", NONE, "", |_| {
                tar()
                    .dir("dev")
                    .device("dev/null2", b'3', 1, 3)
                    .device("dev/loop9", b'4', 7, 9)
                    .end()
            }),
            |root, _, _| {
                assert!(is_char_dev(&root.join("dev/null2"), (1, 3)), "made as root");
                assert!(
                    fs::symlink_metadata(root.join("dev/loop9"))
                        .unwrap()
                        .file_type()
                        .is_block_device()
                );
            },
        ),
        case("device-through-symlink", ALL, "`d/null`", |b| {
            tar()
                .symlink("d", &b.s("up/tmp/inside"))
                .device("d/null", b'3', 1, 3)
                .end()
        }),
        with(
            case("fifo", NONE, "", |_| {
                tar().dir("run").device("run/fifo", b'6', 0, 0).end()
            }),
            |root, _, _| {
                assert!(
                    fs::symlink_metadata(root.join("run/fifo"))
                        .unwrap()
                        .file_type()
                        .is_fifo()
                );
            },
        ),
        case("fifo-through-symlink", ALL, "`d/fifo`", |b| {
            tar()
                .symlink("d", &b.s("up/tmp/inside"))
                .device("d/fifo", b'6', 0, 0)
                .end()
        }),
        with(
            case("setuid-kept-inside", NONE, "", |_| {
                tar()
                    .dir("bin")
                    .file_mode("bin/su", b"#!", 0o4755)
                    .dir_mode("shared", 0o3777)
                    .end()
            }),
            |root, _, _| {
                let m = fs::metadata(root.join("bin/su")).unwrap();
                assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
                let m = fs::metadata(root.join("shared")).unwrap();
                assert_eq!(m.permissions().mode() & 0o7777, 0o3777);
            },
        ),
        case("setuid-through-symlink", ALL, "`l/suid`", |b| {
            tar()
                .symlink("l", &b.s("up/tmp"))
                .file_mode("l/suid", b"#!", 0o4755)
                .end()
        }),
        with(
            case("setuid-dir-over-symlink-to-outside", NONE, "", |b| {
                tar()
                    .symlink("l", &b.s("up/tmp/inside"))
                    .dir_mode("l", 0o4777)
                    .end()
            }),
            |root, _, _| {
                let m = fs::symlink_metadata(root.join("l")).unwrap();
                assert!(m.is_dir());
            },
        ),
        with(
            case("overlay-xattrs-not-restored", NONE, "", |_| {
                tar()
                    .pax(&[
                        ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
                        ("SCHILY.xattr.user.overlay.opaque", b"y"),
                    ])
                    .dir("d")
                    .end()
            }),
            |root, _, _| {
                assert!(xattr(&root.join("d"), "trusted.overlay.redirect").is_none());
                assert!(xattr(&root.join("d"), "user.overlay.opaque").is_none());
            },
        ),
        // Absurd PAX records.
        case("pax-huge-size", ALL, "PAX size", |_| {
            tar()
                .pax(&[("size", b"99999999999999999999999")])
                .file("big", b"")
                .end()
        }),
        case("pax-negative-size", ALL, "PAX size", |_| {
            tar().pax(&[("size", b"-1")]).file("neg", b"").end()
        }),
        case("pax-negative-uid", ALL, "PAX uid", |_| {
            tar().pax(&[("uid", b"-1")]).file("neg", b"").end()
        }),
        case("pax-uid-past-32-bits", ALL, "out of range", |_| {
            tar()
                .pax(&[("uid", b"4294967296")])
                .file("root-by-wrap", b"")
                .end()
        }),
        case("pax-bad-mtime", ALL, "PAX mtime", |_| {
            tar().pax(&[("mtime", b"12abc")]).file("t", b"").end()
        }),
        case("pax-duplicate-path", ALL, "appears twice", |_| {
            tar()
                .pax(&[("path", b"benign"), ("path", b"../escape")])
                .file("benign-name", b"x")
                .end()
        }),
        case("pax-two-headers", ALL, "second `x`", |_| {
            tar()
                .pax(&[("path", b"benign")])
                .pax(&[("path", b"../escape")])
                .file("benign-name", b"x")
                .end()
        }),
        case("pax-global-path", ALL, "global PAX header", |_| {
            let mut t = tar();
            t.ext(b'g', &pax_record("path", b"../escape"));
            t.file("benign-name", b"x").end()
        }),
        case("pax-record-too-large", ALL, "extended header of", |_| {
            let mut h = header(b"././@PaxHeader", b'x', 2 << 20, b"", 0o644);
            checksum(&mut h);
            tar().raw(h, &vec![b'a'; 2 << 20]).end()
        }),
        case("pax-bad-length", ALL, "PAX record", |_| {
            tar().ext(b'x', b"999 path=x\n").file("n", b"").end()
        }),
        case("gnu-two-longnames", ALL, "second `L`", |_| {
            let mut t = tar();
            t.ext(b'L', b"benign\0");
            t.ext(b'L', b"../escape\0");
            t.file("benign-name", b"x").end()
        }),
        case("name-too-long", ALL, "longer than", |_| {
            tar().file(&format!("{}/x", "d/".repeat(2500)), b"x").end()
        }),
        case("root-as-a-file", ALL, "names the root", |_| {
            tar().file(".", b"x").end()
        }),
        // Truncated streams, sizes past the end, bombs.
        case("truncated-content", ALL, "`short`", |_| {
            let mut t = tar();
            let h = header(b"short", b'0', 4096, b"", 0o644);
            t.out.extend_from_slice(&h);
            t.out.extend_from_slice(&[7u8; 100]);
            t.cut()
        }),
        case("truncated-header", ALL, "inside a header", |_| {
            let mut t = tar();
            t.file("ok", b"x");
            let h = header(b"next", b'0', 0, b"", 0o644);
            t.out.extend_from_slice(&h[..300]);
            t.cut()
        }),
        case("size-past-the-end", ALL, "`huge`", |_| {
            let mut t = tar();
            let h = header(b"huge", b'0', 10 << 30, b"", 0o644);
            t.out.extend_from_slice(&h);
            t.out.extend_from_slice(&[1u8; 4096]);
            t.cut()
        }),
        case("symlink-size-hides-a-header", ALL, "`../escape`", |_| {
            // A symlink claiming 512 bytes of content: like Go's reader, the next block is
            // read as a header, so the `../escape` it holds is seen and refused.
            let mut t = tar();
            let h = header(b"l", b'2', 512, b"target", 0o777);
            t.out.extend_from_slice(&h);
            t.file("../escape", b"x").end()
        }),
        case("decompression-bomb", ALL, "decompression bomb", |_| {
            zeros_bomb()
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Running a case through every path.

enum Outcome {
    Ok,
    Err(String),
}

fn run_build(b: &Base, dockerfile: &str, tag: &str) -> Outcome {
    let ctx = b.p("ctx");
    let tmp = b.tmp();
    let (code, _, err) = common::wcbuild_at_env(
        &b.store(),
        &[
            "build",
            "--progress",
            "plain",
            "-f",
            ctx.join(dockerfile).to_str().unwrap(),
            "-t",
            tag,
            ctx.to_str().unwrap(),
        ],
        &[("TMPDIR", tmp.to_str().unwrap())],
    );
    if code == 0 {
        Outcome::Ok
    } else {
        Outcome::Err(err)
    }
}

fn run_via(c: &Case, b: &Base, via: Via, layer: &[u8]) -> Outcome {
    let tmp = b.tmp();
    match via {
        Extract => {
            let file = b.p("layer.tar");
            let out = tmp.join("out");
            let (code, _, err) = common::wcbuild_at_env(
                &b.store(),
                &[
                    "layer",
                    "extract",
                    file.to_str().unwrap(),
                    out.to_str().unwrap(),
                ],
                &[("TMPDIR", tmp.to_str().unwrap())],
            );
            if code == 0 {
                Outcome::Ok
            } else {
                assert!(
                    !out.exists(),
                    "{}: a refused extraction leaves no target",
                    c.name
                );
                Outcome::Err(err)
            }
        }
        Overlay => {
            let out = tmp.join("ovl");
            match wcbuild::layer::unpack_overlay(
                std::io::Cursor::new(layer.to_vec()),
                &out,
                &wcbuild::layer::ExtractOptions::default(),
            ) {
                Ok(_) => Outcome::Ok,
                Err(e) => {
                    assert!(
                        !out.exists(),
                        "{}: a refused unpack leaves no target",
                        c.name
                    );
                    Outcome::Err(e.to_string())
                }
            }
        }
        CopyImage => run_build(b, "Dockerfile.image", "wcbuild.test/out:image"),
        CopyStage => run_build(b, "Dockerfile.stage", "wcbuild.test/out:stage"),
    }
}

fn run_case(c: &Case) -> Vec<String> {
    let mut failures = Vec::new();
    let b = Base::new(c.name);
    let layer = (c.layer)(&b);
    fs::write(b.p("layer.tar"), &layer).unwrap();
    fs::write(
        b.p("image.tar"),
        oci_archive(&[benign(&b, c.windows), layer.clone()], c.windows),
    )
    .unwrap();
    let before = snapshot(&b);
    let escapes_before = global_escapes();
    // `load -i`: loading never unpacks a layer, so every image loads, and nothing outside
    // the store changes.
    let (code, _, err) = common::wcbuild_at_env(
        &b.store(),
        &["load", "-i", &b.s("image.tar")],
        &[("TMPDIR", b.tmp().to_str().unwrap())],
    );
    if code != 0 {
        failures.push(format!("{}: load: {err}", c.name));
    }
    for &via in ALL {
        let outcome = run_via(c, &b, via, &layer);
        let (refused, needle) = if c.windows && via == Overlay {
            (true, "Windows layer")
        } else {
            (c.refused.contains(&via), c.needle)
        };
        match (outcome, refused) {
            (Outcome::Ok, false) => {
                if let Some(check) = c.check {
                    let root = match via {
                        Extract => Some(b.tmp().join("out")),
                        Overlay => Some(b.tmp().join("ovl")),
                        _ => None,
                    };
                    if let Some(root) = root {
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            check(&root, via, &b)
                        }));
                        if r.is_err() {
                            failures.push(format!(
                                "{} via {via:?}: the check of the result failed",
                                c.name
                            ));
                        }
                    }
                }
            }
            (Outcome::Ok, true) => {
                failures.push(format!("{} via {via:?}: applied, must be refused", c.name))
            }
            (Outcome::Err(e), true) => {
                if !e.contains(needle) {
                    failures.push(format!(
                        "{} via {via:?}: refused, but the error does not name `{needle}`: {e}",
                        c.name
                    ));
                }
            }
            (Outcome::Err(e), false) => failures.push(format!(
                "{} via {via:?}: refused, must be applied: {e}",
                c.name
            )),
        }
        // Roots of this path go before the next one writes; the snapshot skips them anyway.
        let _ = fs::remove_dir_all(b.tmp().join("out"));
        let _ = fs::remove_dir_all(b.tmp().join("ovl"));
        let after = snapshot(&b);
        let d = diff(&before, &after);
        if !d.is_empty() {
            failures.push(format!("{} via {via:?}: outside the root: {d:#?}", c.name));
        }
    }
    if global_escapes() != escapes_before {
        failures.push(format!("{}: wrote {:?}", c.name, global_escapes()));
    }
    if failures.is_empty() {
        let _ = fs::remove_dir_all(&b.dir);
    }
    failures
}

fn shard(n: usize, of: usize) {
    let all = cases();
    let failures: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % of == n)
        .flat_map(|(_, c)| run_case(c))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_table_has_at_least_forty_distinct_cases() {
    let all = cases();
    assert!(all.len() >= 40, "{} cases", all.len());
    let mut names: Vec<_> = all.iter().map(|c| c.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), all.len(), "case names are unique");
    let refusals = all.iter().filter(|c| !c.refused.is_empty()).count();
    assert!(refusals >= 40, "at least forty refusals, {refusals}");
    eprintln!(
        "{} layer cases ({refusals} refused somewhere, {} Windows-format), {} archive cases",
        all.len(),
        all.iter().filter(|c| c.windows).count(),
        archive_cases().len()
    );
}

#[test]
fn layer_cases_0() {
    shard(0, 4);
}

#[test]
fn layer_cases_1() {
    shard(1, 4);
}

#[test]
fn layer_cases_2() {
    shard(2, 4);
}

#[test]
fn layer_cases_3() {
    shard(3, 4);
}

// ---------------------------------------------------------------------------------------------
// `wcbuild load -i` of hostile image archives: their own entries climb, are absolute, or
// are symlinks and hard links; their JSON names paths instead of digests.

/// A valid image archive's pieces: (path in the archive, bytes), index.json first.
fn layout_files(b: &Base) -> Vec<(String, Vec<u8>)> {
    let bytes = oci_archive(&[benign(b, false)], false);
    let mut r = wcbuild::layer::tar::TarReader::new(&bytes[..]);
    let mut out = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        if e.header.kind == wcbuild::layer::tar::Kind::File {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut r.content(), &mut data).unwrap();
            out.push((e.header.path.clone(), data));
        }
    }
    out
}

fn manifest_path(files: &[(String, Vec<u8>)]) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&files.iter().find(|(p, _)| p == "index.json").unwrap().1).unwrap();
    let d = index["manifests"][0]["digest"].as_str().unwrap();
    format!("blobs/sha256/{}", &d[7..])
}

fn archive(files: &[(String, Vec<u8>)], extra: impl Fn(&mut Tar)) -> Vec<u8> {
    let mut t = tar();
    extra(&mut t);
    for (p, d) in files {
        t.file(p, d);
    }
    t.end()
}

enum Load {
    /// Loads, and the image is tagged.
    Loaded,
    /// Refused with an error holding this text.
    Refused(&'static str),
}

struct ArchiveCase {
    name: &'static str,
    /// The archive file (or a directory, made under the base) to load.
    make: Box<dyn Fn(&Base) -> PathBuf>,
    expect: Load,
}

fn archive_case(
    name: &'static str,
    expect: Load,
    make: impl Fn(&Base) -> PathBuf + 'static,
) -> ArchiveCase {
    ArchiveCase {
        name,
        make: Box::new(make),
        expect,
    }
}

fn write_archive(b: &Base, bytes: Vec<u8>) -> PathBuf {
    let p = b.p("archive.tar");
    fs::write(&p, bytes).unwrap();
    p
}

fn archive_cases() -> Vec<ArchiveCase> {
    use Load::*;
    vec![
        archive_case("entries-climb", Loaded, |b| {
            let f = layout_files(b);
            write_archive(
                b,
                archive(&f, |t| {
                    t.file("../escape", b"x")
                        .file("../../beside-canary", b"pwned")
                        .file("blobs/../../../above-canary", b"pwned");
                }),
            )
        }),
        archive_case("entries-absolute", Loaded, |b| {
            let f = layout_files(b);
            let abs = b.s("up/beside-canary");
            write_archive(
                b,
                archive(&f, |t| {
                    t.file("/tmp/escape", b"x").file(&abs, b"pwned");
                }),
            )
        }),
        archive_case("blobs-is-a-symlink-entry", Loaded, |b| {
            let f = layout_files(b);
            let out = b.s("up/tmp/inside");
            write_archive(
                b,
                archive(&f, |t| {
                    t.symlink("blobs", &out).dir("blobs/sha256");
                }),
            )
        }),
        archive_case("blob-is-a-symlink", Refused("does not hold"), |b| {
            let f = layout_files(b);
            let m = manifest_path(&f);
            let canary = b.s("above-canary");
            let f: Vec<_> = f.into_iter().filter(|(p, _)| *p != m).collect();
            write_archive(
                b,
                archive(&f, |t| {
                    t.symlink(&m, &canary);
                }),
            )
        }),
        archive_case("blob-is-a-hard-link", Refused("does not hold"), |b| {
            let f = layout_files(b);
            let m = manifest_path(&f);
            let f: Vec<_> = f.into_iter().filter(|(p, _)| *p != m).collect();
            write_archive(
                b,
                archive(&f, |t| {
                    t.hardlink(&m, "../../../above-canary");
                }),
            )
        }),
        archive_case("index-names-a-path", Refused("digest"), |b| {
            let f: Vec<_> = layout_files(b)
                .into_iter()
                .map(|(p, d)| {
                    if p == "index.json" {
                        let s = String::from_utf8(d).unwrap();
                        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
                        let real = v["manifests"][0]["digest"].as_str().unwrap().to_string();
                        let evil = format!("sha256:../../../../above-canary{}", "0".repeat(32));
                        (p, s.replace(&real, &evil).into_bytes())
                    } else {
                        (p, d)
                    }
                })
                .collect();
            write_archive(b, archive(&f, |_| {}))
        }),
        archive_case(
            "docker-manifest-names-paths",
            Refused("does not hold"),
            |b| {
                let f = vec![(
                "manifest.json".to_string(),
                br#"[{"Config":"../../../above-canary","RepoTags":["evil:1"],"Layers":["/etc/passwd"]}]"#
                    .to_vec(),
            )];
                write_archive(b, archive(&f, |_| {}))
            },
        ),
        archive_case("blob-with-the-wrong-bytes", Refused("sha256:"), |b| {
            let f: Vec<_> = layout_files(b)
                .into_iter()
                .map(|(p, d)| {
                    if p.starts_with("blobs/") && d.len() > 2 {
                        let mut d = d;
                        d[0] ^= 1;
                        (p, d)
                    } else {
                        (p, d)
                    }
                })
                .collect();
            write_archive(b, archive(&f, |_| {}))
        }),
        // Entry names never become paths: blobs are stored by their content, so the manifest
        // under a climbing name is still found.
        archive_case("pax-path-climbs", Loaded, |b| {
            let f = layout_files(b);
            let m = manifest_path(&f);
            let data = f.iter().find(|(p, _)| *p == m).unwrap().1.clone();
            let f: Vec<_> = f.into_iter().filter(|(p, _)| *p != m).collect();
            let evil = format!("../../{m}");
            write_archive(
                b,
                archive(&f, |t| {
                    t.pax(&[("path", evil.as_bytes())]).file("benign", &data);
                }),
            )
        }),
        archive_case("truncated", Refused("image archive"), |b| {
            let f = layout_files(b);
            let mut bytes = archive(&f, |_| {});
            bytes.truncate(bytes.len() - 2048 - 100);
            write_archive(b, bytes)
        }),
        archive_case("layout-dir-with-symlinked-blobs", Loaded, |b| {
            // A directory layout whose `blobs/sha256` is a symlink to a directory elsewhere:
            // loading reads through it (the user's own layout) and writes only the store.
            let d = b.p("layout");
            let shared = b.p("shared-blobs");
            fs::create_dir_all(d.join("blobs")).unwrap();
            fs::create_dir_all(&shared).unwrap();
            for (p, data) in layout_files(b) {
                match p.strip_prefix("blobs/sha256/") {
                    Some(hex) => fs::write(shared.join(hex), data).unwrap(),
                    None => fs::write(d.join(p), data).unwrap(),
                }
            }
            std::os::unix::fs::symlink(&shared, d.join("blobs/sha256")).unwrap();
            d
        }),
        archive_case(
            "layout-dir-blob-symlink-to-canary",
            Refused("sha256:"),
            |b| {
                let d = b.p("layout");
                fs::create_dir_all(d.join("blobs/sha256")).unwrap();
                let f = layout_files(b);
                let m = manifest_path(&f);
                for (p, data) in &f {
                    if *p == m {
                        std::os::unix::fs::symlink(b.p("above-canary"), d.join(p)).unwrap();
                    } else {
                        fs::write(d.join(p), data).unwrap();
                    }
                }
                d
            },
        ),
    ]
}

#[test]
fn hostile_image_archives_load_without_writing_outside_the_store() {
    let mut failures = Vec::new();
    for c in archive_cases() {
        let b = Base::new(&format!("archive-{}", c.name));
        let input = (c.make)(&b);
        let before = snapshot(&b);
        let escapes = global_escapes();
        let (code, _, err) = common::wcbuild_at_env(
            &b.store(),
            &["load", "-i", input.to_str().unwrap()],
            &[("TMPDIR", b.tmp().to_str().unwrap())],
        );
        match (&c.expect, code) {
            (Load::Loaded, 0) => {
                let (code, out, _) = common::wcbuild_at(&b.store(), &["images"]);
                if code != 0 || !out.contains("wcbuild.test/hostile") {
                    failures.push(format!("{}: loaded, but not tagged: {out}", c.name));
                }
            }
            (Load::Loaded, _) => failures.push(format!("{}: refused, must load: {err}", c.name)),
            (Load::Refused(_), 0) => failures.push(format!("{}: loaded, must be refused", c.name)),
            (Load::Refused(needle), _) => {
                if !err.contains(needle) {
                    failures.push(format!(
                        "{}: the error does not name `{needle}`: {err}",
                        c.name
                    ));
                }
            }
        }
        let d = diff(&before, &snapshot(&b));
        if !d.is_empty() {
            failures.push(format!("{}: outside the store: {d:#?}", c.name));
        }
        if global_escapes() != escapes {
            failures.push(format!("{}: wrote {:?}", c.name, global_escapes()));
        }
        if failures.is_empty() {
            let _ = fs::remove_dir_all(&b.dir);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// What `unpack_overlay` writes is what overlayfs reads.

#[test]
fn unpacked_layers_mount_as_overlayfs_lower_directories() {
    let b = Base::new("overlay-mount");
    let lower = tar()
        .dir("dir")
        .file("dir/a", b"a")
        .file("dir/b", b"b")
        .file("x", b"x")
        .file("keep", b"keep")
        .end();
    let upper = tar()
        .file(".wh.x", b"")
        .dir("dir")
        .file("dir/.wh..wh..opq", b"")
        .file("dir/c", b"c")
        .end();
    let o = wcbuild::layer::ExtractOptions::default();
    let l = b.p("l");
    let u = b.p("u");
    let s = wcbuild::layer::unpack_overlay(std::io::Cursor::new(lower), &l, &o).unwrap();
    assert_eq!((s.files, s.whiteouts), (4, 0));
    let s = wcbuild::layer::unpack_overlay(std::io::Cursor::new(upper), &u, &o).unwrap();
    assert_eq!((s.files, s.whiteouts), (1, 2));
    assert!(is_char_dev(&u.join("x"), (0, 0)));
    assert_eq!(
        xattr(&u.join("dir"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    let m = b.p("merged");
    fs::create_dir(&m).unwrap();
    let opts = format!("lowerdir={}:{}", u.display(), l.display());
    let out = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&m)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = |p: &Path| {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let root = listing(&m);
    let dir = listing(&m.join("dir"));
    let _ = std::process::Command::new("umount").arg(&m).status();
    assert_eq!(root, ["dir", "keep"], "the whiteout hides `x`");
    assert_eq!(
        dir,
        ["c"],
        "the opaque directory hides the lower `a` and `b`"
    );
    let _ = fs::remove_dir_all(&b.dir);
}
