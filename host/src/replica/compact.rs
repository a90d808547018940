//! Compaction: merge a run of segments of one level into one segment of
//! the next (newest page wins, truncations respected), through a sparse
//! scratch file so memory stays flat whatever the sizes.

use super::client::{self, Listing, RemoteSegment};
use super::error::{ReplicaError, class_of_chain};
use super::recent::Recent;
use crate::capture::SpoolEntry;
use crate::plugin::PluginStore;
use crate::segment::apply::{PageSink, SparseSink, apply};
use crate::segment::reader::Block;
use crate::segment::{FormatError, Header, SegmentName, SegmentReader, SegmentWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// When each level is compacted (`levels:`).
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionConfig {
    /// Compaction intervals of levels 1..=n (zero: that level is not
    /// built).
    pub level_intervals: Vec<Duration>,
}

/// The run of `level` segments to compact into `level + 1`, with their
/// listing entries: contiguous, starting after the newest segment already
/// at any level above (snapshots aside). What a higher level covers needs
/// no compaction: after retention removed `level + 1` segments a level
/// above covers, counting from `level + 1` alone rebuilt them all from the
/// first TXID while shipping waited.
pub fn plan(listing: &Listing, level: u32) -> Listing {
    let done = listing.keys().filter(|n| n.level > level && !n.is_snapshot()).map(|n| n.max_txid).max().unwrap_or(0);
    let mut run = Listing::new();
    for (n, remote) in listing.iter().filter(|(n, _)| n.level == level && n.min_txid > done) {
        match run.last_key_value() {
            Some((last, _)) if n.min_txid != last.max_txid + 1 => break,
            _ => run.insert(*n, remote.clone()),
        };
    }
    run
}

/// A run whose segments add up to at most this many bytes is compacted in
/// memory: each input is fetched in one plugin call instead of through a
/// scratch file (a create, a write, an open and a delete per input: about
/// a third of the CPU of compacting thirty small level-0 segments), and
/// the output, about the size of its inputs together, goes up from memory.
/// A level-0 run of a busy half-minute is usually this small; larger runs
/// take the file path, memory staying flat whatever the sizes.
const IN_MEMORY_BYTES: u64 = 4 << 20;

/// One input of a merge.
enum Input {
    /// A copy still in the local spool.
    Spooled(SegmentName, PathBuf),
    /// Downloaded into the scratch directory; deleted afterwards.
    Scratch(SegmentName, PathBuf),
    Fetched(SegmentName, Vec<u8>),
    /// As this process uploaded it moments ago.
    Recent(SegmentName, Arc<[u8]>),
}

/// Build and upload the compacted segment; returns its name and listing entry.
pub async fn compact(
    store: &PluginStore,
    inputs: &Listing,
    level: u32,
    scratch: &Path,
    spool: &Path,
    recent: &Recent,
) -> Result<(SegmentName, RemoteSegment), ReplicaError> {
    let replica = || store.labels().replica.clone();
    let (first, last) = match (inputs.first_key_value(), inputs.last_key_value()) {
        (Some((f, _)), Some((l, _))) => (*f, *l),
        _ => return Err(ReplicaError::Bug { replica: replica(), msg: "nothing to compact".into() }),
    };
    let in_memory = inputs.values().map(|r| r.size).sum::<u64>() <= IN_MEMORY_BYTES;
    std::fs::create_dir_all(scratch).map_err(|source| ReplicaError::Local {
        replica: replica(),
        what: format!("cannot create {}", scratch.display()),
        source,
    })?;
    let mut files = Vec::new();
    let fetched = gather(store, inputs, scratch, spool, recent, in_memory, &mut files).await;
    let output = SegmentName { level: level + 1, min_txid: first.min_txid, max_txid: last.max_txid };
    let out_path = scratch.join(format!("out-{:016x}-{:016x}.seg", output.min_txid, output.max_txid));
    let sparse = scratch.join("merge.sparse");
    let merged = match fetched {
        Ok(()) => {
            let out = (!in_memory).then(|| out_path.clone());
            merge_on_thread(files, sparse, out).await.map_err(|e| match e {
                MergeFailed::Thread(e) => {
                    ReplicaError::Bug { replica: replica(), msg: format!("the compaction thread failed: {e}") }
                }
                MergeFailed::Merge(e) => ReplicaError::Compaction {
                    replica: replica(),
                    msg: format!("compacting {first}..{last}: {e:#}"),
                    class: class_of_chain(&e),
                },
            })
        }
        Err(e) => {
            remove_scratch(&scratch_files(&files), &sparse);
            Err(e)
        }
    };
    let (header, bytes) = merged?;
    let size = match &bytes {
        Some(b) => b.len() as u64,
        None => std::fs::metadata(&out_path).map(|m| m.len()).unwrap_or(0),
    };
    let entry = SpoolEntry { name: output, path: out_path.clone(), size, timestamp_ms: header.timestamp_ms };
    let uploaded = client::upload(store, &entry, Some(header.timestamp_ms), bytes.map(Arc::from)).await;
    let _ = std::fs::remove_file(&out_path);
    Ok((output, uploaded?))
}

/// Find or fetch every input: as uploaded moments ago, from the spool, in
/// one call into memory, or downloaded into `scratch`. Each goes into
/// `files` as soon as it exists, so a failure leaves the caller the list
/// of scratch files to remove.
async fn gather(
    store: &PluginStore,
    inputs: &Listing,
    scratch: &Path,
    spool: &Path,
    recent: &Recent,
    in_memory: bool,
    files: &mut Vec<Input>,
) -> Result<(), ReplicaError> {
    for (name, remote) in inputs {
        let local = spool.join(name.file_name());
        if let Some(bytes) = recent.get(name, remote.size) {
            files.push(Input::Recent(*name, bytes));
        } else if local.exists() {
            files.push(Input::Spooled(*name, local));
        } else if in_memory && remote.size <= client::MAX_FETCH_BYTES {
            files.push(Input::Fetched(*name, client::fetch(store, name, remote).await?));
        } else {
            let path = scratch.join(format!("in-{:016x}-{:016x}.seg", name.min_txid, name.max_txid));
            // Pushed first, so a failed download's partial file is removed too.
            files.push(Input::Scratch(*name, path.clone()));
            client::download(store, name, remote, &path, client::REPLICATING_DOWNLOAD_CHUNK).await?;
        }
    }
    Ok(())
}

/// Why `merge_on_thread` failed.
enum MergeFailed {
    /// The blocking thread panicked or was cancelled.
    Thread(tokio::task::JoinError),
    Merge(anyhow::Error),
}

/// `merge` on a blocking thread, removing the scratch files afterwards.
async fn merge_on_thread(
    files: Vec<Input>,
    sparse: PathBuf,
    out: Option<PathBuf>,
) -> Result<(Header, Option<Vec<u8>>), MergeFailed> {
    tokio::task::spawn_blocking(move || {
        let temps = scratch_files(&files);
        let merged = merge(files, &sparse, out.as_deref());
        remove_scratch(&temps, &sparse);
        merged
    })
    .await
    .map_err(MergeFailed::Thread)?
    .map_err(MergeFailed::Merge)
}

/// Merge spooled segments (contiguous, ascending) into one, in memory when
/// small, else into `out`: a replica behind by many level-0 segments sends
/// them as one (`catch_up`). Blocking.
pub fn merge_spooled(entries: &[SpoolEntry], sparse: &Path, out: &Path) -> anyhow::Result<(Header, Option<Vec<u8>>)> {
    let in_memory = entries.iter().map(|e| e.size).sum::<u64>() <= IN_MEMORY_BYTES;
    let inputs = entries.iter().map(|e| Input::Spooled(e.name, e.path.clone())).collect();
    let merged = merge(inputs, sparse, (!in_memory).then_some(out));
    remove_scratch(&[], sparse);
    merged
}

fn scratch_files(inputs: &[Input]) -> Vec<PathBuf> {
    inputs
        .iter()
        .filter_map(|input| match input {
            Input::Scratch(_, path) => Some(path.clone()),
            _ => None,
        })
        .collect()
}

fn remove_scratch(temps: &[PathBuf], sparse: &Path) {
    let _ = std::fs::remove_file(sparse);
    for path in temps {
        let _ = std::fs::remove_file(path);
    }
}

/// A run holding more page copies than this is merged page by page: the
/// copy plan keeps one map entry per distinct page (about 16 bytes), so
/// this bounds it to a few MB.
const COPY_PLAN_MAX_PAGES: u64 = 1 << 18;

/// A block is copied as it is stored when at least this share of its
/// pages (numerator, denominator) are the newest copies in the run; the
/// rest ride along dead, overwritten by a later block on restore. Copying
/// skips decompressing and recompressing the block, most of a compaction's
/// CPU; the dead pages cost stored bytes. A level-0 block of an appending
/// workload is mostly new leaf pages plus a few rewritten ones (page 1, the
/// interior pages, the last leaf), so it is copied; one of a workload that
/// rewrites the same pages is mostly dead and is recompressed, which is
/// what dedups it.
const COPY_MIN_LIVE: (usize, usize) = (3, 4);

/// What the merge does with one input block.
struct BlockPlan {
    block: Block,
    /// Which of its pages are the run's newest copies.
    live: Vec<bool>,
    copy: bool,
}

/// Decide, block by block, which input blocks to copy as they are. `None`
/// when the run must be merged page by page: a run whose database shrinks
/// (a page dropped by the shrink could ride along in a copied block and
/// come back), or one too large to plan in memory.
fn copy_plan(inputs: &[Opened]) -> anyhow::Result<Option<Vec<Vec<BlockPlan>>>> {
    let shrinks = inputs.windows(2).any(|w| w[1].reader.header().db_pages < w[0].reader.header().db_pages);
    let copies: u64 = inputs.iter().map(|i| i.reader.header().page_count as u64).sum();
    if shrinks || copies > COPY_PLAN_MAX_PAGES {
        return Ok(None);
    }
    let mut blocks = Vec::with_capacity(inputs.len());
    for input in inputs {
        blocks.push(input.reader.blocks().map_err(|e| anyhow::anyhow!("{}: {e}", input.label))?);
    }
    // The newest copy of each page: the last block (in run order) holding it.
    let mut newest: std::collections::HashMap<u32, usize> = std::collections::HashMap::with_capacity(copies as usize);
    for (ordinal, block) in blocks.iter().flatten().enumerate() {
        for &pgno in &block.pgnos {
            newest.insert(pgno, ordinal);
        }
    }
    let mut ordinal = 0;
    let plan = blocks
        .into_iter()
        .map(|input| {
            input
                .into_iter()
                .map(|block| {
                    let live: Vec<bool> = block.pgnos.iter().map(|p| newest.get(p) == Some(&ordinal)).collect();
                    let alive = live.iter().filter(|l| **l).count();
                    ordinal += 1;
                    let copy = alive * COPY_MIN_LIVE.1 >= block.pgnos.len() * COPY_MIN_LIVE.0;
                    BlockPlan { block, live, copy }
                })
                .collect()
        })
        .collect();
    Ok(Some(plan))
}

/// Merge `inputs` (oldest first) into `out`, or into memory when `out` is
/// `None`. Blocks the copy plan picks are copied as they are (a version 2
/// segment); every other newest page goes through the sparse scratch file
/// and is written after them, ascending. The output is not synced: it is
/// uploaded at once and deleted, and a crash redoes the compaction.
/// (Gathering a small union in memory instead of the sparse file saved
/// ~0.4 ms of a ~10 ms compaction but raised the steady peak RSS by 2 MB:
/// not kept.)
fn merge(inputs: Vec<Input>, sparse: &Path, out: Option<&Path>) -> anyhow::Result<(Header, Option<Vec<u8>>)> {
    let mut readers = inputs.into_iter().map(Opened::new).collect::<anyhow::Result<Vec<_>>>()?;
    let (header, last) = merged_header(&readers)?;
    let mut sink = SparseSink::new(
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(sparse)?,
        header.page_size,
    );
    let output = match out {
        Some(path) => Output::File(std::fs::File::create(path)?),
        None => Output::Memory(std::io::Cursor::new(Vec::new())),
    };
    let mut writer = SegmentWriter::new(output, header)?;
    match copy_plan(&readers)? {
        None => {
            for input in readers.iter_mut() {
                apply(&mut input.reader, &mut sink, None).map_err(|e| anyhow::anyhow!("{}: {e}", input.label))?;
            }
        }
        Some(plan) => {
            writer.allow_blocks_in_any_order();
            copy_or_gather(&readers, plan, &mut writer, &mut sink)?;
            sink.flush()?;
        }
    }
    drop(readers);
    sink.for_each(|pgno, data| writer.add_page(pgno, data))?;
    match writer.finish(last.db_pages, last.post_checksum)? {
        (Output::File(_), header) => Ok((header, None)),
        (Output::Memory(bytes), header) => Ok((header, Some(bytes.into_inner()))),
    }
}

/// The merged segment's header (its `db_pages` and checksum are set when
/// it is finished) and the last input's, after checking every input has
/// the same page size.
fn merged_header(readers: &[Opened]) -> anyhow::Result<(Header, Header)> {
    let (first, last) = match (readers.first(), readers.last()) {
        (Some(f), Some(l)) => (*f.reader.header(), *l.reader.header()),
        _ => anyhow::bail!("no inputs"),
    };
    if let Some((i, r)) =
        readers.iter().enumerate().map(|(i, o)| (i, o.reader.header())).find(|(_, h)| h.page_size != first.page_size)
    {
        anyhow::bail!(
            "input {} of the run ({}..{}) has page size {}, expected {}",
            i + 1,
            r.min_txid,
            r.max_txid,
            r.page_size,
            first.page_size
        );
    }
    let header = Header {
        page_size: first.page_size,
        min_txid: first.min_txid,
        max_txid: last.max_txid,
        timestamp_ms: last.timestamp_ms,
        pre_checksum: first.pre_checksum,
        ..Header::default()
    };
    Ok((header, last))
}

/// Follow the copy plan: blocks it picks go to `writer` as they are, the
/// live pages of the others into `sink`.
fn copy_or_gather(
    readers: &[Opened],
    plan: Vec<Vec<BlockPlan>>,
    writer: &mut SegmentWriter<Output>,
    sink: &mut SparseSink,
) -> anyhow::Result<()> {
    for (Opened { reader: r, label, own }, blocks) in readers.iter().zip(plan) {
        let named = |e: FormatError| anyhow::anyhow!("{label}: {e}");
        for BlockPlan { block, live, copy } in blocks {
            if copy {
                if !own {
                    r.for_each_page_of(&block, |_, _| Ok(())).map_err(named)?;
                }
                writer.add_raw_block(&block, &r.raw_block(&block).map_err(named)?)?;
            } else if live.iter().any(|l| *l) {
                let mut live = live.iter();
                r.for_each_page_of(&block, |pgno, data| match live.next() {
                    Some(true) => sink.write_page(pgno, data),
                    _ => Ok(()),
                })
                .map_err(named)?;
            }
        }
    }
    Ok(())
}

/// An input opened for the merge, with the name its errors give it and
/// whether its bytes are this process's own: copied blocks of any other
/// input are decompressed once to check them, as merging them page by page
/// would.
struct Opened {
    reader: SegmentReader,
    label: String,
    own: bool,
}

impl Opened {
    /// Open and verify `input`, and check it is the segment it is named
    /// (a merged segment takes its inputs' names as its range).
    fn new(input: Input) -> anyhow::Result<Opened> {
        let (reader, name, label, own) = match input {
            Input::Spooled(name, p) | Input::Scratch(name, p) => {
                (SegmentReader::open(&p), name, format!("{name} at {}", p.display()), false)
            }
            Input::Fetched(name, bytes) => {
                (SegmentReader::from_bytes(bytes), name, format!("{name} as fetched"), false)
            }
            Input::Recent(name, bytes) => (SegmentReader::from_bytes(bytes), name, format!("{name} as uploaded"), true),
        };
        let reader = reader.and_then(|r| name.check_header(r.header()).map(|()| r));
        // Kept as the cause, so the caller can tell a misnamed input.
        let reader = reader.map_err(|e| anyhow::Error::from(e).context(label.clone()))?;
        Ok(Opened { reader, label, own })
    }
}

/// Where the merged segment is written: a file, or memory for a small run.
enum Output {
    File(std::fs::File),
    Memory(std::io::Cursor<Vec<u8>>),
}

impl std::io::Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Output::File(f) => f.write(buf),
            Output::Memory(m) => m.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::File(f) => f.flush(),
            Output::Memory(m) => m.flush(),
        }
    }
}

impl std::io::Seek for Output {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        match self {
            Output::File(f) => f.seek(pos),
            Output::Memory(m) => m.seek(pos),
        }
    }
}

#[cfg(test)]
mod tests;
