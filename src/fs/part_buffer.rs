//! [`PartBuffer`]: the bytes of one upload part, in an anonymous memory mapping of its own.
//!
//! Why not a `Vec`: glibc's malloc raises its mmap threshold to the size of the last large block
//! freed, so after the first part is uploaded and freed, every later part buffer comes from
//! malloc's heaps (one per thread), which keep freed memory: with 32 writers the daemon's RSS
//! was measured ~100 MiB above the memory budget that bounds the live buffers. A mapping of its
//! own is given back to the system when the part is dropped, and only the pages written are
//! resident, so a small file costs what it holds, not a whole part. If the system refuses a
//! mapping, the buffer falls back to the heap.

use bytes::Bytes;
use memmap2::{Advice, MmapMut};

/// Writes at least this large have their pages populated in one call before the copy.
const POPULATE_AT_LEAST: usize = 64 << 10;
/// The page size madvise(2) ranges are aligned to (4 KiB on every platform this runs on; a
/// larger page only makes the call fail, which is harmless).
const PAGE: usize = 4096;

enum Storage {
    Map(MmapMut),
    Heap(Vec<u8>),
}

/// A buffer of at most `capacity` bytes that freezes into [`Bytes`] without a copy.
pub struct PartBuffer {
    storage: Option<Storage>,
    len: usize,
    capacity: usize,
}

impl PartBuffer {
    /// An empty buffer for up to `capacity` bytes; nothing is mapped until the first write.
    pub fn new(capacity: usize) -> Self {
        PartBuffer { storage: None, len: 0, capacity }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `data`; panics past the capacity (the caller cuts parts to size).
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        assert!(self.len + data.len() <= self.capacity, "part buffer overflow");
        let capacity = self.capacity;
        let storage = self.storage.get_or_insert_with(|| match MmapMut::map_anon(capacity.max(1)) {
            Ok(map) => Storage::Map(map),
            Err(_) => Storage::Heap(Vec::with_capacity(capacity)),
        });
        match storage {
            Storage::Map(map) => {
                if data.len() >= POPULATE_AT_LEAST {
                    // Fault the pages of a large write in with one call (the kernel zeroes them
                    // in a batch) instead of one trap per 4 KiB page during the copy: those traps
                    // were a fifth of a sequential writer's CPU. Best effort: the copy faults in
                    // whatever is still missing.
                    let start = self.len / PAGE * PAGE;
                    let _ = map.advise_range(Advice::PopulateWrite, start, self.len + data.len() - start);
                }
                map[self.len..self.len + data.len()].copy_from_slice(data)
            }
            Storage::Heap(vec) => {
                vec.truncate(self.len);
                vec.extend_from_slice(data);
            }
        }
        self.len += data.len();
    }

    /// Keeps the first `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The bytes held, without a copy; the mapping is unmapped when the last `Bytes` goes.
    pub fn freeze(self) -> Bytes {
        match self.storage {
            None => Bytes::new(),
            Some(Storage::Map(map)) => Bytes::from_owner(map).slice(..self.len),
            Some(Storage::Heap(mut vec)) => {
                vec.truncate(self.len);
                Bytes::from(vec)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_was_written_and_freezes_it() {
        let mut b = PartBuffer::new(10);
        assert!(b.is_empty());
        assert_eq!(PartBuffer::new(10).freeze(), Bytes::new());
        b.extend_from_slice(b"hello");
        b.extend_from_slice(b"world");
        assert_eq!(b.len(), 10);
        b.truncate(4);
        b.extend_from_slice(b"!");
        assert_eq!(b.freeze(), Bytes::from_static(b"hell!"));
    }
}
