//! [`StagedFile`]: one file being modified, as a sparse local file plus the maps of which bytes
//! are on local disk and which differ from the object it was staged from.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::StagingBudget;
use super::ranges::RangeSet;
use crate::client::ETag;

/// Missing bytes are fetched in aligned blocks of this size, so that a program reading 4 KiB
/// pages one by one (sqlite) makes one GET per MiB, not one per page.
pub const FILL_BLOCK: u64 = 1024 * 1024;

/// The object a staged file started from (or was last uploaded as).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    pub etag: ETag,
    pub size: u64,
}

/// Why the staging store refused to keep more bytes.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("no room to stage {need} more bytes ({reason})")]
    NoRoom { need: u64, reason: String },
    #[error("staging file I/O failed: {0}")]
    Io(#[from] io::Error),
}

impl StageError {
    /// The file-system error for this failure while staging `key` (ENOSPC or EIO).
    pub fn into_fs(self, key: &str) -> crate::fs::FsError {
        match self {
            StageError::NoRoom { .. } => {
                crate::fs::FsError::StagingFull { key: key.to_string(), reason: self.to_string() }
            }
            StageError::Io(source) => crate::fs::FsError::StagingIo { key: key.to_string(), source },
        }
    }
}

/// One file being modified: its bytes live in a sparse local file. Bytes of the base object are
/// fetched only when read (or when an upload must send them); written bytes are kept as they
/// come, so a pure append never downloads anything.
#[derive(Debug)]
pub struct StagedFile {
    key: String,
    base: Option<Base>,
    data: File,
    pub(super) data_path: PathBuf,
    pub(super) record_path: PathBuf,
    size: u64,
    /// The smallest size since the base: bytes at or past it are not the base object's.
    shrunk_to: u64,
    /// Bytes whose content is on local disk (fetched or written).
    local: RangeSet,
    /// Bytes written since the base.
    dirty: RangeSet,
    budget: Arc<StagingBudget>,
    /// Set once the files were moved away or removed.
    pub(super) gone: bool,
}

impl StagedFile {
    pub(super) fn new(
        key: String,
        base: Option<Base>,
        data: File,
        data_path: PathBuf,
        record_path: PathBuf,
        budget: Arc<StagingBudget>,
    ) -> io::Result<StagedFile> {
        let size = base.as_ref().map_or(0, |b| b.size);
        data.set_len(size)?;
        budget.files.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(StagedFile {
            key,
            base,
            data,
            data_path,
            record_path,
            size,
            shrunk_to: size,
            local: RangeSet::new(),
            dirty: RangeSet::new(),
            budget,
            gone: false,
        })
    }

    /// The key the file will be uploaded to.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The object the file was staged from (or last uploaded as).
    pub fn base(&self) -> Option<&Base> {
        self.base.as_ref()
    }

    /// The file's current size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes of local disk this file holds (what it draws on the budget).
    pub fn local_bytes(&self) -> u64 {
        self.local.len()
    }

    /// Where the base object's bytes can still be used: below this, bytes not on local disk are
    /// the base object's; at or past it, they are zeros (holes).
    fn fetch_end(&self) -> u64 {
        self.base.as_ref().map_or(0, |b| b.size.min(self.shrunk_to))
    }

    /// The parts of `range` that are neither on local disk nor zeros.
    pub fn missing(&self, range: Range<u64>) -> Vec<Range<u64>> {
        let end = range.end.min(self.fetch_end());
        if range.start >= end {
            return Vec::new();
        }
        self.local.gaps(range.start..end)
    }

    /// The ranges to GET from the base object so that `range` can be read: the missing bytes,
    /// widened to [`FILL_BLOCK`] boundaries (never past the base's end), merged.
    pub fn fetches(&self, range: Range<u64>) -> Vec<Range<u64>> {
        let end = self.fetch_end();
        let mut wanted = RangeSet::new();
        for gap in self.missing(range) {
            let start = gap.start / FILL_BLOCK * FILL_BLOCK;
            let stop = gap.end.div_ceil(FILL_BLOCK).saturating_mul(FILL_BLOCK).min(end);
            for piece in self.local.gaps(start..stop) {
                wanted.insert(piece);
            }
        }
        // Gaps of one block may be split by local bytes: GET the whole span once instead.
        let mut merged: Vec<Range<u64>> = Vec::new();
        for r in wanted.ranges() {
            match merged.last_mut() {
                Some(last) if r.start - last.end < FILL_BLOCK => last.end = r.end,
                _ => merged.push(r.clone()),
            }
        }
        merged
    }

    /// Stores `bytes`, fetched from the base object at `offset`, where the file has nothing yet
    /// (written bytes are never replaced).
    pub fn fill(&mut self, offset: u64, bytes: &[u8]) -> Result<(), StageError> {
        let range = offset..offset + bytes.len() as u64;
        let gaps = self.missing(range);
        let need: u64 = gaps.iter().map(|g| g.end - g.start).sum();
        self.budget.charge(need, &self.key)?;
        for gap in gaps {
            let slice = &bytes[(gap.start - offset) as usize..(gap.end - offset) as usize];
            if let Err(e) = self.data.write_all_at(slice, gap.start) {
                self.budget.release(gap.end - gap.start);
                return Err(e.into());
            }
            self.local.insert(gap);
        }
        Ok(())
    }

    /// Writes `bytes` at `offset`, growing the file if it ends past the end (a gap reads as
    /// zeros). Nothing needs to be fetched first.
    pub fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), StageError> {
        let range = offset..offset + bytes.len() as u64;
        let need: u64 = self.local.gaps(range.clone()).iter().map(|g| g.end - g.start).sum();
        self.budget.charge(need, &self.key)?;
        if let Err(e) = self.data.write_all_at(bytes, offset) {
            self.budget.release(need);
            return Err(e.into());
        }
        self.local.insert(range.clone());
        self.dirty.insert(range.clone());
        self.size = self.size.max(range.end);
        Ok(())
    }

    /// Reads up to `len` bytes at `offset`; the caller filled [`StagedFile::missing`] first.
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, StageError> {
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        debug_assert!(self.missing(offset..end).is_empty(), "read of bytes not fetched");
        let mut buf = vec![0u8; (end - offset) as usize];
        self.data.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// truncate(2): shorter drops bytes (and their budget), longer adds zeros.
    pub fn set_size(&mut self, size: u64) -> Result<(), StageError> {
        self.data.set_len(size)?;
        if size < self.size {
            let before = self.local.len();
            self.local.truncate(size);
            self.dirty.truncate(size);
            self.budget.release(before - self.local.len());
            self.shrunk_to = self.shrunk_to.min(size);
        }
        self.size = size;
        Ok(())
    }

    /// Whether the file is its base object, byte for byte.
    pub fn unchanged(&self) -> bool {
        match &self.base {
            Some(base) => self.dirty.is_empty() && self.size == base.size && self.shrunk_to >= base.size,
            None => false,
        }
    }

    /// The segments of the file equal to the base object at the same offsets.
    pub fn clean(&self) -> Vec<Range<u64>> {
        let end = self.fetch_end();
        if end == 0 {
            return Vec::new();
        }
        self.dirty.gaps(0..end)
    }

    /// The file is now the object `etag` (it was uploaded): later uploads start from it.
    pub fn uploaded(&mut self, etag: ETag) {
        self.base = Some(Base { etag, size: self.size });
        self.shrunk_to = self.size;
        self.dirty = RangeSet::new();
    }

    /// The data file, for moving it away; see [`super::StagingStore::keep`].
    pub(super) fn data_file(&self) -> &File {
        &self.data
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        self.budget.release(self.local.len());
        self.budget.files.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if !self.gone {
            let _ = std::fs::remove_file(&self.data_path);
            let _ = std::fs::remove_file(&self.record_path);
        }
    }
}
