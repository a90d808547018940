//! File notifications for prompt pickup of writes: one inotify watcher for
//! the whole process (not a thread per database, #1469), watching each
//! database's directory and waking that database's loop when its file or
//! WAL changes. Polling at `monitor-interval` stays as the fallback.
//!
//! Notifications only matter to an idle database: a busy one checks its
//! WAL again at the end of the sync interval anyway, and every commit's
//! event would only wake a thread to wait. So a database arms its watch
//! when it goes quiet and disarms it while writes keep coming; a
//! directory is watched while any of its databases is armed.

use futures::FutureExt;
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// A watched directory: its databases' wake-ups and how many of them are
/// armed.
#[derive(Default)]
struct Dir {
    /// Wake-ups by the file name whose changes concern them: each
    /// database's file and its WAL (see `route_names`). A map, not a
    /// list: with 10,000 databases in one directory, every event compared
    /// its path with each of them.
    routes: HashMap<OsString, Vec<Arc<Notify>>>,
    /// Databases subscribed here.
    dbs: usize,
    armed: usize,
    /// The inotify watch on it is in place (armed and accepted).
    watching: bool,
}

type Dirs = Arc<Mutex<HashMap<PathBuf, Dir>>>;

/// The process's watcher.
pub struct FileWatch {
    watcher: Mutex<notify::RecommendedWatcher>,
    dirs: Dirs,
    /// The watch limit was reported: once per process, not once per
    /// directory (10,000 tenants' directories would flood the log).
    limit_said: AtomicBool,
}

impl FileWatch {
    /// `None` where notifications are unavailable (polling still works).
    pub fn new() -> Option<Arc<FileWatch>> {
        let dirs: Dirs = Arc::default();
        let routes = dirs.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(routes) = routes.lock() else { return };
            // Events were lost (the kernel's queue overflowed): any database
            // may have changed, and each looks once more.
            let lost = event.as_ref().map_or(true, notify::Event::need_rescan);
            if lost {
                routes.values().flat_map(|d| d.routes.values().flatten()).for_each(|wake| wake.notify_one());
                return;
            }
            let Ok(event) = event else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            for path in &event.paths {
                let Some(dir) = path.parent().and_then(|d| routes.get(d)) else { continue };
                let wakes = path.file_name().and_then(|name| dir.routes.get(name));
                wakes.into_iter().flatten().for_each(|wake| wake.notify_one());
            }
        });
        match watcher {
            Ok(w) => Some(Arc::new(FileWatch { watcher: Mutex::new(w), dirs, limit_said: AtomicBool::new(false) })),
            Err(e) if is_limit(&e) => {
                tracing::warn!(
                    "file notifications unavailable: {e}. The inotify instance limit ({}) or the \
                     descriptor limit is reached; every database is polled at monitor-interval instead, which costs CPU \
                     with many databases. Raise it: sysctl fs.inotify.max_user_instances=1024",
                    limit_text("max_user_instances")
                );
                None
            }
            Err(e) => {
                tracing::info!("file notifications unavailable ({e}); polling at monitor-interval");
                None
            }
        }
    }

    /// Register `db`; its `Subscription` starts disarmed.
    pub fn subscribe(self: &Arc<Self>, db: &Path) -> Subscription {
        let wake = Arc::new(Notify::new());
        let dir = db.parent().map(Path::to_path_buf);
        if let (Some(dir), Ok(mut dirs)) = (&dir, self.dirs.lock()) {
            let entry = dirs.entry(dir.clone()).or_default();
            entry.dbs += 1;
            for name in route_names(db) {
                entry.routes.entry(name).or_default().push(wake.clone());
            }
        }
        let db = db.to_path_buf();
        Subscription { watch: self.clone(), dir, db, wake, armed: false }
    }

    /// Count one more (`up`) or one fewer armed database in `dir`, and
    /// start or stop watching it on the first or last.
    ///
    /// Lock order: the watcher lock serialises arming; the routing lock is
    /// held only to update the count, never while calling into the
    /// watcher, whose event thread takes the routing lock to deliver an
    /// event while `watch`/`unwatch` wait for that thread.
    fn set_armed(&self, dir: &Path, up: bool) {
        let Ok(mut watcher) = self.watcher.lock() else { return };
        let counts = self.dirs.lock().ok().and_then(|mut dirs| {
            let entry = dirs.get_mut(dir)?;
            let before = entry.armed;
            entry.armed = if up { before + 1 } else { before.saturating_sub(1) };
            Some((before, entry.armed))
        });
        let Some(counts) = counts else { return };
        let result = match counts {
            (0, 1) => watcher.watch(dir, RecursiveMode::NonRecursive).map(|()| Some(true)),
            (1, 0) => watcher.unwatch(dir).map(|()| Some(false)),
            _ => Ok(None),
        };
        let watching = match result {
            Ok(changed) => changed,
            Err(e) => {
                self.watch_failed(dir, &e);
                Some(false)
            }
        };
        if let (Some(on), Ok(mut dirs)) = (watching, self.dirs.lock())
            && let Some(entry) = dirs.get_mut(dir)
        {
            entry.watching = on;
        }
    }

    /// Say why `dir` is polled: the watch limit once, clearly, with what to
    /// raise (issue 17); anything else (a directory removed meanwhile) is
    /// routine.
    fn watch_failed(&self, dir: &Path, e: &notify::Error) {
        if !is_limit(e) {
            tracing::debug!("cannot change the watch on {}: {e}; polling covers it", dir.display());
        } else if !self.limit_said.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "cannot watch {} for changes: the inotify watch limit is reached ({}). Its databases, \
                 and those of any other directory refused, are polled at monitor-interval instead, \
                 which costs CPU with many databases. Raise it: sysctl fs.inotify.max_user_watches=524288 \
                 (this is said once)",
                dir.display(),
                limit_text("max_user_watches")
            );
        }
    }

    /// Whether `dir` is watched now.
    fn watching(&self, dir: &Path) -> bool {
        self.dirs.lock().is_ok_and(|dirs| dirs.get(dir).is_some_and(|d| d.watching))
    }
}

/// Whether a watcher error is the kernel's inotify limit: watches (ENOSPC,
/// which `notify` names `MaxFilesWatch`) or instances (EMFILE).
fn is_limit(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => true,
        notify::ErrorKind::Io(io) => matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EMFILE)),
        _ => false,
    }
}

/// `fs.inotify.<name> = <value>` as the kernel has it now, for the message.
fn limit_text(name: &str) -> String {
    let value = std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"));
    format!("fs.inotify.{name} = {}", value.as_deref().map_or("unknown", str::trim))
}

/// The names of the files whose changes can be a commit to `db`: its file
/// and its WAL, nothing else. Not the `-shm` (every reader touches it),
/// nor any other file that shares the name's start: a log written beside
/// the database (`app.db.log`) once woke a look per line, and the look's
/// own trace lines fed it until the disk was full.
fn route_names(db: &Path) -> Vec<OsString> {
    [db.to_path_buf(), crate::db::wal_path(db)].iter().filter_map(|p| p.file_name().map(OsString::from)).collect()
}

/// One database's interest in its directory's events.
pub struct Subscription {
    watch: Arc<FileWatch>,
    dir: Option<PathBuf>,
    db: PathBuf,
    wake: Arc<Notify>,
    armed: bool,
}

impl Subscription {
    /// Start (`true`) or stop being woken by changes. Returns whether the
    /// watch was just armed: writes between the caller's last look and now
    /// raised no event, so the caller must look once more before waiting.
    pub fn arm(&mut self, on: bool) -> bool {
        if self.armed == on {
            return false;
        }
        self.armed = on;
        if let Some(dir) = &self.dir {
            self.watch.set_armed(dir, on);
        }
        if on {
            // Forget a wake-up left from before (events of the writes the
            // caller has synced, or of its own checkpoint): every wake-up
            // makes the caller sync, and it looks once more after arming.
            let _ = self.wake.notified().now_or_never();
        }
        on
    }

    /// Armed, with the watch on the directory in place: the next write
    /// wakes the database's loop.
    pub fn watching(&self) -> bool {
        self.armed && self.dir.as_ref().is_some_and(|d| self.watch.watching(d))
    }

    /// Resolves on the next change while armed; never while disarmed.
    pub async fn changed(&self) {
        if self.armed { self.wake.notified().await } else { std::future::pending().await }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.arm(false);
        // A database removed while running leaves no route behind.
        let Some(dir) = &self.dir else { return };
        let Ok(mut dirs) = self.watch.dirs.lock() else { return };
        if let Some(d) = dirs.get_mut(dir) {
            for name in route_names(&self.db) {
                if let Some(wakes) = d.routes.get_mut(&name) {
                    wakes.retain(|wake| !Arc::ptr_eq(wake, &self.wake));
                    if wakes.is_empty() {
                        d.routes.remove(&name);
                    }
                }
            }
            d.dbs = d.dbs.saturating_sub(1);
            if d.dbs == 0 && d.armed == 0 {
                dirs.remove(dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn woke(sub: &Subscription) -> bool {
        tokio::time::timeout(Duration::from_millis(500), sub.changed()).await.is_ok()
    }

    #[test]
    fn the_kernels_limits_are_told_from_other_failures() {
        let io = |errno| notify::Error::io(std::io::Error::from_raw_os_error(errno));
        assert!(is_limit(&notify::Error::new(notify::ErrorKind::MaxFilesWatch)));
        assert!(is_limit(&io(libc::ENOSPC)), "inotify_add_watch: watches exhausted");
        assert!(is_limit(&io(libc::EMFILE)), "inotify_init: instances exhausted");
        assert!(!is_limit(&io(libc::ENOENT)), "a directory removed meanwhile is routine");
        assert!(!is_limit(&notify::Error::path_not_found()));
        assert!(limit_text("max_user_watches").starts_with("fs.inotify.max_user_watches = "));
    }

    #[tokio::test]
    async fn wakes_only_while_armed() {
        let Some(watch) = FileWatch::new() else { return };
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let mut sub = watch.subscribe(&db);
        std::fs::write(&db, b"x").unwrap();
        assert!(!woke(&sub).await, "a disarmed subscription must not wake");
        assert!(!sub.watching(), "disarmed: nothing watches for it");
        assert!(sub.arm(true), "arming reports that it armed");
        assert!(sub.watching(), "armed: the directory's watch is in place");
        assert!(!sub.arm(true), "arming twice is a no-op");
        std::fs::write(db.with_file_name("app.db-wal"), b"y").unwrap();
        assert!(woke(&sub).await, "a write to the WAL wakes an armed subscription");
        // One write raises several events; let the rest land and drain them.
        tokio::time::sleep(Duration::from_millis(100)).await;
        woke(&sub).await;
        std::fs::write(dir.path().join("other.db"), b"z").unwrap();
        assert!(!woke(&sub).await, "another database's file does not wake it");
        for beside in ["app.db.log", "app.db-shm", "app.db-journal", "app.db-wal.log", "app.db2"] {
            std::fs::write(dir.path().join(beside), b"log line").unwrap();
            assert!(!woke(&sub).await, "{beside} beside the database does not wake it");
        }
        sub.arm(false);
        assert!(!sub.watching());
        std::fs::write(&db, b"xx").unwrap();
        assert!(!woke(&sub).await, "disarmed again: no wake-up");
        // A wake-up left over from before re-arming is dropped.
        sub.arm(true);
        std::fs::write(&db, b"xxx").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        sub.arm(false);
        sub.arm(true);
        assert!(!woke(&sub).await, "a wake-up from before arming is forgotten");
    }

    /// Arming waits for the watcher's event thread, which delivers events
    /// through the routing table: arming while events pour in must not
    /// deadlock (it did when the routing lock was held across `watch`).
    #[test]
    fn arming_while_events_arrive_does_not_deadlock() {
        let Some(watch) = FileWatch::new() else { return };
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    std::fs::write(db.with_file_name("app.db-wal"), b"frames").unwrap();
                }
            })
        };
        // A thread of its own: a deadlocked one is abandoned, not awaited.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Every step starts or stops the directory's watch.
            let mut sub = watch.subscribe(&db);
            for i in 0..2000 {
                sub.arm(i % 2 == 0);
            }
            let _ = done.send(());
        });
        let finished = finished.recv_timeout(Duration::from_secs(30));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        writer.join().unwrap();
        assert!(finished.is_ok(), "arming and disarming deadlocked against event delivery");
    }
}
