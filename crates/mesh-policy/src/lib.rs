//! Mesh security policy, pure logic over the model: which PeerAuthentication mode applies
//! to a workload's port ([`peer_authn`]) and whether an AuthorizationPolicy set allows a
//! connection or request ([`authz`]). Used by ztunnel (L4) and the waypoint (L7); no I/O.

pub mod authz;
pub mod peer_authn;

pub use authz::{
    AuthzIndex, AuthzPolicies, ClaimLookup, CompiledPolicy, Decision, HeaderLookup, L7Attributes,
    NoAttributes, PolicyMatch, Reason, Request,
};
pub use mesh_api::istio::security::MtlsMode;
pub use peer_authn::{PeerAuthn, effective_mtls, plaintext_allowed, resolve_peer_authn};
