//! The application of the torture suite: a writer that runs in its own
//! process, and the model that replays what it committed.
//!
//! Writer `w` owns the tables named `w{w}_*` and one row of `progress`.
//! Its transaction number `seq` is committed in the same transaction as the
//! change it numbers, and the change depends only on (seed, w, seq, page
//! size) and on the writer's own tables. So a database restored at any
//! TXID says how far each writer had got (`progress`), and replaying the
//! writer's first `seq` transactions on an empty in-memory database must
//! give exactly its tables there: every restored TXID is checked for
//! content, not only for integrity.

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The environment variable that makes the test binary act as a writer.
pub const WRITER_ENV: &str = "SLUICE_TORTURE_WRITER";
/// How long the application waits for a lock. Long: sluice holds the write
/// lock only briefly, and a busy error would be an error the application
/// sees because of sluice.
const APP_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Larger databases are not vacuumed. A VACUUM holds the write lock while
/// it rewrites the whole file: of a 140 MB database with 512-byte pages,
/// on a loaded machine, for over 10 s (seen in the long mode), so the other
/// writer's BEGIN gave up, an error between the application's own
/// connections that sluice plays no part in.
const MAX_VACUUM_BYTES: i64 = 32 << 20;
/// How long the application's own RESTART/TRUNCATE checkpoints wait for
/// readers; they report busy (not an error) while sluice reads, as they
/// would for any other reader.
const APP_CHECKPOINT_WAIT: Duration = Duration::from_millis(100);
/// Largest blob a transaction writes: overflow pages at every page size
/// without letting 64 KiB pages grow the database by megabytes a commit.
const MAX_BLOB: usize = 200_000;

/// What one writer process does.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WriterSpec {
    pub db: PathBuf,
    pub id: u32,
    pub seed: u64,
    pub page_size: u32,
    /// Stop after this long.
    pub millis: u64,
    /// Transactions per second; 0 for full speed.
    pub rate: u32,
    /// The application's `wal_autocheckpoint` (0: off).
    pub autocheckpoint: i64,
    /// VACUUM, checkpoints in all four modes, reconnects between commits.
    pub extras: bool,
    /// Fall quiet now and then (see `lull_after`).
    #[serde(default)]
    pub lulls: bool,
}

/// After transaction `seq`, sometimes a pause long enough for the
/// replicator to close the database's files (its `idle-timeout` is 25 ms
/// in these scenarios), and whether to disconnect for it: the last
/// connection to close checkpoints the WAL and deletes it, which the
/// replicator must notice when it wakes.
fn lull_after(seed: u64, id: u32, seq: u64) -> Option<(Duration, bool)> {
    let mut rng = rng_for(seed ^ 0x1011_1011, id, seq);
    rng.random_bool(0.03).then(|| (Duration::from_millis(rng.random_range(80..500)), rng.random_bool(0.5)))
}

/// The schema a writer starts from (seq 0), in the database and the model.
pub fn create_schema(conn: &Connection, id: u32) -> rusqlite::Result<()> {
    conn.execute_batch(&format!("CREATE TABLE IF NOT EXISTS w{id}_t(id INTEGER PRIMARY KEY, a TEXT, b BLOB);"))?;
    conn.execute("INSERT OR IGNORE INTO progress(writer, seq) VALUES (?1, 0)", [id])?;
    Ok(())
}

pub fn create_progress(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS progress(writer INTEGER PRIMARY KEY, seq INTEGER NOT NULL);")
}

fn rng_for(seed: u64, id: u32, seq: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ ((id as u64) << 56) ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

fn text(rng: &mut StdRng, len: usize) -> String {
    (0..len).map(|_| rng.random_range(b'a'..=b'z') as char).collect()
}

/// Transaction `seq` of writer `id`: one change, deterministic given the
/// writer's tables, then the progress row. The caller wraps it in a
/// transaction.
pub fn change(conn: &Connection, id: u32, seed: u64, page_size: u32, seq: u64) -> rusqlite::Result<()> {
    let mut rng = rng_for(seed, id, seq);
    let t = format!("w{id}_t");
    let hi = (page_size as usize * 6).min(MAX_BLOB);
    let lo = (page_size as usize * 2).min(hi / 2);
    match rng.random_range(0..100) {
        0..=39 => {
            let (a, b) = (text(&mut rng, 1 + (seq % 300) as usize), bytes(&mut rng, (seq % 200) as usize));
            conn.execute(&format!("INSERT INTO {t}(a, b) VALUES (?1, ?2)"), rusqlite::params![a, b])?;
        }
        40..=49 => {
            let len = rng.random_range(lo..=hi);
            conn.execute(&format!("INSERT INTO {t}(a, b) VALUES ('big', ?1)"), [bytes(&mut rng, len)])?;
        }
        50..=61 => {
            let len = rng.random_range(0..500);
            let (b, m) = (bytes(&mut rng, len), rng.random_range(0..7));
            conn.execute(&format!("UPDATE {t} SET a = a || 'u', b = ?1 WHERE id % 7 = ?2"), rusqlite::params![b, m])?;
        }
        62..=71 => {
            conn.execute(&format!("DELETE FROM {t} WHERE id % 11 = ?1"), [rng.random_range(0..11)])?;
        }
        72..=75 => {
            let n = rng.random_range(0..3);
            conn.execute_batch(&format!("CREATE TABLE IF NOT EXISTS w{id}_s{n}(x, y); INSERT INTO w{id}_s{n} SELECT id, a FROM {t} ORDER BY id LIMIT 30;"))?;
        }
        76..=78 => conn.execute_batch(&format!("DROP TABLE IF EXISTS w{id}_s{}", rng.random_range(0..3)))?,
        79 => conn.execute_batch(&format!("CREATE INDEX IF NOT EXISTS w{id}_ia ON {t}(a)"))?,
        80 => conn.execute_batch(&format!("DROP INDEX IF EXISTS w{id}_ia"))?,
        // A third of the rows at once: with auto_vacuum the file shrinks.
        85 => {
            conn.execute(&format!("DELETE FROM {t} WHERE id % 3 = ?1"), [rng.random_range(0..3)])?;
        }
        81..=84 => {
            for _ in 0..20 {
                let a = text(&mut rng, 40);
                conn.execute(&format!("INSERT INTO {t}(a) VALUES (?1)"), [a])?;
            }
        }
        _ => {
            let a = text(&mut rng, 16);
            conn.execute(&format!("INSERT INTO {t}(a) VALUES (?1)"), [a])?;
        }
    }
    conn.execute("UPDATE progress SET seq = ?1 WHERE writer = ?2", rusqlite::params![seq as i64, id])?;
    Ok(())
}

/// What the application does between transactions, if anything: none of
/// it changes what the tables hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extra {
    None,
    Vacuum,
    Checkpoint(&'static str),
    Reconnect,
}

fn extra_after(seed: u64, id: u32, seq: u64) -> Extra {
    let mut rng = rng_for(seed ^ 0x5eed, id, seq);
    match rng.random_range(0..1000) {
        0..=4 => Extra::Vacuum,
        5..=9 => Extra::Checkpoint("PASSIVE"),
        10..=12 => Extra::Checkpoint("FULL"),
        13..=15 => Extra::Checkpoint("RESTART"),
        16..=20 => Extra::Checkpoint("TRUNCATE"),
        21..=25 => Extra::Reconnect,
        _ => Extra::None,
    }
}

fn connect(spec: &WriterSpec) -> rusqlite::Result<Connection> {
    let conn = Connection::open(&spec.db)?;
    conn.busy_timeout(APP_BUSY_TIMEOUT)?;
    conn.pragma_update(None, "wal_autocheckpoint", spec.autocheckpoint)?;
    Ok(conn)
}

fn run_extra(conn: &mut Connection, spec: &WriterSpec, extra: Extra) -> rusqlite::Result<()> {
    match extra {
        Extra::None => {}
        Extra::Vacuum => {
            let bytes: i64 = conn.query_row(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                [],
                |r| r.get(0),
            )?;
            if bytes <= MAX_VACUUM_BYTES {
                conn.execute_batch("VACUUM")?;
            }
        }
        Extra::Checkpoint(mode) => {
            conn.busy_timeout(APP_CHECKPOINT_WAIT)?;
            let done = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get::<_, i64>(0));
            conn.busy_timeout(APP_BUSY_TIMEOUT)?;
            done?;
        }
        Extra::Reconnect => *conn = connect(spec)?,
    }
    Ok(())
}

/// The writer process: commit transactions from where the database says
/// this writer stopped, until the time is up. Any error is one the
/// application would not see without sluice.
pub fn run(spec: &WriterSpec) -> Result<u64, String> {
    let mut conn = connect(spec).map_err(|e| format!("open: {e}"))?;
    let mut seq: u64 = conn
        .query_row("SELECT seq FROM progress WHERE writer = ?1", [spec.id], |r| r.get::<_, i64>(0))
        .map_err(|e| format!("read progress: {e}"))? as u64;
    let deadline = Instant::now() + Duration::from_millis(spec.millis);
    let pause = (spec.rate > 0).then(|| Duration::from_secs(1) / spec.rate);
    while Instant::now() < deadline {
        seq += 1;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| format!("begin {seq}: {e}"))?;
        change(&tx, spec.id, spec.seed, spec.page_size, seq).map_err(|e| format!("transaction {seq}: {e}"))?;
        tx.commit().map_err(|e| format!("commit {seq}: {e}"))?;
        if spec.extras {
            let extra = extra_after(spec.seed, spec.id, seq);
            run_extra(&mut conn, spec, extra).map_err(|e| format!("{extra:?} after {seq}: {e}"))?;
        }
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
        if let Some((quiet, disconnect)) = spec.lulls.then(|| lull_after(spec.seed, spec.id, seq)).flatten() {
            if disconnect {
                if seq.is_multiple_of(2) {
                    // An empty WAL when the replicator rests: no position
                    // in it to continue from (a commit made then and
                    // checkpointed away by this connection's close once
                    // went unnoticed).
                    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                        .map_err(|e| format!("checkpoint before a lull after {seq}: {e}"))?;
                }
                conn = rusqlite::Connection::open_in_memory().map_err(|e| format!("close: {e}"))?;
            }
            std::thread::sleep(quiet);
            if disconnect {
                conn = connect(spec).map_err(|e| format!("reconnect after {seq}: {e}"))?;
            }
        }
    }
    Ok(seq)
}

/// A hash of writer `id`'s tables (schema and rows) as `conn` sees them.
pub fn digest(conn: &Connection, id: u32) -> rusqlite::Result<u64> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let prefix = format!("w{id}_");
    let mut stmt =
        conn.prepare("SELECT type, name, sql FROM sqlite_master WHERE substr(name, 1, ?2) = ?1 ORDER BY name")?;
    let objects: Vec<(String, String, Option<String>)> = stmt
        .query_map(rusqlite::params![prefix, prefix.len() as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (kind, name, sql) in objects {
        h.update(format!("{kind}\0{name}\0{}\0", sql.unwrap_or_default()).as_bytes());
        if kind != "table" {
            continue;
        }
        let mut rows = conn.prepare(&format!("SELECT * FROM \"{name}\" ORDER BY rowid"))?;
        let columns = rows.column_count();
        let mut q = rows.query([])?;
        while let Some(row) = q.next()? {
            for c in 0..columns {
                match row.get_ref(c)? {
                    ValueRef::Null => h.update(b"n"),
                    ValueRef::Integer(i) => h.update(&[b"i".as_slice(), &i.to_le_bytes()].concat()),
                    ValueRef::Real(f) => h.update(&[b"r".as_slice(), &f.to_le_bytes()].concat()),
                    ValueRef::Text(t) => h.update(&[b"t".as_slice(), &(t.len() as u64).to_le_bytes(), t].concat()),
                    ValueRef::Blob(b) => h.update(&[b"b".as_slice(), &(b.len() as u64).to_le_bytes(), b].concat()),
                }
            }
        }
    }
    Ok(h.digest())
}

/// Writer `id` replayed in memory, advanced on demand.
pub struct Model {
    conn: Connection,
    id: u32,
    seed: u64,
    page_size: u32,
    seq: u64,
}

impl Model {
    pub fn new(id: u32, seed: u64, page_size: u32) -> Model {
        let conn = Connection::open_in_memory().unwrap();
        create_progress(&conn).unwrap();
        create_schema(&conn, id).unwrap();
        Model { conn, id, seed, page_size, seq: 0 }
    }

    /// The digest of the writer's tables after transaction `seq` (which
    /// must not be behind the model).
    pub fn digest_at(&mut self, seq: u64) -> u64 {
        assert!(seq >= self.seq, "model of writer {} asked to go back from {} to {seq}", self.id, self.seq);
        while self.seq < seq {
            self.seq += 1;
            let tx = self.conn.transaction().unwrap();
            change(&tx, self.id, self.seed, self.page_size, self.seq).unwrap();
            tx.commit().unwrap();
        }
        digest(&self.conn, self.id).unwrap()
    }
}
