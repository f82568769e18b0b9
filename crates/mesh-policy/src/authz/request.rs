//! What a policy is evaluated against: the [`Request`] attributes of one connection (L4) or
//! one HTTP request (L7, at the waypoint), borrowed from the caller so evaluation copies and
//! allocates nothing.

use std::fmt;
use std::net::IpAddr;

use mesh_api::SpiffeId;

/// One connection or request to authorize.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The peer's address (at ztunnel: the connecting client's IP).
    pub source_ip: IpAddr,
    /// The peer identity proven by mTLS; `None` for plaintext. Its namespace is the
    /// `source.namespace` policies match, as in Istio.
    pub source_principal: Option<&'a SpiffeId>,
    /// The original client IP (`remoteIpBlocks`, `remote.ip`); `None` means `source_ip`,
    /// which is what L4 always uses.
    pub remote_ip: Option<IpAddr>,
    /// The destination workload address the connection is for.
    pub destination_ip: IpAddr,
    /// The destination (target) port.
    pub destination_port: u16,
    /// HTTP attributes; `None` at L4, where rules that need them never match.
    pub l7: Option<&'a L7Attributes<'a>>,
}

impl<'a> Request<'a> {
    /// An L4 connection: no HTTP attributes, the remote IP is the source IP.
    pub fn l4(
        source_ip: IpAddr,
        source_principal: Option<&'a SpiffeId>,
        destination_ip: IpAddr,
        destination_port: u16,
    ) -> Self {
        Request { source_ip, source_principal, remote_ip: None, destination_ip, destination_port, l7: None }
    }

    pub(crate) fn remote(&self) -> IpAddr {
        self.remote_ip.unwrap_or(self.source_ip)
    }
}

/// HTTP-level attributes (the waypoint fills them; ztunnel never does).
#[derive(Debug, Clone, Copy)]
pub struct L7Attributes<'a> {
    /// `:authority` / `Host`, possibly with a port (matched with and without it).
    pub host: Option<&'a str>,
    /// `:method`.
    pub method: Option<&'a str>,
    /// `:path` with its query (the query is ignored by path matching).
    pub path: Option<&'a str>,
    /// Request headers (`request.headers[...]`).
    pub headers: &'a dyn HeaderLookup,
    /// The validated JWT's `iss/sub` (`requestPrincipals`, `request.auth.principal`).
    pub request_principal: Option<&'a str>,
    /// The validated JWT's `aud` values (`request.auth.audiences`).
    pub audiences: &'a [&'a str],
    /// The validated JWT's `azp` (`request.auth.presenter`).
    pub presenter: Option<&'a str>,
    /// The validated JWT's claims (`request.auth.claims[...]`).
    pub claims: &'a dyn ClaimLookup,
    /// TLS SNI of the downstream connection (`connection.sni`).
    pub sni: Option<&'a str>,
}

impl Default for L7Attributes<'_> {
    fn default() -> Self {
        L7Attributes {
            host: None,
            method: None,
            path: None,
            headers: &NoAttributes,
            request_principal: None,
            audiences: &[],
            presenter: None,
            claims: &NoAttributes,
            sni: None,
        }
    }
}

/// Header access without copying (implement it for the HTTP library's header map).
pub trait HeaderLookup: fmt::Debug {
    /// Calls `pred` on each value of header `name` (lower-case) until it returns true;
    /// returns whether one did (false when the header is absent).
    fn any_header(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool;
}

/// JWT claim access without copying.
pub trait ClaimLookup: fmt::Debug {
    /// Calls `pred` on the value of the claim at `path` (nested claim names, outermost first;
    /// each element of a list claim in turn) until it returns true; returns whether one did.
    fn any_claim(&self, path: &[Box<str>], pred: &mut dyn FnMut(&str) -> bool) -> bool;
}

/// No headers, no claims.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAttributes;

impl HeaderLookup for NoAttributes {
    fn any_header(&self, _: &str, _: &mut dyn FnMut(&str) -> bool) -> bool {
        false
    }
}

impl ClaimLookup for NoAttributes {
    fn any_claim(&self, _: &[Box<str>], _: &mut dyn FnMut(&str) -> bool) -> bool {
        false
    }
}

/// `(name, value)` pairs; names compared case-insensitively.
impl HeaderLookup for &[(&str, &str)] {
    fn any_header(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).any(|(_, v)| pred(v))
    }
}

impl<const N: usize> HeaderLookup for [(&str, &str); N] {
    fn any_header(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.as_slice().any_header(name, pred)
    }
}

/// `(path, values)` pairs, the path's names joined with `.` (`"groups"`, `"nested.key"`).
impl ClaimLookup for &[(&str, &[&str])] {
    fn any_claim(&self, path: &[Box<str>], pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.iter().filter(|(k, _)| dotted_eq(k, path)).any(|(_, vs)| vs.iter().any(|v| pred(v)))
    }
}

impl<const N: usize> ClaimLookup for [(&str, &[&str]); N] {
    fn any_claim(&self, path: &[Box<str>], pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.as_slice().any_claim(path, pred)
    }
}

fn dotted_eq(key: &str, path: &[Box<str>]) -> bool {
    let mut rest = key;
    for (i, p) in path.iter().enumerate() {
        let Some(r) = rest.strip_prefix(&**p) else { return false };
        rest = r;
        if i + 1 < path.len() {
            let Some(r) = rest.strip_prefix('.') else { return false };
            rest = r;
        }
    }
    rest.is_empty()
}
