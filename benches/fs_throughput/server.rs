//! The S3 server a run measures against: the in-memory server in this process (default: its
//! costs are small next to the client's, so the client is what is measured), or a real Garage
//! (`--server garage`, a child process: what a production store costs, as in issue 15's table).
//!
//! Both are driven the same way: objects are seeded before the first workload, counts of the
//! requests a side made are taken around each run, and the server's CPU time is read from
//! `/proc`. The in-memory server stores seeds without a request and counts only the client's
//! requests; Garage is seeded with real PutObjects, and its counts (from its metrics) are taken
//! as differences around a run, so only that run's requests are in them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::common::garage::{self, GarageS3};
use crate::common::mem_server::{self, MemS3, SERVER_THREADS};

/// Which server to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Garage,
}

/// A running server with one bucket.
pub enum Server {
    Memory { s3: MemS3, seeded: Mutex<u64> },
    Garage { s3: GarageS3, baseline: Mutex<BTreeMap<String, u64>> },
}

/// PutObjects in flight while seeding Garage.
const SEED_CONCURRENCY: usize = 16;

impl Server {
    /// Starts a server of `kind` (for Garage: finds the binary, or builds it).
    pub fn start(kind: Kind) -> Result<Server, String> {
        Ok(match kind {
            Kind::Memory => Server::Memory { s3: MemS3::start(), seeded: Mutex::new(0) },
            Kind::Garage => {
                let binary = GarageS3::find_or_build()?;
                let s3 = GarageS3::start(&binary)?;
                Server::Garage { s3, baseline: Mutex::default() }
            }
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        match self {
            Server::Memory { s3, .. } => &s3.endpoint,
            Server::Garage { s3, .. } => &s3.endpoint,
        }
    }

    /// The bucket every workload uses.
    pub fn bucket(&self) -> &str {
        match self {
            Server::Memory { s3, .. } => &s3.bucket,
            Server::Garage { s3, .. } => &s3.bucket,
        }
    }

    /// The region both sides sign for.
    pub fn region(&self) -> &'static str {
        match self {
            Server::Memory { .. } => mem_server::REGION,
            Server::Garage { .. } => garage::REGION,
        }
    }

    /// Environment of a client process (mount or raw child): static credentials, region, no IMDS.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        match self {
            Server::Memory { s3, .. } => s3.env_vars(),
            Server::Garage { s3, .. } => s3.env_vars(),
        }
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        match self {
            Server::Memory { .. } => {
                format!(
                    "in-memory (`tests/common/mem_server.rs`), {SERVER_THREADS} tokio worker threads, in the benchmark process"
                )
            }
            Server::Garage { s3, .. } => format!(
                "Garage (`{}`, {}), one node, LMDB metadata, no compression, data in a temporary directory",
                s3.binary.display(),
                s3.version()
            ),
        }
    }

    /// Stores `objects` (for Garage, `SEED_CONCURRENCY` PutObjects at a time, not counted in
    /// any run). Remembers what the server holds afterwards, for [`Server::leftover`].
    pub fn seed(&self, objects: Vec<(String, Bytes)>) -> Result<(), String> {
        match self {
            Server::Memory { s3, seeded } => {
                for (key, data) in objects {
                    s3.put(&key, data);
                }
                *seeded.lock().unwrap() = s3.stored_bytes();
                Ok(())
            }
            Server::Garage { s3, .. } => {
                let (client, bucket) = (s3.sdk_client(), s3.bucket.clone());
                s3.helper().block_on(async move {
                    let puts = futures::stream::iter(objects.into_iter().map(|(key, data)| {
                        let (client, bucket) = (client.clone(), bucket.clone());
                        async move {
                            let body = ByteStream::from(data);
                            let put = client.put_object().bucket(&bucket).key(&key).body(body).send().await;
                            put.map(|_| ())
                                .map_err(|e| format!("seed {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)))
                        }
                    }));
                    puts.buffer_unordered(SEED_CONCURRENCY).try_collect::<Vec<()>>().await.map(|_| ())
                })
            }
        }
    }

    /// The bytes of an object; `None` if there is none.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        match self {
            Server::Memory { s3, .. } => s3.get(key),
            Server::Garage { s3, .. } => s3.helper().get(key).map(Bytes::from),
        }
    }

    /// Every key under `prefix`, in order.
    pub fn list_keys(&self, prefix: &str) -> Vec<String> {
        match self {
            Server::Memory { s3, .. } => s3.list_keys(prefix),
            Server::Garage { s3, .. } => s3.helper().list_keys(prefix),
        }
    }

    /// Deletes `keys` (for Garage: DeleteObjects of up to 1,000 keys each).
    pub fn delete(&self, keys: &[String]) -> Result<(), String> {
        match self {
            Server::Memory { s3, .. } => {
                keys.iter().for_each(|k| s3.delete(k));
                Ok(())
            }
            Server::Garage { s3, .. } => {
                for batch in keys.chunks(1000) {
                    let ids: Vec<ObjectIdentifier> = batch
                        .iter()
                        .map(|k| ObjectIdentifier::builder().key(k).build().map_err(|e| e.to_string()))
                        .collect::<Result<_, _>>()?;
                    let delete =
                        Delete::builder().set_objects(Some(ids)).quiet(true).build().map_err(|e| e.to_string())?;
                    let (client, bucket) = (s3.sdk_client(), s3.bucket.clone());
                    s3.helper()
                        .block_on(async move { client.delete_objects().bucket(&bucket).delete(delete).send().await })
                        .map_err(|e| format!("DeleteObjects: {}", aws_sdk_s3::error::DisplayErrorContext(e)))?;
                }
                Ok(())
            }
        }
    }

    /// What a write run left behind besides its objects (unfinished multipart uploads), if any.
    pub fn leftover(&self, prefix: &str) -> Option<String> {
        match self {
            Server::Memory { s3, seeded } => {
                let extra = s3.stored_bytes().saturating_sub(*seeded.lock().unwrap());
                (extra > 0).then(|| format!("{extra} bytes left on the server"))
            }
            Server::Garage { s3, .. } => {
                let (client, bucket, prefix) = (s3.sdk_client(), s3.bucket.clone(), prefix.to_string());
                let uploads = s3.helper().block_on(async move {
                    client.list_multipart_uploads().bucket(&bucket).prefix(&prefix).send().await
                });
                match uploads {
                    Ok(out) if out.uploads().is_empty() => None,
                    Ok(out) => Some(format!("{} unfinished multipart upload(s) left", out.uploads().len())),
                    Err(e) => Some(format!("ListMultipartUploads: {}", aws_sdk_s3::error::DisplayErrorContext(e))),
                }
            }
        }
    }

    /// Starts counting requests from zero.
    pub fn reset_counts(&self) {
        match self {
            Server::Memory { s3, .. } => s3.reset_counts(),
            Server::Garage { s3, baseline } => *baseline.lock().unwrap() = s3.request_counts(),
        }
    }

    /// Requests since [`Server::reset_counts`], by operation.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        match self {
            Server::Memory { s3, .. } => s3.request_counts().into_iter().collect(),
            Server::Garage { s3, baseline } => {
                let baseline = baseline.lock().unwrap();
                let mut counts = s3.request_counts();
                for (op, n) in counts.iter_mut() {
                    *n = n.saturating_sub(baseline.get(op).copied().unwrap_or(0));
                }
                counts.retain(|_, n| *n > 0);
                counts
            }
        }
    }

    /// CPU seconds the server has used so far.
    pub fn server_cpu_seconds(&self) -> f64 {
        match self {
            Server::Memory { s3, .. } => s3.server_cpu_seconds(),
            Server::Garage { s3, .. } => s3.server_cpu_seconds(),
        }
    }

    /// Whether the server runs in this process (its CPU is then not the readers').
    pub fn in_process(&self) -> bool {
        matches!(self, Server::Memory { .. })
    }
}
