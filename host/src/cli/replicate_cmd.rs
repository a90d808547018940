//! `sluice replicate`: from a config file or `DB_PATH REPLICA_URL`, with
//! Litestream's `-exec` (run the application as a child; final sync when
//! it exits; exit with its status) and `-once`.

use crate::config::{self, DatabaseSpec, FileConfig};
use crate::plugin::Runtime;
use crate::replicate::{self, Options};
use crate::restore::{self, IntegrityCheck, RestoreOptions};
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::watch;

pub struct Args {
    pub config: Option<PathBuf>,
    pub no_expand_env: bool,
    pub exec: Option<String>,
    pub once: bool,
    pub force_snapshot: bool,
    pub restore_if_db_not_exists: bool,
    pub plugin: Option<PathBuf>,
    pub db_path: Option<PathBuf>,
    pub replica_urls: Vec<String>,
}

/// Load the config file named by `-config`, the environment or the
/// default locations. Without `-config`, a missing default is no error.
pub fn load_config(explicit: Option<&PathBuf>, expand: bool) -> anyhow::Result<(Option<PathBuf>, FileConfig)> {
    match explicit {
        Some(p) => Ok((Some(p.clone()), config::load(p, expand)?)),
        None => match config::default_path() {
            Some(p) if p.exists() => Ok((Some(p.clone()), config::load(&p, expand)?)),
            Some(p)
                if std::env::var_os("LITESTREAM_CONFIG").is_some() || std::env::var_os("SLUICE_CONFIG").is_some() =>
            {
                bail!("config file {} (from the environment) does not exist", p.display())
            }
            _ => Ok((None, FileConfig::default())),
        },
    }
}

pub async fn run(make_runtime: impl FnOnce() -> anyhow::Result<Arc<Runtime>>, args: Args) -> anyhow::Result<ExitCode> {
    // SIGTERM and SIGINT are ours before anything else: one that arrives
    // while the config loads or plugins compile ends in a clean exit, not
    // in the default death by signal. (`-once` keeps the default: it has
    // no shutdown to run.)
    let mut signals = if args.once { None } else { Some(Signals::new().context("cannot handle SIGTERM/SIGINT")?) };
    let runtime = make_runtime()?;
    let (config_path, file) = load_config(args.config.as_ref(), !args.no_expand_env)?;
    let globals = config::resolve(&file).ok();
    let addr = globals.as_ref().and_then(|r| r.addr.clone());
    let heartbeat = globals.as_ref().and_then(|r| r.heartbeat.clone());
    let (dbs, exec, timeout) = match (&args.db_path, args.replica_urls.is_empty()) {
        (Some(db), false) => {
            let db = &config::resolve::db_path(&db.to_string_lossy());
            let mut spec = config::from_url(db, &args.replica_urls[0], &file)?;
            for (i, url) in args.replica_urls.iter().enumerate().skip(1) {
                let extra = config::from_url(db, url, &file)?;
                spec.replicas.extend(extra.replicas.into_iter().map(|mut r| {
                    r.name = format!("{}{}", r.name, i + 1);
                    r
                }));
            }
            (vec![spec], args.exec.clone(), config::resolve::DEFAULT_SHUTDOWN_SYNC_TIMEOUT)
        }
        (Some(_), true) => {
            bail!("replicate DB_PATH needs a REPLICA_URL too (e.g. sluice replicate /data/app.db s3://bucket/app)")
        }
        (None, _) => {
            let resolved = config::resolve(&file)?;
            if resolved.dbs.is_empty() {
                match config_path {
                    Some(p) => bail!("{} lists no databases under `dbs:`", p.display()),
                    None => bail!(
                        "no config file found (pass -config PATH, set LITESTREAM_CONFIG, or create /etc/litestream.yml) and no DB_PATH REPLICA_URL given"
                    ),
                }
            }
            (resolved.dbs, args.exec.clone().or(resolved.exec), resolved.shutdown_sync_timeout)
        }
    };
    if args.once && exec.is_some() {
        bail!("-exec cannot be combined with -once");
    }
    if args.restore_if_db_not_exists || dbs.iter().any(|d| d.restore_if_db_not_exists) {
        let restore = restore_missing(&runtime, &dbs, args.plugin.as_deref());
        match signals.as_mut() {
            // A restore can take minutes: a signal stops it (its temp file is
            // removed by the next restore) rather than waiting for it.
            Some(signals) => tokio::select! {
                restored = restore => restored?,
                _ = signals.recv() => bail!("interrupted by a signal while restoring missing databases; nothing was replicated"),
            },
            None => restore.await?,
        }
    }
    let opts = Options {
        once: args.once,
        force_snapshot: args.force_snapshot,
        shutdown_sync_timeout: timeout,
        default_plugin: args.plugin.clone(),
        heartbeat,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(addr) = addr {
        let rx = stop_rx.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(&addr, rx).await {
                tracing::error!("{e:#}");
            }
        });
    }
    // A configuration error stops the run here, before the application
    // (-exec) starts and before anything replicates.
    let prepared = replicate::prepare(runtime, dbs, opts).await?;
    let mut engine = tokio::spawn(replicate::run(prepared, stop_rx));

    let code = match (exec, signals) {
        (Some(cmd), Some(signals)) => run_child(&cmd, &stop_tx, signals).await?,
        (None, Some(mut signals)) => {
            tokio::select! {
                _ = signals.recv() => {
                    tracing::info!("signal received, syncing before exit");
                    let _ = stop_tx.send(true);
                }
                // Every database's loop ended without being asked to: only
                // errors do that, and nothing is left to replicate.
                ended = &mut engine => {
                    ended.context("replication task panicked")??;
                    return Ok(ExitCode::FAILURE);
                }
            }
            ExitCode::SUCCESS
        }
        (Some(_), None) => bail!("-exec cannot be combined with -once"),
        (None, None) => ExitCode::SUCCESS,
    };
    engine.await.context("replication task panicked")??;
    Ok(code)
}

async fn restore_missing(
    runtime: &Arc<Runtime>,
    dbs: &[DatabaseSpec],
    plugin: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let plugins = replicate::Plugins::default();
    for db in dbs.iter().filter(|d| !d.path.exists()) {
        let Some(replica) = db.replicas.first() else { continue };
        let store = replicate::open_store(runtime, &plugins, replica, plugin, &db.path.display().to_string()).await?;
        let opts = RestoreOptions {
            output: db.path.clone(),
            target: crate::replica::Target::Latest,
            force: false,
            integrity: IntegrityCheck::default(),
            dry_run: false,
            progress: false,
            parallelism: restore::PARALLEL_DOWNLOADS,
        };
        let listing = crate::replica::client::list(&store).await?;
        if listing.is_empty() {
            match crate::litestream::find(&store).await? {
                Some(backup) => {
                    let done = backup.restore(&store, &opts).await?;
                    tracing::info!(database = %db.path.display(), "restored missing database at {} from {}", done.position, backup.describe());
                }
                None => tracing::info!(database = %db.path.display(), "no database and no backup yet; starting fresh"),
            }
            continue;
        }
        let outcome = restore::restore_from_listing(&store, &listing, &opts).await?;
        tracing::info!(database = %db.path.display(), "restored missing database at TXID {:016x}", outcome.txid);
    }
    Ok(())
}

/// Run the application; forward SIGINT/SIGTERM; on its exit, stop
/// replication (final sync) and exit with its status.
///
/// The command line is split into words (quotes as a shell has them) and
/// run directly, as Litestream does: a shell in between received the
/// signals and left the application running, orphaned, when sluice exited.
/// A command that needs a shell says so: `-exec "sh -c '...'"`.
async fn run_child(cmd: &str, stop: &watch::Sender<bool>, mut signals: Signals) -> anyhow::Result<ExitCode> {
    let words = shlex::split(cmd)
        .filter(|w| !w.is_empty())
        .with_context(|| format!("-exec `{cmd}`: unbalanced quotes or an empty command"))?;
    let mut child = tokio::process::Command::new(&words[0])
        .args(&words[1..])
        .spawn()
        .with_context(|| format!("cannot start -exec command `{cmd}`"))?;
    let pid = child.id().map(|p| p as i32);
    let status = loop {
        tokio::select! {
            s = child.wait() => break s?,
            sig = signals.recv() => forward(pid, sig),
        }
    };
    let _ = stop.send(true);
    Ok(match status.code() {
        Some(c) => ExitCode::from(c.clamp(0, 255) as u8),
        None => ExitCode::from(1),
    })
}

fn forward(pid: Option<i32>, sig: i32) {
    if let Some(pid) = pid {
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// SIGTERM and SIGINT, handled from the moment this is built on.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// The next signal (`libc::SIGTERM` or `libc::SIGINT`), including one
    /// that arrived before this call.
    pub async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.int.recv() => libc::SIGINT,
        }
    }
}

/// Wait for SIGTERM or SIGINT (Ctrl-C alone if they cannot be handled).
pub async fn wait_for_signal() {
    match Signals::new() {
        Ok(mut signals) => {
            signals.recv().await;
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
