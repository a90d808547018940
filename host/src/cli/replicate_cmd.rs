//! `sluice replicate`: from a config file or `DB_PATH REPLICA_URL`, with
//! Litestream's `-exec` (run the application as a child; final sync when
//! it exits; exit with its status) and `-once`.

use super::ConfigArgs;
use crate::config::{self, DatabaseSpec, FileConfig, dirs::WatchedDir, file::Parsed, socket::SocketSpec};
use crate::plugin::Runtime;
use crate::replicate::{self, Options, Reloader};
use crate::restore::{self, IntegrityCheck, RestoreOptions};
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Run this command as a child; replicate while it runs, exit with its status.
    #[arg(long)]
    pub exec: Option<String>,
    /// Sync once, ship, and exit.
    #[arg(long)]
    pub once: bool,
    /// Take a snapshot at start.
    #[arg(long)]
    pub force_snapshot: bool,
    /// Accepted for Litestream compatibility; retention is always enforced.
    #[arg(long)]
    pub enforce_retention: bool,
    /// Restore a missing database from its replica before replicating.
    #[arg(long)]
    pub restore_if_db_not_exists: bool,
    /// Storage plugin (.wasm) for replicas that name none.
    #[arg(long)]
    pub plugin: Option<PathBuf>,
    /// Plugin setting KEY=VALUE for the REPLICA_URLs (repeatable).
    #[arg(long = "setting", short = 's', value_parser = super::parse_setting)]
    pub settings: Vec<(String, String)>,
    /// Database to replicate (instead of a config file).
    pub db_path: Option<PathBuf>,
    /// Replica URL(s) for DB_PATH.
    pub replica_urls: Vec<String>,
}

/// A config file read and parsed, its warnings not logged yet: `replicate`
/// reads its file before logging exists (the file's `logging:` section
/// decides how to log) and logs them once it does.
pub struct ConfigFile {
    /// `None` when no file was named and none exists at the defaults.
    pub path: Option<PathBuf>,
    pub parsed: Parsed,
}

impl ConfigArgs {
    pub fn read(&self) -> anyhow::Result<ConfigFile> {
        read_config(self.config.as_ref(), !self.no_expand_env)
    }
}

/// Load the config file named by `-config`, the environment or the
/// default locations, logging its warnings. Without `-config`, a missing
/// default is no error.
pub fn load_config(explicit: Option<&PathBuf>, expand: bool) -> anyhow::Result<(Option<PathBuf>, FileConfig)> {
    let ConfigFile { path, parsed } = read_config(explicit, expand)?;
    parsed.log_messages();
    Ok((path, parsed.config))
}

/// `load_config` without logging the warnings.
fn read_config(explicit: Option<&PathBuf>, expand: bool) -> anyhow::Result<ConfigFile> {
    let (path, parsed) = match explicit {
        Some(p) => (Some(p.clone()), config::read(p, expand)?),
        None => match config::default_path() {
            Some(p) if p.exists() => (Some(p.clone()), config::read(&p, expand)?),
            Some(p)
                if std::env::var_os("LITESTREAM_CONFIG").is_some() || std::env::var_os("SLUICE_CONFIG").is_some() =>
            {
                bail!("config file {} (from the environment) does not exist", p.display())
            }
            _ => (None, Parsed::default()),
        },
    };
    Ok(ConfigFile { path, parsed })
}

/// What `replicate` runs, from the command line or the config file.
struct Plan {
    dbs: Vec<DatabaseSpec>,
    exec: Option<String>,
    shutdown_sync_timeout: Duration,
    /// The control socket, if the config enables it.
    socket: Option<SocketSpec>,
    /// `dir` entries with `watch: true`.
    watched: Vec<WatchedDir>,
    /// The file's globals, defaults of databases registered while running.
    file_defaults: Arc<FileConfig>,
}

/// `config` is the file `main` read before setting up logging (`Err` if
/// that failed, reported here as any other error).
pub async fn run(
    make_runtime: impl FnOnce() -> anyhow::Result<Arc<Runtime>>,
    args: Args,
    config: anyhow::Result<ConfigFile>,
) -> anyhow::Result<ExitCode> {
    // SIGTERM and SIGINT are ours before anything else: one that arrives
    // while the plugin runtime starts or plugins compile ends in a clean
    // exit, not in the default death by signal. (`-once` keeps the default: it has
    // no shutdown to run.)
    let mut signals = if args.once { None } else { Some(Signals::new().context("cannot handle SIGTERM/SIGINT")?) };
    // SIGHUP's default would end the run without a final sync.
    let hangups = if args.once { None } else { Some(hangups().context("cannot handle SIGHUP")?) };
    let runtime = make_runtime()?;
    let ConfigFile { path: config_path, parsed } = config?;
    let reload_from = config_path.clone().filter(|_| args.db_path.is_none());
    parsed.log_messages();
    let file = parsed.config;
    let globals = config::resolve(&file).ok();
    let addr = globals.as_ref().and_then(|r| r.addr.clone());
    crate::metrics::set_max_databases(
        globals.as_ref().map_or(crate::metrics::DEFAULT_MAX_DATABASES, |r| r.metrics_max_databases),
    );
    let heartbeat = globals.as_ref().and_then(|r| r.heartbeat.clone());
    let plan = plan(&args, config_path, &file)?;
    let file_dbs = plan.dbs.clone();
    if args.once && plan.exec.is_some() {
        bail!("-exec cannot be combined with -once");
    }
    if args.restore_if_db_not_exists || plan.dbs.iter().any(|d| d.restore_if_db_not_exists) {
        restore_missing_unless_signalled(&runtime, &plan.dbs, args.plugin.as_deref(), signals.as_mut()).await?;
    }
    let opts = Options {
        once: args.once,
        force_snapshot: args.force_snapshot,
        shutdown_sync_timeout: plan.shutdown_sync_timeout,
        default_plugin: args.plugin.clone(),
        heartbeat,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(addr) = addr {
        serve_metrics(addr, stop_rx.clone());
    }
    // A configuration error stops the run here, before the application
    // (-exec) starts and before anything replicates.
    let registry = replicate::prepare(runtime, plan.dbs, opts).await?;
    let socket = if args.once { None } else { plan.socket };
    if let Some(socket) = &socket {
        crate::control::serve(socket, registry.clone(), plan.file_defaults.clone(), stop_rx.clone())?;
    }
    let watching = if args.once { Vec::new() } else { plan.watched };
    let keep_alive = socket.is_some() || !watching.is_empty();
    for dir in watching {
        crate::replicate::watch_dir(dir, registry.clone(), stop_rx.clone());
    }
    if let Some(hangups) = hangups {
        let reloader = reload_from
            .map(|path| Reloader::new(path, !args.config.no_expand_env, registry.clone(), &file_dbs, keep_alive));
        tokio::spawn(reload_on_hangup(hangups, reloader, stop_rx.clone()));
    }
    let mut engine = tokio::spawn(replicate::run(registry, stop_rx, keep_alive));
    let code = match (plan.exec, signals) {
        (Some(cmd), Some(signals)) => run_child(&cmd, &stop_tx, signals).await?,
        (None, Some(signals)) => match until_signal(signals, &stop_tx, &mut engine).await? {
            Some(code) => return Ok(code),
            None => ExitCode::SUCCESS,
        },
        (Some(_), None) => bail!("-exec cannot be combined with -once"),
        (None, None) => ExitCode::SUCCESS,
    };
    engine.await.context("replication task panicked")??;
    Ok(code)
}

/// The databases to replicate: `DB_PATH REPLICA_URL...` if given, else
/// the config file's.
fn plan(args: &Args, config_path: Option<PathBuf>, file: &FileConfig) -> anyhow::Result<Plan> {
    match (&args.db_path, args.replica_urls.is_empty()) {
        (Some(db), false) => Ok(Plan {
            dbs: vec![from_urls(db, &args.replica_urls, &args.settings, file)?],
            exec: args.exec.clone(),
            shutdown_sync_timeout: config::resolve::DEFAULT_SHUTDOWN_SYNC_TIMEOUT,
            socket: None,
            watched: Vec::new(),
            file_defaults: Arc::new(file.clone()),
        }),
        (Some(_), true) => {
            bail!("replicate DB_PATH needs a REPLICA_URL too (e.g. sluice replicate /data/app.db s3://bucket/app)")
        }
        (None, _) if !args.settings.is_empty() => bail!(
            "-s sets plugin settings for the REPLICA_URLs of `replicate DB_PATH REPLICA_URL...`; with a config file, give them under the replica"
        ),
        (None, _) => {
            let resolved = config::resolve(file)?;
            // With a control socket or a watched directory, databases may
            // come later (Litestream starts with none then too).
            if resolved.dbs.is_empty() && resolved.socket.is_none() && resolved.watched.is_empty() {
                match config_path {
                    Some(p) => bail!("{} lists no databases under `dbs:`", p.display()),
                    None => bail!(
                        "no config file found (pass -config PATH, set LITESTREAM_CONFIG, or create /etc/litestream.yml) and no DB_PATH REPLICA_URL given"
                    ),
                }
            }
            let exec = args.exec.clone().or(resolved.exec);
            Ok(Plan {
                dbs: resolved.dbs,
                exec,
                shutdown_sync_timeout: resolved.shutdown_sync_timeout,
                socket: resolved.socket,
                watched: resolved.watched,
                file_defaults: Arc::new(file.clone()),
            })
        }
    }
}

/// One database replicated to every URL given, the replicas after the
/// first named with their position (`s3`, `s32`, ...).
fn from_urls(
    db: &std::path::Path,
    urls: &[String],
    settings: &[(String, String)],
    file: &FileConfig,
) -> anyhow::Result<DatabaseSpec> {
    let db = &config::resolve::db_path(&db.to_string_lossy());
    let Some(first) = urls.first() else { bail!("replicate DB_PATH needs a REPLICA_URL too") };
    let mut spec = config::from_url(db, first, file)?;
    for (i, url) in urls.iter().enumerate().skip(1) {
        let extra = config::from_url(db, url, file)?;
        spec.replicas.extend(extra.replicas.into_iter().map(|mut r| {
            r.name = format!("{}{}", r.name, i + 1);
            r
        }));
    }
    for r in &mut spec.replicas {
        r.override_settings(settings)?;
    }
    Ok(spec)
}

/// `restore_missing`, given up when a signal arrives.
async fn restore_missing_unless_signalled(
    runtime: &Arc<Runtime>,
    dbs: &[DatabaseSpec],
    plugin: Option<&std::path::Path>,
    signals: Option<&mut Signals>,
) -> anyhow::Result<()> {
    let restore = restore_missing(runtime, dbs, plugin);
    match signals {
        // A restore can take minutes: a signal stops it (its temp file is
        // removed by the next restore) rather than waiting for it.
        Some(signals) => tokio::select! {
            restored = restore => restored,
            _ = signals.recv() => bail!("interrupted by a signal while restoring missing databases; nothing was replicated"),
        },
        None => restore.await,
    }
}

fn serve_metrics(addr: String, stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        if let Err(e) = crate::metrics::serve(&addr, stop).await {
            tracing::error!("{e:#}");
        }
    });
}

/// Replicate until a signal asks for the final sync (`None`: the caller
/// waits for it), or until every database's loop ended unasked: only
/// errors do that, and nothing is left to replicate (`Some(FAILURE)`).
async fn until_signal(
    mut signals: Signals,
    stop: &watch::Sender<bool>,
    engine: &mut JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<Option<ExitCode>> {
    tokio::select! {
        _ = signals.recv() => {
            tracing::info!("signal received, syncing before exit");
            let _ = stop.send(true);
            Ok(None)
        }
        ended = engine => {
            ended.context("replication task panicked")??;
            Ok(Some(ExitCode::FAILURE))
        }
    }
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

fn hangups() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

/// Reload the config file on each SIGHUP until shutdown begins (without a
/// config file, say there is nothing to reload).
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    mut reloader: Option<Reloader>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = hangups.recv() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        match reloader.as_mut() {
            Some(r) => r.reload().await,
            None => tracing::warn!("SIGHUP: no config file to reload (replicating DB_PATH REPLICA_URL); ignored"),
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
