//! Checks of the HBONE CONNECT request handling (`mesh_hbone::parse_connect`,
//! `parse_forwarded_for`, `build_connect`, `forwarded_value`) on arbitrary requests.
//!
//! Input format of `hbone_connect` (lines split at `\n`, which no method, URI, header name
//! or header value may contain, so the format loses nothing):
//!
//! ```text
//! <method>          one digit 0-4 picks CONNECT, GET, POST, OPTIONS, PUT; else raw bytes
//! <uri>             raw bytes: `Uri::from_maybe_shared`; `@<bytes>`: authority only, built
//!                   as h2 builds a CONNECT's URI (`Uri::from_parts` with an `Authority`)
//! <name>:<value>    headers (any number), split at the first `:`
//! ```
//!
//! Inputs `http` itself rejects (method, URI) are skipped; invalid header lines are dropped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, Parts};
use http::{Method, Request, StatusCode, Uri};
use mesh_hbone::{
    BAGGAGE, ConnectHead, ConnectParams, FORWARDED, TRACEPARENT, build_connect, forwarded_value,
    parse_connect, parse_forwarded_for,
};

use crate::skipped;

const METHODS: [Method; 5] = [Method::CONNECT, Method::GET, Method::POST, Method::OPTIONS, Method::PUT];

/// Runs one `hbone_connect` input (see the module docs for its format).
pub fn check_connect_input(data: &[u8]) {
    // Arbitrary bytes as a `forwarded` value: must not panic.
    let _ = parse_forwarded_for(data);
    check_addr(addr_from(data));

    let mut lines = data.split(|&b| b == b'\n');
    let Some(method) = lines.next().and_then(method_from) else { return };
    let Some(uri) = uri_from(lines.next().unwrap_or_default()) else { return };
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_2;
    for line in lines {
        let _ = parse_forwarded_for(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(&line[colon + 1..]))
        else {
            continue;
        };
        req.headers_mut().append(name, value);
    }
    let _ = check_request(&req);
}

fn method_from(line: &[u8]) -> Option<Method> {
    match line {
        [d @ b'0'..=b'4'] => Some(METHODS[usize::from(d - b'0')].clone()),
        raw => Method::from_bytes(raw).ok(),
    }
}

fn uri_from(line: &[u8]) -> Option<Uri> {
    match line.strip_prefix(b"@") {
        Some(rest) => {
            let mut parts = Parts::default();
            parts.authority = Some(Authority::from_maybe_shared(Bytes::copy_from_slice(rest)).ok()?);
            Uri::from_parts(parts).ok()
        }
        None => Uri::from_maybe_shared(Bytes::copy_from_slice(line)).ok(),
    }
}

/// The invariants of `parse_connect` on one request (whatever its source: built from fuzz
/// input, or decoded by h2 from fuzzed frames). Returns the parse result.
pub fn check_request(req: &Request<()>) -> Result<ConnectHead, StatusCode> {
    let result = parse_connect(req);
    assert_eq!(parse_connect(req), result, "parse_connect is nondeterministic");
    for v in req.headers().get_all(FORWARDED) {
        if let Some(ip) = parse_forwarded_for(v.as_bytes()) {
            check_addr(SocketAddr::new(ip, 1));
        }
    }
    let is_connect = req.method() == Method::CONNECT;
    match &result {
        Err(StatusCode::METHOD_NOT_ALLOWED) => {
            assert!(!is_connect, "405 for a CONNECT: {req:?}");
        }
        Err(StatusCode::BAD_REQUEST) => {
            assert!(is_connect, "400 for a non-CONNECT {req:?}");
        }
        Err(other) => panic!("unexpected status {other} for {req:?}"),
        Ok(head) => {
            assert!(is_connect, "accepted a non-CONNECT: {req:?}");
            check_head(req, head);
        }
    }
    result
}

fn check_head(req: &Request<()>, head: &ConnectHead) {
    let uri = req.uri();
    assert!(uri.scheme().is_none(), "accepted a CONNECT with a scheme: {uri}");
    let authority = uri.authority().expect("accepted a CONNECT without authority");
    assert_eq!(authority.as_str().parse::<SocketAddr>().ok(), Some(head.authority), "authority changed");
    assert_ne!(head.authority.port(), 0, "accepted port 0: {uri}");
    assert!(!head.authority.ip().is_unspecified(), "accepted an unspecified IP: {uri}");
    // `::ffff:0.0.0.0` is 0.0.0.0 to a dual-stack socket (connect() to it reaches this host).
    if !skipped("connect-mapped-unspecified") {
        assert!(
            !head.authority.ip().to_canonical().is_unspecified(),
            "accepted an IPv4-mapped unspecified IP: {uri}"
        );
    }
    // A zone id picks the outbound interface; an HBONE authority is a plain `ip:port`.
    if let SocketAddr::V6(v6) = head.authority
        && !skipped("connect-scope-id")
    {
        assert_eq!(v6.scope_id(), 0, "accepted an IPv6 zone id: {uri}");
    }
    assert_eq!(head.baggage.as_ref(), req.headers().get(BAGGAGE), "baggage changed");
    assert_eq!(head.traceparent.as_ref(), req.headers().get(TRACEPARENT), "traceparent changed");
    assert_eq!(
        head.forwarded_for,
        req.headers().get(FORWARDED).and_then(|v| parse_forwarded_for(v.as_bytes())),
        "forwarded_for is not the first forwarded header's"
    );
    check_addr(head.authority);

    // What the client builds from the parsed head parses back to the same head.
    let params = ConnectParams {
        authority: head.authority,
        forwarded_for: head.forwarded_for.map(|ip| SocketAddr::new(ip, head.authority.port())),
        baggage: head.baggage.clone(),
        traceparent: head.traceparent.clone(),
    };
    let again = parse_connect(&build_connect(&params));
    assert_eq!(again.as_ref(), Ok(head), "build_connect → parse_connect round trip changed the head");
}

/// `forwarded_value` → `parse_forwarded_for` gives the IP back, and a CONNECT built for a
/// usable address (port not 0, IP specified, no IPv6 zone id) parses back to it.
fn check_addr(addr: SocketAddr) {
    let value = forwarded_value(addr);
    assert_eq!(parse_forwarded_for(value.as_bytes()), Some(addr.ip()), "forwarded {value:?} lost {addr}");
    let zoned = matches!(addr, SocketAddr::V6(v6) if v6.scope_id() != 0);
    if addr.port() == 0 || addr.ip().to_canonical().is_unspecified() || zoned {
        return;
    }
    let mut params = ConnectParams::new(addr);
    params.forwarded_for = Some(addr);
    let head = parse_connect(&build_connect(&params));
    let head = head.unwrap_or_else(|s| panic!("CONNECT built for {addr} refused with {s}"));
    assert_eq!(head.authority, addr, "built CONNECT changed the authority");
    assert_eq!(head.forwarded_for, Some(addr.ip()), "built CONNECT changed forwarded");
}

/// A socket address from the input's last bytes (covers v4, v6, v4-mapped, scope ids).
fn addr_from(data: &[u8]) -> SocketAddr {
    let mut b = [0u8; 26];
    let n = data.len().min(b.len());
    b[..n].copy_from_slice(&data[data.len() - n..]);
    let port = u16::from_be_bytes([b[0], b[1]]);
    match b[2] % 4 {
        0 => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(b[3], b[4], b[5], b[6])), port),
        1 => {
            let v4 = Ipv4Addr::new(b[3], b[4], b[5], b[6]);
            SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), port)
        }
        k => {
            let ip: [u8; 16] = b[3..19].try_into().expect("16 bytes");
            let scope = if k == 3 { u32::from_be_bytes(b[19..23].try_into().expect("4 bytes")) } else { 0 };
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, scope))
        }
    }
}
