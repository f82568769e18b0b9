//! The echo app's pure logic, no sockets: classifying a connection from its first bytes,
//! turning a request head into the reply (JSON body, `/status/NNN`, `?delay=`, `?size=`,
//! `x-echo-set-header`), duration parsing and the log line format. Unit-tested here.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use serde_json::{Map, Value};

/// The HTTP/2 prior-knowledge connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest method token accepted as an HTTP/1 request line start; longer → raw TCP.
const MAX_METHOD_LEN: usize = 20;
/// Largest `?size=` honoured (bytes): the benchmarks ask for 1 KiB, nobody needs more than this.
pub const MAX_SIZE: usize = 1 << 20;
/// Longest `?delay=` honoured, so a typo cannot park a connection for days.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Request header listing response headers to add: `Name:value,Name2:value2`.
pub const SET_HEADER: &str = "x-echo-set-header";

/// Who this echo app is (from `--pod`/`--namespace`); reported in every answer and log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Pod name.
    pub pod: String,
    /// Pod namespace.
    pub namespace: String,
}

/// What a connection's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// Not decidable yet: wait for more bytes (or EOF, which makes it raw).
    NeedMore,
    /// HTTP/2 with prior knowledge (the full preface arrived).
    Http2,
    /// An HTTP/1.x request line (uppercase method token then a space).
    Http1,
    /// Anything else: raw TCP echo.
    Raw,
}

/// Classifies a connection from the bytes received so far.
pub fn sniff(prefix: &[u8]) -> Sniff {
    if prefix.is_empty() {
        return Sniff::NeedMore;
    }
    let n = prefix.len().min(H2_PREFACE.len());
    if prefix[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() { Sniff::Http2 } else { Sniff::NeedMore };
    }
    let method_len = prefix.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if method_len > MAX_METHOD_LEN {
        Sniff::Raw
    } else if method_len == prefix.len() {
        Sniff::NeedMore
    } else if method_len > 0 && prefix[method_len] == b' ' {
        Sniff::Http1
    } else {
        Sniff::Raw
    }
}

/// What routing needs to know about one request: its head (the body is counted afterwards).
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Request method.
    pub method: Method,
    /// Path and query exactly as received (`*` for `OPTIONS *`).
    pub path: String,
    /// `Host` header, else the `:authority` (or absolute-URI authority), else empty.
    pub host: String,
    /// Request headers (names lowercase; HTTP/2 pseudo-headers are not in here).
    pub headers: HeaderMap,
    /// Protocol version the request came with.
    pub version: Version,
    /// Client address as the app's accepted socket sees it (getpeername).
    pub peer: SocketAddr,
    /// Local address of the accepted socket (getsockname).
    pub local: SocketAddr,
}

impl RequestHead {
    /// Builds the head from a request's parts plus the socket's addresses.
    pub fn from_parts(parts: &http::request::Parts, peer: SocketAddr, local: SocketAddr) -> Self {
        let uri = &parts.uri;
        let path = match uri.path_and_query() {
            Some(pq) => pq.as_str().to_owned(),
            None => uri.to_string(),
        };
        let host = match parts.headers.get(header::HOST) {
            Some(h) => String::from_utf8_lossy(h.as_bytes()).into_owned(),
            None => uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_default(),
        };
        RequestHead {
            method: parts.method.clone(),
            path,
            host,
            headers: parts.headers.clone(),
            version: parts.version,
            peer,
            local,
        }
    }
}

/// `proto` as reported in the JSON: `HTTP/1.1`, `HTTP/2.0`, ...
pub fn proto_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Why a request gets a 400 instead of the echo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// `/status/` followed by something that is not a three-digit code in 100..=599.
    #[error("path {path:?}: /status/NNN needs a status code in 100..=599")]
    BadStatus {
        /// Path as received.
        path: String,
    },
    /// A 1xx code: valid, but HTTP servers cannot send it as the final answer.
    #[error("path {path:?}: status {code} is informational (1xx) and cannot be a final response")]
    InformationalStatus {
        /// Path as received.
        path: String,
        /// The requested code.
        code: u16,
    },
    /// `?delay=` that is not a duration or is too long.
    #[error("query parameter delay={value:?}: {reason}")]
    BadDelay {
        /// The parameter's value.
        value: String,
        /// What is wrong with it.
        reason: DurationError,
    },
    /// `?size=` that is not a byte count up to [`MAX_SIZE`].
    #[error("query parameter size={value:?}: want a byte count up to {MAX_SIZE}")]
    BadSize {
        /// The parameter's value.
        value: String,
    },
    /// An `x-echo-set-header` entry that cannot become a response header.
    #[error("header x-echo-set-header entry {entry:?}: {reason}")]
    BadSetHeader {
        /// The offending `Name:value` entry (or the whole header when not text).
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Why a duration string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty string.
    #[error("empty duration")]
    Empty,
    /// A character where a number was expected.
    #[error("expected a number at {0:?}")]
    ExpectedNumber(String),
    /// A number without unit (other than a bare `0`).
    #[error("missing unit after {0:?} (use ns, us, ms, s, m or h)")]
    MissingUnit(String),
    /// A unit that is not one of ns, us, µs, ms, s, m, h.
    #[error("unknown unit {0:?} (use ns, us, ms, s, m or h)")]
    UnknownUnit(String),
    /// Longer than [`MAX_DELAY`].
    #[error("longer than the maximum of 1h")]
    TooLong,
}

/// Parses a Go-style duration: `250ms`, `2s`, `1.5s`, `1m30s`, `0`; units ns, us/µs, ms,
/// s, m, h; decimals allowed; no sign. At most [`MAX_DELAY`].
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let max_nanos = MAX_DELAY.as_nanos();
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after) = rest.split_at(int_len);
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(a) => a.split_at(a.bytes().take_while(u8::is_ascii_digit).count()),
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(DurationError::ExpectedNumber(rest.to_owned()));
        }
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "" => return Err(DurationError::MissingUnit(rest[..rest.len() - after.len()].to_owned())),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => return Err(DurationError::UnknownUnit(other.to_owned())),
        };
        // Digits past what can matter are dropped so the arithmetic cannot overflow.
        let int: u128 = if int_digits.len() > 20 {
            return Err(DurationError::TooLong);
        } else {
            int_digits.parse().unwrap_or(0)
        };
        let frac_digits = &frac_digits[..frac_digits.len().min(18)];
        let frac: u128 = frac_digits.parse().unwrap_or(0);
        let frac_nanos = frac * scale / 10u128.pow(frac_digits.len() as u32);
        total = total.saturating_add(int.saturating_mul(scale)).saturating_add(frac_nanos);
        if total > max_nanos {
            return Err(DurationError::TooLong);
        }
        rest = after;
    }
    Ok(Duration::from_nanos(total as u64))
}

/// The answer to a request, decided from its head alone.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Response status.
    pub status: StatusCode,
    /// Response headers added by `x-echo-set-header`, in request order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Wait before answering, counted from the arrival of the request head (`?delay=`).
    pub delay: Duration,
    /// JSON object answered and logged; the server adds `bodyBytes` once the body is read.
    pub body: Map<String, Value>,
    /// Pad the answered JSON to this many bytes (`?size=`; the benchmarks' fixed-size bodies).
    pub size: Option<usize>,
}

/// Routes one request: the echo JSON, with status, delay and headers from the request;
/// any invalid input gives a 400 whose JSON carries the echo fields plus `"error"`.
pub fn route(head: &RequestHead, id: &Identity) -> Reply {
    let mut body = echo_json(head, id);
    match decide(head) {
        Ok((status, delay, headers, size)) => Reply { status, headers, delay, body, size },
        Err(e) => {
            body.insert("error".into(), Value::String(e.to_string()));
            Reply {
                status: StatusCode::BAD_REQUEST,
                headers: Vec::new(),
                delay: Duration::ZERO,
                body,
                size: None,
            }
        }
    }
}

type Decision = (StatusCode, Duration, Vec<(HeaderName, HeaderValue)>, Option<usize>);

fn decide(head: &RequestHead) -> Result<Decision, RouteError> {
    let (path, query) = match head.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (head.path.as_str(), None),
    };
    let status = match path.strip_prefix("/status/") {
        Some(code) => parse_status(code, &head.path)?,
        None => StatusCode::OK,
    };
    let delay_param = query.into_iter().flat_map(|q| q.split('&')).find_map(|kv| kv.strip_prefix("delay="));
    let delay = match delay_param {
        Some(v) => {
            parse_duration(v).map_err(|reason| RouteError::BadDelay { value: v.to_owned(), reason })?
        }
        None => Duration::ZERO,
    };
    let size = match query.into_iter().flat_map(|q| q.split('&')).find_map(|kv| kv.strip_prefix("size=")) {
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_SIZE => Some(n),
            _ => return Err(RouteError::BadSize { value: v.to_owned() }),
        },
        None => None,
    };
    let headers = parse_set_headers(&head.headers)?;
    Ok((status, delay, headers, size))
}

fn parse_status(code: &str, path: &str) -> Result<StatusCode, RouteError> {
    let bad = || RouteError::BadStatus { path: path.to_owned() };
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u16 = code.parse().map_err(|_| bad())?;
    if !(100..=599).contains(&n) {
        return Err(bad());
    }
    if n < 200 {
        return Err(RouteError::InformationalStatus { path: path.to_owned(), code: n });
    }
    StatusCode::from_u16(n).map_err(|_| bad())
}

/// Headers the echo refuses to set: they frame the message or the connection, and setting
/// them would break HTTP/1.1 framing or be a protocol error on HTTP/2.
const RESERVED: &[&str] =
    &["connection", "content-length", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade"];

/// Parses every `x-echo-set-header` value: comma-separated `Name:value` entries.
pub fn parse_set_headers(headers: &HeaderMap) -> Result<Vec<(HeaderName, HeaderValue)>, RouteError> {
    let mut out = Vec::new();
    for raw in headers.get_all(SET_HEADER) {
        let text = raw.to_str().map_err(|_| RouteError::BadSetHeader {
            entry: String::from_utf8_lossy(raw.as_bytes()).into_owned(),
            reason: "not visible ASCII text",
        })?;
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |reason| RouteError::BadSetHeader { entry: entry.to_owned(), reason };
            let (name, value) = entry.split_once(':').ok_or_else(|| bad("expected Name:value"))?;
            let name =
                HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad("invalid header name"))?;
            if RESERVED.contains(&name.as_str()) {
                return Err(bad("this header frames the message and cannot be set"));
            }
            let value = HeaderValue::from_str(value.trim()).map_err(|_| bad("invalid header value"))?;
            out.push((name, value));
        }
    }
    Ok(out)
}

/// The answered body: the JSON and a newline, padded with a `"pad"` string to `size` bytes
/// when that is more than the JSON needs (exactly `size` bytes then).
pub fn payload(body: Map<String, Value>, size: Option<usize>) -> String {
    let mut s = Value::Object(body).to_string();
    // `,"pad":""` and the newline: what the pad field costs before its characters.
    const PAD_OVERHEAD: usize = 10;
    if let Some(want) = size
        && want >= s.len() + PAD_OVERHEAD
    {
        s.pop();
        s.push_str(if s.len() > 1 { ",\"pad\":\"" } else { "\"pad\":\"" });
        let n = want - s.len() - 3;
        s.extend(std::iter::repeat_n('x', n));
        s.push_str("\"}");
    }
    s.push('\n');
    s
}

/// The echo JSON of a request (without `bodyBytes`).
pub fn echo_json(head: &RequestHead, id: &Identity) -> Map<String, Value> {
    let mut headers = Map::new();
    for name in head.headers.keys() {
        let values = head
            .headers
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        headers.insert(name.as_str().to_owned(), Value::Array(values));
    }
    let mut m = Map::new();
    m.insert("method".into(), head.method.as_str().into());
    m.insert("path".into(), head.path.clone().into());
    m.insert("host".into(), head.host.clone().into());
    m.insert("headers".into(), Value::Object(headers));
    m.insert("proto".into(), proto_name(head.version).into());
    m.insert("pod".into(), id.pod.clone().into());
    m.insert("namespace".into(), id.namespace.clone().into());
    m.insert("peer".into(), head.peer.to_string().into());
    m.insert("local".into(), head.local.to_string().into());
    m
}

/// The stdout log line of an HTTP request (no trailing newline): the reply JSON plus
/// `"kind":"http"`, `"ts"` and the `"status"` it will be answered with.
pub fn http_log_line(reply: &Reply, now: SystemTime) -> String {
    let mut m = reply.body.clone();
    m.insert("kind".into(), "http".into());
    m.insert("ts".into(), rfc3339(now).into());
    m.insert("status".into(), reply.status.as_u16().into());
    Value::Object(m).to_string()
}

/// Byte counts of one raw TCP echo connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawStats {
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Bytes written back.
    pub bytes_out: u64,
}

/// The stdout log line of a finished raw TCP connection (no trailing newline).
pub fn tcp_log_line(
    id: &Identity,
    peer: SocketAddr,
    local: SocketAddr,
    stats: RawStats,
    now: SystemTime,
) -> String {
    serde_json::json!({
        "kind": "tcp",
        "ts": rfc3339(now),
        "peer": peer.to_string(),
        "local": local.to_string(),
        "pod": id.pod,
        "namespace": id.namespace,
        "bytesIn": stats.bytes_in,
        "bytesOut": stats.bytes_out,
    })
    .to_string()
}

/// UTC timestamp `YYYY-MM-DDTHH:MM:SS.mmmZ` (civil-from-days, proleptic Gregorian).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let sod = secs % 86_400;
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity { pod: "web-1".into(), namespace: "shop".into() }
    }

    fn head(path: &str, headers: &[(&str, &str)]) -> RequestHead {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        RequestHead {
            method: Method::GET,
            path: path.into(),
            host: "web.shop:8080".into(),
            headers: map,
            version: Version::HTTP_11,
            peer: "10.0.0.7:40000".parse().unwrap(),
            local: "10.0.0.9:8080".parse().unwrap(),
        }
    }

    #[test]
    fn sniff_classifies_prefixes() {
        assert_eq!(sniff(b""), Sniff::NeedMore);
        assert_eq!(sniff(b"PRI * HTTP/2"), Sniff::NeedMore);
        assert_eq!(sniff(H2_PREFACE), Sniff::Http2);
        assert_eq!(sniff(b"G"), Sniff::NeedMore);
        assert_eq!(sniff(b"GET"), Sniff::NeedMore);
        assert_eq!(sniff(b"GET "), Sniff::Http1);
        assert_eq!(sniff(b"POST /x HTTP/1.1\r\n"), Sniff::Http1);
        assert_eq!(sniff(b"PRI /x HTTP/1.1\r\n"), Sniff::Http1);
        assert_eq!(sniff(b"hello"), Sniff::Raw);
        assert_eq!(sniff(b"HELLO\n"), Sniff::Raw);
        assert_eq!(sniff(b" GET"), Sniff::Raw);
        assert_eq!(sniff(b"\x16\x03\x01"), Sniff::Raw);
        assert_eq!(sniff(&[b'A'; 21]), Sniff::Raw);
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("250"), Err(DurationError::MissingUnit("250".into())));
        assert_eq!(parse_duration("2x"), Err(DurationError::UnknownUnit("x".into())));
        assert_eq!(parse_duration("-1s"), Err(DurationError::ExpectedNumber("-1s".into())));
        assert_eq!(parse_duration("s"), Err(DurationError::ExpectedNumber("s".into())));
        assert_eq!(parse_duration("."), Err(DurationError::ExpectedNumber(".".into())));
        assert_eq!(parse_duration("2h"), Err(DurationError::TooLong));
        assert_eq!(parse_duration("99999999999999999999999h"), Err(DurationError::TooLong));
    }

    #[test]
    fn plain_request_echoes_its_head() {
        let r = route(&head("/a/b?x=1&y", &[("accept", "*/*"), ("x-multi", "1"), ("x-multi", "2")]), &id());
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.delay, Duration::ZERO);
        assert!(r.headers.is_empty());
        let v = Value::Object(r.body);
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/a/b?x=1&y");
        assert_eq!(v["host"], "web.shop:8080");
        assert_eq!(v["proto"], "HTTP/1.1");
        assert_eq!(v["pod"], "web-1");
        assert_eq!(v["namespace"], "shop");
        assert_eq!(v["peer"], "10.0.0.7:40000");
        assert_eq!(v["local"], "10.0.0.9:8080");
        assert_eq!(v["headers"]["x-multi"], serde_json::json!(["1", "2"]));
        assert_eq!(v["headers"]["accept"], serde_json::json!(["*/*"]));
        assert!(v.get("error").is_none());
    }

    #[test]
    fn status_paths() {
        assert_eq!(route(&head("/status/503", &[]), &id()).status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(route(&head("/status/204?delay=1ms", &[]), &id()).status, StatusCode::NO_CONTENT);
        assert_eq!(route(&head("/status/599", &[]), &id()).status.as_u16(), 599);
        for bad in ["/status/600", "/status/99", "/status/abc", "/status/", "/status/2000", "/status/200/x"] {
            let r = route(&head(bad, &[]), &id());
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(r.body["error"].as_str().unwrap().contains("100..=599"), "{bad}");
            assert_eq!(r.body["path"], bad);
        }
        let r = route(&head("/status/100", &[]), &id());
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.body["error"].as_str().unwrap().contains("informational"));
        // Not the status route: /status alone and /statusx are plain echoes.
        assert_eq!(route(&head("/status", &[]), &id()).status, StatusCode::OK);
        assert_eq!(route(&head("/statusx/500", &[]), &id()).status, StatusCode::OK);
    }

    #[test]
    fn size_parameter_pads_the_answer_exactly() {
        let r = route(&head("/bench?size=1024", &[]), &id());
        assert_eq!(r.size, Some(1024));
        let out = payload(r.body.clone(), r.size);
        assert_eq!(out.len(), 1024);
        let v: Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["path"], "/bench?size=1024");
        assert!(v["pad"].as_str().unwrap().bytes().all(|b| b == b'x'));
        // Smaller than the JSON itself: unpadded.
        let small = payload(r.body.clone(), Some(10));
        assert!(small.len() > 10 && !small.contains("\"pad\""));
        assert_eq!(payload(Map::new(), Some(64)).len(), 64);
        for bad in ["/?size=big", "/?size=-1", "/?size=2000000"] {
            let r = route(&head(bad, &[]), &id());
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(r.body["error"].as_str().unwrap().contains("size="), "{bad}");
        }
    }

    #[test]
    fn delay_parameter() {
        assert_eq!(route(&head("/?delay=250ms", &[]), &id()).delay, Duration::from_millis(250));
        assert_eq!(route(&head("/x?a=1&delay=1.5s&b", &[]), &id()).delay, Duration::from_millis(1500));
        let r = route(&head("/?delay=soon", &[]), &id());
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.delay, Duration::ZERO);
        assert!(r.body["error"].as_str().unwrap().contains("delay=\"soon\""));
        assert_eq!(route(&head("/?delay=", &[]), &id()).status, StatusCode::BAD_REQUEST);
        // Only the exact key counts.
        assert_eq!(route(&head("/?nodelay=xx", &[]), &id()).status, StatusCode::OK);
    }

    #[test]
    fn set_header() {
        let r = route(&head("/", &[(SET_HEADER, "X-A: 1, x-b:two words,"), (SET_HEADER, "x-c:")]), &id());
        assert_eq!(r.status, StatusCode::OK);
        let got: Vec<(String, String)> =
            r.headers.iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned())).collect();
        assert_eq!(
            got,
            [("x-a".into(), "1".into()), ("x-b".into(), "two words".into()), ("x-c".into(), String::new())]
        );
        for bad in ["novalue", "bad name:1", ":x", "content-length:5", "Transfer-Encoding:chunked"] {
            let r = route(&head("/", &[(SET_HEADER, bad)]), &id());
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(r.headers.is_empty());
            assert!(r.body["error"].as_str().unwrap().contains("x-echo-set-header"), "{bad}");
        }
    }

    #[test]
    fn log_lines() {
        let r = route(&head("/status/418", &[]), &id());
        let line = http_log_line(&r, UNIX_EPOCH + Duration::from_millis(1_732_248_552_123));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["kind"], "http");
        assert_eq!(v["status"], 418);
        assert_eq!(v["ts"], "2024-11-22T04:09:12.123Z");
        assert_eq!(v["path"], "/status/418");
        assert_eq!(v["peer"], "10.0.0.7:40000");
        assert!(!line.contains('\n'));
        let stats = RawStats { bytes_in: 5, bytes_out: 5 };
        let t =
            tcp_log_line(&id(), "1.2.3.4:5".parse().unwrap(), "[::1]:80".parse().unwrap(), stats, UNIX_EPOCH);
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["kind"], "tcp");
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["local"], "[::1]:80");
        assert_eq!(v["bytesIn"], 5);
        assert_eq!(v["pod"], "web-1");
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(4_107_542_399)), "2100-02-28T23:59:59.000Z");
    }
}
