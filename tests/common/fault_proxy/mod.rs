//! [`FaultProxy`]: an HTTP/1.1 proxy on 127.0.0.1 in front of a local S3 server that injects
//! faults on the wire, so end-to-end tests can break the real binary's S3 traffic.
//!
//! Point a mount's `--endpoint-url` at [`FaultProxy::endpoint`] (path style). Each downstream
//! connection gets its own upstream connection; the proxy parses only the request line, the
//! headers and the body framing (Content-Length or chunked) of each request and response, and
//! forwards every byte unchanged, so SigV4 signatures stay valid and keep-alive works.
//!
//! Faults are rules added at runtime: which requests ([`Kinds`]: GET, HEAD, LIST, PUT,
//! multipart...), when ([`When`]: the Nth such request, the first N, a share drawn from a
//! seeded generator, or always) and what ([`Fault`]: an S3 error answer such as 503 SlowDown
//! with an `x-amz-request-id`, a reset before forwarding, a lost response after the server
//! acted, a body cut short under its full Content-Length, a stall). [`FaultProxy::set_outage`]
//! makes the endpoint disappear (connections refused, or accepted and reset) and come back.
//! Everything is counted ([`ProxyStats`]): requests by kind, faults by kind and fault, and
//! requests that repeat a faulted one (the client's retries and resumes, as the wire sees them).
//!
//! [`FaultProxy::set_bucket_region`] makes the proxy play a bucket in another region, as S3 does
//! (local servers accept a signature for any region): a request whose SigV4 credential scope
//! names another region gets 301 PermanentRedirect with `x-amz-bucket-region` (counted as the
//! fault `PermanentRedirect`); the others pass.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

mod wire;
use wire::{Framing, Head, Peer, error_response, reset};

/// The request types a rule can select.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestKind {
    Get,
    Head,
    List,
    Put,
    CreateUpload,
    UploadPart,
    CompleteUpload,
    AbortUpload,
    Delete,
    Other,
}

impl RequestKind {
    fn bit(self) -> u16 {
        1 << self as u16
    }

    /// Classifies a path-style request by method and target (`/bucket/key?query`).
    pub fn of(method: &str, target: &str) -> RequestKind {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let has = |name: &str| query.split('&').any(|p| p.split('=').next() == Some(name));
        let has_key = path.trim_start_matches('/').split_once('/').is_some_and(|(_, key)| !key.is_empty());
        match method {
            "HEAD" => RequestKind::Head,
            "GET" if has("list-type") || !has_key => RequestKind::List,
            "GET" if has("uploadId") => RequestKind::Other,
            "GET" => RequestKind::Get,
            "PUT" if has("uploadId") && has("partNumber") => RequestKind::UploadPart,
            "PUT" if has_key => RequestKind::Put,
            "POST" if has("uploads") => RequestKind::CreateUpload,
            "POST" if has("uploadId") => RequestKind::CompleteUpload,
            "DELETE" if has("uploadId") => RequestKind::AbortUpload,
            "DELETE" if has_key => RequestKind::Delete,
            _ => RequestKind::Other,
        }
    }
}

/// A set of [`RequestKind`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kinds(u16);

impl Kinds {
    pub const ALL: Kinds = Kinds(u16::MAX);
    pub const GET: Kinds = Kinds(1 << RequestKind::Get as u16);
    pub const HEAD: Kinds = Kinds(1 << RequestKind::Head as u16);
    pub const LIST: Kinds = Kinds(1 << RequestKind::List as u16);
    pub const PUT: Kinds = Kinds(1 << RequestKind::Put as u16);
    /// Create, UploadPart, Complete and Abort.
    pub const MULTIPART: Kinds = Kinds(
        1 << RequestKind::CreateUpload as u16
            | 1 << RequestKind::UploadPart as u16
            | 1 << RequestKind::CompleteUpload as u16
            | 1 << RequestKind::AbortUpload as u16,
    );

    /// Just `kind`.
    pub fn only(kind: RequestKind) -> Kinds {
        Kinds(kind.bit())
    }

    pub fn contains(self, kind: RequestKind) -> bool {
        self.0 & kind.bit() != 0
    }
}

impl std::ops::BitOr for Kinds {
    type Output = Kinds;
    fn bitor(self, rhs: Kinds) -> Kinds {
        Kinds(self.0 | rhs.0)
    }
}

/// Which of the matching requests a rule applies to (counted from when it was added).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum When {
    /// Only the Nth (1 = the next one).
    Nth(u64),
    /// The next N, then never again.
    First(u64),
    /// Each with this probability, from the proxy's seeded generator.
    Share(f64),
    Always,
}

/// What happens to a request a rule applies to.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer with this status and S3 error code; the server never sees the request.
    Reply { status: u16, code: &'static str },
    /// Reset the connection without forwarding or answering.
    Reset,
    /// Forward, let the server act, then reset instead of answering: a lost response.
    DropResponse,
    /// Forward, send the response head with its full Content-Length and a random part of the
    /// body, then reset. A response without a body is dropped instead ([`Fault::DropResponse`]).
    Truncate,
    /// Wait this long, then forward.
    Stall(Duration),
    /// Forward, let the server act, then answer 200 with an XML body whose root element no S3
    /// answer has (as moto 5.2.1 answers CompleteMultipartUpload): an answer the SDK cannot read.
    UnreadableOk,
}

impl Fault {
    /// 503 SlowDown, S3's throttling answer.
    pub fn slow_down() -> Fault {
        Fault::Reply { status: 503, code: "SlowDown" }
    }

    /// 500 InternalError.
    pub fn internal_error() -> Fault {
        Fault::Reply { status: 500, code: "InternalError" }
    }

    /// The mix of the soak tests: throttling, server errors, resets, lost responses, cut bodies.
    pub fn mix() -> Vec<Fault> {
        vec![Fault::slow_down(), Fault::internal_error(), Fault::Reset, Fault::DropResponse, Fault::Truncate]
    }

    fn name(&self) -> &'static str {
        match self {
            Fault::Reply { code, .. } => code,
            Fault::Reset => "Reset",
            Fault::DropResponse => "DropResponse",
            Fault::Truncate => "Truncate",
            Fault::Stall(_) => "Stall",
            Fault::UnreadableOk => "UnreadableOk",
        }
    }
}

/// How the endpoint is reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// Serving.
    Up,
    /// Not listening: connections are refused. Open connections are closed.
    Refuse,
    /// Connections are accepted and reset at once. Open connections are closed.
    Drop,
}

/// What the proxy saw and did.
#[derive(Clone, Debug, Default)]
pub struct ProxyStats {
    /// Requests by kind (faulted ones included).
    pub requests: BTreeMap<RequestKind, u64>,
    /// Injected faults by (request kind, fault name).
    pub faults: BTreeMap<(RequestKind, &'static str), u64>,
    /// Requests for the same method and target as an earlier faulted request: retries and
    /// resumed GETs as the wire sees them.
    pub repeats: u64,
    /// Connections accepted while serving.
    pub connections: u64,
    /// Connections reset during an [`Outage::Drop`], or closed by an outage.
    pub dropped_connections: u64,
}

impl ProxyStats {
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }

    /// Requests of `kind`.
    pub fn requests_of(&self, kind: RequestKind) -> u64 {
        self.requests.get(&kind).copied().unwrap_or(0)
    }

    /// Faults named `name` (an S3 code such as `SlowDown`, or `Reset`, `Truncate`...).
    pub fn faults_named(&self, name: &str) -> u64 {
        self.faults.iter().filter(|((_, f), _)| *f == name).map(|(_, n)| n).sum()
    }
}

impl fmt::Display for ProxyStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} requests (", self.total_requests())?;
        let kinds: Vec<String> = self.requests.iter().map(|(k, n)| format!("{k:?} {n}")).collect();
        write!(f, "{}), {} faults injected (", kinds.join(", "), self.total_faults())?;
        let mut by_fault: BTreeMap<&str, u64> = BTreeMap::new();
        for ((_, name), n) in &self.faults {
            *by_fault.entry(name).or_default() += n;
        }
        let faults: Vec<String> = by_fault.iter().map(|(k, n)| format!("{k} {n}")).collect();
        write!(
            f,
            "{}), {} repeats of faulted requests, {} connections, {} dropped by outages",
            faults.join(", "),
            self.repeats,
            self.connections,
            self.dropped_connections
        )
    }
}

struct Rule {
    kinds: Kinds,
    when: When,
    faults: Vec<Fault>,
    seen: u64,
}

struct State {
    rules: Vec<Rule>,
    rng: StdRng,
    stats: ProxyStats,
    /// Faulted requests not yet seen again, by "METHOD target".
    faulted: HashMap<String, u32>,
    next_request_id: u64,
    /// Region of the bucket: requests signed for any other get a redirect.
    bucket_region: Option<String>,
}

impl State {
    /// Counts a request and picks the fault for it, if a rule fires.
    fn decide(&mut self, kind: RequestKind, signature: &str) -> Option<Fault> {
        *self.stats.requests.entry(kind).or_default() += 1;
        if let Some(pending) = self.faulted.get_mut(signature).filter(|n| **n > 0) {
            *pending -= 1;
            self.stats.repeats += 1;
        }
        let mut chosen = None;
        for rule in self.rules.iter_mut().filter(|r| r.kinds.contains(kind)) {
            rule.seen += 1;
            let fires = match rule.when {
                When::Nth(n) => rule.seen == n,
                When::First(n) => rule.seen <= n,
                When::Share(p) => self.rng.gen_bool(p.clamp(0.0, 1.0)),
                When::Always => true,
            };
            if fires && chosen.is_none() && !rule.faults.is_empty() {
                chosen = Some(rule.faults[self.rng.gen_range(0..rule.faults.len())].clone());
            }
        }
        if let Some(fault) = &chosen {
            *self.stats.faults.entry((kind, fault.name())).or_default() += 1;
            if !matches!(fault, Fault::Stall(_)) {
                *self.faulted.entry(signature.to_string()).or_default() += 1;
            }
        }
        chosen
    }
}

impl State {
    /// S3's redirect for a request signed for a region other than the bucket's, if it is one.
    fn redirect(&mut self, request: &Head, kind: RequestKind, method: &str) -> Option<Vec<u8>> {
        let bucket_region = self.bucket_region.as_deref()?;
        let signed_for = request.header("authorization").and_then(signing_region)?;
        if signed_for == bucket_region {
            return None;
        }
        *self.stats.requests.entry(kind).or_default() += 1;
        *self.stats.faults.entry((kind, "PermanentRedirect")).or_default() += 1;
        self.next_request_id += 1;
        let id = format!("FAULTPROXY{:08}", self.next_request_id);
        Some(wire::redirect_response(bucket_region, &id, method == "HEAD"))
    }
}

/// The region of a SigV4 `Authorization` header's credential scope
/// (`Credential=AKID/20250101/REGION/s3/aws4_request`).
fn signing_region(authorization: &str) -> Option<&str> {
    let credential = authorization.split("Credential=").nth(1)?;
    credential.split([',', ' ']).next()?.split('/').nth(2)
}

struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    outage: watch::Sender<Outage>,
}

/// A fault-injecting proxy in front of `upstream`; stops on drop.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT` of the proxy.
    pub endpoint: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` whose random choices come from `seed`.
    pub fn start(upstream: SocketAddr, seed: u64) -> FaultProxy {
        let (outage, _) = watch::channel(Outage::Up);
        let state = State {
            rules: vec![],
            rng: StdRng::seed_from_u64(seed),
            stats: ProxyStats::default(),
            faulted: HashMap::new(),
            next_request_id: 1,
            bucket_region: None,
        };
        let shared = Arc::new(Shared { upstream, state: Mutex::new(state), outage });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let server = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("fault-proxy-worker")
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind 127.0.0.1:0");
                ready_tx.send(listener.local_addr().expect("local addr")).expect("report address");
                rt.block_on(accept_loop(listener, server, stop_rx));
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("proxy thread");
        let addr = ready_rx.recv().expect("proxy thread failed to start");
        FaultProxy { endpoint: format!("http://{addr}"), addr, shared, stop: Some(stop_tx), thread: Some(thread) }
    }

    /// Adds a rule: requests of `kinds` selected by `when` get one of `faults` (uniformly).
    /// Rules are checked in the order added; the first that fires decides.
    pub fn inject(&self, kinds: Kinds, when: When, faults: Vec<Fault>) {
        self.shared.state.lock().unwrap().rules.push(Rule { kinds, when, faults, seen: 0 });
    }

    /// Removes every rule (the outage state is separate).
    pub fn clear(&self) {
        self.shared.state.lock().unwrap().rules.clear();
    }

    /// Plays a bucket in `region`: requests signed for another region are answered 301
    /// PermanentRedirect with `x-amz-bucket-region: region`, as S3 answers them (`None`: off).
    pub fn set_bucket_region(&self, region: Option<&str>) {
        self.shared.state.lock().unwrap().bucket_region = region.map(str::to_string);
    }

    /// Makes the endpoint disappear ([`Outage::Refuse`], [`Outage::Drop`]) or come back.
    pub fn set_outage(&self, outage: Outage) {
        self.shared.outage.send_replace(outage);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        self.shared.state.lock().unwrap().stats.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let addr = listener.local_addr().expect("local addr");
    let mut listener = Some(listener);
    let mut outage = shared.outage.subscribe();
    loop {
        let now = *outage.borrow_and_update();
        if now == Outage::Refuse {
            listener = None;
        } else if listener.is_none() {
            // SO_REUSEADDR (set by tokio) lets the port be taken again at once.
            match TcpListener::bind(addr).await {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let accept = async {
            match &listener {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = outage.changed() => continue,
            accepted = accept => {
                let Ok((socket, _)) = accepted else { continue };
                let _ = socket.set_nodelay(true);
                if now != Outage::Up {
                    reset(socket);
                    shared.state.lock().unwrap().stats.dropped_connections += 1;
                    continue;
                }
                shared.state.lock().unwrap().stats.connections += 1;
                let shared = shared.clone();
                tokio::spawn(async move {
                    let mut outage = shared.outage.subscribe();
                    let down = async move {
                        while outage.changed().await.is_ok() {
                            if *outage.borrow() != Outage::Up {
                                return;
                            }
                        }
                        std::future::pending().await
                    };
                    tokio::select! {
                        _ = Box::pin(serve_connection(socket, &shared)) => {}
                        _ = down => shared.state.lock().unwrap().stats.dropped_connections += 1,
                    }
                });
            }
        }
    }
}

/// Serves requests of one downstream connection until either side closes.
async fn serve_connection(socket: TcpStream, shared: &Shared) {
    let mut down = Peer::new(socket);
    let mut up: Option<Peer> = None;
    loop {
        let Ok(Some(raw)) = down.read_head().await else { return };
        let Ok(request) = Head::parse(&raw) else { return };
        let method = request.first.first().cloned().unwrap_or_default();
        let target = request.first.get(1).cloned().unwrap_or_default();
        let kind = RequestKind::of(&method, &target);
        let body = request.framing().unwrap_or(Framing::Length(0));
        let redirect = shared.state.lock().unwrap().redirect(&request, kind, &method);
        if let Some(response) = redirect {
            if down.copy_body(body, None).await.is_err() || down.stream.write_all(&response).await.is_err() {
                return;
            }
            if request.closes() {
                return;
            }
            continue;
        }
        let fault = shared.state.lock().unwrap().decide(kind, &format!("{method} {target}"));
        match fault {
            Some(Fault::Reply { status, code }) => {
                if down.copy_body(body, None).await.is_err() {
                    return;
                }
                let id = {
                    let mut state = shared.state.lock().unwrap();
                    state.next_request_id += 1;
                    format!("FAULTPROXY{:08}", state.next_request_id)
                };
                let response = error_response(status, code, &id, method == "HEAD");
                if down.stream.write_all(&response).await.is_err() || request.closes() {
                    return;
                }
                continue;
            }
            Some(Fault::Reset) => return reset(down.stream),
            Some(Fault::Stall(d)) => tokio::time::sleep(d).await,
            _ => {}
        }
        if up.is_none() {
            match TcpStream::connect(shared.upstream).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    up = Some(Peer::new(s));
                }
                Err(_) => return reset(down.stream),
            }
        }
        let upstream = up.as_mut().expect("connected above");
        let sent = upstream.stream.write_all(&raw).await.is_ok()
            && down.copy_body(body, Some(&mut upstream.stream)).await.is_ok();
        if !sent {
            // The server may have answered early (a 412 before reading a large body) and
            // stopped reading: pass its answer on, then close, as the rest of the body is unread.
            let early = tokio::time::timeout(Duration::from_secs(5), upstream.read_head()).await;
            let Ok(Ok(Some(raw))) = early else { return reset(down.stream) };
            let framing = Head::parse(&raw).ok().and_then(|h| h.framing()).unwrap_or(Framing::UntilClose);
            if down.stream.write_all(&raw).await.is_ok() {
                let _ = upstream.copy_body(framing, Some(&mut down.stream)).await;
            }
            let _ = down.stream.shutdown().await;
            return;
        }
        // Interim 1xx answers are forwarded as they come; the final one follows.
        let response = loop {
            let Ok(Some(raw)) = upstream.read_head().await else { return reset(down.stream) };
            let Ok(head) = Head::parse(&raw) else { return reset(down.stream) };
            let status: u16 = head.first.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            if (100..200).contains(&status) {
                if down.stream.write_all(&raw).await.is_err() {
                    return;
                }
                continue;
            }
            break (raw, head, status);
        };
        let (raw, head, status) = response;
        let framing = if method == "HEAD" || status == 204 || status == 304 {
            Framing::Length(0)
        } else {
            head.framing().unwrap_or(Framing::UntilClose)
        };
        match fault {
            Some(Fault::DropResponse) => return reset(down.stream),
            Some(Fault::UnreadableOk) => {
                if upstream.copy_body(framing, None).await.is_err() {
                    return reset(down.stream);
                }
                let body =
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<UnexpectedRoot><Done>yes</Done></UnexpectedRoot>";
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if down.stream.write_all(response.as_bytes()).await.is_err() || request.closes() {
                    return;
                }
                continue;
            }
            Some(Fault::Truncate) => {
                let Framing::Length(len @ 1..) = framing else { return reset(down.stream) };
                let keep = shared.state.lock().unwrap().rng.gen_range(0..len);
                let _ = down.stream.write_all(&raw).await;
                let _ = upstream.copy(keep, &mut Some(&mut down.stream)).await;
                let _ = down.stream.flush().await;
                // Let the bytes leave before the reset throws away what is unsent.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return reset(down.stream);
            }
            _ => {}
        }
        if down.stream.write_all(&raw).await.is_err()
            || upstream.copy_body(framing, Some(&mut down.stream)).await.is_err()
        {
            return;
        }
        if framing == Framing::UntilClose || head.closes() || request.closes() {
            let _ = down.stream.shutdown().await;
            return;
        }
    }
}
