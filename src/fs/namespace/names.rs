//! Names and keys: which S3 keys become which directory entries.
//!
//! A key is split on `/`. A directory entry exists for a component only if it is a valid
//! name: not empty, not `.` or `..`, no NUL, at most 255 bytes. Keys with an invalid component
//! anywhere below the mount prefix are hidden (with a warning when listed). A key ending in `/` is a directory
//! marker: the directory exists, the marker itself is never a file.

use std::ffi::OsStr;

use crate::fs::FsError;

/// The longest file name the file system reports (statfs `namemax`) and accepts.
pub const NAME_MAX: usize = 255;

/// Checks a name the kernel handed us (lookup, create, ...): it must be representable as one
/// key component.
pub fn parse_name(name: &OsStr) -> Result<&str, FsError> {
    let s = name.to_str().ok_or_else(|| FsError::InvalidName(name.to_string_lossy().into_owned()))?;
    if !is_valid_component(s) {
        Err(FsError::InvalidName(s.to_string()))
    } else if s.len() > NAME_MAX {
        Err(FsError::NameTooLong(s.chars().take(32).collect()))
    } else {
        Ok(s)
    }
}

/// True if `s` can be a directory entry name.
pub fn is_valid_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

/// What a listed key (relative to the listed directory's key) contributes to the directory.
#[derive(Debug, PartialEq, Eq)]
pub enum ListedName<'a> {
    /// A file named so.
    File(&'a str),
    /// A subdirectory named so (from a common prefix `name/`).
    Directory(&'a str),
    /// The directory's own marker object (`dir/` listed under prefix `dir/`): not an entry.
    SelfMarker,
    /// Not representable; hidden from the file system.
    Hidden,
}

/// True if a listed `name` can be an entry: a valid component no longer than [`NAME_MAX`] (a
/// longer one could be listed but never looked up or opened: ENAMETOOLONG).
fn is_listable(name: &str) -> bool {
    is_valid_component(name) && name.len() <= NAME_MAX
}

/// Classifies an object key relative to the directory prefix it was listed under (with `/` as
/// delimiter the relative part contains no `/`, except the key of a marker).
pub fn classify_object(relative: &str) -> ListedName<'_> {
    if relative.is_empty() {
        return ListedName::SelfMarker;
    }
    if is_listable(relative) { ListedName::File(relative) } else { ListedName::Hidden }
}

/// Classifies a common prefix (relative part, ending in `/`).
pub fn classify_prefix(relative: &str) -> ListedName<'_> {
    match relative.strip_suffix('/') {
        Some(name) if is_listable(name) => ListedName::Directory(name),
        _ => ListedName::Hidden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn kernel_names() {
        let cases: &[(&[u8], bool)] = &[
            (b"a", true),
            (b"with space", true),
            ("\u{e9}t\u{e9}".as_bytes(), true),
            (b"back\\slash", true),
            (b".hidden", true),
            (b".", false),
            (b"..", false),
            (b"", false),
            (b"nul\0", false),
            (b"\xff\xfe", false),
        ];
        for (name, ok) in cases {
            assert_eq!(parse_name(OsStr::from_bytes(name)).is_ok(), *ok, "{:?}", String::from_utf8_lossy(name));
        }
        assert!(parse_name(OsStr::new(&"x".repeat(255))).is_ok());
        assert_eq!(parse_name(OsStr::new(&"x".repeat(256))).unwrap_err().errno(), libc::ENAMETOOLONG);
    }

    #[test]
    fn listed_keys() {
        assert_eq!(classify_object("a.txt"), ListedName::File("a.txt"));
        assert_eq!(classify_object(""), ListedName::SelfMarker);
        assert_eq!(classify_object("."), ListedName::Hidden);
        assert_eq!(classify_object(".."), ListedName::Hidden);
        assert_eq!(classify_object("x\0y"), ListedName::Hidden);
        assert_eq!(classify_prefix("sub/"), ListedName::Directory("sub"));
        assert_eq!(classify_prefix("/"), ListedName::Hidden);
        assert_eq!(classify_prefix("../"), ListedName::Hidden);
        assert_eq!(classify_prefix("./"), ListedName::Hidden);
        let (limit, over) = ("x".repeat(255), "x".repeat(256));
        assert_eq!(classify_object(&limit), ListedName::File(&limit));
        assert_eq!(classify_object(&over), ListedName::Hidden, "listed, it could never be opened");
        assert_eq!(classify_prefix(&format!("{limit}/")), ListedName::Directory(&limit));
        assert_eq!(classify_prefix(&format!("{over}/")), ListedName::Hidden);
    }
}
