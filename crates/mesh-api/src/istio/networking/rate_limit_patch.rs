//! The EnvoyFilter patches the mesh honours: local rate limiting, inserted as an HTTP filter
//! (`applyTo: HTTP_FILTER`, INSERT_BEFORE/INSERT_AFTER/INSERT_FIRST/ADD, value
//! `name: envoy.filters.http.local_ratelimit`) or merged into routes (`applyTo: HTTP_ROUTE`,
//! MERGE, value `typed_per_filter_config: {envoy.filters.http.local_ratelimit: ...}`).
//! [`EnvoyFilterSpec::rate_limit_patches`] decodes them; any other patch, or a match field
//! the waypoint cannot honour, is a warning and the patch is ignored (never widened).

use serde_json::Value;

use super::envoy_filter::{ApplyTo, EnvoyConfigObjectPatch, EnvoyFilterSpec, PatchContext, PatchOperation};
use super::envoy_filter::{EnvoyConfigObjectMatch, RouteMatchAction};
use super::local_ratelimit::{
    Decoder, LOCAL_RATELIMIT_FILTER, LocalRateLimit, PatchProblem, decode_any, entries, kind_of,
};

/// The HTTP connection manager, the only network filter an HTTP filter patch may name.
pub const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";

/// A decoded local-rate-limit patch.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitPatch {
    /// Index in `spec.configPatches`.
    pub index: usize,
    /// `match.context` (absent = ANY).
    pub context: PatchContext,
    /// Service port the patch is limited to (`listener.portNumber`, `routeConfiguration.
    /// portNumber` or `waypoint.portNumber`); `None` = every port.
    pub port: Option<u16>,
    pub scope: RateLimitScope,
    pub config: LocalRateLimit,
}

/// Where the config goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitScope {
    /// The filter of each Service port's HTTP chain (a waypoint-wide limit per port).
    Filter,
    /// The routes' own config, replacing the filter's for those routes.
    Route {
        /// `routeConfiguration.vhost.name`.
        vhost: Option<VhostName>,
        /// `vhost.route.name` or `waypoint.route.name`; `None` = every route.
        route: Option<String>,
        /// `vhost.route.action`.
        action: RouteMatchAction,
    },
}

/// The virtual host names the waypoint understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VhostName {
    /// `inbound|http|<port>`: every Service's routes on that port.
    InboundPort(u16),
    /// `<host>:<port>`: one Service (FQDN or short name) on one port.
    HostPort(String, u16),
}

impl VhostName {
    /// Parses the two forms; `None` for anything else.
    pub fn parse(s: &str) -> Option<VhostName> {
        if let Some(p) = s.strip_prefix("inbound|http|") {
            return p.parse().ok().filter(|p| *p != 0).map(VhostName::InboundPort);
        }
        let (host, port) = s.rsplit_once(':')?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
        (!host.is_empty() && !host.contains(['|', '*'])).then(|| VhostName::HostPort(host.to_string(), port))
    }
}

const UNSUPPORTED: &str = "only envoy.filters.http.local_ratelimit is supported; this patch is ignored";

impl EnvoyFilterSpec {
    /// The local-rate-limit patches, decoded, and the problems of every patch: errors for a
    /// malformed rate-limit config, one warning for each patch that is ignored.
    pub fn rate_limit_patches(&self) -> (Vec<RateLimitPatch>, Vec<PatchProblem>) {
        let mut problems = Vec::new();
        let mut out = Vec::new();
        let mut d = Decoder { problems: &mut problems };
        for (i, p) in self.config_patches.iter().enumerate() {
            if let Some(r) = decode_patch(&mut d, i, p) {
                out.push(r);
            }
        }
        (out, problems)
    }
}

fn unsupported(d: &mut Decoder<'_>, field: &str, what: impl std::fmt::Display) {
    d.warn(field, format!("{what}: {UNSUPPORTED}"));
}

fn decode_patch(d: &mut Decoder<'_>, i: usize, p: &EnvoyConfigObjectPatch) -> Option<RateLimitPatch> {
    let path = format!("spec.configPatches[{i}]");
    let m = p.match_.clone().unwrap_or_default();
    let context = m.context.unwrap_or_default();
    if m.waypoint.is_some() && context != PatchContext::Waypoint {
        d.err(&format!("{path}.match.waypoint"), "needs match.context WAYPOINT");
    }
    let op = p.patch.as_ref().and_then(|p| p.operation);
    let value = p.patch.as_ref().and_then(|p| p.value.as_ref());
    let vpath = format!("{path}.patch.value");
    let decoded = match p.apply_to {
        Some(ApplyTo::HttpFilter) => {
            if !matches!(
                op,
                Some(
                    PatchOperation::InsertBefore
                        | PatchOperation::InsertAfter
                        | PatchOperation::InsertFirst
                        | PatchOperation::Add
                )
            ) {
                let op = op.map_or("unset", PatchOperation::as_str);
                unsupported(d, &format!("{path}.patch.operation"), format!("HTTP_FILTER operation {op}"));
                return None;
            }
            let name = value.and_then(|v| v.get("name")).and_then(Value::as_str);
            if value.is_some() && name != Some(LOCAL_RATELIMIT_FILTER) {
                let what = match name {
                    Some(n) => format!("HTTP filter {n:?}"),
                    None => "HTTP filter without a name".to_string(),
                };
                unsupported(d, &format!("{vpath}.name"), what);
                return None;
            }
            let port = filter_match(d, &m, &path)?;
            let config = filter_value(d, value, &vpath)?;
            (port, RateLimitScope::Filter, config)
        }
        Some(ApplyTo::HttpRoute) => {
            if op != Some(PatchOperation::Merge) {
                let op = op.map_or("unset", PatchOperation::as_str);
                unsupported(d, &format!("{path}.patch.operation"), format!("HTTP_ROUTE operation {op}"));
                return None;
            }
            let (port, scope) = route_match(d, &m, &path)?;
            let config = route_value(d, value, &vpath)?;
            (port, scope, config)
        }
        Some(other) => {
            unsupported(d, &format!("{path}.applyTo"), format!("applyTo {}", other.as_str()));
            return None;
        }
        None => {
            unsupported(d, &format!("{path}.applyTo"), "applyTo unset");
            return None;
        }
    };
    if context == PatchContext::SidecarOutbound {
        d.warn(
            &format!("{path}.match.context"),
            "SIDECAR_OUTBOUND: the mesh has no sidecars and waypoints are inbound; the patch applies nowhere",
        );
    }
    let (port, scope, config) = decoded;
    config.map(|config| RateLimitPatch { index: i, context, port, scope, config })
}

/// `patch.value` of an HTTP_FILTER patch: `{name, typed_config}`. `None` = ignored (warned);
/// `Some(None)` = a rate-limit patch with errors (reported).
fn filter_value(d: &mut Decoder<'_>, value: Option<&Value>, path: &str) -> Option<Option<LocalRateLimit>> {
    let Some(value) = value else {
        d.err(path, "is required");
        return Some(None);
    };
    let fields = d.fields(value, path)?;
    let mut config = None;
    let mut seen = false;
    for (k, p, v) in fields {
        match k.as_str() {
            "name" => {}
            "typed_config" => {
                seen = true;
                config = decode_any(d, v, &p, false);
            }
            "is_optional" => {}
            "disabled" | "config_discovery" => {
                unsupported(d, &p, format!("{k} on the HTTP filter"));
                return None;
            }
            _ => d.err(&p, format!("unknown field {k:?} of HttpFilter (known: name, typed_config)")),
        }
    }
    if !seen {
        d.err(&format!("{path}.typed_config"), "is required");
    }
    Some(config)
}

/// `patch.value` of an HTTP_ROUTE MERGE: `{typed_per_filter_config: {<filter>: config}}`.
fn route_value(d: &mut Decoder<'_>, value: Option<&Value>, path: &str) -> Option<Option<LocalRateLimit>> {
    let Some(value) = value else {
        d.err(path, "is required");
        return Some(None);
    };
    let fields = d.fields(value, path)?;
    let mut config = None;
    for (k, p, v) in fields {
        if k != "typed_per_filter_config" {
            unsupported(d, &p, format!("route field {k:?}"));
            return None;
        }
        let Value::Object(map) = v else {
            d.err(&p, format!("must be an object, got {}", kind_of(v)));
            return Some(None);
        };
        for (k, fp, v) in entries(map, &p) {
            if k != LOCAL_RATELIMIT_FILTER {
                unsupported(d, &fp, format!("per-route config of {k:?}"));
                return None;
            }
            config = Some(decode_any(d, v, &fp, true));
        }
    }
    match config {
        Some(c) => Some(c),
        None => {
            unsupported(d, path, "a route patch without typed_per_filter_config");
            None
        }
    }
}

/// A port number of a match (0 = unset, as in proto3).
fn port(d: &mut Decoder<'_>, v: Option<u32>, field: &str) -> Result<Option<u16>, ()> {
    match v {
        None | Some(0) => Ok(None),
        Some(p) => match u16::try_from(p) {
            Ok(p) => Ok(Some(p)),
            Err(_) => {
                d.err(field, format!("port {p} out of range 1..65535"));
                Err(())
            }
        },
    }
}

/// The port an HTTP_FILTER patch is limited to; `None` = ignored (warned or refused).
fn filter_match(d: &mut Decoder<'_>, m: &EnvoyConfigObjectMatch, path: &str) -> Option<Option<u16>> {
    let mp = format!("{path}.match");
    if m.proxy.is_some() {
        unsupported(d, &format!("{mp}.proxy"), "a proxy match");
        return None;
    }
    if m.route_configuration.is_some() || m.cluster.is_some() {
        unsupported(d, &mp, "an HTTP_FILTER patch matching routes or clusters");
        return None;
    }
    let mut found = None;
    if let Some(l) = &m.listener {
        let lp = format!("{mp}.listener");
        let extra = [
            ("name", l.name.is_some()),
            ("portName", l.port_name.is_some()),
            ("listenerFilter", l.listener_filter.is_some()),
        ];
        if let Some((f, _)) = extra.iter().find(|(_, set)| *set) {
            unsupported(d, &format!("{lp}.{f}"), format!("listener.{f}"));
            return None;
        }
        if let Some(fc) = &l.filter_chain {
            let fcp = format!("{lp}.filterChain");
            let extra = [
                ("name", fc.name.is_some()),
                ("sni", fc.sni.is_some()),
                ("transportProtocol", fc.transport_protocol.is_some()),
                ("applicationProtocols", fc.application_protocols.is_some()),
                ("destinationPort", fc.destination_port.is_some()),
            ];
            if let Some((f, _)) = extra.iter().find(|(_, set)| *set) {
                unsupported(d, &format!("{fcp}.{f}"), format!("filterChain.{f}"));
                return None;
            }
            if let Some(n) = fc.filter.as_ref().and_then(|f| f.name.as_deref())
                && n != HTTP_CONNECTION_MANAGER
            {
                unsupported(d, &format!("{fcp}.filter.name"), format!("network filter {n:?}"));
                return None;
            }
        }
        found = port(d, l.port_number, &format!("{lp}.portNumber")).ok()?;
    }
    if let Some(w) = &m.waypoint {
        let wp = format!("{mp}.waypoint");
        if w.route.is_some() {
            unsupported(d, &format!("{wp}.route"), "an HTTP_FILTER patch matching a route");
            return None;
        }
        found = found.or(port(d, w.port_number, &format!("{wp}.portNumber")).ok()?);
    }
    Some(found)
}

/// The port and route selection of an HTTP_ROUTE patch; `None` = ignored.
fn route_match(
    d: &mut Decoder<'_>,
    m: &EnvoyConfigObjectMatch,
    path: &str,
) -> Option<(Option<u16>, RateLimitScope)> {
    let mp = format!("{path}.match");
    if m.proxy.is_some() {
        unsupported(d, &format!("{mp}.proxy"), "a proxy match");
        return None;
    }
    if m.listener.is_some() || m.cluster.is_some() {
        unsupported(d, &mp, "an HTTP_ROUTE patch matching listeners or clusters");
        return None;
    }
    let (mut port_no, mut vhost, mut route, mut action) = (None, None, None, RouteMatchAction::Any);
    if let Some(rc) = &m.route_configuration {
        let rp = format!("{mp}.routeConfiguration");
        let extra = [
            ("name", rc.name.is_some()),
            ("portName", rc.port_name.is_some()),
            ("gateway", rc.gateway.is_some()),
        ];
        if let Some((f, _)) = extra.iter().find(|(_, set)| *set) {
            unsupported(d, &format!("{rp}.{f}"), format!("routeConfiguration.{f}"));
            return None;
        }
        port_no = port(d, rc.port_number, &format!("{rp}.portNumber")).ok()?;
        if let Some(vh) = &rc.vhost {
            if vh.domain_name.is_some() {
                unsupported(d, &format!("{rp}.vhost.domainName"), "vhost.domainName");
                return None;
            }
            if let Some(name) = &vh.name {
                match VhostName::parse(name) {
                    Some(v) => vhost = Some(v),
                    None => {
                        d.warn(
                            &format!("{rp}.vhost.name"),
                            format!(
                                "{name:?} is neither \"inbound|http|<port>\" nor \"<host>:<port>\"; \
                                 this patch is ignored"
                            ),
                        );
                        return None;
                    }
                }
            }
            if let Some(r) = &vh.route {
                route = r.name.clone().filter(|n| !n.is_empty());
                action = r.action.unwrap_or_default();
            }
        }
    }
    if let Some(w) = &m.waypoint {
        let wp = format!("{mp}.waypoint");
        if w.filter.is_some() {
            unsupported(d, &format!("{wp}.filter"), "an HTTP_ROUTE patch matching a filter");
            return None;
        }
        port_no = port_no.or(port(d, w.port_number, &format!("{wp}.portNumber")).ok()?);
        route = route.or(w.route.as_ref().and_then(|r| r.name.clone()).filter(|n| !n.is_empty()));
    }
    Some((port_no, RateLimitScope::Route { vhost, route, action }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhost_names() {
        assert_eq!(VhostName::parse("inbound|http|9080"), Some(VhostName::InboundPort(9080)));
        assert_eq!(
            VhostName::parse("reviews.default.svc.cluster.local:9080"),
            Some(VhostName::HostPort("reviews.default.svc.cluster.local".into(), 9080))
        );
        for bad in ["inbound|http|0", "inbound|tcp|80", "reviews", ":80", "a:b", "*.x:80", "allow_any"] {
            assert_eq!(VhostName::parse(bad), None, "{bad}");
        }
    }
}
