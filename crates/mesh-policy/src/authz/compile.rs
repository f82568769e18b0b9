//! Compilation of one AuthorizationPolicy into [`CompiledPolicy`]: every string parsed once
//! (principals, CIDRs, ports, paths, condition keys) into matchers that evaluate a
//! [`Request`] without allocating. Invalid entries are reported as diagnostics and make
//! their rule fail closed (see the `authz` module docs).

use std::sync::Arc;

use mesh_api::istio::security::{AuthorizationAction, AuthorizationPolicySpec, Condition, Operation, Source};
use mesh_api::{Diagnostic, Object, ObjectRef, Origin};
use mesh_model::{MeshConfig, Policy, PolicyKind, PolicyScope, TargetRef};

use super::matchers::{Cidr, PathMatch, StrMatch};
use super::request::Request;

/// One attribute test: the request attribute and the accepted values (ORed).
#[derive(Debug, Clone)]
enum Attr {
    Principal(Box<[StrMatch]>),
    Namespace(Box<[StrMatch]>),
    ServiceAccount(Box<[ServiceAccountMatch]>),
    TrustDomain(Box<[StrMatch]>),
    SourceIp(Box<[Cidr]>),
    RemoteIp(Box<[Cidr]>),
    DestIp(Box<[Cidr]>),
    DestPort(Box<[u16]>),
    // Attributes only an HTTP proxy knows.
    RequestPrincipal(Box<[StrMatch]>),
    Host(Box<[StrMatch]>),
    Method(Box<[StrMatch]>),
    Path(Box<[PathMatch]>),
    Header(Box<str>, Box<[StrMatch]>),
    Claim(Box<[Box<str>]>, Box<[StrMatch]>),
    Audience(Box<[StrMatch]>),
    Presenter(Box<[StrMatch]>),
    Sni(Box<[StrMatch]>),
}

impl Attr {
    fn needs_l7(&self) -> bool {
        !matches!(
            self,
            Attr::Principal(_)
                | Attr::Namespace(_)
                | Attr::ServiceAccount(_)
                | Attr::TrustDomain(_)
                | Attr::SourceIp(_)
                | Attr::RemoteIp(_)
                | Attr::DestIp(_)
                | Attr::DestPort(_)
        )
    }

    /// Whether the attribute is present and one value matches.
    fn test(&self, r: &Request<'_>) -> bool {
        let any = |ms: &[StrMatch], v: Option<&str>| v.is_some_and(|v| ms.iter().any(|m| m.matches(v)));
        let l7 = r.l7;
        match self {
            Attr::Principal(ms) => r.source_principal.is_some_and(|id| {
                let parts = [id.trust_domain(), "/ns/", id.namespace(), "/sa/", id.service_account()];
                ms.iter().any(|m| m.matches_parts(&parts))
            }),
            Attr::Namespace(ms) => any(ms, r.source_principal.map(|id| id.namespace())),
            Attr::ServiceAccount(sas) => r.source_principal.is_some_and(|id| {
                sas.iter().any(|s| {
                    id.trust_domain() == &*s.trust_domain
                        && id.namespace() == &*s.namespace
                        && id.service_account() == &*s.service_account
                })
            }),
            Attr::TrustDomain(ms) => any(ms, r.source_principal.map(|id| id.trust_domain())),
            Attr::SourceIp(cs) => cs.iter().any(|c| c.contains(r.source_ip)),
            Attr::RemoteIp(cs) => cs.iter().any(|c| c.contains(r.remote())),
            Attr::DestIp(cs) => cs.iter().any(|c| c.contains(r.destination_ip)),
            Attr::DestPort(ps) => ps.contains(&r.destination_port),
            Attr::RequestPrincipal(ms) => any(ms, l7.and_then(|l| l.request_principal)),
            Attr::Host(ms) => l7.and_then(|l| l.host).is_some_and(|h| {
                // Match with and without a port: `example.com:8080` satisfies `example.com`.
                let bare = h.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()));
                ms.iter()
                    .any(|m| m.matches_ignore_case(h) || bare.is_some_and(|(b, _)| m.matches_ignore_case(b)))
            }),
            Attr::Method(ms) => any(ms, l7.and_then(|l| l.method)),
            Attr::Path(ps) => l7.and_then(|l| l.path).is_some_and(|p| ps.iter().any(|m| m.matches(p))),
            Attr::Header(name, ms) => {
                l7.is_some_and(|l| l.headers.any_header(name, &mut |v| ms.iter().any(|m| m.matches(v))))
            }
            Attr::Claim(path, ms) => {
                l7.is_some_and(|l| l.claims.any_claim(path, &mut |v| ms.iter().any(|m| m.matches(v))))
            }
            Attr::Audience(ms) => {
                l7.is_some_and(|l| l.audiences.iter().any(|a| ms.iter().any(|m| m.matches(a))))
            }
            Attr::Presenter(ms) => any(ms, l7.and_then(|l| l.presenter)),
            Attr::Sni(ms) => any(ms, l7.and_then(|l| l.sni)),
        }
    }
}

/// A `serviceAccounts` entry: the peer must be exactly this identity.
#[derive(Debug, Clone)]
struct ServiceAccountMatch {
    trust_domain: Arc<str>,
    namespace: Box<str>,
    service_account: Box<str>,
}

/// An attribute test, possibly negated (`notPrincipals`, `notValues`, ...).
#[derive(Debug, Clone)]
struct Clause {
    attr: Attr,
    negate: bool,
}

impl Clause {
    fn test(&self, r: &Request<'_>) -> bool {
        self.attr.test(r) != self.negate
    }
}

/// One rule: any `from` (each an AND of clauses) and any `to` and every `when`.
#[derive(Debug, Clone)]
struct CompiledRule {
    from: Box<[Box<[Clause]>]>,
    to: Box<[Box<[Clause]>]>,
    when: Box<[Clause]>,
    needs_l7: bool,
    invalid: bool,
}

/// The outcome of matching one policy against a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyMatch {
    /// A rule matched.
    Matched,
    /// No rule matched, and every rule could be evaluated.
    NotMatched,
    /// No rule matched, and at least one rule was skipped because it needs HTTP attributes
    /// the request does not have (L4).
    SkippedL7,
}

/// One AuthorizationPolicy, compiled. Shared as `Arc<CompiledPolicy>`: decisions point at it.
#[derive(Debug)]
pub struct CompiledPolicy {
    namespace: Arc<str>,
    name: Arc<str>,
    action: AuthorizationAction,
    scope: PolicyScope,
    target_refs: Box<[TargetRef]>,
    provider: Option<Box<str>>,
    rules: Box<[CompiledRule]>,
    diagnostics: Box<[Diagnostic]>,
}

impl CompiledPolicy {
    /// Compiles a model policy; `None` when it is not an AuthorizationPolicy.
    pub fn compile(policy: &Policy, config: &MeshConfig) -> Option<Self> {
        if policy.kind != PolicyKind::AuthorizationPolicy {
            return None;
        }
        let Object::AuthorizationPolicy(r) = &policy.object else { return None };
        Some(Self::from_spec(
            policy.namespace.clone(),
            policy.name.clone(),
            policy.scope,
            policy.target_refs.clone(),
            &r.spec,
            policy.origin.clone(),
            config,
        ))
    }

    /// Compiles a spec (objects built in code, tests). Problems are logged once here and
    /// kept in [`CompiledPolicy::diagnostics`].
    pub fn from_spec(
        namespace: Arc<str>,
        name: Arc<str>,
        scope: PolicyScope,
        target_refs: Box<[TargetRef]>,
        spec: &AuthorizationPolicySpec,
        origin: Origin,
        config: &MeshConfig,
    ) -> Self {
        let object = ObjectRef {
            kind: "AuthorizationPolicy".into(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let mut cx = Cx {
            object,
            origin,
            trust_domain: config.trust_domain.clone(),
            namespace: namespace.clone(),
            diags: Vec::new(),
            invalid: false,
            l7: false,
        };
        let action = spec.action.unwrap_or_default();
        let provider = spec.provider.as_ref().and_then(|p| p.name.as_deref()).map(Box::<str>::from);
        if action == AuthorizationAction::Custom {
            let which = provider.as_deref().unwrap_or("<none>");
            cx.diags.push(
                Diagnostic::warning(
                    cx.object.clone(),
                    "spec.action",
                    format!(
                        "CUSTOM action: extension provider {which:?} is not available (no external \
                         authorizer is supported yet); requests matching its rules are denied"
                    ),
                )
                .at(cx.origin.clone()),
            );
        }
        let rules = spec.rules.iter().enumerate().map(|(i, r)| cx.rule(i, r)).collect();
        for d in &cx.diags {
            tracing::warn!(target: "mesh_policy::authz", "{d}");
        }
        CompiledPolicy {
            namespace,
            name,
            action,
            scope,
            target_refs,
            provider,
            rules,
            diagnostics: cx.diags.into(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn action(&self) -> AuthorizationAction {
        self.action
    }

    /// Mesh, namespace, workload (selector) or targeted.
    pub fn scope(&self) -> PolicyScope {
        self.scope
    }

    /// What the policy targets (`targetRef(s)`), empty for selector/namespace policies.
    pub fn target_refs(&self) -> &[TargetRef] {
        &self.target_refs
    }

    /// The CUSTOM extension provider named by the policy.
    pub fn provider(&self) -> Option<&str> {
        self.provider.as_deref()
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Whether some rule needs HTTP attributes (it never matches at L4).
    pub fn needs_l7(&self) -> bool {
        self.rules.iter().any(|r| r.needs_l7 && !r.invalid)
    }

    /// Whether every rule needs HTTP attributes (and there is at least one): the policy can
    /// never match at L4, only at a waypoint.
    pub fn l7_only(&self) -> bool {
        !self.rules.is_empty() && self.rules.iter().all(|r| r.needs_l7 && !r.invalid)
    }

    /// Whether some rule holds an invalid entry (it fails closed).
    pub fn has_invalid_rules(&self) -> bool {
        self.rules.iter().any(|r| r.invalid)
    }

    /// Problems found when compiling (invalid entries, CUSTOM without provider support).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// Matches the policy's rules against `req` (rules ORed). Invalid rules match for every
    /// action but ALLOW (fail closed); rules that need HTTP attributes are skipped when the
    /// request has none.
    pub fn matches(&self, req: &Request<'_>) -> PolicyMatch {
        let fail_closed = self.action != AuthorizationAction::Allow;
        let mut skipped = false;
        for rule in &self.rules {
            if rule.invalid {
                if fail_closed {
                    return PolicyMatch::Matched;
                }
                continue;
            }
            if rule.needs_l7 && req.l7.is_none() {
                skipped = true;
                continue;
            }
            let from = rule.from.is_empty() || rule.from.iter().any(|cs| cs.iter().all(|c| c.test(req)));
            if from
                && (rule.to.is_empty() || rule.to.iter().any(|cs| cs.iter().all(|c| c.test(req))))
                && rule.when.iter().all(|c| c.test(req))
            {
                return PolicyMatch::Matched;
            }
        }
        if skipped { PolicyMatch::SkippedL7 } else { PolicyMatch::NotMatched }
    }
}

/// Compilation context of one policy.
struct Cx {
    object: ObjectRef,
    origin: Origin,
    trust_domain: Arc<str>,
    namespace: Arc<str>,
    diags: Vec<Diagnostic>,
    /// Set while compiling a rule when an entry is invalid / needs L7.
    invalid: bool,
    l7: bool,
}

impl Cx {
    fn bad(&mut self, field: String, message: String) {
        self.invalid = true;
        self.diags.push(
            Diagnostic::error(self.object.clone(), field, format!("{message}; the rule fails closed"))
                .at(self.origin.clone()),
        );
    }

    fn rule(&mut self, i: usize, rule: &mesh_api::istio::security::Rule) -> CompiledRule {
        self.invalid = false;
        self.l7 = false;
        let f = format!("spec.rules[{i}]");
        let mut from = Vec::with_capacity(rule.from.len());
        for (j, rf) in rule.from.iter().enumerate() {
            match &rf.source {
                Some(s) => from.push(self.source(&format!("{f}.from[{j}].source"), s)),
                None => self.bad(format!("{f}.from[{j}].source"), "is required".into()),
            }
        }
        let mut to = Vec::with_capacity(rule.to.len());
        for (j, rt) in rule.to.iter().enumerate() {
            match &rt.operation {
                Some(op) => to.push(self.operation(&format!("{f}.to[{j}].operation"), op)),
                None => self.bad(format!("{f}.to[{j}].operation"), "is required".into()),
            }
        }
        let mut when = Vec::with_capacity(rule.when.len());
        for (j, c) in rule.when.iter().enumerate() {
            self.condition(&format!("{f}.when[{j}]"), c, &mut when);
        }
        CompiledRule {
            from: from.into(),
            to: to.into(),
            when: when.into(),
            needs_l7: self.l7,
            invalid: self.invalid,
        }
    }

    /// Parses every value of a field; `None` when the field is empty (no constraint).
    fn list<T>(
        &mut self,
        field: &str,
        values: &[String],
        what: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Option<Box<[T]>> {
        if values.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(values.len());
        for (k, v) in values.iter().enumerate() {
            match parse(v) {
                Some(x) => out.push(x),
                None => self.bad(format!("{field}[{k}]"), format!("{v:?} is not {what}")),
            }
        }
        Some(out.into())
    }

    fn push(&mut self, out: &mut Vec<Clause>, attr: Option<Attr>, negate: bool) {
        if let Some(attr) = attr {
            self.l7 |= attr.needs_l7();
            out.push(Clause { attr, negate });
        }
    }

    fn source(&mut self, f: &str, s: &Source) -> Box<[Clause]> {
        let mut out = Vec::new();
        let str_field = |cx: &mut Cx, name: &str, v: &[String]| {
            cx.list(&format!("{f}.{name}"), v, "a string", |s| Some(StrMatch::parse(s)))
        };
        let principal = |cx: &mut Cx, name: &str, v: &[String]| {
            cx.list(&format!("{f}.{name}"), v, "a principal", |s| {
                Some(StrMatch::parse(s.strip_prefix("spiffe://").unwrap_or(s)))
            })
        };
        let cidrs = |cx: &mut Cx, name: &str, v: &[String]| {
            cx.list(&format!("{f}.{name}"), v, "an IP or CIDR", Cidr::parse)
        };

        let a = principal(self, "principals", &s.principals).map(Attr::Principal);
        self.push(&mut out, a, false);
        let a = principal(self, "notPrincipals", &s.not_principals).map(Attr::Principal);
        self.push(&mut out, a, true);
        let a = str_field(self, "requestPrincipals", &s.request_principals).map(Attr::RequestPrincipal);
        self.push(&mut out, a, false);
        let a =
            str_field(self, "notRequestPrincipals", &s.not_request_principals).map(Attr::RequestPrincipal);
        self.push(&mut out, a, true);
        let a = str_field(self, "namespaces", &s.namespaces).map(Attr::Namespace);
        self.push(&mut out, a, false);
        let a = str_field(self, "notNamespaces", &s.not_namespaces).map(Attr::Namespace);
        self.push(&mut out, a, true);
        let a = cidrs(self, "ipBlocks", &s.ip_blocks).map(Attr::SourceIp);
        self.push(&mut out, a, false);
        let a = cidrs(self, "notIpBlocks", &s.not_ip_blocks).map(Attr::SourceIp);
        self.push(&mut out, a, true);
        let a = cidrs(self, "remoteIpBlocks", &s.remote_ip_blocks).map(Attr::RemoteIp);
        self.push(&mut out, a, false);
        let a = cidrs(self, "notRemoteIpBlocks", &s.not_remote_ip_blocks).map(Attr::RemoteIp);
        self.push(&mut out, a, true);
        let a = self.service_accounts(&format!("{f}.serviceAccounts"), &s.service_accounts);
        self.push(&mut out, a, false);
        let a = self.service_accounts(&format!("{f}.notServiceAccounts"), &s.not_service_accounts);
        self.push(&mut out, a, true);
        let a = str_field(self, "trustDomains", &s.trust_domains).map(Attr::TrustDomain);
        self.push(&mut out, a, false);
        let a = str_field(self, "notTrustDomains", &s.not_trust_domains).map(Attr::TrustDomain);
        self.push(&mut out, a, true);
        out.into()
    }

    /// `ns/sa`, or `sa` in the policy's namespace; in the mesh's trust domain.
    fn service_accounts(&mut self, field: &str, values: &[String]) -> Option<Attr> {
        let td = self.trust_domain.clone();
        let own = self.namespace.clone();
        self.list(field, values, "a service account (ns/sa)", |v| {
            let (ns, sa) = v.split_once('/').unwrap_or((&own, v));
            (!ns.is_empty() && !sa.is_empty() && !sa.contains('/')).then(|| ServiceAccountMatch {
                trust_domain: td.clone(),
                namespace: ns.into(),
                service_account: sa.into(),
            })
        })
        .map(Attr::ServiceAccount)
    }

    fn operation(&mut self, f: &str, op: &Operation) -> Box<[Clause]> {
        let mut out = Vec::new();
        let strs = |cx: &mut Cx, name: &str, v: &[String]| {
            cx.list(&format!("{f}.{name}"), v, "a string", |s| Some(StrMatch::parse(s)))
        };
        let ports = |cx: &mut Cx, name: &str, v: &[String]| {
            cx.list(&format!("{f}.{name}"), v, "a port number", parse_port)
        };
        let paths = |cx: &mut Cx, name: &str, v: &[String]| {
            cx.list(&format!("{f}.{name}"), v, "a path or path template", PathMatch::parse)
        };
        let a = strs(self, "hosts", &op.hosts).map(Attr::Host);
        self.push(&mut out, a, false);
        let a = strs(self, "notHosts", &op.not_hosts).map(Attr::Host);
        self.push(&mut out, a, true);
        let a = ports(self, "ports", &op.ports).map(Attr::DestPort);
        self.push(&mut out, a, false);
        let a = ports(self, "notPorts", &op.not_ports).map(Attr::DestPort);
        self.push(&mut out, a, true);
        let a = strs(self, "methods", &op.methods).map(Attr::Method);
        self.push(&mut out, a, false);
        let a = strs(self, "notMethods", &op.not_methods).map(Attr::Method);
        self.push(&mut out, a, true);
        let a = paths(self, "paths", &op.paths).map(Attr::Path);
        self.push(&mut out, a, false);
        let a = paths(self, "notPaths", &op.not_paths).map(Attr::Path);
        self.push(&mut out, a, true);
        out.into()
    }

    fn condition(&mut self, f: &str, c: &Condition, out: &mut Vec<Clause>) {
        if c.values.is_empty() && c.not_values.is_empty() {
            self.bad(f.to_string(), "one of values, notValues is required".into());
            return;
        }
        let key = c.key.as_str();
        for (negate, name, values) in [(false, "values", &c.values), (true, "notValues", &c.not_values)] {
            if values.is_empty() {
                continue;
            }
            let field = format!("{f}.{name}");
            let strs = |cx: &mut Cx| cx.list(&field, values, "a string", |s| Some(StrMatch::parse(s)));
            let cidrs = |cx: &mut Cx| cx.list(&field, values, "an IP or CIDR", Cidr::parse);
            let attr = match key {
                "source.ip" => cidrs(self).map(Attr::SourceIp),
                "remote.ip" | "source.remote_ip" => cidrs(self).map(Attr::RemoteIp),
                "destination.ip" => cidrs(self).map(Attr::DestIp),
                "destination.port" => {
                    self.list(&field, values, "a port number", parse_port).map(Attr::DestPort)
                }
                "source.namespace" => strs(self).map(Attr::Namespace),
                "source.principal" => self
                    .list(&field, values, "a principal", |s| {
                        Some(StrMatch::parse(s.strip_prefix("spiffe://").unwrap_or(s)))
                    })
                    .map(Attr::Principal),
                "request.auth.principal" => strs(self).map(Attr::RequestPrincipal),
                "request.auth.audiences" => strs(self).map(Attr::Audience),
                "request.auth.presenter" => strs(self).map(Attr::Presenter),
                "connection.sni" => strs(self).map(Attr::Sni),
                k if k.starts_with("request.headers[") => match bracketed(&k["request.headers".len()..]) {
                    Some(names) if names.len() == 1 && !names[0].is_empty() => {
                        let name: Box<str> = names[0].to_ascii_lowercase().into();
                        strs(self).map(|m| Attr::Header(name, m))
                    }
                    _ => {
                        self.bad(format!("{f}.key"), format!("{k:?} is not request.headers[<name>]"));
                        None
                    }
                },
                k if k.starts_with("request.auth.claims[") => {
                    match bracketed(&k["request.auth.claims".len()..]) {
                        Some(names) if names.iter().all(|n| !n.is_empty()) => {
                            let path: Box<[Box<str>]> = names.into_iter().map(Box::from).collect();
                            strs(self).map(|m| Attr::Claim(path, m))
                        }
                        _ => {
                            self.bad(
                                format!("{f}.key"),
                                format!("{k:?} is not request.auth.claims[<name>]..."),
                            );
                            None
                        }
                    }
                }
                k if k.starts_with("experimental.envoy.filters.") => {
                    // Envoy filter metadata (mysql_proxy, ...): no such filters here. Failing the
                    // rule closed is what Istio does for an attribute its proxy cannot see.
                    self.bad(
                        format!("{f}.key"),
                        format!(
                            "attribute {k:?} reads Envoy filter metadata, which is not available \
                             (never matching in ALLOW, always in DENY)"
                        ),
                    );
                    None
                }
                k => {
                    self.bad(format!("{f}.key"), format!("attribute {k:?} is not supported"));
                    None
                }
            };
            self.push(out, attr, negate);
        }
    }
}

fn parse_port(s: &str) -> Option<u16> {
    s.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

/// `[a][b]` → `["a", "b"]`; `None` when not made of bracketed names only.
fn bracketed(mut s: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let rest = s.strip_prefix('[')?;
        let (name, rest) = rest.split_once(']')?;
        out.push(name);
        s = rest;
    }
    (!out.is_empty()).then_some(out)
}
