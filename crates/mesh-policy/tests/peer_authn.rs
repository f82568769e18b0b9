//! Table-driven PeerAuthentication composition: mesh / namespace / workload precedence,
//! UNSET inheritance, portLevelMtls, oldest wins, Istio's special cases (empty selector,
//! selector in the root namespace), and the plaintext decision.

mod common;

use common::{model, workload};
use mesh_policy::{MtlsMode, effective_mtls, plaintext_allowed, resolve_peer_authn};

use MtlsMode::{Disable, Permissive, Strict};

/// A PeerAuthentication document; `created` is an RFC 3339 creationTimestamp.
fn pa(ns: &str, name: &str, created: Option<&str>, spec: &str) -> String {
    let ts = created.map(|t| format!(", creationTimestamp: '{t}'")).unwrap_or_default();
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}{ts}}}\nspec: {spec}\n"
    )
}

struct Row {
    name: &'static str,
    /// (namespace, name, creationTimestamp, flow-style spec).
    policies: &'static [(&'static str, &'static str, Option<&'static str>, &'static str)],
    /// Workload `ns/name` and target port.
    dst: &'static str,
    port: u16,
    want: MtlsMode,
}

const fn row(
    name: &'static str,
    policies: &'static [(&'static str, &'static str, Option<&'static str>, &'static str)],
    port: u16,
    want: MtlsMode,
) -> Row {
    Row { name, policies, dst: "foo/server", port, want }
}

const STRICT: &str = "{mtls: {mode: STRICT}}";
const PERMISSIVE: &str = "{mtls: {mode: PERMISSIVE}}";
const DISABLE: &str = "{mtls: {mode: DISABLE}}";
const UNSET: &str = "{mtls: {mode: UNSET}}";
const T1: Option<&str> = Some("2024-01-01T00:00:00Z");
const T2: Option<&str> = Some("2024-06-01T00:00:00Z");

#[rustfmt::skip]
const ROWS: &[Row] = &[
    row("default is PERMISSIVE", &[], 8080, Permissive),
    row("mesh STRICT", &[("istio-system", "default", None, STRICT)], 8080, Strict),
    row("mesh DISABLE", &[("istio-system", "default", None, DISABLE)], 8080, Disable),
    row("namespace overrides mesh", &[("istio-system", "default", None, STRICT), ("foo", "ns", None, PERMISSIVE)], 8080, Permissive),
    row("namespace UNSET inherits mesh", &[("istio-system", "default", None, STRICT), ("foo", "ns", None, UNSET)], 8080, Strict),
    row("namespace without mtls inherits mesh", &[("istio-system", "default", None, STRICT), ("foo", "ns", None, "{}")], 8080, Strict),
    row("mesh UNSET is PERMISSIVE", &[("istio-system", "default", None, UNSET)], 8080, Permissive),
    row("workload overrides namespace", &[("foo", "ns", None, DISABLE), ("foo", "w", None, "{selector: {matchLabels: {app: server}}, mtls: {mode: STRICT}}")], 8080, Strict),
    row("workload UNSET inherits namespace", &[("foo", "ns", None, STRICT), ("foo", "w", None, "{selector: {matchLabels: {app: server}}, mtls: {mode: UNSET}}")], 8080, Strict),
    row("workload UNSET inherits mesh through namespace UNSET", &[("istio-system", "m", None, STRICT), ("foo", "ns", None, UNSET), ("foo", "w", None, "{selector: {matchLabels: {app: server}}}")], 8080, Strict),
    row("selector not matching is ignored", &[("foo", "ns", None, STRICT), ("foo", "w", None, "{selector: {matchLabels: {app: other}}, mtls: {mode: DISABLE}}")], 8080, Strict),
    row("other namespace's policy is ignored", &[("bar", "ns", None, STRICT)], 8080, Permissive),
    row("portLevelMtls overrides for its port", &[("foo", "w", None, "{selector: {matchLabels: {app: server}}, mtls: {mode: STRICT}, portLevelMtls: {'8080': {mode: DISABLE}}}")], 8080, Disable),
    row("portLevelMtls leaves other ports", &[("foo", "w", None, "{selector: {matchLabels: {app: server}}, mtls: {mode: STRICT}, portLevelMtls: {'8080': {mode: DISABLE}}}")], 9090, Strict),
    row("portLevelMtls PERMISSIVE under STRICT namespace", &[("foo", "ns", None, STRICT), ("foo", "w", None, "{selector: {matchLabels: {app: server}}, portLevelMtls: {'9090': {mode: PERMISSIVE}}}")], 9090, Permissive),
    row("portLevelMtls UNSET inherits the workload's resolved mode", &[("foo", "ns", None, STRICT), ("foo", "w", None, "{selector: {matchLabels: {app: server}}, portLevelMtls: {'8080': {mode: UNSET}}}")], 8080, Strict),
    row("selector policy in root namespace is ignored (Istio)", &[("istio-system", "w", None, "{selector: {matchLabels: {app: server}}, mtls: {mode: STRICT}}")], 8080, Permissive),
    row("oldest namespace policy wins (timestamp)", &[("foo", "a-new", T2, STRICT), ("foo", "z-old", T1, DISABLE)], 8080, Disable),
    row("oldest mesh policy wins (timestamp)", &[("istio-system", "a-new", T2, DISABLE), ("istio-system", "z-old", T1, STRICT)], 8080, Strict),
    row("no timestamps: name decides", &[("foo", "a", None, PERMISSIVE), ("foo", "b", None, STRICT)], 8080, Permissive),
    row("missing timestamp counts as oldest", &[("foo", "a", T1, STRICT), ("foo", "b", None, DISABLE)], 8080, Disable),
    row("oldest workload policy wins", &[("foo", "w1", T2, "{selector: {matchLabels: {app: server}}, mtls: {mode: DISABLE}}"), ("foo", "w2", T1, "{selector: {matchLabels: {version: v1}}, mtls: {mode: STRICT}}")], 8080, Strict),
    row("empty selector is namespace-wide", &[("foo", "a", None, "{selector: {matchLabels: {}}, mtls: {mode: DISABLE}}"), ("foo", "z", None, "{selector: {matchLabels: {app: server}}, mtls: {mode: STRICT}}")], 8080, Strict),
    Row { name: "root-namespace workload: namespace policy is mesh-wide", policies: &[("istio-system", "m", None, STRICT)], dst: "istio-system/istiod", port: 15012, want: Strict },
    Row { name: "mesh policy reaches other namespaces", policies: &[("istio-system", "m", None, STRICT)], dst: "bar/client", port: 80, want: Strict },
];

#[test]
fn peer_authentication_table() {
    let mut failures = Vec::new();
    for r in ROWS {
        let text: Vec<String> = r.policies.iter().map(|(ns, n, t, s)| pa(ns, n, *t, s)).collect();
        let m = model(&text.join("---\n"));
        let w = workload(&m, r.dst);
        let got = effective_mtls(&m, w, r.port);
        if got != r.want {
            failures.push(format!("{}: got {got:?}, want {:?}", r.name, r.want));
        }
    }
    assert!(failures.is_empty(), "{} failing rows:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn plaintext_decision() {
    assert!(!plaintext_allowed(Strict));
    assert!(plaintext_allowed(Permissive));
    assert!(plaintext_allowed(Disable));
    assert!(plaintext_allowed(MtlsMode::Unset), "UNSET means the PERMISSIVE default");
}

#[test]
fn resolved_policy_names_the_chosen_policies() {
    let text = [
        pa("istio-system", "mesh", None, STRICT),
        pa("foo", "ns-b", None, UNSET),
        pa("foo", "ns-a", None, PERMISSIVE),
        pa(
            "foo",
            "w",
            None,
            "{selector: {matchLabels: {app: server}}, portLevelMtls: {'9090': {mode: STRICT}}}",
        ),
    ];
    let m = model(&text.join("---\n"));
    let r = resolve_peer_authn(&m, workload(&m, "foo/server"));
    assert_eq!(r.mesh_policy.as_ref().map(|(n, p)| (&**n, &**p)), Some(("istio-system", "mesh")));
    assert_eq!(r.namespace_policy.as_ref().map(|(_, p)| &**p), Some("ns-a"), "oldest by name");
    assert_eq!(r.workload_policy.as_ref().map(|(_, p)| &**p), Some("w"));
    assert_eq!(r.mode, Permissive, "namespace PERMISSIVE over mesh STRICT, workload UNSET");
    assert!(r.allows_plaintext(8080));
    assert!(!r.allows_plaintext(9090), "port-level STRICT refuses plaintext");

    let other = resolve_peer_authn(&m, workload(&m, "foo/other"));
    assert_eq!(other.workload_policy, None);
    assert_eq!(other.mode_for_port(9090), Permissive);
}
