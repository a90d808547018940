//! Directory mode: a `dir` entry (`pattern`, `recursive`, `watch`) stands
//! for every SQLite database below the directory, each with a replica
//! path of its own. Scanned at start, and again while running when
//! `watch: true` (`crate::replicate::watch_dir`).

use super::file::{DbConfig, FileConfig};
use super::resolve::{DatabaseSpec, database, db_path};
use anyhow::Context;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A `dir` entry, resolved enough to be scanned again.
#[derive(Debug, Clone)]
pub struct WatchedDir {
    /// The directory, absolute.
    pub dir: PathBuf,
    pub pattern: glob::Pattern,
    pub recursive: bool,
    /// `watch: true`: scanned again while running.
    pub watch: bool,
    entry: DbConfig,
    file: Arc<FileConfig>,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Found {
    /// The databases found (not known before), in path order.
    pub dbs: Vec<DatabaseSpec>,
    /// Every database there: the known ones still there and the new.
    pub present: BTreeSet<PathBuf>,
    /// Files that match `pattern` but are not SQLite databases (yet).
    pub not_sqlite: Vec<PathBuf>,
}

impl WatchedDir {
    pub fn new(entry: &DbConfig, file: &FileConfig) -> anyhow::Result<WatchedDir> {
        let dir = std::path::absolute(db_path(entry.dir.as_deref().unwrap_or(".")))?;
        let pattern = glob::Pattern::new(entry.pattern.as_deref().unwrap_or("*.db"))
            .with_context(|| format!("dir {}: invalid `pattern`", dir.display()))?;
        Ok(WatchedDir {
            dir,
            pattern,
            recursive: entry.recursive.unwrap_or(false),
            watch: entry.watch.unwrap_or(false),
            entry: entry.clone(),
            file: Arc::new(file.clone()),
        })
    }

    /// Whether `path` names a file this entry stands for (by name and
    /// place; whether it is SQLite is `scan`'s business).
    pub fn covers(&self, path: &Path) -> bool {
        let Ok(rel) = path.strip_prefix(&self.dir) else { return false };
        let nested = rel.components().count() > 1;
        (self.recursive || !nested)
            && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| self.pattern.matches(n))
    }

    /// Every database below the directory now, each with its own replica
    /// place.
    pub fn scan(&self) -> anyhow::Result<Found> {
        self.scan_except(&BTreeSet::new())
    }

    /// `scan`, taking the databases in `known` as present while their
    /// files are (no header read, no spec built: a watched directory of
    /// thousands is scanned at every change).
    pub fn scan_except(&self, known: &BTreeSet<PathBuf>) -> anyhow::Result<Found> {
        let mut found = Found::default();
        let mut stack = vec![self.dir.clone()];
        let mut new = Vec::new();
        while let Some(d) = stack.pop() {
            let entries = std::fs::read_dir(&d).with_context(|| format!("cannot read dir {}", d.display()))?;
            for e in entries.flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    if self.recursive {
                        stack.push(p);
                    }
                } else if known.contains(&p) {
                    found.present.insert(p);
                } else if self.covers(&p) {
                    match is_sqlite(&p) {
                        true => new.push(p),
                        false => found.not_sqlite.push(p),
                    }
                }
            }
        }
        new.sort();
        for p in new {
            let rel = p.strip_prefix(&self.dir).unwrap_or(&p).to_path_buf();
            found.dbs.push(database(&member(&self.entry, &rel), p.clone(), &self.file)?);
            found.present.insert(p);
        }
        Ok(found)
    }
}

/// Whether `path` starts with SQLite's header (an empty or foreign file
/// in a `dir` does not stop the others).
fn is_sqlite(path: &Path) -> bool {
    let mut magic = [0u8; 16];
    std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok()
        && &magic == b"SQLite format 3\0"
}

/// A `dir` entry's database at `rel` (its path below `dir`): the entry
/// with every replica's URL (or path) and its meta-path extended by `rel`,
/// so each database has a place of its own (Litestream's layout; sharing
/// one made all but one of them fail).
fn member(db: &DbConfig, rel: &Path) -> DbConfig {
    let rel = rel.to_string_lossy();
    let under = |base: &str| format!("{}/{rel}", base.trim_end_matches('/'));
    let mut m = db.clone();
    for r in m.replica.iter_mut().chain(m.replicas.iter_mut()) {
        if let Some(url) = &r.url {
            let (base, query) = url.split_once('?').map_or((url.as_str(), None), |(b, q)| (b, Some(q)));
            r.url = Some(query.map_or_else(|| under(base), |q| format!("{}?{q}", under(base))));
        } else if let Some(path) = &r.path {
            r.path = Some(under(path));
        }
    }
    m.meta_path = m.meta_path.as_deref().map(under);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(pattern: &str, recursive: bool) -> WatchedDir {
        let entry = DbConfig {
            dir: Some("/data".into()),
            pattern: Some(pattern.into()),
            recursive: Some(recursive),
            ..Default::default()
        };
        WatchedDir::new(&entry, &FileConfig::default()).unwrap()
    }

    #[test]
    fn covers_matching_names_at_the_depth_allowed() {
        let flat = watched("*.db", false);
        assert!(flat.covers(Path::new("/data/a.db")));
        assert!(!flat.covers(Path::new("/data/a.db-wal")), "a WAL is not a database");
        assert!(!flat.covers(Path::new("/data/t1/a.db")), "not recursive");
        assert!(!flat.covers(Path::new("/other/a.db")));
        assert!(watched("*.db", true).covers(Path::new("/data/t1/a.db")));
        assert!(watched("*.sqlite", false).covers(Path::new("/data/x.sqlite")));
    }
}
