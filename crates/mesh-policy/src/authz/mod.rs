//! AuthorizationPolicy: compilation ([`CompiledPolicy`], once per model generation in an
//! [`AuthzIndex`]), selection of the policies that apply to a workload or a waypoint target
//! ([`AuthzPolicies`]), and evaluation of a [`Request`] into a [`Decision`] without
//! allocating.
//!
//! # Order (Istio's)
//! 1. **CUSTOM**: no external authorizer exists yet. A CUSTOM policy is kept, logged once at
//!    compile time (warning diagnostic), and a request matching its rules is **denied**
//!    ([`Reason::CustomUnavailable`]): it must never silently allow what an authorizer was
//!    meant to check. Requests its rules don't match go on, as they would in Istio.
//! 2. **DENY**: any matching DENY policy denies.
//! 3. **AUDIT**: a matching AUDIT policy only marks the decision (`audit`); evaluated for
//!    every request, whatever the outcome.
//! 4. **ALLOW**: with no ALLOW policy the request is allowed; otherwise one must match.
//!
//! A policy with no rules matches nothing (so an ALLOW policy with `rules: []` allows
//! nothing but still makes "some ALLOW must match" apply); an empty rule `{}` matches
//! everything.
//!
//! # L7 rules at L4
//! A rule that needs an HTTP attribute (`requestPrincipals`, `hosts`, `methods`, `paths`,
//! `request.*` and `connection.sni` conditions, and their `not*` forms) **never matches** when
//! the request has no L7 attributes (ztunnel); the waypoint, which has them, enforces it.
//! For ALLOW this is Istio's behaviour: the rule cannot open access. For DENY (and CUSTOM,
//! AUDIT) it differs from Istio: Istio's ztunnel drops the L7 parts of a DENY rule and
//! applies the rest (denying more); here the whole rule is skipped, so **a DENY rule with L7
//! conditions does not protect a workload that has no waypoint**. Callers learn of it:
//! [`Decision::l7_rules_skipped`] is set when a rule was skipped for a request, and
//! [`CompiledPolicy::needs_l7`]/[`CompiledPolicy::l7_only`] tell at compile time (for a log
//! line or metric per policy).
//!
//! # Invalid entries
//! An entry that cannot be parsed (bad CIDR, port, path template, unknown condition key)
//! is reported as an error diagnostic and makes its whole rule fail closed: never matching
//! in an ALLOW policy, always matching in DENY, AUDIT and CUSTOM policies. Validation in
//! `mesh-api` refuses such objects, so this guards objects built elsewhere.
//!
//! # Scopes
//! At a workload (ztunnel): mesh-wide policies (root namespace, no selector), the
//! workload's namespace-wide policies and selector policies matching its labels (in its
//! namespace or the root namespace). Policies with `targetRef(s)` (a waypoint Gateway, a
//! Service) apply at the waypoint: [`AuthzIndex::for_target`] selects them.

mod compile;
mod matchers;
mod request;

use std::sync::Arc;

use mesh_api::Diagnostic;
use mesh_api::istio::security::AuthorizationAction;
use mesh_model::{Model, PolicyKind, Workload};

pub use compile::{CompiledPolicy, PolicyMatch};
pub use request::{ClaimLookup, HeaderLookup, L7Attributes, NoAttributes, Request};

/// Why a request was allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Allowed: no ALLOW policy applies.
    NoAllowPolicies,
    /// Allowed by the ALLOW policy in [`Decision::policy`].
    AllowMatched,
    /// Denied by the DENY policy in [`Decision::policy`].
    DenyMatched,
    /// Denied: ALLOW policies apply but none matched.
    NoAllowMatched,
    /// Denied: the CUSTOM policy in [`Decision::policy`] matched and no extension provider
    /// is available to decide.
    CustomUnavailable,
}

impl Reason {
    /// A stable lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoAllowPolicies => "no_allow_policies",
            Reason::AllowMatched => "allow_matched",
            Reason::DenyMatched => "deny_matched",
            Reason::NoAllowMatched => "no_allow_matched",
            Reason::CustomUnavailable => "custom_provider_unavailable",
        }
    }
}

/// The result of authorizing one request.
#[derive(Debug, Clone)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    /// The policy that decided (None for [`Reason::NoAllowPolicies`] and
    /// [`Reason::NoAllowMatched`]).
    pub policy: Option<Arc<CompiledPolicy>>,
    /// Whether a matching AUDIT policy marks the request for audit logging.
    pub audit: bool,
    /// The first matching AUDIT policy.
    pub audit_policy: Option<Arc<CompiledPolicy>>,
    /// Whether a policy evaluated for this decision did not match and had a rule skipped
    /// because it needs HTTP attributes the request lacks (L4): the waypoint, not this
    /// decision, enforces that rule. (A policy that matched through another rule does not
    /// set it: the skipped rule could not have changed its outcome.)
    pub l7_rules_skipped: bool,
}

impl Decision {
    /// `(namespace, name)` of the deciding policy.
    pub fn policy_name(&self) -> Option<(&str, &str)> {
        self.policy.as_deref().map(|p| (p.namespace(), p.name()))
    }
}

/// The compiled policies that apply at one place (a workload, or a waypoint's targets),
/// grouped by action. Cheap to clone; immutable.
#[derive(Debug, Clone, Default)]
pub struct AuthzPolicies {
    custom: Box<[Arc<CompiledPolicy>]>,
    deny: Box<[Arc<CompiledPolicy>]>,
    audit: Box<[Arc<CompiledPolicy>]>,
    allow: Box<[Arc<CompiledPolicy>]>,
}

impl AuthzPolicies {
    /// Groups policies by action, keeping their order.
    pub fn new(policies: impl IntoIterator<Item = Arc<CompiledPolicy>>) -> Self {
        let (mut custom, mut deny, mut audit, mut allow) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for p in policies {
            match p.action() {
                AuthorizationAction::Custom => custom.push(p),
                AuthorizationAction::Deny => deny.push(p),
                AuthorizationAction::Audit => audit.push(p),
                AuthorizationAction::Allow => allow.push(p),
            }
        }
        AuthzPolicies { custom: custom.into(), deny: deny.into(), audit: audit.into(), allow: allow.into() }
    }

    /// Every policy: CUSTOM, DENY, AUDIT, then ALLOW.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<CompiledPolicy>> {
        self.custom.iter().chain(&self.deny).chain(&self.audit).chain(&self.allow)
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    pub fn len(&self) -> usize {
        self.custom.len() + self.deny.len() + self.audit.len() + self.allow.len()
    }

    /// Policies whose rules all need HTTP attributes: they never match at L4.
    pub fn l7_only(&self) -> impl Iterator<Item = &Arc<CompiledPolicy>> {
        self.iter().filter(|p| p.l7_only())
    }

    /// Authorizes `req` in Istio's order (see the module docs). Does not allocate.
    pub fn evaluate(&self, req: &Request<'_>) -> Decision {
        let mut skipped = false;
        let mut hit = |p: &CompiledPolicy| match p.matches(req) {
            PolicyMatch::Matched => true,
            PolicyMatch::NotMatched => false,
            PolicyMatch::SkippedL7 => {
                skipped = true;
                false
            }
        };
        let audit_policy = self.audit.iter().find(|p| hit(p)).cloned();
        let decided = |allowed, reason, policy: Option<&Arc<CompiledPolicy>>, skipped| Decision {
            allowed,
            reason,
            policy: policy.cloned(),
            audit: audit_policy.is_some(),
            audit_policy: audit_policy.clone(),
            l7_rules_skipped: skipped,
        };
        if let Some(p) = self.custom.iter().find(|p| hit(p)) {
            return decided(false, Reason::CustomUnavailable, Some(p), skipped);
        }
        if let Some(p) = self.deny.iter().find(|p| hit(p)) {
            return decided(false, Reason::DenyMatched, Some(p), skipped);
        }
        if self.allow.is_empty() {
            return decided(true, Reason::NoAllowPolicies, None, skipped);
        }
        if let Some(p) = self.allow.iter().find(|p| hit(p)) {
            return decided(true, Reason::AllowMatched, Some(p), skipped);
        }
        decided(false, Reason::NoAllowMatched, None, skipped)
    }
}

/// Every AuthorizationPolicy of one model snapshot, compiled once. Build a new index when
/// the model's generation changes; selection per workload is then a few lookups.
#[derive(Debug, Default)]
pub struct AuthzIndex {
    generation: u64,
    /// Sorted by (namespace, name), as the model's index.
    policies: Box<[Arc<CompiledPolicy>]>,
}

impl AuthzIndex {
    /// Compiles every AuthorizationPolicy of `model` (logging problems once).
    pub fn new(model: &Model) -> Self {
        let mut policies: Vec<Arc<CompiledPolicy>> = model
            .policies()
            .iter()
            .filter_map(|p| CompiledPolicy::compile(p, model.config()))
            .map(Arc::new)
            .collect();
        policies.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
        AuthzIndex { generation: model.generation(), policies: policies.into() }
    }

    /// The model generation this index was built from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// All compiled policies, sorted by namespace and name.
    pub fn policies(&self) -> &[Arc<CompiledPolicy>] {
        &self.policies
    }

    /// A compiled policy by namespace and name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<CompiledPolicy>> {
        self.policies
            .binary_search_by(|p| (p.namespace(), p.name()).cmp(&(namespace, name)))
            .ok()
            .map(|i| &self.policies[i])
    }

    /// Every compile diagnostic of every policy.
    pub fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.policies.iter().flat_map(|p| p.diagnostics())
    }

    /// The policies enforced at `workload` (ztunnel inbound): mesh-wide, namespace-wide and
    /// selector-matched; not the targeted ones. `model` must be the one indexed.
    pub fn for_workload(&self, model: &Model, workload: &Workload) -> AuthzPolicies {
        AuthzPolicies::new(
            model
                .policies_for(PolicyKind::AuthorizationPolicy, workload)
                .filter_map(|p| self.get(&p.namespace, &p.name).cloned()),
        )
    }

    /// The policies whose `targetRef(s)` name `target_kind` `namespace/name` (a waypoint's
    /// `Gateway`, a `Service`), for the waypoint. Combine several targets with
    /// [`AuthzPolicies::new`] over [`AuthzPolicies::iter`].
    pub fn for_target(&self, model: &Model, target_kind: &str, namespace: &str, name: &str) -> AuthzPolicies {
        AuthzPolicies::new(
            model
                .policies_targeting(PolicyKind::AuthorizationPolicy, target_kind, namespace, name)
                .filter_map(|p| self.get(&p.namespace, &p.name).cloned()),
        )
    }

    /// Every targeted policy (`targetRef(s)`), for a waypoint to see what targets what.
    pub fn targeted(&self) -> impl Iterator<Item = &Arc<CompiledPolicy>> {
        self.policies.iter().filter(|p| !p.target_refs().is_empty())
    }
}
