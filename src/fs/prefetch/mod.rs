//! The prefetcher: per open handle, concurrent ranged GETs ahead of a sequential reader, within
//! one shared memory budget and one cap on GETs in flight.
//!
//! Data flow: [`crate::fs::read::FileReader::read`] asks the handle's [`stream::Stream`] (under a
//! short lock, never held across a network wait) which [`part::Part`]s cover the read, issuing
//! the GETs the [`policy`] asks for; each part is a spawned task streaming one ranged GET (with
//! `If-Match`) into memory reserved from the [`MemoryBudget`] before the request was sent. The
//! read then waits on its parts without the lock and copies its bytes out by offset, so it can only
//! ever return the bytes at `offset..offset+len`, whatever order reads and parts complete in.
//!
//! Numbers (defaults): a stream starts with one 1.125 MiB GET (nothing else on the first read,
//! for the fastest first byte); further GETs end on 8 MiB (`--read-part-size`) boundaries and are
//! issued while the stream ends less than a *window* past the reader. The window starts at
//! 1.125 MiB and doubles each time the reader had to wait for data after reading half a window,
//! up to 128 MiB (so one reader keeps ~16 GETs in flight; a reader slower than the network keeps
//! one part ahead); it halves when the budget refuses a speculative part. 1 MiB behind the reader
//! is kept for out-of-order and backward reads; reads up to 1 MiB before or after the stream join
//! it; anything else restarts cheaply. Two far seeks in a row switch the handle to random mode:
//! each read fetches only itself rounded up to 256 KiB, until 1.125 MiB are read sequentially.
//!
//! Guarantees: every part is checked for the opened ETag and object size and for its exact
//! length; a failed part fails the reads that need its missing bytes (EIO, or ESTALE when the
//! object changed) and drops the stream, so the next read starts afresh. Memory: speculative
//! parts only take what the shared budget has; a read that cannot get its request sheds its own
//! stream and takes at most its guaranteed floor (the first request size), so it always
//! progresses and the total never exceeds the budget plus one floor per handle. At most
//! `max_concurrent_requests` (64) GETs are in flight across all handles.

pub(crate) mod part;
pub mod policy;
pub(crate) mod stream;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::fs::FsConfig;
use crate::fs::memory::MemoryBudget;

use crate::client::ETag;

/// Identity of the object version a handle reads (defined here, below the reader, so the
/// prefetcher needs nothing from `read.rs`).
#[derive(Clone, Debug)]
pub struct ObjectVersion {
    pub key: String,
    pub etag: ETag,
    pub size: u64,
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Tuning of the prefetcher. See the module notes for what each number does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefetchConfig {
    /// Ranged GETs after a stream's first end on multiples of this (`--read-part-size`).
    pub part_size: u64,
    /// First request of a stream; also each handle's guaranteed memory floor.
    pub first_request_size: u64,
    /// Cap on a handle's window.
    pub max_window: u64,
    /// Bytes kept behind the furthest read, for out-of-order and backward reads.
    pub retain_behind: u64,
    /// A read at most this far before the stream fills the gap instead of restarting.
    pub back_tolerance: u64,
    /// A read at most this far past the stream's end extends it instead of restarting.
    pub forward_tolerance: u64,
    /// Smallest request in random mode.
    pub random_request_size: u64,
    /// Far seeks in a row that switch a handle to random mode.
    pub random_after_seeks: u32,
    /// Bytes read sequentially that switch a handle back to sequential mode.
    pub sequential_run: u64,
    /// GETs in flight at once, across all handles.
    pub max_concurrent_requests: usize,
    /// A handle with no read for this long gives its data back when memory runs short.
    pub idle_after: Duration,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        PrefetchConfig {
            part_size: 8 * MIB,
            first_request_size: MIB + 128 * KIB,
            max_window: 128 * MIB,
            retain_behind: MIB,
            back_tolerance: MIB,
            forward_tolerance: MIB,
            random_request_size: 256 * KIB,
            random_after_seeks: 2,
            sequential_run: MIB + 128 * KIB,
            max_concurrent_requests: 64,
            idle_after: Duration::from_secs(1),
        }
    }
}

impl PrefetchConfig {
    /// Smallest part size used, whatever `--read-part-size` says: smaller GETs would cost more in
    /// requests than they could save in memory.
    pub const MIN_PART_SIZE: u64 = 64 * KIB;

    /// The prefetch settings of a file-system configuration; the rest are defaults.
    pub fn from_fs_config(fs: &FsConfig) -> Self {
        PrefetchConfig {
            part_size: fs.read_part_size.max(Self::MIN_PART_SIZE),
            max_window: fs.max_prefetch_window,
            max_concurrent_requests: fs.max_concurrent_requests.max(1),
            ..PrefetchConfig::default()
        }
    }

    /// What each handle may always hold, budget or not, and the largest piece a read is served in.
    pub fn floor(&self) -> u64 {
        self.first_request_size.max(1)
    }
}

/// What all handles of a file system share: settings, the memory budget, the cap on GETs in flight.
pub struct Prefetcher {
    config: PrefetchConfig,
    budget: MemoryBudget,
    requests: Arc<Semaphore>,
}

impl std::fmt::Debug for Prefetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetcher").field("config", &self.config).field("budget", &self.budget).finish()
    }
}

impl Prefetcher {
    /// A prefetcher drawing on `budget`.
    pub fn new(config: PrefetchConfig, budget: MemoryBudget) -> Arc<Self> {
        let requests = Arc::new(Semaphore::new(config.max_concurrent_requests.max(1)));
        Arc::new(Prefetcher { config, budget, requests })
    }

    /// The settings in force.
    pub fn config(&self) -> &PrefetchConfig {
        &self.config
    }

    /// The memory budget all handles share.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Permits for GETs in flight.
    pub(crate) fn requests(&self) -> &Arc<Semaphore> {
        &self.requests
    }
}

#[cfg(test)]
mod tests;
