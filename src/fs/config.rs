//! Settings of the file-system core, filled from the command line by `cli`.

use std::time::Duration;

/// How long metadata learned from S3 may be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataTtl {
    /// Always revalidate with S3 (the kernel still caches for [`FsConfig::file_kernel_ttl`] /
    /// [`FsConfig::dir_kernel_ttl`]).
    Minimal,
    /// Trust for this long.
    Duration(Duration),
    /// Trust forever (stored as 100 years, as Mountpoint does).
    Indefinite,
}

impl MetadataTtl {
    /// 100 years, Mountpoint's "indefinite".
    pub const INDEFINITE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

    /// The TTL as a duration; `Minimal` is zero.
    pub fn as_duration(&self) -> Duration {
        match self {
            MetadataTtl::Minimal => Duration::ZERO,
            MetadataTtl::Duration(d) => *d,
            MetadataTtl::Indefinite => Self::INDEFINITE,
        }
    }
}

/// Default of `--rename-dir-limit`: a directory of up to this many objects is renamed in one
/// call (about as long as `mv` of that many small files would take on a local disk over a
/// slow link); larger ones get EXDEV and `mv` copies them file by file instead.
pub const DEFAULT_RENAME_DIR_LIMIT: usize = 1000;

/// Configuration of [`crate::fs::S3Filesystem`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsConfig {
    /// Key prefix of the mount, empty or ending in `/`.
    pub prefix: String,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits of directories (<= 0o777).
    pub dir_mode: u16,
    /// Permission bits of files (<= 0o777).
    pub file_mode: u16,
    pub read_only: bool,
    pub allow_delete: bool,
    pub allow_overwrite: bool,
    /// `--allow-modify`: existing files may be opened for writing without `O_TRUNC`, appended to
    /// and truncated; they are staged locally (`fs::staging`) and uploaded whole.
    pub allow_modify: bool,
    /// Rename by copy + delete on general-purpose buckets (`--allow-rename`).
    pub allow_rename: bool,
    /// Most objects one directory rename may copy (`--rename-dir-limit`); beyond it, EXDEV.
    pub rename_dir_limit: usize,
    /// Largest object copied with one CopyObject (rename, `--posix-metadata` changes); larger
    /// ones are copied in UploadPartCopy parts of `copy_part_size`. S3's limit, 5 GiB; smaller
    /// only in tests (`UNSTABLE_MOUNTPOINT_COPY_PART_SIZE` sets both).
    pub single_copy_limit: u64,
    /// Part size of a multipart copy (512 MiB).
    pub copy_part_size: u64,
    pub metadata_ttl: MetadataTtl,
    pub negative_metadata_ttl: MetadataTtl,
    /// Kernel attribute/entry TTL for files under `Minimal` (Mountpoint: 100 ms).
    pub file_kernel_ttl: Duration,
    /// Kernel attribute/entry TTL for directories under `Minimal` (Mountpoint: 1 s).
    pub dir_kernel_ttl: Duration,
    /// Size of ranged GETs (`--read-part-size`).
    pub read_part_size: u64,
    /// Size of multipart-upload parts (`--write-part-size`).
    pub write_part_size: u64,
    /// Page size of readdir listings (S3 maximum 1000).
    pub list_page_size: u32,
    /// Multipart-upload parts in flight per file being written.
    pub max_parts_in_flight: usize,
    /// Send CRC32C checksums with uploads and check S3's answer (`--upload-checksums`).
    pub upload_checksums: bool,
    /// Storage class of new objects (`--storage-class`); `None`: the bucket's default.
    pub storage_class: Option<String>,
    /// Server-side encryption of new objects (`--sse`).
    pub sse: Option<String>,
    /// KMS key of new objects (`--sse-kms-key-id`).
    pub sse_kms_key_id: Option<String>,
    /// Content-Type of new objects from their extension (`--infer-content-type`).
    pub infer_content_type: bool,
    /// `--posix-metadata`: modes, owners, times and symlinks kept in user metadata
    /// ([`crate::fs::posix`]). Off: every object shows the mount's defaults, as Mountpoint.
    pub posix_metadata: bool,
    /// `--memory-target`, in bytes: the memory budget for read and write buffers. `None`: decided
    /// at mount time (Mountpoint uses 95% of system or cgroup memory, at least 512 MiB).
    pub memory_target: Option<u64>,
    /// Cap on one handle's prefetch window, in bytes (Mountpoint: 2 GiB; ours is small so one
    /// sequential reader stays well under 256 MiB of memory while keeping ~16 GETs in flight).
    pub max_prefetch_window: u64,
    /// Ranged GETs in flight at once, across all handles (to be derived from
    /// `--maximum-throughput-gbps`).
    pub max_concurrent_requests: usize,
    /// The bucket is an S3 Express One Zone directory bucket (`--bucket-type`, else its name):
    /// listings come in no particular order, and RenameObject and appends exist.
    pub directory_bucket: bool,
    /// `--incremental-upload` (directory buckets only): files are written as appends
    /// (PutObject with a write offset), existing ones from their end ([`crate::fs::upload::append`]).
    pub incremental_upload: bool,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            prefix: String::new(),
            uid: 0,
            gid: 0,
            dir_mode: 0o755,
            file_mode: 0o644,
            read_only: false,
            allow_delete: false,
            allow_overwrite: false,
            allow_modify: false,
            allow_rename: false,
            rename_dir_limit: DEFAULT_RENAME_DIR_LIMIT,
            single_copy_limit: crate::client::MAX_COPY_OBJECT_SIZE,
            copy_part_size: crate::fs::posix::ops::COPY_PART_SIZE,
            metadata_ttl: MetadataTtl::Minimal,
            negative_metadata_ttl: MetadataTtl::Minimal,
            file_kernel_ttl: Duration::from_millis(100),
            dir_kernel_ttl: Duration::from_millis(1000),
            read_part_size: 8 * 1024 * 1024,
            write_part_size: 8 * 1024 * 1024,
            list_page_size: 1000,
            memory_target: None,
            max_parts_in_flight: 4,
            upload_checksums: true,
            storage_class: None,
            sse: None,
            sse_kms_key_id: None,
            infer_content_type: false,
            posix_metadata: false,
            max_prefetch_window: 128 * 1024 * 1024,
            max_concurrent_requests: 64,
            directory_bucket: false,
            incremental_upload: false,
        }
    }
}
