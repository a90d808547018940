//! The per-call confinement of a plugin: memory, CPU, network reach and
//! filesystem. Deny by default; every grant is explicit here.

use super::bindings::v0_1::sluice::storage::{log as log_0_1, types as types_0_1};
use super::bindings::v0_2::sluice::storage::{log, storage_types};
use super::error::Labels;
use super::http::HttpHooks;
use super::rate::RequestRate;
use super::stderr::TailPipe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Default linear-memory cap. It must exceed the largest `list<u8>` the
/// host passes (one multipart part, `replica::PART_SIZE`) plus the
/// plugin's own working copy of it.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// Default CPU budget for one call. Hashing or copying a 64 MiB part
/// inside wasm takes well under a second; 30 s only stops runaways.
pub const DEFAULT_CPU_MS: u64 = 30_000;
/// Epoch tick: the granularity of CPU accounting and of interruption.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Tables (function pointers) a plugin may have; generous for Rust code.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// How much of a plugin's stderr (its last bytes) is kept to explain a
/// crash: a panic message and a little context.
const STDERR_CAPTURE_BYTES: usize = 2 * 1024;

/// What one replica's plugin may use.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Linear-memory limit in bytes.
    pub memory_bytes: u64,
    /// CPU budget per call.
    pub cpu_budget: Duration,
    /// Outbound hosts the plugin may reach (`host` or `*.domain`).
    pub allow_hosts: Vec<String>,
    /// The one directory the plugin may use, mounted at the same path.
    pub directory: Option<PathBuf>,
    /// Where the plugin may open TCP connections (`needs-sockets`).
    pub tcp: Vec<super::sockets::Target>,
    /// Run the directory's file operations inline on the call's own
    /// thread (see `Instance::on_own_thread`). Only for calls that move
    /// little data: inline, wasi streams write a file 4 KiB per system
    /// call, where the default path hands whole buffers to the blocking
    /// pool (measured on a 1 GB snapshot inline: 4.10 s CPU and 51 MB,
    /// against 3.79 s and 36 MB).
    pub inline_io: bool,
    /// The request budget every instance of this replica shares
    /// (`requests-per-second`); `None` is unlimited.
    pub requests: Option<Arc<RequestRate>>,
    /// Bytes the replica may hold (`storage-quota-mib`), enforced by the
    /// replica before each upload; `None` is unlimited.
    pub storage_quota_bytes: Option<u64>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            memory_bytes: DEFAULT_MEMORY_MIB << 20,
            cpu_budget: Duration::from_millis(DEFAULT_CPU_MS),
            allow_hosts: Vec::new(),
            directory: None,
            tcp: Vec::new(),
            inline_io: false,
            requests: None,
            storage_quota_bytes: None,
        }
    }
}

impl Sandbox {
    /// CPU budget in epoch ticks (at least one).
    pub fn cpu_ticks(&self) -> u64 {
        (self.cpu_budget.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }
}

/// Sandbox settings as configured (`sandbox:` in the config file); unset
/// fields take the defaults above.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SandboxConfig {
    /// Linear-memory limit in MiB.
    pub memory_mib: Option<u64>,
    /// CPU budget per call in milliseconds.
    pub cpu_ms: Option<u64>,
    /// Outbound hosts; replaces the list derived from the replica URL.
    /// `host:port` entries are also where a plugin with `needs-sockets`
    /// may open TCP connections.
    pub allow_hosts: Option<Vec<String>>,
    /// HTTP requests a second the replica's plugin may make (bursts of a
    /// second's worth); more wait.
    pub requests_per_second: Option<std::num::NonZeroU32>,
    /// MiB of objects the replica may hold; an upload past it stops the
    /// replica with an error saying so.
    pub storage_quota_mib: Option<u64>,
}

impl SandboxConfig {
    /// The sandbox for one replica: grants the URL's directory to plugins
    /// that declare `needs-directory` (creating it), and derives the
    /// network allowlist from the URL unless one is configured. Only the
    /// settings the plugin reads count: a setting it is never given (an
    /// endpoint in the defaults, the host's `metadata-host`) must not
    /// widen what it may reach either.
    pub fn resolve(
        &self,
        plugin: &super::LoadedPlugin,
        url: &str,
        settings: &[(String, String)],
    ) -> std::io::Result<Sandbox> {
        let info = plugin.info();
        let settings = &super::settings::passed(plugin.declared_settings(), settings);
        let directory = if info.needs_directory {
            let dir = local_dir_of_url(url)?;
            std::fs::create_dir_all(&dir).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot create the replica directory {}: {e}", dir.display()))
            })?;
            Some(dir)
        } else {
            None
        };
        Ok(Sandbox {
            memory_bytes: self.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB) << 20,
            cpu_budget: Duration::from_millis(self.cpu_ms.unwrap_or(DEFAULT_CPU_MS)),
            allow_hosts: self.allow_hosts.clone().unwrap_or_else(|| derive_allowlist(url, settings)),
            directory,
            tcp: super::sockets::targets(info.needs_sockets, url, self.allow_hosts.as_deref()),
            inline_io: false,
            requests: self.requests_per_second.map(|r| Arc::new(RequestRate::new(r))),
            storage_quota_bytes: self.storage_quota_mib.map(|m| m.saturating_mul(1 << 20)),
        })
    }
}

/// The local directory a `file://` URL or plain path names.
fn local_dir_of_url(url: &str) -> std::io::Result<PathBuf> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    if !url.contains("://") {
        return std::path::absolute(url);
    }
    let parsed = url::Url::parse(url).map_err(|e| invalid(format!("bad replica URL {url}: {e}")))?;
    if parsed.scheme() != "file" {
        return Err(invalid(format!(
            "a plugin that needs a directory cannot serve {url}: use a file:// URL or a path"
        )));
    }
    parsed.to_file_path().map_err(|()| invalid(format!("{url} does not name a local directory")))
}

/// Derive the hosts a replica URL implies: the URL's host and its
/// subdomains, its parent domain (`bucket.region.provider.com` talks to
/// `region.provider.com`, S3 only), any `endpoint` or `*-url` setting
/// (`webdav-url`) given in the query or settings, AWS for a bare S3
/// bucket name, an Azure account's blob host, and Google's storage and
/// token hosts.
pub fn derive_allowlist(url: &str, settings: &[(String, String)]) -> Vec<String> {
    let Ok(parsed) = url::Url::parse(url) else { return Vec::new() };
    if parsed.scheme() == "file" {
        return Vec::new();
    }
    // A server named apart from the URL: S3's `endpoint`, or a setting
    // whose name says it is one (`webdav-url`).
    let names_server = |k: &str| k == "endpoint" || k.ends_with("-url");
    let endpoints = parsed
        .query_pairs()
        .filter(|(k, _)| names_server(k))
        .map(|(_, v)| v.into_owned())
        .chain(settings.iter().filter(|(k, _)| names_server(k)).map(|(_, v)| v.clone()))
        .collect::<Vec<_>>();
    let mut named = match parsed.scheme() {
        "abs" | "gs" => container_hosts(&parsed, settings, endpoints.is_empty()),
        // S3's URLs name buckets that talk to a parent domain; other
        // schemes name their server.
        "s3" => s3_hosts(&parsed, endpoints.is_empty()),
        // `oss://BUCKET`: the bucket's host at its region's endpoint.
        "oss" if endpoints.is_empty() => vec![OSS_DOMAIN.to_string()],
        "oss" => Vec::new(),
        _ => parsed.host_str().map(str::to_string).into_iter().collect(),
    };
    for endpoint in endpoints {
        let with_scheme = if endpoint.contains("://") { endpoint } else { format!("http://{endpoint}") };
        named.extend(url::Url::parse(&with_scheme).ok().as_ref().and_then(|u| u.host_str()).map(str::to_string));
    }
    let mut hosts = Vec::new();
    for host in named {
        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            continue;
        }
        for h in [host.clone(), format!("*.{host}")] {
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
    }
    hosts
}

/// The hosts of a URL whose host is a container or bucket, not a server
/// (`abs://ACCOUNT@CONTAINER`, `gs://BUCKET`): the service's own, unless
/// an endpoint names another.
fn container_hosts(parsed: &url::Url, settings: &[(String, String)], no_endpoint: bool) -> Vec<String> {
    let mut hosts = Vec::new();
    if parsed.scheme() == "abs" {
        // The account's own host.
        let query = parsed.query_pairs().find(|(k, _)| k == "account-name").map(|(_, v)| v.into_owned());
        let setting = settings.iter().find(|(k, _)| k == "account-name").map(|(_, v)| v.clone());
        let user = Some(parsed.username().to_string()).filter(|u| !u.is_empty());
        if let Some(account) = setting.or(query).or(user)
            && no_endpoint
        {
            hosts.push(format!("{account}.blob.core.windows.net"));
        }
        return hosts;
    }
    // Google's API host, and the token endpoint of the credentials (what
    // the plugin signs its JWT for).
    if no_endpoint {
        hosts.push(GCS_HOST.to_string());
    }
    if let Some(json) = settings.iter().rev().find(|(k, _)| k == "credentials-json").map(|(_, v)| v) {
        hosts.push(gcs_token_host(json));
    } else if let Some(meta) = settings.iter().rev().find(|(k, _)| k == "metadata-host").map(|(_, v)| v) {
        // The VM's metadata server, `host[:port]`.
        hosts.extend(url::Url::parse(&format!("http://{meta}")).ok().and_then(|u| u.host_str().map(str::to_string)));
    }
    hosts
}

/// The hosts of an `s3://` URL: its host, the parent domain a
/// virtual-host bucket talks to, and AWS for a bucket of no known provider.
fn s3_hosts(parsed: &url::Url, no_endpoint: bool) -> Vec<String> {
    let Some(host) = parsed.host_str() else { return Vec::new() };
    let mut hosts = vec![host.to_string()];
    let is_ip = host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[');
    let labels: Vec<&str> = host.split('.').collect();
    if !is_ip && labels.len() >= 2 {
        // `bucket.region.provider.com` talks to `region.provider.com`,
        // `bucket.host:port` (MinIO style) to `host:port`.
        let parent = labels[1..].join(".");
        if labels.len() >= 3 || parsed.port().is_some() || parent == "localhost" {
            hosts.push(parent);
        }
    }
    // Anything not naming a known provider is an AWS bucket, reached at
    // `*.amazonaws.com` whatever its own name looks like.
    let known = KNOWN_PROVIDER_DOMAINS.iter().any(|d| host == *d || host.ends_with(&format!(".{d}")));
    if no_endpoint && !is_ip && parsed.port().is_none() && (!known || host.ends_with("amazonaws.com")) {
        hosts.push("amazonaws.com".to_string());
    }
    hosts
}

/// Google Cloud Storage's JSON API host.
const GCS_HOST: &str = "storage.googleapis.com";
/// Alibaba Cloud OSS's endpoints (`BUCKET.oss-REGION.aliyuncs.com`).
const OSS_DOMAIN: &str = "aliyuncs.com";
/// Where Google's credentials files get tokens when they do not say.
const GCS_TOKEN_HOST: &str = "oauth2.googleapis.com";

/// The host of a Google credentials file's `token_uri` (Google's own when
/// it has none or is not JSON: the plugin then fails on the file itself).
fn gcs_token_host(json: &str) -> String {
    let uri = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get("token_uri").and_then(|u| u.as_str()).map(str::to_string));
    uri.and_then(|u| url::Url::parse(&u).ok()?.host_str().map(str::to_string))
        .unwrap_or_else(|| GCS_TOKEN_HOST.to_string())
}

/// Provider domains a replica URL can name directly (Litestream's table,
/// as in `plugins/s3/src/provider.rs`). The host keeps its own copy because
/// the allowlist must not come from the plugin it confines: DESIGN.md
/// decision 22.
const KNOWN_PROVIDER_DOMAINS: &[&str] = &[
    "amazonaws.com",
    "digitaloceanspaces.com",
    "backblazeb2.com",
    "linodeobjects.com",
    "scw.cloud",
    "filebase.com",
    "r2.cloudflarestorage.com",
    "tigris.dev",
    "your-objectstorage.com",
];

/// Whether `host` matches an allowlist entry (`exact` or `*.suffix`).
pub fn host_allowed(allow: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    allow.iter().any(|pattern| match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() && host.ends_with(suffix) && host[..host.len() - suffix.len()].ends_with('.')
        }
        None => pattern.trim_start_matches('[').trim_end_matches(']') == host,
    })
}

/// Caps linear memory and tables; records a violation so the error can
/// say what happened instead of "unreachable executed".
pub struct Limiter {
    pub max_memory: usize,
    pub memory_exceeded: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.memory_exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Everything one plugin instance can touch.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    pub hooks: HttpHooks,
    pub limiter: Limiter,
    pub labels: Arc<Labels>,
    pub stderr: TailPipe,
    /// Epoch ticks seen during the current call (CPU accounting).
    pub ticks: u64,
    pub tick_budget: u64,
    pub cpu_exceeded: bool,
}

impl HostState {
    pub fn new(sandbox: &Sandbox, labels: Arc<Labels>, client: super::http::LazyClient) -> anyhow::Result<Self> {
        let stderr = TailPipe::new(STDERR_CAPTURE_BYTES);
        let mut builder = WasiCtxBuilder::new();
        builder.stderr(stderr.clone());
        super::sockets::grant(&mut builder, &sandbox.tcp);
        if let Some(dir) = &sandbox.directory {
            // Inline file operations: every call of such an instance runs
            // on a blocking thread of its own (`Instance::on_own_thread`),
            // so a slow disk stalls only this plugin's call.
            builder.allow_blocking_current_thread(sandbox.inline_io);
            let guest = dir.to_str().ok_or_else(|| anyhow::anyhow!("directory {} is not UTF-8", dir.display()))?;
            builder.preopened_dir(dir, guest, wasmtime_wasi::FsPerms::ReadWrite)?;
        }
        Ok(HostState {
            wasi: builder.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: HttpHooks::new(client, sandbox.allow_hosts.clone(), sandbox.requests.clone(), labels.clone()),
            limiter: Limiter {
                max_memory: usize::try_from(sandbox.memory_bytes).unwrap_or(usize::MAX),
                memory_exceeded: false,
            },
            labels,
            stderr,
            ticks: 0,
            tick_budget: sandbox.cpu_ticks(),
            cpu_exceeded: false,
        })
    }

    /// The last lines the plugin wrote to stderr (a panic message, usually).
    pub fn stderr_tail(&self) -> String {
        let text = one_line(&self.stderr.contents());
        if text.is_empty() { String::new() } else { format!(": {text}") }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

impl storage_types::Host for HostState {}
impl types_0_1::Host for HostState {}

impl log::Host for HostState {
    fn emit(&mut self, level: log::Level, message: String) {
        let l = &self.labels;
        let (plugin, database, replica) = (l.plugin.as_str(), l.database.as_str(), l.replica.as_str());
        // Info and above, repeated by the next instances, is said once a while.
        let loud = matches!(level, log::Level::Info | log::Level::Warn | log::Level::Error);
        if loud && !super::repeats::first_in_a_while(&format!("{plugin}\0{database}\0{replica}\0{message}")) {
            return tracing::debug!(plugin, database, replica, "(repeated) {message}");
        }
        match level {
            log::Level::Trace => tracing::trace!(plugin, database, replica, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, database, replica, "{message}"),
            log::Level::Info => tracing::info!(plugin, database, replica, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, database, replica, "{message}"),
            log::Level::Error => tracing::error!(plugin, database, replica, "{message}"),
        }
    }
}

impl log_0_1::Host for HostState {
    fn emit(&mut self, level: log_0_1::Level, message: String) {
        use log_0_1::Level as L;
        let level = match level {
            L::Trace => log::Level::Trace,
            L::Debug => log::Level::Debug,
            L::Info => log::Level::Info,
            L::Warn => log::Level::Warn,
            L::Error => log::Level::Error,
        };
        log::Host::emit(self, level, message)
    }
}

/// A plugin's text on one line (` | ` between its lines): it goes into
/// an error message, and a log entry split over lines breaks every log
/// pipeline that reads one entry a line.
pub fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugins_lines_become_one() {
        let panic = "thread panicked at src/lib.rs:1:\nboom\n\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(one_line(panic), "thread panicked at src/lib.rs:1: | boom | note: run with `RUST_BACKTRACE=1`");
        assert_eq!(one_line("  \n"), "");
    }

    #[test]
    fn allowlist_from_spaces_url() {
        let hosts = derive_allowlist("s3://mybucket.nyc3.digitaloceanspaces.com/db", &[]);
        assert!(host_allowed(&hosts, "nyc3.digitaloceanspaces.com"));
        assert!(host_allowed(&hosts, "mybucket.nyc3.digitaloceanspaces.com"));
        assert!(!host_allowed(&hosts, "evil.com"));
        assert!(!host_allowed(&hosts, "digitaloceanspaces.com.evil.com"));
        assert!(!host_allowed(&hosts, "xnyc3.digitaloceanspaces.com"));
    }

    #[test]
    fn allowlist_of_other_schemes_is_their_server() {
        assert_eq!(
            derive_allowlist("webdav://u:p@dav.example.com/backups", &[]),
            ["dav.example.com", "*.dav.example.com"]
        );
        let hosts =
            derive_allowlist("webdav://ignored/app", &[("webdav-url".into(), "https://cloud.example.com/dav".into())]);
        assert_eq!(hosts, ["ignored", "*.ignored", "cloud.example.com", "*.cloud.example.com"]);
    }

    #[test]
    fn allowlist_of_azure_is_the_accounts_host_or_the_endpoint() {
        let hosts = derive_allowlist("abs://acct@backups/db", &[]);
        assert_eq!(hosts, ["acct.blob.core.windows.net", "*.acct.blob.core.windows.net"]);
        assert!(!host_allowed(&hosts, "backups"));
        assert!(!host_allowed(&hosts, "other.blob.core.windows.net"));
        let hosts = derive_allowlist("abs:///db", &[("account-name".into(), "acct".into())]);
        assert!(host_allowed(&hosts, "acct.blob.core.windows.net"));
        let hosts = derive_allowlist("abs://c01/db?account-name=acct", &[]);
        assert!(host_allowed(&hosts, "acct.blob.core.windows.net"));
        let azurite = [("endpoint".into(), "http://127.0.0.1:10000/devstoreaccount1".into())];
        assert_eq!(derive_allowlist("abs://devstoreaccount1@c01/db", &azurite), ["127.0.0.1", "*.127.0.0.1"]);
    }

    #[test]
    fn allowlist_of_gcs_is_googles_hosts_or_the_endpoint() {
        let hosts = derive_allowlist("gs://backups/db", &[]);
        assert_eq!(hosts, ["storage.googleapis.com", "*.storage.googleapis.com"]);
        assert!(!host_allowed(&hosts, "backups"));
        let key = [("credentials-json".into(), r#"{"type":"service_account"}"#.into())];
        let hosts = derive_allowlist("gs://backups/db", &key);
        assert!(host_allowed(&hosts, "storage.googleapis.com") && host_allowed(&hosts, "oauth2.googleapis.com"));
        assert!(!host_allowed(&hosts, "backups") && !host_allowed(&hosts, "googleapis.com"));
        let own_token = [
            ("endpoint".into(), "http://127.0.0.1:4443".into()),
            ("credentials-json".into(), r#"{"token_uri":"https://sts.example.com/token"}"#.into()),
        ];
        let hosts = derive_allowlist("gs://backups/db", &own_token);
        assert_eq!(hosts, ["sts.example.com", "*.sts.example.com", "127.0.0.1", "*.127.0.0.1"]);
        assert!(!host_allowed(&hosts, "storage.googleapis.com"));
    }

    #[test]
    fn allowlist_from_endpoint_and_bare_bucket() {
        let hosts = derive_allowlist("s3://bucket/db?endpoint=127.0.0.1:9000", &[]);
        assert!(host_allowed(&hosts, "127.0.0.1"));
        assert!(!host_allowed(&hosts, "s3.amazonaws.com"));
        let hosts = derive_allowlist("s3://bucket/db", &[]);
        assert!(host_allowed(&hosts, "bucket.s3.us-east-1.amazonaws.com"));
        let hosts = derive_allowlist("s3://b/db", &[("endpoint".into(), "https://minio.local:9000".into())]);
        assert!(host_allowed(&hosts, "minio.local"));
        assert!(derive_allowlist("file:///tmp/x", &[]).is_empty());
        let hosts = derive_allowlist("s3://bucket.localhost:9000/db", &[]);
        assert!(host_allowed(&hosts, "localhost"));
        let hosts = derive_allowlist("s3://my.bucket/db", &[]);
        assert!(host_allowed(&hosts, "s3.us-west-2.amazonaws.com"));
        let hosts = derive_allowlist("s3://bucket.s3.amazonaws.com/db", &[]);
        assert!(host_allowed(&hosts, "bucket.s3.eu-west-1.amazonaws.com"));
        let hosts = derive_allowlist("s3://space.nyc3.digitaloceanspaces.com/db", &[]);
        assert!(!host_allowed(&hosts, "s3.amazonaws.com"));
    }
}
