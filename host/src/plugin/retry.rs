//! Quick retries of one plugin call on transient and throttled errors:
//! connection resets on DigitalOcean Spaces and 503 SlowDown are routine,
//! and are best absorbed where they happen rather than failing a whole
//! sync or restore.
//!
//! Every call is retried this way, `put` and `complete-upload` too,
//! although a store may have done what a failed attempt asked (the answer
//! was lost, not the write). That is safe because of what sluice writes:
//! an object's name says which segment it holds and segments never change,
//! so a repeated write of one name carries the same bytes. With
//! conditional writes the repeat of a put that had landed fails with
//! `precondition-failed`, and the uploader (`replica::client`) then
//! compares the stored object's header and trailer with its own: the same
//! segment is success, another is a conflict with another writer. A
//! repeated `complete-upload` of a completed upload fails; the replica
//! loop then uploads the segment again and meets the same comparison.

use super::error::{PluginError, StorageError};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Attempts per call, the first included.
pub const ATTEMPTS: u32 = 4;
/// First delay; each next one is four times longer (0.2 s, 0.8 s, 3.2 s).
const FIRST_DELAY: Duration = Duration::from_millis(200);
/// A store's Retry-After is honoured up to this; longer waits are the
/// replica loop's backoff, not a single call's.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Retry notices per replica: at most one a minute at WARN/INFO (the rest
/// at DEBUG), so a flaky store is visible without flooding the log.
const NOTICE_EVERY: Duration = Duration::from_secs(60);

static NOTICED: LazyLock<Mutex<HashMap<(String, &'static str), Instant>>> = LazyLock::new(Default::default);

/// Whether this (replica, kind of notice) may log loudly now.
fn loud(e: &PluginError, kind: &'static str) -> bool {
    let key = (format!("{}", e.labels), kind);
    let Ok(mut seen) = NOTICED.lock() else { return false };
    match seen.get(&key) {
        Some(t) if t.elapsed() < NOTICE_EVERY => false,
        _ => {
            seen.insert(key, Instant::now());
            true
        }
    }
}

/// Log a retry: the first of a spell at WARN.
pub fn note_retry(e: &PluginError, wait: Duration, attempt: u32) {
    if loud(e, "retry") {
        tracing::warn!("{e}; retrying in {wait:.1?} (transient failures are retried quietly; nothing is lost)");
    } else {
        tracing::debug!("{e}; retrying in {wait:.1?} (attempt {attempt})");
    }
}

/// Log that a call succeeded after retries.
pub fn note_recovered(e: &PluginError, attempts: u32) {
    if loud(e, "recovered") {
        tracing::info!("{}: recovered after {attempts} attempts", e.labels);
    }
}

/// How long to wait before retrying after `e`, or `None` if retrying the
/// same call cannot help.
pub fn delay_for(e: &PluginError, attempt: u32) -> Option<Duration> {
    if !e.is_retryable() {
        return None;
    }
    let base = FIRST_DELAY * 4u32.saturating_pow(attempt.saturating_sub(1));
    let asked = match e.storage() {
        Some(StorageError::Throttled { retry_after_ms: Some(ms), .. }) => {
            Duration::from_millis(*ms).min(MAX_RETRY_AFTER)
        }
        _ => Duration::ZERO,
    };
    Some(jittered(base).max(asked))
}

/// `base` plus up to half of it again, at random: spreads the retries of
/// many replicas hitting one store (the one jitter of every retry policy:
/// a call's quick retries here, the replica loop's backoff in `task`).
pub fn jittered(base: Duration) -> Duration {
    base + Duration::from_millis(rand::random::<u64>() % (base.as_millis() as u64 / 2 + 1))
}

/// `retry!(call)`: evaluate the future-producing expression `call` until
/// it succeeds, fails permanently, or `ATTEMPTS` ran out. A macro rather
/// than a function over async closures, whose futures the compiler cannot
/// yet prove `Send` across lifetimes.
macro_rules! retry {
    ($call:expr) => {{
        let mut attempt = 1;
        let mut last_error = None;
        loop {
            match $call.await {
                Ok(v) => {
                    if let Some(e) = &last_error {
                        $crate::plugin::retry::note_recovered(e, attempt);
                    }
                    break Ok(v);
                }
                Err(e) => match $crate::plugin::retry::delay_for(&e, attempt)
                    .filter(|_| attempt < $crate::plugin::retry::ATTEMPTS)
                {
                    Some(wait) => {
                        $crate::plugin::retry::note_retry(&e, wait, attempt);
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                        last_error = Some(e);
                    }
                    None => break Err(e),
                },
            }
        }
    }};
}
pub(crate) use retry;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::ErrorKind;

    fn error(e: StorageError) -> PluginError {
        PluginError { labels: Default::default(), op: "put k".into(), kind: ErrorKind::Storage(e) }
    }

    #[test]
    fn transient_errors_are_retried_later_each_time_and_others_not_at_all() {
        let e = error(StorageError::Transient("reset".into()));
        let waits: Vec<Duration> = (1..ATTEMPTS).map(|a| delay_for(&e, a).unwrap()).collect();
        for (i, w) in waits.iter().enumerate() {
            let base = FIRST_DELAY * 4u32.pow(i as u32);
            assert!(*w >= base && *w <= base * 3 / 2, "attempt {}: {w:?}", i + 1);
        }
        assert_eq!(delay_for(&error(StorageError::AccessDenied("no".into())), 1), None);
        assert_eq!(delay_for(&error(StorageError::NotFound("k".into())), 1), None);
    }

    #[test]
    fn a_store_that_asks_to_wait_is_obeyed_up_to_a_bound() {
        let asked = |ms| error(StorageError::Throttled { message: "slow down".into(), retry_after_ms: Some(ms) });
        assert!(delay_for(&asked(5_000), 1).unwrap() >= Duration::from_secs(5));
        assert!(delay_for(&asked(3_600_000), 1).unwrap() <= MAX_RETRY_AFTER);
    }
}
