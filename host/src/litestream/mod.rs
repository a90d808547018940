//! Litestream's own backups, read so that a user who swaps the binary keeps
//! them (DESIGN.md decision 23): Litestream 0.5's LTX files (`ltx`,
//! `ltx_backup`) and 0.3's generations (`generations`). Read-only: sluice
//! restores and lists them, and refuses to replicate into a path that holds
//! one (a second history beside Litestream's would be restored by neither
//! tool as the user expects).

pub mod generations;
pub mod ltx;
pub mod ltx_backup;

use crate::plugin::{ObjectMeta, PluginStore};
use crate::replica::client;
use crate::replica::error::ReplicaError;
use crate::restore::{RestoreOptions, into_output};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A backup Litestream wrote.
#[derive(Debug, Clone)]
pub enum Backup {
    /// Litestream 0.5: LTX files in levels.
    Ltx(Vec<ltx_backup::LtxFile>),
    /// Litestream 0.3: generations of LZ4 snapshots and WAL segments.
    Generations(BTreeMap<String, generations::Generation>),
}

/// What a restore from a Litestream backup did.
#[derive(Debug)]
pub struct Restored {
    /// The objects applied, in order.
    pub keys: Vec<String>,
    /// The TXID reached (Litestream 0.5), none for 0.3.
    pub txid: Option<u64>,
    /// Where the restore ended, in the backup's terms.
    pub position: String,
    pub bytes_downloaded: u64,
}

impl Backup {
    /// The Litestream backup among a replica's objects, if any (0.5 first:
    /// a path upgraded from 0.3 holds both, and 0.5 is what ran last).
    pub fn among(objects: &[ObjectMeta]) -> Option<Backup> {
        let files = ltx_backup::files(objects);
        if !files.is_empty() {
            return Some(Backup::Ltx(files));
        }
        let gens = generations::generations(objects);
        (!gens.is_empty()).then_some(Backup::Generations(gens))
    }

    /// One line for messages: which Litestream wrote it and what it holds.
    pub fn describe(&self) -> String {
        match self {
            Backup::Ltx(files) => {
                let max = files.iter().map(|f| f.max_txid).max().unwrap_or(0);
                format!("a Litestream 0.5 backup ({} LTX files, up to TXID {max:016x})", files.len())
            }
            Backup::Generations(g) => format!("a Litestream 0.3 backup ({} generations)", g.len()),
        }
    }

    /// Restore `opts.target` into `opts.output` (checked by the caller with
    /// `restore::check_output`), with SQLite's check before the rename.
    pub async fn restore(&self, store: &PluginStore, opts: &RestoreOptions) -> anyhow::Result<Restored> {
        match self {
            Backup::Ltx(files) => {
                let plan = ltx_backup::plan(files, opts.target)?;
                let txid = plan.last().map(|f| f.max_txid);
                let keys = plan.iter().map(|f| f.key.clone()).collect();
                let position = format!("TXID {:016x}", txid.unwrap_or(0));
                let bytes = match opts.dry_run {
                    true => 0,
                    false => {
                        let steps = &plan;
                        into_output(
                            opts,
                            |tmp: PathBuf| async move { ltx_backup::apply(store, steps, &tmp, opts).await },
                        )
                        .await?
                    }
                };
                Ok(Restored { keys, txid, position, bytes_downloaded: bytes })
            }
            Backup::Generations(gens) => {
                let plan = generations::plan(gens, opts.target)?;
                let bytes = match opts.dry_run {
                    true => 0,
                    false => {
                        let p = &plan;
                        into_output(opts, |tmp: PathBuf| async move { generations::apply(store, p, &tmp).await })
                            .await?
                    }
                };
                Ok(Restored { keys: plan.keys(), txid: None, position: plan.position(), bytes_downloaded: bytes })
            }
        }
    }
}

/// The Litestream backup in `store`'s replica, if any.
pub async fn find(store: &PluginStore) -> Result<Option<Backup>, ReplicaError> {
    let objects = client::list_objects(store).await?;
    Ok(Backup::among(&objects))
}
