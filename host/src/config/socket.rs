//! `socket:`, the control socket (Litestream 0.5): `{enabled, path,
//! permissions}`. Off unless `enabled: true`, as in Litestream.

use anyhow::bail;
use serde_yaml::Value;
use std::path::PathBuf;

/// Litestream's default path.
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/litestream.sock";
/// Owner only, Litestream's default: whoever reaches the socket can stop
/// replication and register databases.
pub const DEFAULT_SOCKET_PERMISSIONS: u32 = 0o600;

/// An enabled control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    pub path: PathBuf,
    pub permissions: u32,
}

impl SocketSpec {
    /// The `socket:` value; `None` when not enabled.
    pub fn resolve(value: &Value) -> anyhow::Result<Option<SocketSpec>> {
        let Value::Mapping(m) = value else {
            bail!("`socket` must be a map: `socket: {{enabled: true, path: /var/run/litestream.sock}}`")
        };
        let mut spec = SocketSpec { path: DEFAULT_SOCKET_PATH.into(), permissions: DEFAULT_SOCKET_PERMISSIONS };
        let mut enabled = false;
        for (k, v) in m {
            match (k.as_str(), v) {
                (Some("enabled"), Value::Bool(b)) => enabled = *b,
                (Some("path"), Value::String(p)) => spec.path = super::resolve::db_path(p),
                (Some("permissions"), v) => spec.permissions = permissions(v)?,
                (Some(k), _) => bail!("`socket.{k}`: not a key of `socket` (enabled: bool, path, permissions)"),
                (None, _) => bail!("`socket`: keys must be names"),
            }
        }
        Ok(enabled.then_some(spec))
    }
}

/// File permissions as written in YAML: `0600` (octal, as Go's YAML reads
/// a leading zero), `"0600"`, `0o600`, or `384`.
fn permissions(v: &Value) -> anyhow::Result<u32> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => bail!("`socket.permissions`: expected octal permissions like 0600"),
    };
    let parsed = match text.strip_prefix("0o").or_else(|| text.strip_prefix('0').filter(|r| !r.is_empty())) {
        Some(octal) => u32::from_str_radix(octal, 8).ok(),
        // serde_yaml reads `0600` as the integer 600: digits that are all
        // octal and make sense as permissions are taken as octal.
        None if text.len() == 3 && text.chars().all(|c| ('0'..='7').contains(&c)) => u32::from_str_radix(&text, 8).ok(),
        None => text.parse().ok(),
    };
    match parsed {
        Some(p) if p <= 0o777 => Ok(p),
        _ => bail!("`socket.permissions`: `{text}` is not file permissions (expected e.g. 0600)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> anyhow::Result<Option<SocketSpec>> {
        SocketSpec::resolve(&serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn off_unless_enabled_and_litestream_defaults() {
        assert_eq!(parse("{path: /tmp/s.sock}").unwrap(), None);
        let on = parse("{enabled: true}").unwrap().unwrap();
        assert_eq!((on.path.to_str().unwrap(), on.permissions), (DEFAULT_SOCKET_PATH, 0o600));
    }

    #[test]
    fn permissions_read_as_octal_like_go() {
        for (text, want) in [("0600", 0o600), ("0660", 0o660), ("\"0640\"", 0o640), ("0o600", 0o600), ("384", 384)] {
            let spec = parse(&format!("{{enabled: true, path: /s, permissions: {text}}}")).unwrap().unwrap();
            assert_eq!(spec.permissions, want, "{text}");
        }
        assert!(parse("{enabled: true, permissions: 0999}").is_err());
        assert!(parse("{enabled: true, permisions: 0600}").is_err(), "a misspelt key is an error");
        assert!(parse("/var/run/x.sock").is_err());
    }
}
