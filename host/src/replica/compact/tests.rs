//! Compaction: which run to compact, in-memory and file merges agreeing,
//! damaged or misnamed inputs refused, copied blocks restoring as the
//! inputs do.

use super::*;
use crate::segment::format::misnamed_in;

fn segment(min: u64, max: u64, pages: &[(u32, u8)], db_pages: u32) -> Vec<u8> {
    let header = Header { page_size: 512, min_txid: min, max_txid: max, timestamp_ms: max as i64, ..Header::default() };
    let mut w = SegmentWriter::new(std::io::Cursor::new(Vec::new()), header).unwrap();
    for &(pgno, fill) in pages {
        w.add_page(pgno, &[fill; 512]).unwrap();
    }
    w.finish(db_pages, 1000 + max).unwrap().0.into_inner()
}

/// Inputs fetched into memory and inputs on disk, merged into memory
/// or into a file, give the same segment: newest page wins, a shrink
/// drops pages (and a later write brings one back), the last input's
/// size and checksum, the first's TXID.
#[test]
fn a_run_starts_after_what_any_higher_level_covers() {
    let seg = |level, min_txid, max_txid| {
        (
            SegmentName { level, min_txid, max_txid },
            RemoteSegment { size: 1, timestamp_ms: 0, modified_ms: None, parts: 0 },
        )
    };
    let mut listing: Listing = [seg(0, 2, 2), seg(0, 3, 3), seg(0, 4, 4), seg(0, 5, 5), seg(9, 1, 5)].into();
    let keys = |l: Listing| l.into_keys().map(|n| n.min_txid).collect::<Vec<_>>();
    assert_eq!(keys(plan(&listing, 0)), vec![2, 3, 4, 5], "a snapshot covers nothing for compaction");
    listing.extend([seg(2, 2, 3)]);
    assert_eq!(keys(plan(&listing, 0)), vec![4, 5], "level 2 covers up to 3, level 1 is gone");
    listing.extend([seg(1, 4, 4)]);
    assert_eq!(keys(plan(&listing, 0)), vec![5]);
}

#[test]
fn in_memory_and_file_merges_agree() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [
        segment(1, 1, &[(1, 1), (2, 1), (3, 1)], 3),
        segment(2, 2, &[(2, 2), (4, 2), (5, 2)], 5),
        segment(3, 3, &[(1, 3)], 2),
        segment(4, 4, &[(4, 4)], 4),
    ];
    let fetched: Vec<Input> = inputs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            Input::Fetched(SegmentName { level: 0, min_txid: i as u64 + 1, max_txid: i as u64 + 1 }, b.clone())
        })
        .collect();
    let (header, bytes) = merge(fetched, &dir.path().join("a.sparse"), None).unwrap();
    let bytes = bytes.unwrap();
    let on_disk: Vec<Input> = inputs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let p = dir.path().join(format!("in-{i}.seg"));
            std::fs::write(&p, b).unwrap();
            Input::Scratch(SegmentName { level: 0, min_txid: i as u64 + 1, max_txid: i as u64 + 1 }, p)
        })
        .collect();
    let out = dir.path().join("out.seg");
    let (file_header, none) = merge(on_disk, &dir.path().join("b.sparse"), Some(&out)).unwrap();
    assert!(none.is_none());
    assert_eq!(header, file_header);
    assert_eq!(bytes, std::fs::read(&out).unwrap());
    assert_eq!((header.min_txid, header.max_txid, header.db_pages, header.post_checksum), (1, 4, 4, 1004));
    let mut pages = Vec::new();
    SegmentReader::from_bytes(bytes)
        .unwrap()
        .for_each_page(|p, d| {
            pages.push((p, d[0]));
            Ok(())
        })
        .unwrap();
    assert_eq!(pages, vec![(1, 3), (2, 2), (4, 4)]);
}

/// A damaged fetched input fails the merge, naming the segment.
#[test]
fn a_damaged_fetched_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = segment(2, 2, &[(1, 2)], 1);
    let at = bad.len() / 2;
    bad[at] ^= 1;
    let name = SegmentName { level: 0, min_txid: 2, max_txid: 2 };
    let inputs = vec![
        Input::Fetched(SegmentName { level: 0, min_txid: 1, max_txid: 1 }, segment(1, 1, &[(1, 1)], 1)),
        Input::Fetched(name, bad),
    ];
    let err = merge(inputs, &dir.path().join("s"), None).expect_err("merge of a damaged input must fail");
    assert!(err.to_string().contains(&name.to_string()), "{err}");
}

/// An input whose header is not what its name says (a level-1
/// segment's bytes under a level-0 name, fetched or on disk) fails the
/// merge as misnamed, naming the object.
#[test]
fn a_misnamed_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let name = SegmentName { level: 0, min_txid: 2, max_txid: 2 };
    let first = Input::Fetched(SegmentName { level: 0, min_txid: 1, max_txid: 1 }, segment(1, 1, &[(1, 1)], 1));
    let longer = segment(2, 4, &[(1, 4)], 1);
    let err = merge(vec![first, Input::Fetched(name, longer.clone())], &dir.path().join("s"), None)
        .expect_err("a misnamed input must fail the merge");
    assert!(misnamed_in(&err), "{err:#}");
    assert!(format!("{err:#}").contains(&name.to_string()), "{err:#}");
    let path = dir.path().join("in.seg");
    std::fs::write(&path, &longer).unwrap();
    let first = Input::Fetched(SegmentName { level: 0, min_txid: 1, max_txid: 1 }, segment(1, 1, &[(1, 1)], 1));
    let err = merge(vec![first, Input::Scratch(name, path)], &dir.path().join("s"), None)
        .expect_err("a misnamed input on disk must fail the merge");
    assert!(misnamed_in(&err) && format!("{err:#}").contains(&name.to_string()), "{err:#}");
}

/// A page of input `fill` that says which page it is.
fn tagged(pgno: u32, fill: u8) -> (u32, Vec<u8>) {
    let mut page = vec![fill; 512];
    page[..4].copy_from_slice(&pgno.to_be_bytes());
    (pgno, page)
}

fn tagged_segment(txid: u64, pgnos: impl IntoIterator<Item = u32>, db_pages: u32) -> Vec<u8> {
    let header =
        Header { page_size: 512, min_txid: txid, max_txid: txid, timestamp_ms: txid as i64, ..Header::default() };
    let mut w = SegmentWriter::new(std::io::Cursor::new(Vec::new()), header).unwrap();
    for pgno in pgnos {
        w.add_page(pgno, &tagged(pgno, txid as u8).1).unwrap();
    }
    w.finish(db_pages, 1000 + txid).unwrap().0.into_inner()
}

/// The database the pages of `segments` give when applied in order,
/// later copies winning (as a restore applies them).
fn applied(segments: &[Vec<u8>]) -> std::collections::BTreeMap<u32, Vec<u8>> {
    let mut db = std::collections::BTreeMap::new();
    for bytes in segments {
        SegmentReader::from_bytes(bytes.clone())
            .unwrap()
            .for_each_page(|p, d| {
                db.insert(p, d.to_vec());
                Ok(())
            })
            .unwrap();
    }
    db
}

fn fetched(segments: &[Vec<u8>]) -> Vec<Input> {
    segments
        .iter()
        .enumerate()
        .map(|(i, b)| {
            Input::Fetched(SegmentName { level: 0, min_txid: i as u64 + 1, max_txid: i as u64 + 1 }, b.clone())
        })
        .collect()
}

/// A run without a shrink copies its mostly-live blocks as they are and
/// recompresses the others' newest pages after them: the result (a
/// version 2 segment, dead copies included) restores to exactly what
/// applying the inputs one by one gives.
#[test]
fn copied_blocks_restore_like_the_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [
        // Two blocks (2048 pages of 512 bytes fill one): both copied.
        tagged_segment(1, 1..=3000, 3000),
        // Pages 1 and 2 and a range of the first input's second block.
        tagged_segment(2, [1, 2].into_iter().chain(2100..=2200), 3000),
        // Mostly rewritten by the next input: recompressed.
        tagged_segment(3, [1].into_iter().chain(10..=20).chain(3001..=3010), 3010),
        tagged_segment(4, (10..=20).chain(3001..=3008), 3010),
    ];
    let (header, bytes) = merge(fetched(&inputs), &dir.path().join("s"), None).unwrap();
    let bytes = bytes.unwrap();
    assert_eq!(header.version, crate::segment::format::VERSION_BLOCKS);
    assert_eq!((header.min_txid, header.max_txid, header.db_pages, header.post_checksum), (1, 4, 3010, 1004));
    let merged = applied(std::slice::from_ref(&bytes));
    assert_eq!(merged, applied(&inputs));
    // Dead copies ride along in the copied blocks; the third input's
    // block is not among them.
    let reader = SegmentReader::from_bytes(bytes).unwrap();
    let blocks = reader.blocks().unwrap();
    assert!(header.page_count as usize > merged.len());
    assert_eq!(blocks.len(), 5, "{blocks:?}");
    assert_eq!(blocks[4].pgnos, vec![1, 3009, 3010], "the recompressed newest pages come last");
    // The same run through a file gives the same bytes.
    let out = dir.path().join("out.seg");
    let (file_header, _) = merge(fetched(&inputs), &dir.path().join("s2"), Some(&out)).unwrap();
    assert_eq!(file_header, header);
    assert_eq!(applied(&[std::fs::read(&out).unwrap()]), merged);
}

/// A block copied from a fetched input is decompressed first: a frame
/// damaged before its content hash was computed (as a buggy or hostile
/// store could hand back) fails the merge, naming the segment.
#[test]
fn a_copied_block_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = tagged_segment(2, 1..=40, 40);
    let frame_at = crate::segment::format::HEADER_SIZE + 8 + 4 * 40 + 20;
    bad[frame_at] ^= 0x55;
    let end = bad.len() - crate::segment::format::TRAILER_SIZE;
    let hash = xxhash_rust::xxh3::xxh3_64(&bad[crate::segment::format::HEADER_SIZE..end]);
    bad[end..end + 8].copy_from_slice(&hash.to_be_bytes());
    let inputs = [tagged_segment(1, [1], 1), bad];
    let err = merge(fetched(&inputs), &dir.path().join("s"), None).expect_err("a damaged block must not be copied");
    assert!(err.to_string().contains("0000/0000000000000002-0000000000000002.seg"), "{err}");
}
