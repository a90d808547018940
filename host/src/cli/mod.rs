//! The command line. Thin: parse, set up logging and the runtime, call
//! the library, map the outcome to an exit status.

mod args;
mod plugin_cmd;

use crate::plugin::{Runtime, SandboxConfig};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "sluice", version, about = "SQLite streaming replication with sandboxed WebAssembly storage plugins")]
struct Cli {
    /// Log level: trace, debug, info, warn, error.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Inspect, check and export storage plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Print the version.
    Version,
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
        /// Replica URL or path to check against (objects go under a temporary prefix).
        url: String,
    },
    /// Write the bundled plugins into DIR as NAME.wasm.
    Export { dir: PathBuf },
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse_from(args::normalize(std::env::args()));
    crate::logging::init(&cli.log_level, crate::logging::Format::Text);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Version => {
            println!("sluice {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin { command } => match command {
            PluginCommand::Info { plugin, json } => {
                let rt = Runtime::with_default_cache().context("cannot start the plugin runtime")?;
                plugin_cmd::info(&rt, &plugin, json).await?;
                Ok(ExitCode::SUCCESS)
            }
            PluginCommand::Check { plugin, settings, memory_mib, cpu_ms, url } => {
                let rt = Runtime::with_default_cache().context("cannot start the plugin runtime")?;
                let sandbox = SandboxConfig { memory_mib, cpu_ms, allow_hosts: None };
                let ok = plugin_cmd::check(&rt, plugin.as_deref(), &url, settings, &sandbox).await?;
                Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
            PluginCommand::Export { dir } => {
                for path in plugin_cmd::export(&dir)? {
                    println!("{}", path.display());
                }
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}
