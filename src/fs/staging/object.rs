//! [`StagedObject`]: a staged file shared by the handles of one inode (its writer, and readers
//! opened on this mount while it is staged), with the fetches, writes and commits they make.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;

use super::commit::{self, CommitFailure, Committed};
use super::{Base, StagedFile, StagingStore};
use crate::client::{ObjectClient, PutOptions};
use crate::escape::escaped;
use crate::fs::FsError;

/// The state of a staged file, behind one lock: reads, writes and commits of one file are
/// serialised (a commit reads the file it uploads).
#[derive(Debug)]
enum State {
    Staged(StagedFile),
    /// Its upload met a conflicting change: every later call gets the same error.
    Conflicted {
        base: String,
        kept: Option<PathBuf>,
    },
}

/// One staged file and what it needs to fetch and upload.
#[derive(Debug)]
pub struct StagedObject {
    key: String,
    /// The size, readable without the lock (for `stat`).
    size: AtomicU64,
    /// Set when the file was deleted (unlink): later commits upload nothing.
    deleted: AtomicBool,
    /// Handles open for writing on it (the first holds the inode's writer claim for all).
    pub writers: AtomicUsize,
    client: Arc<dyn ObjectClient>,
    store: Arc<StagingStore>,
    state: tokio::sync::Mutex<State>,
}

impl StagedObject {
    /// Stages `key` from `base` (`None`: a new file) in `store`.
    pub fn new(
        client: Arc<dyn ObjectClient>,
        store: Arc<StagingStore>,
        key: &str,
        base: Option<Base>,
    ) -> Result<StagedObject, FsError> {
        let file = store.stage(key, base).map_err(|source| FsError::StagingIo { key: key.to_string(), source })?;
        Ok(StagedObject {
            key: key.to_string(),
            size: AtomicU64::new(file.size()),
            deleted: AtomicBool::new(false),
            writers: AtomicUsize::new(0),
            client,
            store,
            state: tokio::sync::Mutex::new(State::Staged(file)),
        })
    }

    fn conflicted(&self, base: &str, kept: &Option<PathBuf>) -> FsError {
        FsError::ModifyConflict { key: self.key.clone(), base: base.to_string(), kept: kept.clone() }
    }

    /// Reads up to `len` bytes at `offset`, fetching what is missing from the base object.
    pub async fn read(&self, offset: u64, len: u64) -> Result<Bytes, FsError> {
        let mut state = self.state.lock().await;
        let file = match &mut *state {
            State::Staged(file) => file,
            State::Conflicted { base, kept } => return Err(self.conflicted(base, kept)),
        };
        let end = offset.saturating_add(len).min(file.size());
        if offset >= end {
            return Ok(Bytes::new());
        }
        match commit::fill(self.client.as_ref(), file, offset..end).await {
            Ok(fetched) => {
                self.store.budget().stats().fetched.fetch_add(fetched, Ordering::Relaxed);
            }
            Err(CommitFailure::Conflict) => return Err(FsError::ObjectChanged { key: self.key.clone() }),
            Err(CommitFailure::Error(e)) => return Err(e),
        }
        file.read(offset, end - offset).map(Bytes::from).map_err(|e| e.into_fs(&self.key))
    }

    /// Writes `data` at `offset`; returns the file's new size.
    pub async fn write(&self, offset: u64, data: &[u8]) -> Result<u64, FsError> {
        let mut state = self.state.lock().await;
        match &mut *state {
            State::Staged(file) => {
                file.write(offset, data).map_err(|e| e.into_fs(&self.key))?;
                self.size.store(file.size(), Ordering::Release);
                Ok(file.size())
            }
            State::Conflicted { base, kept } => Err(self.conflicted(base, kept)),
        }
    }

    /// truncate(2) / ftruncate(2).
    pub async fn set_size(&self, size: u64) -> Result<(), FsError> {
        let mut state = self.state.lock().await;
        match &mut *state {
            State::Staged(file) => {
                file.set_size(size).map_err(|e| e.into_fs(&self.key))?;
                self.size.store(size, Ordering::Release);
                Ok(())
            }
            State::Conflicted { base, kept } => Err(self.conflicted(base, kept)),
        }
    }

    /// The file's size now.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// The key it is staged for.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether it holds changes not uploaded yet (waits for a write or commit in progress).
    pub async fn has_changes(&self) -> bool {
        match &*self.state.lock().await {
            State::Staged(file) => !self.deleted.load(Ordering::Acquire) && !file.unchanged(),
            State::Conflicted { .. } => false,
        }
    }

    /// The object was deleted: writes still land in the staged copy, but are never uploaded
    /// (as an unlinked file that is still open).
    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    /// Uploads the file if it changed since its base (see `commit.rs`); it stays staged and
    /// writable. On a conflict the local copy is moved to `kept/`, logged, and the file fails.
    pub async fn commit(&self, options: &PutOptions, part_size: u64) -> Result<Committed, FsError> {
        let mut state = self.state.lock().await;
        let file = match &mut *state {
            State::Staged(file) => file,
            State::Conflicted { base, kept } => return Err(self.conflicted(base, kept)),
        };
        if self.deleted.load(Ordering::Acquire) {
            return Ok(Committed::default());
        }
        let base = file.base().map(|b| b.etag.to_string()).unwrap_or_else(|| "(none: a new file)".into());
        let stats = self.store.budget().stats();
        match commit::commit(&self.client, file, options, part_size).await {
            Ok(done) => {
                if done.etag.is_some() {
                    stats.uploads.fetch_add(1, Ordering::Relaxed);
                }
                stats.sent.fetch_add(done.sent, Ordering::Relaxed);
                stats.copied.fetch_add(done.copied, Ordering::Relaxed);
                stats.fetched.fetch_add(done.fetched, Ordering::Relaxed);
                Ok(done)
            }
            Err(CommitFailure::Error(e)) => Err(e),
            Err(CommitFailure::Conflict) => {
                stats.conflicts.fetch_add(1, Ordering::Relaxed);
                let kept = match self.store.keep(file) {
                    Ok(path) => Some(path),
                    Err(e) => {
                        tracing::error!(key = %escaped(&self.key), "could not keep the local copy of a conflicting file: {e}");
                        None
                    }
                };
                let error = self.conflicted(&base, &kept);
                tracing::warn!("{error}");
                *state = State::Conflicted { base, kept };
                Err(error)
            }
        }
    }
}
