//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A Docker engine started for a test on a private socket; stopped when dropped.
pub struct Dockerd {
    child: std::process::Child,
    /// The engine's socket.
    pub socket: PathBuf,
    dir: PathBuf,
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The data root holds overlay mounts only while containers run; remove what we can.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts dockerd with no bridge and no iptables, waiting until it answers.
pub fn start_dockerd() -> Dockerd {
    // A short path: unix socket paths are limited to 108 bytes.
    let dir = PathBuf::from(format!("/tmp/wcbd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("d.sock");
    let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
    let child = Command::new("dockerd")
        .arg("--host")
        .arg(format!("unix://{}", socket.display()))
        .arg("--data-root")
        .arg(dir.join("data"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--pidfile")
        .arg(dir.join("pid"))
        .args([
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("dockerd must be installed (./test.sh installs docker.io)");
    let d = Dockerd { child, socket, dir };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", d.socket.display()))
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "dockerd did not start: {}",
            std::fs::read_to_string(d.dir.join("dockerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

impl Dockerd {
    /// `docker -H <socket> ARGS`.
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        self.docker_env(args, &[])
    }

    /// `docker -H <socket> ARGS` with extra environment. Uses the Docker CLI that comes with
    /// Debian's engine (`/usr/bin/docker`), whose `DOCKER_BUILDKIT=1` uses the engine's own
    /// BuildKit, when it is there.
    pub fn docker_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let cli = if std::path::Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        };
        Command::new(cli)
            .envs(env.iter().copied())
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .output()
            .unwrap()
    }
}
