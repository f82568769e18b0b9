//! Compilation: invalid entries fail closed with a diagnostic (ALLOW never matches, DENY
//! always matches), CUSTOM is reported, L7-only policies are flagged for the caller's log,
//! and the index selects workload and waypoint policies.

mod common;

use std::sync::Arc;

use common::{doc, docs, ip, model, principal, workload};
use mesh_api::Origin;
use mesh_api::istio::security::{AuthorizationAction, AuthorizationPolicySpec};
use mesh_model::{MeshConfig, PolicyScope};
use mesh_policy::{AuthzIndex, AuthzPolicies, CompiledPolicy, PolicyMatch, Reason, Request};

/// Compiles a spec written in YAML without the validation `parse_object` applies, so
/// entries validation would refuse reach the compiler.
fn compile(name: &str, yaml: &str) -> Arc<CompiledPolicy> {
    let spec: AuthorizationPolicySpec = serde_yaml::from_str(yaml).expect("spec");
    Arc::new(CompiledPolicy::from_spec(
        "foo".into(),
        name.into(),
        PolicyScope::Namespace,
        Box::new([]),
        &spec,
        Origin::Unknown,
        &MeshConfig::default(),
    ))
}

fn bar_client_req(id: &mesh_api::SpiffeId) -> Request<'_> {
    Request::l4(ip("10.0.2.20"), Some(id), ip("10.0.1.10"), 8080)
}

#[test]
fn invalid_entries_fail_closed() {
    let id = principal("cluster.local/ns/bar/sa/client");
    let req = bar_client_req(&id);
    // Each bad entry, in an ALLOW policy (never matches) and a DENY policy (always matches).
    let bad = [
        ("ipBlocks", "rules: [{from: [{source: {ipBlocks: [10.0.2.0/24, 10.0.0.0/99]}}]}]"),
        ("notIpBlocks", "rules: [{from: [{source: {notIpBlocks: [not-an-ip]}}]}]"),
        ("remoteIpBlocks", "rules: [{from: [{source: {remoteIpBlocks: ['10.0.2.300']}}]}]"),
        ("ports", "rules: [{to: [{operation: {ports: ['8080', http]}}]}]"),
        ("notPorts", "rules: [{to: [{operation: {notPorts: ['70000']}}]}]"),
        ("condition value", "rules: [{when: [{key: source.ip, values: [nope]}]}]"),
        ("condition port", "rules: [{when: [{key: destination.port, values: [x]}]}]"),
        ("condition key", "rules: [{when: [{key: source.colour, values: [red]}]}]"),
        ("experimental key", "rules: [{when: [{key: 'experimental.envoy.filters.a.b[c]', values: [d]}]}]"),
        ("header key", "rules: [{when: [{key: 'request.headers[]', values: [d]}]}]"),
        ("condition without values", "rules: [{when: [{key: source.ip}]}]"),
        ("path template", "rules: [{to: [{operation: {paths: ['/a/{**}/b']}}]}]"),
        ("source missing", "rules: [{from: [{}]}]"),
        ("serviceAccount", "rules: [{from: [{source: {serviceAccounts: [a/b/c]}}]}]"),
    ];
    for (what, rules) in bad {
        let allow = compile("allow", &format!("{{action: ALLOW, {rules}}}"));
        assert!(allow.has_invalid_rules(), "{what}: flagged");
        let d = &allow.diagnostics()[0];
        assert!(d.is_error() && d.message.contains("fails closed"), "{what}: {d}");
        assert!(d.field.starts_with("spec.rules[0]"), "{what}: field {}", d.field);
        assert_eq!(allow.matches(&req), PolicyMatch::NotMatched, "{what}: ALLOW never matches");
        let decision = AuthzPolicies::new([allow.clone()]).evaluate(&req);
        assert_eq!((decision.allowed, decision.reason), (false, Reason::NoAllowMatched), "{what}");

        let deny = compile("deny", &format!("{{action: DENY, {rules}}}"));
        assert_eq!(deny.matches(&req), PolicyMatch::Matched, "{what}: DENY always matches");
        let decision = AuthzPolicies::new([deny]).evaluate(&req);
        assert_eq!((decision.allowed, decision.reason), (false, Reason::DenyMatched), "{what}");
    }
}

#[test]
fn invalid_rule_does_not_spoil_valid_rules() {
    let id = principal("cluster.local/ns/bar/sa/client");
    let p = compile(
        "p",
        "{rules: [{from: [{source: {ipBlocks: [bad]}}]}, {from: [{source: {namespaces: [bar]}}]}]}",
    );
    assert_eq!(p.diagnostics().len(), 1);
    assert_eq!(p.diagnostics()[0].field, "spec.rules[0].from[0].source.ipBlocks[0]");
    assert_eq!(p.matches(&bar_client_req(&id)), PolicyMatch::Matched, "the valid second rule matches");
}

#[test]
fn custom_is_reported_and_denies_on_match() {
    let p = compile(
        "ext",
        "{action: CUSTOM, provider: {name: opa}, rules: [{to: [{operation: {ports: ['8080']}}]}]}",
    );
    assert_eq!(p.action(), AuthorizationAction::Custom);
    assert_eq!(p.provider(), Some("opa"));
    let d = &p.diagnostics()[0];
    assert!(!d.is_error() && d.field == "spec.action", "{d}");
    assert!(d.message.contains("\"opa\"") && d.message.contains("denied"), "{d}");
    let id = principal("cluster.local/ns/bar/sa/client");
    let set = AuthzPolicies::new([p]);
    let d = set.evaluate(&bar_client_req(&id));
    assert_eq!(
        (d.allowed, d.reason, d.policy_name()),
        (false, Reason::CustomUnavailable, Some(("foo", "ext")))
    );
    assert_eq!(Reason::CustomUnavailable.as_str(), "custom_provider_unavailable");
    let other_port = Request::l4(ip("10.0.2.20"), Some(&id), ip("10.0.1.10"), 9090);
    assert!(set.evaluate(&other_port).allowed, "not matching: the provider would not be asked");
}

#[test]
fn l7_flags_for_logging() {
    let l7_only = compile(
        "l7",
        "{rules: [{to: [{operation: {methods: [GET]}}]}, {when: [{key: 'request.headers[a]', values: [b]}]}]}",
    );
    assert!(l7_only.needs_l7() && l7_only.l7_only());
    let mixed = compile(
        "mixed",
        "{rules: [{to: [{operation: {methods: [GET]}}]}, {to: [{operation: {ports: ['1']}}]}]}",
    );
    assert!(mixed.needs_l7() && !mixed.l7_only());
    let l4 = compile(
        "l4",
        "{rules: [{from: [{source: {namespaces: [a], ipBlocks: [1.2.3.4]}}], when: [{key: destination.port, values: ['80']}]}]}",
    );
    assert!(!l4.needs_l7() && !l4.l7_only());
    let empty = compile("empty", "{}");
    assert!(!empty.l7_only() && empty.rule_count() == 0 && empty.diagnostics().is_empty());

    let set = AuthzPolicies::new([l7_only.clone(), mixed, l4]);
    let names: Vec<&str> = set.l7_only().map(|p| p.name()).collect();
    assert_eq!(names, ["l7"]);
    let id = principal("cluster.local/ns/bar/sa/client");
    assert_eq!(l7_only.matches(&bar_client_req(&id)), PolicyMatch::SkippedL7);
}

#[test]
fn index_selects_by_scope_and_target() {
    let text = docs(&[
        doc(
            "AuthorizationPolicy",
            "istio-system",
            "mesh-deny",
            "{action: DENY, rules: [{from: [{source: {namespaces: [evil]}}]}]}",
        ),
        doc(
            "AuthorizationPolicy",
            "istio-system",
            "root-selector",
            "{selector: {matchLabels: {app: server}}, rules: [{}]}",
        ),
        doc("AuthorizationPolicy", "foo", "ns-audit", "{action: AUDIT, rules: [{}]}"),
        doc(
            "AuthorizationPolicy",
            "foo",
            "for-server",
            "{selector: {matchLabels: {app: server}}, rules: [{}]}",
        ),
        doc(
            "AuthorizationPolicy",
            "foo",
            "for-other",
            "{selector: {matchLabels: {app: other}}, rules: [{}]}",
        ),
        doc(
            "AuthorizationPolicy",
            "foo",
            "at-waypoint",
            "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}], rules: [{to: [{operation: {methods: [GET]}}]}]}",
        ),
        doc(
            "AuthorizationPolicy",
            "foo",
            "at-service",
            "{targetRef: {kind: Service, group: '', name: server}, action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}",
        ),
        doc("AuthorizationPolicy", "bar", "elsewhere", "{action: DENY, rules: [{}]}"),
    ]);
    let m = model(&text);
    let index = AuthzIndex::new(&m);
    assert_eq!(index.policies().len(), 8);
    assert_eq!(index.generation(), m.generation());
    assert!(index.get("foo", "for-server").is_some() && index.get("foo", "nope").is_none());

    let names = |s: &AuthzPolicies| {
        let mut v: Vec<String> = s.iter().map(|p| format!("{}/{}", p.namespace(), p.name())).collect();
        v.sort();
        v
    };
    let server = index.for_workload(&m, workload(&m, "foo/server"));
    assert_eq!(
        names(&server),
        ["foo/for-server", "foo/ns-audit", "istio-system/mesh-deny", "istio-system/root-selector"]
    );
    let client = index.for_workload(&m, workload(&m, "bar/client"));
    assert_eq!(names(&client), ["bar/elsewhere", "istio-system/mesh-deny"]);

    let wp = index.for_target(&m, "Gateway", "foo", "waypoint");
    assert_eq!(names(&wp), ["foo/at-waypoint"]);
    let svc = index.for_target(&m, "Service", "foo", "server");
    assert_eq!(names(&svc), ["foo/at-service"]);
    assert_eq!(svc.iter().next().unwrap().scope(), PolicyScope::Targeted);
    let targeted: Vec<&str> = index.targeted().map(|p| p.name()).collect();
    assert_eq!(targeted, ["at-service", "at-waypoint"]);
    let t = &index.get("foo", "at-service").unwrap().target_refs()[0];
    assert_eq!((&*t.kind, &*t.namespace, &*t.name), ("Service", "foo", "server"));

    // A waypoint serving both targets merges the sets.
    let merged = AuthzPolicies::new(wp.iter().chain(svc.iter()).cloned());
    assert_eq!(merged.len(), 2);

    // The server's set: the audit policy marks, the root selector ALLOW admits.
    let id = principal("cluster.local/ns/bar/sa/client");
    let d = server.evaluate(&Request::l4(ip("10.0.2.20"), Some(&id), ip("10.0.1.10"), 8080));
    assert!(d.allowed && d.audit);
    assert_eq!(d.audit_policy.as_ref().map(|p| p.name()), Some("ns-audit"));
    assert_eq!(d.policy_name(), Some(("istio-system", "root-selector")), "first ALLOW in namespace order");
    let evil = principal("cluster.local/ns/evil/sa/x");
    let d = server.evaluate(&Request::l4(ip("10.9.0.1"), Some(&evil), ip("10.0.1.10"), 8080));
    assert_eq!(
        (d.allowed, d.reason, d.policy_name()),
        (false, Reason::DenyMatched, Some(("istio-system", "mesh-deny")))
    );
}
