//! `tracing` set-up, done once at start.

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// Caps the `notify` crate below trace, where it logs every inotify event.
const NO_SELF_FEEDING: &str = "notify=debug";

/// Install the global subscriber: `level` unless `RUST_LOG`/`SLUICE_LOG`
/// says otherwise; logs go to stderr so stdout stays for command output.
pub fn init(level: &str, format: Format) {
    let mut filter = std::env::var("SLUICE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("{level},wasmtime=warn,cranelift=warn,hyper=warn,reqwest=warn")));
    // Never the file watcher's per-event lines, whatever was asked: a log
    // written where a database lives raises an event per line, and each
    // was logged at trace, which raised the next (46 GB in 22 minutes).
    // Nothing else logs per file event. Only where trace was asked for:
    // the cap is a directive of its own, which would otherwise raise the
    // watcher to debug under `info`.
    if filter.max_level_hint() == Some(tracing_subscriber::filter::LevelFilter::TRACE)
        && let Ok(cap) = NO_SELF_FEEDING.parse()
    {
        filter = filter.add_directive(cap);
    }
    // Colours only on a terminal: log files and journals get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder.json().try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// What `f` logs on this thread, as plain text lines (for tests of a
/// warning's wording).
#[cfg(test)]
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, String) {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned();
    (result, text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_watcher_cap_is_a_valid_directive() {
        assert!(super::NO_SELF_FEEDING.parse::<tracing_subscriber::filter::Directive>().is_ok());
    }
}
