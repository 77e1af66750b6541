//! Parsing a 10,000-line Dockerfile: `cargo bench --bench parse`.
//!
//! Prints the median and best time of parse, of parse + check, and of parse + check + expand
//! over many runs. The file mixes what real Dockerfiles hold: stages, continuation lines,
//! heredocs, JSON forms, flags, ENV/LABEL pairs and `$` references.

use std::time::{Duration, Instant};
use wcbuild::image::Platform;
use wcbuild::ops::dockerfile::{Source, check, expand};
use wcbuild::plan::PlanOptions;

fn dockerfile(lines: usize) -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1\nARG BASE=debian:12\n");
    let mut stage = 0;
    while s.lines().count() < lines {
        s.push_str(&format!("FROM ${{BASE}} AS stage{stage}\n"));
        s.push_str(
            "ARG VERSION=1.2.3\nENV APP_HOME=/opt/app PATH=/opt/app/bin:$PATH LANG=C.UTF-8\n",
        );
        s.push_str("LABEL org.opencontainers.image.version=\"$VERSION\" maintainer=\"team <t@example.com>\"\n");
        s.push_str("RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\\n    apt-get update && \\\n    # comment inside\n    apt-get install -y curl ca-certificates && \\\n    rm -rf /var/lib/apt/lists/*\n");
        s.push_str("WORKDIR $APP_HOME/src\n");
        s.push_str("COPY --chown=1000:1000 --chmod=755 [\"src dir/\", \"./\"]\n");
        s.push_str("COPY <<EOF /etc/app.conf\nname=${VERSION}\nmode=release\nEOF\n");
        s.push_str("RUN <<-SCRIPT\n\tset -e\n\techo building $VERSION\n\tmake -j2\n\tSCRIPT\n");
        s.push_str("EXPOSE 8080/tcp 8443\nHEALTHCHECK --interval=30s --timeout=3s CMD [\"curl\", \"-f\", \"http://localhost:8080/\"]\n");
        s.push_str("USER 1000:1000\nENTRYPOINT [\"/opt/app/bin/app\"]\nCMD [\"--serve\"]\n");
        if stage > 0 {
            s.push_str(&format!(
                "COPY --from=stage{} /opt/app/bin/ /opt/app/bin/\n",
                stage - 1
            ));
        }
        stage += 1;
    }
    s
}

fn time<F: FnMut()>(runs: usize, mut f: F) -> (Duration, Duration) {
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    t.sort();
    (t[t.len() / 2], t[0])
}

fn main() {
    let text = dockerfile(10_000);
    let lines = text.lines().count();
    let src = Source {
        name: "bench".into(),
        path: None,
        bytes: text.into_bytes(),
    };
    let opts = PlanOptions {
        build_args: Default::default(),
        target_platform: Platform::parse("linux/amd64").unwrap(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
        target: None,
        images: Default::default(),
    };
    let df = wcbuild::dockerfile::parse(&src.bytes, "bench").unwrap();
    println!(
        "input: {lines} lines, {} bytes, {} instructions",
        src.bytes.len(),
        df.instructions.len()
    );
    let runs = 50;
    let (med, best) = time(runs, || {
        std::hint::black_box(wcbuild::dockerfile::parse(&src.bytes, "bench").unwrap());
    });
    println!(
        "parse                  median {:>8.2} ms   best {:>8.2} ms",
        ms(med),
        ms(best)
    );
    let (med, best) = time(runs, || {
        std::hint::black_box(check(&src, &opts).unwrap());
    });
    println!(
        "parse+check+plan       median {:>8.2} ms   best {:>8.2} ms",
        ms(med),
        ms(best)
    );
    let (med, best) = time(runs, || {
        std::hint::black_box(expand(&src, &opts).unwrap());
    });
    println!(
        "parse+check+expand     median {:>8.2} ms   best {:>8.2} ms",
        ms(med),
        ms(best)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
