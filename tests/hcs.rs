//! The Host Compute Service backend against the checking fake, on any system: the call
//! sequence of a step for process and for Hyper-V isolation (every argument checked by the
//! fake against the documented shapes; the exact order of the calls asserted here), parent
//! layers imported once, mounts as mapped directories, `--memory`/`--cpus` sizing the
//! utility VM, failures that clean up, the transport folder both ways, and the whole
//! Windows RUN path through the binary (`WCBUILD_HCS_FAKE=1`): the isolation decided per
//! step, in progress and in `--metadata-file`, the layer written in the Windows format.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wcbuild::image::Isolation;
use wcbuild::layer::tar::{Header, Kind};
use wcbuild::layer::{Compression, Format, LayerOptions, LayerWriter};
use wcbuild::runtime::hcs::HcsRuntime;
use wcbuild::runtime::hcs::api::HcsApi;
use wcbuild::runtime::hcs::fake::{FakeHcs, FakeScript};
use wcbuild::runtime::hcs::transport;
use wcbuild::runtime::{
    Changes, LayerBlob, Mount, MountKind, Network, OutputStream, ParentImage, Resources, Rootfs,
    Runtime, Step,
};

mod common;

/// A Windows layer: a base (with a utility VM when `uvm`) or a layer on top.
fn layer(dir: &Path, name: &str, base: bool, uvm: bool, files: &[(&str, &str)]) -> LayerBlob {
    let mut w = LayerWriter::new(
        Vec::new(),
        LayerOptions {
            format: Format::Windows,
            compression: Compression::Gzip(1),
            threads: 1,
            windows_base: base,
            ..LayerOptions::default()
        },
    )
    .unwrap();
    for (p, c) in files {
        let mut h = Header::new(p, Kind::File);
        h.size = c.len() as u64;
        h.mtime = 1_700_000_000;
        w.append(h, Some(&mut c.as_bytes()), false).unwrap();
    }
    if uvm {
        let mut h = Header::new("UtilityVM/Files/EFI/Microsoft/Boot/BCD", Kind::File);
        h.size = 4;
        w.append_at(h, Some(&mut &b"regf"[..])).unwrap();
    }
    let (d, bytes) = w.finish().unwrap();
    let path = dir.join(format!("{name}.tar.gz"));
    fs::write(&path, bytes).unwrap();
    LayerBlob {
        diff_id: d.diff_id,
        path,
    }
}

struct Setup {
    dir: PathBuf,
    layers: Vec<LayerBlob>,
    n: std::cell::Cell<usize>,
}

impl Setup {
    fn new(name: &str, uvm: bool) -> Setup {
        let dir = common::tempdir("hcs", name);
        let layers = vec![
            layer(
                &dir,
                "base",
                true,
                uvm,
                &[
                    ("Windows/System32/cmd.exe", "MZ"),
                    ("Windows/System32/config/SYSTEM", "regf"),
                ],
            ),
            layer(&dir, "app", false, false, &[("app/old.txt", "old")]),
        ];
        Setup {
            dir,
            layers,
            n: std::cell::Cell::new(0),
        }
    }

    fn rootfs(&self) -> Rootfs {
        let n = self.n.get();
        self.n.set(n + 1);
        let scratch = self.dir.join(format!("scratch{n}"));
        fs::create_dir_all(&scratch).unwrap();
        Rootfs {
            lowers: Vec::new(),
            scratch,
            image: Some(ParentImage {
                id: "sha256:config".into(),
                diff_ids: self.layers.iter().map(|l| l.diff_id.clone()).collect(),
                layers: self.layers.clone(),
                os: "windows".into(),
                os_version: Some("10.0.20348.2227".into()),
                save: Arc::new(|_| Ok(())),
            }),
        }
    }

    fn runtime(&self, script: FakeScript) -> HcsRuntime<FakeHcs> {
        HcsRuntime::new(FakeHcs::new(script), self.dir.join("layers"), None)
    }
}

fn step(isolation: Isolation) -> Step {
    Step {
        args: vec![
            "cmd".into(),
            "/S".into(),
            "/C".into(),
            "echo hi> C:\\app\\x.txt".into(),
        ],
        env: vec!["PATH=C:\\Windows\\System32;C:\\Windows".into()],
        user: "ContainerUser".into(),
        cwd: "C:\\app".into(),
        hostname: "buildkitsandbox".into(),
        network: Network::None,
        isolation: Some(isolation),
        ..Step::default()
    }
}

fn run(
    rt: &HcsRuntime<FakeHcs>,
    rootfs: &Rootfs,
    s: &Step,
) -> (wcbuild::runtime::RunOutcome, String) {
    let mut out = String::new();
    let r = rt
        .run(rootfs, s, &mut |which, b| {
            let tag = if which == OutputStream::Stderr {
                "E:"
            } else {
                "O:"
            };
            out.push_str(tag);
            out.push_str(&String::from_utf8_lossy(b));
        })
        .unwrap_or_else(|e| panic!("{e}; violations: {:?}", rt.api().violations()));
    (r, out)
}

fn script() -> FakeScript {
    FakeScript {
        stdout: b"hi\r\n".to_vec(),
        stderr: b"warn\r\n".to_vec(),
        files: vec![("app/x.txt".into(), b"hi\r\n".to_vec())],
        deletes: vec!["app/old.txt".into()],
        ..FakeScript::default()
    }
}

const IMPORTS: [&str; 3] = ["HcsImportLayer", "HcsSetupBaseOSLayer", "HcsImportLayer"];

#[test]
fn process_isolation_call_sequence() {
    let s = Setup::new("process", false);
    let rt = s.runtime(script());
    let rootfs = s.rootfs();
    let (out, printed) = run(&rt, &rootfs, &step(Isolation::Process));
    assert_eq!(out.exit_code, 0);
    // Both pipes, each as written (read at once, so in either order).
    assert!(
        printed.contains("O:hi\r\n") && printed.contains("E:warn\r\n"),
        "{printed:?}"
    );
    assert_eq!(printed.len(), "O:hi\r\nE:warn\r\n".len(), "{printed:?}");
    let mut want: Vec<&str> = IMPORTS.to_vec();
    want.extend([
        "HcsInitializeWritableLayer",
        "HcsAttachLayerStorageFilter",
        "GetLayerMountPath",
        "HcsCreateComputeSystem",
        "HcsStartComputeSystem",
        "HcsCreateProcess",
        "HcsWaitForProcessExit",
        "HcsCloseProcess",
        "HcsShutDownComputeSystem",
        "HcsCloseComputeSystem",
        "HcsDetachLayerStorageFilter",
        "HcsExportLayer",
        "HcsDestroyLayer",
    ]);
    assert_eq!(rt.api().call_names(), want);
    assert_eq!(rt.api().violations(), Vec::<String>::new());
    rt.api().finished_cleanly().unwrap();
    // The container document: process isolation on the writable layer's volume, parents
    // topmost first.
    let calls = rt.api().calls();
    let create = calls
        .iter()
        .find(|c| c.name == "HcsCreateComputeSystem")
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&create.args[1]).unwrap();
    assert_eq!(doc["HvPartition"], false);
    assert!(
        doc["VolumePath"]
            .as_str()
            .unwrap()
            .starts_with("\\\\?\\Volume{")
    );
    let top = s.layers[1].diff_id.trim_start_matches("sha256:");
    assert!(doc["Layers"][0]["Path"].as_str().unwrap().ends_with(top));
    assert_eq!(doc["Layers"].as_array().unwrap().len(), 2);
    let params = rt.api().last_params().unwrap();
    assert_eq!(params["CommandLine"], "cmd /S /C echo hi> C:\\app\\x.txt");
    assert_eq!(params["User"], "ContainerUser");
    assert_eq!(params["WorkingDirectory"], "C:\\app");
    // The change set: a Windows layer tar, with the file, its records, the deletion.
    let Changes::Layer { tar, .. } = &out.changes else {
        panic!("{:?}", out.changes)
    };
    let bytes = fs::read(tar).unwrap();
    let entries = transport::entries(&bytes).unwrap();
    let x = entries
        .iter()
        .find(|(h, _)| h.path == "Files/app/x.txt")
        .expect("x.txt");
    assert_eq!(x.1, b"hi\r\n");
    assert_eq!(
        x.0.pax.get("MSWINDOWS.fileattr").map(String::as_str),
        Some("32")
    );
    assert!(x.0.pax.contains_key("MSWINDOWS.rawsd"));
    assert!(
        entries
            .iter()
            .any(|(h, _)| h.path == "Files/app/.wh.old.txt")
    );
    assert!(
        entries
            .iter()
            .any(|(h, _)| h.path == "Hives/Software_Delta")
    );
    let report = wcbuild::layer::check_windows_layer(
        std::io::Cursor::new(bytes),
        wcbuild::layer::ReadLimits::default(),
    )
    .unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    // A second step on the same parents imports nothing.
    let before = rt.api().calls().len();
    run(&rt, &s.rootfs(), &step(Isolation::Process));
    let again: Vec<&str> = rt.api().call_names()[before..].to_vec();
    assert_eq!(again, want[IMPORTS.len()..].to_vec());
}

#[test]
fn hyperv_isolation_call_sequence_and_sizing() {
    let s = Setup::new("hyperv", true);
    let rt = s.runtime(script());
    let mut st = step(Isolation::HyperV);
    st.resources = Resources {
        memory: Some(4 << 30),
        cpus: Some(3.5),
    };
    let (out, _) = run(&rt, &s.rootfs(), &st);
    assert_eq!(out.exit_code, 0);
    let mut want: Vec<&str> = IMPORTS.to_vec();
    want.extend([
        "HcsInitializeWritableLayer",
        "HcsCreateComputeSystem",
        "HcsStartComputeSystem",
        "HcsCreateProcess",
        "HcsWaitForProcessExit",
        "HcsCloseProcess",
        "HcsShutDownComputeSystem",
        "HcsCloseComputeSystem",
        "HcsExportLayer",
        "HcsDestroyLayer",
    ]);
    assert_eq!(rt.api().call_names(), want);
    assert_eq!(rt.api().violations(), Vec::<String>::new());
    rt.api().finished_cleanly().unwrap();
    let calls = rt.api().calls();
    let create = calls
        .iter()
        .find(|c| c.name == "HcsCreateComputeSystem")
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&create.args[1]).unwrap();
    assert_eq!(doc["HvPartition"], true);
    assert!(doc.get("VolumePath").is_none());
    let base = s.layers[0].diff_id.trim_start_matches("sha256:");
    let uvm = PathBuf::from(doc["HvRuntime"]["ImagePath"].as_str().unwrap());
    assert!(uvm.ends_with(Path::new(base).join("UtilityVM")), "{doc}");
    assert_eq!(doc["MemoryMaximumInMB"], 4096);
    assert_eq!(doc["ProcessorCount"], 4);
    // Without --memory/--cpus the utility VM still gets a size fit for builds.
    let (_, _) = run(&rt, &s.rootfs(), &step(Isolation::HyperV));
    let calls = rt.api().calls();
    let create = calls
        .iter()
        .rev()
        .find(|c| c.name == "HcsCreateComputeSystem")
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&create.args[1]).unwrap();
    assert_eq!(doc["MemoryMaximumInMB"], 2048);
    assert_eq!(doc["ProcessorCount"], 2);
}

#[test]
fn mounts_failures_and_what_the_fake_refuses() {
    let s = Setup::new("mounts", false);
    let rt = s.runtime(FakeScript {
        exit_code: 3,
        stdout: b"about to fail\n".to_vec(),
        ..script()
    });
    let cache = s.dir.join("cache");
    let ctx = s.dir.join("ctx");
    fs::create_dir_all(&cache).unwrap();
    fs::create_dir_all(&ctx).unwrap();
    let mut st = step(Isolation::Process);
    st.mounts = vec![
        Mount {
            target: "C:\\cache".into(),
            readonly: false,
            kind: MountKind::Cache { dir: cache.clone() },
        },
        Mount {
            target: "/src".into(),
            readonly: false,
            kind: MountKind::Bind {
                source: ctx.clone(),
            },
        },
        Mount {
            target: "C:\\run\\secrets\\token".into(),
            readonly: true,
            kind: MountKind::Secret {
                data: b"s3cret".to_vec(),
                mode: 0o400,
                uid: 0,
                gid: 0,
            },
        },
        Mount {
            target: String::new(),
            readonly: true,
            kind: MountKind::SecretEnv {
                name: "TOKEN".into(),
                data: b"envsecret".to_vec(),
            },
        },
    ];
    let (out, _) = run(&rt, &s.rootfs(), &st);
    // A failing step: its code and last lines, no export, everything undone.
    assert_eq!(out.exit_code, 3);
    // The last lines of both streams (read at once, so in either order).
    let mut tail = out.tail.clone();
    tail.sort();
    assert_eq!(tail, ["about to fail", "warn"]);
    assert!(!rt.api().call_names().contains(&"HcsExportLayer"));
    rt.api().finished_cleanly().unwrap();
    assert_eq!(rt.api().violations(), Vec::<String>::new());
    let calls = rt.api().calls();
    let create = calls
        .iter()
        .find(|c| c.name == "HcsCreateComputeSystem")
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&create.args[1]).unwrap();
    let mapped = doc["MappedDirectories"].as_array().unwrap();
    let find = |c: &str| {
        mapped
            .iter()
            .find(|m| m["ContainerPath"] == c)
            .unwrap_or_else(|| panic!("{c}: {doc}"))
    };
    assert_eq!(find("C:\\cache")["ReadOnly"], false);
    assert_eq!(
        find("C:\\src")["ReadOnly"],
        true,
        "a bind's writes cannot be discarded: read-only"
    );
    let secrets = find("C:\\run\\secrets");
    assert_eq!(secrets["ReadOnly"], true);
    let seen = rt.api().mapped_seen();
    let host = secrets["HostPath"].as_str().unwrap();
    assert_eq!(seen[host]["token"], b"s3cret");
    assert_eq!(
        rt.api().last_params().unwrap()["Environment"]["TOKEN"],
        "envsecret"
    );
    // What Windows cannot mount is refused before any container exists.
    for kind in [
        MountKind::Tmpfs { size: None },
        MountKind::Bind {
            source: s.layers[0].path.clone(),
        },
    ] {
        let before = rt.api().calls().len();
        let mut st = step(Isolation::Process);
        st.mounts = vec![Mount {
            target: "C:\\t".into(),
            readonly: true,
            kind,
        }];
        let e = rt
            .run(&s.rootfs(), &st, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("C:\\t"), "{e}");
        assert!(!rt.api().call_names()[before..].contains(&"HcsCreateComputeSystem"));
    }
    // Hyper-V with no utility VM in any parent: an error naming it, nothing created.
    let e = rt
        .run(&s.rootfs(), &step(Isolation::HyperV), &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("UtilityVM"), "{e}");
    rt.api().finished_cleanly().unwrap();
    // The isolation must have been decided.
    let mut undecided = step(Isolation::Process);
    undecided.isolation = None;
    assert!(rt.run(&s.rootfs(), &undecided, &mut |_, _| {}).is_err());
    // The fake itself refuses calls out of order and documents of the wrong shape.
    let f = FakeHcs::new(FakeScript::default());
    assert!(f.create_process(7, "{}").is_err());
    assert!(f.import_layer("relative", "/x", "{}").is_err());
    assert!(f.create_compute_system("not-a-guid", "{}").is_err());
    let e = f
        .initialize_writable_layer(
            &s.dir.join("w").to_string_lossy(),
            r#"{"SchemaVersion":{"Major":2,"Minor":0},"Layers":[]}"#,
            "",
        )
        .unwrap_err();
    assert!(e.to_string().contains("2.1"), "{e}");
    assert_eq!(f.violations().len(), 4, "{:?}", f.violations());
}

#[test]
fn transport_folders_round_trip() {
    let dir = common::tempdir("hcs", "transport");
    let sd = wcbuild::layer::windows::DEFAULT_FILE_SD;
    let mut w = LayerWriter::new(
        Vec::new(),
        LayerOptions {
            format: Format::Windows,
            compression: Compression::None,
            threads: 1,
            ..LayerOptions::default()
        },
    )
    .unwrap();
    let mut f = Header::new("app/data.bin", Kind::File);
    f.size = 3;
    f.mtime = 1_600_000_000;
    w.append(f, Some(&mut &b"abc"[..]), false).unwrap();
    // An alternate data stream right after its file, at its tar path (as the exporter
    // writes one; the writer takes it only there).
    let mut ads = Header::new("Files/app/data.bin:Zone.Identifier", Kind::File);
    ads.size = 4;
    ads.pax.insert("MSWINDOWS.fileattr".into(), "32".into());
    w.append_verbatim(ads, Some(&mut &b"zone"[..])).unwrap();
    let mut stray = Header::new("Files/app/other:stream", Kind::File);
    stray.pax.insert("MSWINDOWS.fileattr".into(), "32".into());
    assert!(w.append_verbatim(stray, Some(&mut &b""[..])).is_err());
    let mut l = Header::new("app/link", Kind::Symlink);
    l.link = "data.bin".into();
    w.append(l, None, false).unwrap();
    // A path past Windows' 260 characters.
    let deep = format!(
        "{}/leaf.txt",
        ["deep-directory-name-0123456789"; 10].join("/")
    );
    let mut h = Header::new(&deep, Kind::File);
    h.size = 1;
    w.append(h, Some(&mut &b"x"[..]), false).unwrap();
    w.whiteout("Windows/old.log").unwrap();
    let (_, tar) = w.finish().unwrap();
    let folder = dir.join("folder");
    let uvm = transport::tar_to_folder(std::io::Cursor::new(tar.clone()), &folder).unwrap();
    assert!(!uvm);
    assert!(folder.join("Files/app.$wcidirs$").is_file());
    let t = fs::read_to_string(folder.join("tombstones.txt")).unwrap();
    assert_eq!(t, "\u{feff}Version 1.0\n\\Windows\\old.log\n");
    let mut back = Vec::new();
    transport::folder_to_tar(&folder, &mut back).unwrap();
    let a = transport::entries(&tar).unwrap();
    let b = transport::entries(&back).unwrap();
    let key = |v: &[(Header, Vec<u8>)]| {
        let mut k: Vec<(String, String, String, Vec<u8>, String)> = v
            .iter()
            .filter(|(h, _)| h.path != "Hives" && h.path != "Files")
            .map(|(h, d)| {
                // An alternate data stream carries no records of its own.
                let ads = h.path.contains(':');
                (
                    h.path.clone(),
                    if ads {
                        String::new()
                    } else {
                        h.pax.get("MSWINDOWS.fileattr").cloned().unwrap_or_default()
                    },
                    h.pax.get("MSWINDOWS.rawsd").cloned().unwrap_or_default(),
                    d.clone(),
                    h.link.clone(),
                )
            })
            .collect();
        k.sort();
        k
    };
    let (ka, kb) = (key(&a), key(&b));
    let only_a: Vec<&String> = ka
        .iter()
        .filter(|k| !kb.contains(k))
        .map(|k| &k.0)
        .collect();
    let only_b: Vec<&String> = kb
        .iter()
        .filter(|k| !ka.contains(k))
        .map(|k| &k.0)
        .collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "written {only_a:?}, read back {only_b:?}"
    );
    assert_eq!(
        ka.len(),
        17,
        "{:?}",
        ka.iter().map(|k| &k.0).collect::<Vec<_>>()
    );
    let data = b
        .iter()
        .find(|(h, _)| h.path == "Files/app/data.bin")
        .unwrap();
    assert_eq!(data.0.mtime, 1_600_000_000);
    assert_eq!(data.0.pax["MSWINDOWS.rawsd"], sd);
    // Hostile folders: a stream longer than its file, a tombstone escaping the layer.
    fs::write(
        folder.join("Files/app/data.bin"),
        [
            0x20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    )
    .unwrap();
    let e = transport::folder_to_tar(&folder, &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("data.bin"), "{e}");
    fs::write(folder.join("Files/app/data.bin"), [0x20, 0, 0, 0]).unwrap();
    fs::write(
        folder.join("tombstones.txt"),
        "\u{feff}Version 1.0\n\\..\\..\\etc\n",
    )
    .unwrap();
    let e = transport::folder_to_tar(&folder, &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("tombstone"), "{e}");
}

/// The whole Windows RUN path through the binary with the checking fake in place of the
/// service (`WCBUILD_HCS_FAKE=1`, off Windows) on a described host.
#[cfg(not(windows))]
#[test]
fn windows_run_through_the_binary_decides_isolation_per_step() {
    let dir = common::tempdir("hcs", "binary");
    let root = dir.join("store");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/nanoserver.tar");
    let (code, _, err) = common::wcbuild_at(&root, &["load", "-i", fixture.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let ctx = dir.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM mcr.microsoft.com/windows/nanoserver:ltsc2022\nCOPY a.txt /app/\nRUN echo one\nRUN echo two\n",
    )
    .unwrap();
    fs::write(ctx.join("a.txt"), "a").unwrap();
    let meta = dir.join("meta.json");
    let c = ctx.to_str().unwrap();
    let build = |host: &str, sku: &str, extra: &[&str]| {
        let mut args = vec![
            "build",
            "--runtime",
            "hcs",
            "--progress",
            "plain",
            "-t",
            "w",
        ];
        args.extend_from_slice(extra);
        args.push(c);
        common::wcbuild_at_env(
            &root,
            &args,
            &[
                ("WCBUILD_HCS_FAKE", "1"),
                ("WCBUILD_HOST_WINDOWS_VERSION", host),
                ("WCBUILD_HOST_WINDOWS_SKU", sku),
            ],
        )
    };
    // A Server 2022 host: process isolation for each step, with its reason, in progress
    // and in the metadata, never in the image.
    let m = format!("--metadata-file={}", meta.display());
    let (code, _, err) = build("10.0.20348.100", "server", &[&m]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("note: isolation process: ").count(), 2, "{err}");
    assert!(err.contains("fake hcs: the step ran"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    let iso = v["wcbuild.isolation"]
        .as_array()
        .expect("the isolation records");
    assert_eq!(iso.len(), 2, "{v}");
    assert_eq!(iso[0]["line"], 3);
    assert_eq!(iso[1]["line"], 4);
    assert_eq!(iso[0]["isolation"], "process");
    assert!(iso[0]["reason"].as_str().unwrap().contains("20348"), "{v}");
    // The steps' layers are Windows layers holding what the (fake) process wrote.
    let store = wcbuild::store::Store::open(&root).unwrap();
    let e = wcbuild::ops::images::resolve(&store, "w").unwrap();
    let man: wcbuild::image::Manifest =
        serde_json::from_slice(&store.read_blob(&e.digest).unwrap()).unwrap();
    let top = man.layers.last().unwrap();
    let cfg = String::from_utf8(store.read_blob(&man.config.digest).unwrap()).unwrap();
    assert!(
        !cfg.contains("isolation"),
        "the image records no isolation: {cfg}"
    );
    let report = wcbuild::layer::check_windows_layer(
        store.open_blob(&top.digest).unwrap(),
        wcbuild::layer::ReadLimits::default(),
    )
    .unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    let mut tar = wcbuild::layer::tar_reader(
        store.open_blob(&top.digest).unwrap(),
        wcbuild::layer::ReadLimits::default(),
    )
    .unwrap();
    let mut step_json = None;
    while let Some(en) = tar.next_entry().unwrap() {
        if en.header.path == "Files/wcbuild-fake-step.json" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut tar.content(), &mut s).unwrap();
            step_json = Some(s);
        }
    }
    let p: serde_json::Value = serde_json::from_str(&step_json.expect("the step's file")).unwrap();
    assert_eq!(p["CommandLine"], "cmd /S /C echo two");
    // A client host: Hyper-V by default, which needs a utility VM the fixture lacks.
    let (code, _, err) = build("10.0.26100.1", "client", &["--no-cache"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("note: isolation hyperv: "), "{err}");
    assert!(
        err.contains("Dockerfile:3") && err.contains("UtilityVM"),
        "{err}"
    );
    // Process isolation asked on a host too old for the image: both versions and the
    // error Windows gives.
    let (code, _, err) = build(
        "10.0.17763.1",
        "server",
        &["--no-cache", "--isolation", "process"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("0xc0370101") && err.contains("17763") && err.contains("20348"),
        "{err}"
    );
    // A second build on the same store: the imported parents are used again.
    let (code, _, err) = build("10.0.20348.100", "server", &["--no-cache"]);
    assert_eq!(code, 0, "{err}");
}

/// A raw Windows-format layer tar: the headers as given, names unchecked (as a pulled layer
/// may hold them).
fn raw_layer(entries: &[(&str, Kind, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, kind, link, data) in entries {
        let mut h = Header::new(path, *kind);
        h.link = link.to_string();
        h.size = data.len() as u64;
        wcbuild::layer::tar::write_entry(&mut out, &h, true, Some(&mut &data[..])).unwrap();
    }
    out.extend_from_slice(&wcbuild::layer::tar::END);
    out
}

#[test]
fn hostile_entries_never_reach_outside_the_transport_folder() {
    let dir = common::tempdir("hcs", "hostile-transport");
    let canary = dir.join("canary");
    fs::write(&canary, b"keep").unwrap();
    let cases: &[(&str, Vec<u8>)] = &[
        (
            "backslash dot-dot",
            raw_layer(&[("Files/a\\..\\..\\..\\canary", Kind::File, "", b"x")]),
        ),
        (
            "dot-dot",
            raw_layer(&[("Files/../../canary", Kind::File, "", b"x")]),
        ),
        (
            "drive",
            raw_layer(&[("Files/C:\\canary", Kind::File, "", b"x")]),
        ),
        (
            "hard link out of the layer",
            raw_layer(&[("Files/stolen", Kind::Hardlink, "Files/../../canary", b"")]),
        ),
        (
            "hard link by an absolute name",
            raw_layer(&[(
                "Files/stolen",
                Kind::Hardlink,
                &format!("{}", canary.display()),
                b"",
            )]),
        ),
        (
            "whiteout of dot-dot",
            raw_layer(&[("Files/a/.wh...", Kind::File, "", b"")]),
        ),
        (
            "opaque marker",
            raw_layer(&[("Files/a/.wh..wh..opq", Kind::File, "", b"")]),
        ),
    ];
    for (i, (what, tar)) in cases.iter().enumerate() {
        let folder = dir.join(format!("layer{i}"));
        let r = transport::tar_to_folder(std::io::Cursor::new(tar.clone()), &folder);
        assert!(r.is_err(), "{what}: accepted");
        assert_eq!(fs::read(&canary).unwrap(), b"keep", "{what}");
        let outside: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "canary" && !n.starts_with("layer"))
            .collect();
        assert!(outside.is_empty(), "{what}: wrote {outside:?}");
        if folder.join("Files").exists() {
            let tombstones = fs::read_to_string(folder.join("tombstones.txt")).unwrap_or_default();
            assert!(!tombstones.contains(".."), "{what}: {tombstones}");
        }
    }
    let _ = fs::remove_dir_all(&dir);
}
