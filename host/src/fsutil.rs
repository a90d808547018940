//! Filesystem helpers shared by capture, the local state and restore.

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// Make a directory's entries (files created, renamed or removed in it)
/// durable: fsyncing a file does not persist its name.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Size and modification time (ns) of a file, to notice it was written.
pub fn file_stamp(path: &Path) -> Option<(u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some((m.len(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))
}
