//! [`BlockStore`]: the few requests the shared cache makes on its bucket, behind a trait so the
//! cache logic can be tested on an in-memory store.

use async_trait::async_trait;
use bytes::Bytes;

use crate::client::ClientError;
#[cfg(test)]
use crate::client::ClientErrorKind;
use crate::client::aws::{AwsClient, StorePut, StoredObject};
#[cfg(test)]
use std::{collections::HashMap, sync::Mutex};

/// The cache bucket.
#[async_trait]
pub trait BlockStore: Send + Sync + 'static {
    /// The bucket's name, for messages.
    fn name(&self) -> &str;
    /// The whole object at `key` with its metadata; `None` if absent; an error past `max_len`.
    async fn get(&self, key: &str, max_len: u64) -> Result<Option<StoredObject>, ClientError>;
    /// Stores `body` at `key`; with `put.create_only`, an existing key fails with
    /// [`ClientErrorKind::PreconditionFailed`] (or a 409 conflict).
    async fn put(&self, key: &str, body: Bytes, put: &StorePut) -> Result<(), ClientError>;
    /// Deletes `key` (absent is fine).
    async fn delete(&self, key: &str) -> Result<(), ClientError>;
}

#[async_trait]
impl BlockStore for AwsClient {
    fn name(&self) -> &str {
        &self.config().bucket
    }

    async fn get(&self, key: &str, max_len: u64) -> Result<Option<StoredObject>, ClientError> {
        self.get_stored(key, max_len).await
    }

    async fn put(&self, key: &str, body: Bytes, put: &StorePut) -> Result<(), ClientError> {
        self.put_stored(key, body, put).await
    }

    async fn delete(&self, key: &str) -> Result<(), ClientError> {
        crate::client::ObjectClient::delete_object(self, key).await
    }
}

/// An in-memory cache bucket for unit tests, counting requests.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemStore {
    pub objects: Mutex<HashMap<String, StoredObject>>,
    pub gets: std::sync::atomic::AtomicU64,
    pub puts: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
#[async_trait]
impl BlockStore for MemStore {
    fn name(&self) -> &str {
        "memory"
    }

    async fn get(&self, key: &str, max_len: u64) -> Result<Option<StoredObject>, ClientError> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let object = self.objects.lock().unwrap().get(key).cloned();
        match object {
            Some(o) if o.data.len() as u64 > max_len => {
                Err(ClientError::new(ClientErrorKind::Other, "GetObject", "too long"))
            }
            o => Ok(o),
        }
    }

    async fn put(&self, key: &str, body: Bytes, put: &StorePut) -> Result<(), ClientError> {
        self.puts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut objects = self.objects.lock().unwrap();
        if put.create_only && objects.contains_key(key) {
            return Err(ClientError::new(ClientErrorKind::PreconditionFailed, "PutObject", "exists"));
        }
        objects.insert(key.to_string(), StoredObject { data: body, metadata: put.metadata.clone() });
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), ClientError> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
}
