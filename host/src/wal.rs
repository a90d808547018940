//! Reading committed frames straight from a SQLite `-wal` file.
//!
//! Format (sqlite.org/walformat.html): a 32-byte header (magic, version,
//! page size, checkpoint sequence, two salts, a checksum), then frames of a
//! 24-byte header (page number, database size after commit or 0, salts,
//! running checksum) plus one page. Each frame's checksum continues the
//! previous one's, so the first frame whose salts or checksum do not match
//! is the end of the log; only frames up to the last commit frame count.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const HEADER_SIZE: u64 = 32;
pub const FRAME_HEADER_SIZE: u64 = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;
const VERSION: u32 = 3_007_000;
/// Read buffer for scanning: sequential reads of several frames, and small
/// enough to be reused from the heap: a fresh 1 MiB mapping per sync cost
/// a page fault per 4 KiB read, and a larger heap buffer stays resident.
const SCAN_BUFFER: usize = 32 << 10;

/// The WAL header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    pub page_size: u32,
    pub checkpoint_seq: u32,
    pub salt: (u32, u32),
    /// Checksum of the header: the seed of the first frame's checksum.
    pub checksum: (u32, u32),
    big_endian: bool,
}

/// A position in the log: everything before `frames` frames has been
/// consumed, and `checksum` is the running checksum after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WalPos {
    pub salt: (u32, u32),
    pub frames: u32,
    pub checksum: (u32, u32),
}

/// Committed frames found by a scan.
#[derive(Debug, Default)]
pub struct Scan {
    /// Newest committed frame index (0-based) of each page.
    pub pages: BTreeMap<u32, u32>,
    /// Database size in pages after the last commit, if any commit was found.
    pub db_pages: Option<u32>,
    /// Committed transactions found.
    pub transactions: u64,
    /// Position after the last commit frame.
    pub end: Option<WalPos>,
    /// Valid frames after the last commit: a transaction being written,
    /// or committed frames SQLite has not published yet (see `scan`).
    pub uncommitted: u32,
}

fn checksum(big_endian: bool, data: &[u8], mut s: (u32, u32)) -> (u32, u32) {
    for chunk in data.chunks_exact(8) {
        let (a, b) = chunk.split_at(4);
        let (x, y) = if big_endian {
            (u32::from_be_bytes([a[0], a[1], a[2], a[3]]), u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        } else {
            (u32::from_le_bytes([a[0], a[1], a[2], a[3]]), u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        s.0 = s.0.wrapping_add(x).wrapping_add(s.1);
        s.1 = s.1.wrapping_add(y).wrapping_add(s.0);
    }
    s
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl WalHeader {
    /// Parse and validate a header; `None` if the bytes are not a valid
    /// WAL header (an empty or freshly reset log).
    pub fn parse(b: &[u8; HEADER_SIZE as usize]) -> Option<WalHeader> {
        let magic = be32(b, 0);
        let big_endian = match magic {
            MAGIC_LE => false,
            MAGIC_BE => true,
            _ => return None,
        };
        if be32(b, 4) != VERSION {
            return None;
        }
        let page_size = be32(b, 8);
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return None;
        }
        let sum = checksum(big_endian, &b[..24], (0, 0));
        if sum != (be32(b, 24), be32(b, 28)) {
            return None;
        }
        Some(WalHeader {
            page_size,
            checkpoint_seq: be32(b, 12),
            salt: (be32(b, 16), be32(b, 20)),
            checksum: sum,
            big_endian,
        })
    }

    /// Read the header of a WAL file; `Ok(None)` if missing, short or
    /// invalid. For files that are not a live database's `-wal` (tests,
    /// tools): the replicator opens a live WAL only through `crate::db`,
    /// which owns every file of a database it replicates.
    pub fn read(path: &Path) -> io::Result<Option<WalHeader>> {
        match File::open(path) {
            Ok(file) => Ok(WalHeader::from_file(file)?.map(|(h, _)| h)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Read the header of an open WAL file: `Ok(None)` if short or
    /// invalid. One open serves the header, the continuity check and the
    /// scan of a sync.
    pub fn from_file(file: File) -> io::Result<Option<(WalHeader, File)>> {
        let mut b = [0u8; HEADER_SIZE as usize];
        match file.read_exact_at(&mut b, 0) {
            Ok(()) => Ok(WalHeader::parse(&b).map(|h| (h, file))),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The position before the first frame.
    pub fn start(&self) -> WalPos {
        WalPos { salt: self.salt, frames: 0, checksum: self.checksum }
    }

    pub fn frame_size(&self) -> u64 {
        FRAME_HEADER_SIZE + self.page_size as u64
    }

    /// Byte offset of frame `index` (0-based).
    pub fn frame_offset(&self, index: u32) -> u64 {
        HEADER_SIZE + index as u64 * self.frame_size()
    }

    /// Byte offset of the page data of frame `index`.
    pub fn page_offset(&self, index: u32) -> u64 {
        self.frame_offset(index) + FRAME_HEADER_SIZE
    }

    /// Scan frames from `from` (which must belong to this header's salts)
    /// to the first invalid frame, or to frame `limit` (how many frames
    /// SQLite has published as committed), keeping only whole committed
    /// transactions. Valid frames past the limit count as uncommitted.
    pub fn scan(&self, file: &File, from: WalPos, limit: Option<u32>) -> io::Result<Scan> {
        let mut scan = Scan::default();
        if from.salt != self.salt {
            return Ok(scan);
        }
        let mut reader = BufReader::with_capacity(SCAN_BUFFER, file);
        reader.seek(SeekFrom::Start(self.frame_offset(from.frames)))?;
        let mut frame = vec![0u8; self.frame_size() as usize];
        let mut pending: Vec<(u32, u32)> = Vec::new();
        let mut sum = from.checksum;
        let mut index = from.frames;
        loop {
            match reader.read_exact(&mut frame) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
            if (be32(&frame, 8), be32(&frame, 12)) != self.salt {
                break;
            }
            sum = checksum(self.big_endian, &frame[..8], sum);
            sum = checksum(self.big_endian, &frame[FRAME_HEADER_SIZE as usize..], sum);
            if sum != (be32(&frame, 16), be32(&frame, 20)) {
                break;
            }
            let pgno = be32(&frame, 0);
            if pgno == 0 {
                break;
            }
            if limit.is_some_and(|l| index >= l) {
                // Written but not published: in flight, or a dead writer's.
                pending.push((pgno, index));
                break;
            }
            pending.push((pgno, index));
            index += 1;
            let commit = be32(&frame, 4);
            if commit != 0 {
                for (p, i) in pending.drain(..) {
                    scan.pages.insert(p, i);
                }
                scan.db_pages = Some(commit);
                scan.transactions += 1;
                scan.end = Some(WalPos { salt: self.salt, frames: index, checksum: sum });
            }
        }
        scan.uncommitted = pending.len() as u32;
        // Pages past the final size were truncated away by the last commit.
        if let Some(size) = scan.db_pages {
            scan.pages.retain(|&p, _| p <= size);
        }
        Ok(scan)
    }

    /// Read the page of frame `index` into `buf` (one page long).
    pub fn read_page(&self, file: &File, index: u32, buf: &mut [u8]) -> io::Result<()> {
        file.read_exact_at(buf, self.page_offset(index))
    }

    /// Whether `file` still begins with this header. SQLite writes a new
    /// epoch's header before its first frame, so frames read before a
    /// check that passes belong to this header's log; a reset (new salts)
    /// or a truncation since means they may not. A reader whose view reads
    /// the database file alone does not stop a writer from resetting the
    /// log (it holds read-mark 0, which a WAL restart ignores).
    pub fn still_heads(&self, file: &File) -> io::Result<bool> {
        let mut b = [0u8; HEADER_SIZE as usize];
        match file.read_exact_at(&mut b, 0) {
            Ok(()) => Ok(WalHeader::parse(&b) == Some(*self)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the frame at `pos` continues the chain of this header: the
    /// check that nobody reset or rewrote the log since `pos` was taken.
    pub fn continues(&self, file: &File, pos: WalPos) -> io::Result<bool> {
        if pos.salt != self.salt {
            return Ok(false);
        }
        if pos.frames == 0 {
            return Ok(pos.checksum == self.checksum);
        }
        let mut header = [0u8; FRAME_HEADER_SIZE as usize];
        match file.read_exact_at(&mut header, self.frame_offset(pos.frames - 1)) {
            Ok(()) => Ok((be32(&header, 8), be32(&header, 12)) == pos.salt
                && (be32(&header, 16), be32(&header, 20)) == pos.checksum),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A valid commit frame (for page `pgno`, database size `db_pages`)
/// continuing the chain at `after`, as a writer would append it: for tests
/// of frames SQLite has not published.
#[cfg(test)]
pub(crate) fn forge_commit_frame(h: &WalHeader, after: WalPos, pgno: u32, db_pages: u32, page: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(h.frame_size() as usize);
    for v in [pgno, db_pages, h.salt.0, h.salt.1] {
        frame.extend_from_slice(&v.to_be_bytes());
    }
    let sum = checksum(h.big_endian, &frame[..8], after.checksum);
    let sum = checksum(h.big_endian, page, sum);
    frame.extend_from_slice(&sum.0.to_be_bytes());
    frame.extend_from_slice(&sum.1.to_be_bytes());
    frame.extend_from_slice(page);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn wal_db(dir: &Path, page_size: u32) -> Connection {
        let conn = Connection::open(dir.join("t.db")).unwrap();
        conn.pragma_update(None, "page_size", page_size).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn
    }

    #[test]
    fn scan_matches_sqlite_frame_count_and_pages() {
        for page_size in [512u32, 4096, 65536] {
            let dir = tempfile::tempdir().unwrap();
            let conn = wal_db(dir.path(), page_size);
            conn.execute_batch("CREATE TABLE t(x BLOB); INSERT INTO t VALUES (randomblob(3000));").unwrap();
            for _ in 0..5 {
                conn.execute("INSERT INTO t VALUES (randomblob(?1))", [page_size as i64 * 2]).unwrap();
            }
            let wal = dir.path().join("t.db-wal");
            let header = WalHeader::read(&wal).unwrap().expect("valid header");
            assert_eq!(header.page_size, page_size);
            let file = File::open(&wal).unwrap();
            let scan = header.scan(&file, header.start(), None).unwrap();
            // SQLite's own count of frames, via a no-op passive checkpoint report.
            let (_, log, _): (i64, i64, i64) = conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap();
            let end = scan.end.expect("commits found");
            assert_eq!(end.frames as i64, log, "page size {page_size}");
            assert_eq!(scan.transactions, 7);
            let pages: u32 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
            assert_eq!(scan.db_pages, Some(pages));
            // Every page of the database was written in this log.
            assert_eq!(scan.pages.len() as u32, pages);
            // Continuing from the end finds nothing new.
            let again = header.scan(&file, end, None).unwrap();
            assert!(again.end.is_none());
            assert!(header.continues(&file, end).unwrap());
        }
    }

    /// A WAL database with one committed transaction: the connection, the
    /// WAL's path and header, and the scan of that transaction.
    fn one_commit(dir: &Path) -> (Connection, std::path::PathBuf, WalHeader, Scan) {
        let conn = wal_db(dir, 4096);
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
        let wal = dir.join("t.db-wal");
        let header = WalHeader::read(&wal).unwrap().unwrap();
        let good = header.scan(&File::open(&wal).unwrap(), header.start(), None).unwrap();
        assert_eq!(good.uncommitted, 0);
        (conn, wal, header, good)
    }

    #[test]
    fn torn_tail_and_uncommitted_frames_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, wal, header, good) = one_commit(dir.path());
        let end = good.end.unwrap();
        conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
        // Corrupt one byte of the last frame's page: that transaction is gone.
        let len = std::fs::metadata(&wal).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).read(true).open(&wal).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, len - 10).unwrap();
        f.write_all_at(&[b[0] ^ 0xff], len - 10).unwrap();
        let scan = header.scan(&f, header.start(), None).unwrap();
        assert_eq!(scan.end, Some(end));
        assert_eq!(scan.transactions, good.transactions);
    }

    /// A transaction of several frames cut before its commit frame (as
    /// while it is being written): its frames are counted, not kept.
    #[test]
    fn a_transaction_being_written_is_seen_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, wal, header, good) = one_commit(dir.path());
        conn.execute("INSERT INTO t VALUES (randomblob(20000))", []).unwrap();
        let f = std::fs::OpenOptions::new().write(true).read(true).open(&wal).unwrap();
        f.set_len(std::fs::metadata(&wal).unwrap().len() - header.frame_size()).unwrap();
        let scan = header.scan(&f, header.start(), None).unwrap();
        assert!(scan.uncommitted >= 4, "{} frames of the cut transaction", scan.uncommitted);
        assert_eq!((scan.transactions, scan.end), (good.transactions, good.end));
    }
}
