//! The base-image stand-ins under `fixtures/`: Nano Server and Server Core for ltsc2019,
//! ltsc2022 and ltsc2025 in the shape of Windows base layers, a multi-version index per
//! repository like those MCR publishes, an older-style variant with a foreign base layer, and
//! (on request, from a local `busybox` binary) a small Linux base.
//!
//! They are structural stand-ins: the files are small placeholders, so they cannot boot
//! Windows. They use OCI media types (MCR serves Docker schema 2; the layout is the same, and
//! OCI types let every OCI-layout reader, skopeo included, find them by name). The foreign
//! variant uses the OCI non-distributable layer type with a `urls` entry. Everything here is deterministic: the same code writes the same bytes, which a
//! test checks against the committed archives.

use super::images::{self, SaveFormat};
use crate::image::media;
use crate::layer::tar::{Header, Kind};
use crate::layer::{Compression, Format, LayerOptions, LayerWriter};
use crate::store::{IndexEntry, Store};
use serde_json::json;
use std::path::{Path, PathBuf};

/// Every timestamp in the fixtures (2024-11-12T00:00:00Z).
pub const FIXTURE_EPOCH: i64 = 1_731_369_600;
const FIXTURE_CREATED: &str = "2024-11-12T00:00:00Z";

/// A Windows Server release the fixtures cover.
#[derive(Debug, Clone, Copy)]
pub struct Release {
    /// The tag (`ltsc2022`).
    pub tag: &'static str,
    /// Extra tags (`1809` for Nano Server 2019).
    pub nano_aliases: &'static [&'static str],
    /// `os.version`.
    pub os_version: &'static str,
}

/// The releases, oldest first.
pub const RELEASES: [Release; 3] = [
    Release {
        tag: "ltsc2019",
        nano_aliases: &["1809"],
        os_version: "10.0.17763.6414",
    },
    Release {
        tag: "ltsc2022",
        nano_aliases: &[],
        os_version: "10.0.20348.2849",
    },
    Release {
        tag: "ltsc2025",
        nano_aliases: &[],
        os_version: "10.0.26100.2314",
    },
];

/// Nano Server or Server Core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sku {
    /// `mcr.microsoft.com/windows/nanoserver`, default user ContainerUser.
    NanoServer,
    /// `mcr.microsoft.com/windows/servercore`, default user ContainerAdministrator, with a
    /// utility VM.
    ServerCore,
}

impl Sku {
    /// The repository.
    pub fn repository(self) -> &'static str {
        match self {
            Sku::NanoServer => "mcr.microsoft.com/windows/nanoserver",
            Sku::ServerCore => "mcr.microsoft.com/windows/servercore",
        }
    }
    /// The archive's file name under `fixtures/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Sku::NanoServer => "nanoserver.tar",
            Sku::ServerCore => "servercore.tar",
        }
    }
    fn user(self) -> &'static str {
        match self {
            Sku::NanoServer => "ContainerUser",
            Sku::ServerCore => "ContainerAdministrator",
        }
    }
}

/// Errors while generating.
pub type FixtureError = Box<dyn std::error::Error + Send + Sync>;

fn placeholder(path: &str, sku: Sku, release: &Release) -> Vec<u8> {
    format!(
        "wcbuild fixture placeholder for C:\\{} ({:?} {}); not Windows, cannot run\n",
        path.replace('/', "\\"),
        sku,
        release.os_version
    )
    .into_bytes()
}

fn regf(size: usize) -> Vec<u8> {
    // A registry hive starts with `regf`; the rest is zero padding in the stand-in.
    let mut v = b"regf".to_vec();
    v.resize(size, 0);
    v
}

/// The base layer of one image, gzip-compressed. Returns (digests, blob).
pub fn base_layer(
    sku: Sku,
    release: &Release,
) -> std::io::Result<(crate::layer::LayerDigests, Vec<u8>)> {
    let opts = LayerOptions {
        format: Format::Windows,
        compression: Compression::Gzip(6),
        source_date_epoch: Some(FIXTURE_EPOCH),
        threads: 2,
        windows_owner: None,
        windows_base: true,
    };
    let mut w = LayerWriter::new(Vec::new(), opts)?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for p in [
        "License.txt",
        "ProgramData/Microsoft/Windows/Start Menu/desktop.ini",
        "Users/Public/desktop.ini",
        "Windows/System32/cmd.exe",
        "Windows/System32/kernel32.dll",
        "Windows/System32/kernelbase.dll",
        "Windows/System32/ntdll.dll",
        "Windows/System32/drivers/etc/hosts",
        "Windows/System32/whoami.exe",
        "Windows/System32/where.exe",
        "Windows/System32/xcopy.exe",
        "Windows/System32/findstr.exe",
        "Windows/System32/reg.exe",
        "Windows/System32/net.exe",
        "Windows/System32/curl.exe",
        "Windows/System32/tar.exe",
        "Windows/explorer.exe",
    ] {
        files.push((format!("Files/{p}"), placeholder(p, sku, release)));
    }
    for hive in ["DEFAULT", "SAM", "SECURITY", "SOFTWARE", "SYSTEM"] {
        files.push((format!("Files/Windows/System32/config/{hive}"), regf(8192)));
    }
    if sku == Sku::ServerCore {
        for p in [
            "Windows/System32/WindowsPowerShell/v1.0/powershell.exe",
            "Windows/System32/win32k.sys",
            "Windows/System32/inetsrv/readme.txt",
            "Windows/Microsoft.NET/Framework64/v4.0.30319/clr.dll",
        ] {
            files.push((format!("Files/{p}"), placeholder(p, sku, release)));
        }
        files.push((
            "UtilityVM/Files/EFI/Microsoft/Boot/BCD".into(),
            regf(12 * 1024),
        ));
        for p in [
            "Windows/System32/ntoskrnl.exe",
            "Windows/System32/config/SYSTEM",
        ] {
            files.push((format!("UtilityVM/Files/{p}"), placeholder(p, sku, release)));
        }
    }
    files.sort();
    for (path, data) in &files {
        let mut h = Header::new(path, Kind::File);
        h.size = data.len() as u64;
        h.mtime = FIXTURE_EPOCH;
        w.append_at(h, Some(&mut &data[..]))?;
    }
    let (d, blob) = w.finish()?;
    Ok((d, blob))
}

struct TempStore {
    dir: PathBuf,
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_store() -> Result<(TempStore, Store), FixtureError> {
    let dir = std::env::temp_dir().join(format!(
        "wcbuild-fixtures-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let store = Store::open(&dir)?;
    Ok((TempStore { dir }, store))
}

fn put_json(store: &Store, v: &serde_json::Value) -> Result<(String, u64), FixtureError> {
    let bytes = serde_json::to_vec(v)?;
    let d = store.put_blob(&bytes, None)?;
    Ok((d, bytes.len() as u64))
}

/// Generates one repository's archive (every release, aliases, `multi`, and for Server Core
/// the foreign-layer variant) and returns its bytes.
pub fn windows_archive(sku: Sku) -> Result<Vec<u8>, FixtureError> {
    let (_guard, store) = temp_store()?;
    let mut names = Vec::new();
    let mut index_entries = Vec::new();
    for release in &RELEASES {
        let (layer, blob) = base_layer(sku, release)?;
        let layer_digest = store.put_blob(&blob, Some(&layer.digest))?;
        let config = json!({
            "architecture": "amd64",
            "config": {
                "User": sku.user(),
                "Cmd": ["c:\\windows\\system32\\cmd.exe"],
            },
            "created": FIXTURE_CREATED,
            "history": [{"created": FIXTURE_CREATED, "created_by": format!("Apply image {}", release.os_version)}],
            "os": "windows",
            "os.version": release.os_version,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        });
        let (config_digest, config_size) = put_json(&store, &config)?;
        let manifest_for = |media_type: &str, urls: Option<Vec<String>>| {
            let mut l =
                json!({"mediaType": media_type, "size": layer.size, "digest": layer_digest});
            if let Some(u) = urls {
                l["urls"] = json!(u);
            }
            json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_MANIFEST,
                "config": {"mediaType": media::OCI_CONFIG, "size": config_size, "digest": config_digest},
                "layers": [l],
            })
        };
        let (m_digest, m_size) = put_json(&store, &manifest_for(media::OCI_LAYER_GZIP, None))?;
        let mut entry = IndexEntry::new(media::OCI_MANIFEST, &m_digest, m_size);
        entry.platform = Some(
            json!({"architecture": "amd64", "os": "windows", "os.version": release.os_version}),
        );
        let mut tags = vec![release.tag];
        if sku == Sku::NanoServer {
            tags.extend(release.nano_aliases);
        }
        for t in tags {
            let name = format!("{}:{t}", sku.repository());
            store.tag(&name, entry.clone())?;
            names.push(name);
        }
        index_entries.push(json!({
            "mediaType": media::OCI_MANIFEST,
            "size": m_size,
            "digest": m_digest,
            "platform": {"architecture": "amd64", "os": "windows", "os.version": release.os_version},
        }));
        if sku == Sku::ServerCore && release.tag == "ltsc2019" {
            let url = format!(
                "https://mcr.microsoft.com/v2/windows/servercore/blobs/{}",
                layer_digest
            );
            let (fd, fs) = put_json(
                &store,
                &manifest_for(media::OCI_LAYER_NONDIST_GZIP, Some(vec![url])),
            )?;
            let mut e = IndexEntry::new(media::OCI_MANIFEST, &fd, fs);
            e.platform = entry.platform.clone();
            let name = format!("{}:ltsc2019-foreign", sku.repository());
            store.tag(&name, e)?;
            names.push(name);
        }
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": index_entries,
    });
    let (i_digest, i_size) = put_json(&store, &index)?;
    let name = format!("{}:multi", sku.repository());
    store.tag(&name, IndexEntry::new(media::OCI_INDEX, &i_digest, i_size))?;
    names.push(name);
    names.sort();
    let mut out = Vec::new();
    images::save(&store, &names, SaveFormat::Oci, &mut out)?;
    Ok(out)
}

/// Applets linked to `busybox` in the Linux base.
const BUSYBOX_APPLETS: [&str; 24] = [
    "cat", "chmod", "cp", "echo", "env", "false", "grep", "head", "hostname", "id", "ln", "ls",
    "mkdir", "mv", "pwd", "rm", "sed", "sh", "sleep", "sort", "tail", "test", "touch", "true",
];

/// The Linux base image `wcbuild.local/busybox:latest` made from a static busybox binary,
/// as a `docker save`-format archive (which `wcbuild load` and `docker load` both read).
pub fn busybox_archive(busybox: &Path) -> Result<Vec<u8>, FixtureError> {
    let (_guard, store) = temp_store()?;
    let binary =
        std::fs::read(busybox).map_err(|e| format!("read `{}`: {e}", busybox.display()))?;
    let opts = LayerOptions {
        format: Format::Linux,
        compression: Compression::Gzip(6),
        source_date_epoch: Some(FIXTURE_EPOCH),
        threads: 2,
        windows_owner: None,
        windows_base: false,
    };
    let mut w = LayerWriter::new(Vec::new(), opts)?;
    let mut entries: Vec<(String, Kind, Vec<u8>, u32, String)> = vec![
        ("bin".into(), Kind::Dir, vec![], 0o755, String::new()),
        (
            "bin/busybox".into(),
            Kind::File,
            binary,
            0o755,
            String::new(),
        ),
        ("etc".into(), Kind::Dir, vec![], 0o755, String::new()),
        (
            "etc/group".into(),
            Kind::File,
            b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
            0o644,
            String::new(),
        ),
        (
            "etc/passwd".into(),
            Kind::File,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
            0o644,
            String::new(),
        ),
        ("root".into(), Kind::Dir, vec![], 0o700, String::new()),
        ("tmp".into(), Kind::Dir, vec![], 0o1777, String::new()),
    ];
    for a in BUSYBOX_APPLETS {
        entries.push((
            format!("bin/{a}"),
            Kind::Symlink,
            vec![],
            0o777,
            "busybox".into(),
        ));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, kind, data, mode, link) in &entries {
        let mut h = Header::new(path, *kind);
        h.mode = *mode;
        h.mtime = FIXTURE_EPOCH;
        h.size = data.len() as u64;
        h.link = link.clone();
        w.append(h, Some(&mut &data[..]), false)?;
    }
    let (layer, blob) = w.finish()?;
    let layer_digest = store.put_blob(&blob, Some(&layer.digest))?;
    let config = json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
        },
        "created": FIXTURE_CREATED,
        "history": [{"created": FIXTURE_CREATED, "created_by": "wcbuild fixtures: busybox base"}],
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    });
    let (config_digest, config_size) = put_json(&store, &config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": media::OCI_LAYER_GZIP, "digest": layer_digest, "size": layer.size}],
    });
    let (m, s) = put_json(&store, &manifest)?;
    let name = "wcbuild.local/busybox:latest".to_string();
    store.tag(&name, IndexEntry::new(media::OCI_MANIFEST, &m, s))?;
    let mut out = Vec::new();
    images::save(&store, &[name], SaveFormat::Docker, &mut out)?;
    Ok(out)
}

/// Writes `nanoserver.tar` and `servercore.tar` into `dir` (and `busybox.tar` when a busybox
/// binary is given). Returns the files written.
pub fn write_all(dir: &Path, busybox: Option<&Path>) -> Result<Vec<PathBuf>, FixtureError> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for sku in [Sku::NanoServer, Sku::ServerCore] {
        let path = dir.join(sku.file_name());
        std::fs::write(&path, windows_archive(sku)?)?;
        written.push(path);
    }
    if let Some(b) = busybox {
        let path = dir.join("busybox.tar");
        std::fs::write(&path, busybox_archive(b)?)?;
        written.push(path);
    }
    Ok(written)
}
