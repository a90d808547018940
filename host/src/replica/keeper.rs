//! The I/O around a replica's lease (`lease`, DESIGN.md decision 17): one
//! task per replica that puts, reads and deletes the lease object as the
//! state machine asks, and publishes what the replica task may do. It
//! runs beside the replica task, so a long upload never delays a renewal.

use super::error::{Class, ReplicaError};
use super::lease::{Condition, Event, Holder, LEASE_KEY, Lease, PutAnswer, ReadAnswer, Standing, Step};
use crate::clock::{boottime, now_ms, rfc3339};
use crate::plugin::{PluginStore, Precondition, PutOptions, StorageError};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Without conditional writes, how long after our put the lease is read
/// back to see whether ours survived a concurrent writer's.
const WEAK_CONFIRM_DELAY: Duration = Duration::from_secs(1);
/// How long releasing the lease may take at shutdown: a store that does
/// not answer leaves it to expire.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps one replica's lease.
pub struct Keeper {
    store: Arc<PluginStore>,
    lease: Lease,
    /// Our body; `renewal` counts our puts.
    me: Holder,
    /// The store enforces preconditions; else the weaker emulation.
    conditional: bool,
    tx: watch::Sender<Standing>,
    /// Bumped by the replica task whenever it has something to write.
    demand: watch::Receiver<u64>,
    problem: Option<(String, Class)>,
}

/// The replica task's side of `Keeper::demand`: says "I have something
/// to write", which keeps the lease on its short promise (and ends a rest).
#[derive(Clone)]
pub struct Demand(watch::Sender<u64>);

impl Demand {
    pub fn now(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// No lease (`lease-timeout: off`, decision 33): a standing that holds
/// for good, decided at once, and a demand nobody hears. The watch's
/// sender is dropped: the standing never changes, which every reader
/// (`lease_flipped`, the first pass's wait) takes as settled.
pub fn unleased() -> (watch::Receiver<Standing>, Demand) {
    let standing = Standing { valid_until: Some(Duration::MAX), generation: 1, decided: true, ..Standing::default() };
    let (_, rx) = watch::channel(standing);
    let (wants, _) = watch::channel(0);
    (rx, Demand(wants))
}

impl Keeper {
    /// A keeper for `store`'s replica, where it publishes, and how the
    /// replica task says it wants to write.
    pub fn new(store: Arc<PluginStore>, ttl: Duration, once: bool) -> (Keeper, watch::Receiver<Standing>, Demand) {
        // Random per keeper, not per process: two databases of one process
        // pointed at one replica must not both think the lease theirs.
        let id = format!("{:016x}", rand::random::<u64>());
        let me = Holder {
            id: id.clone(),
            host: hostname(),
            pid: std::process::id(),
            database: store.labels().database.clone(),
            acquired: rfc3339(now_ms()),
            ttl_ms: ttl.as_millis() as u64,
            renewal: 0,
            pid_space: pid_space(),
        };
        let (tx, rx) = watch::channel(Standing::default());
        let (wants, demand) = watch::channel(0);
        let conditional = store.capabilities().conditional_writes;
        let lease = Lease::new(id, ttl, once, conditional);
        let keeper = Keeper { store, lease, me, conditional, tx, demand, problem: None };
        (keeper, rx, Demand(wants))
    }

    /// Keep the lease until `release` flips (or its sender is gone), then
    /// delete it if we hold it, so the next process need not wait.
    pub async fn run(mut self, mut release: watch::Receiver<bool>) {
        loop {
            if self.demand.has_changed().unwrap_or(false) {
                let _ = self.demand.borrow_and_update();
                self.lease.demanded(boottime());
            }
            self.lease.rest_if_idle(boottime());
            self.publish();
            if *release.borrow() {
                break;
            }
            match self.lease.step(boottime()) {
                Step::Sleep(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        r = release.changed() => if r.is_err() { break },
                        // (`changed` marks the demand seen: note it here.)
                        r = self.demand.changed() => {
                            if r.is_err() {
                                break;
                            }
                            self.lease.demanded(boottime());
                        }
                    }
                }
                Step::Put(condition) => {
                    let sent = boottime();
                    let answer = self.put(&condition).await;
                    let event = self.lease.put_answered(sent, boottime(), answer);
                    self.log(event);
                }
                Step::Read => {
                    let answer = self.read().await;
                    let event = self.lease.read_answered(boottime(), answer);
                    self.log(event);
                }
            }
        }
        if tokio::time::timeout(RELEASE_TIMEOUT, self.release()).await.is_err() {
            tracing::warn!("{}: releasing the replica's lease timed out; it expires by itself", self.store.labels());
        }
        self.tx.send_replace(Standing { decided: true, ..Standing::default() });
    }

    fn publish(&self) {
        let standing = Standing { problem: self.problem.clone(), ..self.lease.standing() };
        self.tx.send_if_modified(|s| {
            let changed = *s != standing;
            *s = standing;
            changed
        });
    }

    fn log(&self, event: Option<Event>) {
        let labels = self.store.labels();
        let name =
            |h: &Option<Holder>| h.as_ref().map_or("a process whose lease is unreadable".into(), |h| h.to_string());
        match event {
            Some(Event::Acquired) => tracing::debug!("{labels}: holds the replica's lease ({LEASE_KEY})"),
            Some(Event::TookOver(h)) => {
                tracing::info!("{labels}: took over the replica's lease from {}, which it left unrenewed", name(&h))
            }
            // The replica task reports these, once, with what to do.
            Some(Event::Waiting(h) | Event::Lost(h) | Event::Refused(h)) => {
                tracing::debug!("{labels}: the replica's lease is held by {}", name(&h))
            }
            None => {}
        }
    }

    /// Note a failed call for the replica task's report.
    fn failed(&mut self, what: &str, e: &crate::plugin::PluginError) {
        self.problem_of(what, e, Class::of_plugin(e));
    }

    /// The same, with the class the task's error takes: an access denied
    /// cannot heal by retrying, and `-once` must not wait for it.
    fn problem_of(&mut self, what: &str, e: impl std::fmt::Display, class: Class) {
        tracing::debug!("{}: {what} the replica's lease failed: {e}", self.store.labels());
        self.problem = Some((format!("{what} {LEASE_KEY} failed: {e}"), class));
    }

    async fn put(&mut self, condition: &Condition) -> PutAnswer {
        self.me.renewal += 1;
        // What waiters will wait for: the rest TTL while resting.
        self.me.ttl_ms = self.lease.put_ttl().as_millis() as u64;
        let answer =
            if self.conditional { self.put_conditional(condition).await } else { self.put_weak(condition).await };
        if !matches!(answer, PutAnswer::Failed) {
            self.problem = None;
        }
        answer
    }

    async fn put_conditional(&mut self, condition: &Condition) -> PutAnswer {
        let precondition = match condition {
            Condition::IfAbsent => Precondition::IfAbsent,
            Condition::IfMatch(etag) => Precondition::IfMatch(etag.clone()),
        };
        self.put_raw(precondition).await
    }

    /// One put, not retried: a repeat of a put that landed would fail its
    /// precondition and read as someone else's (the state machine sorts
    /// that out by reading).
    async fn put_raw(&mut self, precondition: Precondition) -> PutAnswer {
        let body = match serde_json::to_vec(&self.me) {
            Ok(b) => b,
            Err(e) => {
                self.problem_of("encoding", e, Class::Bug);
                return PutAnswer::Failed;
            }
        };
        let options =
            PutOptions { precondition, metadata: Vec::new(), content_sha256: Some(Sha256::digest(&body).to_vec()) };
        let mut session = match self.store.session().await {
            Ok(s) => s,
            Err(e) => {
                self.failed("putting", &e);
                return PutAnswer::Failed;
            }
        };
        match session.put(LEASE_KEY, &body, &options).await {
            Ok(meta) => PutAnswer::Done { etag: meta.etag },
            Err(e) if matches!(e.storage(), Some(StorageError::PreconditionFailed(_))) => PutAnswer::Taken,
            Err(e) => {
                self.failed("putting", &e);
                PutAnswer::Failed
            }
        }
    }

    /// The weaker mode of a store without conditional writes: check the
    /// condition by reading, put unconditionally, and read back a moment
    /// later whether ours survived. Two processes starting within that
    /// moment may both put; the later one wins, and the other sees it.
    async fn put_weak(&mut self, condition: &Condition) -> PutAnswer {
        let holds = match (condition, self.read().await) {
            (_, ReadAnswer::Failed) => return PutAnswer::Failed,
            (Condition::IfAbsent, ReadAnswer::Absent) => true,
            (Condition::IfMatch(want), ReadAnswer::Found { etag, .. }) => *want == etag,
            _ => false,
        };
        if !holds {
            return PutAnswer::Taken;
        }
        let PutAnswer::Done { etag: ours } = self.put_raw(Precondition::None).await else {
            return PutAnswer::Failed;
        };
        tokio::time::sleep(WEAK_CONFIRM_DELAY.min(self.lease.every())).await;
        match self.read().await {
            ReadAnswer::Found { etag, holder, .. } if holder.as_ref().is_some_and(|h| h.id == self.me.id) => {
                PutAnswer::Done { etag: if etag.is_empty() { ours } else { etag } }
            }
            ReadAnswer::Failed => PutAnswer::Failed,
            _ => PutAnswer::Taken,
        }
    }

    /// The lease's etag and body. Not retried here: the state machine
    /// retries on its own schedule.
    async fn read(&mut self) -> ReadAnswer {
        let mut session = match self.store.session().await {
            Ok(s) => s,
            Err(e) => {
                self.failed("reading", &e);
                return ReadAnswer::Failed;
            }
        };
        let absent = |e: &crate::plugin::PluginError| matches!(e.storage(), Some(StorageError::NotFound(_)));
        let meta = match session.head(LEASE_KEY).await {
            Ok(m) => m,
            Err(e) if absent(&e) => return ReadAnswer::Absent,
            Err(e) => {
                self.failed("reading", &e);
                return ReadAnswer::Failed;
            }
        };
        let body = match session.get(LEASE_KEY, None).await {
            Ok(b) => b,
            Err(e) if absent(&e) => return ReadAnswer::Absent,
            Err(e) => {
                self.failed("reading", &e);
                return ReadAnswer::Failed;
            }
        };
        self.problem = None;
        let holder: Option<Holder> = serde_json::from_slice(&body).ok();
        let age =
            meta.modified_ms.and_then(|m| u64::try_from(now_ms()).ok()?.checked_sub(m)).map(Duration::from_millis);
        let dead = holder.as_ref().is_some_and(|h| is_dead(h, &self.me));
        ReadAnswer::Found { etag: meta.etag, holder, age, dead }
    }

    /// Delete the lease if it is surely ours (still valid: no one else can
    /// have taken it over); otherwise it expires.
    async fn release(&self) {
        if !self.lease.standing().holds(boottime()) {
            return;
        }
        let deleted = match self.store.session().await {
            Ok(mut s) => s.delete(&[LEASE_KEY.to_string()]).await.map(|failures| failures.is_empty()),
            Err(e) => Err(e),
        };
        match deleted {
            Ok(true) => tracing::debug!("{}: released the replica's lease", self.store.labels()),
            Ok(false) => {
                tracing::warn!("{}: could not release the replica's lease; it expires by itself", self.store.labels())
            }
            Err(e) => tracing::warn!(
                "{}: could not release the replica's lease ({e}); it expires by itself",
                self.store.labels()
            ),
        }
    }
}

/// Why the replica task may not write now, from the keeper's `standing`.
pub fn refusal(standing: &Standing, store: &PluginStore, ttl: Duration) -> ReplicaError {
    let labels = store.labels().to_string();
    let holder = match &standing.other {
        Some(h) => h.to_string(),
        None if standing.waiting || standing.lost => "another process (its lease object is unreadable)".into(),
        None => String::new(),
    };
    if standing.lost {
        return ReplicaError::LeaseLost { labels, holder };
    }
    if standing.waiting {
        let ttl = standing.other.as_ref().map_or(ttl, |h| Duration::from_millis(h.ttl_ms));
        let once = if standing.refused { " (`-once` does not wait for it)" } else { "" };
        return ReplicaError::LeaseHeld { labels, holder, ttl: humantime::format_duration(ttl).to_string(), once };
    }
    let (why, class) = standing
        .problem
        .clone()
        .unwrap_or_else(|| ("not yet acquired, or not renewed in time".into(), Class::Transient));
    ReplicaError::LeaseUnconfirmed { labels, why, class }
}

/// Returns when the lease is no longer as the last pass found it (`held`),
/// if the loop is `failing` (a replica waiting for its lease ships as
/// soon as it gets it); never otherwise: each renewal changes the
/// standing, and must not wake an idle loop.
pub async fn lease_flipped(lease: &mut watch::Receiver<Standing>, failing: bool, held: bool) {
    if failing {
        loop {
            if lease.borrow_and_update().holds(boottime()) != held {
                return;
            }
            if lease.changed().await.is_err() {
                break;
            }
        }
    }
    std::future::pending::<()>().await
}

/// A holder on this machine, in our pid namespace (same boot, same
/// namespace, so its pid means the same process to us), whose process is
/// gone: it renews nothing, so waiting for its lease to expire would only
/// delay the restart after a crash. A pid reused since, or a zombie not
/// yet reaped, looks alive: then we wait, which is safe.
fn is_dead(holder: &Holder, me: &Holder) -> bool {
    if holder.pid_space.is_empty() || holder.pid_space != me.pid_space || holder.host != me.host {
        return false;
    }
    if holder.pid == me.pid || holder.pid == 0 || holder.pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    (unsafe { libc::kill(holder.pid as i32, 0) }) == -1
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// This boot and pid namespace (empty where unknown, which turns the
/// dead-holder check off).
fn pid_space() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string());
    let ns = std::fs::read_link("/proc/self/ns/pid").map(|p| p.display().to_string());
    match (boot, ns) {
        (Ok(b), Ok(n)) if !b.is_empty() => format!("{b}/{n}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Holder {
        Holder {
            id: "me".into(),
            host: hostname(),
            pid: std::process::id(),
            database: "/d".into(),
            acquired: String::new(),
            ttl_ms: 1000,
            renewal: 0,
            pid_space: pid_space(),
        }
    }

    #[test]
    fn a_holder_is_dead_only_if_its_pid_is_gone_in_our_pid_space() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let gone = Holder { id: "old".into(), pid, ..me() };
        assert!(!pid_space().is_empty(), "this test runs on Linux");
        assert!(is_dead(&gone, &me()), "a reaped child is gone");
        let alive = Holder { id: "other".into(), pid: 1, ..me() };
        assert!(!is_dead(&alive, &me()), "init lives");
        let elsewhere = Holder { pid_space: "another boot".into(), ..gone.clone() };
        assert!(!is_dead(&elsewhere, &me()), "a pid of another machine or namespace says nothing");
        let same_process = Holder { id: "sibling".into(), ..me() };
        assert!(!is_dead(&same_process, &me()), "another replica task of this process is alive");
    }
}
