//! Test data: reproducible pseudo-random contents and their digests.
//!
//! The generator makes 8 bytes per step (xorshift64*), so a GiB takes seconds even in a debug
//! build; SHA-256 is the digest every "same bytes?" check compares.

#![allow(dead_code)]

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// `len` bytes determined by `seed` (different seeds give unrelated data).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// SHA-256 of `data`.
pub fn digest(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 of everything read from `reader`, in 1 MiB reads.
pub fn digest_reader(mut reader: impl Read) -> std::io::Result<([u8; 32], u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok((hasher.finalize().into(), total));
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
}

/// SHA-256 and length of the file at `path`.
pub fn digest_file(path: &Path) -> std::io::Result<([u8; 32], u64)> {
    digest_reader(std::fs::File::open(path)?)
}

/// Short hex of a digest, for messages.
pub fn hex(d: &[u8; 32]) -> String {
    d[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// [`pattern`] as [`bytes::Bytes`], for client calls.
pub fn pattern_bytes(len: usize, seed: u64) -> bytes::Bytes {
    pattern(len, seed).into()
}
