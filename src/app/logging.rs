//! Log output: human-readable by default, JSON lines with `LOG_FORMAT=json`.
//! On a terminal with a live progress line, each log line first clears it.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Set while a progress line occupies the bottom of the terminal.
pub static PROGRESS_LINE: AtomicBool = AtomicBool::new(false);

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

impl LogFormat {
    /// From `LOG_FORMAT`: `json`, or anything else (or nothing) for human.
    pub fn from_env() -> Self {
        match std::env::var("LOG_FORMAT").as_deref() {
            Ok("json") | Ok("JSON") => LogFormat::Json,
            _ => LogFormat::Human,
        }
    }
}

/// The filter without `RUST_LOG`: our `info`, none of the embedded broker's
/// lines (rumqttd logs every connection at info and ordinary disconnects as
/// errors; `RUST_LOG=info,rumqttd=info` shows them).
pub const DEFAULT_FILTER: &str = "info,rumqttd=off";

/// Installs the global subscriber; level from `RUST_LOG` (default
/// [`DEFAULT_FILTER`]).
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(StderrClearingProgress);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.with_ansi(io::stderr().is_terminal()).try_init(),
    };
}

/// Writes to stderr, clearing the progress line first when one is shown.
#[derive(Clone, Copy)]
pub struct StderrClearingProgress;

impl<'a> MakeWriter<'a> for StderrClearingProgress {
    type Writer = ClearingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        ClearingWriter { cleared: false }
    }
}

pub struct ClearingWriter {
    cleared: bool,
}

impl Write for ClearingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut err = io::stderr().lock();
        if !self.cleared && PROGRESS_LINE.load(Ordering::Relaxed) {
            err.write_all(b"\r\x1b[2K")?;
            self.cleared = true;
        }
        err.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
