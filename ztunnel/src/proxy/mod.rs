//! The data path: outbound (captured 15001 and SOCKS5), inbound HBONE and inbound plaintext,
//! and the relay they share.

pub mod copy;
pub mod inbound;
pub mod inbound_plaintext;
pub mod outbound;
pub mod socks5;
