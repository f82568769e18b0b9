//! The translated mesh model and where it comes from: an immutable [`Model`] snapshot
//! (workloads, services, policies, routes) built by [`translate`], the [`ConfigStore`] that
//! swaps it atomically and keeps the last good version of every object, the [`ConfigSource`]
//! trait and the file source.

pub mod config;
mod intern;
pub mod model;
pub mod policy;
pub mod service;
pub mod source;
pub mod store;
mod translate;
pub mod workload;

pub use config::MeshConfig;
pub use intern::Labels;
pub use model::{Model, Sourced};
pub use policy::{ParentKey, Policy, PolicyKind, PolicyScope, TargetRef};
pub use service::{DnsEndpoint, Endpoint, EndpointsFrom, Service, ServicePort, ServiceSource, TargetPort};
pub use source::file::{FileSource, Loaded, load_paths, watched_store};
pub use source::{Batch, ConfigSource, Doc, SourceError, Update};
pub use store::{ConfigStore, IgnoredObject, ModelHandle};
pub use translate::translate;
pub use workload::{ContainerPort, NamespaceInfo, PodPhase, Protocol, WaypointFor, WaypointRef, Workload};
