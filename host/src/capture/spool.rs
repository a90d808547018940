//! The spool's file names: where capture leaves segments for the replicas.

use super::SpoolEntry;
use crate::segment::SegmentName;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where segment `name` is spooled in the spool directory `dir`.
pub fn spool_path(dir: &Path, name: &SegmentName) -> PathBuf {
    dir.join(name.file_name())
}

/// Segments in a spool directory, oldest first.
pub fn list_spool(dir: &Path) -> io::Result<Vec<SpoolEntry>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(SegmentName::parse_file_name) else { continue };
        let meta = entry.metadata()?;
        out.push(SpoolEntry { name, path: entry.path(), size: meta.len(), timestamp_ms: 0 });
    }
    out.sort_by_key(|e| (e.name.max_txid, e.name.level));
    Ok(out)
}

/// Temp files of a process that died mid-write (named `*.PID.tmp`).
pub(super) fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_name().to_str().is_some_and(|n| n.ends_with(".tmp")) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Share of the spool's filesystem that sluice leaves free for everyone
/// else. The spool usually shares a disk with the database (the meta
/// directory sits beside it): a snapshot that took the last free bytes
/// would make the application's own commits fail with "database or disk
/// is full". Capture stops short of this instead, and the application
/// keeps its room.
pub const DISK_RESERVE_PERCENT: u64 = 10;
/// ... but never more than this: room for the application to keep
/// committing and checkpointing for a while, and small enough that a
/// nearly full large disk still replicates (a 1 GiB cap stopped every
/// capture on a shared 270 GB disk with 990 MB free).
pub const DISK_RESERVE_MAX_BYTES: u64 = 64 << 20;
/// Free space is read (one `fstatvfs`) before a segment's first write and
/// again after every this many bytes: at most this much is written past a
/// reading, so capture asks for this much beyond the reserve.
const FREE_SPACE_CHECK_BYTES: u64 = 1 << 20;

/// A segment's temp file in the meta directory, deleted when dropped
/// unless `kept`: whatever fails while it is written (a full disk, a WAL
/// moved under the capture) leaves nothing behind to take up the space.
pub(super) struct SpoolTemp {
    path: PathBuf,
    kept: bool,
}

impl SpoolTemp {
    pub(super) fn new(path: PathBuf) -> SpoolTemp {
        SpoolTemp { path, kept: false }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The temp file was renamed into the spool: nothing to delete.
    pub(super) fn kept(mut self) {
        self.kept = true;
    }
}

impl Drop for SpoolTemp {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A spool file that refuses to grow into the filesystem's reserve (see
/// `DISK_RESERVE_PERCENT`): such a write fails with
/// `io::ErrorKind::StorageFull` before the disk is full.
pub(super) struct Budgeted {
    file: fs::File,
    since_check: u64,
}

impl Budgeted {
    pub(super) fn new(file: fs::File) -> Budgeted {
        Budgeted { file, since_check: 0 }
    }

    pub(super) fn into_file(self) -> fs::File {
        self.file
    }

    fn check(&self, len: u64) -> io::Result<()> {
        let st = rustix::fs::fstatvfs(&self.file)?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        let size = st.f_blocks.saturating_mul(st.f_frsize);
        match room_for(free, size, len) {
            true => Ok(()),
            false => Err(io::Error::new(io::ErrorKind::StorageFull, reserve_message(free, size))),
        }
    }
}

/// Whether `len` more bytes (and up to a check interval past them) fit in
/// `free` bytes of a `size`-byte filesystem without touching the reserve.
fn room_for(free: u64, size: u64, len: u64) -> bool {
    let reserve = (size / 100 * DISK_RESERVE_PERCENT).min(DISK_RESERVE_MAX_BYTES);
    free >= reserve.saturating_add(len.max(FREE_SPACE_CHECK_BYTES))
}

fn reserve_message(free: u64, size: u64) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    let reserve = (size / 100 * DISK_RESERVE_PERCENT).min(DISK_RESERVE_MAX_BYTES);
    format!(
        "{:.1} MB free of {:.1} MB, and sluice leaves {:.1} MB ({DISK_RESERVE_PERCENT}%, at most {} MB) to the application",
        mb(free),
        mb(size),
        mb(reserve),
        DISK_RESERVE_MAX_BYTES >> 20
    )
}

impl io::Write for Budgeted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = buf.len() as u64;
        if self.since_check == 0 || self.since_check + len > FREE_SPACE_CHECK_BYTES {
            self.check(len)?;
            self.since_check = 0;
        }
        let n = self.file.write(buf)?;
        self.since_check += n.max(1) as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl io::Seek for Budgeted {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_a_tenth_of_the_disk_up_to_64_mib() {
        const MB: u64 = 1_000_000;
        // 60 MB disk: 6 MB reserve, plus a check interval of headroom.
        assert!(room_for(8 * MB, 60 * MB, 4096));
        assert!(!room_for(6 * MB, 60 * MB, 4096));
        assert!(!room_for(8 * MB, 60 * MB, 3 * MB), "a large write needs its own size beyond the reserve");
        // 1 TB disk: the reserve stops at 64 MiB.
        assert!(room_for(66 << 20, 1_000_000 * MB, 4096));
        assert!(!room_for(64 << 20, 1_000_000 * MB, 4096));
    }

    #[test]
    fn a_dropped_temp_is_deleted_and_a_kept_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tmp"), dir.path().join("b.tmp"));
        fs::write(&a, b"x").unwrap();
        fs::write(&b, b"x").unwrap();
        drop(SpoolTemp::new(a.clone()));
        SpoolTemp::new(b.clone()).kept();
        assert!(!a.exists() && b.exists());
    }

    #[test]
    fn writes_into_the_reserve_fail_as_storage_full() {
        // Any real filesystem has room for a KiB; none has room for an
        // exabyte beyond its reserve.
        let dir = tempfile::tempdir().unwrap();
        let mut out = Budgeted::new(fs::File::create(dir.path().join("s")).unwrap());
        io::Write::write_all(&mut out, &[0u8; 1024]).unwrap();
        let err = out.check(u64::MAX / 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert!(err.to_string().contains("to the application"), "{err}");
    }
}
