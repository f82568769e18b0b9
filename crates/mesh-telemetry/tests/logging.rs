//! Run-time log level changes through `LogHandle` on a local subscriber.

mod common;

use common::Captured;
use mesh_telemetry::{LogError, LogFormat, logging_subscriber};

#[test]
fn set_level_changes_what_is_written() -> anyhow::Result<()> {
    let out = Captured::default();
    let (subscriber, handle) = logging_subscriber(LogFormat::Text, "info", out.clone())?;
    assert_eq!(handle.current_level(), "info");

    tracing::subscriber::with_default(subscriber, || -> anyhow::Result<()> {
        tracing::debug!("hidden-1");
        tracing::info!("shown-1");

        handle.set_level("debug")?;
        assert_eq!(handle.current_level(), "debug");
        tracing::debug!("shown-2");

        let err = handle.set_level("info,=[bad").unwrap_err();
        assert!(matches!(err, LogError::InvalidFilter { ref filter, .. } if filter == "info,=[bad"), "{err}");
        assert_eq!(handle.current_level(), "debug", "a bad filter leaves the old one");
        tracing::debug!("shown-3");

        handle.set_level("warn,access=info")?;
        tracing::info!("hidden-2");
        tracing::info!(target: "access", "shown-4");
        tracing::warn!("shown-5");
        Ok(())
    })?;

    let text = out.text();
    for shown in ["shown-1", "shown-2", "shown-3", "shown-4", "shown-5"] {
        assert!(text.contains(shown), "{shown} written: {text}");
    }
    for hidden in ["hidden-1", "hidden-2"] {
        assert!(!text.contains(hidden), "{hidden} filtered out: {text}");
    }
    Ok(())
}

#[test]
fn bad_default_filter_is_refused() {
    let err = logging_subscriber(LogFormat::Json, "info,=[bad", Captured::default()).err();
    assert!(matches!(err, Some(LogError::InvalidFilter { .. })), "{err:?}");
}
