//! Where a replica lives on a WebDAV server, from Litestream's URL form
//! `webdav[s]://[user[:password]@]host[:port]/path` and its settings
//! `webdav-url` (the server, overriding the URL's), `webdav-username`,
//! `webdav-password`.

use base64::Engine;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use sluice_sdk::{Config, Error};

/// Bytes escaped in a path segment: everything outside RFC 3986's
/// unreserved set and the sub-delimiters servers accept unescaped.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// A replica's place: the server (`http[s]://host[:port]` plus any path
/// the server itself lives under), the replica's directory below it, and
/// the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// `http[s]://host[:port]`, no trailing slash.
    pub origin: String,
    /// The replica's directory as path segments (decoded), below the origin.
    pub root: Vec<String>,
    /// `Basic ...`, if a user name was given.
    pub authorization: Option<String>,
}

impl Location {
    pub fn from_config(config: &Config) -> Result<Location, Error> {
        let (scheme, rest) = config
            .url
            .split_once("://")
            .ok_or_else(|| Error::invalid_config(format!("not a webdav URL: {}", config.url)))?;
        let http = match scheme {
            "webdav" => "http",
            "webdavs" => "https",
            other => return Err(Error::invalid_config(format!("scheme `{other}` is not webdav:// or webdavs://"))),
        };
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (mut user, mut password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((n, p)) => (Some(decode(n)?), Some(decode(p)?)),
                None => (Some(decode(u)?), None),
            },
            None => (None, None),
        };
        let mut origin = format!("{http}://{host}");
        let mut root = segments(path)?;
        if let Some(server) = config.get("webdav-url") {
            // The server as a URL of its own: its path is where the WebDAV
            // share starts, the replica URL's path is below it.
            let (base, base_path) = split_server(server)?;
            origin = base;
            let mut under = segments(&base_path)?;
            under.append(&mut root);
            root = under;
        } else if host.is_empty() {
            return Err(Error::invalid_config(format!(
                "{}: a host is required (webdav://host[:port]/path), or set webdav-url",
                config.url
            )));
        }
        if let Some(u) = config.get("webdav-username") {
            user = Some(u.to_string());
        }
        if let Some(p) = config.get("webdav-password") {
            password = Some(p.to_string());
        }
        let authorization = user.map(|u| {
            let pair = format!("{u}:{}", password.unwrap_or_default());
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
        });
        Ok(Location { origin, root, authorization })
    }

    /// The URL of `segments` below the root (a collection when
    /// `collection`, which WebDAV servers want with a trailing slash).
    pub fn url(&self, segments: &[&str], collection: bool) -> String {
        let mut url = self.origin.clone();
        for s in self.root.iter().map(String::as_str).chain(segments.iter().copied()) {
            url.push('/');
            url.extend(utf8_percent_encode(s, SEGMENT));
        }
        if collection || (segments.is_empty() && self.root.is_empty()) {
            url.push('/');
        }
        url
    }

    /// The key an `href` from a multistatus answer names, if it lies below
    /// the root (`None` for the root itself and anything outside).
    pub fn key_of(&self, href: &str) -> Option<String> {
        // An href is either a path or an absolute URL.
        let path = match href.split_once("://") {
            Some((_, rest)) => &rest[rest.find('/').unwrap_or(rest.len())..],
            None => href,
        };
        let origin_path = split_server(&self.origin).ok()?.1;
        let decoded = segments(path).ok()?;
        let skip = segments(&origin_path).ok()?.len() + self.root.len();
        let prefix_ok = decoded.len() > skip
            && decoded[..skip]
                .iter()
                .zip(segments(&origin_path).ok()?.iter().chain(self.root.iter()))
                .all(|(a, b)| a == b);
        prefix_ok.then(|| decoded[skip..].join("/"))
    }
}

/// `scheme://authority/path` into `scheme://authority` and `/path`.
fn split_server(server: &str) -> Result<(String, String), Error> {
    let (scheme, rest) =
        server.split_once("://").ok_or_else(|| Error::invalid_config(format!("webdav-url `{server}` is not a URL")))?;
    if scheme != "http" && scheme != "https" {
        return Err(Error::invalid_config(format!("webdav-url `{server}` must be http:// or https://")));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Ok((format!("{scheme}://{authority}"), path.to_string()))
}

/// A URL path's non-empty segments, percent-decoded.
fn segments(path: &str) -> Result<Vec<String>, Error> {
    path.split('/').filter(|s| !s.is_empty()).map(decode).collect()
}

fn decode(s: &str) -> Result<String, Error> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| Error::invalid_config(format!("`{s}` is not valid UTF-8 once decoded")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(url: &str, settings: &[(&str, &str)]) -> Location {
        let settings = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Location::from_config(&Config::new(url, settings)).unwrap()
    }

    #[test]
    fn litestream_url_forms() {
        let l = loc("webdav://alice:s%40cret@127.0.0.1:8080/backups/app", &[]);
        assert_eq!(l.origin, "http://127.0.0.1:8080");
        assert_eq!(l.root, vec!["backups", "app"]);
        let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:s@cret"));
        assert_eq!(l.authorization.as_deref(), Some(expected.as_str()));
        assert_eq!(loc("webdavs://dav.example.com/x", &[]).origin, "https://dav.example.com");
        assert_eq!(loc("webdav://h/x", &[]).authorization, None);
    }

    #[test]
    fn settings_override_the_url() {
        let l = loc(
            "webdav://ignored/app",
            &[
                ("webdav-url", "https://cloud.example.com/remote.php/dav"),
                ("webdav-username", "bob"),
                ("webdav-password", "pw"),
            ],
        );
        assert_eq!(l.origin, "https://cloud.example.com");
        assert_eq!(l.root, vec!["remote.php", "dav", "app"]);
        assert!(l.authorization.is_some());
    }

    #[test]
    fn urls_escape_segments_and_hrefs_map_back_to_keys() {
        let l = loc("webdav://h:1/base%20dir/app", &[]);
        let url = l.url(&["0009", "a b#c.seg"], false);
        assert_eq!(url, "http://h:1/base%20dir/app/0009/a%20b%23c.seg");
        assert_eq!(l.url(&["0009"], true), "http://h:1/base%20dir/app/0009/");
        assert_eq!(l.key_of("/base%20dir/app/0009/a%20b%23c.seg").as_deref(), Some("0009/a b#c.seg"));
        assert_eq!(l.key_of("http://h:1/base%20dir/app/x").as_deref(), Some("x"));
        assert_eq!(l.key_of("/base%20dir/app/"), None, "the root is no key");
        assert_eq!(l.key_of("/elsewhere/app/x"), None);
    }

    #[test]
    fn bad_urls_are_configuration_errors() {
        for url in ["s3://b/x", "webdav:///x", "nothing"] {
            assert!(Location::from_config(&Config::new(url, vec![])).is_err(), "{url}");
        }
    }
}
