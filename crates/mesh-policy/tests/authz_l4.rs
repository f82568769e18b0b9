//! Table-driven L4 authorization: every source/operation/condition field, Istio's action
//! order, empty rules, L7-only rules at L4 and the mesh/namespace/selector scopes. Each row
//! builds its model from YAML through the real pipeline and evaluates one connection to a
//! workload, as ztunnel's inbound path does.

mod common;

use common::{doc, docs, ip, model, principal, workload};
use mesh_policy::{AuthzIndex, Reason, Request};

const BAR_CLIENT: &str = "cluster.local/ns/bar/sa/client";
const FOO_OTHER: &str = "cluster.local/ns/foo/sa/other";

/// The connecting peer.
#[derive(Clone, Copy)]
struct Src {
    principal: Option<&'static str>,
    ip: &'static str,
}

const fn mtls(principal: &'static str, ip: &'static str) -> Src {
    Src { principal: Some(principal), ip }
}

const fn plain(ip: &'static str) -> Src {
    Src { principal: None, ip }
}

const FROM_BAR: Src = mtls(BAR_CLIENT, "10.0.2.20");
const FROM_FOO: Src = mtls(FOO_OTHER, "10.0.1.11");
const PLAIN_BAR: Src = plain("10.0.2.20");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Want {
    allowed: bool,
    reason: Reason,
    policy: Option<&'static str>,
    audit: bool,
    l7_skipped: bool,
}

const fn want(allowed: bool, reason: Reason, policy: Option<&'static str>) -> Want {
    Want { allowed, reason, policy, audit: false, l7_skipped: false }
}
const ALLOW_NONE: Want = want(true, Reason::NoAllowPolicies, None);
const DENY_NO_ALLOW: Want = want(false, Reason::NoAllowMatched, None);
const fn allowed_by(p: &'static str) -> Want {
    want(true, Reason::AllowMatched, Some(p))
}
const fn denied_by(p: &'static str) -> Want {
    want(false, Reason::DenyMatched, Some(p))
}
impl Want {
    const fn audited(mut self) -> Self {
        self.audit = true;
        self
    }
    const fn skipped(mut self) -> Self {
        self.l7_skipped = true;
        self
    }
}

struct Row {
    name: &'static str,
    /// `(kind-less namespace, name, flow-style spec)` of AuthorizationPolicies.
    policies: &'static [(&'static str, &'static str, &'static str)],
    src: Src,
    /// Destination workload `ns/name` and port.
    dst: &'static str,
    port: u16,
    want: Want,
}

const fn row(
    name: &'static str,
    policies: &'static [(&'static str, &'static str, &'static str)],
    src: Src,
    port: u16,
    want: Want,
) -> Row {
    Row { name, policies, src, dst: "foo/server", port, want }
}

const ANY: &str = "{rules: [{}]}";
const FROM_NS_BAR: &str = "{rules: [{from: [{source: {namespaces: [bar]}}]}]}";

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // ---- action order ----
    row("no policies: allow", &[], FROM_BAR, 8080, ALLOW_NONE),
    row("allow matches", &[("foo", "p", FROM_NS_BAR)], FROM_BAR, 8080, allowed_by("p")),
    row("allow present, none matches: deny", &[("foo", "p", FROM_NS_BAR)], FROM_FOO, 8080, DENY_NO_ALLOW),
    row("deny before allow", &[("foo", "a", ANY), ("foo", "d", "{action: DENY, rules: [{from: [{source: {namespaces: [bar]}}]}]}")], FROM_BAR, 8080, denied_by("d")),
    row("deny not matching, no allow: allow", &[("foo", "d", "{action: DENY, rules: [{from: [{source: {namespaces: [bar]}}]}]}")], FROM_FOO, 8080, ALLOW_NONE),
    row("deny not matching, allow matching", &[("foo", "a", ANY), ("foo", "d", "{action: DENY, rules: [{from: [{source: {namespaces: [baz]}}]}]}")], FROM_BAR, 8080, allowed_by("a")),
    row("allow without rules allows nothing", &[("foo", "p", "{action: ALLOW}")], FROM_BAR, 8080, DENY_NO_ALLOW),
    row("allow with rules: [] allows nothing", &[("foo", "p", "{rules: []}")], FROM_BAR, 8080, DENY_NO_ALLOW),
    row("allow {} rule allows all", &[("foo", "p", ANY)], PLAIN_BAR, 8080, allowed_by("p")),
    row("deny without rules denies nothing", &[("foo", "d", "{action: DENY}")], FROM_BAR, 8080, ALLOW_NONE),
    row("deny {} rule denies all", &[("foo", "d", "{action: DENY, rules: [{}]}")], FROM_BAR, 8080, denied_by("d")),
    row("second allow policy matches", &[("foo", "a1", "{rules: [{from: [{source: {namespaces: [baz]}}]}]}"), ("foo", "a2", FROM_NS_BAR)], FROM_BAR, 8080, allowed_by("a2")),
    row("audit marks, allows", &[("foo", "au", "{action: AUDIT, rules: [{}]}")], FROM_BAR, 8080, ALLOW_NONE.audited()),
    row("audit marks a denied request too", &[("foo", "au", "{action: AUDIT, rules: [{}]}"), ("foo", "d", "{action: DENY, rules: [{}]}")], FROM_BAR, 8080, denied_by("d").audited()),
    row("audit not matching does not mark", &[("foo", "au", "{action: AUDIT, rules: [{from: [{source: {namespaces: [baz]}}]}]}")], FROM_BAR, 8080, ALLOW_NONE),
    row("audit does not count as allow", &[("foo", "au", "{action: AUDIT, rules: [{}]}"), ("foo", "p", FROM_NS_BAR)], FROM_FOO, 8080, DENY_NO_ALLOW.audited()),
    row("custom matching: denied, provider unavailable", &[("foo", "c", "{action: CUSTOM, provider: {name: ext-authz}, rules: [{}]}"), ("foo", "a", ANY)], FROM_BAR, 8080, want(false, Reason::CustomUnavailable, Some("c"))),
    row("custom not matching falls through", &[("foo", "c", "{action: CUSTOM, provider: {name: ext-authz}, rules: [{to: [{operation: {ports: ['9090']}}]}]}")], FROM_BAR, 8080, ALLOW_NONE),
    row("custom before deny", &[("foo", "c", "{action: CUSTOM, provider: {name: ext-authz}, rules: [{}]}"), ("foo", "d", "{action: DENY, rules: [{}]}")], FROM_BAR, 8080, want(false, Reason::CustomUnavailable, Some("c"))),
    // ---- principals ----
    row("principals exact", &[("foo", "p", "{rules: [{from: [{source: {principals: [cluster.local/ns/bar/sa/client]}}]}]}")], FROM_BAR, 8080, allowed_by("p")),
    row("principals exact, other sa", &[("foo", "p", "{rules: [{from: [{source: {principals: [cluster.local/ns/bar/sa/clientx]}}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW),
    row("principals prefix", &[("foo", "p", "{rules: [{from: [{source: {principals: ['cluster.local/ns/bar/*']}}]}]}")], FROM_BAR, 8080, allowed_by("p")),
    row("principals prefix, other ns", &[("foo", "p", "{rules: [{from: [{source: {principals: ['cluster.local/ns/bar/*']}}]}]}")], FROM_FOO, 8080, DENY_NO_ALLOW),
    row("principals suffix", &[("foo", "p", "{rules: [{from: [{source: {principals: ['*/sa/client']}}]}]}")], FROM_BAR, 8080, allowed_by("p")),
    row("principals * with mTLS", &[("foo", "p", "{rules: [{from: [{source: {principals: ['*']}}]}]}")], FROM_BAR, 8080, allowed_by("p")),
    row("principals * plaintext", &[("foo", "p", "{rules: [{from: [{source: {principals: ['*']}}]}]}")], PLAIN_BAR, 8080, DENY_NO_ALLOW),
    row("principals with spiffe:// accepted", &[("foo", "p", "{rules: [{from: [{source: {principals: ['spiffe://cluster.local/ns/bar/sa/client']}}]}]}")], FROM_BAR, 8080, allowed_by("p")),
    row("principals other trust domain", &[("foo", "p", "{rules: [{from: [{source: {principals: [other.td/ns/bar/sa/client]}}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW),
    row("notPrincipals excludes", &[("foo", "p", "{rules: [{from: [{source: {notPrincipals: [cluster.local/ns/bar/sa/client]}}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW),
    row("notPrincipals admits others", &[("foo", "p", "{rules: [{from: [{source: {notPrincipals: [cluster.local/ns/bar/sa/client]}}]}]}")], FROM_FOO, 8080, allowed_by("p")),
    row("notPrincipals admits plaintext", &[("foo", "p", "{rules: [{from: [{source: {notPrincipals: [cluster.local/ns/bar/sa/client]}}]}]}")], PLAIN_BAR, 8080, allowed_by("p")),
    row("deny notPrincipals * refuses plaintext", &[("foo", "d", "{action: DENY, rules: [{from: [{source: {notPrincipals: ['*']}}]}]}")], PLAIN_BAR, 8080, denied_by("d")),
    row("deny notPrincipals * lets mTLS through", &[("foo", "d", "{action: DENY, rules: [{from: [{source: {notPrincipals: ['*']}}]}]}")], FROM_BAR, 8080, ALLOW_NONE),
    row("serviceAccounts ns/sa", &[("foo", "p", "{rules: [{from: [{source: {serviceAccounts: [bar/client]}}]}]}")], FROM_BAR, 8080, allowed_by("p")),
    row("notServiceAccounts", &[("foo", "p", "{rules: [{from: [{source: {notServiceAccounts: [bar/client]}}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW),
    row("trustDomains", &[("foo", "p", "{rules: [{from: [{source: {trustDomains: [cluster.local]}}]}]}")], FROM_BAR, 8080, allowed_by("p")),
    // ---- namespaces (from the peer's principal) ----
    row("namespaces match", &[("foo", "p", FROM_NS_BAR)], FROM_BAR, 8080, allowed_by("p")),
    row("namespaces need a principal", &[("foo", "p", FROM_NS_BAR)], PLAIN_BAR, 8080, DENY_NO_ALLOW),
    row("namespace from the principal, not the IP", &[("foo", "p", FROM_NS_BAR)], mtls("cluster.local/ns/bar/sa/x", "10.0.1.11"), 8080, allowed_by("p")),
    row("namespaces prefix", &[("foo", "p", "{rules: [{from: [{source: {namespaces: ['ba*']}}]}]}")], FROM_BAR, 8080, allowed_by("p")),
    row("notNamespaces excludes", &[("foo", "p", "{rules: [{from: [{source: {notNamespaces: [bar]}}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW),
    row("notNamespaces admits others", &[("foo", "p", "{rules: [{from: [{source: {notNamespaces: [bar]}}]}]}")], FROM_FOO, 8080, allowed_by("p")),
    // ---- ipBlocks / remoteIpBlocks ----
    row("ipBlocks v4 CIDR", &[("foo", "p", "{rules: [{from: [{source: {ipBlocks: [10.0.2.0/24]}}]}]}")], PLAIN_BAR, 8080, allowed_by("p")),
    row("ipBlocks v4 CIDR, outside", &[("foo", "p", "{rules: [{from: [{source: {ipBlocks: [10.0.2.0/24]}}]}]}")], FROM_FOO, 8080, DENY_NO_ALLOW),
    row("ipBlocks single IP", &[("foo", "p", "{rules: [{from: [{source: {ipBlocks: [10.0.2.20]}}]}]}")], PLAIN_BAR, 8080, allowed_by("p")),
    row("ipBlocks v6 CIDR", &[("foo", "p", "{rules: [{from: [{source: {ipBlocks: ['fd00:2::/64']}}]}]}")], plain("fd00:2::20"), 8080, allowed_by("p")),
    row("ipBlocks v6 CIDR, outside", &[("foo", "p", "{rules: [{from: [{source: {ipBlocks: ['fd00:2::/64']}}]}]}")], plain("fd00:3::20"), 8080, DENY_NO_ALLOW),
    row("ipBlocks v4 matches v4-mapped v6 peer", &[("foo", "p", "{rules: [{from: [{source: {ipBlocks: [10.0.2.0/24]}}]}]}")], plain("::ffff:10.0.2.20"), 8080, allowed_by("p")),
    row("notIpBlocks excludes", &[("foo", "p", "{rules: [{from: [{source: {notIpBlocks: [10.0.2.0/24]}}]}]}")], PLAIN_BAR, 8080, DENY_NO_ALLOW),
    row("deny ipBlocks", &[("foo", "d", "{action: DENY, rules: [{from: [{source: {ipBlocks: [10.0.0.0/8]}}]}]}")], PLAIN_BAR, 8080, denied_by("d")),
    row("remoteIpBlocks is the source IP at L4", &[("foo", "p", "{rules: [{from: [{source: {remoteIpBlocks: [10.0.2.0/24]}}]}]}")], PLAIN_BAR, 8080, allowed_by("p")),
    row("notRemoteIpBlocks excludes", &[("foo", "p", "{rules: [{from: [{source: {notRemoteIpBlocks: [10.0.2.0/24]}}]}]}")], PLAIN_BAR, 8080, DENY_NO_ALLOW),
    // ---- ports (strings) ----
    row("ports match", &[("foo", "p", "{rules: [{to: [{operation: {ports: ['8080']}}]}]}")], FROM_BAR, 8080, allowed_by("p")),
    row("ports other port", &[("foo", "p", "{rules: [{to: [{operation: {ports: ['8080']}}]}]}")], FROM_BAR, 9090, DENY_NO_ALLOW),
    row("notPorts admits others", &[("foo", "p", "{rules: [{to: [{operation: {notPorts: ['9090']}}]}]}")], FROM_BAR, 8080, allowed_by("p")),
    row("notPorts excludes", &[("foo", "p", "{rules: [{to: [{operation: {notPorts: ['9090']}}]}]}")], FROM_BAR, 9090, DENY_NO_ALLOW),
    row("deny one port", &[("foo", "d", "{action: DENY, rules: [{to: [{operation: {ports: ['9090']}}]}]}")], FROM_BAR, 9090, denied_by("d")),
    row("deny one port, other port open", &[("foo", "d", "{action: DENY, rules: [{to: [{operation: {ports: ['9090']}}]}]}")], FROM_BAR, 8080, ALLOW_NONE),
    // ---- when ----
    row("when source.ip", &[("foo", "p", "{rules: [{when: [{key: source.ip, values: [10.0.2.0/24]}]}]}")], PLAIN_BAR, 8080, allowed_by("p")),
    row("when source.ip notValues", &[("foo", "p", "{rules: [{when: [{key: source.ip, notValues: [10.0.2.0/24]}]}]}")], PLAIN_BAR, 8080, DENY_NO_ALLOW),
    row("when source.namespace", &[("foo", "p", "{rules: [{when: [{key: source.namespace, values: [bar]}]}]}")], FROM_BAR, 8080, allowed_by("p")),
    row("when source.namespace notValues", &[("foo", "p", "{rules: [{when: [{key: source.namespace, notValues: [bar]}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW),
    row("when source.principal", &[("foo", "p", "{rules: [{when: [{key: source.principal, values: ['*/ns/bar/sa/client']}]}]}")], FROM_BAR, 8080, allowed_by("p")),
    row("when destination.port", &[("foo", "p", "{rules: [{when: [{key: destination.port, values: ['8080']}]}]}")], FROM_BAR, 9090, DENY_NO_ALLOW),
    row("when destination.ip", &[("foo", "p", "{rules: [{when: [{key: destination.ip, values: [10.0.1.10]}]}]}")], FROM_BAR, 8080, allowed_by("p")),
    row("when destination.ip notValues", &[("foo", "p", "{rules: [{when: [{key: destination.ip, notValues: [10.0.1.0/24]}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW),
    row("when remote.ip", &[("foo", "p", "{rules: [{when: [{key: remote.ip, values: [10.0.2.20]}]}]}")], PLAIN_BAR, 8080, allowed_by("p")),
    row("when values and notValues both apply", &[("foo", "p", "{rules: [{when: [{key: source.ip, values: [10.0.0.0/8], notValues: [10.0.2.20]}]}]}")], PLAIN_BAR, 8080, DENY_NO_ALLOW),
    // ---- combination ----
    row("source fields are ANDed", &[("foo", "p", "{rules: [{from: [{source: {namespaces: [bar], ipBlocks: [10.0.1.0/24]}}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW),
    row("from entries are ORed", &[("foo", "p", "{rules: [{from: [{source: {namespaces: [baz]}}, {source: {ipBlocks: [10.0.2.0/24]}}]}]}")], FROM_BAR, 8080, allowed_by("p")),
    row("from and to are ANDed", &[("foo", "p", "{rules: [{from: [{source: {namespaces: [bar]}}], to: [{operation: {ports: ['9090']}}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW),
    row("rules are ORed", &[("foo", "p", "{rules: [{from: [{source: {namespaces: [baz]}}]}, {to: [{operation: {ports: ['8080']}}]}]}")], FROM_BAR, 8080, allowed_by("p")),
    // ---- L7-only rules at L4 ----
    row("allow methods: never at L4", &[("foo", "p", "{rules: [{to: [{operation: {methods: [GET]}}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW.skipped()),
    row("allow paths with from: never at L4", &[("foo", "p", "{rules: [{from: [{source: {namespaces: [bar]}}], to: [{operation: {paths: ['/api*']}}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW.skipped()),
    row("allow hosts: never at L4", &[("foo", "p", "{rules: [{to: [{operation: {hosts: [server.foo]}}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW.skipped()),
    row("allow requestPrincipals: never at L4", &[("foo", "p", "{rules: [{from: [{source: {requestPrincipals: ['*']}}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW.skipped()),
    row("allow notRequestPrincipals: never at L4", &[("foo", "p", "{rules: [{from: [{source: {notRequestPrincipals: ['*']}}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW.skipped()),
    row("allow request.headers condition: never at L4", &[("foo", "p", "{rules: [{when: [{key: 'request.headers[x-user]', values: [alice]}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW.skipped()),
    row("allow claims condition: never at L4", &[("foo", "p", "{rules: [{when: [{key: 'request.auth.claims[iss]', values: [me]}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW.skipped()),
    row("allow connection.sni: never at L4", &[("foo", "p", "{rules: [{when: [{key: connection.sni, values: [x.example]}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW.skipped()),
    row("allow: L4 rule still matches beside an L7 rule", &[("foo", "p", "{rules: [{to: [{operation: {paths: [/admin]}}]}, {from: [{source: {namespaces: [bar]}}]}]}")], FROM_BAR, 8080, allowed_by("p")),
    row("deny paths: never at L4 (waypoint enforces)", &[("foo", "d", "{action: DENY, rules: [{from: [{source: {namespaces: [bar]}}], to: [{operation: {paths: [/admin]}}]}]}")], FROM_BAR, 8080, ALLOW_NONE.skipped()),
    row("deny notMethods: never at L4", &[("foo", "d", "{action: DENY, rules: [{to: [{operation: {notMethods: [GET]}}]}]}")], FROM_BAR, 8080, ALLOW_NONE.skipped()),
    row("deny request.auth.principal: never at L4", &[("foo", "d", "{action: DENY, rules: [{when: [{key: request.auth.principal, notValues: ['*']}]}]}"), ("foo", "a", ANY)], FROM_BAR, 8080, allowed_by("a").skipped()),
    // ---- scopes ----
    row("mesh-wide deny (root namespace)", &[("istio-system", "d", "{action: DENY, rules: [{from: [{source: {namespaces: [bar]}}]}]}")], FROM_BAR, 8080, denied_by("d")),
    row("mesh-wide allow makes allow-list", &[("istio-system", "a", "{rules: [{from: [{source: {namespaces: [foo]}}]}]}")], FROM_BAR, 8080, DENY_NO_ALLOW),
    row("mesh-wide allow and namespace allow both count", &[("istio-system", "a", "{rules: [{from: [{source: {namespaces: [foo]}}]}]}"), ("foo", "b", FROM_NS_BAR)], FROM_BAR, 8080, allowed_by("b")),
    row("other namespace's policy does not apply", &[("bar", "d", "{action: DENY, rules: [{}]}")], FROM_BAR, 8080, ALLOW_NONE),
    row("selector matching the workload applies", &[("foo", "d", "{selector: {matchLabels: {app: server}}, action: DENY, rules: [{}]}")], FROM_BAR, 8080, denied_by("d")),
    row("selector not matching does not apply", &[("foo", "d", "{selector: {matchLabels: {app: other}}, action: DENY, rules: [{}]}")], FROM_BAR, 8080, ALLOW_NONE),
    row("root-namespace selector applies in every namespace", &[("istio-system", "d", "{selector: {matchLabels: {app: server}}, action: DENY, rules: [{}]}")], FROM_BAR, 8080, denied_by("d")),
    row("targetRefs apply at the waypoint, not here", &[("foo", "d", "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}], action: DENY, rules: [{}]}")], FROM_BAR, 8080, ALLOW_NONE),
];

#[test]
fn l4_table() {
    assert!(ROWS.len() >= 60, "{} rows", ROWS.len());
    let mut failures = Vec::new();
    for r in ROWS {
        let text = docs(
            &r.policies.iter().map(|(ns, n, s)| doc("AuthorizationPolicy", ns, n, s)).collect::<Vec<_>>(),
        );
        let m = model(&text);
        let index = AuthzIndex::new(&m);
        assert_eq!(index.diagnostics().filter(|d| d.is_error()).count(), 0, "{}: diagnostics", r.name);
        let w = workload(&m, r.dst);
        let policies = index.for_workload(&m, w);
        let id = r.src.principal.map(principal);
        let req = Request::l4(ip(r.src.ip), id.as_ref(), w.ips[0], r.port);
        let d = policies.evaluate(&req);
        let got = Want {
            allowed: d.allowed,
            reason: d.reason,
            policy: r.want.policy,
            audit: d.audit,
            l7_skipped: d.l7_rules_skipped,
        };
        let got_policy = d.policy_name().map(|(_, n)| n);
        if got != r.want || got_policy != r.want.policy {
            failures.push(format!("{}: got {got:?} by {got_policy:?}, want {:?}", r.name, r.want));
        }
    }
    assert!(failures.is_empty(), "{} failing rows:\n{}", failures.len(), failures.join("\n"));
}
