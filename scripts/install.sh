#!/usr/bin/env bash
# Installs mount-s3: the binary, the mount(8) helper link (so fstab entries and
# `mount -t mount-s3` work) and the systemd unit template mount-s3@.service.
#
#   scripts/install.sh [--prefix DIR] [--destdir DIR] [--binary FILE] [--no-systemd]
#
#   --prefix DIR    install the binary as DIR/bin/mount-s3            (default /usr/local)
#   --sbindir DIR   where mount(8) looks for helpers                  (default /sbin)
#   --destdir DIR   stage everything under DIR (for packaging); nothing outside DIR is touched
#   --binary FILE   install this binary instead of building one with `cargo build --release`
#   --no-systemd    skip the systemd unit
#
# Installs: PREFIX/bin/mount-s3, SBINDIR/mount.mount-s3 -> PREFIX/bin/mount-s3,
# /etc/systemd/system/mount-s3@.service (ExecStart pointing at the installed binary).
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
sbindir=/sbin
destdir=
binary=
systemd=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --sbindir) sbindir="$2"; shift 2 ;;
        --destdir) destdir="$2"; shift 2 ;;
        --binary) binary="$2"; shift 2 ;;
        --no-systemd) systemd=no; shift ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

if [ -z "$binary" ]; then
    cargo build --release --locked --bin mount-s3
    binary="${CARGO_TARGET_DIR:-target}/release/mount-s3"
fi
if [ ! -x "$binary" ]; then
    echo "install.sh: $binary is not an executable" >&2
    exit 1
fi

bin="$prefix/bin/mount-s3"
install -D -m 755 "$binary" "$destdir$bin"
echo "installed $destdir$bin"

# mount -t mount-s3 (and fstab type mount-s3) runs SBINDIR/mount.mount-s3.
mkdir -p "$destdir$sbindir"
ln -sfn "$bin" "$destdir$sbindir/mount.mount-s3"
echo "linked $destdir$sbindir/mount.mount-s3 -> $bin"

if [ "$systemd" = yes ]; then
    unit="$destdir/etc/systemd/system/mount-s3@.service"
    mkdir -p "$(dirname "$unit")"
    sed "s|/usr/local/bin/mount-s3|$bin|g" examples/systemd/mount-s3@.service > "$unit"
    chmod 644 "$unit"
    echo "installed $unit"
    if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
fi

if [ -z "$destdir" ]; then
    "$bin" --version
    command -v fusermount3 >/dev/null 2>&1 || echo "note: install FUSE 3 (package fuse3) for non-root mounts and --auto-unmount"
fi
