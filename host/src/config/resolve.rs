//! From the file's loose shape to what the engine runs: defaults filled
//! in (Litestream's), URLs built from expanded forms, credentials found,
//! durations parsed. Every error says which database or replica and what
//! is expected.

use super::file::{DbConfig, FileConfig, ReplicaConfig};
use crate::capture::CaptureConfig;
use crate::plugin::{SandboxConfig, normalize_url};
use crate::replica::compact::CompactionConfig;
use crate::replica::retention::RetentionConfig;
use crate::segment::sealed::Keys;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(1);
/// How long a database stays quiet (nothing captured) before sluice
/// closes its files, the eight descriptors its three connections hold
/// (decision 29). Long enough that a database written every few seconds
/// keeps them open (reopening costs three connections and a stat), short
/// enough that thousands of idle tenants hold almost none.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_SNAPSHOT_RETENTION: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_L0_RETENTION: Duration = Duration::from_secs(300);
pub const DEFAULT_SHUTDOWN_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(300);
/// Validation of the capture against the live database, when no
/// `validation-interval` is set (`0` turns it off). Reading every page
/// through SQLite took 1.0 s for a 1.06 GB database (release build, warm
/// cache), and it is skipped while nothing new was captured: once a day
/// costs nothing measurable, and proves the capture daily.
pub const DEFAULT_VALIDATION_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Litestream 0.5's compaction levels: L1 every 30s, L2 every 5m, L3 hourly.
pub const DEFAULT_LEVELS: [Duration; 3] =
    [Duration::from_secs(30), Duration::from_secs(300), Duration::from_secs(3600)];
pub use crate::replica::lease::DEFAULT_LEASE_TIMEOUT;
/// The shortest `lease-timeout`: renewals come every quarter of it, and a
/// store's round trip must fit well inside that.
const MIN_LEASE_TIMEOUT: Duration = Duration::from_millis(400);
/// Compaction levels sit below the snapshot level (9).
const MAX_LEVELS: usize = 8;

/// A replica ready to open.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSpec {
    pub name: String,
    pub url: String,
    pub settings: Vec<(String, String)>,
    pub plugin: Option<PathBuf>,
    pub sandbox: SandboxConfig,
    pub sync_interval: Duration,
    pub snapshot_interval: Duration,
    pub retention: RetentionConfig,
    pub compaction: CompactionConfig,
    /// `lease-timeout`: how long the replica's lease outlives its last
    /// renewal (`replica::lease::DEFAULT_LEASE_TIMEOUT`).
    pub lease_timeout: Duration,
    /// Whether the replica is kept to one writer by a lease (`lease-timeout:
    /// off` turns it off).
    pub lease: bool,
    /// `age:`: the replica's segments are encrypted (decision 20).
    pub age: Option<Arc<Keys>>,
}

/// A database ready to replicate.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSpec {
    pub path: PathBuf,
    pub meta_path: Option<PathBuf>,
    pub monitor_interval: Duration,
    pub capture: CaptureConfig,
    pub restore_if_db_not_exists: bool,
    /// How often to validate the capture against the live database; the
    /// database's `validation-interval`, else the shortest of its
    /// replicas', else `DEFAULT_VALIDATION_INTERVAL`; `0` turns it off
    /// (see `capture::validate`).
    pub validation_interval: Option<Duration>,
    /// Close the database's files after this long quiet (`idle-timeout`,
    /// `DEFAULT_IDLE_TIMEOUT`; `None`: keep them open).
    pub idle_timeout: Option<Duration>,
    pub replicas: Vec<ReplicaSpec>,
}

/// Everything `replicate` needs.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub dbs: Vec<DatabaseSpec>,
    /// `dir` entries with `watch: true`: databases appear and go while
    /// running.
    pub watched: Vec<super::dirs::WatchedDir>,
    /// The control socket, if enabled.
    pub socket: Option<super::socket::SocketSpec>,
    pub addr: Option<String>,
    /// `metrics-max-databases`: databases with their own metric series.
    pub metrics_max_databases: usize,
    pub exec: Option<String>,
    pub shutdown_sync_timeout: Duration,
    /// `heartbeat-url` and how often to ping it.
    pub heartbeat: Option<(String, Duration)>,
}

/// Parse a Go-style duration (`1s`, `5m`, `1h30m`, `500ms`).
pub fn duration(value: &str, what: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(value.trim())
        .with_context(|| format!("{what}: `{value}` is not a duration (expected e.g. 1s, 5m, 24h)"))
}

fn opt_duration(value: &Option<String>, what: &str, default: Duration) -> anyhow::Result<Duration> {
    value.as_deref().map_or(Ok(default), |v| duration(v, what))
}

/// Expand `~` and strip Litestream's optional `sqlite://` prefix.
pub fn db_path(raw: &str) -> PathBuf {
    let raw = raw.strip_prefix("sqlite://").unwrap_or(raw);
    match raw.strip_prefix("~/") {
        Some(rest) => dirs::home_dir().map(|h| h.join(rest)).unwrap_or_else(|| PathBuf::from(raw)),
        None => PathBuf::from(raw),
    }
}

/// Merge a replica over the global defaults (replica fields win).
fn merged(r: &ReplicaConfig, d: &ReplicaConfig) -> ReplicaConfig {
    macro_rules! pick {
        ($($f:ident),*) => { ReplicaConfig { $($f: r.$f.clone().or_else(|| d.$f.clone()),)* extra: { let mut e = d.extra.clone(); e.extend(r.extra.clone()); e } } };
    }
    pick!(
        kind,
        url,
        path,
        name,
        sync_interval,
        access_key_id,
        secret_access_key,
        region,
        bucket,
        endpoint,
        force_path_style,
        skip_verify,
        storage_class,
        sign_payload,
        part_size,
        concurrency,
        sse_customer_key,
        sse_customer_algorithm,
        sse_kms_key_id,
        retention,
        snapshot_interval,
        validation_interval,
        lease_timeout,
        plugin,
        sandbox,
        age
    )
}

/// Build one replica. `defaults` are the file's globals; `global` the rest.
pub fn replica(
    r: &ReplicaConfig,
    defaults: &ReplicaConfig,
    global: &FileConfig,
    index: usize,
    db: &Path,
) -> anyhow::Result<ReplicaSpec> {
    let r = merged(r, defaults);
    let ctx = || format!("database {} replica #{}", db.display(), index + 1);
    let (kind, url) = replica_url(&r, &ctx)?;
    let settings = plugin_settings(&r, &kind)?;
    let levels = level_intervals(global)?;
    let snapshot_retention = match &r.retention {
        Some(v) => duration(v, &format!("{}: retention", ctx()))?,
        None => opt_duration(&global.snapshot.retention, "snapshot.retention", DEFAULT_SNAPSHOT_RETENTION)?,
    };
    let snapshot_interval = match &r.snapshot_interval {
        Some(v) => duration(v, &format!("{}: snapshot-interval", ctx()))?,
        None => opt_duration(&global.snapshot.interval, "snapshot.interval", DEFAULT_SNAPSHOT_INTERVAL)?,
    };
    // `off`: no lease at all (decision 33), for a process that is the
    // replica's only writer by construction.
    let lease = r.lease_timeout.as_deref().map(str::trim) != Some("off");
    let timeout_key = r.lease_timeout.clone().filter(|_| lease);
    let lease_timeout = opt_duration(&timeout_key, &format!("{}: lease-timeout", ctx()), DEFAULT_LEASE_TIMEOUT)?;
    if lease_timeout < MIN_LEASE_TIMEOUT {
        bail!("{}: lease-timeout must be at least {MIN_LEASE_TIMEOUT:?} (it is renewed every quarter of it)", ctx());
    }
    let age = match &r.age {
        Some(a) => {
            Some(Arc::new(Keys::parse(&a.recipients, &a.identities).map_err(|e| anyhow::anyhow!("{}: {e}", ctx()))?))
        }
        None => None,
    };
    Ok(ReplicaSpec {
        lease,
        lease_timeout,
        age,
        name: r.name.clone().unwrap_or_else(|| kind.clone()),
        url,
        settings,
        plugin: r.plugin.clone(),
        sandbox: r.sandbox.clone().unwrap_or_default(),
        sync_interval: opt_duration(&r.sync_interval, &format!("{}: sync-interval", ctx()), DEFAULT_SYNC_INTERVAL)?,
        snapshot_interval,
        retention: RetentionConfig {
            snapshot_retention,
            l0_retention: opt_duration(&global.l0_retention, "l0-retention", DEFAULT_L0_RETENTION)?,
        },
        compaction: CompactionConfig { level_intervals: levels },
    })
}

/// The replica's kind (its URL's scheme, or `type:`) and its URL, built
/// from Litestream's `type`/`bucket`/`path` fields when it has none.
fn replica_url(r: &ReplicaConfig, ctx: &dyn Fn() -> String) -> anyhow::Result<(String, String)> {
    let kind = match (&r.kind, &r.url) {
        (Some(k), _) => k.clone(),
        (None, Some(url)) => url.split_once("://").map_or("file".to_string(), |(s, _)| s.to_string()),
        (None, None) if r.path.is_some() => "file".into(),
        (None, None) => bail!("{}: needs `url`, or `type` with its fields (e.g. `type: s3` and `bucket`)", ctx()),
    };
    let url = match (&r.url, kind.as_str()) {
        (Some(u), _) => u.clone(),
        (None, "file") => r.path.clone().with_context(|| format!("{}: a file replica needs `path`", ctx()))?,
        // Litestream's `type` with `bucket` and `path` (s3, abs, gs, ...).
        (None, other) if r.bucket.is_some() => {
            let bucket = r.bucket.as_deref().unwrap_or_default();
            format!("{other}://{bucket}/{}", r.path.as_deref().unwrap_or("").trim_start_matches('/'))
        }
        (None, "s3") => bail!("{}: an s3 replica needs `bucket` (or `url`)", ctx()),
        (None, "sftp") => sftp_url(r).with_context(ctx)?,
        // Another store named by `type` and `path` (Litestream's `type:
        // webdav` with `webdav-url`): the plugin finds its server in the
        // settings.
        (None, other) if r.path.is_some() => {
            format!("{other}:///{}", r.path.as_deref().unwrap_or_default().trim_start_matches('/'))
        }
        (None, other) => bail!("{}: type `{other}` needs `url` or `path` (and a `plugin:` for that store)", ctx()),
    };
    let url = normalize_url(&url).with_context(|| format!("{}: bad replica path {url}", ctx()))?;
    Ok((kind, url))
}

/// Litestream's SFTP fields (`host: HOST[:PORT]`, `user`, `path`) as the
/// URL they mean, `sftp://USER@HOST[:PORT]/PATH`: the host's sandbox lets
/// the plugin reach only the server the URL names. A relative `path`
/// (Litestream sends it as written, so the server resolves it below the
/// login directory) becomes `/~/PATH`.
fn sftp_url(r: &ReplicaConfig) -> anyhow::Result<String> {
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');
    let field = |k: &str| r.extra.get(k).map(yaml_scalar).filter(|v| !v.is_empty());
    let mut host = field("host").context("an sftp replica needs `host` (HOST[:PORT]) or `url`")?;
    if host.contains(['@', '/', '?', '#', ' ']) {
        bail!("sftp `host: {host}` is not HOST[:PORT] (give the user as `user`, the directory as `path`)");
    }
    if host.matches(':').count() > 1 && !host.starts_with('[') {
        host = format!("[{host}]");
    }
    let user = field("user").map(|u| format!("{}@", percent_encoding::utf8_percent_encode(&u, SEGMENT)));
    let path = r.path.as_deref().unwrap_or_default();
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
        .collect();
    let home = if path.starts_with('/') { "" } else { "~/" };
    Ok(format!("sftp://{}{host}/{home}{}", user.unwrap_or_default(), segments.join("/")))
}

/// The settings the plugin receives: the store's keys the replica sets
/// (credentials from the environment or the shared credentials file when
/// it names none, for the kind of store they belong to), and any key
/// sluice does not know, passed through.
fn plugin_settings(r: &ReplicaConfig, kind: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut settings: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            settings.push((k.to_string(), v));
        }
    };
    // Litestream's rule: explicit config first, then the environment and
    // the shared credentials file (config/credentials.rs).
    // AWS keys from the environment go only to S3 (or a custom plugin):
    // a WebDAV or Azure plugin has no use for them.
    let s3_like = kind == "s3" || r.plugin.is_some();
    if r.access_key_id.is_some() {
        set("access-key-id", r.access_key_id.clone());
        set("secret-access-key", r.secret_access_key.clone());
    } else if let Some(c) = s3_like.then(super::credentials::from_environment).transpose()?.flatten() {
        set("access-key-id", Some(c.access_key_id));
        set("secret-access-key", r.secret_access_key.clone().or(c.secret_access_key));
        set("session-token", c.session_token);
    }
    set("region", r.region.clone());
    set("endpoint", r.endpoint.clone());
    if r.url.is_none() {
        set("bucket", r.bucket.clone());
    }
    set("force-path-style", r.force_path_style.map(|b| b.to_string()));
    set("skip-verify", r.skip_verify.map(|b| b.to_string()));
    set("storage-class", r.storage_class.clone());
    set("sign-payload", r.sign_payload.map(|b| b.to_string()));
    set("part-size", r.part_size.as_ref().map(yaml_scalar));
    set("concurrency", r.concurrency.map(|c| c.to_string()));
    set("sse-customer-key", r.sse_customer_key.clone());
    set("sse-customer-algorithm", r.sse_customer_algorithm.clone());
    set("sse-kms-key-id", r.sse_kms_key_id.clone());
    for (k, v) in &r.extra {
        set(k, Some(yaml_scalar(v)));
    }
    super::credentials::store_from_environment(kind, r.url.as_deref().unwrap_or_default(), &mut settings)?;
    Ok(settings)
}

/// The compaction intervals of levels 1.. (`levels:`, else Litestream's).
fn level_intervals(global: &FileConfig) -> anyhow::Result<Vec<Duration>> {
    let mut levels = Vec::new();
    for (i, l) in global.levels.clone().unwrap_or_default().iter().enumerate() {
        levels.push(duration(&l.interval, &format!("levels[{i}].interval"))?);
    }
    if global.levels.is_none() {
        levels = DEFAULT_LEVELS.to_vec();
    }
    if levels.len() > MAX_LEVELS {
        bail!("at most {MAX_LEVELS} compaction levels are supported (level 9 holds snapshots)");
    }
    Ok(levels)
}

fn yaml_scalar(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

pub(super) fn database(db: &DbConfig, path: PathBuf, global: &FileConfig) -> anyhow::Result<DatabaseSpec> {
    let what = |f: &str| format!("database {}: {f}", path.display());
    let defaults = CaptureConfig::default();
    let capture = CaptureConfig {
        min_checkpoint_page_count: db.min_checkpoint_page_count.unwrap_or(defaults.min_checkpoint_page_count),
        truncate_page_n: db.truncate_page_n.unwrap_or(defaults.truncate_page_n),
        checkpoint_interval: opt_duration(
            &db.checkpoint_interval,
            &what("checkpoint-interval"),
            defaults.checkpoint_interval,
        )?,
        busy_timeout: opt_duration(&db.busy_timeout, &what("busy-timeout"), defaults.busy_timeout)?,
    };
    let entries: Vec<&ReplicaConfig> = db.replica.iter().chain(db.replicas.iter()).collect();
    if entries.is_empty() {
        bail!("database {} has no replica: add `replica:` or `replicas:`", path.display());
    }
    let mut replicas: Vec<ReplicaSpec> = Vec::new();
    for (i, r) in entries.iter().enumerate() {
        let mut spec = replica(r, &global.defaults, global, i, &path)?;
        if replicas.iter().any(|o| o.name == spec.name) {
            spec.name = format!("{}{}", spec.name, i + 1);
        }
        replicas.push(spec);
    }
    let mut validation = Vec::new();
    for (i, v) in
        std::iter::once(&db.validation_interval).chain(entries.iter().map(|r| &r.validation_interval)).enumerate()
    {
        let what =
            if i == 0 { what("validation-interval") } else { what(&format!("replica #{i}: validation-interval")) };
        if let Some(v) = v {
            validation.push((i == 0, duration(v, &what)?));
        }
    }
    // The database's own key wins over its replicas'.
    let chosen =
        validation.iter().find(|(own, _)| *own).or_else(|| validation.iter().min_by_key(|(_, d)| *d)).map(|(_, d)| *d);
    let validation_interval = Some(chosen.unwrap_or(DEFAULT_VALIDATION_INTERVAL)).filter(|d| !d.is_zero());
    let idle_timeout = opt_duration(&db.idle_timeout, &what("idle-timeout"), DEFAULT_IDLE_TIMEOUT)?;
    Ok(DatabaseSpec {
        validation_interval,
        idle_timeout: Some(idle_timeout).filter(|d| !d.is_zero()),
        meta_path: db.meta_path.as_deref().map(db_path),
        monitor_interval: opt_duration(&db.monitor_interval, &what("monitor-interval"), DEFAULT_MONITOR_INTERVAL)?,
        capture,
        restore_if_db_not_exists: db.restore_if_db_not_exists.unwrap_or(false),
        replicas,
        path,
    })
}

/// Resolve the whole file.
pub fn resolve(cfg: &FileConfig) -> anyhow::Result<Resolved> {
    let mut dbs = Vec::new();
    let mut watched = Vec::new();
    for db in &cfg.dbs {
        match (&db.path, &db.dir) {
            (Some(p), _) => dbs.push(database(db, std::path::absolute(db_path(p))?, cfg)?),
            (None, Some(_)) => {
                let dir = super::dirs::WatchedDir::new(db, cfg)?;
                let found = dir.scan()?;
                for p in &found.not_sqlite {
                    tracing::warn!(
                        "{} matches `pattern` but is not a SQLite database (yet); skipped{}",
                        p.display(),
                        if dir.watch { " until it is one" } else { " until sluice restarts (or set `watch: true`)" }
                    );
                }
                dbs.extend(found.dbs);
                if dir.watch {
                    watched.push(dir);
                }
            }
            (None, None) => bail!("a database entry needs `path` (or `dir` and `pattern`)"),
        }
    }
    Ok(Resolved {
        dbs,
        watched,
        socket: socket(cfg)?,
        addr: cfg.addr.clone().filter(|a| !a.is_empty()),
        metrics_max_databases: cfg.metrics_max_databases.unwrap_or(crate::metrics::DEFAULT_MAX_DATABASES),
        exec: cfg.exec.clone().filter(|e| !e.is_empty()),
        shutdown_sync_timeout: opt_duration(
            &cfg.shutdown_sync_timeout,
            "shutdown-sync-timeout",
            DEFAULT_SHUTDOWN_SYNC_TIMEOUT,
        )?,
        heartbeat: match cfg.heartbeat_url.clone().filter(|u| !u.is_empty()) {
            Some(url) => {
                Some((url, opt_duration(&cfg.heartbeat_interval, "heartbeat-interval", DEFAULT_HEARTBEAT_INTERVAL)?))
            }
            None => None,
        },
    })
}

fn socket(cfg: &FileConfig) -> anyhow::Result<Option<super::socket::SocketSpec>> {
    cfg.socket.as_ref().map_or(Ok(None), super::socket::SocketSpec::resolve)
}

/// Settings that name one identity together: giving one on the command
/// line replaces the whole group from the config or the environment (an
/// access key with another identity's session token is refused).
const CREDENTIAL_GROUPS: &[&[&str]] = &[
    &["access-key-id", "secret-access-key", "session-token"],
    &["account-key", "sas-token"],
    &["credentials-file", "credentials-json"],
    &["key", "key-path"],
    &["creds", "creds-text", "jwt", "seed"],
];

impl ReplicaSpec {
    /// Plugin settings given on the command line (`-s KEY=VALUE`): each
    /// replaces the same key (and its credential group) from the config,
    /// the URL or the environment. A file one names (SFTP's `key-path`,
    /// NATS's `creds`) is read.
    pub fn override_settings(&mut self, given: &[(String, String)]) -> anyhow::Result<()> {
        let group_of = |k: &str| CREDENTIAL_GROUPS.iter().find(|g| g.contains(&k)).copied().unwrap_or_default();
        let replaced = |k: &str| given.iter().any(|(g, _)| g == k || group_of(g).contains(&k));
        self.settings.retain(|(k, _)| !replaced(k));
        self.settings.extend(given.iter().cloned());
        let kind = self.url.split_once("://").map_or("file", |(scheme, _)| scheme);
        super::credentials::read_named_files(kind, &mut self.settings)?;
        Ok(())
    }
}

/// A database replicated to one URL from the command line, with the
/// file's globals (if any) as defaults.
pub fn from_url(db: &Path, url: &str, global: &FileConfig) -> anyhow::Result<DatabaseSpec> {
    let entry = DbConfig {
        replica: Some(ReplicaConfig { url: Some(url.to_string()), ..Default::default() }),
        ..Default::default()
    };
    database(&entry, std::path::absolute(db)?, global)
}

#[cfg(test)]
mod tests {
    use super::super::file::parse;
    use super::*;

    #[test]
    fn litestreams_sftp_fields_make_the_url() {
        let text = "dbs:\n  - path: /data/db\n    replica:\n      type: sftp\n      host: files.example:2222\n      user: backup\n      path: /srv/backups/db\n      host-key: ssh-ed25519 AAAA\n";
        let cfg = parse(text, Path::new("c.yml"), false).unwrap().config;
        let rep = &resolve(&cfg).unwrap().dbs[0].replicas[0];
        assert_eq!(rep.url, "sftp://backup@files.example:2222/srv/backups/db");
        let relative =
            text.replace("path: /srv/backups/db", "path: back ups/db#1").replace("user: backup", "user: a@b");
        let cfg = parse(&relative, Path::new("c.yml"), false).unwrap().config;
        let url = resolve(&cfg).unwrap().dbs[0].replicas[0].url.clone();
        assert_eq!(url, "sftp://a%40b@files.example:2222/~/back%20ups/db%231", "below the login directory, escaped");
        let tilde = text.replace("path: /srv/backups/db", "path: /~/x");
        let cfg = parse(&tilde, Path::new("c.yml"), false).unwrap().config;
        assert_eq!(resolve(&cfg).unwrap().dbs[0].replicas[0].url, "sftp://backup@files.example:2222/%7E/x", "absolute");
        let v6 = text.replace("host: files.example:2222", "host: \"::1\"");
        let cfg = parse(&v6, Path::new("c.yml"), false).unwrap().config;
        assert_eq!(resolve(&cfg).unwrap().dbs[0].replicas[0].url, "sftp://backup@[::1]/srv/backups/db");
        assert!(rep.settings.contains(&("host-key".into(), "ssh-ed25519 AAAA".into())));
        let bad = text.replace("host: files.example:2222", "host: me@files.example");
        let err = format!("{:#}", resolve(&parse(&bad, Path::new("c.yml"), false).unwrap().config).unwrap_err());
        assert!(err.contains("is not HOST[:PORT]"), "{err}");
        let no_host = text.replace("      host: files.example:2222\n", "");
        let cfg = parse(&no_host, Path::new("c.yml"), false).unwrap().config;
        let err = format!("{:#}", resolve(&cfg).unwrap_err());
        assert!(err.contains("needs `host`"), "{err}");
    }

    #[test]
    fn expanded_s3_form_means_the_same_as_the_url() {
        let text = "dbs:\n  - path: /data/db\n    replicas:\n      - type: s3\n        bucket: SPACENAME\n        path: db\n        endpoint: nyc3.digitaloceanspaces.com\n        region: nyc3\n";
        let cfg = parse(text, Path::new("c.yml"), false).unwrap().config;
        let r = resolve(&cfg).unwrap();
        let rep = &r.dbs[0].replicas[0];
        assert_eq!(rep.url, "s3://SPACENAME/db");
        assert!(rep.settings.contains(&("endpoint".into(), "nyc3.digitaloceanspaces.com".into())));
        assert!(rep.settings.contains(&("region".into(), "nyc3".into())));
        assert_eq!(rep.compaction.level_intervals, DEFAULT_LEVELS.to_vec());
        assert_eq!(r.dbs[0].capture.min_checkpoint_page_count, 1000);
        assert_eq!(rep.lease_timeout, DEFAULT_LEASE_TIMEOUT);
    }

    #[test]
    fn age_keys_are_the_hosts_never_a_plugin_setting() {
        use age::secrecy::ExposeSecret;
        let id = age::x25519::Identity::generate();
        let (public, secret) = (id.to_public().to_string(), id.to_string().expose_secret().to_string());
        let text = format!(
            "dbs:\n  - path: /d\n    replicas:\n      - url: /tmp/a\n        age:\n          identities: [{secret}]\n          recipients: [{public}]\n      - url: /tmp/b\n"
        );
        let parsed = parse(&text, Path::new("c.yml"), false).unwrap();
        assert!(parsed.warnings.is_empty(), "a known key: {:?}", parsed.warnings);
        let r = resolve(&parsed.config).unwrap();
        let reps = &r.dbs[0].replicas;
        assert!(reps[0].age.is_some() && reps[1].age.is_none());
        assert!(!reps[0].settings.iter().any(|(k, v)| k == "age" || v.contains(&secret)), "keys reached the plugin");
        assert!(!format!("{:?}", parsed.config).contains(&secret), "the config's Debug shows the secret key");
        let wrong = text.replace(&public, "age1notakey");
        let e = resolve(&parse(&wrong, Path::new("c"), false).unwrap().config).unwrap_err().to_string();
        assert!(e.contains("replica #1") && e.contains("recipients[0]"), "{e}");
    }

    #[test]
    fn a_command_line_credential_replaces_its_whole_group() {
        let text =
            "dbs:\n  - path: /d\n    replica: {url: s3://b/p, access-key-id: A, secret-access-key: S, region: r}\n";
        let mut r = resolve(&parse(text, Path::new("c"), false).unwrap().config).unwrap().dbs[0].replicas[0].clone();
        r.settings.push(("session-token".into(), "T".into()));
        r.override_settings(&[("access-key-id".into(), "B".into()), ("secret-access-key".into(), "Z".into())]).unwrap();
        let get = |k: &str| r.settings.iter().filter(|(n, _)| n == k).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert_eq!((get("access-key-id"), get("secret-access-key")), (vec!["B"], vec!["Z"]));
        assert!(get("session-token").is_empty(), "another identity's session token stayed");
        assert_eq!(get("region"), vec!["r"], "a setting not given is kept");
    }

    #[test]
    fn lease_timeout_is_a_replica_key_with_a_global_default() {
        let text = "lease-timeout: 30s\ndbs:\n  - path: /d\n    replicas:\n      - url: /tmp/a\n      - url: /tmp/b\n        lease-timeout: 2s\n";
        let parsed = parse(text, Path::new("c.yml"), false).unwrap();
        assert!(parsed.warnings.is_empty(), "a known key: {:?}", parsed.warnings);
        let r = resolve(&parsed.config).unwrap();
        let timeouts: Vec<Duration> = r.dbs[0].replicas.iter().map(|r| r.lease_timeout).collect();
        assert_eq!(timeouts, [Duration::from_secs(30), Duration::from_secs(2)]);
        assert!(!r.dbs[0].replicas[0].settings.iter().any(|(k, _)| k == "lease-timeout"), "not a plugin setting");
        let short =
            parse("dbs:\n  - path: /d\n    replica: {url: /tmp/a, lease-timeout: 10ms}\n", Path::new("c"), false);
        let e = resolve(&short.unwrap().config).unwrap_err().to_string();
        assert!(e.contains("lease-timeout"), "{e}");
        let leases: Vec<bool> = r.dbs[0].replicas.iter().map(|r| r.lease).collect();
        assert_eq!(leases, [true, true]);
        let off = parse("dbs:\n  - path: /d\n    replica: {url: /tmp/a, lease-timeout: off}\n", Path::new("c"), false);
        assert!(!resolve(&off.unwrap().config).unwrap().dbs[0].replicas[0].lease, "`off` turns the lease off");
    }

    #[test]
    fn per_replica_credentials_win_over_global() {
        let text = "access-key-id: GLOBAL\nsecret-access-key: gs\ndbs:\n  - path: /d\n    replicas:\n      - url: s3://b/db\n        access-key-id: MINE\n        secret-access-key: ms\n      - url: s3://b/other\n";
        let cfg = parse(text, Path::new("c.yml"), false).unwrap().config;
        let r = resolve(&cfg).unwrap();
        assert!(r.dbs[0].replicas[0].settings.contains(&("access-key-id".into(), "MINE".into())));
        assert!(r.dbs[0].replicas[0].settings.contains(&("secret-access-key".into(), "ms".into())));
        assert!(r.dbs[0].replicas[1].settings.contains(&("access-key-id".into(), "GLOBAL".into())));
        assert_ne!(r.dbs[0].replicas[0].name, r.dbs[0].replicas[1].name);
    }

    #[test]
    fn bad_durations_and_missing_replicas_explain_themselves() {
        let cfg = parse(
            "dbs:\n  - path: /d\n    monitor-interval: often\n    replica: {url: /tmp/x}\n",
            Path::new("c"),
            false,
        )
        .unwrap()
        .config;
        let e = resolve(&cfg).unwrap_err().to_string();
        assert!(e.contains("monitor-interval") && e.contains("expected"), "{e}");
        let cfg = parse("dbs:\n  - path: /d\n", Path::new("c"), false).unwrap().config;
        assert!(resolve(&cfg).unwrap_err().to_string().contains("no replica"));
    }

    #[test]
    fn validation_interval_from_database_replicas_or_default() {
        let at = |text: &str| {
            resolve(&parse(text, Path::new("c"), false).unwrap().config).map(|r| r.dbs[0].validation_interval)
        };
        let replicas = "    replicas:\n      - url: /tmp/a\n        validation-interval: 10m\n      - url: /tmp/b\n        validation-interval: 5m\n";
        assert_eq!(
            at(&format!("dbs:\n  - path: /d\n{replicas}")).unwrap(),
            Some(Duration::from_secs(300)),
            "the shortest replica's"
        );
        assert_eq!(
            at(&format!("dbs:\n  - path: /d\n    validation-interval: 1h\n{replicas}")).unwrap(),
            Some(Duration::from_secs(3600)),
            "the database's own wins"
        );
        assert_eq!(at("dbs:\n  - path: /d\n    replica: {url: /tmp/x}\n").unwrap(), Some(DEFAULT_VALIDATION_INTERVAL));
        assert_eq!(
            at("dbs:\n  - path: /d\n    validation-interval: 0s\n    replica: {url: /tmp/x}\n").unwrap(),
            None,
            "0 turns it off"
        );
        let e = at("dbs:\n  - path: /d\n    validation-interval: daily\n    replica: {url: /tmp/x}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("validation-interval"), "{e}");
    }

    #[test]
    fn a_directory_gives_each_database_its_own_replica_path_and_skips_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let mk = |rel: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            rusqlite::Connection::open(&p).unwrap().execute_batch("CREATE TABLE t(x)").unwrap();
        };
        mk("a.db");
        mk("tenants/b.db");
        std::fs::write(dir.path().join("junk.db"), "not a database").unwrap();
        std::fs::write(dir.path().join("new.db"), "").unwrap();
        let text = format!(
            "dbs:\n  - dir: {}\n    pattern: \"*.db\"\n    recursive: true\n    replicas:\n      - url: s3://bucket/backups?endpoint=127.0.0.1:9000\n      - type: s3\n        bucket: b2\n        path: p2\n",
            dir.path().display()
        );
        let r = resolve(&parse(&text, Path::new("c"), false).unwrap().config).unwrap();
        let got: Vec<(String, String, String)> = r
            .dbs
            .iter()
            .map(|d| {
                let rel = d.path.strip_prefix(dir.path()).unwrap().display().to_string();
                (rel, d.replicas[0].url.clone(), d.replicas[1].url.clone())
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a.db".into(), "s3://bucket/backups/a.db?endpoint=127.0.0.1:9000".into(), "s3://b2/p2/a.db".into()),
                (
                    "tenants/b.db".into(),
                    "s3://bucket/backups/tenants/b.db?endpoint=127.0.0.1:9000".into(),
                    "s3://b2/p2/tenants/b.db".into()
                ),
            ]
        );
    }
}
