//! fstab-style command lines: `mount-s3 BUCKET DIRECTORY -o OPTIONS`.
//!
//! mount(8) runs `/sbin/mount.mount-s3 SOURCE DIR -o OPTS` for fstab entries of type
//! `mount-s3`, and fuse's mount helper does the same for type `fuse` with a source written
//! `/path/to/mount-s3#bucket`. We recognise that shape exactly as Mountpoint does (five argv
//! entries, the fourth being `-o`) and rewrite it into ordinary flags before clap sees it:
//!
//! - OPTIONS is split on commas; `\,`, `\\` and `\"` are escapes and a bare `"` is an error
//!   (kept free for a future quoting syntax);
//! - `key=value` becomes `--key=value`, a bare `key` becomes `--key`, `ro` becomes `--read-only`;
//! - options systemd or mount(8) add on their own (`auto`, `noauto`, `user`, `nouser`, `users`,
//!   `_netdev`, `nofail`, `rw`, `nodev`, `nosuid`) and comments (`x-*`) are dropped;
//! - options written with dashes, `ro` with `rw`, `foreground` and `read-only` are errors.
//!
//! The caller then forces background mode and records `fstab_style`.

use std::ffi::{OsStr, OsString};

/// Printed to stderr when fstab style is detected.
pub const FSTAB_NOTICE: &str = "Using 'fstab' style options as detected use of `-o` argument.";

/// Options added by mount(8)/systemd, or meaningless for mount-s3, that are silently dropped.
const DROPPED: [&str; 10] = ["auto", "noauto", "user", "nouser", "users", "_netdev", "nofail", "rw", "nodev", "nosuid"];

/// A malformed fstab option string.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum FstabError {
    #[error("fstab options must be valid UTF-8: check the options column of the fstab entry")]
    NotUtf8,
    #[error(
        "unexpected '{found}' after '\\' at index {index} in fstab options: only \\, (comma), \
         \\\\ (backslash) and \\\" (double quote) are escapes"
    )]
    BadEscape { found: char, index: usize },
    #[error("fstab options end with a lone '\\': write \\\\ for a literal backslash")]
    TrailingBackslash,
    #[error("unexpected '\"' at index {index} in fstab options: write \\\" for a literal double quote")]
    BareQuote { index: usize },
    #[error("fstab option '{option}' must not start with '-': write it as '{suggestion}'")]
    Dashed { option: String, suggestion: String },
    #[error("fstab options 'ro' and 'rw' cannot be combined: keep only one of them")]
    RoAndRw,
    #[error(
        "the 'foreground' option cannot be used in fstab options: fstab mounts always run in the background, remove it"
    )]
    Foreground,
    #[error("the 'read-only' option cannot be used in fstab options: use 'ro' instead")]
    ReadOnly,
}

/// True for exactly `PROGRAM BUCKET DIRECTORY -o OPTIONS`.
pub fn is_fstab_style(args: &[OsString]) -> bool {
    args.len() == 5 && args[3] == "-o"
}

/// Rewrites an fstab-style argv (see [`is_fstab_style`]) into an ordinary one.
pub fn rewrite(args: &[OsString]) -> Result<Vec<OsString>, FstabError> {
    debug_assert!(is_fstab_style(args));
    let options = args[4].to_str().ok_or(FstabError::NotUtf8)?;
    let options = split_options(options)?;
    validate(&options)?;
    let mut argv = vec![args[0].clone(), strip_fuse_program(&args[1]), args[2].clone()];
    argv.extend(options.iter().filter(|option| !is_dropped(option)).map(|option| OsString::from(to_flag(option))));
    Ok(argv)
}

/// `/path/to/mount-s3#bucket` (fuse-type fstab source) -> `bucket`.
///
/// A `#` inside an `s3://` URI belongs to the key prefix and is kept.
pub fn strip_fuse_program(source: &OsStr) -> OsString {
    match source.to_str().and_then(|s| s.split_once('#')) {
        Some((program, bucket)) if !program.starts_with("s3://") => bucket.into(),
        _ => source.to_owned(),
    }
}

/// Splits on unescaped commas and resolves the escapes `\,`, `\\` and `\"`.
pub fn split_options(options: &str) -> Result<Vec<String>, FstabError> {
    let mut split = Vec::new();
    let mut current = String::new();
    let mut chars = options.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped @ (',' | '\\' | '"'))) => current.push(escaped),
                Some((index, found)) => return Err(FstabError::BadEscape { found, index }),
                None => return Err(FstabError::TrailingBackslash),
            },
            ',' => split.push(std::mem::take(&mut current)),
            '"' => return Err(FstabError::BareQuote { index }),
            c => current.push(c),
        }
    }
    split.push(current);
    Ok(split)
}

fn validate(options: &[String]) -> Result<(), FstabError> {
    if let Some(option) = options.iter().find(|option| option.starts_with('-')) {
        return Err(FstabError::Dashed {
            option: option.clone(),
            suggestion: option.trim_start_matches('-').to_owned(),
        });
    }
    let has = |name: &str| options.iter().any(|option| option == name);
    if has("ro") && has("rw") {
        return Err(FstabError::RoAndRw);
    }
    if has("foreground") {
        return Err(FstabError::Foreground);
    }
    if has("read-only") {
        return Err(FstabError::ReadOnly);
    }
    Ok(())
}

/// Empty options (from `a,,b` or an empty `-o ''`) carry nothing and are dropped too.
fn is_dropped(option: &str) -> bool {
    option.is_empty() || DROPPED.contains(&option) || option.starts_with("x-")
}

fn to_flag(option: &str) -> String {
    match option {
        "ro" => "--read-only".to_owned(),
        _ => format!("--{option}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(options: &str) -> Vec<OsString> {
        ["mount-s3", "bucket", "/mnt", "-o", options].map(OsString::from).to_vec()
    }

    #[test]
    fn detects_only_the_five_argument_shape() {
        let cases: &[(&[&str], bool)] = &[
            (&["mount-s3", "b", "/mnt", "-o", "ro"], true),
            (&["mount-s3", "b", "/mnt", "-o", ""], true),
            (&["mount-s3", "b", "/mnt", "-o"], false),
            (&["mount-s3", "b", "/mnt", "-o", "ro", "-f"], false),
            (&["mount-s3", "-o", "b", "/mnt", "ro"], false),
            (&["mount-s3", "b", "/mnt", "-f", "ro"], false),
        ];
        for (args, expected) in cases {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            assert_eq!(is_fstab_style(&args), *expected, "{args:?}");
        }
    }

    #[test]
    fn splits_with_escapes() {
        let cases: &[(&str, Result<&[&str], FstabError>)] = &[
            ("no commas", Ok(&["no commas"])),
            ("simple,case", Ok(&["simple", "case"])),
            ("comma\\,escape", Ok(&["comma,escape"])),
            ("a,\\,,c", Ok(&["a", ",", "c"])),
            ("a,\\,\\\",d", Ok(&["a", ",\"", "d"])),
            ("back\\\\slash", Ok(&["back\\slash"])),
            ("£,c", Ok(&["£", "c"])),
            ("multi_byte,🎡", Ok(&["multi_byte", "🎡"])),
            ("\\\"", Ok(&["\""])),
            ("", Ok(&[""])),
            ("a,,b", Ok(&["a", "", "b"])),
            ("ends,with,\\", Err(FstabError::TrailingBackslash)),
            ("random,\"quotes\"", Err(FstabError::BareQuote { index: 7 })),
            ("\\e\\scaped", Err(FstabError::BadEscape { found: 'e', index: 1 })),
        ];
        for (input, expected) in cases {
            let expected = expected.clone().map(|parts| parts.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(split_options(input), expected, "{input}");
        }
    }

    #[test]
    fn rewrites_options_into_flags() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("ro", &["--read-only"]),
            ("rw", &[]),
            ("_netdev,nosuid,nodev,nofail,rw,auto,noauto,user,nouser,users", &[]),
            ("x-systemd.automount,x-foo=bar", &[]),
            ("uid=2,gid=4,debug", &["--uid=2", "--gid=4", "--debug"]),
            ("prefix=foo/bar\\,baz/,_netdev,ro", &["--prefix=foo/bar,baz/", "--read-only"]),
            ("allow-other,a,,b", &["--allow-other", "--a", "--b"]),
            ("cache=\\\"foo\\\"", &["--cache=\"foo\""]),
        ];
        for (options, flags) in cases {
            let mut expected = vec!["mount-s3", "bucket", "/mnt"];
            expected.extend_from_slice(flags);
            let expected: Vec<OsString> = expected.into_iter().map(OsString::from).collect();
            assert_eq!(rewrite(&argv(options)), Ok(expected), "{options}");
        }
    }

    #[test]
    fn rejects_bad_options() {
        let cases: &[(&str, FstabError)] = &[
            ("--uid=2", FstabError::Dashed { option: "--uid=2".into(), suggestion: "uid=2".into() }),
            ("-f", FstabError::Dashed { option: "-f".into(), suggestion: "f".into() }),
            ("ro,rw", FstabError::RoAndRw),
            ("foreground", FstabError::Foreground),
            ("read-only", FstabError::ReadOnly),
            ("\\", FstabError::TrailingBackslash),
            ("\\a", FstabError::BadEscape { found: 'a', index: 1 }),
            ("cache=\"", FstabError::BareQuote { index: 6 }),
        ];
        for (options, expected) in cases {
            assert_eq!(rewrite(&argv(options)).as_ref(), Err(expected), "{options}");
        }
    }

    #[test]
    fn strips_the_fuse_program_from_the_source() {
        let cases = [
            ("bucket", "bucket"),
            ("/usr/bin/mount-s3#bucket", "bucket"),
            ("mount-s3#s3://bucket/prefix/", "s3://bucket/prefix/"),
            ("s3://bucket/a#b/", "s3://bucket/a#b/"),
            ("/opt/mount-s3#s3://bucket/a#b/", "s3://bucket/a#b/"),
        ];
        for (source, expected) in cases {
            assert_eq!(strip_fuse_program(OsStr::new(source)), OsString::from(expected), "{source}");
        }
        let mut args = argv("ro");
        args[1] = "/sbin/mount-s3#my-bucket".into();
        assert_eq!(rewrite(&args).unwrap()[1], OsString::from("my-bucket"));
    }

    #[test]
    fn rejects_non_utf8_options() {
        use std::os::unix::ffi::OsStringExt;
        let mut args = argv("");
        args[4] = OsString::from_vec(vec![b'r', 0xff]);
        assert_eq!(rewrite(&args), Err(FstabError::NotUtf8));
    }
}
