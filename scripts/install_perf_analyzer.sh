#!/usr/bin/env bash
# Install NVIDIA perf_analyzer (PyPI `perf-analyzer`, built for glibc >= 2.38) into a cache folder that
# `tts-bench --engine perf_analyzer` finds: $TTSREC_PERF_ANALYZER_DIR, default <repo>/.cache/perf_analyzer.
# glibc >= 2.38: plain pip into that folder. Older glibc (Debian 12): Debian 13's own loader and libraries,
# unpacked into the folder with a private apt configuration (the system is not touched), and a wrapper
# `bin/perf_analyzer` that runs the binary through that loader.
# Idempotent (a finished install is kept) and never fails the build: without network it says so and exits 0,
# and the agreement test then skips with that reason.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${TTSREC_PERF_ANALYZER_DIR:-$ROOT/.cache/perf_analyzer}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
VERSION="${PERF_ANALYZER_VERSION:-2.60.0}"
WRAPPER="$DEST/bin/perf_analyzer"

if [ -x "$WRAPPER" ] && "$WRAPPER" --version >/dev/null 2>&1; then
    echo "perf_analyzer: already installed in $DEST"
    exit 0
fi
skip() { echo "perf_analyzer: not installed ($1); the agreement test will skip" >&2; rm -rf "$TMP"; exit 0; }
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tts-pa-install.XXXXXX")"
mkdir -p "$DEST/bin"

glibc="$(getconf GNU_LIBC_VERSION | awk '{print $2}')"
if [ "$(printf '%s\n2.38\n' "$glibc" | sort -V | head -1)" = "2.38" ]; then
    "$PY" -m pip install --quiet --no-deps --target "$DEST/wheel" "perf-analyzer==$VERSION" || skip "pip failed"
    ln -sf "$DEST/wheel/perf_analyzer/bin/perf_analyzer" "$WRAPPER"
else
    # Private apt: its own sources list, state and cache, same mirror as the machine's.
    mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
        2>/dev/null | grep -v '^[[:space:]]*#' | grep -oE 'https?://[^ ]+/debian/?$|https?://[^ ]+/debian/? ' \
        | grep -v -e security -e snapshot | head -1 | tr -d ' ')"
    mirror="${mirror:-http://deb.debian.org/debian}"
    mkdir -p "$TMP/apt/state/lists/partial" "$TMP/apt/cache/archives/partial" "$TMP/debs"
    : > "$TMP/apt/status"
    echo "deb [trusted=yes] $mirror trixie main" > "$TMP/apt/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$TMP/apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State=$TMP/apt/state" -o "Dir::State::status=$TMP/apt/status" -o "Dir::Cache=$TMP/apt/cache" -o "Debug::NoLocking=1"
        -o "APT::Sandbox::User=$(id -un)")
    apt-get "${apt_opts[@]}" -qq update >/dev/null 2>&1 || skip "apt-get update of trixie failed (offline?)"
    (cd "$TMP/debs" && apt-get "${apt_opts[@]}" -qq download libc6/trixie libstdc++6/trixie libgcc-s1/trixie \
        >"$TMP/apt.log" 2>&1) || { cat "$TMP/apt.log"; skip "apt-get download failed"; }
    rm -rf "$DEST/root" && mkdir -p "$DEST/root"
    for deb in "$TMP"/debs/*.deb; do dpkg-deb -x "$deb" "$DEST/root" || skip "dpkg-deb failed"; done
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_38_x86_64 \
        -d "$TMP/wheel" "perf-analyzer==$VERSION" || skip "pip download failed"
    rm -rf "$DEST/wheel" && "$PY" -m zipfile -e "$TMP"/wheel/*.whl "$DEST/wheel" || skip "unzip failed"
    chmod +x "$DEST/wheel/perf_analyzer/bin/perf_analyzer"
    lib="$DEST/root/usr/lib/x86_64-linux-gnu"
    cat > "$WRAPPER" <<WRAP
#!/bin/sh
# perf_analyzer $VERSION through Debian 13's loader (installed by scripts/install_perf_analyzer.sh)
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib:/lib/x86_64-linux-gnu" \\
    "$DEST/wheel/perf_analyzer/bin/perf_analyzer" "\$@"
WRAP
    chmod +x "$WRAPPER"
fi
rm -rf "$TMP"
if "$WRAPPER" --version >/dev/null 2>&1; then
    echo "perf_analyzer: installed in $DEST"
else
    skip "the installed binary does not run"
fi
