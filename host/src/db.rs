//! The replicator's side of a live SQLite database: its own connections,
//! the read lock that keeps the WAL from being reset under unshipped
//! frames, checkpoints, and consistent page images for snapshots.
//!
//! This module owns every file of a database being replicated. SQLite's
//! locks are POSIX advisory locks, which belong to the process, and closing
//! *any* descriptor of a file drops *all* of the process's locks on it: a
//! `File::open` of the database or its `-shm` anywhere else in this
//! process, once closed, would silently release the locks our connections
//! hold (the `-shm` dead-man-switch and read marks, the database's shared
//! lock). The application could then re-initialise the wal-index under
//! our mapping (SIGBUS), or checkpoint and restart the WAL over frames not
//! yet captured (a corrupt replica). So: the database and `-shm` are opened
//! only by SQLite, and the `-wal` (which SQLite never locks) only by
//! `Db::open_wal`. Everything else gets paths from here and may `stat`
//! them, never open them; a test (`only_this_module_opens_the_database_files`)
//! scans the sources for the sidecar names, and `tests/locks.rs` checks
//! from outside that the locks stay held through every kind of sync.
//!
//! The read lock alternates between two connections: each sync opens a
//! read transaction on one and only then ends the other's, so some read
//! transaction always exists (no writer can restart the WAL) while the
//! oldest one is never older than one sync (the application's own PASSIVE
//! checkpoints keep making progress up to it).
//!
//! Our checkpoints never release that lock: they run on the idle
//! connection, so they can only copy frames sluice has captured, and the
//! WAL restarts only once everything in it is shipped. A third connection
//! briefly holds the write lock around them when it can get it, so the WAL
//! can be copied whole (see `capture::Capturer::maybe_checkpoint`). Releasing the lock instead lets a checkpoint copy frames
//! committed after the capture, and the application's next write then
//! restarts the WAL over them before sluice reads them.

use crate::wal::WalHeader;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `-wal` file of database `db`, for `stat`ing (see the module
/// comment before opening it).
pub fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

/// What SQLite has published in the wal-index header (walformat.html
/// §2.1): the frames of the current WAL that are committed, and that
/// WAL's salts. A transaction's frames, commit frame included, are written
/// to the WAL before its commit is published here; a writer killed in
/// between leaves a valid-looking commit frame that SQLite treats as never
/// committed (the next writer overwrites it), so capture takes nothing past
/// `max_frame`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub max_frame: u32,
    pub salt: (u32, u32),
}

/// Bytes of the wal-index's first region SQLite is asked to map (its
/// region size, fixed by the format).
const WAL_INDEX_REGION: i32 = 32 * 1024;
/// Size of one copy of the wal-index header; two copies follow each other.
const WAL_INDEX_HEADER: usize = 48;
/// Reads of the two header copies before giving up on a writer that keeps
/// rewriting them (each write takes microseconds).
const HEADER_READ_TRIES: usize = 100;

/// Errors talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("database {path}: {msg}")]
    Other { path: PathBuf, msg: String },
}

/// Checkpoint modes sluice uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointMode {
    Passive,
    Truncate,
}

impl CheckpointMode {
    pub fn name(self) -> &'static str {
        match self {
            CheckpointMode::Passive => "passive",
            CheckpointMode::Truncate => "truncate",
        }
    }
}

/// What a checkpoint reported: frames in the log, and frames copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointResult {
    pub busy: bool,
    pub log_frames: i64,
    pub checkpointed: i64,
}

impl CheckpointResult {
    /// Every frame in the log was copied into the database.
    pub fn copied_all(&self) -> bool {
        !self.busy && self.checkpointed == self.log_frames
    }
}

/// Page cache per connection of ours, in KiB. We read pages once, in
/// order (snapshots) or not at all through SQLite (the WAL is read as a
/// file), so SQLite's 2 MiB default per connection would only hold memory,
/// three connections per database, in a process that may serve thousands.
const DB_CACHE_KIB: i64 = 256;

/// The replicator's handle on one database.
pub struct Db {
    path: PathBuf,
    /// `None` while resting (`rest`): closed, holding no descriptor and
    /// no memory, until `wake`.
    conns: Option<Conns>,
    /// Which reader holds the current read transaction.
    active: Option<usize>,
    writing: bool,
    busy_timeout: Duration,
}

/// Our three connections to one database.
struct Conns {
    readers: [Connection; 2],
    /// Takes SQLite's write lock around our checkpoints.
    writer: Connection,
}

impl Db {
    /// Open `path` (which must exist), switch it to WAL mode if needed, and
    /// take the read lock.
    pub fn open(path: &Path, busy_timeout: Duration) -> Result<Db, DbError> {
        let err = |source| DbError::Sqlite { path: path.to_path_buf(), source };
        if !path.exists() {
            return Err(DbError::Other {
                path: path.to_path_buf(),
                msg: "does not exist (create it first, or use -restore-if-db-not-exists)".into(),
            });
        }
        let open = || -> rusqlite::Result<Connection> {
            let c =
                Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
            c.busy_timeout(busy_timeout)?;
            // Checkpoints are ours to schedule; never let our own
            // connections auto-checkpoint at commit.
            c.pragma_update(None, "wal_autocheckpoint", 0)?;
            c.pragma_update(None, "cache_size", -DB_CACHE_KIB)?;
            Ok(c)
        };
        let first = open().map_err(err)?;
        let mode: String = first.query_row("PRAGMA journal_mode = wal", [], |r| r.get(0)).map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(DbError::Other {
                path: path.to_path_buf(),
                msg: format!(
                    "could not switch to WAL mode (journal mode is {mode}); is it in use by a process holding an exclusive lock?"
                ),
            });
        }
        let second = open().map_err(err)?;
        let writer = open().map_err(err)?;
        let conns = Some(Conns { readers: [first, second], writer });
        let mut db = Db { path: path.to_path_buf(), conns, active: None, writing: false, busy_timeout };
        db.refresh_read_lock()?;
        Ok(db)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn wal_path(&self) -> PathBuf {
        wal_path(&self.path)
    }

    /// Open the WAL and read its header: `Ok(None)` if it is missing,
    /// short or invalid. Safe to close: SQLite takes no locks on the WAL.
    pub fn open_wal(&self) -> std::io::Result<Option<(WalHeader, std::fs::File)>> {
        match std::fs::File::open(self.wal_path()) {
            Ok(file) => WalHeader::from_file(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The wal-index header SQLite has published, read from SQLite's own
    /// mapping of the `-shm` through the VFS (`SQLITE_FCNTL_FILE_POINTER`
    /// and `xShmMap`): no descriptor of ours is opened (see the module
    /// comment). `None` if the wal-index is not mapped or not initialised.
    pub fn published(&self) -> Option<Published> {
        let conn = &self.conns.as_ref()?.readers[self.active.unwrap_or(0)];
        // SAFETY: the handle is a live connection used by this thread only
        // (the capturer is behind a mutex); see `read_published`.
        unsafe { read_published(conn.handle()) }
    }

    /// Close our connections, then open new ones on whatever file is at
    /// our path now (the database was replaced). The old connections go
    /// first: the old and the new database share the `-shm` path, and
    /// SQLite closing the old one's `-shm` descriptor after the new one had
    /// taken its locks would release those.
    pub fn reopen(&mut self) -> Result<(), DbError> {
        drop(self.take_connections());
        *self = Db::open(&self.path, self.busy_timeout)?;
        Ok(())
    }

    /// End our transactions and hand over our three connections (none
    /// while resting).
    fn take_connections(&mut self) -> Vec<Connection> {
        let _ = self.release_write_lock();
        let _ = self.release_read_locks();
        match self.conns.take() {
            Some(Conns { readers: [a, b], writer }) => vec![a, b, writer],
            None => Vec::new(),
        }
    }

    /// Close our connections, which hold the database, its `-wal` and
    /// `-shm` open (DESIGN.md, decision 29): the caller has captured and
    /// checkpointed everything, and proves continuity again at `wake`.
    /// Closing checkpoints nothing (even as the last connection), so it
    /// never copies a frame committed after that capture.
    pub fn rest(&mut self) -> Result<(), DbError> {
        let conns = self.awake()?;
        for c in conns.readers.iter().chain([&conns.writer]) {
            c.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
                .map_err(|e| self.err(e))?;
        }
        for c in self.take_connections() {
            c.close().map_err(|(_, e)| self.err(e))?;
        }
        Ok(())
    }

    /// Whether our connections are closed (`rest`).
    pub fn resting(&self) -> bool {
        self.conns.is_none()
    }

    /// Open our connections again after `rest`, with a read transaction.
    pub fn wake(&mut self) -> Result<(), DbError> {
        if self.conns.is_none() {
            *self = Db::open(&self.path, self.busy_timeout)?;
        }
        Ok(())
    }

    /// Our connections; refused while resting: the caller skipped `wake`
    /// (a bug, said as one).
    fn awake(&self) -> Result<&Conns, DbError> {
        self.conns.as_ref().ok_or_else(|| DbError::Other {
            path: self.path.clone(),
            msg: "bug: the database's connections are closed while idle and were not reopened".into(),
        })
    }

    fn err(&self, source: rusqlite::Error) -> DbError {
        DbError::Sqlite { path: self.path.clone(), source }
    }

    /// Start a read transaction on the idle connection, then end the
    /// older one. The new one sees every commit made before this call.
    pub fn refresh_read_lock(&mut self) -> Result<(), DbError> {
        let next = self.active.map_or(0, |a| 1 - a);
        let readers = &self.awake()?.readers;
        let conn = &readers[next];
        // Cached statements: this runs every sync, and parsing the SQL
        // each time showed up in profiles.
        conn.prepare_cached("BEGIN").and_then(|mut s| s.execute([])).map_err(|e| self.err(e))?;
        // A read transaction starts at its first read.
        let started: rusqlite::Result<i64> =
            conn.prepare_cached("SELECT count(*) FROM sqlite_master").and_then(|mut s| s.query_row([], |r| r.get(0)));
        if let Err(e) = started {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(self.err(e));
        }
        if let Some(old) = self.active {
            readers[old].prepare_cached("COMMIT").and_then(|mut s| s.execute([])).map_err(|e| self.err(e))?;
        }
        self.active = Some(next);
        Ok(())
    }

    /// End our read transaction (when closing, or when capture must wait
    /// for an operator and should not hold the WAL meanwhile).
    pub fn release_read_locks(&mut self) -> Result<(), DbError> {
        if let (Some(a), Some(conns)) = (self.active.take(), &self.conns) {
            conns.readers[a].execute_batch("COMMIT").map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Take SQLite's write lock, waiting up to `wait`: until
    /// `release_write_lock`, no transaction can commit. `false` if the
    /// application kept it busy; try again later.
    pub fn hold_write_lock(&mut self, wait: Duration) -> Result<bool, DbError> {
        let writer = &self.awake()?.writer;
        if self.writing {
            return Ok(true);
        }
        writer.busy_timeout(wait).map_err(|e| self.err(e))?;
        match writer.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {
                self.writing = true;
                Ok(true)
            }
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.err(e)),
        }
    }

    pub fn release_write_lock(&mut self) -> Result<(), DbError> {
        if let (true, Some(conns)) = (std::mem::take(&mut self.writing), &self.conns) {
            conns.writer.execute_batch("ROLLBACK").map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Run a checkpoint on the idle connection, keeping our read
    /// transaction: it copies no frame newer than that transaction's view.
    /// A TRUNCATE only completes when that view reads the database file
    /// alone (the WAL was wholly copied when it began). It never waits: it
    /// needs the write lock and every reader gone, and waiting for them
    /// would stall the application's writers behind it; a busy TRUNCATE
    /// is simply tried again at a later checkpoint.
    pub fn checkpoint(&mut self, mode: CheckpointMode) -> Result<CheckpointResult, DbError> {
        let conn = &self.awake()?.readers[self.active.map_or(0, |a| 1 - a)];
        let run = |sql| {
            conn.query_row(sql, [], |r| {
                Ok(CheckpointResult { busy: r.get::<_, i64>(0)? != 0, log_frames: r.get(1)?, checkpointed: r.get(2)? })
            })
        };
        let result = match mode {
            CheckpointMode::Passive => run("PRAGMA wal_checkpoint(PASSIVE)"),
            CheckpointMode::Truncate => {
                let result = conn.busy_timeout(Duration::ZERO).and_then(|()| run("PRAGMA wal_checkpoint(TRUNCATE)"));
                let restored = conn.busy_timeout(self.busy_timeout);
                result.and_then(|r| restored.map(|()| r))
            }
        };
        result.map_err(|e| self.err(e))
    }

    /// The page size and size in pages, as the current read transaction sees them.
    pub fn page_info(&self) -> Result<(u32, u32), DbError> {
        let conn = &self.awake()?.readers[self.active.unwrap_or(0)];
        let size: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        let count: u32 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        Ok((size, count))
    }

    /// Visit pages `1..=pages` as the current read transaction sees them,
    /// in order, one at a time (memory stays at one page). No write lock is
    /// taken: the application keeps writing meanwhile.
    pub fn for_each_page(
        &self,
        pages: u32,
        mut f: impl FnMut(u32, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), DbError> {
        let conn = &self.awake()?.readers[self.active.unwrap_or(0)];
        let mut stmt = conn
            .prepare("SELECT pgno, data FROM sqlite_dbpage('main') WHERE pgno <= ?1 ORDER BY pgno")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([pages]).map_err(|e| self.err(e))?;
        let mut expected = 1u32;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let pgno: u32 = row.get(0).map_err(|e| self.err(e))?;
            let data = row.get_ref(1).map_err(|e| self.err(e))?;
            let bytes = data.as_blob().map_err(|e| self.err(rusqlite::Error::from(e)))?;
            if pgno != expected {
                return Err(DbError::Other {
                    path: self.path.clone(),
                    msg: format!("page image sequence broke at page {pgno}, expected {expected}"),
                });
            }
            expected += 1;
            f(pgno, bytes).map_err(|e| DbError::Other {
                path: self.path.clone(),
                msg: format!("while reading page {pgno}: {e}"),
            })?;
        }
        if expected != pages + 1 {
            return Err(DbError::Other {
                path: self.path.clone(),
                msg: format!("read {} of {pages} pages; the database is smaller than expected", expected - 1),
            });
        }
        Ok(())
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = self.release_write_lock();
        let _ = self.release_read_locks();
    }
}

/// Read the wal-index header through SQLite's mapping of it.
///
/// # Safety
/// `db` must be a valid connection handle not used by another thread
/// meanwhile. The header is shared memory that other processes write while
/// we read it: it is read with volatile loads, twice, with a fence between,
/// and used only when both copies agree (what SQLite itself does).
unsafe fn read_published(db: *mut rusqlite::ffi::sqlite3) -> Option<Published> {
    use rusqlite::ffi;
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: FILE_POINTER writes the main database's sqlite3_file* into `file`.
    let rc = unsafe {
        ffi::sqlite3_file_control(db, c"main".as_ptr(), ffi::SQLITE_FCNTL_FILE_POINTER, (&raw mut file).cast())
    };
    if rc != ffi::SQLITE_OK || file.is_null() {
        return None;
    }
    // SAFETY: a non-null sqlite3_file from SQLite has valid io methods while the connection is open.
    let methods = unsafe { (*file).pMethods };
    if methods.is_null() || unsafe { (*methods).iVersion } < 2 {
        return None;
    }
    let map = unsafe { (*methods).xShmMap }?;
    let mut region: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: region 0, no extension: returns SQLite's existing mapping or null.
    let rc = unsafe { map(file, 0, WAL_INDEX_REGION, 0, &raw mut region) };
    if rc != ffi::SQLITE_OK || region.is_null() {
        return None;
    }
    let base = region as *const u8;
    let copy = |at: usize| {
        let mut b = [0u8; WAL_INDEX_HEADER];
        for (i, byte) in b.iter_mut().enumerate() {
            // SAFETY: the mapped region is WAL_INDEX_REGION bytes long.
            *byte = unsafe { std::ptr::read_volatile(base.add(at + i)) };
        }
        b
    };
    for _ in 0..HEADER_READ_TRIES {
        let first = copy(0);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let second = copy(WAL_INDEX_HEADER);
        // isInit (byte 12) is set once a connection has built the index.
        if first == second && first[12] == 1 {
            let u32_at = |o: usize, be: bool| {
                let b = [first[o], first[o + 1], first[o + 2], first[o + 3]];
                if be { u32::from_be_bytes(b) } else { u32::from_ne_bytes(b) }
            };
            // mxFrame is in native order; the salts are the WAL header's bytes.
            return Some(Published { max_frame: u32_at(16, false), salt: (u32_at(32, true), u32_at(36, true)) });
        }
        std::thread::yield_now();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published header agrees with the WAL: its salts, and as many
    /// frames as SQLite reports in the log.
    #[test]
    fn the_published_header_is_what_sqlite_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let app = Connection::open(&path).unwrap();
        app.execute_batch("PRAGMA journal_mode=wal; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(5000));").unwrap();
        let mut db = Db::open(&path, Duration::from_secs(1)).unwrap();
        db.refresh_read_lock().unwrap();
        let published = db.published().expect("a mapped wal-index");
        let (header, _) = db.open_wal().unwrap().unwrap();
        let (_, log, _): (i64, i64, i64) =
            app.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
        assert_eq!(published, Published { max_frame: log as u32, salt: header.salt });
    }

    /// The names of a database's sidecar files appear in this module only
    /// (and in the restore, whose output no connection of ours has open):
    /// code elsewhere that wants the WAL asks `Db`, so nobody opens the
    /// `-shm` or the database behind SQLite's back (see the module comment).
    #[test]
    fn only_this_module_opens_the_database_files() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        // restore.rs and litestream/generations.rs write the sidecars of a
        // restore's scratch file, never of a live database.
        let allowed = ["db.rs", "restore.rs", "generations.rs"];
        let mut offenders = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = path.file_name().unwrap().to_str().unwrap();
                if !name.ends_with(".rs") || allowed.contains(&name) || name == "tests.rs" {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                // Test modules at the end of a file may build WALs of their own.
                let code: String = text
                    .split("#[cfg(test)]")
                    .next()
                    .unwrap()
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect();
                for needle in ["-shm", "-wal\"", "-journal"] {
                    if code.contains(needle) {
                        offenders.push(format!("{} mentions {needle}", path.strip_prefix(&root).unwrap().display()));
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "only db.rs may reach a database's files: {offenders:?}");
    }
}
