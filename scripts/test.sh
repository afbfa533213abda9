#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what the tests need, then runs
# formatting and lint checks and every test (unit, core, client conformance, real FUSE mounts).
# Needs root (real mounts) and /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every process the tests start talks to 127.0.0.1 only; make sure nothing reaches for IMDS.
export AWS_EC2_METADATA_DISABLED=true
export CARGO_TERM_COLOR=never

need_apt=()
command -v fusermount3 >/dev/null 2>&1 || need_apt+=(fuse3)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
# Ordinary tools the end-to-end tests run on mounts (--posix-metadata, --allow-modify).
command -v rsync >/dev/null 2>&1 || need_apt+=(rsync)
command -v git >/dev/null 2>&1 || need_apt+=(git)
command -v tar >/dev/null 2>&1 || need_apt+=(tar)
command -v sqlite3 >/dev/null 2>&1 || need_apt+=(sqlite3)
# s3fs reads back what --posix-metadata wrote (interoperability test).
command -v s3fs >/dev/null 2>&1 || need_apt+=(s3fs)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "== installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
if ! python3 -c 'import moto, sys; v = tuple(int(x) for x in moto.__version__.split(".")[:3]); sys.exit(v < (5, 2, 5))' 2>/dev/null; then
    echo "== installing moto (second S3 conformance backend)"
    python3 -m pip install --quiet 'moto[server]>=5.2.5' || python3 -m pip install --quiet --break-system-packages 'moto[server]>=5.2.5'
fi
if [ ! -e /dev/fuse ]; then
    echo "error: /dev/fuse is missing; the end-to-end tests need FUSE (modprobe fuse)" >&2
    exit 1
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --all-targets
