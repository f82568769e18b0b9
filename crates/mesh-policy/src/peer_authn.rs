//! PeerAuthentication: the mTLS mode in force for a workload's port, as Istio composes it
//! (`ComposePeerAuthentication`), and whether a plaintext inbound connection is accepted.
//!
//! - Three scopes: mesh-wide (root namespace, no selector), namespace-wide (no selector)
//!   and workload (a non-empty selector matching the workload's labels, in its own
//!   namespace). As in Istio, a selector policy in the root namespace is ignored and an
//!   empty selector counts as no selector. PeerAuthentication has no `targetRef(s)`.
//! - At each scope the oldest policy wins (`creationTimestamp`, missing = oldest, then name).
//! - The mode starts PERMISSIVE; mesh, then namespace, then workload override it unless
//!   their mode is UNSET (inherit). The workload policy's `portLevelMtls` overrides the mode
//!   for that port (the workload's target port); an UNSET port entry inherits the
//!   workload's resolved mode.
//! - Plaintext inbound: STRICT refuses, PERMISSIVE and DISABLE accept.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mesh_api::Object;
use mesh_api::istio::security::{MtlsMode, PeerAuthenticationSpec};
use mesh_model::{Model, Policy, PolicyKind, Workload};

/// The PeerAuthentication composed for one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAuthn {
    /// Resolved mode for ports without a port-level entry (never UNSET).
    pub mode: MtlsMode,
    /// Port-level modes of the workload policy (never UNSET), sorted by port.
    pub per_port: Box<[(u16, MtlsMode)]>,
    /// `(namespace, name)` of the policy chosen at the mesh, namespace and workload scope.
    pub mesh_policy: Option<(Arc<str>, Arc<str>)>,
    pub namespace_policy: Option<(Arc<str>, Arc<str>)>,
    pub workload_policy: Option<(Arc<str>, Arc<str>)>,
}

impl Default for PeerAuthn {
    fn default() -> Self {
        PeerAuthn {
            mode: MtlsMode::Permissive,
            per_port: Box::new([]),
            mesh_policy: None,
            namespace_policy: None,
            workload_policy: None,
        }
    }
}

impl PeerAuthn {
    /// The mode for `port` (the workload's target port).
    pub fn mode_for_port(&self, port: u16) -> MtlsMode {
        match self.per_port.binary_search_by_key(&port, |(p, _)| *p) {
            Ok(i) => self.per_port[i].1,
            Err(_) => self.mode,
        }
    }

    /// Whether a plaintext connection to `port` is accepted.
    pub fn allows_plaintext(&self, port: u16) -> bool {
        plaintext_allowed(self.mode_for_port(port))
    }
}

/// Whether `mode` accepts plaintext: STRICT refuses; PERMISSIVE, DISABLE (and UNSET, which
/// means the PERMISSIVE default) accept.
pub fn plaintext_allowed(mode: MtlsMode) -> bool {
    mode != MtlsMode::Strict
}

/// The effective mode for `workload`'s target `port` (never UNSET).
pub fn effective_mtls(model: &Model, workload: &Workload, port: u16) -> MtlsMode {
    resolve_peer_authn(model, workload).mode_for_port(port)
}

/// Composes the PeerAuthentications that apply to `workload`.
pub fn resolve_peer_authn(model: &Model, workload: &Workload) -> PeerAuthn {
    let root = &*model.config().root_namespace;
    let (mut mesh, mut ns, mut wl): (Option<Candidate<'_>>, Option<Candidate<'_>>, Option<Candidate<'_>>) =
        (None, None, None);
    for p in model.policies_for(PolicyKind::PeerAuthentication, workload) {
        let Object::PeerAuthentication(r) = &p.object else { continue };
        let c = Candidate { policy: p, spec: &r.spec, created: r.metadata.creation_timestamp.as_ref() };
        let has_selector = p.selector.as_ref().is_some_and(|s| !s.is_empty());
        let slot = if !has_selector {
            if *p.namespace == *root { &mut mesh } else { &mut ns }
        } else if *p.namespace != *root {
            &mut wl
        } else {
            continue; // Istio ignores selector policies in the root namespace.
        };
        if slot.as_ref().is_none_or(|old| c.older_than(old)) {
            *slot = Some(c);
        }
    }

    let mut out = PeerAuthn::default();
    for c in [&mesh, &ns, &wl].into_iter().flatten() {
        if let Some(m) = c.mode() {
            out.mode = m;
        }
    }
    if let Some(c) = &wl {
        let mut per_port: Vec<(u16, MtlsMode)> = c
            .spec
            .port_level_mtls
            .iter()
            .filter_map(|(port, m)| {
                // Validation refuses non-numeric keys; skip any that got here.
                let port = port.trim().parse::<u16>().ok()?;
                Some((port, m.mode.filter(|m| *m != MtlsMode::Unset).unwrap_or(out.mode)))
            })
            .collect();
        per_port.sort_by_key(|(p, _)| *p);
        per_port.dedup_by_key(|(p, _)| *p);
        out.per_port = per_port.into();
    }
    let name =
        |c: &Option<Candidate<'_>>| c.as_ref().map(|c| (c.policy.namespace.clone(), c.policy.name.clone()));
    out.mesh_policy = name(&mesh);
    out.namespace_policy = name(&ns);
    out.workload_policy = name(&wl);
    out
}

struct Candidate<'a> {
    policy: &'a Policy,
    spec: &'a PeerAuthenticationSpec,
    created: Option<&'a Time>,
}

impl Candidate<'_> {
    /// Oldest first: a missing timestamp counts as oldest (Istio's zero time), then by name.
    fn older_than(&self, other: &Candidate<'_>) -> bool {
        (self.created, &*self.policy.name) < (other.created, &*other.policy.name)
    }

    /// The policy's mode unless UNSET.
    fn mode(&self) -> Option<MtlsMode> {
        self.spec.mtls.as_ref().and_then(|m| m.mode).filter(|m| *m != MtlsMode::Unset)
    }
}
