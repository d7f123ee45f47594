//! Installing the log subscriber: JSON or pretty, to standard output or a rotated file
//! ([`super::rolling`]).

use std::io::IsTerminal;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::json::{JsonFields, JsonLines, Redact};
use super::rolling::RollingWriter;
use crate::config::{ConfigError, LogConfig, LogFormat, Origin};

/// Flushes buffered log lines when dropped: keep it alive until the process ends.
#[derive(Debug)]
pub struct LogGuard {
    _guard: WorkerGuard,
}

/// Lines buffered between the request path and the writer thread. The writer never
/// drops lines (a full buffer makes loggers wait), so an access log is complete.
const BUFFERED_LINES: usize = 64 * 1024;

/// Bytes gathered before a write to the log output.
const WRITE_BUFFER: usize = 64 * 1024;

/// Opens the log output; an error names `log.file`. Does not install anything yet.
pub fn open(cfg: &LogConfig) -> Result<Box<dyn std::io::Write + Send>, ConfigError> {
    let Some(file) = &cfg.file else {
        return Ok(Box::new(std::io::stdout()));
    };
    let err = |message: String| ConfigError {
        key: "log.file".into(),
        origin: Some(Origin::Default),
        message,
    };
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| err(format!("{} does not name a file", file.display())))?;
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    let writer = RollingWriter::new(
        dir,
        name,
        cfg.rotation,
        cfg.retain,
        std::sync::Arc::new(portcullis_core::SystemClock),
    )
    .map_err(|e| err(format!("cannot open a log file in {}: {e}", dir.display())))?;
    Ok(Box::new(writer))
}

/// Installs the global subscriber writing to `output`.
pub fn install(cfg: &LogConfig, output: Box<dyn std::io::Write + Send>) -> LogGuard {
    let to_terminal = cfg.file.is_none() && std::io::stdout().is_terminal();
    // The writer thread drains every queued line, then flushes: with a buffer in between,
    // a busy gateway writes many lines per system call instead of one each, and an idle
    // one still writes each line at once.
    let output = std::io::BufWriter::with_capacity(WRITE_BUFFER, output);
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("portcullis-log")
        .finish(output);
    let filter = EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let redact = Redact::new(cfg.redact_fields.iter().cloned());
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match cfg.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonLines::new(redact.clone()))
                    .fmt_fields(JsonFields::new(redact))
                    .with_writer(writer),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(to_terminal)
                    .with_writer(writer),
            )
            .try_init(),
    };
    if installed.is_err() {
        eprintln!("portcullis: a log subscriber was already installed; keeping it");
    }
    LogGuard { _guard: guard }
}
