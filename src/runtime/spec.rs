//! The OCI bundle's `config.json` for a step, as BuildKit's runc executor writes it
//! (containerd's default Unix spec plus BuildKit's options): the default mounts without `/run`,
//! read-only `/etc/resolv.conf` and `/etc/hosts`, a read-only cgroupfs, the step's mounts (one
//! per destination, the last wins), the 14 default capabilities, `noNewPrivileges: false`, the
//! masked and read-only paths, the namespaces, `deny all` devices, no rlimits; and the
//! insecure variant. Also the generated `/etc/hosts` and `/etc/resolv.conf` contents.

use super::user::ExecUser;
use serde_json::{Value, json};
use std::net::IpAddr;

/// Docker's and containerd's default capabilities, in containerd's order.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Capability names by number (linux/capability.h).
pub const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// containerd's masked paths.
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// containerd's read-only paths.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// One entry of the spec's `mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecMount {
    /// Where in the container.
    pub destination: String,
    /// `bind`, `tmpfs`, `proc`, ...
    pub kind: String,
    /// The source (a host path for binds).
    pub source: String,
    /// Mount options.
    pub options: Vec<String>,
}

impl SpecMount {
    fn new(dest: &str, kind: &str, source: &str, options: &[&str]) -> SpecMount {
        SpecMount {
            destination: dest.to_string(),
            kind: kind.to_string(),
            source: source.to_string(),
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A device node the insecure spec adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecDevice {
    /// Path in the container.
    pub path: String,
    /// `c` or `b`.
    pub kind: char,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

/// Everything the spec is made of.
#[derive(Debug, Clone)]
pub struct SpecInput {
    /// The root file system (a host path).
    pub root: String,
    /// argv.
    pub args: Vec<String>,
    /// Environment, `HOME` already settled.
    pub env: Vec<String>,
    /// Working directory (absolute).
    pub cwd: String,
    /// The process's user.
    pub user: ExecUser,
    /// Host name.
    pub hostname: String,
    /// A new network namespace (loopback only) instead of the host's.
    pub new_netns: bool,
    /// A cgroup namespace (cgroup v2 hosts, as BuildKit decides).
    pub cgroupns: bool,
    /// `linux.cgroupsPath`, or none (runtimes then pick one, or none when cgroups are not
    /// delegated).
    pub cgroups_path: Option<String>,
    /// `/etc/resolv.conf` source on the host.
    pub resolv_conf: String,
    /// `/etc/hosts` source on the host.
    pub hosts: String,
    /// The step's own mounts, in order.
    pub mounts: Vec<SpecMount>,
    /// `--security=insecure`: these capabilities (the current process's) in every set, and
    /// these devices.
    pub insecure: Option<(Vec<String>, Vec<SpecDevice>)>,
}

/// containerd's default mounts without `/run`, then BuildKit's binds and cgroupfs, then the
/// step's mounts, one per destination (the last one wins, at the first one's place).
pub fn mounts(input: &SpecInput) -> Vec<SpecMount> {
    let insecure = input.insecure.is_some();
    let sys_opts: &[&str] = if insecure {
        &["nosuid", "noexec", "nodev"]
    } else {
        &["nosuid", "noexec", "nodev", "ro"]
    };
    let cg_opts: &[&str] = if insecure {
        &["nosuid", "noexec", "nodev"]
    } else {
        &["ro", "nosuid", "noexec", "nodev"]
    };
    let mut all = vec![
        SpecMount::new("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        SpecMount::new(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        SpecMount::new(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        SpecMount::new(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        SpecMount::new(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        SpecMount::new("/sys", "sysfs", "sysfs", sys_opts),
        SpecMount::new(
            "/etc/resolv.conf",
            "bind",
            &input.resolv_conf,
            &["nosuid", "noexec", "nodev", "rbind", "ro"],
        ),
        SpecMount::new(
            "/etc/hosts",
            "bind",
            &input.hosts,
            &["nosuid", "noexec", "nodev", "rbind", "ro"],
        ),
        SpecMount::new("/sys/fs/cgroup", "cgroup", "cgroup", cg_opts),
    ];
    all.extend(input.mounts.iter().cloned());
    let mut out: Vec<SpecMount> = Vec::with_capacity(all.len());
    for m in all {
        match out.iter().position(|o| o.destination == m.destination) {
            Some(i) => out[i] = m,
            None => out.push(m),
        }
    }
    out
}

/// The `config.json` document.
pub fn config(input: &SpecInput) -> Value {
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    let mut extra: Vec<String> = Vec::new();
    if let Some((current, _)) = &input.insecure {
        for c in current {
            if !caps.contains(c) {
                caps.push(c.clone());
            }
        }
        extra = current.clone();
    }
    let mut capabilities = json!({
        "bounding": caps,
        "effective": caps,
        "permitted": caps,
    });
    if input.insecure.is_some() {
        capabilities["inheritable"] = json!(extra);
        capabilities["ambient"] = json!(extra);
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if input.new_netns {
        namespaces.push(json!({"type": "network"}));
    }
    if input.cgroupns {
        namespaces.push(json!({"type": "cgroup"}));
    }
    let mounts: Vec<Value> = mounts(input)
        .into_iter()
        .map(|m| {
            json!({
                "destination": m.destination,
                "type": m.kind,
                "source": m.source,
                "options": m.options,
            })
        })
        .collect();
    let mut linux = json!({
        "resources": {"devices": [{"allow": false, "access": "rwm"}]},
        "namespaces": namespaces,
        "maskedPaths": MASKED_PATHS,
        "readonlyPaths": READONLY_PATHS,
    });
    if let Some(p) = &input.cgroups_path {
        linux["cgroupsPath"] = json!(p);
    }
    if let Some((_, devices)) = &input.insecure {
        linux["maskedPaths"] = json!([]);
        linux["readonlyPaths"] = json!([]);
        linux["resources"]["devices"] = json!([
            {"allow": true, "type": "c", "access": "rwm"},
            {"allow": true, "type": "b", "access": "rwm"},
        ]);
        linux["devices"] = Value::Array(
            devices
                .iter()
                .map(|d| {
                    json!({
                        "path": d.path,
                        "type": d.kind.to_string(),
                        "major": d.major,
                        "minor": d.minor,
                    })
                })
                .collect(),
        );
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {
                "uid": input.user.uid,
                "gid": input.user.gid,
                "additionalGids": input.user.additional_gids,
            },
            "args": input.args,
            "env": input.env,
            "cwd": input.cwd,
            "capabilities": capabilities,
            "noNewPrivileges": false,
        },
        "root": {"path": input.root, "readonly": false},
        "hostname": input.hostname,
        "mounts": mounts,
        "linux": linux,
    })
}

/// The current process's effective capabilities by name (what `--security=insecure` grants).
pub fn current_caps() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    CAP_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| eff & (1u64 << i) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// The devices `--security=insecure` adds: kmsg, cuse, fuse, kvm, net/tun, loop-control and
/// loop devices up to the next free one plus 7.
pub fn insecure_devices(next_free_loop: u32) -> Vec<SpecDevice> {
    let mut v: Vec<SpecDevice> = [
        ("/dev/kmsg", 1, 11),
        ("/dev/cuse", 10, 203),
        ("/dev/fuse", 10, 229),
        ("/dev/kvm", 10, 232),
        ("/dev/net/tun", 10, 200),
        ("/dev/loop-control", 10, 237),
    ]
    .iter()
    .map(|&(p, major, minor)| SpecDevice {
        path: p.to_string(),
        kind: 'c',
        major,
        minor,
    })
    .collect();
    for i in 0..=next_free_loop + 7 {
        v.push(SpecDevice {
            path: format!("/dev/loop{i}"),
            kind: 'b',
            major: 7,
            minor: i,
        });
    }
    v
}

/// The next free loop device (`LOOP_CTL_GET_FREE`), 0 when unknown.
pub fn next_free_loop() -> u32 {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
    else {
        return 0;
    };
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number or -1.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), 0x4C82, 0) };
    if r < 0 { 0 } else { r as u32 }
}

/// BuildKit's `/etc/hosts`: localhost lines naming the host name, then `IP\thost` per extra
/// host. Extra hosts are `(host, ip)`; the IP is written in its canonical form.
pub fn hosts_file(hostname: &str, extra: &[(String, String)]) -> Result<String, String> {
    let name = if hostname.is_empty() {
        "buildkitsandbox"
    } else {
        hostname
    };
    let mut s = format!("127.0.0.1\tlocalhost {name}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (host, ip) in extra {
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("extra host `{host}`: `{ip}` is not an IP address"))?;
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("extra host `{host}`: invalid host name"));
        }
        s.push_str(&format!("{addr}\t{host}\n"));
    }
    Ok(s)
}

/// A resolv.conf nameserver: an address with an optional IPv6 zone.
fn parse_ns(s: &str) -> Option<(IpAddr, Option<String>)> {
    let (addr, zone) = match s.split_once('%') {
        Some((a, z)) if !z.is_empty() => (a, Some(z.to_string())),
        Some(_) => return None,
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    if zone.is_some() && ip.is_ipv4() {
        return None;
    }
    Some((ip, zone))
}

fn is_loopback(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => v.is_loopback(),
        IpAddr::V6(v) => v.is_loopback() || v.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

/// Which host file BuildKit reads: for host networking `/etc/resolv.conf`; otherwise the
/// systemd-resolved file when 127.0.0.53 is the only nameserver.
pub fn resolv_source(host_network: bool, etc_resolv: &str) -> &'static str {
    if host_network {
        return "/etc/resolv.conf";
    }
    let ns: Vec<_> = etc_resolv
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&"nameserver") && f.len() >= 2)
                .then(|| parse_ns(f[1]))
                .flatten()
        })
        .collect();
    if ns.len() == 1 && ns[0].0 == IpAddr::from([127, 0, 0, 53]) {
        "/run/systemd/resolve/resolv.conf"
    } else {
        "/etc/resolv.conf"
    }
}

/// BuildKit's generated resolv.conf from the host's: nameserver, search and options lines
/// (then unknown directives as written), no comments; without host networking (or when the
/// host file has no nameservers) loopback servers are dropped and Google's public servers
/// used when none is left.
pub fn resolv_conf(host: &str, host_network: bool) -> String {
    let mut ns: Vec<(IpAddr, Option<String>)> = Vec::new();
    let mut search: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let mut other: Vec<String> = Vec::new();
    for line in host.lines() {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(first) = f.first() else { continue };
        match *first {
            "nameserver" => {
                if let Some(a) = f.get(1).and_then(|a| parse_ns(a)) {
                    ns.push(a);
                }
            }
            "domain" | "search" => {
                if f.len() >= 2 {
                    search = f[1..].iter().map(|s| s.to_string()).collect();
                }
            }
            "options" => options.extend(f[1..].iter().map(|s| s.to_string())),
            _ => other.push(line.to_string()),
        }
    }
    if !host_network || ns.is_empty() {
        ns.retain(|(a, _)| !is_loopback(a));
        if ns.is_empty() {
            for a in [
                "8.8.8.8",
                "8.8.4.4",
                "2001:4860:4860::8888",
                "2001:4860:4860::8844",
            ] {
                ns.push((a.parse().expect("a valid address"), None));
            }
        }
    }
    let mut out = String::new();
    for (a, zone) in &ns {
        out.push_str("nameserver ");
        out.push_str(&a.to_string());
        if let Some(z) = zone {
            out.push('%');
            out.push_str(z);
        }
        out.push('\n');
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    for o in other {
        out.push_str(&o);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> SpecInput {
        SpecInput {
            root: "/r".into(),
            args: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: ExecUser {
                uid: 1,
                gid: 2,
                additional_gids: vec![2, 3],
            },
            hostname: "buildkitsandbox".into(),
            new_netns: true,
            cgroupns: false,
            cgroups_path: Some("/buildkit/x".into()),
            resolv_conf: "/s/resolv.conf".into(),
            hosts: "/s/hosts".into(),
            mounts: vec![
                SpecMount::new("/cache", "bind", "/c", &["rbind"]),
                SpecMount::new("/etc/hosts", "bind", "/mine", &["rbind", "ro"]),
            ],
            insecure: None,
        }
    }

    #[test]
    fn spec_is_buildkits() {
        let i = input();
        let ms = mounts(&i);
        let dests: Vec<&str> = ms.iter().map(|m| m.destination.as_str()).collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/etc/resolv.conf",
                "/etc/hosts",
                "/sys/fs/cgroup",
                "/cache"
            ]
        );
        // The last mount for a destination wins, in the first one's place.
        assert_eq!(ms[7].source, "/mine");
        let c = config(&i);
        assert_eq!(c["process"]["noNewPrivileges"], json!(false));
        assert_eq!(
            c["process"]["capabilities"]["effective"],
            json!(DEFAULT_CAPS)
        );
        assert!(c["process"]["capabilities"].get("ambient").is_none());
        assert!(c["process"].get("rlimits").is_none());
        assert_eq!(c["process"]["user"]["additionalGids"], json!([2, 3]));
        assert_eq!(c["linux"]["maskedPaths"].as_array().unwrap().len(), 11);
        assert_eq!(c["linux"]["cgroupsPath"], json!("/buildkit/x"));
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "network"]);
        assert_eq!(
            c["mounts"][5]["options"],
            json!(["nosuid", "noexec", "nodev", "ro"])
        );
        let mut host = input();
        host.new_netns = false;
        host.cgroups_path = None;
        host.insecure = Some((
            vec!["CAP_CHOWN".into(), "CAP_SYS_ADMIN".into()],
            insecure_devices(0),
        ));
        let c = config(&host);
        assert!(c["linux"].get("cgroupsPath").is_none());
        assert_eq!(c["linux"]["namespaces"].as_array().unwrap().len(), 4);
        assert_eq!(c["linux"]["maskedPaths"], json!([]));
        assert_eq!(
            c["process"]["capabilities"]["ambient"],
            json!(["CAP_CHOWN", "CAP_SYS_ADMIN"])
        );
        assert_eq!(
            c["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            15
        );
        assert_eq!(
            c["mounts"][5]["options"],
            json!(["nosuid", "noexec", "nodev"])
        );
        assert_eq!(c["linux"]["devices"].as_array().unwrap().len(), 6 + 8);
    }

    #[test]
    fn hosts_and_resolv() {
        assert_eq!(
            hosts_file("buildkitsandbox", &[("db".into(), "10.0.0.02".into())]).unwrap_err(),
            "extra host `db`: `10.0.0.02` is not an IP address"
        );
        assert_eq!(
            hosts_file("h", &[("db".into(), "::ffff:10.0.0.2".into())]).unwrap(),
            "127.0.0.1\tlocalhost h\n::1\tlocalhost ip6-localhost ip6-loopback\n::ffff:10.0.0.2\tdb\n"
        );
        let host = "# generated\nnameserver 127.0.0.53\nnameserver 10.1.1.1\nnameserver fe80::1%eth0\n\
                    nameserver bogus\nsearch a b\ndomain c\noptions ndots:2\noptions edns0\nsortlist 1.2.3.4\n";
        assert_eq!(
            resolv_conf(host, false),
            "nameserver 10.1.1.1\nnameserver fe80::1%eth0\nsearch c\noptions ndots:2 edns0\nsortlist 1.2.3.4\n"
        );
        assert_eq!(
            resolv_conf("nameserver 127.0.0.1\n", false),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\nnameserver 2001:4860:4860::8888\nnameserver 2001:4860:4860::8844\n"
        );
        assert_eq!(
            resolv_conf("nameserver 127.0.0.1\n", true),
            "nameserver 127.0.0.1\n"
        );
        assert_eq!(
            resolv_source(false, "nameserver 127.0.0.53\n"),
            "/run/systemd/resolve/resolv.conf"
        );
        assert_eq!(
            resolv_source(true, "nameserver 127.0.0.53\n"),
            "/etc/resolv.conf"
        );
    }
}
