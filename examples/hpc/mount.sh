#!/bin/bash
# mount.sh BUCKET PATH [OPTIONS]
#
# Cluster bootstrap step (e.g. an AWS ParallelCluster OnNodeConfigured action): mounts BUCKET at
# PATH on this node now and at every boot, through one systemd service per bucket and path,
# as the HPC recipe for Mountpoint for Amazon S3 does. Run it once per bucket.
#
#   OPTIONS  flags for mount-s3, one string (default: "--allow-root --read-only --debug";
#            e.g. "--no-sign-request --allow-root --debug" for a public bucket)
#
# Environment (all optional):
#   MOUNT_S3    the mount-s3 binary              (default /usr/local/bin/mount-s3)
#   MOUNT_USER  user the mount belongs to        (default: ec2-user, ubuntu, rocky or centos,
#                                                 whichever exists, else root)
#   UNIT_DIR    where the unit is written        (default /etc/systemd/system)
#
# Prints the service name, mountpoint-s3-<8 hex digits of a hash of bucket and path>.service.
set -euo pipefail

usage="usage: mount.sh BUCKET PATH [OPTIONS]"
BUCKET="${1:?$usage}"
MOUNT_PATH="${2:?$usage}"
OPTIONS="${3:---allow-root --read-only --debug}"
MOUNT_S3="${MOUNT_S3:-/usr/local/bin/mount-s3}"
UNIT_DIR="${UNIT_DIR:-/etc/systemd/system}"

if [ -z "${MOUNT_USER:-}" ]; then
    MOUNT_USER=root
    for candidate in ec2-user ubuntu rocky centos; do
        if id -u "$candidate" >/dev/null 2>&1; then
            MOUNT_USER="$candidate"
            break
        fi
    done
fi
MOUNT_GROUP="$(id -gn "$MOUNT_USER")"

if [ ! -x "$MOUNT_S3" ]; then
    echo "mount.sh: $MOUNT_S3 is missing; install mount-s3 first (scripts/install.sh)" >&2
    exit 1
fi

# A non-root mount shared with root (--allow-root/--allow-other) needs user_allow_other.
if [ "$MOUNT_USER" != root ]; then
    case " $OPTIONS " in
        *" --allow-root "* | *" --allow-other "*)
            grep -qs '^user_allow_other' /etc/fuse.conf || echo user_allow_other >> /etc/fuse.conf ;;
    esac
fi

mkdir -p "$MOUNT_PATH"
chown "$MOUNT_USER:$MOUNT_GROUP" "$MOUNT_PATH"

hash="$(printf '%s\n%s' "$BUCKET" "$MOUNT_PATH" | sha256sum | cut -c1-8)"
unit="mountpoint-s3-$hash.service"
mkdir -p "$UNIT_DIR"
cat > "$UNIT_DIR/$unit" <<UNIT
[Unit]
Description=Mount s3://$BUCKET at $MOUNT_PATH
Wants=network-online.target
After=network-online.target
AssertPathIsDirectory=$MOUNT_PATH

[Service]
Type=forking
User=$MOUNT_USER
Group=$MOUNT_GROUP
ExecStart=$MOUNT_S3 $OPTIONS $BUCKET $MOUNT_PATH
# "+": as root, since only root can clear a mount left behind by a crashed daemon.
ExecStopPost=-+/bin/umount -l $MOUNT_PATH
Restart=on-failure
RestartSec=10

[Install]
WantedBy=multi-user.target
UNIT

systemctl daemon-reload
systemctl enable --now "$unit"
echo "$unit"
