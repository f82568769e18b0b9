//! The Kubernetes API as a config source: watches the kinds the model reads and feeds them,
//! as the same documents the file source parses, into the config store.
//!
//! - [`kinds`]: the API resource of each kind (CRD versions found by discovery).
//! - [`convert`]: an API object into the document `mesh_api::parse_object` takes, stripped of
//!   what the model does not read.
//! - [`events`]: watcher events into store batches (re-lists, deletes, no-op updates,
//!   coalescing), testable without a server.
//! - [`source`]: [`KubeSource`] (watchers, backoff, the batching loop, [`Readiness`]).
//! - [`rbac`]: the rules the source needs.
//! - [`config`]: the proxies' `source` setting and [`start_store`].
//!
//! **Units.** Each API object is its own store unit (`kube:<group>/<Kind>/<ns>/<name>`): a
//! unit's update carries its whole content, so one unit per kind would re-parse every pod on
//! every pod event; per object, an event re-parses one object, and a unit costs one map entry
//! in the store. What bounds the work is the batch: events are gathered for a short window
//! (30 ms) and applied as one batch, i.e. one translation and one snapshot however many pods
//! changed; updates that change nothing the model keeps (a pod's conditions) are dropped.
//!
//! **Memory.** kube-runtime reflector stores are not used: the config store already keeps the
//! last good parsed version of each object, so the source only keeps, per object, its unit
//! name and a content hash. Objects are pruned before parsing ([`convert::prune`]).
//! Measured (`cargo bench -p mesh-kube --bench memory`, 10,000 pods of the fixture's shape,
//! 4.5 KB of JSON each): about 6.4 KB per pod in the config store and model (the typed, pruned
//! `Pod` and its workload) plus 0.2 KB of source bookkeeping, against about 30 KB per pod that
//! a reflector store of whole `DynamicObject`s would hold on top.

pub mod config;
pub mod convert;
pub mod events;
pub mod kinds;
pub mod rbac;
pub mod source;

pub use config::{SourceConfig, SourceKind, StartError, client, start_store};
pub use events::{EventBatcher, Signal};
pub use rbac::{rbac_for_kinds, required_rbac};
pub use source::{KubeSource, KubeSourceOptions, Readiness, drive};
