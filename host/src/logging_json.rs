//! `logging.type: json` with Litestream's field names (Go's slog JSON
//! handler): `{"time":..., "level":"INFO", "msg":..., <fields>}`, one
//! object per line, so log pipelines built for Litestream keep parsing.

use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

pub struct LitestreamJson;

/// The event's fields: `message` becomes `msg`, the rest keep their names.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, Value::from(value));
    }
}

impl Fields {
    fn insert(&mut self, field: &Field, value: Value) {
        let name = if field.name() == "message" { "msg" } else { field.name() };
        self.0.insert(name.to_string(), value);
    }
}

impl<S, N> FormatEvent<S, N> for LitestreamJson
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        line.insert("time".into(), Value::String(now()));
        line.insert("level".into(), Value::String(event.metadata().level().to_string()));
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        line.insert("msg".into(), fields.0.remove("msg").unwrap_or(Value::String(String::new())));
        line.extend(fields.0);
        line.insert("target".into(), Value::String(event.metadata().target().to_string()));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// RFC 3339 with nanoseconds, as Go's slog writes `time`.
fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_litestreams_field_names() {
        let sink = crate::logging::Sink::default();
        let writer = sink.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || writer.clone()).event_format(LitestreamJson).finish();
        tracing::subscriber::with_default(subscriber, || tracing::warn!(db = "/a.db", n = 3, "replica behind"));
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["msg"], "replica behind");
        assert_eq!(v["db"], "/a.db");
        assert_eq!(v["n"], 3);
        assert!(v["time"].as_str().unwrap().ends_with('Z'), "{v}");
    }
}
