//! [`MetadataCache`]: what S3 said about names, kept for `--metadata-ttl`.
//!
//! Three maps, keyed by S3 key so they outlive the kernel's inode references:
//! - positive entries `dir/name` -> kind, size, mtime, ETag (`--metadata-ttl`);
//! - negative entries `dir/name` -> "does not exist" (`--negative-metadata-ttl`);
//! - complete listings `dir/` -> every entry of the directory (`--metadata-ttl`), which answer
//!   readdir and the lookup of any child (present or absent) with no request at all.
//!
//! `minimal` disables all three. Local changes (create, upload, unlink, mkdir) update the
//! maps at once, so this mount always sees its own writes. With `indefinite`, the operator
//! vouches that objects do not change behind the mount's back: entries, deletions and complete
//! listings are also appended to a journal next to the data cache ([`journal`]) and loaded at
//! the next mount of the same store, identity, bucket and prefix, so known paths need no request
//! even after a restart. This mount's own changes reach the journal durably before the call
//! that made them returns.

pub mod journal;

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::client::ETag;
use crate::fs::config::MetadataTtl;
use crate::fs::namespace::{InodeKind, RemoteEntry};
use crate::fs::readdir::ListedEntry;

/// Most positive and negative entries kept (Mountpoint's negative cache holds 100,000).
const MAX_ENTRIES: u64 = 1_000_000;
const MAX_NEGATIVE: u64 = 100_000;
/// Most listing entries kept, over all cached directories.
const MAX_LISTED: u64 = 2_000_000;

/// The metadata caches of one mount.
pub struct MetadataCache {
    positive: Option<Cache<String, RemoteEntry>>,
    negative: Option<Cache<String, ()>>,
    listings: Option<Cache<String, Arc<Vec<ListedEntry>>>>,
    journal: Option<journal::Journal>,
}

impl std::fmt::Debug for MetadataCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataCache")
            .field("positive", &self.positive.is_some())
            .field("negative", &self.negative.is_some())
            .field("journal", &self.journal.is_some())
            .finish()
    }
}

fn cache<V: Clone + Send + Sync + 'static>(ttl: MetadataTtl, max: u64) -> Option<Cache<String, V>> {
    match ttl {
        MetadataTtl::Minimal => None,
        ttl => Some(Cache::builder().max_capacity(max).time_to_live(ttl.as_duration()).build()),
    }
}

impl MetadataCache {
    /// Caches for the given TTLs; nothing is cached under `minimal`.
    pub fn new(ttl: MetadataTtl, negative_ttl: MetadataTtl) -> Self {
        let listings = match ttl {
            MetadataTtl::Minimal => None,
            ttl => Some(
                Cache::builder()
                    .max_capacity(MAX_LISTED)
                    .weigher(|_: &String, v: &Arc<Vec<ListedEntry>>| v.len().max(1).min(u32::MAX as usize) as u32)
                    .time_to_live(ttl.as_duration())
                    .build(),
            ),
        };
        MetadataCache {
            positive: cache(ttl, MAX_ENTRIES),
            negative: cache(negative_ttl, MAX_NEGATIVE),
            listings,
            journal: None,
        }
    }

    /// Also persists entries through `journal`, after loading what it already holds.
    pub fn with_journal(mut self, journal: journal::Journal, loaded: journal::Loaded) -> Self {
        if let Some(positive) = &self.positive {
            for (key, entry) in loaded.entries {
                positive.insert(key, entry);
            }
        }
        if let Some(listings) = &self.listings {
            for (dir, entries) in loaded.listings {
                listings.insert(dir, Arc::new(entries));
            }
        }
        self.journal = Some(journal);
        self
    }

    /// True if anything is cached at all (a TTL other than `minimal`).
    pub fn is_enabled(&self) -> bool {
        self.positive.is_some() || self.negative.is_some()
    }

    /// What is known about `dir_key` + `name`: `Some(Some(entry))` exists, `Some(None)` does
    /// not exist, `None` unknown (ask S3).
    pub fn lookup(&self, dir_key: &str, name: &str) -> Option<Option<RemoteEntry>> {
        let key = format!("{dir_key}{name}");
        if let Some(entry) = self.positive.as_ref().and_then(|c| c.get(&key)) {
            return Some(Some(entry));
        }
        if self.negative.as_ref().is_some_and(|c| c.contains_key(&key)) {
            return Some(None);
        }
        let listing = self.listings.as_ref().and_then(|c| c.get(dir_key))?;
        match listing.iter().find(|e| e.name == name) {
            Some(e) => Some(Some(e.entry.clone())),
            // A complete listing knows every child: absent from it means absent, as far as
            // negative answers may be cached at all.
            None => self.negative.as_ref().map(|_| None),
        }
    }

    /// Records what S3 said about `dir_key` + `name`.
    pub fn record(&self, dir_key: &str, name: &str, entry: Option<&RemoteEntry>) {
        let key = format!("{dir_key}{name}");
        match entry {
            Some(entry) => {
                if let Some(negative) = &self.negative {
                    negative.invalidate(&key);
                }
                if let Some(positive) = &self.positive {
                    let changed = positive.get(&key).as_ref() != Some(entry);
                    positive.insert(key.clone(), entry.clone());
                    if changed && let Some(journal) = &self.journal {
                        journal.entry(&key, entry);
                    }
                }
            }
            None => {
                if let Some(positive) = &self.positive
                    && positive.remove(&key).is_some()
                    && let Some(journal) = &self.journal
                {
                    journal.deleted(&key);
                }
                if let Some(negative) = &self.negative {
                    negative.insert(key, ());
                }
            }
        }
    }

    /// A complete listing of `dir_key`, if one is cached.
    pub fn listing(&self, dir_key: &str) -> Option<Arc<Vec<ListedEntry>>> {
        self.listings.as_ref()?.get(dir_key)
    }

    /// Keeps a complete listing of `dir_key` (and its entries).
    pub fn record_listing(&self, dir_key: &str, entries: Vec<ListedEntry>) {
        let Some(listings) = &self.listings else { return };
        for e in &entries {
            self.record(dir_key, &e.name, Some(&e.entry));
        }
        if let Some(journal) = &self.journal {
            journal.listing(dir_key);
        }
        listings.insert(dir_key.to_string(), Arc::new(entries));
    }

    /// This mount created or replaced `dir_key` + `name` (an upload completed). Journaled
    /// durably before returning: a complete listing already on disk must not hide it.
    pub fn created(&self, dir_key: &str, name: &str, entry: &RemoteEntry) {
        self.record(dir_key, name, Some(entry));
        self.edit_listing(dir_key, |entries| {
            entries.retain(|e| e.name != name);
            entries.push(ListedEntry { name: name.to_string(), entry: entry.clone() });
            entries.sort_by(|a, b| a.name.cmp(&b.name));
        });
        if let Some(journal) = &self.journal {
            // Also writes the entry `record` buffered (or an equal one buffered before).
            journal.mutation(|_| {});
        }
    }

    /// This mount deleted `dir_key` + `name`. Journaled durably before returning, so neither
    /// the entry nor an older complete listing brings it back after a remount.
    pub fn removed(&self, dir_key: &str, name: &str) {
        let key = format!("{dir_key}{name}");
        // As `record(None)`, but the deletion is journaled (once) durably below.
        if let Some(positive) = &self.positive {
            positive.invalidate(&key);
        }
        if let Some(negative) = &self.negative {
            negative.insert(key.clone(), ());
        }
        self.edit_listing(dir_key, |entries| entries.retain(|e| e.name != name));
        if let Some(journal) = &self.journal {
            journal.mutation(|j| j.deleted(&key));
        }
    }

    /// `old_dir` + `old_name` was renamed to `new_dir` + `new_name` (now `entry`, when known).
    /// For a directory, everything cached under either key is dropped and the `moved` old object
    /// keys journalled as deleted, so no cached answer about the old tree survives, even after a
    /// remount. Journaled durably before returning.
    #[allow(clippy::too_many_arguments)]
    pub fn moved(
        &self,
        old_dir: &str,
        old_name: &str,
        new_dir: &str,
        new_name: &str,
        entry: Option<&RemoteEntry>,
        kind: InodeKind,
        moved: &[String],
    ) {
        if kind == InodeKind::Directory {
            let (old_tree, new_tree) = (format!("{old_dir}{old_name}/"), format!("{new_dir}{new_name}/"));
            let under = |k: &str| k.starts_with(&old_tree) || k.starts_with(&new_tree);
            if let Some(positive) = &self.positive {
                for (key, _) in positive.iter() {
                    if under(&key) {
                        positive.invalidate(key.as_str());
                        if let Some(journal) = &self.journal {
                            journal.deleted(&key);
                        }
                    }
                }
            }
            if let Some(negative) = &self.negative {
                for (key, _) in negative.iter() {
                    if under(&key) {
                        negative.invalidate(key.as_str());
                    }
                }
            }
            if let Some(listings) = &self.listings {
                for (key, _) in listings.iter() {
                    if under(&key) {
                        listings.invalidate(key.as_str());
                    }
                }
            }
            if let Some(journal) = &self.journal {
                for key in moved {
                    journal.deleted(key);
                }
            }
        }
        self.removed(old_dir, old_name);
        match entry {
            Some(entry) => self.created(new_dir, new_name, entry),
            None => self.forget(new_dir, new_name),
        }
    }

    /// S3 refused `etag` for `dir_key` + `name` (412 on an If-Match GET): the object was replaced
    /// or deleted, so an entry with that ETag (or none) and the listing holding it are dropped,
    /// and the next lookup asks S3.
    pub fn stale(&self, dir_key: &str, name: &str, etag: &ETag) {
        let key = format!("{dir_key}{name}");
        let proven_stale = |e: &RemoteEntry| e.etag.as_ref().is_none_or(|known| known == etag);
        if let Some(positive) = &self.positive
            && positive.get(&key).is_some_and(|e| proven_stale(&e))
        {
            positive.invalidate(&key);
        }
        if let Some(listings) = &self.listings
            && listings.get(dir_key).is_some_and(|l| l.iter().any(|e| e.name == name && proven_stale(&e.entry)))
        {
            listings.invalidate(dir_key);
        }
    }

    /// Forgets `dir_key` + `name` (a lookup must ask S3 again), e.g. before creating it here.
    pub fn forget(&self, dir_key: &str, name: &str) {
        let key = format!("{dir_key}{name}");
        if let Some(negative) = &self.negative {
            negative.invalidate(&key);
        }
    }

    fn edit_listing(&self, dir_key: &str, edit: impl FnOnce(&mut Vec<ListedEntry>)) {
        let Some(listings) = &self.listings else { return };
        if let Some(listing) = listings.get(dir_key) {
            let mut entries = listing.as_ref().clone();
            edit(&mut entries);
            listings.insert(dir_key.to_string(), Arc::new(entries));
        }
    }

    /// Writes out what the journal holds in memory.
    pub fn flush(&self) {
        if let Some(journal) = &self.journal {
            journal.flush();
        }
    }

    /// The TTL the kernel and the inode table should use for entries of this cache.
    pub fn kernel_ttl(ttl: MetadataTtl, fallback: Duration) -> Duration {
        match ttl {
            MetadataTtl::Minimal => fallback,
            ttl => ttl.as_duration(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ETag;
    use crate::fs::namespace::InodeKind;
    use std::time::SystemTime;

    fn file(size: u64) -> RemoteEntry {
        RemoteEntry {
            kind: InodeKind::File,
            size,
            mtime: SystemTime::UNIX_EPOCH,
            etag: Some(ETag::new("\"e\"")),
            storage_class: None,
            archived: false,
            posix: None,
        }
    }

    #[test]
    fn minimal_caches_nothing() {
        let c = MetadataCache::new(MetadataTtl::Minimal, MetadataTtl::Minimal);
        c.record("d/", "a", Some(&file(1)));
        c.record("d/", "b", None);
        c.record_listing("d/", vec![]);
        assert_eq!(c.lookup("d/", "a"), None);
        assert_eq!(c.lookup("d/", "b"), None);
        assert!(c.listing("d/").is_none());
    }

    #[test]
    fn entries_negatives_and_complete_listings_answer_lookups() {
        let ttl = MetadataTtl::Duration(Duration::from_secs(60));
        let c = MetadataCache::new(ttl, ttl);
        c.record("d/", "a", Some(&file(1)));
        c.record("d/", "gone", None);
        assert_eq!(c.lookup("d/", "a"), Some(Some(file(1))));
        assert_eq!(c.lookup("d/", "gone"), Some(None));
        assert_eq!(c.lookup("d/", "unknown"), None);
        c.record_listing("e/", vec![ListedEntry { name: "x".into(), entry: file(2) }]);
        assert_eq!(c.lookup("e/", "x"), Some(Some(file(2))));
        assert_eq!(c.lookup("e/", "y"), Some(None), "absent from a complete listing");
        c.created("e/", "y", &file(3));
        assert_eq!(c.lookup("e/", "y"), Some(Some(file(3))));
        assert_eq!(c.listing("e/").unwrap().iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["x", "y"]);
        c.removed("e/", "x");
        assert_eq!(c.lookup("e/", "x"), Some(None));
        assert_eq!(c.listing("e/").unwrap().len(), 1);
    }

    #[test]
    fn negative_ttl_minimal_keeps_no_negatives() {
        let c = MetadataCache::new(MetadataTtl::Duration(Duration::from_secs(60)), MetadataTtl::Minimal);
        c.record("d/", "gone", None);
        assert_eq!(c.lookup("d/", "gone"), None);
        c.record_listing("e/", vec![]);
        assert_eq!(c.lookup("e/", "y"), None, "absence is not cached either");
    }
}
