//! Remote lookup: what S3 says a name in a directory is.
//!
//! A directory wins over an object of the same name: any key under `dir/name/` makes `name` a
//! directory, whatever `dir/name` is. Two ways to ask, chosen by [`LookupMode`]:
//! - **One listing** (the default on general-purpose buckets): ListObjectsV2(prefix `dir/name`,
//!   delimiter `/`). Keys sort byte-wise, so the page starts with the object `dir/name` itself
//!   when it exists, then names that continue with a byte below `/` (`name.txt`, `name-1`),
//!   then the common prefix `dir/name/` when anything is under it. A page that ends before or at
//!   `dir/name/` is followed by the dedicated check below (rare: only many such siblings cause
//!   it). A listed object carries size, ETag, time and storage class, all a lookup needs; a
//!   HeadObject follows only when the listing left something out (no ETag, as some stores do;
//!   an archive-capable storage class, whose restore state only HeadObject tells).
//! - **HEAD and LIST** (directory buckets, which list only prefixes ending in `/`, and
//!   `--posix-metadata`, which needs the HEAD's user metadata): HeadObject(`dir/name`) and
//!   ListObjectsV2(prefix `dir/name/`, delimiter `/`, max-keys 1) run concurrently; a directory
//!   answer ends the lookup without waiting for the HEAD.
//!
//! So a file or a missing name costs one request by default, two otherwise (Mountpoint always
//! sends both). Errors other than "no such key" are returned, never turned into "not found".
//!
//! With `--posix-metadata` the HEAD's user metadata gives the entry its stored attributes (and
//! makes it a symlink when its mode says so), at no extra cost. A directory's attributes are on
//! its marker object `dir/name/`: the listing shows it first when it exists, and only then one
//! more HeadObject reads it.

use std::time::SystemTime;

use futures::future::{Either, select};

use crate::client::{ClientErrorKind, ListRequest, ObjectClient, ObjectMeta, is_archive_class};
use crate::fs::FsError;
use crate::fs::namespace::{InodeKind, RemoteEntry};
use crate::fs::posix::{PosixAttrs, PosixKind, ops::attrs_of};

/// Most entries the one-listing lookup asks for: enough to get past the siblings that sort
/// between `name` and `name/` in any ordinary directory, small enough to stay a short answer.
const LOOKUP_PAGE: u32 = 64;

/// How a lookup asks S3 (see the module note).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupMode {
    /// One ListObjectsV2 of prefix `dir/name` (general-purpose buckets, default flags).
    OneListing,
    /// HeadObject and ListObjectsV2 of `dir/name/` concurrently; `posix` reads stored attributes.
    HeadAndList { posix: bool },
}

/// The lookups of one mount: the mode chosen from its flags, and whether the store refused a
/// one-listing lookup (a directory bucket mounted with `--bucket-type general-purpose`, a store
/// that lists only prefixes ending in `/`): from then on every lookup sends HEAD and LIST.
#[derive(Debug)]
pub struct Lookups {
    mode: LookupMode,
    refused: std::sync::atomic::AtomicBool,
}

impl Lookups {
    /// Lookups for a mount with these flags.
    pub fn new(posix_metadata: bool, directory_bucket: bool) -> Self {
        let mode = if posix_metadata || directory_bucket {
            LookupMode::HeadAndList { posix: posix_metadata }
        } else {
            LookupMode::OneListing
        };
        Lookups { mode, refused: false.into() }
    }

    /// Looks up `name` in the directory whose key is `dir_key` (see [`remote_lookup`]), falling
    /// back to HEAD and LIST for good once the store refuses a one-listing lookup.
    pub async fn remote(
        &self,
        client: &dyn ObjectClient,
        dir_key: &str,
        name: &str,
        mount_time: SystemTime,
    ) -> Result<Option<RemoteEntry>, FsError> {
        use std::sync::atomic::Ordering;
        let fallback = LookupMode::HeadAndList { posix: false };
        if self.mode != LookupMode::OneListing || self.refused.load(Ordering::Relaxed) {
            let mode = if self.mode == LookupMode::OneListing { fallback } else { self.mode };
            return remote_lookup(client, dir_key, name, mount_time, mode).await;
        }
        match remote_lookup(client, dir_key, name, mount_time, LookupMode::OneListing).await {
            Err(FsError::Client { source, .. }) if source.kind == ClientErrorKind::Other => {
                if !self.refused.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        "the bucket refused a listing of a prefix not ending in '/' ({source}); lookups send \
                         HeadObject and ListObjectsV2 from now on"
                    );
                }
                remote_lookup(client, dir_key, name, mount_time, fallback).await
            }
            other => other,
        }
    }
}

/// Looks up `name` in the directory whose key is `dir_key` (empty or ending in `/`).
pub async fn remote_lookup(
    client: &dyn ObjectClient,
    dir_key: &str,
    name: &str,
    mount_time: SystemTime,
    mode: LookupMode,
) -> Result<Option<RemoteEntry>, FsError> {
    match mode {
        LookupMode::OneListing => one_listing(client, &format!("{dir_key}{name}"), mount_time).await,
        LookupMode::HeadAndList { posix } => head_and_list(client, dir_key, name, mount_time, posix).await,
    }
}

/// The one-listing lookup of `file_key` (see the module note).
async fn one_listing(
    client: &dyn ObjectClient,
    file_key: &str,
    mount_time: SystemTime,
) -> Result<Option<RemoteEntry>, FsError> {
    let dir_prefix = format!("{file_key}/");
    let request = ListRequest {
        prefix: file_key.to_string(),
        delimiter: Some("/".into()),
        continuation_token: None,
        max_keys: LOOKUP_PAGE,
    };
    let page = client.list_objects(&request).await.map_err(|e| FsError::client("look up", file_key, e))?;
    // The page is in key order, so it is complete up to its last entry: past `dir/name/`, the
    // directory's absence is proven too.
    let last = page.objects.iter().map(|o| o.key.as_str()).chain(page.common_prefixes.iter().map(String::as_str)).max();
    let is_dir = page.common_prefixes.contains(&dir_prefix);
    let dir_settled = is_dir || page.next_continuation_token.is_none() || last.is_some_and(|l| l > dir_prefix.as_str());
    if is_dir || (!dir_settled && has_children(client, &dir_prefix).await?) {
        return Ok(Some(RemoteEntry::directory(mount_time)));
    }
    let Some(object) = page.objects.iter().find(|o| o.key == file_key) else { return Ok(None) };
    let class = object.storage_class.as_deref();
    if object.etag.is_none() || is_archive_class(class) || class == Some("INTELLIGENT_TIERING") {
        return match client.head_object(file_key).await {
            Ok(meta) => Ok(Some(file_entry(&meta, None))),
            // Deleted since the listing.
            Err(e) if e.kind == ClientErrorKind::NotFound => Ok(None),
            Err(e) => Err(FsError::client("look up", file_key, e)),
        };
    }
    Ok(Some(RemoteEntry {
        kind: InodeKind::File,
        size: object.size,
        mtime: object.last_modified,
        etag: object.etag.clone(),
        storage_class: object.storage_class.clone(),
        archived: false,
        posix: None,
    }))
}

/// Whether any key starts with `dir_prefix` (which ends in `/`).
async fn has_children(client: &dyn ObjectClient, dir_prefix: &str) -> Result<bool, FsError> {
    let request = ListRequest {
        prefix: dir_prefix.to_string(),
        delimiter: Some("/".into()),
        continuation_token: None,
        max_keys: 1,
    };
    let page = client.list_objects(&request).await.map_err(|e| FsError::client("list directory", dir_prefix, e))?;
    Ok(!page.objects.is_empty() || !page.common_prefixes.is_empty())
}

/// A file (or, with stored attributes saying so, a symlink) from its HeadObject.
fn file_entry(meta: &ObjectMeta, attrs: Option<PosixAttrs>) -> RemoteEntry {
    // Only a symlink's type changes what an object is; a stored directory type on a key
    // without the slash (old s3fs) leaves it a file.
    let symlink = attrs.is_some_and(|a| a.kind == Some(PosixKind::Symlink));
    RemoteEntry {
        kind: if symlink { InodeKind::Symlink } else { InodeKind::File },
        size: meta.size,
        mtime: meta.last_modified,
        etag: Some(meta.etag.clone()),
        storage_class: meta.storage_class.clone(),
        archived: meta.archived,
        posix: attrs,
    }
}

/// The HEAD-and-LIST lookup (see the module note).
async fn head_and_list(
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
        Ok(meta) => Ok(Some(file_entry(&meta, posix.then(|| attrs_of(&meta))))),
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

/// Names S3 just said do not exist, for the create that follows (`cp`, `>`, `touch`: the
/// kernel's lookup finds nothing, then it asks to create the name). Upstream's existence check
/// asks S3 again at once; a negative answer no older than the kernel's file TTL is as good as
/// that second one, and new objects are uploaded with `If-None-Match: *` anyway, so an object
/// another client creates meanwhile is never overwritten. Only the create path reads this: the
/// kernel's own lookups always ask S3 (no negative caching under `--metadata-ttl minimal`).
pub struct RecentAbsence {
    /// Key -> when S3 said it was absent (the cache's own expiry only bounds memory).
    names: moka::sync::Cache<String, std::time::Instant>,
    ttl: std::time::Duration,
}

/// Most names remembered (each lives for the file TTL, 100 ms by default).
const RECENT_ABSENT: u64 = 10_000;

impl RecentAbsence {
    /// Remembers absences for `ttl`.
    pub fn new(ttl: std::time::Duration) -> Self {
        let names = moka::sync::Cache::builder().max_capacity(RECENT_ABSENT).time_to_live(ttl).build();
        RecentAbsence { names, ttl }
    }

    /// Records what a lookup of `key` found.
    pub fn record(&self, key: &str, found: bool) {
        if found {
            self.names.invalidate(key);
        } else {
            self.names.insert(key.to_string(), std::time::Instant::now());
        }
    }

    /// True (once) if S3 said `key` did not exist within the TTL.
    pub fn take(&self, key: &str) -> bool {
        self.names.remove(key).is_some_and(|at| at.elapsed() < self.ttl)
    }
}

impl std::fmt::Debug for RecentAbsence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentAbsence").field("names", &self.names.entry_count()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::client::S3Operation;
    use crate::client::memory::InMemoryClient;

    async fn look(client: &InMemoryClient, key: &str, mode: LookupMode) -> Option<RemoteEntry> {
        let (dir, name) = key.rsplit_once('/').map_or(("", key), |(d, n)| (&key[..=d.len()], n));
        remote_lookup(client, dir, name, SystemTime::UNIX_EPOCH, mode).await.unwrap()
    }

    #[tokio::test]
    async fn one_listing_answers_a_file_a_directory_and_a_missing_name() {
        let client = InMemoryClient::new("bucket");
        let etag = client.insert("d/file", "abc");
        client.insert("d/file.txt", "x");
        client.insert("d/dir/x", "x");
        client.insert("d/both", "file under the directory's name");
        client.insert("d/both/x", "x");
        let file = look(&client, "d/file", LookupMode::OneListing).await.unwrap();
        assert_eq!((file.kind, file.size, file.etag), (InodeKind::File, 3, Some(etag)));
        assert_eq!(look(&client, "d/dir", LookupMode::OneListing).await.unwrap().kind, InodeKind::Directory);
        assert_eq!(look(&client, "d/both", LookupMode::OneListing).await.unwrap().kind, InodeKind::Directory);
        assert_eq!(look(&client, "d/missing", LookupMode::OneListing).await, None);
        assert_eq!(look(&client, "d/fil", LookupMode::OneListing).await, None, "a prefix of names is not a name");
        assert_eq!(client.count(S3Operation::ListObjectsV2), 5);
        assert_eq!(client.total_requests(), 5, "one request per lookup");
        // The same answers from HEAD and LIST, in two requests each.
        client.reset_counts();
        let posix = LookupMode::HeadAndList { posix: false };
        assert_eq!(look(&client, "d/file", posix).await.unwrap().size, 3);
        assert_eq!(look(&client, "d/missing", posix).await, None);
        assert_eq!(client.total_requests(), 4);
        assert_eq!(look(&client, "d/both", posix).await.unwrap().kind, InodeKind::Directory);
    }

    #[tokio::test]
    async fn many_names_between_name_and_name_slash_need_the_narrow_listing() {
        let client = InMemoryClient::new("bucket");
        client.insert("n", "file");
        for i in 0..LOOKUP_PAGE + 5 {
            // '.' sorts before '/': all of these come before "n/".
            client.insert(&format!("n.{i:03}"), "x");
        }
        assert_eq!(look(&client, "n", LookupMode::OneListing).await.unwrap().kind, InodeKind::File);
        assert_eq!(client.count(S3Operation::ListObjectsV2), 2, "the page ended before n/: one more listing");
        client.insert("n/child", "x");
        client.reset_counts();
        assert_eq!(look(&client, "n", LookupMode::OneListing).await.unwrap().kind, InodeKind::Directory);
        assert_eq!(client.count(S3Operation::ListObjectsV2), 2);
    }

    #[tokio::test]
    async fn archive_classes_are_asked_with_head_for_their_restore_state() {
        let client = InMemoryClient::new("bucket");
        client.insert_with_class("cold", "x", "GLACIER");
        client.insert_with_class("tiered", "x", "INTELLIGENT_TIERING");
        client.insert_with_class("ir", "x", "GLACIER_IR");
        assert!(look(&client, "cold", LookupMode::OneListing).await.unwrap().archived);
        look(&client, "tiered", LookupMode::OneListing).await.unwrap();
        assert_eq!(client.count(S3Operation::HeadObject), 2);
        assert!(!look(&client, "ir", LookupMode::OneListing).await.unwrap().archived);
        assert_eq!(client.count(S3Operation::HeadObject), 2, "GLACIER_IR is read directly: the listing is enough");
    }

    #[test]
    fn an_absence_serves_one_create_within_its_ttl() {
        let absent = RecentAbsence::new(Duration::from_millis(50));
        absent.record("a", false);
        absent.record("b", false);
        absent.record("b", true);
        assert!(absent.take("a"));
        assert!(!absent.take("a"), "used once");
        assert!(!absent.take("b"), "found since");
        absent.record("c", false);
        std::thread::sleep(Duration::from_millis(80));
        assert!(!absent.take("c"), "too old");
    }
}
