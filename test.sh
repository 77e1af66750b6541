#!/usr/bin/env bash
# Runs every check and test of wcbuild. Installs what the tests need first (Debian packages
# with apt-get, the Windows std for type-checking), so it works on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")"

# Variables that change what the tests mean: blessing rewrites golden files, a fuzz iteration
# count or an epoch from the caller's shell changes what is checked, a caller's Docker config
# would lend its credentials to the registry tests, a stall window changes the registry
# client's timeouts.
unset WCBUILD_BLESS WCBUILD_FUZZ_ITERATIONS SOURCE_DATE_EPOCH DOCKER_CONFIG WCBUILD_REGISTRY_STALL_SECS

# Debian packages the checks and tests use:
# - gcc-mingw-w64-x86-64-posix: C compiler for -sys crates when type-checking the Windows target
# - skopeo, umoci: real OCI tools that must read the store and our archives
# - busybox-static: the Linux base image fixture is made from /bin/busybox
# - docker.io: a real Docker engine (started by the tests on a private socket) loads and runs
#   what `wcbuild save --format docker` writes
# - pigz: the peer the layer benchmark measures against
# - docker-registry: a real registry (distribution 2.8) the pull/push tests start on loopback
# - apache2-utils (htpasswd), openssl: basic auth and TLS for those registries
# - python3-cryptography: the test token server signs its JWTs with it
# - chromium: the dedup HTML report is loaded and screenshotted headless
# - git: ADD of git repositories checks them out with it (the test serves one with git daemon)
# - runc (also pulled in by docker.io), crun: the OCI runtimes RUN steps use; crun is probed
#   and refused on hosts with hybrid cgroups, which the tests exercise
# - wine, wine64: run the Windows build's tests (.ci/wine/runner); mingw-w64-x86-64-dev has the
#   libwinpthread-1.dll they load
packages=(git gcc-mingw-w64-x86-64-posix mingw-w64-x86-64-dev wine wine64 skopeo umoci busybox-static docker.io runc crun pigz docker-registry apache2-utils openssl python3-cryptography chromium)
need_apt=()
for pkg in "${packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
    echo "==> installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

if ! rustup target list --installed | grep -qx x86_64-pc-windows-gnu; then
    echo "==> adding the x86_64-pc-windows-gnu target"
    rustup target add x86_64-pc-windows-gnu
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "==> cargo check --target x86_64-pc-windows-gnu"
cargo check --locked --all-targets --target x86_64-pc-windows-gnu
echo "==> Windows tests under Wine"
# The Windows build's unit tests and the integration tests that make sense on Windows, each
# test binary run by wine through .ci/wine/runner, in one fresh Wine prefix for the step.
# Tests that start Linux programs (tar, gzip, skopeo, chromium, docker, registries) are
# ignored there with their reason; tests/{build,layer,windows_import,registry,fixtures,
# hostile,vs_docker}.rs are unix-only files.
wine_prefix="$(mktemp -d "${TMPDIR:-/tmp}/wcbuild-wine.XXXXXX")"
trap 'WINEPREFIX="$wine_prefix" wineserver -k >/dev/null 2>&1 || true; rm -rf "$wine_prefix"' EXIT
wine_started=$SECONDS
WCBUILD_WINEPREFIX="$wine_prefix" CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$PWD/.ci/wine/runner" \
    cargo test --locked --no-fail-fast --target x86_64-pc-windows-gnu --lib --bins \
    --test compat --test dedup --test dockerfile --test hcs --test images --test store --test windows_host
echo "==> Windows tests under Wine took $((SECONDS - wine_started))s"

# The fuzz corpus (fuzz/corpus/<target>/) is replayed by tests/fuzz_replay.rs, a plain test
# on stable Rust; `cargo +nightly fuzz run <target>` in fuzz/ fuzzes further.
echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
    # nextest does not run doctests; run them first so the summary below is the last word
    cargo test --locked --doc --quiet
    cargo nextest run --locked --no-fail-fast
else
    cargo test --locked --no-fail-fast
fi
