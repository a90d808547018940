//! Where a replica lives, from Litestream's URL form
//! `sftp://[user[:password]@]host[:port]/path` and its settings `host`,
//! `user`, `password`, `key-path` (read by sluice, handed over as `key`),
//! `host-key` and `concurrent-writes`. The URL's path is the directory
//! on the server, absolute as written, or below the login directory as
//! `/~/path`; keys become files below it.

use sluice_sdk::{Config, Error, Setting, key_prefix, percent_decode};

/// The port an `sftp://` URL without one means.
pub const DEFAULT_PORT: u16 = 22;

/// How the client proves who it is. Both may be given: the key is tried
/// first, then the password (as Litestream's client does).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub user: String,
    pub password: Option<String>,
    /// A private key in OpenSSH or PEM form (the text of `key-path`).
    pub key: Option<String>,
}

// Never print a secret.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth({}, password: {}, key: {})", self.user, self.password.is_some(), self.key.is_some())
    }
}

/// A replica's server, directory and credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub host: String,
    pub port: u16,
    /// The directory keys live in, ending in `/`: absolute, or relative to
    /// the login directory (which the server resolves).
    pub root: String,
    pub auth: Auth,
    /// The server's public key as one `authorized_keys` line
    /// (`ssh-ed25519 AAAA...`); `None` accepts any key, with a warning.
    pub host_key: Option<String>,
}

/// Settings this plugin reads: Litestream's SFTP keys.
pub fn settings() -> Vec<Setting> {
    vec![
        Setting::new("host", "Litestream's `host` (host[:port]): sluice makes the URL from it, `path` and `user`"),
        Setting::new("user", "user name to log in as (or user@ in the URL)"),
        Setting::new("password", "password authentication (or user:password@ in the URL)").secret(),
        Setting::new("key-path", "private key file for public-key authentication; sluice reads it and passes `key`"),
        Setting::new("key", "private key (OpenSSH or PEM text) for public-key authentication").secret(),
        Setting::new(
            "host-key",
            "the server's public key as in known_hosts (`ssh-ed25519 AAAA...`); without it any key is accepted, with a warning",
        ),
        Setting::new("concurrent-writes", "accepted for Litestream; writes are always pipelined"),
    ]
}

impl Location {
    /// Parse the URL and settings; everything wrong is said at once here,
    /// before any connection. Messages show the URL without its password.
    pub fn parse(config: &Config) -> Result<Self, Error> {
        let url = config.url.as_str();
        let rest = url.strip_prefix("sftp://").unwrap_or_default();
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (userinfo, hostport) = authority.rsplit_once('@').map_or((None, authority), |(u, h)| (Some(u), h));
        let shown = shown_url(url);
        if !url.starts_with("sftp://") || hostport.is_empty() {
            // The host's sandbox lets the plugin reach the URL's server
            // only, so the server must be in the URL (the host builds it
            // from Litestream's `host` field).
            return Err(Error::invalid_config(format!("{shown}: expected sftp://[user@]host[:port]/path")));
        }
        let (host, port) = split_host_port(hostport, &shown)?;
        let (url_user, url_password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((n, p)) => (percent_decode(n)?, Some(decode_secret(p)?)),
                None => (percent_decode(u)?, None),
            },
            None => (String::new(), None),
        };
        let user = config.get("user").map(str::to_string).filter(|u| !u.is_empty()).unwrap_or(url_user);
        if user.is_empty() {
            return Err(Error::invalid_config(format!("{shown}: no user; give sftp://USER@host/path or `user`")));
        }
        let password = config.get("password").map(str::to_string).or(url_password).filter(|p| !p.is_empty());
        let key = config.get("key").map(str::to_string).filter(|k| !k.trim().is_empty());
        if key.is_none() && config.get("key-path").is_some_and(|p| !p.is_empty()) {
            return Err(Error::invalid_config(
                "`key-path` reached the plugin unread: give the key's text as `key` (sluice reads key-path itself)",
            ));
        }
        if password.is_none() && key.is_none() {
            return Err(Error::invalid_config(format!(
                "{shown}: no credentials; give `password` (or user:password@ in the URL) or `key-path`"
            )));
        }
        // Litestream's is a bool; a count is taken too. Writes are always
        // pipelined, so neither changes anything.
        if let Some(v) =
            config.get("concurrent-writes").filter(|v| v.parse::<bool>().is_err() && v.parse::<u32>().is_err())
        {
            return Err(Error::invalid_config(format!("concurrent-writes `{v}` is neither true nor false")));
        }
        let host_key = config.get("host-key").map(str::trim).filter(|k| !k.is_empty()).map(str::to_string);
        let root = root_of(path, &shown)?;
        Ok(Location { host, port, root, auth: Auth { user, password, key }, host_key })
    }

    /// The file that holds `key`.
    pub fn path_of(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    /// `user@host:port`, for messages.
    pub fn server(&self) -> String {
        format!("{}@{}:{}", self.auth.user, self.host, self.port)
    }
}

/// The directory keys live in, from the URL's path: absolute as written
/// (`/srv/backups/db` → `/srv/backups/db/`), or below the login directory
/// for `/~/...` (`/~/backups/db` → `backups/db/`, which the server
/// resolves), the form Litestream's relative `path:` becomes. The root
/// of the server or of the login directory is refused: a listing would
/// walk all of it.
fn root_of(path: &str, shown: &str) -> Result<String, Error> {
    let (relative, path) = match path.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => (true, rest),
        _ => (false, path),
    };
    let prefix = key_prefix(path)?;
    if prefix.is_empty() {
        return Err(Error::invalid_config(format!(
            "{shown}: name the directory for the replica (sftp://host/srv/backups/db, or /~/backups/db below the login directory)"
        )));
    }
    Ok(if relative { prefix } else { format!("/{prefix}") })
}

/// The URL for messages: nothing between the user name and the last `@`
/// (a password, even one with an unescaped `/`, `?` or `#`).
fn shown_url(url: &str) -> String {
    let rest = url.strip_prefix("sftp://").unwrap_or(url);
    let hidden = rest.rfind('@').and_then(|at| {
        let (user, _) = rest[..at].split_once(':')?;
        (!user.contains(['/', '?', '#'])).then(|| format!("sftp://{user}:***{}", &rest[at..]))
    });
    hidden.unwrap_or_else(|| format!("sftp://{rest}"))
}

/// A password from the URL, decoded without repeating it if it cannot be.
fn decode_secret(p: &str) -> Result<String, Error> {
    percent_decode(p).map_err(|_| Error::invalid_config("the URL's password is not UTF-8 once percent-decoded"))
}

/// Whether `key` names a file this plugin keeps for itself (a temporary
/// file or a metadata file): such a key could be written but never listed.
pub fn reserved(key: &str) -> bool {
    key.split('/').any(|name| is_temp(name) || is_meta(name))
}

/// What a put writes to before renaming it into place: beside the
/// target, so the rename never crosses file systems.
pub fn temp_path(path: &str, random: u64) -> String {
    format!("{path}{TEMP_MARK}{random:016x}")
}

/// Whether a file name is a put's temporary file (a put cut short leaves
/// one; listings skip it).
pub fn is_temp(name: &str) -> bool {
    name.rsplit_once(TEMP_MARK).is_some_and(|(_, r)| r.len() == 16 && r.bytes().all(|b| b.is_ascii_hexdigit()))
}

const TEMP_MARK: &str = ".sluice-tmp-";

/// The file holding an object's metadata (SFTP has no place for it).
pub fn meta_path(path: &str) -> String {
    format!("{path}{META_MARK}")
}

/// Whether a file name is a metadata file (listings skip it).
pub fn is_meta(name: &str) -> bool {
    name.ends_with(META_MARK)
}

const META_MARK: &str = ".sluice-meta";

/// A metadata file's text: the etag of the object it belongs to, then one
/// `key=value` line per pair, the value percent-encoded.
pub fn encode_meta(etag: &str, pairs: &[(String, String)]) -> String {
    let mut text = format!("{etag}\n");
    for (k, v) in pairs {
        let v = v.replace('%', "%25").replace('\n', "%0A").replace('\r', "%0D");
        text.push_str(&format!("{k}={v}\n"));
    }
    text
}

/// The pairs a metadata file holds if it belongs to the object whose etag
/// is `etag` (one left over from an earlier object is not its metadata).
pub fn decode_meta(text: &str, etag: &str) -> Option<Vec<(String, String)>> {
    let mut lines = text.lines();
    if lines.next()? != etag {
        return None;
    }
    let pair = |l: &str| {
        let (k, v) = l.split_once('=')?;
        Some((k.to_string(), percent_decode(v).ok()?))
    };
    lines.map(pair).collect()
}

/// The directories to create for a file at `path`, outermost first:
/// every ancestor but `/` (a relative path's stay relative), so a
/// replica's directory is made with its parents as `mkdir -p` would.
pub fn parents(path: &str) -> Vec<String> {
    let lead = if path.starts_with('/') { "/" } else { "" };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    (1..segments.len()).map(|n| format!("{lead}{}", segments[..n].join("/"))).collect()
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(hostport: &str, url: &str) -> Result<(String, u16), Error> {
    let bad = || Error::invalid_config(format!("{url}: expected sftp://[user@]host[:port]/path"));
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Error::invalid_config(format!("{url}: port `{p}` is not a port number (1-65535)")))?,
        None => DEFAULT_PORT,
    };
    Ok((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(url: &str, settings: &[(&str, &str)]) -> Result<Location, Error> {
        let settings = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Location::parse(&Config::new(url, settings))
    }

    #[test]
    fn litestreams_url_form() {
        let l = at("sftp://backup:s%40cret@Files.Example:2222/srv/backups/db", &[]).unwrap();
        assert_eq!((l.host.as_str(), l.port, l.root.as_str()), ("files.example", 2222, "/srv/backups/db/"));
        assert_eq!(l.auth.user, "backup");
        assert_eq!(l.auth.password.as_deref(), Some("s@cret"));
        assert_eq!(l.path_of("ltx/0/a.ltx"), "/srv/backups/db/ltx/0/a.ltx");
        let v6 = at("sftp://u@[::1]/p?x=1", &[("password", "p")]).unwrap();
        assert_eq!((v6.host.as_str(), v6.port, v6.root.as_str()), ("::1", 22, "/p/"));
        // Below the login directory: the server resolves a relative path.
        let home = at("sftp://u@h/~/backups/db", &[("password", "p")]).unwrap();
        assert_eq!((home.root.as_str(), home.path_of("a/b").as_str()), ("backups/db/", "backups/db/a/b"));
        assert_eq!(parents("backups/db/0000/x.seg"), ["backups", "backups/db", "backups/db/0000"]);
        assert_eq!(at("sftp://u@h/~x/p", &[("password", "p")]).unwrap().root, "/~x/p/", "only `~` alone is home");
        for (v, ok) in [("true", true), ("false", true), ("4", true), ("yes", false)] {
            assert_eq!(at("sftp://u@h/p", &[("password", "p"), ("concurrent-writes", v)]).is_ok(), ok, "{v}");
        }
    }

    #[test]
    fn settings_give_what_the_url_does_not_and_win_over_it() {
        let l = at("sftp://h:2200/backups/db", &[("user", "me"), ("key", "KEY"), ("host-key", " ssh-ed25519 AAAA ")])
            .unwrap();
        assert_eq!((l.host.as_str(), l.port, l.auth.user.as_str()), ("h", 2200, "me"));
        assert_eq!((l.auth.key.as_deref(), l.host_key.as_deref()), (Some("KEY"), Some("ssh-ed25519 AAAA")));
        let l = at("sftp://u:urlpass@h/p", &[("password", "setting")]).unwrap();
        assert_eq!(l.auth.password.as_deref(), Some("setting"));
    }

    #[test]
    fn what_cannot_work_is_refused_before_connecting() {
        let msg = |r: Result<Location, Error>| r.unwrap_err().message().to_string();
        assert!(msg(at("sftp://h/p", &[("password", "p")])).contains("no user"));
        assert!(msg(at("sftp://u@h/p", &[])).contains("no credentials"));
        assert!(msg(at("sftp://u@h:0/p", &[("password", "p")])).contains("port `0`"));
        assert!(msg(at("sftp://u@h:ssh/p", &[("password", "p")])).contains("port `ssh`"));
        // The server must be in the URL: the sandbox lets the plugin reach
        // that one only (the host makes the URL from a `host` field).
        assert!(msg(at("sftp:///p", &[("host", "h"), ("user", "u"), ("password", "p")])).contains("expected sftp://"));
        assert!(msg(at("sftp://u@h", &[("password", "p")])).contains("name the directory"));
        assert!(msg(at("sftp://u@h/~/", &[("password", "p")])).contains("name the directory"));
        assert!(msg(at("sftp://u@h/a/../b", &[("password", "p")])).contains(".."));
        assert!(msg(at("sftp://u@h/p", &[("key-path", "/k")])).contains("unread"));
        assert!(msg(at("sftp://u@h/p", &[("password", "p"), ("concurrent-writes", "x")])).contains("true nor false"));
        assert!(at("s3://u@h/p", &[("password", "p")]).is_err());
    }

    #[test]
    fn temporary_files_are_known_by_name_and_directories_made_outermost_first() {
        let t = temp_path("/r/ltx/0/a.ltx", 0xfeed);
        assert_eq!(t, "/r/ltx/0/a.ltx.sluice-tmp-000000000000feed");
        assert!(is_temp(&t) && !is_temp("/r/ltx/0/a.ltx") && !is_temp("a.sluice-tmp-xyz"));
        assert_eq!(parents("/r/s/ltx/0/a.ltx"), ["/r", "/r/s", "/r/s/ltx", "/r/s/ltx/0"]);
        assert_eq!(parents("/a"), Vec::<String>::new());
        assert_eq!(parents("/d/a"), ["/d"]);
    }

    #[test]
    fn metadata_files_belong_to_one_version_of_their_object() {
        let pairs =
            vec![("timestamp".to_string(), "2026-12-04T19:00:00Z".to_string()), ("x".into(), "a%b\nc=d".into())];
        let text = encode_meta("10-1700000000", &pairs);
        assert_eq!(decode_meta(&text, "10-1700000000").unwrap(), pairs);
        assert_eq!(decode_meta(&text, "11-1700000000"), None, "another version's metadata");
        assert_eq!(decode_meta("", "e"), None);
        assert_eq!(decode_meta("e\n", "e").unwrap(), Vec::new());
        assert!(is_meta(&meta_path("/r/a.ltx")) && !is_meta("/r/a.ltx"));
    }

    #[test]
    fn secrets_never_print() {
        let l = at("sftp://u:hunter2@h/p", &[("key", "PRIVATE")]).unwrap();
        let shown = format!("{l:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("PRIVATE"), "{shown}");
        for bad in [
            "sftp://u:hunter2@h:99999/p",
            "sftp://u:hunter2@h",
            "sftp://u:hunter2%ff@h/p",
            "sftp://u:hun/ter2@h/p",
            "sftp://u:hun#ter2@h:0/p",
        ] {
            let said = at(bad, &[]).unwrap_err().message().to_string();
            assert!(!said.contains("hunter2"), "{said}");
        }
    }

    #[test]
    fn the_plugins_own_files_are_not_keys() {
        assert!(reserved(&format!("0000/{}", temp_path("a.seg", 7).trim_start_matches('/'))));
        assert!(reserved("0000/a.seg.sluice-meta") && !reserved("0000/a.seg") && !reserved("sluice-lease.json"));
        assert!(reserved("a.sluice-meta/b"), "a directory so named is skipped by listings too");
    }
}
