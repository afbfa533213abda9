use super::*;
use crate::client::ETag;

const MIB: u64 = 1024 * 1024;

fn store(dir: &Path, max: Option<u64>) -> StagingStore {
    let root = dir.join("staging");
    std::fs::create_dir_all(&root).unwrap();
    StagingStore::open(root.clone(), root, "bucket", max).unwrap().0
}

fn base(size: u64) -> Option<Base> {
    Some(Base { etag: ETag::new("\"e1\""), size })
}

#[test]
fn an_append_needs_nothing_from_the_object() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path(), None);
    let mut f = store.stage("dir/log", base(64 * MIB)).unwrap();
    f.write(64 * MIB, b"more").unwrap();
    assert_eq!(f.size(), 64 * MIB + 4);
    assert!(f.missing(64 * MIB..64 * MIB + 4).is_empty());
    assert_eq!(f.read(64 * MIB, 10).unwrap(), b"more");
    assert_eq!(f.clean(), vec![0..64 * MIB]);
    assert!(!f.unchanged());
    assert_eq!(store.budget().used(), 4);
}

#[test]
fn reads_fetch_whole_blocks_and_keep_written_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path(), None);
    let mut f = store.stage("db", base(3 * MIB)).unwrap();
    f.write(MIB + 10, b"new").unwrap();
    assert_eq!(f.missing(MIB..MIB + 20), vec![MIB..MIB + 10, MIB + 13..MIB + 20]);
    assert_eq!(f.fetches(MIB..MIB + 20), vec![MIB..2 * MIB]);
    // The fetched block carries the old bytes where "new" was written: they are not taken.
    f.fill(MIB, &vec![b'o'; MIB as usize]).unwrap();
    assert!(f.missing(MIB..2 * MIB).is_empty());
    let got = f.read(MIB + 8, 7).unwrap();
    assert_eq!(got, b"oonewoo");
    assert_eq!(f.clean(), vec![0..MIB + 10, MIB + 13..3 * MIB]);
}

#[test]
fn truncation_shorter_then_longer_reads_zeros() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path(), None);
    let mut f = store.stage("t", base(2 * MIB)).unwrap();
    f.set_size(100).unwrap();
    f.set_size(200).unwrap();
    assert_eq!(f.missing(0..200), vec![0..100]);
    f.fill(0, &[7u8; 100]).unwrap();
    let got = f.read(0, 300).unwrap();
    assert_eq!(got.len(), 200);
    assert!(got[..100].iter().all(|b| *b == 7) && got[100..].iter().all(|b| *b == 0));
    assert_eq!(f.clean(), vec![0..100]);
    assert!(!f.unchanged());
    f.uploaded(ETag::new("\"e2\""));
    assert!(f.unchanged());
}

#[test]
fn the_budget_refuses_what_does_not_fit_and_is_given_back() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path(), Some(1000));
    let mut f = store.stage("big", base(0)).unwrap();
    f.write(0, &[1u8; 600]).unwrap();
    let err = f.write(600, &[1u8; 600]).unwrap_err();
    assert!(matches!(err, StageError::NoRoom { need: 600, .. }), "{err}");
    assert_eq!(f.size(), 600);
    f.write(0, &[2u8; 600]).unwrap();
    assert_eq!(store.budget().used(), 600);
    f.set_size(100).unwrap();
    assert_eq!(store.budget().used(), 100);
    drop(f);
    assert_eq!(store.budget().used(), 0);
    assert_eq!(store.budget().peak(), 600);
}

#[test]
fn a_kept_file_is_moved_and_a_dropped_one_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path(), None);
    let mut f = store.stage("a/b c?", base(0)).unwrap();
    f.write(0, b"mine").unwrap();
    let kept = store.keep(&mut f).unwrap();
    drop(f);
    assert!(kept.to_str().unwrap().ends_with("-b_c_"), "{}", kept.display());
    assert_eq!(std::fs::read(&kept).unwrap(), b"mine");
    let g = store.stage("x", None).unwrap();
    let (data, record) = (g.data_path.clone(), g.record_path.clone());
    assert!(data.exists() && record.exists());
    drop(g);
    assert!(!data.exists() && !record.exists());
}

#[test]
fn sessions_of_dead_mounts_are_discarded_live_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("staging");
    std::fs::create_dir_all(&root).unwrap();
    // A dead mount's session: lock file nobody holds, one good and one damaged record.
    let dead = root.join("s-1-1");
    std::fs::create_dir(&dead).unwrap();
    std::fs::write(dead.join("lock"), b"").unwrap();
    let record = StageRecord { bucket: "b".into(), key: "k".into(), etag: "\"e\"".into(), base_size: 5 };
    std::fs::write(dead.join("0.record"), record.encode()).unwrap();
    std::fs::write(dead.join("0.data"), b"hello").unwrap();
    std::fs::write(dead.join("1.record"), b"garbage").unwrap();
    let (live, abandoned) = StagingStore::open(root.clone(), root.clone(), "b", None).unwrap();
    assert_eq!(abandoned, Abandoned { discarded: vec![("b".into(), "k".into())], unreadable: 1 });
    assert!(!dead.exists());
    let staged = live.stage("k2", None).unwrap();
    // A second mount leaves the first (live) mount's session alone.
    let (_other, abandoned) = StagingStore::open(root.clone(), root.clone(), "b", None).unwrap();
    assert_eq!(abandoned, Abandoned::default());
    assert!(staged.record_path.exists());
}
