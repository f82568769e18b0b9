//! The waypoint's data path: the HBONE listener and protocol choice ([`inbound`]), the HTTP
//! request path ([`http`]), L4 forwarding ([`l4`]), the optional plaintext HTTP listener
//! ([`plain`]) and the upstream clients ([`upstream`]).

pub mod http;
pub mod inbound;
pub mod l4;
pub mod plain;
pub mod rewind;
pub mod upstream;
