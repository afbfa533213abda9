//! Directory listings: ListObjectsV2 pages streamed into readdir replies.
//!
//! A [`DirHandle`] fetches one page (up to 1000 keys) at a time, so `ls` of a huge directory
//! starts at once and holds at most two pages in memory: with [`DirListing::prefetching`], the
//! request for the next page goes out as soon as a page arrives, so it is on its way while the
//! kernel consumes this one (a listing abandoned halfway costs that one request more). Entry offsets are positions: 0 is `.`, 1 is `..`, then listing order.
//! Entries stay buffered until the kernel asks for a later offset, so a repeated request is
//! answered again; offset 0 restarts the listing (rewinddir).
//!
//! Shadowing: a file `a` sorts before the prefix `a/` (and keys like `a!x` may sort between),
//! so a listed file is held back until the listing has passed `a/`; if `a/` shows up, the
//! directory replaces the file.
//!
//! Directory buckets (S3 Express One Zone) list in no particular order ([`DirListing::unordered`]),
//! so nothing can be concluded from where the listing is. There a directory is listed as soon
//! as it arrives (it always wins) and its name remembered; a file whose directory was seen is
//! dropped, and the others are held until the listing ends. So that memory stays bounded in
//! huge directories, at most [`UNORDERED_HELD_FILES`] files are held: past that, the held files
//! are dropped and the listing goes on for directories only, then lists once more from the
//! start for the files (one more ListObjectsV2 per page). Memory is then one page plus the names
//! of the subdirectories; every name is listed once, and never a file beside its directory.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use crate::client::{ClientError, ListPage, ListRequest, ObjectClient};
use crate::escape::escaped;
use crate::fs::FsError;
use crate::fs::namespace::names::{ListedName, classify_object, classify_prefix};
use crate::fs::namespace::{InodeKind, RemoteEntry};

/// Most files an unordered listing holds back before it lists directories first (see the
/// module notes): about 200 bytes each, so a few MiB per open directory at most.
pub const UNORDERED_HELD_FILES: usize = 16_384;

/// Where an unordered listing is (see the module notes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// One pass: directories listed at once, files held until the end.
    Single,
    /// Too many files to hold: this pass lists directories only.
    Directories,
    /// The second pass: every directory is known, files are listed at once.
    Files,
}

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
    /// The bucket lists in no particular order (a directory bucket).
    unordered: bool,
    /// Unordered: directories listed so far (their files of the same name are hidden).
    dirs: HashSet<String>,
    pass: Pass,
    /// Unordered: most files held back in [`Pass::Single`].
    held_limit: usize,
    /// The client next pages are requested through ahead of time ([`DirListing::prefetching`]).
    prefetch: Option<Arc<dyn ObjectClient>>,
    /// The next page, requested ahead of time, with the continuation token it continues from.
    next: Option<NextPage>,
}

/// A ListObjectsV2 request sent ahead of time; aborted when dropped (rewinddir, closedir).
#[derive(Debug)]
struct NextPage {
    token: String,
    task: tokio::task::JoinHandle<Result<ListPage, ClientError>>,
}

impl Drop for NextPage {
    fn drop(&mut self) {
        self.task.abort();
    }
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
            unordered: false,
            dirs: HashSet::new(),
            pass: Pass::Single,
            held_limit: UNORDERED_HELD_FILES,
            prefetch: None,
            next: None,
        };
        listing.restart();
        listing
    }

    /// Lists a bucket whose listings come in no particular order (directory buckets), holding
    /// back at most `held_limit` files (see the module notes).
    pub fn unordered(mut self, unordered: bool, held_limit: usize) -> Self {
        self.unordered = unordered;
        self.held_limit = held_limit.max(1);
        self.restart();
        self
    }

    /// Requests each next page through `client` as soon as a page arrives (see the module note).
    pub fn prefetching(mut self, client: Arc<dyn ObjectClient>) -> Self {
        self.prefetch = Some(client);
        self
    }

    fn restart(&mut self) {
        self.next = None;
        self.front = 0;
        self.buffer = VecDeque::from([DirSlot::Dot, DirSlot::DotDot]);
        self.token = None;
        self.done = false;
        self.held.clear();
        self.dirs.clear();
        self.pass = Pass::Single;
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
        let ahead = self.next.take().filter(|n| Some(&n.token) == self.token.as_ref());
        let page = match ahead {
            Some(mut next) => match (&mut next.task).await {
                Ok(result) => result,
                // Only an abort or a panic ends the task otherwise: ask again, here.
                Err(_) => client.list_objects(&request).await,
            },
            None => client.list_objects(&request).await,
        };
        let page = page.map_err(|e| FsError::client("list directory", &self.key, e))?;
        if let (Some(client), Some(token)) = (&self.prefetch, &page.next_continuation_token) {
            let request = ListRequest { continuation_token: Some(token.clone()), ..request };
            let client = client.clone();
            let task = tokio::spawn(async move { client.list_objects(&request).await });
            self.next = Some(NextPage { token: token.clone(), task });
        }
        if self.unordered {
            self.take_unordered_page(page);
            return Ok(());
        }
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
                        let entry = listed_file(&o);
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

    /// One page of an unordered listing (see the module notes).
    fn take_unordered_page(&mut self, page: crate::client::ListPage) {
        let prefix_len = self.key.len();
        for p in page.common_prefixes {
            let Some(relative) = p.get(prefix_len..) else { continue };
            match classify_prefix(relative) {
                // Listed once, even if a second pass (or a server) offers it again.
                ListedName::Directory(name) if self.dirs.insert(name.to_string()) => {
                    self.held.remove(name);
                    self.emit(name.to_string(), RemoteEntry::directory(self.mount_time));
                }
                ListedName::Directory(_) => {}
                // Each pass but the files-only one meets every prefix: warn once.
                _ if self.pass != Pass::Files => tracing::warn!(
                    prefix = %escaped(&p),
                    "prefix hidden: its name cannot be a directory name (., .., empty, NUL or over 255 bytes)"
                ),
                _ => {}
            }
        }
        for o in page.objects {
            if self.pass == Pass::Directories {
                continue;
            }
            let Some(relative) = o.key.get(prefix_len..) else { continue };
            match classify_object(relative) {
                ListedName::File(name) if self.dirs.contains(name) => {}
                ListedName::File(name) => {
                    let entry = listed_file(&o);
                    match self.pass {
                        Pass::Files => self.emit(name.to_string(), entry),
                        _ => {
                            self.held.insert(name.to_string(), entry);
                        }
                    }
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
        }
        if self.pass == Pass::Single && self.held.len() > self.held_limit {
            tracing::debug!(
                key = %escaped(&self.key),
                held = self.held.len(),
                "directory too large to hold its files: listing its directories first, then its files"
            );
            self.held.clear();
            self.pass = Pass::Directories;
        }
        self.token = page.next_continuation_token;
        if self.token.is_none() && self.pass == Pass::Directories {
            // Every directory is known: list again from the start, for the files.
            self.pass = Pass::Files;
            return;
        }
        self.done = self.token.is_none();
        self.release_held();
    }

    /// Appends a settled entry to the listing.
    fn emit(&mut self, name: String, entry: RemoteEntry) {
        self.locals_pending.remove(&name);
        if let Some(collected) = &mut self.collected {
            collected.push(ListedEntry { name: name.clone(), entry: entry.clone() });
        }
        self.buffer.push_back(DirSlot::Entry(ListedEntry { name, entry }));
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
            self.emit(name, entry);
        }
        if self.done {
            for name in std::mem::take(&mut self.locals_pending).into_keys() {
                self.buffer.push_back(DirSlot::Local(name));
            }
        }
    }
}

/// What a listing says of a file: no user metadata, and an archive class taken as not restored
/// (only a lookup's HeadObject tells).
fn listed_file(o: &crate::client::ListedObject) -> RemoteEntry {
    RemoteEntry {
        kind: InodeKind::File,
        size: o.size,
        mtime: o.last_modified,
        etag: o.etag.clone(),
        storage_class: o.storage_class.clone(),
        archived: crate::client::is_archive_class(o.storage_class.as_deref()),
        posix: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::memory::InMemoryClient;

    async fn list_all(client: &InMemoryClient, key: &str, page: u32) -> Vec<(String, InodeKind)> {
        list_with(client, DirListing::new(key.to_string(), page, SystemTime::now(), vec![])).await
    }

    async fn list_with(client: &InMemoryClient, mut listing: DirListing) -> Vec<(String, InodeKind)> {
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
    async fn prefetched_pages_give_the_same_listing_and_no_extra_request() {
        let c = Arc::new(InMemoryClient::new("b"));
        for i in 0..25 {
            c.insert(&format!("d/f{i:02}"), "x");
            c.insert(&format!("d/f{i:02}!x/y"), "x");
        }
        let plain = list_all(&c, "d/", 4).await;
        let before = c.count(crate::client::S3Operation::ListObjectsV2);
        let listing = DirListing::new("d/".into(), 4, SystemTime::now(), vec![]).prefetching(c.clone());
        assert_eq!(list_with(&c, listing).await, plain);
        assert_eq!(plain.len(), 50);
        // 50 keys in pages of 4: 13 pages, each requested once (the last has no next token).
        assert_eq!(c.count(crate::client::S3Operation::ListObjectsV2) - before, before);
        // A rewind drops the page requested ahead; the listing starts again from the front.
        let mut l = DirListing::new("d/".into(), 4, SystemTime::now(), vec![]).prefetching(c.clone());
        l.seek(7, 0).unwrap();
        assert!(matches!(l.slot(c.as_ref(), 3).await.unwrap(), Some(DirSlot::Entry(e)) if e.name == "f00!x"));
        assert!(l.next.is_some(), "the second page is on its way");
        l.seek(7, 3).unwrap();
        l.seek(7, 0).unwrap();
        assert!(l.next.is_none());
        assert_eq!(
            l.slot(c.as_ref(), 2).await.unwrap().map(|s| matches!(s, DirSlot::Entry(e) if e.name == "f00")),
            Some(true)
        );
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

    /// What readdir must show for `keys` in directory `dir`, worked out from the rules alone:
    /// hidden keys skipped, a directory hides a file of the same name, sorted by name.
    fn expected(keys: &[String], dir: &str) -> Vec<(String, InodeKind)> {
        let mut out: BTreeMap<String, InodeKind> = BTreeMap::new();
        for key in keys {
            let Some(relative) = key.strip_prefix(dir) else { continue };
            match relative.find('/') {
                Some(i) => {
                    if let ListedName::Directory(name) = classify_prefix(&relative[..=i]) {
                        out.insert(name.to_string(), InodeKind::Directory);
                    }
                }
                None => {
                    if let ListedName::File(name) = classify_object(relative) {
                        out.entry(name.to_string()).or_insert(InodeKind::File);
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    fn sorted(mut v: Vec<(String, InodeKind)>) -> Vec<(String, InodeKind)> {
        // Stable: a name listed twice stays twice, and shows.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    async fn directory_bucket(keys: &[String]) -> InMemoryClient {
        let c = InMemoryClient::directory_bucket("b--use1-az4--x-s3");
        for key in keys {
            c.insert(key, "x");
        }
        c
    }

    fn unordered(key: &str, page: u32, held_limit: usize) -> DirListing {
        DirListing::new(key.to_string(), page, SystemTime::now(), vec![]).unordered(true, held_limit)
    }

    #[tokio::test]
    async fn unordered_listings_shadow_and_hide_exactly_in_one_pass_or_two() {
        let keys: Vec<String> = ["a", "a!x", "a/b", "b", "c/", "d//e", "d/./f", "./x", "../y", "e\0", "z", "z/"]
            .iter()
            .map(|k| k.to_string())
            .chain((0..40).map(|i| format!("f{i:02}")))
            .chain((0..10).map(|i| format!("f{i:02}/inner")))
            .collect();
        let c = directory_bucket(&keys).await;
        let want = expected(&keys, "");
        assert!(want.contains(&("a".into(), InodeKind::Directory)) && !want.contains(&("a".into(), InodeKind::File)));
        for page in [1, 3, 7, 1000] {
            for held_limit in [1, 5, 1000] {
                for _ in 0..5 {
                    let c_list = c.count(crate::client::S3Operation::ListObjectsV2);
                    let got = list_with(&c, unordered("", page, held_limit)).await;
                    assert_eq!(sorted(got.clone()), want, "page {page}, held {held_limit}: {got:?}");
                    let requests = c.count(crate::client::S3Operation::ListObjectsV2) - c_list;
                    let pages = (keys.len() as u64).div_ceil(page as u64);
                    assert!(requests <= 2 * pages + 1, "{requests} LISTs for {pages} pages");
                }
            }
        }
        // The general purpose logic, given the same shuffled pages, lists `a` twice or loses it.
        let mut broken = false;
        for _ in 0..20 {
            let got = list_with(&c, DirListing::new(String::new(), 3, SystemTime::now(), vec![])).await;
            broken |= sorted(got) != want;
        }
        assert!(broken, "ordered merging should not survive shuffled pages");
    }

    #[tokio::test]
    async fn an_unordered_listing_holds_at_most_its_limit() {
        let keys: Vec<String> = (0..500).map(|i| format!("d/f{i:03}")).chain(["d/f007/x".to_string()]).collect();
        let c = directory_bucket(&keys).await;
        let mut listing = unordered("d/", 10, 50);
        let mut offset = 0;
        let mut most_held = 0;
        let mut names = vec![];
        loop {
            listing.seek(1, offset).unwrap();
            let slot = listing.slot(&c, offset).await.unwrap();
            most_held = most_held.max(listing.held.len());
            match slot {
                Some(DirSlot::Entry(e)) => names.push((e.name, e.entry.kind)),
                Some(_) => {}
                None => break,
            }
            offset += 1;
            // The kernel consumes entries: nothing before the offset stays buffered.
            listing.seek(1, offset).unwrap();
        }
        assert!(most_held <= 60, "held {most_held} files (limit 50, plus one page)");
        assert_eq!(sorted(names), expected(&keys, "d/"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]
        /// Any keys, any page size, any limit: an unordered listing shows exactly what the rules
        /// say, each name once.
        #[test]
        fn unordered_listings_agree_with_the_rules(
            keys in proptest::collection::vec("(a|b|c|\\.|/|!){1,5}", 0..40),
            page in 1u32..6,
            held_limit in 1usize..8,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let keys: Vec<String> = keys.into_iter().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            let got = rt.block_on(async {
                let c = directory_bucket(&keys).await;
                list_with(&c, unordered("", page, held_limit)).await
            });
            proptest::prop_assert_eq!(sorted(got), expected(&keys, ""));
        }
    }
}
