//! How many databases may have their files open at once (DESIGN.md,
//! decision 29). An awake database holds about ten descriptors (three
//! SQLite connections with the database and its `-wal`, the `-shm`, its
//! state, a segment being written or uploaded); a resting one holds none.
//! Ten thousand databases opened at once need a hundred thousand, so a
//! database opens (at start-up, or waking to capture a write) only with a
//! permit, and gives it back when it rests. When databases wait for one,
//! the quiet awake ones rest at once instead of after `idle-timeout`
//! (`crowded`), so permits go round.
//!
//! The permits are counted from the process's descriptor limit, which is
//! first raised to its hard limit (as Go, and so Litestream, does).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Descriptors one awake database may hold (see the module comment), with
/// room for a segment file and a replica's plugin instance.
pub const DESCRIPTORS_PER_AWAKE: u64 = 12;
/// Descriptors kept for everything else: sockets to the stores, the
/// metrics server, the control socket, the log, the compiled plugins.
pub const DESCRIPTORS_RESERVED: u64 = 512;
/// At least this many databases may be awake, whatever the limit says.
pub const MIN_AWAKE: usize = 8;
/// A database that waited this long for a permit while no other database
/// got one is said once per process: databases that never rest
/// (`idle-timeout: 0s`, over 64 MiB, always writing) hold them all. (A
/// long queue at start-up that moves is not said.)
pub const STARVED_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// See the module documentation.
#[derive(Debug)]
pub struct Awake {
    permits: Arc<Semaphore>,
    limit: usize,
    /// Databases waiting for a permit.
    waiting: AtomicUsize,
    /// Raised when a database starts waiting: awake quiet ones rest.
    crowding: Notify,
    /// A database starved (`STARVED_AFTER`) was said.
    starved_said: std::sync::atomic::AtomicBool,
    /// Permits handed out so far: whether the queue moves.
    granted: std::sync::atomic::AtomicU64,
}

/// A database's permit to have its files open.
pub type Permit = OwnedSemaphorePermit;

impl Awake {
    /// Permits for `limit` databases awake at once.
    pub fn new(limit: usize) -> Arc<Awake> {
        let limit = limit.max(MIN_AWAKE);
        Arc::new(Awake {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            waiting: AtomicUsize::new(0),
            crowding: Notify::new(),
            starved_said: std::sync::atomic::AtomicBool::new(false),
            granted: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Permits for this process's descriptor limit, raised to its hard
    /// limit first.
    pub fn for_this_process() -> Arc<Awake> {
        let limit = raise_descriptor_limit();
        let awake = Awake::new(awake_for(limit));
        tracing::debug!("descriptor limit {limit}: up to {} databases with their files open at once", awake.limit);
        awake
    }

    /// Wait for a permit. Meanwhile the process counts as crowded, and
    /// the awake databases are told so.
    pub async fn acquire(&self) -> Permit {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            self.granted.fetch_add(1, Ordering::SeqCst);
            return permit;
        }
        let _waiting = Waiting::new(&self.waiting);
        self.crowding.notify_waiters();
        let acquire = self.permits.clone().acquire_owned();
        tokio::pin!(acquire);
        let permit = loop {
            let before = self.granted.load(Ordering::SeqCst);
            if let Ok(permit) = tokio::time::timeout(STARVED_AFTER, &mut acquire).await {
                break permit;
            }
            if self.granted.load(Ordering::SeqCst) == before && !self.starved_said.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    "{} databases wait to open their files: the descriptor limit allows {} open at once, and \
                         the open ones are not resting (written continuously, over 64 MiB, or idle-timeout: 0s); \
                         raise the limit (ulimit -n) or let quiet databases rest",
                    self.waiting.load(Ordering::SeqCst),
                    self.limit
                );
            }
        };
        self.granted.fetch_add(1, Ordering::SeqCst);
        // The semaphore is never closed.
        permit.unwrap_or_else(|_| unreachable!("the awake semaphore is never closed"))
    }

    /// Whether databases are waiting for a permit: quiet ones should rest.
    pub fn crowded(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// Resolves when a database starts waiting for a permit.
    pub fn crowding(&self) -> tokio::sync::futures::Notified<'_> {
        self.crowding.notified()
    }
}

/// Counts one waiting database for as long as it lives: a wait given up
/// (shutdown) stops counting too.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Databases awake at once under a descriptor limit of `limit`.
pub fn awake_for(limit: u64) -> usize {
    (limit.saturating_sub(DESCRIPTORS_RESERVED) / DESCRIPTORS_PER_AWAKE) as usize
}

/// Raise the soft descriptor limit to the hard one; the soft limit after.
fn raise_descriptor_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write one rlimit that lives for
    // the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_follow_the_descriptor_limit() {
        assert_eq!(awake_for(20_000), 1_624);
        assert_eq!(awake_for(1_024), 42);
        assert_eq!(Awake::new(awake_for(100)).limit, MIN_AWAKE);
    }

    #[tokio::test]
    async fn a_waiting_database_makes_the_process_crowded_until_it_has_a_permit() {
        let awake = Awake::new(MIN_AWAKE);
        let held: Vec<Permit> = futures::future::join_all((0..MIN_AWAKE).map(|_| awake.acquire())).await;
        assert!(!awake.crowded());
        let told = awake.crowding();
        tokio::pin!(told);
        told.as_mut().enable();
        let waiter = {
            let awake = awake.clone();
            tokio::spawn(async move { awake.acquire().await })
        };
        (&mut told).await;
        assert!(awake.crowded());
        drop(held);
        let _permit = waiter.await.unwrap();
        assert!(!awake.crowded());
    }
}
