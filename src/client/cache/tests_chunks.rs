//! Block files read chunk by chunk (format version 2): a read returns after reading only the
//! chunks it needs, and a damaged chunk is never returned, wherever it is.

use super::ObjectId;
use super::format::CHUNK_SIZE;
use super::tests::{MIB, client, config, data, get, gets, open, put};

#[tokio::test]
async fn a_read_in_the_middle_of_a_block_reads_only_its_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(config(dir.path(), MIB)).await;
    let c = client(&cache, "bucket");
    let object = data(2 * MIB + 5000, 3);
    let etag = put(&c, "k", &object);
    assert_eq!(get(&c, "k", 0..object.len() as u64, &etag).await.unwrap(), object);
    cache.flush().await;
    let fetched = gets(&c);
    let read = |c: &super::tests::Client| c.stats().bytes_read_from_disk;
    // (range, data bytes the disk must read for it)
    let cases = [
        (5 * CHUNK_SIZE + 100..5 * CHUNK_SIZE + 110, CHUNK_SIZE),
        (3 * CHUNK_SIZE - 5..3 * CHUNK_SIZE + 5, 2 * CHUNK_SIZE),
        (MIB + 7 * CHUNK_SIZE..MIB + 8 * CHUNK_SIZE, CHUNK_SIZE),
        (MIB - 1..MIB + 1, 2 * CHUNK_SIZE),
        (2 * MIB + 4000..2 * MIB + 5000, 5000),
    ];
    for (range, cost) in cases {
        let before = read(&c);
        let want = &object[range.start as usize..range.end as usize];
        assert_eq!(get(&c, "k", range.clone(), &etag).await.unwrap(), want, "{range:?}");
        assert_eq!(read(&c) - before, cost, "{range:?}: only its chunks are read");
    }
    assert_eq!(gets(&c), fetched, "all from disk");
    // After a partial read, a reader of more of the same block still gets all of it.
    assert_eq!(get(&c, "k", 100..2 * MIB, &etag).await.unwrap(), &object[100..2 * MIB as usize]);
    assert_eq!(gets(&c), fetched);
    assert_eq!(c.inflight_blocks(), 0);
}

#[tokio::test]
async fn a_damaged_chunk_is_never_served_and_its_block_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(config(dir.path(), MIB)).await;
    let c = client(&cache, "bucket");
    let object = data(2 * MIB, 4);
    let etag = put(&c, "k", &object);
    assert_eq!(get(&c, "k", 0..2 * MIB, &etag).await.unwrap(), object);
    cache.flush().await;
    // One flipped bit in chunk 9 of block 0 (the data ends the file).
    let path = cache.block_path(&ObjectId::new("bucket", "k", &etag, MIB), 0);
    let mut file = std::fs::read(&path).unwrap();
    let data_start = file.len() - MIB as usize;
    file[data_start + 9 * CHUNK_SIZE as usize + 321] ^= 0x10;
    std::fs::write(&path, &file).unwrap();
    let before = gets(&c);
    // Chunks before it are still good, and served.
    let early = 2 * CHUNK_SIZE..3 * CHUNK_SIZE;
    assert_eq!(
        get(&c, "k", early.clone(), &etag).await.unwrap(),
        &object[2 * CHUNK_SIZE as usize..3 * CHUNK_SIZE as usize]
    );
    assert_eq!((gets(&c), c.stats().invalid_blocks), (before, 0));
    // A read that needs it gets the right bytes: the block is fetched again, the file replaced.
    assert_eq!(get(&c, "k", 0..2 * MIB, &etag).await.unwrap(), object, "never the damaged byte");
    assert_eq!((gets(&c) - before, c.stats().invalid_blocks), (1, 1));
    cache.flush().await;
    assert_ne!(std::fs::read(&path).unwrap(), file, "stored again");
    let before = gets(&c);
    assert_eq!(
        get(&c, "k", 9 * CHUNK_SIZE..10 * CHUNK_SIZE, &etag).await.unwrap(),
        &object[9 * CHUNK_SIZE as usize..10 * CHUNK_SIZE as usize]
    );
    assert_eq!(gets(&c), before, "from disk again");
    assert_eq!(c.inflight_blocks(), 0);
}
