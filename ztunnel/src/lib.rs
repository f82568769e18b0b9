//! ztunnel, the node proxy: carries the TCP traffic of the mesh pods on its node in HBONE
//! tunnels. This crate owns the listeners (outbound 15001, SOCKS5 15080, per-pod inbound HBONE
//! 15008 and plaintext 15006), the resolution and load balancing of destinations, L4 policy
//! enforcement, the admin/metrics/readiness servers and the drain. [`start`] wires it all from
//! a [`Config`]; `main.rs` only parses flags and waits for a signal.

pub mod admin;
pub mod capture;
pub mod config;
pub mod ctx;
pub mod drain;
pub mod lb;
pub mod orig_dst;
pub mod proxy;
pub mod workloads;

pub use config::{Config, ConfigError};
pub use ctx::{Ctx, StartError, Ztunnel, start};
pub use drain::{Drain, DrainOutcome, DrainWatch};
