//! Process logging: a `tracing` subscriber writing JSON or text, behind a reloadable
//! `EnvFilter` so the admin's `/logging?level=...` changes levels at run time.
//!
//! [`init_logging`] installs it as the process-wide default (once per process);
//! [`logging_subscriber`] builds the same thing without installing it, for tests
//! (`tracing::subscriber::with_default`) or custom writers.

use std::io;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// The log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, event fields at the top level.
    Json,
    /// Human-readable text.
    #[default]
    Text,
}

/// Why logging could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log filter {filter:?}: {reason}")]
    InvalidFilter { filter: String, reason: String },
    #[error("a global logger is already installed in this process")]
    AlreadyInstalled,
    #[error("the logger this handle controls no longer exists")]
    SubscriberGone,
}

/// Changes the filter of a subscriber built by [`init_logging`] or [`logging_subscriber`].
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct LogHandle {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogHandle {
    /// Replaces the filter with `level`, an `EnvFilter` directive list such as `debug` or
    /// `info,access=debug,mesh_hbone=trace`. The old filter stays if `level` is invalid.
    pub fn set_level(&self, level: &str) -> Result<(), LogError> {
        let filter = parse_filter(level)?;
        self.handle.reload(filter).map_err(|_| LogError::SubscriberGone)
    }

    /// The filter in force, as directives (the form [`LogHandle::set_level`] takes).
    pub fn current_level(&self) -> String {
        self.handle.with_current(|f| f.to_string()).unwrap_or_default()
    }
}

fn parse_filter(filter: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::builder()
        .parse(filter.trim())
        .map_err(|e| LogError::InvalidFilter { filter: filter.to_string(), reason: e.to_string() })
}

/// Builds the subscriber (not installed) writing to `writer`, and its [`LogHandle`].
pub fn logging_subscriber<W>(
    format: LogFormat,
    default_filter: &str,
    writer: W,
) -> Result<(impl Subscriber + Send + Sync + 'static, LogHandle), LogError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (filter, handle) = reload::Layer::new(parse_filter(default_filter)?);
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(false).boxed(),
        LogFormat::Text => fmt.with_ansi(false).boxed(),
    };
    let subscriber = tracing_subscriber::registry().with(filter).with(fmt);
    Ok((subscriber, LogHandle { handle }))
}

/// Installs the process-wide logger writing to stderr, and forwards `log` crate records
/// (rustls logs through `log`) into it; a reload also moves `log`'s maximum level. Call once
/// per process; a second call fails with [`LogError::AlreadyInstalled`].
pub fn init_logging(format: LogFormat, default_filter: &str) -> Result<LogHandle, LogError> {
    let (subscriber, handle) = logging_subscriber(format, default_filter, io::stderr)?;
    subscriber.try_init().map_err(|_| LogError::AlreadyInstalled)?;
    Ok(handle)
}
