//! The bodies of wcbuild's fuzz targets, one function per target: the `cargo fuzz` binaries in
//! `fuzz_targets/` call them, and `tests/fuzz_replay.rs` (a plain `#[test]` on stable Rust)
//! runs every file of `fuzz/corpus/<target>/` through the same functions, so a crash the fuzzer
//! found and fixed stays fixed without a nightly toolchain.
//!
//! Each function takes arbitrary bytes and must neither panic nor hang; where a property can
//! be checked (a parsed reference printed and parsed again is the same reference, a layer
//! applied into a root changes nothing outside it) the function asserts it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/corpus/<name>/` and the `cargo fuzz run <name>` binaries
/// call them.
pub const TARGETS: [(&str, Target); 8] = [
    ("dockerfile", dockerfile),
    ("expand", expand),
    ("tar", tar),
    ("apply", apply),
    ("image_json", image_json),
    ("dockerignore", dockerignore),
    ("reference", reference),
    ("www_authenticate", www_authenticate),
];

fn platforms() -> [wcbuild::image::Platform; 2] {
    [
        wcbuild::image::Platform::new("linux", "amd64"),
        wcbuild::image::Platform::parse("windows/amd64:10.0.20348").expect("a valid platform"),
    ]
}

/// The Dockerfile parser, validation, the planner's expansion of every stage, and the
/// linter, for a Linux and a Windows target, with and without `--target`.
pub fn dockerfile(data: &[u8]) {
    let Ok(df) = wcbuild::dockerfile::parse(data, "Dockerfile") else {
        return;
    };
    let checked = wcbuild::dockerfile::check(&df);
    for (i, platform) in platforms().into_iter().enumerate() {
        let opts = wcbuild::plan::PlanOptions {
            build_args: BTreeMap::from([("A".to_string(), "x y".to_string())]),
            target_platform: platform,
            build_platform: wcbuild::image::Platform::new("linux", "amd64"),
            target: (i == 1).then(|| "build".to_string()),
            images: BTreeMap::new(),
        };
        let lint = wcbuild::dockerfile::LintOptions {
            all_stages: i == 0,
            ..Default::default()
        };
        let planned = wcbuild::plan::plan_and_lint(&df, &checked, &opts, &lint);
        let _ = wcbuild::dockerfile::lint::render_summary(&planned.lints);
        let _ = wcbuild::dockerfile::lint::render_text(&planned.lints, "Dockerfile", data);
    }
}

struct FuzzEnv(Vec<(String, String)>);

impl wcbuild::dockerfile::lexer::Env for FuzzEnv {
    fn lookup(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// BuildKit's word expansion (`$v`, `${v:-w}`, `${v//p/r}`, quotes, escapes) with both escape
/// characters and every lexer switch. The first line of the input is `K=V;K=V` variables, the
/// rest the word.
pub fn expand(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (vars, word) = text.split_once('\n').unwrap_or(("A=a;B=b c;EMPTY=", &text));
    let env = FuzzEnv(
        vars.split(';')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    for escape in ['\\', '`'] {
        for switches in 0..16u8 {
            let mut lexer = wcbuild::dockerfile::lexer::Lexer::new(escape);
            lexer.raw_quotes = switches & 1 != 0;
            lexer.raw_escapes = switches & 2 != 0;
            lexer.skip_process_quotes = switches & 4 != 0;
            lexer.skip_unset_env = switches & 8 != 0;
            if let Ok(p) = lexer.process_word(word, &env) {
                let _ = (p.result, p.words);
            }
            let _ = lexer.process_words(word, &env);
        }
    }
}

/// The hand-written tar reader over raw tar bytes (compression is `apply`'s part): every
/// entry and its content is read. Entries it accepts are written again with the tar writer
/// and read back: the second reading must give the same headers.
pub fn tar(data: &[u8]) {
    use wcbuild::layer::tar::{Kind, TarReader, write_entry};
    let mut reader = TarReader::new(data);
    let mut again = Vec::new();
    let mut headers = Vec::new();
    loop {
        match reader.next_entry() {
            Ok(Some(entry)) => {
                let mut content = Vec::new();
                if reader.content().read_to_end(&mut content).is_err() {
                    return;
                }
                let h = entry.header;
                let body = (h.kind == Kind::File).then_some(content);
                let mut body_reader = body.as_deref();
                let dyn_reader = body_reader.as_mut().map(|r| r as &mut dyn Read);
                if write_entry(&mut again, &h, true, dyn_reader).is_err() {
                    return;
                }
                headers.push(h);
            }
            Ok(None) => break,
            Err(_) => return,
        }
    }
    again.extend_from_slice(&[0u8; 1024]);
    let mut reader = TarReader::new(&again[..]);
    for h in &headers {
        let entry = reader
            .next_entry()
            .unwrap_or_else(|e| panic!("rewritten `{}` does not read back: {e}", h.path))
            .unwrap_or_else(|| panic!("rewritten `{}` is missing", h.path));
        let mut back = entry.header;
        // The writer names directories with a trailing `/`; the reader takes it off.
        back.path = back.path.trim_end_matches('/').to_string();
        let mut want = h.clone();
        want.path = want.path.trim_end_matches('/').to_string();
        if want.kind != Kind::File {
            want.size = back.size;
        }
        assert_eq!(back, want, "a header written again reads back differently");
        std::io::copy(&mut reader.content(), &mut std::io::sink()).expect("content");
    }
}

/// What a directory holds, for comparing before and after.
fn snapshot(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let path = e.path();
        if path == skip {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        #[cfg(unix)]
        let mode = {
            use std::os::unix::fs::MetadataExt;
            format!("{:o} {}:{}", meta.mode(), meta.uid(), meta.gid())
        };
        #[cfg(not(unix))]
        let mode = format!("{}", meta.permissions().readonly());
        let what = if meta.file_type().is_symlink() {
            format!("link {:?}", std::fs::read_link(&path).ok())
        } else if meta.is_dir() {
            snapshot(&path, skip, out);
            "dir".to_string()
        } else {
            format!("file {:?}", std::fs::read(&path).ok())
        };
        out.insert(path, format!("{mode} {what}"));
    }
}

fn sandbox() -> &'static Path {
    static SANDBOX: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SANDBOX.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("wcbuild-fuzz-apply-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("outside/sub")).expect("sandbox");
        std::fs::write(dir.join("outside/canary"), b"canary").expect("canary");
        std::fs::write(dir.join("outside/sub/canary"), b"canary").expect("canary");
        std::fs::write(dir.join("beside"), b"beside").expect("canary");
        dir
    })
}

/// `layer::apply` of arbitrary bytes (a Linux or a Windows layer, as the content says) on
/// top of a lower tree whose symlinks point outside the root, relatively and absolutely.
/// Whatever the layer holds, nothing outside the root may change.
pub fn apply(data: &[u8]) {
    let dir = sandbox();
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("lower/dir")).expect("root");
    std::fs::write(root.join("lower/file"), b"lower").expect("lower file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        symlink("../outside", root.join("up")).expect("link");
        symlink("../../outside/sub", root.join("lower/up2")).expect("link");
        symlink(dir.join("outside"), root.join("abs")).expect("link");
        symlink("/", root.join("slash")).expect("link");
        symlink(dir.join("beside"), root.join("beside")).expect("link");
        std::fs::create_dir_all(root.join("Files")).expect("windows root");
        symlink("../../outside", root.join("Files/up")).expect("link");
    }
    let mut before = BTreeMap::new();
    snapshot(dir, &root, &mut before);
    let opts = wcbuild::layer::ExtractOptions::default();
    let _ = wcbuild::layer::apply(std::io::Cursor::new(data.to_vec()), &root, &opts);
    let mut after = BTreeMap::new();
    snapshot(dir, &root, &mut after);
    assert_eq!(
        before, after,
        "applying a layer changed something outside its root"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Manifests, indexes and configs as the store and the registry client decode them. What
/// decodes is encoded again and must decode to the same value.
pub fn image_json(data: &[u8]) {
    use wcbuild::image::{ImageConfig, Index, Manifest};
    fn round<T>(data: &[u8])
    where
        T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
    {
        if let Ok(v) = serde_json::from_slice::<T>(data) {
            let bytes = serde_json::to_vec(&v).expect("what decoded encodes");
            let back: T = serde_json::from_slice(&bytes).expect("what was encoded decodes");
            assert_eq!(back, v);
        }
    }
    round::<Manifest>(data);
    round::<Index>(data);
    round::<ImageConfig>(data);
    round::<wcbuild::store::IndexEntry>(data);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = wcbuild::image::media::is_index(v["mediaType"].as_str().unwrap_or_default());
    }
}

/// `.dockerignore` patterns: the input is the file, then a NUL, then paths (one a line) to
/// match. A directory the walker may skip must hold no path that is not excluded (for the
/// relative paths a walker asks about).
pub fn dockerignore(data: &[u8]) {
    use wcbuild::dockerfile::ignore::{IgnoreFile, clean, glob_matches};
    let (file, paths) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"a/b/c\nx\n.\n../y\n"[..]),
    };
    let Ok(ignore) = IgnoreFile::parse(file) else {
        return;
    };
    let paths = String::from_utf8_lossy(paths);
    for p in paths.lines().take(16) {
        let c = clean(p);
        assert_eq!(clean(&c), c, "clean is not idempotent on `{p}`");
        let excluded = ignore.is_excluded(p);
        let _ = ignore.matches_or_parent_matches(p);
        // The context walker asks about relative paths only (never `/`, `.` or `../x`).
        let relative = !c.starts_with('/') && c != "." && c != ".." && !c.starts_with("../");
        if relative && ignore.can_skip_dir(p) {
            assert!(excluded, "`{p}` may be skipped but is not excluded");
            for child in ["x", "a/b", ".keep"] {
                let inside = format!("{c}/{child}");
                assert!(
                    ignore.is_excluded(&inside),
                    "`{p}` may be skipped, but `{inside}` is not excluded"
                );
            }
        }
        for pat in ignore.patterns().iter().take(8) {
            let _ = glob_matches(pat.text(), p);
        }
    }
}

/// Image references, digests and platforms. A reference that parses prints as a reference
/// that parses to itself.
pub fn reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = wcbuild::image::Reference::parse(s) {
        let printed = r.to_string();
        let again = wcbuild::image::Reference::parse(&printed)
            .unwrap_or_else(|e| panic!("`{s}` printed as `{printed}`, which does not parse: {e}"));
        assert_eq!(again, r, "`{s}` printed as `{printed}`");
        let _ = (r.repository(), r.familiar());
    }
    let _ = wcbuild::image::Digest::parse(s);
    if let Ok(p) = wcbuild::image::Platform::parse(s) {
        let _ = (p.os_arch(), p.windows_version());
    }
}

/// The registry's `WWW-Authenticate` parser.
pub fn www_authenticate(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(c) = wcbuild::registry::auth::parse_challenge(s) {
        assert!(!c.scheme.is_empty());
        assert_eq!(c.scheme, c.scheme.to_ascii_lowercase());
        for name in c.params.keys() {
            assert!(!name.is_empty());
        }
    }
}
