//! Restore: plan from the replica's listing, download segments in
//! parallel, apply them in order into `<out>.tmp` verifying every
//! checksum, fsync, rename. A corrupt or missing segment stops the restore
//! with its name; the output is never left half-written under its name.

use crate::checksum::PageHashes;
use crate::fsutil::sync_dir;
use crate::plugin::{PluginStore, SMALL_IO_BYTES};
use crate::replica::client::{self, Listing};
use crate::replica::plan::{Target, restore_plan};
use crate::segment::apply::{FileSink, apply};
use crate::segment::{SegmentName, SegmentReader};
use anyhow::{Context, bail};

mod follow;
pub use follow::follow;
use futures::StreamExt;
use std::path::{Path, PathBuf};

/// Segments downloaded at once by default (`restore -parallelism`):
/// enough to keep a high-latency store busy (#1077: parallel ranged
/// downloads took a restore from 35 to 5 minutes), few enough that temp
/// space stays a handful of segments.
pub const PARALLEL_DOWNLOADS: usize = 4;
/// The most `-parallelism` allows: each download holds a chunk in memory
/// and a scratch file, and a plugin instance of its own.
pub const MAX_PARALLELISM: usize = 64;

/// How thoroughly to check the result with SQLite itself before it takes
/// the output's name. The checksums prove the file is what the replica
/// holds, not that what it holds is a sound database (a source damaged on
/// disk, a bug); a restore that exits 0 must give one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum IntegrityCheck {
    None,
    // The default, as it is cheap. Restoring a 1.06 GB database of 2 M
    // text rows (release build, local replica, warm page cache, a busy
    // 2-core machine) took 7.4-8.5 s unchecked, 8.0-9.5 s with quick,
    // 14.6-16.9 s with full: quick costs about a tenth more and is paid
    // always; full, twice the time, is there on request. (Variant doc
    // comments would be clap's help text.)
    /// PRAGMA quick_check: pages, free list, records; not index contents.
    #[default]
    Quick,
    /// PRAGMA integrity_check: also that indexes match their tables.
    Full,
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub output: PathBuf,
    pub target: Target,
    pub force: bool,
    pub integrity: IntegrityCheck,
    pub dry_run: bool,
    pub progress: bool,
    /// Segments downloaded at once (at least 1).
    pub parallelism: usize,
}

/// What a restore did.
#[derive(Debug)]
pub struct RestoreOutcome {
    pub plan: Vec<SegmentName>,
    pub txid: u64,
    pub bytes_downloaded: u64,
    /// Page hashes of the result (what `-f` continues from).
    pub hashes: Option<PageHashes>,
}

pub(crate) fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// SQLite's files beside a database: they would be applied to it.
const SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

pub(crate) fn remove_sidecars(db: &Path) {
    for suffix in SIDECARS {
        let _ = std::fs::remove_file(sidecar(db, suffix));
    }
}

/// A downloaded segment: small ones in memory, others in a temp file
/// (with its size).
enum Fetched {
    Bytes(Vec<u8>),
    File(PathBuf, u64),
}

impl Fetched {
    fn len(&self) -> u64 {
        match self {
            Fetched::Bytes(b) => b.len() as u64,
            Fetched::File(_, size) => *size,
        }
    }
}

/// Refuse to overwrite a database with content (or leftover WAL/journal
/// files that SQLite would replay onto the restored file) unless forced.
pub fn check_output(output: &Path, force: bool) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    let non_empty = std::fs::metadata(output).map(|m| m.len() > 0).unwrap_or(false);
    if non_empty {
        bail!(
            "{} already exists and is not empty; restore to another path, or pass -force to replace it",
            output.display()
        );
    }
    for suffix in SIDECARS {
        let p = sidecar(output, suffix);
        if p.exists() {
            bail!("{} exists; remove it (it would be applied to the restored database) or pass -force", p.display());
        }
    }
    Ok(())
}

/// Restore from an already fetched listing according to `opts` (the
/// caller has checked the output with [`check_output`]).
pub async fn restore_from_listing(
    store: &PluginStore,
    listing: &Listing,
    opts: &RestoreOptions,
) -> anyhow::Result<RestoreOutcome> {
    let plan = restore_plan(listing, opts.target).with_context(|| format!("cannot restore from {}", store.url()))?;
    let txid = plan.last().map_or(0, |n| n.max_txid);
    if opts.dry_run {
        return Ok(RestoreOutcome { plan, txid, bytes_downloaded: 0, hashes: None });
    }
    let steps = &plan;
    let build = |tmp: PathBuf| async move { apply_plan(store, listing, steps, &tmp, opts).await };
    let (bytes, hashes) = into_output(opts, build).await?;
    Ok(RestoreOutcome { plan, txid, bytes_downloaded: bytes, hashes })
}

/// Build a restore in `<output>.tmp` with `build`, check it with SQLite,
/// and only then give it the output's name (fsynced): whatever fails, the
/// output is untouched and the scratch file removed.
pub async fn into_output<T, F, Fut>(opts: &RestoreOptions, build: F) -> anyhow::Result<T>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let dir = opts.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = sidecar(&opts.output, ".tmp");
    // Leftovers of an earlier build's check: nothing may reach the output.
    remove_sidecars(&tmp);
    let result = build(tmp.clone()).await;
    let checked = match result {
        Ok(b) => check_off_runtime(&tmp, opts.integrity).await.map(|()| b),
        Err(e) => Err(e),
    };
    remove_sidecars(&tmp);
    let built = match checked {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    remove_sidecars(&opts.output);
    std::fs::rename(&tmp, &opts.output)
        .with_context(|| format!("cannot move the restored database into {}", opts.output.display()))?;
    sync_dir(dir).with_context(|| format!("cannot sync {}", dir.display()))?;
    Ok(built)
}

async fn apply_plan(
    store: &PluginStore,
    listing: &Listing,
    plan: &[SegmentName],
    tmp: &Path,
    opts: &RestoreOptions,
) -> anyhow::Result<(u64, Option<PageHashes>)> {
    apply_segments(store, listing, plan, create_scratch(tmp)?, None, tmp, opts).await
}

/// The restore's scratch file, created empty (readable: the check reads it).
pub(crate) fn create_scratch(tmp: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))
}

/// Download `plan` (in parallel) and apply it in order onto `file`, whose
/// page hashes are `hashes` (`None` for an empty file); returns the bytes
/// downloaded and the hashes after. Temp files are named after `base`.
async fn apply_segments(
    store: &PluginStore,
    listing: &Listing,
    plan: &[SegmentName],
    file: std::fs::File,
    hashes: Option<PageHashes>,
    base: &Path,
    opts: &RestoreOptions,
) -> anyhow::Result<(u64, Option<PageHashes>)> {
    let total: u64 = plan.iter().filter_map(|n| listing.get(n)).map(|s| s.size).sum();
    let bar = opts.progress.then(|| progress_bar(total));
    let mut applier = Applier { sink: Some(FileSink::new(file, 0)), hashes, downloaded: 0 };
    let temp_for = |n: &SegmentName| sidecar(base, &format!(".{}", n.file_name()));
    let mut downloads = futures::stream::iter(plan.iter().copied())
        .map(|name| fetch(store, listing, name, temp_for(&name)))
        .buffered(opts.parallelism.max(1));
    let mut failure = None;
    while let Some((name, got)) = downloads.next().await {
        match applier.apply(store, name, got).await {
            Ok(size) => {
                if let Some(bar) = &bar {
                    bar.set_message(name.key());
                    bar.inc(size);
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(downloads);
    for name in plan {
        let _ = std::fs::remove_file(temp_for(name));
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let sink = applier.sink.context("internal: sink lost")?;
    let file = sink.into_file().with_context(|| format!("cannot write {}", base.display()))?;
    file.sync_all().with_context(|| format!("cannot sync {}", base.display()))?;
    Ok((applier.downloaded, applier.hashes))
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} restoring {msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Fetch one planned segment: a small one into memory in one call (no
/// temp file to create, write, read back and delete), a larger one to
/// `path`.
async fn fetch(
    store: &PluginStore,
    listing: &Listing,
    name: SegmentName,
    path: PathBuf,
) -> (SegmentName, Result<Fetched, crate::replica::ReplicaError>) {
    let unlisted = crate::replica::RemoteSegment { size: u64::MAX, timestamp_ms: 0, modified_ms: None, parts: 0 };
    let listed = listing.get(&name).unwrap_or(&unlisted);
    let got = match listed.size <= SMALL_IO_BYTES {
        true => client::fetch(store, &name, listed).await.map(Fetched::Bytes),
        false => client::download(store, &name, listed, &path, client::DOWNLOAD_CHUNK)
            .await
            .map(|size| Fetched::File(path, size)),
    };
    (name, got)
}

/// The file being restored, as segments are applied to it in order.
struct Applier {
    sink: Option<FileSink>,
    hashes: Option<PageHashes>,
    downloaded: u64,
}

impl Applier {
    /// Apply one fetched segment (off the async runtime); its size.
    async fn apply(
        &mut self,
        store: &PluginStore,
        name: SegmentName,
        got: Result<Fetched, crate::replica::ReplicaError>,
    ) -> anyhow::Result<u64> {
        let got = got.with_context(|| format!("cannot download segment {name}"))?;
        let size = got.len();
        self.downloaded += size;
        let s = self.sink.take().context("internal: sink lost")?;
        let h = self.hashes.take();
        let applied = tokio::task::spawn_blocking(move || apply_one(name, got, s, h)).await?;
        let (s, h) = applied.with_context(|| format!("segment {name} of replica {} is unusable", store.url()))?;
        (self.sink, self.hashes) = (Some(s), h);
        Ok(size)
    }
}

/// Check `got` is the segment `name` says and apply it to `sink`; its
/// temp file, if any, is removed either way.
fn apply_one(
    name: SegmentName,
    got: Fetched,
    mut sink: FileSink,
    mut hashes: Option<PageHashes>,
) -> anyhow::Result<(FileSink, Option<PageHashes>)> {
    let (opened, temp) = match got {
        Fetched::Bytes(bytes) => (SegmentReader::from_bytes(bytes), None),
        Fetched::File(path, _) => (SegmentReader::open(&path), Some(path)),
    };
    // The name, not the header, is what the plan chose: bytes of another
    // segment under it would restore another state.
    let checked = opened.and_then(|reader| name.check_header(reader.header()).map(|()| reader));
    let result = checked.map_err(anyhow::Error::from).and_then(|mut reader| {
        sink.page_size = reader.header().page_size;
        let hs = hashes.get_or_insert_with(|| PageHashes::new(reader.header().page_size));
        apply(&mut reader, &mut sink, Some(hs)).map_err(anyhow::Error::from)
    });
    if let Some(path) = temp {
        let _ = std::fs::remove_file(path);
    }
    result.map(|()| (sink, hashes))
}

async fn check_off_runtime(path: &Path, mode: IntegrityCheck) -> anyhow::Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || integrity_check(&path, mode))
        .await
        .context("internal: the integrity check panicked")?
}

/// Check the restored file at `path` with SQLite (nothing for `None`).
fn integrity_check(path: &Path, mode: IntegrityCheck) -> anyhow::Result<()> {
    let pragma = match mode {
        IntegrityCheck::None => return Ok(()),
        IntegrityCheck::Quick => "PRAGMA quick_check",
        IntegrityCheck::Full => "PRAGMA integrity_check",
    };
    // Immutable: no locks, no `-shm`/`-wal` created beside it (a read-only
    // open of a WAL-mode file leaves both behind), and no stray WAL read.
    // The file is ours alone until it is renamed.
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
        | rusqlite::OpenFlags::SQLITE_OPEN_URI
        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(immutable_uri(path), flags)
        .with_context(|| format!("cannot open restored database {}", path.display()))?;
    // The first problems SQLite lists are enough to tell what is wrong.
    let mut stmt = conn.prepare(pragma).with_context(|| format!("{pragma} cannot run on the restored database"))?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .with_context(|| format!("{pragma} failed on the restored database"))?;
    let problems: Vec<String> = rows
        .take(INTEGRITY_PROBLEMS_SHOWN)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{pragma} failed on the restored database (malformed?)"))?;
    if problems != ["ok"] {
        bail!(
            "the restored database fails SQLite's {pragma}: {}; the output was not written (`sluice restore -integrity-check none` writes it anyway)",
            problems.join("; ")
        );
    }
    Ok(())
}

/// Problems of a failed check quoted in the error.
const INTEGRITY_PROBLEMS_SHOWN: usize = 5;

/// `path` as an SQLite URI opened immutable: every byte but unreserved
/// ASCII percent-encoded (`?`, `#` and `%` would end or alter the path, and
/// a path need not be UTF-8).
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    // An absolute path after an empty authority, so a path starting
    // with `//` is not read as a host name.
    let mut uri = String::from(if path.is_absolute() { "file://" } else { "file:" });
    for &b in path.as_os_str().as_bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'.' | b'_' | b'~' => uri.push(char::from(b)),
            _ => uri.push_str(&format!("%{b:02x}")),
        }
    }
    uri.push_str("?immutable=1");
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_db(path: &Path) {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1); PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .unwrap();
        drop(conn);
        assert!(!sidecar(path, "-wal").exists(), "setup: the WAL is removed on close");
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    /// The check of a WAL-mode file (what a restore writes) leaves no
    /// `-shm` or `-wal` beside it, whether it passes or fails, and paths
    /// with URI-special characters are opened as they are.
    #[test]
    fn the_check_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("a b?c#d%e.db.tmp");
        wal_db(&good);
        for mode in [IntegrityCheck::Quick, IntegrityCheck::Full] {
            integrity_check(&good, mode).unwrap();
        }
        assert_eq!(leftovers(dir.path()), ["a b?c#d%e.db.tmp"]);
        let bad = dir.path().join("bad.db.tmp");
        let mut bytes = std::fs::read(&good).unwrap();
        let page_size = bytes.len() / 2;
        bytes[page_size..].fill(0xa5);
        std::fs::write(&bad, bytes).unwrap();
        let err = integrity_check(&bad, IntegrityCheck::Quick).unwrap_err();
        assert!(format!("{err:#}").contains("quick_check"), "{err:#}");
        integrity_check(&bad, IntegrityCheck::None).unwrap();
        assert_eq!(leftovers(dir.path()), ["a b?c#d%e.db.tmp", "bad.db.tmp"]);
    }

    #[test]
    fn uris_escape_the_path() {
        assert_eq!(immutable_uri(Path::new("/x/a b?#%.db")), "file:///x/a%20b%3f%23%25.db?immutable=1");
        assert_eq!(immutable_uri(Path::new("//x/y.db")), "file:////x/y.db?immutable=1");
        assert_eq!(immutable_uri(Path::new("y.db")), "file:y.db?immutable=1");
    }

    #[test]
    fn an_output_with_content_or_leftovers_is_refused_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.db");
        assert!(check_output(&out, false).is_ok(), "a missing output");
        std::fs::write(&out, "").unwrap();
        assert!(check_output(&out, false).is_ok(), "an empty output");
        std::fs::write(sidecar(&out, "-wal"), "x").unwrap();
        assert!(check_output(&out, false).unwrap_err().to_string().contains("-wal"));
        std::fs::write(&out, "data").unwrap();
        assert!(check_output(&out, false).unwrap_err().to_string().contains("-force"));
        assert!(check_output(&out, true).is_ok());
    }

    fn opts(output: &Path) -> RestoreOptions {
        RestoreOptions {
            output: output.to_path_buf(),
            target: Target::Latest,
            force: false,
            integrity: IntegrityCheck::Quick,
            dry_run: false,
            progress: false,
            parallelism: 1,
        }
    }

    /// Whatever fails (the build, or SQLite's check of what it built), the
    /// output keeps its old content and no scratch file is left; a sound
    /// build takes the output's name.
    #[tokio::test]
    async fn the_output_changes_only_to_a_checked_database() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.db");
        std::fs::write(&out, "old").unwrap();
        let failed: anyhow::Result<()> = into_output(&opts(&out), |tmp: PathBuf| async move {
            std::fs::write(&tmp, "half")?;
            anyhow::bail!("download failed")
        })
        .await;
        assert!(failed.unwrap_err().to_string().contains("download failed"));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "old");
        assert_eq!(leftovers(dir.path()), ["out.db"]);
        let corrupt = into_output(&opts(&out), |tmp: PathBuf| async move {
            std::fs::write(&tmp, vec![7u8; 8192])?;
            Ok(())
        })
        .await;
        assert!(corrupt.is_err(), "a file SQLite refuses took the output's name");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "old");
        assert_eq!(leftovers(dir.path()), ["out.db"]);
        into_output(&opts(&out), |tmp: PathBuf| async move {
            wal_db(&tmp);
            Ok(())
        })
        .await
        .unwrap();
        let n: i64 =
            rusqlite::Connection::open(&out).unwrap().query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
        assert_eq!(leftovers(dir.path()), ["out.db"]);
    }
}
