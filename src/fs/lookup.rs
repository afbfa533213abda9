//! Remote lookup: what S3 says a name in a directory is.
//!
//! HeadObject(`dir/name`) and ListObjectsV2(prefix `dir/name/`, delimiter `/`, max-keys 1)
//! run concurrently. Any key under `dir/name/` makes it a directory, which wins over an
//! object `dir/name`: a directory answer ends the lookup without waiting for the HEAD.
//! Errors other than "no such key" are returned, never turned into "not found".
//!
//! With `--posix-metadata` the HEAD's user metadata gives the entry its stored attributes (and
//! makes it a symlink when its mode says so), at no extra cost. A directory's attributes are on
//! its marker object `dir/name/`: the listing shows it first when it exists, and only then one
//! more HeadObject reads it.

use std::time::SystemTime;

use futures::future::{Either, select};

use crate::client::{ClientErrorKind, ListRequest, ObjectClient};
use crate::fs::FsError;
use crate::fs::namespace::{InodeKind, RemoteEntry};
use crate::fs::posix::{PosixAttrs, PosixKind, ops::attrs_of};

/// Looks up `name` in the directory whose key is `dir_key` (empty or ending in `/`).
pub async fn remote_lookup(
    client: &dyn ObjectClient,
    dir_key: &str,
    name: &str,
    mount_time: SystemTime,
    posix: bool,
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
        let marker = format!("{file_key}/");
        if posix && page.objects.first().is_some_and(|o| o.key == marker) {
            return directory_from_marker(client, &marker, mount_time).await;
        }
        let attrs = posix.then(PosixAttrs::default);
        return Ok(Some(RemoteEntry { posix: attrs, ..RemoteEntry::directory(mount_time) }));
    }
    let head_result = match head {
        Either::Left(pending) => pending.await,
        Either::Right(done) => done,
    };
    match head_result {
        Ok(meta) => {
            let attrs = posix.then(|| attrs_of(&meta));
            // Only a symlink's type changes what an object is; a stored directory type on a key
            // without the slash (old s3fs) leaves it a file.
            let symlink = attrs.is_some_and(|a| a.kind == Some(PosixKind::Symlink));
            Ok(Some(RemoteEntry {
                kind: if symlink { InodeKind::Symlink } else { InodeKind::File },
                size: meta.size,
                mtime: meta.last_modified,
                etag: Some(meta.etag),
                storage_class: meta.storage_class,
                archived: meta.archived,
                posix: attrs,
            }))
        }
        Err(e) if e.kind == ClientErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::client("look up", file_key.clone(), e)),
    }
}

/// A directory whose marker object `marker` exists: its attributes are the marker's metadata.
/// The marker vanishing meanwhile leaves a plain directory (the listing showed it has one).
async fn directory_from_marker(
    client: &dyn ObjectClient,
    marker: &str,
    mount_time: SystemTime,
) -> Result<Option<RemoteEntry>, FsError> {
    let attrs = match client.head_object(marker).await {
        Ok(meta) => PosixAttrs { mtime: attrs_of(&meta).mtime.or(Some(meta.last_modified)), ..attrs_of(&meta) },
        Err(e) if e.kind == ClientErrorKind::NotFound => PosixAttrs::default(),
        Err(e) => return Err(FsError::client("look up directory marker", marker, e)),
    };
    Ok(Some(RemoteEntry { posix: Some(attrs), ..RemoteEntry::directory(mount_time) }))
}
