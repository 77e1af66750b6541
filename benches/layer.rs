//! Layer packing and extraction, side by side with the peers, in one run:
//! `cargo bench --bench layer` (size with `WCBUILD_BENCH_BYTES`, default 1 GiB).
//!
//! The tree is half compressible (system files repeated), half random, plus 20,000 small
//! files, written to a temp directory and read once so it sits in the page cache. Measured:
//! (a) an uncompressed layer (tar + sha256); (b) our gzip-6 layer on 2 threads; (c) `tar -c |
//! pigz -6 | sha256sum`; (d) the ceiling "two cores of single-thread streaming gzip-6"
//! (flate2 zlib-rs on the same tar, ×2); (e) extracting our gzip layer vs `tar -xzf`.
//! Ratios are printed; absolute figures vary with the machine.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use wcbuild::layer::{
    Compression, ExtractOptions, Format, LayerOptions, LayerWriter, extract, pack_dir,
};

fn make_tree(root: &Path, total: u64) -> u64 {
    let mut written = 0u64;
    // Compressible half: real files from /usr, repeated.
    let mut sources: Vec<PathBuf> = Vec::new();
    for dir in ["/usr/lib/x86_64-linux-gnu", "/usr/share/doc", "/usr/bin"] {
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    sources.push(e.path());
                }
            }
        }
    }
    sources.sort();
    let half = total / 2;
    let comp = root.join("compressible");
    fs::create_dir_all(&comp).unwrap();
    let mut i = 0;
    'outer: loop {
        for s in &sources {
            if written >= half {
                break 'outer;
            }
            if let Ok(data) = fs::read(s) {
                if data.len() > 64 << 20 {
                    continue;
                }
                fs::write(comp.join(format!("f{i:06}")), &data).unwrap();
                written += data.len() as u64;
                i += 1;
            }
        }
        if sources.is_empty() {
            break;
        }
    }
    // Random half, in 8 MiB files.
    let rand_dir = root.join("random");
    fs::create_dir_all(&rand_dir).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut n = 0;
    while written < total - total / 16 {
        let mut buf = vec![0u8; 8 << 20];
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        fs::write(rand_dir.join(format!("r{n:04}")), &buf).unwrap();
        written += buf.len() as u64;
        n += 1;
    }
    // 20,000 small files.
    let small = root.join("small");
    for d in 0..100 {
        let dir = small.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..200 {
            let content = format!("small file {d} {f}\n").repeat(1 + (f % 40));
            fs::write(dir.join(format!("f{f:03}.txt")), &content).unwrap();
            written += content.len() as u64;
        }
    }
    written
}

fn warm(root: &Path) {
    let _ = Command::new("tar")
        .arg("-cf")
        .arg("/dev/null")
        .arg("-C")
        .arg(root)
        .arg(".")
        .status();
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn peak_rss_mib() -> f64 {
    let s = fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map(|k| k / 1024.0)
        .unwrap_or(0.0)
}

fn pack(
    root: &Path,
    compression: Compression,
    out: impl Write,
) -> (wcbuild::layer::LayerDigests, f64) {
    let start = Instant::now();
    let opts = LayerOptions {
        format: Format::Linux,
        compression,
        source_date_epoch: Some(0),
        threads: std::env::var("WCBUILD_BENCH_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2),
        windows_owner: None,
        windows_base: false,
    };
    let mut w = LayerWriter::new(out, opts).unwrap();
    pack_dir(root, &mut w, false).unwrap();
    let (d, _) = w.finish().unwrap();
    (d, start.elapsed().as_secs_f64())
}

fn main() {
    let total: u64 = std::env::var("WCBUILD_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let base = std::env::temp_dir().join(format!("wcbuild-bench-layer-{}", std::process::id()));
    let tree = base.join("tree");
    fs::create_dir_all(&tree).unwrap();
    let bytes = make_tree(&tree, total);
    warm(&tree);
    // Reset the peak-RSS counter so it measures packing and extraction, not tree generation.
    let _ = fs::write("/proc/self/clear_refs", "5");
    println!(
        "tree: {:.0} MB in files (page cache warm)",
        bytes as f64 / 1e6
    );

    let sink = std::io::sink();
    let (d, t) = pack(&tree, Compression::None, sink);
    println!(
        "(a) uncompressed layer (tar + sha256)     {:>8.1} MB/s  ({} bytes of tar)",
        mbps(d.tar_size, t),
        d.tar_size
    );
    let tar_size = d.tar_size;

    let blob_path = base.join("layer.tar.gz");
    let (d, t_ours) = pack(
        &tree,
        Compression::Gzip(6),
        fs::File::create(&blob_path).unwrap(),
    );
    let ours = mbps(tar_size, t_ours);
    println!(
        "(b) wcbuild gzip-6, 2 threads             {:>8.1} MB/s  (ratio {:.3})",
        ours,
        d.size as f64 / tar_size as f64
    );

    let pigz = Command::new("pigz")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    let mut peer = None;
    if pigz {
        let start = Instant::now();
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -C {} -cf - . | pigz -6 -p 2 | sha256sum > /dev/null",
                tree.display()
            ))
            .status()
            .unwrap();
        assert!(st.success());
        let t = start.elapsed().as_secs_f64();
        peer = Some(mbps(tar_size, t));
        println!(
            "(c) tar -c | pigz -6 -p2 | sha256sum      {:>8.1} MB/s",
            peer.unwrap()
        );
    } else {
        println!("(c) pigz not installed: skipped");
    }

    // (d) single-thread streaming gzip-6 over the same tar, from memory-sized chunks.
    let tar_path = base.join("layer.tar");
    pack(
        &tree,
        Compression::None,
        fs::File::create(&tar_path).unwrap(),
    );
    let mut tar = fs::File::open(&tar_path).unwrap();
    let start = Instant::now();
    let mut enc = flate2::write::GzEncoder::new(std::io::sink(), flate2::Compression::new(6));
    std::io::copy(&mut tar, &mut enc).unwrap();
    enc.finish().unwrap();
    let single = mbps(tar_size, start.elapsed().as_secs_f64());
    let ceiling = 2.0 * single;
    println!(
        "(d) ceiling: 2 x single-thread gzip-6     {:>8.1} MB/s  (single {:.1})",
        ceiling, single
    );

    // (e) extraction.
    let dest = base.join("out");
    let start = Instant::now();
    let f = fs::File::open(&blob_path).unwrap();
    extract(
        std::io::BufReader::with_capacity(1 << 20, f),
        &dest,
        &ExtractOptions::default(),
    )
    .unwrap();
    let t_ext = start.elapsed().as_secs_f64();
    let dest2 = base.join("out-tar");
    fs::create_dir_all(&dest2).unwrap();
    let start = Instant::now();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&blob_path)
        .arg("-C")
        .arg(&dest2)
        .status()
        .unwrap();
    assert!(st.success());
    let t_tar = start.elapsed().as_secs_f64();
    println!(
        "(e) extract: wcbuild {:.2} s, tar -xzf {:.2} s",
        t_ext, t_tar
    );

    println!("--");
    if let Some(p) = peer {
        println!(
            "ours / pigz pipeline        {:.2}x  (target >= 1.8)",
            ours / p
        );
    }
    println!(
        "ours / ceiling              {:.2}   (target >= 0.85)",
        ours / ceiling
    );
    println!(
        "tar -xzf time / ours        {:.2}x  (target >= 1.0)",
        t_tar / t_ext
    );
    println!(
        "peak RSS                    {:.1} MiB (target < 100)",
        peak_rss_mib()
    );
    let mut check = Vec::new();
    fs::File::open(&blob_path)
        .unwrap()
        .take(2)
        .read_to_end(&mut check)
        .unwrap();
    assert_eq!(check, [0x1f, 0x8b]);
    let _ = fs::remove_dir_all(&base);
}
