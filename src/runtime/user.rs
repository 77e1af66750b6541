//! `USER` resolution for a step, as BuildKit does it (`executor/oci/user.go` over moby/sys
//! `GetExecUser`): `uid:gid` (numbers or `root`) are taken as given; a name or a bare uid is
//! looked up in the root file system's own `/etc/passwd` (supplementary groups from the
//! `/etc/group` lines that list the name); `user:group` takes the group's gid and no
//! supplementary groups. The files are read through the root (symlinks stay inside it) and
//! capped at 10 MiB each. The home directory for `HOME` follows runc's rule (the first passwd
//! entry with the uid, else `/`).

use super::fsutil::resolve_in_root;
use std::fs;
use std::io::Read;
use std::path::Path;

/// The cap on `/etc/passwd` and `/etc/group`.
pub const MAX_USER_FILE: u64 = 10 << 20;

/// Who the step's process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups, the primary gid first (BuildKit's `ensureAdditionalGids`).
    pub additional_gids: Vec<u32>,
}

/// Why a user could not be resolved (texts as BuildKit's, which users search for).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    /// No passwd entry for a name.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    /// No group entry for a name.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    /// A number out of range.
    #[error("`{0}`: uids and gids must be in range 0-2147483647")]
    Range(String),
    /// A user file could not be read (too big, a line too long, an I/O error).
    #[error("unable to find user {user}: `{file}`: {reason}")]
    File {
        /// The user as written.
        user: String,
        /// `/etc/passwd` or `/etc/group`.
        file: String,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Clone)]
struct PasswdEntry {
    name: String,
    uid: i64,
    gid: i64,
    home: String,
}

#[derive(Debug, Clone)]
struct GroupEntry {
    name: String,
    gid: i64,
    list: Vec<String>,
}

/// Go's `strconv.Atoi` with errors read as 0, as the passwd parser does.
fn atoi_or_zero(s: &str) -> i64 {
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    s.parse::<i64>().unwrap_or(0)
}

/// Parses a user or group argument: `Ok(Some(n))` for a number in range, `Ok(None)` for a
/// name, an error for a number out of range.
fn numeric(s: &str) -> Result<Option<u32>, UserError> {
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match s.parse::<i64>() {
        Ok(n) if (0..=i32::MAX as i64).contains(&n) => Ok(Some(n as u32)),
        _ => Err(UserError::Range(s.to_string())),
    }
}

/// A user file's lines: `Ok(None)` when it cannot be opened or is not a regular file (BuildKit
/// then has no source), an error when it is too big or has a line longer than `max_line`.
fn read_lines(root: &Path, file: &str, max_line: usize) -> Result<Option<Vec<String>>, String> {
    let Ok(path) = resolve_in_root(root, file) else {
        return Ok(None);
    };
    let Ok(f) = fs::File::open(&path) else {
        return Ok(None);
    };
    match f.metadata() {
        Ok(m) if m.is_file() => {}
        _ => return Ok(None),
    }
    let mut data = Vec::new();
    f.take(MAX_USER_FILE + 1)
        .read_to_end(&mut data)
        .map_err(|e| e.to_string())?;
    if data.len() as u64 > MAX_USER_FILE {
        return Err(format!("file exceeds {MAX_USER_FILE} bytes"));
    }
    let mut out = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() >= max_line {
            return Err("bufio.Scanner: token too long".into());
        }
        out.push(String::from_utf8_lossy(line).into_owned());
    }
    Ok(Some(out))
}

fn parse_passwd(lines: &[String]) -> Vec<PasswdEntry> {
    lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            PasswdEntry {
                name: f.first().unwrap_or(&"").to_string(),
                uid: f.get(2).map_or(0, |s| atoi_or_zero(s)),
                gid: f.get(3).map_or(0, |s| atoi_or_zero(s)),
                home: f.get(5).unwrap_or(&"").to_string(),
            }
        })
        .collect()
}

fn parse_group(lines: &[String]) -> Vec<GroupEntry> {
    lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            GroupEntry {
                name: f.first().unwrap_or(&"").to_string(),
                gid: f.get(2).map_or(0, |s| atoi_or_zero(s)),
                list: match f.get(3) {
                    Some(s) if !s.is_empty() => s.split(',').map(str::to_string).collect(),
                    _ => Vec::new(),
                },
            }
        })
        .collect()
}

/// BuildKit's `ParseUIDGID`: both parts given, numbers or `root`.
fn parse_uid_gid(spec: &str) -> Option<(u32, u32)> {
    let (u, g) = spec.split_once(':')?;
    let one = |s: &str| -> Option<u32> {
        if s == "root" {
            return Some(0);
        }
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u32>().ok()
    };
    Some((one(u)?, one(g)?))
}

/// Resolves `USER` as written (`""` is root) against the root file system at `root`.
pub fn resolve(root: &Path, user: &str) -> Result<ExecUser, UserError> {
    let is_default = user.is_empty();
    let spec = if is_default { "0" } else { user };
    let (uid, gid, sgids) = if let Some((u, g)) = parse_uid_gid(spec) {
        (u, g, Vec::new())
    } else {
        match exec_user(root, spec) {
            Ok(v) => v,
            Err(_) if is_default => (0, 0, Vec::new()),
            Err(e) => return Err(e),
        }
    };
    let mut additional_gids = sgids;
    if !additional_gids.contains(&gid) {
        additional_gids.insert(0, gid);
    }
    Ok(ExecUser {
        uid,
        gid,
        additional_gids,
    })
}

/// moby/sys `GetExecUser` with zero defaults.
fn exec_user(root: &Path, spec: &str) -> Result<(u32, u32, Vec<u32>), UserError> {
    let (usr, grp) = spec.split_once(':').unwrap_or((spec, ""));
    let user_num = if usr.is_empty() {
        None
    } else {
        Some(numeric(usr)?)
    };
    let group_num = if grp.is_empty() {
        None
    } else {
        Some(numeric(grp)?)
    };
    let file_err = |file: &str, reason: String| UserError::File {
        user: usr.to_string(),
        file: file.to_string(),
        reason,
    };
    let passwd = read_lines(root, "/etc/passwd", 64 * 1024)
        .map_err(|r| file_err("/etc/passwd", r))?
        .map(|l| parse_passwd(&l))
        .unwrap_or_default();
    let (mut uid, mut gid, mut sgids) = (0u32, 0u32, Vec::new());
    let matched = passwd.iter().find(|p| match user_num {
        None => p.uid == 0,
        Some(Some(n)) => p.uid == n as i64,
        Some(None) => p.name == usr,
    });
    let mut matched_name = None;
    if let Some(p) = matched {
        matched_name = Some(p.name.clone());
        uid = p.uid as u32;
        gid = p.gid as u32;
    } else if let Some(arg) = user_num {
        match arg {
            Some(n) => uid = n,
            None => return Err(UserError::NoUser(usr.to_string())),
        }
    }
    if group_num.is_some() || matched_name.as_deref().is_some_and(|n| !n.is_empty()) {
        let groups = read_lines(root, "/etc/group", 1024 * 1024)
            .map_err(|r| file_err("/etc/group", r))?
            .map(|l| parse_group(&l))
            .unwrap_or_default();
        match group_num {
            Some(arg) => {
                let found = groups.iter().find(|g| match arg {
                    Some(n) => g.gid == n as i64,
                    None => g.name == grp,
                });
                match (found, arg) {
                    (Some(g), _) => gid = g.gid as u32,
                    (None, Some(n)) => gid = n,
                    (None, None) => return Err(UserError::NoGroup(grp.to_string())),
                }
            }
            None => {
                let name = matched_name.unwrap_or_default();
                let listed: Vec<u32> = groups
                    .iter()
                    .filter(|g| g.list.contains(&name))
                    .map(|g| g.gid as u32)
                    .collect();
                if !listed.is_empty() {
                    sgids = listed;
                }
            }
        }
    }
    Ok((uid, gid, sgids))
}

/// The home directory runc gives `HOME` when the environment has none: the first passwd
/// entry with this uid, else `/`.
pub fn home_for(root: &Path, uid: u32) -> String {
    match read_lines(root, "/etc/passwd", 64 * 1024) {
        Ok(Some(lines)) => parse_passwd(&lines)
            .into_iter()
            .find(|p| p.uid == uid as i64)
            .map(|p| p.home)
            .unwrap_or_else(|| "/".to_string()),
        _ => "/".to_string(),
    }
}

/// Reads an environment list and returns it with `HOME` set when it is missing or empty.
pub fn with_home(env: &[String], home: &str) -> Vec<String> {
    let has = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("HOME="))
        .is_some_and(|v| !v.is_empty());
    if has {
        return env.to_vec();
    }
    let mut out: Vec<String> = env
        .iter()
        .filter(|e| !e.starts_with("HOME="))
        .cloned()
        .collect();
    out.push(format!("HOME={home}"));
    out
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn root(passwd: &str, group: &str) -> tempdir::Dir {
        let d = tempdir::Dir::new();
        fs::create_dir_all(d.0.join("etc")).unwrap();
        fs::write(d.0.join("etc/passwd"), passwd).unwrap();
        fs::write(d.0.join("etc/group"), group).unwrap();
        d
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "wcbuild-user-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comments are names here\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n  \n\
        dup:x:1000:5:Dup:/home/dup:/bin/sh\n\
        short:x:1001\n";
    const GROUP: &str = "root:x:0:\n# a comment\nwheel:x:10:root,app\nstaff:x:50:app\n\
        app:x:1000:\nfive:x:5:\n";

    fn u(uid: u32, gid: u32, g: &[u32]) -> ExecUser {
        ExecUser {
            uid,
            gid,
            additional_gids: g.to_vec(),
        }
    }

    #[test]
    fn buildkit_rules() {
        let r = root(PASSWD, GROUP);
        let p = &r.0;
        // Empty: uid 0 looked up, with root's groups.
        assert_eq!(resolve(p, "").unwrap(), u(0, 0, &[0, 10]));
        // uid:gid and root: as given, no lookup.
        assert_eq!(resolve(p, "1000:7").unwrap(), u(1000, 7, &[7]));
        assert_eq!(resolve(p, "root:root").unwrap(), u(0, 0, &[0]));
        assert_eq!(resolve(p, "4242:4242").unwrap(), u(4242, 4242, &[4242]));
        // A name: passwd, then the groups listing it.
        assert_eq!(resolve(p, "app").unwrap(), u(1000, 1000, &[1000, 10, 50]));
        // A bare uid: the first entry with it wins.
        assert_eq!(resolve(p, "1000").unwrap(), u(1000, 1000, &[1000, 10, 50]));
        // An unknown numeric uid: gid 0.
        assert_eq!(resolve(p, "777").unwrap(), u(777, 0, &[0]));
        // user:group by name: the group's gid, no supplementary groups.
        assert_eq!(resolve(p, "app:staff").unwrap(), u(1000, 50, &[50]));
        assert_eq!(resolve(p, "app:99").unwrap(), u(1000, 99, &[99]));
        assert_eq!(resolve(p, "777:staff").unwrap(), u(777, 50, &[50]));
        // Short lines read missing fields as 0.
        assert_eq!(resolve(p, "short").unwrap(), u(1001, 0, &[0]));
        assert_eq!(
            resolve(p, "nobody").unwrap_err().to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        assert_eq!(
            resolve(p, "app:nogroup").unwrap_err().to_string(),
            "unable to find group nogroup: no matching entries in group file"
        );
        assert!(matches!(
            resolve(p, "99999999999").unwrap_err(),
            UserError::Range(_)
        ));
        assert_eq!(home_for(p, 1000), "/home/app");
        assert_eq!(home_for(p, 4242), "/");
    }

    #[test]
    fn missing_and_hostile_files() {
        let d = tempdir::Dir::new();
        // No passwd: root still works, numbers work, names do not.
        assert_eq!(resolve(&d.0, "").unwrap(), u(0, 0, &[0]));
        assert_eq!(resolve(&d.0, "5").unwrap(), u(5, 0, &[0]));
        assert!(matches!(
            resolve(&d.0, "app").unwrap_err(),
            UserError::NoUser(_)
        ));
        // /etc/passwd as a symlink out of the root is read inside the root.
        fs::create_dir_all(d.0.join("etc")).unwrap();
        fs::create_dir_all(d.0.join("real")).unwrap();
        fs::write(d.0.join("real/pw"), "app:x:7:8::/h:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/../../../real/pw", d.0.join("etc/passwd")).unwrap();
        assert_eq!(resolve(&d.0, "app").unwrap(), u(7, 8, &[8]));
        // Over the cap: an error for a name, root for the default.
        let big = d.0.join("real/pw");
        let f = fs::File::options().append(true).open(&big).unwrap();
        f.set_len(MAX_USER_FILE + 10).unwrap();
        assert!(matches!(
            resolve(&d.0, "app").unwrap_err(),
            UserError::File { .. }
        ));
        assert_eq!(resolve(&d.0, "").unwrap(), u(0, 0, &[0]));
        // A directory where the file should be: no source.
        fs::remove_file(d.0.join("etc/passwd")).unwrap();
        fs::create_dir(d.0.join("etc/passwd")).unwrap();
        assert_eq!(resolve(&d.0, "9").unwrap(), u(9, 0, &[0]));
    }

    #[test]
    fn home_is_added_once() {
        let env = vec!["PATH=/bin".to_string(), "HOME=".to_string()];
        assert_eq!(with_home(&env, "/root"), ["PATH=/bin", "HOME=/root"]);
        let env = vec!["HOME=/x".to_string()];
        assert_eq!(with_home(&env, "/root"), ["HOME=/x"]);
        assert_eq!(with_home(&[], "/"), ["HOME=/"]);
    }
}
