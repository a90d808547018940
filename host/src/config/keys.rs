//! What the config file's keys mean to sluice beyond their types: keys
//! Litestream accepts that sluice takes without acting on them (each noted
//! once, saying what sluice does instead), keys nobody knows (warned about
//! at every level, with their line), and, when a value does not parse, the
//! key and line it is at.

use super::file::{DbConfig, FileConfig, ReplicaConfig};
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};
use std::path::Path;

/// Litestream 0.3/0.5 keys sluice accepts and does not act on as Litestream
/// does, with what it does instead. Logged once at info when present.
pub const NOTED: &[(&str, &str)] = &[
    ("mcp-addr", "sluice has no MCP server"),
    ("retention-check-interval", "retention is enforced after every compaction pass"),
    ("l0-retention-check-interval", "level-0 retention is enforced after every compaction pass"),
    ("verify-compaction", "every compaction reads its inputs with each page's checksum verified"),
    ("shutdown-sync-interval", "the final sync is retried with backoff until shutdown-sync-timeout"),
    ("max-sync-ltx-files", "a replica behind sends its backlog merged, up to 512 segments or 32 MiB per upload"),
    ("auto-recover", "sluice always recovers: a broken chain or lost local state is healed with a snapshot"),
    ("validation", "captures are checked against the database every validation-interval (default 24h)"),
    ("require-content-md5", "the S3 plugin sends Content-MD5 where S3 requires it (DeleteObjects)"),
    ("max-sync-wal-bytes", "a sync takes every committed frame; the local spool is bounded (1 GiB) instead"),
    (
        "meta-dir",
        "local state lives in each database's meta-path (default: beside the database); set meta-path per database",
    ),
    ("source", "log lines carry their target, not the source file and line"),
];

/// Replica keys of Litestream's other backends, handed to the plugin as
/// settings (the bundled plugin for the URL's scheme reads them).
pub const BACKEND_SETTINGS: &[&str] = &[
    "webdav-url",
    "webdav-username",
    "webdav-password",
    "account-name",
    "account-key",
    "sas-token",
    "credentials-file",
    "credentials-json",
];

/// `retention: {enabled: ...}` (Litestream 0.5), as noted.
pub const RETENTION_ENABLED_NOTE: &str = "`retention.enabled`: sluice deletes only what snapshot.retention and l0-retention let go; set them long to keep more";

fn noted(key: &str) -> Option<&'static str> {
    NOTED.iter().find(|(k, _)| *k == key).map(|(_, n)| *n)
}

/// The 1-based line of `key:` in `text`, preferring the one whose value
/// reads `value` (a key that repeats, like `url:` in each replica).
pub fn line_of(text: &str, key: &str, value: Option<&Value>) -> Option<usize> {
    let prefix = format!("{key}:");
    let scalar = value.and_then(scalar_text);
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_start().trim_start_matches("- ").trim_start()))
        .filter(|(_, l)| l.starts_with(&prefix))
        .collect();
    let with_value = scalar.and_then(|s| lines.iter().find(|(_, l)| l[prefix.len()..].contains(s.as_str())));
    with_value.or(lines.first()).map(|(n, _)| *n)
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn at(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(n) => format!("{}:{n}", path.display()),
        None => path.display().to_string(),
    }
}

/// Notes for the Litestream keys present anywhere in `value` (the parsed
/// file), one per key, each named by its path (`logging.source`,
/// `dbs[0].max-sync-wal-bytes`).
pub fn notes(value: &Value, path: &Path, text: &str) -> Vec<String> {
    let mut seen: Vec<(String, String)> = Vec::new();
    walk_keys(value, "", &mut |at_path, key, v| {
        let note = match (key, v) {
            ("retention", Value::Mapping(_)) => Some(RETENTION_ENABLED_NOTE.to_string()),
            (k, _) => noted(k).map(|n| format!("`{at_path}`: {n}")),
        };
        if let Some(n) = note.filter(|_| !seen.iter().any(|(k, _)| k == key)) {
            seen.push((key.to_string(), format!("{}: {n}", at(path, line_of(text, key, Some(v))))));
        }
    });
    seen.into_iter().map(|(_, n)| n).collect()
}

/// Every key in `value` with its dotted path below `prefix`.
fn walk_keys(value: &Value, prefix: &str, f: &mut impl FnMut(&str, &str, &Value)) {
    match value {
        Value::Mapping(m) => {
            for (k, v) in m {
                let Some(k) = k.as_str() else { continue };
                let here = if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
                f(&here, k, v);
                walk_keys(v, &here, f);
            }
        }
        Value::Sequence(s) => {
            for (i, v) in s.iter().enumerate() {
                walk_keys(v, &format!("{prefix}[{i}]"), f);
            }
        }
        _ => {}
    }
}

/// Whether an unknown key is one sluice notes rather than warns about.
pub fn is_noted(key: &str) -> bool {
    noted(key).is_some() || key == "retention"
}

/// Whether a key is a backend's setting, passed to its plugin.
pub fn is_backend_setting(key: &str) -> bool {
    BACKEND_SETTINGS.contains(&key)
}

/// Why the file does not parse, at its key and line: each key is tried
/// alone against the struct it belongs to (every field is optional), so
/// the first one that fails is the culprit. `None` if none fails alone.
pub fn culprit(value: &Value, path: &Path, text: &str) -> Option<String> {
    let map = value.as_mapping()?;
    for (k, v) in map {
        match (k.as_str(), v) {
            (Some("dbs"), Value::Sequence(dbs)) => {
                for (i, db) in dbs.iter().enumerate() {
                    if let Some(e) = db_culprit(db, &format!("dbs[{i}]"), path, text) {
                        return Some(e);
                    }
                }
            }
            _ => {
                if let Some(e) = alone::<FileConfig>(k, v, "", path, text) {
                    return Some(e);
                }
            }
        }
    }
    None
}

fn db_culprit(db: &Value, ctx: &str, path: &Path, text: &str) -> Option<String> {
    for (k, v) in db.as_mapping()? {
        let found = match (k.as_str(), v) {
            (Some("replica"), Value::Mapping(r)) => replica_culprit(r, &format!("{ctx}.replica"), path, text),
            (Some("replicas"), Value::Sequence(rs)) => rs
                .iter()
                .enumerate()
                .find_map(|(j, r)| replica_culprit(r.as_mapping()?, &format!("{ctx}.replicas[{j}]"), path, text)),
            _ => alone::<DbConfig>(k, v, ctx, path, text),
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

fn replica_culprit(r: &Mapping, ctx: &str, path: &Path, text: &str) -> Option<String> {
    r.iter().find_map(|(k, v)| alone::<ReplicaConfig>(k, v, ctx, path, text))
}

/// The error of `{k: v}` alone as a `T`, at its key and line.
fn alone<T: DeserializeOwned>(k: &Value, v: &Value, ctx: &str, path: &Path, text: &str) -> Option<String> {
    let single: Mapping = std::iter::once((k.clone(), v.clone())).collect();
    let err = serde_yaml::from_value::<T>(Value::Mapping(single)).err()?;
    let key = k.as_str().unwrap_or("?");
    let name = if ctx.is_empty() { key.to_string() } else { format!("{ctx}.{key}") };
    Some(format!("{}: `{name}`: {err}", at(path, line_of(text, key, Some(v)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_with_the_value_is_preferred() {
        let text = "a:\n  url: one\nb:\n  url: two\n";
        assert_eq!(line_of(text, "url", Some(&Value::String("two".into()))), Some(4));
        assert_eq!(line_of(text, "url", None), Some(2));
        assert_eq!(line_of(text, "nope", None), None);
    }

    #[test]
    fn a_bad_value_is_named_by_key_and_line() {
        let text =
            "addr: \":9090\"\ndbs:\n  - path: /x\n    replicas:\n      - url: file:///r\n        concurrency: many\n";
        let v: Value = serde_yaml::from_str(text).unwrap();
        let e = culprit(&v, Path::new("c.yml"), text).unwrap();
        assert!(e.starts_with("c.yml:6: `dbs[0].replicas[0].concurrency`"), "{e}");
    }
}
