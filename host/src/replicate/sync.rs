//! One sync of a database on a blocking thread (capture, validation,
//! checkpoint, their metrics), and the clock that says when to validate.

use super::{Replica, Stamp, wal_stamp};
use crate::capture::{Capturer, Durable, Validation};
use crate::metrics;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a sync did, for the capture loop's pacing.
pub(super) struct Synced {
    pub durable: Durable,
    /// It wrote a segment (new transactions or a snapshot).
    pub captured: bool,
    /// The WAL ends in a transaction still being written.
    pub in_flight: bool,
    /// What validating the capture found, if it was asked for, and how
    /// long it took.
    pub validation: Option<(Validation, Duration)>,
}

/// When to validate the capture next (`validation-interval`): when due,
/// at the first sync that finds nothing new, and only if something was
/// captured since the last validation (an idle database costs nothing).
pub(super) struct ValidationClock {
    every: Option<Duration>,
    next: tokio::time::Instant,
    validated_txid: u64,
}

impl ValidationClock {
    pub fn new(every: Option<Duration>) -> ValidationClock {
        let next = tokio::time::Instant::now() + every.unwrap_or_default();
        ValidationClock { every, next, validated_txid: 0 }
    }

    pub fn due(&self, txid: impl FnOnce() -> u64) -> bool {
        self.every.is_some() && tokio::time::Instant::now() >= self.next && txid() != self.validated_txid
    }

    /// Note what a validation found; true if it found a mismatch.
    pub fn record(&mut self, found: Option<(Validation, Duration)>, database: &str, replicas: &[Replica]) -> bool {
        let (Some(every), Some((found, took))) = (self.every, found) else { return false };
        let mismatch = matches!(found, Validation::Mismatch { .. });
        match found {
            Validation::NotNow => return false,
            Validation::Failed(why) => {
                tracing::warn!(database = %database, "validation could not run (retried in {every:?}): {why}")
            }
            Validation::Matched { txid, pages } => {
                metrics::VALIDATION_COUNT.with_label_values(&[metrics::counted(database)]).inc();
                tracing::debug!(database = %database, "validation: the live database matches the capture at TXID {txid:016x} ({pages} pages, {took:?})");
                self.validated_txid = txid;
            }
            Validation::Mismatch { txid, detail } => {
                metrics::VALIDATION_COUNT.with_label_values(&[metrics::counted(database)]).inc();
                metrics::VALIDATION_ERROR_COUNT.with_label_values(&[metrics::counted(database)]).inc();
                let names: Vec<&str> = replicas.iter().map(|r| r.name.as_str()).collect();
                tracing::error!(database = %database, replicas = %names.join(","), "validation failed at TXID {txid:016x}: {detail}; replicas {} hold a capture that is not the database there, healing them with a fresh snapshot", names.join(", "));
            }
        }
        self.next = tokio::time::Instant::now() + every;
        mismatch
    }
}

/// Run one capture on a blocking thread; returns what it made durable.
/// With `validate`, checks the capture against the live database if this
/// sync leaves the view at the captured state.
pub(super) async fn sync_once(
    capturer: &Arc<Mutex<Capturer>>,
    snapshot: bool,
    validate: bool,
) -> anyhow::Result<Synced> {
    let c = capturer.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = c.lock().map_err(|_| anyhow::anyhow!("capture state poisoned by an earlier panic"))?;
        let db = c.db_path().display().to_string();
        let counted = metrics::counted(&db);
        let started = std::time::Instant::now();
        let report = c.sync(snapshot);
        metrics::SYNC_COUNT.with_label_values(&[counted]).inc();
        metrics::SYNC_SECONDS.with_label_values(&[counted]).inc_by(started.elapsed().as_secs_f64());
        let report = report.inspect_err(|_| metrics::SYNC_ERROR_COUNT.with_label_values(&[counted]).inc())?;
        // A validation that cannot run (an I/O error reading the database)
        // is reported by the clock and retried at the next interval; it
        // never fails the sync, which would also stop checkpoints.
        let validation = validate.then(|| {
            let started = std::time::Instant::now();
            let found = c.validate().unwrap_or_else(|e| Validation::Failed(format!("{e}")));
            (found, started.elapsed())
        });
        let state = c.state();
        metrics::TOTAL_WAL_BYTES.with_label_values(&[counted]).inc_by(report.wal_bytes as f64);
        if let Some(shown) = metrics::shown(&db) {
            metrics::TXID.with_label_values(&[shown]).set(state.txid as f64);
            metrics::DB_SIZE.with_label_values(&[shown]).set(state.db_pages as f64 * state.page_size as f64);
            let wal = std::fs::metadata(crate::db::wal_path(c.db_path())).map_or(0.0, |m| m.len() as f64);
            metrics::WAL_SIZE.with_label_values(&[shown]).set(wal);
        }
        if report.transactions > 0 || !report.segments.is_empty() {
            tracing::debug!(database = %c.db_path().display(), txid = c.state().txid, "captured {} transactions into {} segments", report.transactions, report.segments.len());
        }
        let started = std::time::Instant::now();
        match c.maybe_checkpoint() {
            Ok(Some(mode)) => {
                let labels = [counted, mode.name()];
                metrics::CHECKPOINT_COUNT.with_label_values(&labels).inc();
                metrics::CHECKPOINT_SECONDS.with_label_values(&labels).inc_by(started.elapsed().as_secs_f64());
                tracing::debug!(database = %db, "checkpoint {mode:?}");
            }
            Ok(None) => {}
            Err(e) => {
                metrics::CHECKPOINT_ERROR_COUNT.with_label_values(&[counted, "passive"]).inc();
                return Err(e.into());
            }
        }
        let captured = !report.segments.is_empty();
        Ok(Synced { durable: Durable { txid: c.state().txid, fresh: report.fresh }, captured, in_flight: report.in_flight, validation })
    })
    .await?
}

/// Close a quiet database's files (`Capturer::rest`) on a blocking
/// thread: the files' stamp as it left them, or `None` if it could not
/// rest now (said at debug; it is tried again later).
pub(super) async fn rest_once(capturer: &Arc<Mutex<Capturer>>, db: &Path) -> Option<Stamp> {
    let (c, db) = (capturer.clone(), db.to_path_buf());
    let rested = tokio::task::spawn_blocking(move || {
        let mut c = c.lock().map_err(|_| anyhow::anyhow!("capture state poisoned by an earlier panic"))?;
        anyhow::Ok(c.rest(|| wal_stamp(&db))?)
    })
    .await;
    match rested {
        Ok(Ok(stamp)) => stamp,
        Ok(Err(e)) => {
            tracing::debug!("could not close the idle database's files: {e:#}");
            None
        }
        Err(e) => {
            tracing::debug!("could not close the idle database's files: {e}");
            None
        }
    }
}
