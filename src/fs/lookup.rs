//! Remote lookup: what S3 says a name in a directory is.
//!
//! HeadObject(`dir/name`) and ListObjectsV2(prefix `dir/name/`, delimiter `/`, max-keys 1)
//! run concurrently. Any key under `dir/name/` makes it a directory, which wins over an
//! object `dir/name`: a directory answer ends the lookup without waiting for the HEAD.
//! Errors other than "no such key" are returned, never turned into "not found".

use std::time::SystemTime;

use futures::future::{Either, select};

use crate::client::{ClientErrorKind, ListRequest, ObjectClient};
use crate::fs::FsError;
use crate::fs::namespace::{InodeKind, RemoteEntry};

/// Looks up `name` in the directory whose key is `dir_key` (empty or ending in `/`).
pub async fn remote_lookup(
    client: &dyn ObjectClient,
    dir_key: &str,
    name: &str,
    mount_time: SystemTime,
) -> Result<Option<RemoteEntry>, FsError> {
    let file_key = format!("{dir_key}{name}");
    let request = ListRequest {
        prefix: format!("{file_key}/"),
        delimiter: Some("/".into()),
        continuation_token: None,
        max_keys: 1,
    };
    let head = Box::pin(client.head_object(&file_key));
    let list = Box::pin(client.list_objects(&request));

    let (list_result, head) = match select(list, head).await {
        Either::Left((list_result, head)) => (list_result, Either::Left(head)),
        Either::Right((head_result, list)) => (list.await, Either::Right(head_result)),
    };
    let page = list_result.map_err(|e| FsError::client("list directory", request.prefix.clone(), e))?;
    if !page.objects.is_empty() || !page.common_prefixes.is_empty() {
        return Ok(Some(RemoteEntry::directory(mount_time)));
    }
    let head_result = match head {
        Either::Left(pending) => pending.await,
        Either::Right(done) => done,
    };
    match head_result {
        Ok(meta) => Ok(Some(RemoteEntry {
            kind: InodeKind::File,
            size: meta.size,
            mtime: meta.last_modified,
            etag: Some(meta.etag),
            storage_class: meta.storage_class,
            archived: meta.archived,
        })),
        Err(e) if e.kind == ClientErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::client("look up", file_key.clone(), e)),
    }
}
