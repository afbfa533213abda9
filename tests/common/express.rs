//! The directory-bucket emulator: [`super::mem_server::MemS3::start_express`] serves a bucket
//! named `…--use1-az4--x-s3` that is strict where S3 Express One Zone is strict.
//!
//! - **Session authentication.** CreateSession (signed for `s3express` with the caller's own
//!   keys) issues temporary keys and a session token that expire after
//!   [`ExpressOptions::session_lifetime`]. Every other request must be signed with an unexpired
//!   session's keys and carry its token in `x-amz-s3session-token`; anything else is refused
//!   (403 AccessDenied, or 400 ExpiredToken once the session is over) before it reaches the
//!   store. [`ExpressOptions::deny_create_session`] makes CreateSession fail with AccessDenied,
//!   as for a role without `s3express:CreateSession`. Read-only sessions cannot write.
//! - **Signatures** are checked for the `s3express` service ([`super::express_sigv4`]).
//! - **Listings** (in [`super::express_store`]) come back in no particular order, a new order for
//!   each listing; only `/` is accepted as a delimiter, prefixes must end in `/`, `start-after`
//!   is refused, and prefixes of multipart uploads in progress appear as common prefixes.
//! - **RenameObject** and **appends** (PutObject with `x-amz-write-offset-bytes`) as AWS
//!   documents them (see [`super::express_store`]).
//!
//! Every request is counted by operation name in the server's counters (`CreateSession` and
//! `RenameObject` included), except those of the harness key and of its sessions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hyper::body::Incoming;
use hyper::http::{HeaderValue, Request, Response, StatusCode};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::service::S3Service;
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};

use super::express_sigv4::{Authorization, canonical_request, signature};

/// The zone of every emulated directory bucket (names end in `--use1-az4--x-s3`).
pub const ZONE: &str = "use1-az4";
/// The header carrying a session token on every data request.
pub const SESSION_TOKEN_HEADER: &str = "x-amz-s3session-token";

/// How strict the emulator is, and about what.
#[derive(Clone, Debug)]
pub struct ExpressOptions {
    /// How long a session's keys are accepted (S3 Express: 5 minutes). The SDK renews a session
    /// 5 to 10 s before it ends, so a lifetime under 5 s means a CreateSession for every request.
    pub session_lifetime: Duration,
    /// Refuse CreateSession (AccessDenied), as for a role lacking `s3express:CreateSession`.
    pub deny_create_session: bool,
    /// Seed of the listing order; `None`: a new random order for every listing.
    pub list_seed: Option<u64>,
}

impl Default for ExpressOptions {
    fn default() -> Self {
        ExpressOptions { session_lifetime: Duration::from_secs(300), deny_create_session: false, list_seed: None }
    }
}

/// One session CreateSession issued.
#[derive(Clone, Debug)]
struct Session {
    secret: String,
    token: String,
    expires: SystemTime,
    read_only: bool,
    /// Requested with the harness key: its requests are not counted.
    helper: bool,
}

/// Keys, sessions and counters the front, the auth, the access check and the store share.
pub struct ExpressState {
    /// Long-term keys (access key -> (secret, is the harness key)).
    static_keys: HashMap<String, (String, bool)>,
    sessions: Mutex<HashMap<String, Session>>,
    next: AtomicU64,
    lifetime: Mutex<Duration>,
    deny_create_session: AtomicBool,
    pub(crate) list_seed: Option<u64>,
    counts: Arc<Mutex<HashMap<String, u64>>>,
    /// Sessions issued to the counted key, whatever their fate.
    sessions_issued: AtomicU64,
    /// Requests refused because their session was over.
    expired_refusals: AtomicU64,
}

impl ExpressState {
    /// State with the counted key and the harness key.
    pub fn new(
        options: &ExpressOptions,
        counted: (&str, &str),
        helper: (&str, &str),
        counts: Arc<Mutex<HashMap<String, u64>>>,
    ) -> ExpressState {
        let mut static_keys = HashMap::new();
        static_keys.insert(counted.0.to_string(), (counted.1.to_string(), false));
        static_keys.insert(helper.0.to_string(), (helper.1.to_string(), true));
        ExpressState {
            static_keys,
            sessions: Mutex::default(),
            next: AtomicU64::new(1),
            lifetime: Mutex::new(options.session_lifetime),
            deny_create_session: AtomicBool::new(options.deny_create_session),
            list_seed: options.list_seed,
            counts,
            sessions_issued: AtomicU64::new(0),
            expired_refusals: AtomicU64::new(0),
        }
    }

    /// Changes the lifetime of sessions issued from now on.
    pub fn set_session_lifetime(&self, lifetime: Duration) {
        *self.lifetime.lock().unwrap() = lifetime;
    }

    /// Starts or stops refusing CreateSession.
    pub fn set_deny_create_session(&self, deny: bool) {
        self.deny_create_session.store(deny, Ordering::Relaxed);
    }

    /// Ends every session now (their keys are refused from now on with ExpiredToken).
    pub fn expire_all_sessions(&self) {
        let past = SystemTime::now() - Duration::from_secs(1);
        self.sessions.lock().unwrap().values_mut().for_each(|s| s.expires = past);
    }

    /// Sessions issued to the counted key so far.
    pub fn sessions_issued(&self) -> u64 {
        self.sessions_issued.load(Ordering::Relaxed)
    }

    /// Requests refused because their session had expired.
    pub fn expired_refusals(&self) -> u64 {
        self.expired_refusals.load(Ordering::Relaxed)
    }

    fn secret(&self, access_key: &str) -> Option<String> {
        if let Some((secret, _)) = self.static_keys.get(access_key) {
            return Some(secret.clone());
        }
        self.sessions.lock().unwrap().get(access_key).map(|s| s.secret.clone())
    }

    /// Issues a session to `access_key` (a long-term key); returns (key, secret, token, expiry).
    pub(crate) fn create_session(
        &self,
        access_key: &str,
        read_only: bool,
    ) -> S3Result<(String, String, String, SystemTime)> {
        let Some((_, helper)) = self.static_keys.get(access_key) else {
            return Err(s3_error!(AccessDenied, "CreateSession needs long-term credentials, not a session's"));
        };
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let key = format!("ASIAEXPRESS{n:09}");
        let secret = format!("express-secret-{n}-{:016x}", rand::random::<u64>());
        let token = format!("express-token-{n}-{:032x}", rand::random::<u128>());
        let expires = SystemTime::now() + *self.lifetime.lock().unwrap();
        let session = Session { secret: secret.clone(), token: token.clone(), expires, read_only, helper: *helper };
        self.sessions.lock().unwrap().insert(key.clone(), session);
        if !helper {
            self.sessions_issued.fetch_add(1, Ordering::Relaxed);
        }
        Ok((key, secret, token, expires))
    }

    fn count(&self, op: &str) {
        *self.counts.lock().unwrap().entry(op.to_string()).or_insert(0) += 1;
    }

    /// Who may do `op`: CreateSession needs a long-term key (and is refused when denied); every
    /// other operation needs an unexpired session whose token the request carries. Counts the
    /// request unless it comes from the harness.
    pub(crate) fn authorize(
        &self,
        op: &str,
        access_key: Option<&str>,
        headers: &hyper::http::HeaderMap,
        write: bool,
    ) -> S3Result<()> {
        let Some(access_key) = access_key else {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        };
        if let Some((_, helper)) = self.static_keys.get(access_key) {
            if !helper {
                self.count(op);
            }
            if op != "CreateSession" {
                return Err(s3_error!(
                    AccessDenied,
                    "{op} on a directory bucket needs session credentials from CreateSession"
                ));
            }
            if self.deny_create_session.load(Ordering::Relaxed) {
                return Err(s3_error!(
                    AccessDenied,
                    "User is not authorized to perform: s3express:CreateSession on this bucket"
                ));
            }
            return Ok(());
        }
        let session = self.sessions.lock().unwrap().get(access_key).cloned();
        let Some(session) = session else {
            return Err(s3_error!(InvalidAccessKeyId, "The access key does not belong to a session"));
        };
        if !session.helper {
            self.count(op);
        }
        if op == "CreateSession" {
            return Err(s3_error!(AccessDenied, "CreateSession needs long-term credentials, not a session's"));
        }
        let token = headers.get(SESSION_TOKEN_HEADER).and_then(|v| v.to_str().ok());
        if token != Some(session.token.as_str()) {
            return Err(s3_error!(AccessDenied, "missing or wrong {SESSION_TOKEN_HEADER}"));
        }
        if SystemTime::now() >= session.expires {
            self.expired_refusals.fetch_add(1, Ordering::Relaxed);
            return Err(s3_error!(ExpiredToken, "The provided token has expired."));
        }
        if write && session.read_only {
            return Err(s3_error!(AccessDenied, "a ReadOnly session cannot write"));
        }
        Ok(())
    }

    /// Checks an `s3express` signature and re-signs the request for `s3` (see
    /// [`super::express_sigv4`]). Requests signed for any other service are refused: a zonal
    /// endpoint only accepts `s3express`.
    fn resign(&self, req: &mut Request<Incoming>) -> Result<(), S3Error> {
        let Some(value) = req.headers().get("authorization").and_then(|v| v.to_str().ok()) else {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        };
        let Some(mut auth) = Authorization::parse(value) else {
            return Err(s3_error!(AuthorizationHeaderMalformed, "not an AWS4-HMAC-SHA256 header signature"));
        };
        if auth.service != "s3express" {
            return Err(s3_error!(
                AuthorizationHeaderMalformed,
                "a directory bucket's zonal endpoint signs for 's3express', not '{}'",
                auth.service
            ));
        }
        let amz_date = req.headers().get("x-amz-date").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let secret = self
            .secret(&auth.access_key)
            .ok_or_else(|| s3_error!(InvalidAccessKeyId, "The AWS Access Key Id you provided does not exist"))?;
        let canonical = canonical_request(req.method(), req.uri(), req.headers(), &auth.signed_headers);
        if signature(&canonical, &auth, &amz_date, &secret) != auth.signature {
            return Err(s3_error!(SignatureDoesNotMatch, "s3express signature does not match:\n{canonical}"));
        }
        auth.service = "s3".to_string();
        auth.signature = signature(&canonical, &auth, &amz_date, &secret);
        let header = HeaderValue::from_str(&auth.header_value()).expect("ASCII header");
        req.headers_mut().insert("authorization", header);
        Ok(())
    }
}

/// Secrets of long-term keys and of live sessions, for s3s's own (second) signature check.
pub struct ExpressAuth(pub Arc<ExpressState>);

#[async_trait::async_trait]
impl S3Auth for ExpressAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.secret(access_key) {
            Some(secret) => Ok(SecretKey::from(secret)),
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}

/// Operations that change the bucket (refused to ReadOnly sessions).
fn is_write(op: &str) -> bool {
    matches!(
        op,
        "PutObject"
            | "DeleteObject"
            | "DeleteObjects"
            | "CopyObject"
            | "CreateMultipartUpload"
            | "UploadPart"
            | "UploadPartCopy"
            | "CompleteMultipartUpload"
            | "AbortMultipartUpload"
            | "RenameObject"
    )
}

/// The session check of every s3s operation.
pub struct ExpressAccess(pub Arc<ExpressState>);

#[async_trait::async_trait]
impl S3Access for ExpressAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let op = cx.s3_op().name();
        let key = cx.credentials().map(|c| c.access_key.clone());
        self.0.authorize(op, key.as_deref(), cx.headers(), is_write(op))
    }
}

/// The emulator's HTTP front: signature check for `s3express`, then s3s.
#[derive(Clone)]
pub struct ExpressFront {
    pub inner: S3Service,
    pub state: Arc<ExpressState>,
}

impl hyper::service::Service<Request<Incoming>> for ExpressFront {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        match self.state.resign(&mut req) {
            Ok(()) => hyper::service::Service::call(&self.inner, req),
            Err(e) => Box::pin(std::future::ready(Ok(error_response(&e)))),
        }
    }
}

/// An S3 error document, for refusals the front makes itself.
fn error_response(e: &S3Error) -> s3s::HttpResponse {
    let code = e.code().as_str();
    let status = match e.code() {
        S3ErrorCode::AuthorizationHeaderMalformed => StatusCode::BAD_REQUEST,
        _ => StatusCode::FORBIDDEN,
    };
    let message = e.message().unwrap_or("").replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut response = Response::new(s3s::Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/xml"));
    response
}
