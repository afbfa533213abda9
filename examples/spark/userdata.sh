#!/bin/bash
# EC2 USERDATA for Spark nodes (EKS node group or Karpenter EC2NodeClass): install mount-s3 and
# mount the bucket holding the job JARs at /mnt/s3, shared by every pod on the node (hostPath).
# Adapted from the "Mountpoint S3 for Spark Workloads" guide (approach 2.1); the mount line is
# the guide's, flag for flag.
#
# Environment (all optional; USERDATA usually edits the defaults below instead):
#   S3_BUCKET_NAME        bucket to mount
#   MOUNT_POINT           where                              (default /mnt/s3)
#   CACHE_DIR             local cache directory              (default /tmp/mountpoint-cache)
#   MOUNT_S3              the binary                         (default /usr/local/bin/mount-s3)
#   MOUNT_S3_URL          where to download it from when missing (your artifact store)
#   MOUNT_S3_CACHE_ARGS   the guide's cache flags; set it empty to mount without a cache
#   MOUNT_S3_EXTRA_ARGS   more flags, e.g. --endpoint-url for an S3-compatible store
set -e

S3_BUCKET_NAME="${S3_BUCKET_NAME:-my-spark-jars-bucket}"
MOUNT_POINT="${MOUNT_POINT:-/mnt/s3}"
CACHE_DIR="${CACHE_DIR:-/tmp/mountpoint-cache}"
MOUNT_S3="${MOUNT_S3:-/usr/local/bin/mount-s3}"
if [ -z "${MOUNT_S3_CACHE_ARGS+set}" ]; then
    MOUNT_S3_CACHE_ARGS="--metadata-ttl indefinite --cache $CACHE_DIR"
fi

# Install FUSE and mount-s3 unless the AMI already has them.
if [ ! -x "$MOUNT_S3" ]; then
    if command -v yum >/dev/null 2>&1; then
        yum install -y fuse3 curl
    else
        apt-get update && apt-get install -y fuse3 curl
    fi
    curl -fsSL --retry 3 -o "$MOUNT_S3" "${MOUNT_S3_URL:?set MOUNT_S3_URL to a mount-s3 binary}"
    chmod 755 "$MOUNT_S3"
fi

# Create mount point
mkdir -p "$MOUNT_POINT"

# Mount the S3 bucket with caching (JARs are immutable: metadata never expires).
# shellcheck disable=SC2086 # flag lists are split into words on purpose
"$MOUNT_S3" \
    --allow-other \
    $MOUNT_S3_CACHE_ARGS \
    $MOUNT_S3_EXTRA_ARGS \
    "$S3_BUCKET_NAME" "$MOUNT_POINT"

# Verify mount
mount | grep "$MOUNT_POINT"
