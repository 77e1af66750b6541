//! Deterministic bench inputs: content that compresses as real files do (machine code like a
//! shared library's, prose, JSON, JavaScript, XML, base64, already compressed assets), and the
//! trees built from it (an app's publish folder, a random tree, a tree of small files).
//! The same seed gives the same bytes on every machine.

use std::fs;
use std::io;
use std::path::Path;

/// xorshift64.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }
    /// Zipf-like rank in 0..n: small ranks far more often.
    pub fn skewed(&mut self, n: u64) -> u64 {
        let a = self.below(n);
        let b = self.below(n);
        a * b / n
    }
    pub fn fill(&mut self, out: &mut Vec<u8>, n: usize) {
        for _ in 0..n / 8 {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        for _ in 0..n % 8 {
            out.push(self.next() as u8);
        }
    }
}
/// Words of a fixed vocabulary (the same in every file, as a language's are), made once.
fn words(seed: u64, n: usize, min: usize, spread: usize) -> &'static [Vec<u8>] {
    use std::sync::OnceLock;
    static CACHE: [OnceLock<Vec<Vec<u8>>>; 8] = [const { OnceLock::new() }; 8];
    CACHE[seed as usize].get_or_init(|| vocabulary(seed, n, min, spread))
}

fn vocabulary(seed: u64, n: usize, min: usize, spread: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    const LETTERS: &[u8] = b"etaoinshrdlcumwfgypbvkjxqz";
    (0..n)
        .map(|_| {
            let len = min + rng.below(spread as u64) as usize;
            (0..len).map(|_| LETTERS[rng.skewed(26) as usize]).collect()
        })
        .collect()
}
pub fn prose(rng: &mut Rng, n: usize) -> Vec<u8> {
    let vocab = words(1, 3000, 2, 8);
    let mut out = Vec::with_capacity(n + 100);
    let mut col = 0;
    while out.len() < n {
        let w = &vocab[rng.skewed(3000) as usize];
        out.extend_from_slice(w);
        col += w.len() + 1;
        if rng.below(14) == 0 {
            out.extend_from_slice(b". ");
            col += 1;
        }
        if col > 72 {
            out.push(b'\n');
            col = 0;
            if rng.below(8) == 0 {
                out.push(b'\n');
            }
        } else {
            out.push(b' ');
        }
    }
    out.truncate(n);
    out
}
pub fn json(rng: &mut Rng, n: usize) -> Vec<u8> {
    let keys = words(2, 60, 3, 10);
    let vals = words(3, 800, 2, 12);
    let mut out = Vec::with_capacity(n + 200);
    out.extend_from_slice(b"[\n");
    while out.len() < n {
        out.extend_from_slice(b"  {");
        for k in 0..3 + rng.below(8) {
            if k > 0 {
                out.extend_from_slice(b", ");
            }
            out.push(b'"');
            out.extend_from_slice(&keys[rng.skewed(60) as usize]);
            out.extend_from_slice(b"\": ");
            match rng.below(4) {
                0 => {
                    out.extend_from_slice(rng.skewed(1000).to_string().as_bytes());
                }
                1 => out.extend_from_slice(if rng.below(2) == 0 { b"true" } else { b"false" }),
                _ => {
                    out.push(b'"');
                    out.extend_from_slice(&vals[rng.skewed(800) as usize]);
                    if rng.below(3) == 0 {
                        out.push(b'/');
                        out.extend_from_slice(&vals[rng.skewed(800) as usize]);
                    }
                    out.push(b'"');
                }
            }
        }
        out.extend_from_slice(b"},\n");
    }
    out.truncate(n);
    out
}
pub fn script(rng: &mut Rng, n: usize) -> Vec<u8> {
    let ids = words(4, 700, 3, 12);
    const KW: [&[u8]; 12] = [
        b"function ",
        b"return ",
        b"const ",
        b"let ",
        b"if (",
        b"else ",
        b"this.",
        b"=== ",
        b"=> ",
        b"await ",
        b"new ",
        b"typeof ",
    ];
    let mut out = Vec::with_capacity(n + 200);
    let mut depth = 0usize;
    while out.len() < n {
        for _ in 0..depth.min(6) {
            out.extend_from_slice(b"  ");
        }
        for _ in 0..1 + rng.below(6) {
            if rng.below(3) == 0 {
                out.extend_from_slice(KW[rng.skewed(12) as usize]);
            }
            out.extend_from_slice(&ids[rng.skewed(700) as usize]);
            out.extend_from_slice(match rng.below(6) {
                0 => b"(",
                1 => b") ",
                2 => b", ",
                3 => b".",
                4 => b" = ",
                _ => b" ",
            });
            if rng.below(10) == 0 {
                out.extend_from_slice(rng.below(1000).to_string().as_bytes());
            }
        }
        match rng.below(5) {
            0 => {
                out.extend_from_slice(b"{\n");
                depth += 1;
            }
            1 if depth > 0 => {
                out.extend_from_slice(b"}\n");
                depth -= 1;
            }
            _ => out.extend_from_slice(b";\n"),
        }
    }
    out.truncate(n);
    out
}
pub fn xml(rng: &mut Rng, n: usize) -> Vec<u8> {
    let tags = words(5, 120, 3, 9);
    let text = words(1, 3000, 2, 8);
    let mut out = Vec::with_capacity(n + 200);
    out.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<doc>\n");
    while out.len() < n {
        let t = &tags[rng.skewed(120) as usize];
        let a = &tags[rng.skewed(120) as usize];
        out.extend_from_slice(b"  <");
        out.extend_from_slice(t);
        out.push(b' ');
        out.extend_from_slice(a);
        out.extend_from_slice(b"=\"");
        out.extend_from_slice(rng.below(5000).to_string().as_bytes());
        out.extend_from_slice(b"\">");
        for _ in 0..rng.below(12) {
            out.extend_from_slice(&text[rng.skewed(3000) as usize]);
            out.push(b' ');
        }
        out.extend_from_slice(b"</");
        out.extend_from_slice(t);
        out.extend_from_slice(b">\n");
    }
    out.truncate(n);
    out
}
/// Shared-library-like bytes: instruction streams over a fixed opcode vocabulary with
/// local displacements, string and symbol tables, alignment padding.
pub fn machine_code(rng: &mut Rng, n: usize) -> Vec<u8> {
    use std::sync::OnceLock;
    type Pieces = Vec<Vec<u8>>;
    static CODE: OnceLock<(Pieces, Pieces)> = OnceLock::new();
    let (ops, prologues) = CODE.get_or_init(|| {
        let mut vr = Rng::new(6);
        let ops = (0..400)
            .map(|_| {
                let len = 1 + vr.skewed(4) as usize;
                (0..len).map(|_| vr.next() as u8).collect()
            })
            .collect();
        let prologues = (0..12)
            .map(|_| {
                let len = 4 + vr.below(8) as usize;
                (0..len).map(|_| vr.next() as u8).collect()
            })
            .collect();
        (ops, prologues)
    });
    let names = words(7, 1500, 3, 10);
    let mut out = Vec::with_capacity(n + 4096);
    let mut symval: u64 = 0x1000;
    while out.len() < n {
        match rng.below(20) {
            0..=13 => {
                // A function.
                out.extend_from_slice(&prologues[rng.skewed(12) as usize]);
                let base = rng.next() as u32;
                for _ in 0..10 + rng.below(120) {
                    if rng.below(6) == 0 && out.len() > 4096 {
                        // An idiom seen recently (register saves, calls through the PLT, loops).
                        let len = 6 + rng.below(28) as usize;
                        let from = out.len() - 64 - rng.below(4000) as usize;
                        for k in 0..len {
                            let b = out[from + k];
                            out.push(b);
                        }
                        continue;
                    }
                    out.extend_from_slice(&ops[rng.skewed(400) as usize]);
                    match rng.below(10) {
                        0..=2 => {}
                        3..=5 => out.push((rng.skewed(64) as u8) << 2),
                        6..=7 => out.extend_from_slice(
                            &(base.wrapping_add(rng.below(4096) as u32 * 8)).to_le_bytes(),
                        ),
                        8 if rng.below(3) == 0 => {
                            out.extend_from_slice(&(rng.next() as u32).to_le_bytes())
                        }
                        _ => out.push(rng.below(16) as u8),
                    }
                }
                out.push(0xc3);
                while out.len() % 16 != 0 {
                    out.push(0xcc);
                }
            }
            14..=15 => {
                // Strings.
                for _ in 0..4 + rng.below(30) {
                    for p in 0..1 + rng.below(4) {
                        if p > 0 {
                            out.extend_from_slice(b"::");
                        }
                        out.extend_from_slice(&names[rng.skewed(1500) as usize]);
                    }
                    out.push(0);
                }
            }
            16..=17 => {
                // Symbols: Elf64_Sym-like records.
                for _ in 0..8 + rng.below(40) {
                    out.extend_from_slice(&(rng.below(1 << 20) as u32).to_le_bytes());
                    out.push([0x12u8, 0x11, 0x22, 0x10][rng.skewed(4) as usize]);
                    out.push(0);
                    out.extend_from_slice(
                        &[12u16, 14, 0, 23][rng.skewed(4) as usize].to_le_bytes(),
                    );
                    symval += 16 + rng.below(512) * 16;
                    out.extend_from_slice(&symval.to_le_bytes());
                    out.extend_from_slice(&(rng.skewed(2048)).to_le_bytes());
                }
            }
            18 => {
                let k = 64 + rng.below(2048) as usize;
                out.resize(out.len() + k, 0);
            }
            _ => {
                for _ in 0..8 + rng.below(64) {
                    out.extend_from_slice(&(0x40_0000u64 + rng.below(1 << 22) * 8).to_le_bytes());
                }
            }
        }
    }
    out.truncate(n);
    out
}

/// base64 of random bytes, in 76-column lines (a source map, an embedded font or image).
pub fn base64_text(rng: &mut Rng, n: usize) -> Vec<u8> {
    const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(n + 80);
    while out.len() < n {
        for _ in 0..19 {
            let v = rng.next();
            for k in 0..4 {
                out.push(DIGITS[((v >> (k * 6)) & 63) as usize]);
            }
        }
        out.push(b'\n');
    }
    out.truncate(n);
    out
}

/// Random bytes (an already compressed asset: png, woff2, zip, nupkg).
pub fn random(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    rng.fill(&mut out, n);
    out
}

/// One kind of content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Machine code (`.so`, `.dll`).
    Binary,
    /// Documentation.
    Prose,
    /// JSON.
    Json,
    /// JavaScript.
    Script,
    /// XML.
    Xml,
    /// base64.
    Base64,
    /// Compressed assets.
    Random,
}

impl Kind {
    /// Content of this kind.
    pub fn make(self, rng: &mut Rng, n: usize) -> Vec<u8> {
        match self {
            Kind::Binary => machine_code(rng, n),
            Kind::Prose => prose(rng, n),
            Kind::Json => json(rng, n),
            Kind::Script => script(rng, n),
            Kind::Xml => xml(rng, n),
            Kind::Base64 => base64_text(rng, n),
            Kind::Random => random(rng, n),
        }
    }
    fn extension(self) -> &'static str {
        match self {
            Kind::Binary => "dll",
            Kind::Prose => "md",
            Kind::Json => "json",
            Kind::Script => "js",
            Kind::Xml => "xml",
            Kind::Base64 => "map",
            Kind::Random => "png",
        }
    }
}

/// An app's publish folder of about `total` bytes, from `seed`: 55% shared-library-like
/// binaries (50 KiB to 16 MiB), 28% documents, JSON, JavaScript and XML (1 to 512 KiB), 7%
/// base64 text, 10% compressed assets. Returns the bytes written.
pub fn app_tree(root: &Path, total: u64, seed: u64) -> io::Result<u64> {
    let mut rng = Rng::new(seed);
    let plan: [(Kind, u64, &str, u64, u64); 7] = [
        (Kind::Binary, 55, "bin", 50 << 10, 16 << 20),
        (Kind::Prose, 8, "docs", 1 << 10, 256 << 10),
        (Kind::Json, 7, "config", 1 << 10, 512 << 10),
        (Kind::Script, 8, "wwwroot/js", 2 << 10, 512 << 10),
        (Kind::Xml, 5, "doc-xml", 1 << 10, 512 << 10),
        (Kind::Base64, 7, "wwwroot/maps", 4 << 10, 1 << 20),
        (Kind::Random, 10, "wwwroot/assets", 4 << 10, 2 << 20),
    ];
    let mut written = 0;
    for (kind, percent, dir, min, max) in plan {
        let budget = total * percent / 100;
        let max = max.min((budget / 4).max(min));
        let mut done = 0;
        let mut i = 0;
        while done < budget {
            // Log-uniform sizes: many small files, a few large ones.
            let span = (max as f64 / min as f64).ln();
            let size =
                (min as f64 * (span * rng.below(1 << 20) as f64 / f64::from(1 << 20)).exp()) as u64;
            let size = size.clamp(1, budget - done);
            let sub = root.join(dir).join(format!("pkg{:03}", i / 50));
            fs::create_dir_all(&sub)?;
            let name = sub.join(format!("file{i:05}.{}", kind.extension()));
            fs::write(&name, kind.make(&mut rng, size as usize))?;
            done += size;
            i += 1;
        }
        written += done;
    }
    Ok(written)
}

/// Random files of 1 to 16 MiB, about `total` bytes.
pub fn random_tree(root: &Path, total: u64, seed: u64) -> io::Result<u64> {
    let mut rng = Rng::new(seed);
    fs::create_dir_all(root)?;
    let mut done = 0;
    let mut i = 0;
    while done < total {
        let size = ((1 << 20) + rng.below(15 << 20)).min(total - done);
        fs::write(
            root.join(format!("blob{i:05}.bin")),
            random(&mut rng, size as usize),
        )?;
        done += size;
        i += 1;
    }
    Ok(done)
}

/// `files` small files (100 bytes to 8 KiB of JavaScript, JSON and prose) in a
/// `node_modules`-like tree: 100 files per directory, two levels.
pub fn small_tree(root: &Path, files: usize, seed: u64) -> io::Result<u64> {
    let mut rng = Rng::new(seed);
    let mut done = 0;
    for i in 0..files {
        let dir = root
            .join(format!("node_modules/pkg{:04}", i / 1000))
            .join(format!("lib{:02}", (i / 100) % 10));
        if i % 100 == 0 {
            fs::create_dir_all(&dir)?;
        }
        let size = 100 + rng.skewed(8 << 10) as usize;
        let (kind, ext) = match i % 4 {
            0 => (Kind::Json, "json"),
            1 => (Kind::Prose, "md"),
            _ => (Kind::Script, "js"),
        };
        fs::write(
            dir.join(format!("f{i:06}.{ext}")),
            kind.make(&mut rng, size),
        )?;
        done += size as u64;
    }
    Ok(done)
}
