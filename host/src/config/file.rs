//! The configuration file, in Litestream's format: a Litestream user keeps
//! their `litestream.yml`. Parsing is lenient where Litestream is (unknown
//! keys are warned about with their line, not fatal) and strict where a
//! wrong value would silently do the wrong thing.

use super::keys;
use crate::plugin::SandboxConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `logging:`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct LoggingConfig {
    pub level: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub stderr: Option<bool>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_yaml::Value>,
}

/// `snapshot:`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotConfig {
    pub interval: Option<String>,
    pub retention: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_yaml::Value>,
}

/// One entry of `levels:`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct LevelConfig {
    pub interval: String,
}

/// A replica, as written in the file (every field optional; the global
/// section provides defaults for all of them).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct ReplicaConfig {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub url: Option<String>,
    pub path: Option<String>,
    pub name: Option<String>,
    pub sync_interval: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: Option<bool>,
    pub skip_verify: Option<bool>,
    pub storage_class: Option<String>,
    pub sign_payload: Option<bool>,
    pub part_size: Option<serde_yaml::Value>,
    pub concurrency: Option<u32>,
    pub sse_customer_key: Option<String>,
    pub sse_customer_algorithm: Option<String>,
    pub sse_kms_key_id: Option<String>,
    /// Litestream 0.3 per-replica retention and snapshot interval.
    pub retention: Option<String>,
    pub snapshot_interval: Option<String>,
    /// How often to check the capture against the live database
    /// (Litestream 0.3's key, which Litestream parses and never uses).
    pub validation_interval: Option<String>,
    /// How long the replica's lease outlives its holder's last renewal
    /// (one writer per replica, DESIGN.md decision 17).
    pub lease_timeout: Option<String>,
    /// A custom storage plugin (`.wasm`) for this replica.
    pub plugin: Option<PathBuf>,
    /// Confinement of this replica's plugin.
    pub sandbox: Option<SandboxConfig>,
    /// Client-side encryption (Litestream 0.3's key; decision 20).
    pub age: Option<AgeConfig>,
    /// Anything else is passed to the plugin as a setting.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_yaml::Value>,
}

/// `age:` of a replica: X25519 keys as the `age` tool writes them.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AgeConfig {
    /// `AGE-SECRET-KEY-1...`: decrypt (restore, compaction).
    #[serde(default)]
    pub identities: Vec<String>,
    /// `age1...`: what segments are encrypted to.
    #[serde(default)]
    pub recipients: Vec<String>,
}

/// Never prints the identities (a config is logged at debug level).
impl std::fmt::Debug for AgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgeConfig {{ {} identities, recipients: {:?} }}", self.identities.len(), self.recipients)
    }
}

/// A database entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct DbConfig {
    pub path: Option<String>,
    pub dir: Option<String>,
    pub pattern: Option<String>,
    pub recursive: Option<bool>,
    /// Pick up databases created and removed below `dir` while running.
    pub watch: Option<bool>,
    pub meta_path: Option<String>,
    pub monitor_interval: Option<String>,
    pub checkpoint_interval: Option<String>,
    pub busy_timeout: Option<String>,
    pub min_checkpoint_page_count: Option<u32>,
    pub truncate_page_n: Option<u32>,
    pub validation_interval: Option<String>,
    /// How long a database stays quiet before sluice closes its files
    /// (DESIGN.md decision 29); `0s` keeps them open.
    pub idle_timeout: Option<String>,
    pub restore_if_db_not_exists: Option<bool>,
    pub replica: Option<ReplicaConfig>,
    #[serde(default)]
    pub replicas: Vec<ReplicaConfig>,
    /// Per-database `snapshot:` (Litestream 0.5): noted, the global one
    /// applies.
    pub snapshot: Option<serde_yaml::Value>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_yaml::Value>,
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct FileConfig {
    pub addr: Option<String>,
    /// How many databases get their own metric series (`metrics::admit`).
    pub metrics_max_databases: Option<usize>,
    #[serde(default)]
    pub logging: LoggingConfig,
    pub exec: Option<String>,
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    pub levels: Option<Vec<LevelConfig>>,
    pub l0_retention: Option<String>,
    pub shutdown_sync_timeout: Option<String>,
    /// Pinged while every replica is healthy (dead-man's switch services).
    pub heartbeat_url: Option<String>,
    pub heartbeat_interval: Option<String>,
    /// The control socket (`config::socket`).
    pub socket: Option<serde_yaml::Value>,
    /// Litestream 0.5's `retention: {enabled}`, or 0.3's `retention: 24h`
    /// as every replica's default (moved to `defaults` by `parse`).
    pub retention: Option<serde_yaml::Value>,
    #[serde(default)]
    pub dbs: Vec<DbConfig>,
    /// Every replica key may also appear at the top level as a default.
    #[serde(flatten)]
    pub defaults: ReplicaConfig,
}

/// What parsing found besides the config: warnings and notes to log.
#[derive(Debug, Default)]
pub struct Parsed {
    pub config: FileConfig,
    pub warnings: Vec<String>,
    /// Litestream keys sluice takes without acting on them as Litestream
    /// does, each with what sluice does instead.
    pub notes: Vec<String>,
}

/// Expand `$VAR` and `${VAR}` (unset variables become empty, as in Go).
pub fn expand_env(text: &str) -> String {
    shellexpand::env_with_context_no_errors(text, |var| Some(std::env::var(var).unwrap_or_default())).into_owned()
}

/// Parse config text; `path` is only for messages.
pub fn parse(text: &str, path: &Path, expand: bool) -> anyhow::Result<Parsed> {
    let text = if expand { expand_env(text) } else { text.to_string() };
    if text.trim().is_empty() {
        return Ok(Parsed::default());
    }
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not valid YAML: {e}", path.display()))?;
    let mut config: FileConfig = serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        // Flattened sections hide the failing key from serde: find it.
        if let Some(why) = keys::culprit(&value, path, &text) {
            return anyhow::anyhow!("{why}");
        }
        let at = e.path().to_string();
        let at = if at == "." { String::new() } else { format!(" at `{at}`") };
        anyhow::anyhow!("{}{at}: {}", path.display(), e.into_inner())
    })?;
    normalize(&mut config, path, &text)?;
    let mut warnings = Vec::new();
    for (ctx, key) in unknown_keys(&config) {
        let line = keys::line_of(&text, &key, None);
        let at = line.map_or_else(|| path.display().to_string(), |n| format!("{}:{n}", path.display()));
        warnings.push(format!("{at}: unknown key `{ctx}{key}` (ignored; check its spelling)"));
    }
    let mut notes = keys::notes(&value, path, &text);
    if let Some(i) = config.dbs.iter().position(|d| d.snapshot.is_some()) {
        notes.push(format!(
            "{}: `dbs[{i}].snapshot`: the global snapshot settings (snapshot.interval, snapshot.retention) apply to every database",
            path.display()
        ));
    }
    Ok(Parsed { notes, config, warnings })
}

/// Litestream's value forms sluice reads another way: a top-level
/// `retention: 24h` (0.3) is every replica's default; sizes such as
/// `part-size: 5MiB` become bytes.
fn normalize(config: &mut FileConfig, path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(serde_yaml::Value::String(s)) = &config.retention
        && config.defaults.retention.is_none()
    {
        config.defaults.retention = Some(s.clone());
    }
    let replicas = config.dbs.iter_mut().flat_map(|d| d.replica.iter_mut().chain(d.replicas.iter_mut()));
    for r in std::iter::once(&mut config.defaults).chain(replicas) {
        if let Some(serde_yaml::Value::String(s)) = &r.part_size {
            let bytes = parse_size::parse_size(s.trim()).map_err(|e| {
                let line = keys::line_of(text, "part-size", r.part_size.as_ref());
                let at = line.map_or_else(|| path.display().to_string(), |n| format!("{}:{n}", path.display()));
                anyhow::anyhow!("{at}: `part-size: {s}` is not a size (e.g. 5MiB, 8MB, 5242880): {e}")
            })?;
            r.part_size = Some(serde_yaml::Value::Number(bytes.into()));
        }
    }
    Ok(())
}

/// Keys no level knows, with where they are (`dbs[0].`), once each.
fn unknown_keys(config: &FileConfig) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |ctx: String, extra: &BTreeMap<String, serde_yaml::Value>| {
        for key in extra.keys().filter(|k| !keys::is_noted(k) && !keys::is_backend_setting(k)) {
            if !out.iter().any(|(_, k)| k == key) {
                out.push((ctx.clone(), key.clone()));
            }
        }
    };
    add(String::new(), &config.defaults.extra);
    add("logging.".into(), &config.logging.extra);
    add("snapshot.".into(), &config.snapshot.extra);
    // A replica's other keys are its plugin's settings: the plugin
    // declares the ones it reads, and the replica warns about the others
    // when it opens (`plugin::settings`, decision 34).
    for (i, db) in config.dbs.iter().enumerate() {
        add(format!("dbs[{i}]."), &db.extra);
    }
    out
}

/// Litestream's default config locations, then ours.
pub fn default_path() -> Option<PathBuf> {
    for var in ["SLUICE_CONFIG", "LITESTREAM_CONFIG"] {
        if let Ok(p) = std::env::var(var)
            && !p.is_empty()
        {
            return Some(PathBuf::from(p));
        }
    }
    ["/etc/sluice.yml", "/etc/litestream.yml"].iter().map(PathBuf::from).find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_guide_configs_parse() {
        let text = r#"
access-key-id: AKIA
secret-access-key: s3cr3t/x

dbs:
  - path: /path/to/local/db
    replicas:
      - url: s3://SPACENAME.nyc3.digitaloceanspaces.com/db
"#;
        let p = parse(text, Path::new("t.yml"), false).unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.config.defaults.access_key_id.as_deref(), Some("AKIA"));
        assert_eq!(p.config.dbs[0].replicas[0].url.as_deref(), Some("s3://SPACENAME.nyc3.digitaloceanspaces.com/db"));
        let expanded = r#"
dbs:
  - path: /path/to/local/db
    replicas:
      - type: s3
        bucket:   SPACENAME
        path:     db
        endpoint: nyc3.digitaloceanspaces.com
        region:   nyc3   # set to your region
"#;
        let p = parse(expanded, Path::new("t.yml"), false).unwrap();
        let r = &p.config.dbs[0].replicas[0];
        assert_eq!(
            (r.kind.as_deref(), r.bucket.as_deref(), r.region.as_deref()),
            (Some("s3"), Some("SPACENAME"), Some("nyc3"))
        );
    }

    #[test]
    fn unknown_keys_warn_with_line_and_env_expands() {
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("SLUICE_TEST_BUCKET", "mybucket") };
        let text = "dbs:\n  - path: /x.db\n    replica:\n      url: s3://${SLUICE_TEST_BUCKET}/db\n    regoin: x\n";
        let p = parse(text, Path::new("c.yml"), true).unwrap();
        assert_eq!(p.config.dbs[0].replica.as_ref().unwrap().url.as_deref(), Some("s3://mybucket/db"));
        assert_eq!(p.warnings, vec!["c.yml:5: unknown key `dbs[0].regoin` (ignored; check its spelling)".to_string()]);
        // A replica's other keys are its plugin's to judge, when it opens.
        let custom = "dbs:\n  - path: /x.db\n    replica:\n      url: s3://b/db\n      regoin: x\n      mode: fast\n";
        assert!(parse(custom, Path::new("c.yml"), false).unwrap().warnings.is_empty());
        let p = parse(text, Path::new("c.yml"), false).unwrap();
        assert_eq!(p.config.dbs[0].replica.as_ref().unwrap().url.as_deref(), Some("s3://${SLUICE_TEST_BUCKET}/db"));
    }

    #[test]
    fn invalid_values_are_errors() {
        let err =
            parse("dbs:\n  - path: /x\n    min-checkpoint-page-count: lots\n", Path::new("c.yml"), false).unwrap_err();
        assert!(err.to_string().contains("min-checkpoint-page-count"), "{err}");
    }

    /// Every key of Litestream 0.5's reference config is recognised: none
    /// is called a typo, those sluice does not act on are noted, sizes and
    /// `retention: {enabled}` parse; misspellings are caught at each level.
    #[test]
    fn litestream_05_keys_are_recognised_and_typos_caught_everywhere() {
        let text = "logging:\n  level: info\n  stderr: true\n  source: true\nretention:\n  enabled: false\nl0-retention-check-interval: 30s\nverify-compaction: true\nshutdown-sync-interval: 1s\nmax-sync-ltx-files: 10\nauto-recover: true\nvalidation:\n  interval: 1h\nmeta-dir: /var/lib/x\npart-size: 5MiB\ndbs:\n  - path: /a.db\n    max-sync-wal-bytes: 1000\n    snapshot:\n      interval: 1h\n    replica:\n      url: s3://b/a\n      part-size: 16MB\n      require-content-md5: true\n";
        let p = parse(text, Path::new("c.yml"), false).unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.notes.len(), 12, "{:#?}", p.notes);
        assert_eq!(p.config.defaults.part_size, Some(serde_yaml::Value::Number(5_242_880u64.into())));
        let r = p.config.dbs[0].replica.as_ref().unwrap();
        assert_eq!(r.part_size, Some(serde_yaml::Value::Number(16_000_000u64.into())));
        let typos = "logging:\n  levl: info\nsnapshot:\n  intervl: 1h\ndbs:\n  - path: /a.db\n    monitor-intervall: 1s\n    replicas:\n      - url: s3://b/a\n";
        let w = parse(typos, Path::new("c.yml"), false).unwrap().warnings;
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].starts_with("c.yml:2: unknown key `logging.levl`"), "{w:?}");
        assert!(w[2].starts_with("c.yml:7: unknown key `dbs[0].monitor-intervall`"), "{w:?}");
    }
}
