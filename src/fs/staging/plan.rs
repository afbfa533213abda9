//! The upload planner: which parts of a staged file's new version are copied server-side from the
//! object it was staged from (UploadPartCopy) and which are sent from local disk.
//!
//! A pure function of the new size, the "clean" segments (bytes known equal to the old object at
//! the same offsets) and S3's multipart rules: every part but the last is at least 5 MiB, no part
//! is over 5 GiB, at most 10,000 parts. A clean segment becomes copy parts when it is big enough;
//! a changed stretch shorter than 5 MiB between two copies borrows bytes from the copy after it
//! (those bytes are then sent, so they must be on local disk). An append to a 64 MiB object is one
//! 64 MiB copy part and one part with the appended bytes.

use std::ops::Range;

/// S3's smallest part (all but the last).
pub const MIN_PART: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
/// S3's most parts in one upload.
pub const MAX_PARTS: usize = 10_000;

/// Where one part's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartSource {
    /// The old object's bytes at this range (same offsets in the new version).
    Copy(Range<u64>),
    /// Local bytes of the staged file.
    Send(Range<u64>),
}

impl PartSource {
    /// The bytes of the new version this part holds.
    pub fn range(&self) -> &Range<u64> {
        match self {
            PartSource::Copy(r) | PartSource::Send(r) => r,
        }
    }
}

/// How to upload a staged file's new version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadPlan {
    /// The new version is the old object: nothing to upload.
    Unchanged,
    /// One PutObject of the whole file, from local disk.
    Single,
    /// A multipart upload of these parts, in order.
    Multipart(Vec<PartSource>),
}

impl UploadPlan {
    /// The ranges that must be on local disk before uploading (everything that is sent).
    pub fn sent(&self, size: u64) -> Vec<Range<u64>> {
        match self {
            UploadPlan::Unchanged => vec![],
            UploadPlan::Single => std::iter::once(0..size).collect(),
            UploadPlan::Multipart(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    PartSource::Send(r) => Some(r.clone()),
                    PartSource::Copy(_) => None,
                })
                .collect(),
        }
    }
}

/// Plans the upload of a file of `size` bytes whose `clean` segments (sorted, disjoint, inside
/// `0..size`) equal the old object, sending parts of `send_part` bytes (raised when the parts
/// would not fit in 10,000). `unchanged` says the file is the old object, byte for byte.
pub fn plan(size: u64, clean: &[Range<u64>], unchanged: bool, send_part: u64) -> UploadPlan {
    if unchanged {
        return UploadPlan::Unchanged;
    }
    // Under one part, sending is cheaper than a multipart upload of copies (three requests).
    if size < MIN_PART {
        return UploadPlan::Single;
    }
    let mut send_part = send_part.clamp(MIN_PART, MAX_PART);
    loop {
        let parts = plan_parts(size, clean, send_part);
        if parts.len() <= MAX_PARTS || send_part >= MAX_PART {
            if !parts.iter().any(|p| matches!(p, PartSource::Copy(_))) && size <= send_part {
                return UploadPlan::Single;
            }
            return UploadPlan::Multipart(parts);
        }
        send_part = (send_part * 2).min(MAX_PART);
    }
}

fn plan_parts(size: u64, clean: &[Range<u64>], send_part: u64) -> Vec<PartSource> {
    let mut parts = Vec::new();
    let mut pos = 0;
    for seg in clean {
        let end = seg.end.min(size);
        let mut start = seg.start.max(pos);
        if end <= start {
            continue;
        }
        // The changed stretch before this copy is not the last part: it needs 5 MiB.
        let gap = start - pos;
        if gap > 0 && gap < MIN_PART {
            start = pos + MIN_PART;
        }
        // A copy part needs 5 MiB too, unless it ends the file (the last part may be small).
        if end <= start || (end - start < MIN_PART && end != size) {
            continue;
        }
        push_split(&mut parts, pos..start, send_part, false);
        push_split(&mut parts, start..end, MAX_PART, true);
        pos = end;
    }
    push_split(&mut parts, pos..size, send_part, false);
    parts
}

/// Splits `range` into parts of at most `max` bytes (copies: evenly; sends: `max` each, a short
/// remainder joining the part before it so that no inner part is under 5 MiB).
fn push_split(parts: &mut Vec<PartSource>, range: Range<u64>, max: u64, copy: bool) {
    let len = range.end - range.start;
    if len == 0 {
        return;
    }
    let make = |r: Range<u64>| if copy { PartSource::Copy(r) } else { PartSource::Send(r) };
    let count = len.div_ceil(max);
    let chunk = if copy { len.div_ceil(count) } else { max };
    let mut pos = range.start;
    while pos < range.end {
        let mut end = (pos + chunk).min(range.end);
        if range.end - end < MIN_PART && range.end - end > 0 && end - pos + (range.end - end) <= MAX_PART {
            end = range.end;
        }
        parts.push(make(pos..end));
        pos = end;
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn an_append_copies_the_old_object_and_sends_the_new_end() {
        let plan = plan(65 * MIB, &[0..64 * MIB], false, 8 * MIB);
        assert_eq!(
            plan,
            UploadPlan::Multipart(vec![PartSource::Copy(0..64 * MIB), PartSource::Send(64 * MIB..65 * MIB)])
        );
        assert_eq!(plan.sent(65 * MIB), vec![64 * MIB..65 * MIB]);
    }

    #[test]
    fn small_files_are_sent_whole() {
        assert_eq!(plan(2 * MIB, &[0..MIB], false, 8 * MIB), UploadPlan::Single);
        assert_eq!(plan(0, &[], false, 8 * MIB), UploadPlan::Single);
        assert_eq!(plan(4 * MIB, &[0..4 * MIB], false, 8 * MIB), UploadPlan::Single, "a shrunk small file");
        assert_eq!(plan(64 * MIB, &[0..64 * MIB], true, 8 * MIB), UploadPlan::Unchanged);
    }

    #[test]
    fn a_small_change_in_the_middle_borrows_from_the_next_copy() {
        let k = 4096;
        let plan = plan(64 * MIB, &[0..30 * MIB, 30 * MIB + k..64 * MIB], false, 8 * MIB);
        assert_eq!(
            plan,
            UploadPlan::Multipart(vec![
                PartSource::Copy(0..30 * MIB),
                PartSource::Send(30 * MIB..35 * MIB),
                PartSource::Copy(35 * MIB..64 * MIB),
            ])
        );
    }

    #[test]
    fn a_change_near_the_end_is_sent_with_the_rest() {
        let plan = plan(64 * MIB, &[0..62 * MIB, 62 * MIB + 1..64 * MIB], false, 8 * MIB);
        assert_eq!(
            plan,
            UploadPlan::Multipart(vec![PartSource::Copy(0..62 * MIB), PartSource::Send(62 * MIB..64 * MIB)])
        );
    }

    #[test]
    fn sends_leave_no_short_inner_part() {
        let plan = plan(28 * MIB, &[], false, 8 * MIB);
        let UploadPlan::Multipart(parts) = plan else { panic!("multipart") };
        assert_eq!(
            parts,
            vec![
                PartSource::Send(0..8 * MIB),
                PartSource::Send(8 * MIB..16 * MIB),
                PartSource::Send(16 * MIB..28 * MIB)
            ]
        );
    }

    proptest! {
        /// Any plan covers the file in order, obeys S3's part rules, and copies only clean bytes.
        #[test]
        fn plans_obey_s3_rules(
            size_mib in 0u64..200,
            extra in 0u64..MIB,
            cuts in proptest::collection::vec(0u64..200 * MIB, 0..12),
            send_mib in 5u64..20,
        ) {
            let size = size_mib * MIB + extra;
            let mut cuts: Vec<u64> = cuts.into_iter().filter(|c| *c < size).collect();
            cuts.sort();
            cuts.dedup();
            let clean: Vec<Range<u64>> = cuts.chunks(2).filter(|c| c.len() == 2).map(|c| c[0]..c[1]).collect();
            let plan = plan(size, &clean, false, send_mib * MIB);
            let parts = match plan {
                UploadPlan::Single => {
                    prop_assert!(size <= send_mib * MIB);
                    return Ok(());
                }
                UploadPlan::Multipart(parts) => parts,
                UploadPlan::Unchanged => unreachable!(),
            };
            prop_assert!(parts.len() <= MAX_PARTS);
            let mut pos = 0;
            for (i, p) in parts.iter().enumerate() {
                let r = p.range();
                prop_assert_eq!(r.start, pos);
                prop_assert!(r.end > r.start);
                prop_assert!(r.end - r.start <= MAX_PART);
                if i + 1 < parts.len() {
                    prop_assert!(r.end - r.start >= MIN_PART, "inner part {:?} under 5 MiB", r);
                }
                if let PartSource::Copy(r) = p {
                    prop_assert!(clean.iter().any(|c| c.start <= r.start && r.end <= c.end));
                }
                pos = r.end;
            }
            prop_assert_eq!(pos, size);
        }
    }
}
