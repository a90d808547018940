//! Where a replica lives in Azure Blob Storage, from Litestream's URL form
//! `abs://[ACCOUNT@]CONTAINER/PATH` and its settings: `account-name` and
//! `bucket` (the container) override the URL's, `account-key` (base64) or
//! `sas-token` authenticate, `endpoint` names the service
//! (`https://ACCOUNT.blob.core.windows.net` when absent; Azurite's is
//! `http://127.0.0.1:10000/devstoreaccount1`, path style). Settings may
//! also ride in the URL's query (`abs://a@c/p?endpoint=...`), as S3's do;
//! the configuration's win.

use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sluice_sdk::{Config, Error, key_prefix, percent_decode};

/// Bytes escaped in a blob name's path segments: all but RFC 3986's
/// unreserved characters, so the signed path and the sent path are one
/// string.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// How requests prove who sends them.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// The account key (decoded), signing each request (`sign.rs`).
    SharedKey(Vec<u8>),
    /// A shared access signature: query parameters added to every URL.
    Sas(String),
}

// Never print a key or a token.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::SharedKey(_) => "SharedKey(..)",
            Credential::Sas(_) => "Sas(..)",
        })
    }
}

/// A replica's place in a storage account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub authority: String,
    /// The endpoint's own path (`/devstoreaccount1` on Azurite), encoded,
    /// without a trailing slash; empty on Azure.
    pub base_path: String,
    pub account: String,
    pub container: String,
    /// The replica's directory in the container, decoded, ending in `/`
    /// (empty at the container's root).
    pub prefix: String,
    pub credential: Credential,
}

impl Location {
    pub fn from_config(config: &Config) -> Result<Location, Error> {
        let url = &config.url;
        let rest =
            url.strip_prefix("abs://").ok_or_else(|| Error::invalid_config(format!("not an abs:// URL: {url}")))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let config = &config.with_query(query)?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (url_account, url_container) = match authority.rsplit_once('@') {
            Some((a, c)) => (Some(percent_decode(a)?), c),
            None => (None, authority),
        };
        let account = config.get("account-name").map(str::to_string).or(url_account).ok_or_else(|| {
            Error::invalid_config(format!(
                "{url}: the storage account is missing: abs://ACCOUNT@CONTAINER/PATH or `account-name`"
            ))
        })?;
        let container = config.get("bucket").unwrap_or(url_container).to_string();
        check_container(&container, url)?;
        let (scheme, authority, base_path) = endpoint(config.get("endpoint"), &account)?;
        Ok(Location {
            scheme,
            authority,
            base_path,
            account,
            container,
            prefix: key_prefix(path)?,
            credential: credential(config)?,
        })
    }

    /// The blob name of a key.
    pub fn blob_name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The key a listed blob name stands for, if it lies below the prefix.
    pub fn key_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        name.strip_prefix(&self.prefix).filter(|k| !k.is_empty())
    }

    /// The container's path on the endpoint, encoded.
    pub fn container_path(&self) -> String {
        format!("{}/{}", self.base_path, self.container)
    }

    /// A key's blob path on the endpoint, encoded.
    pub fn blob_path(&self, key: &str) -> String {
        let mut path = self.container_path();
        for segment in self.blob_name(key).split('/') {
            path.push('/');
            path.extend(utf8_percent_encode(segment, SEGMENT));
        }
        path
    }

    /// The full URL of an encoded path with its query (plus the SAS token).
    pub fn url(&self, path: &str, query: &[(&str, String)]) -> String {
        let mut pairs: Vec<String> =
            query.iter().map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, SEGMENT))).collect();
        if let Credential::Sas(token) = &self.credential {
            pairs.push(token.clone());
        }
        let query = if pairs.is_empty() { String::new() } else { format!("?{}", pairs.join("&")) };
        format!("{}://{}{path}{query}", self.scheme, self.authority)
    }
}

/// Azure's rule for container names: 3-63 lowercase letters, digits and
/// single dashes, starting and ending with a letter or digit.
fn check_container(container: &str, url: &str) -> Result<(), Error> {
    let ok_chars = container.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok = (3..=63).contains(&container.len())
        && ok_chars
        && !container.starts_with('-')
        && !container.ends_with('-')
        && !container.contains("--");
    if ok {
        return Ok(());
    }
    let said = if container.is_empty() { "no container".to_string() } else { format!("container `{container}`") };
    Err(Error::invalid_config(format!(
        "{url}: {said}: abs://[ACCOUNT@]CONTAINER/PATH (or `bucket`) needs a container name of 3-63 lowercase letters, digits and dashes"
    )))
}

/// Scheme, authority and base path of the endpoint.
fn endpoint(endpoint: Option<&str>, account: &str) -> Result<(String, String, String), Error> {
    let endpoint = match endpoint {
        Some(e) if e.contains("://") => e.to_string(),
        Some(e) => format!("https://{e}"),
        None => format!("https://{account}.blob.core.windows.net"),
    };
    let parts = sluice_sdk::http::split_url(&endpoint)?;
    let path = parts.path_and_query.split('?').next().unwrap_or_default().trim_end_matches('/');
    Ok((parts.scheme.to_string(), parts.authority.to_string(), path.to_string()))
}

fn credential(config: &Config) -> Result<Credential, Error> {
    if let Some(key) = config.get("account-key") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(key.trim()).map_err(|_| {
            Error::invalid_config("`account-key` is not base64: use the storage account's key as the portal shows it")
        })?;
        return Ok(Credential::SharedKey(decoded));
    }
    if let Some(token) = config.get("sas-token") {
        let token = token.trim().trim_start_matches('?');
        // It goes into every URL as it is: only what a query may carry
        // (its values percent-encoded, as Azure hands tokens out).
        let fits = token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%&=+/:,".contains(&b));
        if !fits {
            return Err(Error::invalid_config(
                "`sas-token` has characters a URL cannot carry: give it as Azure shows it (percent-encoded)",
            ));
        }
        return Ok(Credential::Sas(token.to_string()));
    }
    Err(Error::access_denied(
        "no credentials for Azure Blob Storage: set `account-key` (or LITESTREAM_AZURE_ACCOUNT_KEY) or `sas-token` (or LITESTREAM_AZURE_SAS_TOKEN)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn at(url: &str, settings: &[(&str, &str)]) -> Result<Location, Error> {
        let mut s: Vec<(String, String)> = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if !settings.iter().any(|(k, _)| *k == "sas-token") {
            s.push(("account-key".into(), KEY.into()));
        }
        Location::from_config(&Config::new(url, s))
    }

    #[test]
    fn litestreams_url_form() {
        let l = at("abs://acct@backups/db/app", &[]).unwrap();
        assert_eq!(l.account, "acct");
        assert_eq!(l.container, "backups");
        assert_eq!(l.prefix, "db/app/");
        assert_eq!(
            (l.scheme.as_str(), l.authority.as_str(), l.base_path.as_str()),
            ("https", "acct.blob.core.windows.net", "")
        );
        assert_eq!(l.blob_path("ltx/0/a b.ltx"), "/backups/db/app/ltx/0/a%20b.ltx");
        assert_eq!(
            l.url(&l.container_path(), &[("comp", "list".into())]),
            "https://acct.blob.core.windows.net/backups?comp=list"
        );
        assert!(matches!(l.credential, Credential::SharedKey(ref k) if k.len() == 64));
    }

    #[test]
    fn settings_override_the_url_and_name_azurite() {
        let l = at(
            "abs:///db",
            &[
                ("account-name", "devstoreaccount1"),
                ("bucket", "c01"),
                ("endpoint", "http://127.0.0.1:10000/devstoreaccount1/"),
            ],
        )
        .unwrap();
        assert_eq!(l.container, "c01");
        assert_eq!(l.blob_path("k"), "/devstoreaccount1/c01/db/k");
        assert_eq!(l.url("/devstoreaccount1/c01", &[]), "http://127.0.0.1:10000/devstoreaccount1/c01");
        assert_eq!(l.key_of("db/k"), Some("k"));
        assert_eq!(l.key_of("other/k"), None);
    }

    #[test]
    fn settings_in_the_query() {
        let l = at("abs://devstoreaccount1@c01/db?endpoint=http%3A%2F%2F127.0.0.1%3A10000%2Fdevstoreaccount1", &[])
            .unwrap();
        assert_eq!(
            (l.authority.as_str(), l.base_path.as_str(), l.prefix.as_str()),
            ("127.0.0.1:10000", "/devstoreaccount1", "db/")
        );
        let l = at("abs://a@c01/db?endpoint=http://q:1", &[("endpoint", "http://s:2")]).unwrap();
        assert_eq!(l.authority, "s:2");
    }

    #[test]
    fn a_sas_token_rides_on_every_url() {
        let l = at("abs://a@cont/", &[("sas-token", "?sv=2021&sig=x%2By")]).unwrap();
        assert_eq!(l.prefix, "");
        assert_eq!(l.url("/cont/k", &[]), "https://a.blob.core.windows.net/cont/k?sv=2021&sig=x%2By");
        assert_eq!(format!("{:?}", l.credential), "Sas(..)");
    }

    #[test]
    fn mistakes_are_named() {
        let no_account = at("abs://container/p", &[]).unwrap_err();
        assert!(no_account.message().contains("account"), "{no_account:?}");
        let bad_container = at("abs://a@Bad_Name/p", &[]).unwrap_err();
        assert!(bad_container.message().contains("lowercase"), "{bad_container:?}");
        let bad_key =
            Location::from_config(&Config::new("abs://a@ccc/p", vec![("account-key".into(), "not base64!".into())]));
        assert!(bad_key.unwrap_err().message().contains("base64"));
        let spaced =
            Location::from_config(&Config::new("abs://a@ccc/p", vec![("sas-token".into(), "sv=1&sig=a b".into())]));
        assert!(spaced.unwrap_err().message().contains("sas-token"));
        let none = Location::from_config(&Config::new("abs://a@ccc/p", vec![])).unwrap_err();
        assert!(matches!(none, Error::AccessDenied(_)), "{none:?}");
        assert!(at("abs://a@ccc/../x", &[]).is_err());
    }
}
