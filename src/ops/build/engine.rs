//! Which runtime runs a RUN step and how: `--runtime oci|hcs|docker` or the choice by the
//! stage's OS and the host (oci for Linux stages on Linux, hcs for Windows stages on
//! Windows, docker when `--docker-host` is given); the isolation of each Windows step
//! (`image::compat::decide` against the host the step runs on: this machine for the Host
//! Compute Service, the engine's host for a Docker engine), reported as a progress note and
//! kept for `--metadata-file`; the parent of a step as an image a Docker engine can load;
//! and a layer a runtime's own differ wrote, re-written entry by entry into the build's
//! layer (so the layer writer's checks apply to it).

use super::settings::{EngineSettings, IsolationRecord, RuntimeKind};
use super::state::{Ctx, StageState};
use crate::image::{Descriptor, Isolation, Manifest, WindowsVersion, media};
use crate::layer::LayerWriter;
use crate::layer::tar::{Kind, TarReader};
use crate::progress::Event;
use crate::runtime::{self, ParentImage, Runtime};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

/// The runtimes a build opened (by kind) and the isolation each Windows step got.
#[derive(Default)]
pub(crate) struct EngineState {
    runtimes: Vec<(RuntimeKind, Arc<dyn Runtime>)>,
    /// One record per Windows step that ran.
    pub(crate) isolation: Vec<IsolationRecord>,
}

/// The runtime a step of a Linux or Windows stage runs with, as `--runtime`, `--docker-host`
/// and the host decide.
pub(super) fn choose(engine: &EngineSettings, windows_stage: bool) -> Result<RuntimeKind, String> {
    if let Some(k) = engine.runtime {
        return Ok(k);
    }
    if engine.docker_host.is_some() {
        return Ok(RuntimeKind::Docker);
    }
    match (windows_stage, cfg!(windows), cfg!(target_os = "linux")) {
        (true, true, _) => Ok(RuntimeKind::Hcs),
        (true, false, _) => Err(
            "RUN on a Windows stage needs a Windows runtime: the Host Compute Service on a Windows host (--runtime hcs), or a Docker engine on Windows (--runtime docker, --docker-host); this host has neither"
                .into(),
        ),
        (false, _, true) => Ok(RuntimeKind::Oci),
        (false, _, false) => Err(
            "RUN on a Linux stage needs an OCI runtime (runc or crun), which runs on Linux only, or a Docker engine with Linux containers (--runtime docker, --docker-host)"
                .into(),
        ),
    }
}

/// Opens (once per build) the runtime of `kind` for a stage of the OS given.
pub(super) fn runtime(
    ctx: &mut Ctx<'_>,
    kind: RuntimeKind,
    windows_stage: bool,
) -> Result<Arc<dyn Runtime>, String> {
    let stage_os = if windows_stage { "windows" } else { "linux" };
    if kind == RuntimeKind::Oci {
        if windows_stage {
            return Err(
                "RUN on a Windows stage cannot run in an OCI runtime (runc, crun run Linux steps): use --runtime hcs on a Windows host or --runtime docker with a Windows engine"
                    .into(),
            );
        }
        return oci_runtime(ctx);
    }
    if let Some((_, rt)) = ctx.engine.runtimes.iter().find(|(k, _)| *k == kind) {
        return Ok(rt.clone());
    }
    let rt: Arc<dyn Runtime> = match kind {
        RuntimeKind::Oci => unreachable!("handled above"),
        RuntimeKind::Docker => {
            let opts = runtime::docker::EndpointOptions::from_env(
                ctx.settings.engine.docker_host.as_deref(),
            );
            let rt = runtime::docker::DockerRuntime::connect(&opts).map_err(|e| e.to_string())?;
            if rt.os_type() != stage_os {
                return Err(format!(
                    "RUN on a {stage_os} stage cannot run in the {} engine at {}: it runs {} containers",
                    rt.os_type(),
                    rt.endpoint().display,
                    rt.os_type()
                ));
            }
            Arc::new(rt)
        }
        RuntimeKind::Hcs => {
            if !windows_stage {
                return Err(
                    "RUN on a Linux stage cannot run through the Host Compute Service (it runs Windows containers): use --runtime oci or --runtime docker"
                        .into(),
                );
            }
            hcs_runtime(ctx)?
        }
    };
    ctx.reporter.event(Event::Note {
        stage: ctx.stage,
        text: format!("RUN steps of {stage_os} stages run with {}", rt.name()),
    });
    ctx.engine.runtimes.push((kind, rt.clone()));
    Ok(rt)
}

/// The Host Compute Service on this host, importing parent layers into the store
/// (`hcs/layers/`). Off Windows, `WCBUILD_HCS_FAKE=1` gives the checking fake instead (a
/// test and CI override, like `WCBUILD_HOST_WINDOWS_VERSION`, so the Windows step path
/// runs through the binary on any machine): its processes print their command line and
/// write it to `C:\wcbuild-fake-step.json`.
fn hcs_runtime(ctx: &Ctx<'_>) -> Result<Arc<dyn Runtime>, String> {
    let root = ctx.store.root().join("hcs").join("layers");
    let host = crate::ops::host::windows_host().map_err(|e| e.to_string())?;
    if !cfg!(windows) && std::env::var_os(ENV_HCS_FAKE).is_some_and(|v| v == "1") {
        let api = runtime::hcs::fake::FakeHcs::adopting(runtime::hcs::fake::FakeScript {
            stdout: b"fake hcs: the step ran\n".to_vec(),
            record_params: Some("wcbuild-fake-step.json".into()),
            ..Default::default()
        });
        return Ok(Arc::new(runtime::hcs::HcsRuntime::new(api, root, host)));
    }
    runtime::hcs::host_runtime(root, host).map_err(|e| e.to_string())
}

/// Off Windows, `1` makes `--runtime hcs` use the checking fake (tests and CI).
pub(crate) const ENV_HCS_FAKE: &str = "WCBUILD_HCS_FAKE";

/// The OCI runtime for this build's Linux RUN steps, probed once.
fn oci_runtime(ctx: &mut Ctx<'_>) -> Result<Arc<dyn Runtime>, String> {
    if let Some(rt) = &ctx.runtime {
        return Ok(rt.clone());
    }
    #[cfg(target_os = "linux")]
    {
        let rt = runtime::oci::OciRuntime::select(ctx.settings.oci_runtime.as_deref())
            .map_err(|e| e.to_string())?;
        ctx.reporter.event(Event::Note {
            stage: ctx.stage,
            text: format!("RUN steps run with {}", rt.name()),
        });
        let rt: Arc<dyn Runtime> = Arc::new(rt);
        ctx.runtime = Some(rt.clone());
        Ok(rt)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(
            "RUN on a Linux stage needs an OCI runtime (runc or crun), which runs on Linux only, or a Docker engine with Linux containers (--runtime docker, --docker-host)"
                .into(),
        )
    }
}

/// The isolation of one step. Windows steps: decided against the host the runtime runs
/// them on, noted in progress and recorded; Linux steps: `None` (the runtime's own), or
/// what `--isolation` asks when the step goes to a Docker engine (which answers for it).
pub(super) fn isolation(
    ctx: &mut Ctx<'_>,
    rt: &dyn Runtime,
    kind: RuntimeKind,
    state: &StageState,
    line: usize,
) -> Result<Option<Isolation>, String> {
    let requested = ctx.settings.engine.isolation;
    if !state.windows() {
        return Ok(match (kind, requested) {
            (_, Isolation::Auto) | (RuntimeKind::Oci, _) => None,
            (_, asked) => Some(asked),
        });
    }
    let host = rt
        .windows_host()
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "{} does not say which Windows host it runs on, so no isolation can be chosen",
                rt.name()
            )
        })?;
    let image = state
        .config
        .os_version
        .as_deref()
        .and_then(WindowsVersion::parse);
    let (chosen, reason) = crate::image::compat::decide(&host, image, requested)?;
    ctx.reporter.event(Event::Note {
        stage: ctx.stage,
        text: format!("isolation {chosen}: {reason}"),
    });
    ctx.engine.isolation.push(IsolationRecord {
        stage: ctx.stage,
        line,
        isolation: chosen,
        reason,
    });
    Ok(Some(chosen))
}

/// The stage as it is now, as an image: its config and manifest put into the store
/// (untagged), and a function that streams it as `save --format docker` writes it.
pub(super) fn parent_image(ctx: &Ctx<'_>, state: &StageState) -> Result<ParentImage, String> {
    let store = ctx.store;
    // Only the layers and the platform matter to the engine (the step brings its own
    // environment, user and directory): without the build's time and history, the same
    // parent has the same ID in every build, and the engine keeps one image for it.
    let mut config = state.config.clone();
    config.created = None;
    config.history.clear();
    let config_bytes = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
    let config_digest = store
        .put_blob(&config_bytes, None)
        .map_err(|e| e.to_string())?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor::new(media::OCI_CONFIG, &config_digest, config_bytes.len() as u64),
        layers: state.layers.clone(),
        subject: None,
        annotations: BTreeMap::new(),
        extra: serde_json::Map::new(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    let digest = store
        .put_blob(&manifest_bytes, None)
        .map_err(|e| e.to_string())?;
    let entry =
        crate::store::IndexEntry::new(media::OCI_MANIFEST, &digest, manifest_bytes.len() as u64);
    let store = store.clone();
    let save = move |w: &mut dyn Write| -> io::Result<()> {
        crate::ops::images::save_entries(
            &store,
            &[(None, entry.clone())],
            crate::ops::images::SaveFormat::Docker,
            w,
        )
        .map_err(io::Error::other)
    };
    let mut layers = Vec::new();
    for (l, diff_id) in state.layers.iter().zip(&state.config.rootfs.diff_ids) {
        layers.push(runtime::LayerBlob {
            diff_id: diff_id.clone(),
            path: ctx.store.blob_path(&l.digest).map_err(|e| e.to_string())?,
        });
    }
    Ok(ParentImage {
        id: config_digest,
        diff_ids: state.config.rootfs.diff_ids.clone(),
        layers,
        os: state.config.os.clone(),
        os_version: state.config.os_version.clone(),
        save: Arc::new(save),
    })
}

/// True when `path` (a container path, relative, `/`-separated) is one of `skip` or under
/// one (case-insensitively on Windows).
fn skipped(path: &str, skip: &[String], windows: bool) -> bool {
    let norm = |s: &str| {
        if windows {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        }
    };
    let p = norm(path.trim_matches('/'));
    skip.iter()
        .map(|s| norm(s.trim_matches('/')))
        .any(|s| !s.is_empty() && (p == s || p.starts_with(&format!("{s}/"))))
}

/// Re-writes a layer tar a runtime's differ made into `w`: whiteouts and opaque markers as
/// whiteouts; on Windows the `Files/` and `Hives/` entries at their paths with their own
/// records; the paths in `skip` (mount points the runtime created) left out. Errors name the
/// entry.
pub(super) fn write_engine_layer<W: Write>(
    tar: &Path,
    skip: &[String],
    w: &mut LayerWriter<W>,
) -> io::Result<()> {
    let windows = w.format() == crate::layer::Format::Windows;
    let f = std::fs::File::open(tar)
        .map_err(|e| io::Error::new(e.kind(), format!("`{}`: {e}", tar.display())))?;
    let mut r = TarReader::new(io::BufReader::with_capacity(256 << 10, f));
    let named = |e: io::Error, p: &str| io::Error::new(e.kind(), format!("layer entry `{p}`: {e}"));
    while let Some(e) = r
        .next_entry()
        .map_err(|e| io::Error::other(format!("`{}`: {e}", tar.display())))?
    {
        let h = e.header;
        let path = h.path.trim_matches('/').to_string();
        // The container path of the entry (Windows: under Files/).
        let (inner, files) = if windows {
            match path.split_once('/') {
                Some((top, rest)) if top.eq_ignore_ascii_case("Files") => (rest.to_string(), true),
                None if path.eq_ignore_ascii_case("Files")
                    || path.eq_ignore_ascii_case("Hives") =>
                {
                    continue;
                }
                _ => (path.clone(), false),
            }
        } else {
            (path.clone(), true)
        };
        if files && skipped(&inner, skip, windows) {
            continue;
        }
        let (dir, name) = match inner.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", inner.as_str()),
        };
        if files && name == ".wh..wh..opq" {
            if windows {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("layer entry `{path}`: an opaque whiteout in a Windows layer"),
                ));
            }
            w.opaque(dir).map_err(|e| named(e, &path))?;
            continue;
        }
        if files && let Some(gone) = name.strip_prefix(".wh.") {
            let target = if dir.is_empty() {
                gone.to_string()
            } else {
                format!("{dir}/{gone}")
            };
            w.whiteout(&target).map_err(|e| named(e, &path))?;
            continue;
        }
        let mut content = r.content();
        let body: Option<&mut dyn io::Read> = if h.kind == Kind::File {
            Some(&mut content)
        } else {
            None
        };
        if windows {
            let mut h = h;
            h.path = path.clone();
            w.append_verbatim(h, body).map_err(|e| named(e, &path))?;
        } else {
            w.append(h, body, false).map_err(|e| named(e, &path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tar::{Header, write_entry};
    use crate::layer::{Compression, Format, LayerOptions};

    /// Path, kind, content, PAX records.
    type Spec<'a> = (&'a str, Kind, &'a [u8], &'a [(&'a str, &'a str)]);

    fn tar_of(entries: &[Spec<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (p, k, d, pax) in entries {
            let mut h = Header::new(p, *k);
            h.size = d.len() as u64;
            for (a, b) in *pax {
                h.pax.insert(a.to_string(), b.to_string());
            }
            write_entry(&mut out, &h, true, Some(&mut &d[..])).unwrap();
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn rewrite(input: &[u8], format: Format, skip: &[&str]) -> io::Result<Vec<Header>> {
        let dir = std::env::temp_dir().join(format!(
            "wcbuild-engine-layer-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("in.tar");
        std::fs::write(&p, input).unwrap();
        let mut w = LayerWriter::new(
            Vec::new(),
            LayerOptions {
                format,
                compression: Compression::None,
                threads: 1,
                ..LayerOptions::default()
            },
        )
        .unwrap();
        let skip: Vec<String> = skip.iter().map(|s| s.to_string()).collect();
        let r = write_engine_layer(&p, &skip, &mut w);
        let _ = std::fs::remove_dir_all(&dir);
        r?;
        let out = w.finish().unwrap().1;
        let mut r = TarReader::new(&out[..]);
        let mut v = Vec::new();
        while let Some(e) = r.next_entry().unwrap() {
            v.push(e.header);
        }
        Ok(v)
    }

    #[test]
    fn a_linux_engine_diff_becomes_our_layer() {
        let input = tar_of(&[
            ("etc", Kind::Dir, b"", &[]),
            ("etc/new", Kind::File, b"hello", &[]),
            ("etc/.wh.gone", Kind::File, b"", &[]),
            ("var/cache/.wh..wh..opq", Kind::File, b"", &[]),
            ("run/secrets", Kind::Dir, b"", &[]),
            ("run/secrets/s", Kind::File, b"", &[]),
        ]);
        let got = rewrite(&input, Format::Linux, &["run/secrets/s", "run/secrets"]).unwrap();
        let paths: Vec<&str> = got.iter().map(|h| h.path.as_str()).collect();
        assert!(paths.contains(&"etc/new"), "{paths:?}");
        assert!(paths.contains(&"etc/.wh.gone"), "{paths:?}");
        assert!(paths.contains(&"var/cache/.wh..wh..opq"), "{paths:?}");
        assert!(
            !paths.iter().any(|p| p.starts_with("run/secrets")),
            "{paths:?}"
        );
        // The parent of the opaque marker was synthesized.
        assert!(paths.contains(&"var/cache"), "{paths:?}");
    }

    #[test]
    fn a_windows_engine_diff_keeps_its_records() {
        let sd = "AQAAgBQAAAAkAAAAAAAAAAAAAAABAgAAAAAABSAAAAAhAgAAAQIAAAAAAAUgAAAAIQIAAA==";
        let input = tar_of(&[
            ("Files", Kind::Dir, b"", &[("MSWINDOWS.fileattr", "16")]),
            ("Hives", Kind::Dir, b"", &[("MSWINDOWS.fileattr", "16")]),
            (
                "Hives/Software_Delta",
                Kind::File,
                b"regf",
                &[("MSWINDOWS.fileattr", "32")],
            ),
            (
                "Files/app",
                Kind::Dir,
                b"",
                &[("MSWINDOWS.fileattr", "16"), ("MSWINDOWS.rawsd", sd)],
            ),
            (
                "Files/app/x.txt",
                Kind::File,
                b"x",
                &[("MSWINDOWS.fileattr", "33"), ("MSWINDOWS.rawsd", sd)],
            ),
            ("Files/Windows/.wh.old.log", Kind::File, b"", &[]),
            (
                "Files/cache/data",
                Kind::File,
                b"c",
                &[("MSWINDOWS.fileattr", "32")],
            ),
        ]);
        let got = rewrite(&input, Format::Windows, &["cache"]).unwrap();
        let find = |p: &str| got.iter().find(|h| h.path == p);
        let x = find("Files/app/x.txt").expect("the file");
        assert_eq!(
            x.pax.get("MSWINDOWS.fileattr").map(String::as_str),
            Some("33")
        );
        assert_eq!(x.pax.get("MSWINDOWS.rawsd").map(String::as_str), Some(sd));
        assert!(find("Hives/Software_Delta").is_some());
        assert!(find("Files/Windows/.wh.old.log").is_some());
        assert!(find("Files/cache/data").is_none());
        // A path NTFS cannot hold is refused, naming the entry.
        let bad = tar_of(&[(
            "Files/a:b|c",
            Kind::File,
            b"",
            &[("MSWINDOWS.fileattr", "32")],
        )]);
        let e = rewrite(&bad, Format::Windows, &[]).unwrap_err();
        assert!(e.to_string().contains("Files/a:b|c"), "{e}");
        let opq = tar_of(&[("Files/d/.wh..wh..opq", Kind::File, b"", &[])]);
        assert!(rewrite(&opq, Format::Windows, &[]).is_err());
    }

    #[test]
    fn runtime_choice_by_stage_and_flags() {
        let e = EngineSettings::default();
        #[cfg(target_os = "linux")]
        {
            assert_eq!(choose(&e, false).unwrap(), RuntimeKind::Oci);
            let err = choose(&e, true).unwrap_err();
            assert!(err.contains("needs a Windows runtime"), "{err}");
        }
        #[cfg(windows)]
        assert_eq!(choose(&e, true).unwrap(), RuntimeKind::Hcs);
        let mut e = EngineSettings {
            docker_host: Some("tcp://127.0.0.1:2376".into()),
            ..e
        };
        assert_eq!(choose(&e, true).unwrap(), RuntimeKind::Docker);
        e.runtime = Some(RuntimeKind::Hcs);
        assert_eq!(choose(&e, true).unwrap(), RuntimeKind::Hcs);
        assert!(skipped("Run/Secrets/x", &["run/secrets".into()], true));
        assert!(!skipped("Run/Secrets/x", &["run/secrets".into()], false));
        assert!(!skipped("run/secretsx", &["run/secrets".into()], false));
    }
}
