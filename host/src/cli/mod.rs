//! The command line, Litestream-compatible. Thin: parse, set up logging
//! and the runtime, call the library, map the outcome to an exit status.

mod args;
mod control_cmd;
mod examples;
mod info_cmd;
mod plugin_cmd;
mod replicate_cmd;
mod restore_cmd;

use crate::config::FileConfig;
use crate::plugin::{Runtime, SandboxConfig};
use crate::restore::IntegrityCheck;
use anyhow::Context;
use clap::{Parser, Subcommand};
use replicate_cmd::ConfigFile;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "sluice", version, about = "SQLite streaming replication with sandboxed WebAssembly storage plugins")]
struct Cli {
    /// Log level: trace, debug, info, warn, error (default: the config's `logging.level`, else info).
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
struct ConfigArgs {
    /// Config file (default: $SLUICE_CONFIG, $LITESTREAM_CONFIG, /etc/sluice.yml, /etc/litestream.yml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Do not expand $VAR / ${VAR} in the config file.
    #[arg(long)]
    no_expand_env: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Replicate databases continuously (config file, or DB_PATH REPLICA_URL...).
    #[command(after_help = examples::REPLICATE)]
    Replicate(replicate_cmd::Args),
    /// Restore a database from a replica.
    #[command(after_help = examples::RESTORE)]
    Restore(RestoreArgs),
    /// List configured databases.
    #[command(after_help = examples::DATABASES)]
    Databases {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        json: bool,
    },
    /// List a replica's segments (Litestream's `ltx`; `wal` is its old name).
    #[command(aliases = ["segments", "wal"], after_help = examples::LTX)]
    Ltx {
        #[command(flatten)]
        config: ConfigArgs,
        /// Level to list (0-9), or `all`.
        #[arg(long, default_value = "0")]
        level: String,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        plugin: Option<PathBuf>,
        /// Plugin setting KEY=VALUE (repeatable), replacing the config's.
        #[arg(long = "setting", short = 's', value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        /// Configured database path, or replica URL.
        target: String,
    },
    /// Replication status of configured databases.
    #[command(after_help = examples::STATUS)]
    Status {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        json: bool,
        db: Option<String>,
    },
    /// Forget a database's local state; the next sync snapshots.
    #[command(after_help = examples::RESET)]
    Reset {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the files that would be removed, removing nothing.
        #[arg(long)]
        dry_run: bool,
        db: String,
    },
    /// Inspect, check and export storage plugins.
    #[command(after_help = examples::PLUGIN)]
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Show information about a running `replicate` (control socket).
    #[command(after_help = examples::INFO)]
    Info(control_cmd::QueryArgs),
    /// List the databases a running `replicate` manages (control socket).
    #[command(after_help = examples::LIST)]
    List(control_cmd::QueryArgs),
    /// Force an immediate sync of a database (control socket).
    #[command(after_help = examples::SYNC)]
    Sync(control_cmd::SyncArgs),
    /// Start replicating a database again after `stop` (control socket).
    #[command(after_help = examples::START)]
    Start(control_cmd::PathArgs),
    /// Stop replicating a database, after its final sync (control socket).
    #[command(after_help = examples::STOP)]
    Stop(control_cmd::PathArgs),
    /// Add a database to a running `replicate` (control socket).
    #[command(after_help = examples::REGISTER)]
    Register(control_cmd::RegisterArgs),
    /// Remove a database from a running `replicate`, after its final sync (control socket).
    #[command(after_help = examples::UNREGISTER)]
    Unregister(control_cmd::UnregisterArgs),
    /// Print the version.
    #[command(after_help = examples::VERSION)]
    Version {
        /// Also the build's details: contract, bundled plugins, runtime, platform.
        #[arg(long)]
        verbose: bool,
    },
}

#[derive(clap::Args, Debug)]
struct RestoreArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Output path (required when restoring from a URL).
    #[arg(short = 'o', long = "o")]
    output: Option<PathBuf>,
    /// Restore to this TXID (hex).
    #[arg(long)]
    txid: Option<String>,
    /// Restore to the newest state at or before this time (RFC 3339).
    #[arg(long)]
    timestamp: Option<String>,
    /// Do nothing (exit 0) if the output database exists.
    #[arg(long)]
    if_db_not_exists: bool,
    /// Do nothing (exit 0) if the replica has no backup.
    #[arg(long)]
    if_replica_exists: bool,
    /// Print the plan only.
    #[arg(long)]
    dry_run: bool,
    /// Replace an existing output.
    #[arg(long)]
    force: bool,
    /// JSON output.
    #[arg(long)]
    json: bool,
    /// Check the result with SQLite before writing it: none, quick
    /// (PRAGMA quick_check) or full (PRAGMA integrity_check).
    #[arg(long, value_enum, default_value_t)]
    integrity_check: IntegrityCheck,
    /// Replica to restore from, by name (configured databases).
    #[arg(long)]
    replica: Option<String>,
    /// Segments downloaded at once.
    #[arg(long, default_value_t = crate::restore::PARALLEL_DOWNLOADS, value_parser = parse_parallelism)]
    parallelism: usize,
    /// Follow: keep applying new changes to the output until interrupted.
    #[arg(short = 'f', long = "follow")]
    follow: bool,
    /// How often `-f` checks the replica for new changes.
    #[arg(long, default_value = "1s")]
    follow_interval: String,
    /// Storage plugin (.wasm) to read the replica with.
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// Plugin setting KEY=VALUE (repeatable), replacing the config's.
    #[arg(long = "setting", short = 's', value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    /// Configured database path, or replica URL.
    target: String,
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// Print what a plugin declares (a .wasm path, or a bundled name such as `file`).
    Info {
        plugin: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the conformance suite against a real store.
    Check {
        /// Plugin to check; default: the bundled plugin for the URL's scheme.
        #[arg(long)]
        plugin: Option<PathBuf>,
        /// Plugin setting KEY=VALUE (repeatable), e.g. region=us-east-1.
        #[arg(long = "setting", short = 's', value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        /// Memory limit of the plugin sandbox, MiB.
        #[arg(long)]
        memory_mib: Option<u64>,
        /// CPU budget per plugin call, milliseconds.
        #[arg(long)]
        cpu_ms: Option<u64>,
        /// Outbound hosts the plugin may reach (default: derived from the URL).
        #[arg(long = "allow-host")]
        allow_hosts: Vec<String>,
        /// Replica URL or path to check against (objects go under a temporary prefix).
        url: String,
    },
    /// Write the bundled plugins into DIR as NAME.wasm.
    Export { dir: PathBuf },
}

/// `restore -parallelism`: 1 to `MAX_PARALLELISM`.
fn parse_parallelism(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=crate::restore::MAX_PARALLELISM).contains(&n) => Ok(n),
        _ => Err(format!("expected a number of downloads from 1 to {}, got `{s}`", crate::restore::MAX_PARALLELISM)),
    }
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        // Not echoed: it may be a secret missing its `KEY=`.
        .ok_or_else(|| "expected KEY=VALUE".to_string())
}

/// glibc malloc arenas. By default glibc gives each thread that allocates
/// its own arena (up to 8 per core), each keeping freed memory resident;
/// sluice's threads mostly hand buffers to one another, so two arenas keep
/// contention low at a fraction of the idle memory.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: libc::c_int = 2;
/// Allocations from this size up get their own mapping, returned to the
/// system when freed. glibc otherwise raises the threshold after the first
/// such free, and the 1 MiB segment blocks then stay resident in the heap
/// between syncs (measured: 2.5 MB more peak RSS, for no speed gain).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_MMAP_THRESHOLD: libc::c_int = 256 * 1024;
/// Free memory at the top of a heap is kept up to this size rather than
/// returned to the system. At glibc's default (128 KiB) every sync gave
/// back the ~80 KB its level-0 buffers had used, and faulted it in again
/// (zeroed page by page) at the next one.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_TRIM_THRESHOLD: libc::c_int = 1024 * 1024;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // SAFETY: mallopt only adjusts allocator tuning; called before any
    // other thread exists.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD);
    }
    let Cli { log_level, command } = Cli::parse_from(args::normalize(std::env::args()));
    // `replicate` reads its config file once, here: its `logging:` section
    // sets up the logging that its warnings then go to.
    let replicate_config = match &command {
        Command::Replicate(args) => Some(args.config.read()),
        _ => None,
    };
    let file = replicate_config.as_ref().and_then(|c| c.as_ref().ok()).map(|c| &c.parsed.config);
    crate::logging::init(&logging_settings(log_level.as_deref(), replicate_config.is_some(), file));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command, replicate_config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `-log-level`, `LOG_LEVEL` and the config file's `logging:` section;
/// `replicate` (a daemon) logs as Litestream's does.
fn logging_settings(log_level: Option<&str>, replicate: bool, file: Option<&FileConfig>) -> crate::logging::Settings {
    let env_level = std::env::var("LOG_LEVEL").ok();
    crate::logging::Settings::resolve(log_level, env_level.as_deref(), file.map(|f| &f.logging), replicate)
}

fn runtime() -> anyhow::Result<std::sync::Arc<Runtime>> {
    Runtime::with_default_cache().context("cannot start the plugin runtime")
}

/// Run the command; `replicate_config` is `replicate`'s config file, which
/// `main` read before setting up logging.
async fn run(command: Command, replicate_config: Option<anyhow::Result<ConfigFile>>) -> anyhow::Result<ExitCode> {
    match command {
        Command::Version { verbose } => {
            println!("sluice v{}", env!("CARGO_PKG_VERSION"));
            if verbose {
                info_cmd::build_details();
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Replicate(args) => {
            // Read by `main` to set up logging; read here only if it was not.
            let config = replicate_config.unwrap_or_else(|| args.config.read());
            replicate_cmd::run(runtime, args, config).await
        }
        Command::Restore(args) => restore_cmd::run(runtime()?, args.into_restore_cmd()?).await,
        Command::Databases { config, json } => {
            info_cmd::databases(config.config.as_ref(), !config.no_expand_env, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ltx { config, level, json, plugin, settings, target } => {
            let expand = !config.no_expand_env;
            let (spec, _, label) =
                restore_cmd::resolve_target(&target, config.config.as_ref(), expand, None, &settings)?;
            info_cmd::ltx(runtime()?, &spec, &label, &level, json, plugin.as_deref()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config, json, db } => {
            info_cmd::status(config.config.as_ref(), !config.no_expand_env, db.as_deref(), json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reset { config, dry_run, db } => {
            info_cmd::reset(config.config.as_ref(), !config.no_expand_env, &db, dry_run)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin { command } => plugin(command).await,
        Command::Info(a) => control_cmd::info(a).await.map(|_| ExitCode::SUCCESS),
        Command::List(a) => control_cmd::list(a).await.map(|_| ExitCode::SUCCESS),
        Command::Sync(a) => control_cmd::sync(a).await.map(|_| ExitCode::SUCCESS),
        Command::Start(a) => control_cmd::toggle(a, true).await.map(|_| ExitCode::SUCCESS),
        Command::Stop(a) => control_cmd::toggle(a, false).await.map(|_| ExitCode::SUCCESS),
        Command::Register(a) => control_cmd::register(a).await.map(|_| ExitCode::SUCCESS),
        Command::Unregister(a) => control_cmd::unregister(a).await.map(|_| ExitCode::SUCCESS),
    }
}

impl RestoreArgs {
    fn into_restore_cmd(self) -> anyhow::Result<restore_cmd::Args> {
        let follow = if self.follow {
            Some(crate::config::resolve::duration(&self.follow_interval, "-follow-interval")?)
        } else {
            None
        };
        Ok(restore_cmd::Args {
            config: self.config.config,
            no_expand_env: self.config.no_expand_env,
            output: self.output,
            txid: self.txid,
            timestamp: self.timestamp,
            if_db_not_exists: self.if_db_not_exists,
            if_replica_exists: self.if_replica_exists,
            dry_run: self.dry_run,
            force: self.force,
            json: self.json,
            integrity: self.integrity_check,
            plugin: self.plugin,
            settings: self.settings,
            replica: self.replica,
            parallelism: self.parallelism,
            follow,
            target: self.target,
        })
    }
}

async fn plugin(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Info { plugin, json } => {
            plugin_cmd::info(&runtime()?, &plugin, json).await?;
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Check { plugin, settings, memory_mib, cpu_ms, allow_hosts, url } => {
            let allow_hosts = (!allow_hosts.is_empty()).then_some(allow_hosts);
            let sandbox = SandboxConfig { memory_mib, cpu_ms, allow_hosts, ..SandboxConfig::default() };
            let ok = plugin_cmd::check(&runtime()?, plugin.as_deref(), &url, settings, &sandbox).await?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        PluginCommand::Export { dir } => {
            for path in plugin_cmd::export(&dir)? {
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
