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
    let fetched = async {
        for (name, remote) in inputs {
            let local = spool.join(name.file_name());
            if let Some(bytes) = recent.get(name, remote.size) {
                files.push(Input::Recent(*name, bytes));
            } else if local.exists() {
                files.push(Input::Spooled(*name, local));
            } else if in_memory && remote.size <= client::MAX_FETCH_BYTES {
                files.push(Input::Fetched(*name, client::fetch(store, name, remote.size).await?));
            } else {
                let path = scratch.join(format!("in-{:016x}-{:016x}.seg", name.min_txid, name.max_txid));
                // Pushed first, so a failed download's partial file is removed too.
                files.push(Input::Scratch(*name, path.clone()));
                client::download(store, name, remote.size, &path, client::REPLICATING_DOWNLOAD_CHUNK).await?;
            }
        }
        Ok::<_, ReplicaError>(())
    }
    .await;
    let output = SegmentName { level: level + 1, min_txid: first.min_txid, max_txid: last.max_txid };
    let out_path = scratch.join(format!("out-{:016x}-{:016x}.seg", output.min_txid, output.max_txid));
    let sparse = scratch.join("merge.sparse");
    let merged = match fetched {
        Ok(()) => {
            let (o, sp) = ((!in_memory).then(|| out_path.clone()), sparse.clone());
            tokio::task::spawn_blocking(move || {
                let temps = scratch_files(&files);
                let merged = merge(files, &sp, o.as_deref());
                remove_scratch(&temps, &sp);
                merged
            })
            .await
            .map_err(|e| ReplicaError::Bug { replica: replica(), msg: format!("the compaction thread failed: {e}") })?
            .map_err(|e| ReplicaError::Compaction {
                replica: replica(),
                msg: format!("compacting {first}..{last}: {e:#}"),
                class: class_of_chain(&e),
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
    let mut sink = SparseSink::new(
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(sparse)?,
        first.page_size,
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
mod tests {
    use super::*;
    use crate::segment::format::misnamed_in;

    fn segment(min: u64, max: u64, pages: &[(u32, u8)], db_pages: u32) -> Vec<u8> {
        let header =
            Header { page_size: 512, min_txid: min, max_txid: max, timestamp_ms: max as i64, ..Header::default() };
        let mut w = SegmentWriter::new(std::io::Cursor::new(Vec::new()), header).unwrap();
        for &(pgno, fill) in pages {
            w.add_page(pgno, &[fill; 512]).unwrap();
        }
        w.finish(db_pages, 1000 + max).unwrap().0.into_inner()
    }

    /// Inputs fetched into memory and inputs on disk, merged into memory
    /// or into a file, give the same segment: newest page wins, a shrink
    /// drops pages (and a later write brings one back), the last input's
    /// size and checksum, the first's TXID.
    #[test]
    fn a_run_starts_after_what_any_higher_level_covers() {
        let seg = |level, min_txid, max_txid| {
            (SegmentName { level, min_txid, max_txid }, RemoteSegment { size: 1, timestamp_ms: 0, modified_ms: None })
        };
        let mut listing: Listing = [seg(0, 2, 2), seg(0, 3, 3), seg(0, 4, 4), seg(0, 5, 5), seg(9, 1, 5)].into();
        let keys = |l: Listing| l.into_keys().map(|n| n.min_txid).collect::<Vec<_>>();
        assert_eq!(keys(plan(&listing, 0)), vec![2, 3, 4, 5], "a snapshot covers nothing for compaction");
        listing.extend([seg(2, 2, 3)]);
        assert_eq!(keys(plan(&listing, 0)), vec![4, 5], "level 2 covers up to 3, level 1 is gone");
        listing.extend([seg(1, 4, 4)]);
        assert_eq!(keys(plan(&listing, 0)), vec![5]);
    }

    #[test]
    fn in_memory_and_file_merges_agree() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = [
            segment(1, 1, &[(1, 1), (2, 1), (3, 1)], 3),
            segment(2, 2, &[(2, 2), (4, 2), (5, 2)], 5),
            segment(3, 3, &[(1, 3)], 2),
            segment(4, 4, &[(4, 4)], 4),
        ];
        let fetched: Vec<Input> = inputs
            .iter()
            .enumerate()
            .map(|(i, b)| {
                Input::Fetched(SegmentName { level: 0, min_txid: i as u64 + 1, max_txid: i as u64 + 1 }, b.clone())
            })
            .collect();
        let (header, bytes) = merge(fetched, &dir.path().join("a.sparse"), None).unwrap();
        let bytes = bytes.unwrap();
        let on_disk: Vec<Input> = inputs
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let p = dir.path().join(format!("in-{i}.seg"));
                std::fs::write(&p, b).unwrap();
                Input::Scratch(SegmentName { level: 0, min_txid: i as u64 + 1, max_txid: i as u64 + 1 }, p)
            })
            .collect();
        let out = dir.path().join("out.seg");
        let (file_header, none) = merge(on_disk, &dir.path().join("b.sparse"), Some(&out)).unwrap();
        assert!(none.is_none());
        assert_eq!(header, file_header);
        assert_eq!(bytes, std::fs::read(&out).unwrap());
        assert_eq!((header.min_txid, header.max_txid, header.db_pages, header.post_checksum), (1, 4, 4, 1004));
        let mut pages = Vec::new();
        SegmentReader::from_bytes(bytes)
            .unwrap()
            .for_each_page(|p, d| {
                pages.push((p, d[0]));
                Ok(())
            })
            .unwrap();
        assert_eq!(pages, vec![(1, 3), (2, 2), (4, 4)]);
    }

    /// A damaged fetched input fails the merge, naming the segment.
    #[test]
    fn a_damaged_fetched_input_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = segment(2, 2, &[(1, 2)], 1);
        let at = bad.len() / 2;
        bad[at] ^= 1;
        let name = SegmentName { level: 0, min_txid: 2, max_txid: 2 };
        let inputs = vec![
            Input::Fetched(SegmentName { level: 0, min_txid: 1, max_txid: 1 }, segment(1, 1, &[(1, 1)], 1)),
            Input::Fetched(name, bad),
        ];
        let err = merge(inputs, &dir.path().join("s"), None).expect_err("merge of a damaged input must fail");
        assert!(err.to_string().contains(&name.to_string()), "{err}");
    }

    /// An input whose header is not what its name says (a level-1
    /// segment's bytes under a level-0 name, fetched or on disk) fails the
    /// merge as misnamed, naming the object.
    #[test]
    fn a_misnamed_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let name = SegmentName { level: 0, min_txid: 2, max_txid: 2 };
        let first = Input::Fetched(SegmentName { level: 0, min_txid: 1, max_txid: 1 }, segment(1, 1, &[(1, 1)], 1));
        let longer = segment(2, 4, &[(1, 4)], 1);
        let err = merge(vec![first, Input::Fetched(name, longer.clone())], &dir.path().join("s"), None)
            .expect_err("a misnamed input must fail the merge");
        assert!(misnamed_in(&err), "{err:#}");
        assert!(format!("{err:#}").contains(&name.to_string()), "{err:#}");
        let path = dir.path().join("in.seg");
        std::fs::write(&path, &longer).unwrap();
        let first = Input::Fetched(SegmentName { level: 0, min_txid: 1, max_txid: 1 }, segment(1, 1, &[(1, 1)], 1));
        let err = merge(vec![first, Input::Scratch(name, path)], &dir.path().join("s"), None)
            .expect_err("a misnamed input on disk must fail the merge");
        assert!(misnamed_in(&err) && format!("{err:#}").contains(&name.to_string()), "{err:#}");
    }

    /// A page of input `fill` that says which page it is.
    fn tagged(pgno: u32, fill: u8) -> (u32, Vec<u8>) {
        let mut page = vec![fill; 512];
        page[..4].copy_from_slice(&pgno.to_be_bytes());
        (pgno, page)
    }

    fn tagged_segment(txid: u64, pgnos: impl IntoIterator<Item = u32>, db_pages: u32) -> Vec<u8> {
        let header =
            Header { page_size: 512, min_txid: txid, max_txid: txid, timestamp_ms: txid as i64, ..Header::default() };
        let mut w = SegmentWriter::new(std::io::Cursor::new(Vec::new()), header).unwrap();
        for pgno in pgnos {
            w.add_page(pgno, &tagged(pgno, txid as u8).1).unwrap();
        }
        w.finish(db_pages, 1000 + txid).unwrap().0.into_inner()
    }

    /// The database the pages of `segments` give when applied in order,
    /// later copies winning (as a restore applies them).
    fn applied(segments: &[Vec<u8>]) -> std::collections::BTreeMap<u32, Vec<u8>> {
        let mut db = std::collections::BTreeMap::new();
        for bytes in segments {
            SegmentReader::from_bytes(bytes.clone())
                .unwrap()
                .for_each_page(|p, d| {
                    db.insert(p, d.to_vec());
                    Ok(())
                })
                .unwrap();
        }
        db
    }

    fn fetched(segments: &[Vec<u8>]) -> Vec<Input> {
        segments
            .iter()
            .enumerate()
            .map(|(i, b)| {
                Input::Fetched(SegmentName { level: 0, min_txid: i as u64 + 1, max_txid: i as u64 + 1 }, b.clone())
            })
            .collect()
    }

    /// A run without a shrink copies its mostly-live blocks as they are and
    /// recompresses the others' newest pages after them: the result (a
    /// version 2 segment, dead copies included) restores to exactly what
    /// applying the inputs one by one gives.
    #[test]
    fn copied_blocks_restore_like_the_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = [
            // Two blocks (2048 pages of 512 bytes fill one): both copied.
            tagged_segment(1, 1..=3000, 3000),
            // Pages 1 and 2 and a range of the first input's second block.
            tagged_segment(2, [1, 2].into_iter().chain(2100..=2200), 3000),
            // Mostly rewritten by the next input: recompressed.
            tagged_segment(3, [1].into_iter().chain(10..=20).chain(3001..=3010), 3010),
            tagged_segment(4, (10..=20).chain(3001..=3008), 3010),
        ];
        let (header, bytes) = merge(fetched(&inputs), &dir.path().join("s"), None).unwrap();
        let bytes = bytes.unwrap();
        assert_eq!(header.version, crate::segment::format::VERSION_BLOCKS);
        assert_eq!((header.min_txid, header.max_txid, header.db_pages, header.post_checksum), (1, 4, 3010, 1004));
        let merged = applied(std::slice::from_ref(&bytes));
        assert_eq!(merged, applied(&inputs));
        // Dead copies ride along in the copied blocks; the third input's
        // block is not among them.
        let reader = SegmentReader::from_bytes(bytes).unwrap();
        let blocks = reader.blocks().unwrap();
        assert!(header.page_count as usize > merged.len());
        assert_eq!(blocks.len(), 5, "{blocks:?}");
        assert_eq!(blocks[4].pgnos, vec![1, 3009, 3010], "the recompressed newest pages come last");
        // The same run through a file gives the same bytes.
        let out = dir.path().join("out.seg");
        let (file_header, _) = merge(fetched(&inputs), &dir.path().join("s2"), Some(&out)).unwrap();
        assert_eq!(file_header, header);
        assert_eq!(applied(&[std::fs::read(&out).unwrap()]), merged);
    }

    /// A block copied from a fetched input is decompressed first: a frame
    /// damaged before its content hash was computed (as a buggy or hostile
    /// store could hand back) fails the merge, naming the segment.
    #[test]
    fn a_copied_block_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = tagged_segment(2, 1..=40, 40);
        let frame_at = crate::segment::format::HEADER_SIZE + 8 + 4 * 40 + 20;
        bad[frame_at] ^= 0x55;
        let end = bad.len() - crate::segment::format::TRAILER_SIZE;
        let hash = xxhash_rust::xxh3::xxh3_64(&bad[crate::segment::format::HEADER_SIZE..end]);
        bad[end..end + 8].copy_from_slice(&hash.to_be_bytes());
        let inputs = [tagged_segment(1, [1], 1), bad];
        let err = merge(fetched(&inputs), &dir.path().join("s"), None).expect_err("a damaged block must not be copied");
        assert!(err.to_string().contains("0000/0000000000000002-0000000000000002.seg"), "{err}");
    }
}
