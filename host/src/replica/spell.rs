//! A spell of failures of one replica: what the operator is told (once
//! per class of error) and how long to wait before the next pass.

use super::error::{Class, ReplicaError};
use std::time::{Duration, Instant};

/// First retry delay after a failure; doubles up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Litestream's ceiling: a store down for long is retried every 5 minutes.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The least wait before retrying what a person must fix (or a bug):
/// retrying sooner would only repeat the error.
const NOT_TRANSIENT_BACKOFF: Duration = Duration::from_secs(60);

/// A spell of failures of one replica: since when, the next backoff, and
/// the class of error the operator was last told about.
pub struct Spell {
    pub since: Instant,
    backoff: Duration,
    told: Option<Class>,
}

impl Spell {
    pub fn new() -> Spell {
        Spell { since: Instant::now(), backoff: MIN_BACKOFF, told: None }
    }

    /// Log `e` as its class asks: the first transient error of a spell as
    /// a warning (the rest quietly), an error that needs a person, or is
    /// corrupt data or a bug, once per class with what to do.
    pub fn report(&mut self, e: &ReplicaError, replica: &str, database: &str) {
        let class = e.class();
        if let ReplicaError::LeaseHeld { .. } = e {
            // Waiting for another process is a warning, said once: it
            // ends by itself if that process stops or dies.
            if self.told != Some(class) {
                tracing::warn!(replica = %replica, database = %database, "{e}");
                self.told = Some(class);
            }
        } else if class == Class::Transient {
            match self.told {
                None => {
                    tracing::warn!(replica = %replica, database = %database, "replica sync failed; retrying with backoff (nothing is lost): {e}")
                }
                Some(_) => tracing::debug!(replica = %replica, "replica sync failed again: {e}"),
            }
            self.told.get_or_insert(class);
        } else if self.told != Some(class) {
            tracing::error!(replica = %replica, database = %database, "replica failed and will not recover by itself: {e}; {}", e.advice());
            self.told = Some(class);
        }
    }

    /// How long to wait before the next pass after an error of `class`.
    pub fn next_wait(&mut self, class: Class, progressed: bool, hurry: bool) -> Duration {
        if progressed {
            // Segments did go up: the store works, just not always.
            self.backoff = MIN_BACKOFF;
        }
        if class != Class::Transient {
            self.backoff = self.backoff.max(NOT_TRANSIENT_BACKOFF);
        }
        let wait = if hurry { MIN_BACKOFF } else { crate::plugin::retry::jittered(self.backoff) };
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_for_transient_errors_and_starts_at_a_minute_for_the_rest() {
        let mut spell = Spell::new();
        let first = spell.next_wait(Class::Transient, false, false);
        assert!(first >= MIN_BACKOFF && first <= MIN_BACKOFF * 3 / 2, "{first:?}");
        let second = spell.next_wait(Class::Transient, false, false);
        assert!(second >= MIN_BACKOFF * 2, "{second:?}");
        assert!(spell.next_wait(Class::Transient, true, false) <= MIN_BACKOFF * 3 / 2, "progress resets it");
        let operator = spell.next_wait(Class::Operator, false, false);
        assert!(operator >= NOT_TRANSIENT_BACKOFF, "{operator:?}");
        assert_eq!(spell.next_wait(Class::Bug, false, true), MIN_BACKOFF, "a shutdown in a hurry retries at once");
        for _ in 0..20 {
            assert!(spell.next_wait(Class::Transient, false, false) <= MAX_BACKOFF * 3 / 2);
        }
    }
}
