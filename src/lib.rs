//! mount-s3: mount an S3 bucket as a local file system.
//!
//! Layers, dependencies pointing down only: `cli` and `run` (process, composition root) ->
//! `fuse` (thin adapter over fuser) -> `fs` (the kernel-free core) -> `client` (the S3 boundary).
//! `src/fs/**` never imports fuser, aws-sdk-s3, aws-config or clap. Beside the layers: `metrics`
//! (counters every layer may write to), `escape` (how keys and S3 strings reach the log),
//! `logging`, `daemon`, `notify` (systemd readiness) and `supervisor` (the process that holds
//! the FUSE connection while workers serve it, and restarts them).

pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod escape;
pub mod fs;
pub mod fuse;
pub mod fuse_fd;
pub mod interrupt;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod run;
pub mod supervisor;
