//! Compiled request matchers (Istio `HTTPMatchRequest`, Gateway API `HTTPRouteMatch` and
//! `GRPCRouteMatch`, Istio `L4MatchAttributes`) and the request view they read.

use std::borrow::Cow;
use std::sync::Arc;

use http::HeaderName;
use mesh_api::StringMatch;
use mesh_model::{Labels, Workload};

/// What routing needs of a request (the proxy core builds it from `http::request::Parts`).
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub method: &'a http::Method,
    /// Path and query as received (absolute form for HTTP/2 is fine).
    pub uri: &'a http::Uri,
    /// `Host` / `:authority` as received (may carry a port).
    pub authority: &'a str,
    pub headers: &'a http::HeaderMap,
    /// The Service port the request was sent to.
    pub port: u16,
    /// The calling workload, when known.
    pub source: Option<&'a Workload>,
}

impl RequestInfo<'_> {
    /// The request path (without query); `/` when empty.
    pub fn path(&self) -> &str {
        let p = self.uri.path();
        if p.is_empty() { "/" } else { p }
    }

    fn scheme(&self) -> &str {
        self.uri.scheme_str().unwrap_or("http")
    }
}

/// How the path of the matched entry matched; rewrite and redirect use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedPath {
    /// No path condition (Envoy's prefix `/`).
    None,
    /// Exact path match: the whole path.
    Exact,
    /// Prefix match; the matched prefix is `path[..len]`.
    Prefix(usize),
    /// Regex match: the whole path.
    Regex,
}

/// A compiled string match (regexes are anchored, RE2 syntax).
#[derive(Debug, Clone)]
pub(crate) enum StrMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    Regex(regex::Regex),
    Any,
}

impl StrMatch {
    /// From an Istio `StringMatch`; the error is the regex compile error.
    pub(crate) fn istio(m: &StringMatch) -> Result<Self, String> {
        Ok(match m {
            StringMatch::Exact(e) => StrMatch::Exact(e.as_str().into()),
            StringMatch::Prefix(p) => StrMatch::Prefix(p.as_str().into()),
            StringMatch::Regex(r) => StrMatch::Regex(r.compiled().map_err(str::to_string)?.clone()),
            StringMatch::Any => StrMatch::Any,
        })
    }

    /// An anchored regex from a pattern.
    pub(crate) fn regex(pattern: &str) -> Result<Self, String> {
        full_regex(pattern).map(StrMatch::Regex)
    }

    pub(crate) fn matches(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => **e == *v,
            StrMatch::Prefix(p) => v.starts_with(&**p),
            StrMatch::Regex(r) => r.is_match(v),
            StrMatch::Any => true,
        }
    }
}

/// Compiles `pattern` to match whole inputs only; the error is one line.
pub(crate) fn full_regex(pattern: &str) -> Result<regex::Regex, String> {
    mesh_api::Regex::new(pattern).compiled().cloned().map_err(str::to_string)
}

/// A path condition.
#[derive(Debug, Clone)]
pub(crate) enum PathMatch {
    /// Istio `uri.exact` / Gateway `Exact`.
    Exact(Box<str>),
    /// Istio `uri.prefix`: plain string prefix.
    Prefix(Box<str>),
    /// Gateway `PathPrefix`, trailing `/` trimmed: matches whole path segments only.
    Segments(Box<str>),
    Regex(regex::Regex),
}

impl PathMatch {
    fn check(&self, path: &str, ignore_case: bool) -> Option<MatchedPath> {
        match self {
            PathMatch::Exact(e) => {
                let ok = if ignore_case { e.eq_ignore_ascii_case(path) } else { **e == *path };
                ok.then_some(MatchedPath::Exact)
            }
            PathMatch::Prefix(p) => {
                let head = path.get(..p.len())?;
                let ok = if ignore_case { head.eq_ignore_ascii_case(p) } else { head == &**p };
                ok.then_some(MatchedPath::Prefix(p.len()))
            }
            PathMatch::Segments(p) => {
                let ok = path.starts_with(&**p) && matches!(path.as_bytes().get(p.len()), None | Some(b'/'));
                ok.then_some(MatchedPath::Prefix(p.len()))
            }
            PathMatch::Regex(r) => r.is_match(path).then_some(MatchedPath::Regex),
        }
    }
}

/// What a header condition reads: a header, or a pseudo-header Envoy exposes to matchers.
#[derive(Debug, Clone)]
pub(crate) enum HeaderKey {
    Name(HeaderName),
    Authority,
    Method,
    Path,
    Scheme,
}

impl HeaderKey {
    /// From a (case-insensitive) name; `None` when it is not a valid header name.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            ":authority" | "host" => HeaderKey::Authority,
            ":method" => HeaderKey::Method,
            ":path" => HeaderKey::Path,
            ":scheme" => HeaderKey::Scheme,
            other => HeaderKey::Name(HeaderName::from_bytes(other.as_bytes()).ok()?),
        })
    }

    /// The value as matchers see it: several header lines joined with `,` (Envoy's rule).
    fn value<'r>(&self, req: &RequestInfo<'r>) -> Option<Cow<'r, str>> {
        match self {
            HeaderKey::Authority => Some(Cow::Borrowed(req.authority)),
            HeaderKey::Method => Some(Cow::Borrowed(req.method.as_str())),
            HeaderKey::Path => Some(Cow::Borrowed(
                req.uri.path_and_query().map(|p| p.as_str()).unwrap_or_else(|| req.uri.path()),
            )),
            HeaderKey::Scheme => Some(Cow::Borrowed(req.uri.scheme_str().unwrap_or("http"))),
            HeaderKey::Name(n) => {
                let mut values = req.headers.get_all(n).iter();
                let first = values.next()?;
                let first = String::from_utf8_lossy(first.as_bytes());
                match values.next() {
                    None => Some(first),
                    Some(second) => {
                        let mut joined = first.into_owned();
                        for v in std::iter::once(second).chain(values) {
                            joined.push(',');
                            joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
                        }
                        Some(Cow::Owned(joined))
                    }
                }
            }
        }
    }
}

/// One header condition; `invert` for Istio `withoutHeaders` (true when the header would
/// not match, including when it is absent).
#[derive(Debug, Clone)]
pub(crate) struct HeaderCond {
    pub key: HeaderKey,
    pub m: StrMatch,
    pub invert: bool,
}

impl HeaderCond {
    fn check(&self, req: &RequestInfo<'_>) -> bool {
        let hit = self.key.value(req).is_some_and(|v| self.m.matches(&v));
        hit != self.invert
    }
}

/// The first value of query parameter `name`, percent-decoded; `""` for `?name`.
pub(crate) fn query_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// One compiled match entry: every set field must hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct HttpMatch {
    pub path: Option<PathMatch>,
    pub ignore_case: bool,
    pub method: Option<StrMatch>,
    pub authority: Option<StrMatch>,
    pub scheme: Option<StrMatch>,
    pub headers: Vec<HeaderCond>,
    pub query: Vec<(Box<str>, StrMatch)>,
    /// Service ports; empty = any.
    pub ports: Box<[u16]>,
    pub source_labels: Option<Labels>,
    pub source_namespace: Option<Arc<str>>,
}

impl HttpMatch {
    /// How the path matched when every condition holds.
    pub(crate) fn check(&self, req: &RequestInfo<'_>) -> Option<MatchedPath> {
        if !self.ports.is_empty() && !self.ports.contains(&req.port) {
            return None;
        }
        let path = match &self.path {
            Some(p) => p.check(req.path(), self.ignore_case)?,
            None => MatchedPath::None,
        };
        if let Some(m) = &self.method
            && !m.matches(req.method.as_str())
        {
            return None;
        }
        if let Some(m) = &self.authority
            && !m.matches(req.authority)
        {
            return None;
        }
        if let Some(m) = &self.scheme
            && !m.matches(req.scheme())
        {
            return None;
        }
        if !self.headers.iter().all(|h| h.check(req)) {
            return None;
        }
        if !self.query.is_empty() {
            let q = req.uri.query().unwrap_or("");
            if !self.query.iter().all(|(name, m)| query_value(q, name).is_some_and(|v| m.matches(&v))) {
                return None;
            }
        }
        if !source_ok(&self.source_labels, &self.source_namespace, req.source) {
            return None;
        }
        Some(path)
    }
}

fn source_ok(labels: &Option<Labels>, ns: &Option<Arc<str>>, source: Option<&Workload>) -> bool {
    if labels.is_none() && ns.is_none() {
        return true;
    }
    let Some(w) = source else { return false };
    labels.as_ref().is_none_or(|l| w.labels.matches(l)) && ns.as_ref().is_none_or(|n| *w.namespace == **n)
}

/// An Istio `L4MatchAttributes` the waypoint can evaluate.
#[derive(Debug, Clone, Default)]
pub(crate) struct TcpMatch {
    pub port: Option<u16>,
    pub source_labels: Option<Labels>,
    pub source_namespace: Option<Arc<str>>,
}

impl TcpMatch {
    pub(crate) fn check(&self, port: u16, source: Option<&Workload>) -> bool {
        self.port.is_none_or(|p| p == port) && source_ok(&self.source_labels, &self.source_namespace, source)
    }
}
