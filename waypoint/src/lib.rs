//! The waypoint, the mesh's L7 proxy (one per namespace): accepts HBONE from ztunnels, speaks
//! HTTP/1.1, HTTP/2 and gRPC inside the tunnel, routes with the users' VirtualServices and
//! HTTPRoutes ([`route`]), balances, breaks circuits and ejects outliers per DestinationRule
//! ([`upstream`]), authenticates JWTs and authorizes requests ([`security`]), limits rates
//! ([`ratelimit`]), and forwards over HBONE to the chosen endpoint's ztunnel.

pub mod admin;
pub mod config;
pub mod ctx;
pub mod proxy;
pub mod ratelimit;
pub mod route;
pub mod security;
pub mod trace;
pub mod upstream;
