//! TCP for plugins that declare `needs-sockets` (SFTP, NATS): where they
//! may connect, and the grant in their WASI context. Connections are
//! checked against the replica's server as resolved by the host at
//! connect time; no other address is reachable, and UDP never is. A plugin
//! whose server is named (not an address) may look names up, any name:
//! wasmtime has no per-name hook, so DNS queries are the one channel left
//! to it (DESIGN 34).

use std::net::SocketAddr;
use std::sync::Arc;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

/// The usual port of a scheme whose URL names none (the `url` crate knows
/// only the web's).
const DEFAULT_PORTS: &[(&str, u16)] = &[("sftp", 22), ("nats", 4222)];

/// A host and port a plugin may connect to.
pub type Target = (String, u16);

/// Where a plugin may connect: nowhere unless it declares sockets; then
/// the `host:port` entries of the operator's `allow-hosts` if any, else the
/// replica URL's host at its port or the scheme's usual one.
pub fn targets(needs_sockets: bool, url: &str, allow_hosts: Option<&[String]>) -> Vec<Target> {
    if !needs_sockets {
        return Vec::new();
    }
    if let Some(given) = allow_hosts {
        return given.iter().filter_map(|h| host_port(h)).collect();
    }
    let Ok(parsed) = url::Url::parse(url) else { return Vec::new() };
    let default = DEFAULT_PORTS.iter().find(|(s, _)| *s == parsed.scheme()).map(|(_, p)| *p);
    match (parsed.host_str(), parsed.port_or_known_default().or(default)) {
        (Some(host), Some(port)) => vec![(host.trim_matches(['[', ']']).to_ascii_lowercase(), port)],
        _ => Vec::new(),
    }
}

/// `host:port` (or `[v6]:port`); `None` for a bare host or a pattern.
fn host_port(entry: &str) -> Option<Target> {
    let (host, port) = entry.rsplit_once(':')?;
    let host = host.trim_matches(['[', ']']);
    if host.is_empty() || host.contains('*') {
        return None;
    }
    Some((host.to_ascii_lowercase(), port.parse().ok()?))
}

/// Grant TCP connections to `targets` (none: no sockets at all). Name
/// lookups only when a target is a name: the check below is on
/// addresses, and an address needs no lookup.
pub fn grant(builder: &mut WasiCtxBuilder, targets: &[Target]) {
    let granted = !targets.is_empty();
    let named = targets.iter().any(|(host, _)| host.parse::<std::net::IpAddr>().is_err());
    builder.allow_tcp(granted).allow_udp(false).allow_ip_name_lookup(named);
    let targets: Arc<[Target]> = targets.into();
    builder.socket_addr_check(move |addr, use_| {
        let targets = targets.clone();
        Box::pin(async move {
            match use_ {
                SocketAddrUse::TcpConnect => reaches(&targets, addr).await,
                // The ephemeral local address a connect binds implicitly
                // (wasmtime checks it before the connect); no other bind,
                // so no listening.
                SocketAddrUse::TcpBind => !targets.is_empty() && addr.ip().is_unspecified() && addr.port() == 0,
                _ => false,
            }
        })
    });
}

/// Whether `addr` is one of `targets`, resolved now (a name's addresses
/// may change; resolving at each connect follows them).
async fn reaches(targets: &[Target], addr: SocketAddr) -> bool {
    for (host, port) in targets.iter().filter(|(_, p)| *p == addr.port()) {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            if ip.to_canonical() == addr.ip().to_canonical() {
                return true;
            }
            continue;
        }
        if let Ok(mut found) = tokio::net::lookup_host((host.as_str(), *port)).await
            && found.any(|a| a.ip().to_canonical() == addr.ip().to_canonical())
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(host: &str, port: u16) -> Target {
        (host.to_string(), port)
    }

    #[test]
    fn only_a_plugin_declaring_sockets_gets_the_replicas_server() {
        assert!(targets(false, "nats://127.0.0.1:4222/b", None).is_empty());
        assert_eq!(targets(true, "nats://127.0.0.1:5000/b", None), [t("127.0.0.1", 5000)]);
        assert_eq!(targets(true, "nats://Nats.Example/b", None), [t("nats.example", 4222)]);
        assert_eq!(targets(true, "sftp://u@[::1]/p", None), [t("::1", 22)]);
        assert!(targets(true, "my://host/p", None).is_empty(), "no port, no target");
        let given = ["10.0.0.1:22".to_string(), "*.example.com".into(), "files.example:2222".into()];
        assert_eq!(targets(true, "sftp://h/p", Some(&given)), [t("10.0.0.1", 22), t("files.example", 2222)]);
    }

    #[tokio::test]
    async fn a_connection_is_allowed_to_a_target_and_nowhere_else() {
        let targets = [t("127.0.0.1", 4222), t("localhost", 2222)];
        assert!(reaches(&targets, "127.0.0.1:4222".parse().unwrap()).await);
        assert!(!reaches(&targets, "127.0.0.1:4223".parse().unwrap()).await, "another port");
        assert!(!reaches(&targets, "127.0.0.2:4222".parse().unwrap()).await, "another address");
        assert!(reaches(&targets, "127.0.0.1:2222".parse().unwrap()).await, "a name resolved by the host");
        assert!(!reaches(&[], "127.0.0.1:4222".parse().unwrap()).await);
    }
}
