//! Rename (`--allow-rename`): server-side copy pinned to the source's ETag, then delete.
//!
//! - A file being written here (not uploaded yet) is renamed in the namespace and its upload
//!   retargeted: it lands at its new name when closed, with no copy. Once its first part went
//!   out (files over `--write-part-size`), the multipart upload is bound to the old key: EBUSY.
//! - A file in S3: CopyObject (UploadPartCopy in parallel parts beyond 5 GiB) with
//!   `x-amz-copy-source-if-match` = the ETag it had, and `If-None-Match: *` on the destination
//!   unless it replaces one (`--allow-overwrite`); then DeleteObject of the source.
//! - A directory: every object under its key, at most `--rename-dir-limit` (else EXDEV, and `mv`
//!   copies instead), copied in parallel, then the sources deleted. A local (mkdir) directory is
//!   renamed in the namespace only.
//! - Crash safety: before the first copy the moves are made durable ([`intent`]); the next
//!   mount finishes an interrupted rename. A source is deleted only after its copy exists, so no
//!   object is ever under neither name. A copy that fails (source changed: ESTALE) undoes the
//!   copies already made and leaves the sources as they were.
//! - Caches: the namespace learns the new names at once; each pinned copy is reported to the
//!   client ([`ObjectClient::copied`]) so the disk cache serves the source's blocks under the
//!   new name. A refused copy (412: the source changed, or the target appeared) is
//!   [`FsError::RenameConflict`] (ESTALE; the kernel retries the rename once).
//! - Refused: RENAME_EXCHANGE and RENAME_WHITEOUT (EINVAL), a source that is open (EBUSY), a
//!   directory into itself (EINVAL). RENAME_NOREPLACE gives EEXIST when the target exists.

pub mod intent;

use std::ffi::OsStr;

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};

use crate::client::{
    ClientError, ClientErrorKind, CopyOptions, ETag, ListRequest, ObjectClient, PinnedCopy, PutOptions, RenameOptions,
    UploadedPart,
};
use crate::escape::escaped;
use crate::fs::namespace::{InodeKind, LocalState, RemoteEntry};
use crate::fs::write::WriteState;
use crate::fs::{FsError, Handle, S3Filesystem};
use intent::{IntentLog, Move};

/// Copies (and deletes) in flight at once during a directory rename or multipart copy.
const PARALLEL: usize = 16;

/// One object to move, with its size (for choosing CopyObject or UploadPartCopy).
struct Planned {
    mv: Move,
    size: u64,
}

impl S3Filesystem {
    /// Where rename intents are made durable; without it renames still work, but one
    /// interrupted by a crash is not finished at the next mount (tests only).
    pub fn with_rename_intents(mut self, log: IntentLog) -> Self {
        self.intents = Some(log);
        self
    }

    /// rename(2)/renameat2(2) of `parent/name` to `newparent/newname`.
    pub async fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<(), FsError> {
        // Directory buckets rename files atomically (RenameObject): allowed without the flag,
        // as Mountpoint does there. Anything else needs --allow-rename.
        let atomic = self.is_directory_bucket();
        if !self.config.allow_rename && !atomic {
            return Err(self.refuse("rename"));
        }
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return Err(FsError::RenameFlags(flags));
        }
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let (dir, name) = self.writable_dir(parent, name)?;
        let (newdir, newname) = self.writable_dir(newparent, newname)?;
        let (src_kind, src_local) = match self.ns.local_child(parent, &name) {
            Some(local) => (local.kind, Some(local)),
            None => match self.resolve(&dir.key, &name).await? {
                Some(e) => (e.kind, None),
                None => return Err(FsError::NotFound { parent, name }),
            },
        };
        if parent == newparent && name == newname {
            return Ok(());
        }
        if src_kind == InodeKind::Directory && !self.config.allow_rename {
            // RenameObject moves one object; a directory is many (see SEMANTICS.md).
            return Err(FsError::NotSupported("renaming a directory without --allow-rename"));
        }
        // A symlink (--posix-metadata) is an object like a file: it moves the same way.
        let src_key = match src_kind {
            InodeKind::File | InodeKind::Symlink => format!("{}{name}", dir.key),
            InodeKind::Directory => format!("{}{name}/", dir.key),
        };
        let src_node = self.ns.child(parent, &name);
        if let Some(node) = &src_node {
            if src_kind == InodeKind::Directory && self.ns.is_within(newparent, node.ino) {
                return Err(FsError::RenameIntoItself { key: src_key });
            }
            if node.local != Some(LocalState::File) && self.ns.is_open_within(node.ino) {
                return Err(FsError::RenameBusy { key: src_key, why: "it (or a file inside it) is open" });
            }
        }
        // What the target is now.
        let dst_local = self.ns.local_child(newparent, &newname);
        let dst_kind = match &dst_local {
            Some(local) => Some(local.kind),
            None => self.resolve(&newdir.key, &newname).await?.map(|e| e.kind),
        };
        let replace = match (src_kind, dst_kind) {
            (_, None) => false,
            _ if noreplace => return Err(FsError::AlreadyExists { key: format!("{}{newname}", newdir.key) }),
            (InodeKind::File | InodeKind::Symlink, Some(InodeKind::Directory)) => {
                return Err(FsError::IsADirectory(newparent));
            }
            (InodeKind::Directory, Some(InodeKind::File | InodeKind::Symlink)) => {
                return Err(FsError::NotADirectory(newparent));
            }
            (InodeKind::Directory, Some(InodeKind::Directory)) => match &dst_local {
                // An empty directory made here is replaced, as rename(2) replaces empty
                // directories (abandoned below, once nothing can fail any more before the move).
                Some(d)
                    if d.local == Some(LocalState::Directory)
                        && !self.ns.has_local_children(d.ino)
                        && !self.remote_under(&d.key).await? =>
                {
                    false
                }
                _ => return Err(FsError::NotEmpty { key: format!("{}{newname}/", newdir.key) }),
            },
            (InodeKind::File | InodeKind::Symlink, Some(InodeKind::File | InodeKind::Symlink)) => {
                if !self.config.allow_overwrite {
                    return Err(FsError::PermissionDenied(format!(
                        "{:?} exists and overwriting is disabled; use the --allow-overwrite mount option to enable it",
                        format!("{}{newname}", newdir.key)
                    )));
                }
                if dst_local.is_some() {
                    return Err(FsError::RenameBusy {
                        key: format!("{}{newname}", newdir.key),
                        why: "the target is being written",
                    });
                }
                true
            }
        };
        let dst_key = match src_kind {
            InodeKind::File | InodeKind::Symlink => format!("{}{newname}", newdir.key),
            InodeKind::Directory => format!("{}{newname}/", newdir.key),
        };
        let local_only = match (src_kind, src_local.as_ref().map(|l| l.local)) {
            (InodeKind::Directory, Some(Some(LocalState::Directory))) => !self.remote_under(&src_key).await?,
            _ => false,
        };
        if src_kind == InodeKind::Directory
            && !local_only
            && let Some(node) = &src_node
            && self.ns.has_local_children(node.ino)
        {
            return Err(FsError::RenameBusy { key: src_key, why: "files inside it are being written" });
        }
        let abandon = dst_local.filter(|d| d.kind == InodeKind::Directory).map(|d| d.ino);
        if local_only {
            // Only local: nothing in S3 to move (files being written inside are retargeted).
            self.retarget_all_within(src_node.as_ref().map_or(0, |n| n.ino), &src_key, &dst_key).await?;
            if let Some(ino) = abandon {
                self.ns.abandon_local(ino);
            }
            return self.ns.rename(parent, &name, newparent, &newname, src_kind, None, &[]);
        }
        match (src_kind, src_local.map(|l| l.local)) {
            (InodeKind::File, Some(Some(LocalState::File))) => {
                let ino = src_node.as_ref().map(|n| n.ino).ok_or(FsError::UnknownInode(0))?;
                self.retarget(ino, &src_key, dst_key, replace).await?;
                self.ns.rename(parent, &name, newparent, &newname, src_kind, None, &[])
            }
            (InodeKind::File | InodeKind::Symlink, _) if atomic => {
                let options = RenameOptions { destination_if_none_match_any: !replace, ..RenameOptions::default() };
                self.client
                    .rename_object(&src_key, &dst_key, &options)
                    .await
                    .map_err(|e| FsError::client("rename", &src_key, e))?;
                // RenameObject keeps the object (ETag, size, times): the inode's stat stays right.
                self.ns.rename(parent, &name, newparent, &newname, src_kind, None, &[])
            }
            (InodeKind::File | InodeKind::Symlink, _) => {
                let meta =
                    self.client.head_object(&src_key).await.map_err(|e| FsError::client("rename", &src_key, e))?;
                // The copy keeps the object's metadata, attributes included.
                let posix = self.config.posix_metadata.then(|| crate::fs::posix::ops::attrs_of(&meta));
                let planned =
                    vec![Planned { mv: Move { from: src_key, to: dst_key, etag: meta.etag }, size: meta.size }];
                let copied = self.move_objects(planned, replace).await?;
                let entry = copied.into_iter().next().map(|(etag, size)| RemoteEntry {
                    kind: src_kind,
                    size,
                    mtime: std::time::SystemTime::now(),
                    etag: Some(etag),
                    storage_class: self.config.storage_class.clone(),
                    archived: false,
                    posix,
                });
                self.ns.rename(parent, &name, newparent, &newname, src_kind, entry.as_ref(), &[])
            }
            (InodeKind::Directory, _) => {
                let planned = self.plan_directory(&src_key, &dst_key).await?;
                let moved: Vec<String> = planned.iter().map(|p| p.mv.from.clone()).collect();
                self.move_objects(planned, false).await?;
                if let Some(ino) = abandon {
                    self.ns.abandon_local(ino);
                }
                let entry = RemoteEntry::directory(self.mount_time);
                self.ns.rename(parent, &name, newparent, &newname, src_kind, Some(&entry), &moved)
            }
        }
    }

    /// S3 Express One Zone directory buckets (names ending in `--x-s3`) have RenameObject.
    fn is_directory_bucket(&self) -> bool {
        self.client.bucket().ends_with("--x-s3")
    }

    /// Points the upload of local file `ino` at `dst_key`.
    async fn retarget(&self, ino: u64, src_key: &str, dst_key: String, replace: bool) -> Result<(), FsError> {
        let writer = self.files.lock().unwrap().values().find_map(|h| match h {
            Handle::Write(w) if w.ino == ino => Some(w.clone()),
            _ => None,
        });
        let Some(writer) = writer else { return Ok(()) };
        let mut state = writer.state.lock().await;
        if let WriteState::Writing(upload) = &mut *state
            && !upload.retarget(dst_key, replace)
        {
            return Err(FsError::RenameBusy {
                key: src_key.to_string(),
                why: "its upload has started (larger than one part); rename it after closing it",
            });
        }
        Ok(())
    }

    /// Retargets every file being written below local directory `ino` (from under `src` to
    /// under `dst`); fails without changing any if one cannot be.
    async fn retarget_all_within(&self, ino: u64, src: &str, dst: &str) -> Result<(), FsError> {
        let writers: Vec<_> = self
            .files
            .lock()
            .unwrap()
            .values()
            .filter_map(|h| match h {
                Handle::Write(w) if self.ns.is_within(w.ino, ino) => Some(w.clone()),
                _ => None,
            })
            .collect();
        let mut states = Vec::new();
        for w in &writers {
            states.push(w.state.lock().await);
        }
        let retargetable = states.iter().all(|s| match &**s {
            WriteState::Writing(u) => u.key().starts_with(src) && u.size() <= self.config.write_part_size,
            WriteState::Done(_) => true,
        });
        if !retargetable {
            return Err(FsError::RenameBusy { key: src.to_string(), why: "a large file inside it is being written" });
        }
        for state in &mut states {
            if let WriteState::Writing(upload) = &mut **state {
                let key = format!("{dst}{}", &upload.key()[src.len()..]);
                if !upload.retarget(key, false) {
                    return Err(FsError::RenameBusy {
                        key: src.to_string(),
                        why: "a file inside it is being uploaded",
                    });
                }
            }
        }
        Ok(())
    }

    /// True if S3 holds any object under `prefix`.
    async fn remote_under(&self, prefix: &str) -> Result<bool, FsError> {
        let request =
            ListRequest { prefix: prefix.to_string(), delimiter: None, continuation_token: None, max_keys: 1 };
        let page = self.client.list_objects(&request).await.map_err(|e| FsError::client("list", prefix, e))?;
        Ok(!page.objects.is_empty() || !page.common_prefixes.is_empty())
    }

    /// Every object under `src` (at most the limit), and where it goes under `dst`.
    async fn plan_directory(&self, src: &str, dst: &str) -> Result<Vec<Planned>, FsError> {
        let limit = self.config.rename_dir_limit;
        let mut planned = Vec::new();
        let mut token = None;
        loop {
            let request =
                ListRequest { prefix: src.to_string(), delimiter: None, continuation_token: token, max_keys: 1000 };
            let page = self.client.list_objects(&request).await.map_err(|e| FsError::client("list", src, e))?;
            for object in page.objects {
                if planned.len() == limit {
                    return Err(FsError::RenameTooLarge { key: src.to_string(), limit });
                }
                let Some(rest) = object.key.strip_prefix(src) else { continue };
                let etag = match object.etag {
                    Some(etag) => etag,
                    // Listings of some stores carry no ETag: ask for it, to pin the copy.
                    None => {
                        self.client
                            .head_object(&object.key)
                            .await
                            .map_err(|e| FsError::client("rename", &object.key, e))?
                            .etag
                    }
                };
                let mv = Move { to: format!("{dst}{rest}"), from: object.key, etag };
                planned.push(Planned { mv, size: object.size });
            }
            token = page.next_continuation_token;
            if token.is_none() {
                return Ok(planned);
            }
        }
    }

    /// Copies every object to its new key (pinned to its ETag), then deletes the sources, with
    /// the intent durable in between. Returns each copy's ETag and size. A failed copy undoes
    /// the copies made; a failed delete leaves the intent for the next mount to finish.
    async fn move_objects(&self, planned: Vec<Planned>, replace: bool) -> Result<Vec<(ETag, u64)>, FsError> {
        let moves: Vec<Move> = planned.iter().map(|p| p.mv.clone()).collect();
        let intent = match &self.intents {
            Some(log) => Some(log.record(&moves).map_err(|e| {
                FsError::PermissionDenied(format!("cannot make the rename durable in {}: {e}", log.dir().display()))
            })?),
            None => None,
        };
        let options = self.copy_options(replace);
        // Futures made up front (not in a stream's closure), so the whole stays Send.
        let copies: Vec<BoxFuture<'_, Result<(usize, ETag), FsError>>> = planned
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let options = &options;
                Box::pin(async move { self.copy_one(p, options).await.map(|etag| (i, etag)) }) as BoxFuture<'_, _>
            })
            .collect();
        let results: Vec<Result<(usize, ETag), FsError>> =
            futures::stream::iter(copies).buffer_unordered(PARALLEL).collect().await;
        if let Some(Err(_)) = results.iter().find(|r| r.is_err()) {
            // Undo: remove the copies made; the sources were never touched.
            let made: Vec<&str> =
                results.iter().filter_map(|r| r.as_ref().ok()).map(|(i, _)| planned[*i].mv.to.as_str()).collect();
            for key in made {
                if let Err(e) = self.client.delete_object(key).await {
                    tracing::warn!(key = %escaped(key), "could not remove a copy made by a failed rename: {e}");
                }
            }
            if let Some(intent) = intent {
                intent.done();
            }
            return Err(results.into_iter().find_map(Result::err).expect("checked"));
        }
        let mut out = vec![(ETag::new(""), 0); planned.len()];
        let mut pinned = Vec::with_capacity(planned.len());
        for (i, etag) in results.into_iter().flatten() {
            let Planned { mv, size } = &planned[i];
            pinned.push(pinned_copy(mv, &etag, *size));
            out[i] = (etag, *size);
        }
        // Each copy was pinned to its source's ETag: the disk cache reuses its blocks.
        self.client.copied(&pinned).await;
        let deletes: Vec<BoxFuture<'_, Result<(), FsError>>> = moves
            .iter()
            .map(|m| {
                Box::pin(async move {
                    self.client.delete_object(&m.from).await.map_err(|e| FsError::client("delete", &m.from, e))
                }) as BoxFuture<'_, _>
            })
            .collect();
        let deleted: Result<Vec<()>, FsError> =
            futures::stream::iter(deletes).buffer_unordered(PARALLEL).try_collect().await;
        match deleted {
            Ok(_) => {
                if let Some(intent) = intent {
                    intent.done();
                }
                tracing::info!(objects = moves.len(), bytes = planned.iter().map(|p| p.size).sum::<u64>(), "renamed");
                Ok(out)
            }
            Err(e) => {
                tracing::warn!(
                    "a rename copied everything but could not delete every source; the next mount finishes it: {e}"
                );
                Err(e)
            }
        }
    }

    fn copy_options(&self, replace: bool) -> CopyOptions {
        CopyOptions {
            source_if_match: None,
            replace_metadata: false,
            dest: PutOptions {
                if_none_match_any: !replace,
                storage_class: self.config.storage_class.clone(),
                sse: self.config.sse.clone(),
                sse_kms_key_id: self.config.sse_kms_key_id.clone(),
                ..PutOptions::default()
            },
        }
    }

    /// Copies one object: CopyObject, or parallel UploadPartCopy beyond 5 GiB.
    async fn copy_one(&self, p: &Planned, options: &CopyOptions) -> Result<ETag, FsError> {
        copy_object(self.client.as_ref(), &p.mv, p.size, options, self.copy_limits()).await
    }

    /// Largest single CopyObject and multipart-copy part size (`single_copy_limit`).
    fn copy_limits(&self) -> (u64, u64) {
        (self.config.single_copy_limit, self.config.copy_part_size)
    }

    /// Finishes renames an earlier process left unfinished (see [`intent`]). Called at mount.
    pub async fn recover_renames(&self) {
        let Some(log) = &self.intents else { return };
        for (file, moves) in log.pending() {
            let moves = match moves {
                Ok(moves) => moves,
                Err(why) => {
                    tracing::warn!(path = %file.path().display(), "an unfinished rename's intent is unusable ({why}); left alone");
                    continue;
                }
            };
            let options = CopyOptions {
                dest: PutOptions { if_none_match_any: false, ..self.copy_options(true).dest },
                ..CopyOptions::default()
            };
            let mut finished = true;
            for m in &moves {
                match self.client.head_object(&m.from).await {
                    Ok(meta) if meta.etag == m.etag => {
                        let done = async {
                            let etag =
                                copy_object(self.client.as_ref(), m, meta.size, &options, self.copy_limits()).await?;
                            self.client.copied(&[pinned_copy(m, &etag, meta.size)]).await;
                            self.client.delete_object(&m.from).await.map_err(|e| FsError::client("delete", &m.from, e))
                        };
                        if let Err(e) = done.await {
                            tracing::warn!(key = %escaped(&m.from), "cannot finish an interrupted rename now (tried again at the next mount): {e}");
                            finished = false;
                        }
                    }
                    Ok(_) => {
                        tracing::warn!(key = %escaped(&m.from), "an interrupted rename's source was replaced by another client; left where it is")
                    }
                    Err(e) if e.kind == ClientErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(key = %escaped(&m.from), "cannot finish an interrupted rename now (tried again at the next mount): {e}");
                        finished = false;
                    }
                }
            }
            if finished {
                tracing::info!(objects = moves.len(), "finished a rename an earlier process left unfinished");
                file.done();
            }
        }
    }
}

/// Copies `m.from` to `m.to` pinned to `m.etag`: one CopyObject up to `single` bytes (5 GiB),
/// else a multipart upload of UploadPartCopy parts of `part` bytes in parallel (aborted on
/// failure).
async fn copy_object(
    client: &dyn ObjectClient,
    m: &Move,
    size: u64,
    options: &CopyOptions,
    (single, part): (u64, u64),
) -> Result<ETag, FsError> {
    let options = CopyOptions { source_if_match: Some(m.etag.clone()), ..options.clone() };
    if size <= single {
        return client.copy_object(&m.from, &m.to, &options).await.map(|r| r.etag).map_err(|e| copy_error(&m.from, e));
    }
    let id =
        client.create_multipart_upload(&m.to, &options.dest).await.map_err(|e| FsError::client("rename", &m.to, e))?;
    let ranges: Vec<(u32, std::ops::Range<u64>)> =
        (0..size.div_ceil(part)).map(|i| (i as u32 + 1, i * part..((i + 1) * part).min(size))).collect();
    let id_ref = &id;
    let part_copies: Vec<BoxFuture<'_, Result<UploadedPart, ClientError>>> = ranges
        .into_iter()
        .map(|(n, range)| {
            Box::pin(async move { client.upload_part_copy(&m.to, id_ref, n, &m.from, range, Some(&m.etag)).await })
                as BoxFuture<'_, _>
        })
        .collect();
    let parts: Result<Vec<UploadedPart>, _> =
        futures::stream::iter(part_copies).buffered(PARALLEL / 2).try_collect().await;
    let result = match parts {
        Ok(parts) => client.complete_multipart_upload(&m.to, &id, &parts, &options.dest).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(r) => Ok(r.etag),
        Err(e) => {
            let _ = client.abort_multipart_upload(&m.to, &id).await;
            Err(copy_error(&m.from, e))
        }
    }
}

/// What the cache is told of a finished copy of `m`.
fn pinned_copy(m: &Move, etag: &ETag, size: u64) -> PinnedCopy {
    PinnedCopy {
        source_key: m.from.clone(),
        source_etag: m.etag.clone(),
        dest_key: m.to.clone(),
        dest_etag: etag.clone(),
        size,
    }
}

/// A refused copy (412) is a conflict with another client (ESTALE), any other error as usual.
fn copy_error(key: &str, e: ClientError) -> FsError {
    match e.kind {
        ClientErrorKind::PreconditionFailed => FsError::RenameConflict { key: key.to_string() },
        _ => FsError::client("rename", key, e),
    }
}

#[cfg(test)]
mod tests;
