//! `sluice restore`: by replica URL (`-o` required) or by configured
//! database path (output defaults to that path).

use super::replicate_cmd::load_config;
use crate::config::{self, ReplicaSpec};
use crate::plugin::Runtime;
use crate::replica::Target;
use crate::replicate::{Plugins, open_store};
use crate::restore::{self, IntegrityCheck, RestoreOptions};
use anyhow::{Context, bail};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

pub struct Args {
    pub config: Option<PathBuf>,
    pub no_expand_env: bool,
    pub output: Option<PathBuf>,
    pub txid: Option<String>,
    pub timestamp: Option<String>,
    pub if_db_not_exists: bool,
    pub if_replica_exists: bool,
    pub dry_run: bool,
    pub force: bool,
    pub json: bool,
    pub integrity: IntegrityCheck,
    pub plugin: Option<PathBuf>,
    /// `-s KEY=VALUE`: plugin settings replacing the config's.
    pub settings: Vec<(String, String)>,
    pub replica: Option<String>,
    /// `-parallelism`: segments downloaded at once.
    pub parallelism: usize,
    /// `-f`: keep applying new changes, checking this often.
    pub follow: Option<std::time::Duration>,
    pub target: String,
}

/// Find the replica a `DB_PATH|REPLICA_URL` argument means, with the
/// command line's plugin `settings` (`-s`) over its own.
pub fn resolve_target(
    target: &str,
    config: Option<&PathBuf>,
    expand: bool,
    replica: Option<&str>,
    settings: &[(String, String)],
) -> anyhow::Result<(ReplicaSpec, Option<PathBuf>, String)> {
    let (mut spec, db, label) = find_target(target, config, expand, replica)?;
    spec.override_settings(settings)?;
    // The label names the target in messages and logs: never a password.
    Ok((spec, db, crate::plugin::redact_url(&label)))
}

fn find_target(
    target: &str,
    config: Option<&PathBuf>,
    expand: bool,
    replica: Option<&str>,
) -> anyhow::Result<(ReplicaSpec, Option<PathBuf>, String)> {
    let (_, file) = load_config(config, expand)?;
    // `sqlite://` marks a database path, as in Litestream.
    let is_path = !target.contains("://") || target.starts_with("sqlite://");
    if is_path {
        let path = std::path::absolute(config::resolve::db_path(target))?;
        let resolved = config::resolve(&file)?;
        if let Some(db) = resolved.dbs.into_iter().find(|d| d.path == path) {
            let spec = match replica {
                Some(name) => db
                    .replicas
                    .iter()
                    .find(|r| r.name == name)
                    .cloned()
                    .with_context(|| format!("database {} has no replica named {name}", path.display()))?,
                None => db.replicas.first().cloned().context("database has no replica")?,
            };
            return Ok((spec, Some(path.clone()), path.display().to_string()));
        }
    }
    if is_path && config::resolve::db_path(target).is_file() {
        // A database path that the config does not list: read as a replica
        // directory it failed deep in the plugin sandbox ("File exists").
        bail!(
            "`{target}` is a file, not a replica directory, and no config file lists it as a database; \
             pass -config with the file that lists it, or the replica's path or URL"
        );
    }
    let db = config::from_url(std::path::Path::new("-"), target, &file)?;
    let spec = db.replicas.into_iter().next().context("no replica")?;
    Ok((spec, None, "-".into()))
}

pub async fn run(runtime: Arc<Runtime>, args: Args) -> anyhow::Result<ExitCode> {
    if args.follow.is_some() && (args.txid.is_some() || args.timestamp.is_some()) {
        bail!("-f follows the newest state; it cannot be combined with -txid or -timestamp");
    }
    let (spec, db_path, label) = resolve_target(
        &args.target,
        args.config.as_ref(),
        !args.no_expand_env,
        args.replica.as_deref(),
        &args.settings,
    )?;
    let output = output_path(&args, db_path)?;
    if args.if_db_not_exists && output.exists() {
        println!("database already exists at {}, skipping restore", output.display());
        return Ok(ExitCode::SUCCESS);
    }
    let target = target(&args)?;
    let plugins = Plugins::default();
    let store = open_store(&runtime, &plugins, &spec, args.plugin.as_deref(), &label).await?;
    restore::check_output(&output, args.force || args.dry_run)?;
    let listing = crate::replica::client::list(&store)
        .await
        .with_context(|| format!("cannot list replica {}", crate::plugin::redact_url(&spec.url)))?;
    let opts = RestoreOptions {
        output: output.clone(),
        target,
        force: args.force,
        integrity: args.integrity,
        dry_run: args.dry_run,
        progress: std::io::stderr().is_terminal() && !args.json,
        parallelism: args.parallelism,
    };
    let started = std::time::Instant::now();
    if listing.is_empty() {
        return from_litestream(&store, &crate::plugin::redact_url(&spec.url), &args, &opts, started).await;
    }
    let outcome = restore::restore_from_listing(&store, &listing, &opts).await?;
    report(&args, &output, &outcome, started.elapsed());
    if let (Some(interval), false) = (args.follow, args.dry_run) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            super::replicate_cmd::wait_for_signal().await;
            let _ = stop_tx.send(true);
        });
        restore::follow(&store, &opts, outcome, interval, stop_rx).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `-o`, else the configured database's own path.
fn output_path(args: &Args, db_path: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match (&args.output, db_path) {
        (Some(o), _) => Ok(o.clone()),
        (None, Some(p)) => Ok(p),
        (None, None) if !args.target.contains("://") => bail!(
            "`{}` is not a database in the config file; to restore from a replica path or URL, pass -o OUTPUT_PATH",
            args.target
        ),
        (None, None) => bail!("restoring from a replica URL needs -o OUTPUT_PATH"),
    }
}

/// `-txid`, `-timestamp`, or the latest state.
fn target(args: &Args) -> anyhow::Result<Target> {
    Ok(match (&args.txid, &args.timestamp) {
        (Some(_), Some(_)) => bail!("use either -txid or -timestamp, not both"),
        (Some(t), None) => Target::Txid(
            u64::from_str_radix(t.trim_start_matches("0x"), 16)
                .with_context(|| format!("-txid `{t}` is not a hexadecimal TXID (e.g. 000000000000002a)"))?,
        ),
        (None, Some(ts)) => Target::Timestamp(
            crate::clock::parse_rfc3339(ts)
                .with_context(|| format!("-timestamp `{ts}` is not RFC 3339 (e.g. 2026-11-25T17:45:29Z)"))?,
        ),
        (None, None) => Target::Latest,
    })
}

/// A replica with no segment of ours: perhaps the Litestream backup of a
/// user who just swapped the binary (decision 23).
async fn from_litestream(
    store: &crate::plugin::PluginStore,
    url: &str,
    args: &Args,
    opts: &RestoreOptions,
    started: std::time::Instant,
) -> anyhow::Result<ExitCode> {
    let found = crate::litestream::find(store).await.with_context(|| format!("cannot list replica {url}"))?;
    let Some(backup) = found else {
        if args.if_replica_exists {
            println!("no backups found in {url}, skipping restore");
            return Ok(ExitCode::SUCCESS);
        }
        bail!("replica {url} holds no backup");
    };
    if args.follow.is_some() {
        bail!("{url} holds {}: -f follows sluice replicas only", backup.describe());
    }
    let done = backup.restore(store, opts).await.with_context(|| format!("cannot restore from {url}"))?;
    report_litestream(args, &opts.output, &backup, &done, started.elapsed());
    Ok(ExitCode::SUCCESS)
}

/// What the restore did: JSON, the dry run's plan, or one line.
fn report(args: &Args, output: &std::path::Path, outcome: &restore::RestoreOutcome, took: std::time::Duration) {
    if args.json {
        let plan: Vec<String> = outcome.plan.iter().map(|n| n.key()).collect();
        println!(
            "{}",
            serde_json::json!({"output": output, "txid": format!("{:016x}", outcome.txid), "segments": plan, "dry_run": args.dry_run, "bytes": outcome.bytes_downloaded})
        );
    } else if args.dry_run {
        let (txid, n) = (outcome.txid, outcome.plan.len());
        println!("would restore TXID {txid:016x} to {} from {n} segments:", output.display());
        for n in &outcome.plan {
            println!("  {n}");
        }
    } else {
        println!(
            "restored {} at TXID {:016x} from {} segments ({} bytes) in {took:.2?}",
            output.display(),
            outcome.txid,
            outcome.plan.len(),
            outcome.bytes_downloaded,
        );
    }
}

/// What a restore from a Litestream backup did, as `restore` reports its
/// own (`-json`: the same fields; `txid` is null for Litestream 0.3).
fn report_litestream(
    args: &Args,
    output: &std::path::Path,
    backup: &crate::litestream::Backup,
    done: &crate::litestream::Restored,
    took: std::time::Duration,
) {
    let txid = done.txid.map(|t| format!("{t:016x}"));
    if args.json {
        println!(
            "{}",
            serde_json::json!({"output": output, "txid": txid, "position": done.position, "segments": done.keys, "dry_run": args.dry_run, "bytes": done.bytes_downloaded, "source": backup.describe()})
        );
        return;
    }
    let (verb, from) = match args.dry_run {
        true => ("would restore", "from"),
        false => ("restored", "from"),
    };
    println!(
        "{verb} {} at {} {from} {} ({} files, {} bytes) in {:.2?}",
        output.display(),
        done.position,
        backup.describe(),
        done.keys.len(),
        done.bytes_downloaded,
        took
    );
    if args.dry_run {
        for k in &done.keys {
            println!("  {k}");
        }
    }
}
