//! `wcbuild compat` through the binary (text, JSON, exit codes) over the Nano Server
//! fixtures, and the Windows-host choice of `pull` on a host described with
//! `WCBUILD_HOST_WINDOWS_VERSION`, against a real registry.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const NANO: &str = "mcr.microsoft.com/windows/nanoserver";
const V2019: &str = "10.0.17763.6414";
const V2022: &str = "10.0.20348.2849";
const V2025: &str = "10.0.26100.2314";

fn tempdir(name: &str) -> PathBuf {
    common::tempdir("compat", name)
}

/// A store with the Nano Server fixtures loaded (once per test binary).
fn fixture_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = tempdir("fixtures");
        let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nanoserver.tar");
        let (code, _, err) = common::wcbuild_at(&root, &["load", "-i", archive.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        root
    })
}

fn compat(args: &[&str]) -> (i32, String, String) {
    common::wcbuild_at_env(
        fixture_root(),
        args,
        &[("WCBUILD_HOST_WINDOWS_VERSION", "")],
    )
}

fn compat_json(args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec!["compat", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = compat(&all);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?} {err}"));
    (code, v, err)
}

/// The hosts of Microsoft's table with, per fixture image (2019, 2022, 2025), `P`, `H` or `-`.
const HOSTS: [(&str, &str, [&str; 3]); 8] = [
    ("10.0.26100.1742", "server", ["H", "PH", "PH"]),
    ("10.0.20348.2227", "server", ["H", "PH", "-"]),
    ("10.0.17763.5329", "server", ["PH", "-", "-"]),
    ("10.0.14393.7515", "server", ["-", "-", "-"]),
    ("10.0.26100.2033", "client", ["H", "PH", "PH"]),
    ("10.0.22631.4460", "client", ["H", "PH", "-"]),
    ("10.0.19045.5131", "client", ["H", "-", "-"]),
    ("10.0.26200.6584", "server", ["H", "H", "PH"]),
];

#[test]
fn json_for_every_fixture_and_host_follows_the_table() {
    let mut cases = 0;
    for (host, sku, cells) in HOSTS {
        for ((tag, version), cell) in [
            ("ltsc2019", V2019),
            ("ltsc2022", V2022),
            ("ltsc2025", V2025),
        ]
        .into_iter()
        .zip(cells)
        {
            let reference = format!("{NANO}:{tag}");
            let (code, v, err) =
                compat_json(&[&reference, "--host-version", host, "--host-sku", sku]);
            let what = format!("{host} {sku} × {tag}: {v} {err}");
            // The documented fields, plus the image named and its entry.
            let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
            keys.sort();
            assert_eq!(
                keys,
                [
                    "auto",
                    "entry",
                    "host_sku",
                    "host_version",
                    "hyperv",
                    "image_os_version",
                    "process",
                    "reference",
                ],
                "{what}"
            );
            assert_eq!(v["image_os_version"], version, "{what}");
            assert_eq!(v["host_version"], host, "{what}");
            assert_eq!(v["host_sku"], sku, "{what}");
            assert_eq!(v["reference"], reference.as_str(), "{what}");
            assert_eq!(v["process"]["allowed"], cell.contains('P'), "{what}");
            assert_eq!(v["hyperv"]["allowed"], cell.contains('H'), "{what}");
            for k in ["process", "hyperv"] {
                assert!(
                    v[k]["reason"].as_str().is_some_and(|r| r.len() > 20),
                    "{what}"
                );
            }
            let auto = match (sku, cell.contains('P'), cell.contains('H')) {
                ("server", true, _) => serde_json::json!("process"),
                (_, _, true) => serde_json::json!("hyperv"),
                _ => serde_json::Value::Null,
            };
            assert_eq!(v["auto"], auto, "{what}");
            assert_eq!(code, if auto.is_null() { 1 } else { 0 }, "{what}");
            if auto.is_null() {
                assert!(
                    err.contains("0xc0370101") && err.contains(host) && err.contains(version),
                    "{what}"
                );
            } else {
                assert!(err.is_empty(), "{what}");
            }
            assert_eq!(
                v["entry"]["platform"],
                format!("windows/amd64:{version}").as_str(),
                "{what}"
            );
            assert!(
                v["entry"]["digest"]
                    .as_str()
                    .unwrap()
                    .starts_with("sha256:")
            );
            cases += 1;
        }
    }
    assert_eq!(cases, 24);
}

#[test]
fn a_multi_version_index_answers_for_the_entry_the_host_pulls() {
    for (host, sku, chosen, auto) in [
        ("10.0.26200.6584", "server", V2025, "process"),
        ("10.0.26100.1742", "server", V2025, "process"),
        ("10.0.20348.2227", "server", V2022, "process"),
        ("10.0.17763.5329", "server", V2019, "process"),
        ("10.0.22631.4460", "client", V2022, "hyperv"),
        ("10.0.19045.5131", "client", V2019, "hyperv"),
    ] {
        let (code, v, err) = compat_json(&[
            &format!("{NANO}:multi"),
            "--host-version",
            host,
            "--host-sku",
            sku,
        ]);
        let what = format!("{host} {sku}: {v} {err}");
        assert_eq!(code, 0, "{what}");
        assert_eq!(v["image_os_version"], chosen, "{what}");
        assert_eq!(v["auto"], auto, "{what}");
        assert_eq!(
            v["entry"]["platform"],
            format!("windows/amd64:{chosen}").as_str()
        );
        let entries = v["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 3, "{what}");
        let marked: Vec<&str> = entries
            .iter()
            .filter(|e| e["chosen"] == true)
            .map(|e| e["platform"].as_str().unwrap())
            .collect();
        assert_eq!(marked, [format!("windows/amd64:{chosen}")], "{what}");
        // The chosen entry's digest is the one its tag names.
        let tag = match chosen {
            V2019 => "ltsc2019",
            V2022 => "ltsc2022",
            _ => "ltsc2025",
        };
        let (_, single, _) = compat_json(&[&format!("{NANO}:{tag}"), "--host-version", host]);
        assert_eq!(v["entry"]["digest"], single["entry"]["digest"], "{what}");
    }
    // Windows Server 2016 runs none of them: the newest is answered for, and the exit is 1.
    let (code, v, err) = compat_json(&[
        &format!("{NANO}:multi"),
        "--host-version",
        "10.0.14393.1914",
    ]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["auto"], serde_json::Value::Null);
    assert_eq!(v["image_os_version"], V2025);
    assert!(
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["chosen"] == false && e["process"] == false && e["hyperv"] == false)
    );
    assert!(err.contains("0xc0370101"), "{err}");
}

#[test]
fn text_output() {
    let (code, out, err) = compat(&[
        "compat",
        &format!("{NANO}:multi"),
        "--host-version",
        "10.0.26200.6584",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("image:    {NANO}:multi"));
    assert!(
        lines[1].starts_with(&format!("entry:    windows/amd64:{V2025} sha256:"))
            && lines[1].ends_with("(the entry this host pulls)"),
        "{out}"
    );
    assert_eq!(lines[2], format!("os:       {V2025} (Windows Server 2025)"));
    assert_eq!(lines[3], "host:     10.0.26200.6584, server");
    assert!(lines[4].starts_with("process:  yes: the host's build 26200 runs process-isolated images from build 26100 (Windows Server 2025)"), "{out}");
    assert!(lines[5].starts_with("hyperv:   yes: "), "{out}");
    assert!(
        lines[6].starts_with(
            "auto:     process: process isolation, Docker's default on Windows Server"
        ),
        "{out}"
    );
    assert_eq!(lines[7], "entries:");
    assert!(
        lines[8].starts_with(&format!("    windows/amd64:{V2019}"))
            && lines[8].contains("process no   hyperv yes  auto hyperv"),
        "{out}"
    );
    assert!(
        lines[10].starts_with(&format!("  * windows/amd64:{V2025}"))
            && lines[10].contains("process yes  hyperv yes  auto process"),
        "{out}"
    );
    assert_eq!(lines.len(), 11, "{out}");

    // Neither isolation: the report on stdout, the mismatch on stderr, exit 1.
    let (code, out, err) = compat(&[
        "compat",
        "--image-os-version",
        V2025,
        "--host-version",
        "10.0.20348.2227",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("\nprocess:  no: the image's build 26100 (Windows Server 2025) is newer than the host's build 20348 (Windows Server 2022)"), "{out}");
    assert!(out.ends_with("auto:     none\n"), "{out}");
    assert_eq!(
        err.trim_end(),
        format!(
            "error: the Windows image {V2025} (Windows Server 2025) cannot run on the server host 10.0.20348.2227 (Windows Server 2022): neither process nor Hyper-V isolation can run it: the image's build 26100 (Windows Server 2025) is newer than the host's build 20348 (Windows Server 2022): no isolation runs an image newer than its host (Windows reports \"The operating system of the container does not match the operating system of the host. (0xc0370101)\")"
        )
    );

    // A client host: Hyper-V by default, process allowed too.
    let (code, out, _) = compat(&[
        "compat",
        "--image-os-version",
        V2022,
        "--host-version",
        "10.0.22631",
        "--host-sku",
        "client",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains("host:     10.0.22631 (Windows 11 23H2), client\n"),
        "{out}"
    );
    assert!(out.contains("\nprocess:  yes: "), "{out}");
    assert!(
        out.contains("\nauto:     hyperv: Hyper-V isolation, Docker's default on client Windows"),
        "{out}"
    );
}

#[test]
fn windows_server_2016_revisions_through_the_binary() {
    for (image, process) in [
        ("10.0.14393.1914", true),
        ("10.0.14393.1944", false),
        ("10.0.14393.19140", false),
    ] {
        let (code, v, _) = compat_json(&[
            "--image-os-version",
            image,
            "--host-version",
            "10.0.14393.1914",
        ]);
        assert_eq!(code, 0, "{v}");
        assert_eq!(v["process"]["allowed"], process, "{v}");
        assert_eq!(v["hyperv"]["allowed"], true, "{v}");
        assert_eq!(v["auto"], if process { "process" } else { "hyperv" }, "{v}");
        assert_eq!(v["image_os_version"], image);
    }
    let (_, v, _) = compat_json(&[
        "--image-os-version",
        "10.0.14393.1914",
        "--host-version",
        "10.0.14393",
    ]);
    assert_eq!(v["process"]["allowed"], false);
    assert!(
        v["process"]["reason"]
            .as_str()
            .unwrap()
            .contains("not known"),
        "{v}"
    );
}

#[test]
fn what_compat_refuses() {
    let root = fixture_root().to_str().unwrap().to_string();
    for (args, code, needle) in [
        (
            vec![
                "compat",
                "--image-os-version",
                "ltsc2022",
                "--host-version",
                "10.0.20348.1",
            ],
            2,
            "--image-os-version `ltsc2022` is not a Windows version",
        ),
        (
            vec![
                "compat",
                "--image-os-version",
                "10.0.20348",
                "--host-version",
                "10.0",
            ],
            2,
            "--host-version `10.0` is not a Windows version",
        ),
        (
            vec![
                "compat",
                "--image-os-version",
                "10.0.20348",
                "--host-version",
                "10.0.20348.99999999999",
            ],
            2,
            "is not a Windows version",
        ),
        (
            vec!["compat", "--host-version", "10.0.20348.1"],
            2,
            "--image-os-version",
        ),
        (
            vec![
                "compat",
                "x:1",
                "--image-os-version",
                "10.0.20348",
                "--host-version",
                "10.0.20348",
            ],
            2,
            "cannot be used with",
        ),
        (
            vec![
                "compat",
                "--image-os-version",
                "10.0.20348",
                "--host-version",
                "10.0.20348",
                "--host-sku",
                "desktop",
            ],
            2,
            "desktop",
        ),
        (
            vec!["compat", "nope:1", "--host-version", "10.0.20348.1"],
            1,
            "no image `nope:1` in the store",
        ),
    ] {
        let (c, out, err) = compat(&args);
        assert_eq!(c, code, "{args:?}: {out} {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
    }
    assert!(!root.is_empty());
}

#[test]
fn a_linux_image_is_not_windows_business() {
    let root = tempdir("linux");
    let store = wcbuild::store::Store::open(&root).unwrap();
    common::random_image(&store, "busy:1", 1, 64, 7);
    let (code, _, err) = common::wcbuild_at_env(
        &root,
        &["compat", "busy:1", "--host-version", "10.0.20348.1"],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("`docker.io/library/busy:1` is a linux/amd64 image, not a Windows one"),
        "{err}"
    );
}

/// On a Linux host nothing says which Windows host to answer for.
#[cfg(not(windows))]
#[test]
fn a_linux_host_must_describe_a_windows_host() {
    let (code, out, err) = compat(&["compat", "--image-os-version", V2022]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(
        err.trim_end(),
        "error: this host is not Windows, so a Windows host must be described: give --host-version 10.0.BUILD.REVISION (and --host-sku server|client)"
    );
    // The test and CI override describes one.
    let (code, out, err) = common::wcbuild_at_env(
        fixture_root(),
        &["compat", "--json", "--image-os-version", V2022],
        &[
            ("WCBUILD_HOST_WINDOWS_VERSION", "10.0.22631.4460"),
            ("WCBUILD_HOST_WINDOWS_SKU", "client"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            v["host_version"].as_str(),
            v["host_sku"].as_str(),
            v["auto"].as_str()
        ),
        (Some("10.0.22631.4460"), Some("client"), Some("hyperv"))
    );
    let (code, _, err) = common::wcbuild_at_env(
        fixture_root(),
        &["compat", "--image-os-version", V2022],
        &[("WCBUILD_HOST_WINDOWS_VERSION", "ltsc2022")],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("WCBUILD_HOST_WINDOWS_VERSION=`ltsc2022` is not a Windows version"),
        "{err}"
    );
}

/// On Windows (and under Wine) the host is detected: its version parses and is reported.
#[cfg(windows)]
#[test]
fn a_windows_host_is_detected() {
    let (code, out, err) = compat(&["compat", "--json", "--image-os-version", V2022]);
    assert!(code == 0 || code == 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let host = v["host_version"].as_str().unwrap();
    let parsed = wcbuild::image::WindowsVersion::parse(host).unwrap();
    assert!(parsed.major >= 6 && parsed.build >= 7600, "{host}");
    assert!(["server", "client"].contains(&v["host_sku"].as_str().unwrap()));
}

/// A `docker-registry` on a loopback port; killed when dropped.
#[cfg(not(windows))]
struct Registry {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

#[cfg(not(windows))]
impl Registry {
    fn start() -> Registry {
        let dir = tempdir("registry");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "version: 0.1\nlog: {{level: error, formatter: text}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: wcbuild-test\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry must be installed (./test.sh installs it)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the registry did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Registry { child, port, dir }
    }
}

#[cfg(not(windows))]
impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `pull` on a Windows host (described with `WCBUILD_HOST_WINDOWS_VERSION`) takes the entry
/// the compatibility rule picks, not only the host's own build; `--platform` still wins, and a
/// Linux host keeps its own behaviour. (The registry is a Linux program: not under Wine.)
#[cfg(not(windows))]
#[test]
fn pull_on_a_described_windows_host_takes_the_entry_it_runs() {
    let reg = Registry::start();
    let remote = format!("127.0.0.1:{}/wcb/nano:multi", reg.port);
    let (code, _, err) = common::wcbuild_at(
        fixture_root(),
        &["push", "-q", &format!("{NANO}:multi"), &remote],
    );
    assert_eq!(code, 0, "{err}");
    let digest_of = |tag: &str| {
        let (_, out, _) =
            common::wcbuild_at(fixture_root(), &["inspect", &format!("{NANO}:{tag}")]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["digest"].as_str().unwrap().to_string()
    };
    for (host, sku, tag) in [
        // Build 26200 refused 26100 images while pull matched the build exactly.
        ("10.0.26200.6584", "server", "ltsc2025"),
        ("10.0.26100.1742", "server", "ltsc2025"),
        ("10.0.20348.2227", "server", "ltsc2022"),
        ("10.0.17763.5329", "server", "ltsc2019"),
        ("10.0.22631.4460", "client", "ltsc2022"),
        // Windows 10 22H2 runs the 2019 image under Hyper-V only: moby keeps it eligible.
        ("10.0.19045.5131", "client", "ltsc2019"),
    ] {
        let root = tempdir("pull");
        let (code, out, err) = common::wcbuild_at_env(
            &root,
            &["pull", "-q", &remote],
            &[
                ("WCBUILD_HOST_WINDOWS_VERSION", host),
                ("WCBUILD_HOST_WINDOWS_SKU", sku),
            ],
        );
        assert_eq!(code, 0, "{host}: {err}");
        assert_eq!(out.trim(), digest_of(tag), "{host} {sku} pulls {tag}");
        let _ = std::fs::remove_dir_all(&root);
    }
    // --platform wins over the host.
    let root = tempdir("pull");
    let (code, out, err) = common::wcbuild_at_env(
        &root,
        &[
            "pull",
            "-q",
            "--platform",
            "windows/amd64:ltsc2019",
            &remote,
        ],
        &[("WCBUILD_HOST_WINDOWS_VERSION", "10.0.26200.6584")],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), digest_of("ltsc2019"));
    // A host that runs none: says so, lists what there is, pulls nothing.
    let (code, out, err) = common::wcbuild_at_env(
        &root,
        &["pull", "-q", &remote],
        &[("WCBUILD_HOST_WINDOWS_VERSION", "10.0.14393.1914")],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("has no image for the server host 10.0.14393.1914 (Windows Server 2016) under either isolation")
            && err.contains(V2019)
            && err.contains(V2025),
        "{err}"
    );
    // A Linux host without --platform: as before, no Windows entry is chosen for it.
    let (code, _, err) = common::wcbuild_at_env(
        &root,
        &["pull", "-q", &remote],
        &[("WCBUILD_HOST_WINDOWS_VERSION", "")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("has no image for linux/amd64"), "{err}");
}

/// `FROM` of a multi-version index on a Windows host builds on the entry `pull` takes.
#[test]
fn from_a_multi_version_index_on_a_described_windows_host() {
    let ctx = tempdir("from");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {NANO}:multi\nCOPY a.txt /a.txt\n"),
    )
    .unwrap();
    std::fs::write(ctx.join("a.txt"), "a").unwrap();
    for (host, version) in [
        ("10.0.20348.2227", V2022),
        ("10.0.26200.6584", V2025),
        ("10.0.17763.5329", V2019),
    ] {
        let tag = format!("from-test:{}", host.replace('.', "-"));
        let (code, _, err) = common::wcbuild_at_env(
            fixture_root(),
            &["build", "-q", "-t", &tag, ctx.to_str().unwrap()],
            &[("WCBUILD_HOST_WINDOWS_VERSION", host)],
        );
        assert_eq!(code, 0, "{host}: {err}");
        let (_, out, _) = common::wcbuild_at(fixture_root(), &["inspect", &tag]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["config"]["os.version"], version, "{host}");
    }
    let (code, _, err) = common::wcbuild_at_env(
        fixture_root(),
        &["build", "-q", "-t", "from-test:none", ctx.to_str().unwrap()],
        &[("WCBUILD_HOST_WINDOWS_VERSION", "10.0.14393.1914")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("can run under either isolation"), "{err}");
}
