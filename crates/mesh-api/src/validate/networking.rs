//! Checks of `networking.istio.io` objects.

use std::collections::HashSet;

use super::checks::{Ctx, is_ip_or_cidr};
use crate::common::{Destination, StringMatch};
use crate::istio::networking::*;

/// Retry conditions Envoy (and so Istio) understands, besides numeric status codes.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

fn destination(cx: &mut Ctx, f: &str, d: &Destination) {
    cx.required(&format!("{f}.host"), &d.host);
    if let Some(p) = &d.port {
        cx.opt_port(|| format!("{f}.port.number"), p.number.map(i64::from));
    }
}

/// Istio: with more than one destination, the weights must add up to 100.
fn weights(cx: &mut Ctx, f: &str, weights: impl Iterator<Item = Option<i32>>) {
    let mut n = 0;
    let mut sum: i64 = 0;
    for (i, w) in weights.enumerate() {
        n += 1;
        if let Some(w) = w {
            if w < 0 {
                cx.err(format!("{f}[{i}].weight"), format!("must not be negative, got {w}"));
            }
            sum += i64::from(w);
        }
    }
    if n > 1 && sum != 100 {
        cx.err(f, format!("weights sum to {sum}, not 100"));
    }
}

pub(super) fn virtual_service(cx: &mut Ctx, vs: &VirtualServiceSpec) {
    if vs.hosts.is_empty() {
        cx.err("spec.hosts", "at least one host is required");
    }
    for (i, h) in vs.hosts.iter().enumerate() {
        if h.is_empty() {
            cx.err(format!("spec.hosts[{i}]"), "must not be empty");
        }
    }
    for (i, r) in vs.http.iter().enumerate() {
        http_route(cx, &format!("spec.http[{i}]"), r);
    }
    for (i, r) in vs.tcp.iter().enumerate() {
        let f = format!("spec.tcp[{i}]");
        for (j, m) in r.matches.iter().enumerate() {
            cx.opt_port(|| format!("{f}.match[{j}].port"), m.port.map(i64::from));
            cidrs(cx, &format!("{f}.match[{j}].destinationSubnets"), &m.destination_subnets);
            cx.labels(&format!("{f}.match[{j}].sourceLabels"), &m.source_labels);
        }
        l4_routes(cx, &f, &r.route);
    }
    for (i, r) in vs.tls.iter().enumerate() {
        let f = format!("spec.tls[{i}]");
        if r.matches.is_empty() {
            cx.err(format!("{f}.match"), "at least one match is required");
        }
        for (j, m) in r.matches.iter().enumerate() {
            if m.sni_hosts.is_empty() {
                cx.err(format!("{f}.match[{j}].sniHosts"), "at least one SNI host is required");
            }
            cx.opt_port(|| format!("{f}.match[{j}].port"), m.port.map(i64::from));
            cidrs(cx, &format!("{f}.match[{j}].destinationSubnets"), &m.destination_subnets);
            cx.labels(&format!("{f}.match[{j}].sourceLabels"), &m.source_labels);
        }
        l4_routes(cx, &f, &r.route);
    }
}

fn cidrs(cx: &mut Ctx, f: &str, list: &[String]) {
    for (i, c) in list.iter().enumerate() {
        cx.ip_or_cidr(&format!("{f}[{i}]"), c);
    }
}

fn l4_routes(cx: &mut Ctx, f: &str, route: &[RouteDestination]) {
    if route.is_empty() {
        cx.err(format!("{f}.route"), "at least one destination is required");
    }
    for (j, d) in route.iter().enumerate() {
        destination(cx, &format!("{f}.route[{j}].destination"), &d.destination);
    }
    weights(cx, &format!("{f}.route"), route.iter().map(|d| d.weight));
}

fn http_route(cx: &mut Ctx, f: &str, r: &HttpRoute) {
    for (j, m) in r.matches.iter().enumerate() {
        let mf = format!("{f}.match[{j}]");
        cx.string_match(&format!("{mf}.uri"), &m.uri);
        cx.string_match(&format!("{mf}.scheme"), &m.scheme);
        cx.string_match(&format!("{mf}.method"), &m.method);
        cx.string_match(&format!("{mf}.authority"), &m.authority);
        cx.string_matches(&format!("{mf}.headers"), &m.headers);
        cx.string_matches(&format!("{mf}.queryParams"), &m.query_params);
        cx.string_matches(&format!("{mf}.withoutHeaders"), &m.without_headers);
        cx.opt_port(|| format!("{mf}.port"), m.port.map(i64::from));
        cx.labels(&format!("{mf}.sourceLabels"), &m.source_labels);
    }
    let has_route = !r.route.is_empty();
    if has_route && r.redirect.is_some() {
        cx.err(f, "route and redirect cannot both be set");
    }
    if has_route && r.direct_response.is_some() {
        cx.err(f, "route and directResponse cannot both be set");
    }
    if r.redirect.is_some() && r.direct_response.is_some() {
        cx.err(f, "redirect and directResponse cannot both be set");
    }
    if !has_route && r.redirect.is_none() && r.direct_response.is_none() && r.delegate.is_none() {
        cx.err(f, "one of route, redirect, directResponse or delegate is required");
    }
    for (j, d) in r.route.iter().enumerate() {
        destination(cx, &format!("{f}.route[{j}].destination"), &d.destination);
    }
    weights(cx, &format!("{f}.route"), r.route.iter().map(|d| d.weight));
    if let Some(rd) = &r.redirect {
        cx.opt_port(|| format!("{f}.redirect.port"), rd.port.map(i64::from));
        if rd.port.is_some() && rd.derive_port.is_some() {
            cx.err(format!("{f}.redirect"), "port and derivePort cannot both be set");
        }
        if let Some(code) = rd.redirect_code
            && !(300..=399).contains(&code)
        {
            cx.err(format!("{f}.redirect.redirectCode"), format!("{code} is not a 3xx redirect status"));
        }
    }
    if let Some(dr) = &r.direct_response {
        if !(200..=599).contains(&dr.status) {
            cx.err(format!("{f}.directResponse.status"), format!("{} out of range 200..599", dr.status));
        }
        if let Some(b) = &dr.body
            && b.string.is_some()
            && b.bytes.is_some()
        {
            cx.err(format!("{f}.directResponse.body"), "only one of string, bytes may be set");
        }
    }
    if let Some(rw) = &r.rewrite
        && let Some(rr) = &rw.uri_regex_rewrite
    {
        cx.regex(&format!("{f}.rewrite.uriRegexRewrite.match"), &rr.pattern);
        if rw.uri.is_some() {
            cx.err(format!("{f}.rewrite"), "uri and uriRegexRewrite cannot both be set");
        }
    }
    if let Some(rt) = &r.retries {
        cx.non_negative(|| format!("{f}.retries.attempts"), rt.attempts);
        if let Some(on) = &rt.retry_on {
            for cond in on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if !RETRY_ON.contains(&cond) && cond.parse::<u16>().is_err() {
                    cx.err(format!("{f}.retries.retryOn"), format!("unknown retry condition {cond:?}"));
                }
            }
        }
    }
    if let Some(fault) = &r.fault {
        fault_injection(cx, &format!("{f}.fault"), fault);
    }
    if let Some(m) = &r.mirror {
        destination(cx, &format!("{f}.mirror"), m);
        if !r.mirrors.is_empty() {
            cx.err(f, "mirror and mirrors cannot both be set");
        }
    }
    for (j, m) in r.mirrors.iter().enumerate() {
        destination(cx, &format!("{f}.mirrors[{j}].destination"), &m.destination);
        cx.percent(&format!("{f}.mirrors[{j}].percentage"), &m.percentage);
    }
    for (name, v) in [("mirrorPercent", r.mirror_percent), ("mirror_percent", r.mirror_percent_snake)] {
        if let Some(v) = v {
            cx.int_range(|| format!("{f}.{name}"), Some(v.into()), 0, 100);
            cx.warn(format!("{f}.{name}"), "deprecated, use mirrorPercentage");
        }
    }
    cx.percent(&format!("{f}.mirrorPercentage"), &r.mirror_percentage);
    if let Some(c) = &r.cors_policy {
        for (j, o) in c.allow_origins.iter().enumerate() {
            if let StringMatch::Regex(re) = o {
                cx.regex(&format!("{f}.corsPolicy.allowOrigins[{j}].regex"), re);
            }
        }
        if !c.allow_origin.is_empty() {
            cx.warn(format!("{f}.corsPolicy.allowOrigin"), "deprecated, use allowOrigins");
        }
    }
}

fn fault_injection(cx: &mut Ctx, f: &str, fault: &HttpFaultInjection) {
    if fault.delay.is_none() && fault.abort.is_none() {
        cx.err(f, "at least one of delay, abort is required");
    }
    if let Some(d) = &fault.delay {
        if d.fixed_delay.is_none() && d.exponential_delay.is_none() {
            cx.err(format!("{f}.delay"), "fixedDelay is required");
        }
        cx.percent(&format!("{f}.delay.percentage"), &d.percentage);
        if let Some(p) = d.percent {
            cx.int_range(|| format!("{f}.delay.percent"), Some(p.into()), 0, 100);
            cx.warn(format!("{f}.delay.percent"), "deprecated, use percentage");
        }
    }
    if let Some(a) = &fault.abort {
        let set = [a.http_status.is_some(), a.grpc_status.is_some(), a.http2_error.is_some()];
        match set.iter().filter(|s| **s).count() {
            0 => cx.err(format!("{f}.abort"), "one of httpStatus, grpcStatus, http2Error is required"),
            1 => {}
            _ => cx.err(format!("{f}.abort"), "only one of httpStatus, grpcStatus, http2Error may be set"),
        }
        cx.int_range(|| format!("{f}.abort.httpStatus"), a.http_status.map(i64::from), 200, 599);
        cx.percent(&format!("{f}.abort.percentage"), &a.percentage);
    }
}

pub(super) fn destination_rule(cx: &mut Ctx, dr: &DestinationRuleSpec) {
    cx.required("spec.host", &dr.host);
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy(cx, "spec.trafficPolicy", tp);
    }
    let mut seen = HashSet::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        let f = format!("spec.subsets[{i}]");
        if s.name.is_empty() {
            cx.err(format!("{f}.name"), "is required");
        } else if !seen.insert(s.name.as_str()) {
            cx.err(format!("{f}.name"), format!("duplicate subset {:?}", s.name));
        }
        if s.labels.is_empty() {
            cx.err(format!("{f}.labels"), "at least one label is required");
        }
        cx.labels(&format!("{f}.labels"), &s.labels);
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(cx, &format!("{f}.trafficPolicy"), tp);
        }
    }
    if let Some(ws) = &dr.workload_selector {
        cx.labels("spec.workloadSelector.matchLabels", &ws.match_labels);
    }
}

fn traffic_policy(cx: &mut Ctx, f: &str, tp: &TrafficPolicy) {
    policy_parts(cx, f, &tp.load_balancer, &tp.connection_pool, &tp.outlier_detection);
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        let pf = format!("{f}.portLevelSettings[{i}]");
        match p.port.as_ref().and_then(|p| p.number) {
            Some(n) => cx.port(&format!("{pf}.port.number"), n.into()),
            None => cx.err(format!("{pf}.port"), "port number is required"),
        }
        policy_parts(cx, &pf, &p.load_balancer, &p.connection_pool, &p.outlier_detection);
    }
    if let Some(t) = &tp.tunnel {
        cx.required(&format!("{f}.tunnel.targetHost"), &t.target_host);
        cx.port(&format!("{f}.tunnel.targetPort"), t.target_port.into());
        if let Some(p) = &t.protocol
            && p != "CONNECT"
            && p != "POST"
        {
            cx.err(format!("{f}.tunnel.protocol"), format!("{p:?} is not CONNECT or POST"));
        }
    }
    if let Some(p) = tp.retry_budget.as_ref().and_then(|rb| rb.percent) {
        cx.percent_value(&format!("{f}.retryBudget.percent"), p);
    }
}

fn policy_parts(
    cx: &mut Ctx,
    f: &str,
    lb: &Option<LoadBalancerSettings>,
    pool: &Option<ConnectionPoolSettings>,
    od: &Option<OutlierDetection>,
) {
    if let Some(lb) = lb {
        load_balancer(cx, &format!("{f}.loadBalancer"), lb);
    }
    if let Some(pool) = pool {
        connection_pool(cx, &format!("{f}.connectionPool"), pool);
    }
    if let Some(od) = od {
        outlier_detection(cx, &format!("{f}.outlierDetection"), od);
    }
}

fn load_balancer(cx: &mut Ctx, f: &str, lb: &LoadBalancerSettings) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        cx.err(f, "simple and consistentHash cannot both be set");
    }
    if let Some(ch) = &lb.consistent_hash {
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip.is_some(),
            ch.http_query_parameter_name.is_some(),
        ];
        match keys.iter().filter(|k| **k).count() {
            0 => cx.err(
                format!("{f}.consistentHash"),
                "one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is required",
            ),
            1 => {}
            _ => cx.err(
                format!("{f}.consistentHash"),
                "only one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName may be set",
            ),
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            cx.err(format!("{f}.consistentHash"), "ringHash and maglev cannot both be set");
        }
        if let Some(c) = &ch.http_cookie {
            cx.required(&format!("{f}.consistentHash.httpCookie.name"), &c.name);
        }
        if ch.minimum_ring_size.is_some() {
            cx.warn(
                format!("{f}.consistentHash.minimumRingSize"),
                "deprecated, use ringHash.minimumRingSize",
            );
        }
    }
    if let Some(w) = &lb.warmup
        && let Some(p) = w.minimum_percent
    {
        cx.percent_value(&format!("{f}.warmup.minimumPercent"), p);
    }
    if lb.warmup_duration_secs.is_some() {
        cx.warn(format!("{f}.warmupDurationSecs"), "deprecated, use warmup.duration");
    }
    if let Some(l) = &lb.locality_lb_setting {
        for (i, d) in l.distribute.iter().enumerate() {
            let sum: u64 = d.to.values().map(|v| u64::from(*v)).sum();
            if !d.to.is_empty() && sum != 100 {
                cx.err(
                    format!("{f}.localityLbSetting.distribute[{i}].to"),
                    format!("weights sum to {sum}, not 100"),
                );
            }
        }
        if !l.distribute.is_empty() && !l.failover.is_empty() {
            cx.err(format!("{f}.localityLbSetting"), "distribute and failover cannot both be set");
        }
    }
}

fn connection_pool(cx: &mut Ctx, f: &str, p: &ConnectionPoolSettings) {
    if let Some(t) = &p.tcp {
        cx.non_negative(|| format!("{f}.tcp.maxConnections"), t.max_connections);
    }
    if let Some(h) = &p.http {
        cx.non_negative(|| format!("{f}.http.http1MaxPendingRequests"), h.http1_max_pending_requests);
        cx.non_negative(|| format!("{f}.http.http2MaxRequests"), h.http2_max_requests);
        cx.non_negative(|| format!("{f}.http.maxRequestsPerConnection"), h.max_requests_per_connection);
        cx.non_negative(|| format!("{f}.http.maxRetries"), h.max_retries);
        cx.non_negative(|| format!("{f}.http.maxConcurrentStreams"), h.max_concurrent_streams);
    }
}

fn outlier_detection(cx: &mut Ctx, f: &str, od: &OutlierDetection) {
    if od.consecutive_errors.is_some() {
        cx.warn(format!("{f}.consecutiveErrors"), "deprecated, use consecutive5xxErrors");
    }
    cx.non_negative(|| format!("{f}.consecutiveErrors"), od.consecutive_errors);
    cx.int_range(|| format!("{f}.maxEjectionPercent"), od.max_ejection_percent.map(i64::from), 0, 100);
    cx.int_range(|| format!("{f}.minHealthPercent"), od.min_health_percent.map(i64::from), 0, 100);
}

/// `ServiceEntry`: ports, addresses and that endpoints fit the resolution.
pub(super) fn service_entry(cx: &mut Ctx, se: &ServiceEntrySpec) {
    if se.hosts.is_empty() {
        cx.err("spec.hosts", "at least one host is required");
    }
    for (i, a) in se.addresses.iter().enumerate() {
        cx.ip_or_cidr(&format!("spec.addresses[{i}]"), a);
    }
    let mut numbers = HashSet::new();
    let mut names = HashSet::new();
    for (i, p) in se.ports.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        cx.port(&format!("{f}.number"), p.number.into());
        cx.opt_port(|| format!("{f}.targetPort"), p.target_port.map(i64::from));
        if p.name.is_empty() {
            cx.err(format!("{f}.name"), "is required");
        } else if !names.insert(p.name.as_str()) {
            cx.err(format!("{f}.name"), format!("duplicate port name {:?}", p.name));
        }
        if !numbers.insert(p.number) {
            cx.err(format!("{f}.number"), format!("duplicate port {}", p.number));
        }
    }
    let resolution = se.resolution.unwrap_or(Resolution::None);
    if !se.endpoints.is_empty() && se.workload_selector.is_some() {
        cx.err("spec", "endpoints and workloadSelector cannot both be set");
    }
    match resolution {
        Resolution::Static if se.endpoints.is_empty() && se.workload_selector.is_none() => {
            cx.err("spec.endpoints", "resolution STATIC needs endpoints or a workloadSelector");
        }
        Resolution::Dns | Resolution::DnsRoundRobin if se.endpoints.is_empty() => {
            for (i, h) in se.hosts.iter().enumerate() {
                if h.starts_with('*') {
                    cx.err(
                        format!("spec.hosts[{i}]"),
                        format!("wildcard host {h:?} cannot be resolved by DNS"),
                    );
                }
            }
        }
        Resolution::DnsRoundRobin if se.endpoints.len() > 1 => {
            cx.err("spec.endpoints", "resolution DNS_ROUND_ROBIN allows at most one endpoint");
        }
        Resolution::None if !se.endpoints.is_empty() => {
            cx.err("spec.endpoints", "endpoints need resolution STATIC or DNS, not NONE");
        }
        _ => {}
    }
    for (i, ep) in se.endpoints.iter().enumerate() {
        let f = format!("spec.endpoints[{i}]");
        if let Some(a) = &ep.address {
            if resolution == Resolution::Static && !a.starts_with("unix://") && !is_ip_or_cidr(a) {
                cx.err(format!("{f}.address"), format!("{a:?} must be an IP address with resolution STATIC"));
            }
        } else if se.workload_selector.is_none() {
            cx.err(format!("{f}.address"), "is required");
        }
        for (name, port) in &ep.ports {
            if !names.contains(name.as_str()) {
                cx.err(format!("{f}.ports.{name}"), format!("no port named {name:?} in spec.ports"));
            }
            cx.port(&format!("{f}.ports.{name}"), (*port).into());
        }
        cx.labels(&format!("{f}.labels"), &ep.labels);
    }
    if let Some(ws) = &se.workload_selector {
        cx.labels("spec.workloadSelector.labels", &ws.labels);
    }
}

pub(super) fn gateway(cx: &mut Ctx, gw: &GatewaySpec) {
    cx.labels("spec.selector", &gw.selector);
    if gw.servers.is_empty() {
        cx.err("spec.servers", "at least one server is required");
    }
    for (i, s) in gw.servers.iter().enumerate() {
        let f = format!("spec.servers[{i}]");
        cx.port(&format!("{f}.port.number"), s.port.number.into());
        cx.opt_port(|| format!("{f}.port.targetPort"), s.port.target_port.map(i64::from));
        cx.required(&format!("{f}.port.protocol"), &s.port.protocol);
        if s.hosts.is_empty() {
            cx.err(format!("{f}.hosts"), "at least one host is required");
        }
    }
}

pub(super) fn sidecar(cx: &mut Ctx, sc: &SidecarSpec) {
    if let Some(ws) = &sc.workload_selector {
        cx.labels("spec.workloadSelector.labels", &ws.labels);
    }
    for (i, l) in sc.ingress.iter().enumerate() {
        match l.port.number {
            Some(n) => cx.port(&format!("spec.ingress[{i}].port.number"), n.into()),
            None => cx.err(format!("spec.ingress[{i}].port.number"), "is required"),
        }
    }
    for (i, l) in sc.egress.iter().enumerate() {
        let f = format!("spec.egress[{i}]");
        if let Some(p) = &l.port {
            cx.opt_port(|| format!("{f}.port.number"), p.number.map(i64::from));
        }
        if l.hosts.is_empty() {
            cx.err(format!("{f}.hosts"), "at least one host is required");
        }
        for (j, h) in l.hosts.iter().enumerate() {
            if let Err(why) = egress_host(h) {
                cx.err(format!("{f}.hosts[{j}]"), format!("{h:?} is not namespace/dnsName: {why}"));
            }
        }
    }
    if let Some(o) = &sc.outbound_traffic_policy
        && let Some(p) = &o.egress_proxy
    {
        destination(cx, "spec.outboundTrafficPolicy.egressProxy", p);
    }
}

fn egress_host(h: &str) -> Result<(), &'static str> {
    let Some((ns, host)) = h.split_once('/') else { return Err("missing namespace") };
    if ns.is_empty() {
        return Err("empty namespace");
    }
    if host.is_empty() {
        return Err("empty host");
    }
    if host.contains('/') {
        return Err("more than one '/'");
    }
    if !matches!(ns, "*" | "." | "~")
        && !ns.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        return Err("namespace must be *, ., ~ or a namespace name");
    }
    Ok(())
}
