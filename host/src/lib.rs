//! sluice: SQLite streaming replication whose storage backends are
//! sandboxed WebAssembly components.
//!
//! Data flows one way: WAL → segment → replica → plugin. The modules, in
//! that order (the numbered decisions they cite are in DESIGN.md):
//!
//! - `db`: the only code that touches a live database's files: its own
//!   connections, the read lock that keeps the WAL from being reset under
//!   unshipped frames, checkpoints, consistent page images.
//! - `wal`: reads committed frames straight from the `-wal` file.
//! - `capture`: WAL → segment: each sync's new frames become a level-0
//!   segment in the local spool, or a snapshot after a gap; validation of
//!   the capture against the live database.
//! - `segment`: the unit sluice stores: format (FORMAT.md), writer,
//!   reader, applying segments to a file.
//! - `state`: one database's crash-safe local state (TXID, WAL position,
//!   page hashes) and its spool directory, in the meta directory.
//! - `replica`: one replica's life in its store: shipping from the spool,
//!   compaction, asking for snapshots, retention, the lease that keeps
//!   it to one writer, and choosing the segments a restore needs.
//! - `restore`: plan, download, apply with every checksum verified,
//!   SQLite's integrity check, fsync, rename; `restore -f` follows.
//! - `litestream`: Litestream's own backups (0.5 LTX files, 0.3
//!   generations), restored and listed so that a migrating user keeps them.
//! - `plugin`: loading and confining storage plugins (wasmtime components,
//!   the sandbox, `wasi:http`), the host side of `wit/storage.wit`, and the
//!   store the rest of sluice uses.
//! - `config`: the Litestream-compatible configuration file, resolved into
//!   what the engine runs.
//! - `replicate`: the per-database loop: watch, capture, checkpoint, feed
//!   one task per replica, keep the spool bounded; the registry of the
//!   databases a run replicates, which may change while it runs (watched
//!   directories, the control socket).
//! - `control`: the control socket (Litestream 0.5's `socket:`), both the
//!   daemon's side and the CLI's.
//! - `file_watch`: one inotify watcher for the process, waking a database's
//!   loop when its files change.
//! - `metrics`: Prometheus metrics, Litestream's set with a `sluice_`
//!   prefix.
//! - `checksum`: page hashes and the whole-database checksum (XOR of page
//!   hashes, updatable page by page).
//! - `clock`: wall-clock milliseconds and RFC 3339.
//! - `fsutil`: filesystem helpers (directory fsync, a file's size and
//!   mtime stamp).
//! - `logging`: `tracing` set-up.
//! - `cli`: the Litestream-compatible command line; thin.

pub mod capture;
pub mod checksum;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod db;
pub mod file_watch;
pub mod fsutil;
pub mod litestream;
pub mod logging;
pub mod metrics;
pub mod plugin;
pub mod replica;
pub mod replicate;
pub mod restore;
pub mod segment;
pub mod state;
pub mod wal;

#[cfg(test)]
mod fuzz;
