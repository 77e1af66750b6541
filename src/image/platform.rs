//! Platforms (`os/arch[/variant]`, with Windows `os.version` and `os.features`): parsing the
//! forms users type, normalising them as containerd does, and comparing Windows builds.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Windows LTSC shorthands and their build numbers.
pub const WINDOWS_LTSC: [(&str, &str); 3] = [
    ("ltsc2019", "10.0.17763"),
    ("ltsc2022", "10.0.20348"),
    ("ltsc2025", "10.0.26100"),
];

/// An OCI platform. Fields serialize in the order of the OCI Go types (architecture, os,
/// os.version, os.features, variant), so JSON written here matches other tools byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// Operating system (`linux`, `windows`).
    pub os: String,
    /// Windows `major.minor.build[.revision]`.
    #[serde(
        rename = "os.version",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub os_version: Option<String>,
    /// Required OS features (`win32k`).
    #[serde(rename = "os.features", skip_serializing_if = "Vec::is_empty", default)]
    pub os_features: Vec<String>,
    /// Architecture variant (`v7`, `v8`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variant: Option<String>,
}

/// A platform string that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform `{input}`: {reason}")]
pub struct PlatformError {
    /// What was given.
    pub input: String,
    /// Why it is not a platform.
    pub reason: String,
}

fn normalize_os(os: &str) -> String {
    let os = os.to_ascii_lowercase();
    match os.as_str() {
        "macos" => "darwin".into(),
        _ => os,
    }
}

/// containerd's architecture normalisation: (architecture, variant).
fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant
        .map(|v| v.to_ascii_lowercase())
        .filter(|v| !v.is_empty());
    match arch.as_str() {
        "i386" | "386" => ("386".into(), None),
        "x86_64" | "x86-64" | "amd64" => {
            let v = variant.filter(|v| v != "v1");
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            let v = variant.filter(|v| v != "8" && v != "v8");
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => {
            let v = match variant.as_deref() {
                None | Some("7") | Some("v7") => "v7".to_string(),
                Some("5") => "v5".into(),
                Some("6") => "v6".into(),
                Some("8") => "v8".into(),
                Some(other) => other.to_string(),
            };
            ("arm".into(), Some(v))
        }
        _ => (arch, variant),
    }
}

fn valid_component(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Platform {
    /// A platform from its parts, normalised.
    pub fn new(os: &str, architecture: &str) -> Platform {
        let (architecture, variant) = normalize_arch(architecture, None);
        Platform {
            os: normalize_os(os),
            architecture,
            variant,
            os_version: None,
            os_features: Vec::new(),
        }
    }

    /// Parses `os/arch[/variant]`, `os/arch[/variant]:VERSION` (VERSION is an `os.version` or
    /// `ltsc2019|ltsc2022|ltsc2025`), and `os(VERSION[+feature...])/arch[/variant]`.
    pub fn parse(input: &str) -> Result<Platform, PlatformError> {
        let err = |reason: &str| PlatformError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        let (body, suffix_version) = match s.rsplit_once(':') {
            Some((b, v)) => (b, Some(v)),
            None => (s, None),
        };
        let mut os_version = None;
        let mut os_features = Vec::new();
        let (os_part, rest) = match body.split_once('/') {
            Some((o, r)) => (o, Some(r)),
            None => (body, None),
        };
        let os = match os_part.split_once('(') {
            Some((os, inner)) => {
                let inner = inner
                    .strip_suffix(')')
                    .ok_or_else(|| err("missing `)` after the os version"))?;
                let mut parts = inner.split('+');
                let v = parts.next().unwrap_or("");
                if !v.is_empty() {
                    os_version = Some(v.to_string());
                }
                os_features = parts.filter(|f| !f.is_empty()).map(String::from).collect();
                os
            }
            None => os_part,
        };
        if !valid_component(os) {
            return Err(err(
                "expected os/arch, e.g. `linux/amd64` or `windows/amd64`",
            ));
        }
        let Some(rest) = rest else {
            // A bare OS: the host's architecture, as containerd does.
            let mut p = Platform::new(os, std::env::consts::ARCH);
            p.os_version = os_version;
            p.os_features = os_features;
            return Ok(p);
        };
        let mut parts = rest.split('/');
        let arch = parts.next().unwrap_or("");
        let variant = parts.next();
        if parts.next().is_some() {
            return Err(err("too many `/` (expected os/arch[/variant])"));
        }
        if !valid_component(arch) || variant.is_some_and(|v| !valid_component(v)) {
            return Err(err(
                "expected os/arch[/variant] made of letters, digits, `-` and `_`",
            ));
        }
        let (architecture, variant) = normalize_arch(arch, variant);
        if let Some(v) = suffix_version {
            let v = v.to_ascii_lowercase();
            let version = WINDOWS_LTSC
                .iter()
                .find(|(name, _)| *name == v)
                .map(|(_, b)| b.to_string())
                .unwrap_or(v);
            if WindowsVersion::parse(&version).is_none() {
                return Err(err(
                    "the os version after `:` must be major.minor.build[.revision] or ltsc2019, ltsc2022, ltsc2025",
                ));
            }
            os_version = Some(version);
        }
        if let Some(v) = &os_version
            && WindowsVersion::parse(v).is_none()
        {
            return Err(err("os.version must be major.minor.build[.revision]"));
        }
        Ok(Platform {
            os: normalize_os(os),
            architecture,
            variant,
            os_version,
            os_features,
        })
    }

    /// The platform of the machine running wcbuild.
    pub fn host() -> Platform {
        let os = match std::env::consts::OS {
            "macos" => "darwin",
            other => other,
        };
        Platform::new(os, std::env::consts::ARCH)
    }

    /// True for Windows.
    pub fn is_windows(&self) -> bool {
        self.os == "windows"
    }

    /// `os/arch[/variant]` without the version.
    pub fn os_arch(&self) -> String {
        let mut s = format!("{}/{}", self.os, self.architecture);
        if let Some(v) = &self.variant {
            s.push('/');
            s.push_str(v);
        }
        s
    }

    /// The Windows version, when set and well-formed.
    pub fn windows_version(&self) -> Option<WindowsVersion> {
        self.os_version.as_deref().and_then(WindowsVersion::parse)
    }

    /// Same os, architecture and variant (versions not compared).
    pub fn same_os_arch(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && self.variant == other.variant
    }
}

impl fmt::Display for Platform {
    /// `os/arch[/variant]`, then `:os.version` when set (the form `--platform` accepts).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.os_arch())?;
        if let Some(v) = &self.os_version {
            write!(f, ":{v}")?;
        }
        Ok(())
    }
}

/// A Windows version `major.minor.build.revision`, compared numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowsVersion {
    /// 10 for every current Windows.
    pub major: u32,
    /// 0.
    pub minor: u32,
    /// The build: 17763 (2019), 20348 (2022), 26100 (2025).
    pub build: u32,
    /// The update build revision (UBR); 0 when not given.
    pub revision: u32,
}

impl WindowsVersion {
    /// Parses `major.minor.build[.revision]`.
    pub fn parse(s: &str) -> Option<WindowsVersion> {
        let mut it = s.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        let build = it.next()?.parse().ok()?;
        let revision = match it.next() {
            Some(r) => r.parse().ok()?,
            None => 0,
        };
        if it.next().is_some() {
            return None;
        }
        Some(WindowsVersion {
            major,
            minor,
            build,
            revision,
        })
    }

    /// The LTSC name of this build, if it is one.
    pub fn ltsc_name(&self) -> Option<&'static str> {
        let b = format!("{}.{}.{}", self.major, self.minor, self.build);
        WINDOWS_LTSC.iter().find(|(_, v)| *v == b).map(|(n, _)| *n)
    }
}

impl fmt::Display for WindowsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}",
            self.major, self.minor, self.build, self.revision
        )
    }
}

/// Picks, among candidate platforms (e.g. an index's entries), the best for `wanted` (a
/// platform asked for; on a Windows host without one, `compat::choose_for_host` picks):
/// same os/arch/variant; for Windows with a requested version, the same build (revision
/// ignored) and then the highest revision, compared numerically; without a requested version,
/// the highest version. Returns the index of the chosen candidate.
pub fn choose(wanted: &Platform, candidates: &[Option<&Platform>]) -> Option<usize> {
    let mut best: Option<(usize, Option<WindowsVersion>)> = None;
    for (i, c) in candidates.iter().enumerate() {
        let Some(c) = c else { continue };
        if !c.same_os_arch(wanted) {
            continue;
        }
        let cv = c.windows_version();
        if let Some(w) = wanted.windows_version() {
            match cv {
                Some(v) if v.major == w.major && v.minor == w.minor && v.build == w.build => {
                    if w.revision != 0 && v.revision != w.revision {
                        continue;
                    }
                }
                _ => continue,
            }
        }
        let better = match &best {
            None => true,
            Some((_, bv)) => cv > *bv,
        };
        if better {
            best = Some((i, cv));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_users_type() {
        let p = Platform::parse("linux/amd64").unwrap();
        assert_eq!(
            (p.os.as_str(), p.architecture.as_str(), p.variant.clone()),
            ("linux", "amd64", None)
        );
        let p = Platform::parse("windows/amd64:10.0.20348").unwrap();
        assert_eq!(p.os_version.as_deref(), Some("10.0.20348"));
        assert_eq!(p.to_string(), "windows/amd64:10.0.20348");
        let p = Platform::parse("windows/amd64:ltsc2019").unwrap();
        assert_eq!(p.os_version.as_deref(), Some("10.0.17763"));
        let p = Platform::parse("windows(10.0.17763.5329+win32k)/amd64").unwrap();
        assert_eq!(p.os_version.as_deref(), Some("10.0.17763.5329"));
        assert_eq!(p.os_features, ["win32k"]);
        assert_eq!(
            Platform::parse("Linux/x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::parse("linux/aarch64").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/armhf").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
    }

    #[test]
    fn rejects_what_is_not_a_platform() {
        for bad in [
            "",
            "/amd64",
            "linux/",
            "linux/amd64/v8/x",
            "windows/amd64:ltsc2030",
            "windows/amd64:10.0",
            "lin ux/amd64",
        ] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        let e = Platform::parse("windows/amd64:ltsc2030").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid platform `windows/amd64:ltsc2030`")
        );
    }

    #[test]
    fn versions_compare_as_numbers() {
        let a = WindowsVersion::parse("10.0.20348.2966").unwrap();
        let b = WindowsVersion::parse("10.0.20348.587").unwrap();
        assert!(a > b, "string order would say otherwise");
        assert!(
            WindowsVersion::parse("10.0.9200").unwrap()
                < WindowsVersion::parse("10.0.17763").unwrap()
        );
        assert_eq!(a.ltsc_name(), Some("ltsc2022"));
    }

    #[test]
    fn choosing_an_index_entry() {
        let p = |s: &str| Platform::parse(s).unwrap();
        let entries = [
            p("windows/amd64:10.0.17763.5329"),
            p("windows/amd64:10.0.20348.587"),
            p("windows/amd64:10.0.20348.2966"),
            p("linux/amd64"),
        ];
        let refs: Vec<Option<&Platform>> = entries.iter().map(Some).collect();
        assert_eq!(choose(&p("windows/amd64:ltsc2022"), &refs), Some(2));
        assert_eq!(choose(&p("windows/amd64:10.0.20348.587"), &refs), Some(1));
        assert_eq!(choose(&p("windows/amd64:ltsc2019"), &refs), Some(0));
        assert_eq!(choose(&p("windows/amd64"), &refs), Some(2));
        assert_eq!(choose(&p("windows/amd64:ltsc2025"), &refs), None);
        assert_eq!(choose(&p("linux/amd64"), &refs), Some(3));
    }

    #[test]
    fn serde_uses_oci_field_names() {
        let p = Platform::parse("windows(10.0.20348.1+win32k)/amd64").unwrap();
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(
            j,
            r#"{"architecture":"amd64","os":"windows","os.version":"10.0.20348.1","os.features":["win32k"]}"#
        );
        let back: Platform = serde_json::from_str(&j).unwrap();
        assert_eq!(back, p);
    }
}
