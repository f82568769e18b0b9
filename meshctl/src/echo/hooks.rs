//! The echo app's test hooks, driven by request headers, so the waypoint conformance suites
//! (`tests/conformance`) run unchanged against lab pods: `x-backend: <pod>` on every answer;
//! `x-fail-pod: p1,p2` makes those pods answer 500 (or `x-fail-status`); `x-fail-first: N`
//! answers 503 to the first N requests of a path (counted per `x-fail-scope` value, so each
//! test case counts afresh); `x-slow-pod: p1:ms,...` delays those pods; a gRPC request
//! (`content-type: application/grpc...`) is answered as gRPC with `grpc-status: 0`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

use super::route::{MAX_DELAY, Reply, RequestHead};

/// Requests seen per (`x-fail-scope`, path), for `x-fail-first`.
#[derive(Debug, Default)]
pub struct FailCounts {
    seen: Mutex<HashMap<(String, String), u32>>,
}

impl FailCounts {
    /// Counts this request; true while it is among the first `n` of its scope and path.
    fn fails(&self, scope: &str, path: &str, n: u32) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a long-running lab pod must not grow without limit.
        if seen.len() > 10_000 {
            seen.clear();
        }
        let c = seen.entry((scope.to_owned(), path.to_owned())).or_default();
        *c = c.saturating_add(1);
        *c <= n
    }
}

fn text<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Whether the request is gRPC (its answer then carries gRPC's content type and status).
pub fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Applies the hooks to a routed reply (a 400 from bad input is left alone).
pub fn apply(reply: &mut Reply, head: &RequestHead, pod: &str, counts: &FailCounts) {
    if let Ok(v) = HeaderValue::from_str(pod) {
        reply.headers.push((HeaderName::from_static("x-backend"), v));
    }
    if is_grpc(&head.headers) {
        reply.headers.push((header::CONTENT_TYPE, HeaderValue::from_static("application/grpc")));
        reply.headers.push((HeaderName::from_static("grpc-status"), HeaderValue::from_static("0")));
    }
    if reply.status == StatusCode::BAD_REQUEST && reply.body.contains_key("error") {
        return;
    }
    // `/prefix/status/NNN` answers NNN too, so routes with a path prefix can ask for statuses.
    let path = head.path.split('?').next().unwrap_or("");
    if !path.starts_with("/status/")
        && let Some((_, code)) = path.rsplit_once("/status/")
        && let Some(c) = code.parse::<u16>().ok().filter(|c| (200..=599).contains(c))
        && let Ok(status) = StatusCode::from_u16(c)
    {
        reply.status = status;
    }
    let h = &head.headers;
    if text(h, "x-fail-pod").split(',').any(|p| p.trim() == pod) {
        reply.status = text(h, "x-fail-status")
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }
    if let Ok(n) = text(h, "x-fail-first").parse::<u32>() {
        let path = head.path.split('?').next().unwrap_or("");
        if counts.fails(text(h, "x-fail-scope"), path, n) {
            reply.status = StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    let slow = text(h, "x-slow-pod")
        .split(',')
        .filter_map(|e| e.trim().split_once(':'))
        .find(|(p, _)| *p == pod)
        .and_then(|(_, ms)| ms.parse::<u64>().ok());
    if let Some(ms) = slow {
        reply.delay = (reply.delay + Duration::from_millis(ms)).min(MAX_DELAY);
    }
    reply.body.insert("status".into(), reply.status.as_u16().into());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::route::{Identity, route};
    use std::net::SocketAddr;

    fn head(path: &str, headers: &[(&str, &str)]) -> RequestHead {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        RequestHead {
            method: http::Method::GET,
            path: path.into(),
            host: "a".into(),
            headers: h,
            version: http::Version::HTTP_11,
            peer: a,
            local: a,
        }
    }

    fn reply(path: &str, headers: &[(&str, &str)], counts: &FailCounts) -> Reply {
        let id = Identity { pod: "a-v1".into(), namespace: "demo".into() };
        let h = head(path, headers);
        let mut r = route(&h, &id);
        apply(&mut r, &h, "a-v1", counts);
        r
    }

    #[test]
    fn backend_header_and_fail_pod() {
        let c = FailCounts::default();
        let r = reply("/", &[], &c);
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.headers.iter().any(|(k, v)| k == "x-backend" && v == "a-v1"));
        assert_eq!(reply("/", &[("x-fail-pod", "b-v1, a-v1")], &c).status, StatusCode::INTERNAL_SERVER_ERROR);
        let r = reply("/", &[("x-fail-pod", "a-v1"), ("x-fail-status", "502")], &c);
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert_eq!(reply("/", &[("x-fail-pod", "a-v2")], &c).status, StatusCode::OK);
        assert_eq!(reply("/gw/status/502?x=1", &[], &c).status, StatusCode::BAD_GATEWAY);
        assert_eq!(reply("/gw/status/abc", &[], &c).status, StatusCode::OK);
    }

    #[test]
    fn fail_first_counts_per_scope_and_path() {
        let c = FailCounts::default();
        let f = |path: &str, scope: &str| {
            reply(path, &[("x-fail-first", "2"), ("x-fail-scope", scope)], &c).status
        };
        assert_eq!(f("/x?q=1", "s1"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(f("/x", "s1"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(f("/x", "s1"), StatusCode::OK);
        assert_eq!(f("/y", "s1"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(f("/x", "s2"), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn slow_pod_and_grpc() {
        let c = FailCounts::default();
        let r = reply("/?delay=10ms", &[("x-slow-pod", "a-v2:500,a-v1:40")], &c);
        assert_eq!(r.delay, Duration::from_millis(50));
        let r = reply("/", &[("content-type", "application/grpc+proto")], &c);
        assert!(r.headers.iter().any(|(k, v)| k == "grpc-status" && v == "0"));
        assert!(r.headers.iter().any(|(k, v)| k == header::CONTENT_TYPE && v == "application/grpc"));
    }
}
