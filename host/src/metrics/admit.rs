//! Bounded cardinality (issue 17): per-database series for at most
//! `metrics-max-databases` databases at once. Each database adds about
//! sixty series (histograms count a line per bucket); 10,000 tenants would
//! make every scrape tens of megabytes. Databases past the bound share
//! one label, `(other)`, in counters and histograms (sums make sense
//! there) and are left out of gauges (a TXID or a size of "the others" is
//! no number at all). A removed database frees its place.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

/// The label shared by databases past the bound.
pub const OTHER: &str = "(other)";

/// The bound when the config names none: every database of an ordinary
/// deployment keeps its own series (Litestream labels them all), while a
/// scrape at 10,000 tenants stays a few megabytes.
pub const DEFAULT_MAX_DATABASES: usize = 1_000;

/// Which databases have their own series.
#[derive(Debug)]
struct Admission {
    max: usize,
    own: HashSet<String>,
    /// The bound was met (said once, not per database or update).
    said: bool,
}

impl Admission {
    /// Whether `db` has its own series: admitted already, or a place is
    /// free. Also whether the bound was met for the first time.
    fn admit(&mut self, db: &str) -> (bool, bool) {
        if self.own.contains(db) {
            return (true, false);
        }
        if self.own.len() < self.max {
            self.own.insert(db.to_string());
            return (true, false);
        }
        (false, !std::mem::replace(&mut self.said, true))
    }
}

static ADMISSION: LazyLock<Mutex<Admission>> =
    LazyLock::new(|| Mutex::new(Admission { max: DEFAULT_MAX_DATABASES, own: HashSet::new(), said: false }));

/// Set the bound (`metrics-max-databases`), before the first database runs.
pub fn set_max_databases(max: usize) {
    if let Ok(mut a) = ADMISSION.lock() {
        a.max = max;
    }
}

fn admitted(db: &str) -> bool {
    let Ok((own, first_refusal, max)) = ADMISSION.lock().map(|mut a| {
        let (own, first) = a.admit(db);
        (own, first, a.max)
    }) else {
        return false;
    };
    if first_refusal {
        tracing::info!(
            "more than {max} databases: the metrics of those past the first {max} are summed under \
             db=\"{OTHER}\" (and left out of gauges); raise `metrics-max-databases` for every \
             database's own series (about sixty each)"
        );
    }
    own
}

/// The `db` label of a counter or histogram.
pub fn counted(db: &str) -> &str {
    if admitted(db) { db } else { OTHER }
}

/// The `db` label of a gauge, if `db` has its own series.
pub fn shown(db: &str) -> Option<&str> {
    admitted(db).then_some(db)
}

/// `db` was removed: its place is free for another.
pub fn release(db: &str) {
    if let Ok(mut a) = ADMISSION.lock() {
        a.own.remove(db);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_databases_have_their_own_series_and_a_removed_one_frees_its_place() {
        let mut a = Admission { max: 2, own: HashSet::new(), said: false };
        assert_eq!(a.admit("/a"), (true, false));
        assert_eq!(a.admit("/b"), (true, false));
        assert_eq!(a.admit("/a"), (true, false), "admitted stays admitted");
        assert_eq!(a.admit("/c"), (false, true), "past the bound, said the first time");
        assert_eq!(a.admit("/d"), (false, false), "and only the first time");
        a.own.remove("/b");
        assert_eq!(a.admit("/d"), (true, false), "a removed database's place is taken");
        assert_eq!(a.admit("/c"), (false, false));
    }

    #[test]
    fn no_bound_below_the_number_of_databases_changes_nothing() {
        let mut a = Admission { max: DEFAULT_MAX_DATABASES, own: HashSet::new(), said: false };
        assert!((0..DEFAULT_MAX_DATABASES).all(|i| a.admit(&format!("/db{i}")).0));
        assert_eq!(a.admit("/one-more"), (false, true));
    }
}
