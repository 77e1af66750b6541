//! The suite itself (Unix only: it waits on processes with `wait4` for their resource use).

use crate::{common, content};

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WCBUILD: &str = env!("CARGO_BIN_EXE_wcbuild");
const PEERS: [(&str, &str); 5] = [
    ("dockerd", "docker.io"),
    ("buildah", "buildah"),
    ("skopeo", "skopeo"),
    ("pigz", "pigz"),
    ("docker-registry", "docker-registry"),
];

/// One timed run.
#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    /// Peak RSS of the largest process waited for, KiB.
    rss_kib: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Ours,
    Peer,
    Ceiling,
}

type RunFn<'a> = Box<dyn FnMut() -> Result<Sample, String> + 'a>;

struct Tool<'a> {
    name: String,
    role: Role,
    run: RunFn<'a>,
}

impl<'a> Tool<'a> {
    fn new(name: &str, role: Role, run: impl FnMut() -> Result<Sample, String> + 'a) -> Self {
        Tool {
            name: name.to_string(),
            role,
            run: Box::new(run),
        }
    }
}

/// Median, min, max of a tool's samples.
#[derive(Clone)]
struct Stats {
    name: String,
    median: f64,
    min: f64,
    max: f64,
    rss_kib: u64,
}

impl Stats {
    fn of(name: &str, samples: &[Sample]) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        let mut t: Vec<f64> = samples.iter().map(|s| s.secs).collect();
        t.sort_by(|a, b| a.total_cmp(b));
        let median = if t.len() % 2 == 1 {
            t[t.len() / 2]
        } else {
            (t[t.len() / 2 - 1] + t[t.len() / 2]) / 2.0
        };
        Some(Stats {
            name: name.to_string(),
            median,
            min: t[0],
            max: t[t.len() - 1],
            rss_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        })
    }
    fn cell(&self) -> String {
        if self.min == self.max {
            format!("{} {}", self.name, secs(self.median))
        } else {
            format!(
                "{} {} ({}–{})",
                self.name,
                secs(self.median),
                secs(self.min),
                secs(self.max)
            )
        }
    }
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.3} s", s)
    } else {
        format!("{:.2} s", s)
    }
}

struct Row {
    workload: String,
    size: String,
    ours: Option<Stats>,
    peers: Vec<Stats>,
    ceiling: Option<Stats>,
    notes: Vec<String>,
}

impl Row {
    fn markdown(&self) -> String {
        let ours = self.ours.as_ref();
        let best = self
            .peers
            .iter()
            .min_by(|a, b| a.median.total_cmp(&b.median));
        let ratio = match (ours, best) {
            (Some(o), Some(b)) => format!("{:.2}x", b.median / o.median),
            _ => "–".into(),
        };
        let ceiling_ratio = match (ours, &self.ceiling) {
            (Some(o), Some(c)) => format!("{:.2}", c.median / o.median),
            _ => "–".into(),
        };
        let others: Vec<String> = self
            .peers
            .iter()
            .filter(|p| best.is_none_or(|b| b.name != p.name))
            .map(Stats::cell)
            .collect();
        let mut notes = others;
        notes.extend(self.notes.iter().cloned());
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.workload,
            self.size,
            ours.map_or("–".into(), |o| secs(o.median)
                + &if o.min == o.max {
                    String::new()
                } else {
                    format!(" ({}–{})", secs(o.min), secs(o.max))
                }),
            best.map_or("–".into(), Stats::cell).replace('|', "\\|"),
            ratio,
            self.ceiling
                .as_ref()
                .map_or("–".into(), Stats::cell)
                .replace('|', "\\|"),
            ceiling_ratio,
            ours.map_or("–".into(), |o| format!(
                "{:.0} MiB",
                o.rss_kib as f64 / 1024.0
            )),
            notes.join("; ").replace('|', "\\|")
        )
    }
}

const TABLE_HEAD: &str = "| workload | size | wcbuild median (min–max) | best peer | peer ÷ wcbuild | ceiling | ceiling ÷ wcbuild | wcbuild peak RSS | other peers, notes |\n|---|---|---|---|---|---|---|---|---|";

/// Runs `cmd` to the end with its output in `log`: wall time and peak RSS (wait4).
fn run(cmd: &mut Command, log: &Path) -> Result<Sample, String> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("open {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    if r != pid {
        return Err(format!("{cmd:?}: wait4 failed"));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let text = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "{cmd:?} failed ({status:#x}): {}",
            tail.join(" / ")
        ));
    }
    Ok(Sample {
        secs,
        rss_kib: usage.ru_maxrss as u64,
    })
}

/// Runs the commands one after the other: their times add up, the RSS is the largest.
fn run_all(cmds: &mut [Command], log: &Path) -> Result<Sample, String> {
    let mut total = Sample {
        secs: 0.0,
        rss_kib: 0,
    };
    for c in cmds {
        let s = run(c, log)?;
        total.secs += s.secs;
        total.rss_kib = total.rss_kib.max(s.rss_kib);
    }
    Ok(total)
}

fn bash(script: &str) -> Command {
    let mut c = Command::new("bash");
    c.arg("-c").arg(format!("set -euo pipefail\n{script}"));
    c
}

/// Runs an untimed command that must succeed (preparation and cleanup).
fn must(cmd: &mut Command, log: &Path) {
    if let Err(e) = run(cmd, log) {
        panic!("{e}");
    }
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn have(program: &str) -> bool {
    quiet(
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {program}")),
    )
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `100M`, `1G`, `4G`, `512K` or a byte count (binary units).
fn parse_size(s: &str) -> u64 {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: f64 = num
        .parse()
        .unwrap_or_else(|_| panic!("size `{s}`: a number with K, M or G"));
    (n * mult as f64) as u64
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return u64::MAX;
    }
    s.f_bavail as u64 * s.f_frsize as u64
}

fn tree_bytes(dir: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                n += tree_bytes(&e.path());
            } else if let Ok(m) = e.metadata() {
                n += m.len();
            }
        }
    }
    n
}

/// Reads every file once so that every tool starts from the page cache.
fn warm(dir: &Path) {
    let _ = quiet(
        Command::new("tar")
            .arg("-cf")
            .arg("/dev/null")
            .arg("-C")
            .arg(dir)
            .arg("."),
    );
}

fn rm(path: &Path) {
    let _ = fs::remove_dir_all(path);
    let _ = fs::remove_file(path);
}

/// A `docker-registry` on a loopback port; `fresh` restarts it empty.
struct Registry {
    child: Option<std::process::Child>,
    port: u16,
    dir: PathBuf,
}

impl Registry {
    fn start(dir: PathBuf) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Registry {
            child: None,
            port,
            dir,
        };
        r.fresh();
        r
    }
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// Stops it, empties its storage and starts it again.
    fn fresh(&mut self) {
        self.stop();
        rm(&self.dir);
        fs::create_dir_all(&self.dir).unwrap();
        let config = self.dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: 127.0.0.1:{}\n  secret: bench\n",
                self.dir.join("data").display(),
                self.port
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What every workload uses.
struct Bench {
    work: PathBuf,
    log: PathBuf,
    rounds: usize,
    docker: Option<common::Dockerd>,
    buildah: bool,
    registry: RefCell<Registry>,
    /// `openssl dgst -sha256` when there (1.2 GB/s), else `sha256sum` (300 MB/s).
    hash: &'static str,
    /// wcbuild's default layer compression, from its help.
    default_compression: String,
    busybox: PathBuf,
    rows: RefCell<Vec<Row>>,
    counter: RefCell<u64>,
}

impl Bench {
    fn tmp(&self, what: &str) -> PathBuf {
        let mut c = self.counter.borrow_mut();
        *c += 1;
        self.work.join(format!("{what}-{}", *c))
    }

    fn wcbuild(&self, root: &Path) -> Command {
        let mut c = Command::new(WCBUILD);
        c.arg("--root").arg(root);
        c
    }

    fn docker(&self, args: &[&str]) -> Command {
        let d = self.docker.as_ref().expect("docker");
        let cli = if Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        };
        let mut c = Command::new(cli);
        c.env("DOCKER_BUILDKIT", "1")
            .arg("-H")
            .arg(format!("unix://{}", d.socket.display()))
            .args(args);
        c
    }

    fn docker_clean(&self) {
        let _ = quiet(&mut self.docker(&["image", "prune", "-af"]));
        let _ = quiet(&mut self.docker(&["builder", "prune", "-af"]));
    }

    fn buildah(&self, root: &Path) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(root.join("storage"))
            .arg("--runroot")
            .arg(root.join("run"))
            .arg("--storage-driver")
            .arg("overlay");
        c
    }

    fn buildah_clean(&self, root: &Path) {
        let _ = quiet(self.buildah(root).args(["rm", "-a"]));
        let _ = quiet(self.buildah(root).args(["rmi", "-af"]));
        rm(root);
    }

    /// The pipeline that bounds a COPY build: tar the context, compress as wcbuild's default
    /// does, hash, write and sync the file.
    fn copy_ceiling(&self, ctx: &Path, compression: &str) -> (String, Command) {
        let file = self.work.join("ceiling.out");
        let (name, middle) = match compression {
            "gzip" => ("tar|pigz -6 -p2|tee|sha256+sync", "pigz -6 -p 2 | "),
            "zstd" => ("tar|zstd -3 -T2|tee|sha256+sync", "zstd -q -3 -T2 | "),
            _ => ("tar|tee|sha256+sync", ""),
        };
        let script = format!(
            "tar -C '{}' -cf - . | {middle}tee '{}' | {} > /dev/null; sync '{}'; rm -f '{}'",
            ctx.display(),
            file.display(),
            self.hash,
            file.display(),
            file.display()
        );
        (name.to_string(), bash(&script))
    }

    /// Runs the tools `rounds` times, interleaved, and records a row.
    fn measure(&self, workload: &str, size: &str, mut tools: Vec<Tool>, mut notes: Vec<String>) {
        let mut samples: Vec<Vec<Sample>> = tools.iter().map(|_| Vec::new()).collect();
        let mut failed: Vec<bool> = tools.iter().map(|_| false).collect();
        for _ in 0..self.rounds {
            for (k, t) in tools.iter_mut().enumerate() {
                if failed[k] {
                    continue;
                }
                match (t.run)() {
                    Ok(s) => samples[k].push(s),
                    Err(e) => {
                        let short: String = e.chars().take(300).collect();
                        notes.push(format!("{} failed: {short}", t.name));
                        failed[k] = true;
                    }
                }
            }
        }
        let mut row = Row {
            workload: workload.to_string(),
            size: size.to_string(),
            ours: None,
            peers: Vec::new(),
            ceiling: None,
            notes,
        };
        for (k, t) in tools.iter().enumerate() {
            let Some(st) = Stats::of(&t.name, &samples[k]) else {
                continue;
            };
            match t.role {
                Role::Ours => row.ours = Some(st),
                Role::Peer => row.peers.push(st),
                Role::Ceiling => row.ceiling = Some(st),
            }
        }
        println!("{}", row.markdown());
        self.rows.borrow_mut().push(row);
    }

    /// Adds a note to the last row (printed under it).
    fn note(&self, text: String) {
        println!("  ↳ {text}");
        if let Some(row) = self.rows.borrow_mut().last_mut() {
            row.notes.push(text);
        }
    }

    fn skip(&self, workload: &str, size: &str, why: &str) {
        let row = Row {
            workload: workload.into(),
            size: size.into(),
            ours: None,
            peers: Vec::new(),
            ceiling: None,
            notes: vec![why.into()],
        };
        println!("{}", row.markdown());
        self.rows.borrow_mut().push(row);
    }
}

/// Writes `FROM scratch` + `COPY . /data/` into the context.
fn copy_dockerfile(ctx: &Path) {
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY . /data/\n").unwrap();
}

/// COPY build, cold: an empty store / engine cache each run.
fn copy_cold(b: &Bench, name: &str, ctx: &Path, size: &str, flags: &[&str]) {
    let compression = flags
        .iter()
        .position(|f| *f == "--compression")
        .map(|i| flags[i + 1].to_string())
        .unwrap_or_else(|| b.default_compression.clone());
    let mut tools = vec![Tool::new("wcbuild", Role::Ours, || {
        let root = b.tmp("root");
        let r = run(
            b.wcbuild(&root)
                .args(["build", "-q", "-t", "bench/cold:1"])
                .args(flags)
                .arg(ctx),
            &b.log,
        );
        rm(&root);
        r
    })];
    if b.docker.is_some() {
        tools.push(Tool::new("docker build", Role::Peer, || {
            let r = run(
                &mut b.docker(&[
                    "build",
                    "--no-cache",
                    "-q",
                    "-t",
                    "bench/cold:1",
                    ctx.to_str().unwrap(),
                ]),
                &b.log,
            );
            b.docker_clean();
            r
        }));
    }
    if b.buildah {
        tools.push(Tool::new("buildah bud", Role::Peer, || {
            let root = b.tmp("buildah");
            let r = run(
                b.buildah(&root)
                    .args(["bud", "--layers", "-q", "-t", "bench/cold:1"])
                    .arg(ctx),
                &b.log,
            );
            b.buildah_clean(&root);
            r
        }));
    }
    let (cname, _) = b.copy_ceiling(ctx, &compression);
    tools.push(Tool::new(&cname, Role::Ceiling, || {
        run(&mut b.copy_ceiling(ctx, &compression).1, &b.log)
    }));
    b.measure(
        name,
        size,
        tools,
        vec![format!("wcbuild layers: {compression}")],
    );
}

/// A rebuild with everything cached.
fn noop(b: &Bench, name: &str, ctx: &Path, size: &str) {
    let root = b.tmp("root");
    let broot = b.tmp("buildah");
    must(
        b.wcbuild(&root)
            .args(["build", "-q", "-t", "bench/noop:1"])
            .arg(ctx),
        &b.log,
    );
    let mut tools = vec![Tool::new("wcbuild", Role::Ours, || {
        run(
            b.wcbuild(&root)
                .args(["build", "-q", "-t", "bench/noop:1"])
                .arg(ctx),
            &b.log,
        )
    })];
    if b.docker.is_some() {
        must(
            &mut b.docker(&["build", "-q", "-t", "bench/noop:1", ctx.to_str().unwrap()]),
            &b.log,
        );
        tools.push(Tool::new("docker build", Role::Peer, || {
            run(
                &mut b.docker(&["build", "-q", "-t", "bench/noop:1", ctx.to_str().unwrap()]),
                &b.log,
            )
        }));
    }
    if b.buildah {
        must(
            b.buildah(&broot)
                .args(["bud", "--layers", "-q", "-t", "bench/noop:1"])
                .arg(ctx),
            &b.log,
        );
        tools.push(Tool::new("buildah bud", Role::Peer, || {
            run(
                b.buildah(&broot)
                    .args(["bud", "--layers", "-q", "-t", "bench/noop:1"])
                    .arg(ctx),
                &b.log,
            )
        }));
    }
    b.measure(name, size, tools, Vec::new());
    rm(&root);
    if b.docker.is_some() {
        b.docker_clean();
    }
    if b.buildah {
        b.buildah_clean(&broot);
    }
}

/// RUN steps from the busybox base: ten small steps, one step writing 10,000 files, and the
/// ten steps again with the cache.
fn run_steps(b: &Bench) {
    let root = b.tmp("root");
    must(
        b.wcbuild(&root).args(["load", "-i"]).arg(&b.busybox),
        &b.log,
    );
    let ten = b.tmp("ten");
    fs::create_dir_all(&ten).unwrap();
    let mut df = String::from("FROM wcbuild.local/busybox:latest\n");
    for i in 0..10 {
        df.push_str(&format!("RUN echo step {i} > /step{i}\n"));
    }
    fs::write(ten.join("Dockerfile"), df).unwrap();
    let many = b.tmp("many");
    fs::create_dir_all(&many).unwrap();
    // 100 directories, then 10,000 files of 200 bytes to 4 KiB written by one awk process (so
    // every builder times the layer, not 10,000 forks).
    fs::write(
        many.join("Dockerfile"),
        "FROM wcbuild.local/busybox:latest\n\
         RUN for i in $(seq 0 99); do mkdir -p /m/pkg$i; done && awk 'BEGIN { line = \"module.exports = function () { return 42; };\\n\"; \
         for (i = 0; i < 100; i++) for (j = 0; j < 100; j++) { f = \"/m/pkg\" i \"/f\" j \".js\"; n = (i * 37 + j * 101) % 3900 + 200; \
         s = \"\"; while (length(s) < n) s = s line; printf \"%s\", substr(s, 1, n) > f; close(f) } }'\n",
    )
    .unwrap();
    let broot = b.tmp("buildah");
    let docker = b.docker.is_some();
    if docker {
        must(
            &mut b.docker(&["load", "-i", b.busybox.to_str().unwrap()]),
            &b.log,
        );
    }
    let mut buildah = b.buildah;
    if buildah {
        buildah = quiet(
            b.buildah(&broot)
                .arg("pull")
                .arg("-q")
                .arg(format!("docker-archive:{}", b.busybox.display())),
        );
    }
    let ours = |ctx: &Path, no_cache: bool| {
        let mut c = b.wcbuild(&root);
        c.args(["build", "-q", "--network", "none", "-t", "bench/run:1"]);
        if no_cache {
            c.arg("--no-cache");
        }
        c.arg(ctx);
        c
    };
    let theirs = |ctx: &Path, no_cache: bool| {
        let mut args = vec!["build", "-q", "--network", "none", "-t", "bench/run:1"];
        if no_cache {
            args.push("--no-cache");
        }
        args.push(ctx.to_str().unwrap());
        b.docker(&args)
    };
    let runtime = if Path::new("/usr/sbin/runc").exists() {
        "/usr/sbin/runc"
    } else {
        "runc"
    };
    let bud = |ctx: &Path, no_cache: bool| {
        let mut c = b.buildah(&broot);
        c.args([
            "bud",
            "--layers",
            "-q",
            "--runtime",
            runtime,
            "--network",
            "none",
            "-t",
            "bench/run:1",
        ]);
        if no_cache {
            c.arg("--no-cache");
        }
        c.arg(ctx);
        c
    };
    // Warm every builder (the runtime probe, the base's unpacking, snapshots).
    let _ = run(&mut ours(&ten, true), &b.log);
    let _ = run(&mut ours(&ten, false), &b.log);
    if docker {
        let _ = run(&mut theirs(&ten, true), &b.log);
        let _ = run(&mut theirs(&ten, false), &b.log);
    }
    if buildah {
        let _ = run(&mut bud(&ten, true), &b.log);
        let _ = run(&mut bud(&ten, false), &b.log);
    }
    let cases: [(&str, &Path, bool); 3] = [
        ("RUN: ten small steps, --no-cache", &ten, true),
        (
            "RUN: one step writing 10,000 files, --no-cache",
            &many,
            true,
        ),
        ("RUN: ten small steps, cached", &ten, false),
    ];
    for (name, ctx, no_cache) in cases {
        let mut tools = vec![Tool::new("wcbuild", Role::Ours, || {
            run(&mut ours(ctx, no_cache), &b.log)
        })];
        if docker {
            tools.push(Tool::new("docker build", Role::Peer, || {
                run(&mut theirs(ctx, no_cache), &b.log)
            }));
        }
        if buildah {
            tools.push(Tool::new("buildah bud", Role::Peer, || {
                run(&mut bud(ctx, no_cache), &b.log)
            }));
        }
        b.measure(
            name,
            "busybox base",
            tools,
            vec!["--network none for all".into()],
        );
    }
    rm(&root);
    if docker {
        b.docker_clean();
    }
    if b.buildah {
        b.buildah_clean(&broot);
    }
}

/// Build, then push to an empty registry.
fn build_push(b: &Bench, ctx: &Path, size: &str) {
    let tag = |who: &str| format!("{}/bench/{who}:1", b.registry.borrow().host());
    let mut tools = vec![Tool::new("wcbuild build --push", Role::Ours, || {
        b.registry.borrow_mut().fresh();
        let root = b.tmp("root");
        let r = run(
            b.wcbuild(&root)
                .args(["build", "-q", "--push", "-t", &tag("wcbuild")])
                .arg(ctx),
            &b.log,
        );
        rm(&root);
        r
    })];
    if b.docker.is_some() {
        tools.push(Tool::new("docker build + push", Role::Peer, || {
            b.registry.borrow_mut().fresh();
            let t = tag("docker");
            let r = run_all(
                &mut [
                    b.docker(&["build", "--no-cache", "-q", "-t", &t, ctx.to_str().unwrap()]),
                    b.docker(&["push", "-q", &t]),
                ],
                &b.log,
            );
            b.docker_clean();
            r
        }));
    }
    if b.buildah {
        tools.push(Tool::new("buildah bud + push", Role::Peer, || {
            b.registry.borrow_mut().fresh();
            let t = tag("buildah");
            let root = b.tmp("buildah");
            let mut push = b.buildah(&root);
            push.args(["push", "-q", "--tls-verify=false", &t]);
            let mut bud = b.buildah(&root);
            bud.args(["bud", "--layers", "-q", "-t", &t]).arg(ctx);
            let r = run_all(&mut [bud, push], &b.log);
            b.buildah_clean(&root);
            r
        }));
    }
    b.measure("build, then push", size, tools, Vec::new());
}

/// An image in a wcbuild store, as an OCI layout: its blobs' paths and digests.
struct Image {
    store: PathBuf,
    name: String,
    /// (digest, path) of config and layers.
    blobs: Vec<(String, PathBuf)>,
    manifest: Vec<u8>,
    bytes: u64,
}

fn blob_path(store: &Path, digest: &str) -> PathBuf {
    store
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Builds `ctx` into `store` as `name` (gzip layers, as a registry gets them) and reads back
/// what the push will send.
fn image(b: &Bench, store: &Path, name: &str, ctx: &Path, flags: &[&str]) -> Image {
    must(
        b.wcbuild(store)
            .args(["build", "-q", "--compression", "gzip", "-t", name])
            .args(flags)
            .arg(ctx),
        &b.log,
    );
    let full = wcbuild::ops::images::normalize(name).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(store.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == full.as_str())
        .unwrap_or_else(|| panic!("{full} in {}", store.display()))
        .clone();
    let mut digest = entry["digest"].as_str().unwrap().to_string();
    let mut manifest = fs::read(blob_path(store, &digest)).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    if let Some(list) = m["manifests"].as_array() {
        // An index (a Windows build): its first image.
        digest = list[0]["digest"].as_str().unwrap().to_string();
        manifest = fs::read(blob_path(store, &digest)).unwrap();
        m = serde_json::from_slice(&manifest).unwrap();
    }
    let mut blobs = Vec::new();
    let config = m["config"]["digest"].as_str().unwrap().to_string();
    blobs.push((config.clone(), blob_path(store, &config)));
    let mut bytes = 0;
    for l in m["layers"].as_array().unwrap() {
        let d = l["digest"].as_str().unwrap().to_string();
        bytes += l["size"].as_u64().unwrap();
        blobs.push((d.clone(), blob_path(store, &d)));
    }
    Image {
        store: store.to_path_buf(),
        name: full,
        blobs,
        manifest,
        bytes,
    }
}

/// The registry's limit for a push: every blob PUT by curl in one request each, four at once
/// (as many as wcbuild's `--jobs` default), then the manifest.
fn curl_push(b: &Bench, img: &Image, repo: &str) -> Command {
    let host = b.registry.borrow().host();
    let list = b.tmp("blobs.txt");
    let mut text = String::new();
    for (d, p) in &img.blobs {
        writeln!(text, "{d} {}", p.display()).unwrap();
    }
    fs::write(&list, text).unwrap();
    let manifest = b.tmp("manifest.json");
    fs::write(&manifest, &img.manifest).unwrap();
    let media = serde_json::from_slice::<serde_json::Value>(&img.manifest).unwrap()["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_string();
    bash(&format!(
        r#"up() {{
  loc=$(curl -sf -X POST -D - -o /dev/null "http://{host}/v2/{repo}/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case "$loc" in http*) ;; *) loc="http://{host}$loc" ;; esac
  case "$loc" in *\?*) sep='&' ;; *) sep='?' ;; esac
  curl -sf -X PUT -H 'Content-Type: application/octet-stream' -T "$2" "$loc${{sep}}digest=$1" -o /dev/null
}}
export -f up
xargs -P 4 -L 1 bash -c 'up "$0" "$1"' < '{}'
curl -sf -X PUT -H 'Content-Type: {media}' --data-binary @'{}' "http://{host}/v2/{repo}/manifests/1" -o /dev/null"#,
        list.display(),
        manifest.display()
    ))
}

/// The registry's limit for a pull: every blob fetched by curl into a file, four at once.
fn curl_pull(b: &Bench, img: &Image, repo: &str, dest: &Path) -> Command {
    let host = b.registry.borrow().host();
    let list = b.tmp("blobs.txt");
    let mut text = String::new();
    for (d, _) in &img.blobs {
        writeln!(text, "{d}").unwrap();
    }
    fs::write(&list, text).unwrap();
    bash(&format!(
        "mkdir -p '{d}'; xargs -P 4 -I@ curl -sfL -o '{d}/@' 'http://{host}/v2/{repo}/blobs/@' < '{}'; sync -f '{d}'",
        list.display(),
        d = dest.display()
    ))
}

/// Push to an empty registry, push again (everything there), pull into an empty store.
fn push_pull(b: &Bench, label: &str, img: &Image, size: &str) {
    let skopeo = have("skopeo");
    let host = || b.registry.borrow().host();
    let ours_push = || {
        let dest = format!("{}/bench/wcbuild:1", host());
        let mut c = b.wcbuild(&img.store);
        c.args(["push", "-q", &img.name, &dest]);
        c
    };
    let skopeo_push = || {
        let mut c = Command::new("skopeo");
        c.args(["copy", "-q", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{}", img.store.display(), img.name))
            .arg(format!("docker://{}/bench/skopeo:1", host()));
        c
    };
    let notes = vec![format!(
        "{} layers, {} to send",
        img.blobs.len() - 1,
        human(img.bytes)
    )];
    // First push, to an empty registry each time.
    let mut tools = vec![Tool::new("wcbuild push", Role::Ours, || {
        b.registry.borrow_mut().fresh();
        run(&mut ours_push(), &b.log)
    })];
    if skopeo {
        tools.push(Tool::new("skopeo copy", Role::Peer, || {
            b.registry.borrow_mut().fresh();
            run(&mut skopeo_push(), &b.log)
        }));
    }
    tools.push(Tool::new("curl PUT ×4", Role::Ceiling, || {
        b.registry.borrow_mut().fresh();
        run(&mut curl_push(b, img, "bench/curl"), &b.log)
    }));
    b.measure(&format!("push {label}"), size, tools, notes.clone());
    // Push again: everything is there.
    b.registry.borrow_mut().fresh();
    must(&mut ours_push(), &b.log);
    if skopeo {
        must(&mut skopeo_push(), &b.log);
    }
    let mut tools = vec![Tool::new("wcbuild push", Role::Ours, || {
        run(&mut ours_push(), &b.log)
    })];
    if skopeo {
        tools.push(Tool::new("skopeo copy", Role::Peer, || {
            run(&mut skopeo_push(), &b.log)
        }));
    }
    b.measure(
        &format!("push {label} again (all there)"),
        size,
        tools,
        Vec::new(),
    );
    // Pull into an empty store / layout / directory.
    must(&mut curl_push(b, img, "bench/curl"), &b.log);
    let src = format!("{}/bench/wcbuild:1", host());
    let mut tools = vec![Tool::new("wcbuild pull", Role::Ours, || {
        let root = b.tmp("root");
        let mut c = b.wcbuild(&root);
        c.args(["pull", "-q", &src]);
        let r = run(&mut c, &b.log);
        rm(&root);
        r
    })];
    if skopeo {
        tools.push(Tool::new("skopeo copy", Role::Peer, || {
            let dir = b.tmp("layout");
            let mut c = Command::new("skopeo");
            c.args(["copy", "-q", "--src-tls-verify=false"])
                .arg(format!("docker://{src}"))
                .arg(format!("oci:{}:x", dir.display()));
            let r = run(&mut c, &b.log);
            rm(&dir);
            r
        }));
    }
    tools.push(Tool::new("curl GET ×4", Role::Ceiling, || {
        let dir = b.tmp("blobs");
        let r = run(&mut curl_pull(b, img, "bench/curl", &dir), &b.log);
        rm(&dir);
        r
    }));
    b.measure(&format!("pull {label}"), size, tools, notes);
}

/// `save` to a docker-format tar and `load` into an empty store, against the engine's.
fn save_load(b: &Bench, ctx: &Path, size: &str) {
    let root = b.tmp("root");
    must(
        b.wcbuild(&root)
            .args(["build", "-q", "-t", "bench/save:1"])
            .arg(ctx),
        &b.log,
    );
    let ours_tar = b.tmp("ours.tar");
    let docker = b.docker.is_some();
    if docker {
        must(
            &mut b.docker(&["build", "-q", "-t", "bench/save:1", ctx.to_str().unwrap()]),
            &b.log,
        );
    }
    let theirs_tar = b.tmp("docker.tar");
    let mut tools = vec![Tool::new("wcbuild save", Role::Ours, || {
        rm(&ours_tar);
        run(
            b.wcbuild(&root)
                .args(["save", "--format", "docker", "-o"])
                .arg(&ours_tar)
                .arg("bench/save:1"),
            &b.log,
        )
    })];
    if docker {
        tools.push(Tool::new("docker save", Role::Peer, || {
            rm(&theirs_tar);
            run(
                &mut b.docker(&["save", "-o", theirs_tar.to_str().unwrap(), "bench/save:1"]),
                &b.log,
            )
        }));
    }
    b.measure(
        "save (docker format)",
        size,
        tools,
        vec![format!("wcbuild layers: {}", b.default_compression)],
    );
    let mut tools = vec![Tool::new("wcbuild load", Role::Ours, || {
        let fresh = b.tmp("root");
        let r = run(
            b.wcbuild(&fresh).arg("load").arg("-i").arg(&ours_tar),
            &b.log,
        );
        rm(&fresh);
        r
    })];
    if docker {
        tools.push(Tool::new("docker load", Role::Peer, || {
            b.docker_clean();
            run(
                &mut b.docker(&["load", "-q", "-i", theirs_tar.to_str().unwrap()]),
                &b.log,
            )
        }));
    }
    b.measure("load (docker format)", size, tools, Vec::new());
    rm(&ours_tar);
    rm(&theirs_tar);
    rm(&root);
    if docker {
        b.docker_clean();
    }
}

/// The dedup report over the store's images: first run (every layer read) against two
/// gunzip pipelines reading the same blobs, then the cached run.
fn dedup(b: &Bench, images: &[&Image], size: &str) {
    let store = &images[0].store;
    let mut layers: Vec<String> = images
        .iter()
        .flat_map(|i| i.blobs.iter().skip(1))
        .map(|(_, p)| p.display().to_string())
        .collect();
    layers.sort();
    layers.dedup();
    let half = layers.len().div_ceil(2);
    let (a, c) = layers.split_at(half);
    let peer = format!(
        "(cat {} | gzip -dc | wc -c) > /dev/null & {} wait",
        a.join(" "),
        if c.is_empty() {
            String::new()
        } else {
            format!("(cat {} | gzip -dc | wc -c) > /dev/null & ", c.join(" "))
        }
    );
    let tools = vec![
        Tool::new("wcbuild dedup --no-cache", Role::Ours, || {
            run(
                b.wcbuild(store)
                    .args(["dedup", "--all", "--no-cache"])
                    .stdout(Stdio::null()),
                &b.log,
            )
        }),
        Tool::new("2 × gzip -dc", Role::Peer, || {
            run(&mut bash(&peer), &b.log)
        }),
    ];
    b.measure(
        "dedup, first run",
        size,
        tools,
        vec![format!("{} layers", layers.len())],
    );
    must(b.wcbuild(store).args(["dedup", "--all"]), &b.log);
    let tools = vec![Tool::new("wcbuild dedup", Role::Ours, || {
        run(b.wcbuild(store).args(["dedup", "--all"]), &b.log)
    })];
    b.measure("dedup, cached", size, tools, Vec::new());
}

/// One kind of content through wcbuild's gzip and zstd against pigz, zstd and `gzip -6`.
fn compress(b: &Bench, kind: content::Kind, total: u64) {
    let ctx = b.tmp("ctx");
    let mut rng = content::Rng::new(77);
    fs::create_dir_all(&ctx).unwrap();
    let files = 8;
    for i in 0..files {
        fs::write(
            ctx.join(format!("f{i}")),
            kind.make(&mut rng, (total / files) as usize),
        )
        .unwrap();
    }
    copy_dockerfile(&ctx);
    warm(&ctx);
    let size = human(total);
    let layer_size = |flags: &[&str], taskset: bool| {
        let root = b.tmp("root");
        let mut c = if taskset {
            let mut c = Command::new("taskset");
            c.args(["-c", "0", WCBUILD]).arg("--root").arg(&root);
            c
        } else {
            b.wcbuild(&root)
        };
        c.args(["build", "-q", "-t", "bench/c:1"])
            .args(flags)
            .arg(&ctx);
        let r = run(&mut c, &b.log);
        let bytes = tree_bytes(&root.join("blobs"));
        rm(&root);
        r.map(|s| (s, bytes))
    };
    let gzip6 = run(
        &mut bash(&format!(
            "tar -C '{}' -cf - . | gzip -6 | wc -c > '{}'",
            ctx.display(),
            b.work.join("gzip6.txt").display()
        )),
        &b.log,
    )
    .ok()
    .and_then(|_| fs::read_to_string(b.work.join("gzip6.txt")).ok())
    .and_then(|s| s.trim().parse::<u64>().ok());
    let tar = tree_bytes(&ctx) as f64;
    let ratios = RefCell::new((0u64, 0u64));
    let tools = vec![
        Tool::new("wcbuild", Role::Ours, || {
            let (s, bytes) = layer_size(&["--compression", "gzip"], false)?;
            ratios.borrow_mut().0 = bytes;
            Ok(s)
        }),
        {
            let (n, _) = b.copy_ceiling(&ctx, "gzip");
            Tool::new(&n, Role::Ceiling, || {
                run(&mut b.copy_ceiling(&ctx, "gzip").1, &b.log)
            })
        },
    ];
    b.measure(&format!("gzip layer: {kind:?}"), &size, tools, Vec::new());
    let ours = ratios.borrow().0 as f64;
    b.note(format!(
        "blob ÷ tar: wcbuild {:.3}, gzip -6 {}",
        ours / tar,
        gzip6.map_or("–".into(), |g| format!("{:.3}", g as f64 / tar))
    ));
    let tools = vec![
        Tool::new("wcbuild, 2 cores", Role::Ours, || {
            let (s, bytes) = layer_size(&["--compression", "zstd"], false)?;
            ratios.borrow_mut().1 = bytes;
            Ok(s)
        }),
        Tool::new("wcbuild, 1 core (taskset)", Role::Peer, || {
            layer_size(&["--compression", "zstd"], true).map(|(s, _)| s)
        }),
        {
            let (n, _) = b.copy_ceiling(&ctx, "zstd");
            Tool::new(&n, Role::Ceiling, || {
                run(&mut b.copy_ceiling(&ctx, "zstd").1, &b.log)
            })
        },
    ];
    b.measure(&format!("zstd layer: {kind:?}"), &size, tools, Vec::new());
    let z = ratios.borrow().1 as f64;
    b.note(format!(
        "blob ÷ tar {:.3}; peer ÷ wcbuild is zstd's 2-core speed-up",
        z / tar
    ));
    rm(&ctx);
}

/// A Windows image: the Nano Server fixture plus a COPY of the tree, then push and pull.
fn windows(b: &Bench, ctx: &Path, size: &str) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nanoserver.tar");
    let df = b.tmp("Dockerfile.windows");
    fs::write(
        &df,
        "FROM mcr.microsoft.com/windows/nanoserver:ltsc2022\nCOPY . C:/app/\n",
    )
    .unwrap();
    let tools = vec![
        Tool::new("wcbuild", Role::Ours, || {
            let root = b.tmp("root");
            must(b.wcbuild(&root).arg("load").arg("-i").arg(&fixture), &b.log);
            let r = run(
                b.wcbuild(&root)
                    .args(["build", "-q", "-t", "bench/win:1", "-f"])
                    .arg(&df)
                    .arg(ctx),
                &b.log,
            );
            rm(&root);
            r
        }),
        {
            let (n, _) = b.copy_ceiling(ctx, &b.default_compression);
            Tool::new(&n, Role::Ceiling, || {
                run(&mut b.copy_ceiling(ctx, &b.default_compression).1, &b.log)
            })
        },
    ];
    b.measure(
        "Windows COPY build (Nano Server fixture), cold",
        size,
        tools,
        vec!["no peer builds Windows images on Linux".into()],
    );
    let store = b.tmp("root");
    must(
        b.wcbuild(&store).arg("load").arg("-i").arg(&fixture),
        &b.log,
    );
    let flags = ["-f", df.to_str().unwrap()];
    let img = image(b, &store, "bench/win:1", ctx, &flags);
    push_pull(b, "Windows image", &img, size);
    rm(&store);
}

/// Runs one workload; if it panics (a peer's preparation failed, the disk filled up), records
/// a row that says so and goes on with the next.
fn guarded(b: &Bench, what: &str, size: &str, f: impl FnOnce()) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let short: String = msg.chars().take(400).collect();
        b.skip(what, size, &format!("stopped: {short}"));
        if b.docker.is_some() {
            b.docker_clean();
        }
    }
}

fn install_peers() -> Vec<String> {
    let missing: Vec<&str> = PEERS
        .iter()
        .filter(|(bin, _)| !have(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    let mut notes = Vec::new();
    if !missing.is_empty() {
        println!("installing from Debian: {}", missing.join(" "));
        let ok = quiet(Command::new("apt-get").arg("update"))
            && Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            notes.push(format!("could not install {}", missing.join(" ")));
        }
    }
    for (bin, _) in PEERS {
        if !have(bin) {
            notes.push(format!("{bin} missing: its workloads are skipped"));
        }
    }
    notes
}

fn version(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(format!("{cmd} 2>&1 | head -1"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Days since 1970 to a civil date (Howard Hinnant's algorithm).
fn today() -> String {
    let days = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench binaries without `--bench`: nothing to do.
        println!("peers: run with `cargo bench --bench peers`");
        return;
    }
    let sizes: Vec<u64> = env_list("WCBUILD_BENCH_SIZES", "100M,1G,4G")
        .iter()
        .map(|s| parse_size(s))
        .collect();
    let counts: Vec<usize> = env_list("WCBUILD_BENCH_FILES", "1000,20000,100000")
        .iter()
        .map(|s| parse_size(s) as usize)
        .collect();
    let rounds: usize = std::env::var("WCBUILD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let only = env_list("WCBUILD_BENCH_ONLY", "");
    let on = |group: &str| only.is_empty() || only.iter().any(|o| o == group);
    let work = std::env::var_os("WCBUILD_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("wcbuild-peers-{}", std::process::id()));
    fs::create_dir_all(&work).unwrap();
    let load_before = load_average();

    let mut header_notes = install_peers();
    let docker = if have("dockerd") {
        Some(common::start_dockerd())
    } else {
        None
    };
    let help = Command::new(WCBUILD)
        .args(["build", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // The default named after `--compression`'s possible values.
    let default_compression = help
        .split("--compression")
        .nth(1)
        .and_then(|s| s.split("[default: ").nth(1))
        .and_then(|s| s.split(']').next())
        .unwrap_or("gzip")
        .to_string();
    let busybox = work.join("busybox.tar");
    fs::write(
        &busybox,
        wcbuild::ops::fixtures::busybox_archive(Path::new("/bin/busybox")).unwrap(),
    )
    .unwrap();
    let b = Bench {
        log: work.join("bench.log"),
        rounds,
        buildah: have("buildah"),
        registry: RefCell::new(Registry::start(work.join("registry"))),
        hash: if have("openssl") {
            "openssl dgst -sha256"
        } else {
            "sha256sum"
        },
        default_compression,
        busybox,
        rows: RefCell::new(Vec::new()),
        counter: RefCell::new(0),
        docker,
        work: work.clone(),
    };
    println!(
        "wcbuild {WCBUILD}; default layers: {}; {rounds} rounds; load average {load_before}",
        b.default_compression
    );
    println!("{TABLE_HEAD}");

    for &size in &sizes {
        let label = human(size);
        if free_bytes(&work) < size.saturating_mul(6) {
            b.skip(
                "all byte-sized workloads",
                &label,
                "not enough free disk (6 × size needed)",
            );
            continue;
        }
        let app = work.join(format!("app-{size}"));
        content::app_tree(&app, size, 1).unwrap();
        copy_dockerfile(&app);
        warm(&app);
        if on("copy") {
            guarded(&b, "COPY build, cold: app tree", &label, || {
                copy_cold(&b, "COPY build, cold: app tree", &app, &label, &[])
            });
            if b.default_compression != "gzip" {
                guarded(&b, "COPY build, cold: app tree, gzip", &label, || {
                    copy_cold(
                        &b,
                        "COPY build, cold: app tree, --compression gzip",
                        &app,
                        &label,
                        &["--compression", "gzip"],
                    )
                });
            }
            guarded(&b, "COPY build, cold: random tree", &label, || {
                let random = work.join(format!("random-{size}"));
                content::random_tree(&random, size, 2).unwrap();
                copy_dockerfile(&random);
                warm(&random);
                copy_cold(&b, "COPY build, cold: random tree", &random, &label, &[]);
                rm(&random);
            });
        }
        if on("noop") {
            guarded(&b, "no-op rebuild: app tree", &label, || {
                noop(&b, "no-op rebuild: app tree", &app, &label)
            });
        }
        if on("build-push") {
            guarded(&b, "build, then push", &label, || {
                build_push(&b, &app, &label)
            });
        }
        if on("save") && b.docker.is_some() {
            guarded(&b, "save and load", &label, || save_load(&b, &app, &label));
        }
        if on("push") || on("pull") || on("dedup") {
            guarded(&b, "push, pull and dedup", &label, || {
                let store = b.tmp("root");
                let one = image(&b, &store, "bench/app:1", &app, &[]);
                let parts = work.join(format!("parts-{size}"));
                let mut df = String::from("FROM scratch\n");
                for p in 0..20 {
                    content::app_tree(&parts.join(format!("p{p:02}")), size / 20, 100 + p).unwrap();
                    df.push_str(&format!("COPY p{p:02} /p{p:02}/\n"));
                }
                fs::write(parts.join("Dockerfile"), df).unwrap();
                warm(&parts);
                let twenty = image(&b, &store, "bench/twenty:1", &parts, &[]);
                if on("push") || on("pull") {
                    push_pull(&b, "1-layer image", &one, &label);
                    push_pull(&b, "20-layer image", &twenty, &label);
                }
                if on("dedup") {
                    dedup(&b, &[&one, &twenty], &label);
                }
                rm(&parts);
                rm(&store);
            });
        }
        if on("windows") && size <= 1 << 30 {
            guarded(&b, "Windows image", &label, || windows(&b, &app, &label));
        }
        if on("compress") {
            let n = size.min(256 << 20);
            for kind in [
                content::Kind::Binary,
                content::Kind::Prose,
                content::Kind::Base64,
                content::Kind::Random,
            ] {
                guarded(
                    &b,
                    &format!("gzip and zstd layers: {kind:?}"),
                    &label,
                    || compress(&b, kind, n),
                );
            }
        }
        rm(&app);
    }
    for &count in &counts {
        let label = format!("{count} files");
        let small = work.join(format!("small-{count}"));
        content::small_tree(&small, count, 3).unwrap();
        copy_dockerfile(&small);
        warm(&small);
        if on("copy") {
            guarded(&b, "COPY build, cold: small files", &label, || {
                copy_cold(&b, "COPY build, cold: small files", &small, &label, &[])
            });
        }
        if on("noop") {
            guarded(&b, "no-op rebuild: small files", &label, || {
                noop(&b, "no-op rebuild: small files", &small, &label)
            });
        }
        rm(&small);
    }
    if on("run") && b.docker.is_some() {
        guarded(&b, "RUN steps", "busybox base", || run_steps(&b));
    }

    let load_after = load_average();
    header_notes.push(format!(
        "load average before {load_before}, after {load_after}"
    ));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy = [&load_before, &load_after]
        .iter()
        .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .any(|l| l > cores * 0.75);
    if busy {
        header_notes.push(format!(
            "**taken under load**: other work shared the {cores} cores, so wall times are \
             slower than on a quiet machine and the tools' shares of the CPU differ; read \
             the ratios with care"
        ));
    }
    let mut md = String::new();
    writeln!(md, "# benches/peers, {}\n", today()).unwrap();
    writeln!(
        md,
        "{} cores, {} GiB; {}; wcbuild's default layers: {}; {} rounds, interleaved; sizes {}; files {}.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1).and_then(|k| k.parse::<u64>().ok()))
            .map_or(0, |k| k >> 20),
        version("uname -sr"),
        b.default_compression,
        rounds,
        sizes.iter().map(|s| human(*s)).collect::<Vec<_>>().join(", "),
        counts
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
    .unwrap();
    for v in [
        "docker version --format '{{.Server.Version}}' 2>/dev/null || dockerd --version",
        "buildah --version",
        "skopeo --version",
        "pigz --version",
        "docker-registry --version",
        "curl --version",
    ] {
        writeln!(md, "- {}", version(v)).unwrap();
    }
    for n in &header_notes {
        writeln!(md, "- {n}").unwrap();
    }
    writeln!(
        md,
        "\nInputs are generated (benches/peers/content.rs) and read once before each workload, so \
         every tool starts from the page cache. \"peer ÷ wcbuild\" is the best peer's median time \
         over wcbuild's (above 1: wcbuild is faster); \"ceiling ÷ wcbuild\" the raw pipeline's \
         (1: wcbuild is as fast as the pipeline that bounds it). Peak RSS is wait4's, of wcbuild \
         alone.\n"
    )
    .unwrap();
    writeln!(md, "{TABLE_HEAD}").unwrap();
    for r in b.rows.borrow().iter() {
        writeln!(md, "{}", r.markdown()).unwrap();
    }
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    let _ = fs::create_dir_all(&results);
    let path = results.join(format!("{}.md", today()));
    fs::write(&path, md).unwrap();
    println!("written to {}", path.display());

    drop(b);
    if std::env::var_os("WCBUILD_BENCH_KEEP").is_some() {
        println!("kept {}", work.display());
    } else {
        rm(&work);
    }
}
