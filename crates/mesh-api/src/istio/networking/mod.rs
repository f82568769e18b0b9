//! `networking.istio.io` (v1, v1beta1, v1alpha3 share one spec).

pub mod destination_rule;
pub mod gateway;
pub mod service_entry;
pub mod sidecar;
pub mod virtual_service;

pub use destination_rule::*;
pub use gateway::*;
pub use service_entry::*;
pub use sidecar::*;
pub use virtual_service::*;
