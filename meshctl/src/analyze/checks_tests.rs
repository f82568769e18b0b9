//! Unit tests of the cross-object checks through [`crate::analyze::cross_check`], on objects
//! parsed by `mesh-api` exactly as the loader parses them.

use mesh_api::{Diagnostic, Object, Origin, Parsed, Severity, parse_object};
use mesh_model::MeshConfig;
use serde_json::{Value, json};

use crate::analyze::cross_check;

fn objects(values: Vec<Value>) -> Vec<(Object, Origin)> {
    values
        .into_iter()
        .enumerate()
        .map(|(doc, v)| match parse_object(v) {
            Parsed::Object { object, .. } => (object, Origin::File { path: "t.yaml".into(), doc }),
            other => panic!("document {doc} is not a valid object: {other:?}"),
        })
        .collect()
}

fn check(values: Vec<Value>) -> Vec<Diagnostic> {
    let (model, _) = mesh_model::translate(&objects(values), &MeshConfig::default());
    cross_check(&model)
}

fn lines(diags: &[Diagnostic]) -> Vec<String> {
    diags.iter().map(ToString::to_string).collect()
}

fn service(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
           "spec": {"ports": [{"name": "http", "port": 9080}]}})
}

fn pod(ns: &str, name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
           "spec": {"containers": [{"name": "app", "image": "app"}]}})
}

fn peer_auth(ns: &str, name: &str, created: Option<&str>, selector: Option<Value>) -> Value {
    let mut v = json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                       "metadata": {"name": name, "namespace": ns}, "spec": {"mtls": {"mode": "STRICT"}}});
    if let Some(c) = created {
        v["metadata"]["creationTimestamp"] = json!(c);
    }
    if let Some(s) = selector {
        v["spec"]["selector"] = json!({ "matchLabels": s });
    }
    v
}

#[test]
fn subsets_resolve_through_aliases_and_wildcard_hosts() {
    let diags = check(vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bookinfo"}}),
        service("bookinfo", "reviews"),
        // A wildcard DestinationRule in bookinfo covers every Service of the namespace.
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
               "metadata": {"name": "all", "namespace": "bookinfo"},
               "spec": {"host": "*.bookinfo.svc.cluster.local",
                        "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}}),
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "r", "namespace": "frontend"},
        "spec": {"hosts": ["reviews.bookinfo"], "http": [{"route": [
            {"destination": {"host": "reviews.bookinfo", "subset": "v1"}, "weight": 50},
            {"destination": {"host": "reviews.bookinfo.svc.cluster.local", "subset": "v2"}, "weight": 50}
        ]}]}}),
    ]);
    assert_eq!(
        lines(&diags),
        [
            "t.yaml:3 VirtualService frontend/r: spec.http[0].route[1].destination.subset: subset \"v2\" is not \
          defined by any DestinationRule for host reviews.bookinfo.svc.cluster.local"
        ]
    );
}

#[test]
fn service_entry_hosts_are_taken_as_written() {
    // As in Istio, ServiceEntry hosts are not expanded, while a short destination host is:
    // `legacy-db` in a VirtualService means legacy-db.shop.svc.cluster.local.
    let diags = check(vec![
        json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
               "metadata": {"name": "legacy", "namespace": "shop"},
               "spec": {"hosts": ["legacy-db", "db.legacy.internal"],
                        "ports": [{"number": 5432, "name": "tcp", "protocol": "TCP"}],
                        "resolution": "STATIC", "endpoints": [{"address": "192.0.2.1"}]}}),
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"hosts": ["db.legacy.internal"], "tcp": [
            {"route": [{"destination": {"host": "db.legacy.internal"}}]},
            {"route": [{"destination": {"host": "legacy-db"}}]}
        ]}}),
    ]);
    assert_eq!(
        lines(&diags),
        ["t.yaml:1 VirtualService shop/db: spec.tcp[1].route[0].destination.host: host \"legacy-db\" \
          (legacy-db.shop.svc.cluster.local) has no Service or ServiceEntry"]
    );
}

#[test]
fn oldest_peer_authentication_wins_whatever_its_name() {
    let diags = check(vec![
        peer_auth("bookinfo", "a-newer", Some("2025-02-01T00:00:00Z"), None),
        peer_auth("bookinfo", "z-older", Some("2025-01-01T00:00:00Z"), None),
        // Other scopes do not conflict with the namespace-wide ones.
        peer_auth("other", "default", None, None),
        pod("bookinfo", "p", json!({"app": "reviews"})),
        peer_auth("bookinfo", "reviews", None, Some(json!({"app": "reviews"}))),
    ]);
    assert_eq!(diags.len(), 1, "{:?}", lines(&diags));
    assert_eq!(diags[0].object.name, "a-newer");
    assert_eq!(diags[0].severity, Severity::Error);
    assert!(diags[0].message.contains("bookinfo/z-older"), "{}", diags[0].message);
}

#[test]
fn root_namespace_selectors_match_every_namespace() {
    let policy = |ns: &str| {
        json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
               "metadata": {"name": "deny", "namespace": ns},
               "spec": {"selector": {"matchLabels": {"app": "ratings"}}, "action": "DENY",
                        "rules": [{"to": [{"operation": {"ports": ["9090"]}}]}]}})
    };
    let diags = check(vec![pod("bookinfo", "ratings", json!({"app": "ratings"})), policy("istio-system")]);
    assert!(diags.is_empty(), "{:?}", lines(&diags));
    // Without any pod in the input the workloads are unknown, and selectors are not judged.
    assert!(check(vec![policy("other")]).is_empty());
    let diags = check(vec![pod("bookinfo", "ratings", json!({"app": "ratings"})), policy("other")]);
    assert_eq!(
        lines(&diags),
        [
            "t.yaml:1 AuthorizationPolicy other/deny: spec.selector.matchLabels: warning: selects no workload: \
          no pod in namespace other has labels app=ratings"
        ]
    );
}

#[test]
fn backend_refs_use_their_own_namespace() {
    let diags = check(vec![
        service("backend", "api"),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "frontend"},
        "spec": {"rules": [{"backendRefs": [
            {"name": "api", "namespace": "backend", "port": 9080},
            {"name": "api", "port": 9080}
        ]}]}}),
    ]);
    assert_eq!(
        lines(&diags),
        ["t.yaml:1 HTTPRoute frontend/r: spec.rules[0].backendRefs[1].name: Service \"api\" not found in \
          namespace frontend"]
    );
}
