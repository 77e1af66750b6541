//! Credentials and challenges: Docker's `config.json` (`auths`, `credsStore`, `credHelpers`),
//! the `docker-credential-*` helper protocol, and `WWW-Authenticate` parsing.
//!
//! Secrets live in [`Credentials`], whose `Debug` hides them; nothing here logs them.

use super::RegistryError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The key Docker files Docker Hub credentials under.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A user name and a secret (a password, or an identity token when `username` is `<token>`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (`<token>` marks an identity token).
    pub username: String,
    /// The password or identity token.
    pub secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"<hidden>")
            .finish()
    }
}

impl Credentials {
    /// True when the secret is an OAuth2 refresh token (Docker's `identitytoken`).
    pub fn is_identity_token(&self) -> bool {
        self.username == "<token>"
    }

    /// The `Authorization: Basic` value.
    pub fn basic(&self) -> String {
        format!(
            "Basic {}",
            B64.encode(format!("{}:{}", self.username, self.secret))
        )
    }
}

/// The directory holding `config.json`: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn default_config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".docker")
}

/// The key a registry host is filed under in `config.json`.
pub fn config_key(host: &str) -> String {
    if host == "docker.io" || host == "registry-1.docker.io" || host == "index.docker.io" {
        DOCKER_HUB_KEY.to_string()
    } else {
        host.to_string()
    }
}

/// `https://host/v1/` → `host`, as Docker compares `auths` keys.
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

fn read_config(dir: &Path) -> Result<serde_json::Value, RegistryError> {
    let path = dir.join("config.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            RegistryError::Credentials(format!("{} is not valid JSON: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(e) => Err(RegistryError::Credentials(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// The credential helper configured for `host`, if any (`credHelpers`, then `credsStore`).
fn helper_for(config: &serde_json::Value, host: &str) -> Option<String> {
    let key = config_key(host);
    if let Some(h) = config["credHelpers"].as_object().and_then(|m| {
        m.iter()
            .find(|(k, _)| *k == &key || key_host(k) == key_host(&key))
            .and_then(|(_, v)| v.as_str())
    }) {
        return Some(h.to_string());
    }
    config["credsStore"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Looks up the credentials for registry `host` in the `config.json` under `dir`.
pub fn lookup(dir: &Path, host: &str) -> Result<Option<Credentials>, RegistryError> {
    let config = read_config(dir)?;
    let key = config_key(host);
    if let Some(helper) = helper_for(&config, host) {
        return helper_get(&helper, &key);
    }
    let Some(auths) = config["auths"].as_object() else {
        return Ok(None);
    };
    let entry = auths
        .get(&key)
        .or_else(|| {
            auths
                .iter()
                .find(|(k, _)| key_host(k) == key_host(&key))
                .map(|(_, v)| v)
        })
        .cloned();
    let Some(entry) = entry else { return Ok(None) };
    if let Some(token) = entry["identitytoken"].as_str().filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials {
            username: "<token>".into(),
            secret: token.to_string(),
        }));
    }
    if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        let raw = B64.decode(auth.trim()).map_err(|_| {
            RegistryError::Credentials(format!(
                "the `auth` entry for {key} in config.json is not base64"
            ))
        })?;
        let text = String::from_utf8(raw).map_err(|_| {
            RegistryError::Credentials(format!("the `auth` entry for {key} is not UTF-8"))
        })?;
        let (u, p) = text.split_once(':').ok_or_else(|| {
            RegistryError::Credentials(format!("the `auth` entry for {key} is not `user:password`"))
        })?;
        return Ok(Some(Credentials {
            username: u.to_string(),
            secret: p.to_string(),
        }));
    }
    if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
        return Ok(Some(Credentials {
            username: u.to_string(),
            secret: p.to_string(),
        }));
    }
    Ok(None)
}

fn run_helper(helper: &str, verb: &str, input: &[u8]) -> Result<(bool, Vec<u8>), RegistryError> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RegistryError::Credentials(format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| RegistryError::Credentials(format!("{program} {verb}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| RegistryError::Credentials(format!("{program} {verb}: {e}")))?;
    let mut text = out.stdout;
    if !out.status.success() {
        text.extend_from_slice(&out.stderr);
    }
    Ok((out.status.success(), text))
}

fn helper_get(helper: &str, key: &str) -> Result<Option<Credentials>, RegistryError> {
    let (ok, out) = run_helper(helper, "get", key.as_bytes())?;
    if !ok {
        let msg = String::from_utf8_lossy(&out);
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        return Err(RegistryError::Credentials(format!(
            "docker-credential-{helper} get failed: {}",
            msg.trim()
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&out).map_err(|_| {
        RegistryError::Credentials(format!("docker-credential-{helper} get did not print JSON"))
    })?;
    match (v["Username"].as_str(), v["Secret"].as_str()) {
        (Some(u), Some(s)) if !s.is_empty() => Ok(Some(Credentials {
            username: u.to_string(),
            secret: s.to_string(),
        })),
        _ => Ok(None),
    }
}

fn write_config(dir: &Path, config: &serde_json::Value) -> Result<(), RegistryError> {
    let err = |e: std::io::Error| {
        RegistryError::Credentials(format!("cannot write {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let path = dir.join("config.json");
    let tmp = dir.join(format!(".config.json.{}.tmp", std::process::id()));
    let mut bytes = serde_json::to_vec_pretty(config).expect("JSON values serialize");
    bytes.push(b'\n');
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, &path).map_err(err)
}

/// Where [`store`] put the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// In `config.json` (base64, not encrypted), at this path.
    ConfigFile(PathBuf),
    /// In the credential helper of this name.
    Helper(String),
}

/// Saves credentials for `host` as `docker login` does: in the configured credential helper,
/// else base64-encoded in `config.json` (other keys of the file are kept).
pub fn store(dir: &Path, host: &str, creds: &Credentials) -> Result<Stored, RegistryError> {
    let mut config = read_config(dir)?;
    let key = config_key(host);
    if let Some(helper) = helper_for(&config, host) {
        let input = serde_json::json!({
            "ServerURL": key,
            "Username": creds.username,
            "Secret": creds.secret,
        });
        let (ok, out) = run_helper(&helper, "store", input.to_string().as_bytes())?;
        if !ok {
            return Err(RegistryError::Credentials(format!(
                "docker-credential-{helper} store failed: {}",
                String::from_utf8_lossy(&out).trim()
            )));
        }
        // Docker leaves an empty entry so that `auths` lists the registry.
        if !config["auths"].is_object() {
            config["auths"] = serde_json::json!({});
        }
        config["auths"][&key] = serde_json::json!({});
        write_config(dir, &config)?;
        return Ok(Stored::Helper(helper));
    }
    if !config.is_object() {
        config = serde_json::json!({});
    }
    if !config["auths"].is_object() {
        config["auths"] = serde_json::json!({});
    }
    let entry = if creds.is_identity_token() {
        serde_json::json!({ "identitytoken": creds.secret })
    } else {
        serde_json::json!({ "auth": B64.encode(format!("{}:{}", creds.username, creds.secret)) })
    };
    config["auths"][&key] = entry;
    write_config(dir, &config)?;
    Ok(Stored::ConfigFile(dir.join("config.json")))
}

/// Removes the credentials for `host`. Returns false when there were none.
pub fn erase(dir: &Path, host: &str) -> Result<bool, RegistryError> {
    let mut config = read_config(dir)?;
    let key = config_key(host);
    let mut found = false;
    if let Some(helper) = helper_for(&config, host) {
        let (ok, out) = run_helper(&helper, "erase", key.as_bytes())?;
        if ok {
            found = true;
        } else if !String::from_utf8_lossy(&out).contains("not found") {
            return Err(RegistryError::Credentials(format!(
                "docker-credential-{helper} erase failed: {}",
                String::from_utf8_lossy(&out).trim()
            )));
        }
    }
    if let Some(auths) = config["auths"].as_object_mut() {
        let keys: Vec<String> = auths
            .keys()
            .filter(|k| *k == &key || key_host(k) == key_host(&key))
            .cloned()
            .collect();
        for k in keys {
            auths.remove(&k);
            found = true;
        }
        write_config(dir, &config)?;
    }
    Ok(found)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer` (lowercase).
    pub scheme: String,
    /// Its parameters (`realm`, `service`, `scope`, ...), names lowercase.
    pub params: BTreeMap<String, String>,
}

/// Parses the first challenge of a `WWW-Authenticate` value (registries send one).
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = match value.find(char::is_whitespace) {
        Some(i) => (&value[..i], value[i..].trim_start()),
        None => (value, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = BTreeMap::new();
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let name = rest[start..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                // Copy whole UTF-8 characters.
                let ch = rest[i..].chars().next().unwrap_or('?');
                val.push(ch);
                i += ch.len_utf8();
            }
            i += 1;
        } else {
            let s = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = rest[s..i].trim().to_string();
        }
        if !name.is_empty() {
            params.insert(name, val);
        }
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// Percent-encodes a query or form value.
pub fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["service"], "registry.example");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let b = parse_challenge(r#"Basic realm="x y""#).unwrap();
        assert_eq!(b.scheme, "basic");
        assert_eq!(b.params["realm"], "x y");
        assert!(parse_challenge("").is_none());
    }

    #[test]
    fn config_round_trip_keeps_other_keys() {
        let dir = std::env::temp_dir().join(format!("wcb-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), r#"{"psFormat":"x","auths":{}}"#).unwrap();
        let creds = Credentials {
            username: "u".into(),
            secret: "p:w".into(),
        };
        store(&dir, "localhost:5000", &creds).unwrap();
        assert_eq!(lookup(&dir, "localhost:5000").unwrap(), Some(creds.clone()));
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "x");
        assert_eq!(v["auths"]["localhost:5000"]["auth"], B64.encode("u:p:w"));
        assert!(!format!("{creds:?}").contains("p:w"));
        assert!(erase(&dir, "localhost:5000").unwrap());
        assert_eq!(lookup(&dir, "localhost:5000").unwrap(), None);
        assert_eq!(config_key("docker.io"), DOCKER_HUB_KEY);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
