//! Reading and verifying a segment, from a local file or from memory,
//! block by block.

use super::format::{
    FormatError, HEADER_SIZE, Header, INDEX_ENTRY_SIZE, IndexEntry, TRAILER_SIZE, VERSION_ASCENDING, be32, be64,
};
use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use xxhash_rust::xxh3::Xxh3;

/// Hashing buffer: sequential reads in big chunks.
const VERIFY_CHUNK: usize = 1 << 20;

/// An opened, fully verified segment, from a file or from memory.
pub struct SegmentReader {
    source: Source,
    header: Header,
    index: Vec<IndexEntry>,
}

/// One block as its head describes it, read without decompressing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Its page numbers, ascending.
    pub pgnos: Vec<u32>,
    /// Where the block (its head first) starts in the segment.
    pub offset: u64,
    /// Its stored length: head, page numbers and zstd frame.
    pub len: u64,
}

/// Where a segment's bytes are read from. A small segment fetched from a
/// replica (a compaction's input) stays in memory: a scratch file per
/// input cost a create, a write, an open and a delete each.
enum Source {
    File(File),
    /// Owned (fetched) or shared (a segment this process uploaded).
    Bytes(Box<dyn AsRef<[u8]> + Send>),
}

/// Check a whole segment held in memory: header, end marker and content
/// hash (what `SegmentReader::open` checks before reading the index).
pub fn verify_bytes(bytes: &[u8]) -> Result<Header, FormatError> {
    let len = bytes.len();
    check_length(len as u64)?;
    let (header, content_hash) = check_ends(&bytes[..HEADER_SIZE], &bytes[len - TRAILER_SIZE..])?;
    if xxhash_rust::xxh3::xxh3_64(&bytes[HEADER_SIZE..len - TRAILER_SIZE]) != content_hash {
        return Err(FormatError::FileChecksum);
    }
    Ok(header)
}

/// A segment shorter than header, index count and trailer is truncated.
fn check_length(len: u64) -> Result<(), FormatError> {
    match len < (HEADER_SIZE + TRAILER_SIZE + 4) as u64 {
        true => Err(FormatError::Corrupt(format!("only {len} bytes long"))),
        false => Ok(()),
    }
}

/// Check a segment's header and trailer; the header, and the content hash
/// the trailer records.
fn check_ends(head: &[u8], trailer: &[u8]) -> Result<(Header, u64), FormatError> {
    let header = Header::decode(head)?;
    if trailer[8..] != header.end_magic() {
        return Err(FormatError::Corrupt("missing end marker (truncated?)".into()));
    }
    Ok((header, be64(trailer, 0)))
}

impl SegmentReader {
    /// Open `path`, check header, trailer, index and the content hash.
    pub fn open(path: &Path) -> Result<SegmentReader, FormatError> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        check_length(len)?;
        let mut head = [0u8; HEADER_SIZE];
        file.read_exact(&mut head)?;
        let mut trailer = [0u8; TRAILER_SIZE];
        file.seek(SeekFrom::Start(len - TRAILER_SIZE as u64))?;
        file.read_exact(&mut trailer)?;
        let (header, content_hash) = check_ends(&head, &trailer)?;
        // Hash everything between header and trailer.
        file.seek(SeekFrom::Start(HEADER_SIZE as u64))?;
        let mut remaining = len - (HEADER_SIZE + TRAILER_SIZE) as u64;
        let mut hasher = Xxh3::new();
        let mut buf = vec![0u8; remaining.min(VERIFY_CHUNK as u64) as usize];
        while remaining > 0 {
            let n = remaining.min(VERIFY_CHUNK as u64) as usize;
            file.read_exact(&mut buf[..n])?;
            hasher.update(&buf[..n]);
            remaining -= n as u64;
        }
        if hasher.digest() != content_hash {
            return Err(FormatError::FileChecksum);
        }
        let index_end = index_bounds(&header, len)?;
        file.seek(SeekFrom::Start(header.index_offset))?;
        let mut raw = vec![0u8; (index_end - header.index_offset) as usize];
        file.read_exact(&mut raw)?;
        let index = parse_index(&header, &raw)?;
        Ok(SegmentReader { source: Source::File(file), header, index })
    }

    /// A whole segment held in memory, checked like `open` checks a file.
    pub fn from_bytes(bytes: impl AsRef<[u8]> + Send + 'static) -> Result<SegmentReader, FormatError> {
        let raw = bytes.as_ref();
        let header = verify_bytes(raw)?;
        let index_end = index_bounds(&header, raw.len() as u64)?;
        let index = parse_index(&header, &raw[header.index_offset as usize..index_end as usize])?;
        Ok(SegmentReader { source: Source::Bytes(Box::new(bytes)), header, index })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn index(&self) -> &[IndexEntry] {
        &self.index
    }

    /// Every block's page numbers and extent, from the block heads alone:
    /// checked as `for_each_page` checks them (order, bounds, counts), and
    /// the blocks must tile the space between header and index.
    pub fn blocks(&self) -> Result<Vec<Block>, FormatError> {
        let mut blocks = Vec::with_capacity(self.index.len());
        let mut at = HEADER_SIZE as u64;
        let mut last = 0;
        for (b, entry) in self.index.iter().enumerate() {
            let head = self.read_at(at, 8)?;
            let (n, clen) = (be32(&head, 0), be32(&head, 4));
            if n != entry.pages || n == 0 || entry.offset != at {
                return Err(FormatError::Corrupt(format!("block {b} disagrees with the index")));
            }
            let pgnos = parse_pgnos(&self.read_at(at + 8, 4 * n as usize)?);
            check_pages(&self.header, b, &pgnos, &mut last)?;
            let len = 8 + 4 * n as u64 + clen as u64;
            blocks.push(Block { pgnos, offset: at, len });
            at += len;
        }
        if at != self.header.index_offset {
            return Err(FormatError::Corrupt(format!(
                "blocks end at {at}, the index starts at {}",
                self.header.index_offset
            )));
        }
        if blocks.iter().map(|b| b.pgnos.len() as u64).sum::<u64>() != self.header.page_count as u64 {
            return Err(FormatError::Corrupt(format!(
                "the blocks hold other than the {} pages the header says",
                self.header.page_count
            )));
        }
        Ok(blocks)
    }

    /// A block's stored bytes (head, page numbers, zstd frame), for copying
    /// into another segment as they are.
    pub fn raw_block(&self, block: &Block) -> Result<Cow<'_, [u8]>, FormatError> {
        self.read_at(block.offset, block.len as usize)
    }

    /// Decompress one block of `blocks()` and visit its pages.
    pub fn for_each_page_of(
        &self,
        block: &Block,
        mut f: impl FnMut(u32, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), FormatError> {
        let raw = self.raw_block(block)?;
        let frame = &raw[8 + 4 * block.pgnos.len()..];
        with_decompressor(|d| {
            let mut page_buf = Vec::new();
            decompress_block(d, &self.header, 0, block.pgnos.len(), frame, &mut page_buf)?;
            let page_size = self.header.page_size as usize;
            for (pgno, page) in block.pgnos.iter().zip(page_buf.chunks_exact(page_size)) {
                f(*pgno, page)?;
            }
            Ok(())
        })
    }

    /// `len` bytes at `offset`, borrowed from memory or read from the file.
    fn read_at(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        let short = || FormatError::Corrupt(format!("{len} bytes at {offset} lie past the end"));
        match &self.source {
            Source::File(file) => {
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, offset).map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => short(),
                    _ => FormatError::Io(e),
                })?;
                Ok(Cow::Owned(buf))
            }
            Source::Bytes(bytes) => {
                let start = usize::try_from(offset).map_err(|_| short())?;
                (**bytes).as_ref().get(start..start.saturating_add(len)).map(Cow::Borrowed).ok_or_else(short)
            }
        }
    }

    /// Visit every page in stored order: ascending in a version 1 segment;
    /// in a version 2 segment, ascending within each block, and a page may
    /// come again in a later block (the later copy wins). Checks each block
    /// against the header (order, bounds, counts) as it goes.
    pub fn for_each_page(&mut self, f: impl FnMut(u32, &[u8]) -> std::io::Result<()>) -> Result<(), FormatError> {
        match &self.source {
            Source::File(file) => {
                let mut reader = BufReader::with_capacity(VERIFY_CHUNK, file);
                reader.seek(SeekFrom::Start(HEADER_SIZE as u64))?;
                walk(&self.header, &self.index, reader, f)
            }
            Source::Bytes(bytes) => {
                walk(&self.header, &self.index, (**bytes).as_ref().get(HEADER_SIZE..).unwrap_or_default(), f)
            }
        }
    }
}

/// Where the index ends (the trailer's start), after checking that the
/// header's index offset lies inside the segment.
fn index_bounds(header: &Header, len: u64) -> Result<u64, FormatError> {
    let index_end = len - TRAILER_SIZE as u64;
    if header.index_offset < HEADER_SIZE as u64 || header.index_offset + 4 > index_end {
        return Err(FormatError::Corrupt(format!("index offset {}", header.index_offset)));
    }
    Ok(index_end)
}

fn parse_index(header: &Header, raw: &[u8]) -> Result<Vec<IndexEntry>, FormatError> {
    let count = be32(raw, 0) as usize;
    if count != header.block_count as usize || raw.len() != 4 + count * INDEX_ENTRY_SIZE {
        return Err(FormatError::Corrupt("index size does not match the block count".into()));
    }
    Ok((0..count)
        .map(|i| {
            let at = 4 + i * INDEX_ENTRY_SIZE;
            IndexEntry {
                offset: be64(raw, at),
                first_pgno: be32(raw, at + 8),
                last_pgno: be32(raw, at + 12),
                pages: be32(raw, at + 16),
            }
        })
        .collect())
}

thread_local! {
    /// The decompression context the last `walk` on this thread used: a
    /// new one allocates and faults in its tables, a cost paid per segment
    /// that a compaction of thirty small level-0 inputs felt. A `walk`
    /// nested in another's callback would find the slot empty and make its
    /// own.
    static DECOMPRESSOR: std::cell::Cell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::Cell::new(None) };
}

/// Run `f` with this thread's decompression context.
fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> Result<T, FormatError>,
) -> Result<T, FormatError> {
    let mut decompressor = match DECOMPRESSOR.with(|slot| slot.take()) {
        Some(d) => d,
        None => zstd::bulk::Decompressor::new()?,
    };
    let result = f(&mut decompressor);
    DECOMPRESSOR.with(|slot| slot.set(Some(decompressor)));
    result
}

/// Visit the pages of the blocks `reader` yields from the first block on.
fn walk(
    header: &Header,
    index: &[IndexEntry],
    reader: impl Read,
    f: impl FnMut(u32, &[u8]) -> std::io::Result<()>,
) -> Result<(), FormatError> {
    with_decompressor(|d| walk_with(d, header, index, reader, f))
}

fn parse_pgnos(raw: &[u8]) -> Vec<u32> {
    raw.chunks_exact(4).map(|c| be32(c, 0)).collect()
}

/// Check block `b`'s page numbers: each within the database, ascending
/// within the block, and in version 1 ascending across blocks (`last` is
/// the previous block's last page).
fn check_pages(header: &Header, b: usize, pgnos: &[u32], last: &mut u32) -> Result<(), FormatError> {
    if header.version != VERSION_ASCENDING {
        *last = 0;
    }
    for &pgno in pgnos {
        if pgno <= *last || pgno > header.db_pages {
            return Err(FormatError::Corrupt(format!(
                "block {b}: page {pgno} out of order or beyond the database size {}",
                header.db_pages
            )));
        }
        *last = pgno;
    }
    Ok(())
}

/// Decompress block `b`'s frame, which must hold exactly `n` pages.
fn decompress_block(
    decompressor: &mut zstd::bulk::Decompressor<'static>,
    header: &Header,
    b: usize,
    n: usize,
    frame: &[u8],
    page_buf: &mut Vec<u8>,
) -> Result<(), FormatError> {
    let want = n * header.page_size as usize;
    page_buf.clear();
    page_buf.reserve(want);
    let got = decompressor
        .decompress_to_buffer(frame, page_buf)
        .map_err(|e| FormatError::Corrupt(format!("block {b}: {e}")))?;
    if got != want {
        return Err(FormatError::Corrupt(format!("block {b} holds {got} bytes, expected {want}")));
    }
    Ok(())
}

fn walk_with(
    decompressor: &mut zstd::bulk::Decompressor<'static>,
    header: &Header,
    index: &[IndexEntry],
    mut reader: impl Read,
    mut f: impl FnMut(u32, &[u8]) -> std::io::Result<()>,
) -> Result<(), FormatError> {
    let page_size = header.page_size as usize;
    let mut last = 0u32;
    let mut seen = 0u32;
    let mut page_buf = Vec::new();
    for (b, entry) in index.iter().enumerate() {
        let mut head = [0u8; 8];
        reader.read_exact(&mut head)?;
        let n = be32(&head, 0) as usize;
        let clen = be32(&head, 4) as usize;
        if n as u32 != entry.pages || n == 0 {
            return Err(FormatError::Corrupt(format!("block {b} page count disagrees with the index")));
        }
        let mut raw_pgnos = vec![0u8; 4 * n];
        reader.read_exact(&mut raw_pgnos)?;
        let pgnos = parse_pgnos(&raw_pgnos);
        check_pages(header, b, &pgnos, &mut last)?;
        let mut compressed = vec![0u8; clen];
        reader.read_exact(&mut compressed)?;
        decompress_block(decompressor, header, b, n, &compressed, &mut page_buf)?;
        for (pgno, page) in pgnos.iter().zip(page_buf.chunks_exact(page_size)) {
            f(*pgno, page)?;
        }
        seen += n as u32;
    }
    if seen != header.page_count {
        return Err(FormatError::Corrupt(format!("{seen} pages found, header says {}", header.page_count)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::writer::SegmentWriter;
    use super::*;

    fn page(pgno: u32, size: usize) -> Vec<u8> {
        (0..size).map(|i| (i as u32 ^ pgno.wrapping_mul(2654435761)) as u8).collect()
    }

    fn build(path: &Path, pgnos: &[u32], size: u32) -> Header {
        let file = File::create(path).unwrap();
        let h = Header { page_size: size, min_txid: 1, max_txid: 4, timestamp_ms: 42, ..Header::default() };
        let mut w = SegmentWriter::new(file, h).unwrap();
        for &p in pgnos {
            w.add_page(p, &page(p, size as usize)).unwrap();
        }
        w.finish(*pgnos.last().unwrap(), 77).unwrap().1
    }

    #[test]
    fn roundtrip_many_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.seg");
        let pgnos: Vec<u32> = (1..=600).filter(|p| p % 3 != 0).collect();
        let written = build(&path, &pgnos, 4096);
        // From the file, and the same segment held in memory.
        for mut r in
            [SegmentReader::open(&path).unwrap(), SegmentReader::from_bytes(std::fs::read(&path).unwrap()).unwrap()]
        {
            assert_eq!(*r.header(), written);
            assert!(r.index().len() > 1);
            let mut got = Vec::new();
            r.for_each_page(|p, data| {
                assert_eq!(data, &page(p, 4096)[..]);
                got.push(p);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, pgnos);
        }
    }

    #[test]
    fn corruption_and_truncation_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.seg");
        build(&path, &[1, 2, 3], 512);
        let bytes = std::fs::read(&path).unwrap();
        let mut flipped = bytes.clone();
        flipped[HEADER_SIZE + 20] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        assert!(matches!(SegmentReader::open(&path), Err(FormatError::FileChecksum)));
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        assert!(matches!(SegmentReader::open(&path), Err(FormatError::Corrupt(_))));
        // The same verdicts on a segment held in memory; a power failure
        // can also leave a file of the right length full of zeros.
        assert!(verify_bytes(&bytes).is_ok());
        assert!(matches!(verify_bytes(&flipped), Err(FormatError::FileChecksum)));
        assert!(matches!(verify_bytes(&bytes[..bytes.len() - 5]), Err(FormatError::Corrupt(_))));
        assert!(verify_bytes(&vec![0u8; bytes.len()]).is_err());
        assert!(matches!(SegmentReader::from_bytes(flipped), Err(FormatError::FileChecksum)));
        assert!(matches!(SegmentReader::from_bytes(bytes[..bytes.len() - 5].to_vec()), Err(FormatError::Corrupt(_))));
        assert!(verify_bytes(&[]).is_err());
        let out_of_order = std::panic::catch_unwind(|| build(&dir.path().join("x"), &[2, 1], 512));
        assert!(out_of_order.is_err());
    }

    /// Version 2: a later block may go back to lower pages and repeat one;
    /// the same bytes labelled version 1 are refused as out of order.
    #[test]
    fn version_2_orders_pages_within_blocks_only() {
        let h = Header { page_size: 512, min_txid: 1, max_txid: 2, ..Header::default() };
        let mut w = SegmentWriter::new(std::io::Cursor::new(Vec::new()), h).unwrap();
        w.allow_blocks_in_any_order();
        for p in [5, 6, 1, 2, 5] {
            w.add_page(p, &page(p, 512)).unwrap();
        }
        let (out, header) = w.finish(6, 0).unwrap();
        let bytes = out.into_inner();
        assert_eq!(header.version, super::super::format::VERSION_BLOCKS);
        let r = SegmentReader::from_bytes(bytes.clone()).unwrap();
        let blocks = r.blocks().unwrap();
        assert_eq!(blocks.iter().map(|b| b.pgnos.clone()).collect::<Vec<_>>(), vec![vec![5, 6], vec![1, 2, 5]]);
        let mut got = Vec::new();
        r.for_each_page_of(&blocks[1], |p, d| {
            got.push((p, d == &page(p, 512)[..]));
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![(1, true), (2, true), (5, true)]);
        let mut order = Vec::new();
        SegmentReader::from_bytes(bytes.clone())
            .unwrap()
            .for_each_page(|p, _| {
                order.push(p);
                Ok(())
            })
            .unwrap();
        assert_eq!(order, vec![5, 6, 1, 2, 5]);
        // Relabel as version 1, with valid header hash and end marker.
        let mut v1 = bytes;
        let relabelled = Header { version: super::super::format::VERSION_ASCENDING, ..header };
        v1[..HEADER_SIZE].copy_from_slice(&relabelled.encode());
        let end = v1.len() - 8;
        v1[end..].copy_from_slice(&relabelled.end_magic());
        let mut r = SegmentReader::from_bytes(v1).unwrap();
        assert!(matches!(r.blocks(), Err(FormatError::Corrupt(m)) if m.contains("out of order")));
        assert!(matches!(r.for_each_page(|_, _| Ok(())), Err(FormatError::Corrupt(m)) if m.contains("out of order")));
        // A writer not told otherwise refuses to go back.
        let mut strict = SegmentWriter::new(std::io::Cursor::new(Vec::new()), h).unwrap();
        strict.add_page(5, &page(5, 512)).unwrap();
        assert!(strict.add_page(1, &page(1, 512)).is_err());
    }
}
