//! Image references (`app:1.0`, `localhost:5000/team/app@sha256:…`) parsed and normalised as
//! Docker does (`docker.io/library/app:1.0`), and content digests.

use std::fmt;

/// The registry Docker assumes when a reference names none.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The namespace of Docker Hub's official images.
pub const OFFICIAL_NAMESPACE: &str = "library";

/// A reference or digest that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference `{input}`: {reason}")]
pub struct ReferenceError {
    /// What was given.
    pub input: String,
    /// Why it is not valid.
    pub reason: String,
}

/// A content digest, `algorithm:hex`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: String,
    hex: String,
}

impl Digest {
    /// Parses and validates `sha256:<64 hex>` (or `sha512:<128 hex>`; other registered
    /// algorithms are accepted by shape).
    pub fn parse(s: &str) -> Result<Digest, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| err("a digest is algorithm:hex"))?;
        let alg_ok = !alg.is_empty()
            && alg
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
        if !alg_ok {
            return Err(err("bad digest algorithm"));
        }
        let want = match alg {
            "sha256" => Some(64),
            "sha512" => Some(128),
            _ => None,
        };
        let hex_ok = !hex.is_empty()
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        if !hex_ok || want.is_some_and(|n| hex.len() != n) {
            return Err(err(&match want {
                Some(n) => format!("a {alg} digest has {n} lowercase hex digits"),
                None => "the digest must be lowercase hex".to_string(),
            }));
        }
        Ok(Digest {
            algorithm: alg.to_string(),
            hex: hex.to_string(),
        })
    }
    /// `sha256`.
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }
    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

/// The first 12 hex digits of a digest (`sha256:abc…` → `abc…`), as people are shown it.
pub fn short_digest(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.get(..12).unwrap_or(hex)
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

/// A normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with port (`docker.io`, `localhost:5000`).
    pub domain: String,
    /// Repository path (`library/app`).
    pub path: String,
    /// Tag, if any (`latest` is filled in when neither tag nor digest is given).
    pub tag: Option<String>,
    /// Digest, if any.
    pub digest: Option<Digest>,
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    if c.is_empty() {
        return false;
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__", or "-+".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.chars().all(|ch| ch == '-')) {
            return false;
        }
    }
    true
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit())
}

fn valid_domain(d: &str) -> bool {
    if let Some(rest) = d.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return false;
        };
        let host_ok = !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit() || c == ':');
        return host_ok && (after.is_empty() || after.strip_prefix(':').is_some_and(valid_port));
    }
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if port.is_some_and(|p| !valid_port(p)) {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl Reference {
    /// Parses and normalises a reference as `docker pull` does.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(err("empty"));
        }
        if input.len() > 4096 {
            return Err(err("longer than 4096 characters"));
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => (n, Some(Digest::parse(d).map_err(|e| err(&e.reason))?)),
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = name_tag.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return Err(err(
                    "a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with `.` or `-`",
                ));
            }
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        if !valid_domain(&domain) {
            return Err(err(&format!(
                "`{domain}` is not a valid registry host[:port]"
            )));
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(err("repository name must be lowercase"));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(err(
                "a repository name is lowercase components of [a-z0-9] separated by `/`, joined inside by `.`, `_`, `__` or `-`",
            ));
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{path}")
        } else {
            path
        };
        if domain.len() + 1 + path.len() > 255 {
            return Err(err("repository name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `domain/path`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The short form Docker shows (`app:1.0`, `user/app:tag`, `localhost:5000/x:y`).
    pub fn familiar(&self) -> String {
        let repo = if self.domain == DEFAULT_DOMAIN {
            self.path
                .strip_prefix("library/")
                .filter(|p| !p.contains('/'))
                .unwrap_or(&self.path)
                .to_string()
        } else {
            self.repository()
        };
        self.with_suffix(repo)
    }

    fn with_suffix(&self, mut s: String) -> String {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

impl fmt::Display for Reference {
    /// The full normalised form (`docker.io/library/app:1.0`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.with_suffix(self.repository()))
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_as_docker_does() {
        assert_eq!(norm("app:1.0"), "docker.io/library/app:1.0");
        assert_eq!(norm("app"), "docker.io/library/app:latest");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            norm("index.docker.io/library/app:2"),
            "docker.io/library/app:2"
        );
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(
            norm("localhost:5000/team/app:v1"),
            "localhost:5000/team/app:v1"
        );
        assert_eq!(norm("127.0.0.1:5000/x"), "127.0.0.1:5000/x:latest");
        assert_eq!(norm("[::1]:5000/x:y"), "[::1]:5000/x:y");
        assert_eq!(
            norm("mcr.microsoft.com/windows/nanoserver:ltsc2022"),
            "mcr.microsoft.com/windows/nanoserver:ltsc2022"
        );
        assert_eq!(
            norm(&format!("app@{D}")),
            format!("docker.io/library/app@{D}")
        );
        assert_eq!(
            norm(&format!("app:1.0@{D}")),
            format!("docker.io/library/app:1.0@{D}")
        );
        assert_eq!(norm("a/b/c/d:e"), "docker.io/a/b/c/d:e");
        assert_eq!(norm("my-app__x.y:1"), "docker.io/library/my-app__x.y:1");
    }

    #[test]
    fn familiar_form() {
        assert_eq!(Reference::parse("app:1.0").unwrap().familiar(), "app:1.0");
        assert_eq!(
            Reference::parse("docker.io/user/app").unwrap().familiar(),
            "user/app:latest"
        );
        assert_eq!(
            Reference::parse("localhost:5000/x:y").unwrap().familiar(),
            "localhost:5000/x:y"
        );
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "App:1.0",
            "app:",
            "app:-x",
            "app:.x",
            "a..b",
            "a/-b",
            "a//b",
            "app@sha256:123",
            "-app",
            "app_",
            "reg.io:port/x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long_tag = format!("app:{}", "a".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
        assert!(Reference::parse(&format!("app:{}", "a".repeat(128))).is_ok());
        assert!(Reference::parse(&format!("app@{}", &D[..D.len() - 1])).is_err());
        let e = Reference::parse("App:1.0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid reference `App:1.0`: repository name must be lowercase"
        );
        // Upper case is fine in a registry host.
        assert!(Reference::parse("Registry.Example.com/x").is_ok());
    }

    #[test]
    fn digests() {
        let d = Digest::parse(D).unwrap();
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.to_string(), D);
        assert!(Digest::parse("sha256:ABC").is_err());
        assert!(Digest::parse("md5").is_err());
        assert!(Digest::parse(&format!("sha512:{}", "a".repeat(128))).is_ok());
    }
}
