//! sluice: SQLite streaming replication whose storage backends are
//! sandboxed WebAssembly components.
//!
//! Data flows one way: WAL → segment → replica → plugin. `plugin` loads
//! and confines the storage components; `cli` is the command line.

pub mod cli;
pub mod logging;
pub mod plugin;
pub mod checksum;
pub mod segment;
pub mod wal;
pub mod capture;
pub mod db;
pub mod state;
pub mod replica;
pub mod restore;
pub mod config;
pub mod replicate;
pub mod metrics;
pub mod watch;
