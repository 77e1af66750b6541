//! Push and pull against a local `docker-registry` on loopback, side by side with `skopeo copy`
//! of the same image in the same run: `cargo bench --bench registry`.
//!
//! Two images: one with a single large layer (`WCBUILD_BENCH_BYTES`, default 1 GiB) and one
//! with 20 layers of a twentieth of that each. Random bytes stand in for gzip data (a registry
//! does not look inside). Measured: first push (wcbuild to one repository, skopeo from the
//! store's OCI layout to another), a second push of the same image (everything present), and a
//! pull into an empty store / an empty OCI layout. Each tool moves its own image (same sizes,
//! different random bytes), so neither finds the other's blobs in the registry or the page
//! cache. Ratios and wcbuild's peak RSS are printed.

#[path = "../tests/common/mod.rs"]
mod common;

use common::random_image as image;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wcbuild::ops::registry::{PullOptions, PushOptions, pull, push};
use wcbuild::progress::Silent;
use wcbuild::registry::{Client, ClientOptions};
use wcbuild::store::Store;

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn skopeo(args: &[&str]) {
    let st = Command::new("skopeo")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "skopeo {args:?}");
}

fn main() {
    let total: usize = std::env::var("WCBUILD_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let work = std::env::temp_dir().join(format!("wcb-bench-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        work.join("config.yml"),
        format!(
            "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: bench\n",
            work.join("data").display()
        ),
    )
    .unwrap();
    let mut reg = Command::new("docker-registry")
        .arg("serve")
        .arg(work.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (apt install docker-registry)");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let host = format!("127.0.0.1:{port}");
    let store_dir = work.join("store");
    let store = Store::open(&store_dir).unwrap();
    image(&store, "bench/one:1", 1, total, 1);
    image(&store, "bench/twenty:1", 20, total / 20, 2);
    image(&store, "bench/one:s", 1, total, 3);
    image(&store, "bench/twenty:s", 20, total / 20, 4);
    let client = Client::new(ClientOptions::default());
    let rt = wcbuild::ops::registry::runtime();
    println!(
        "image sizes: {} MiB each; registry on loopback",
        total >> 20
    );
    for (name, label) in [("bench/one:1", "1 layer"), ("bench/twenty:1", "20 layers")] {
        let repo = name.split(':').next().unwrap();
        let ours = format!("{host}/{repo}-wcb:1");
        let theirs = format!("{host}/{repo}-skopeo:1");
        let full = wcbuild::ops::images::normalize(&name.replace(":1", ":s")).unwrap();
        let push_w = timed(|| {
            rt.block_on(push(
                &store,
                &client,
                name,
                Some(&ours),
                &PushOptions::default(),
                &mut Silent,
            ))
            .unwrap();
        });
        let push_s = timed(|| {
            skopeo(&[
                "copy",
                "--dest-tls-verify=false",
                &format!("oci:{}:{full}", store_dir.display()),
                &format!("docker://{theirs}"),
            ]);
        });
        let again = timed(|| {
            rt.block_on(push(
                &store,
                &client,
                name,
                Some(&ours),
                &PushOptions::default(),
                &mut Silent,
            ))
            .unwrap();
        });
        let fresh: PathBuf = work.join(format!("pull-{}", repo.replace('/', "-")));
        let fresh_store = Store::open(&fresh).unwrap();
        let pull_w = timed(|| {
            rt.block_on(pull(
                &fresh_store,
                &client,
                &ours,
                &PullOptions::default(),
                &mut Silent,
            ))
            .unwrap();
        });
        let layout = work.join(format!("layout-{}", repo.replace('/', "-")));
        let pull_s = timed(|| {
            skopeo(&[
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{theirs}"),
                &format!("oci:{}:x", layout.display()),
            ]);
        });
        let mb = total as f64 / 1e6;
        println!(
            "{label}: push wcbuild {:.2}s ({:.0} MB/s) vs skopeo {:.2}s ({:.0} MB/s) = {:.2}x; second push {:.3}s",
            push_w.as_secs_f64(),
            mb / push_w.as_secs_f64(),
            push_s.as_secs_f64(),
            mb / push_s.as_secs_f64(),
            push_s.as_secs_f64() / push_w.as_secs_f64(),
            again.as_secs_f64()
        );
        println!(
            "{label}: pull wcbuild {:.2}s ({:.0} MB/s) vs skopeo {:.2}s ({:.0} MB/s) = {:.2}x",
            pull_w.as_secs_f64(),
            mb / pull_w.as_secs_f64(),
            pull_s.as_secs_f64(),
            mb / pull_s.as_secs_f64(),
            pull_s.as_secs_f64() / pull_w.as_secs_f64()
        );
        let _ = std::fs::remove_dir_all(&fresh);
        let _ = std::fs::remove_dir_all(&layout);
        drop(fresh_store);
    }
    let hwm = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_default();
    println!("wcbuild peak RSS (whole bench process, image creation included): {hwm}");
    let _ = reg.kill();
    let _ = reg.wait();
    let _ = std::fs::remove_dir_all(Path::new(&work));
}
