#!/usr/bin/env bash
# Command 1: build, start a local S3 server with demo data on 127.0.0.1, mount it with the real
# mount-s3 binary, show it, unmount. `--keep` leaves it mounted until you press Enter.
# Needs root and /dev/fuse (FUSE mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
export AWS_EC2_METADATA_DISABLED=true
if [ ! -e /dev/fuse ]; then
    echo "error: /dev/fuse is missing; mount-s3 needs FUSE (modprobe fuse)" >&2
    exit 1
fi
cargo build --release --locked --bin mount-s3 --example demo
exec "${CARGO_TARGET_DIR:-target}/release/examples/demo" "$@"
