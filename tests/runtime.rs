//! RUN steps in a real OCI runtime (runc or crun, whichever works here) on a busybox root:
//! exit codes, output, environment, users, working directories, hosts and resolv.conf,
//! network, capabilities, every mount kind, and the change sets as layers (overlayfs and the
//! copy fallback giving the same entries). Needs root and `/bin/busybox`; Linux only.
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wcbuild::layer::diff::{write_overlay_changes, write_snapshot_changes};
use wcbuild::layer::tar::{Kind, TarReader};
use wcbuild::layer::{Compression, Format, LayerOptions, LayerWriter};
use wcbuild::runtime::oci::OciRuntime;
use wcbuild::runtime::{
    Changes, Mount, MountKind, Network, OutputStream, Rootfs, RunOutcome, Runtime, Step,
};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    app:x:1000:1000:App:/home/app:/bin/sh\n\
    svc:x:1001:1001::/srv:/bin/sh\n";
const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\nstaff:x:50:app\napp:x:1000:\nsvc:x:1001:\n";

fn runtime() -> &'static OciRuntime {
    static RT: OnceLock<OciRuntime> = OnceLock::new();
    RT.get_or_init(|| OciRuntime::select(None).expect("an OCI runtime that works here"))
}

fn copy_runtime() -> OciRuntime {
    runtime().clone().force_copy(true)
}

/// A busybox root as one overlay-format lower layer, plus fresh scratch directories.
struct Fixture {
    dir: PathBuf,
    lowers: Vec<PathBuf>,
    n: std::cell::Cell<u32>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn busybox_layer(dir: &Path) {
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
        }
    }
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/passwd"), PASSWD).unwrap();
    fs::write(dir.join("etc/group"), GROUP).unwrap();
    fs::create_dir_all(dir.join("root")).unwrap();
    fs::create_dir_all(dir.join("tmp")).unwrap();
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir = common::tempdir("runtime", name);
        let base = dir.join("layer0");
        busybox_layer(&base);
        Fixture {
            dir,
            lowers: vec![base],
            n: std::cell::Cell::new(0),
        }
    }

    /// Adds a layer on top (built by `f`).
    fn layer(&mut self, f: impl FnOnce(&Path)) {
        let p = self.dir.join(format!("layer{}", self.lowers.len()));
        fs::create_dir_all(&p).unwrap();
        f(&p);
        self.lowers.insert(0, p);
    }

    fn rootfs(&self) -> Rootfs {
        let n = self.n.get();
        self.n.set(n + 1);
        let scratch = self.dir.join(format!("scratch{n}"));
        fs::create_dir_all(&scratch).unwrap();
        fs::set_permissions(&scratch, fs::Permissions::from_mode(0o700)).unwrap();
        Rootfs {
            lowers: self.lowers.clone(),
            scratch,
        }
    }
}

fn sh(script: &str) -> Step {
    Step {
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        cwd: "/".into(),
        hostname: "buildkitsandbox".into(),
        network: Network::None,
        ..Step::default()
    }
}

struct Ran {
    out: RunOutcome,
    stdout: String,
    stderr: String,
    chunks: usize,
}

fn run_with(rt: &dyn Runtime, rootfs: &Rootfs, step: &Step) -> Ran {
    let (mut stdout, mut stderr, mut chunks) = (Vec::new(), Vec::new(), 0);
    let out = rt
        .run(rootfs, step, &mut |s, d| {
            chunks += 1;
            match s {
                OutputStream::Stdout => stdout.extend_from_slice(d),
                OutputStream::Stderr => stderr.extend_from_slice(d),
            }
        })
        .unwrap_or_else(|e| panic!("run failed: {e}"));
    Ran {
        out,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        chunks,
    }
}

fn run(fx: &Fixture, step: &Step) -> Ran {
    run_with(runtime(), &fx.rootfs(), step)
}

/// What a layer entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    link: String,
    content: Vec<u8>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

fn layer_of(changes: &Changes, format: Format) -> (Vec<String>, BTreeMap<String, Entry>) {
    let opts = LayerOptions {
        format,
        compression: Compression::None,
        threads: 1,
        ..LayerOptions::default()
    };
    let mut w = LayerWriter::new(Vec::new(), opts).unwrap();
    match changes {
        Changes::Overlay { upper, lowers } => {
            write_overlay_changes(upper, lowers, &mut w).unwrap();
        }
        Changes::Snapshot { root, before } => {
            write_snapshot_changes(root, before, &mut w).unwrap();
        }
    }
    let tar = w.finish().unwrap().1;
    let mut r = TarReader::new(&tar[..]);
    let mut order = Vec::new();
    let mut map = BTreeMap::new();
    while let Some(e) = r.next_entry().unwrap() {
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut r.content(), &mut content).unwrap();
        order.push(e.header.path.clone());
        map.insert(
            e.header.path.clone(),
            Entry {
                kind: e.header.kind,
                mode: e.header.mode,
                uid: e.header.uid,
                gid: e.header.gid,
                link: e.header.link.clone(),
                content,
                xattrs: e.header.xattrs.clone(),
            },
        );
    }
    (order, map)
}

fn names(changes: &Changes) -> Vec<String> {
    layer_of(changes, Format::Linux).0
}

#[test]
fn exit_codes_and_output() {
    let fx = Fixture::new("exit");
    let r = run(&fx, &sh("echo out; echo err >&2; exit 3"));
    assert_eq!(r.out.exit_code, 3);
    assert_eq!(r.stdout, "out\n");
    assert_eq!(r.stderr, "err\n");
    let r = run(&fx, &sh("sh -c 'kill -9 $$'; exit $?"));
    assert_eq!(r.out.exit_code, 137);
    let r = run(&fx, &sh("true"));
    assert_eq!(r.out.exit_code, 0);
    eprintln!("{:?} {}", r.out.timings, runtime().name());
    assert_eq!(names(&r.out.changes), Vec::<String>::new());
}
