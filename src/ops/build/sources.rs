//! Where ADD's non-local sources come from: http(s) downloads, git checkouts (the system's
//! `git`, shallow), and local archives recognised by their content.

use std::fs;
use std::path::{Path, PathBuf};

/// Downloads an http(s) URL into `file`, returning the content's `sha256:` digest.
pub(super) fn http_download(
    url: &str,
    file: &Path,
    remote: Option<&crate::registry::ClientOptions>,
) -> Result<String, String> {
    let client = crate::registry::Client::new(remote.cloned().unwrap_or_default());
    let mut out = fs::File::create(file).map_err(|e| format!("`{}`: {e}", file.display()))?;
    let (digest, _, _) = crate::ops::registry::runtime()
        .block_on(client.fetch_url(url, &mut out))
        .map_err(|e| format!("ADD {url}: {e}"))?;
    Ok(digest)
}

/// True for the sources `ADD` treats as git repositories, as BuildKit recognises them:
/// `git@host:…`, `git://…`, `ssh://…`, and http(s) URLs whose path ends in `.git`.
pub(super) fn is_git_source(src: &str) -> bool {
    let url = src.split('#').next().unwrap_or(src);
    src.starts_with("git@")
        || src.starts_with("git://")
        || src.starts_with("ssh://")
        || ((url.starts_with("https://") || url.starts_with("http://"))
            && url.trim_end_matches('/').ends_with(".git"))
}

/// Checks out `URL[#REF][:SUBDIR]` (shallow, with the system's `git`) into `dir`. Returns the
/// directory to copy (the subdirectory when one is named) and the commit.
pub(super) fn git_checkout(
    src: &str,
    dir: &Path,
    keep_git_dir: bool,
) -> Result<(PathBuf, String), String> {
    let (url, fragment) = src.split_once('#').unwrap_or((src, ""));
    let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
    fs::create_dir_all(dir).map_err(|e| format!("`{}`: {e}", dir.display()))?;
    let git = |args: &[&str]| -> Result<String, String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("ADD {src}: cannot run git: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ADD {src}: git {} failed: {}",
                args.first().copied().unwrap_or(""),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    git(&["init", "-q"])?;
    let want = if reference.is_empty() {
        "HEAD"
    } else {
        reference
    };
    git(&["fetch", "-q", "--depth", "1", "--no-tags", url, want])?;
    git(&[
        "-c",
        "advice.detachedHead=false",
        "checkout",
        "-q",
        "FETCH_HEAD",
    ])?;
    let commit = git(&["rev-parse", "HEAD"])?;
    if !keep_git_dir {
        fs::remove_dir_all(dir.join(".git")).map_err(|e| format!("ADD {src}: {e}"))?;
    }
    let sub = crate::dockerfile::ignore::clean(subdir.trim_start_matches('/'));
    if sub.starts_with("..") {
        return Err(format!("ADD {src}: the subdirectory leaves the repository"));
    }
    let root = if sub.is_empty() || sub == "." {
        dir.to_path_buf()
    } else {
        dir.join(&sub)
    };
    if !root.is_dir() {
        return Err(format!(
            "ADD {src}: `{subdir}` is not a directory of the repository"
        ));
    }
    Ok((root, commit))
}

pub(super) enum ArchiveKind {
    /// A tar, plain or compressed with gzip or zstd.
    Tar,
    /// A compression this version does not read (bzip2, xz).
    Unsupported(&'static str),
}

/// Detects a local archive by its content, never by its name, as BuildKit does.
pub(super) fn archive_kind(path: &Path) -> Option<ArchiveKind> {
    use std::io::Read;
    let mut head = [0u8; 512];
    let mut f = fs::File::open(path).ok()?;
    let n = f.read(&mut head).unwrap_or(0);
    let h = &head[..n];
    if h.starts_with(b"BZh") {
        return Some(ArchiveKind::Unsupported("bzip2"));
    }
    if h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Some(ArchiveKind::Unsupported("xz"));
    }
    if h.starts_with(&[0x1f, 0x8b]) || h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        // Compressed: it is an archive only if a tar header follows.
        let f = fs::File::open(path).ok()?;
        let mut tar = crate::layer::tar_reader(
            std::io::BufReader::new(f),
            crate::layer::ReadLimits::default(),
        )
        .ok()?;
        return tar.next_entry().ok().flatten().map(|_| ArchiveKind::Tar);
    }
    (n == 512 && &head[257..262] == b"ustar").then_some(ArchiveKind::Tar)
}
