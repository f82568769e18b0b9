//! `security.istio.io` (v1, v1beta1): PeerAuthentication, AuthorizationPolicy,
//! RequestAuthentication.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::{PolicyTargetReference, WorkloadSelector};
use crate::duration::Duration;

/// `PeerAuthentication.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    /// Workloads it applies to; none = namespace (or mesh in the root namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Mutual TLS mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// Per-port modes (port number as a string key); needs a selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<String, MutualTls>,
}

/// `PeerAuthentication.MutualTLS`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    /// Mode; UNSET inherits from the parent scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
}

/// `PeerAuthentication.MutualTLS.Mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

/// `AuthorizationPolicy.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// Workloads it applies to (exclusive with targetRef(s)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Single target (Gateway, Service, ServiceEntry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Several targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Rules, ORed; none with ALLOW = allow nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// What a match does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<AuthorizationAction>,
    /// External authorizer (CUSTOM only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

/// `AuthorizationPolicy.Action`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthorizationAction {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

/// `AuthorizationPolicy.ExtensionProvider`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    /// Provider name from mesh config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `Rule`: all of from, to and when must match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Sources, ORed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    /// Operations, ORed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    /// Extra conditions, ANDed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// `Rule.From`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    /// Source attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// `Rule.To`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    /// Operation attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// `Source`: fields ANDed, values within a field ORed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities (`<trust-domain>/ns/<ns>/sa/<sa>`, `*` prefix/suffix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Negated principals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// JWT principals (`iss/sub`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    /// Negated JWT principals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// Peer namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Negated namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// Peer IPs/CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    /// Negated IP blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// Original client IPs/CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    /// Negated remote IP blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
    /// Peer service accounts (`ns/sa` or `sa`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Negated service accounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    /// Peer trust domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<String>,
    /// Negated trust domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_trust_domains: Vec<String>,
}

/// `Operation`: fields ANDed, values within a field ORed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Hosts (`*` prefix/suffix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Negated hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Ports as strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Negated ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    /// HTTP methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Negated methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Paths (`*` prefix/suffix, `{*}`/`{**}` templates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Negated paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// `Condition` (`when`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// Attribute name (request.headers[x], source.ip, ...).
    #[serde(default)]
    pub key: String,
    /// Accepted values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Refused values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

/// `RequestAuthentication.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthenticationSpec {
    /// Workloads it applies to (exclusive with targetRef(s)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Single target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Several targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Accepted JWT issuers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// `JWTRule`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// Expected `iss` claim (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Accepted `aud` values; empty accepts the service name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// URL of the JWKS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Deprecated snake_case spelling of `jwksUri`.
    #[serde(rename = "jwks_uri")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri_snake: Option<String>,
    /// Inline JWKS (JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Headers to read the token from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters to read the token from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Cookies to read the token from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// Header receiving the base64 payload of a valid token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Forward the token upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_original_token: Option<bool>,
    /// Claims copied into headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Claims holding space-separated lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
    /// JWKS fetch timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// `JWTHeader`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    /// Header name.
    #[serde(default)]
    pub name: String,
    /// Prefix before the token (e.g. `Bearer `).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// `ClaimToHeader`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Header name.
    #[serde(default)]
    pub header: String,
    /// Claim name.
    #[serde(default)]
    pub claim: String,
}
