//! Where the replica lives: the `s3://` URL and the settings, resolved into
//! bucket, key prefix, endpoint, region and addressing style. The URL
//! forms and provider detection follow Litestream's, so its users' replica
//! URLs keep working unchanged.

use crate::encode::{percent_decode, uri_encode};
use crate::provider::{self, Provider};
use crate::sse::{self, Sse};
use sluice_sdk::{Config, Error};

/// Region assumed when nothing names one: what AWS and most S3-compatible
/// stores accept (SigV4 needs some region, and MinIO-likes ignore it).
pub const DEFAULT_REGION: &str = "us-east-1";
/// The region of an `oss://` replica that names none: where Alibaba's
/// own tools and examples default.
pub const OSS_DEFAULT_REGION: &str = "cn-hangzhou";

/// A resolved replica location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The bucket name.
    pub bucket: String,
    /// Prepended to every key: the URL's path with a trailing `/`, or empty.
    pub prefix: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The service's `host[:port]` (without the bucket), default ports left out.
    pub host: String,
    /// The SigV4 signing region.
    pub region: String,
    /// Address the bucket in the path rather than in the host name.
    pub path_style: bool,
}

/// Everything `open` learns from the URL and settings, minus credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub location: Location,
    /// `x-amz-storage-class` for new objects.
    pub storage_class: Option<String>,
    /// Server-side encryption (SSE-C or SSE-KMS) asked for in the settings.
    pub sse: Sse,
    /// Hash payloads into the signature; off sends `UNSIGNED-PAYLOAD`.
    pub sign_payload: bool,
    /// The store enforces `If-None-Match` / `If-Match` on writes.
    pub conditional_writes: bool,
}

impl Location {
    /// The URL of the bucket itself (for list and batch delete).
    pub fn bucket_url(&self) -> String {
        if self.path_style {
            format!("{}://{}/{}", self.scheme, self.host, uri_encode(&self.bucket, false))
        } else {
            format!("{}://{}.{}/", self.scheme, self.bucket, self.host)
        }
    }

    /// The URL of an object, `key` already carrying the prefix.
    pub fn object_url(&self, full_key: &str) -> String {
        let key = uri_encode(full_key, true);
        if self.path_style {
            format!(
                "{}://{}/{}/{key}",
                self.scheme,
                self.host,
                uri_encode(&self.bucket, false)
            )
        } else {
            format!("{}://{}.{}/{key}", self.scheme, self.bucket, self.host)
        }
    }
}

/// The URL's parts, before settings are applied.
struct ParsedUrl {
    /// `oss://` (Alibaba Cloud OSS) rather than `s3://`.
    oss: bool,
    host: String,
    path: String,
    query: Vec<(String, String)>,
}

fn split_url(url: &str) -> Result<ParsedUrl, Error> {
    let oss = url.starts_with("oss://");
    let rest = url
        .strip_prefix("s3://")
        .or_else(|| url.strip_prefix("oss://"))
        .ok_or_else(|| Error::invalid_config(format!("replica URL must start with s3:// or oss://, got {url}")))?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.contains('@') {
        // Not echoed: the part before `@` would be credentials.
        return Err(Error::invalid_config(
            "credentials in the replica URL are not supported: set `access-key-id` and `secret-access-key`",
        ));
    }
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Ok(ParsedUrl {
        oss,
        host: host.to_string(),
        path: percent_decode(path),
        query,
    })
}

/// Looks a value up in the settings first, then in the URL's query under
/// its Litestream (camelCase) name: settings win, as the config file is
/// the more deliberate of the two.
struct Lookup<'a> {
    config: &'a Config,
    query: &'a [(String, String)],
}

impl Lookup<'_> {
    fn get(&self, setting: &str, query_name: &str) -> Option<String> {
        self.config.get(setting).map(str::to_string).or_else(|| {
            self.query
                .iter()
                .rev()
                .find(|(k, v)| k == query_name && !v.is_empty())
                .map(|(_, v)| v.clone())
        })
    }

    fn bool(&self, setting: &str, query_name: &str) -> Result<Option<bool>, Error> {
        self.get(setting, query_name)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(Error::invalid_config(format!(
                    "`{setting}` must be true or false, got `{v}`"
                ))),
            })
            .transpose()
    }
}

/// `oss://BUCKET/PATH`: Alibaba Cloud OSS's S3-compatible API at the
/// region's endpoint, buckets in the host name (OSS refuses path-style
/// requests).
fn oss(bucket: &str, look: &Lookup<'_>) -> provider::Detected {
    let region = look
        .get("region", "region")
        .unwrap_or_else(|| OSS_DEFAULT_REGION.to_string());
    let host = Some(format!("oss-{region}.aliyuncs.com"));
    let provider = Provider {
        scheme: "https",
        host,
        region: Some(region),
        path_style: false,
    };
    provider::Detected {
        bucket: Some(bucket.to_string()),
        provider,
    }
}

/// Resolve the URL and settings. Settings override what the URL implies.
pub fn resolve(config: &Config) -> Result<S3Config, Error> {
    let url = split_url(&config.url)?;
    let look = Lookup {
        config,
        query: &url.query,
    };

    let detected = if url.oss {
        oss(&url.host, &look)
    } else {
        provider::detect(&url.host)
    };
    let (bucket, path) = bucket_and_path(config, &url.path, detected.bucket)?;

    let mut provider = detected.provider;
    let explicit_endpoint = look.get("endpoint", "endpoint");
    if let Some(endpoint) = &explicit_endpoint {
        provider = endpoint_provider(endpoint)?;
    }
    let region = look
        .get("region", "region")
        .or_else(|| provider.region.clone())
        .unwrap_or_else(|| DEFAULT_REGION.to_string());
    let mut path_style = provider.path_style;
    if let Some(force) = look.bool("force-path-style", "forcePathStyle")? {
        path_style = force;
    }
    let host = match provider.host {
        Some(h) => h,
        None => format!("s3.{region}.amazonaws.com"),
    };
    // A dotted bucket in the host name breaks TLS (the wildcard certificate
    // covers one label), so such buckets are addressed in the path.
    if bucket.contains('.') && provider.scheme == "https" {
        path_style = true;
    }

    let sign_payload = look.bool("sign-payload", "signPayload")?.unwrap_or(true);
    // OSS's S3-compatible API does not promise If-None-Match / If-Match on
    // writes: without them the host keeps one writer by its fallback.
    let conditional_writes = look
        .bool("conditional-writes", "conditionalWrites")?
        .unwrap_or(!url.oss);
    check_accepted(&look, provider.scheme)?;

    Ok(S3Config {
        location: Location {
            bucket,
            prefix: normalize_prefix(&path),
            scheme: provider.scheme.to_string(),
            host,
            region,
            path_style,
        },
        storage_class: look.get("storage-class", "storageClass"),
        sse: sse::resolve(config)?,
        sign_payload,
        conditional_writes,
    })
}

/// The bucket (the `bucket` setting, else the host name's, else the
/// path's first segment) and the path inside it (the `path` setting, else
/// the URL's).
fn bucket_and_path(config: &Config, url_path: &str, host_bucket: Option<String>) -> Result<(String, String), Error> {
    let mut path = url_path.to_string();
    let mut bucket = config.get("bucket").map(str::to_string).or(host_bucket);
    if bucket.is_none() {
        // The host names only the service: the bucket is the path's first segment.
        let trimmed = path.trim_start_matches('/');
        let (first, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        bucket = Some(first.to_string());
        path = rest.to_string();
    }
    if let Some(p) = config.get("path") {
        path = p.to_string();
    }
    let bucket = bucket.filter(|b| !b.is_empty()).ok_or_else(|| {
        Error::invalid_config(format!(
            "no bucket in replica URL {}: use s3://BUCKET/PATH or set `bucket`",
            config.url
        ))
    })?;
    check_bucket(&bucket)?;
    Ok((bucket, path))
}

/// Litestream settings accepted but not acted on here: refuse
/// `skip-verify` on https (the host always verifies TLS), and check that
/// part size and concurrency, the host's decisions (it streams parts to
/// the plugin), are numbers.
fn check_accepted(look: &Lookup<'_>, scheme: &str) -> Result<(), Error> {
    if look.bool("skip-verify", "skipVerify")? == Some(true) && scheme == "https" {
        return Err(Error::unsupported(
            "skip-verify is not supported: the sluice host always verifies TLS certificates; \
             use an http:// endpoint on a trusted network or give the store a trusted certificate",
        ));
    }
    for (setting, query) in [("part-size", "partSize"), ("concurrency", "concurrency")] {
        if let Some(v) = look.get(setting, query) {
            v.parse::<u64>()
                .map_err(|_| Error::invalid_config(format!("`{setting}` must be a whole number, got `{v}`")))?;
        }
    }
    Ok(())
}

/// The provider an explicit endpoint implies: its scheme (defaulted), its
/// host, and the region some providers encode in their host names.
fn endpoint_provider(endpoint: &str) -> Result<Provider, Error> {
    let (scheme, rest) = match endpoint.split_once("://") {
        Some(("http", rest)) => (Some("http"), rest),
        Some(("https", rest)) => (Some("https"), rest),
        Some(_) => {
            return Err(Error::invalid_config(format!(
                "endpoint must be http:// or https://, got `{endpoint}`"
            )));
        }
        None => (None, endpoint),
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(Error::invalid_config(format!(
            "endpoint must be [http[s]://]host[:port] without a path, got `{endpoint}`"
        )));
    }
    let hostname = provider::split_port(authority).0;
    let scheme = scheme.unwrap_or(if provider::is_private(hostname) {
        "http"
    } else {
        "https"
    });
    let by_host = provider::detect(authority).provider;
    Ok(Provider {
        scheme,
        host: Some(provider::strip_default_port(scheme, authority)),
        region: by_host.region,
        path_style: true,
    })
}

/// Catch bucket names that could not work before the first request does,
/// with a message about the URL rather than a signature error.
fn check_bucket(bucket: &str) -> Result<(), Error> {
    let ok = bucket
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !ok {
        return Err(Error::invalid_config(format!(
            "bucket name `{bucket}` may contain only letters, digits, `.`, `-` and `_`"
        )));
    }
    Ok(())
}

/// `/a//b/` → `a/b/`: keys are joined to the prefix with no separator.
fn normalize_prefix(path: &str) -> String {
    let mut prefix = String::new();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        prefix.push_str(segment);
        prefix.push('/');
    }
    prefix
}

#[cfg(test)]
#[path = "url_tests.rs"]
mod tests;
