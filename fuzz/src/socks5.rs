//! SOCKS5 (ztunnel's 15080 listener) as untrusted input: the greeting and request parsers
//! over arbitrary bytes.
//!
//! Checks: no panic; what is consumed fits in the input; parsing is incremental (every proper
//! prefix of a complete message asks for more bytes, and the message parses the same on its
//! own); a request encoded from a parsed address parses back to it; a domain that is a
//! literal IP comes back as an address.

use std::net::{IpAddr, SocketAddr};

use ztunnel::proxy::socks5::{Target, parse_greeting, parse_request};

/// Runs every check on one input: the first byte picks greeting (even) or request (odd), the
/// rest is the message.
pub fn check(data: &[u8]) {
    let Some((&pick, buf)) = data.split_first() else { return };
    if pick % 2 == 0 { check_greeting(buf) } else { check_request(buf) }
}

fn check_greeting(buf: &[u8]) {
    let Ok(Some(n)) = parse_greeting(buf) else { return };
    assert!(n <= buf.len(), "greeting consumed {n} of {} bytes", buf.len());
    for p in 0..n {
        assert!(
            matches!(parse_greeting(&buf[..p]), Ok(None)),
            "greeting prefix {p} of {n} did not ask for more"
        );
    }
    assert_eq!(parse_greeting(&buf[..n]).ok().flatten(), Some(n), "greeting not self-contained");
}

fn check_request(buf: &[u8]) {
    let Ok(Some((n, target))) = parse_request(buf) else { return };
    assert!(n <= buf.len(), "request consumed {n} of {} bytes", buf.len());
    for p in 0..n {
        assert!(
            matches!(parse_request(&buf[..p]), Ok(None)),
            "request prefix {p} of {n} did not ask for more"
        );
    }
    assert_eq!(
        parse_request(&buf[..n]).ok().flatten(),
        Some((n, target.clone())),
        "request not self-contained"
    );
    match &target {
        Target::Addr(addr) => {
            let again = parse_request(&encode_addr(*addr)).ok().flatten().map(|(_, t)| t);
            assert_eq!(again, Some(target.clone()), "address request did not round-trip");
        }
        Target::Domain(name, port) => {
            assert!(!name.is_empty(), "empty domain accepted");
            assert!(name.parse::<IpAddr>().is_err(), "literal IP {name:?} kept as a domain");
            let mut req = vec![5, 1, 0, 3, name.len() as u8];
            req.extend_from_slice(name.as_bytes());
            req.extend_from_slice(&port.to_be_bytes());
            let again = parse_request(&req).ok().flatten().map(|(_, t)| t);
            assert_eq!(again, Some(target.clone()), "domain request did not round-trip");
        }
    }
}

fn encode_addr(addr: SocketAddr) -> Vec<u8> {
    let mut req = vec![5, 1, 0];
    match addr.ip() {
        IpAddr::V4(ip) => {
            req.push(1);
            req.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            req.push(4);
            req.extend_from_slice(&ip.octets());
        }
    }
    req.extend_from_slice(&addr.port().to_be_bytes());
    req
}
