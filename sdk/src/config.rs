//! The store configuration a plugin receives in `Backend::open`.

use crate::Error;

/// The replica URL and its settings, with lookup helpers.
#[derive(Clone)]
pub struct Config {
    /// The replica URL as configured, e.g. `s3://bucket/path?region=x`.
    pub url: String,
    settings: Vec<(String, String)>,
    /// The names the plugin declared in `PluginInfo::settings`; `None`
    /// for a configuration built by hand (tests).
    declared: Option<Vec<String>>,
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
        Config { url: url.into(), settings, declared: None }
    }

    /// The configuration `Backend::open` receives: the host's settings,
    /// after any the URL's query gives (`?name=value`) for a `declared`
    /// name, so the host's win.
    pub fn declared(url: String, settings: Vec<(String, String)>, declared: Vec<String>) -> Result<Self, Error> {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let query = query.split_once('#').map_or(query, |(q, _)| q);
        let mut all = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k)?;
            if declared.contains(&k) {
                all.push((k, percent_decode(v)?));
            }
        }
        all.extend(settings);
        Ok(Config { url, settings: all, declared: Some(declared) })
    }

    /// A setting's value, if present and not empty.
    ///
    /// # Panics
    /// When the plugin asks for a setting it did not declare in
    /// `PluginInfo::settings`: the host never passes such a setting, so
    /// the read would silently find nothing. The panic names it, and
    /// `sluice plugin check` shows it on the first run.
    pub fn get(&self, key: &str) -> Option<&str> {
        if let Some(declared) = &self.declared {
            assert!(
                declared.iter().any(|d| d == key),
                "plugin bug: setting `{key}` is read but not declared in PluginInfo::settings"
            );
        }
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

    /// This configuration with the settings a URL's query gives
    /// (`?endpoint=...`, percent-decoded) added before its own, so the
    /// configuration's win (`get` takes the last).
    pub fn with_query(&self, query: &str) -> Result<Config, Error> {
        let mut settings = Vec::new();
        for pair in query.split(['&', '#']).filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            settings.push((percent_decode(k)?, percent_decode(v)?));
        }
        settings.extend(self.settings.iter().cloned());
        Ok(Config { url: self.url.clone(), settings, declared: self.declared.clone() })
    }
}

/// A percent-encoded URL part, decoded; not UTF-8 once decoded is a
/// configuration error naming it.
pub fn percent_decode(s: &str) -> Result<String, Error> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::invalid_config(format!("`{s}` is not UTF-8 once decoded")))
}

/// A replica URL's path as the prefix of its keys: segments decoded,
/// empty and `.` ones dropped, each followed by `/` (empty at the root);
/// `..` is refused.
pub fn key_prefix(path: &str) -> Result<String, Error> {
    let mut prefix = String::new();
    for s in path.split('/').filter(|s| !s.is_empty() && *s != ".") {
        if s == ".." {
            return Err(Error::invalid_config(format!("path `{path}` must not contain `..`")));
        }
        prefix.push_str(&percent_decode(s)?);
        prefix.push('/');
    }
    Ok(prefix)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_query_settings_and_key_prefixes() {
        let c = Config::new("x://h/p", vec![("endpoint".into(), "mine".into())]);
        let q = c.with_query("endpoint=theirs&region=eu%2D1").unwrap();
        assert_eq!((q.get("endpoint"), q.get("region")), (Some("mine"), Some("eu-1")));
        assert_eq!(key_prefix("/db/./a%20b//").unwrap(), "db/a b/");
        assert_eq!(key_prefix("").unwrap(), "");
        assert!(key_prefix("a/../b").is_err());
        assert!(percent_decode("%ff").is_err());
    }

    #[test]
    fn a_declared_settings_query_value_yields_to_the_hosts() {
        let declared = vec!["region".to_string(), "endpoint".to_string()];
        let settings = vec![("endpoint".into(), "host".into())];
        let c = Config::declared("x://h/p?endpoint=url&region=eu%2D1&other=1#f".into(), settings, declared).unwrap();
        assert_eq!((c.get("endpoint"), c.get("region")), (Some("host"), Some("eu-1")));
        assert!(!c.settings().iter().any(|(k, _)| k == "other"), "an undeclared query key is not a setting");
    }

    #[test]
    #[should_panic(expected = "setting `regoin` is read but not declared")]
    fn reading_an_undeclared_setting_is_a_plugin_bug() {
        let c = Config::declared("x://h/p".into(), Vec::new(), vec!["region".into()]).unwrap();
        let _ = c.get("regoin");
    }
}
