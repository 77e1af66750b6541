//! The JSON documents the Host Compute Service reads for one step, built from plain data
//! so they are tested anywhere: the schema v1 container configuration (`HvPartition` false
//! for process isolation with the writable layer's volume, true for Hyper-V with
//! `HvRuntime.ImagePath` the utility VM of the topmost parent that has one, sized by
//! `MemoryMaximumInMB` and `ProcessorCount`), the process parameters, the layer data of
//! the storage calls (schema 2.1, parents topmost first), layer ids, Windows paths and
//! long paths (`\\?\`).

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Paths at or past this length get the `\\?\` prefix.
pub const MAX_PATH: usize = 260;

/// One parent layer: its folder and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// The layer folder (a Windows path).
    pub path: String,
    /// Its GUID.
    pub id: String,
}

/// A host directory mapped into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedDir {
    /// Host directory (a Windows path).
    pub host: String,
    /// Where it appears (`C:\…`).
    pub container: String,
    /// Read-only.
    pub readonly: bool,
}

/// Everything the container configuration says.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerDoc {
    /// The compute system's name (a GUID).
    pub name: String,
    /// Who owns it (`wcbuild`).
    pub owner: String,
    /// Host name inside.
    pub hostname: String,
    /// The writable layer's folder.
    pub writable: String,
    /// The writable layer's volume (process isolation only).
    pub volume: Option<String>,
    /// Parents, topmost first.
    pub layers: Vec<LayerRef>,
    /// Hyper-V: the `UtilityVM` folder of the topmost parent having one.
    pub utility_vm: Option<String>,
    /// Mapped directories.
    pub mapped: Vec<MappedDir>,
    /// Memory limit (Hyper-V: the utility VM's memory), MiB.
    pub memory_mb: Option<u64>,
    /// Processors (Hyper-V: the utility VM's).
    pub processors: Option<u32>,
}

/// `\\?\` before an absolute drive path of `MAX_PATH` characters or more (UNC paths become
/// `\\?\UNC\…`), so deep layer folders and mounts work; other paths are returned as given.
pub fn long_path(p: &str) -> String {
    if p.starts_with(r"\\?\") || p.chars().count() < MAX_PATH {
        return p.to_string();
    }
    if let Some(unc) = p.strip_prefix(r"\\") {
        return format!(r"\\?\UNC\{unc}");
    }
    let b = p.as_bytes();
    if b.len() > 2 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\' {
        return format!(r"\\?\{p}");
    }
    p.to_string()
}

/// A container path as Windows writes it: `/app/x`, `\app\x`, `C:/app/x` → `C:\app\x`.
pub fn container_path(p: &str) -> String {
    let p = p.replace('/', "\\");
    let b = p.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        let rest = p[2..].trim_start_matches('\\');
        return format!("{}:\\{rest}", (b[0] as char).to_ascii_uppercase());
    }
    format!("C:\\{}", p.trim_start_matches('\\'))
}

/// A GUID for a layer folder, derived from its name (the folder names are diff_ids, so
/// the same layer always has the same id), as `xxxxxxxx-xxxx-5xxx-yxxx-xxxxxxxxxxxx`.
pub fn layer_id(folder_name: &str) -> String {
    let h = Sha256::digest(format!("wcbuild layer {folder_name}").as_bytes());
    guid_of(&h[..16])
}

/// A GUID from 16 bytes, version 5 and the RFC 4122 variant marked.
pub fn guid_of(bytes: &[u8]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// True for `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex digits).
pub fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// The layer data of `HcsImportLayer`, `HcsInitializeWritableLayer`,
/// `HcsAttachLayerStorageFilter` and `HcsExportLayer`: schema 2.1, the parents topmost
/// first.
pub fn layer_data(parents: &[LayerRef]) -> String {
    let layers: Vec<Value> = parents
        .iter()
        .map(|l| json!({"Id": l.id, "Path": long_path(&l.path), "PathType": "AbsolutePath"}))
        .collect();
    json!({
        "SchemaVersion": {"Major": 2, "Minor": 1},
        "Layers": layers,
    })
    .to_string()
}

/// The options of `HcsExportLayer` for a writable layer.
pub fn export_options() -> String {
    json!({"IsWritableLayer": true}).to_string()
}

/// The options of `HcsSetupBaseOSLayer` for a container base layer.
pub fn base_layer_options() -> String {
    json!({"Type": "Container"}).to_string()
}

/// The schema v1 container configuration.
pub fn container_config(d: &ContainerDoc) -> String {
    let layers: Vec<Value> = d
        .layers
        .iter()
        .map(|l| json!({"ID": l.id, "Path": long_path(&l.path)}))
        .collect();
    let mapped: Vec<Value> = d
        .mapped
        .iter()
        .map(|m| {
            json!({
                "HostPath": long_path(&m.host),
                "ContainerPath": m.container,
                "ReadOnly": m.readonly,
                "BandwidthMaximum": 0,
                "IOPSMaximum": 0,
                "CreateInUtilityVM": false,
            })
        })
        .collect();
    let mut v = json!({
        "SystemType": "Container",
        "Name": d.name,
        "Owner": d.owner,
        "HostName": d.hostname,
        "LayerFolderPath": long_path(&d.writable),
        "Layers": layers,
        "MappedDirectories": mapped,
        "HvPartition": d.utility_vm.is_some(),
        "IgnoreFlushesDuringBoot": true,
        "TerminateOnLastHandleClosed": true,
        "EndpointList": [],
    });
    if let Some(vol) = &d.volume {
        // No trailing backslash (moby strips it).
        v["VolumePath"] = Value::String(vol.trim_end_matches('\\').to_string());
    }
    if let Some(uvm) = &d.utility_vm {
        v["HvRuntime"] = json!({"ImagePath": long_path(uvm)});
    }
    if let Some(m) = d.memory_mb {
        v["MemoryMaximumInMB"] = json!(m);
    }
    if let Some(c) = d.processors {
        v["ProcessorCount"] = json!(c);
    }
    v.to_string()
}

/// The process parameters: the command line as BuildKit forms it on Windows (the
/// arguments joined with spaces, unescaped), user, working directory, environment, and
/// stdout and stderr as pipes.
pub fn process_parameters(
    args: &[String],
    user: &str,
    cwd: &str,
    env: &[String],
) -> Result<String, String> {
    if args.is_empty() {
        return Err("no command".into());
    }
    let mut environment = serde_json::Map::new();
    for e in env {
        let (k, v) = e
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| format!("environment entry `{e}` is not KEY=value"))?;
        environment.insert(k.to_string(), Value::String(v.to_string()));
    }
    let mut p = json!({
        "CommandLine": args.join(" "),
        "WorkingDirectory": container_path(if cwd.is_empty() { "\\" } else { cwd }),
        "Environment": environment,
        "EmulateConsole": false,
        "CreateStdInPipe": false,
        "CreateStdOutPipe": true,
        "CreateStdErrPipe": true,
    });
    if !user.is_empty() {
        p["User"] = Value::String(user.to_string());
    }
    Ok(p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_ids_and_long_paths() {
        assert_eq!(container_path("/app/x"), r"C:\app\x");
        assert_eq!(container_path(r"\app"), r"C:\app");
        assert_eq!(container_path("c:/Temp"), r"C:\Temp");
        let deep = format!(r"C:\{}", "d\\".repeat(140));
        assert!(long_path(&deep).starts_with(r"\\?\C:\"));
        assert_eq!(long_path(r"C:\short"), r"C:\short");
        assert!(
            long_path(&format!(r"\\server\share\{}", "x".repeat(300)))
                .starts_with(r"\\?\UNC\server")
        );
        let id = layer_id("abc");
        assert!(is_guid(&id), "{id}");
        assert_eq!(id, layer_id("abc"));
        assert_ne!(id, layer_id("abd"));
        assert_eq!(&id[14..15], "5");
        assert!(!is_guid("not-a-guid"));
    }

    #[test]
    fn documents_for_both_isolations() {
        let layers = vec![
            LayerRef {
                path: r"C:\l\top".into(),
                id: layer_id("top"),
            },
            LayerRef {
                path: r"C:\l\base".into(),
                id: layer_id("base"),
            },
        ];
        let mut d = ContainerDoc {
            name: layer_id("c"),
            owner: "wcbuild".into(),
            hostname: "buildkitsandbox".into(),
            writable: r"C:\s\w".into(),
            volume: Some(r"\\?\Volume{1234}\".into()),
            layers,
            utility_vm: None,
            mapped: vec![MappedDir {
                host: r"C:\cache".into(),
                container: r"C:\cache".into(),
                readonly: false,
            }],
            memory_mb: None,
            processors: None,
        };
        let v: Value = serde_json::from_str(&container_config(&d)).unwrap();
        assert_eq!(v["HvPartition"], false);
        assert_eq!(v["VolumePath"], r"\\?\Volume{1234}");
        assert!(v.get("HvRuntime").is_none());
        assert_eq!(v["Layers"][0]["Path"], r"C:\l\top");
        d.volume = None;
        d.utility_vm = Some(r"C:\l\base\UtilityVM".into());
        d.memory_mb = Some(4096);
        d.processors = Some(2);
        let v: Value = serde_json::from_str(&container_config(&d)).unwrap();
        assert_eq!(v["HvPartition"], true);
        assert!(v.get("VolumePath").is_none());
        assert_eq!(v["HvRuntime"]["ImagePath"], r"C:\l\base\UtilityVM");
        assert_eq!(v["MemoryMaximumInMB"], 4096);
        assert_eq!(v["ProcessorCount"], 2);
        let p: Value = serde_json::from_str(
            &process_parameters(
                &["cmd".into(), "/S".into(), "/C".into(), "echo hi".into()],
                "ContainerUser",
                "/app",
                &["PATH=C:\\Windows".into(), "EMPTY=".into()],
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(p["CommandLine"], "cmd /S /C echo hi");
        assert_eq!(p["WorkingDirectory"], r"C:\app");
        assert_eq!(p["Environment"]["EMPTY"], "");
        assert_eq!(p["User"], "ContainerUser");
        assert!(process_parameters(&["x".into()], "", "", &["=bad".into()]).is_err());
        let ld: Value = serde_json::from_str(&layer_data(&[])).unwrap();
        assert_eq!(ld["SchemaVersion"]["Minor"], 1);
        assert_eq!(ld["Layers"].as_array().unwrap().len(), 0);
    }
}
