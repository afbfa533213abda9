//! [`MemoryBudget`]: one budget for every data buffer the file system holds (prefetch windows
//! and upload part buffers), so the daemon's memory is bounded by construction.
//!
//! Numbers: `--memory-target` defaults to 95% of the machine's memory or of the cgroup limit,
//! whichever is lower, and at least 512 MiB ([`default_memory_target`]). Of the target,
//! max(128 MiB, target / 8) is kept back for everything that is not a data buffer (code, metadata,
//! the runtime, the S3 client), as Mountpoint does; the rest is the budget ([`MemoryBudget::for_target`]).
//!
//! How it is used: every buffer is backed by a [`Reservation`], an RAII guard that gives its bytes
//! back when dropped (or piecewise with [`Reservation::release`]). A [`MemoryBudget::try_reserve`]
//! never exceeds the budget. A [`Consumer`] (one per open file handle) additionally has a small
//! guaranteed *floor*: it may always hold up to `floor` bytes even when the budget is exhausted, so
//! a reader always gets at least its minimal request and can never deadlock waiting for memory.
//! Hence the guarantee, checked by [`MemoryBudget::peak`] in tests:
//!
//! > reserved <= limit + sum over live consumers of min(held, floor) <= limit + consumers * floor
//!
//! Writers have no floor: each open writer holds one part buffer for its whole life, its
//! *ticket*, reserved within the limit when it opens ([`MemoryBudget::admit_writer`]). Its other
//! parts take shared memory while they upload, and when there is none the ticket itself goes
//! with the part and the writer waits for that part to reach S3, which needs nothing from anyone
//! else: a writer never waits on memory another writer or reader holds, so writers cannot
//! deadlock, and writers never take the budget past its limit. Opening waits for memory held
//! only for a while (parts uploading, prefetched data, which idle readers give back) but not for
//! tickets, which only a close gives back: when the tickets of open writers leave no room for one
//! more part, the open fails at once (ENOMEM) instead of waiting for an application that may be
//! the one waiting.
//!
//! When a reservation fails, callers shrink what they ask for and may ask idle holders to give
//! memory back ([`MemoryBudget::reclaim_idle`] calls every registered [`Reclaim`]er); waiters can
//! sleep until bytes are released ([`MemoryBudget::released`]). Reads get slower, the process does
//! not grow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

const MIB: u64 = 1024 * 1024;
/// Smallest memory target accepted by default (Mountpoint: 512 MiB).
pub const MIN_MEMORY_TARGET: u64 = 512 * MIB;
/// Smallest share of the target kept back for non-buffer memory.
pub const MIN_OVERHEAD: u64 = 128 * MIB;

/// Memory kept back from `target` for everything that is not a data buffer: max(128 MiB, target / 8).
pub fn overhead_for(target: u64) -> u64 {
    MIN_OVERHEAD.max(target / 8)
}

/// The default `--memory-target`: 95% of total memory or of the cgroup limit, at least 512 MiB.
pub fn default_memory_target() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| parse_meminfo_total(&t));
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|t| parse_cgroup_limit(&t));
    default_target_from(total, cgroup)
}

/// [`default_memory_target`] from what the system reported (`None`: unknown or unlimited).
pub fn default_target_from(mem_total: Option<u64>, cgroup_limit: Option<u64>) -> u64 {
    let total = match (mem_total, cgroup_limit) {
        (Some(m), Some(c)) => m.min(c),
        (Some(v), None) | (None, Some(v)) => v,
        (None, None) => 0,
    };
    (total / 100 * 95).max(MIN_MEMORY_TARGET)
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// A cgroup v2 `memory.max`: a byte count, or `max` for no limit (`None`).
pub fn parse_cgroup_limit(memory_max: &str) -> Option<u64> {
    memory_max.trim().parse().ok()
}

/// Something holding reservations it could give back: asked to when the budget runs short.
pub trait Reclaim: Send + Sync {
    /// Drops what can be dropped without hurting active work (e.g. the prefetched data of a handle
    /// nobody has read for a while); returns the bytes released.
    fn reclaim(&self) -> u64;
}

struct Inner {
    limit: u64,
    reserved: AtomicU64,
    peak: AtomicU64,
    released: Notify,
    reclaimers: Mutex<Reclaimers>,
    /// Bytes promised to open writers (their tickets), at most `limit`.
    promised: AtomicU64,
}

#[derive(Default)]
struct Reclaimers {
    list: Vec<Weak<dyn Reclaim>>,
    /// Length after the last sweep of dead entries; sweeps happen when the list doubles.
    swept_len: usize,
}

impl Inner {
    fn grow(&self, bytes: u64) {
        let now = self.reserved.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.peak.fetch_max(now, Ordering::AcqRel);
    }

    fn try_grow(&self, bytes: u64) -> bool {
        let granted = self.reserved.fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
            r.checked_add(bytes).filter(|&total| total <= self.limit)
        });
        match granted {
            Ok(before) => {
                self.peak.fetch_max(before + bytes, Ordering::AcqRel);
                true
            }
            Err(_) => false,
        }
    }
}

/// The shared budget for data buffers. Cheap to clone (all clones share one budget).
#[derive(Clone)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limit", &self.limit())
            .field("reserved", &self.reserved())
            .field("peak", &self.peak())
            .finish()
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes for data buffers.
    pub fn new(limit: u64) -> Self {
        MemoryBudget {
            inner: Arc::new(Inner {
                limit,
                reserved: AtomicU64::new(0),
                peak: AtomicU64::new(0),
                released: Notify::new(),
                reclaimers: Mutex::default(),
                promised: AtomicU64::new(0),
            }),
        }
    }

    /// The budget for a process memory target: the target minus [`overhead_for`] it.
    pub fn for_target(target: u64) -> Self {
        Self::new(target.saturating_sub(overhead_for(target)))
    }

    /// Bytes the shared budget allows.
    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    /// Bytes reserved now (consumer floors included, so this may exceed [`Self::limit`]).
    pub fn reserved(&self) -> u64 {
        self.inner.reserved.load(Ordering::Acquire)
    }

    /// The most ever reserved at once.
    pub fn peak(&self) -> u64 {
        self.inner.peak.load(Ordering::Acquire)
    }

    /// Bytes a [`Self::try_reserve`] could get now.
    pub fn available(&self) -> u64 {
        self.limit().saturating_sub(self.reserved())
    }

    /// Reserves `bytes` if the budget has room; never exceeds the limit.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        self.inner.try_grow(bytes).then(|| Reservation { inner: self.inner.clone(), account: None, bytes })
    }

    /// A new consumer that may always hold up to `floor` bytes, budget or not.
    pub fn consumer(&self, floor: u64) -> Consumer {
        Consumer { budget: self.clone(), account: Arc::new(Account { floor, held: AtomicU64::new(0) }) }
    }

    /// Resolves when some bytes are released after it was enabled. To not miss a release, create
    /// and `enable()` it before the reservation attempt it waits to retry.
    pub fn released(&self) -> Notified<'_> {
        self.inner.released.notified()
    }

    /// Registers a holder to ask for memory back when the budget is short. Dead entries are dropped.
    pub fn register(&self, reclaimer: Weak<dyn Reclaim>) {
        let mut reclaimers = self.inner.reclaimers.lock().unwrap();
        if reclaimers.list.len() >= 2 * reclaimers.swept_len.max(32) {
            reclaimers.list.retain(|r| r.strong_count() > 0);
            reclaimers.swept_len = reclaimers.list.len();
        }
        reclaimers.list.push(reclaimer);
    }

    /// Asks every registered holder to give back what it can; returns the bytes released. Holders
    /// decide what is idle; a holder that is busy right now skips (so this never blocks on one).
    pub fn reclaim_idle(&self) -> u64 {
        let live: Vec<Arc<dyn Reclaim>> = {
            let mut reclaimers = self.inner.reclaimers.lock().unwrap();
            reclaimers.list.retain(|r| r.strong_count() > 0);
            reclaimers.swept_len = reclaimers.list.len();
            reclaimers.list.iter().filter_map(Weak::upgrade).collect()
        };
        live.iter().map(|r| r.reclaim()).sum()
    }
}

impl MemoryBudget {
    /// Bytes promised to open writers now.
    pub fn promised(&self) -> u64 {
        self.inner.promised.load(Ordering::Acquire)
    }

    /// Admits a writer only if its part can be reserved now (see [`Self::admit_writer`]).
    pub fn try_admit(&self, part: u64) -> Option<WriterTicket> {
        let promise = self.promise(part)?;
        let reservation = self.try_reserve(part)?;
        Some(WriterTicket { reservation, promise })
    }

    /// Promises `part` bytes to a writer if the promises made so far leave room.
    fn promise(&self, part: u64) -> Option<Promise> {
        let limit = self.limit();
        // A part larger than the whole budget (a huge --write-part-size) admits one writer at a time.
        let promised = self.inner.promised.fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
            p.checked_add(part).filter(|&total| total <= limit || p == 0)
        });
        promised.ok().map(|_| Promise { inner: self.inner.clone(), bytes: part })
    }

    /// Admits a writer with buffers of `part` bytes: promises it one part and reserves that part
    /// within the limit, waiting while the memory is held by work that ends by itself (parts in
    /// flight, prefetched data: idle readers are asked every `poll` to give theirs back). Returns
    /// `None` at once if the parts promised to open writers leave no room for one more.
    pub async fn admit_writer(&self, part: u64, poll: std::time::Duration) -> Option<WriterTicket> {
        let promise = self.promise(part)?;
        if part > self.limit() {
            // Alone (see `promise`): past the limit by construction, but never two of them.
            let reservation = self.consumer(part).reserve(part).await;
            return Some(WriterTicket { reservation, promise });
        }
        loop {
            let released = self.released();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(reservation) = self.try_reserve(part) {
                return Some(WriterTicket { reservation, promise });
            }
            if self.reclaim_idle() > 0 {
                continue;
            }
            let _ = tokio::time::timeout(poll, released).await;
        }
    }
}

/// A writer's own part buffer, reserved for as long as the writer is open.
#[derive(Debug)]
pub struct WriterTicket {
    /// The part's bytes: the writer's buffer, or a part in flight when memory is short.
    pub reservation: Reservation,
    /// The promise that keeps room for this ticket while the writer is open.
    pub promise: Promise,
}

/// Bytes promised to one writer; the promise ends when dropped.
pub struct Promise {
    inner: Arc<Inner>,
    bytes: u64,
}

impl std::fmt::Debug for Promise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Promise").field("bytes", &self.bytes).finish()
    }
}

impl Drop for Promise {
    fn drop(&mut self) {
        self.inner.promised.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

struct Account {
    floor: u64,
    held: AtomicU64,
}

/// One holder of reservations (an open file handle) with a guaranteed floor.
pub struct Consumer {
    budget: MemoryBudget,
    account: Arc<Account>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("floor", &self.floor()).field("held", &self.held()).finish()
    }
}

impl Consumer {
    /// The budget this consumer draws from.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Bytes this consumer may hold even when the budget is exhausted.
    pub fn floor(&self) -> u64 {
        self.account.floor
    }

    /// Bytes this consumer holds now.
    pub fn held(&self) -> u64 {
        self.account.held.load(Ordering::Acquire)
    }

    /// Reserves `bytes` from the shared budget only (for speculative work).
    pub fn try_reserve_shared(&self, bytes: u64) -> Option<Reservation> {
        if !self.budget.inner.try_grow(bytes) {
            return None;
        }
        self.account.held.fetch_add(bytes, Ordering::AcqRel);
        Some(self.reservation(bytes))
    }

    /// Reserves `bytes` from the shared budget, or else from this consumer's floor if what it holds
    /// plus `bytes` stays within the floor (for work a reader is waiting on).
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        if let Some(r) = self.try_reserve_shared(bytes) {
            return Some(r);
        }
        // Account first, then the total: the invariant's right-hand side never lags the total.
        let floor = self.account.floor;
        let within_floor = self
            .account
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| h.checked_add(bytes).filter(|&n| n <= floor));
        if within_floor.is_err() {
            return None;
        }
        self.budget.inner.grow(bytes);
        Some(self.reservation(bytes))
    }

    /// Reserves `bytes`, waiting for releases as long as needed. Completes as soon as the budget
    /// has room or this consumer's own holdings drop to `floor - bytes`; with `bytes <= floor` and
    /// holdings that are eventually released, it always completes.
    pub async fn reserve(&self, bytes: u64) -> Reservation {
        loop {
            let released = self.budget.released();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(r) = self.try_reserve(bytes) {
                return r;
            }
            released.await;
        }
    }

    fn reservation(&self, bytes: u64) -> Reservation {
        Reservation { inner: self.budget.inner.clone(), account: Some(self.account.clone()), bytes }
    }
}

/// Reserved bytes; given back when dropped.
#[must_use = "dropping a reservation releases its bytes at once"]
pub struct Reservation {
    inner: Arc<Inner>,
    account: Option<Arc<Account>>,
    bytes: u64,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation").field("bytes", &self.bytes).finish()
    }
}

impl Reservation {
    /// Bytes still held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Gives back `bytes` (at most what is held) early.
    pub fn release(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        if bytes == 0 {
            return;
        }
        self.bytes -= bytes;
        // Total first, then the account: the invariant's right-hand side never drops first.
        self.inner.reserved.fetch_sub(bytes, Ordering::AcqRel);
        if let Some(account) = &self.account {
            account.held.fetch_sub(bytes, Ordering::AcqRel);
        }
        self.inner.released.notify_waiters();
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn default_target_is_95_percent_of_the_smaller_limit_and_at_least_512_mib() {
        let gib = 1024 * MIB;
        assert_eq!(default_target_from(Some(16 * gib), None), 16 * gib / 100 * 95);
        assert_eq!(default_target_from(Some(16 * gib), Some(2 * gib)), 2 * gib / 100 * 95);
        assert_eq!(default_target_from(Some(256 * MIB), None), MIN_MEMORY_TARGET);
        assert_eq!(default_target_from(None, None), MIN_MEMORY_TARGET);
    }

    #[test]
    fn overhead_is_128_mib_or_an_eighth() {
        assert_eq!(overhead_for(512 * MIB), 128 * MIB);
        assert_eq!(overhead_for(4096 * MIB), 512 * MIB);
        assert_eq!(MemoryBudget::for_target(512 * MIB).limit(), 384 * MIB);
    }

    #[test]
    fn parses_meminfo_and_cgroup_files() {
        let meminfo = "MemTotal:       24567890 kB\nMemFree:         1234 kB\n";
        assert_eq!(parse_meminfo_total(meminfo), Some(24567890 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("1073741824\n"), Some(1 << 30));
    }

    #[test]
    fn try_reserve_never_exceeds_the_limit_and_releases_on_drop() {
        let b = MemoryBudget::new(100);
        let r1 = b.try_reserve(60).unwrap();
        assert!(b.try_reserve(41).is_none());
        let mut r2 = b.try_reserve(40).unwrap();
        assert_eq!((b.reserved(), b.available()), (100, 0));
        r2.release(15);
        assert_eq!((r2.bytes(), b.reserved()), (25, 85));
        drop(r1);
        drop(r2);
        assert_eq!((b.reserved(), b.peak()), (0, 100));
    }

    #[test]
    fn a_consumer_always_gets_its_floor_and_no_more() {
        let b = MemoryBudget::new(100);
        let hog = b.try_reserve(100).unwrap();
        let c = b.consumer(30);
        assert!(c.try_reserve_shared(1).is_none(), "the shared budget is gone");
        let r = c.try_reserve(20).unwrap();
        assert!(c.try_reserve(11).is_none(), "20 + 11 is over the floor");
        let r2 = c.try_reserve(10).unwrap();
        assert_eq!((c.held(), b.reserved(), b.peak()), (30, 130, 130));
        drop((r, r2, hog));
        assert_eq!((c.held(), b.reserved()), (0, 0));
        // With room in the budget, holdings are not limited by the floor.
        let big = c.try_reserve(90).unwrap();
        assert_eq!(c.held(), 90);
        drop(big);
    }

    #[tokio::test]
    async fn reserve_waits_for_a_release() {
        let b = MemoryBudget::new(10);
        let c = b.consumer(0);
        let hog = b.try_reserve(10).unwrap();
        let waiter = tokio::spawn(async move { c.reserve(5).await.bytes() });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(hog);
        assert_eq!(waiter.await.unwrap(), 5);
    }

    #[tokio::test]
    async fn writers_are_admitted_while_promises_fit_and_wait_for_transient_memory() {
        let b = MemoryBudget::new(100);
        let poll = std::time::Duration::from_millis(5);
        let t1 = b.admit_writer(40, poll).await.unwrap();
        let t2 = b.admit_writer(40, poll).await.unwrap();
        assert!(b.admit_writer(40, poll).await.is_none(), "80 promised: no room for 40 more");
        assert_eq!((b.promised(), b.reserved()), (80, 80));
        drop(t1);
        assert_eq!(b.promised(), 40);
        // Room is promised but held by a part in flight: admission waits for it.
        let in_flight = b.try_reserve(50).unwrap();
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.admit_writer(40, poll).await.map(|t| t.reservation.bytes()) }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(in_flight);
        assert_eq!(waiting.await.unwrap(), Some(40));
        assert!(b.peak() <= 100);
        drop(t2);
    }

    struct Holder {
        held: Mutex<Option<Reservation>>,
        busy: AtomicBool,
    }

    impl Reclaim for Holder {
        fn reclaim(&self) -> u64 {
            if self.busy.load(Ordering::Relaxed) {
                return 0;
            }
            self.held.lock().unwrap().take().map(|r| r.bytes()).unwrap_or(0)
        }
    }

    #[test]
    fn reclaim_asks_idle_holders_only() {
        let b = MemoryBudget::new(100);
        let idle = Arc::new(Holder { held: Mutex::new(b.try_reserve(40)), busy: AtomicBool::new(false) });
        let busy = Arc::new(Holder { held: Mutex::new(b.try_reserve(40)), busy: AtomicBool::new(true) });
        b.register(Arc::downgrade(&idle) as Weak<dyn Reclaim>);
        b.register(Arc::downgrade(&busy) as Weak<dyn Reclaim>);
        {
            let gone = Arc::new(Holder { held: Mutex::new(None), busy: AtomicBool::new(false) });
            b.register(Arc::downgrade(&gone) as Weak<dyn Reclaim>);
        }
        assert_eq!(b.reclaim_idle(), 40);
        assert_eq!(b.reserved(), 40);
        assert_eq!(b.inner.reclaimers.lock().unwrap().list.len(), 2, "dead holders are forgotten");
    }
}
