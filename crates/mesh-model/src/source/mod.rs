//! Config sources: where objects come from (files now, the Kubernetes API later) and the
//! unit of change they push into the [`ConfigStore`](crate::ConfigStore).
//!
//! A source groups its objects in *units* (a file; for an API source, e.g. one object) and
//! sends each unit's complete current content; the store keeps the last good version of each
//! object and publishes one new snapshot per batch.

pub mod file;

use std::future::Future;
use std::sync::Arc;

use mesh_api::{Origin, Parsed};

use crate::store::ConfigStore;

/// One parsed document and where it came from.
#[derive(Debug)]
pub struct Doc {
    pub origin: Origin,
    pub parsed: Parsed,
}

/// A change to one unit.
#[derive(Debug)]
pub enum Update {
    /// The unit's current content replaces what it contributed before. With `complete` false
    /// (the unit could not be read whole: a YAML syntax error, a read error) objects it
    /// contributed before and that are absent now stay in force.
    Replace { unit: Arc<str>, docs: Vec<Doc>, complete: bool },
    /// The unit is gone (file deleted): its objects disappear.
    Remove { unit: Arc<str> },
}

/// Changes applied together: they produce exactly one new snapshot.
#[derive(Debug, Default)]
pub struct Batch {
    pub updates: Vec<Update>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty()
    }
}

impl From<Vec<Update>> for Batch {
    fn from(updates: Vec<Update>) -> Self {
        Batch { updates }
    }
}

/// Why a source stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: String,
        #[source]
        source: notify::Error,
    },
    /// The reload task panicked (a bug); the message is the panic's.
    #[error("reload task failed: {0}")]
    Reload(String),
}

/// A producer of objects: sends the full current content, then changes, into a store.
pub trait ConfigSource: Send {
    /// Feeds `store` until the source ends (a watching source runs until its future is
    /// dropped): first everything it currently has, then each change as one batch.
    fn run(self, store: Arc<ConfigStore>) -> impl Future<Output = Result<(), SourceError>> + Send;
}
