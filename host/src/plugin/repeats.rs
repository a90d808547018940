//! A plugin's repeated log lines, said once. An instance lives for one
//! short batch of calls, so a warning a plugin gives when it opens a store
//! (an unchecked server key, a deprecated setting) would otherwise be
//! repeated every few seconds, for every database, and bury the log.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How long an identical line from the same replica's plugin is kept
/// quiet (logged at debug instead): long enough not to flood, short
/// enough that a condition that persists is said again every hour.
pub const QUIET_FOR: Duration = Duration::from_secs(3600);
/// Lines remembered at most; when full the memory starts afresh (a line
/// is then said once more, never lost).
const REMEMBERED: usize = 4096;

static KEYS: LazyLock<RandomState> = LazyLock::new(RandomState::new);
/// Lines by their hash: a hostile plugin's long lines cost 16 bytes each.
static SEEN: LazyLock<Mutex<HashMap<u64, Instant>>> = LazyLock::new(Mutex::default);

/// Whether `line` (already labelled with its plugin, database and replica)
/// should be logged at its own level now.
pub fn first_in_a_while(line: &str) -> bool {
    // Keyed per process: no plugin can craft a line that silences another's.
    let hash = KEYS.hash_one(line);
    let Ok(mut seen) = SEEN.lock() else { return true };
    say_now(&mut seen, hash, Instant::now())
}

fn say_now(seen: &mut HashMap<u64, Instant>, line: u64, now: Instant) -> bool {
    if seen.get(&line).is_some_and(|at| now.duration_since(*at) < QUIET_FOR) {
        return false;
    }
    if seen.len() >= REMEMBERED {
        seen.clear();
    }
    seen.insert(line, now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_said_once_an_hour_and_others_are_not_held_back() {
        let mut seen = HashMap::new();
        let t0 = Instant::now();
        let (a, b) = (1, 2);
        assert!(say_now(&mut seen, a, t0));
        assert!(!say_now(&mut seen, a, t0 + Duration::from_secs(5)));
        assert!(say_now(&mut seen, b, t0 + Duration::from_secs(5)));
        assert!(say_now(&mut seen, a, t0 + QUIET_FOR + Duration::from_secs(1)));
        for i in 0..REMEMBERED as u64 {
            say_now(&mut seen, 10 + i, t0);
        }
        assert!(seen.len() <= REMEMBERED, "bounded");
    }
}
