//! The conventions (user metadata, i.e. `x-amz-meta-<name>` headers; names are case-insensitive):
//! - `mode`: the whole `st_mode` (file type and permission bits) as an integer. s3fs writes it in
//!   decimal (`33188` = `0100644`); it reads it as C's `strtol` with base 0 does, so a leading `0`
//!   means octal (rclone's local backend writes `0100664`) and `0x` hexadecimal. We read the same
//!   way and write decimal.
//! - `uid`, `gid`: decimal integers (read with base 0 too).
//! - `mtime`, `ctime`, `atime`: seconds since the epoch, optionally with a fraction of up to nine
//!   digits: `1700000000` or `1700000000.123456789` (s3fs writes nine digits, rclone drops
//!   trailing zeros; both read nine digits the same). A negative number of seconds is a time
//!   before 1970; the fraction is added to it (as in a `timespec`).
//! - A symbolic link is an object whose `mode` has the `S_IFLNK` type and whose body is the target.
//! - A directory's own mode and times live on its marker object `dir/` (empty body,
//!   `Content-Type: application/x-directory`, `mode` with the `S_IFDIR` type).
//!
//! Everything here is parsed from untrusted input: a value that does not parse exactly (signs
//! where none belong, trailing bytes, overflow, unknown mode bits, more than nine fraction
//! digits, over-long strings) is ignored as if absent, and the mount's defaults apply. Pure
//! functions only: the core decides when to read and write them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// User-metadata name of the mode (`x-amz-meta-mode`).
pub const MODE: &str = "mode";
/// User-metadata name of the owner's user id.
pub const UID: &str = "uid";
/// User-metadata name of the owner's group id.
pub const GID: &str = "gid";
/// User-metadata name of the modification time.
pub const MTIME: &str = "mtime";
/// User-metadata name of the access time.
pub const ATIME: &str = "atime";
/// User-metadata name of the status-change time.
pub const CTIME: &str = "ctime";
/// The names this module owns; every other user-metadata entry is passed through untouched.
pub const NAMES: [&str; 6] = [MODE, UID, GID, MTIME, ATIME, CTIME];

/// Content-Type of directory marker objects, as s3fs writes them.
pub const DIRECTORY_CONTENT_TYPE: &str = "application/x-directory";

/// Longest symbolic-link target (PATH_MAX less the terminating NUL).
pub const SYMLINK_MAX: usize = 4095;

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
/// Type bits s3fs may store that we show as regular files (FIFO, character/block device,
/// socket): S3 cannot hold them, and `--posix-metadata` does not create them.
const OTHER_TYPES: [u32; 4] = [0o010_000, 0o020_000, 0o060_000, 0o140_000];
/// Permission bits, setuid, setgid and sticky included (the mount is `nosuid` anyway).
pub const PERM_BITS: u16 = 0o7777;

/// Longest value we parse: no honest integer or time needs more.
const MAX_VALUE_LEN: usize = 32;
/// Seconds either side of the epoch a stored time may be (about 34,800 years): keeps every
/// arithmetic on it far from overflow.
const MAX_TIME_SECS: u64 = 1 << 40;

/// What the `mode` says an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PosixKind {
    File,
    Directory,
    Symlink,
}

/// POSIX attributes read from, or to be written to, an object's user metadata. `None`: not
/// stored (or not readable), the mount's default applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PosixAttrs {
    /// The type from the mode's `S_IFMT` bits; `None` when the mode has no type bits (s3fs then
    /// decides from the key and Content-Type, as we do) or no mode is stored.
    pub kind: Option<PosixKind>,
    /// Permission bits (at most [`PERM_BITS`]).
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<SystemTime>,
    pub atime: Option<SystemTime>,
    pub ctime: Option<SystemTime>,
}

impl PosixAttrs {
    /// Reads the attributes from user metadata `(name, value)` pairs. Names may come bare
    /// (`mode`, as the SDK returns them) or as headers (`x-amz-meta-mode`), in any case.
    pub fn from_metadata<'a>(metadata: impl IntoIterator<Item = (&'a str, &'a str)>) -> PosixAttrs {
        let mut attrs = PosixAttrs::default();
        for (name, value) in metadata {
            let name = bare_name(name);
            if name.eq_ignore_ascii_case(MODE) {
                if let Some((kind, perm)) = parse_mode(value) {
                    attrs.kind = kind;
                    attrs.perm = Some(perm);
                }
            } else if name.eq_ignore_ascii_case(UID) {
                attrs.uid = parse_id(value);
            } else if name.eq_ignore_ascii_case(GID) {
                attrs.gid = parse_id(value);
            } else if name.eq_ignore_ascii_case(MTIME) {
                attrs.mtime = parse_time(value);
            } else if name.eq_ignore_ascii_case(ATIME) {
                attrs.atime = parse_time(value);
            } else if name.eq_ignore_ascii_case(CTIME) {
                attrs.ctime = parse_time(value);
            }
        }
        attrs
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        *self == PosixAttrs::default()
    }

    /// The user metadata for these attributes (bare names, as the client sends them). A `kind`
    /// of `None` with a `perm` writes a regular file's mode. Absent attributes are not written.
    pub fn to_metadata(&self) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(6);
        if let Some(perm) = self.perm {
            out.push((MODE.to_string(), format_mode(self.kind.unwrap_or(PosixKind::File), perm)));
        }
        if let Some(uid) = self.uid {
            out.push((UID.to_string(), uid.to_string()));
        }
        if let Some(gid) = self.gid {
            out.push((GID.to_string(), gid.to_string()));
        }
        for (name, time) in [(MTIME, self.mtime), (ATIME, self.atime), (CTIME, self.ctime)] {
            if let Some(t) = time {
                out.push((name.to_string(), format_time(t)));
            }
        }
        out
    }

    /// `base`'s user metadata with our names replaced by `self`'s (and removed where `self` has
    /// none): what a copy onto itself with `REPLACE` sends, so metadata other tools stored is
    /// kept. Names are compared case-insensitively; the result is sorted by name.
    pub fn merged_into<'a>(&self, base: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = base
            .into_iter()
            .filter(|(name, _)| !NAMES.iter().any(|ours| bare_name(name).eq_ignore_ascii_case(ours)))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        out.extend(self.to_metadata());
        out.sort();
        out
    }
}

/// `x-amz-meta-mode` -> `mode`; a bare name stays as it is.
fn bare_name(name: &str) -> &str {
    const HEADER: &str = "x-amz-meta-";
    match name.get(..HEADER.len()) {
        Some(p) if p.eq_ignore_ascii_case(HEADER) => &name[HEADER.len()..],
        _ => name,
    }
}

/// An unsigned integer as C's `strtoul(s, NULL, 0)` reads a whole string: `0x`/`0X` hex,
/// a leading `0` octal, else decimal. No sign, no spaces, no trailing bytes.
fn parse_c_integer(value: &str) -> Option<u64> {
    if value.is_empty() || value.len() > MAX_VALUE_LEN {
        return None;
    }
    let (digits, radix) = if let Some(hex) = value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")) {
        (hex, 16)
    } else if value.len() > 1 && value.starts_with('0') {
        (&value[1..], 8)
    } else {
        (value, 10)
    };
    // from_str_radix accepts a leading '+': C would too, but no tool writes one; refuse it.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// A stored mode: its type (if it has type bits) and permission bits. Unknown bits above the
/// type field make the whole value unreadable.
pub fn parse_mode(value: &str) -> Option<(Option<PosixKind>, u16)> {
    let mode = u32::try_from(parse_c_integer(value)?).ok()?;
    if mode & !(S_IFMT | u32::from(PERM_BITS)) != 0 {
        return None;
    }
    let kind = match mode & S_IFMT {
        0 => None,
        S_IFREG => Some(PosixKind::File),
        S_IFDIR => Some(PosixKind::Directory),
        S_IFLNK => Some(PosixKind::Symlink),
        t if OTHER_TYPES.contains(&t) => Some(PosixKind::File),
        _ => return None,
    };
    Some((kind, (mode & u32::from(PERM_BITS)) as u16))
}

/// The stored form of a mode: decimal `st_mode`, as s3fs writes it.
pub fn format_mode(kind: PosixKind, perm: u16) -> String {
    let kind_bits = match kind {
        PosixKind::File => S_IFREG,
        PosixKind::Directory => S_IFDIR,
        PosixKind::Symlink => S_IFLNK,
    };
    (kind_bits | u32::from(perm & PERM_BITS)).to_string()
}

/// A user or group id. `u32::MAX` is `(uid_t)-1`, "no change" to chown: never an owner.
pub fn parse_id(value: &str) -> Option<u32> {
    u32::try_from(parse_c_integer(value)?).ok().filter(|&id| id != u32::MAX)
}

/// A stored time: `[-]SECONDS[.FRACTION]`, FRACTION at most nine digits.
pub fn parse_time(value: &str) -> Option<SystemTime> {
    if value.is_empty() || value.len() > MAX_VALUE_LEN {
        return None;
    }
    let (negative, rest) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (secs, frac) = match rest.split_once('.') {
        Some((s, f)) => (s, Some(f)),
        None => (rest, None),
    };
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = secs.parse().ok().filter(|&s| s <= MAX_TIME_SECS)?;
    let nanos = match frac {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            // "5" is half a second: pad to nine digits.
            f.parse::<u32>().ok()? * 10u32.pow(9 - f.len() as u32)
        }
        Some(_) => return None,
    };
    let whole = Duration::from_secs(secs);
    let nanos = Duration::from_nanos(u64::from(nanos));
    if negative {
        // timespec {-secs, nanos}: the fraction counts forward from -secs.
        UNIX_EPOCH.checked_sub(whole)?.checked_add(nanos)
    } else {
        UNIX_EPOCH.checked_add(whole + nanos)
    }
}

/// The stored form of a time: whole seconds, and a nine-digit fraction when there is one.
pub fn format_time(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.subsec_nanos() == 0 => d.as_secs().to_string(),
        Ok(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        Err(e) => {
            // Before 1970: whole seconds rounded down, fraction counted forward (a timespec).
            let before = e.duration();
            let nanos = before.subsec_nanos();
            if nanos == 0 {
                format!("-{}", before.as_secs())
            } else {
                format!("-{}.{:09}", before.as_secs() + 1, 1_000_000_000 - nanos)
            }
        }
    }
}

/// Why a symlink object's body is not a usable target.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SymlinkError {
    #[error("the symbolic link's target is empty")]
    Empty,
    #[error("the symbolic link's target is {0} bytes, longer than {SYMLINK_MAX}")]
    TooLong(u64),
    #[error("the symbolic link's target contains a NUL byte")]
    Nul,
}

/// Checks a symlink object's size before reading it: a body over [`SYMLINK_MAX`] bytes is never
/// fetched.
pub fn check_symlink_size(size: u64) -> Result<(), SymlinkError> {
    match size {
        0 => Err(SymlinkError::Empty),
        n if n > SYMLINK_MAX as u64 => Err(SymlinkError::TooLong(n)),
        _ => Ok(()),
    }
}

/// The target stored in a symlink object's body, byte for byte (Linux targets are bytes).
pub fn symlink_target(body: &[u8]) -> Result<Bytes, SymlinkError> {
    check_symlink_size(body.len() as u64)?;
    if body.contains(&0) {
        return Err(SymlinkError::Nul);
    }
    Ok(Bytes::copy_from_slice(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn reads_what_s3fs_writes() {
        let meta = [
            ("mode", "33188"),
            ("uid", "1000"),
            ("gid", "100"),
            ("mtime", "1700000000"),
            ("ctime", "1700000001"),
            ("atime", "1700000002"),
        ];
        let attrs = PosixAttrs::from_metadata(meta);
        assert_eq!(attrs.kind, Some(PosixKind::File));
        assert_eq!(attrs.perm, Some(0o644));
        assert_eq!((attrs.uid, attrs.gid), (Some(1000), Some(100)));
        assert_eq!(attrs.mtime, Some(at(1_700_000_000, 0)));
        assert_eq!(attrs.ctime, Some(at(1_700_000_001, 0)));
        assert_eq!(attrs.atime, Some(at(1_700_000_002, 0)));
        // Directory marker and symlink modes.
        assert_eq!(parse_mode("16877"), Some((Some(PosixKind::Directory), 0o755)));
        assert_eq!(parse_mode("41471"), Some((Some(PosixKind::Symlink), 0o777)));
    }

    #[test]
    fn reads_rclone_and_header_forms() {
        let attrs = PosixAttrs::from_metadata([
            ("X-Amz-Meta-Mtime", "1354040105.123456789"),
            ("x-amz-meta-MODE", "0100664"),
            ("Uid", "0x1f4"),
        ]);
        assert_eq!(attrs.mtime, Some(at(1_354_040_105, 123_456_789)));
        assert_eq!(attrs.kind, Some(PosixKind::File));
        assert_eq!(attrs.perm, Some(0o664));
        assert_eq!(attrs.uid, Some(500));
        // rclone drops trailing zeros: ".5" is half a second.
        assert_eq!(parse_time("1354040105.5"), Some(at(1_354_040_105, 500_000_000)));
    }

    #[test]
    fn a_mode_without_type_bits_keeps_its_permissions() {
        assert_eq!(parse_mode("420"), Some((None, 0o644)));
        assert_eq!(parse_mode("0"), Some((None, 0)));
        assert_eq!(parse_mode("04755"), Some((None, 0o4755)));
    }

    #[test]
    fn special_files_show_as_regular_files() {
        // A FIFO (0o010644) and a socket (0o140755) that s3fs may have stored.
        assert_eq!(parse_mode(&0o010_644u32.to_string()), Some((Some(PosixKind::File), 0o644)));
        assert_eq!(parse_mode(&0o140_755u32.to_string()), Some((Some(PosixKind::File), 0o755)));
    }

    #[test]
    fn hostile_values_are_ignored() {
        for bad in [
            "",
            " 420",
            "420 ",
            "+420",
            "-420",
            "4e2",
            "0x",
            "08",
            "0o644",
            "abc",
            "99999999999999999999999",
            "4294967296",
            "262144",           // 0o1000000: a bit above the type field
            "0170644",          // type 0o170000 is not a type
            "\u{0663}\u{0662}", // non-ASCII digits
        ] {
            assert_eq!(parse_mode(bad), None, "{bad:?}");
        }
        for bad in ["", "-1", "4294967295", "4294967296", "1 ", "1a", "+1", "0x", "٣"] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
        for bad in [
            "",
            "-",
            ".5",
            "1.",
            "1.1234567890",
            "1e9",
            "+1",
            "--1",
            "1.-5",
            "1..2",
            " 1",
            "1 ",
            "NaN",
            "inf",
            "99999999999999999999",
            "1099511627777", // 2^40 + 1 seconds
            "00000000000000000000000000000000001",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
        // An unreadable value is absent, and does not spoil the others.
        let attrs = PosixAttrs::from_metadata([("mode", "banana"), ("uid", "7"), ("mtime", "x")]);
        assert_eq!(attrs, PosixAttrs { uid: Some(7), ..PosixAttrs::default() });
    }

    #[test]
    fn times_before_1970() {
        let t = parse_time("-315619140").unwrap();
        assert_eq!(UNIX_EPOCH.duration_since(t).unwrap(), Duration::from_secs(315_619_140));
        // {-2 s, +0.25 s} is 1.75 s before the epoch.
        let t = parse_time("-2.25").unwrap();
        assert_eq!(UNIX_EPOCH.duration_since(t).unwrap(), Duration::from_millis(1750));
        assert_eq!(format_time(t), "-2.250000000");
        assert_eq!(format_time(UNIX_EPOCH - Duration::from_secs(5)), "-5");
    }

    #[test]
    fn writes_what_s3fs_and_rclone_read() {
        let attrs = PosixAttrs {
            kind: Some(PosixKind::Symlink),
            perm: Some(0o777),
            uid: Some(0),
            gid: Some(65534),
            mtime: Some(at(1_700_000_000, 42)),
            atime: None,
            ctime: Some(at(1_700_000_000, 0)),
        };
        assert_eq!(
            attrs.to_metadata(),
            vec![
                ("mode".into(), "41471".into()),
                ("uid".into(), "0".into()),
                ("gid".into(), "65534".into()),
                ("mtime".into(), "1700000000.000000042".into()),
                ("ctime".into(), "1700000000".into()),
            ]
        );
    }

    #[test]
    fn merging_keeps_other_tools_metadata() {
        let base = [("Color", "blue"), ("mode", "33188"), ("x-amz-meta-uid", "5"), ("atime", "1")];
        let ours = PosixAttrs { perm: Some(0o600), mtime: Some(at(2, 0)), ..PosixAttrs::default() };
        assert_eq!(
            ours.merged_into(base),
            vec![("Color".into(), "blue".into()), ("mode".into(), "33152".into()), ("mtime".into(), "2".into())]
        );
    }

    #[test]
    fn symlink_bodies() {
        assert_eq!(symlink_target(b"../a b/c").unwrap(), Bytes::from_static(b"../a b/c"));
        assert_eq!(symlink_target(b"\xff\xfe").unwrap().len(), 2, "targets are bytes, not UTF-8");
        assert_eq!(symlink_target(b""), Err(SymlinkError::Empty));
        assert_eq!(symlink_target(b"a\0b"), Err(SymlinkError::Nul));
        assert_eq!(symlink_target(&[b'a'; SYMLINK_MAX]).unwrap().len(), SYMLINK_MAX);
        assert_eq!(check_symlink_size(SYMLINK_MAX as u64 + 1), Err(SymlinkError::TooLong(4096)));
        assert_eq!(check_symlink_size(u64::MAX), Err(SymlinkError::TooLong(u64::MAX)));
    }

    proptest! {
        #[test]
        fn attributes_round_trip(
            kind in prop_oneof![Just(PosixKind::File), Just(PosixKind::Directory), Just(PosixKind::Symlink)],
            perm in 0u16..=0o7777,
            uid in 0u32..u32::MAX,
            gid in 0u32..u32::MAX,
            secs in -(1i64 << 40)..(1i64 << 40),
            nanos in 0u32..1_000_000_000,
        ) {
            let mtime = if secs >= 0 {
                UNIX_EPOCH + Duration::new(secs as u64, nanos)
            } else {
                UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos.into())
            };
            let attrs = PosixAttrs {
                kind: Some(kind), perm: Some(perm), uid: Some(uid), gid: Some(gid),
                mtime: Some(mtime), atime: Some(mtime), ctime: None,
            };
            let stored = attrs.to_metadata();
            let read = PosixAttrs::from_metadata(stored.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            prop_assert_eq!(read, attrs);
        }

        #[test]
        fn any_string_parses_or_is_ignored(s in "\\PC{0,40}") {
            let _ = (parse_mode(&s), parse_id(&s), parse_time(&s));
        }
    }
}
