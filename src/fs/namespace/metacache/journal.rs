//! [`Journal`]: the metadata a mount with `--metadata-ttl indefinite --cache DIR` learned,
//! kept in `DIR` so the next mount of the same bucket and prefix starts with it.
//!
//! An append-only text file, one record a line: `E <key> <kind> <size> <mtime ns> <etag>
//! [<attrs>]` for an entry (kind `f`, `d`, or `l` for a symlink; `attrs`, written with
//! `--posix-metadata` once a HeadObject read them: the stored POSIX attributes as the user
//! metadata they came from, `name=value` pairs joined by `,`, hex-encoded; `=` for none stored), `D <key>` for "deleted through this mount", and `L <dir key>` for "the listing of
//! this directory is complete (its entries are the `E` records under it)". Keys and ETags are
//! hex-encoded, so no key can break the format, and each line ends with the CRC32C of what
//! precedes it. A last line without its newline (a write torn by a crash) is cut at open; a
//! whole line that is edited, damaged or not even UTF-8 is skipped, loading goes on with the
//! next line, and complete listings are dropped (the lost line may have been one of their
//! entries, which would otherwise look absent). Later records win.
//!
//! What S3 told us (lookups, listings) is buffered and written every [`FLUSH_EVERY`] records and
//! at unmount: losing it in a crash only costs requests. What this mount changed (an upload
//! completed, a delete) is written and fsynced before the call that made it returns
//! ([`Journal::mutation`]): otherwise a complete listing from before the change, already on
//! disk, would hide a new file or bring a deleted one back after a crash.
//!
//! The file is 0600 in the 0700 cache directory, opened without following a symbolic link and
//! used only if it is ours (`cache/dir.rs`). Its name carries a hash of the journal's identity:
//! store, reading identity, bucket and prefix (`run.rs`).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::client::ETag;
use crate::fs::namespace::names::{ListedName, classify_object};
use crate::fs::namespace::{InodeKind, RemoteEntry};
use crate::fs::posix::PosixAttrs;
use crate::fs::readdir::ListedEntry;

/// Records buffered before they are written out.
pub const FLUSH_EVERY: usize = 256;

/// What a journal held when it was opened.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Full key -> entry.
    pub entries: HashMap<String, RemoteEntry>,
    /// Directory key -> its complete listing.
    pub listings: HashMap<String, Vec<ListedEntry>>,
    /// Whole lines skipped as damaged. Any such line drops every complete listing: it may have
    /// been an entry of one of them, which would then look absent.
    pub damaged: usize,
}

/// An open journal, appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    state: Mutex<(File, Vec<String>)>,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

fn seal(body: String) -> String {
    let crc = crc32c::crc32c(body.as_bytes());
    format!("{body} {crc:08x}\n")
}

fn unseal(line: &str) -> Option<&str> {
    let (body, crc) = line.rsplit_once(' ')?;
    (u32::from_str_radix(crc, 16).ok()? == crc32c::crc32c(body.as_bytes())).then_some(body)
}

/// The journal file of `bucket` in cache directory `dir`, for the mount whose identity
/// (store, reading identity, bucket, prefix) is `identity`.
pub fn path_for(dir: &Path, bucket: &str, identity: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let id: String = Sha256::digest(identity.as_bytes())[..16].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("metadata-{}-{id}.journal", hex(bucket)))
}

impl Journal {
    /// Opens (creating, 0600) the journal at `path` and returns what it held. The file must be
    /// ours and is not opened through a symbolic link; `shown` names it in messages.
    pub fn open(path: &Path, shown: &Path) -> std::io::Result<(Journal, Loaded)> {
        let file = crate::client::cache::dir::open_private_file(path, true, shown)?;
        let (loaded, whole) = Self::load(BufReader::new(&file));
        // Cut a line torn by a crash, so what is appended now starts a line of its own.
        if whole < file.metadata()?.len() {
            file.set_len(whole)?;
        }
        Ok((Journal { path: shown.to_path_buf(), state: Mutex::new((file, Vec::new())) }, loaded))
    }

    /// What the journal holds, and the length of its whole lines: a last line without its
    /// newline is a write torn by a crash (nothing in it was promised to anyone), ignored and
    /// cut. A whole line that does not check out is damage, and costs the complete listings.
    fn load(mut reader: impl BufRead) -> (Loaded, u64) {
        let mut entries: HashMap<String, RemoteEntry> = HashMap::new();
        let mut complete: Vec<String> = Vec::new();
        let (mut damaged, mut whole) = (0, 0u64);
        // Bytes, not `lines()`: one line that is not UTF-8 must not end the load.
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(n) if n > 0 && line.ends_with(b"\n") => whole += n as u64,
                _ => break,
            }
            damaged += usize::from(!Self::load_line(&line[..line.len() - 1], &mut entries, &mut complete));
        }
        if damaged > 0 {
            complete.clear();
        }
        let mut by_dir: HashMap<&str, BTreeMap<String, RemoteEntry>> = HashMap::new();
        for (key, entry) in &entries {
            let (dir, name) = match key.rfind('/') {
                Some(i) => (&key[..=i], &key[i + 1..]),
                None => ("", key.as_str()),
            };
            if let ListedName::File(name) = classify_object(name) {
                by_dir.entry(dir).or_default().insert(name.to_string(), entry.clone());
            }
        }
        let listings = complete
            .into_iter()
            .map(|dir| {
                let children = by_dir.get(dir.as_str()).cloned().unwrap_or_default();
                let listed = children.into_iter().map(|(name, entry)| ListedEntry { name, entry }).collect();
                (dir, listed)
            })
            .collect();
        (Loaded { entries, listings, damaged }, whole)
    }

    /// Applies one line; false if it is damaged (not UTF-8, bad CRC, unknown or bad record).
    fn load_line(line: &[u8], entries: &mut HashMap<String, RemoteEntry>, complete: &mut Vec<String>) -> bool {
        let Some(body) = std::str::from_utf8(line).ok().and_then(unseal) else { return false };
        let fields: Vec<&str> = body.split(' ').collect();
        match fields.as_slice() {
            ["E", key, kind, size, mtime, etag, attrs @ ..] if attrs.len() <= 1 => {
                let (Some(key), Ok(size), Ok(mtime)) = (unhex(key), size.parse::<u64>(), mtime.parse::<u64>()) else {
                    return false;
                };
                let kind = match *kind {
                    "d" => InodeKind::Directory,
                    "l" => InodeKind::Symlink,
                    _ => InodeKind::File,
                };
                let etag = if etag.is_empty() || *etag == "-" { None } else { unhex(etag).map(ETag::new) };
                let mtime = SystemTime::UNIX_EPOCH + Duration::from_nanos(mtime);
                let posix = match attrs.first() {
                    None => None,
                    Some(&"=") => Some(PosixAttrs::default()),
                    Some(hexed) => {
                        let Some(pairs) = unhex(hexed) else { return false };
                        Some(PosixAttrs::from_metadata(pairs.split(',').filter_map(|p| p.split_once('='))))
                    }
                };
                let entry = RemoteEntry { kind, size, mtime, etag, storage_class: None, archived: false, posix };
                entries.insert(key, entry);
            }
            ["D", key] => match unhex(key) {
                Some(key) => {
                    entries.remove(&key);
                }
                None => return false,
            },
            ["L", dir] => match unhex(dir) {
                Some(dir) => complete.push(dir),
                None => return false,
            },
            _ => return false,
        }
        true
    }

    fn push(&self, record: String) {
        let mut state = self.state.lock().unwrap();
        state.1.push(seal(record));
        if state.1.len() >= FLUSH_EVERY {
            Self::write_out(&self.path, &mut state);
        }
    }

    fn write_out(path: &Path, state: &mut (File, Vec<String>)) -> bool {
        let text: String = state.1.drain(..).collect();
        match state.0.write_all(text.as_bytes()) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot write the metadata journal: {e}");
                false
            }
        }
    }

    /// Records a change this mount made (`record` is the closure appending its records), and
    /// makes everything buffered durable (written and fsynced) before returning.
    pub fn mutation(&self, record: impl FnOnce(&Journal)) {
        record(self);
        let mut state = self.state.lock().unwrap();
        if Self::write_out(&self.path, &mut state)
            && let Err(e) = state.0.sync_data()
        {
            tracing::warn!(path = %self.path.display(), "cannot sync the metadata journal: {e}");
        }
    }

    /// Records that `key` was deleted (through this mount, or S3 said it is gone).
    pub fn deleted(&self, key: &str) {
        self.push(format!("D {}", hex(key)));
    }

    /// Records an entry (full key).
    pub fn entry(&self, key: &str, entry: &RemoteEntry) {
        let kind = match entry.kind {
            InodeKind::Directory => "d",
            InodeKind::Symlink => "l",
            InodeKind::File => "f",
        };
        let mtime = entry.mtime.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let etag = entry.etag.as_ref().map(|e| hex(e.as_str())).unwrap_or_else(|| "-".into());
        let attrs = match entry.posix {
            None => String::new(),
            Some(a) if a.is_empty() => " =".to_string(),
            // Our own formatting: names and values hold no ',' or '='.
            Some(a) => {
                let pairs: Vec<String> = a.to_metadata().into_iter().map(|(n, v)| format!("{n}={v}")).collect();
                format!(" {}", hex(&pairs.join(",")))
            }
        };
        self.push(format!("E {} {kind} {} {mtime} {etag}{attrs}", hex(key), entry.size));
    }

    /// Records that the listing of `dir_key` is complete.
    pub fn listing(&self, dir_key: &str) {
        self.push(format!("L {}", hex(dir_key)));
    }

    /// Writes buffered records to the file.
    pub fn flush(&self) {
        let mut state = self.state.lock().unwrap();
        Self::write_out(&self.path, &mut state);
    }

    /// How many records are waiting to be written (tests).
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.state.lock().unwrap().1.len()
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: InodeKind, size: u64, etag: Option<&str>) -> RemoteEntry {
        RemoteEntry {
            kind,
            size,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            etag: etag.map(ETag::new),
            storage_class: None,
            archived: false,
            posix: None,
        }
    }

    #[test]
    fn posix_attributes_and_symlinks_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "bucket", "");
        let attrs = PosixAttrs {
            kind: Some(crate::fs::posix::PosixKind::Symlink),
            perm: Some(0o777),
            uid: Some(7),
            gid: Some(8),
            mtime: Some(SystemTime::UNIX_EPOCH + Duration::new(1_500_000_000, 5)),
            atime: None,
            ctime: None,
        };
        let link = RemoteEntry { posix: Some(attrs), ..entry(InodeKind::Symlink, 3, Some("e")) };
        let bare = RemoteEntry { posix: Some(PosixAttrs::default()), ..entry(InodeKind::File, 1, Some("f")) };
        let listed = entry(InodeKind::File, 2, None);
        {
            let (j, _) = Journal::open(&path, &path).unwrap();
            j.entry("l", &link);
            j.entry("bare", &bare);
            j.entry("listed", &listed);
        }
        let (_j, loaded) = Journal::open(&path, &path).unwrap();
        assert_eq!(loaded.entries["l"], link);
        assert_eq!(loaded.entries["bare"], bare, "asked, nothing stored");
        assert_eq!(loaded.entries["listed"], listed, "never asked");
        assert_eq!(loaded.damaged, 0);
    }

    #[test]
    fn entries_and_listings_survive_a_reopen_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "bucket", "pre/");
        {
            let (j, loaded) = Journal::open(&path, &path).unwrap();
            assert!(loaded.entries.is_empty());
            j.entry("pre/jars/a b.jar", &entry(InodeKind::File, 10, Some("\"x y\"")));
            j.entry("pre/jars/sub", &entry(InodeKind::Directory, 0, None));
            j.entry("pre/odd\nkey\t", &entry(InodeKind::File, 1, Some("e")));
            j.listing("pre/jars/");
        }
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"E 00 f 1 2 torn").unwrap();
        let (_j, loaded) = Journal::open(&path, &path).unwrap();
        assert_eq!(loaded.entries.len(), 3);
        assert_eq!(loaded.entries["pre/jars/a b.jar"], entry(InodeKind::File, 10, Some("\"x y\"")));
        assert_eq!(loaded.entries["pre/odd\nkey\t"].size, 1);
        let listing = &loaded.listings["pre/jars/"];
        assert_eq!(listing.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["a b.jar", "sub"]);
        assert_eq!(listing[1].entry.kind, InodeKind::Directory);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_ne!(path_for(dir.path(), "bucket", "pre/"), path_for(dir.path(), "bucket", "other/"));
    }

    #[test]
    fn damaged_lines_in_the_middle_are_skipped_and_later_records_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        {
            let (j, _) = Journal::open(&path, &path).unwrap();
            j.entry("d/first", &entry(InodeKind::File, 1, Some("e1")));
            j.flush();
        }
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"E \xff\xfe not utf-8 at all\n").unwrap();
        f.write_all(seal(format!("E {} f 2 0 -", hex("d/bad-crc"))).replace(' ', "  ").as_bytes()).unwrap();
        let mut bad_crc = seal(format!("E {} f 3 0 -", hex("d/bad-crc-2")));
        bad_crc.replace_range(bad_crc.len() - 3..bad_crc.len() - 1, "zz");
        f.write_all(bad_crc.as_bytes()).unwrap();
        drop(f);
        {
            let (j, loaded) = Journal::open(&path, &path).unwrap();
            assert_eq!(loaded.entries.len(), 1);
            j.entry("d/later", &entry(InodeKind::File, 4, Some("e4")));
            j.mutation(|j| j.deleted("d/first"));
            assert_eq!(j.buffered(), 0, "a mutation writes everything out at once");
            j.listing("d/");
        }
        let (_j, loaded) = Journal::open(&path, &path).unwrap();
        assert_eq!(loaded.entries.keys().collect::<Vec<_>>(), ["d/later"], "records after the damage load");
        assert_eq!(loaded.damaged, 3);
        assert!(loaded.listings.is_empty(), "a damaged line may have been an entry of any listing");
        // Only a torn last line (no newline: a write cut by a crash): listings stay.
        let torn = dir.path().join("torn");
        {
            let (j, _) = Journal::open(&torn, &torn).unwrap();
            j.entry("d/a", &entry(InodeKind::File, 1, None));
            j.listing("d/");
        }
        std::fs::OpenOptions::new().append(true).open(&torn).unwrap().write_all(b"E 00 f 1 2 torn").unwrap();
        {
            let (j, loaded) = Journal::open(&torn, &torn).unwrap();
            assert_eq!((loaded.damaged, loaded.listings["d/"].len()), (0, 1));
            j.entry("d/b", &entry(InodeKind::File, 2, None));
        }
        // The torn line was cut before appending: it costs nothing more, "d/b" is there.
        let (_j, loaded) = Journal::open(&torn, &torn).unwrap();
        assert_eq!((loaded.damaged, loaded.entries.len(), loaded.listings.len()), (0, 2, 1));
    }
}
