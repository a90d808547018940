//! What crossing the plugin boundary costs, measured side by side in one
//! run: `cargo bench -p sluice --bench plugin_boundary`.
//!
//! - a put of 4 MiB and 64 MiB into the `noop` hostile plugin (the host
//!   copies the bytes into the plugin's linear memory) vs a plain
//!   `to_vec` of the same bytes;
//! - a new store + instance, and a session (instance + `open`);
//! - plugin start-up (`Runtime::load`: compile, link, `info`) without a
//!   compile cache, with a cold on-disk cache and with a warm one.
//!
//! Prints a markdown table. Takes well under two minutes.

use sluice::plugin::{Labels, PluginStore, Precondition, PutOptions, Runtime, SandboxConfig, bundled};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../common/hostile.rs"]
mod hostile;

fn hostile_wasm() -> Vec<u8> {
    let path = hostile::hostile_wasm();
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn gbps(bytes: usize, d: Duration) -> String {
    format!("{:.1} GB/s", bytes as f64 / d.as_secs_f64() / 1e9)
}

struct Row {
    what: String,
    figure: String,
    compare: String,
    note: String,
}

fn row(what: impl Into<String>, figure: impl Into<String>, compare: impl Into<String>, note: impl Into<String>) -> Row {
    Row { what: what.into(), figure: figure.into(), compare: compare.into(), note: note.into() }
}

async fn bench() -> Vec<Row> {
    let mut rows = Vec::new();
    let hostile = hostile_wasm();
    let scratch = tempfile::tempdir().expect("tempdir");

    // --- put through the boundary vs memcpy -------------------------------
    let runtime = Runtime::new(Some(scratch.path().join("cache"))).expect("runtime");
    let plugin = runtime.load(&hostile, "hostile.wasm").await.expect("hostile plugin loads");
    let url = format!("file://{}", scratch.path().join("replica").display());
    let settings = vec![("mode".to_string(), "noop".to_string())];
    let sandbox = SandboxConfig { memory_mib: Some(512), ..SandboxConfig::default() }
        .resolve(&plugin, &url, &settings)
        .expect("sandbox");
    let labels = Labels { plugin: String::new(), database: "bench.db".into(), replica: "bench".into() };
    let store = PluginStore::new(plugin.clone(), url, settings, sandbox.clone(), labels.clone()).unwrap();
    let options = PutOptions { precondition: Precondition::None, metadata: Vec::new(), content_sha256: None };
    for (mib, iterations) in [(4usize, 40), (64, 8)] {
        let data: Vec<u8> = (0..mib << 20).map(|i| (i as u8).wrapping_mul(31)).collect();
        let mut session = store.session().await.expect("session");
        session.put("warm", &data, &options).await.expect("warm-up put");
        let mut puts = Vec::new();
        let mut copies = Vec::new();
        let mut memcpys = Vec::new();
        let mut target = data.clone();
        for _ in 0..iterations {
            let t = Instant::now();
            black_box(session.put("bench/object", black_box(&data), &options).await.expect("put"));
            puts.push(t.elapsed());
            let t = Instant::now();
            black_box(black_box(&data).to_vec());
            copies.push(t.elapsed());
            let t = Instant::now();
            target.copy_from_slice(black_box(&data));
            black_box(&target);
            memcpys.push(t.elapsed());
        }
        let (put, copy, memcpy) = (median(puts), median(copies), median(memcpys));
        rows.push(row(
            format!("put {mib} MiB into the `noop` plugin"),
            format!("{} ({})", ms(put), gbps(data.len(), put)),
            format!(
                "`to_vec`: {} ({}); `copy_from_slice` into a warm buffer: {} ({})",
                ms(copy),
                gbps(data.len(), copy),
                ms(memcpy),
                gbps(data.len(), memcpy)
            ),
            format!(
                "{:.2}× `to_vec`, {:.2}× a warm memcpy; medians of {iterations}",
                put.as_secs_f64() / copy.as_secs_f64(),
                put.as_secs_f64() / memcpy.as_secs_f64()
            ),
        ));
    }

    // --- instantiation -----------------------------------------------------
    let labels = Arc::new(Labels { plugin: "hostile".into(), ..labels });
    for _ in 0..200 {
        drop(plugin.instantiate(&sandbox, labels.clone()).await.expect("instantiate"));
    }
    let mut samples = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let instance = plugin.instantiate(&sandbox, labels.clone()).await.expect("instantiate");
        samples.push(t.elapsed());
        drop(instance);
    }
    rows.push(row("new store + instantiate", us(median(samples)), "", "median of 2000; dropped after each"));
    let mut samples = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let session = store.session().await.expect("session");
        samples.push(t.elapsed());
        drop(session);
    }
    rows.push(row(
        "session: instantiate + `open`",
        us(median(samples)),
        "",
        "median of 2000 (hostile plugin, directory granted)",
    ));

    // --- start-up: compile vs cache ----------------------------------------
    let plugins: [(&str, &[u8]); 3] = [
        ("hostile", &hostile),
        ("file", bundled::bytes("file").expect("bundled file plugin")),
        ("s3", bundled::bytes("s3").expect("bundled s3 plugin")),
    ];
    for (name, wasm) in plugins {
        let kib = wasm.len() / 1024;
        let uncached = Runtime::new(None).expect("runtime");
        let mut none = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            black_box(uncached.load(wasm, name).await.expect("load"));
            none.push(t.elapsed());
        }
        let mut cold = Vec::new();
        for i in 0..3 {
            let fresh = Runtime::new(Some(scratch.path().join(format!("cold-{name}-{i}")))).expect("runtime");
            let t = Instant::now();
            black_box(fresh.load(wasm, name).await.expect("load"));
            cold.push(t.elapsed());
        }
        let warm_dir = scratch.path().join(format!("warm-{name}"));
        Runtime::new(Some(warm_dir.clone())).expect("runtime").load(wasm, name).await.expect("prime the cache");
        let mut warm = Vec::new();
        for _ in 0..20 {
            let reused = Runtime::new(Some(warm_dir.clone())).expect("runtime");
            let t = Instant::now();
            black_box(reused.load(wasm, name).await.expect("load"));
            warm.push(t.elapsed());
        }
        let (none, cold, warm) = (median(none), median(cold), median(warm));
        rows.push(row(
            format!("start-up of `{name}` ({kib} KiB): warm on-disk cache"),
            ms(warm),
            format!("no cache: {}; cold cache: {}", ms(none), ms(cold)),
            format!("{:.0}× faster than compiling; medians of 20 / 3 / 3", none.as_secs_f64() / warm.as_secs_f64()),
        ));
    }
    rows
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let rows = runtime.block_on(bench());
    println!();
    println!("| measurement | figure | compared with | note |");
    println!("|---|---|---|---|");
    for r in rows {
        println!("| {} | {} | {} | {} |", r.what, r.figure, r.compare, r.note);
    }
    println!();
    println!(
        "{} cores, {} build, whole run {:.1} s",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        if cfg!(debug_assertions) { "debug" } else { "release" },
        started.elapsed().as_secs_f64()
    );
}
