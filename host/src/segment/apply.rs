//! Applying segments to a page store: the restore's output file, or a
//! sparse scratch file when compacting. Memory stays at one block; the
//! database checksum is verified after every segment when a base is known.

use super::format::FormatError;
use super::reader::SegmentReader;
use crate::checksum::{PageHashes, page_hash};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes of consecutive pages gathered into one write (or read): a
/// snapshot's pages arrive in order, and one system call per page was most
/// of a small restore's kernel time. Small enough to stay in cache.
const RUN_BYTES: usize = 256 << 10;

/// Where applied pages go.
pub trait PageSink {
    fn write_page(&mut self, pgno: u32, data: &[u8]) -> io::Result<()>;
    /// The database is now `pages` long: drop anything beyond.
    fn truncate(&mut self, pages: u32) -> io::Result<()>;
    /// Write out anything gathered; called after every segment.
    fn flush(&mut self) -> io::Result<()>;
}

/// Consecutive pages gathered for one positioned write.
#[derive(Default)]
struct Run {
    bytes: Vec<u8>,
    offset: u64,
}

impl Run {
    fn write(&mut self, file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        if !self.bytes.is_empty()
            && (self.offset + self.bytes.len() as u64 != offset || self.bytes.len() + data.len() > RUN_BYTES)
        {
            self.flush(file)?;
        }
        if self.bytes.is_empty() {
            self.offset = offset;
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self, file: &File) -> io::Result<()> {
        if !self.bytes.is_empty() {
            file.write_all_at(&self.bytes, self.offset)?;
            self.bytes.clear();
        }
        Ok(())
    }
}

/// Pages written at their offsets in a database file.
pub struct FileSink {
    file: File,
    /// Set from the first segment's header.
    pub page_size: u32,
    run: Run,
}

impl FileSink {
    pub fn new(file: File, page_size: u32) -> Self {
        FileSink { file, page_size, run: Run::default() }
    }

    /// The file, with everything written to it.
    pub fn into_file(mut self) -> io::Result<File> {
        self.run.flush(&self.file)?;
        Ok(self.file)
    }
}

impl PageSink for FileSink {
    fn write_page(&mut self, pgno: u32, data: &[u8]) -> io::Result<()> {
        self.run.write(&self.file, (pgno as u64 - 1) * self.page_size as u64, data)
    }
    fn truncate(&mut self, pages: u32) -> io::Result<()> {
        self.run.flush(&self.file)?;
        self.file.set_len(pages as u64 * self.page_size as u64)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.run.flush(&self.file)
    }
}

/// A sparse scratch file plus a bitmap of the pages present: the union of
/// several segments without holding them in memory.
pub struct SparseSink {
    file: File,
    page_size: u32,
    present: Vec<u64>,
    pages: u32,
    run: Run,
}

impl SparseSink {
    pub fn new(file: File, page_size: u32) -> Self {
        SparseSink { file, page_size, present: Vec::new(), pages: 0, run: Run::default() }
    }

    fn is_present(&self, pgno: u32) -> bool {
        let i = pgno as usize;
        self.present.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Visit present pages in ascending order, reading runs of them.
    pub fn for_each(&mut self, mut f: impl FnMut(u32, &[u8]) -> io::Result<()>) -> io::Result<()> {
        self.run.flush(&self.file)?;
        let page = self.page_size as usize;
        let most = (RUN_BYTES / page).max(1) as u32;
        let mut buf = Vec::new();
        let mut pgno = 1;
        while pgno <= self.pages {
            if !self.is_present(pgno) {
                pgno += 1;
                continue;
            }
            let mut n = 1;
            while n < most && pgno + n <= self.pages && self.is_present(pgno + n) {
                n += 1;
            }
            buf.resize(n as usize * page, 0);
            self.file.read_exact_at(&mut buf, (pgno as u64 - 1) * page as u64)?;
            for (i, data) in buf.chunks_exact(page).enumerate() {
                f(pgno + i as u32, data)?;
            }
            pgno += n;
        }
        Ok(())
    }
}

impl PageSink for SparseSink {
    fn write_page(&mut self, pgno: u32, data: &[u8]) -> io::Result<()> {
        let i = pgno as usize;
        if self.present.len() <= i / 64 {
            self.present.resize(i / 64 + 1, 0);
        }
        self.present[i / 64] |= 1 << (i % 64);
        self.pages = self.pages.max(pgno);
        self.run.write(&self.file, (pgno as u64 - 1) * self.page_size as u64, data)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.run.flush(&self.file)
    }
    fn truncate(&mut self, pages: u32) -> io::Result<()> {
        for pgno in pages + 1..=self.pages {
            let i = pgno as usize;
            if let Some(w) = self.present.get_mut(i / 64) {
                *w &= !(1 << (i % 64));
            }
        }
        self.pages = pages;
        Ok(())
    }
}

/// Why applying a segment failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(
        "does not follow the database state before it (checksum {found:016x}, segment expects {expected:016x}): a segment before it is missing or corrupt"
    )]
    PreChecksum { expected: u64, found: u64 },
    #[error(
        "the database after applying it has checksum {found:016x}, the segment promises {expected:016x}: the segment is corrupt"
    )]
    PostChecksum { expected: u64, found: u64 },
    #[error("page size {found} differs from the database's {expected}")]
    PageSize { expected: u32, found: u32 },
}

/// Apply one segment. With `hashes`, verify the checksum before (unless
/// it is a snapshot, which replaces everything) and after.
pub fn apply(
    reader: &mut SegmentReader,
    sink: &mut dyn PageSink,
    mut hashes: Option<&mut PageHashes>,
) -> Result<(), ApplyError> {
    let header = *reader.header();
    if let Some(h) = hashes.as_deref_mut() {
        if header.is_snapshot() {
            *h = PageHashes::new(header.page_size);
        } else if h.checksum() != header.pre_checksum {
            return Err(ApplyError::PreChecksum { expected: header.pre_checksum, found: h.checksum() });
        }
        h.resize(header.db_pages);
    }
    sink.truncate(header.db_pages).map_err(FormatError::Io)?;
    reader.for_each_page(|pgno, data| {
        if let Some(h) = hashes.as_deref_mut() {
            h.set(pgno, page_hash(pgno, data));
        }
        sink.write_page(pgno, data)
    })?;
    sink.flush().map_err(FormatError::Io)?;
    if let Some(h) = hashes
        && h.checksum() != header.post_checksum
    {
        return Err(ApplyError::PostChecksum { expected: header.post_checksum, found: h.checksum() });
    }
    Ok(())
}
