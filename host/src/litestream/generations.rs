//! A Litestream 0.3 replica: `generations/<generation>/snapshots/<index>.snapshot.lz4`
//! (the database file, LZ4 frame) and `generations/<gen>/wal/<index>_<offset>.wal.lz4`
//! (the raw bytes of WAL file `index` from `offset`, frame headers
//! included). A restore takes a generation, its newest snapshot at or
//! before the target, then every WAL file from the snapshot's index on,
//! handed to SQLite itself to apply (written as the `-wal` and
//! checkpointed), as Litestream 0.3 does. SQLite checks every frame's
//! salts and checksums; sluice checks that the segments of each WAL file
//! are contiguous from offset 0 and that SQLite took every frame they hold
//! (a damaged frame would otherwise end the WAL early, silently).

use crate::plugin::{ObjectMeta, PluginStore};
use crate::replica::Target;
use crate::replica::client;
use crate::restore::sidecar;
use anyhow::{Context, bail, ensure};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// One object of a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: u64,
    pub modified_ms: i64,
}

#[derive(Debug, Default, Clone)]
pub struct Generation {
    pub snapshots: BTreeMap<u32, Object>,
    /// By (WAL index, offset).
    pub wal: BTreeMap<(u32, u32), Object>,
}

impl Generation {
    fn updated_ms(&self, limit: i64) -> Option<i64> {
        self.snapshots.values().chain(self.wal.values()).map(|o| o.modified_ms).filter(|&m| m <= limit).max()
    }
}

/// The generations among a replica's objects, by name (empty: not a 0.3
/// replica).
pub fn generations(objects: &[ObjectMeta]) -> BTreeMap<String, Generation> {
    let mut out: BTreeMap<String, Generation> = BTreeMap::new();
    for o in objects {
        let Some((generation, kind, file)) = split_key(&o.key) else { continue };
        let object = Object { key: o.key.clone(), size: o.size, modified_ms: o.modified_ms.map_or(0, |m| m as i64) };
        let g = || -> Option<()> {
            match kind {
                "snapshots" => {
                    let index = hex32(file.strip_suffix(".snapshot.lz4")?)?;
                    out.entry(generation.into()).or_default().snapshots.insert(index, object);
                }
                _ => {
                    let (index, offset) = file.strip_suffix(".wal.lz4")?.split_once('_')?;
                    let at = (hex32(index)?, hex32(offset)?);
                    out.entry(generation.into()).or_default().wal.insert(at, object);
                }
            }
            Some(())
        };
        g();
    }
    out
}

fn split_key(key: &str) -> Option<(&str, &str, &str)> {
    let rest = key.strip_prefix("generations/")?;
    let mut parts = rest.split('/');
    let (generation, kind, file) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = generation.len() == 16 && generation.bytes().all(|b| b.is_ascii_hexdigit());
    (valid && parts.next().is_none() && (kind == "snapshots" || kind == "wal")).then_some((generation, kind, file))
}

fn hex32(s: &str) -> Option<u32> {
    (s.len() == 8).then(|| u32::from_str_radix(s, 16).ok()).flatten()
}

/// What a restore of a 0.3 replica applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub generation: String,
    pub snapshot_index: u32,
    pub snapshot: Object,
    /// WAL segments by index, each in offset order.
    pub wal: Vec<(u32, Vec<(u32, Object)>)>,
}

impl Plan {
    pub fn keys(&self) -> Vec<String> {
        let wal = self.wal.iter().flat_map(|(_, segs)| segs.iter().map(|(_, o)| o.key.clone()));
        std::iter::once(self.snapshot.key.clone()).chain(wal).collect()
    }

    /// Where the restore ends, in Litestream 0.3's terms.
    pub fn position(&self) -> String {
        let index = self.wal.last().map_or(self.snapshot_index, |(i, _)| *i);
        format!("generation {} index {index:08x}", self.generation)
    }
}

/// Choose what restores `target`: the generation updated last (at or before
/// a timestamp), its newest snapshot at or before it, and every WAL
/// segment after that snapshot up to it. A WAL index missing in between is
/// refused: applying the ones after it would skip changes.
pub fn plan(gens: &BTreeMap<String, Generation>, target: Target) -> anyhow::Result<Plan> {
    let limit = match target {
        Target::Latest => i64::MAX,
        Target::Timestamp(ms) => ms,
        Target::Txid(_) => bail!(
            "a Litestream 0.3 backup has no TXIDs: restore it to a point in time with -timestamp, or to its latest state"
        ),
    };
    let chosen = gens
        .iter()
        .filter_map(|(name, g)| {
            let snapshot = g.snapshots.iter().rfind(|(_, o)| o.modified_ms <= limit)?;
            Some((g.updated_ms(limit)?, name, g, snapshot))
        })
        .max_by_key(|(updated, name, _, _)| (*updated, name.as_str()));
    let Some((_, name, g, (&index, snapshot))) = chosen else {
        bail!("the Litestream 0.3 backup holds no snapshot at or before the target");
    };
    let mut wal: Vec<(u32, Vec<(u32, Object)>)> = Vec::new();
    for (&(i, offset), o) in g.wal.range((index, 0)..).filter(|(_, o)| o.modified_ms <= limit) {
        match wal.last_mut() {
            Some((last, segs)) if *last == i => segs.push((offset, o.clone())),
            Some((last, _)) if *last + 1 != i => {
                bail!("generation {name}: WAL index {:08x} is missing (the next one held is {i:08x})", *last + 1)
            }
            None if i != index => bail!("generation {name}: WAL index {index:08x} is missing"),
            _ => wal.push((i, vec![(offset, o.clone())])),
        }
    }
    Ok(Plan { generation: name.clone(), snapshot_index: index, snapshot: snapshot.clone(), wal })
}

/// Apply `plan` to the empty file `tmp`; returns the bytes downloaded.
pub async fn apply(store: &PluginStore, plan: &Plan, tmp: &Path) -> anyhow::Result<u64> {
    let mut bytes = fetch_into(store, &plan.snapshot, tmp, false).await?;
    let wal = sidecar(tmp, "-wal");
    for (index, segs) in &plan.wal {
        let _ = std::fs::remove_file(&wal);
        for (offset, o) in segs {
            let have = std::fs::metadata(&wal).map_or(0, |m| m.len());
            ensure!(
                have == u64::from(*offset),
                "WAL index {index:08x}: {} starts at offset {offset}, but the segments before it end at {have} (one is missing)",
                o.key
            );
            bytes += fetch_into(store, o, &wal, true).await?;
        }
        let path = tmp.to_path_buf();
        let index = *index;
        tokio::task::spawn_blocking(move || checkpoint(&path, index)).await??;
    }
    Ok(bytes)
}

/// Download `o` and decompress it into `dest` (appended, or replacing it).
async fn fetch_into(store: &PluginStore, o: &Object, dest: &Path, append: bool) -> anyhow::Result<u64> {
    let scratch = sidecar(dest, ".lz4");
    let got = client::download_key(store, &o.key, o.size, &scratch, client::DOWNLOAD_CHUNK).await;
    let result = async {
        let len = got.with_context(|| format!("cannot download {}", o.key))?;
        let (src, dst) = (scratch.clone(), dest.to_path_buf());
        tokio::task::spawn_blocking(move || decompress(&src, &dst, append))
            .await?
            .with_context(|| format!("Litestream file {} of {} is unusable", o.key, store.url()))?;
        anyhow::Ok(len)
    }
    .await;
    let _ = std::fs::remove_file(&scratch);
    result
}

fn decompress(src: &Path, dst: &Path, append: bool) -> anyhow::Result<()> {
    let input = std::io::BufReader::new(std::fs::File::open(src)?);
    let out = std::fs::OpenOptions::new().create(true).write(true).append(append).truncate(!append).open(dst)?;
    let mut out = std::io::BufWriter::new(out);
    let mut decoder = lz4_flex::frame::FrameDecoder::new(input);
    std::io::copy(&mut decoder, &mut out).context("not an LZ4 frame, or damaged")?;
    out.flush()?;
    Ok(())
}

/// Have SQLite apply `<db>-wal` to `db` and check it took every frame.
fn checkpoint(db: &Path, index: u32) -> anyhow::Result<()> {
    let wal = sidecar(db, "-wal");
    let len = std::fs::metadata(&wal)?.len();
    let mut header = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open(&wal)?, &mut header)
        .with_context(|| format!("WAL index {index:08x} is shorter than a WAL header"))?;
    let page_size = u64::from(u32::from_be_bytes([header[8], header[9], header[10], header[11]]));
    let frame = 24 + page_size;
    ensure!(
        page_size >= 512 && (len - 32) % frame == 0,
        "WAL index {index:08x} is {len} bytes, not a whole number of {page_size}-byte pages' frames"
    );
    let _ = std::fs::remove_file(sidecar(db, "-shm"));
    let conn = rusqlite::Connection::open(db)?;
    let (busy, log, done): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(FULL)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    drop(conn);
    let frames = (len - 32) / frame;
    ensure!(
        busy == 0 && log == done && u64::try_from(log).ok() == Some(frames),
        "WAL index {index:08x}: SQLite applied {done} of its {frames} frames (a damaged or missing frame)"
    );
    Ok(())
}

#[cfg(test)]
#[path = "generations_tests.rs"]
mod tests;
