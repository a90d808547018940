//! Building a segment, page by page in ascending order, into a seekable
//! file. Memory: one block of pages plus the index.

use super::format::{HEADER_SIZE, Header, INDEX_ENTRY_SIZE, IndexEntry, VERSION_ASCENDING, VERSION_BLOCKS};
use super::reader::Block;
use std::io::{self, Seek, SeekFrom, Write};
use xxhash_rust::xxh3::Xxh3;

/// Uncompressed page bytes per block: big enough for zstd to find
/// redundancy across pages, small enough that a reader holds one block.
pub const BLOCK_BYTES: usize = 1 << 20;
/// zstd level of snapshots and compactions, the segments a replica keeps:
/// 3, zstd's own default. `zstd -b1 -e3` on 1 MiB blocks of SQLite
/// databases (2026-11-27): on 150 MB of source files as text rows, level 3
/// stores 10% less than level 1 and compresses 16% slower (456 vs
/// 541 MB/s); on the benchmark's word-salad rows, 7% less and no slower
/// (526 vs 509 MB/s). It decompresses as fast or faster. Stored bytes are
/// paid every month; this CPU once per snapshot or compaction.
pub const ZSTD_LEVEL: i32 = 3;
/// zstd level of level-0 segments, built at every sync and deleted once
/// `l0-retention` has passed: 1. At level 3 the steady benchmark's sync
/// CPU rose ~8% (larger tables to reset per small segment) for 7% fewer
/// bytes in objects that live minutes.
pub const LEVEL0_ZSTD_LEVEL: i32 = 1;

/// The block compressor a segment is written with.
pub type Compressor = zstd::bulk::Compressor<'static>;

/// A compressor at `level` set up the way every segment is written.
pub fn new_compressor(level: i32) -> io::Result<Compressor> {
    let mut compressor = Compressor::new(level)?;
    compressor.include_checksum(true)?;
    Ok(compressor)
}

/// Writes one segment.
pub struct SegmentWriter<W: Write + Seek> {
    out: W,
    header: Header,
    compressor: Compressor,
    block: Vec<u8>,
    block_pgnos: Vec<u32>,
    pages_per_block: usize,
    index: Vec<IndexEntry>,
    offset: u64,
    hasher: Xxh3,
    last_pgno: u32,
    /// Whether pages may go back to a lower number in a new block (a
    /// version 2 segment; see `allow_blocks_in_any_order`).
    any_order: bool,
    /// Whether they did.
    reordered: bool,
}

impl<W: Write + Seek> SegmentWriter<W> {
    /// Start a segment in `out`, which must be positioned at its start (a
    /// new file). `header` carries page size, TXIDs, timestamp and the
    /// checksum before; counts and the checksum after come at `finish`.
    pub fn new(out: W, header: Header) -> io::Result<Self> {
        SegmentWriter::reusing(out, header, new_compressor(ZSTD_LEVEL)?)
    }

    /// `new`, with a compressor from an earlier segment (see `finish_keep`):
    /// a fresh zstd context maps and zeroes its tables, which costs a small
    /// segment more than compressing it.
    pub fn reusing(mut out: W, header: Header, compressor: Compressor) -> io::Result<Self> {
        out.write_all(&[0u8; HEADER_SIZE])?;
        let pages_per_block = (BLOCK_BYTES / header.page_size as usize).max(1);
        Ok(SegmentWriter {
            out,
            header,
            compressor,
            // Grown on demand or sized by `expect_pages`: most level-0
            // segments are a few pages, and a small buffer comes from the
            // reused heap where a full block was a fresh mapping per sync.
            block: Vec::new(),
            block_pgnos: Vec::with_capacity(pages_per_block),
            pages_per_block,
            index: Vec::new(),
            offset: HEADER_SIZE as u64,
            hasher: Xxh3::new(),
            last_pgno: 0,
            any_order: false,
            reordered: false,
        })
    }

    /// Size the block buffer for a segment of `pages` pages (up to one
    /// block), so it is allocated once at the right size.
    pub fn expect_pages(&mut self, pages: usize) {
        let want = pages.min(self.pages_per_block) * self.header.page_size as usize;
        self.block.reserve_exact(want.saturating_sub(self.block.len()));
    }

    /// Let pages and copied blocks come in any order block by block: a
    /// page lower than the last one starts a new block, and the segment is
    /// written as version 2 if that happens. Only a compaction does this;
    /// anywhere else a page out of order is a bug and an error.
    pub fn allow_blocks_in_any_order(&mut self) {
        self.any_order = true;
    }

    /// Copy a block of another segment as it is stored (`raw`, as
    /// `SegmentReader::raw_block` gives it), without recompressing it.
    pub fn add_raw_block(&mut self, block: &Block, raw: &[u8]) -> io::Result<()> {
        let (Some(&first), Some(&last)) = (block.pgnos.first(), block.pgnos.last()) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "an empty block"));
        };
        if !self.any_order && first <= self.last_pgno {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("copied block starts at page {first}, out of order"),
            ));
        }
        self.flush_block()?;
        self.reordered |= first <= self.last_pgno;
        self.last_pgno = last;
        self.index.push(IndexEntry {
            offset: self.offset,
            first_pgno: first,
            last_pgno: last,
            pages: block.pgnos.len() as u32,
        });
        self.emit(raw)?;
        self.header.page_count += block.pgnos.len() as u32;
        Ok(())
    }

    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Add page `pgno`; page numbers must strictly ascend (within a block,
    /// after `allow_blocks_in_any_order`).
    pub fn add_page(&mut self, pgno: u32, page: &[u8]) -> io::Result<()> {
        let in_order = pgno > self.last_pgno;
        if (!in_order && !self.any_order) || page.len() != self.header.page_size as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("segment page {pgno} out of order or of wrong size {}", page.len()),
            ));
        }
        if !in_order {
            self.flush_block()?;
            self.reordered = true;
        }
        self.last_pgno = pgno;
        self.block.extend_from_slice(page);
        self.block_pgnos.push(pgno);
        if self.block_pgnos.len() == self.pages_per_block {
            self.flush_block()?;
        }
        Ok(())
    }

    /// End the current block here: the next page starts a new one.
    pub fn end_block(&mut self) -> io::Result<()> {
        self.flush_block()
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.block_pgnos.is_empty() {
            return Ok(());
        }
        let compressed = self.compressor.compress(&self.block)?;
        let n = self.block_pgnos.len() as u32;
        let mut head = Vec::with_capacity(8 + 4 * n as usize);
        head.extend_from_slice(&n.to_be_bytes());
        head.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        for p in &self.block_pgnos {
            head.extend_from_slice(&p.to_be_bytes());
        }
        self.index.push(IndexEntry {
            offset: self.offset,
            first_pgno: self.block_pgnos[0],
            last_pgno: *self.block_pgnos.last().unwrap_or(&0),
            pages: n,
        });
        self.emit(&head)?;
        self.emit(&compressed)?;
        self.header.page_count += n;
        self.block.clear();
        self.block_pgnos.clear();
        Ok(())
    }

    /// Write the index and trailer, patch the header, and return it.
    pub fn finish(self, db_pages: u32, post_checksum: u64) -> io::Result<(W, Header)> {
        self.finish_keep(db_pages, post_checksum).map(|(out, header, _)| (out, header))
    }

    /// `finish`, handing back the compressor for the next segment.
    pub fn finish_keep(mut self, db_pages: u32, post_checksum: u64) -> io::Result<(W, Header, Compressor)> {
        self.flush_block()?;
        self.header.version = if self.reordered { VERSION_BLOCKS } else { VERSION_ASCENDING };
        self.header.db_pages = db_pages;
        self.header.post_checksum = post_checksum;
        self.header.block_count = self.index.len() as u32;
        self.header.index_offset = self.offset;
        let mut index = Vec::with_capacity(4 + INDEX_ENTRY_SIZE * self.index.len());
        index.extend_from_slice(&(self.index.len() as u32).to_be_bytes());
        for e in &self.index {
            index.extend_from_slice(&e.offset.to_be_bytes());
            index.extend_from_slice(&e.first_pgno.to_be_bytes());
            index.extend_from_slice(&e.last_pgno.to_be_bytes());
            index.extend_from_slice(&e.pages.to_be_bytes());
        }
        self.emit(&index)?;
        let file_hash = self.hasher.digest();
        self.out.write_all(&file_hash.to_be_bytes())?;
        self.out.write_all(&self.header.end_magic())?;
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&self.header.encode())?;
        self.out.seek(SeekFrom::End(0))?;
        self.out.flush()?;
        Ok((self.out, self.header, self.compressor))
    }
}
