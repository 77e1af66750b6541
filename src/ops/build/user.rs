//! Owners for files a build writes (`COPY --chown`, the directories `WORKDIR` creates), resolved
//! as BuildKit's file operations resolve them: `uid[:gid]` as given (a uid alone gives gid =
//! uid), `root` is 0, a user name through the stage's `/etc/passwd` (uid and its primary gid),
//! a group name through its `/etc/group`; a name the files do not list resolves to 0 without
//! an error, as in BuildKit.

use crate::image::Descriptor;
use crate::layer::tar::Kind;
use crate::store::Store;
use std::io::Read as _;

/// Largest `/etc/passwd` or `/etc/group` read.
const MAX_USER_FILE: u64 = 10 << 20;

fn number(s: &str) -> Option<u64> {
    if s == "root" {
        return Some(0);
    }
    s.parse::<u32>().ok().map(u64::from)
}

/// The `(uid, gid)` of `spec` (`user[:group]`) given the stage's passwd and group files.
pub(super) fn owner(spec: &str, passwd: &str, group: &str) -> (u64, u64) {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (mut uid, mut gid) = (0, 0);
    match number(u) {
        Some(n) => (uid, gid) = (n, n),
        None => {
            if let Some(f) = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 4 && f[0] == u)
            {
                uid = f[2].parse().unwrap_or(0);
                gid = f[3].parse().unwrap_or(0);
            }
        }
    }
    if let Some(g) = g {
        match number(g) {
            Some(n) => gid = n,
            None => {
                if let Some(f) = group
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() >= 3 && f[0] == g)
                {
                    gid = f[2].parse().unwrap_or(0);
                }
            }
        }
    }
    (uid, gid)
}

/// True when resolving `spec` needs the stage's user files.
pub(super) fn needs_files(spec: &str) -> bool {
    spec.split(':').any(|p| number(p).is_none())
}

/// The `(uid, gid)` of `spec` in the stage made of `layers`, reading its `/etc/passwd` and
/// `/etc/group` only when a name must be looked up.
pub(super) fn stage_owner(
    store: &Store,
    layers: &[Descriptor],
    spec: &str,
) -> Result<(u64, u64), String> {
    if spec.is_empty() {
        return Ok((0, 0));
    }
    if !needs_files(spec) {
        return Ok(owner(spec, "", ""));
    }
    let read = |p: &str| -> Result<String, String> {
        let bytes = read_stage_file(store, layers, p)?;
        Ok(String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
    };
    Ok(owner(spec, &read("etc/passwd")?, &read("etc/group")?))
}

/// The content of the regular file at `path` in the stage made of `layers` (the topmost
/// layer that has it wins; a whiteout or an opaque parent hides it), read from the layers
/// themselves (at most [`MAX_USER_FILE`] bytes); `None` when it is not there.
pub(super) fn read_stage_file(
    store: &Store,
    layers: &[Descriptor],
    path: &str,
) -> Result<Option<Vec<u8>>, String> {
    let (dir, base) = path.rsplit_once('/').unwrap_or(("", path));
    let whiteout = if dir.is_empty() {
        format!(".wh.{base}")
    } else {
        format!("{dir}/.wh.{base}")
    };
    let opaque = format!("{dir}/.wh..wh..opq");
    for l in layers.iter().rev() {
        let blob = store.open_blob(&l.digest).map_err(|e| e.to_string())?;
        let mut tar = crate::layer::tar_reader(
            std::io::BufReader::new(blob),
            crate::layer::ReadLimits::default(),
        )
        .map_err(|e| format!("layer `{}`: {e}", l.digest))?;
        let mut windows: Option<bool> = None;
        let mut hidden = false;
        while let Some(e) = tar
            .next_entry()
            .map_err(|e| format!("layer `{}`: {e}", l.digest))?
        {
            let raw = e.header.path.trim_start_matches("./").trim_end_matches('/');
            let win = *windows.get_or_insert_with(|| raw == "Files" || raw.starts_with("Files/"));
            let name = if win {
                match raw.strip_prefix("Files/") {
                    Some(n) => n,
                    None => continue,
                }
            } else {
                raw
            };
            if name == path && e.header.kind == Kind::File {
                let mut data = Vec::new();
                tar.content()
                    .take(MAX_USER_FILE)
                    .read_to_end(&mut data)
                    .map_err(|e| format!("layer `{}`: {e}", l.digest))?;
                return Ok(Some(data));
            }
            if name == whiteout || name == opaque || name == path {
                hidden = true;
            }
        }
        if hidden {
            return Ok(None);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_as_buildkit_resolves_them() {
        let passwd = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
        let group = "root:x:0:\nstaff:x:50:app\n";
        assert_eq!(owner("1000", passwd, group), (1000, 1000));
        assert_eq!(owner("1000:7", passwd, group), (1000, 7));
        assert_eq!(
            owner("app", passwd, group),
            (1000, 1001),
            "the primary group"
        );
        assert_eq!(owner("app:staff", passwd, group), (1000, 50));
        assert_eq!(owner("root:staff", passwd, group), (0, 50));
        assert_eq!(owner("nosuch", passwd, group), (0, 0));
        assert_eq!(owner("app:nosuch", passwd, group), (1000, 1001));
        assert!(needs_files("app") && needs_files("1:staff") && !needs_files("1:2"));
        assert!(!needs_files("root"));
    }
}
