//! Routing: compiles VirtualService `http`/`tcp` routes and Gateway API HTTPRoutes/GRPCRoutes
//! attached to a Service (GAMMA: `parentRefs` of kind Service) into immutable per-Service
//! [`RouteTable`]s, once per model generation, and matches requests against them without
//! allocating (except to join repeated header lines or decode `%`-escaped query values).
//! Pure logic: no sockets, no clocks (randomness comes in as arguments).
//!
//! Semantics, and the choices where Istio/Gateway API leave room:
//!
//! - **Which table.** [`compile`] builds a table for every Service host of the model. A table
//!   without user HTTP routes answers every request with the default route (forward to the
//!   Service itself on the request's port with Istio's default retries); a table with user
//!   routes answers `None` when nothing matches, which the proxy turns into 404 (`NR`).
//! - **VirtualServices.** Only those bound to the mesh (`gateways` empty or listing `mesh`)
//!   apply. Exact host entries beat wildcard ones; when several VirtualServices name the same
//!   host, the oldest (`creationTimestamp`, missing = oldest, then name, then namespace) wins
//!   and the others get a warning, as Istio does for sidecars/waypoints (no merging).
//!   Routes are evaluated in order, first match wins; `match` entries are ORed, fields of one
//!   entry ANDed. `delegate` is refused (error diagnostic, route skipped). A route with an
//!   invalid regex is skipped with an error diagnostic (never widened to match-all).
//! - **Gateway API.** Rules of every HTTPRoute and GRPCRoute attached to the Service
//!   (optionally to one port via `parentRefs[].port`/`sectionName`) are ordered by the Gateway
//!   API precedence, per match: Exact path, then longest prefix (regex last), method, most
//!   header matches, most query matches, oldest route, `namespace/name` alphabetical, rule
//!   order. A GRPCRoute method match is a path match (`/service/method` exact, `/service/`
//!   prefix, otherwise a regex), so the two kinds share one ordering. `hostnames` are ignored
//!   for Service parents (GAMMA). No backends, all-zero weights, only invalid backends, or an
//!   `ExtensionRef` filter: 500. Invalid backends among valid ones are dropped with an error
//!   diagnostic (their share goes to the others, not to 500 as the spec asks). Cross-namespace
//!   backends are accepted without a ReferenceGrant (the model has none).
//!   `timeouts.request` is the route timeout, `timeouts.backendRequest` the per-try timeout
//!   (bounding the request when retries are off); `retry` retries connection failures and
//!   `codes` (503 when empty), 2 attempts unless set.
//! - **Both kinds on one Service.** The VirtualService wins (a defined choice: the same
//!   answer as Istio's "one VirtualService per host"; mixing is a migration state), and each
//!   ignored HTTPRoute/GRPCRoute gets a warning naming the VirtualService.
//! - **Retries.** Absent retries mean Istio's default ([`RetryPolicy::istio_default`]);
//!   `attempts: 0` disables them. Backoff is Envoy's: 25 ms base (or `backoff`), 10× base cap,
//!   full jitter over `base × (2^n − 1)`.
//! - **Header operations.** Destination-level operations are applied before route-level ones
//!   (Envoy's order, most specific first, so the route's `set` wins); within one set of
//!   operations: remove, then set, then add.
//! - **Rewrite.** VirtualService `rewrite.uri` replaces the matched prefix (Envoy's
//!   `prefix_rewrite`; a match without `uri` is the prefix `/`), or the whole path for exact
//!   and regex matches; the query is kept. Gateway `ReplacePrefixMatch` follows the Gateway API
//!   table (segment-wise, no double slashes).

mod actions;
mod gateway;
mod istio;
mod matcher;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mesh_api::Diagnostic;
use mesh_model::{Model, Workload};

pub use actions::{
    Abort, AbortFault, AttemptOutcome, CorsAction, CorsPolicy, DelayFault, Fault, HeaderOps, Mirror,
    PathRewrite, Redirect, RedirectPath, RedirectPort, RetryOn, RetryPolicy, Rewrite, pick_weighted,
    shadow_authority,
};
use matcher::{HttpMatch, TcpMatch};
pub use matcher::{MatchedPath, RequestInfo};

/// All services' route tables for one model generation (immutable; share it in an `Arc`).
#[derive(Debug, Default)]
pub struct RouteTables {
    by_host: HashMap<Arc<str>, Arc<RouteTable>>,
}

impl RouteTables {
    /// The table of the Service whose FQDN (or ServiceEntry host) is `host`.
    pub fn for_service(&self, host: &str) -> Option<&RouteTable> {
        self.by_host.get(host).map(|t| &**t)
    }

    /// Same, as a shared handle the request can keep after the tables are swapped.
    pub fn for_service_arc(&self, host: &str) -> Option<Arc<RouteTable>> {
        self.by_host.get(host).cloned()
    }

    pub fn len(&self) -> usize {
        self.by_host.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }
}

/// Compiles the routes of every Service of `model`. The diagnostics name the object and field
/// of everything that could not take effect; the rest applies.
pub fn compile(model: &Model) -> (RouteTables, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut by_host: HashMap<Arc<str>, Arc<RouteTable>> = HashMap::new();
    for svc in model.services() {
        if svc.hostname.is_empty() || svc.hostname.starts_with('*') || by_host.contains_key(&svc.hostname) {
            continue;
        }
        let table = build_table(model, svc, &mut diags);
        by_host.insert(svc.hostname.clone(), Arc::new(table));
    }
    // A VirtualService naming several hosts (or a wildcard) is compiled once per host; say
    // each problem once.
    let mut seen = HashSet::new();
    diags.retain(|d| seen.insert(d.clone()));
    (RouteTables { by_host }, diags)
}

fn build_table<'m>(
    model: &'m Model,
    svc: &'m Arc<mesh_model::Service>,
    diags: &mut Vec<Diagnostic>,
) -> RouteTable {
    let host = svc.hostname.clone();
    let mut table = RouteTable {
        host: host.clone(),
        entries: Box::default(),
        routes: Box::default(),
        tcp: Box::default(),
        user_http: false,
        default_route: Route::default_for(host.clone()),
        default_tcp: Box::new([WeightedDestination::new(host.clone(), 100)]),
        source: TableSource::Default,
    };
    let vs = istio::select(model, &svc.hostname, diags);
    let gateway_parent =
        svc.is_kubernetes().then(|| mesh_model::ParentKey::Service(svc.namespace.clone(), svc.name.clone()));
    if let Some(vs) = vs {
        if let Some(parent) = &gateway_parent {
            gateway::warn_shadowed(model, parent, vs, diags);
        }
        istio::compile_into(model, &mut table, vs, diags);
        table.source = TableSource::VirtualService;
    } else if let Some(parent) = &gateway_parent
        && gateway::compile_into(model, svc, parent, &mut table, diags)
    {
        table.source = TableSource::GatewayApi;
    }
    table
}

/// Where a table's routes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableSource {
    /// No routing object: everything goes to the Service itself.
    Default,
    VirtualService,
    GatewayApi,
}

/// One match entry of the evaluation order: a match (all-`None` matches everything) and the
/// route it selects.
#[derive(Debug)]
struct Entry {
    matcher: HttpMatch,
    route: u32,
    /// `match[].name` of a VirtualService.
    name: Option<Arc<str>>,
}

/// A TCP route: its match (empty = all) and destinations.
#[derive(Debug)]
struct TcpEntry {
    matches: Box<[TcpMatch]>,
    dests: Box<[WeightedDestination]>,
}

/// The compiled routes of one Service.
#[derive(Debug)]
pub struct RouteTable {
    host: Arc<str>,
    entries: Box<[Entry]>,
    routes: Box<[Route]>,
    tcp: Box<[TcpEntry]>,
    user_http: bool,
    default_route: Route,
    default_tcp: Box<[WeightedDestination]>,
    source: TableSource,
}

impl RouteTable {
    /// The route for `req`: the first matching entry; the default route when the Service has
    /// no HTTP routes (for this port: Gateway API routes attach to ports through their
    /// `parentRefs`); `None` when it has routes and none matches (404, `NR`).
    pub fn route<'t>(&'t self, req: &RequestInfo<'_>) -> Option<RouteMatch<'t>> {
        let default = || RouteMatch { route: &self.default_route, path: MatchedPath::None, match_name: None };
        if !self.user_http {
            return Some(default());
        }
        let found = self.entries.iter().find_map(|e| {
            e.matcher.check(req).map(|path| RouteMatch {
                route: &self.routes[e.route as usize],
                path,
                match_name: e.name.as_deref(),
            })
        });
        if found.is_some() {
            return found;
        }
        let port_unrouted = self.source == TableSource::GatewayApi
            && !self
                .entries
                .iter()
                .any(|e| e.matcher.ports.is_empty() || e.matcher.ports.contains(&req.port));
        port_unrouted.then(default)
    }

    /// Destinations of a TCP connection to `port` from `source`: the first matching `tcp`
    /// route; the Service itself when there are no TCP routes; `None` when routes exist and
    /// none matches (the connection is refused).
    pub fn tcp(&self, port: u16, source: Option<&Workload>) -> Option<&[WeightedDestination]> {
        if self.tcp.is_empty() {
            return Some(&self.default_tcp);
        }
        self.tcp
            .iter()
            .find(|t| t.matches.is_empty() || t.matches.iter().any(|m| m.check(port, source)))
            .map(|t| &*t.dests)
    }

    /// Whether users' HTTP routes apply (otherwise [`RouteTable::route`] is the default).
    pub fn has_http_routes(&self) -> bool {
        self.user_http
    }

    pub fn has_tcp_routes(&self) -> bool {
        !self.tcp.is_empty()
    }

    /// The Service's FQDN.
    pub fn host(&self) -> &Arc<str> {
        &self.host
    }

    pub fn source(&self) -> TableSource {
        self.source
    }

    /// Every compiled route, in no particular order (for `/config_dump`).
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// The outcome of matching: the route plus what rewrite and redirect need.
#[derive(Debug, Clone, Copy)]
pub struct RouteMatch<'t> {
    pub route: &'t Route,
    /// How the path matched (the prefix length for prefix matches).
    pub path: MatchedPath,
    /// The VirtualService match entry's `name`, for logs.
    pub match_name: Option<&'t str>,
}

/// Which object a route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// The Service itself, without a routing object.
    Default,
    VirtualService,
    HttpRoute,
    GrpcRoute,
}

/// The object (and its `http[]`/`rules[]` index) a route came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOrigin {
    pub kind: RouteKind,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub index: usize,
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// `http[].name`, or the rule's `name`.
    pub name: Option<Arc<str>>,
    pub origin: RouteOrigin,
    pub action: Action,
    /// Overall timeout; `None` = disabled.
    pub timeout: Option<Duration>,
    /// `None` = no retries.
    pub retries: Option<RetryPolicy>,
    pub fault: Option<Fault>,
    pub mirrors: Vec<Mirror>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub rewrite: Option<Rewrite>,
    pub cors: Option<CorsPolicy>,
}

impl Route {
    /// The route of a Service without routing objects.
    fn default_for(host: Arc<str>) -> Route {
        Route {
            name: None,
            origin: RouteOrigin { kind: RouteKind::Default, namespace: "".into(), name: "".into(), index: 0 },
            action: Action::Forward(vec![WeightedDestination::new(host, 100)]),
            timeout: None,
            retries: Some(RetryPolicy::istio_default()),
            fault: None,
            mirrors: Vec::new(),
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
            rewrite: None,
            cors: None,
        }
    }

    /// Applies the request header operations for `dest`: the destination's first, then the
    /// route's (so the route's `set` wins, as in Envoy).
    pub fn apply_request_headers(&self, dest: Option<&WeightedDestination>, h: &mut http::HeaderMap) {
        if let Some(d) = dest {
            d.request_headers.apply(h);
        }
        self.request_headers.apply(h);
    }

    /// Same for the response.
    pub fn apply_response_headers(&self, dest: Option<&WeightedDestination>, h: &mut http::HeaderMap) {
        if let Some(d) = dest {
            d.response_headers.apply(h);
        }
        self.response_headers.apply(h);
    }
}

/// What a route does with a matching request.
#[derive(Debug, Clone)]
pub enum Action {
    /// Forward to one of the weighted destinations ([`pick_weighted`]).
    Forward(Vec<WeightedDestination>),
    /// Answer with a redirect ([`Redirect::response`]).
    Redirect(Redirect),
    /// Answer directly.
    DirectResponse { status: http::StatusCode, body: Option<Bytes> },
}

/// One destination of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedDestination {
    /// FQDN of the Service (or the host as written when it names no Service).
    pub host: Arc<str>,
    /// DestinationRule subset.
    pub subset: Option<Arc<str>>,
    /// Service port; `None` = the request's port.
    pub port: Option<u16>,
    pub weight: u32,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

impl WeightedDestination {
    fn new(host: Arc<str>, weight: u32) -> Self {
        WeightedDestination {
            host,
            subset: None,
            port: None,
            weight,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
        }
    }

    /// The port to use for a request that arrived on `request_port`.
    pub fn port_or(&self, request_port: u16) -> u16 {
        self.port.unwrap_or(request_port)
    }
}
