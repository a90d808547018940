//! A Litestream 0.5 replica: its LTX files' names, the restore plan (the
//! same planner as sluice's own segments: newest snapshot at or before
//! the target, then the fewest contiguous files), and applying the plan.

use super::ltx::{LtxError, LtxHeader, read_pages};
use crate::plugin::{ObjectMeta, PluginStore};
use crate::replica::Target;
use crate::replica::client::{self, Listing, RemoteSegment};
use crate::replica::plan::restore_plan;
use crate::restore::{RestoreOptions, create_scratch, sidecar};
use crate::segment::SegmentName;
use crate::segment::format::SNAPSHOT_LEVEL;
use anyhow::{Context, bail};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// One LTX file of the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LtxFile {
    pub key: String,
    /// The level Litestream stored it at (9: snapshots).
    pub level: u32,
    pub min_txid: u64,
    pub max_txid: u64,
    pub size: u64,
    pub modified_ms: Option<u64>,
}

/// Parse a key relative to the replica's root: `ltx/<level>/<min>-<max>.ltx`
/// (file, sftp, webdav, abs, nats; level in decimal) or
/// `<level as 4 hex digits>/<min>-<max>.ltx` (S3, GCS, OSS).
pub fn parse_key(key: &str) -> Option<(u32, u64, u64)> {
    let (dir, file) = key.rsplit_once('/')?;
    let (min, max) = file.strip_suffix(".ltx")?.split_once('-')?;
    let level = match dir.strip_prefix("ltx/") {
        Some(d) => d.parse::<u32>().ok().filter(|_| d.bytes().all(|b| b.is_ascii_digit()))?,
        None if dir.len() == 4 => u32::from_str_radix(dir, 16).ok()?,
        None => return None,
    };
    if level > SNAPSHOT_LEVEL || min.len() != 16 || max.len() != 16 {
        return None;
    }
    let (min, max) = (u64::from_str_radix(min, 16).ok()?, u64::from_str_radix(max, 16).ok()?);
    (min >= 1 && min <= max).then_some((level, min, max))
}

/// The LTX files among a replica's objects (none: not a Litestream 0.5
/// replica).
pub fn files(objects: &[ObjectMeta]) -> Vec<LtxFile> {
    let mut out: Vec<LtxFile> = objects
        .iter()
        .filter_map(|o| {
            let (level, min_txid, max_txid) = parse_key(&o.key)?;
            Some(LtxFile { key: o.key.clone(), level, min_txid, max_txid, size: o.size, modified_ms: o.modified_ms })
        })
        .collect();
    out.sort_by_key(|f| (f.level, f.min_txid, f.max_txid));
    out
}

/// The files as the planner sees them: a file whose range starts at TXID 1
/// holds every page (an LTX rule), so it is a snapshot at any level; other
/// files are chain links whatever their level. Same range, same change:
/// one file per range is enough, the highest level's.
pub fn planning_view(files: &[LtxFile]) -> (Listing, BTreeMap<SegmentName, LtxFile>) {
    let (mut listing, mut keys) = (Listing::new(), BTreeMap::new());
    for f in files.iter().rev() {
        let level = if f.min_txid == 1 { SNAPSHOT_LEVEL } else { f.level.min(SNAPSHOT_LEVEL - 1) };
        let name = SegmentName { level, min_txid: f.min_txid, max_txid: f.max_txid };
        if keys.contains_key(&name) {
            continue;
        }
        let timestamp_ms = f.modified_ms.map_or(0, |m| m as i64);
        listing.insert(name, RemoteSegment { size: f.size, timestamp_ms, modified_ms: f.modified_ms, parts: 0 });
        keys.insert(name, f.clone());
    }
    (listing, keys)
}

/// The files as a listing of segment names at their own levels (for
/// `sluice ltx`).
pub fn as_listing(files: &[LtxFile]) -> Listing {
    files
        .iter()
        .map(|f| {
            let name = SegmentName { level: f.level, min_txid: f.min_txid, max_txid: f.max_txid };
            let timestamp_ms = f.modified_ms.map_or(0, |m| m as i64);
            (name, RemoteSegment { size: f.size, timestamp_ms, modified_ms: f.modified_ms, parts: 0 })
        })
        .collect()
}

/// The files, in order, that restore `target`.
pub fn plan(files: &[LtxFile], target: Target) -> anyhow::Result<Vec<LtxFile>> {
    let (listing, keys) = planning_view(files);
    let plan = restore_plan(&listing, target)?;
    plan.iter().map(|n| keys.get(n).cloned().context("internal: planned file not listed")).collect()
}

/// Download `plan` (`opts.parallelism` at once) and apply it in order to
/// the empty file `tmp`; returns the bytes downloaded.
pub async fn apply(store: &PluginStore, plan: &[LtxFile], tmp: &Path, opts: &RestoreOptions) -> anyhow::Result<u64> {
    let out = std::sync::Arc::new(create_scratch(tmp)?);
    let scratch = |f: &LtxFile| sidecar(tmp, &format!(".{:016x}-{:016x}.ltx", f.min_txid, f.max_txid));
    let mut downloads = futures::stream::iter(plan.iter().cloned())
        .map(|f| {
            let path = scratch(&f);
            async move {
                let got = client::download_key(store, &f.key, f.size, &path, client::DOWNLOAD_CHUNK).await;
                (f, path, got)
            }
        })
        .buffered(opts.parallelism.max(1));
    let (mut page_size, mut bytes, mut failure) = (None, 0u64, None);
    while let Some((f, path, got)) = downloads.next().await {
        let step = async {
            let len = got.with_context(|| format!("cannot download {}", f.key))?;
            bytes += len;
            let (file, out, expected) = (f.clone(), out.clone(), page_size);
            let applied = tokio::task::spawn_blocking(move || apply_file(&file, &path, len, &out, expected)).await?;
            let header =
                applied.with_context(|| format!("Litestream file {} of {} is unusable", f.key, store.url()))?;
            page_size = Some(header.page_size);
            anyhow::Ok(())
        };
        if let Err(e) = step.await {
            failure = Some(e);
            break;
        }
    }
    drop(downloads);
    for f in plan {
        let _ = std::fs::remove_file(scratch(f));
    }
    if let Some(e) = failure {
        return Err(e);
    }
    out.sync_all().with_context(|| format!("cannot sync {}", tmp.display()))?;
    Ok(bytes)
}

/// Apply one downloaded LTX file (deleted afterwards) onto `out`.
fn apply_file(
    f: &LtxFile,
    path: &PathBuf,
    len: u64,
    out: &std::fs::File,
    page_size: Option<u32>,
) -> anyhow::Result<LtxHeader> {
    let result = (|| {
        let mut input = std::io::BufReader::new(std::fs::File::open(path)?);
        let header =
            read_pages(&mut input, len, |pgno, page| out.write_all_at(page, u64::from(pgno - 1) * page.len() as u64))?;
        Ok::<_, LtxError>(header)
    })();
    let _ = std::fs::remove_file(path);
    let header = result?;
    // The name, not the header, is what the plan chose.
    if (header.min_txid, header.max_txid) != (f.min_txid, f.max_txid) {
        bail!(
            "its header says TXIDs {:016x}-{:016x}, its name {:016x}-{:016x}",
            header.min_txid,
            header.max_txid,
            f.min_txid,
            f.max_txid
        );
    }
    if page_size.is_some_and(|p| p != header.page_size) {
        bail!("its page size {} differs from the files before it", header.page_size);
    }
    out.set_len(u64::from(header.commit) * u64::from(header.page_size))?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str) -> ObjectMeta {
        ObjectMeta { key: key.into(), size: 10, etag: String::new(), modified_ms: Some(5), metadata: vec![] }
    }

    #[test]
    fn both_key_layouts_parse_and_others_do_not() {
        assert_eq!(parse_key("ltx/0/0000000000000003-0000000000000003.ltx"), Some((0, 3, 3)));
        assert_eq!(parse_key("ltx/9/0000000000000001-0000000000000002.ltx"), Some((9, 1, 2)));
        assert_eq!(parse_key("0009/0000000000000001-00000000000000ff.ltx"), Some((9, 1, 255)));
        for bad in [
            "0000/0000000000000001-0000000000000001.seg",
            "ltx/x/0000000000000001-0000000000000001.ltx",
            "ltx/10/0000000000000001-0000000000000001.ltx",
            "ltx/0/0000000000000002-0000000000000001.ltx",
            "ltx/0/0000000000000000-0000000000000001.ltx",
            "ltx/0/01-02.ltx",
            "generations/abc/snapshots/00000000.snapshot.lz4",
        ] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_level_zero_file_from_txid_one_is_a_snapshot() {
        let objects = [
            meta("ltx/0/0000000000000001-0000000000000001.ltx"),
            meta("ltx/0/0000000000000002-0000000000000002.ltx"),
            meta("ltx/0/0000000000000003-0000000000000003.ltx"),
        ];
        let got: Vec<String> = plan(&files(&objects), Target::Latest).unwrap().into_iter().map(|f| f.key).collect();
        assert_eq!(got, objects.iter().map(|o| o.key.clone()).collect::<Vec<_>>());
    }

    #[test]
    fn the_newest_snapshot_and_fewest_files_are_chosen() {
        let objects = [
            meta("ltx/0/0000000000000001-0000000000000001.ltx"),
            meta("ltx/0/0000000000000002-0000000000000002.ltx"),
            meta("ltx/0/0000000000000003-0000000000000003.ltx"),
            meta("ltx/0/0000000000000004-0000000000000004.ltx"),
            meta("ltx/1/0000000000000003-0000000000000004.ltx"),
            meta("ltx/9/0000000000000001-0000000000000002.ltx"),
        ];
        let got: Vec<String> = plan(&files(&objects), Target::Latest).unwrap().into_iter().map(|f| f.key).collect();
        assert_eq!(got, ["ltx/9/0000000000000001-0000000000000002.ltx", "ltx/1/0000000000000003-0000000000000004.ltx"]);
        let at3: Vec<String> = plan(&files(&objects), Target::Txid(3)).unwrap().into_iter().map(|f| f.key).collect();
        assert_eq!(at3, ["ltx/9/0000000000000001-0000000000000002.ltx", "ltx/0/0000000000000003-0000000000000003.ltx"]);
    }

    #[test]
    fn a_missing_file_is_refused_not_skipped() {
        let objects =
            [meta("0009/0000000000000001-0000000000000002.ltx"), meta("0000/0000000000000004-0000000000000004.ltx")];
        let err = plan(&files(&objects), Target::Latest).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
