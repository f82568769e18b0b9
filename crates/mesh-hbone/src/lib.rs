//! HBONE (HTTP-Based Overlay Network Environment), wire-compatible with Istio's ztunnel:
//! mutual TLS 1.3 with SPIFFE identities, ALPN `h2`, one HTTP/2 CONNECT stream per proxied TCP
//! connection. This crate owns the server (accepts CONNECTs, hands them to a
//! [`ConnectHandler`]), the client connection [`Pool`], and [`H2Stream`], the byte stream a
//! CONNECT tunnel becomes. ztunnel and the waypoint share it.
//!
//! Wire format (what Istio sends): `:method CONNECT`, `:authority <ip>:<port>` (IPv6 in
//! brackets), no `:scheme`/`:path`; `forwarded: for="<client ip>:<port>"`, `baggage`,
//! `traceparent` when known; a `200` response opens the tunnel.

mod connect;
mod error;
mod pool;
mod server;
mod stream;

pub use connect::{
    BAGGAGE, ConnectHead, ConnectParams, ConnectRequest, FORWARDED, TRACEPARENT, build_connect,
    forwarded_value, parse_connect, parse_forwarded_for,
};
pub use error::HboneError;
pub use pool::{
    ClientCerts, Dialer, ManagedCerts, Pool, PoolKey, PoolSettings, PoolStats, StaticCerts, TcpDialer,
};
pub use server::{ConnectHandler, HboneServer, Responder, ServerSettings, ServerTls};
pub use stream::H2Stream;

pub use mesh_api::SpiffeId;
