//! What a restarted worker needs to recognise the kernel's inode numbers and file handles.
//!
//! The kernel keeps using the numbers a dead worker gave out: inodes it holds references to,
//! handles of open files and directories. The worker records each as it hands it out, one line
//! appended to a file the supervisor keeps in a private runtime directory (it survives the
//! worker; it is removed at unmount), and a restarted worker rebuilds its tables from it:
//!
//! ```text
//! I <ino> <parent> <f|d> <hex name> <size> <mtime ns> <hex etag|->
//!                                          an inode number given out (or its object's new identity)
//! X <ino>                                  ... dropped from the table
//! R <fh> <ino> <size> <hex etag>           a file opened for reading (its version pinned)
//! W <fh> <ino>                             a file opened for writing
//! D <fh> <ino>                             a directory opened
//! C <fh>                                   a handle released
//! U <hex key> <hex upload id>              a multipart upload created
//! V <hex upload id>                        ... completed or aborted
//! ```
//!
//! One `write(2)` per line (or per batch of whole lines) on an `O_APPEND` file: a worker killed
//! at any point leaves whole lines (and at worst a torn last one, which is skipped). An inode's
//! line is written before the kernel hears of its number; the namespace batches the lines of
//! one readdirplus reply into one write (see `Tables::record_later`). The file is read as untrusted: a
//! damaged line is skipped, lines are bounded, numbers parsed strictly. A restarted worker
//! writes the live state to a new file and renames it over the old one, and so does a worker
//! whose log has grown by 16 MiB (or three times its live size): the file holds what is live
//! plus what changed since.
//!
//! What a restored worker does with it ([`crate::fs::S3Filesystem::resumed`]): inodes come back
//! under their numbers (with a kernel reference count it cannot know, so they stay until
//! unmount), their stat expired so the next use asks S3; read handles read the same pinned
//! version; directory handles list again from the offset the kernel asks for; write handles
//! answer EIO (their data died with the worker) and every multipart upload still open is
//! aborted, so no partial object can ever appear.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::warn;

use crate::fs::namespace::InodeKind;

/// The longest line a loader accepts (keys are at most 1024 bytes, hex doubles them).
const MAX_LINE: usize = 8192;

/// An inode as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedInode {
    pub parent: u64,
    pub kind: InodeKind,
    pub name: String,
    pub stat: SavedStat,
}

/// The identity of an inode's object when it was recorded (what tells a changed object apart).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedStat {
    pub size: u64,
    /// Nanoseconds since the epoch.
    pub mtime_ns: u64,
    pub etag: Option<String>,
}

/// An open handle as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SavedHandle {
    Read { ino: u64, size: u64, etag: String },
    Write { ino: u64 },
    Dir { ino: u64 },
}

impl SavedHandle {
    /// The inode the handle is open on.
    pub fn ino(&self) -> u64 {
        match self {
            SavedHandle::Read { ino, .. } | SavedHandle::Write { ino } | SavedHandle::Dir { ino } => *ino,
        }
    }
}

/// Everything a restarted worker restores.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Saved {
    pub inodes: BTreeMap<u64, SavedInode>,
    pub handles: BTreeMap<u64, SavedHandle>,
    /// Multipart uploads created and not yet completed or aborted: upload id -> key.
    pub uploads: BTreeMap<String, String>,
    /// Lines skipped as damaged.
    pub damaged: usize,
}

impl Saved {
    /// The highest inode number and file handle given out (the next ones must be above).
    pub fn high_water(&self) -> (u64, u64) {
        (self.inodes.keys().next_back().copied().unwrap_or(0), self.handles.keys().next_back().copied().unwrap_or(0))
    }

    fn apply(&mut self, line: &str) -> Option<()> {
        let mut f = line.split(' ');
        let num = |s: Option<&str>| -> Option<u64> {
            let s = s?;
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
        };
        let text = |s: Option<&str>| -> Option<String> { String::from_utf8(unhex(s?)?).ok() };
        match f.next()? {
            "I" => {
                let (ino, parent) = (num(f.next())?, num(f.next())?);
                let kind = match f.next()? {
                    "f" => InodeKind::File,
                    "d" => InodeKind::Directory,
                    "l" => InodeKind::Symlink,
                    _ => return None,
                };
                let name = text(f.next())?;
                if name.is_empty() || name.contains('/') || ino <= 1 {
                    return None;
                }
                let (size, mtime_ns) = (num(f.next())?, num(f.next())?);
                let etag = match f.next()? {
                    "-" => None,
                    hexed => Some(text(Some(hexed))?),
                };
                let stat = SavedStat { size, mtime_ns, etag };
                self.inodes.insert(ino, SavedInode { parent, kind, name, stat });
            }
            "X" => {
                self.inodes.remove(&num(f.next())?);
            }
            "R" => {
                let (fh, ino, size, etag) = (num(f.next())?, num(f.next())?, num(f.next())?, text(f.next())?);
                self.handles.insert(fh, SavedHandle::Read { ino, size, etag });
            }
            "W" => {
                let (fh, ino) = (num(f.next())?, num(f.next())?);
                self.handles.insert(fh, SavedHandle::Write { ino });
            }
            "D" => {
                let (fh, ino) = (num(f.next())?, num(f.next())?);
                self.handles.insert(fh, SavedHandle::Dir { ino });
            }
            "C" => {
                self.handles.remove(&num(f.next())?);
            }
            "U" => {
                let (key, id) = (text(f.next())?, text(f.next())?);
                self.uploads.insert(id, key);
            }
            "V" => {
                self.uploads.remove(&text(f.next())?);
            }
            _ => return None,
        }
        f.next().is_none().then_some(())
    }

    /// Reads a state file (missing: nothing saved).
    pub fn load(path: &Path) -> std::io::Result<Saved> {
        let mut saved = Saved::default();
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(saved),
            Err(e) => return Err(e),
        };
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            let whole = line.last() == Some(&b'\n') && line.len() <= MAX_LINE;
            if !whole {
                saved.damaged += 1;
                if line.last() != Some(&b'\n') {
                    // Skip the rest of an overlong line.
                    let mut rest = Vec::new();
                    reader.read_until(b'\n', &mut rest)?;
                }
                continue;
            }
            let text = std::str::from_utf8(&line[..line.len() - 1]).ok();
            if text.and_then(|t| saved.apply(t)).is_none() {
                saved.damaged += 1;
            }
        }
        Ok(saved)
    }

    /// The lines that recreate this state.
    fn lines(&self) -> String {
        let mut out = String::new();
        for (ino, i) in &self.inodes {
            out.push_str(&line_inode(*ino, i.parent, i.kind, &i.name, &i.stat));
        }
        for (fh, h) in &self.handles {
            out.push_str(&match h {
                SavedHandle::Read { ino, size, etag } => line_read(*fh, *ino, *size, etag),
                SavedHandle::Write { ino } => format!("W {fh} {ino}\n"),
                SavedHandle::Dir { ino } => format!("D {fh} {ino}\n"),
            });
        }
        for (id, key) in &self.uploads {
            out.push_str(&format!("U {} {}\n", hex(key.as_bytes()), hex(id.as_bytes())));
        }
        out
    }
}

fn line_inode(ino: u64, parent: u64, kind: InodeKind, name: &str, stat: &SavedStat) -> String {
    let mut line = String::with_capacity(48 + 2 * (name.len() + stat.etag.as_ref().map_or(0, String::len)));
    push_line_inode(&mut line, ino, parent, kind, name, stat);
    line
}

/// Appends the `I` line of an inode to `out`. Built piece by piece: a listing records one per
/// entry, and `format!` per hex digit cost more than the rest of the entry's handling.
fn push_line_inode(out: &mut String, ino: u64, parent: u64, kind: InodeKind, name: &str, stat: &SavedStat) {
    use std::fmt::Write as _;
    let kind = match kind {
        InodeKind::File => 'f',
        InodeKind::Directory => 'd',
        InodeKind::Symlink => 'l',
    };
    let _ = write!(out, "I {ino} {parent} {kind} ");
    push_hex(out, name.as_bytes());
    let _ = write!(out, " {} {} ", stat.size, stat.mtime_ns);
    match &stat.etag {
        Some(etag) => push_hex(out, etag.as_bytes()),
        None => out.push('-'),
    }
    out.push('\n');
}

fn line_read(fh: u64, ino: u64, size: u64, etag: &str) -> String {
    format!("R {fh} {ino} {size} {}\n", hex(etag.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    push_hex(&mut out, bytes);
    out
}

/// Appends `bytes` as lowercase hex digits.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The writer side: appends one line per change. Failures are logged once and then ignored:
/// the mount works on, only a restart would lose what was not recorded.
pub struct ResumeLog {
    path: PathBuf,
    file: Mutex<Appender>,
}

/// The open file, and how much it may grow before it is compacted.
struct Appender {
    file: Option<File>,
    written: u64,
    compact_at: u64,
}

/// A log is compacted (rewritten with only what is live) once it has grown by this much, or by
/// three times its compacted size, whichever is more: lookups and forgets of a busy mount
/// would otherwise grow it without bound (it usually lives in memory, on a tmpfs).
const COMPACT_MIN: u64 = 16 << 20;

impl std::fmt::Debug for ResumeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumeLog").field("path", &self.path).finish()
    }
}

impl ResumeLog {
    /// Starts the log at `path` from `saved` (rewritten compactly, then appended to).
    pub fn create(path: &Path, saved: &Saved) -> std::io::Result<ResumeLog> {
        let appender = Self::rewrite(path, saved)?;
        Ok(ResumeLog { path: path.to_path_buf(), file: Mutex::new(appender) })
    }

    /// Writes `saved` to a new file, renames it over `path`, and opens it for appending.
    fn rewrite(path: &Path, saved: &Saved) -> std::io::Result<Appender> {
        let fresh = path.with_extension("new");
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&fresh)?;
        let lines = saved.lines();
        file.write_all(lines.as_bytes())?;
        drop(file);
        std::fs::rename(&fresh, path)?;
        let file = OpenOptions::new().append(true).open(path)?;
        let compact_at = COMPACT_MIN.max(lines.len() as u64 * 3);
        Ok(Appender { file: Some(file), written: 0, compact_at })
    }

    fn append(&self, line: &str) {
        let mut appender = self.file.lock().unwrap();
        let Some(f) = appender.file.as_mut() else { return };
        let mut result = f.write_all(line.as_bytes());
        appender.written += line.len() as u64;
        if result.is_ok() && appender.written > appender.compact_at {
            result = Saved::load(&self.path).and_then(|saved| Self::rewrite(&self.path, &saved)).map(|fresh| {
                *appender = fresh;
            });
        }
        if let Err(e) = result {
            warn!(
                "cannot record state in {}: {e}; a restarted worker will not know this mount's open files",
                self.path.display()
            );
            appender.file = None;
        }
    }

    pub fn inode(&self, ino: u64, parent: u64, kind: InodeKind, name: &str, stat: &SavedStat) {
        self.append(&line_inode(ino, parent, kind, name, stat));
    }

    pub fn inode_dropped(&self, ino: u64) {
        self.append(&format!("X {ino}\n"));
    }

    /// Appends the line [`inode`](Self::inode) would write to `lines`, for
    /// [`append_lines`](Self::append_lines).
    pub fn push_inode(lines: &mut String, ino: u64, parent: u64, kind: InodeKind, name: &str, stat: &SavedStat) {
        push_line_inode(lines, ino, parent, kind, name, stat);
    }

    /// Appends the line [`inode_dropped`](Self::inode_dropped) would write to `lines`.
    pub fn push_inode_dropped(lines: &mut String, ino: u64) {
        use std::fmt::Write as _;
        let _ = writeln!(lines, "X {ino}");
    }

    /// Writes whole lines gathered with the `push_` functions, in one `write(2)` (a killed
    /// worker leaves at worst a torn last line, as with one line at a time).
    pub fn append_lines(&self, lines: &str) {
        if !lines.is_empty() {
            self.append(lines);
        }
    }

    pub fn opened_read(&self, fh: u64, ino: u64, size: u64, etag: &str) {
        self.append(&line_read(fh, ino, size, etag));
    }

    pub fn opened_write(&self, fh: u64, ino: u64) {
        self.append(&format!("W {fh} {ino}\n"));
    }

    pub fn opened_dir(&self, fh: u64, ino: u64) {
        self.append(&format!("D {fh} {ino}\n"));
    }

    pub fn closed(&self, fh: u64) {
        self.append(&format!("C {fh}\n"));
    }

    pub fn upload_created(&self, key: &str, upload_id: &str) {
        self.append(&format!("U {} {}\n", hex(key.as_bytes()), hex(upload_id.as_bytes())));
    }

    pub fn upload_ended(&self, upload_id: &str) {
        self.append(&format!("V {}\n", hex(upload_id.as_bytes())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_replays_to_the_live_state_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let log = ResumeLog::create(&path, &Saved::default()).unwrap();
        let none = SavedStat::default();
        let f = SavedStat { size: 1234, mtime_ns: 1_700_000_000_123_456_789, etag: Some("\"etag-1\"".into()) };
        log.inode(2, 1, InodeKind::Directory, "dir with spaces\nand a newline", &none);
        log.inode(3, 2, InodeKind::File, "f.bin", &none);
        log.inode(3, 2, InodeKind::File, "f.bin", &f);
        log.inode(4, 1, InodeKind::File, "gone", &none);
        log.inode_dropped(4);
        log.opened_read(7, 3, 1234, "\"etag-1\"");
        log.opened_write(8, 3);
        log.opened_dir(9, 2);
        log.opened_dir(10, 2);
        log.closed(10);
        log.upload_created("dir/f.bin", "up-1");
        log.upload_created("dir/g.bin", "up-2");
        log.upload_ended("up-2");
        drop(log);
        let saved = Saved::load(&path).unwrap();
        assert_eq!(saved.damaged, 0);
        assert_eq!(saved.inodes.len(), 2);
        assert_eq!(saved.inodes[&2].name, "dir with spaces\nand a newline");
        assert_eq!(saved.inodes[&3], SavedInode { parent: 2, kind: InodeKind::File, name: "f.bin".into(), stat: f });
        assert_eq!(saved.handles[&7], SavedHandle::Read { ino: 3, size: 1234, etag: "\"etag-1\"".into() });
        assert_eq!(saved.handles[&8], SavedHandle::Write { ino: 3 });
        assert_eq!(saved.handles[&9], SavedHandle::Dir { ino: 2 });
        assert!(!saved.handles.contains_key(&10));
        assert_eq!(saved.uploads.iter().collect::<Vec<_>>(), [(&"up-1".to_string(), &"dir/f.bin".to_string())]);
        assert_eq!(saved.high_water(), (3, 9));

        // A restart rewrites only what is live.
        let log = ResumeLog::create(&path, &saved).unwrap();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 6, "{text}");
        assert_eq!(Saved::load(&path).unwrap(), saved);
    }

    #[test]
    fn lines_are_written_byte_for_byte_as_before() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff, b'a']), "000fa5ff61");
        let stat = SavedStat { size: 7, mtime_ns: 42, etag: Some("\"e\"".into()) };
        assert_eq!(line_inode(12, 3, InodeKind::File, "n\u{e9}", &stat), "I 12 3 f 6ec3a9 7 42 226522\n");
        assert_eq!(line_inode(13, 1, InodeKind::Symlink, "l", &SavedStat::default()), "I 13 1 l 6c 0 0 -\n");
    }

    #[test]
    fn a_growing_log_is_compacted_to_what_is_live() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let log = ResumeLog::create(&path, &Saved::default()).unwrap();
        log.inode(2, 1, InodeKind::File, "kept", &SavedStat::default());
        let churn = COMPACT_MIN / 40 + 1000;
        for ino in 3..3 + churn {
            log.inode(ino, 1, InodeKind::File, "churn", &SavedStat::default());
            log.inode_dropped(ino);
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < COMPACT_MIN, "compacted: {size} bytes");
        let saved = Saved::load(&path).unwrap();
        assert_eq!(saved.inodes.keys().copied().collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn damaged_and_hostile_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let long = format!("I 5 1 f {} 0 0 -\n", "61".repeat(MAX_LINE));
        let text = format!(
            "I 2 1 f 61 0 0 -\nI x 1 f 61 0 0 -\nI 3 1 q 61 0 0 -\nI 4 1 f 2f 0 0 -\nI 1 1 d 61 0 0 -\nR 1 2 +5 61\nZ 1\nI 6 1 f 6 0 0 -\n{long}C 1 2\nI 7 1 f 62 0 0 -"
        );
        std::fs::write(&path, text).unwrap();
        let saved = Saved::load(&path).unwrap();
        assert_eq!(saved.inodes.keys().copied().collect::<Vec<_>>(), [2], "only the one good line");
        assert_eq!(saved.damaged, 10, "every other line, the torn last one included");
        assert_eq!(Saved::load(&dir.path().join("missing")).unwrap(), Saved::default());
    }
}
