//! The store configuration a plugin receives in `Backend::open`.

use crate::Error;

/// The replica URL and its settings, with lookup helpers.
#[derive(Clone)]
pub struct Config {
    /// The replica URL as configured, e.g. `s3://bucket/path?region=x`.
    pub url: String,
    settings: Vec<(String, String)>,
}

// Settings carry secrets: never print their values.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.settings.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Config").field("url", &self.url).field("setting_keys", &keys).finish()
    }
}

impl Config {
    /// Build a configuration (the SDK does this from the host's call).
    pub fn new(url: impl Into<String>, settings: Vec<(String, String)>) -> Self {
        Config { url: url.into(), settings }
    }

    /// A setting's value, if present and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings.iter().rev().find(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    /// A setting that must be present.
    pub fn require(&self, key: &str) -> Result<&str, Error> {
        self.get(key).ok_or_else(|| Error::invalid_config(format!("setting `{key}` is required for {}", self.url)))
    }

    /// A boolean setting (`true`/`false`/`1`/`0`/`yes`/`no`).
    pub fn bool(&self, key: &str) -> Result<Option<bool>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Some(true)),
                "false" | "0" | "no" | "off" => Ok(Some(false)),
                _ => Err(Error::invalid_config(format!("setting `{key}` must be true or false, got `{v}`"))),
            },
        }
    }

    /// A numeric setting.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, Error> {
        self.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| Error::invalid_config(format!("setting `{key}` must be a whole number, got `{v}`")))
            })
            .transpose()
    }

    /// All settings, in order.
    pub fn settings(&self) -> &[(String, String)] {
        &self.settings
    }
}

/// Check a key against the contract's rules: relative, `/`-separated, no
/// empty, `.` or `..` segments. Plugins call this before touching a store.
pub fn validate_key(key: &str) -> Result<(), Error> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.split('/').any(|s| s.is_empty() || s == "." || s == "..")
        || key.chars().any(|c| c == '\0');
    if bad {
        return Err(Error::invalid_config(format!(
            "invalid key {key:?}: keys are relative, `/`-separated, without empty, `.` or `..` segments"
        )));
    }
    Ok(())
}

/// Refuse a delete of more keys than the plugin declared as its
/// `max-delete-batch` (the host never sends more; a caller that does
/// gets told which limit it broke).
pub fn check_delete_batch(keys: usize, max: u32) -> Result<(), Error> {
    if keys > max as usize {
        return Err(Error::invalid_config(format!("delete of {keys} keys exceeds max-delete-batch {max}")));
    }
    Ok(())
}
