//! Directory listings: ListObjectsV2 pages streamed into readdir replies.
//!
//! A [`DirHandle`] fetches one page (up to 1000 keys) at a time, only when the kernel has
//! consumed what was fetched before, so `ls` of a huge directory starts at once and holds one
//! page in memory. Entry offsets are positions: 0 is `.`, 1 is `..`, then listing order.
//! Entries stay buffered until the kernel asks for a later offset, so a repeated request is
//! answered again; offset 0 restarts the listing (rewinddir).
//!
//! Shadowing: a file `a` sorts before the prefix `a/` (and keys like `a!x` may sort between),
//! so a listed file is held back until the listing has passed `a/`; if `a/` shows up, the
//! directory replaces the file.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use crate::client::{ListRequest, ObjectClient};
use crate::escape::escaped;
use crate::fs::FsError;
use crate::fs::namespace::names::{ListedName, classify_object, classify_prefix};
use crate::fs::namespace::{InodeKind, RemoteEntry};

/// One directory entry, before it is given an inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedEntry {
    pub name: String,
    pub entry: RemoteEntry,
}

/// What sits at an offset of the listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirSlot {
    /// `.`
    Dot,
    /// `..`
    DotDot,
    Entry(ListedEntry),
    /// A child only this mount has (being written, or made by mkdir).
    Local(String),
}

/// The listing state behind one open directory handle.
#[derive(Debug)]
pub struct DirListing {
    /// The directory's key (empty or ending in `/`).
    key: String,
    page_size: u32,
    mount_time: SystemTime,
    /// Offset of `buffer[0]`.
    front: u64,
    buffer: VecDeque<DirSlot>,
    token: Option<String>,
    done: bool,
    /// Entries held back until the listing passes `name/`.
    held: BTreeMap<String, RemoteEntry>,
    /// The last relative key the listing produced.
    cursor: String,
    /// Children that exist only in this mount, taken when the handle opened.
    locals: Vec<(String, InodeKind)>,
    /// Locals not yet listed; they are added at the end of the listing.
    locals_pending: BTreeMap<String, InodeKind>,
    /// A complete listing from the metadata cache: no requests at all.
    cached: Option<Arc<Vec<ListedEntry>>>,
    /// Every entry listed since offset 0, kept for the metadata cache when `collect` is on.
    collected: Option<Vec<ListedEntry>>,
    collect: bool,
}

impl DirListing {
    /// A listing of the directory with key `key`, not yet fetched, that also shows `locals`
    /// (entries this mount created that S3 may not have yet).
    pub fn new(key: String, page_size: u32, mount_time: SystemTime, locals: Vec<(String, InodeKind)>) -> Self {
        let mut listing = DirListing {
            key,
            page_size,
            mount_time,
            front: 0,
            buffer: VecDeque::new(),
            token: None,
            done: false,
            held: BTreeMap::new(),
            cursor: String::new(),
            locals,
            locals_pending: BTreeMap::new(),
            cached: None,
            collected: None,
            collect: false,
        };
        listing.restart();
        listing
    }

    fn restart(&mut self) {
        self.front = 0;
        self.buffer = VecDeque::from([DirSlot::Dot, DirSlot::DotDot]);
        self.token = None;
        self.done = false;
        self.held.clear();
        self.cursor.clear();
        self.locals_pending = self.locals.iter().cloned().collect();
        self.collected = self.collect.then(Vec::new);
        if let Some(cached) = self.cached.clone() {
            for e in cached.iter() {
                self.held.insert(e.name.clone(), e.entry.clone());
            }
            self.done = true;
            self.release_held();
        }
    }

    /// Serves the listing from `entries`, a complete listing the metadata cache kept.
    pub fn with_cached(mut self, entries: Arc<Vec<ListedEntry>>) -> Self {
        self.cached = Some(entries);
        self.restart();
        self
    }

    /// Keeps every entry listed from offset 0, for [`take_complete`](Self::take_complete).
    pub fn collecting(mut self) -> Self {
        self.collect = true;
        self.collected = Some(Vec::new());
        self
    }

    /// The whole listing, once it was read from offset 0 to the end from S3 (once).
    pub fn take_complete(&mut self) -> Option<Vec<ListedEntry>> {
        if self.done && self.cached.is_none() { self.collected.take() } else { None }
    }

    /// Positions the listing at `offset`: 0 restarts it; earlier offsets than the buffered ones
    /// are an error. Entries before `offset` are dropped.
    pub fn seek(&mut self, fh: u64, offset: u64) -> Result<(), FsError> {
        if offset == 0 && self.front > 0 {
            self.restart();
        }
        if offset < self.front {
            return Err(FsError::BadDirOffset { fh, offset, expected: self.front });
        }
        while self.front < offset && !self.buffer.is_empty() {
            self.buffer.pop_front();
            self.front += 1;
        }
        Ok(())
    }

    /// The slot at `offset` (after [`seek`](Self::seek)), fetching pages as needed; `None` at
    /// the end of the directory.
    pub async fn slot(&mut self, client: &dyn ObjectClient, offset: u64) -> Result<Option<DirSlot>, FsError> {
        loop {
            let index = offset.checked_sub(self.front).expect("seek() keeps offset >= front") as usize;
            if let Some(slot) = self.buffer.get(index) {
                return Ok(Some(slot.clone()));
            }
            if self.done {
                return Ok(None);
            }
            self.fetch_page(client).await?;
        }
    }

    async fn fetch_page(&mut self, client: &dyn ObjectClient) -> Result<(), FsError> {
        let request = ListRequest {
            prefix: self.key.clone(),
            delimiter: Some("/".into()),
            continuation_token: self.token.clone(),
            max_keys: self.page_size,
        };
        let page = client.list_objects(&request).await.map_err(|e| FsError::client("list directory", &self.key, e))?;
        let prefix_len = self.key.len();
        // Objects and common prefixes are each sorted; merge them into listing order.
        let mut objects = page.objects.into_iter().peekable();
        let mut prefixes = page.common_prefixes.into_iter().peekable();
        loop {
            let take_object = match (objects.peek(), prefixes.peek()) {
                (Some(o), Some(p)) => o.key < *p,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_object {
                let o = objects.next().expect("peeked");
                let Some(relative) = o.key.get(prefix_len..) else { continue };
                match classify_object(relative) {
                    ListedName::File(name) => {
                        let entry = RemoteEntry {
                            kind: InodeKind::File,
                            size: o.size,
                            mtime: o.last_modified,
                            etag: o.etag.clone(),
                            storage_class: o.storage_class.clone(),
                            // Listings do not say whether it was restored: a lookup will.
                            archived: crate::client::is_archive_class(o.storage_class.as_deref()),
                            // Listings carry no user metadata.
                            posix: None,
                        };
                        // A directory of the same name was already seen: it wins.
                        self.held.entry(name.to_string()).or_insert(entry);
                    }
                    ListedName::SelfMarker if o.size > 0 => tracing::warn!(
                        key = %escaped(&o.key),
                        size = o.size,
                        "directory marker holds data, which cannot be read through the file system"
                    ),
                    ListedName::SelfMarker | ListedName::Directory(_) => {}
                    ListedName::Hidden => tracing::warn!(
                        key = %escaped(&o.key),
                        "object hidden: its name cannot be a file name (., .., empty, NUL or over 255 bytes)"
                    ),
                }
                self.cursor = relative.to_string();
            } else {
                let p = prefixes.next().expect("peeked");
                let Some(relative) = p.get(prefix_len..) else { continue };
                match classify_prefix(relative) {
                    ListedName::Directory(name) => {
                        self.held.insert(name.to_string(), RemoteEntry::directory(self.mount_time));
                    }
                    _ => tracing::warn!(
                        prefix = %escaped(&p),
                        "prefix hidden: its name cannot be a directory name (., .., empty, NUL or over 255 bytes)"
                    ),
                }
                self.cursor = relative.to_string();
            }
        }
        self.token = page.next_continuation_token;
        self.done = self.token.is_none();
        self.release_held();
        Ok(())
    }

    /// Moves held entries to the buffer, in name order, once nothing later can shadow them.
    fn release_held(&mut self) {
        while let Some(entry) = self.held.first_entry() {
            let settled = self.done
                || entry.get().kind == InodeKind::Directory
                || self.cursor.as_str() > format!("{}/", entry.key()).as_str();
            if !settled {
                break;
            }
            let (name, entry) = entry.remove_entry();
            self.locals_pending.remove(&name);
            if let Some(collected) = &mut self.collected {
                collected.push(ListedEntry { name: name.clone(), entry: entry.clone() });
            }
            self.buffer.push_back(DirSlot::Entry(ListedEntry { name, entry }));
        }
        if self.done {
            for name in std::mem::take(&mut self.locals_pending).into_keys() {
                self.buffer.push_back(DirSlot::Local(name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::memory::InMemoryClient;

    async fn list_all(client: &InMemoryClient, key: &str, page: u32) -> Vec<(String, InodeKind)> {
        let mut listing = DirListing::new(key.to_string(), page, SystemTime::now(), vec![]);
        let mut out = vec![];
        let mut offset = 0;
        loop {
            listing.seek(7, offset).unwrap();
            match listing.slot(client, offset).await.unwrap() {
                Some(DirSlot::Entry(e)) => out.push((e.name, e.entry.kind)),
                Some(_) => {}
                None => break,
            }
            offset += 1;
        }
        out
    }

    #[tokio::test]
    async fn directories_shadow_files_across_pages_and_hidden_keys_are_skipped() {
        let c = InMemoryClient::new("b");
        for key in ["a", "a!x", "a/b", "b", "c/", "d//e", "d/./f", "./x", "../y", "e\0", "z"] {
            c.insert(key, "x");
        }
        for page in [1, 2, 3, 1000] {
            let got = list_all(&c, "", page).await;
            let names: Vec<_> = got.iter().map(|(n, k)| (n.as_str(), *k)).collect();
            assert_eq!(
                names,
                vec![
                    ("a", InodeKind::Directory),
                    ("a!x", InodeKind::File),
                    ("b", InodeKind::File),
                    ("c", InodeKind::Directory),
                    ("d", InodeKind::Directory),
                    ("z", InodeKind::File),
                ],
                "page size {page}"
            );
        }
        // Inside d/, `d//e` and `d/./f` are hidden.
        assert_eq!(list_all(&c, "d/", 1).await, vec![]);
        // A marker is not an entry of its own directory.
        assert_eq!(list_all(&c, "c/", 1).await, vec![]);
    }

    #[tokio::test]
    async fn offsets_rewind_and_refuse_going_back() {
        let c = InMemoryClient::new("b");
        for i in 0..5 {
            c.insert(&format!("f{i}"), "x");
        }
        let mut l = DirListing::new(String::new(), 2, SystemTime::now(), vec![]);
        l.seek(1, 0).unwrap();
        assert_eq!(l.slot(&c, 0).await.unwrap(), Some(DirSlot::Dot));
        l.seek(1, 4).unwrap();
        let Some(DirSlot::Entry(e)) = l.slot(&c, 4).await.unwrap() else { panic!() };
        assert_eq!(e.name, "f2");
        // Asking again for the same offset answers again.
        l.seek(1, 4).unwrap();
        assert!(matches!(l.slot(&c, 4).await.unwrap(), Some(DirSlot::Entry(e)) if e.name == "f2"));
        assert!(matches!(l.seek(1, 3), Err(FsError::BadDirOffset { .. })));
        l.seek(1, 0).unwrap();
        assert_eq!(l.slot(&c, 1).await.unwrap(), Some(DirSlot::DotDot));
        assert_eq!(l.slot(&c, 7).await.unwrap(), None);
    }
}
