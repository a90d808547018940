//! Recognising a store from the host name in an `s3://` URL (Litestream's
//! table): which part is the bucket, which endpoint serves it, in which
//! region, and how it wants buckets addressed.

/// What a host name says about the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The service endpoint's `host[:port]`; `None` means AWS, whose
    /// endpoint follows from the region.
    pub host: Option<String>,
    /// The region the host name implies, if any.
    pub region: Option<String>,
    /// Address buckets in the path rather than the host name.
    pub path_style: bool,
}

/// A host name split into bucket and service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// The bucket, when the host name carries one.
    pub bucket: Option<String>,
    pub provider: Provider,
}

/// One label of a service's host name pattern.
#[derive(Clone, Copy)]
enum Label {
    /// Must be exactly this.
    Lit(&'static str),
    /// Any label; captured (the region or account).
    Var,
    /// Starts with this; the rest is captured (AWS's legacy `s3-REGION`).
    Prefixed(&'static str),
}
use Label::{Lit, Prefixed, Var};

/// How a matched service is reached: `{}` in the endpoint is the captured label.
struct Service {
    labels: &'static [Label],
    /// Endpoint host template; `None` for AWS.
    endpoint: Option<&'static str>,
    /// Region template: `{}` is the captured label.
    region: Option<&'static str>,
}

/// Litestream's providers, most specific first.
const SERVICES: &[Service] = &[
    // AWS, virtual-host style: bucket.s3.REGION.amazonaws.com and the legacy s3-REGION.
    Service {
        labels: &[Lit("s3"), Var, Lit("amazonaws"), Lit("com")],
        endpoint: None,
        region: Some("{}"),
    },
    Service {
        labels: &[Prefixed("s3-"), Lit("amazonaws"), Lit("com")],
        endpoint: None,
        region: Some("{}"),
    },
    Service {
        labels: &[Lit("s3"), Lit("amazonaws"), Lit("com")],
        endpoint: None,
        region: None,
    },
    Service {
        labels: &[Var, Lit("digitaloceanspaces"), Lit("com")],
        endpoint: Some("{}.digitaloceanspaces.com"),
        region: Some("{}"),
    },
    Service {
        labels: &[Lit("s3"), Var, Lit("backblazeb2"), Lit("com")],
        endpoint: Some("s3.{}.backblazeb2.com"),
        region: Some("{}"),
    },
    Service {
        labels: &[Var, Lit("linodeobjects"), Lit("com")],
        endpoint: Some("{}.linodeobjects.com"),
        region: Some("{}"),
    },
    Service {
        labels: &[Lit("s3"), Var, Lit("scw"), Lit("cloud")],
        endpoint: Some("s3.{}.scw.cloud"),
        region: Some("{}"),
    },
    Service {
        labels: &[Lit("s3"), Lit("filebase"), Lit("com")],
        endpoint: Some("s3.filebase.com"),
        region: Some("us-east-1"),
    },
    // R2 and Tigris sign with the pseudo-region `auto`.
    Service {
        labels: &[Var, Lit("r2"), Lit("cloudflarestorage"), Lit("com")],
        endpoint: Some("{}.r2.cloudflarestorage.com"),
        region: Some("auto"),
    },
    Service {
        labels: &[Lit("fly"), Lit("storage"), Lit("tigris"), Lit("dev")],
        endpoint: Some("fly.storage.tigris.dev"),
        region: Some("auto"),
    },
    Service {
        labels: &[Lit("t3"), Lit("storage"), Lit("dev")],
        endpoint: Some("t3.storage.dev"),
        region: Some("auto"),
    },
    // Hetzner: the location (fsn1, nbg1, hel1) is the region.
    Service {
        labels: &[Var, Lit("your-objectstorage"), Lit("com")],
        endpoint: Some("{}.your-objectstorage.com"),
        region: Some("{}"),
    },
    Service {
        labels: &[Lit("localhost")],
        endpoint: Some("localhost"),
        region: Some("us-east-1"),
    },
];

/// Split the host part of an `s3://` URL into bucket and service.
pub fn detect(authority: &str) -> Detected {
    let (hostname, port) = split_port(authority);
    let labels: Vec<&str> = hostname.split('.').collect();
    for service in SERVICES {
        if let Some((bucket, captured)) = match_labels(&labels, service.labels) {
            let fill = |t: &str| t.replace("{}", captured.as_deref().unwrap_or(""));
            let scheme = if service.endpoint == Some("localhost") {
                "http"
            } else {
                "https"
            };
            let host = service.endpoint.map(|e| match port {
                Some(p) => strip_default_port(scheme, &format!("{}:{p}", fill(e))),
                None => fill(e),
            });
            let aws = host.is_none();
            return Detected {
                bucket,
                provider: Provider {
                    scheme,
                    host,
                    region: service.region.map(fill),
                    path_style: !aws,
                },
            };
        }
    }
    if let Some(port) = port {
        // MinIO style: `bucket.host:port`, or `host:port` with the bucket in the path.
        let (bucket, host) = match hostname.split_once('.') {
            Some((b, rest)) if !is_ip(hostname) => (Some(b.to_string()), rest),
            _ => (None, hostname),
        };
        let host_port = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        return Detected {
            bucket,
            provider: Provider {
                scheme: "http",
                host: Some(strip_default_port("http", &host_port)),
                region: None,
                path_style: true,
            },
        };
    }
    Detected {
        bucket: Some(hostname.to_string()).filter(|h| !h.is_empty()),
        provider: Provider {
            scheme: "https",
            host: None,
            region: None,
            path_style: false,
        },
    }
}

/// Match the trailing labels; the leading ones (if any) are the bucket.
fn match_labels(labels: &[&str], pattern: &[Label]) -> Option<(Option<String>, Option<String>)> {
    if labels.len() < pattern.len() {
        return None;
    }
    let split = labels.len() - pattern.len();
    let mut captured = None;
    for (label, want) in labels[split..].iter().zip(pattern) {
        match want {
            Lit(l) if label.eq_ignore_ascii_case(l) => {}
            Var if !label.is_empty() => captured = Some(label.to_string()),
            Prefixed(p) if label.len() > p.len() && label[..p.len()].eq_ignore_ascii_case(p) => {
                captured = Some(label[p.len()..].to_string());
            }
            _ => return None,
        }
    }
    let bucket = Some(labels[..split].join(".")).filter(|b| !b.is_empty());
    Some((bucket, captured))
}

/// `host:port` → (`host`, `port`); an IPv6 literal comes back without its brackets.
pub fn split_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        return (host, after.strip_prefix(':').filter(|p| !p.is_empty()));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) && !port.is_empty() => {
            (host, Some(port))
        }
        _ => (authority, None),
    }
}

/// Default ports must not be written out: the signer drops them from the
/// host it signs while the transport sends the authority as given.
pub fn strip_default_port(scheme: &str, authority: &str) -> String {
    let default = if scheme == "https" { ":443" } else { ":80" };
    authority.strip_suffix(default).unwrap_or(authority).to_string()
}

fn is_ip(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
}

/// Loopback, private and link-local hosts, where an endpoint without a
/// scheme means plain HTTP (a local MinIO, a store on the LAN).
pub fn is_private(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00 || (ip.segments()[0] & 0xffc0) == 0xfe80
        }
        Err(_) => false,
    }
}
