//! Which isolation a Windows host can run a Windows image under, and why: Microsoft's
//! version-compatibility rule (windows-images.md §3) as one pure function, the isolation
//! `auto` picks (Docker's defaults), the decision a `RUN` step takes, and the index entry a
//! Windows host pulls (containerd's and moby's choice, §2.2).
//!
//! Every caller (`pull` on a Windows host, `FROM` of a multi-version index, `wcbuild compat`
//! and `build --isolation`) goes through [`compatibility`], so they cannot disagree.
//!
//! The rule, for a host `10.0.H.r` and an image `10.0.I.s` (numbers compared as numbers):
//! - major and minor must be equal, and both builds at least 14393 (Windows Server 2016, the
//!   first Windows with containers);
//! - an image newer than the host (`I > H`) runs under neither isolation;
//! - Hyper-V isolation runs every other image (the utility VM boots the image's own kernel);
//! - process isolation: hosts before Windows Server 2022 (`H < 20348`) need the same build,
//!   and before 1809 (`H < 17763`, Windows Server 2016) the same revision too (the host's
//!   revision must be known: a revision of 0 counts as not given); hosts from Windows Server
//!   2022 on run images from the LTSC before them up to their own build (host 20348: 20348
//!   only; up to 26100: 20348..=H; newer: 26100..=H), as containerd's
//!   `checkWindowsHostAndContainerCompat` does; client Windows before 1809 runs no
//!   process-isolated container at all (Microsoft's FAQ: "beginning with Windows 10 October
//!   2018 Update, we no longer disallow" process isolation on client Windows).
//!
//! What `auto` picks (moby `setDefaultIsolation`): process isolation on Windows Server,
//! Hyper-V on client Windows; Hyper-V when process isolation is not allowed; nothing (an
//! error naming both versions and Windows' own 0xc0370101 text) when neither is.

use super::platform::{Platform, WindowsVersion};
use std::fmt;
use std::str::FromStr;

/// The first Windows build with containers (Windows Server 2016, Windows 10 1607).
pub const FIRST_CONTAINER_BUILD: u32 = 14393;
/// Windows Server 2019 / Windows 10 1809: from this build on the revision need not match,
/// and client Windows may run process-isolated containers.
pub const BUILD_1809: u32 = 17763;
/// The LTSC releases after which hosts relax the process-isolation rule (containerd's
/// `compatLTSCReleases`): Windows Server 2022 and 2025.
pub const RELAXED_LTSC: [u32; 2] = [20348, 26100];

/// The text Windows gives when a container's OS does not match the host's
/// (`HCS_E_IMAGE_MISMATCH`), which users search for.
pub const MISMATCH_TEXT: &str = "The operating system of the container does not match the operating system of the host. (0xc0370101)";

/// Windows Server or client Windows (`RtlGetVersion`'s `wProductType`: 1 is a workstation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sku {
    /// Windows Server (a server or domain controller product type).
    Server,
    /// Windows 10 or 11 (a workstation product type).
    Client,
}

impl Sku {
    /// `server` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Sku::Server => "server",
            Sku::Client => "client",
        }
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not `server` or `client`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown Windows SKU `{0}`: expected server or client")]
pub struct SkuError(pub String);

impl FromStr for Sku {
    type Err = SkuError;
    fn from_str(s: &str) -> Result<Sku, SkuError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "server" => Ok(Sku::Server),
            "client" | "workstation" => Ok(Sku::Client),
            _ => Err(SkuError(s.to_string())),
        }
    }
}

/// A Windows host: its version (the revision is the UBR, 0 when not known) and SKU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowsHost {
    /// `10.0.build.revision`.
    pub version: WindowsVersion,
    /// Server or client.
    pub sku: Sku,
}

impl WindowsHost {
    /// A host from its parts.
    pub fn new(version: WindowsVersion, sku: Sku) -> WindowsHost {
        WindowsHost { version, sku }
    }
}

impl fmt::Display for WindowsHost {
    /// `10.0.26100.1742 (Windows Server 2025)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", describe(self.version, Some(self.sku)))
    }
}

/// How a Windows container is isolated: `auto` lets [`decide`] choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Isolation {
    /// Docker's default for the host's SKU, or Hyper-V when process isolation is not allowed.
    #[default]
    Auto,
    /// The container shares the host's kernel.
    Process,
    /// The container runs in a utility VM with the image's own kernel.
    HyperV,
}

impl Isolation {
    /// `auto`, `process` or `hyperv` (the words of `docker --isolation` and of the JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Auto => "auto",
            Isolation::Process => "process",
            Isolation::HyperV => "hyperv",
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not an isolation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown isolation `{0}`: expected auto, process or hyperv")]
pub struct IsolationError(pub String);

impl FromStr for Isolation {
    type Err = IsolationError;
    /// `auto` (or Docker's `default`), `process`, `hyperv` (or `hyper-v`); case-insensitive.
    fn from_str(s: &str) -> Result<Isolation, IsolationError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "default" => Ok(Isolation::Auto),
            "process" => Ok(Isolation::Process),
            "hyperv" | "hyper-v" => Ok(Isolation::HyperV),
            _ => Err(IsolationError(s.to_string())),
        }
    }
}

/// Whether one isolation can run the image, and why (a sentence users can read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allowed by Microsoft's table.
    pub allowed: bool,
    /// Why, naming builds and releases.
    pub reason: String,
}

impl Verdict {
    fn yes(reason: String) -> Verdict {
        Verdict {
            allowed: true,
            reason,
        }
    }
    fn no(reason: String) -> Verdict {
        Verdict {
            allowed: false,
            reason,
        }
    }
}

/// The answer for one host and one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compatibility {
    /// The host asked about.
    pub host: WindowsHost,
    /// The image's `os.version`.
    pub image: WindowsVersion,
    /// Process isolation.
    pub process: Verdict,
    /// Hyper-V isolation.
    pub hyperv: Verdict,
    /// What `auto` picks: `Process`, `HyperV`, or `None` when neither runs the image.
    pub auto: Option<Isolation>,
    /// Why `auto` picks it, or (when it picks nothing) the error naming both versions.
    pub auto_reason: String,
}

/// The release a build is known as (`Windows Server 2022`, `Windows 11 24H2`); images are
/// named by their server release, hosts by their SKU.
pub fn release_name(build: u32, sku: Option<Sku>) -> Option<&'static str> {
    let server = match build {
        14393 => "Windows Server 2016",
        16299 => "Windows Server 1709",
        17134 => "Windows Server 1803",
        17763 => "Windows Server 2019",
        18362 => "Windows Server 1903",
        18363 => "Windows Server 1909",
        19041 => "Windows Server 2004",
        19042 => "Windows Server 20H2",
        20348 => "Windows Server 2022",
        25398 => "Windows Server 23H2",
        26100 => "Windows Server 2025",
        _ => "",
    };
    if sku != Some(Sku::Client) {
        return (!server.is_empty()).then_some(server);
    }
    let client = match build {
        14393 => "Windows 10 1607",
        15063 => "Windows 10 1703",
        16299 => "Windows 10 1709",
        17134 => "Windows 10 1803",
        17763 => "Windows 10 1809",
        18362 => "Windows 10 1903",
        18363 => "Windows 10 1909",
        19041 => "Windows 10 2004",
        19042 => "Windows 10 20H2",
        19043 => "Windows 10 21H1",
        19044 => "Windows 10 21H2",
        19045 => "Windows 10 22H2",
        22000 => "Windows 11 21H2",
        22621 => "Windows 11 22H2",
        22631 => "Windows 11 23H2",
        26100 => "Windows 11 24H2",
        26200 => "Windows 11 25H2",
        _ => "",
    };
    (!client.is_empty()).then_some(client)
}

/// `10.0.20348.2227 (Windows Server 2022)`, or the bare version for an unnamed build (images
/// are named by their server release: `sku` `None`).
pub fn describe(v: WindowsVersion, sku: Option<Sku>) -> String {
    match (v.major, v.minor, release_name(v.build, sku)) {
        (10, 0, Some(name)) => format!("{v} ({name})"),
        _ => v.to_string(),
    }
}

/// `build 20348 (Windows Server 2022)`.
fn build_name(build: u32, sku: Option<Sku>) -> String {
    match release_name(build, sku) {
        Some(name) => format!("build {build} ({name})"),
        None => format!("build {build}"),
    }
}

/// The oldest image build a host at or after Windows Server 2022 runs process-isolated: the
/// LTSC before it (containerd: the newest LTSC strictly older than the host, else 20348).
pub fn oldest_process_build(host_build: u32) -> Option<u32> {
    if host_build < RELAXED_LTSC[0] {
        return None;
    }
    Some(
        RELAXED_LTSC
            .iter()
            .rev()
            .copied()
            .find(|&l| host_build > l)
            .unwrap_or(RELAXED_LTSC[0]),
    )
}

/// A reason neither isolation can run the image, when there is one that holds for both.
fn common_refusal(host: &WindowsHost, image: WindowsVersion) -> Option<String> {
    let h = host.version;
    if (h.major, h.minor) != (image.major, image.minor) {
        return Some(format!(
            "the image is Windows {}.{} and the host Windows {}.{}: Windows containers need the same major and minor version",
            image.major, image.minor, h.major, h.minor
        ));
    }
    if h.build < FIRST_CONTAINER_BUILD {
        return Some(format!(
            "the host's build {} is older than {}, the first Windows with containers",
            h.build,
            build_name(FIRST_CONTAINER_BUILD, Some(host.sku))
        ));
    }
    if image.build < FIRST_CONTAINER_BUILD {
        return Some(format!(
            "the image's build {} is older than {}, the first Windows container base image",
            image.build,
            build_name(FIRST_CONTAINER_BUILD, None)
        ));
    }
    if image.build > h.build {
        return Some(format!(
            "the image's {} is newer than the host's {}: no isolation runs an image newer than its host",
            build_name(image.build, None),
            build_name(h.build, Some(host.sku))
        ));
    }
    None
}

fn process_verdict(host: &WindowsHost, image: WindowsVersion) -> Verdict {
    if let Some(why) = common_refusal(host, image) {
        return Verdict::no(why);
    }
    let h = host.version;
    if host.sku == Sku::Client && h.build < BUILD_1809 {
        return Verdict::no(format!(
            "client Windows before 1809 (build {BUILD_1809}) runs containers in Hyper-V isolation only; the host is {}",
            build_name(h.build, Some(host.sku))
        ));
    }
    match oldest_process_build(h.build) {
        None => {
            if image.build != h.build {
                return Verdict::no(format!(
                    "a host before Windows Server 2022 runs process-isolated only images of its own build: the host's is {}, the image's {}",
                    build_name(h.build, Some(host.sku)),
                    build_name(image.build, None)
                ));
            }
            if h.build < BUILD_1809 {
                if h.revision == 0 {
                    return Verdict::no(format!(
                        "{} runs process-isolated only images of the host's own revision, and the host's revision is not known (the image's is {})",
                        build_name(h.build, Some(host.sku)),
                        image
                    ));
                }
                if image.revision != h.revision {
                    return Verdict::no(format!(
                        "{} runs process-isolated only images of the host's own revision: the host is {}, the image {}",
                        build_name(h.build, Some(host.sku)),
                        h,
                        image
                    ));
                }
                return Verdict::yes(format!(
                    "the image is the host's build and revision ({image}), as {} requires",
                    build_name(h.build, Some(host.sku))
                ));
            }
            Verdict::yes(format!(
                "the image's build {} is the host's (from 1809 on the revision need not match)",
                image.build
            ))
        }
        Some(oldest) => {
            if image.build < oldest {
                let range = if oldest == h.build {
                    format!("only images of its own build {oldest}")
                } else {
                    format!(
                        "images from {}, the LTSC before it, up to its own build",
                        build_name(oldest, None)
                    )
                };
                return Verdict::no(format!(
                    "the host's {} runs process-isolated {range}; the image's {} is older",
                    build_name(h.build, Some(host.sku)),
                    build_name(image.build, None)
                ));
            }
            if image.build == h.build {
                Verdict::yes(format!(
                    "the image's build {} is the host's (the revision need not match)",
                    image.build
                ))
            } else {
                Verdict::yes(format!(
                    "the host's {} runs process-isolated images from {} up to its own build, and the image's is {}",
                    build_name(h.build, Some(host.sku)),
                    build_name(oldest, None),
                    build_name(image.build, None)
                ))
            }
        }
    }
}

fn hyperv_verdict(host: &WindowsHost, image: WindowsVersion) -> Verdict {
    if let Some(why) = common_refusal(host, image) {
        return Verdict::no(why);
    }
    if image.build == host.version.build {
        Verdict::yes(format!(
            "the image's build {} is the host's; the utility VM boots the image's own kernel",
            image.build
        ))
    } else {
        Verdict::yes(format!(
            "the image's {} is older than the host's {}; the utility VM boots the image's own kernel",
            build_name(image.build, None),
            build_name(host.version.build, Some(host.sku))
        ))
    }
}

/// The error when neither isolation runs the image: both versions, both reasons, and Windows'
/// own 0xc0370101 text.
pub fn mismatch_error(
    host: &WindowsHost,
    image: WindowsVersion,
    process: &str,
    hyperv: &str,
) -> String {
    let both = if process == hyperv {
        format!("neither process nor Hyper-V isolation can run it: {process}")
    } else {
        format!("process isolation: {process}; Hyper-V isolation: {hyperv}")
    };
    format!(
        "the Windows image {} cannot run on the {} host {}: {both} (Windows reports \"{MISMATCH_TEXT}\")",
        describe(image, None),
        host.sku,
        describe(host.version, Some(host.sku)),
    )
}

/// Microsoft's table for one host and one image: each isolation allowed or not and why, and
/// what `auto` picks.
pub fn compatibility(host: &WindowsHost, image: WindowsVersion) -> Compatibility {
    let process = process_verdict(host, image);
    let hyperv = hyperv_verdict(host, image);
    let (auto, auto_reason) = match (host.sku, process.allowed, hyperv.allowed) {
        (Sku::Server, true, _) => (
            Some(Isolation::Process),
            format!(
                "process isolation, Docker's default on Windows Server: {}",
                process.reason
            ),
        ),
        (Sku::Client, _, true) => (
            Some(Isolation::HyperV),
            format!(
                "Hyper-V isolation, Docker's default on client Windows: {}",
                hyperv.reason
            ),
        ),
        (Sku::Server, false, true) => (
            Some(Isolation::HyperV),
            format!(
                "Hyper-V isolation, because process isolation is not allowed ({}): {}",
                process.reason, hyperv.reason
            ),
        ),
        (Sku::Client, true, false) => (
            Some(Isolation::Process),
            format!(
                "process isolation, because Hyper-V isolation is not allowed ({}): {}",
                hyperv.reason, process.reason
            ),
        ),
        (_, false, false) => (
            None,
            mismatch_error(host, image, &process.reason, &hyperv.reason),
        ),
    };
    Compatibility {
        host: *host,
        image,
        process,
        hyperv,
        auto,
        auto_reason,
    }
}

/// The isolation a `RUN` step gets on `host` for an image of `image` (its `os.version`, when
/// it records one), as `requested`: `auto` follows [`compatibility`]; `process` and `hyperv`
/// are checked against it. The reason goes into progress output and `--metadata-file`; the
/// error names both versions (and the 0xc0370101 text) and, when the other isolation would
/// work, says so.
pub fn decide(
    host: &WindowsHost,
    image: Option<WindowsVersion>,
    requested: Isolation,
) -> Result<(Isolation, String), String> {
    let Some(image) = image else {
        return match requested {
            Isolation::Auto => Err(format!(
                "the image records no os.version, so whether the {} host {} can run it is not known; choose --isolation process or hyperv",
                host.sku,
                describe(host.version, Some(host.sku))
            )),
            other => Ok((
                other,
                format!(
                    "{} isolation as asked; the image records no os.version, so it was not checked against the host",
                    if other == Isolation::Process {
                        "process"
                    } else {
                        "Hyper-V"
                    }
                ),
            )),
        };
    };
    let c = compatibility(host, image);
    let other_hint = |other: Isolation, v: &Verdict| {
        if v.allowed {
            format!("; --isolation {other} would run it ({})", v.reason)
        } else {
            String::new()
        }
    };
    match requested {
        Isolation::Auto => match c.auto {
            Some(i) => Ok((i, c.auto_reason)),
            None => Err(c.auto_reason),
        },
        Isolation::Process if c.process.allowed => Ok((
            Isolation::Process,
            format!("process isolation as asked: {}", c.process.reason),
        )),
        Isolation::HyperV if c.hyperv.allowed => Ok((
            Isolation::HyperV,
            format!("Hyper-V isolation as asked: {}", c.hyperv.reason),
        )),
        Isolation::Process => Err(format!(
            "process isolation cannot run the Windows image {} on the {} host {}: {} (Windows reports \"{MISMATCH_TEXT}\"){}",
            describe(image, None),
            host.sku,
            describe(host.version, Some(host.sku)),
            c.process.reason,
            other_hint(Isolation::HyperV, &c.hyperv)
        )),
        Isolation::HyperV => Err(format!(
            "Hyper-V isolation cannot run the Windows image {} on the {} host {}: {} (Windows reports \"{MISMATCH_TEXT}\"){}",
            describe(image, None),
            host.sku,
            describe(host.version, Some(host.sku)),
            c.hyperv.reason,
            other_hint(Isolation::Process, &c.process)
        )),
    }
}

/// The index entry a Windows host pulls and builds `FROM`, among `candidates` (an index's
/// entries' platforms, `None` for an entry without one). Only Windows entries of the host's architecture (and variant) count; `os.features`
/// such as `win32k` are not compared (containerd strips `win32k` since 2026).
///
/// The order is containerd's (`windowsMatchComparer`: entries the host runs process-isolated
/// first, then the newer `os.version`), with versions compared as numbers rather than as
/// strings; an entry without `os.version` matches, as in containerd, but ranks below every
/// versioned one. When no entry runs process-isolated, the newest that Hyper-V runs is taken
/// (moby's pull keeps entries older than the host for that reason); entries newer than the
/// host or with a malformed `os.version` are never taken.
pub fn choose_for_host(
    host: &WindowsHost,
    host_platform: &Platform,
    candidates: &[Option<&Platform>],
) -> Option<usize> {
    // (tier, version, index): tier 2 = process-isolated, 1 = Hyper-V only.
    let mut best: Option<(u8, Option<WindowsVersion>, usize)> = None;
    for (i, c) in candidates.iter().enumerate() {
        let Some(c) = c else { continue };
        if !c.is_windows()
            || c.architecture != host_platform.architecture
            || c.variant != host_platform.variant
        {
            continue;
        }
        let (tier, version) = match c.os_version.as_deref() {
            None | Some("") => (2, None),
            Some(s) => {
                let Some(v) = WindowsVersion::parse(s) else {
                    continue;
                };
                let cmp = compatibility(host, v);
                if cmp.process.allowed {
                    (2, Some(v))
                } else if cmp.hyperv.allowed {
                    (1, Some(v))
                } else {
                    continue;
                }
            }
        };
        let better = match &best {
            None => true,
            Some((bt, bv, _)) => (tier, version) > (*bt, *bv),
        };
        if better {
            best = Some((tier, version, i));
        }
    }
    best.map(|(_, _, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> WindowsVersion {
        WindowsVersion::parse(s).unwrap()
    }

    fn host(s: &str, sku: Sku) -> WindowsHost {
        WindowsHost::new(v(s), sku)
    }

    /// The image columns of Microsoft's table (windows-images.md §3): 2025, 2022, 2019, 2016.
    const IMAGES: [&str; 4] = [
        "10.0.26100.2314",
        "10.0.20348.2849",
        "10.0.17763.6414",
        "10.0.14393.7515",
    ];

    /// Every row of the table, and the rows the relaxed rule adds (Windows Server 23H2,
    /// Windows 11 before and after 24H2): `P` process, `H` Hyper-V, `-` neither.
    const TABLE: [(&str, Sku, &str, [&str; 4]); 12] = [
        (
            "WS2025",
            Sku::Server,
            "10.0.26100.1742",
            ["PH", "PH", "H", "H"],
        ),
        (
            "WS 23H2",
            Sku::Server,
            "10.0.25398.1251",
            ["-", "PH", "H", "H"],
        ),
        (
            "WS2022",
            Sku::Server,
            "10.0.20348.2227",
            ["-", "PH", "H", "H"],
        ),
        (
            "WS2019",
            Sku::Server,
            "10.0.17763.5329",
            ["-", "-", "PH", "H"],
        ),
        (
            "WS2016",
            Sku::Server,
            "10.0.14393.7515",
            ["-", "-", "-", "PH"],
        ),
        (
            "Win11 25H2",
            Sku::Client,
            "10.0.26200.6584",
            ["PH", "H", "H", "H"],
        ),
        (
            "Win11 24H2",
            Sku::Client,
            "10.0.26100.2033",
            ["PH", "PH", "H", "H"],
        ),
        (
            "Win11 23H2",
            Sku::Client,
            "10.0.22631.4460",
            ["-", "PH", "H", "H"],
        ),
        (
            "Win11 22H2",
            Sku::Client,
            "10.0.22621.4317",
            ["-", "PH", "H", "H"],
        ),
        (
            "Win11 21H2",
            Sku::Client,
            "10.0.22000.2538",
            ["-", "PH", "H", "H"],
        ),
        (
            "Win10 22H2",
            Sku::Client,
            "10.0.19045.5131",
            ["-", "-", "H", "H"],
        ),
        (
            "Win10 21H2",
            Sku::Client,
            "10.0.19044.5131",
            ["-", "-", "H", "H"],
        ),
    ];

    fn other(sku: Sku) -> Sku {
        match sku {
            Sku::Server => Sku::Client,
            Sku::Client => Sku::Server,
        }
    }

    #[test]
    fn every_cell_of_microsofts_table() {
        let mut cells = 0;
        for (row, sku, hv, expected) in TABLE {
            for (image, cell) in IMAGES.iter().zip(expected) {
                // The cell holds for the row's SKU and, build for build, for the other SKU
                // (Windows Server 2025 and Windows 11 24H2 are both build 26100), except
                // that client Windows before 1809 (Windows 10 1607) is Hyper-V only.
                for s in [sku, other(sku)] {
                    let c = compatibility(&host(hv, s), v(image));
                    let what = format!("{row} as {s} × {image}: {c:?}");
                    let process =
                        cell.contains('P') && !(s == Sku::Client && v(hv).build < BUILD_1809);
                    assert_eq!(c.process.allowed, process, "process, {what}");
                    assert_eq!(c.hyperv.allowed, cell.contains('H'), "hyperv, {what}");
                    let auto = match (s, c.process.allowed, c.hyperv.allowed) {
                        (Sku::Server, true, _) => Some(Isolation::Process),
                        (_, _, true) => Some(Isolation::HyperV),
                        _ => None,
                    };
                    assert_eq!(c.auto, auto, "auto, {what}");
                    assert!(!c.process.reason.is_empty() && !c.hyperv.reason.is_empty());
                    assert!(!c.process.reason.ends_with('.'), "{}", c.process.reason);
                    if auto.is_none() {
                        assert!(c.auto_reason.contains(MISMATCH_TEXT), "{what}");
                        assert!(c.auto_reason.contains(&v(hv).to_string()), "{what}");
                        assert!(c.auto_reason.contains(image), "{what}");
                    }
                    cells += 1;
                }
            }
        }
        assert_eq!(cells, TABLE.len() * IMAGES.len() * 2);
    }

    #[test]
    fn docker_defaults_per_sku() {
        let ws = compatibility(&host("10.0.20348.1", Sku::Server), v("10.0.20348.5"));
        assert_eq!(ws.auto, Some(Isolation::Process));
        assert!(
            ws.auto_reason
                .starts_with("process isolation, Docker's default on Windows Server")
        );
        let w11 = compatibility(&host("10.0.22631.1", Sku::Client), v("10.0.20348.5"));
        assert!(w11.process.allowed);
        assert_eq!(w11.auto, Some(Isolation::HyperV));
        assert!(
            w11.auto_reason.contains("default on client Windows"),
            "{}",
            w11.auto_reason
        );
        let old = compatibility(&host("10.0.26100.1", Sku::Server), v("10.0.17763.5"));
        assert_eq!(old.auto, Some(Isolation::HyperV));
        assert!(
            old.auto_reason.contains("process isolation is not allowed"),
            "{}",
            old.auto_reason
        );
    }

    #[test]
    fn windows_server_2016_needs_the_same_revision() {
        let h = host("10.0.14393.1914", Sku::Server);
        let c = compatibility(&h, v("10.0.14393.1944"));
        assert!(!c.process.allowed);
        assert!(
            c.process.reason.contains("10.0.14393.1914"),
            "{}",
            c.process.reason
        );
        assert!(
            c.process.reason.contains("10.0.14393.1944"),
            "{}",
            c.process.reason
        );
        assert!(c.hyperv.allowed);
        assert_eq!(c.auto, Some(Isolation::HyperV));
        // Older revision: still not the same.
        assert!(!compatibility(&h, v("10.0.14393.1770")).process.allowed);
        assert!(compatibility(&h, v("10.0.14393.1914")).process.allowed);
        // The revision compares as a number: 1914 is not 19140.
        assert!(!compatibility(&h, v("10.0.14393.19140")).process.allowed);
        // A host whose revision is not known cannot be checked.
        let c = compatibility(&host("10.0.14393", Sku::Server), v("10.0.14393.1914"));
        assert!(!c.process.allowed);
        assert!(
            c.process.reason.contains("not known"),
            "{}",
            c.process.reason
        );
        // Pre-1809 semi-annual releases are as strict.
        assert!(
            !compatibility(&host("10.0.17134.1", Sku::Server), v("10.0.17134.2"))
                .process
                .allowed
        );
        assert!(
            compatibility(&host("10.0.17134.2", Sku::Server), v("10.0.17134.2"))
                .process
                .allowed
        );
        // From 1809 on the revision is free, either way.
        for (hv, iv) in [
            ("10.0.17763.1", "10.0.17763.6414"),
            ("10.0.17763.6414", "10.0.17763.1"),
            ("10.0.20348.2227", "10.0.20348.887"),
            ("10.0.26100.1", "10.0.26100.2314"),
        ] {
            assert!(
                compatibility(&host(hv, Sku::Server), v(iv)).process.allowed,
                "{hv} {iv}"
            );
        }
    }

    #[test]
    fn client_windows_before_1809_is_hyperv_only() {
        let c = compatibility(&host("10.0.14393.1914", Sku::Client), v("10.0.14393.1914"));
        assert!(!c.process.allowed);
        assert!(
            c.process.reason.contains("before 1809"),
            "{}",
            c.process.reason
        );
        assert!(c.hyperv.allowed);
        let c = compatibility(&host("10.0.17763.1", Sku::Client), v("10.0.17763.99"));
        assert!(c.process.allowed, "{c:?}");
        assert_eq!(c.auto, Some(Isolation::HyperV));
    }

    #[test]
    fn relaxed_rule_bounds() {
        assert_eq!(oldest_process_build(17763), None);
        assert_eq!(oldest_process_build(20348), Some(20348));
        assert_eq!(oldest_process_build(20349), Some(20348));
        assert_eq!(oldest_process_build(26100), Some(20348));
        assert_eq!(oldest_process_build(26101), Some(26100));
        assert_eq!(oldest_process_build(26200), Some(26100));
        let p = |h: &str, i: &str| compatibility(&host(h, Sku::Server), v(i)).process.allowed;
        assert!(p("10.0.20348.1", "10.0.20348.5"));
        assert!(!p("10.0.20348.1", "10.0.17763.5"));
        assert!(p("10.0.26100.1", "10.0.20348.5"));
        assert!(p("10.0.26100.1", "10.0.22000.5"));
        assert!(p("10.0.26200.1", "10.0.26100.5"));
        assert!(p("10.0.26200.1", "10.0.26200.5"));
        assert!(!p("10.0.26200.1", "10.0.20348.5"));
        assert!(!p("10.0.20348.1", "10.0.26100.5"));
        assert!(!p("10.0.26200.1", "10.0.26201.0"));
        // The build compares as a number: 9200 is older than 17763, not newer.
        let c = compatibility(&host("10.0.17763.1", Sku::Server), v("10.0.9200.1"));
        assert!(!c.hyperv.allowed && c.hyperv.reason.contains("older than build 14393"));
        let reason = compatibility(&host("10.0.26200.1", Sku::Server), v("10.0.20348.5"))
            .process
            .reason;
        assert!(
            reason.contains("build 26100 (Windows Server 2025)"),
            "{reason}"
        );
    }

    #[test]
    fn what_is_not_windows_10_runs_nowhere() {
        for (h, i) in [
            ("6.3.9600.1", "6.3.9600.1"),
            ("10.0.26100.1", "6.3.9600.1"),
            ("10.0.26100.1", "11.0.26100.1"),
            ("10.1.26100.1", "10.0.26100.1"),
            ("10.0.10240.1", "10.0.10240.1"),
        ] {
            let c = compatibility(&host(h, Sku::Server), v(i));
            assert!(
                !c.process.allowed && !c.hyperv.allowed && c.auto.is_none(),
                "{h} {i}: {c:?}"
            );
        }
        let c = compatibility(&host("10.0.10240.1", Sku::Server), v("10.0.10240.1"));
        assert!(
            c.process.reason.contains("first Windows with containers"),
            "{}",
            c.process.reason
        );
    }

    #[test]
    fn mismatch_names_both_versions_and_the_windows_text() {
        let c = compatibility(&host("10.0.20348.2227", Sku::Server), v("10.0.26100.2314"));
        assert_eq!(c.auto, None);
        assert_eq!(
            c.auto_reason,
            "the Windows image 10.0.26100.2314 (Windows Server 2025) cannot run on the server host 10.0.20348.2227 (Windows Server 2022): neither process nor Hyper-V isolation can run it: the image's build 26100 (Windows Server 2025) is newer than the host's build 20348 (Windows Server 2022): no isolation runs an image newer than its host (Windows reports \"The operating system of the container does not match the operating system of the host. (0xc0370101)\")"
        );
    }

    #[test]
    fn isolation_and_sku_words() {
        for (word, want) in [
            ("auto", Isolation::Auto),
            ("default", Isolation::Auto),
            ("process", Isolation::Process),
            ("Process", Isolation::Process),
            ("hyperv", Isolation::HyperV),
            ("hyper-v", Isolation::HyperV),
            ("HYPERV", Isolation::HyperV),
        ] {
            assert_eq!(word.parse::<Isolation>(), Ok(want), "{word}");
        }
        for bad in ["", "vm", "hyper v", "processes"] {
            let e = bad.parse::<Isolation>().unwrap_err().to_string();
            assert!(e.starts_with("unknown isolation `"), "{e}");
        }
        for i in [Isolation::Auto, Isolation::Process, Isolation::HyperV] {
            assert_eq!(i.to_string().parse::<Isolation>(), Ok(i));
        }
        assert_eq!("Server".parse::<Sku>(), Ok(Sku::Server));
        assert_eq!("client".parse::<Sku>(), Ok(Sku::Client));
        assert!("desktop".parse::<Sku>().is_err());
        assert_eq!(Isolation::default(), Isolation::Auto);
    }

    #[test]
    fn decide_per_step() {
        let ws2025 = host("10.0.26100.1742", Sku::Server);
        let (i, why) = decide(&ws2025, Some(v("10.0.20348.2849")), Isolation::Auto).unwrap();
        assert_eq!(i, Isolation::Process);
        assert!(why.contains("build 20348"), "{why}");
        let (i, _) = decide(&ws2025, Some(v("10.0.17763.1")), Isolation::Auto).unwrap();
        assert_eq!(i, Isolation::HyperV);
        let (i, why) = decide(&ws2025, Some(v("10.0.26100.1")), Isolation::HyperV).unwrap();
        assert_eq!(i, Isolation::HyperV);
        assert!(why.starts_with("Hyper-V isolation as asked"), "{why}");
        let e = decide(&ws2025, Some(v("10.0.17763.1")), Isolation::Process).unwrap_err();
        assert!(
            e.contains("10.0.17763.1") && e.contains("10.0.26100.1742"),
            "{e}"
        );
        assert!(
            e.contains("0xc0370101") && e.contains("--isolation hyperv would run it"),
            "{e}"
        );
        let ws2022 = host("10.0.20348.2227", Sku::Server);
        let e = decide(&ws2022, Some(v("10.0.26100.1")), Isolation::HyperV).unwrap_err();
        assert!(
            e.contains("newer than the host's") && !e.contains("would run it"),
            "{e}"
        );
        let e = decide(&ws2022, Some(v("10.0.26100.1")), Isolation::Auto).unwrap_err();
        assert!(e.contains(MISMATCH_TEXT), "{e}");
        // No os.version: auto cannot tell; an explicit choice is taken unchecked.
        assert!(
            decide(&ws2022, None, Isolation::Auto)
                .unwrap_err()
                .contains("no os.version")
        );
        let (i, why) = decide(&ws2022, None, Isolation::Process).unwrap();
        assert_eq!(i, Isolation::Process);
        assert!(why.contains("not checked"), "{why}");
    }

    fn index(entries: &[&str]) -> Vec<Platform> {
        entries
            .iter()
            .map(|s| Platform::parse(s).unwrap())
            .collect()
    }

    fn pick(host_v: &str, sku: Sku, entries: &[Platform]) -> Option<usize> {
        let refs: Vec<Option<&Platform>> = entries.iter().map(Some).collect();
        choose_for_host(
            &host(host_v, sku),
            &Platform::new("windows", "amd64"),
            &refs,
        )
    }

    #[test]
    fn the_entry_a_windows_host_pulls() {
        let mcr = index(&[
            "windows/amd64:10.0.17763.6414",
            "windows/amd64:10.0.20348.887",
            "windows/amd64:10.0.20348.2849",
            "windows/amd64:10.0.26100.2314",
            "linux/amd64",
            "windows/arm64:10.0.26100.2314",
        ]);
        // The host's own build, newest revision (887 < 2849 as numbers).
        assert_eq!(pick("10.0.20348.2227", Sku::Server, &mcr), Some(2));
        assert_eq!(pick("10.0.17763.1", Sku::Server, &mcr), Some(0));
        // Build 26200 runs 26100 process-isolated: the rule, not the exact build.
        assert_eq!(pick("10.0.26200.1", Sku::Server, &mcr), Some(3));
        assert_eq!(pick("10.0.26100.1", Sku::Client, &mcr), Some(3));
        // Windows 11 23H2: the 2022 entry runs process-isolated; 2025 is newer.
        assert_eq!(pick("10.0.22631.1", Sku::Client, &mcr), Some(2));
        // Windows 10 22H2 runs none process-isolated: the newest Hyper-V runs.
        assert_eq!(pick("10.0.19045.1", Sku::Client, &mcr), Some(0));
        // Windows Server 2016 runs none of them.
        assert_eq!(pick("10.0.14393.1914", Sku::Server, &mcr), None);
        // A process-isolated entry beats a newer Hyper-V-only one.
        let mixed = index(&["windows/amd64:10.0.20348.1", "windows/amd64:10.0.22000.1"]);
        assert_eq!(pick("10.0.26200.1", Sku::Server, &mixed), Some(1));
        let mixed = index(&["windows/amd64:10.0.17763.9", "windows/amd64:10.0.26100.1"]);
        assert_eq!(pick("10.0.26200.1", Sku::Server, &mixed), Some(1));
        assert_eq!(pick("10.0.20348.1", Sku::Server, &mixed), Some(0));
        // Windows Server 2016: the entry of the host's revision first.
        let ws2016 = index(&[
            "windows/amd64:10.0.14393.1944",
            "windows/amd64:10.0.14393.1914",
        ]);
        assert_eq!(pick("10.0.14393.1914", Sku::Server, &ws2016), Some(1));
        assert_eq!(pick("10.0.14393.2000", Sku::Server, &ws2016), Some(0));
    }

    #[test]
    fn odd_entries() {
        // No os.version matches (containerd) but ranks below versioned entries.
        let e = index(&["windows/amd64", "windows/amd64:10.0.20348.1"]);
        assert_eq!(pick("10.0.20348.9", Sku::Server, &e), Some(1));
        assert_eq!(pick("10.0.17763.9", Sku::Server, &e), Some(0));
        // win32k does not matter.
        let e = index(&["windows(10.0.20348.5+win32k)/amd64"]);
        assert_eq!(pick("10.0.20348.9", Sku::Server, &e), Some(0));
        // A malformed os.version is never taken; entries without a platform are skipped.
        let bad = Platform {
            os_version: Some("10.0.x".into()),
            ..Platform::new("windows", "amd64")
        };
        let good = Platform::parse("windows/amd64:10.0.17763.1").unwrap();
        let refs = [None, Some(&bad), Some(&good)];
        let h = host("10.0.26100.1", Sku::Server);
        assert_eq!(
            choose_for_host(&h, &Platform::new("windows", "amd64"), &refs),
            Some(2)
        );
        assert_eq!(
            choose_for_host(&h, &Platform::new("windows", "arm64"), &refs),
            None
        );
        assert_eq!(
            choose_for_host(&h, &Platform::new("windows", "amd64"), &[]),
            None
        );
    }
}
