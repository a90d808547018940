//! Compaction: merge a run of segments of one level into one segment of
//! the next (newest page wins, truncations respected), through a sparse
//! scratch file so memory stays flat whatever the sizes.

use super::client::{self, Listing, RemoteSegment, ReplicaError};
use crate::capture::SpoolEntry;
use crate::plugin::PluginStore;
use crate::segment::apply::{apply, SparseSink};
use crate::segment::{Header, SegmentName, SegmentReader, SegmentWriter};
use std::path::{Path, PathBuf};

/// The run of `level` segments to compact into `level + 1`, with their
/// listing entries: contiguous, starting after the newest segment already
/// at `level + 1`.
pub fn plan(listing: &Listing, level: u32) -> Listing {
    let done = listing.keys().filter(|n| n.level == level + 1).map(|n| n.max_txid).max().unwrap_or(0);
    let mut run = Listing::new();
    for (n, remote) in listing.iter().filter(|(n, _)| n.level == level && n.min_txid > done) {
        match run.last_key_value() {
            Some((last, _)) if n.min_txid != last.max_txid + 1 => break,
            _ => run.insert(*n, remote.clone()),
        };
    }
    run
}

/// Build and upload the compacted segment; returns its name and listing entry.
pub async fn compact(store: &PluginStore, inputs: &Listing, level: u32, scratch: &Path, spool: &Path) -> Result<(SegmentName, RemoteSegment), ReplicaError> {
    let other = |msg: String| ReplicaError::Other { replica: store.labels().replica.clone(), msg };
    let (first, last) = match (inputs.first_key_value(), inputs.last_key_value()) {
        (Some((f, _)), Some((l, _))) => (*f, *l),
        _ => return Err(other("nothing to compact".into())),
    };
    std::fs::create_dir_all(scratch).map_err(|e| other(format!("cannot create {}: {e}", scratch.display())))?;
    let mut files = Vec::new();
    for (name, remote) in inputs {
        let local = spool.join(format!("{:04x}-{:016x}-{:016x}.seg", name.level, name.min_txid, name.max_txid));
        if local.exists() {
            files.push((local, false));
        } else {
            let path = scratch.join(format!("in-{:016x}-{:016x}.seg", name.min_txid, name.max_txid));
            client::download(store, name, remote.size, &path).await?;
            files.push((path, true));
        }
    }
    let output = SegmentName { level: level + 1, min_txid: first.min_txid, max_txid: last.max_txid };
    let out_path = scratch.join(format!("out-{:016x}-{:016x}.seg", output.min_txid, output.max_txid));
    let sparse = scratch.join("merge.sparse");
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    let (o, sp) = (out_path.clone(), sparse.clone());
    let merged = tokio::task::spawn_blocking(move || merge(&paths, &sp, &o)).await.map_err(|e| other(e.to_string()))?;
    let _ = std::fs::remove_file(&sparse);
    for (path, temp) in &files {
        if *temp {
            let _ = std::fs::remove_file(path);
        }
    }
    let header = merged.map_err(|e| other(format!("compacting {first}..{last}: {e}")))?;
    let size = std::fs::metadata(&out_path).map(|m| m.len()).unwrap_or(0);
    let entry = SpoolEntry { name: output, path: out_path.clone(), size, timestamp_ms: header.timestamp_ms };
    let uploaded = client::upload(store, &entry, Some(header.timestamp_ms), None).await;
    let _ = std::fs::remove_file(&out_path);
    Ok((output, uploaded?))
}

fn merge(inputs: &[PathBuf], sparse: &Path, out: &Path) -> anyhow::Result<Header> {
    let mut readers = inputs.iter().map(|p| SegmentReader::open(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))).collect::<anyhow::Result<Vec<_>>>()?;
    let (first, last) = match (readers.first(), readers.last()) {
        (Some(f), Some(l)) => (*f.header(), *l.header()),
        _ => anyhow::bail!("no inputs"),
    };
    let mut sink = SparseSink::new(std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(sparse)?, first.page_size);
    for (i, r) in readers.iter_mut().enumerate() {
        if r.header().page_size != first.page_size {
            anyhow::bail!("input {} has page size {}, expected {}", inputs[i].display(), r.header().page_size, first.page_size);
        }
        apply(r, &mut sink, None)?;
    }
    let header = Header { page_size: first.page_size, min_txid: first.min_txid, max_txid: last.max_txid, timestamp_ms: last.timestamp_ms, pre_checksum: first.pre_checksum, ..Header::default() };
    let mut writer = SegmentWriter::new(std::fs::File::create(out)?, header)?;
    sink.for_each(|pgno, data| writer.add_page(pgno, data))?;
    let (file, header) = writer.finish(last.db_pages, last.post_checksum)?;
    file.sync_all()?;
    Ok(header)
}
