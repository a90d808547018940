use super::*;
use std::io::Cursor;

/// A minimal LTX writer, as superfly/ltx writes them (both page
/// encodings); the real Litestream binaries' files are read in
/// tests/litestream.rs.
pub(crate) fn encode(min: u64, max: u64, commit: u32, pages: &[(u32, Vec<u8>)], block: bool) -> Vec<u8> {
    let page_size = pages[0].1.len() as u32;
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FLAG_NO_CHECKSUM.to_be_bytes());
    out.extend_from_slice(&page_size.to_be_bytes());
    out.extend_from_slice(&commit.to_be_bytes());
    out.extend_from_slice(&min.to_be_bytes());
    out.extend_from_slice(&max.to_be_bytes());
    out.extend_from_slice(&1_700_000_000_000u64.to_be_bytes());
    out.resize(HEADER_SIZE, 0);
    let mut digest = CRC64.digest();
    digest.update(&out);
    let mut index = Vec::new();
    for (pgno, page) in pages {
        let start = out.len();
        out.extend_from_slice(&pgno.to_be_bytes());
        if block {
            let c = lz4_flex::block::compress(page);
            out.extend_from_slice(&PAGE_FLAG_BLOCK.to_be_bytes());
            out.extend_from_slice(&(c.len() as u32).to_be_bytes());
            digest.update(&out[start..]);
            out.extend_from_slice(&c);
        } else {
            out.extend_from_slice(&0u16.to_be_bytes());
            digest.update(&out[start..]);
            let mut info = lz4_flex::frame::FrameInfo::new();
            info.content_checksum = true;
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            std::io::Write::write_all(&mut enc, page).unwrap();
            out.extend_from_slice(&enc.finish().unwrap());
        }
        digest.update(page);
        for v in [u64::from(*pgno), start as u64, (out.len() - start) as u64] {
            put_uvarint(&mut index, v);
        }
    }
    put_uvarint(&mut index, 0);
    let index_len = index.len() as u64;
    index.extend_from_slice(&index_len.to_be_bytes());
    let tail_start = out.len();
    out.extend_from_slice(&[0u8; PAGE_HEADER_SIZE]);
    out.extend_from_slice(&index);
    out.extend_from_slice(&0u64.to_be_bytes());
    digest.update(&out[tail_start..]);
    out.extend_from_slice(&(CHECKSUM_FLAG | digest.finalize()).to_be_bytes());
    out
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn page(seed: u8) -> Vec<u8> {
    (0..512u32).map(|i| if i % 7 == 0 { seed } else { (i / 64) as u8 }).collect()
}

type Pages = Vec<(u32, Vec<u8>)>;

fn read(bytes: &[u8]) -> Result<(LtxHeader, Pages), LtxError> {
    let mut pages = Vec::new();
    let h = read_pages(&mut Cursor::new(bytes), bytes.len() as u64, |n, p| {
        pages.push((n, p.to_vec()));
        Ok(())
    })?;
    Ok((h, pages))
}

#[test]
fn both_page_encodings_read_back() {
    let pages = vec![(1, page(1)), (2, page(2)), (3, page(3))];
    for block in [false, true] {
        let (h, got) = read(&encode(1, 4, 3, &pages, block)).unwrap();
        assert_eq!((h.min_txid, h.max_txid, h.commit, h.page_size), (1, 4, 3, 512));
        assert!(h.is_snapshot());
        assert_eq!(got, pages);
    }
}

/// A flipped bit is refused, or (inside compressed bytes: a match that
/// copies equal bytes from elsewhere) gives back exactly the same pages,
/// which the checksum over the decompressed content proves.
#[test]
fn every_flipped_bit_and_every_cut_is_refused_or_harmless() {
    let pages = vec![(2, page(9)), (5, page(7))];
    for block in [false, true] {
        let good = encode(3, 3, 6, &pages, block);
        let mut harmless = 0;
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                if let Ok((_, got)) = read(&bad) {
                    assert!(i > HEADER_SIZE && got == pages, "byte {i} bit {bit} (block {block}) gave other pages");
                    harmless += 1;
                }
            }
        }
        assert!(harmless < good.len(), "{harmless} harmless flips of {} bits", good.len() * 8);
        for cut in 0..good.len() {
            assert!(read(&good[..cut]).is_err(), "cut at {cut} accepted");
        }
    }
}

#[test]
fn a_snapshot_missing_a_page_is_refused() {
    let pages = vec![(1, page(1)), (3, page(3))];
    let err = read(&encode(1, 1, 3, &pages, true)).unwrap_err();
    assert!(err.to_string().contains("skips"), "{err}");
    let short = read(&encode(1, 1, 4, &[(1, page(1)), (2, page(2))], true)).unwrap_err();
    assert!(short.to_string().contains("ends at another page"), "{short}");
}

#[test]
fn pages_past_the_end_or_out_of_order_are_refused() {
    let past = read(&encode(2, 2, 2, &[(3, page(3))], true)).unwrap_err();
    assert!(past.to_string().contains("past the end"), "{past}");
    let order = read(&encode(2, 2, 9, &[(4, page(4)), (3, page(3))], true)).unwrap_err();
    assert!(order.to_string().contains("out of order"), "{order}");
}

#[test]
fn the_lock_page_is_skipped_in_a_snapshot() {
    assert_eq!(lock_page(65536), 16385);
    let h = LtxHeader {
        flags: FLAG_NO_CHECKSUM,
        page_size: 65536,
        commit: 16390,
        min_txid: 1,
        max_txid: 1,
        timestamp_ms: 0,
        pre_apply_checksum: 0,
    };
    assert!(check_order(Some(16384), 16386, h).is_ok());
    assert!(check_order(Some(16384), 16385, h).is_err());
    assert!(check_order(Some(16386), 16388, h).is_err());
}
