//! [`Part`]: one ranged GET of one object version, streaming into memory reserved beforehand.
//!
//! A part is a spawned task that takes a permit for a GET in flight, sends the GET with
//! `If-Match`, checks the answer is the opened version (same ETag and size: some servers ignore
//! `If-Match`) and that the body is exactly the range asked for, and publishes each chunk as it
//! arrives, so readers get bytes before the whole part is in. Readers wait for the bytes they
//! need and take zero-copy slices. The stream trims consumed chunks from the front, giving their
//! bytes back to the budget. Dropping the last handle on a part cancels its GET and releases the
//! rest of its reservation.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Semaphore, watch};
use tokio::task::AbortHandle;

use crate::client::{ClientError, ClientErrorKind, ObjectClient};
use crate::escape::escaped;
use crate::fs::FsError;
use crate::fs::memory::Reservation;
use crate::fs::prefetch::ObjectVersion;

/// Why a part could not deliver its bytes.
#[derive(Clone, Debug)]
pub(crate) enum PartFailure {
    /// The GET failed, or its body was cut short or ran long.
    Client(ClientError),
    /// The server sent another version of the object (ETag or size differ from the opened one).
    Changed,
}

impl PartFailure {
    fn transient(message: String) -> Self {
        PartFailure::Client(ClientError::new(ClientErrorKind::Transient, "GetObject", message))
    }

    /// The error a read needing this part returns: EIO, or ESTALE when the object changed.
    pub(crate) fn to_fs_error(&self, key: &str) -> FsError {
        match self {
            PartFailure::Client(e) => FsError::client("read", key, e.clone()),
            PartFailure::Changed => FsError::ObjectChanged { key: key.to_string() },
        }
    }
}

/// Why a wait for bytes of a part ended without them.
#[derive(Clone, Debug)]
pub(crate) enum WaitError {
    /// The bytes were trimmed away before the reader got them (the reader retries).
    Trimmed,
    Failed(PartFailure),
}

/// The bytes of a part received so far; `base + sum(chunk lengths) == filled` always.
struct PartBody {
    /// Offset of the first byte still held.
    base: u64,
    chunks: VecDeque<Bytes>,
    /// Offset one past the last byte received.
    filled: u64,
    /// `None` while the GET is running.
    outcome: Option<Result<(), PartFailure>>,
}

/// One ranged GET and its bytes.
pub(crate) struct Part {
    range: Range<u64>,
    body: Arc<watch::Sender<PartBody>>,
    reservation: Mutex<Reservation>,
    task: AbortHandle,
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part").field("range", &self.range).finish_non_exhaustive()
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Part {
    /// Spawns the GET of `range` (non-empty), with `reservation` covering its length.
    pub(crate) fn start(
        range: Range<u64>,
        client: &Arc<dyn ObjectClient>,
        object: &ObjectVersion,
        requests: &Arc<Semaphore>,
        reservation: Reservation,
    ) -> Arc<Part> {
        debug_assert!(range.start < range.end && range.end <= object.size, "{range:?} of {}", object.size);
        debug_assert_eq!(reservation.bytes(), range.end - range.start);
        let initial = PartBody { base: range.start, chunks: VecDeque::new(), filled: range.start, outcome: None };
        let body = Arc::new(watch::Sender::new(initial));
        let task =
            tokio::spawn(download(client.clone(), object.clone(), range.clone(), requests.clone(), body.clone()));
        Arc::new(Part { range, body, reservation: Mutex::new(reservation), task: task.abort_handle() })
    }

    /// The bytes this part was asked for.
    pub(crate) fn range(&self) -> &Range<u64> {
        &self.range
    }

    /// Drops the chunks that end at or before `offset` and gives their bytes back; returns the
    /// offset of the first byte still held.
    pub(crate) fn trim_to(&self, offset: u64) -> u64 {
        let mut released = 0u64;
        let mut base = 0;
        self.body.send_if_modified(|b| {
            while let Some(front) = b.chunks.front() {
                let front_end = b.base + front.len() as u64;
                if front_end > offset {
                    break;
                }
                released += front.len() as u64;
                b.base = front_end;
                b.chunks.pop_front();
            }
            base = b.base;
            released > 0
        });
        if released > 0 {
            self.reservation.lock().unwrap().release(released);
        }
        base
    }

    /// Waits for bytes `from..to` (within the part) and returns them as slices, in order, and
    /// whether the caller had to wait (the reader is faster than the network).
    pub(crate) async fn read(&self, from: u64, to: u64) -> Result<(Vec<Bytes>, bool), WaitError> {
        debug_assert!(self.range.start <= from && from < to && to <= self.range.end);
        let ready = move |b: &PartBody| b.base > from || b.filled >= to || b.outcome.is_some();
        let mut rx = self.body.subscribe();
        let stalled = !ready(&rx.borrow());
        // The sender lives as long as `self`, so the wait cannot end for lack of a sender.
        let body =
            rx.wait_for(ready).await.map_err(|_| WaitError::Failed(PartFailure::transient("part abandoned".into())))?;
        if body.base > from {
            return Err(WaitError::Trimmed);
        }
        if body.filled >= to {
            return Ok((slices(&body, from, to), stalled));
        }
        match &body.outcome {
            Some(Err(failure)) => Err(WaitError::Failed(failure.clone())),
            _ => Err(WaitError::Failed(PartFailure::transient(format!(
                "part {:?} ended at {}",
                self.range, body.filled
            )))),
        }
    }
}

/// Zero-copy slices of `from..to` out of a body holding them.
fn slices(body: &PartBody, from: u64, to: u64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = body.base;
    for chunk in &body.chunks {
        let chunk_end = at + chunk.len() as u64;
        if chunk_end > from && at < to {
            let lo = (from.max(at) - at) as usize;
            let hi = (to.min(chunk_end) - at) as usize;
            out.push(chunk.slice(lo..hi));
        }
        if chunk_end >= to {
            break;
        }
        at = chunk_end;
    }
    out
}

async fn download(
    client: Arc<dyn ObjectClient>,
    object: ObjectVersion,
    range: Range<u64>,
    requests: Arc<Semaphore>,
    body: Arc<watch::Sender<PartBody>>,
) {
    let outcome = fetch(client.as_ref(), &object, range.clone(), &requests, &body).await;
    if let Err(failure) = &outcome {
        // Reported to the application (and logged) by the read that needs these bytes, if any.
        tracing::debug!(key = %escaped(&object.key), ?range, ?failure, "prefetch part failed");
    }
    body.send_modify(|b| b.outcome = Some(outcome));
}

async fn fetch(
    client: &dyn ObjectClient,
    object: &ObjectVersion,
    range: Range<u64>,
    requests: &Semaphore,
    body: &watch::Sender<PartBody>,
) -> Result<(), PartFailure> {
    let _permit = requests.acquire().await.map_err(|_| PartFailure::transient("request limiter closed".into()))?;
    let response =
        client.get_object(&object.key, range.clone(), Some(&object.etag)).await.map_err(PartFailure::Client)?;
    if response.etag != object.etag || response.object_size != object.size {
        return Err(PartFailure::Changed);
    }
    let mut stream = response.body;
    let mut at = range.start;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(PartFailure::Client)?;
        let len = chunk.len() as u64;
        if len > range.end - at {
            return Err(PartFailure::transient(format!("GET body for {range:?} runs past its end")));
        }
        if len == 0 {
            continue;
        }
        at += len;
        body.send_modify(|b| {
            b.chunks.push_back(chunk);
            b.filled = at;
        });
    }
    if at != range.end {
        return Err(PartFailure::transient(format!("GET body for {range:?} ended at byte {at}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_exactly_the_asked_bytes() {
        let chunks: VecDeque<Bytes> =
            ["abc", "defg", "h"].into_iter().map(|s| Bytes::from_static(s.as_bytes())).collect();
        let body = PartBody { base: 10, chunks, filled: 18, outcome: None };
        let cat = |v: Vec<Bytes>| v.concat();
        assert_eq!(cat(slices(&body, 11, 15)), b"bcde");
        assert_eq!(cat(slices(&body, 13, 17)), b"defg");
        assert_eq!(cat(slices(&body, 17, 18)), b"h");
        assert_eq!(slices(&body, 10, 13).len(), 1, "one chunk: one zero-copy slice");
    }
}
