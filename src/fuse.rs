//! The FUSE adapter: converts fuser's arguments, calls [`S3Filesystem`], replies.
//!
//! No behaviour lives here. A request is first polled once on the fuser thread that read it
//! (inside the runtime's context): one that can be answered at once (a read of prefetched bytes,
//! a cached attribute) is answered there, without a task, a wake-up of another thread or an
//! interrupt timer. Otherwise the same future becomes a task on the tokio runtime, which replies
//! when the core answers, so one slow S3 call never holds up other requests. Errors are logged once, here, with the errno the core
//! chose ([`FsError::errno`]). Every request is timed from dispatch to reply and counted in
//! [`Metrics`] under its operation name.

use std::ffi::OsStr;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use tracing::{debug, warn};

use crate::fs::namespace::InodeKind;
use crate::fs::{Attr, FsError, S3Filesystem, SetAttr};
use crate::interrupt;
use crate::metrics::{self, Metrics};

/// Kernel requests allowed in flight at once (Mountpoint: 64).
const MAX_BACKGROUND: u16 = 64;

/// The fuser [`Filesystem`] over an [`S3Filesystem`].
pub struct FuseAdapter {
    fs: Arc<S3Filesystem>,
    runtime: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    max_background: u16,
    congestion_threshold: u16,
}

impl FuseAdapter {
    /// An adapter running the core's futures on `runtime`, reporting to [`metrics::global`].
    pub fn new(fs: Arc<S3Filesystem>, runtime: tokio::runtime::Handle) -> Self {
        FuseAdapter {
            fs,
            runtime,
            metrics: metrics::global(),
            max_background: MAX_BACKGROUND,
            congestion_threshold: MAX_BACKGROUND * 3 / 4,
        }
    }

    /// The kernel's request queue limits (`UNSTABLE_MOUNTPOINT_MAX_BACKGROUND`, `..._CONGESTION_THRESHOLD`);
    /// `None` keeps the defaults (64, and 3/4 of max_background).
    pub fn with_kernel_queue(mut self, max_background: Option<u16>, congestion_threshold: Option<u16>) -> Self {
        (self.max_background, self.congestion_threshold) = kernel_queue(max_background, congestion_threshold);
        self
    }

    /// Runs `work` on the runtime; replies with its result through `ok`, or with its errno.
    fn spawn<T, R, F>(&self, op: &'static str, reply: R, work: F, ok: impl FnOnce(R, T) + Send + 'static)
    where
        T: Send + 'static,
        R: ErrorReply + Send + 'static,
        F: Future<Output = Result<T, FsError>> + Send + 'static,
    {
        self.spawn_interruptible(op, None, reply, work, ok);
    }

    /// [`FuseAdapter::spawn`] for work that may be abandoned at any await (lookup, getattr,
    /// open, read): once thread `tid`, the caller, has a signal pending that should interrupt
    /// it ([`interrupt::signalled`]), the reply is EINTR and `work` is dropped. A result that
    /// is ready wins over the signal.
    fn spawn_interruptible<T, R, F>(
        &self,
        op: &'static str,
        tid: Option<u32>,
        reply: R,
        work: F,
        ok: impl FnOnce(R, T) + Send + 'static,
    ) where
        T: Send + 'static,
        R: ErrorReply + Send + 'static,
        F: Future<Output = Result<T, FsError>> + Send + 'static,
    {
        let (metrics, started) = (self.metrics.clone(), Instant::now());
        answer_or_spawn(&self.runtime, work, tid, move |result| {
            metrics.fuse_request(op, started.elapsed(), result.is_ok());
            match result {
                Ok(value) => ok(reply, value),
                Err(e) => reply.error(errno_of(op, &e)),
            }
        });
    }
}

/// What we ask of the kernel at FUSE INIT. The supervisor ([`crate::supervisor`]) answers the
/// kernel's one INIT with it; a worker's session negotiates the same against a replayed INIT.
pub fn negotiate(config: &mut KernelConfig, max_background: u16, congestion_threshold: u16) {
    // readdirplus saves a lookup per entry; parallel dirops let lookups in one directory overlap.
    // Atomic O_TRUNC lets open() see O_TRUNC instead of a separate truncate (setattr size 0).
    for flag in [InitFlags::FUSE_DO_READDIRPLUS, InitFlags::FUSE_PARALLEL_DIROPS, InitFlags::FUSE_ATOMIC_O_TRUNC] {
        if config.add_capabilities(flag).is_err() {
            debug!("kernel does not offer {flag:?}");
        }
    }
    // Sequential reads then arrive as 1 MiB requests (with read_ahead_kb raised after mount).
    let _ = config.set_max_readahead(1024 * 1024);
    let _ = config.set_max_background(max_background);
    let _ = config.set_congestion_threshold(congestion_threshold);
}

/// The kernel queue limits `UNSTABLE_MOUNTPOINT_MAX_BACKGROUND` and `..._CONGESTION_THRESHOLD`
/// ask for (`None`: 64 and 3/4 of max_background).
pub fn kernel_queue(max_background: Option<u16>, congestion_threshold: Option<u16>) -> (u16, u16) {
    let max_background = max_background.unwrap_or(MAX_BACKGROUND);
    (max_background, congestion_threshold.unwrap_or(max_background / 4 * 3))
}

/// Polls `work` once on the calling thread (inside `runtime`'s context, which spawning parts and
/// timers need) and hands a ready result to `finish` right there. Otherwise the very same future,
/// still pinned in its box, becomes a task that finishes it (polled again with a real waker:
/// every future in the core re-registers its waker on each poll); with `tid`, that task gives
/// up with EINTR once the caller is signalled ([`interrupt::signalled`]).
fn answer_or_spawn<T, F>(
    runtime: &tokio::runtime::Handle,
    work: F,
    tid: Option<u32>,
    finish: impl FnOnce(Result<T, FsError>) + Send + 'static,
) where
    T: Send + 'static,
    F: Future<Output = Result<T, FsError>> + Send + 'static,
{
    let _context = runtime.enter();
    let mut work: Pin<Box<F>> = Box::pin(work);
    if let Poll::Ready(result) = work.as_mut().poll(&mut Context::from_waker(std::task::Waker::noop())) {
        return finish(result);
    }
    runtime.spawn(async move {
        let result = match tid {
            None => work.await,
            Some(tid) => tokio::select! {
                biased;
                result = work => result,
                () = interrupt::signalled(tid) => Err(FsError::Interrupted { tid }),
            },
        };
        finish(result);
    });
}

/// flush, fsync and release requests not yet answered. At shutdown the worker ends every upload
/// ([`S3Filesystem::shutdown`]) and then waits for this to reach zero ([`closes_answered`]):
/// an upload can complete a moment before the reply to the close() that waited for it is
/// written, and exiting in between would let the unmount abort that close (ECONNABORTED) even
/// though its data is safe in S3.
static CLOSES_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// The reply of a flush, fsync or release, counted in [`CLOSES_IN_FLIGHT`] until it is sent
/// (or dropped unsent).
struct CloseReply(Option<ReplyEmpty>);

impl CloseReply {
    fn new(reply: ReplyEmpty) -> Self {
        CLOSES_IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
        CloseReply(Some(reply))
    }

    fn ok(mut self) {
        self.0.take().expect("answered once").ok();
    }
}

impl ErrorReply for CloseReply {
    fn error(mut self, errno: Errno) {
        self.0.take().expect("answered once").error(errno);
    }
}

impl Drop for CloseReply {
    fn drop(&mut self) {
        CLOSES_IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits (up to `limit`) until every flush, fsync and release received so far is answered.
/// Returns whether they all were.
pub async fn closes_answered(limit: std::time::Duration) -> bool {
    let deadline = Instant::now() + limit;
    while CLOSES_IN_FLIGHT.load(Ordering::Acquire) > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    true
}

/// Logs a failed operation once and returns its errno.
fn errno_of(op: &str, e: &FsError) -> Errno {
    let errno = e.errno();
    if e.is_expected() {
        debug!("{op} failed with errno {errno}: {e}");
    } else {
        warn!("{op} failed with errno {errno}: {e}");
    }
    Errno::from_i32(errno)
}

/// Replies that can carry an errno.
pub trait ErrorReply {
    fn error(self, errno: Errno);
}

macro_rules! error_reply {
    ($($t:ty),*) => {$(
        impl ErrorReply for $t {
            fn error(self, errno: Errno) {
                <$t>::error(self, errno)
            }
        }
    )*};
}
error_reply!(ReplyEntry, ReplyAttr, ReplyData, ReplyOpen, ReplyEmpty, ReplyDirectoryPlus, ReplyWrite, ReplyCreate);

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.mtime,
        kind: match a.kind {
            InodeKind::File => FileType::RegularFile,
            InodeKind::Directory => FileType::Directory,
            InodeKind::Symlink => FileType::Symlink,
        },
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        negotiate(config, self.max_background, self.congestion_threshold);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (fs, name, tid) = (self.fs.clone(), name.to_owned(), Some(req.pid()));
        self.spawn_interruptible("lookup", tid, reply, async move { fs.lookup(parent.0, &name).await }, |reply, e| {
            reply.entry(&e.ttl, &file_attr(&e.attr), Generation(0))
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let (fs, tid) = (self.fs.clone(), Some(req.pid()));
        self.spawn_interruptible("getattr", tid, reply, async move { fs.getattr(ino.0).await }, |reply, e| {
            reply.attr(&e.ttl, &file_attr(&e.attr))
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = SetAttr { mode, uid, gid, size, mtime: mtime.map(time_of), atime: atime.map(time_of) };
        let fs = self.fs.clone();
        self.spawn("setattr", reply, async move { fs.setattr(ino.0, change).await }, |reply, e| {
            reply.attr(&e.ttl, &file_attr(&e.attr))
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (fs, tid) = (self.fs.clone(), req.pid());
        // Only a writer's process is ever used (its close completes the upload): a read-only
        // open does not read /proc (~10 system calls, on the path to a cached file's first byte).
        let pid = if flags.0 & libc::O_ACCMODE == libc::O_RDONLY { tid } else { process_of(tid) };
        let work = async move { fs.open(ino.0, flags.0, pid).await };
        self.spawn_interruptible("open", Some(tid), reply, work, |reply, opened| {
            let flags = if opened.direct_io { FopenFlags::FOPEN_DIRECT_IO } else { FopenFlags::empty() };
            reply.opened(FileHandle(opened.fh), flags)
        });
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let (fs, tid) = (self.fs.clone(), Some(req.pid()));
        let work = async move { fs.read(fh.0, offset, size).await };
        self.spawn_interruptible("read", tid, reply, work, |reply, data| reply.data(&data));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        let reply = CloseReply::new(reply);
        self.spawn("release", reply, async move { fs.release(fh.0).await }, |reply, ()| reply.ok());
    }

    fn flush(&self, req: &Request, _ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        let fs = self.fs.clone();
        let pid = if fs.flush_needs_process(fh.0) { process_of(req.pid()) } else { req.pid() };
        let reply = CloseReply::new(reply);
        self.spawn("flush", reply, async move { fs.flush(fh.0, pid).await }, |reply, ()| reply.ok());
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let fs = self.fs.clone();
        let reply = CloseReply::new(reply);
        self.spawn("fsync", reply, async move { fs.fsync(fh.0).await }, |reply, ()| reply.ok());
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        self.spawn("opendir", reply, async move { fs.opendir(ino.0).await }, |reply, fh| {
            reply.opened(FileHandle(fh), FopenFlags::empty())
        });
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _offset: u64, reply: ReplyDirectory) {
        // We negotiate FUSE_DO_READDIRPLUS without READDIRPLUS_AUTO, so the kernel never sends this.
        reply.error(Errno::ENOSYS);
    }

    fn readdirplus(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectoryPlus) {
        let (fs, metrics, started) = (self.fs.clone(), self.metrics.clone(), Instant::now());
        self.runtime.spawn(async move {
            let mut reply = Some(reply);
            let result = fs
                .readdirplus(fh.0, offset, |e| {
                    let r = reply.as_mut().expect("reply is taken only after the listing");
                    let attr = file_attr(&e.entry.attr);
                    r.add(INodeNo(e.entry.attr.ino), e.next_offset, e.name, &e.entry.ttl, &attr, Generation(0))
                })
                .await;
            let reply = reply.take().expect("reply still here");
            metrics.fuse_request("readdirplus", started.elapsed(), result.is_ok());
            match result {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno_of("readdirplus", &e)),
            }
        });
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        let started = Instant::now();
        let result = self.fs.releasedir(fh.0);
        self.metrics.fuse_request("releasedir", started.elapsed(), result.is_ok());
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno_of("releasedir", &e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let started = Instant::now();
        let s = self.fs.statfs();
        self.metrics.fuse_request("statfs", started.elapsed(), true);
        reply.statfs(s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let (fs, name, owner) = (self.fs.clone(), name.to_owned(), Some((req.uid(), req.gid())));
        let work = async move { fs.mknod_as(parent.0, &name, mode & !umask, owner).await };
        self.spawn("mknod", reply, work, |reply, e| reply.entry(&e.ttl, &file_attr(&e.attr), Generation(0)));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let (fs, name, pid) = (self.fs.clone(), name.to_owned(), process_of(req.pid()));
        let owner = Some((req.uid(), req.gid()));
        let work = async move { fs.create_as(parent.0, &name, mode & !umask, pid, owner).await };
        self.spawn("create", reply, work, |reply, (e, o)| {
            reply.created(&e.ttl, &file_attr(&e.attr), Generation(0), FileHandle(o.fh), FopenFlags::empty())
        });
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let (fs, name, owner) = (self.fs.clone(), name.to_owned(), Some((req.uid(), req.gid())));
        let work = async move { fs.mkdir_as(parent.0, &name, mode & !umask, owner).await };
        self.spawn("mkdir", reply, work, |reply, e| reply.entry(&e.ttl, &file_attr(&e.attr), Generation(0)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.spawn("unlink", reply, async move { fs.unlink(parent.0, &name).await }, |reply, ()| reply.ok());
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.spawn("rmdir", reply, async move { fs.rmdir(parent.0, &name).await }, |reply, ()| reply.ok());
    }

    fn symlink(&self, req: &Request, parent: INodeNo, name: &OsStr, target: &std::path::Path, reply: ReplyEntry) {
        use std::os::unix::ffi::OsStrExt;
        let (fs, name, target) = (self.fs.clone(), name.to_owned(), target.as_os_str().as_bytes().to_vec());
        let (uid, gid) = (req.uid(), req.gid());
        let work = async move { fs.symlink(parent.0, &name, &target, uid, gid).await };
        self.spawn("symlink", reply, work, |reply, e| reply.entry(&e.ttl, &file_attr(&e.attr), Generation(0)));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let fs = self.fs.clone();
        self.spawn("readlink", reply, async move { fs.readlink(ino.0).await }, |reply, target| reply.data(&target));
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        reply.error(errno_of("link", &self.fs.refuse("link")));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (fs, name, newname) = (self.fs.clone(), name.to_owned(), newname.to_owned());
        self.spawn(
            "rename",
            reply,
            async move { fs.rename(parent.0, &name, newparent.0, &newname, flags.bits()).await },
            |reply, ()| reply.ok(),
        );
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let (fs, data) = (self.fs.clone(), data.to_vec());
        self.spawn("write", reply, async move { fs.write(fh.0, offset, &data).await }, |reply, n| reply.written(n));
    }
}

/// The process (thread group) of the thread `tid` that sent a request.
///
/// FUSE reports the calling *thread*: a file opened by one thread and closed by another (thread
/// pools, Go, Java) would look like a close from another process, whose upload is left to release.
/// The thread is blocked in its system call while we read `/proc/<tid>/status`, so it is there;
/// if it is not (killed meanwhile, or a caller in a pid namespace we cannot see, reported as 0),
/// its id is used as is: for a single-threaded process that is the process id, and otherwise the
/// close counts as one from another process (completion at release), never as a wrong match.
fn process_of(tid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{tid}/status")).ok().and_then(|s| tgid_in_status(&s)).unwrap_or(tid)
}

/// The `Tgid:` field of a `/proc/<tid>/status` text.
fn tgid_in_status(status: &str) -> Option<u32> {
    status.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|v| v.trim().parse().ok())
}

/// A kernel time argument as a point in time.
fn time_of(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_work_is_answered_on_the_calling_thread_and_pending_work_on_the_runtime() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let me = std::thread::current().id();
        let (tx, rx) = std::sync::mpsc::channel();
        // Ready at the first poll (it even spawns, which needs the runtime's context): answered
        // before the call returns, on this thread, with no task.
        let ready = async {
            tokio::spawn(async {});
            Ok::<_, FsError>(7)
        };
        let sent = tx.clone();
        answer_or_spawn(runtime.handle(), ready, None, move |r| {
            sent.send((r.ok(), std::thread::current().id())).unwrap()
        });
        assert_eq!(rx.try_recv().unwrap(), (Some(7), me), "answered in place");
        // Not ready: finished later by a task on the runtime, the same future continuing.
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<u32>();
        let pending = async move { go_rx.await.map_err(|_| FsError::Interrupted { tid: 0 }) };
        answer_or_spawn(runtime.handle(), pending, Some(0), move |r| {
            tx.send((r.ok(), std::thread::current().id())).unwrap()
        });
        assert!(rx.try_recv().is_err(), "not answered before it is ready");
        go_tx.send(9).unwrap();
        let (value, thread) = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(value, Some(9));
        assert_ne!(thread, me, "answered by the runtime");
    }

    #[test]
    fn a_thread_maps_to_its_process() {
        let status = "Name:\tx\nUmask:\t0022\nState:\tS\nTgid:\t4242\nNgid:\t0\nPid:\t4250\n";
        assert_eq!(tgid_in_status(status), Some(4242));
        assert_eq!(tgid_in_status("Name:\tx\n"), None);
        let me = std::process::id();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_ne!(tid, me);
        assert_eq!(process_of(tid), me, "a live thread maps to its process");
        drop(done_tx);
        t.join().unwrap();
        // A caller we cannot see stands for itself.
        assert_eq!(process_of(0), 0);
    }
}
