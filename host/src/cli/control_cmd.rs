//! `info`, `list`, `sync`, `start`, `stop`, `register`, `unregister`: ask a
//! running `replicate` through its control socket, and print the answer
//! as Litestream 0.5 does (text, or `-json`).

use crate::control::api::*;
use crate::control::client::call;
use hyper::Method;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// Litestream's default socket path (`socket.path` in the config).
const DEFAULT_SOCKET: &str = crate::config::socket::DEFAULT_SOCKET_PATH;

#[derive(clap::Args, Debug)]
pub struct Socket {
    /// Path to the control socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Output raw JSON instead of human-readable text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct QueryArgs {
    #[command(flatten)]
    socket: Socket,
    /// Maximum time to wait, in seconds.
    #[arg(long, default_value_t = DEFAULT_QUERY_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

#[derive(clap::Args, Debug)]
pub struct PathArgs {
    #[command(flatten)]
    socket: Socket,
    /// Maximum time to wait, in seconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Path to the SQLite database file.
    db_path: String,
}

#[derive(clap::Args, Debug)]
pub struct SyncArgs {
    #[command(flatten)]
    args: PathArgs,
    /// Block until the sync is in every replica, not only captured.
    #[arg(long)]
    wait: bool,
}

#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    #[command(flatten)]
    args: PathArgs,
    /// Replica URL (e.g. s3://bucket/prefix, file:///backup/path). Required.
    #[arg(long)]
    replica: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct UnregisterArgs {
    #[command(flatten)]
    args: PathArgs,
    /// Show what would be unregistered, sending nothing.
    #[arg(long)]
    dry_run: bool,
}

/// The database path as the daemon should see it: absolute, from here.
fn absolute(raw: &str) -> anyhow::Result<String> {
    Ok(std::path::absolute(crate::config::resolve::db_path(raw))?.display().to_string())
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A request's wait plus a margin for the answer to travel: the daemon
/// bounds its own work by the same timeout and answers when it runs out.
fn with_margin(n: u64) -> Duration {
    secs(n) + Duration::from_secs(5)
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn info(a: QueryArgs) -> anyhow::Result<()> {
    let v = call(&a.socket.socket, Method::GET, "/info", None, secs(a.timeout), "info").await?;
    if a.socket.json {
        return print_json(&v);
    }
    let r: InfoResponse = serde_json::from_value(v)?;
    println!("sluice {}", r.version);
    println!("  PID:        {}", r.pid);
    println!("  Uptime:     {}", humantime::format_duration(secs(r.uptime_seconds)));
    println!("  Started at: {}", r.started_at);
    println!("  Databases:  {}", r.database_count);
    Ok(())
}

pub async fn list(a: QueryArgs) -> anyhow::Result<()> {
    let v = call(&a.socket.socket, Method::GET, "/list", None, secs(a.timeout), "list").await?;
    if a.socket.json {
        return print_json(&v);
    }
    let r: ListResponse = serde_json::from_value(v)?;
    if r.databases.is_empty() {
        println!("No databases.");
    }
    for d in r.databases {
        match d.last_sync_at {
            Some(at) => println!("{} [{}] (last sync: {at})", d.path, d.status),
            None => println!("{} [{}]", d.path, d.status),
        }
    }
    Ok(())
}

pub async fn sync(a: SyncArgs) -> anyhow::Result<()> {
    let (p, started) = (&a.args, std::time::Instant::now());
    let body = json!({"path": absolute(&p.db_path)?, "wait": a.wait, "timeout": p.timeout});
    let v = call(&p.socket.socket, Method::POST, "/sync", Some(body), with_margin(p.timeout), "sync").await?;
    let r: SyncResponse = serde_json::from_value(v)?;
    let ms = started.elapsed().as_millis() as u64;
    let mut out = json!({"db_path": r.path, "status": r.status, "txid": r.txid});
    if a.wait {
        out["replica_txid"] = json!(r.replicated_txid);
    }
    out["duration_ms"] = json!(ms);
    if p.socket.json {
        return print_json(&out);
    }
    println!("db_path: {}", r.path);
    println!("txid: {}", r.txid);
    if a.wait {
        println!("replica_txid: {}", r.replicated_txid);
    }
    println!("duration_ms: {ms}");
    Ok(())
}

pub async fn register(a: RegisterArgs) -> anyhow::Result<()> {
    let Some(replica) = a.replica else {
        anyhow::bail!("-replica is required\nTry: sluice register -replica s3://bucket/prefix /path/to/db");
    };
    let p = &a.args;
    let body = json!({"path": absolute(&p.db_path)?, "replica_url": replica});
    let v = call(&p.socket.socket, Method::POST, "/register", Some(body), with_margin(p.timeout), "register").await?;
    let r: StatusResponse = serde_json::from_value(v)?;
    let status = if r.status == "already_registered" && !p.socket.json { "already registered" } else { &r.status };
    let out = json!({"status": status, "db_path": r.path, "replica": replica, "socket": p.socket.socket});
    print_fields(&out, p.socket.json, &["status", "db_path", "replica", "socket"])
}

pub async fn unregister(a: UnregisterArgs) -> anyhow::Result<()> {
    let p = &a.args;
    let path = absolute(&p.db_path)?;
    if a.dry_run {
        println!("Dry run: unregister request preview");
        println!("  database: {path}");
        println!("  socket: {}", p.socket.socket.display());
        println!("  final sync: the daemon syncs the database and its replicas before the command completes");
        println!("  timeout: {}s", p.timeout);
        println!("No unregister request was sent.");
        return Ok(());
    }
    let body = json!({"path": path, "timeout": p.timeout});
    let v =
        call(&p.socket.socket, Method::POST, "/unregister", Some(body), with_margin(p.timeout), "unregister").await?;
    let r: StatusResponse = serde_json::from_value(v)?;
    let out =
        json!({"status": r.status, "db_path": r.path, "final_txid": r.txid.unwrap_or(0), "socket": p.socket.socket});
    print_fields(&out, p.socket.json, &["status", "db_path", "final_txid", "socket"])
}

/// `start` (`on`) or `stop`.
pub async fn toggle(p: PathArgs, on: bool) -> anyhow::Result<()> {
    let (endpoint, what, state) = if on { ("/start", "start", "running") } else { ("/stop", "stop", "stopped") };
    let body = json!({"path": absolute(&p.db_path)?, "timeout": p.timeout});
    let v = call(&p.socket.socket, Method::POST, endpoint, Some(body), with_margin(p.timeout), what).await?;
    let r: StatusResponse = serde_json::from_value(v)?;
    let out = json!({"status": r.status, "db_path": r.path, "state": state, "txid": r.txid.unwrap_or(0), "socket": p.socket.socket});
    print_fields(&out, p.socket.json, &["status", "db_path", "state", "txid", "socket"])
}

/// `key: value` lines in Litestream's order, or the JSON.
fn print_fields(out: &Value, json: bool, order: &[&str]) -> anyhow::Result<()> {
    if json {
        return print_json(out);
    }
    for key in order {
        match &out[key] {
            Value::String(s) => println!("{key}: {s}"),
            other => println!("{key}: {other}"),
        }
    }
    Ok(())
}
