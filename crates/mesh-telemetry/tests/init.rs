//! `init_logging` installs the process-wide logger once; its handle changes the global level.
//! (Its own test binary: it installs a global subscriber.)

use mesh_telemetry::{LogError, LogFormat, init_logging};
use tracing::level_filters::LevelFilter;

#[test]
fn installs_once_and_reloads_the_global_level() -> anyhow::Result<()> {
    let handle = init_logging(LogFormat::Json, "warn")?;
    assert_eq!(LevelFilter::current(), LevelFilter::WARN);
    assert!(!tracing::enabled!(tracing::Level::INFO));

    assert!(matches!(init_logging(LogFormat::Text, "info"), Err(LogError::AlreadyInstalled)));

    handle.set_level("debug")?;
    assert_eq!(handle.current_level(), "debug");
    assert_eq!(LevelFilter::current(), LevelFilter::DEBUG, "global max level follows the reload");
    assert!(tracing::enabled!(tracing::Level::DEBUG));
    // `log` records (rustls) follow the reloaded level too.
    assert_eq!(tracing_log::log::max_level(), tracing_log::log::LevelFilter::Debug);
    Ok(())
}
