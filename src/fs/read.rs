//! [`FileReader`]: the read side of an open file.
//!
//! One GET stream per handle, from the first read offset to the end of the object, carrying
//! `If-Match` so the bytes all come from the version that was opened. Reads at the stream's
//! position consume it; the most recent [`RETAIN`] bytes stay in a window so the kernel's
//! slightly out-of-order async reads and short backward seeks are served without a new
//! request; a forward jump within [`FORWARD_TOLERANCE`] reads through; anything else starts a
//! new stream. A failed stream fails the read (EIO, or ESTALE if the object changed) and the
//! next read starts afresh. The prefetcher (concurrent ranged parts, memory budget) replaces
//! this in a later release; the interface stays.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::Mutex;

use crate::client::{ClientError, ClientErrorKind, ETag, GetStream, ObjectClient};
use crate::fs::FsError;

/// Bytes kept behind the furthest read for out-of-order and backward reads.
pub const RETAIN: u64 = 2 * 1024 * 1024;
/// A read this far ahead of the stream reads through instead of starting a new GET.
pub const FORWARD_TOLERANCE: u64 = 8 * 1024 * 1024;

/// Identity of the object version a handle reads.
#[derive(Clone, Debug)]
pub struct ObjectVersion {
    pub key: String,
    pub etag: ETag,
    pub size: u64,
}

#[derive(Default)]
struct ReadState {
    stream: Option<GetStream>,
    /// Offset of the next byte the stream yields.
    stream_pos: u64,
    /// Bytes `[window_start, stream_pos)`, in chunks.
    window: VecDeque<Bytes>,
    window_start: u64,
}

/// Reads one object version for one open file handle.
pub struct FileReader {
    client: Arc<dyn ObjectClient>,
    object: ObjectVersion,
    state: Mutex<ReadState>,
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader").field("object", &self.object).finish_non_exhaustive()
    }
}

impl FileReader {
    /// A reader of `object`; nothing is requested until the first read.
    pub fn new(client: Arc<dyn ObjectClient>, object: ObjectVersion) -> Self {
        FileReader { client, object, state: Mutex::new(ReadState::default()) }
    }

    /// The object version this handle reads.
    pub fn object(&self) -> &ObjectVersion {
        &self.object
    }

    /// Up to `len` bytes at `offset`; fewer only at the end of the object.
    pub async fn read(&self, offset: u64, len: u32) -> Result<Bytes, FsError> {
        let end = offset.saturating_add(len as u64).min(self.object.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let mut state = self.state.lock().await;
        let within_reach = offset >= state.window_start && offset <= state.stream_pos + FORWARD_TOLERANCE;
        let covered = offset >= state.window_start && end <= state.stream_pos;
        if !covered && (!within_reach || state.stream.is_none()) {
            self.restart(&mut state, offset).await?;
        }
        while state.stream_pos < end {
            if let Err(e) = self.pull(&mut state).await {
                state.stream = None;
                return Err(e);
            }
        }
        let data = copy_range(&state.window, state.window_start, offset, end);
        // Keep RETAIN bytes behind the end of this read.
        let keep_from = end.saturating_sub(RETAIN);
        while let Some(front) = state.window.front() {
            let front_end = state.window_start + front.len() as u64;
            if front_end > keep_from {
                break;
            }
            state.window_start = front_end;
            state.window.pop_front();
        }
        Ok(data)
    }

    async fn restart(&self, state: &mut ReadState, offset: u64) -> Result<(), FsError> {
        *state = ReadState { stream: None, stream_pos: offset, window: VecDeque::new(), window_start: offset };
        let key = &self.object.key;
        let response = self
            .client
            .get_object(key, offset..self.object.size, Some(&self.object.etag))
            .await
            .map_err(|e| FsError::client("read", key, e))?;
        // Servers that ignore If-Match still tell us which version they sent.
        if response.etag != self.object.etag {
            return Err(FsError::ObjectChanged { key: key.clone() });
        }
        state.stream = Some(response.body);
        Ok(())
    }

    async fn pull(&self, state: &mut ReadState) -> Result<(), FsError> {
        let key = &self.object.key;
        let stream = state.stream.as_mut().expect("pull() needs a stream");
        match stream.next().await {
            Some(Ok(chunk)) => {
                let remaining = self.object.size - state.stream_pos;
                if chunk.len() as u64 > remaining {
                    let e = ClientError::new(ClientErrorKind::Transient, "GetObject", "body longer than the object");
                    return Err(FsError::client("read", key, e));
                }
                state.stream_pos += chunk.len() as u64;
                if !chunk.is_empty() {
                    state.window.push_back(chunk);
                }
                Ok(())
            }
            Some(Err(e)) => Err(FsError::client("read", key, e)),
            None => {
                let message = format!("body ended at byte {} of {}", state.stream_pos, self.object.size);
                Err(FsError::client("read", key, ClientError::new(ClientErrorKind::Transient, "GetObject", message)))
            }
        }
    }
}

/// Bytes `[from, to)` out of chunks starting at `start`; no copy when one chunk covers them.
fn copy_range(chunks: &VecDeque<Bytes>, start: u64, from: u64, to: u64) -> Bytes {
    let mut at = start;
    let mut out: Option<BytesMut> = None;
    for chunk in chunks {
        let chunk_end = at + chunk.len() as u64;
        if chunk_end > from && at < to {
            let lo = (from.max(at) - at) as usize;
            let hi = (to.min(chunk_end) - at) as usize;
            if out.is_none() && at <= from && chunk_end >= to {
                return chunk.slice(lo..hi);
            }
            out.get_or_insert_with(|| BytesMut::with_capacity((to - from) as usize)).extend_from_slice(&chunk[lo..hi]);
        }
        at = chunk_end;
        if at >= to {
            break;
        }
    }
    out.map(BytesMut::freeze).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::S3Operation;
    use crate::client::memory::InMemoryClient;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    async fn reader(c: &Arc<InMemoryClient>, key: &str, data: &[u8]) -> FileReader {
        c.insert(key, data.to_vec());
        let meta = c.head_object(key).await.unwrap();
        FileReader::new(c.clone(), ObjectVersion { key: key.into(), etag: meta.etag, size: meta.size })
    }

    #[tokio::test]
    async fn sequential_reads_use_one_get_and_return_exact_bytes() {
        let c = Arc::new(InMemoryClient::new("b"));
        let data = pattern(3 * 1024 * 1024 + 17);
        let r = reader(&c, "k", &data).await;
        let mut got = vec![];
        let mut off = 0u64;
        loop {
            let b = r.read(off, 128 * 1024).await.unwrap();
            if b.is_empty() {
                break;
            }
            off += b.len() as u64;
            got.extend_from_slice(&b);
        }
        assert_eq!(got, data);
        assert_eq!(c.count(S3Operation::GetObject), 1);
    }

    #[tokio::test]
    async fn out_of_order_and_short_backward_reads_reuse_the_stream() {
        let c = Arc::new(InMemoryClient::new("b"));
        let data = pattern(4 * 1024 * 1024);
        let r = reader(&c, "k", &data).await;
        let k = 128 * 1024usize;
        for (off, len) in [(0, k), (2 * k, k), (k, k), (3 * k, k), (0, 10), (5 * k + 3, 1000)] {
            assert_eq!(r.read(off as u64, len as u32).await.unwrap(), &data[off..off + len], "read at {off}");
        }
        assert_eq!(c.count(S3Operation::GetObject), 1);
        // A far jump starts a new GET.
        let far = 4 * 1024 * 1024 - 5;
        assert_eq!(r.read(far as u64, 100).await.unwrap(), &data[far..]);
        assert_eq!(r.read(4 * 1024 * 1024, 100).await.unwrap().len(), 0, "EOF");
    }

    #[tokio::test]
    async fn a_replaced_object_is_estale_never_new_bytes() {
        let c = Arc::new(InMemoryClient::new("b"));
        let r = reader(&c, "k", b"old contents").await;
        c.insert("k", "new contents");
        let e = r.read(0, 4).await.unwrap_err();
        assert_eq!(e.errno(), libc::ESTALE);
        c.remove("k");
        assert_eq!(r.read(0, 4).await.unwrap_err().errno(), libc::ESTALE);
    }

    #[test]
    fn copy_range_across_chunks() {
        let chunks: VecDeque<Bytes> =
            ["abc", "defg", "h"].into_iter().map(|s| Bytes::from_static(s.as_bytes())).collect();
        assert_eq!(copy_range(&chunks, 10, 11, 15), Bytes::from_static(b"bcde"));
        assert_eq!(copy_range(&chunks, 10, 13, 17), Bytes::from_static(b"defg"));
        assert_eq!(copy_range(&chunks, 10, 17, 18), Bytes::from_static(b"h"));
    }
}
