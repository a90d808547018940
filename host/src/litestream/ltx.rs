//! Reading one LTX file, the unit of Litestream 0.5's replicas (superfly/ltx
//! v0.5; the layout is in `shared/reference/litestream-formats.md`):
//! header (100 bytes) | page frames | zero page header (6) | page index |
//! trailer (16), big-endian.
//!
//! The page index is read first and must tile the file exactly: every
//! frame starts where the one before ended, the first right after the
//! header and the last at the zero page header. That makes the old
//! encoding (an LZ4 *frame* per page, Litestream 0.5.0-0.5.15) as easy to
//! bound as the new one (an LZ4 *block* with its length, 0.5.16+), and a
//! file cut or spliced anywhere fails before a page is used. The file
//! checksum (CRC-64/ISO over the decompressed content) is verified at the
//! end; the caller writes pages to scratch space only and drops it on error.

use crc::{CRC_64_GO_ISO, Crc, Digest};
use std::io::{Read, Seek, SeekFrom};

pub const HEADER_SIZE: usize = 100;
const MAGIC: &[u8; 4] = b"LTX1";
const TRAILER_SIZE: u64 = 16;
/// The u64 length of the page index, just before the trailer.
const INDEX_LEN_SIZE: u64 = 8;
const PAGE_HEADER_SIZE: usize = 6;
/// Header flag: no database checksums are tracked (what Litestream 0.5
/// writes); the only flag defined.
const FLAG_NO_CHECKSUM: u32 = 0x2;
/// Page flag of the 0.5.16+ encoding: a u32 length, then an LZ4 block.
const PAGE_FLAG_BLOCK: u16 = 0x1;
/// Set in every stored checksum, so that zero means "none".
const CHECKSUM_FLAG: u64 = 1 << 63;
/// The biggest page index read into memory: about 10 bytes per page, so
/// 64 MiB covers a database of millions of pages; a larger "index" is a
/// damaged length field, refused before it is allocated.
const MAX_INDEX_BYTES: u64 = 64 << 20;

static CRC64: Crc<u64> = Crc::<u64>::new(&CRC_64_GO_ISO);

#[derive(Debug, thiserror::Error)]
pub enum LtxError {
    #[error("not an LTX file or damaged: {0}")]
    Malformed(String),
    #[error("checksum mismatch: the file says {expected:016x}, its content gives {actual:016x}")]
    Checksum { expected: u64, actual: u64 },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn malformed<T>(msg: impl Into<String>) -> Result<T, LtxError> {
    Err(LtxError::Malformed(msg.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LtxHeader {
    pub flags: u32,
    pub page_size: u32,
    /// Database size in pages after this file is applied.
    pub commit: u32,
    pub min_txid: u64,
    pub max_txid: u64,
    pub timestamp_ms: i64,
    pub pre_apply_checksum: u64,
}

impl LtxHeader {
    /// A snapshot holds every page of the database (its chain starts at 1).
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == 1
    }

    pub fn parse(b: &[u8]) -> Result<LtxHeader, LtxError> {
        if b.len() < HEADER_SIZE || &b[..4] != MAGIC {
            return malformed("no LTX1 magic at the start");
        }
        let h = LtxHeader {
            flags: be32(b, 4),
            page_size: be32(b, 8),
            commit: be32(b, 12),
            min_txid: be64(b, 16),
            max_txid: be64(b, 24),
            timestamp_ms: be64(b, 32) as i64,
            pre_apply_checksum: be64(b, 40),
        };
        h.validate(be64(b, 48), be64(b, 56), (be32(b, 64), be32(b, 68)))?;
        Ok(h)
    }

    fn validate(&self, wal_offset: u64, wal_size: u64, salts: (u32, u32)) -> Result<(), LtxError> {
        if self.flags & !FLAG_NO_CHECKSUM != 0 {
            return malformed(format!("unknown header flags {:#x}", self.flags));
        }
        if !(512..=65536).contains(&self.page_size) || !self.page_size.is_power_of_two() {
            return malformed(format!("page size {} is not a power of two in 512..65536", self.page_size));
        }
        if self.min_txid == 0 || self.max_txid < self.min_txid {
            return malformed(format!("TXID range {}-{} is invalid", self.min_txid, self.max_txid));
        }
        if self.commit == 0 {
            return malformed("database size after commit is 0 pages");
        }
        if wal_offset == 0 && (salts != (0, 0) || wal_size != 0) {
            return malformed("WAL position fields are inconsistent");
        }
        let none = self.flags & FLAG_NO_CHECKSUM != 0 || self.is_snapshot();
        if none && self.pre_apply_checksum != 0 {
            return malformed("a pre-apply checksum where none may be");
        }
        if !none && self.pre_apply_checksum & CHECKSUM_FLAG == 0 {
            return malformed("the pre-apply checksum is missing");
        }
        Ok(())
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// One page's frame as the index gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    pgno: u32,
    offset: u64,
    size: u64,
}

/// SQLite's lock-byte page, never stored.
fn lock_page(page_size: u32) -> u32 {
    (0x4000_0000 / page_size) + 1
}

/// Read the LTX file `file` of `len` bytes, giving each page to `page` in
/// ascending order; returns the header once the whole file is verified.
/// `page` must write only to scratch space: an error can come after it.
pub fn read_pages<R: Read + Seek>(
    file: &mut R,
    len: u64,
    mut page: impl FnMut(u32, &[u8]) -> std::io::Result<()>,
) -> Result<LtxHeader, LtxError> {
    let min_len = HEADER_SIZE as u64 + PAGE_HEADER_SIZE as u64 + INDEX_LEN_SIZE + TRAILER_SIZE + 1;
    if len < min_len {
        return malformed(format!("{len} bytes is too short"));
    }
    let mut head = [0u8; HEADER_SIZE];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut head)?;
    let header = LtxHeader::parse(&head)?;
    let (index, tail) = read_index(file, len)?;
    let frames = parse_index(&index, header, len)?;
    let mut digest = CRC64.digest();
    digest.update(&head);
    file.seek(SeekFrom::Start(HEADER_SIZE as u64))?;
    let mut raw = Vec::new();
    let mut out = vec![0u8; header.page_size as usize];
    for f in &frames {
        raw.resize(f.size as usize, 0);
        file.read_exact(&mut raw)?;
        decode_page(&raw, f.pgno, &mut out, &mut digest)?;
        page(f.pgno, &out)?;
    }
    let mut zero = [0u8; PAGE_HEADER_SIZE];
    file.read_exact(&mut zero)?;
    if zero != [0u8; PAGE_HEADER_SIZE] {
        return malformed("no end-of-pages marker where the index says the pages end");
    }
    digest.update(&zero);
    digest.update(&index);
    digest.update(&tail[..16]);
    let expected = be64(&tail, 16);
    let actual = CHECKSUM_FLAG | digest.finalize();
    if expected != actual {
        return Err(LtxError::Checksum { expected, actual });
    }
    Ok(header)
}

/// The page index and the 24 bytes after it (its length, post-apply
/// checksum, file checksum).
fn read_index<R: Read + Seek>(file: &mut R, len: u64) -> Result<(Vec<u8>, [u8; 24]), LtxError> {
    let mut tail = [0u8; 24];
    file.seek(SeekFrom::Start(len - 24))?;
    file.read_exact(&mut tail)?;
    let index_len = be64(&tail, 0);
    let room = len - 24 - HEADER_SIZE as u64 - PAGE_HEADER_SIZE as u64;
    if index_len == 0 || index_len > room || index_len > MAX_INDEX_BYTES {
        return malformed(format!("page index length {index_len} does not fit the file"));
    }
    let mut index = vec![0u8; index_len as usize];
    file.seek(SeekFrom::Start(len - 24 - index_len))?;
    file.read_exact(&mut index)?;
    Ok((index, tail))
}

fn uvarint(b: &[u8], at: &mut usize) -> Result<u64, LtxError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&byte) = b.get(*at) else { return malformed("the page index ends inside a number") };
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    malformed("a number in the page index is too long")
}

/// Parse the index and check it tiles the file between the header and the
/// zero page header, in ascending page order, obeying the snapshot rule.
fn parse_index(index: &[u8], h: LtxHeader, len: u64) -> Result<Vec<Frame>, LtxError> {
    let pages_end = len - 24 - index.len() as u64 - PAGE_HEADER_SIZE as u64;
    let (mut at, mut next, mut frames) = (0usize, HEADER_SIZE as u64, Vec::<Frame>::new());
    loop {
        let pgno = uvarint(index, &mut at)?;
        if pgno == 0 {
            break;
        }
        let (offset, size) = (uvarint(index, &mut at)?, uvarint(index, &mut at)?);
        let pgno = u32::try_from(pgno).or_else(|_| malformed(format!("page number {pgno} is too large")))?;
        check_order(frames.last().map(|f| f.pgno), pgno, h)?;
        if offset != next || size <= PAGE_HEADER_SIZE as u64 || size > pages_end - offset.min(pages_end) {
            return malformed(format!("page {pgno}'s frame ({offset}+{size}) does not follow the one before"));
        }
        next = offset + size;
        frames.push(Frame { pgno, offset, size });
    }
    if at != index.len() || next != pages_end {
        return malformed("the page index does not cover the file's pages exactly");
    }
    if h.is_snapshot() && frames.last().map(|f| f.pgno) != Some(h.commit) {
        return malformed(format!("a snapshot of {} pages ends at another page", h.commit));
    }
    Ok(frames)
}

fn check_order(prev: Option<u32>, pgno: u32, h: LtxHeader) -> Result<(), LtxError> {
    let lock = lock_page(h.page_size);
    if pgno > h.commit || pgno == lock || prev.is_some_and(|p| p >= pgno) {
        return malformed(format!("page {pgno} is out of order, the lock page, or past the end ({})", h.commit));
    }
    if h.is_snapshot() {
        let expected = match prev {
            None => 1,
            Some(p) if p + 1 == lock => p + 2,
            Some(p) => p + 1,
        };
        if pgno != expected {
            return malformed(format!("a snapshot skips from page {} to {pgno}", prev.unwrap_or(0)));
        }
    }
    Ok(())
}

/// Decode one frame (`raw`, header included) into `out`, hashing what the
/// file checksum covers: the header, the length (new encoding), the page.
fn decode_page(raw: &[u8], pgno: u32, out: &mut [u8], digest: &mut Digest<'_, u64>) -> Result<(), LtxError> {
    if be32(raw, 0) != pgno {
        return malformed(format!("the frame of page {pgno} holds page {}", be32(raw, 0)));
    }
    let flags = u16::from_be_bytes([raw[4], raw[5]]);
    let body = &raw[PAGE_HEADER_SIZE..];
    let used = match flags {
        PAGE_FLAG_BLOCK => {
            if body.len() < 4 || be32(body, 0) as usize != body.len() - 4 {
                return malformed(format!("page {pgno}'s block length disagrees with the index"));
            }
            digest.update(&raw[..PAGE_HEADER_SIZE + 4]);
            lz4_flex::block::decompress_into(&body[4..], out)
                .or_else(|e| malformed(format!("page {pgno} does not decompress: {e}")))?
        }
        0 => {
            digest.update(&raw[..PAGE_HEADER_SIZE]);
            read_frame(body, out).or_else(|e| malformed(format!("page {pgno} does not decompress: {e}")))?
        }
        f => return malformed(format!("page {pgno} has unknown flags {f:#x}")),
    };
    if used != out.len() {
        return malformed(format!("page {pgno} decompresses to {used} bytes, not one page"));
    }
    digest.update(out);
    Ok(())
}

/// An LZ4 frame holding exactly one page and nothing after it (its content
/// checksum, when present, is checked by the decoder).
fn read_frame(body: &[u8], out: &mut [u8]) -> std::io::Result<usize> {
    let mut decoder = lz4_flex::frame::FrameDecoder::new(body);
    decoder.read_exact(out)?;
    let mut extra = [0u8; 1];
    match decoder.read(&mut extra)? {
        0 => Ok(out.len()),
        _ => Ok(out.len() + 1),
    }
}

#[cfg(test)]
#[path = "ltx_tests.rs"]
mod tests;
