//! [`FaultClient`]: wraps any [`ObjectClient`] and injects failures, for tests that must show
//! the user a clean errno and never wrong bytes.
//!
//! Faults are rules added at runtime through `&self` (the client may already be shared with the
//! file system): *when* ([`When`]: the Nth call of an operation from now, a share of calls drawn
//! from a seeded generator so runs repeat exactly, or every call) and *what* ([`Fault`]: fail
//! with an error kind, delay, cut a GET body short, drop `If-Match` as some servers do, or lose
//! the answer of a call the wrapped client did carry out). Every
//! call and every injected fault is counted per operation.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{
    ClientError, ClientErrorKind, CopyOptions, ETag, GetObjectResponse, GetStream, ListPage, ListRequest, ObjectClient,
    ObjectMeta, PutOptions, PutResult, RenameOptions, S3Operation, UploadedPart,
};

/// Which calls of an operation a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum When {
    /// Only the Nth call from when the rule was added (1 = the next call); then the rule is spent.
    Nth(u64),
    /// Each call with this probability (0.0..=1.0), from the client's seeded generator.
    Share(f64),
    /// Every call.
    Always,
}

/// What happens to a call a rule applies to.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// The call fails with this kind of error without reaching the wrapped client.
    Fail(ClientErrorKind),
    /// The call waits this long before going ahead.
    Delay(Duration),
    /// A GET's body yields this many bytes, then a [`ClientErrorKind::Transient`] error.
    CutBody { after: u64 },
    /// A GET is sent without `If-Match`, like a server that ignores the header.
    IgnoreIfMatch,
    /// The call reaches the wrapped client, which acts on it, but its answer is lost: the
    /// caller gets an error of this kind instead (a connection reset after the server acted).
    LoseResponse(ClientErrorKind),
}

#[derive(Debug)]
struct Rule {
    op: S3Operation,
    when: When,
    fault: Fault,
    /// Calls of `op` made before the rule was added (for [`When::Nth`]).
    armed_at: u64,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    calls: HashMap<S3Operation, u64>,
    injected: HashMap<S3Operation, u64>,
    rng: SplitMix64,
    get_bytes: u64,
}

/// A client that injects faults into the calls it passes to `inner`.
#[derive(Debug)]
pub struct FaultClient<C: ObjectClient> {
    inner: C,
    state: Mutex<State>,
    bodies_cut: Arc<AtomicU64>,
}

impl<C: ObjectClient> FaultClient<C> {
    /// Wraps `inner` with no faults; shares of calls are drawn from a generator seeded with `seed`.
    pub fn new(inner: C, seed: u64) -> Self {
        let state = State { rng: SplitMix64(seed), ..State::default() };
        FaultClient { inner, state: Mutex::new(state), bodies_cut: Arc::default() }
    }

    /// The wrapped client.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// Adds a rule: `fault` for the calls of `op` that `when` selects.
    pub fn inject(&self, op: S3Operation, when: When, fault: Fault) {
        let mut state = self.state.lock().unwrap();
        let armed_at = state.calls.get(&op).copied().unwrap_or(0);
        state.rules.push(Rule { op, when, fault, armed_at });
    }

    /// The Nth call of `op` from now fails with `kind`.
    pub fn fail_nth(&self, op: S3Operation, n: u64, kind: ClientErrorKind) {
        self.inject(op, When::Nth(n), Fault::Fail(kind));
    }

    /// A share of the calls of `op` fail with `kind`.
    pub fn fail_share(&self, op: S3Operation, share: f64, kind: ClientErrorKind) {
        self.inject(op, When::Share(share), Fault::Fail(kind));
    }

    /// Every call of `op` waits `delay` first.
    pub fn delay(&self, op: S3Operation, delay: Duration) {
        self.inject(op, When::Always, Fault::Delay(delay));
    }

    /// The GETs `when` selects yield `after` bytes of body, then a transient error.
    pub fn cut_get_body(&self, when: When, after: u64) {
        self.inject(S3Operation::GetObject, when, Fault::CutBody { after });
    }

    /// Removes every rule (counters are kept).
    pub fn clear(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Calls of `op` made so far, faulty or not.
    pub fn calls(&self, op: S3Operation) -> u64 {
        self.state.lock().unwrap().calls.get(&op).copied().unwrap_or(0)
    }

    /// Faults injected into calls of `op` (a call hit by two rules counts twice).
    pub fn injected(&self, op: S3Operation) -> u64 {
        self.state.lock().unwrap().injected.get(&op).copied().unwrap_or(0)
    }

    /// GET bodies actually cut short (a body shorter than its cut point is not).
    pub fn bodies_cut(&self) -> u64 {
        self.bodies_cut.load(Ordering::Relaxed)
    }

    /// Sum of the lengths of the ranges of all GETs asked for.
    pub fn get_bytes_requested(&self) -> u64 {
        self.state.lock().unwrap().get_bytes
    }

    /// Counts a call of `op` and returns the faults that apply to it, spending `Nth` rules.
    fn decide(&self, op: S3Operation) -> Vec<Fault> {
        let mut state = self.state.lock().unwrap();
        let State { rules, calls, injected, rng, .. } = &mut *state;
        let call = calls.entry(op).or_insert(0);
        *call += 1;
        let call = *call;
        let mut faults = Vec::new();
        rules.retain(|rule| {
            if rule.op != op {
                return true;
            }
            let (hit, keep) = match rule.when {
                When::Nth(n) => (call == rule.armed_at + n, call < rule.armed_at + n),
                When::Share(share) => (rng.next_f64() < share, true),
                When::Always => (true, true),
            };
            if hit {
                faults.push(rule.fault.clone());
                *injected.entry(op).or_insert(0) += 1;
            }
            keep
        });
        faults
    }

    /// Applies delays, then fails if a rule says so.
    async fn enter(&self, op: S3Operation) -> Result<Vec<Fault>, ClientError> {
        let faults = self.decide(op);
        for fault in &faults {
            if let Fault::Delay(d) = fault {
                tokio::time::sleep(*d).await;
            }
        }
        for fault in &faults {
            if let Fault::Fail(kind) = fault {
                let status = match kind {
                    ClientErrorKind::Throttled => Some(503),
                    ClientErrorKind::Transient => Some(500),
                    ClientErrorKind::PreconditionFailed => Some(412),
                    ClientErrorKind::NotFound => Some(404),
                    ClientErrorKind::AccessDenied => Some(403),
                    _ => None,
                };
                let e = ClientError { status, ..ClientError::new(*kind, op.name(), "injected fault") };
                return Err(e);
            }
        }
        Ok(faults)
    }
}

/// The answer to hand back: `result`, unless a [`Fault::LoseResponse`] applies.
fn answer<T>(op: S3Operation, faults: &[Fault], result: Result<T, ClientError>) -> Result<T, ClientError> {
    match faults.iter().find_map(|f| if let Fault::LoseResponse(kind) = f { Some(*kind) } else { None }) {
        Some(kind) => Err(ClientError::new(kind, op.name(), "injected fault: the answer was lost")),
        None => result,
    }
}

/// A body that passes `after` bytes through, then fails.
fn cut_body(body: GetStream, after: u64, cut: Arc<AtomicU64>) -> GetStream {
    enum Phase {
        Passing { body: GetStream, passed: u64 },
        FailNext,
        Done,
    }
    let failure = || ClientError::new(ClientErrorKind::Transient, "GetObject", "injected fault: body cut short");
    Box::pin(futures::stream::unfold(Phase::Passing { body, passed: 0 }, move |phase| {
        let cut = cut.clone();
        async move {
            match phase {
                Phase::Passing { mut body, passed } => match body.next().await {
                    None => None,
                    Some(Err(e)) => Some((Err(e), Phase::Done)),
                    Some(Ok(chunk)) if passed + chunk.len() as u64 <= after => {
                        let passed = passed + chunk.len() as u64;
                        Some((Ok(chunk), Phase::Passing { body, passed }))
                    }
                    Some(Ok(chunk)) => {
                        cut.fetch_add(1, Ordering::Relaxed);
                        let keep = (after - passed) as usize;
                        if keep == 0 {
                            Some((Err(failure()), Phase::Done))
                        } else {
                            Some((Ok(chunk.slice(..keep)), Phase::FailNext))
                        }
                    }
                },
                Phase::FailNext => Some((Err(failure()), Phase::Done)),
                Phase::Done => None,
            }
        }
    }))
}

#[async_trait]
impl<C: ObjectClient> ObjectClient for FaultClient<C> {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }

    async fn head_object(&self, key: &str) -> Result<ObjectMeta, ClientError> {
        let faults = self.enter(S3Operation::HeadObject).await?;
        answer(S3Operation::HeadObject, &faults, self.inner.head_object(key).await)
    }

    async fn get_object(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&ETag>,
    ) -> Result<GetObjectResponse, ClientError> {
        self.state.lock().unwrap().get_bytes += range.end.saturating_sub(range.start);
        let faults = self.enter(S3Operation::GetObject).await?;
        let if_match = if faults.contains(&Fault::IgnoreIfMatch) { None } else { if_match };
        let response = self.inner.get_object(key, range, if_match).await;
        let mut response = answer(S3Operation::GetObject, &faults, response)?;
        let cut =
            faults.iter().filter_map(|f| if let Fault::CutBody { after } = f { Some(*after) } else { None }).min();
        if let Some(after) = cut {
            response.body = cut_body(response.body, after, self.bodies_cut.clone());
        }
        Ok(response)
    }

    async fn list_objects(&self, request: &ListRequest) -> Result<ListPage, ClientError> {
        let faults = self.enter(S3Operation::ListObjectsV2).await?;
        answer(S3Operation::ListObjectsV2, &faults, self.inner.list_objects(request).await)
    }

    async fn put_object(&self, key: &str, body: Bytes, options: &PutOptions) -> Result<PutResult, ClientError> {
        let faults = self.enter(S3Operation::PutObject).await?;
        answer(S3Operation::PutObject, &faults, self.inner.put_object(key, body, options).await)
    }

    async fn create_multipart_upload(&self, key: &str, options: &PutOptions) -> Result<String, ClientError> {
        let faults = self.enter(S3Operation::CreateMultipartUpload).await?;
        answer(S3Operation::CreateMultipartUpload, &faults, self.inner.create_multipart_upload(key, options).await)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<UploadedPart, ClientError> {
        let faults = self.enter(S3Operation::UploadPart).await?;
        let result = self.inner.upload_part(key, upload_id, part_number, body, options).await;
        answer(S3Operation::UploadPart, &faults, result)
    }

    async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        options: &PutOptions,
    ) -> Result<PutResult, ClientError> {
        let faults = self.enter(S3Operation::CompleteMultipartUpload).await?;
        let result = self.inner.complete_multipart_upload(key, upload_id, parts, options).await;
        answer(S3Operation::CompleteMultipartUpload, &faults, result)
    }

    async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), ClientError> {
        let faults = self.enter(S3Operation::AbortMultipartUpload).await?;
        answer(S3Operation::AbortMultipartUpload, &faults, self.inner.abort_multipart_upload(key, upload_id).await)
    }

    async fn delete_object(&self, key: &str) -> Result<(), ClientError> {
        let faults = self.enter(S3Operation::DeleteObject).await?;
        answer(S3Operation::DeleteObject, &faults, self.inner.delete_object(key).await)
    }

    async fn copy_object(
        &self,
        source_key: &str,
        dest_key: &str,
        options: &CopyOptions,
    ) -> Result<PutResult, ClientError> {
        let faults = self.enter(S3Operation::CopyObject).await?;
        answer(S3Operation::CopyObject, &faults, self.inner.copy_object(source_key, dest_key, options).await)
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        source_key: &str,
        range: Range<u64>,
        source_if_match: Option<&ETag>,
    ) -> Result<UploadedPart, ClientError> {
        let faults = self.enter(S3Operation::UploadPartCopy).await?;
        let result = self.inner.upload_part_copy(key, upload_id, part_number, source_key, range, source_if_match).await;
        answer(S3Operation::UploadPartCopy, &faults, result)
    }

    async fn rename_object(
        &self,
        source_key: &str,
        dest_key: &str,
        options: &RenameOptions,
    ) -> Result<(), ClientError> {
        let faults = self.enter(S3Operation::RenameObject).await?;
        answer(S3Operation::RenameObject, &faults, self.inner.rename_object(source_key, dest_key, options).await)
    }

    async fn copied(&self, copies: &[super::PinnedCopy]) {
        self.inner.copied(copies).await
    }
}

/// SplitMix64: a tiny, fixed generator, so a seed means the same faults in every build.
#[derive(Debug, Default)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::memory::InMemoryClient;

    fn client(seed: u64) -> FaultClient<InMemoryClient> {
        let c = FaultClient::new(InMemoryClient::new("b"), seed);
        c.inner().insert("k", (0..1_000_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        c
    }

    async fn body(c: &FaultClient<InMemoryClient>, range: Range<u64>) -> (Vec<u8>, Option<ClientError>) {
        let mut out = vec![];
        let mut body = c.get_object("k", range, None).await.unwrap().body;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn fails_exactly_the_nth_call_from_now() {
        let c = client(1);
        c.head_object("k").await.unwrap();
        c.fail_nth(S3Operation::HeadObject, 2, ClientErrorKind::Throttled);
        assert!(c.head_object("k").await.is_ok());
        let e = c.head_object("k").await.unwrap_err();
        assert_eq!((e.kind, e.status), (ClientErrorKind::Throttled, Some(503)));
        assert!(c.head_object("k").await.is_ok(), "the rule is spent");
        assert_eq!((c.calls(S3Operation::HeadObject), c.injected(S3Operation::HeadObject)), (4, 1));
        assert_eq!(c.inner().count(S3Operation::HeadObject), 3, "the failed call never reached the bucket");
    }

    #[tokio::test]
    async fn a_share_of_calls_fails_the_same_way_for_the_same_seed() {
        let mut outcomes = vec![];
        for _ in 0..2 {
            let c = client(42);
            c.fail_share(S3Operation::HeadObject, 0.3, ClientErrorKind::Transient);
            let mut run = vec![];
            for _ in 0..200 {
                run.push(c.head_object("k").await.is_err());
            }
            let failed = run.iter().filter(|f| **f).count() as u64;
            assert_eq!(c.injected(S3Operation::HeadObject), failed);
            assert!((30..90).contains(&failed), "{failed} of 200 at 30%");
            outcomes.push(run);
        }
        assert_eq!(outcomes[0], outcomes[1]);
    }

    #[tokio::test]
    async fn cuts_a_body_after_n_bytes_with_a_transient_error() {
        let c = client(0);
        c.cut_get_body(When::Nth(1), 300_000);
        let (got, err) = body(&c, 100..900_000).await;
        assert_eq!(got.len(), 300_000);
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i + 100) as u8), "the bytes before the cut are right");
        assert_eq!(err.unwrap().kind, ClientErrorKind::Transient);
        assert_eq!(c.bodies_cut(), 1);
        // A body shorter than the cut point is untouched, and the next GET is not cut.
        c.cut_get_body(When::Always, 500_000);
        assert_eq!(body(&c, 0..1000).await, ((0..1000u32).map(|i| i as u8).collect(), None));
        c.clear();
        assert_eq!(body(&c, 0..900_000).await.0.len(), 900_000);
        assert_eq!(c.bodies_cut(), 1);
        assert_eq!(c.get_bytes_requested(), 899_900 + 1000 + 900_000);
    }

    #[tokio::test]
    async fn delays_and_ignoring_if_match() {
        let c = client(0);
        let old = c.inner().head_object("k").await.unwrap().etag;
        c.inner().insert("k", "new");
        assert_eq!(c.get_object("k", 0..3, Some(&old)).await.unwrap_err().kind, ClientErrorKind::PreconditionFailed);
        c.inject(S3Operation::GetObject, When::Always, Fault::IgnoreIfMatch);
        let r = c.get_object("k", 0..3, Some(&old)).await.unwrap();
        assert_ne!(r.etag, old, "the server sent another version; only the ETag tells");
        c.clear();
        c.delay(S3Operation::HeadObject, Duration::from_millis(30));
        let t = std::time::Instant::now();
        c.head_object("k").await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(30));
    }
}
