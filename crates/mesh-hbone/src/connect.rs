//! The CONNECT request of HBONE: building it on the client and parsing it on the server
//! (`parse_connect` is a pure function so it can be fuzzed), and the `forwarded` header.

use std::net::{IpAddr, SocketAddr};

use http::header::HeaderName;
use http::{HeaderValue, Method, Request, StatusCode};
use mesh_api::SpiffeId;

/// `forwarded` (RFC 7239); Istio sends `for="<ip>:<port>"` of the original client.
pub const FORWARDED: HeaderName = http::header::FORWARDED;
/// W3C baggage; Istio puts the source workload's cluster, namespace, name and version there.
pub const BAGGAGE: HeaderName = HeaderName::from_static("baggage");
/// W3C trace context.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// What a client asks of one CONNECT stream.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    /// The `:authority`: original destination `ip:port` (pod, or the VIP when sent to a waypoint).
    pub authority: SocketAddr,
    /// The original client's address, sent as `forwarded: for="ip:port"` (Istio's format).
    pub forwarded_for: Option<SocketAddr>,
    /// Sent as the `baggage` header when set.
    pub baggage: Option<HeaderValue>,
    /// Sent as the `traceparent` header when set.
    pub traceparent: Option<HeaderValue>,
}

impl ConnectParams {
    /// A CONNECT to `authority` with no optional headers.
    pub fn new(authority: SocketAddr) -> Self {
        ConnectParams { authority, forwarded_for: None, baggage: None, traceparent: None }
    }
}

/// The parts of a CONNECT request that come from the request itself (see [`parse_connect`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectHead {
    /// The parsed `:authority` `ip:port`.
    pub authority: SocketAddr,
    /// The IP of `forwarded: for=`; `None` when absent or not an IP (obfuscated identifiers
    /// such as `for=unknown` are legal RFC 7239 and not an error).
    pub forwarded_for: Option<IpAddr>,
    pub baggage: Option<HeaderValue>,
    pub traceparent: Option<HeaderValue>,
}

/// One CONNECT request, as received by the server.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// The parsed `:authority` `ip:port`: where the client wants the tunnel to lead.
    pub authority: SocketAddr,
    /// The client's SPIFFE identity from its TLS certificate.
    pub peer_identity: SpiffeId,
    /// The TCP peer of the HBONE connection.
    pub peer_addr: SocketAddr,
    /// The TCP connection's local (destination) address; the handler checks that the
    /// authority's IP equals it where that is the policy.
    pub local_addr: SocketAddr,
    /// The IP of `forwarded: for=`, when present and an IP.
    pub forwarded_for: Option<IpAddr>,
    pub baggage: Option<HeaderValue>,
    pub traceparent: Option<HeaderValue>,
}

impl ConnectRequest {
    /// Whether the authority's IP is the address the TCP connection was made to (Istio's
    /// check that a tunnel leads to the workload it was addressed to). IPv4-mapped IPv6
    /// addresses compare equal to their IPv4 form.
    pub fn authority_is_local(&self) -> bool {
        canonical(self.authority.ip()) == canonical(self.local_addr.ip())
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Validates a received request as an HBONE CONNECT: `405` for another method, `400` for a
/// missing or malformed `:authority` (it must be `ip:port`, IPv6 in brackets, port not 0),
/// or for a `:protocol`-style CONNECT carrying a path.
pub fn parse_connect(req: &Request<()>) -> Result<ConnectHead, StatusCode> {
    if req.method() != Method::CONNECT {
        return Err(StatusCode::METHOD_NOT_ALLOWED);
    }
    let uri = req.uri();
    if uri.scheme().is_some() || uri.path_and_query().is_some_and(|p| !p.as_str().is_empty()) {
        return Err(StatusCode::BAD_REQUEST);
    }
    let authority = uri.authority().ok_or(StatusCode::BAD_REQUEST)?.as_str();
    let authority: SocketAddr = authority.parse().map_err(|_| StatusCode::BAD_REQUEST)?;
    // The unspecified address (also in its IPv4-mapped form) reaches this host itself; a zone
    // id would let the peer pick our outgoing interface. Neither names a workload.
    let zoned = matches!(authority, SocketAddr::V6(v6) if v6.scope_id() != 0);
    if authority.port() == 0 || canonical(authority.ip()).is_unspecified() || zoned {
        return Err(StatusCode::BAD_REQUEST);
    }
    let forwarded_for = req.headers().get(FORWARDED).and_then(|v| parse_forwarded_for(v.as_bytes()));
    Ok(ConnectHead {
        authority,
        forwarded_for,
        baggage: req.headers().get(BAGGAGE).cloned(),
        traceparent: req.headers().get(TRACEPARENT).cloned(),
    })
}

/// The IP of the first `for=` parameter of the first element of a `forwarded` value. Accepts
/// `for=1.2.3.4`, `for="1.2.3.4:5"`, `for="[2001:db8::1]"`, `for="[2001:db8::1]:5"` and
/// parameter names in any case; anything else gives `None`.
pub fn parse_forwarded_for(value: &[u8]) -> Option<IpAddr> {
    let value = std::str::from_utf8(value).ok()?;
    let first = value.split(',').next()?;
    let v = first.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })?;
    let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    v.strip_prefix('[').and_then(|v| v.strip_suffix(']')).and_then(|v| v.parse().ok())
}

/// The `forwarded` value Istio's ztunnel sends: `for="<ip>:<port>"` (quoted because `:` is not
/// a token character; IPv6 appears as `"[v6]:port"`).
pub fn forwarded_value(client: SocketAddr) -> HeaderValue {
    HeaderValue::try_from(format!("for=\"{client}\"")).expect("a socket address is a valid header value")
}

/// The CONNECT request for `params`: plain CONNECT (no `:scheme`/`:path`), HTTP/2.
pub fn build_connect(params: &ConnectParams) -> Request<()> {
    let uri = http::Uri::try_from(params.authority.to_string()).expect("ip:port is a valid authority");
    let mut req = Request::new(());
    *req.method_mut() = Method::CONNECT;
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_2;
    let h = req.headers_mut();
    if let Some(f) = params.forwarded_for {
        h.insert(FORWARDED, forwarded_value(f));
    }
    if let Some(b) = &params.baggage {
        h.insert(BAGGAGE, b.clone());
    }
    if let Some(t) = &params.traceparent {
        h.insert(TRACEPARENT, t.clone());
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, uri: &str) -> Request<()> {
        Request::builder().method(method).uri(uri).body(()).unwrap()
    }

    #[test]
    fn valid_connect_v4_and_v6() {
        let h = parse_connect(&req(Method::CONNECT, "10.1.2.3:8080")).unwrap();
        assert_eq!(h.authority, "10.1.2.3:8080".parse().unwrap());
        let h = parse_connect(&req(Method::CONNECT, "[2001:db8::1]:443")).unwrap();
        assert_eq!(h.authority, "[2001:db8::1]:443".parse().unwrap());
        assert_eq!(h.forwarded_for, None);
    }

    #[test]
    fn non_connect_is_405() {
        for m in [Method::GET, Method::POST, Method::PUT, Method::OPTIONS] {
            assert_eq!(parse_connect(&req(m, "10.1.2.3:80")), Err(StatusCode::METHOD_NOT_ALLOWED));
        }
    }

    #[test]
    fn bad_authority_is_400() {
        for a in [
            "example.com:80",
            "10.1.2.3",
            "10.1.2.3:0",
            "0.0.0.0:80",
            "[::]:80",
            "[::ffff:0.0.0.0]:80",
            "[fe80::1%2]:15008",
            "10.1.2.3:99999",
            "2001:db8::1:80",
            "http://10.1.2.3:80/",
            "10.1.2.3:80/x",
            "256.1.1.1:80",
        ] {
            let r = Request::builder().method(Method::CONNECT).uri(a).body(());
            if let Ok(r) = r {
                assert_eq!(parse_connect(&r), Err(StatusCode::BAD_REQUEST), "{a}");
            }
        }
        // CONNECT with no authority at all.
        assert_eq!(parse_connect(&req(Method::CONNECT, "/")), Err(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn forwarded_forms() {
        let cases: [(&str, Option<&str>); 9] = [
            ("for=1.2.3.4", Some("1.2.3.4")),
            ("for=\"1.2.3.4:5678\"", Some("1.2.3.4")),
            ("For=\"[2001:db8::1]\"", Some("2001:db8::1")),
            ("for=\"[2001:db8::1]:80\";host=x.svc", Some("2001:db8::1")),
            ("proto=https; for=9.9.9.9, for=8.8.8.8", Some("9.9.9.9")),
            ("for=unknown", None),
            ("for=_hidden", None),
            ("host=x", None),
            ("", None),
        ];
        for (v, want) in cases {
            let want = want.map(|w| w.parse::<IpAddr>().unwrap());
            assert_eq!(parse_forwarded_for(v.as_bytes()), want, "{v}");
        }
    }

    #[test]
    fn built_request_round_trips() {
        let mut p = ConnectParams::new("[2001:db8::2]:9080".parse().unwrap());
        p.forwarded_for = Some("[2001:db8::3]:40000".parse().unwrap());
        p.baggage = Some(HeaderValue::from_static("k8s.namespace.name=ns"));
        p.traceparent =
            Some(HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        let r = build_connect(&p);
        assert_eq!(r.headers()[FORWARDED], "for=\"[2001:db8::3]:40000\"");
        assert!(r.uri().scheme().is_none());
        let h = parse_connect(&r).unwrap();
        assert_eq!(h.authority, p.authority);
        assert_eq!(h.forwarded_for, Some("2001:db8::3".parse().unwrap()));
        assert_eq!(h.baggage, p.baggage);
        assert_eq!(h.traceparent, p.traceparent);
    }
}
