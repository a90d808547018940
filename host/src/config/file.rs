//! The configuration file, in Litestream's format: a Litestream user keeps
//! their `litestream.yml`. Parsing is lenient where Litestream is (unknown
//! keys are warned about with their line, not fatal) and strict where a
//! wrong value would silently do the wrong thing.

use crate::plugin::SandboxConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Keys Litestream 0.3/0.5 accept that sluice reads but does not act on;
/// listed so they raise no "unknown key" warning.
const ACCEPTED_ELSEWHERE: &[&str] = &["socket", "mcp-addr", "watch", "retention-check-interval"];

/// `logging:`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct LoggingConfig {
    pub level: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub stderr: Option<bool>,
}

/// `snapshot:`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotConfig {
    pub interval: Option<String>,
    pub retention: Option<String>,
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
    pub meta_path: Option<String>,
    pub monitor_interval: Option<String>,
    pub checkpoint_interval: Option<String>,
    pub busy_timeout: Option<String>,
    pub min_checkpoint_page_count: Option<u32>,
    pub truncate_page_n: Option<u32>,
    pub validation_interval: Option<String>,
    pub restore_if_db_not_exists: Option<bool>,
    pub replica: Option<ReplicaConfig>,
    #[serde(default)]
    pub replicas: Vec<ReplicaConfig>,
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct FileConfig {
    pub addr: Option<String>,
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
    #[serde(default)]
    pub dbs: Vec<DbConfig>,
    /// Every replica key may also appear at the top level as a default.
    #[serde(flatten)]
    pub defaults: ReplicaConfig,
}

/// What parsing found besides the config: warnings to log.
#[derive(Debug, Default)]
pub struct Parsed {
    pub config: FileConfig,
    pub warnings: Vec<String>,
}

/// Expand `$VAR` and `${VAR}` (unset variables become empty, as in Go).
pub fn expand_env(text: &str) -> String {
    shellexpand::env_with_context_no_errors(text, |var| Some(std::env::var(var).unwrap_or_default())).into_owned()
}

/// Parse config text; `path` is only for messages.
pub fn parse(text: &str, path: &Path, expand: bool) -> anyhow::Result<Parsed> {
    let text = if expand { expand_env(text) } else { text.to_string() };
    let config: FileConfig = if text.trim().is_empty() {
        FileConfig::default()
    } else {
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(&text)).map_err(|e| {
            let at = e.path().to_string();
            let at = if at == "." { String::new() } else { format!(" at `{at}`") };
            anyhow::anyhow!("{}{at}: {}", path.display(), e.into_inner())
        })?
    };
    let mut warnings = Vec::new();
    let mut unknown = Vec::new();
    collect_unknown(&config.defaults.extra, &mut unknown);
    for db in &config.dbs {
        for r in db.replica.iter().chain(db.replicas.iter()) {
            collect_unknown(&r.extra, &mut unknown);
        }
    }
    for key in unknown {
        let line = text
            .lines()
            .position(|l| l.trim_start().trim_start_matches("- ").starts_with(&format!("{key}:")))
            .map(|i| i + 1);
        warnings.push(match line {
            Some(n) => format!("{}:{n}: unknown key `{key}` (ignored; check its spelling)", path.display()),
            None => format!("{}: unknown key `{key}` (ignored; check its spelling)", path.display()),
        });
    }
    Ok(Parsed { config, warnings })
}

fn collect_unknown(extra: &BTreeMap<String, serde_yaml::Value>, out: &mut Vec<String>) {
    for key in extra.keys() {
        if !ACCEPTED_ELSEWHERE.contains(&key.as_str()) && !out.contains(key) {
            out.push(key.clone());
        }
    }
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
        let text = "dbs:\n  - path: /x.db\n    replica:\n      url: s3://${SLUICE_TEST_BUCKET}/db\n      regoin: x\n";
        let p = parse(text, Path::new("c.yml"), true).unwrap();
        assert_eq!(p.config.dbs[0].replica.as_ref().unwrap().url.as_deref(), Some("s3://mybucket/db"));
        assert_eq!(p.warnings, vec!["c.yml:5: unknown key `regoin` (ignored; check its spelling)".to_string()]);
        let p = parse(text, Path::new("c.yml"), false).unwrap();
        assert_eq!(p.config.dbs[0].replica.as_ref().unwrap().url.as_deref(), Some("s3://${SLUICE_TEST_BUCKET}/db"));
    }

    #[test]
    fn invalid_values_are_errors() {
        let err =
            parse("dbs:\n  - path: /x\n    min-checkpoint-page-count: lots\n", Path::new("c.yml"), false).unwrap_err();
        assert!(err.to_string().contains("min-checkpoint-page-count"), "{err}");
    }
}
