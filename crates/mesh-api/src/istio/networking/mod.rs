//! `networking.istio.io` (v1, v1beta1, v1alpha3 share one spec).

pub mod destination_rule;
pub mod envoy_filter;
pub mod gateway;
pub mod local_ratelimit;
pub mod rate_limit_patch;
pub mod service_entry;
pub mod sidecar;
pub mod virtual_service;

pub use destination_rule::*;
pub use envoy_filter::*;
pub use gateway::*;
pub use local_ratelimit::{
    AppendAction, Denominator, FractionalPercent, HeaderValueOption, LOCAL_RATELIMIT_FILTER, LocalRateLimit,
    PatchProblem, TokenBucket,
};
pub use rate_limit_patch::{RateLimitPatch, RateLimitScope, VhostName};
pub use service_entry::*;
pub use sidecar::*;
pub use virtual_service::*;
