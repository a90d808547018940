//! `tracing` set-up, done once at start.

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    /// One JSON object per line with Litestream's field names (`time`,
    /// `level`, `msg`, then the event's own fields).
    Json,
}

/// How to log, from the command line, the environment and the config's
/// `logging:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub level: String,
    pub format: Format,
    /// Logs to stderr; otherwise to stdout (`replicate`, as Litestream).
    pub stderr: bool,
    /// Said once logging is up: a level that was not understood.
    pub warning: Option<String>,
}

/// `replicate` without a config file (`replicate DB URL`) has no
/// `logging.stderr`: this variable, set to anything but `0` or `false`,
/// sends its logs to stderr.
pub const STDERR_ENV: &str = "SLUICE_LOG_STDERR";

fn stderr_from_env() -> bool {
    std::env::var(STDERR_ENV).is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Levels Litestream accepts, and `trace`.
const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];

impl Settings {
    /// `-log-level` wins, then `LOG_LEVEL` (`env_level`), then
    /// `logging.level`; an unknown level is warned about and `info` used
    /// (a level that matched nothing used to silence every log line,
    /// errors included). `daemon`: `replicate`, whose logs go to stdout
    /// unless `logging.stderr` or [`STDERR_ENV`] (Litestream's default);
    /// other commands keep stdout for their output.
    pub fn resolve(
        flag: Option<&str>,
        env_level: Option<&str>,
        logging: Option<&crate::config::file::LoggingConfig>,
        daemon: bool,
    ) -> Settings {
        let asked =
            flag.or(env_level.filter(|l| !l.is_empty())).or(logging.and_then(|l| l.level.as_deref())).unwrap_or("info");
        let lower = asked.trim().to_ascii_lowercase();
        let lower = if lower == "warning" { "warn".to_string() } else { lower };
        let (level, warning) = match LEVELS.contains(&lower.as_str()) {
            true => (lower, None),
            false => (
                "info".to_string(),
                Some(format!("unknown log level `{asked}` (use debug, info, warn or error); logging at info")),
            ),
        };
        let format = match logging.and_then(|l| l.kind.as_deref()) {
            Some("json") => Format::Json,
            _ => Format::Text,
        };
        let asked_stderr = logging.and_then(|l| l.stderr).unwrap_or_else(stderr_from_env);
        let stderr = !daemon || asked_stderr;
        Settings { level, format, stderr, warning }
    }
}

/// Caps the `notify` crate below trace, where it logs every inotify event.
const NO_SELF_FEEDING: &str = "notify=debug";

/// Install the global subscriber: `settings.level` unless
/// `RUST_LOG`/`SLUICE_LOG` says otherwise.
pub fn init(settings: &Settings) {
    let level = &settings.level;
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
    let result = match settings.stderr {
        true => install(filter, settings.format, std::io::stderr, std::io::IsTerminal::is_terminal(&std::io::stderr())),
        false => {
            install(filter, settings.format, std::io::stdout, std::io::IsTerminal::is_terminal(&std::io::stdout()))
        }
    };
    // A second init (tests) keeps the first subscriber.
    if result.is_ok()
        && let Some(w) = &settings.warning
    {
        tracing::warn!("{w}");
    }
}

fn install<W>(filter: EnvFilter, format: Format, writer: W, terminal: bool) -> Result<(), ()>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    // Colours only on a terminal: log files and journals get plain text.
    let ansi = terminal && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    match format {
        Format::Text => builder.try_init().map_err(|_| ()),
        Format::Json => builder.event_format(json::LitestreamJson).try_init().map_err(|_| ()),
    }
}

/// A log writer for tests: everything written, kept.
#[cfg(test)]
#[derive(Clone, Default)]
pub struct Sink(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What `f` logs on this thread, as plain text lines (for tests of a
/// warning's wording).
#[cfg(test)]
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, String) {
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

#[path = "logging_json.rs"]
mod json;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::LoggingConfig;

    #[test]
    fn the_watcher_cap_is_a_valid_directive() {
        assert!(super::NO_SELF_FEEDING.parse::<tracing_subscriber::filter::Directive>().is_ok());
    }

    #[test]
    fn the_flag_then_log_level_then_the_config_decide() {
        let file = LoggingConfig { level: Some("error".into()), ..Default::default() };
        assert_eq!(Settings::resolve(Some("DEBUG"), Some("warn"), Some(&file), true).level, "debug");
        assert_eq!(Settings::resolve(None, Some("warn"), Some(&file), true).level, "warn");
        assert_eq!(Settings::resolve(None, Some(""), Some(&file), true).level, "error");
        assert_eq!(Settings::resolve(None, None, None, true).level, "info");
    }

    #[test]
    fn an_unknown_level_warns_and_logs_at_info() {
        let s = Settings::resolve(Some("verbose"), None, None, true);
        assert_eq!(s.level, "info");
        assert!(s.warning.unwrap().contains("`verbose`"));
    }

    #[test]
    fn replicate_logs_to_stdout_unless_asked_and_json_is_chosen_by_type() {
        let json = LoggingConfig { kind: Some("json".into()), ..Default::default() };
        let s = Settings::resolve(None, None, Some(&json), true);
        assert_eq!((s.format, s.stderr), (Format::Json, false));
        let to_stderr = LoggingConfig { stderr: Some(true), ..Default::default() };
        assert!(Settings::resolve(None, None, Some(&to_stderr), true).stderr);
        assert!(Settings::resolve(None, None, None, false).stderr, "other commands keep stdout for output");
    }
}
