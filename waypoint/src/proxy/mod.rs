//! The waypoint's data path: the HBONE listener and protocol choice ([`inbound`]), the HTTP
//! request path ([`http`], its header handling in [`headers`]), L4 forwarding ([`l4`]), the
//! optional plaintext HTTP listener ([`plain`]), downstream HTTP/2 write coalescing
//! ([`coalesce`]), the upstream connector and clients ([`upstream`]) and the pooled HTTP/1.1
//! upstream connections ([`pool`]).

pub mod coalesce;
pub mod headers;
pub mod http;
pub mod inbound;
pub mod l4;
pub mod plain;
pub mod pool;
pub mod rewind;
pub mod upstream;
