//! Table of per-object rules not covered by `tests/data/invalid/`: each case is a spec (and
//! kind) and the exact `field: message` diagnostics it must produce.

use mesh_api::{Parsed, parse_object};
use serde_json::{Value, json};

fn diags(api_version: &str, kind: &str, spec: Value) -> Vec<String> {
    let doc = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "o", "namespace": "n"}, "spec": spec});
    let list = match parse_object(doc) {
        Parsed::Object { warnings, .. } => warnings,
        Parsed::Invalid { diagnostics, .. } => diagnostics,
        Parsed::Ignored { .. } => panic!("ignored"),
    };
    list.iter()
        .map(|d| {
            let w = if d.is_error() { "" } else { "warning: " };
            format!("{}: {w}{}", d.field, d.message)
        })
        .collect()
}

const NET: &str = "networking.istio.io/v1";
const SEC: &str = "security.istio.io/v1";
const GW: &str = "gateway.networking.k8s.io/v1";

#[test]
fn virtual_service_rules() {
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}, "weight": 70}]}]}),
            vec![],
        ),
        (
            json!({"hosts": ["a"], "http": [{}]}),
            vec!["spec.http[0]: one of route, redirect, directResponse or delegate is required"],
        ),
        (
            json!({"hosts": ["a"], "http": [{"directResponse": {"status": 700}, "redirect": {"uri": "/x", "port": 8080, "derivePort": "FROM_REQUEST_PORT"}}]}),
            vec![
                "spec.http[0]: redirect and directResponse cannot both be set",
                "spec.http[0].redirect: port and derivePort cannot both be set",
                "spec.http[0].directResponse.status: 700 out of range 200..599",
            ],
        ),
        (
            json!({"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}}], "fault": {"delay": {"percent": 50}, "abort": {"httpStatus": 503, "grpcStatus": "UNAVAILABLE"}}}]}),
            vec![
                "spec.http[0].fault.delay: fixedDelay is required",
                "spec.http[0].fault.delay.percent: warning: deprecated, use percentage",
                "spec.http[0].fault.abort: only one of httpStatus, grpcStatus, http2Error may be set",
            ],
        ),
        (
            json!({"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}}], "rewrite": {"uri": "/", "uriRegexRewrite": {"match": "^/a(", "rewrite": "/"}}}]}),
            vec![
                "spec.http[0].rewrite.uriRegexRewrite.match: invalid regex \"^/a(\": unclosed group",
                "spec.http[0].rewrite: uri and uriRegexRewrite cannot both be set",
            ],
        ),
        (
            json!({"hosts": ["a"], "http": [{"route": [{"destination": {"host": ""}, "weight": 100}], "mirror": {"host": "m"}, "mirrors": [{"destination": {"host": "m2"}, "percentage": {"value": -1}}]}]}),
            vec![
                "spec.http[0].route[0].destination.host: is required",
                "spec.http[0]: mirror and mirrors cannot both be set",
                "spec.http[0].mirrors[0].percentage.value: percentage -1 out of range 0..100",
            ],
        ),
        (
            json!({"hosts": ["a"], "tcp": [{"match": [{"port": 0, "destinationSubnets": ["10.0.0.0/40"]}], "route": [{"destination": {"host": "a"}, "weight": 60}, {"destination": {"host": "b"}, "weight": 60}]}]}),
            vec![
                "spec.tcp[0].match[0].port: port 0 out of range 1..65535",
                "spec.tcp[0].match[0].destinationSubnets[0]: \"10.0.0.0/40\" is not an IP address or CIDR",
                "spec.tcp[0].route: weights sum to 120, not 100",
            ],
        ),
        (
            json!({"hosts": ["a"], "http": [{"match": [{"uri": {"exact": "/", "prefix": "/"}}], "route": [{"destination": {"host": "a"}}]}]}),
            vec!["spec.http[0].match[0].uri: only one of exact, prefix, regex may be set"],
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(diags(NET, "VirtualService", spec.clone()), want, "{spec}");
    }
}

#[test]
fn destination_rule_and_service_entry_rules() {
    let dr = json!({"host": "a", "trafficPolicy": {
        "loadBalancer": {"consistentHash": {"httpHeaderName": "x", "useSourceIp": true, "ringHash": {}, "maglev": {}}},
        "connectionPool": {"tcp": {"maxConnections": -1}},
        "outlierDetection": {"minHealthPercent": 101},
        "portLevelSettings": [{"loadBalancer": {"simple": "RANDOM"}}],
        "tunnel": {"targetHost": "h", "targetPort": 0}
    }, "subsets": [{"labels": {"version": "v1"}}]});
    assert_eq!(
        diags(NET, "DestinationRule", dr),
        [
            "spec.trafficPolicy.loadBalancer.consistentHash: only one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName may be set",
            "spec.trafficPolicy.loadBalancer.consistentHash: ringHash and maglev cannot both be set",
            "spec.trafficPolicy.connectionPool.tcp.maxConnections: must not be negative, got -1",
            "spec.trafficPolicy.outlierDetection.minHealthPercent: 101 out of range 0..100",
            "spec.trafficPolicy.portLevelSettings[0].port: port number is required",
            "spec.trafficPolicy.tunnel.targetPort: port 0 out of range 1..65535",
            "spec.subsets[0].name: is required",
        ]
    );
    let se = json!({"hosts": ["*.example.com"], "ports": [{"number": 443, "name": "https"}, {"number": 443, "name": "https"}], "resolution": "DNS"});
    assert_eq!(
        diags(NET, "ServiceEntry", se),
        [
            "spec.ports[1].name: duplicate port name \"https\"",
            "spec.ports[1].number: duplicate port 443",
            "spec.hosts[0]: wildcard host \"*.example.com\" cannot be resolved by DNS",
        ]
    );
    let se = json!({"hosts": ["db"], "ports": [{"number": 5432, "name": "tcp"}], "resolution": "STATIC",
        "endpoints": [{"address": "db.example.com", "ports": {"pg": 5432}}]});
    assert_eq!(
        diags(NET, "ServiceEntry", se),
        [
            "spec.endpoints[0].address: \"db.example.com\" must be an IP address with resolution STATIC",
            "spec.endpoints[0].ports.pg: no port named \"pg\" in spec.ports",
        ]
    );
}

#[test]
fn security_rules() {
    let ap = json!({"targetRef": {"kind": "Service", "name": "a"}, "targetRefs": [{"kind": "Service", "name": "b"}],
        "rules": [{"from": [{}], "to": [{"operation": {"ports": ["http", "99999"]}}],
                   "when": [{"key": "request.header[x]", "values": ["1"]}, {"key": "source.ip"}]}],
        "action": "AUDIT"});
    assert_eq!(
        diags(SEC, "AuthorizationPolicy", ap),
        [
            "spec: targetRef and targetRefs cannot both be set",
            "spec.rules[0].from[0].source: is required",
            "spec.rules[0].to[0].operation.ports[0]: \"http\" is not a port number",
            "spec.rules[0].to[0].operation.ports[1]: port 99999 out of range 1..65535",
            "spec.rules[0].when[0].key: unknown attribute \"request.header[x]\"",
            "spec.rules[0].when[1]: one of values, notValues is required",
        ]
    );
    let ok = json!({"action": "DENY", "rules": [{"when": [{"key": "request.headers[x-token]", "notValues": ["a"]}, {"key": "request.auth.claims[groups]", "values": ["admin"]}]}]});
    assert!(diags(SEC, "AuthorizationPolicy", ok).is_empty());
    let ra = json!({"selector": {"matchLabels": {"app": "a"}}, "targetRefs": [{"kind": "Gateway", "name": "g"}],
        "jwtRules": [{"issuer": "i", "jwksUri": "ftp://x", "fromHeaders": [{"name": ""}]}]});
    assert_eq!(
        diags(SEC, "RequestAuthentication", ra),
        [
            "spec: selector and targetRefs cannot both be set",
            "spec.jwtRules[0].jwksUri: \"ftp://x\" is not an http(s) URL",
            "spec.jwtRules[0].fromHeaders[0].name: is required",
        ]
    );
    let pa =
        json!({"selector": {"matchLabels": {"app": "a"}}, "portLevelMtls": {"http": {"mode": "STRICT"}}});
    assert_eq!(
        diags(SEC, "PeerAuthentication", pa),
        ["spec.portLevelMtls.http: \"http\" is not a port number"]
    );
    let tel = json!({"metrics": [{"overrides": [{"match": {"metric": "REQUEST_COUNT", "customMetric": "x"}, "tagOverrides": {"a": {"operation": "UPSERT"}}}]}]});
    assert_eq!(
        diags("telemetry.istio.io/v1alpha1", "Telemetry", tel),
        [
            "spec.metrics[0].overrides[0].match: metric and customMetric cannot both be set",
            "spec.metrics[0].overrides[0].tagOverrides.a.value: is required for UPSERT",
        ]
    );
}

#[test]
fn gateway_api_rules() {
    let route = json!({"parentRefs": [{"kind": "Service", "group": "", "name": "a", "port": 0}], "rules": [{
        "matches": [{"path": {"type": "Exact", "value": "api"}, "headers": [{"name": "x", "type": "RegularExpression", "value": "("}], "method": "FETCH"}],
        "filters": [{"type": "RequestRedirect", "urlRewrite": {"hostname": "b"}}, {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath"}}}],
        "backendRefs": [{"name": "a"}, {"name": "b", "port": 80, "weight": 3}],
        "timeouts": {"request": "1s", "backendRequest": "2s"}
    }]});
    assert_eq!(
        diags(GW, "HTTPRoute", route),
        [
            "spec.parentRefs[0].port: port 0 out of range 1..65535",
            "spec.rules[0].matches[0].path.value: \"api\" must start with '/'",
            "spec.rules[0].matches[0].headers[0].value: invalid regex \"(\": unclosed group",
            "spec.rules[0].matches[0].method: unknown method \"FETCH\"",
            "spec.rules[0].filters[0]: type RequestRedirect requires requestRedirect",
            "spec.rules[0].filters[0]: only requestRedirect may be set for this type",
            "spec.rules[0].filters[1].urlRewrite.path.replaceFullPath: is required for type ReplaceFullPath",
            "spec.rules[0].backendRefs[0].port: is required for a Service backend",
            "spec.rules[0].timeouts.backendRequest: 2s is longer than request timeout 1s",
        ]
    );
    let proportional = json!({"rules": [{"backendRefs": [{"name": "a", "port": 80, "weight": 1}, {"name": "b", "port": 80, "weight": 3}]}]});
    assert!(diags(GW, "HTTPRoute", proportional).is_empty(), "Gateway API weights are proportional");
    let gw = json!({"gatewayClassName": "istio-waypoint", "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}, {"name": "mesh", "port": 70000, "protocol": "HBONE"}]});
    assert_eq!(
        diags(GW, "Gateway", gw),
        [
            "spec.listeners[1].name: duplicate listener \"mesh\"",
            "spec.listeners[1].port: port 70000 out of range 1..65535"
        ]
    );
    let sc = json!({"ingress": [{"port": {"number": 9080, "protocol": "HTTP", "name": "http"}, "defaultEndpoint": "127.0.0.1:8080"}], "egress": [{"hosts": ["/x", "ns/"]}]});
    assert_eq!(
        diags(NET, "Sidecar", sc),
        [
            "spec.egress[0].hosts[0]: \"/x\" is not namespace/dnsName: empty namespace",
            "spec.egress[0].hosts[1]: \"ns/\" is not namespace/dnsName: empty host",
        ]
    );
}

#[test]
fn metadata_names_and_labels() {
    let doc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "Bad_Name", "namespace": "My.NS", "labels": {"app": "a b"}}});
    let Parsed::Invalid { diagnostics, .. } = parse_object(doc) else { panic!() };
    let got: Vec<String> = diagnostics.iter().map(|d| format!("{}: {}", d.field, d.message)).collect();
    assert_eq!(
        got,
        [
            "metadata.name: \"Bad_Name\" is not a valid name (lowercase letters, digits, '-' and '.', at most 253)",
            "metadata.namespace: \"My.NS\" is not a valid namespace (lowercase letters, digits and '-', at most 63)",
            "metadata.labels.app: invalid label value \"a b\": may contain only alphanumerics, '-', '_' and '.'",
        ]
    );
}
