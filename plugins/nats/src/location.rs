//! Where a replica lives, from Litestream's URL form
//! `nats://[user:password@]host[:port]/bucket[/path]` (a user name with no
//! password is a token, as in NATS's own clients) and its settings
//! `username`, `password`, `token` and `bucket`. With `bucket` set, the
//! whole URL path is the key prefix. Keys become object names below the
//! path: `path/KEY`.

use sluice_sdk::{Config, Error, Setting, key_prefix, percent_decode};

/// The port a `nats://` URL without one means.
pub const DEFAULT_PORT: u16 = 4222;

/// How the connection authenticates (`CONNECT`'s fields).
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// NKey authentication: the server's nonce signed with the user's
    /// seed; with a user JWT (Litestream's `jwt` and `seed`), the JWT
    /// names the user instead of the seed's public key.
    Nkey {
        seed: String,
        jwt: Option<String>,
    },
}

// Never print a secret.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::UserPassword { user, .. } => write!(f, "UserPassword({user})"),
            Auth::Token(_) => f.write_str("Token"),
            Auth::Nkey { jwt, .. } => write!(f, "Nkey(jwt: {})", jwt.is_some()),
        }
    }
}

/// A replica's server, bucket, name prefix and credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub host: String,
    pub port: u16,
    pub bucket: String,
    /// Prepended to every key: the URL's path below the bucket, each
    /// segment followed by `/` (empty at the bucket's root).
    pub prefix: String,
    pub auth: Auth,
}

/// Settings this plugin reads: Litestream's NATS keys. Those for
/// authentication it cannot do are read only to refuse them clearly.
pub fn settings() -> Vec<Setting> {
    vec![
        Setting::new("bucket", "object store bucket; default: the URL path's first segment"),
        Setting::new("username", "user for user/password authentication (or user:password@ in the URL)"),
        Setting::new("password", "password for user/password authentication").secret(),
        Setting::new("token", "token for token authentication").secret(),
        Setting::new("jwt", "user JWT for JWT authentication, with `seed`").secret(),
        Setting::new("seed", "user NKey seed (SU...): signs the server's nonce; alone, NKey authentication").secret(),
        Setting::new("creds", "a credentials file (user JWT and seed); sluice reads it and passes `creds-text`"),
        Setting::new("creds-text", "the text of a credentials file (`nsc generate creds`): its user JWT and seed")
            .secret(),
        Setting::new("nkey", "not supported: a public NKey with a signing callback; give the seed as `seed`").secret(),
        Setting::new(
            "root-cas",
            "not supported: TLS (plain TCP only: use a local leaf node or a TLS-terminating proxy)",
        ),
        Setting::new("client-cert", "not supported: TLS client certificates"),
        Setting::new("client-key", "not supported: TLS client certificates").secret(),
    ]
}

/// Refuse what this plugin cannot do, saying what to use instead.
fn refuse_unsupported(config: &Config) -> Result<(), Error> {
    if config.get("creds").is_some() && config.get("creds-text").is_none() {
        return Err(Error::invalid_config(
            "setting `creds` reached the plugin unread: give the file's text as `creds-text` (sluice reads creds itself)",
        ));
    }
    if config.get("nkey").is_some() {
        return Err(Error::unsupported(
            "setting `nkey`: a public NKey needs a signing callback, which a configuration cannot give; \
             give the user's seed (SU...) as `seed` instead",
        ));
    }
    for key in ["root-cas", "client-cert", "client-key"] {
        if config.get(key).is_some() {
            return Err(Error::unsupported(format!(
                "setting `{key}`: this plugin speaks plain TCP only (no TLS); reach a TLS-only server through a \
                 local nats-server leaf node or a TLS-terminating proxy, and point the replica URL at it"
            )));
        }
    }
    Ok(())
}

impl Location {
    pub fn from_config(config: &Config) -> Result<Location, Error> {
        refuse_unsupported(config)?;
        let rest = config
            .url
            .strip_prefix("nats://")
            .ok_or_else(|| Error::invalid_config(format!("not a nats:// URL: {}", config.url)))?;
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (userinfo, server) = match authority.rsplit_once('@') {
            Some((u, s)) => (Some(u), s),
            None => (None, authority),
        };
        let (host, port) = host_port(server, &config.url)?;
        let (bucket, prefix) = match config.get("bucket") {
            Some(b) => (b.to_string(), key_prefix(path)?),
            None => {
                let path = path.trim_start_matches('/');
                let (first, below) = path.split_once('/').unwrap_or((path, ""));
                (percent_decode(first)?, key_prefix(below)?)
            }
        };
        check_bucket(&bucket, &config.url)?;
        let auth = auth(userinfo, config)?;
        Ok(Location { host, port, bucket, prefix, auth })
    }

    /// The object name of a key.
    pub fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The key of an object name, if it lies below the prefix.
    pub fn key_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        name.strip_prefix(self.prefix.as_str()).filter(|k| !k.is_empty())
    }
}

/// `host[:port]` or `[v6][:port]`.
fn host_port(server: &str, url: &str) -> Result<(String, u16), Error> {
    let (host, port) = match server.strip_prefix('[') {
        Some(v6) => {
            let (h, after) =
                v6.split_once(']').ok_or_else(|| Error::invalid_config(format!("{url}: unclosed `[` in the host")))?;
            (h, after.strip_prefix(':'))
        }
        None => match server.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (server, None),
        },
    };
    if host.is_empty() {
        return Err(Error::invalid_config(format!("{url}: a host is required (nats://host[:port]/bucket[/path])")));
    }
    let port = match port {
        None | Some("") => DEFAULT_PORT,
        Some(p) => p.parse().map_err(|_| Error::invalid_config(format!("{url}: port `{p}` is not a number")))?,
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// Bucket names as nats.go accepts them (they become a stream name and a
/// subject token).
fn check_bucket(bucket: &str, url: &str) -> Result<(), Error> {
    let ok = !bucket.is_empty() && bucket.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(Error::invalid_config(format!(
            "{url}: bucket `{bucket}` must be letters, digits, `_` and `-` (nats://host[:port]/bucket[/path], or the `bucket` setting)"
        )));
    }
    Ok(())
}

/// Credentials from the URL, overridden by the settings.
fn auth(userinfo: Option<&str>, config: &Config) -> Result<Auth, Error> {
    let (mut user, mut password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((n, p)) => (Some(percent_decode(n)?), Some(percent_decode(p)?)),
            None => (Some(percent_decode(u)?), None),
        },
        None => (None, None),
    };
    let mut token = None;
    // A user name alone in a URL is a token, as NATS clients read it.
    if password.is_none() {
        token = user.take();
    }
    if let Some(t) = config.get("token") {
        token = Some(t.to_string());
    }
    if let Some(u) = config.get("username") {
        user = Some(u.to_string());
    }
    if let Some(p) = config.get("password") {
        password = Some(p.to_string());
    }
    if let Some(nkey) = nkey_auth(config)? {
        return Ok(nkey);
    }
    Ok(match (user, token) {
        (Some(user), _) => Auth::UserPassword { user, password: password.unwrap_or_default() },
        (None, Some(token)) => Auth::Token(token),
        (None, None) => Auth::None,
    })
}

/// NKey or JWT authentication from `seed` (and `jwt`), first as in
/// Litestream; the seed is checked here, never shown.
fn nkey_auth(config: &Config) -> Result<Option<Auth>, Error> {
    let from_file = config.get("creds-text").map(creds_file).transpose()?;
    if from_file.is_some() && (config.get("seed").is_some() || config.get("jwt").is_some()) {
        return Err(Error::invalid_config("give either a credentials file (`creds`) or `jwt` and `seed`, not both"));
    }
    let (seed, jwt) = match &from_file {
        Some((jwt, seed)) => (Some(seed.as_str()), Some(jwt.as_str())),
        None => (config.get("seed"), config.get("jwt")),
    };
    let Some(seed) = seed else {
        return match jwt {
            Some(_) => Err(Error::invalid_config("setting `jwt` needs the user's seed as `seed` to sign with")),
            None => Ok(None),
        };
    };
    let seed = seed.trim();
    let pair = nkeys::KeyPair::from_seed(seed).map_err(|e| {
        Error::invalid_config(format!(
            "setting `seed` is not an NKey seed ({e}); it starts with SU and is 58 characters"
        ))
    })?;
    if !pair.public_key().starts_with('U') {
        return Err(Error::invalid_config("setting `seed` is not a user's seed (SU...)"));
    }
    Ok(Some(Auth::Nkey { seed: seed.to_string(), jwt: jwt.map(|j| j.trim().to_string()) }))
}

/// A credentials file's user JWT and seed: the first and second values
/// framed by `-----BEGIN ...-----` and `------END ...------` lines, as
/// NATS's clients read them.
fn creds_file(text: &str) -> Result<(String, String), Error> {
    let mut values = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.starts_with("---") && line.contains("BEGIN") {
            values.extend(lines.by_ref().find(|l| !l.is_empty()).map(str::to_string));
        }
    }
    match <[String; 2]>::try_from(values) {
        Ok([jwt, seed]) => Ok((jwt, seed)),
        Err(found) => Err(Error::invalid_config(format!(
            "the credentials file (`creds`) holds {} framed values, not a user JWT and a seed",
            found.len()
        ))),
    }
}

impl Auth {
    /// `CONNECT`'s NKey fields: the public key (without a JWT) and the
    /// signature of `nonce`, base64url without padding.
    pub fn nkey_fields(&self, nonce: &str) -> Result<Option<(Option<String>, String)>, Error> {
        use base64::Engine;
        let Auth::Nkey { seed, jwt } = self else { return Ok(None) };
        let pair =
            nkeys::KeyPair::from_seed(seed).map_err(|e| Error::invalid_config(format!("setting `seed`: {e}")))?;
        let sig = pair.sign(nonce.as_bytes()).map_err(|e| Error::permanent(format!("signing the nonce: {e}")))?;
        let public = jwt.is_none().then(|| pair.public_key());
        Ok(Some((public, base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(url: &str, settings: &[(&str, &str)]) -> Result<Location, Error> {
        let settings = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Location::from_config(&Config::new(url, settings))
    }

    #[test]
    fn litestream_url_forms() {
        let l = loc("nats://alice:s%40cret@Nats.Example:4333/backups/app/db?x=1", &[]).unwrap();
        assert_eq!((l.host.as_str(), l.port, l.bucket.as_str()), ("nats.example", 4333, "backups"));
        assert_eq!(l.prefix, "app/db/");
        assert_eq!(l.auth, Auth::UserPassword { user: "alice".into(), password: "s@cret".into() });
        let l = loc("nats://127.0.0.1/bucket", &[]).unwrap();
        assert_eq!((l.port, l.prefix.as_str(), l.auth.clone()), (4222, "", Auth::None));
        assert_eq!(loc("nats://tok@[::1]:5/b", &[]).unwrap().auth, Auth::Token("tok".into()));
        assert_eq!(loc("nats://[::1]:5/b", &[]).unwrap().host, "::1");
        assert_eq!(l.name("0001/x.ltx"), "0001/x.ltx");
    }

    #[test]
    fn a_seed_is_checked_and_never_shown() {
        let seed = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, [7; 32]).unwrap().seed().unwrap();
        let l = loc("nats://u:p@h/b", &[("seed", seed.as_str())]).unwrap();
        assert_eq!(l.auth, Auth::Nkey { seed: seed.clone(), jwt: None }, "before user/password, as in Litestream");
        assert!(!format!("{l:?}").contains(&seed));
        let with_jwt = loc("nats://h/b", &[("seed", seed.as_str()), ("jwt", "e.y.J")]).unwrap();
        assert_eq!(with_jwt.auth, Auth::Nkey { seed: seed.clone(), jwt: Some("e.y.J".into()) });
        // A credentials file as `nsc generate creds` writes it.
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\ne.y.J\n------END NATS USER JWT------\n\n************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\n\n-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n*************************************************************\n"
        );
        let from_file = loc("nats://h/b", &[("creds", "/etc/u.creds"), ("creds-text", creds.as_str())]).unwrap();
        assert_eq!(from_file.auth, Auth::Nkey { seed: seed.clone(), jwt: Some("e.y.J".into()) });
        let both = loc("nats://h/b", &[("creds-text", creds.as_str()), ("seed", seed.as_str())]).unwrap_err();
        assert!(both.to_string().contains("not both"), "{both}");
        for (settings, says) in [
            (vec![("seed", "SUNOTASEED")], "not an NKey seed"),
            (vec![("jwt", "e.y.J")], "needs the user's seed"),
            (
                vec![(
                    "seed",
                    &*nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::Account, [8; 32]).unwrap().seed().unwrap(),
                )],
                "not a user's seed",
            ),
            (vec![("creds", "/etc/u.creds")], "unread"),
            (vec![("creds-text", "-----BEGIN X-----\nonly\n------END X------\n")], "holds 1 framed values"),
        ] {
            let e = loc("nats://h/b", &settings).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn settings_override_the_url() {
        let l = loc("nats://u:p@h/path/below", &[("bucket", "b"), ("username", "v"), ("password", "q")]).unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("b", "path/below/"));
        assert_eq!(l.auth, Auth::UserPassword { user: "v".into(), password: "q".into() });
        assert_eq!(loc("nats://h/b", &[("token", "t")]).unwrap().auth, Auth::Token("t".into()));
        assert_eq!(format!("{:?}", Auth::Token("t".into())), "Token", "no secret in Debug");
        assert_eq!(l.key_of("path/below/k"), Some("k"));
        assert_eq!(l.key_of("elsewhere/k"), None);
    }

    #[test]
    fn what_cannot_work_is_refused_with_what_to_do() {
        for bad in ["s3://b/x", "nats:///b", "nats://h/", "nats://h/bad.bucket", "nats://h:x/b", "nats://h/b/../x"] {
            assert!(matches!(loc(bad, &[]), Err(Error::InvalidConfig(_))), "{bad}");
        }
        match loc("nats://h/b", &[("creds", "/etc/user.creds")]) {
            Err(Error::InvalidConfig(m)) => assert!(m.contains("`creds-text`"), "{m}"),
            other => panic!("{other:?}"),
        }
        match loc("nats://h/b", &[("root-cas", "/ca.pem")]) {
            Err(Error::Unsupported(m)) => assert!(m.contains("plain TCP"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
