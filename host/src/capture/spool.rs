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
