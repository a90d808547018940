//! Where a replica lives in Google Cloud Storage, from Litestream's URL
//! form `gs://BUCKET/PATH` and its settings: `bucket` overrides the URL's,
//! `endpoint` names the service (`https://storage.googleapis.com` when
//! absent; an emulator's is `http://127.0.0.1:4443`), `credentials-json`
//! authenticates (`auth.rs`). Settings may also ride in the URL's query
//! (`gs://b/p?endpoint=...`); the configuration's win.

use crate::auth::Credential;
use crate::{DEFAULT_ENDPOINT, UPLOAD_DIR};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sluice_sdk::{Config, Error, key_prefix};

/// Bytes escaped in an object name, which travels as one path segment
/// (`/` included) or as a query value: all but RFC 3986's unreserved.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A replica's place in a bucket.
#[derive(Debug)]
pub struct Location {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub authority: String,
    /// The endpoint's own path, encoded, without a trailing slash (empty
    /// on Google's service).
    pub base_path: String,
    pub bucket: String,
    /// The replica's directory in the bucket, decoded, ending in `/`
    /// (empty at the bucket's root).
    pub prefix: String,
    pub credential: Option<Credential>,
}

/// Percent-encode a name or value as one segment.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

impl Location {
    pub fn from_config(config: &Config) -> Result<Location, Error> {
        let url = &config.url;
        let rest = url.strip_prefix("gs://").ok_or_else(|| Error::invalid_config(format!("not a gs:// URL: {url}")))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let config = &config.with_query(query)?;
        let (url_bucket, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let bucket = config.get("bucket").unwrap_or(url_bucket).to_string();
        check_bucket(&bucket, url)?;
        let (scheme, authority, base_path) = endpoint(config.get("endpoint"))?;
        let credential = match (config.get("credentials-json"), config.get("metadata-host")) {
            (Some(json), _) => Some(Credential::from_json(json)?),
            (None, Some(host)) => Some(Credential::Metadata { host: host.to_string() }),
            (None, None) => None,
        };
        Ok(Location { scheme, authority, base_path, bucket, prefix: key_prefix(path)?, credential })
    }

    /// The object name of a key.
    pub fn object_name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The key a listed object name stands for, if it lies below the
    /// prefix and is not an upload's temporary.
    pub fn key_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        name.strip_prefix(&self.prefix).filter(|k| !k.is_empty() && !k.starts_with(UPLOAD_DIR))
    }

    /// `/storage/v1/b/BUCKET/o`: the bucket's objects (list, and compose's
    /// and metadata's base).
    pub fn objects_path(&self) -> String {
        format!("{}/storage/v1/b/{}/o", self.base_path, encode(&self.bucket))
    }

    /// `/upload/storage/v1/b/BUCKET/o`: where data goes up.
    pub fn upload_path(&self) -> String {
        format!("{}/upload/storage/v1/b/{}/o", self.base_path, encode(&self.bucket))
    }

    /// An object's resource, its full name as one segment.
    pub fn object_path(&self, name: &str) -> String {
        format!("{}/{}", self.objects_path(), encode(name))
    }

    /// The full URL of an encoded path with its query.
    pub fn url(&self, path: &str, query: &[(&str, String)]) -> String {
        let pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
        let query = if pairs.is_empty() { String::new() } else { format!("?{}", pairs.join("&")) };
        format!("{}://{}{path}{query}", self.scheme, self.authority)
    }
}

/// Google's rule for bucket names: 3-63 characters (up to 222 with dots)
/// of lowercase letters, digits, `-`, `_` and `.`, starting and ending
/// with a letter or digit.
fn check_bucket(bucket: &str, url: &str) -> Result<(), Error> {
    let max = if bucket.contains('.') { 222 } else { 63 };
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok = (3..=max).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && edge_ok(bucket.bytes().next())
        && edge_ok(bucket.bytes().last());
    if ok {
        return Ok(());
    }
    let said = if bucket.is_empty() { "no bucket".to_string() } else { format!("bucket `{bucket}`") };
    Err(Error::invalid_config(format!(
        "{url}: {said}: gs://BUCKET/PATH (or `bucket`) needs a bucket name of 3-63 lowercase letters, digits, dashes, underscores and dots"
    )))
}

/// Scheme, authority and base path of the endpoint. A bare `host:port`
/// (as `STORAGE_EMULATOR_HOST` is usually given) is plain http, as in
/// Google's libraries.
fn endpoint(endpoint: Option<&str>) -> Result<(String, String, String), Error> {
    let endpoint = match endpoint {
        Some(e) if e.contains("://") => e.to_string(),
        Some(e) => format!("http://{e}"),
        None => DEFAULT_ENDPOINT.to_string(),
    };
    let parts = sluice_sdk::http::split_url(&endpoint)?;
    let path = parts.path_and_query.split('?').next().unwrap_or_default().trim_end_matches('/');
    // `.../storage/v1` as some tools write it: the API paths add it.
    let path = path.strip_suffix("/storage/v1").unwrap_or(path);
    Ok((parts.scheme.to_string(), parts.authority.to_string(), path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(url: &str, settings: &[(&str, &str)]) -> Result<Location, Error> {
        let s = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Location::from_config(&Config::new(url, s))
    }

    #[test]
    fn litestreams_url_form() {
        let l = at("gs://backups/db/app", &[]).unwrap();
        assert_eq!(l.bucket, "backups");
        assert_eq!(l.prefix, "db/app/");
        assert_eq!(
            (l.scheme.as_str(), l.authority.as_str(), l.base_path.as_str()),
            ("https", "storage.googleapis.com", "")
        );
        let name = l.object_name("ltx/0/a b+c.ltx");
        assert_eq!(name, "db/app/ltx/0/a b+c.ltx");
        assert_eq!(l.object_path(&name), "/storage/v1/b/backups/o/db%2Fapp%2Fltx%2F0%2Fa%20b%2Bc.ltx");
        assert_eq!(
            l.url(&l.upload_path(), &[("uploadType", "multipart".into()), ("name", name)]),
            "https://storage.googleapis.com/upload/storage/v1/b/backups/o?uploadType=multipart&name=db%2Fapp%2Fltx%2F0%2Fa%20b%2Bc.ltx"
        );
        assert!(l.credential.is_none());
    }

    #[test]
    fn settings_override_the_url_and_name_an_emulator() {
        let l = at("gs:///db", &[("bucket", "b_01.x"), ("endpoint", "127.0.0.1:4443")]).unwrap();
        assert_eq!(l.bucket, "b_01.x");
        assert_eq!(l.url(&l.objects_path(), &[]), "http://127.0.0.1:4443/storage/v1/b/b_01.x/o");
        let l = at("gs://b01/db?endpoint=http%3A%2F%2Fq%3A1%2Fstorage%2Fv1%2F", &[]).unwrap();
        assert_eq!((l.authority.as_str(), l.base_path.as_str()), ("q:1", ""));
        let l = at("gs://b01/db?endpoint=http://q:1", &[("endpoint", "https://s:2/gcs")]).unwrap();
        assert_eq!(l.url(&l.upload_path(), &[]), "https://s:2/gcs/upload/storage/v1/b/b01/o");
    }

    #[test]
    fn upload_temporaries_are_not_keys() {
        let l = at("gs://b01/db", &[]).unwrap();
        assert_eq!(l.key_of("db/ltx/0/x"), Some("ltx/0/x"));
        assert_eq!(l.key_of("db/.sluice-upload/0123/000001"), None);
        assert_eq!(l.key_of("dbx/y"), None);
        assert_eq!(l.key_of("db/"), None);
    }

    #[test]
    fn mistakes_are_named() {
        for bad in ["gs://Bad/p", "gs://ab/p", "gs://-ab/p", "gs:///p"] {
            let e = at(bad, &[]).unwrap_err();
            assert!(matches!(e, Error::InvalidConfig(_)) && e.message().contains("bucket"), "{bad}: {e:?}");
        }
        assert!(at("gs://b01/../x", &[]).is_err());
        assert!(at("s3://b01/x", &[]).is_err());
        let e = at("gs://b01/p", &[("credentials-json", "{not json")]).unwrap_err();
        assert!(e.message().contains("credentials"), "{e:?}");
    }
}
