//! A test plugin that misbehaves on request, to prove the sandbox holds.
//!
//! The behaviour is chosen by the store's settings and exercised by `put`.
//! Any setting can be overridden for one call by a put metadata entry of
//! the same name, so one store (one plugin, one sandbox, one set of
//! labels) can make an obeyed call and a violating one.
//!
//! | `mode`   | parameters            | obeyed                  | violated                     |
//! |----------|-----------------------|-------------------------|------------------------------|
//! | `noop`   | —                     | returns at once         | —                            |
//! | `memory` | `mib`, `graceful`     | a few MiB               | more than the memory limit   |
//! | `spin`   | `ms` (`forever`)      | shorter than the budget | longer, or an endless loop   |
//! | `http`   | `url`                 | an allowed host         | a host not on the allowlist  |
//! | `file`   | `path`                | inside the granted dir  | anywhere else                |
//! | `panic`  | `panic`, `message`    | `panic=no`              | `panic=yes` (the default)    |
//!
//! `mode: forgetful` is a working store that keeps objects in the
//! instance's own memory: every call works within one instance, and a new
//! instance has lost them all, which the conformance suite must catch.
//!
//! Every mode first writes `stderr-kib` KiB of chatter to stderr and
//! busy-waits `delay-ms` (both default 0), so a violation can be made to
//! last while a test watches its neighbours keep working.
//!
//! `put` answers with metadata describing what happened (`allocated-mib`,
//! `spun-ms`, `status`, `len`, `content`...). `get` in `file` mode returns
//! the bytes of the file named by the `path` setting.
#![cfg(target_arch = "wasm32")]

use sluice_sdk::*;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

struct Hostile {
    config: Config,
}

thread_local! {
    /// `forgetful` mode's objects: gone with the instance.
    static OBJECTS: RefCell<BTreeMap<String, (Vec<u8>, ObjectMeta)>> = const { RefCell::new(BTreeMap::new()) };
}

impl Hostile {
    fn forgetful(&self) -> bool {
        self.config.get("mode") == Some("forgetful")
    }
}

/// `forgetful` mode's put: a fresh etag per write, as a real store's.
fn remember(key: &str, data: Vec<u8>, options: PutOptions) -> ObjectMeta {
    OBJECTS.with_borrow_mut(|objects| {
        let mut meta = ObjectMeta::new(key, data.len() as u64, format!("v{}", random_u64()));
        meta.metadata = options.metadata;
        objects.insert(key.to_string(), (data, meta.clone()));
        meta
    })
}

fn recalled(key: &str) -> Result<(Vec<u8>, ObjectMeta), Error> {
    OBJECTS.with_borrow(|objects| objects.get(key).cloned()).ok_or_else(|| Error::not_found(key))
}

/// A setting, overridden by the put's metadata entry of the same name.
fn param<'a>(config: &'a Config, options: &'a PutOptions, name: &str) -> Option<&'a str> {
    options.metadata.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).or_else(|| config.get(name))
}

fn number(config: &Config, options: &PutOptions, name: &str, default: u64) -> Result<u64, Error> {
    match param(config, options, name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| Error::invalid_config(format!("`{name}` must be a whole number, got `{v}`"))),
    }
}

fn meta(key: &str, size: u64, pairs: Vec<(&str, String)>) -> ObjectMeta {
    let mut m = ObjectMeta::new(key, size, format!("hostile-{size}"));
    m.metadata = pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    m
}

/// Allocate `mib` MiB one MiB at a time and write every page, so the
/// memory is really used (not just reserved). Returns a checksum.
fn allocate(mib: u64) -> u64 {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut sum = 0u64;
    for i in 0..mib {
        let mut chunk = vec![0u8; 1 << 20];
        for page in chunk.chunks_mut(4096) {
            page[0] = i as u8 | 1;
        }
        sum = sum.wrapping_add(black_box(&chunk)[0] as u64);
        chunks.push(chunk);
    }
    black_box(&chunks);
    sum
}

/// Busy-loop. `None` loops forever, without any host call.
fn spin(ms: Option<u64>) -> u64 {
    let mut x = 1u64;
    match ms {
        None => loop {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
        },
        Some(ms) => {
            let start = Instant::now();
            let budget = Duration::from_millis(ms);
            while start.elapsed() < budget {
                for _ in 0..1000 {
                    x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
                }
            }
            start.elapsed().as_millis() as u64
        }
    }
}

impl Backend for Hostile {
    fn info() -> PluginInfo {
        let mut capabilities = Capabilities::minimal();
        // The benchmark pushes 64 MiB through a single put.
        capabilities.max_put_size = 1 << 30;
        PluginInfo {
            needs_directory: true,
            // For the `tcp` mode; the host grants no target to a file URL,
            // so only an operator's `allow-hosts: [host:port]` opens one.
            needs_sockets: true,
            capabilities,
            ..PluginInfo::basic(
                "hostile",
                env!("CARGO_PKG_VERSION"),
                "Test plugin that misbehaves on request (memory, cpu, network, files, panics)",
                &["file"],
            )
            .with_settings([
                Setting::new("mode", "how to misbehave: noop, memory, spin, http, tcp, file, panic, forgetful, snoop"),
                Setting::new("path", "a file the `file` mode tries to read"),
                Setting::new("mib", "memory mode: MiB to allocate"),
                Setting::new("graceful", "memory mode: fail with an error instead of trapping"),
                Setting::new("ms", "spin mode: milliseconds of CPU to burn"),
                Setting::new("delay-ms", "wait this long before every put"),
                Setting::new("stderr-kib", "write this much to stderr on every put"),
                Setting::new("url", "http mode: where to send a request"),
                Setting::new("addr", "tcp mode: host:port to connect to, send a line and read the reply"),
                Setting::new("panic", "panic mode: `no` to not panic"),
                Setting::new("message", "panic mode: the panic's message"),
                Setting::new("access-key-id", "echoed by snoop mode, to test tenant isolation"),
            ])
        }
    }

    fn open(config: Config) -> Result<Self, Error> {
        match config.get("mode").unwrap_or("noop") {
            "noop" | "memory" | "spin" | "http" | "tcp" | "file" | "panic" | "forgetful" | "snoop" => {
                Ok(Hostile { config })
            }
            other => Err(Error::invalid_config(format!(
                "unknown mode `{other}` (noop, memory, spin, http, file, panic, forgetful)"
            ))),
        }
    }

    fn put(&self, key: &str, data: Vec<u8>, options: PutOptions) -> Result<ObjectMeta, Error> {
        if self.forgetful() {
            if options.precondition != Precondition::None {
                return Err(Error::unsupported("conditional writes"));
            }
            return Ok(remember(key, data, options));
        }
        let c = &self.config;
        let size = data.len() as u64;
        let chatter = number(c, &options, "stderr-kib", 0)?;
        for i in 0..chatter {
            // 1 KiB lines of chatter on stderr.
            eprintln!("{:<1023}", format!("hostile chatter line {i}"));
        }
        let delay = number(c, &options, "delay-ms", 0)?;
        if delay > 0 {
            spin(Some(delay));
        }
        match param(c, &options, "mode").unwrap_or("noop") {
            "noop" => Ok(ObjectMeta::new(key, size, String::from("noop"))),
            "memory" => {
                let mib = number(c, &options, "mib", 1)?;
                if param(c, &options, "graceful") == Some("yes") {
                    // Ask for it all at once and handle a refusal, as a
                    // careful plugin would.
                    let mut v: Vec<u8> = Vec::new();
                    if v.try_reserve_exact((mib as usize) << 20).is_err() {
                        return Err(Error::permanent(format!("could not allocate {mib} MiB")));
                    }
                }
                let sum = allocate(mib);
                Ok(meta(key, size, vec![("allocated-mib", mib.to_string()), ("sum", sum.to_string())]))
            }
            "spin" => {
                let ms = match param(c, &options, "ms") {
                    Some("forever") => None,
                    _ => Some(number(c, &options, "ms", 10)?),
                };
                let spun = spin(ms);
                Ok(meta(key, size, vec![("spun-ms", spun.to_string())]))
            }
            "tcp" => {
                use std::io::{Read, Write};
                let addr = param(c, &options, "addr").ok_or_else(|| Error::invalid_config("tcp mode needs `addr`"))?;
                let mut stream = std::net::TcpStream::connect(addr)?;
                stream.write_all(b"ping\n")?;
                let mut reply = [0u8; 64];
                let n = stream.read(&mut reply)?;
                Ok(meta(key, size, vec![("reply", String::from_utf8_lossy(&reply[..n]).trim().to_string())]))
            }
            "http" => {
                let url = param(c, &options, "url").ok_or_else(|| Error::invalid_config("http mode needs `url`"))?;
                let response = http::Request::new(http::Method::Get, url).send()?;
                Ok(meta(
                    key,
                    size,
                    vec![("status", response.status.to_string()), ("body-len", response.body.len().to_string())],
                ))
            }
            "file" => {
                let path = param(c, &options, "path").ok_or_else(|| Error::invalid_config("file mode needs `path`"))?;
                let bytes = std::fs::read(path)?;
                let content: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
                Ok(meta(key, bytes.len() as u64, vec![("len", bytes.len().to_string()), ("content", content)]))
            }
            "snoop" => {
                // Everything a plugin can learn about its surroundings: the
                // environment, its arguments, its settings, and what the
                // filesystem root lists (a tenant's plugin must see only
                // its own grant and settings).
                let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                let args: Vec<String> = std::env::args().collect();
                let settings: Vec<String> = c.settings().iter().map(|(k, v)| format!("{k}={v}")).collect();
                let root: Vec<String> = std::fs::read_dir("/")
                    .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                    .unwrap_or_default();
                let fields = [("env", env), ("args", args), ("settings", settings), ("root", root)];
                Ok(meta(key, size, fields.into_iter().map(|(k, v)| (k, v.join("\n"))).collect()))
            }
            "panic" => {
                if param(c, &options, "panic") == Some("no") {
                    return Ok(meta(key, size, vec![("panicked", "no".into())]));
                }
                let message = param(c, &options, "message").unwrap_or("no message");
                panic!("hostile plugin panics on purpose: {message}");
            }
            other => Err(Error::invalid_config(format!("unknown mode `{other}`"))),
        }
    }

    fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Vec<u8>, Error> {
        match (self.config.get("mode"), self.config.get("path")) {
            (Some("file"), Some(path)) => Ok(std::fs::read(path)?),
            (Some("forgetful"), _) => Ok(slice_range(&recalled(key)?.0, range).to_vec()),
            _ => Err(Error::not_found(key)),
        }
    }

    fn head(&self, key: &str) -> Result<ObjectMeta, Error> {
        if self.forgetful() {
            return Ok(recalled(key)?.1);
        }
        Err(Error::not_found(key))
    }

    fn list(&self, prefix: &str, cursor: Option<String>, max_keys: u32) -> Result<ListPage, Error> {
        if !self.forgetful() {
            return Ok(ListPage { objects: Vec::new(), next_cursor: None });
        }
        OBJECTS.with_borrow(|objects| {
            let keys = objects.keys().filter(|k| k.starts_with(prefix)).cloned();
            Ok(ListPage::from_sorted_keys(keys, cursor, max_keys, |k| objects[k].1.clone()))
        })
    }

    fn delete(&self, keys: Vec<String>) -> Result<Vec<DeleteFailure>, Error> {
        OBJECTS.with_borrow_mut(|objects| keys.iter().for_each(|k| drop(objects.remove(k))));
        Ok(Vec::new())
    }
}

export_backend!(Hostile);
