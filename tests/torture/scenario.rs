//! One torture scenario: the database, the application and the
//! replicator's configuration, drawn from a seed so a failure can be
//! replayed (`SLUICE_TORTURE_SEED`).

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Page sizes SQLite allows.
pub const PAGE_SIZES: [u32; 8] = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];

/// Who starts first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The replicator, then the writers moments later.
    ReplicatorFirst,
    /// Both at the same moment.
    Together,
    /// The writers, then the replicator once they are busy.
    WritesFirst,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub page_size: u32,
    /// An application connection keeps the WAL (with frames) at start;
    /// otherwise the database was closed, so it has no `-wal`.
    pub wal_at_start: bool,
    pub start: Start,
    pub writers: u32,
    /// The application's `wal_autocheckpoint` (0: off).
    pub autocheckpoint: i64,
    /// Transactions per second per writer; 0: full speed.
    pub rate: u32,
    /// `auto_vacuum = FULL`: deletes shrink the file.
    pub auto_vacuum: bool,
    /// Megabytes of rows in the database before anything starts.
    pub bulk_mb: u32,
    /// How long the writers write.
    pub write_millis: u64,
    /// The replicator is stopped and started again while the writers run
    /// (else it runs throughout, stopped once at the end).
    pub restarts: bool,
    /// Some lives of the replicator end in SIGKILL instead of SIGTERM.
    pub kill_replicator: bool,
    /// Writers are sometimes killed (SIGKILL) and restarted.
    pub kill_writers: bool,
    /// VACUUM, the application's checkpoints, reconnects.
    pub extras: bool,
    /// The replicator's checkpoint thresholds (frames).
    pub min_checkpoint: u32,
    pub truncate_after: u32,
    pub sync_ms: u64,
    /// Writers fall quiet now and then, often disconnecting, and the
    /// replicator closes an idle database's files after 25 ms
    /// (`idle-timeout`): the database rests and wakes between writes.
    pub lulls: bool,
}

impl Scenario {
    /// A scenario drawn from `seed` alone.
    pub fn random(seed: u64) -> Scenario {
        let mut rng = StdRng::seed_from_u64(seed);
        let start = [Start::ReplicatorFirst, Start::Together, Start::WritesFirst][rng.random_range(0..3)];
        let big = rng.random_range(0..6) == 0;
        Scenario {
            seed,
            page_size: PAGE_SIZES[rng.random_range(0..PAGE_SIZES.len())],
            wal_at_start: rng.random_bool(0.5),
            start,
            writers: rng.random_range(1..=2),
            autocheckpoint: [0, 100, 1000][rng.random_range(0..3)],
            rate: [0, 200, 500][rng.random_range(0..3)],
            auto_vacuum: rng.random_bool(0.3),
            bulk_mb: if big { rng.random_range(100..=140) } else { rng.random_range(0..3) },
            write_millis: rng.random_range(2_000..8_000),
            restarts: rng.random_bool(0.85),
            kill_replicator: rng.random_bool(0.7),
            kill_writers: rng.random_bool(0.3),
            extras: rng.random_bool(0.8),
            min_checkpoint: [20, 100, 1000][rng.random_range(0..3)],
            truncate_after: [200, 2000, 121_359][rng.random_range(0..3)],
            sync_ms: [50, 200, 1000][rng.random_range(0..3)],
            lulls: rng.random_bool(0.4),
        }
    }

    /// The scenarios CI runs: drawn from fixed seeds, then pinned so that
    /// together they cover what the suite promises (every page size, both
    /// kinds of start, two writers, kills during the first snapshot of a
    /// 100+ MB database and during checkpoints), in a few minutes.
    pub fn short_suite() -> Vec<Scenario> {
        let mut out = Vec::new();
        for (i, page_size) in PAGE_SIZES.into_iter().enumerate() {
            let mut s = Scenario::random(0x5eed_0000 + i as u64);
            s.page_size = page_size;
            s.wal_at_start = i % 2 == 1;
            s.start = [Start::ReplicatorFirst, Start::Together, Start::WritesFirst][i % 3];
            s.writers = 1 + (i % 2) as u32;
            s.bulk_mb = 0;
            s.write_millis = 3_000;
            s.sync_ms = 200;
            s.kill_replicator = i != 0;
            s.extras = true;
            s.lulls = i % 3 == 1;
            out.push(s);
        }
        // The first failure as reported: a closed database (no
        // -wal), the replicator with Litestream's default intervals, and
        // moments later a 200 txn/s writer for 6 s, nothing else.
        let first = &mut out[0];
        (
            first.start,
            first.wal_at_start,
            first.rate,
            first.autocheckpoint,
            first.writers,
            first.extras,
            first.restarts,
        ) = (Start::ReplicatorFirst, false, 200, 1000, 1, false, false);
        (first.sync_ms, first.write_millis, first.min_checkpoint, first.truncate_after) = (1000, 6_000, 1000, 121_359);
        // The same with the application checkpointing ten times as often.
        let second = &mut out[2];
        (second.start, second.wal_at_start, second.rate, second.autocheckpoint, second.writers) =
            (Start::ReplicatorFirst, false, 200, 100, 1);
        (second.sync_ms, second.write_millis) = (1000, 6_000);
        // The first snapshot of a large database, killed part-way.
        let big = &mut out[3];
        (big.bulk_mb, big.sync_ms, big.kill_replicator, big.min_checkpoint, big.write_millis, big.restarts) =
            (100, 1000, true, 100, 6_000, true);
        out
    }

    /// The replicator's configuration for this scenario.
    pub fn config(&self, db: &std::path::Path, replica: &str) -> String {
        let idle = if self.lulls { "25ms" } else { "10s" };
        format!(
            "dbs:\n  - path: {}\n    idle-timeout: {idle}\n    monitor-interval: 20ms\n    checkpoint-interval: 2s\n    validation-interval: 1s\n    min-checkpoint-page-count: {}\n    truncate-page-n: {}\n    replicas:\n      - url: {replica}\n        sync-interval: {}ms\n",
            db.display(),
            self.min_checkpoint,
            self.truncate_after,
            self.sync_ms
        )
    }
}
