//! Durable rename intents: what a rename is about to move, on disk before the first copy.
//!
//! One file per rename in the intent directory (`<--cache>/mount-s3-cache/rename/`, or the
//! state directory without `--cache`; see CONFIGURATION.md), written to a temporary name,
//! fsynced, renamed into place and the directory fsynced, so it exists whole or not at all:
//!
//! ```text
//! mount-s3 rename v1 <bucket hex> <prefix hex>
//! M <from hex> <to hex> <source ETag hex>        one line per object
//! C <crc32c of the lines above, hex>
//! ```
//!
//! Keys are hex so no byte of a key can break the format. The file is removed once every
//! source is deleted. At the next mount of the same bucket and prefix, a file left behind (the
//! daemon died mid-rename) is finished: each source still holding its recorded ETag is copied
//! again and deleted; a source that is gone was moved already; a source with another ETag was
//! replaced by someone else and is left alone. Anything that does not parse, or whose checksum
//! does not match, is not acted on (a warning names it).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::client::ETag;
use crate::client::cache::CacheDir;

const HEADER: &str = "mount-s3 rename v1";
/// Intent files larger than this are not read (a directory rename is limited to 1,000,000
/// objects; keys are at most 1 KiB).
const MAX_FILE: u64 = 4 << 30;

/// One object to move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub from: String,
    pub to: String,
    /// The source's ETag when the rename began: a copy is pinned to it.
    pub etag: ETag,
}

/// The intent directory of one mount (bucket + prefix).
#[derive(Debug)]
pub struct IntentLog {
    dir: PathBuf,
    /// Keeps the checked directory's descriptor open: `dir` may be a path through it.
    _anchor: Option<Arc<CacheDir>>,
    bucket: String,
    prefix: String,
    next: AtomicU64,
}

/// A recorded intent; [`IntentFile::done`] removes it.
#[derive(Debug)]
pub struct IntentFile {
    path: PathBuf,
}

impl IntentFile {
    /// The intent's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every source was deleted: the intent is fulfilled.
    pub fn done(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), "cannot remove a fulfilled rename intent: {e}");
        }
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

/// The default intent directory without `--cache`: `$STATE_DIRECTORY` (systemd's
/// `StateDirectory=`), else `$XDG_STATE_HOME/mount-s3`, else `$HOME/.local/state/mount-s3`.
pub fn default_state_dir() -> Option<PathBuf> {
    let env = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = std::env::var("STATE_DIRECTORY").ok().and_then(|v| v.split(':').next().map(PathBuf::from)) {
        return Some(dir);
    }
    env("XDG_STATE_HOME").map(|d| d.join("mount-s3")).or_else(|| env("HOME").map(|h| h.join(".local/state/mount-s3")))
}

impl IntentLog {
    /// The intents of `bucket` + `prefix` in `dir` (an already checked private directory,
    /// reached through `anchor` if given).
    pub fn new(dir: PathBuf, anchor: Option<Arc<CacheDir>>, bucket: &str, prefix: &str) -> Self {
        IntentLog {
            dir,
            _anchor: anchor,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            next: AtomicU64::new(0),
        }
    }

    /// Where the intents are kept.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn header(&self) -> String {
        format!("{HEADER} {} {}", hex(&self.bucket), hex(&self.prefix))
    }

    /// Makes `moves` durable; returns the file to remove once they are done.
    pub fn record(&self, moves: &[Move]) -> io::Result<IntentFile> {
        let mut text = self.header();
        text.push('\n');
        for m in moves {
            text.push_str(&format!("M {} {} {}\n", hex(&m.from), hex(&m.to), hex(m.etag.as_str())));
        }
        let crc = crc32c::crc32c(text.as_bytes());
        text.push_str(&format!("C {crc:08x}\n"));
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let name = format!("{}-{nanos}-{n}.intent", std::process::id());
        let (tmp, path) = (self.dir.join(format!(".tmp-{name}")), self.dir.join(name));
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        Ok(IntentFile { path })
    }

    /// Intents of this bucket and prefix left by an earlier process: each file with its moves,
    /// or why it cannot be used. Files of other buckets or prefixes are skipped.
    pub fn pending(&self) -> Vec<(IntentFile, Result<Vec<Move>, String>)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return vec![] };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "intent") {
                continue;
            }
            let parsed = self.read(&path);
            if let Err(e) = &parsed
                && e == "another bucket"
            {
                continue;
            }
            found.push((IntentFile { path }, parsed));
        }
        found
    }

    fn read(&self, path: &Path) -> Result<Vec<Move>, String> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
        if !meta.file_type().is_file() || meta.len() > MAX_FILE {
            return Err("not a regular file of a plausible size".into());
        }
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let body_end = text.trim_end_matches('\n').rfind('\n').map(|i| i + 1).ok_or("truncated")?;
        let (body, last) = text.split_at(body_end);
        let crc = last.trim_end().strip_prefix("C ").and_then(|c| u32::from_str_radix(c, 16).ok());
        if crc != Some(crc32c::crc32c(body.as_bytes())) {
            return Err("checksum mismatch (damaged or incomplete)".into());
        }
        let mut lines = body.lines();
        if lines.next() != Some(self.header().as_str()) {
            return Err("another bucket".into());
        }
        let parse = |line: &str| -> Option<Move> {
            match line.split(' ').collect::<Vec<_>>().as_slice() {
                ["M", from, to, etag] => {
                    Some(Move { from: unhex(from)?, to: unhex(to)?, etag: ETag::new(unhex(etag)?) })
                }
                _ => None,
            }
        };
        lines.map(|line| parse(line).ok_or_else(|| "unreadable line".to_string())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_round_trip_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = IntentLog::new(dir.path().to_path_buf(), None, "b", "p/");
        let moves = vec![
            Move { from: "p/a\nb c".into(), to: "p/x".into(), etag: ETag::new("\"1\"") },
            Move { from: "p/d/e".into(), to: "p/f/e".into(), etag: ETag::new("\"2-3\"") },
        ];
        let file = log.record(&moves).unwrap();
        let other = IntentLog::new(dir.path().to_path_buf(), None, "b", "q/");
        assert!(other.pending().is_empty(), "another prefix's intents are not ours");
        let pending = log.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].1.as_ref().unwrap(), &moves);
        // A flipped byte is not acted on.
        let path = pending[0].0.path.clone();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(log.pending()[0].1.is_err());
        file.done();
        assert!(log.pending().is_empty());
    }
}
