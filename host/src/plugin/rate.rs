//! A tenant's request rate (`sandbox: requests-per-second`): the HTTP
//! requests of all of one replica's plugin instances share one budget.
//!
//! The limit sits where the requests leave the sandbox (`http`), not at
//! the plugin calls: a plugin decides how many requests a call makes (a
//! multipart part, a composed object, a lease renewal), and a hostile one
//! could make thousands; what a shared bucket's owner pays for, and what
//! a store throttles, is requests. A request over the budget waits (the
//! replica lags, nothing fails); the wait is not charged to the call's CPU
//! budget, which counts only time in wasm.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use std::num::NonZeroU32;
use std::time::Duration;

/// One replica's request budget: `per_second` requests a second, in
/// bursts of up to a second's worth (what a store's own rate limits
/// allow, and enough for a multipart upload's parts in flight).
pub struct RequestRate {
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
    per_second: NonZeroU32,
}

impl std::fmt::Debug for RequestRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestRate({}/s)", self.per_second)
    }
}

impl RequestRate {
    pub fn new(per_second: NonZeroU32) -> Self {
        let clock = DefaultClock::default();
        let limiter = governor::RateLimiter::direct_with_clock(Quota::per_second(per_second), clock.clone());
        RequestRate { limiter, clock, per_second }
    }

    pub fn per_second(&self) -> u32 {
        self.per_second.get()
    }

    /// Wait until one more request fits the budget; returns how long it
    /// waited. Waiters are served as the budget refills, in no promised
    /// order (each retries after its computed wait).
    pub async fn admit(&self) -> Duration {
        let mut waited = Duration::ZERO;
        loop {
            match self.limiter.check() {
                Ok(()) => return waited,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    // A zero wait would spin: the budget refills in steps.
                    let wait = wait.max(Duration::from_millis(1));
                    tokio::time::sleep(wait).await;
                    waited += wait;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_burst_of_one_seconds_worth_goes_at_once_and_the_rest_is_paced() {
        let rate = RequestRate::new(NonZeroU32::new(20).expect("nonzero"));
        let start = Instant::now();
        for _ in 0..20 {
            rate.admit().await;
        }
        let burst = start.elapsed();
        assert!(burst < Duration::from_millis(500), "the first second's worth waited {burst:?}");
        for _ in 0..10 {
            rate.admit().await;
        }
        // Ten more at 20/s cannot take less than half a second (a lower
        // bound only: a slow machine takes longer, never less).
        let paced = start.elapsed() - burst;
        assert!(paced >= Duration::from_millis(450), "ten requests over the budget took only {paced:?}");
    }

    #[tokio::test]
    async fn waiters_from_many_tasks_share_one_budget() {
        let rate = std::sync::Arc::new(RequestRate::new(NonZeroU32::new(10).expect("nonzero")));
        let start = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let rate = rate.clone();
                tokio::spawn(async move {
                    for _ in 0..5 {
                        rate.admit().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        // 20 requests at 10/s with a burst of 10: at least 0.9 s.
        assert!(start.elapsed() >= Duration::from_millis(900), "took only {:?}", start.elapsed());
    }
}
