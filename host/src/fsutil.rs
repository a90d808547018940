//! Filesystem helpers shared by capture, the local state and restore.

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// Make a directory's entries (files created, renamed or removed in it)
/// durable: fsyncing a file does not persist its name.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Size and status-change time (ns) of a file, to notice it was written.
/// The change time, not the modification time: every write sets both, but
/// only the modification time can be set back (`cp -p`, `touch -d`,
/// `rsync -t` overwriting a file in place).
pub fn file_stamp(path: &Path) -> Option<(u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some((m.len(), m.ctime() * 1_000_000_000 + m.ctime_nsec()))
}

/// Whether the kernel's coarse real-time clock, which file times are
/// taken from, is past `time_ns`: then every later write to the file gets
/// a later time, and a stamp read now tells it apart. In the same tick
/// (1-10 ms, by the kernel's HZ) a second write can leave a file's time,
/// and its size (a WAL restarted at its first frame), as they were.
pub fn coarse_clock_past(time_ns: i64) -> bool {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives
    // for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    rc == 0 && ts.tv_sec * 1_000_000_000 + ts.tv_nsec > time_ns
}

/// Whether a stamp's time can tell two writes apart: a filesystem that
/// keeps whole seconds (ext4 with 128-byte inodes, ext3, HFS+), two
/// seconds (vfat) or 10 ms (exFAT) gives a write in the same second the
/// same time. Such times are whole milliseconds; nanosecond times are
/// that only one time in a million, which then merely goes untrusted.
pub fn fine_grained(stamp: (u64, i64)) -> bool {
    stamp.1 % 1_000_000 != 0
}
