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
            image: None,
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
        Changes::Layer { .. } => unreachable!("the OCI runtime hands back directories"),
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

fn host_caps_eff() -> String {
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn exit_codes_output_and_tail() {
    let fx = Fixture::new("exit");
    let r = run(&fx, &sh("echo out; echo err >&2; exit 3"));
    assert_eq!(r.out.exit_code, 3);
    assert_eq!(r.stdout, "out\n");
    assert_eq!(r.stderr, "err\n");
    // Two pipes: the order between them is the reader threads'.
    let mut tail = r.out.tail.clone();
    tail.sort();
    assert_eq!(tail, ["err", "out"]);
    let r = run(&fx, &sh("sh -c 'kill -9 $$'; exit $?"));
    assert_eq!(r.out.exit_code, 137);
    // Output is streamed as it comes, and the tail keeps the last lines.
    let r = run(
        &fx,
        &sh(
            "i=0; while [ $i -lt 30 ]; do echo line$i; i=$((i+1)); sleep 0.01; done; printf partial",
        ),
    );
    assert_eq!(r.out.exit_code, 0);
    assert!(r.chunks >= 10, "{} chunks", r.chunks);
    assert_eq!(r.out.tail.len(), 20);
    assert_eq!(r.out.tail[0], "line11");
    assert_eq!(r.out.tail[19], "partial");
    // A trivial step changes nothing but the mount points runc makes for a root without them
    // (BuildKit's layers have them too).
    let r = run(&fx, &sh("true"));
    assert_eq!(names(&r.out.changes), ["dev", "proc", "sys"]);
    // A missing command is the runtime's error, not an exit code.
    let err = runtime()
        .run(
            &fx.rootfs(),
            &Step {
                args: vec!["/nonexistent".into()],
                cwd: "/".into(),
                ..Step::default()
            },
            &mut |_, _| {},
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent") && err.contains("bundle"),
        "{err}"
    );
}

#[test]
fn environment_and_home() {
    let fx = Fixture::new("env");
    let mut step = sh("env | sort");
    step.env.push("FOO=bar baz".into());
    let r = run(&fx, &step);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines.contains(&"FOO=bar baz"), "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("HOME=")).count(), 1);
    assert!(lines.contains(&"HOME=/root"));
    assert!(!lines.iter().any(|l| l.starts_with("HOSTNAME=")));
    step.user = "app".into();
    let r = run(&fx, &step);
    assert!(
        r.stdout.lines().any(|l| l == "HOME=/home/app"),
        "{}",
        r.stdout
    );
    step.user = "4242".into();
    let r = run(&fx, &step);
    assert!(r.stdout.lines().any(|l| l == "HOME=/"), "{}", r.stdout);
    step.env.push("HOME=/custom".into());
    let r = run(&fx, &step);
    let homes: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("HOME="))
        .collect();
    assert_eq!(homes, ["HOME=/custom"]);
}

#[test]
fn users_and_groups() {
    let fx = Fixture::new("users");
    for (user, want) in [
        ("", "0 0 0 10"),
        ("root", "0 0 0 10"),
        ("app", "1000 1000 1000 10 50"),
        ("1000", "1000 1000 1000 10 50"),
        ("1000:50", "1000 50 50"),
        ("app:staff", "1000 50 50"),
        ("svc", "1001 1001 1001"),
        ("777", "777 0 0"),
        ("777:777", "777 777 777"),
    ] {
        let mut step = sh("echo $(id -u) $(id -g) $(id -G)");
        step.user = user.into();
        let r = run(&fx, &step);
        assert_eq!(r.stdout.trim(), want, "USER {user:?}: {}", r.stderr);
    }
    let mut step = sh("true");
    step.user = "nobody".into();
    let err = runtime()
        .run(&fx.rootfs(), &step, &mut |_, _| {})
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unable to find user nobody: no matching entries in passwd file"
    );
}

#[test]
fn working_directory_is_created_for_the_user() {
    let fx = Fixture::new("cwd");
    let mut step = sh("pwd; touch f");
    step.user = "app".into();
    step.cwd = "/work/deep".into();
    let r = run(&fx, &step);
    assert_eq!(r.out.exit_code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "/work/deep\n");
    let (_, layer) = layer_of(&r.out.changes, Format::Linux);
    for d in ["work", "work/deep"] {
        let e = &layer[d];
        assert_eq!(
            (e.kind, e.mode, e.uid, e.gid),
            (Kind::Dir, 0o755, 1000, 1000),
            "{d}"
        );
    }
    let f = &layer["work/deep/f"];
    // umask 0022.
    assert_eq!((f.mode, f.uid, f.gid), (0o644, 1000, 1000));
    // An existing directory is left as it is.
    let mut step = sh("pwd");
    step.user = "app".into();
    step.cwd = "/root".into();
    let r = run(&fx, &step);
    assert!(!names(&r.out.changes).iter().any(|n| n.starts_with("root")));
}

#[test]
fn umask_caps_and_insecure() {
    let fx = Fixture::new("caps");
    let r = run(
        &fx,
        &sh("umask; grep ^Cap /proc/self/status; cat /proc/self/status | grep NoNewPrivs"),
    );
    let out = r.stdout;
    assert!(out.starts_with("0022\n"), "{out}");
    // The 14 default capabilities, in the bounding, permitted and effective sets only.
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapInh:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
    // Masked and read-only paths.
    let r = run(
        &fx,
        &sh("cat /proc/kcore | wc -c; echo 1 > /proc/sysrq-trigger && echo writable"),
    );
    assert_eq!(r.stdout.lines().next(), Some("0"));
    assert!(!r.stdout.contains("writable"));
    let mut step = sh(
        "grep ^CapEff /proc/self/status; echo 1 > /proc/sys/vm/drop_caches && echo writable; ls /dev/loop-control",
    );
    step.insecure = true;
    let r = run(&fx, &step);
    assert!(
        r.stdout.contains(&format!("CapEff:\t{}", host_caps_eff())),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("writable"), "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("/dev/loop-control"));
}

#[test]
fn hostname_hosts_and_resolv_conf() {
    // A root without /etc: the stubs runc makes (and /etc itself) must not stay in the layer.
    let mut fx = Fixture::new("hosts");
    fs::remove_dir_all(fx.lowers[0].join("etc")).unwrap();
    fx.layer(|_| {});
    let mut step = sh(
        "hostname; cat /etc/hosts; echo ---; cat /etc/resolv.conf; echo x > /etc/hosts || echo refused",
    );
    step.extra_hosts = vec![("db.local".into(), "10.0.0.7".into())];
    let r = run(&fx, &step);
    let (hostname, rest) = r.stdout.split_once('\n').unwrap();
    assert_eq!(hostname, "buildkitsandbox");
    let (hosts, resolv) = rest.split_once("---\n").unwrap();
    assert_eq!(
        hosts,
        "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n10.0.0.7\tdb.local\n"
    );
    assert!(resolv.ends_with("refused\n"), "{resolv}");
    let resolv = resolv.trim_end_matches("refused\n");
    assert!(resolv.lines().all(|l| !l.starts_with('#')), "{resolv}");
    assert!(
        resolv.lines().any(|l| l.starts_with("nameserver ")),
        "{resolv}"
    );
    assert!(!resolv.contains("nameserver 127."), "{resolv}");
    let layer = names(&r.out.changes);
    assert!(!layer.iter().any(|n| n.starts_with("etc")), "{layer:?}");
    let mut step = sh("hostname");
    step.hostname = "custom".into();
    assert_eq!(run(&fx, &step).stdout, "custom\n");
}

#[test]
fn network_none_and_host() {
    let fx = Fixture::new("net");
    let r = run(
        &fx,
        &sh("ls /sys/class/net; cat /sys/class/net/lo/operstate; ip -o link show lo"),
    );
    let mut lines = r.stdout.lines();
    assert_eq!(lines.next(), Some("lo"));
    assert_eq!(lines.next(), Some("unknown"));
    assert!(lines.next().unwrap_or("").contains(",UP"), "{}", r.stdout);
    let mut step = sh("ls /sys/class/net");
    step.network = Network::Host;
    let r = run(&fx, &step);
    let mut host: Vec<String> = fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    host.sort();
    let mut inside: Vec<String> = r.stdout.lines().map(str::to_string).collect();
    inside.sort();
    assert_eq!(inside, host);
}

#[test]
fn bind_cache_and_tmpfs_mounts() {
    let fx = Fixture::new("mounts");
    let src = fx.dir.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("in.txt"), "from the host").unwrap();
    let cache = fx.dir.join("cache");
    fs::create_dir_all(&cache).unwrap();
    let mount = |target: &str, readonly: bool, kind: MountKind| Mount {
        target: target.into(),
        readonly,
        kind,
    };
    let mut step = sh(
        "cat /src/in.txt; echo; echo x > /src/new && echo ro-writable; \
        echo y > /rw/new && cat /rw/new; echo c >> /cache/log; cat /cache/log | wc -l; \
        grep ' /t ' /proc/mounts; dd if=/dev/zero of=/t/big bs=1024 count=200 2>/dev/null || echo tmpfs-full",
    );
    step.mounts = vec![
        mount(
            "/src",
            true,
            MountKind::Bind {
                source: src.clone(),
            },
        ),
        mount(
            "/rw",
            false,
            MountKind::Bind {
                source: src.clone(),
            },
        ),
        mount("/cache", false, MountKind::Cache { dir: cache.clone() }),
        mount(
            "/t",
            false,
            MountKind::Tmpfs {
                size: Some(100 * 1024),
            },
        ),
    ];
    let r = run(&fx, &step);
    let out = &r.stdout;
    assert!(out.starts_with("from the host\n"), "{out}");
    assert!(!out.contains("ro-writable"), "{out}");
    assert!(out.contains("y\n"), "{out}");
    assert!(out.contains("\n1\n"), "{out}");
    assert!(out.contains("tmpfs /t tmpfs rw,nosuid,"), "{out}");
    assert!(out.contains("size=100k"), "{out}");
    assert!(out.contains("tmpfs-full"), "{out}");
    // The rw bind's writes are gone, the cache's are kept.
    assert!(!src.join("new").exists());
    assert_eq!(fs::read_to_string(cache.join("log")).unwrap(), "c\n");
    let r2 = run(&fx, &step);
    assert!(r2.stdout.contains("\n2\n"), "{}", r2.stdout);
    // No mount target stays in the layer.
    let layer = names(&r.out.changes);
    for t in ["src", "rw", "cache", "t"] {
        assert!(!layer.contains(&t.to_string()), "{t} in {layer:?}");
    }
}

#[test]
fn secrets_and_ssh() {
    let fx = Fixture::new("secrets");
    let mut step = sh(
        "stat -c '%a %u %g' /run/secrets/token /s2; cat /run/secrets/token; echo; cat /s2; echo; echo $API_KEY; \
        grep ' /run/secrets/token ' /proc/mounts; stat -c '%F %a %u %g' $SSH_AUTH_SOCK",
    );
    step.mounts = vec![
        Mount {
            target: "/run/secrets/token".into(),
            readonly: true,
            kind: MountKind::Secret {
                data: b"s3cr3t-one".to_vec(),
                mode: 0o400,
                uid: 0,
                gid: 0,
            },
        },
        Mount {
            target: "/s2".into(),
            readonly: true,
            kind: MountKind::Secret {
                data: b"s3cr3t-two".to_vec(),
                mode: 0o440,
                uid: 1000,
                gid: 50,
            },
        },
        Mount {
            target: String::new(),
            readonly: true,
            kind: MountKind::SecretEnv {
                name: "API_KEY".into(),
                data: b"k3y".to_vec(),
            },
        },
    ];
    // An SSH agent stand-in.
    let agent_dir = common::tempdir("runtime", "agent");
    let agent = agent_dir.join("a.sock");
    let listener = std::os::unix::net::UnixListener::bind(&agent).unwrap();
    step.mounts.push(Mount {
        target: "/run/buildkit/ssh_agent.0".into(),
        readonly: true,
        kind: MountKind::Ssh {
            socket: agent.clone(),
            mode: 0o600,
            uid: 1000,
            gid: 1000,
        },
    });
    drop(listener);
    let r = run(&fx, &step);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "400 0 0", "{}\n{}", r.stdout, r.stderr);
    assert_eq!(lines[1], "440 1000 50");
    assert_eq!(lines[2], "s3cr3t-one");
    assert_eq!(lines[3], "s3cr3t-two");
    assert_eq!(lines[4], "k3y");
    assert!(lines[5].contains(" ro,nosuid,nodev,noexec"), "{}", lines[5]);
    assert_eq!(lines[6], "socket 600 1000 1000");
    // Never on disk: not in the upper directory, not in the layer.
    let Changes::Overlay { upper, .. } = &r.out.changes else {
        panic!("overlay expected")
    };
    let found = std::process::Command::new("grep")
        .arg("-rl")
        .arg("s3cr3t")
        .arg(&fx.dir)
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&found.stdout)
    );
    assert!(!upper.join("run").exists());
    assert!(!upper.join("s2").exists());
    let _ = fs::remove_dir_all(&agent_dir);
}

/// Runs inside the container (the test binary with its libraries in a layer): talks to the
/// agent socket.
#[test]
fn ssh_client_inner() {
    let Ok(sock) = std::env::var("WCBUILD_TEST_SSH_CLIENT") else {
        return;
    };
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.write_all(b"ping").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    println!("reply:{reply}");
}

fn layer_with_test_binary(dir: &Path) -> String {
    let exe = std::env::current_exe().unwrap();
    let ldd = std::process::Command::new("ldd")
        .arg(&exe)
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(p) = path {
            let to = dir.join(p.strip_prefix("/").unwrap());
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(fs::canonicalize(&p).unwrap(), &to).unwrap();
        }
    }
    fs::create_dir_all(dir.join("t")).unwrap();
    fs::copy(&exe, dir.join("t/tests")).unwrap();
    "/t/tests".into()
}

#[test]
fn ssh_agent_is_forwarded() {
    let mut fx = Fixture::new("ssh");
    let mut bin = String::new();
    fx.layer(|d| bin = layer_with_test_binary(d));
    let agent_dir = common::tempdir("runtime", "agent2");
    let agent = agent_dir.join("a.sock");
    let listener = std::os::unix::net::UnixListener::bind(&agent).unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut c, _) = listener.accept().unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        c.write_all(format!("pong to {got}").as_bytes()).unwrap();
    });
    let step = Step {
        args: vec![
            bin,
            "--exact".into(),
            "ssh_client_inner".into(),
            "--nocapture".into(),
            "--test-threads=1".into(),
        ],
        env: vec!["WCBUILD_TEST_SSH_CLIENT=/run/buildkit/ssh_agent.0".into()],
        cwd: "/".into(),
        user: "app".into(),
        mounts: vec![Mount {
            target: "/run/buildkit/ssh_agent.0".into(),
            readonly: true,
            kind: MountKind::Ssh {
                socket: agent.clone(),
                mode: 0o600,
                uid: 1000,
                gid: 1000,
            },
        }],
        ..Step::default()
    };
    let r = run(&fx, &step);
    server.join().unwrap();
    assert!(
        r.stdout.contains("reply:pong to ping"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let _ = fs::remove_dir_all(&agent_dir);
}

/// A lower layer with files, directories, links and a setuid binary to change.
fn rich_fixture(name: &str) -> Fixture {
    let mut fx = Fixture::new(name);
    fx.layer(|d| {
        fs::create_dir_all(d.join("data/dir/sub")).unwrap();
        fs::write(d.join("data/keep"), "keep").unwrap();
        fs::write(d.join("data/gone"), "gone").unwrap();
        fs::write(d.join("data/edit"), "old").unwrap();
        fs::write(d.join("data/dir/sub/x"), "x").unwrap();
        fs::create_dir_all(d.join("swap/inner")).unwrap();
        fs::write(d.join("swap/inner/f"), "f").unwrap();
        fs::write(d.join("plain"), "a file").unwrap();
        fs::create_dir_all(d.join("opq")).unwrap();
        fs::write(d.join("opq/a"), "a").unwrap();
        fs::write(d.join("opq/b"), "b").unwrap();
        fs::write(d.join("data/chmodme"), "m").unwrap();
    });
    // A layer above that already deleted something (a whiteout) and made a dir opaque.
    fx.layer(|d| {
        fs::create_dir_all(d.join("data")).unwrap();
        let c = std::ffi::CString::new(d.join("data/keep-deleted").to_str().unwrap()).unwrap();
        // SAFETY: a 0/0 character device, overlayfs' whiteout.
        assert_eq!(
            unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, 0) },
            0
        );
    });
    fx
}

const CHANGES: &str = "set -e; cd /data; rm gone; echo new > edit; rm -rf dir; \
    rm -rf /swap; echo now-a-file > /swap; rm /plain; mkdir /plain; echo in > /plain/in; \
    rm -rf /opq; mkdir /opq; echo c > /opq/c; \
    echo h > /h1; ln /h1 /h2; ln -s /data/edit /sym; \
    cp /bin/busybox /suid; chmod 4755 /suid; chmod 600 /data/chmodme; \
    mkdir -p /new/deep; echo d > /new/deep/file; mkfifo /fifo; touch /data/keep";

#[test]
fn change_sets_as_layers() {
    let fx = rich_fixture("changes");
    let r = run(&fx, &sh(CHANGES));
    assert_eq!(r.out.exit_code, 0, "{}", r.stderr);
    let (order, layer) = layer_of(&r.out.changes, Format::Linux);
    let kind = |p: &str| layer.get(p).map(|e| e.kind);
    // Deletions: one whiteout each, directories included.
    assert_eq!(kind("data/.wh.gone"), Some(Kind::File));
    assert_eq!(kind("data/.wh.dir"), Some(Kind::File));
    assert!(
        !order.iter().any(|n| n.starts_with("data/dir/")),
        "{order:?}"
    );
    assert_eq!(layer["data/.wh.gone"].mode, 0);
    // A directory replaced by a file, and a file by a directory: no whiteout, no opaque marker.
    assert_eq!(kind("swap"), Some(Kind::File));
    assert!(kind(".wh.swap").is_none());
    assert_eq!(kind("plain"), Some(Kind::Dir));
    assert_eq!(layer["plain/in"].content, b"in\n");
    // An emptied and recreated directory: per-entry whiteouts.
    assert_eq!(kind("opq/.wh.a"), Some(Kind::File));
    assert_eq!(kind("opq/.wh.b"), Some(Kind::File));
    assert_eq!(layer["opq/c"].content, b"c\n");
    assert!(
        !order.iter().any(|n| n.contains(".wh..wh..opq")),
        "{order:?}"
    );
    // Modified and untouched files; a touch is a change of mtime (and so an entry, as in BuildKit).
    assert_eq!(layer["data/edit"].content, b"new\n");
    assert_eq!(layer["data/chmodme"].mode, 0o600);
    assert!(kind("data/keep").is_some());
    // Parents of changes come first, with their metadata.
    let pos = |p: &str| {
        order
            .iter()
            .position(|n| n == p)
            .unwrap_or_else(|| panic!("{p} not in {order:?}"))
    };
    assert!(pos("data") < pos("data/.wh.gone"));
    assert!(pos("new") < pos("new/deep") && pos("new/deep") < pos("new/deep/file"));
    // Hard links, symlinks, setuid, fifos.
    assert_eq!(kind("h1"), Some(Kind::File));
    assert_eq!(
        (layer["h2"].kind, layer["h2"].link.as_str()),
        (Kind::Hardlink, "h1")
    );
    assert_eq!(
        (layer["sym"].kind, layer["sym"].link.as_str()),
        (Kind::Symlink, "/data/edit")
    );
    assert_eq!(layer["suid"].mode, 0o4755);
    assert_eq!(kind("fifo"), Some(Kind::Fifo));
    // A whiteout in the lowers is not deleted again; nothing else is in the layer.
    assert!(kind("data/.wh.keep-deleted").is_none());
    let mut got: Vec<&str> = order.iter().map(String::as_str).collect();
    got.sort();
    let mut want = vec![
        "data",
        "data/.wh.gone",
        "data/.wh.dir",
        "data/edit",
        "data/chmodme",
        "data/keep",
        "swap",
        "plain",
        "plain/in",
        "opq",
        "opq/.wh.a",
        "opq/.wh.b",
        "opq/c",
        "h1",
        "h2",
        "sym",
        "suid",
        "new",
        "new/deep",
        "new/deep/file",
        "fifo",
        "dev",
        "proc",
        "sys",
    ];
    want.sort();
    assert_eq!(got, want);
    // The Windows format: the same changes under Files/, per-entry whiteouts, no devices.
    let r = run(
        &fx,
        &sh("rm -rf /opq /data/gone; mkdir /opq; echo c > /opq/c"),
    );
    let (order, _) = layer_of(&r.out.changes, Format::Windows);
    for want in [
        "Files/opq/.wh.a",
        "Files/opq/.wh.b",
        "Files/opq/c",
        "Files/data/.wh.gone",
    ] {
        assert!(order.iter().any(|n| n == want), "{want} not in {order:?}");
    }
}

/// The tree a step leaves, as (path → mode, owner, group, size, link, content).
type Tree = BTreeMap<String, (u32, u32, u32, u64, String, Vec<u8>)>;

fn tree(root: &Path) -> Tree {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let link = fs::read_link(&p)
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            let content = if m.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            let size = if m.is_file() { m.len() } else { 0 };
            out.insert(rel, (m.mode(), m.uid(), m.gid(), size, link, content));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

#[test]
fn snapshot_fallback_matches_overlay_and_layers_apply() {
    let fx = rich_fixture("fallback");
    let over = run(&fx, &sh(CHANGES));
    let copy_rt = copy_runtime();
    let copy = run_with(&copy_rt, &fx.rootfs(), &sh(CHANGES));
    assert_eq!(copy.out.exit_code, 0, "{}", copy.stderr);
    assert!(
        copy.out
            .notes
            .iter()
            .any(|n| n.contains("copying the root file system")),
        "{:?}",
        copy.out.notes
    );
    assert!(matches!(copy.out.changes, Changes::Snapshot { .. }));
    let (o_order, o_layer) = layer_of(&over.out.changes, Format::Linux);
    let (c_order, c_layer) = layer_of(&copy.out.changes, Format::Linux);
    assert_eq!(o_order, c_order);
    assert_eq!(o_layer, c_layer);
    // The overlay layer applied onto the lowers gives the tree the step left.
    let Changes::Snapshot { root: after, .. } = &copy.out.changes else {
        unreachable!()
    };
    let applied = fx.dir.join("applied");
    fs::create_dir_all(&applied).unwrap();
    wcbuild::runtime::overlay::copy_lowers(&fx.lowers, &applied).unwrap();
    let opts = LayerOptions {
        compression: Compression::None,
        threads: 1,
        ..LayerOptions::default()
    };
    let mut w = LayerWriter::new(Vec::new(), opts).unwrap();
    let Changes::Overlay { upper, lowers } = &over.out.changes else {
        unreachable!()
    };
    write_overlay_changes(upper, lowers, &mut w).unwrap();
    let blob = w.finish().unwrap().1;
    wcbuild::layer::apply(
        std::io::Cursor::new(blob),
        &applied,
        &wcbuild::layer::ExtractOptions::default(),
    )
    .unwrap();
    let (mut a, b) = (tree(&applied), tree(after));
    // `layer::apply` restores owners after modes, and the kernel drops setuid bits on chown:
    // the layer entry has them (see change_sets_as_layers); the extractor loses them.
    for (k, v) in a.iter_mut() {
        if let Some(w) = b.get(k)
            && w.0 & 0o6000 != 0
            && v.0 == w.0 & !0o6000
        {
            assert_eq!(k, "suid");
            v.0 = w.0;
        }
    }
    let diff: Vec<_> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .collect();
    let shown: Vec<_> = diff
        .iter()
        .map(|k| {
            (
                k,
                a.get(*k).map(|v| (v.0, v.1, v.2, v.3)),
                b.get(*k).map(|v| (v.0, v.1, v.2, v.3)),
            )
        })
        .collect();
    assert!(diff.is_empty(), "differs: {shown:?}");
}

#[test]
fn steps_run_without_writable_cgroups() {
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "set -e; mount --make-rprivate /; \
         for m in $(awk '$2 ~ /^\\/sys\\/fs\\/cgroup\\// {{print $2}}' /proc/mounts | sort -r); do mount -o remount,ro,bind $m; done; \
         mount -o remount,ro,bind /sys/fs/cgroup; \
         WCBUILD_TEST_RO_CGROUP=1 exec {} --exact ro_cgroup_inner --nocapture --test-threads=1",
        exe.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("inner: ok"), "{text}");
}

#[test]
fn ro_cgroup_inner() {
    if std::env::var("WCBUILD_TEST_RO_CGROUP").is_err() {
        return;
    }
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(" /sys/fs/cgroup/memory ") && l.contains(" ro,")),
        "{mounts}"
    );
    let rt = OciRuntime::select(None).unwrap();
    assert!(
        rt.notes().iter().any(|n| n.contains("cgroups")),
        "{:?}",
        rt.notes()
    );
    let fx = Fixture::new("rocg");
    let r = run_with(&rt, &fx.rootfs(), &sh("echo ok"));
    assert_eq!(
        (r.out.exit_code, r.stdout.as_str()),
        (0, "ok\n"),
        "{}",
        r.stderr
    );
    println!("inner: ok");
}

#[test]
fn cancel_kills_the_container() {
    let fx = Fixture::new("cancel");
    let step = sh("echo started; sleep 30");
    let cancel = step.cancel.clone();
    let t = std::time::Instant::now();
    let rootfs = fx.rootfs();
    let mut seen = false;
    let err = runtime()
        .run(&rootfs, &step, &mut |_, d| {
            if d.starts_with(b"started") {
                seen = true;
                cancel.cancel();
            }
        })
        .unwrap_err();
    assert!(seen);
    assert!(
        matches!(err, wcbuild::runtime::RuntimeError::Cancelled),
        "{err}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    // The step's process is gone.
    let left = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| fs::read(e.unwrap().path().join("cmdline")).ok())
        .any(|c| c == b"sleep\x0030\x00");
    assert!(!left, "the step's process survived the cancel");
    // Nothing of the step is mounted any more.
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(&rootfs.scratch.display().to_string()));
}

type D = std::time::Duration;
/// mount, bundle, runtime, cleanup, diff, total.
type Row = (D, D, D, D, D, D);

#[test]
fn trivial_step_timings() {
    let fx = Fixture::new("timing");
    let mut rows = Vec::new();
    for _ in 0..20 {
        let t = std::time::Instant::now();
        let r = run(&fx, &sh("true"));
        let run_done = t.elapsed();
        let d = std::time::Instant::now();
        let _ = layer_of(&r.out.changes, Format::Linux);
        let diff = d.elapsed();
        rows.push((
            r.out.timings.mount,
            r.out.timings.bundle,
            r.out.timings.runtime,
            r.out.timings.cleanup,
            diff,
            run_done + diff,
        ));
    }
    let med = |f: &dyn Fn(&Row) -> std::time::Duration| {
        let mut v: Vec<_> = rows.iter().map(f).collect();
        v.sort();
        v[v.len() / 2]
    };
    let total = med(&|r| r.5);
    eprintln!(
        "trivial step, median of 20: mount {:?}, bundle {:?}, runtime {:?}, cleanup {:?}, diff {:?}, total {:?} ({}; probe once {:?})",
        med(&|r| r.0),
        med(&|r| r.1),
        med(&|r| r.2),
        med(&|r| r.3),
        med(&|r| r.4),
        total,
        runtime().name(),
        runtime().probe_time()
    );
    assert!(total < std::time::Duration::from_millis(500), "{total:?}");
}
