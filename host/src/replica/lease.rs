//! One writer per replica (DESIGN.md, decision 17): a lease object in the
//! replica names the one process that may write to it. This module holds
//! the decisions, as a state machine fed with what the store answered and
//! the time; `keeper` does the I/O around it.
//!
//! Expiry never compares clocks across machines: a waiter reads the
//! lease's etag and takes over only when it has stayed the same for the
//! holder's TTL on the waiter's own clock, with a put `if-match` that
//! etag, so a renewal in between (or another waiter quicker than us) makes
//! the takeover fail. The holder renews every TTL/4 and stops writing once
//! TTL minus a margin has passed since it sent its last renewal that
//! landed: a waiter's count can only start after that put landed.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The lease's key, at the replica root: `SegmentName::parse` needs a
/// `<level>/` directory, so no listing takes it for a segment, and it is
/// not a `.sluice-` name, which the file plugin keeps to itself.
pub const LEASE_KEY: &str = "sluice-lease.json";

/// How long a lease outlives its holder's last renewal. A minute: a
/// holder renews four times in it, so a store failing for half a minute
/// costs no write, while a replica whose holder died without releasing
/// (kill -9 on another machine, a lost host) is taken over a minute
/// later; the local spool keeps the changes meanwhile. `lease-timeout`
/// changes it per replica.
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(60);

/// A held lease rests once its replica has had nothing to write for this
/// many lease timeouts: one put promises renewal within `REST_TTL_FACTOR`
/// timeouts instead of one, and renewals come that much less often.
pub const IDLE_LAPSE_TTLS: u32 = 1;

/// A resting lease's TTL, in lease timeouts: an hour by default, so an
/// idle replica costs 4 renewals an hour instead of 240 (at 10,000
/// tenants, 11 puts a second instead of 670), while a second process
/// still waits as long as the holder lives (it is not told the replica is
/// free because the holder is quiet). The price: a holder that dies while
/// resting, on another machine, is taken over after an hour, not a
/// minute (on the same machine at once, its pid being gone).
pub const REST_TTL_FACTOR: u32 = 60;

/// Who holds a lease: the body of the lease object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Random per process: the only field that decides "ours".
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub database: String,
    /// When this process first took the lease (RFC 3339, for people).
    pub acquired: String,
    /// How long the lease outlives the holder's last renewal.
    pub ttl_ms: u64,
    /// Counts the holder's puts: each body differs, so each etag does
    /// (S3's etag of a plain put is the body's MD5).
    #[serde(default)]
    pub renewal: u64,
    /// Boot and pid namespace of `pid`: another process with the same
    /// one can tell whether the holder is still alive (`kill(pid, 0)`).
    #[serde(default)]
    pub pid_space: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "process {} on host {} (database {}, since {})", self.pid, self.host, self.database, self.acquired)
    }
}

/// A put's precondition, as the state machine asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    IfAbsent,
    IfMatch(String),
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Put our body under this condition.
    Put(Condition),
    /// Read the lease (etag, body, age).
    Read,
    /// Nothing until this much time has passed (or a release).
    Sleep(Duration),
}

/// What a put answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutAnswer {
    Done {
        etag: String,
    },
    /// The precondition failed: someone else's lease, or our own put
    /// that landed although its answer was lost.
    Taken,
    /// Anything else: it may or may not have landed.
    Failed,
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadAnswer {
    Absent,
    Found {
        etag: String,
        /// `None` if the body is not a lease we can read.
        holder: Option<Holder>,
        /// Our wall clock minus the store's modification time, if known.
        age: Option<Duration>,
        /// The holder is a process on this machine, in our pid space,
        /// that no longer exists.
        dead: bool,
    },
    Failed,
}

/// Something the keeper logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Acquired,
    TookOver(Option<Holder>),
    Waiting(Option<Holder>),
    Lost(Option<Holder>),
    Refused(Option<Holder>),
}

/// What the replica task needs to know: whether it may write, and if not,
/// why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// Writes are allowed until this time (the keeper's clock), if held.
    pub valid_until: Option<Duration>,
    /// Counts acquisitions: a new one means the replica may have changed
    /// while we did not hold it (its listing must be fetched again).
    pub generation: u64,
    /// Another process holds it (`other` names it, if its body is
    /// readable): we wait for it.
    pub waiting: bool,
    pub other: Option<Holder>,
    /// Since the last time we held it, another process took it from us.
    pub lost: bool,
    /// `-once` found a live holder and gives up.
    pub refused: bool,
    /// A rest just ended: until this time a lease not yet renewed is
    /// being woken (the replica task waits for it), not failing.
    pub waking_until: Option<Duration>,
    /// The first attempt has an answer: the replica task may report.
    pub decided: bool,
    /// Why the last call to the store failed, for the replica task's
    /// report (the keeper fills it in).
    pub problem: Option<(String, super::error::Class)>,
}

impl Standing {
    pub fn holds(&self, now: Duration) -> bool {
        self.valid_until.is_some_and(|v| now < v)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Create the lease if absent.
    Acquire,
    /// Read it: someone else's, or an answer that left us unsure.
    Check,
    /// Another's, at `etag`; taken over at `due` if still at it.
    Waiting { etag: String, holder: Option<Holder>, due: Duration },
    /// Ours, at `etag`.
    Held { etag: String },
    /// Ours at `etag`, renewed with the long rest TTL while nothing is to
    /// be written; a demand renews it with the normal TTL.
    Resting { etag: String },
    /// `-once` met a live holder.
    Refused(Option<Holder>),
}

/// The lease of one replica, as this process sees it.
#[derive(Debug, Clone)]
pub struct Lease {
    id: String,
    ttl: Duration,
    once: bool,
    state: State,
    /// When to act next (renew, read again, retry).
    next_at: Duration,
    /// When the last put of ours that surely landed was sent, while this
    /// tenure lasts: writes are allowed until TTL minus the margin after.
    confirmed: Option<Duration>,
    /// The TTL that put promised (the rest TTL while resting).
    confirmed_ttl: Duration,
    /// Rest when idle (not under `-once`, nor on a store without
    /// conditional writes, whose emulated lease is too weak to stretch).
    rests: bool,
    generation: u64,
    lost: bool,
    decided: bool,
    /// The other holder last reported, so a change is reported once.
    reported: Option<String>,
    /// When the replica last had something to write (`demanded`).
    last_demand: Duration,
    /// Set when a demand ends a rest: until then, a lease not yet renewed
    /// is being woken, not failing.
    waking_until: Option<Duration>,
}

impl Lease {
    /// `id` is ours (see `Holder::id`); `once` gives up on a live holder
    /// instead of waiting for it; `rests` lets an idle replica's lease rest.
    pub fn new(id: String, ttl: Duration, once: bool, rests: bool) -> Lease {
        Lease {
            id,
            ttl,
            once,
            state: State::Acquire,
            next_at: Duration::ZERO,
            confirmed: None,
            confirmed_ttl: ttl,
            rests: rests && !once,
            generation: 0,
            lost: false,
            decided: false,
            reported: None,
            last_demand: Duration::ZERO,
            waking_until: None,
        }
    }

    /// The replica has something to write (now, or soon): keep renewing
    /// with the normal TTL, and bring a resting lease back to it at once.
    pub fn demanded(&mut self, now: Duration) {
        self.last_demand = now;
        if let State::Resting { etag } = &self.state {
            self.state = State::Held { etag: etag.clone() };
            self.next_at = now;
            // Only the short promise counts from here: should the renewal
            // land with its answer lost, waiters count from its short TTL,
            // so the long one must not keep us writing.
            self.confirmed_ttl = self.ttl;
            self.waking_until = Some(now + self.margin());
        }
    }

    /// When a renewal falls due and the replica has wanted nothing for
    /// `IDLE_LAPSE_TTLS` timeouts, rest: that renewal promises the rest TTL.
    pub fn rest_if_idle(&mut self, now: Duration) {
        let idle = now.saturating_sub(self.last_demand) >= self.ttl * IDLE_LAPSE_TTLS;
        if let State::Held { etag } = &self.state
            && idle
            && self.rests
            && now >= self.next_at
        {
            self.state = State::Resting { etag: etag.clone() };
        }
    }

    /// The TTL the next put promises (written in its body).
    pub fn put_ttl(&self) -> Duration {
        match self.state {
            State::Resting { .. } => self.ttl * REST_TTL_FACTOR,
            _ => self.ttl,
        }
    }

    /// Renewals, and reads while waiting, come this often.
    pub fn every(&self) -> Duration {
        (self.ttl / 4).max(Duration::from_millis(10))
    }

    /// A failed call is tried again this soon: several times within the
    /// margin, without hammering a store that is down.
    fn retry(&self) -> Duration {
        (self.ttl / 16).clamp(Duration::from_millis(10), Duration::from_secs(5))
    }

    /// Writes stop this long before a waiter could take over, leaving
    /// room for a write already under way and two failed renewals.
    fn margin(&self) -> Duration {
        self.ttl / 4
    }

    /// What to do at `now`.
    pub fn step(&self, now: Duration) -> Step {
        if let State::Waiting { etag, due, .. } = &self.state {
            return if now >= *due {
                Step::Put(Condition::IfMatch(etag.clone()))
            } else if now >= self.next_at {
                Step::Read
            } else {
                Step::Sleep(self.next_at.min(*due) - now)
            };
        }
        if now < self.next_at {
            return Step::Sleep(self.next_at - now);
        }
        match &self.state {
            State::Acquire => Step::Put(Condition::IfAbsent),
            State::Check | State::Waiting { .. } => Step::Read,
            State::Held { etag } | State::Resting { etag } => Step::Put(Condition::IfMatch(etag.clone())),
            State::Refused(_) => Step::Sleep(self.ttl),
        }
    }

    /// A put sent at `sent` answered at `now`.
    pub fn put_answered(&mut self, sent: Duration, now: Duration, answer: PutAnswer) -> Option<Event> {
        match answer {
            PutAnswer::Done { etag } => {
                let event = match (&self.state, self.confirmed) {
                    (State::Waiting { holder, .. }, _) => Some(Event::TookOver(holder.clone())),
                    (_, None) => Some(Event::Acquired),
                    (_, Some(_)) => None,
                };
                if self.confirmed.is_none() {
                    self.generation += 1;
                }
                // The TTL this put promised (decided by the state it was sent in).
                self.confirmed_ttl = self.put_ttl();
                self.state = match &self.state {
                    State::Resting { .. } => State::Resting { etag },
                    _ => State::Held { etag },
                };
                self.confirmed = Some(sent);
                self.waking_until = None;
                (self.lost, self.decided, self.reported) = (false, true, None);
                self.next_at = sent + (self.confirmed_ttl / 4).max(Duration::from_millis(10));
                event
            }
            PutAnswer::Taken => {
                // Read who has it; a renewal that finds another's lost it.
                self.state = State::Check;
                self.next_at = now;
                None
            }
            PutAnswer::Failed => {
                // A takeover that may have landed is checked by reading.
                if matches!(self.state, State::Waiting { .. }) {
                    self.state = State::Check;
                }
                self.next_at = now + self.retry();
                self.decided = true;
                None
            }
        }
    }

    /// A read answered at `now`.
    pub fn read_answered(&mut self, now: Duration, answer: ReadAnswer) -> Option<Event> {
        match answer {
            ReadAnswer::Failed => {
                self.next_at = now + self.retry();
                self.decided = true;
                None
            }
            ReadAnswer::Absent => {
                // Released (or deleted by hand): create it. If it was ours,
                // this tenure ended: whoever deleted it may have written.
                self.confirmed = None;
                self.state = State::Acquire;
                self.next_at = now;
                None
            }
            ReadAnswer::Found { etag, holder, .. } if holder.as_ref().is_some_and(|h| h.id == self.id) => {
                // A put of ours landed although its answer was lost: renew
                // at once, to learn since when it is ours.
                self.state = State::Held { etag };
                self.next_at = now;
                None
            }
            ReadAnswer::Found { etag, holder, age, dead } => self.found_another(now, etag, holder, age, dead),
        }
    }

    fn found_another(
        &mut self,
        now: Duration,
        etag: String,
        holder: Option<Holder>,
        age: Option<Duration>,
        dead: bool,
    ) -> Option<Event> {
        let mut event = None;
        if self.confirmed.take().is_some() {
            self.lost = true;
            event = Some(Event::Lost(holder.clone()));
        }
        // The holder's own TTL is what it promised to renew within.
        let ttl = holder.as_ref().map_or(self.ttl, |h| Duration::from_millis(h.ttl_ms.max(1)));
        // A lease not modified for its TTL by our clock may be a dead
        // holder's: `-once` makes sure by watching it; any other it refuses.
        if self.once && !dead && age.is_none_or(|a| a <= ttl) {
            self.state = State::Refused(holder.clone());
            self.decided = true;
            return event.or(Some(Event::Refused(holder)));
        }
        let due = match &self.state {
            // A dead holder renews nothing: no need to watch it.
            _ if dead => now,
            State::Waiting { etag: seen, due, .. } if *seen == etag => *due,
            _ => now + ttl,
        };
        let id = holder.as_ref().map(|h| h.id.clone());
        if event.is_none() && (self.reported.is_none() || self.reported != id) && !dead {
            event = Some(Event::Waiting(holder.clone()));
        }
        self.reported = id.or(Some(String::new()));
        // `-once` decides when it holds or gives up, the rest at once
        // (but not for a dead holder: it is taken over right away).
        self.decided |= !self.once && !dead;
        self.state = State::Waiting { etag, holder, due };
        self.next_at = now + self.every();
        event
    }

    /// What the replica task may do.
    pub fn standing(&self) -> Standing {
        // Valid for the TTL the last landed put promised, less its margin:
        // no waiter, counting from when it read that put, takes over sooner.
        let valid_until = match self.state {
            State::Held { .. } | State::Resting { .. } => {
                self.confirmed.map(|c| c + self.confirmed_ttl - self.confirmed_ttl / 4)
            }
            _ => None,
        };
        let other = match &self.state {
            State::Waiting { holder, .. } | State::Refused(holder) => holder.clone(),
            _ => None,
        };
        Standing {
            valid_until,
            generation: self.generation,
            waiting: matches!(self.state, State::Waiting { .. } | State::Refused(_)),
            other,
            lost: self.lost,
            refused: matches!(self.state, State::Refused(_)),
            waking_until: self.waking_until,
            decided: self.decided,
            problem: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn holder(id: &str) -> Holder {
        Holder {
            id: id.into(),
            host: "h".into(),
            pid: 7,
            database: "/d".into(),
            acquired: "t".into(),
            ttl_ms: TTL.as_millis() as u64,
            renewal: 0,
            pid_space: String::new(),
        }
    }

    fn found(etag: &str, id: &str) -> ReadAnswer {
        ReadAnswer::Found { etag: etag.into(), holder: Some(holder(id)), age: None, dead: false }
    }

    fn done(etag: &str) -> PutAnswer {
        PutAnswer::Done { etag: etag.into() }
    }

    /// A lease we hold at `etag`, confirmed by a put sent at time 0.
    fn held(etag: &str) -> Lease {
        let mut l = Lease::new("me".into(), TTL, false, true);
        assert_eq!(l.step(s(0)), Step::Put(Condition::IfAbsent));
        assert_eq!(l.put_answered(s(0), s(0), done(etag)), Some(Event::Acquired));
        l
    }

    #[test]
    fn an_absent_lease_is_created_renewed_every_quarter_ttl_and_valid_until_the_margin() {
        let mut l = held("e1");
        let st = l.standing();
        assert!(st.decided && st.holds(s(0)) && st.holds(s(44)) && !st.holds(s(45)), "{st:?}");
        assert_eq!(st.generation, 1);
        assert_eq!(l.step(s(10)), Step::Sleep(s(5)));
        assert_eq!(l.step(s(15)), Step::Put(Condition::IfMatch("e1".into())));
        assert_eq!(l.put_answered(s(15), s(16), done("e2")), None, "a renewal is not news");
        assert!(l.standing().holds(s(59)), "valid from the renewal's sending");
        assert_eq!(l.standing().generation, 1, "a renewal is the same tenure");
        assert_eq!(l.step(s(30)), Step::Put(Condition::IfMatch("e2".into())));
    }

    #[test]
    fn an_idle_replicas_lease_rests_on_a_long_promise_and_a_write_brings_it_back() {
        let mut l = held("e1");
        l.demanded(s(0));
        // Renewed as usual while the replica wrote within the last TTL.
        l.rest_if_idle(s(15));
        assert_eq!((l.step(s(15)), l.put_ttl()), (Step::Put(Condition::IfMatch("e1".into())), TTL));
        l.put_answered(s(15), s(15), done("e2"));
        // Nothing to write for a TTL: the next renewal promises the rest TTL,
        // and the lease is valid (and renewed) on that promise.
        l.rest_if_idle(s(60));
        assert_eq!((l.step(s(60)), l.put_ttl()), (Step::Put(Condition::IfMatch("e2".into())), TTL * REST_TTL_FACTOR));
        assert_eq!(l.put_answered(s(60), s(60), done("e3")), None, "same tenure");
        let rest = TTL * REST_TTL_FACTOR;
        assert!(l.standing().holds(s(60) + rest * 3 / 4 - s(1)) && !l.standing().holds(s(60) + rest * 3 / 4));
        assert_eq!(l.step(s(61)), Step::Sleep(rest / 4 - s(1)), "renewed every quarter of the rest TTL");
        // A write: back to the short promise at once, and until that renewal
        // lands only the short one counts (its answer could be lost).
        l.demanded(s(500));
        assert_eq!((l.step(s(500)), l.put_ttl()), (Step::Put(Condition::IfMatch("e3".into())), TTL));
        let st = l.standing();
        assert!(!st.holds(s(500)) && st.waking_until == Some(s(515)), "{st:?}");
        l.put_answered(s(500), s(500), done("e4"));
        let st = l.standing();
        assert!(st.holds(s(544)) && !st.holds(s(545)) && st.waking_until.is_none() && st.generation == 1, "{st:?}");
        // Taken while resting: the renewal fails its precondition, and it is lost.
        l.rest_if_idle(s(600));
        l.put_answered(s(600), s(600), done("e5"));
        l.demanded(s(900));
        assert_eq!(l.put_answered(s(900), s(900), PutAnswer::Taken), None);
        assert_eq!(l.read_answered(s(900), found("x1", "other")), Some(Event::Lost(Some(holder("other")))));
        assert!(l.standing().lost && !l.standing().holds(s(900)));
        // `-once`, and stores without conditional writes, never rest.
        for mut never in [Lease::new("me".into(), TTL, true, true), Lease::new("me".into(), TTL, false, false)] {
            never.put_answered(s(0), s(0), done("e1"));
            never.rest_if_idle(s(100));
            assert_eq!(never.put_ttl(), TTL);
        }
    }

    #[test]
    fn failing_renewals_are_retried_and_writes_stop_before_a_waiter_could_take_over() {
        let mut l = held("e1");
        assert_eq!(l.put_answered(s(15), s(16), PutAnswer::Failed), None);
        assert_eq!(l.step(s(17)), Step::Sleep(Duration::from_millis(2750)), "retried after ttl/16");
        assert!(l.standing().holds(s(44)), "the last landed put still counts");
        assert!(!l.standing().holds(s(45)), "not renewed for ttl minus the margin: stop writing");
        // The failed renewal had landed: if-match the old etag now fails,
        // and the read shows our own body.
        assert_eq!(l.put_answered(s(20), s(20), PutAnswer::Taken), None);
        assert!(!l.standing().holds(s(20)), "unsure: no writes until known");
        assert_eq!(l.step(s(20)), Step::Read);
        assert_eq!(l.read_answered(s(20), found("e2", "me")), None);
        assert_eq!(l.step(s(20)), Step::Put(Condition::IfMatch("e2".into())), "renewed at once");
        assert_eq!(l.put_answered(s(20), s(21), done("e3")), None);
        assert!(l.standing().holds(s(64)) && !l.standing().lost);
        assert_eq!(l.standing().generation, 1, "still our tenure");
    }

    #[test]
    fn a_renewal_refused_because_another_took_over_stops_writes_at_once() {
        let mut l = held("e1");
        assert_eq!(l.put_answered(s(100), s(100), PutAnswer::Taken), None);
        assert!(!l.standing().holds(s(100)));
        assert_eq!(l.read_answered(s(100), found("x1", "other")), Some(Event::Lost(Some(holder("other")))));
        let st = l.standing();
        assert!(st.lost && !st.holds(s(100)) && st.decided, "{st:?}");
        assert_eq!(st.other, Some(holder("other")));
        // It waits like anyone else, and a later takeover is a new tenure.
        assert_eq!(l.step(s(160)), Step::Put(Condition::IfMatch("x1".into())));
        assert_eq!(l.put_answered(s(160), s(160), done("e9")), Some(Event::TookOver(Some(holder("other")))));
        assert_eq!(l.standing().generation, 2, "the replica may have changed meanwhile");
        assert!(!l.standing().lost);
    }

    #[test]
    fn a_waiter_takes_over_only_after_the_etag_stayed_the_same_for_the_ttl() {
        let mut l = Lease::new("me".into(), TTL, false, true);
        assert_eq!(l.put_answered(s(0), s(0), PutAnswer::Taken), None);
        assert!(!l.standing().decided, "not decided before knowing whose it is");
        assert_eq!(l.read_answered(s(1), found("x1", "other")), Some(Event::Waiting(Some(holder("other")))));
        assert!(l.standing().decided && !l.standing().holds(s(1)));
        assert_eq!(l.step(s(2)), Step::Sleep(s(14)), "reads again every ttl/4");
        assert_eq!(l.step(s(16)), Step::Read);
        // Renewed meanwhile: the count starts again, and is not reported again.
        assert_eq!(l.read_answered(s(16), found("x2", "other")), None);
        assert_eq!(l.read_answered(s(32), found("x2", "other")), None);
        assert_eq!(l.read_answered(s(48), found("x2", "other")), None);
        assert_eq!(l.read_answered(s(64), found("x2", "other")), None);
        assert_eq!(l.step(s(70)), Step::Sleep(s(6)), "wakes when the ttl is up");
        assert_eq!(l.step(s(76)), Step::Put(Condition::IfMatch("x2".into())));
        // Another waiter was quicker: watch the new holder from now.
        assert_eq!(l.put_answered(s(76), s(76), PutAnswer::Taken), None);
        assert_eq!(l.read_answered(s(76), found("y1", "third")), Some(Event::Waiting(Some(holder("third")))));
        assert_eq!(l.step(s(136)), Step::Put(Condition::IfMatch("y1".into())));
    }

    #[test]
    fn the_holders_own_ttl_governs_and_a_release_is_taken_at_once() {
        let mut l = Lease::new("me".into(), Duration::from_secs(2), false, true);
        let mut long = holder("other");
        long.ttl_ms = 60_000;
        let answer = ReadAnswer::Found { etag: "x".into(), holder: Some(long), age: None, dead: false };
        l.read_answered(s(0), answer);
        assert_eq!(l.step(s(59)), Step::Read, "our short ttl does not cut the holder's promise");
        assert_eq!(l.read_answered(s(59), ReadAnswer::Absent), None);
        assert_eq!(l.step(s(59)), Step::Put(Condition::IfAbsent), "a released lease is created at once");
    }

    #[test]
    fn a_dead_holder_on_this_machine_is_taken_over_at_once() {
        let mut l = Lease::new("me".into(), TTL, false, true);
        let dead = ReadAnswer::Found { etag: "x".into(), holder: Some(holder("old")), age: None, dead: true };
        assert_eq!(l.read_answered(s(5), dead), None, "nothing to warn about");
        assert!(!l.standing().decided, "the task waits for the takeover rather than report a wait");
        assert_eq!(l.step(s(5)), Step::Put(Condition::IfMatch("x".into())));
    }

    #[test]
    fn once_refuses_a_live_holder_and_waits_out_one_that_looks_stale() {
        let live = ReadAnswer::Found { etag: "x".into(), holder: Some(holder("o")), age: Some(s(3)), dead: false };
        let mut l = Lease::new("me".into(), TTL, true, true);
        assert_eq!(l.read_answered(s(0), live), Some(Event::Refused(Some(holder("o")))));
        let st = l.standing();
        assert!(st.refused && st.decided && !st.holds(s(0)), "{st:?}");
        let stale = ReadAnswer::Found { etag: "x".into(), holder: Some(holder("o")), age: Some(s(600)), dead: false };
        let mut l = Lease::new("me".into(), TTL, true, true);
        assert_eq!(l.read_answered(s(0), stale), Some(Event::Waiting(Some(holder("o")))));
        assert!(!l.standing().decided && !l.standing().refused, "waits a ttl on its own clock first");
        assert_eq!(l.step(s(60)), Step::Put(Condition::IfMatch("x".into())));
        let unknown = ReadAnswer::Found { etag: "x".into(), holder: Some(holder("o")), age: None, dead: false };
        let mut l = Lease::new("me".into(), TTL, true, true);
        assert!(matches!(l.read_answered(s(0), unknown), Some(Event::Refused(_))), "no age: assume alive");
    }

    #[test]
    fn an_unsure_first_put_becomes_a_tenure_only_once_confirmed() {
        let mut l = Lease::new("me".into(), TTL, false, true);
        assert_eq!(l.put_answered(s(0), s(1), PutAnswer::Failed), None);
        assert!(l.standing().decided, "a failing store is reported, not waited for");
        assert_eq!(l.step(s(1)), Step::Sleep(Duration::from_millis(3750)));
        assert_eq!(l.put_answered(s(5), s(5), PutAnswer::Taken), None);
        assert_eq!(l.read_answered(s(5), found("e1", "me")), None, "our first put had landed");
        assert!(!l.standing().holds(s(5)), "since when is unknown");
        assert_eq!(l.put_answered(s(5), s(6), done("e2")), Some(Event::Acquired));
        assert_eq!(l.standing().generation, 1);
        assert!(l.standing().holds(s(49)));
    }

    #[test]
    fn a_lease_body_round_trips_and_names_its_holder() {
        let h = holder("abc");
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), h);
        assert_eq!(h.to_string(), "process 7 on host h (database /d, since t)");
        assert!(crate::segment::SegmentName::parse(LEASE_KEY).is_none(), "never taken for a segment");
    }
}
