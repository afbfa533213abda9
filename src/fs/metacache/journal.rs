//! [`Journal`]: the metadata a mount with `--metadata-ttl indefinite --cache DIR` learned,
//! kept in `DIR` so the next mount of the same bucket and prefix starts with it.
//!
//! An append-only text file, one record a line: `E <key> <kind> <size> <mtime ns> <etag>` for
//! an entry and `L <dir key>` for "the listing of this directory is complete (its entries are
//! the `E` records under it)". Keys and ETags are hex-encoded, so no key can break the format,
//! and each line ends with the CRC32C of what precedes it: a line torn by a crash, or edited, is
//! skipped. Later records win. Records are buffered and written every [`FLUSH_EVERY`] records
//! and at unmount. The file is 0600 in the 0700 cache directory.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::client::ETag;
use crate::fs::inode::names::{ListedName, classify_object};
use crate::fs::inode::{InodeKind, RemoteEntry};
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

/// The journal file for one bucket and prefix in cache directory `dir`.
pub fn path_for(dir: &Path, bucket: &str, prefix: &str) -> PathBuf {
    let id = crc32c::crc32c(format!("{bucket}\0{prefix}").as_bytes());
    dir.join(format!("metadata-{}-{id:08x}.journal", hex(bucket)))
}

impl Journal {
    /// Opens (creating) the journal at `path` and returns what it held.
    pub fn open(path: &Path) -> std::io::Result<(Journal, Loaded)> {
        let loaded = match File::open(path) {
            Ok(f) => Self::load(BufReader::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Loaded::default(),
            Err(e) => return Err(e),
        };
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        Ok((Journal { path: path.to_path_buf(), state: Mutex::new((file, Vec::new())) }, loaded))
    }

    fn load(reader: impl BufRead) -> Loaded {
        let mut entries: HashMap<String, RemoteEntry> = HashMap::new();
        let mut complete: Vec<String> = Vec::new();
        for line in reader.lines().map_while(Result::ok) {
            let Some(body) = unseal(&line) else { continue };
            let fields: Vec<&str> = body.split(' ').collect();
            match fields.as_slice() {
                ["E", key, kind, size, mtime, etag] => {
                    let (Some(key), Ok(size), Ok(mtime)) = (unhex(key), size.parse::<u64>(), mtime.parse::<u64>())
                    else {
                        continue;
                    };
                    let kind = if *kind == "d" { InodeKind::Directory } else { InodeKind::File };
                    let etag = if etag.is_empty() || *etag == "-" { None } else { unhex(etag).map(ETag::new) };
                    let mtime = SystemTime::UNIX_EPOCH + Duration::from_nanos(mtime);
                    entries.insert(key, RemoteEntry { kind, size, mtime, etag, storage_class: None });
                }
                ["L", dir] => {
                    if let Some(dir) = unhex(dir) {
                        complete.push(dir);
                    }
                }
                _ => {}
            }
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
        Loaded { entries, listings }
    }

    fn push(&self, record: String) {
        let mut state = self.state.lock().unwrap();
        state.1.push(seal(record));
        if state.1.len() >= FLUSH_EVERY {
            Self::write_out(&self.path, &mut state);
        }
    }

    fn write_out(path: &Path, state: &mut (File, Vec<String>)) {
        let text: String = state.1.drain(..).collect();
        if let Err(e) = state.0.write_all(text.as_bytes()) {
            tracing::warn!(path = %path.display(), "cannot write the metadata journal: {e}");
        }
    }

    /// Records an entry (full key).
    pub fn entry(&self, key: &str, entry: &RemoteEntry) {
        let kind = if entry.kind == InodeKind::Directory { "d" } else { "f" };
        let mtime = entry.mtime.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let etag = entry.etag.as_ref().map(|e| hex(e.as_str())).unwrap_or_else(|| "-".into());
        self.push(format!("E {} {kind} {} {mtime} {etag}", hex(key), entry.size));
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
        }
    }

    #[test]
    fn entries_and_listings_survive_a_reopen_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "bucket", "pre/");
        {
            let (j, loaded) = Journal::open(&path).unwrap();
            assert!(loaded.entries.is_empty());
            j.entry("pre/jars/a b.jar", &entry(InodeKind::File, 10, Some("\"x y\"")));
            j.entry("pre/jars/sub", &entry(InodeKind::Directory, 0, None));
            j.entry("pre/odd\nkey\t", &entry(InodeKind::File, 1, Some("e")));
            j.listing("pre/jars/");
        }
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"E 00 f 1 2 torn").unwrap();
        let (_j, loaded) = Journal::open(&path).unwrap();
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
}
