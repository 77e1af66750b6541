//! `wcbuild compat`: whether a Windows image can run on this Windows host (or one described
//! by version and SKU), under which isolation, and why not otherwise. The answer is
//! `image::compat::compatibility`, the rule `pull`, `FROM` and `build --isolation` use too.
//! An image named by reference is read from the store (never pulled); for a multi-version
//! index the entry this host would pull (`image::compat::choose_for_host`) is the one answered
//! for, and every Windows entry is listed.

use super::host::{self, HostError};
use super::images::{self, ImageError};
use crate::image::compat::{self, Compatibility, Verdict};
use crate::image::{
    ImageConfig, Index, Manifest, Platform, Sku, WindowsHost, WindowsVersion, media,
};
use crate::store::Store;
use serde::Serialize;

/// What can go wrong answering.
#[derive(Debug, thiserror::Error)]
pub enum CompatError {
    /// Not on Windows and no host described.
    #[error(
        "this host is not Windows, so a Windows host must be described: give --host-version 10.0.BUILD.REVISION (and --host-sku server|client)"
    )]
    HostNotDescribed,
    /// A version given on the command line does not parse.
    #[error(
        "{flag} `{value}` is not a Windows version (expected major.minor.build[.revision], e.g. 10.0.20348.2227)"
    )]
    BadVersion {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
    },
    /// The host override variables do not parse.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The image cannot be read from the store.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The image is not a Windows image.
    #[error(
        "`{reference}` is a {platform} image, not a Windows one: Windows isolation does not apply"
    )]
    NotWindows {
        /// The reference.
        reference: String,
        /// Its platform(s).
        platform: String,
    },
    /// The image records no `os.version`.
    #[error("`{reference}` records no os.version, so which Windows hosts run it is not known")]
    NoOsVersion {
        /// The reference (and entry digest for an index).
        reference: String,
    },
}

impl CompatError {
    /// True for errors in what the user typed (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            CompatError::HostNotDescribed | CompatError::BadVersion { .. } | CompatError::Host(_)
        )
    }
}

/// One isolation's answer, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictJson {
    /// Allowed by Microsoft's table.
    pub allowed: bool,
    /// Why.
    pub reason: String,
}

impl From<&Verdict> for VerdictJson {
    fn from(v: &Verdict) -> Self {
        VerdictJson {
            allowed: v.allowed,
            reason: v.reason.clone(),
        }
    }
}

/// The index or manifest entry answered for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryJson {
    /// The manifest's digest.
    pub digest: String,
    /// Its platform (`windows/amd64:10.0.20348.2849`).
    pub platform: String,
}

/// One Windows entry of an index, summarised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexEntryJson {
    /// The manifest's digest.
    pub digest: String,
    /// Its platform.
    pub platform: String,
    /// Process isolation runs it.
    pub process: bool,
    /// Hyper-V isolation runs it.
    pub hyperv: bool,
    /// What `auto` picks (`null`: nothing runs it).
    pub auto: Option<&'static str>,
    /// The entry this host pulls.
    pub chosen: bool,
}

/// The answer of `wcbuild compat`; its JSON form is the command's `--json` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompatReport {
    /// The image's `os.version` as recorded (or given).
    pub image_os_version: String,
    /// The host's version (given, described or detected).
    pub host_version: String,
    /// `server` or `client`.
    pub host_sku: &'static str,
    /// Process isolation.
    pub process: VerdictJson,
    /// Hyper-V isolation.
    pub hyperv: VerdictJson,
    /// `process`, `hyperv`, or `null` when neither runs the image.
    pub auto: Option<&'static str>,
    /// Why `auto` picks it, or the error naming both versions when it picks nothing.
    #[serde(skip)]
    pub auto_reason: String,
    /// The reference asked about (when an image was named).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The manifest answered for (when an image was named; for an index, the entry this host
    /// pulls, or the newest when it can run none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryJson>,
    /// Every Windows entry of an index (when the image is an index).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<IndexEntryJson>>,
    /// True when an index holds no entry this host can run.
    #[serde(skip)]
    pub no_runnable_entry: bool,
}

impl CompatReport {
    /// True when some isolation runs the image (exit code 0).
    pub fn runs(&self) -> bool {
        self.auto.is_some()
    }
}

fn parse_version(flag: &'static str, value: &str) -> Result<WindowsVersion, CompatError> {
    WindowsVersion::parse(value.trim()).ok_or_else(|| CompatError::BadVersion {
        flag,
        value: value.to_string(),
    })
}

/// The host to answer for: `--host-version` (with `--host-sku`, default server) when given,
/// else this Windows host (or the one `WCBUILD_HOST_WINDOWS_VERSION` describes), whose SKU
/// `--host-sku` may override.
pub fn resolve_host(
    host_version: Option<&str>,
    host_sku: Option<Sku>,
) -> Result<(WindowsHost, String), CompatError> {
    if let Some(v) = host_version {
        let version = parse_version("--host-version", v)?;
        let host = WindowsHost::new(version, host_sku.unwrap_or(Sku::Server));
        return Ok((host, v.trim().to_string()));
    }
    let mut host = host::windows_host()?.ok_or(CompatError::HostNotDescribed)?;
    if let Some(sku) = host_sku {
        host.sku = sku;
    }
    Ok((host, host.version.to_string()))
}

fn report(c: &Compatibility, image_os_version: &str, host_version: &str) -> CompatReport {
    CompatReport {
        image_os_version: image_os_version.to_string(),
        host_version: host_version.to_string(),
        host_sku: c.host.sku.as_str(),
        process: (&c.process).into(),
        hyperv: (&c.hyperv).into(),
        auto: c.auto.map(|i| i.as_str()),
        auto_reason: c.auto_reason.clone(),
        reference: None,
        entry: None,
        entries: None,
        no_runnable_entry: false,
    }
}

/// The answer for an image `os.version` given as text (`--image-os-version`).
pub fn check_version(
    host: &WindowsHost,
    host_version: &str,
    image_os_version: &str,
) -> Result<CompatReport, CompatError> {
    let image = parse_version("--image-os-version", image_os_version)?;
    Ok(report(
        &compat::compatibility(host, image),
        image_os_version.trim(),
        host_version,
    ))
}

fn read_json<T: serde::de::DeserializeOwned>(
    store: &Store,
    digest: &str,
    kind: &'static str,
) -> Result<T, CompatError> {
    let bytes = store.read_blob(digest).map_err(ImageError::from)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        CompatError::Image(ImageError::Invalid {
            what: digest.to_string(),
            kind,
            message: e.to_string(),
        })
    })
}

/// The platform of a manifest from its config.
fn manifest_platform(store: &Store, digest: &str) -> Result<Platform, CompatError> {
    let m: Manifest = read_json(store, digest, "manifest")?;
    let config: ImageConfig = read_json(store, &m.config.digest, "config")?;
    Ok(config.platform())
}

fn answer_for(
    host: &WindowsHost,
    host_version: &str,
    reference: &str,
    platform: &Platform,
) -> Result<CompatReport, CompatError> {
    let os_version = platform
        .os_version
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| CompatError::NoOsVersion {
            reference: reference.to_string(),
        })?;
    let image = WindowsVersion::parse(os_version).ok_or_else(|| {
        CompatError::Image(ImageError::Invalid {
            what: reference.to_string(),
            kind: "Windows image",
            message: format!("its os.version `{os_version}` is not major.minor.build[.revision]"),
        })
    })?;
    Ok(report(
        &compat::compatibility(host, image),
        os_version,
        host_version,
    ))
}

/// The answer for an image in the store. For an index: the entry `host` would pull (the same
/// choice `pull` and `FROM` make), or when it can run none the newest Windows entry, with
/// every Windows entry summarised.
pub fn check_reference(
    store: &Store,
    host: &WindowsHost,
    host_version: &str,
    reference: &str,
) -> Result<CompatReport, CompatError> {
    let e = images::resolve(store, reference)?;
    let full = e.reference().unwrap_or(reference).to_string();
    if !media::is_index(&e.media_type) {
        let platform = manifest_platform(store, &e.digest)?;
        if !platform.is_windows() {
            return Err(CompatError::NotWindows {
                reference: full,
                platform: platform.to_string(),
            });
        }
        let mut r = answer_for(host, host_version, &full, &platform)?;
        r.entry = Some(EntryJson {
            digest: e.digest.clone(),
            platform: platform.to_string(),
        });
        r.reference = Some(full);
        return Ok(r);
    }
    let idx: Index = read_json(store, &e.digest, "index")?;
    // Each manifest entry's platform: the descriptor's, completed from the config when the
    // descriptor lacks an os.version and the store has the manifest.
    let mut platforms: Vec<Option<Platform>> = Vec::new();
    for m in &idx.manifests {
        let mut p = m.platform.clone();
        if media::is_manifest(&m.media_type)
            && p.as_ref().is_none_or(|p| p.os_version.is_none())
            && store
                .blob_size(&m.digest)
                .map_err(ImageError::from)?
                .is_some()
        {
            let from_config = manifest_platform(store, &m.digest)?;
            if p.as_ref().is_none_or(|p| p.same_os_arch(&from_config)) {
                p = Some(from_config);
            }
        }
        platforms.push(p.filter(|_| media::is_manifest(&m.media_type)));
    }
    let windows: Vec<usize> = (0..platforms.len())
        .filter(|&i| platforms[i].as_ref().is_some_and(|p| p.is_windows()))
        .collect();
    if windows.is_empty() {
        let mut all: Vec<String> = platforms.iter().flatten().map(|p| p.to_string()).collect();
        all.dedup();
        return Err(CompatError::NotWindows {
            reference: full,
            platform: if all.is_empty() {
                "platform-less".into()
            } else {
                all.join(", ")
            },
        });
    }
    let host_platform = {
        let mut p = Platform::host();
        p.os = "windows".into();
        p
    };
    let refs: Vec<Option<&Platform>> = platforms.iter().map(|p| p.as_ref()).collect();
    let chosen = compat::choose_for_host(host, &host_platform, &refs);
    // Nothing runs: answer for the newest Windows entry of the host's architecture (else any).
    let answered = chosen.unwrap_or_else(|| {
        let same_arch: Vec<usize> = windows
            .iter()
            .copied()
            .filter(|&i| {
                platforms[i]
                    .as_ref()
                    .is_some_and(|p| p.architecture == host_platform.architecture)
            })
            .collect();
        let pool = if same_arch.is_empty() {
            &windows
        } else {
            &same_arch
        };
        pool.iter()
            .copied()
            .max_by_key(|&i| platforms[i].as_ref().and_then(|p| p.windows_version()))
            .expect("at least one Windows entry")
    });
    let mut entries = Vec::new();
    for &i in &windows {
        let p = platforms[i]
            .as_ref()
            .expect("a Windows entry has a platform");
        let c = p.windows_version().map(|v| compat::compatibility(host, v));
        entries.push(IndexEntryJson {
            digest: idx.manifests[i].digest.clone(),
            platform: p.to_string(),
            process: c.as_ref().is_some_and(|c| c.process.allowed),
            hyperv: c.as_ref().is_some_and(|c| c.hyperv.allowed),
            auto: c.as_ref().and_then(|c| c.auto).map(|i| i.as_str()),
            chosen: chosen == Some(i),
        });
    }
    let platform = platforms[answered].as_ref().expect("a Windows entry");
    let digest = &idx.manifests[answered].digest;
    let mut r = answer_for(host, host_version, &format!("{full}@{digest}"), platform)?;
    if platform.architecture != host_platform.architecture {
        let why = format!(
            "the image is for {}, the host {}",
            platform.architecture, host_platform.architecture
        );
        for v in [&mut r.process, &mut r.hyperv] {
            v.allowed = false;
            v.reason = why.clone();
        }
        r.auto = None;
        r.auto_reason = format!(
            "`{full}` has no Windows image for {}: {why}",
            host_platform.architecture
        );
    }
    r.no_runnable_entry = chosen.is_none();
    r.entry = Some(EntryJson {
        digest: digest.clone(),
        platform: platform.to_string(),
    });
    r.entries = Some(entries);
    r.reference = Some(full);
    Ok(r)
}

/// The entry `FROM` takes from a base index when no `--platform` was given, on `host` (a
/// Windows host; `None` elsewhere): the one `pull` takes (`image::compat::choose_for_host`).
/// `Ok(None)` when there is no Windows host or the index has no Windows entry (the caller
/// chooses as on other hosts); an error naming the host and the index's Windows versions when
/// it has Windows entries but the host runs none of them.
pub fn base_entry_for(
    host: Option<&WindowsHost>,
    base: &str,
    candidates: &[Option<&Platform>],
) -> Result<Option<usize>, String> {
    let Some(host) = host else { return Ok(None) };
    let windows: Vec<String> = candidates
        .iter()
        .flatten()
        .filter(|p| p.is_windows())
        .map(|p| p.to_string())
        .collect();
    if windows.is_empty() {
        return Ok(None);
    }
    let mut host_platform = Platform::host();
    host_platform.os = "windows".into();
    match compat::choose_for_host(host, &host_platform, candidates) {
        Some(i) => Ok(Some(i)),
        None => Err(format!(
            "`{base}` has no image the {} host {host} can run under either isolation; it has {}; choose one with --platform (see `wcbuild compat`)",
            host.sku,
            windows.join(", ")
        )),
    }
}

/// [`base_entry_for`] on this host: the machine's Windows version, or the one
/// `WCBUILD_HOST_WINDOWS_VERSION` describes.
pub fn base_entry(base: &str, candidates: &[Option<&Platform>]) -> Result<Option<usize>, String> {
    let host = host::windows_host().map_err(|e| e.to_string())?;
    base_entry_for(host.as_ref(), base, candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_entries_follow_the_pull_choice() {
        let p = |s: &str| Platform::parse(s).unwrap();
        let idx = [
            p("windows/amd64:10.0.17763.6414"),
            p("windows/amd64:10.0.20348.2849"),
            p("windows/amd64:10.0.26100.2314"),
            p("linux/amd64"),
        ];
        let refs: Vec<Option<&Platform>> = idx.iter().map(Some).collect();
        let h = |v: &str| WindowsHost::new(WindowsVersion::parse(v).unwrap(), Sku::Server);
        assert_eq!(base_entry_for(None, "b", &refs), Ok(None));
        assert_eq!(
            base_entry_for(Some(&h("10.0.26200.1")), "b", &refs),
            Ok(Some(2))
        );
        assert_eq!(
            base_entry_for(Some(&h("10.0.20348.1")), "b", &refs),
            Ok(Some(1))
        );
        assert_eq!(
            base_entry_for(Some(&h("10.0.19045.1")), "b", &refs),
            Ok(Some(0))
        );
        let e = base_entry_for(Some(&h("10.0.14393.1914")), "nano:multi", &refs).unwrap_err();
        assert!(
            e.starts_with("`nano:multi` has no image the server host 10.0.14393.1914 (Windows Server 2016) can run")
                && e.contains("windows/amd64:10.0.17763.6414")
                && !e.contains("linux"),
            "{e}"
        );
        // A Linux-only index: not the Windows host's business.
        let linux = [p("linux/amd64"), p("linux/arm64")];
        let refs: Vec<Option<&Platform>> = linux.iter().map(Some).collect();
        assert_eq!(
            base_entry_for(Some(&h("10.0.26100.1")), "b", &refs),
            Ok(None)
        );
    }
}
