//! Authorization with HTTP attributes, as the waypoint evaluates it: the same policies that
//! never match at L4 (methods, paths, hosts, headers, JWT attributes) decide here. Policies
//! reach the waypoint through `targetRefs`.

mod common;

use common::{doc, docs, ip, model, principal};
use mesh_policy::{AuthzIndex, L7Attributes, Reason, Request};

struct Row {
    name: &'static str,
    /// Flow-style spec of one policy `p` targeting the waypoint Gateway.
    spec: &'static str,
    method: &'static str,
    path: &'static str,
    host: &'static str,
    headers: &'static [(&'static str, &'static str)],
    request_principal: Option<&'static str>,
    allowed: bool,
}

const fn row(
    name: &'static str,
    spec: &'static str,
    method: &'static str,
    path: &'static str,
    allowed: bool,
) -> Row {
    Row {
        name,
        spec,
        method,
        path,
        host: "server.foo.svc.cluster.local",
        headers: &[],
        request_principal: None,
        allowed,
    }
}

const TARGET: &str = "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]";

#[rustfmt::skip]
const ROWS: &[Row] = &[
    row("methods match", "{rules: [{to: [{operation: {methods: [GET]}}]}]}", "GET", "/", true),
    row("methods mismatch", "{rules: [{to: [{operation: {methods: [GET]}}]}]}", "POST", "/", false),
    row("notMethods", "{rules: [{to: [{operation: {notMethods: [DELETE]}}]}]}", "DELETE", "/", false),
    row("paths exact", "{rules: [{to: [{operation: {paths: [/health]}}]}]}", "GET", "/health", true),
    row("paths ignore the query", "{rules: [{to: [{operation: {paths: [/health]}}]}]}", "GET", "/health?full=1", true),
    row("paths prefix", "{rules: [{to: [{operation: {paths: ['/api/*']}}]}]}", "GET", "/api/v1/x", true),
    row("paths suffix", "{rules: [{to: [{operation: {paths: ['*.png']}}]}]}", "GET", "/img/a.png", true),
    row("paths template", "{rules: [{to: [{operation: {paths: ['/users/{*}/profile']}}]}]}", "GET", "/users/42/profile", true),
    row("paths template, two segments", "{rules: [{to: [{operation: {paths: ['/users/{*}/profile']}}]}]}", "GET", "/users/4/2/profile", false),
    row("notPaths", "{rules: [{to: [{operation: {notPaths: ['/admin*']}}]}]}", "GET", "/admin/x", false),
    row("hosts ignore case and port", "{rules: [{to: [{operation: {hosts: [SERVER.foo.svc.cluster.local]}}]}]}", "GET", "/", true),
    row("hosts suffix", "{rules: [{to: [{operation: {hosts: ['*.foo.svc.cluster.local']}}]}]}", "GET", "/", true),
    row("notHosts", "{rules: [{to: [{operation: {notHosts: ['server.*']}}]}]}", "GET", "/", false),
    Row { name: "header condition", spec: "{rules: [{when: [{key: 'request.headers[X-User]', values: [alice]}]}]}", method: "GET", path: "/", host: "h", headers: &[("x-user", "alice")], request_principal: None, allowed: true },
    Row { name: "header condition, absent", spec: "{rules: [{when: [{key: 'request.headers[x-user]', values: ['*']}]}]}", method: "GET", path: "/", host: "h", headers: &[], request_principal: None, allowed: false },
    Row { name: "requestPrincipals", spec: "{rules: [{from: [{source: {requestPrincipals: ['https://issuer/*']}}]}]}", method: "GET", path: "/", host: "h", headers: &[], request_principal: Some("https://issuer/alice"), allowed: true },
    Row { name: "requestPrincipals without JWT", spec: "{rules: [{from: [{source: {requestPrincipals: ['*']}}]}]}", method: "GET", path: "/", host: "h", headers: &[], request_principal: None, allowed: false },
    Row { name: "request.auth.principal condition", spec: "{rules: [{when: [{key: request.auth.principal, values: [https://issuer/alice]}]}]}", method: "GET", path: "/", host: "h", headers: &[], request_principal: Some("https://issuer/alice"), allowed: true },
    row("claims condition", "{rules: [{when: [{key: 'request.auth.claims[groups]', values: [admins]}]}]}", "GET", "/", true),
    row("nested claims condition", "{rules: [{when: [{key: 'request.auth.claims[org][team]', values: [core]}]}]}", "GET", "/", true),
    row("audiences condition", "{rules: [{when: [{key: request.auth.audiences, values: [api]}]}]}", "GET", "/", true),
    row("presenter condition", "{rules: [{when: [{key: request.auth.presenter, values: [other-app]}]}]}", "GET", "/", false),
    row("L4 fields still apply at L7", "{rules: [{from: [{source: {namespaces: [bar]}}], to: [{operation: {methods: [GET], ports: ['8080']}}]}]}", "GET", "/", true),
];

#[test]
fn l7_table() {
    let mut failures = Vec::new();
    let claims: &[(&str, &[&str])] = &[("groups", &["users", "admins"]), ("org.team", &["core"])];
    let audiences = ["web", "api"];
    for r in ROWS {
        let text = docs(&[doc(
            "AuthorizationPolicy",
            "foo",
            "p",
            &r.spec.replacen('{', &format!("{{{TARGET}, "), 1),
        )]);
        let m = model(&text);
        let index = AuthzIndex::new(&m);
        let at_waypoint = index.for_target(&m, "Gateway", "foo", "waypoint");
        assert_eq!(at_waypoint.len(), 1, "{}: the targeted policy applies at the waypoint", r.name);
        let at_workload = index.for_workload(&m, m.workload("foo", "server").unwrap());
        assert!(at_workload.is_empty(), "{}: and not at the workload", r.name);

        let host = if r.host == "server.foo.svc.cluster.local" {
            "server.foo.svc.cluster.local:8080"
        } else {
            r.host
        };
        let l7 = L7Attributes {
            method: Some(r.method),
            path: Some(r.path),
            host: Some(host),
            headers: &r.headers,
            request_principal: r.request_principal,
            audiences: &audiences,
            presenter: Some("web-app"),
            claims: &claims,
            ..Default::default()
        };
        let id = principal("cluster.local/ns/bar/sa/client");
        let req = Request { l7: Some(&l7), ..Request::l4(ip("10.0.2.20"), Some(&id), ip("10.0.1.10"), 8080) };
        let d = at_waypoint.evaluate(&req);
        let want_reason = if r.allowed { Reason::AllowMatched } else { Reason::NoAllowMatched };
        if d.allowed != r.allowed || d.reason != want_reason || d.l7_rules_skipped {
            failures.push(format!("{}: got {d:?}", r.name));
        }
    }
    assert!(failures.is_empty(), "{} failing rows:\n{}", failures.len(), failures.join("\n"));
}
