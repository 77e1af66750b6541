//! The Dockerfiles real projects write, built by wcbuild and by Debian's `docker build` (its
//! engine's BuildKit, started by the test on a private socket, no network), compared where
//! users look: the config (`docker image inspect`) and the final root file system (`docker
//! export` of a container of each image: every path's kind, mode, owner, size, content and
//! link target; times left out). Each image is loaded into the same engine, so Docker also
//! proves it reads ours.
//!
//! The bases are the busybox fixture and an image Docker itself builds from it (users, groups,
//! directories, a symlinked directory), saved by Docker and loaded into wcbuild's store, so
//! both builders start from the same bytes.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

mod common;

/// One Dockerfile and its context.
struct Case {
    name: &'static str,
    dockerfile: &'static str,
    /// Context files: `path` → content; `link:T` is a symlink to T, `exec:C` a 0755 file,
    /// `hard:T` a hard link to the earlier context file T, `dir:` an empty directory, `tar:a=1;b/c=2` a tar of those files, `tgz:…` the same
    /// gzipped.
    files: &'static [(&'static str, &'static str)],
    /// Extra `build` flags for both builders.
    flags: &'static [&'static str],
    /// Paths only Docker's image has, because Debian's engine embeds an older BuildKit (0.8)
    /// that leaves the directories it made for `RUN --mount` targets in the layer; current
    /// BuildKit removes them (its mount-stub cleaner), as wcbuild does.
    stubs: &'static [&'static str],
}

const B: &str = "wcbuild.local/busybox:latest";

fn cases() -> Vec<Case> {
    let std_files: &[(&str, &str)] = &[
        ("a.txt", "a\n"),
        ("b.txt", "bb\n"),
        ("package.json", "{\"name\":\"app\"}\n"),
        ("src/main.c", "int main(){}\n"),
        ("src/util.c", "int u;\n"),
        ("src/inc/util.h", "extern int u;\n"),
        ("src/README.md", "docs\n"),
        ("run.sh", "exec:#!/bin/sh\necho run\n"),
    ];
    let c = |name, dockerfile, flags| Case {
        name,
        dockerfile,
        files: std_files,
        flags,
        stubs: &[],
    };
    let m = |name, dockerfile, stubs| Case {
        name,
        dockerfile,
        files: std_files,
        flags: &[],
        stubs,
    };
    let f = |name, dockerfile, files| Case {
        name,
        dockerfile,
        files,
        flags: &[],
        stubs: &[],
    };
    vec![
        c(
            "workdir-copy-file-dot",
            "FROM B\nWORKDIR /app\nCOPY package.json .\n",
            &[],
        ),
        c("workdir-copy-all", "FROM B\nWORKDIR /app\nCOPY . .\n", &[]),
        c(
            "workdir-copy-dot-slash",
            "FROM B\nWORKDIR /app\nCOPY package.json ./\nCOPY src ./src\n",
            &[],
        ),
        c(
            "workdir-relative-dest",
            "FROM B\nWORKDIR /app\nCOPY a.txt conf/\nCOPY b.txt conf/b2.txt\n",
            &[],
        ),
        c(
            "copy-file-into-existing-dir",
            "FROM B\nCOPY a.txt /etc\n",
            &[],
        ),
        c(
            "copy-file-rename",
            "FROM B\nCOPY a.txt /opt/renamed.txt\n",
            &[],
        ),
        c(
            "copy-two-files-into-dir",
            "FROM B\nCOPY a.txt b.txt /dest/\n",
            &[],
        ),
        c(
            "copy-two-files-no-slash",
            "FROM B\nCOPY a.txt b.txt /dest\n",
            &[],
        ),
        c(
            "copy-wildcard-into-missing-dir",
            "FROM B\nCOPY *.txt /out/\n",
            &[],
        ),
        c("copy-wildcard-no-slash", "FROM B\nCOPY *.txt /out\n", &[]),
        c(
            "copy-wildcard-matching-nothing",
            "FROM B\nCOPY *.nothing /out/\nCOPY a.txt /\n",
            &[],
        ),
        c(
            "copy-nested-wildcard",
            "FROM B\nCOPY src/*.c /build/\n",
            &[],
        ),
        c("copy-dir-contents", "FROM B\nCOPY src /app/src\n", &[]),
        c("copy-dir-trailing-slash", "FROM B\nCOPY src/ /app/\n", &[]),
        c("copy-dir-into-existing-dir", "FROM B\nCOPY src /etc\n", &[]),
        c(
            "copy-file-and-dir-to-dir",
            "FROM B\nCOPY a.txt src /mixed/\n",
            &[],
        ),
        c("copy-a-b-dir", "FROM B\nCOPY a.txt b.txt dir/\n", &[]),
        c(
            "copy-chown-numeric",
            "FROM B\nCOPY --chown=1000:1000 a.txt src /home/app/\n",
            &[],
        ),
        c(
            "copy-chown-names",
            "FROM base:users\nCOPY --chown=app:app a.txt /srv/\n",
            &[],
        ),
        c(
            "copy-chown-user-only",
            "FROM base:users\nCOPY --chown=app src /srv/src\n",
            &[],
        ),
        c(
            "copy-chown-with-user",
            "FROM base:users\nUSER app\nWORKDIR /home/app\nCOPY --chown=app:staff . .\n",
            &[],
        ),
        c(
            "user-then-copy-keeps-root",
            "FROM base:users\nUSER app\nCOPY a.txt /tmp/\n",
            &[],
        ),
        c(
            "copy-chmod",
            "FROM B\nCOPY --chmod=0755 a.txt /usr/local/bin/\nCOPY --chmod=600 src /secret/\n",
            &[],
        ),
        c(
            "copy-exec-bit-kept",
            "FROM B\nCOPY run.sh /usr/local/bin/\n",
            &[],
        ),
        c(
            "copy-into-symlinked-dir",
            "FROM base:users\nCOPY a.txt /www\nCOPY b.txt /www/\n",
            &[],
        ),
        c(
            "copy-into-existing-dir-of-base",
            "FROM base:users\nCOPY a.txt /etc/nginx\n",
            &[],
        ),
        c(
            "copy-over-base-file",
            "FROM base:users\nCOPY a.txt /etc/nginx/nginx.conf\n",
            &[],
        ),
        c(
            "env-ordering",
            "FROM B\nENV A=1 B=2\nENV C=$A$B A=3\nENV D=\"$A $C\"\n",
            &[],
        ),
        c("env-path-prepend", "FROM B\nENV PATH=/opt/bin:$PATH\n", &[]),
        c("env-legacy-form", "FROM B\nENV GREETING hello world\n", &[]),
        c(
            "env-in-copy-dest",
            "FROM B\nENV DEST=/opt/app\nCOPY a.txt $DEST/\nWORKDIR $DEST\n",
            &[],
        ),
        c(
            "expose-ranges",
            "FROM B\nEXPOSE 8000-8002/tcp 53/udp 80\n",
            &[],
        ),
        c(
            "expose-upper-proto",
            "FROM B\nEXPOSE 443/TCP 9000-9001\n",
            &[],
        ),
        c(
            "arg-default-and-override",
            "FROM B\nARG V=1\nARG W=x\nENV V=$V W=$W\n",
            &["--build-arg", "V=2"],
        ),
        c(
            "arg-global-in-from",
            "ARG BASE=wcbuild.local/busybox:latest\nFROM ${BASE}\nARG BASE\nENV BASE=$BASE\n",
            &[],
        ),
        c(
            "label-multiple",
            "FROM B\nLABEL a=1 b=\"two words\" \"c d\"=e\nLABEL a=override\n",
            &[],
        ),
        c("cmd-shell-form", "FROM B\nCMD echo hi\n", &[]),
        c(
            "entrypoint-and-cmd",
            "FROM B\nENTRYPOINT [\"sh\", \"-c\"]\nCMD [\"echo hi\"]\n",
            &[],
        ),
        c(
            "entrypoint-resets-cmd",
            "FROM base:users\nENTRYPOINT [\"/bin/sh\"]\n",
            &[],
        ),
        c(
            "shell-changed",
            "FROM B\nSHELL [\"/bin/sh\", \"-ec\"]\nCMD echo hi\nENTRYPOINT exec sh\n",
            &[],
        ),
        c(
            "volume-stopsignal-healthcheck",
            "FROM B\nVOLUME /data /logs\nSTOPSIGNAL SIGTERM\nHEALTHCHECK --interval=30s --timeout=5s --retries=2 CMD wget -q localhost\n",
            &[],
        ),
        c(
            "workdir-relative-chain",
            "FROM B\nWORKDIR /a\nWORKDIR b\nWORKDIR ../c\nWORKDIR /\n",
            &[],
        ),
        c(
            "workdir-from-env",
            "FROM B\nENV D=/srv\nWORKDIR $D/app\nCOPY a.txt ./\n",
            &[],
        ),
        c(
            "from-scratch",
            "FROM scratch\nCOPY a.txt /\nCOPY src /src\n",
            &[],
        ),
        c(
            "onbuild-recorded",
            "FROM B\nONBUILD COPY a.txt /onbuild/\nONBUILD ENV X=1\n",
            &[],
        ),
        c(
            "multistage-copy-from-name",
            "FROM B AS build\nWORKDIR /out\nCOPY src/ ./\nFROM scratch\nCOPY --from=build /out/ /app/\nCOPY --from=build /bin/busybox /bin/\n",
            &[],
        ),
        c(
            "multistage-copy-from-index",
            "FROM B\nCOPY a.txt /x/\nFROM B\nCOPY --from=0 /x/a.txt /y/\n",
            &[],
        ),
        c(
            "multistage-target",
            "FROM B AS base\nENV STAGE=base\nCOPY a.txt /\nFROM base AS test\nENV STAGE=test\nCOPY b.txt /\nFROM scratch AS final\nCOPY --from=base /a.txt /\n",
            &["--target", "test"],
        ),
        c(
            "copy-from-image",
            "FROM scratch\nCOPY --from=wcbuild.local/busybox:latest /bin/busybox /bin/sh\nCOPY --from=base:users /etc/passwd /etc/\n",
            &[],
        ),
        c(
            "run-shell-form",
            "FROM B\nRUN echo hi > /hi.txt && mkdir -p /opt/app/sub && touch /opt/app/x\n",
            &[],
        ),
        c(
            "run-json-form",
            "FROM B\nRUN [\"sh\", \"-c\", \"echo json > /json.txt\"]\n",
            &[],
        ),
        c(
            "run-shell-changed",
            "FROM B\nSHELL [\"/bin/sh\", \"-ec\"]\nRUN echo \"$0 $-\" > /shell.txt\n",
            &[],
        ),
        c(
            "run-env-and-args-visible",
            "FROM B\nARG A=1\nENV B=2\nARG C\nRUN echo \"$A $B $C $PATH\" > /env.txt && env | sort > /envlist.txt\n",
            &["--build-arg", "C=3"],
        ),
        c(
            "run-user-by-name",
            "FROM base:users\nUSER app\nRUN id -u > /tmp/id.txt && id -g >> /tmp/id.txt && touch /tmp/owned && echo $HOME > /tmp/home.txt\n",
            &[],
        ),
        c(
            "run-user-by-number",
            "FROM base:users\nUSER 1000:50\nRUN id -u > /tmp/id.txt && id -g >> /tmp/id.txt && touch /tmp/owned\nUSER 2000\nRUN id -u > /tmp/id2.txt && id -g >> /tmp/id2.txt\n",
            &[],
        ),
        c(
            "run-workdir",
            "FROM B\nWORKDIR /w\nRUN pwd > p.txt && touch rel\n",
            &[],
        ),
        c(
            "run-workdir-created-for-user",
            "FROM base:users\nUSER app\nWORKDIR /home/app/newdir\nRUN touch made-by-app\n",
            &[],
        ),
        c(
            "run-deletes-lower-files-and-dirs",
            "FROM base:users\nRUN rm /etc/nginx/nginx.conf && rm -rf /home/app\n",
            &[],
        ),
        c(
            "run-dir-replaced-by-file-and-back",
            "FROM base:users\nRUN rm -rf /srv && echo f > /srv\nRUN rm /srv && mkdir /srv && echo in > /srv/in\n",
            &[],
        ),
        c(
            "run-dir-emptied-and-refilled",
            "FROM base:users\nRUN rm -rf /etc/nginx && mkdir /etc/nginx && echo new > /etc/nginx/new.conf\n",
            &[],
        ),
        c(
            "run-hard-links",
            "FROM B\nRUN echo x > /h1 && ln /h1 /h2 && mkdir /d && ln /h1 /d/h3\n",
            &[],
        ),
        c(
            "run-symlinks",
            "FROM B\nRUN ln -s /etc/passwd /lnk && ln -s missing /dangling && ln -s /bin /bin2\n",
            &[],
        ),
        c(
            "run-setuid-and-modes",
            "FROM B\nRUN mkdir -p /usr/local/bin && cp /bin/busybox /usr/local/bin/su2 && chmod 4755 /usr/local/bin/su2 && mkdir -m 1777 /shared && chmod 2750 /shared\n",
            &[],
        ),
        c(
            "run-chmod-chown-lower",
            "FROM base:users\nRUN chmod 700 /srv && chown 1000:50 /etc/nginx/nginx.conf && touch /etc/passwd\n",
            &[],
        ),
        c("run-fails", "FROM B\nRUN echo before && exit 3\n", &[]),
        m(
            "run-mount-cache",
            "FROM B\nRUN --mount=type=cache,target=/cache echo hi > /cache/x && ls /cache > /listing\nRUN --mount=type=cache,target=/cache ls /cache > /listing2\n",
            &["cache"],
        ),
        m(
            "run-mount-bind-context",
            "FROM B\nRUN --mount=type=bind,source=src,target=/mnt cat /mnt/main.c > /copied.c && ls -R /mnt > /seen\n",
            &["mnt"],
        ),
        m(
            "run-mount-bind-rw-discarded",
            "FROM B\nRUN --mount=type=bind,source=src,target=/mnt,rw echo new > /mnt/new && ls /mnt > /seen\n",
            &["mnt"],
        ),
        m(
            "run-mount-tmpfs",
            "FROM B\nRUN --mount=type=tmpfs,target=/scratch echo x > /scratch/f && ls /scratch > /seen\n",
            &["scratch"],
        ),
        m(
            "run-mount-bind-from-stage",
            "FROM B AS build\nRUN mkdir /out && echo built > /out/b\nFROM B\nRUN --mount=type=bind,from=build,source=/out,target=/o cp /o/b /b\n",
            &["o"],
        ),
        m(
            "run-mount-into-existing-dir",
            "FROM base:users\nRUN --mount=type=bind,source=src,target=/srv/m ls /srv/m > /srv/seen\n",
            &["srv/m"],
        ),
        c(
            "run-then-copy-from-stage",
            "FROM B AS build\nWORKDIR /src\nCOPY src/ ./\nRUN mkdir -p /out && cat *.c > /out/all.c\nFROM scratch\nCOPY --from=build /out /\n",
            &[],
        ),
        c(
            "run-in-scratch-with-busybox",
            "FROM scratch\nCOPY --from=wcbuild.local/busybox:latest /bin/busybox /bin/sh\nRUN [\"/bin/sh\", \"-c\", \"echo made > /made\"]\n",
            &[],
        ),
        f(
            "add-tar-into-workdir",
            "FROM B\nWORKDIR /app\nADD files.tar .\n",
            &[("files.tar", "tar:bin/tool=#!/bin/sh;share/doc.txt=doc")],
        ),
        f(
            "add-tgz-and-plain",
            "FROM B\nADD files.tgz /opt/\nADD notes.txt /opt/notes/\n",
            &[("files.tgz", "tgz:x/y.txt=y;z.txt=z"), ("notes.txt", "n\n")],
        ),
        f(
            "dockerignore-exceptions",
            "FROM B\nCOPY . /ctx/\n",
            &[
                (".dockerignore", "*.md\n!README.md\nsecret/\n**/*.log\n"),
                ("README.md", "kept\n"),
                ("CHANGES.md", "dropped\n"),
                ("secret/key", "k\n"),
                ("logs/a.log", "l\n"),
                ("logs/keep.txt", "k\n"),
                ("app.py", "print(1)\n"),
            ],
        ),
        f(
            "dockerignore-directory-and-copy-of-it",
            "FROM B\nWORKDIR /app\nCOPY package.json ./\nCOPY . .\n",
            &[
                (".dockerignore", "node_modules\n.git\n"),
                ("package.json", "{}\n"),
                ("node_modules/x/index.js", "x\n"),
                (".git/HEAD", "ref\n"),
                ("index.js", "y\n"),
            ],
        ),
        f(
            "symlink-source-followed",
            "FROM B\nCOPY link.txt /x/\nCOPY tree/ /t/\n",
            &[
                ("target.txt", "t\n"),
                ("link.txt", "link:target.txt"),
                ("tree/real", "r\n"),
                ("tree/rel", "link:real"),
                ("tree/abs", "link:/etc/passwd"),
            ],
        ),
        f(
            "hard-links-kept",
            "FROM B\nCOPY tree/ /t/\nCOPY one two /single/\n",
            &[
                ("tree/a", "shared\n"),
                ("tree/b", "hard:tree/a"),
                ("tree/sub/c", "hard:tree/a"),
                ("one", "1\n"),
                ("two", "hard:one"),
            ],
        ),
        f(
            "empty-dir-and-nested",
            "FROM B\nCOPY empty /e/\nCOPY deep /d\n",
            &[("empty", "dir:"), ("deep/a/b/c.txt", "c\n")],
        ),
    ]
}

fn users_base_dockerfile() -> &'static str {
    "FROM wcbuild.local/busybox:latest\n\
     RUN echo 'app:x:1000:1000:app:/home/app:/bin/sh' >> /etc/passwd \
      && echo 'app:x:1000:' >> /etc/group && echo 'staff:x:50:app' >> /etc/group \
      && mkdir -p /home/app /srv /etc/nginx/conf.d /usr/local/bin \
      && chown 1000:1000 /home/app && echo 'user nginx;' > /etc/nginx/nginx.conf \
      && ln -s /srv /www\n"
}

fn write_context(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        if let Some(t) = content.strip_prefix("link:") {
            std::os::unix::fs::symlink(t, &p).unwrap();
        } else if let Some(t) = content.strip_prefix("hard:") {
            fs::hard_link(dir.join(t), &p).unwrap();
        } else if let Some(c) = content.strip_prefix("exec:") {
            fs::write(&p, c).unwrap();
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        } else if content.starts_with("dir:") {
            fs::create_dir_all(&p).unwrap();
        } else if let Some((gz, list)) = content
            .strip_prefix("tar:")
            .map(|l| (false, l))
            .or_else(|| content.strip_prefix("tgz:").map(|l| (true, l)))
        {
            let src =
                dir.with_extension(format!("tar-{}", p.file_name().unwrap().to_string_lossy()));
            for entry in list.split(';') {
                let (name, data) = entry.split_once('=').unwrap();
                let e = src.join(name);
                fs::create_dir_all(e.parent().unwrap()).unwrap();
                fs::write(e, data).unwrap();
            }
            let ok = Command::new("tar")
                .arg(if gz { "-czf" } else { "-cf" })
                .arg(&p)
                .arg("--owner=0")
                .arg("--group=0")
                .arg("-C")
                .arg(&src)
                .arg(".")
                .status()
                .unwrap()
                .success();
            assert!(ok);
            fs::remove_dir_all(&src).unwrap();
        } else {
            fs::write(&p, content).unwrap();
        }
    }
}

/// Every path of an image's final root file system: kind, mode, owner, size, content hash or
/// link target.
fn tree(d: &common::Dockerd, image: &str) -> BTreeMap<String, String> {
    let out = d.docker(&["create", image, "x"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = d.docker(&["export", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = d.docker(&["rm", &id]);
    let mut tar = wcbuild::layer::tar::TarReader::new(&out.stdout[..]);
    let mut map = BTreeMap::new();
    while let Some(e) = tar.next_entry().unwrap() {
        let h = e.header.clone();
        let path = h
            .path
            .trim_end_matches('/')
            .trim_start_matches("./")
            .to_string();
        // What the engine adds to every container alike.
        if path == ".dockerenv"
            || path.starts_with("dev")
            || path.starts_with("proc")
            || path.starts_with("sys")
            || matches!(
                path.as_str(),
                "etc/hostname" | "etc/hosts" | "etc/resolv.conf" | "etc/mtab"
            )
        {
            continue;
        }
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut tar.content(), &mut content).unwrap();
        use sha2::Digest as _;
        let sha = sha2::Sha256::digest(&content);
        let what = match h.kind {
            wcbuild::layer::tar::Kind::Symlink => format!("-> {}", h.link),
            wcbuild::layer::tar::Kind::Hardlink => format!("=> {}", h.link),
            wcbuild::layer::tar::Kind::File => format!(
                "{} {:02x}{:02x}{:02x}{:02x}",
                h.size, sha[0], sha[1], sha[2], sha[3]
            ),
            _ => String::new(),
        };
        map.insert(
            path,
            format!(
                "{:?} {:o} {}:{} {what}",
                h.kind,
                h.mode & 0o7777,
                h.uid,
                h.gid
            ),
        );
    }
    map
}

const CONFIG_FIELDS: [&str; 12] = [
    "Env",
    "Entrypoint",
    "Cmd",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "Shell",
    "OnBuild",
];

fn config(d: &common::Dockerd, image: &str) -> serde_json::Value {
    let out = d.docker(&["image", "inspect", image, "--format", "{{json .Config}}"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Builds every case of `chunk` with both builders and returns what differs.
fn compare(chunk: usize, of: usize) -> Vec<String> {
    let root = common::tempdir("vs-docker", &format!("chunk{chunk}"));
    let store = root.join("store");
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "busybox-static must be installed (./test.sh installs it)"
    );
    let base = root.join("busybox.tar");
    fs::write(
        &base,
        wcbuild::ops::fixtures::busybox_archive(busybox).unwrap(),
    )
    .unwrap();
    let (code, _, err) = common::wcbuild_at(&store, &["load", "-i", base.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let d = common::start_dockerd();
    let out = d.docker(&["load", "-i", base.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The second base, built and saved by Docker, loaded into wcbuild's store.
    let users = root.join("users-ctx");
    fs::create_dir_all(&users).unwrap();
    fs::write(users.join("Dockerfile"), users_base_dockerfile()).unwrap();
    let out = d.docker_env(
        &[
            "build",
            "--network",
            "none",
            "-q",
            "-t",
            "base:users",
            users.to_str().unwrap(),
        ],
        &[("DOCKER_BUILDKIT", "1")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = root.join("users.tar");
    let out = d.docker(&["save", "-o", saved.to_str().unwrap(), "base:users"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _, err) = common::wcbuild_at(&store, &["load", "-i", saved.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");

    let mut problems = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        if i % of != chunk {
            continue;
        }
        let ctx = root.join(case.name);
        fs::create_dir_all(&ctx).unwrap();
        write_context(&ctx, case.files);
        fs::write(
            ctx.join("Dockerfile"),
            case.dockerfile.replace("FROM B", &format!("FROM {B}")),
        )
        .unwrap();
        let ours_tar = root.join(format!("{}.tar", case.name));
        let mut args = vec!["build", "-q", "-t", "ours:x"];
        args.extend_from_slice(case.flags);
        let output = format!("type=docker,dest={}", ours_tar.display());
        args.extend_from_slice(&["--output", &output, ctx.to_str().unwrap()]);
        let (code, _, err) = common::wcbuild_at(&store, &args);
        let mut dargs = vec!["build", "--network", "none", "-q", "-t", "docker:x"];
        dargs.extend_from_slice(case.flags);
        dargs.push(ctx.to_str().unwrap());
        let out = d.docker_env(&dargs, &[("DOCKER_BUILDKIT", "1")]);
        let docker_ok = out.status.success();
        if code != 0 || !docker_ok {
            if (code == 0) != docker_ok {
                problems.push(format!(
                    "{}: wcbuild exit {code} ({}), docker build {} ({})",
                    case.name,
                    err.trim(),
                    if docker_ok { "succeeded" } else { "failed" },
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            continue;
        }
        let out = d.docker(&["load", "-i", ours_tar.to_str().unwrap()]);
        if !out.status.success() {
            problems.push(format!(
                "{}: docker load of ours: {}",
                case.name,
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let (a, b) = (config(&d, "ours:x"), config(&d, "docker:x"));
        for field in CONFIG_FIELDS {
            if a[field] != b[field] {
                problems.push(format!(
                    "{}: config {field}: ours {} docker {}",
                    case.name, a[field], b[field]
                ));
            }
        }
        let (ta, mut tb) = (tree(&d, "ours:x"), tree(&d, "docker:x"));
        for stub in case.stubs {
            // The old engine's mount stub: it must be there (an empty directory), and nowhere
            // in ours.
            match tb.remove(*stub) {
                Some(v) if v.starts_with("Dir ") => {}
                other => problems.push(format!(
                    "{}: expected Docker's stub directory /{stub}, found {other:?}",
                    case.name
                )),
            }
            if ta.contains_key(*stub) {
                problems.push(format!("{}: /{stub}: a mount stub left in ours", case.name));
            }
        }
        for (p, v) in &tb {
            match ta.get(p) {
                Some(w) if w == v => {}
                Some(w) => problems.push(format!("{}: /{p}: ours {w}, docker {v}", case.name)),
                None => problems.push(format!("{}: /{p}: missing in ours (docker {v})", case.name)),
            }
        }
        for (p, w) in &ta {
            if !tb.contains_key(p) {
                problems.push(format!("{}: /{p}: only in ours ({w})", case.name));
            }
        }
        let _ = d.docker(&["rmi", "ours:x", "docker:x"]);
    }
    problems
}

fn check(chunk: usize) {
    let problems = compare(chunk, 3);
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn at_least_forty_dockerfiles_in_the_table() {
    assert!(cases().len() >= 40, "{}", cases().len());
    let mut names: Vec<&str> = cases().iter().map(|c| c.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), cases().len(), "case names are unique");
}

#[test]
fn same_config_and_root_fs_as_docker_build_part_1() {
    check(0);
}

#[test]
fn same_config_and_root_fs_as_docker_build_part_2() {
    check(1);
}

#[test]
fn same_config_and_root_fs_as_docker_build_part_3() {
    check(2);
}
