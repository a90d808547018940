//! Listing commands: `databases`, `ltx` (alias `segments`), `status`, `reset`.

use super::replicate_cmd::load_config;
use crate::clock::{rfc3339, rfc3339_seconds};
use crate::config;
use crate::config::ReplicaSpec;
use crate::plugin::Runtime;
use crate::replicate::{Plugins, open_store};
use crate::state::MetaDir;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The config file, which `databases` and `status` cannot do without
/// (Litestream: "config file not found").
fn required_config(config_path: Option<&PathBuf>, expand: bool) -> anyhow::Result<config::FileConfig> {
    match load_config(config_path, expand)? {
        (Some(_), file) => Ok(file),
        (None, _) => anyhow::bail!(
            "config file not found (looked for $SLUICE_CONFIG, $LITESTREAM_CONFIG, /etc/sluice.yml, /etc/litestream.yml): pass -config PATH"
        ),
    }
}

/// `version -verbose`: what this build is made of.
pub fn build_details() {
    let plugins: Vec<String> = crate::plugin::bundled::NAMES
        .iter()
        .map(|n| format!("{n} (sha256 {})", crate::plugin::bundled::sha256(n).map_or("?", |h| &h[..h.len().min(12)])))
        .collect();
    let runs = crate::plugin::CONTRACTS.join(", ");
    println!(
        "Contract:        sluice:storage@{} (wit/storage.wit); runs plugins of {runs}",
        crate::plugin::CONTRACTS[0]
    );
    println!("Bundled plugins: {}", plugins.join(", "));
    println!("Plugin runtime:  wasmtime, wasm32-wasip2 components");
    println!("OS/Arch:         {}/{}", std::env::consts::OS, std::env::consts::ARCH);
    println!("Build:           {}", if cfg!(debug_assertions) { "debug" } else { "release" });
}

pub fn databases(config_path: Option<&PathBuf>, expand: bool, json: bool) -> anyhow::Result<()> {
    let file = required_config(config_path, expand)?;
    let resolved = config::resolve(&file)?;
    if json {
        let rows: Vec<_> = resolved
            .dbs
            .iter()
            .map(|d| {
                // Litestream's one `replica` (its type), then all of ours.
                let kind = d.replicas.first().map(|r| r.url.split_once("://").map_or("file", |(s, _)| s));
                serde_json::json!({"path": d.path, "replica": kind, "replicas": d.replicas.iter().map(|r| serde_json::json!({"name": r.name, "url": crate::plugin::redact_url(&r.url)})).collect::<Vec<_>>()})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{:<40} replicas", "path");
    for d in &resolved.dbs {
        let names: Vec<String> =
            d.replicas.iter().map(|r| format!("{} ({})", r.name, crate::plugin::redact_url(&r.url))).collect();
        println!("{:<40} {}", d.path.display(), names.join(", "));
    }
    Ok(())
}

pub async fn ltx(
    runtime: Arc<Runtime>,
    spec: &ReplicaSpec,
    label: &str,
    level: &str,
    json: bool,
    plugin: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let store = open_store(&runtime, &Plugins::default(), spec, plugin, label).await?;
    let mut listing = crate::replica::client::list(&store).await?;
    let mut source = None;
    if listing.is_empty() {
        match crate::litestream::find(&store).await? {
            Some(crate::litestream::Backup::Ltx(files)) => {
                listing = crate::litestream::ltx_backup::as_listing(&files);
                source = Some(format!("{} (read-only)", crate::litestream::Backup::Ltx(files).describe()));
            }
            Some(crate::litestream::Backup::Generations(gens)) => return generations(&gens, json),
            None => {}
        }
    }
    let want: Option<u32> = match level {
        "all" => None,
        l => Some(
            l.parse()
                .ok()
                .filter(|&n: &u32| n <= 9)
                .ok_or_else(|| anyhow::anyhow!("-level must be 0-9 or `all`, got {l}"))?,
        ),
    };
    let rows: Vec<_> = listing.iter().filter(|(n, _)| want.is_none_or(|w| n.level == w)).collect();
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|(n, s)| serde_json::json!({"level": n.level, "min_txid": format!("{:016x}", n.min_txid), "max_txid": format!("{:016x}", n.max_txid), "size": s.size, "parts": s.parts, "timestamp": rfc3339_seconds(s.timestamp_ms), "created": rfc3339(s.timestamp_ms)}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if let Some(source) = source {
        println!("{source}");
    }
    println!("{:<6} {:<17} {:<17} {:>12}  created", "level", "min_txid", "max_txid", "size");
    for (n, s) in rows {
        println!(
            "{:<6} {:016x}  {:016x}  {:>12}  {}",
            n.level,
            n.min_txid,
            n.max_txid,
            s.size,
            rfc3339(s.timestamp_ms)
        );
    }
    Ok(())
}

/// `ltx` of a Litestream 0.3 replica: its snapshots and WAL segments.
fn generations(gens: &BTreeMap<String, crate::litestream::generations::Generation>, json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (name, g) in gens {
        for (index, o) in &g.snapshots {
            rows.push((name.as_str(), "snapshot", *index, 0u32, o));
        }
        for ((index, offset), o) in &g.wal {
            rows.push((name.as_str(), "wal", *index, *offset, o));
        }
    }
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|(g, kind, index, offset, o)| serde_json::json!({"generation": g, "type": kind, "index": index, "offset": offset, "size": o.size, "created": rfc3339(o.modified_ms)}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("a Litestream 0.3 backup (read-only)");
    println!("{:<17} {:<9} {:<9} {:>10} {:>12}  created", "generation", "type", "index", "offset", "size");
    for (g, kind, index, offset, o) in rows {
        println!("{g:<17} {kind:<9} {index:08x}  {offset:>10} {:>12}  {}", o.size, rfc3339(o.modified_ms));
    }
    Ok(())
}

pub fn status(config_path: Option<&PathBuf>, expand: bool, db: Option<&str>, json: bool) -> anyhow::Result<()> {
    let file = required_config(config_path, expand)?;
    let resolved = config::resolve(&file)?;
    let mut rows = Vec::new();
    for d in &resolved.dbs {
        if let Some(want) = db
            && std::path::absolute(config::resolve::db_path(want))? != d.path
        {
            continue;
        }
        rows.push(status_row(d));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for r in rows {
        println!(
            "{}  txid={} wal={}B last={}",
            r["path"].as_str().unwrap_or("?"),
            r["txid"].as_str().unwrap_or("none"),
            r["wal_bytes"],
            r["last_capture"].as_str().unwrap_or("never")
        );
        for rep in r["replicas"].as_array().into_iter().flatten() {
            let field = |k: &str| rep[k].as_str().unwrap_or("?").to_string();
            println!("  {} {} shipped={}", field("name"), field("url"), field("txid"));
        }
    }
    Ok(())
}

/// One database's status, from its local state alone (no store is asked).
fn status_row(d: &config::DatabaseSpec) -> serde_json::Value {
    let meta_dir = d.meta_path.clone().unwrap_or_else(|| MetaDir::default_for(&d.path));
    let state = MetaDir::open(meta_dir.clone()).ok().and_then(|m| m.load());
    let wal_size = std::fs::metadata(crate::db::wal_path(&d.path)).map(|m| m.len()).unwrap_or(0);
    let replicas: Vec<_> = d
        .replicas
        .iter()
        .map(|r| serde_json::json!({"name": r.name, "url": crate::plugin::redact_url(&r.url), "txid": format!("{:016x}", shipped(&meta_dir, &r.name))}))
        .collect();
    let txid = state.as_ref().map(|(s, _)| format!("{:016x}", s.txid));
    let status = match (d.path.exists(), &state) {
        (false, _) => "no database",
        (true, None) => "not initialized",
        (true, Some(_)) => "ok",
    };
    serde_json::json!({
        // Litestream's fields first (`wal_size` as it writes it).
        "database": d.path,
        "status": status,
        "local_txid": txid,
        "wal_size": si_bytes(wal_size),
        "wal_bytes": wal_size,
        "path": d.path,
        "txid": txid,
        "db_pages": state.as_ref().map(|(s, _)| s.db_pages),
        "last_capture": state.as_ref().map(|(s, _)| rfc3339(s.timestamp_ms)),
        "replicas": replicas,
    })
}

/// The TXID a replica's position file says was shipped (0 if none).
fn shipped(meta_dir: &std::path::Path, replica: &str) -> u64 {
    let name: String =
        replica.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    std::fs::read_to_string(meta_dir.join(format!("replica-{name}.json")))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["shipped"].as_u64())
        .unwrap_or(0)
}

pub fn reset(config_path: Option<&PathBuf>, expand: bool, db: &str, dry_run: bool) -> anyhow::Result<()> {
    let (_, file) = load_config(config_path, expand)?;
    let path = std::path::absolute(config::resolve::db_path(db))?;
    let meta = config::resolve(&file)?
        .dbs
        .into_iter()
        .find(|d| d.path == path)
        .and_then(|d| d.meta_path)
        .unwrap_or_else(|| MetaDir::default_for(&path));
    if dry_run {
        for f in MetaDir::reset_files(&meta) {
            println!("would remove {}", f.display());
        }
        return Ok(());
    }
    MetaDir::open(meta.clone())?.reset()?;
    println!("reset local state of {} ({}); the next sync takes a snapshot", path.display(), meta.display());
    Ok(())
}

/// Bytes as Litestream's status writes them (Go's humanize.Bytes: SI
/// units, one decimal below 10).
fn si_bytes(n: u64) -> String {
    if n < 10 {
        return format!("{n} B");
    }
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let e = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let e = e.min(units.len() - 1);
    let val = (n as f64 / 1000f64.powi(e as i32) * 10.0 + 0.5).floor() / 10.0;
    match val < 10.0 {
        true => format!("{val:.1} {}", units[e]),
        false => format!("{val:.0} {}", units[e]),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_litestreams() {
        assert_eq!(super::si_bytes(0), "0 B");
        assert_eq!(super::si_bytes(988_832), "989 kB");
        assert_eq!(super::si_bytes(1_234_567), "1.2 MB");
        assert_eq!(super::si_bytes(512), "512 B");
    }
}
