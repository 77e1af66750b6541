//! Replays the fuzz corpus (`fuzz/corpus/<target>/`, the seeds and every input the fuzzer kept
//! or that once crashed) through the same target functions `cargo fuzz` runs, on stable Rust:
//! a bug the fuzzer found and that was fixed stays fixed. Bounded: at most
//! [`MAX_FILES`] files per target and [`MAX_BYTES`] bytes per file.

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::path::Path;

const MAX_FILES: usize = 2000;
const MAX_BYTES: u64 = 256 * 1024;

fn replay(name: &str, target: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus `{}` must exist: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "`{}` holds no seed", dir.display());
    let mut n = 0;
    for path in files.iter().take(MAX_FILES) {
        if std::fs::metadata(path).unwrap().len() > MAX_BYTES {
            continue;
        }
        let data = std::fs::read(path).unwrap();
        let outcome = std::panic::catch_unwind(|| target(&data));
        assert!(
            outcome.is_ok(),
            "fuzz target `{name}` fails on `{}`",
            path.display()
        );
        n += 1;
    }
    n
}

#[test]
fn every_fuzz_target_passes_its_corpus() {
    let mut total = 0;
    for (name, target) in targets::TARGETS {
        let n = replay(name, target);
        eprintln!("{name}: {n} corpus file(s)");
        total += n;
    }
    assert!(total >= targets::TARGETS.len());
}
