//! Prometheus metrics (`addr:` in the config): Litestream's metric set with
//! a `sluice_` prefix, per database and per replica, plus plugin calls;
//! the same values under Litestream's own names and labels (so existing
//! dashboards and alerts keep working), and the standard `process_*` set.

use prometheus::core::{Collector, Desc, MetricVec, MetricVecBuilder};
use prometheus::proto::MetricFamily;
use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramVec, TextEncoder, register_counter_vec, register_gauge_vec,
    register_histogram_vec,
};
use std::sync::LazyLock;

mod admit;
pub use admit::{DEFAULT_MAX_DATABASES, counted, set_max_databases, shown};

/// Buckets for durations: from a fast local put to a slow remote snapshot.
const DURATION_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0];

macro_rules! metric {
    ($name:ident: $kind:ty = $reg:ident!($($args:tt)*)) => {
        pub static $name: LazyLock<$kind> = LazyLock::new(|| $reg!($($args)*).expect("metric names are static and unique"));
    };
}

metric!(DB_SIZE: GaugeVec = register_gauge_vec!("sluice_db_size", "Size of the database in bytes", &["db"]));
metric!(WAL_SIZE: GaugeVec = register_gauge_vec!("sluice_wal_size", "Size of the WAL file in bytes", &["db"]));
metric!(TOTAL_WAL_BYTES: CounterVec = register_counter_vec!("sluice_total_wal_bytes", "WAL bytes captured", &["db"]));
metric!(TXID: GaugeVec = register_gauge_vec!("sluice_txid", "Current TXID of the database", &["db"]));
metric!(SYNC_COUNT: CounterVec = register_counter_vec!("sluice_sync_count", "Syncs performed", &["db"]));
metric!(SYNC_ERROR_COUNT: CounterVec = register_counter_vec!("sluice_sync_error_count", "Syncs failed", &["db"]));
metric!(SYNC_SECONDS: CounterVec = register_counter_vec!("sluice_sync_seconds", "Time spent syncing", &["db"]));
metric!(VALIDATION_COUNT: CounterVec = register_counter_vec!("sluice_validation_count", "Validations of the capture against the live database", &["db"]));
metric!(VALIDATION_ERROR_COUNT: CounterVec = register_counter_vec!("sluice_validation_error_count", "Validations that found the capture differs from the database", &["db"]));
metric!(CHECKPOINT_COUNT: CounterVec = register_counter_vec!("sluice_checkpoint_count", "Checkpoints performed", &["db", "mode"]));
metric!(CHECKPOINT_ERROR_COUNT: CounterVec = register_counter_vec!("sluice_checkpoint_error_count", "Checkpoints failed", &["db", "mode"]));
metric!(CHECKPOINT_SECONDS: CounterVec = register_counter_vec!("sluice_checkpoint_seconds", "Time spent checkpointing", &["db", "mode"]));
metric!(REPLICA_TXID: GaugeVec = register_gauge_vec!("sluice_replica_txid", "Highest TXID a replica holds", &["db", "replica"]));
metric!(REPLICA_OPERATION_TOTAL: CounterVec = register_counter_vec!("sluice_replica_operation_total", "Replica operations", &["db", "replica", "operation"]));
metric!(REPLICA_OPERATION_BYTES: CounterVec = register_counter_vec!("sluice_replica_operation_bytes", "Bytes moved by replica operations", &["db", "replica", "operation"]));
metric!(REPLICA_OPERATION_ERRORS_TOTAL: CounterVec = register_counter_vec!("sluice_replica_operation_errors_total", "Replica operations failed", &["db", "replica", "operation"]));
metric!(REPLICA_OPERATION_DURATION: HistogramVec = register_histogram_vec!("sluice_replica_operation_duration_seconds", "Duration of replica operations", &["db", "replica", "operation"], DURATION_BUCKETS.to_vec()));
metric!(PLUGIN_CALLS_TOTAL: CounterVec = register_counter_vec!("sluice_plugin_calls_total", "Calls into storage plugins", &["plugin", "db", "replica", "call"]));
metric!(PLUGIN_ERRORS_TOTAL: CounterVec = register_counter_vec!("sluice_plugin_errors_total", "Plugin calls that failed, by kind", &["plugin", "db", "replica", "call", "kind"]));
metric!(PLUGIN_CALL_DURATION: HistogramVec = register_histogram_vec!("sluice_plugin_call_duration_seconds", "Duration of plugin calls", &["plugin", "db", "replica", "call"], DURATION_BUCKETS.to_vec()));
metric!(PLUGIN_THROTTLED_SECONDS: CounterVec = register_counter_vec!("sluice_plugin_throttled_seconds_total", "Time plugin requests waited for the replica's request rate (sandbox: requests-per-second)", &["plugin", "db", "replica"]));

// Litestream's replica-operation metrics are labelled by replica type
// (`s3`, `file`: the plugin's name) and operation, not by database.
metric!(LS_REPLICA_OPERATION_TOTAL: CounterVec = register_counter_vec!("litestream_replica_operation_total", "Replica operations (Litestream's name)", &["replica_type", "operation"]));
metric!(LS_REPLICA_OPERATION_BYTES: CounterVec = register_counter_vec!("litestream_replica_operation_bytes", "Bytes moved by replica operations (Litestream's name)", &["replica_type", "operation"]));

/// The sluice metrics Litestream has with the same labels, served again
/// under its names (`litestream_...`) at every scrape.
struct LitestreamNames {
    descs: Vec<Desc>,
}

fn renamed() -> [&'static dyn Collector; 10] {
    [
        &*DB_SIZE,
        &*WAL_SIZE,
        &*TOTAL_WAL_BYTES,
        &*TXID,
        &*SYNC_COUNT,
        &*SYNC_ERROR_COUNT,
        &*SYNC_SECONDS,
        &*CHECKPOINT_COUNT,
        &*CHECKPOINT_ERROR_COUNT,
        &*CHECKPOINT_SECONDS,
    ]
}

fn litestream_name(name: &str) -> String {
    name.replacen("sluice_", "litestream_", 1)
}

impl Collector for LitestreamNames {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out: Vec<MetricFamily> = renamed().iter().flat_map(|c| c.collect()).collect();
        for family in &mut out {
            let name = litestream_name(family.name());
            family.set_name(name);
        }
        out
    }
}

/// Registers the renamed set and the process metrics once, before the
/// first scrape.
static EXTRA_COLLECTORS: LazyLock<()> = LazyLock::new(|| {
    let descs = renamed()
        .iter()
        .flat_map(|c| c.desc().into_iter().cloned().collect::<Vec<_>>())
        .filter_map(|d| {
            Desc::new(litestream_name(&d.fq_name), d.help.clone(), d.variable_labels.clone(), Default::default()).ok()
        })
        .collect();
    if let Err(e) = prometheus::register(Box::new(LitestreamNames { descs })) {
        tracing::warn!("metrics under Litestream's names are unavailable: {e}");
    }
    let process = prometheus::process_collector::ProcessCollector::for_self();
    if let Err(e) = prometheus::register(Box::new(process)) {
        tracing::warn!("process metrics are unavailable: {e}");
    }
});

/// Record one replica operation; `replica_type` is the plugin's name.
pub fn replica_op(db: &str, replica: &str, replica_type: &str, op: &str, bytes: u64, seconds: f64, ok: bool) {
    LS_REPLICA_OPERATION_TOTAL.with_label_values(&[replica_type, op]).inc();
    LS_REPLICA_OPERATION_BYTES.with_label_values(&[replica_type, op]).inc_by(bytes as f64);
    let labels = [counted(db), replica, op];
    REPLICA_OPERATION_TOTAL.with_label_values(&labels).inc();
    REPLICA_OPERATION_BYTES.with_label_values(&labels).inc_by(bytes as f64);
    REPLICA_OPERATION_DURATION.with_label_values(&labels).observe(seconds);
    if !ok {
        REPLICA_OPERATION_ERRORS_TOTAL.with_label_values(&labels).inc();
    }
}

/// Drop every series labelled with database `db`: one removed while
/// running (unregistered, out of a reloaded config, gone from a watched
/// directory) must not stay on the metrics page, frozen at its last
/// values, nor grow it without bound as tenants come and go.
pub fn forget_database(db: &str) {
    admit::release(db);
    forget(&DB_SIZE, db);
    forget(&WAL_SIZE, db);
    forget(&TOTAL_WAL_BYTES, db);
    forget(&TXID, db);
    forget(&SYNC_COUNT, db);
    forget(&SYNC_ERROR_COUNT, db);
    forget(&SYNC_SECONDS, db);
    forget(&VALIDATION_COUNT, db);
    forget(&VALIDATION_ERROR_COUNT, db);
    forget(&CHECKPOINT_COUNT, db);
    forget(&CHECKPOINT_ERROR_COUNT, db);
    forget(&CHECKPOINT_SECONDS, db);
    forget(&REPLICA_TXID, db);
    forget(&REPLICA_OPERATION_TOTAL, db);
    forget(&REPLICA_OPERATION_BYTES, db);
    forget(&REPLICA_OPERATION_ERRORS_TOTAL, db);
    forget(&REPLICA_OPERATION_DURATION, db);
    forget(&PLUGIN_CALLS_TOTAL, db);
    forget(&PLUGIN_ERRORS_TOTAL, db);
    forget(&PLUGIN_CALL_DURATION, db);
    forget(&PLUGIN_THROTTLED_SECONDS, db);
}

/// Remove the series of `vec` whose `db` label is `db`, whatever their
/// other labels (the vector knows them; we do not).
fn forget<T: MetricVecBuilder>(vec: &MetricVec<T>, db: &str) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: std::collections::HashMap<&str, &str> =
                metric.get_label().iter().map(|l| (l.name(), l.value())).collect();
            if labels.get("db") == Some(&db) {
                let _ = vec.remove(&labels);
            }
        }
    }
}

/// The text exposition of every metric.
pub fn render() -> String {
    LazyLock::force(&EXTRA_COLLECTORS);
    let mut buf = Vec::new();
    if TextEncoder::new().encode(&prometheus::gather(), &mut buf).is_err() {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Serve `GET /metrics` on `addr` (`:9090` means all interfaces, as in
/// Litestream) until `shutdown` flips.
pub async fn serve(addr: &str, mut shutdown: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let bind = if addr.starts_with(':') { format!("0.0.0.0{addr}") } else { addr.to_string() };
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {bind}: {e}"))?;
    tracing::info!("serving metrics on http://{bind}/metrics");
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = shutdown.changed() => return Ok(()),
        };
        tokio::spawn(async move {
            let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let (status, body) =
                    if req.uri().path() == "/metrics" { (200, render()) } else { (404, "not found\n".to_string()) };
                hyper::Response::builder()
                    .status(status)
                    .header("content-type", "text/plain; version=0.0.4")
                    .body(Full::new(bytes::Bytes::from(body)))
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric registers (the names are static; a bad one fails here,
    /// not in production) and renders with its `sluice_` prefix.
    #[test]
    fn all_metrics_register_and_render() {
        DB_SIZE.with_label_values(&["/d"]).set(1.0);
        WAL_SIZE.with_label_values(&["/d"]).set(1.0);
        TOTAL_WAL_BYTES.with_label_values(&["/d"]).inc();
        TXID.with_label_values(&["/d"]).set(1.0);
        SYNC_COUNT.with_label_values(&["/d"]).inc();
        SYNC_ERROR_COUNT.with_label_values(&["/d"]).inc();
        SYNC_SECONDS.with_label_values(&["/d"]).inc();
        CHECKPOINT_COUNT.with_label_values(&["/d", "passive"]).inc();
        CHECKPOINT_ERROR_COUNT.with_label_values(&["/d", "passive"]).inc();
        CHECKPOINT_SECONDS.with_label_values(&["/d", "passive"]).inc();
        REPLICA_TXID.with_label_values(&["/d", "r"]).set(1.0);
        replica_op("/d", "r", "s3", "put", 10, 0.1, false);
        PLUGIN_CALLS_TOTAL.with_label_values(&["p", "/d", "r", "put"]).inc();
        PLUGIN_ERRORS_TOTAL.with_label_values(&["p", "/d", "r", "put", "transient"]).inc();
        PLUGIN_CALL_DURATION.with_label_values(&["p", "/d", "r", "put"]).observe(0.1);
        let text = render();
        for name in [
            "sluice_db_size",
            "sluice_wal_size",
            "sluice_total_wal_bytes",
            "sluice_txid",
            "sluice_sync_count",
            "sluice_sync_error_count",
            "sluice_sync_seconds",
            "sluice_checkpoint_count",
            "sluice_checkpoint_error_count",
            "sluice_checkpoint_seconds",
            "sluice_replica_operation_total",
            "sluice_replica_operation_bytes",
            "sluice_replica_operation_errors_total",
            "sluice_replica_operation_duration_seconds",
            "sluice_plugin_calls_total",
            "sluice_plugin_errors_total",
            "sluice_plugin_call_duration_seconds",
        ] {
            assert!(text.contains(name), "{name} missing from the metrics page");
            let theirs = litestream_name(name);
            let mirrored = !name.contains("operation") && !name.contains("plugin");
            assert!(!mirrored || text.contains(&format!("{theirs}{{db=\"/d\"")), "{theirs} missing:\n{text}");
        }
        assert!(text.contains("litestream_replica_operation_total{operation=\"put\",replica_type=\"s3\"} 1"), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }

    #[test]
    fn a_forgotten_database_leaves_the_page_and_the_others_stay() {
        for db in ["/gone", "/kept"] {
            TXID.with_label_values(&[db]).set(7.0);
            CHECKPOINT_COUNT.with_label_values(&[db, "truncate"]).inc();
            replica_op(db, "r1", "file", "get", 1, 0.1, true);
            PLUGIN_ERRORS_TOTAL.with_label_values(&["file", db, "r1", "get", "transient"]).inc();
        }
        forget_database("/gone");
        let text = render();
        assert!(!text.contains("\"/gone\""), "{text}");
        for name in ["sluice_txid{db=\"/kept\"}", "litestream_txid{db=\"/kept\"}", "db=\"/kept\",mode=\"truncate\""] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        assert!(text.contains("sluice_plugin_errors_total{call=\"get\",db=\"/kept\""), "{text}");
    }
}
