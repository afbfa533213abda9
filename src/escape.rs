//! [`Escaped`]: how every key, path and S3-provided string reaches the log.
//!
//! S3 keys may hold any character, including newlines and terminal escapes, and error messages
//! come from the server. Written raw into a log, a key `x\n2024-01-01 ERROR forged` would add a
//! line of its own, and `\x1b[...` would drive the terminal of whoever reads the log. So such
//! strings are logged through this one wrapper: control characters (C0, DEL, C1), line and
//! paragraph separators and bidirectional overrides become `\n`, `\t`, `\r`, `\xNN` or
//! `\u{NNNN}`; bytes that are not UTF-8 become `\xNN`; a backslash becomes `\\` so an escape
//! can never be mistaken for the character it stands for. Everything else, printable Unicode
//! included, is written as it is, without quotes (so `key=dir/a.txt` reads as before).

use std::fmt::{self, Write};

/// Displays a string or byte string with control characters and invalid UTF-8 escaped.
#[derive(Clone, Copy)]
pub struct Escaped<'a>(&'a [u8]);

/// Wraps `s` (a `str`, `String`, `[u8]`, ...) for logging; see the module note.
pub fn escaped<T: AsRef<[u8]> + ?Sized>(s: &T) -> Escaped<'_> {
    Escaped(s.as_ref())
}

/// Wraps a path (or any `OsStr`) for logging.
pub fn escaped_path<T: AsRef<std::ffi::OsStr> + ?Sized>(p: &T) -> Escaped<'_> {
    use std::os::unix::ffi::OsStrExt;
    Escaped(p.as_ref().as_bytes())
}

/// True for characters that must not reach a log line as they are.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        // Line and paragraph separators, and the bidirectional embeddings, overrides and
        // isolates that can make a line read differently from what it holds.
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn write_char(f: &mut fmt::Formatter<'_>, c: char) -> fmt::Result {
    if !needs_escape(c) {
        return f.write_char(c);
    }
    match c {
        '\\' => f.write_str("\\\\"),
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        c if (c as u32) < 0x80 => write!(f, "\\x{:02x}", c as u32),
        c => write!(f, "\\u{{{:04x}}}", c as u32),
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                write_char(f, c)?;
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_is_unchanged() {
        for s in ["dir/a.txt", "with space", "ünïcödé-日本語-🦀", "100%+#?", ""] {
            assert_eq!(escaped(s).to_string(), s);
        }
    }

    #[test]
    fn controls_separators_and_invalid_utf8_are_escaped() {
        let cases: &[(&[u8], &str)] = &[
            (b"a\nb", "a\\nb"),
            (b"\r\t", "\\r\\t"),
            (b"\x1b[31mred", "\\x1b[31mred"),
            (b"nul\0", "nul\\x00"),
            (b"del\x7f", "del\\x7f"),
            (b"back\\slash", "back\\\\slash"),
            (b"\xff\xfe", "\\xff\\xfe"),
            ("c1\u{9b}".as_bytes(), "c1\\u{009b}"),
            ("line\u{2028}sep".as_bytes(), "line\\u{2028}sep"),
            ("rlo\u{202e}txt".as_bytes(), "rlo\\u{202e}txt"),
        ];
        for (raw, want) in cases {
            assert_eq!(escaped(raw).to_string(), *want, "{raw:?}");
        }
        assert_eq!(format!("{:?}", escaped("a\nb")), "\"a\\nb\"");
    }

    #[test]
    fn no_output_holds_a_raw_control_character() {
        let all: Vec<u8> = (0..=255u8).collect();
        let out = escaped(&all).to_string();
        assert!(!out.chars().any(|c| c.is_control()), "{out}");
    }
}
