//! The API resources behind each [`Kind`] the model reads: core kinds at fixed versions, CRD
//! kinds (Istio, Gateway API) at the first version of [`Kind::versions`] the server serves.

use kube::Client;
use kube::api::ApiResource;
use kube::core::GroupVersionKind;
use mesh_api::Kind;

/// Plural resource name of a kind (the URL path segment).
pub fn plural(kind: Kind) -> &'static str {
    match kind {
        Kind::Namespace => "namespaces",
        Kind::Pod => "pods",
        Kind::Service => "services",
        Kind::EndpointSlice => "endpointslices",
        Kind::ServiceAccount => "serviceaccounts",
        Kind::VirtualService => "virtualservices",
        Kind::DestinationRule => "destinationrules",
        Kind::ServiceEntry => "serviceentries",
        Kind::Gateway | Kind::KubeGateway => "gateways",
        Kind::Sidecar => "sidecars",
        Kind::EnvoyFilter => "envoyfilters",
        Kind::PeerAuthentication => "peerauthentications",
        Kind::AuthorizationPolicy => "authorizationpolicies",
        Kind::RequestAuthentication => "requestauthentications",
        Kind::Telemetry => "telemetries",
        Kind::HttpRoute => "httproutes",
        Kind::GrpcRoute => "grpcroutes",
    }
}

/// Whether a kind is built into every API server (the rest come from CRDs that may be absent).
pub fn is_builtin(kind: Kind) -> bool {
    matches!(kind.group(), "" | "discovery.k8s.io")
}

/// The resource of `kind` at `version`.
pub fn api_resource(kind: Kind, version: &str) -> ApiResource {
    let group = kind.group();
    ApiResource {
        group: group.to_string(),
        version: version.to_string(),
        api_version: if group.is_empty() { version.to_string() } else { format!("{group}/{version}") },
        kind: kind.as_str().to_string(),
        plural: plural(kind).to_string(),
    }
}

/// Short stable name of a kind in unit names and logs: `group/Kind` (`core/Pod` for core).
pub fn kind_path(kind: Kind) -> String {
    let g = kind.group();
    format!("{}/{}", if g.is_empty() { "core" } else { g }, kind.as_str())
}

/// How a kind's resource was looked up.
#[derive(Debug)]
pub enum Resolved {
    /// Served at this resource.
    Served(ApiResource),
    /// The server serves none of the versions we read (the CRD is not installed).
    NotServed,
}

/// Finds the resource serving `kind`: built-in kinds directly, CRD kinds by asking discovery
/// for each accepted version in order (one small GET per version tried).
pub async fn resolve(client: &Client, kind: Kind) -> Result<Resolved, kube::Error> {
    if is_builtin(kind) {
        return Ok(Resolved::Served(api_resource(kind, "v1")));
    }
    for version in kind.versions() {
        let gvk = GroupVersionKind::gvk(kind.group(), version, kind.as_str());
        match kube::discovery::pinned_kind(client, &gvk).await {
            Ok((ar, _caps)) => return Ok(Resolved::Served(ar)),
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(kube::Error::Discovery(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Resolved::NotServed)
}
