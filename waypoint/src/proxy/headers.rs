//! Header handling of the request path, as Envoy does it for Istio: `x-request-id` (kept when
//! sane, generated otherwise), `Host`/`:authority`, hop-by-hop headers (never forwarded) and
//! `x-forwarded-for`/`-proto`.

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

use crate::proxy::http::Conn;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `x-request-id`: kept when the client sent a sane one, generated otherwise.
pub(crate) fn request_id(headers: &mut HeaderMap) -> String {
    if let Some(v) =
        headers.get(&REQUEST_ID).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty() && v.len() <= 128)
    {
        return v.to_string();
    }
    let id = new_uuid();
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID.clone(), v);
    }
    id
}

/// A random (version 4) UUID in its 36-character text form, hex-encoded by hand: this runs for
/// every request without an id, and `format!` costs several times more.
fn new_uuid() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[usize::from(byte >> 4)] as char);
        out.push(HEX[usize::from(byte & 0x0f)] as char);
    }
    out
}

/// The `Host` / `:authority` of the request.
pub(crate) fn authority_of(parts: &http::request::Parts) -> String {
    parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))
        .unwrap_or_default()
}

/// Why the request's `Host` cannot be trusted to name one authority, if it cannot: more than
/// one `Host` field line (RFC 9112 §3.2: answer 400), or, over HTTP/2, a `Host` that differs
/// from `:authority` (RFC 9113 §8.3.1: malformed). In HTTP/1.1 absolute form the target's
/// authority wins and `Host` is ignored (RFC 9112 §3.2.2), as [`authority_of`] does, so a
/// differing `Host` is not an error there. Allocation-free: called on every request.
pub(crate) fn host_problem(
    version: http::Version,
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Option<&'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next()?;
    if hosts.next().is_some() {
        return Some("more than one Host header");
    }
    if version == http::Version::HTTP_2
        && let Some(a) = uri.authority()
        && !host.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes())
    {
        return Some("Host differs from :authority");
    }
    None
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

fn is_hop_by_hop(n: &HeaderName) -> bool {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::TE,
        &header::PROXY_AUTHORIZATION,
    ]
    .contains(&n)
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) are the connection's, never forwarded.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none: one pass over the names instead of a removal per name.
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        header::CONNECTION,
        KEEP_ALIVE.clone(),
        PROXY_CONNECTION.clone(),
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        header::PROXY_AUTHORIZATION,
    ] {
        if n == header::TE {
            // `te: trailers` is meaningful end to end (gRPC).
            let trailers = h.get(&n).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
            if trailers {
                continue;
            }
        }
        h.remove(n);
    }
}

/// `x-forwarded-for` (appended with the client), `x-forwarded-proto`, as Envoy does for Istio.
pub(crate) fn add_forwarded(h: &mut HeaderMap, conn: &Conn) {
    let client = conn.client_ip_header();
    let xff = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => {
            HeaderValue::from_str(&format!("{prev}, {}", conn.remote_ip.unwrap_or(conn.peer_addr.ip()))).ok()
        }
        _ => Some(client),
    };
    if let Some(v) = xff {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !h.contains_key(&X_FORWARDED_PROTO) {
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped_but_te_trailers_kept() {
        let mut h = http::HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-end-to-end", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert!(
            h.get("x-private").is_none()
                && h.get("keep-alive").is_none()
                && h.get(header::CONNECTION).is_none()
        );
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("x-end-to-end").unwrap(), "yes");
    }

    #[test]
    fn request_ids_are_uuids() {
        let mut h = http::HeaderMap::new();
        let id = request_id(&mut h);
        assert_eq!(id.len(), 36);
        assert_eq!(h.get("x-request-id").unwrap(), id.as_str());
        assert_eq!(request_id(&mut h), id, "an existing id is kept");
    }

    fn parts(version: http::Version, uri: &str, hosts: &[&'static str]) -> http::request::Parts {
        let mut b = http::Request::get(uri).version(version);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn problem(p: &http::request::Parts) -> Option<&'static str> {
        host_problem(p.version, &p.uri, &p.headers)
    }

    #[test]
    fn one_host_is_fine_and_two_are_refused() {
        use http::Version;
        assert_eq!(problem(&parts(Version::HTTP_11, "/", &["web"])), None);
        assert_eq!(problem(&parts(Version::HTTP_11, "/", &[])), None, "no Host: the caller decides");
        assert_eq!(
            problem(&parts(Version::HTTP_11, "/", &["web", "web"])),
            Some("more than one Host header")
        );
        assert_eq!(
            problem(&parts(Version::HTTP_11, "/", &["web", "other"])),
            Some("more than one Host header")
        );
        assert_eq!(
            problem(&parts(Version::HTTP_2, "http://web/", &["a", "b"])),
            Some("more than one Host header")
        );
    }

    #[test]
    fn http2_host_must_match_authority() {
        use http::Version;
        assert_eq!(problem(&parts(Version::HTTP_2, "http://web:80/", &["Web:80"])), None);
        assert_eq!(problem(&parts(Version::HTTP_2, "http://web/", &[])), None);
        assert_eq!(
            problem(&parts(Version::HTTP_2, "http://web/", &["other"])),
            Some("Host differs from :authority")
        );
        // HTTP/1.1 absolute form: the target's authority is used and Host ignored.
        assert_eq!(problem(&parts(Version::HTTP_11, "http://web/", &["other"])), None);
    }
}
