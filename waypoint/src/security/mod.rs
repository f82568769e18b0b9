//! The waypoint's request security, in the order the proxy applies it:
//! 1. [`normalize_path`] ([`path`]): the one path authorization matches and upstream gets;
//!    refused paths are answered 400.
//! 2. [`Authenticator::authenticate`] ([`jwt`]): RequestAuthentication JWT validation, keys
//!    inline or from the shared [`JwksCache`] ([`jwks`]); an invalid token is answered 401.
//! 3. [`Authorizer::authorize`] ([`authz`]): AuthorizationPolicy with the L7 attributes and the
//!    JWT claims; a denial is answered 403 `RBAC: access denied`.
//!
//! Both the authenticator and the authorizer of a Service are compiled once per model
//! generation ([`ServiceSecurity::build`], or [`SecurityTable::build`] for every Service of a
//! waypoint) and only read on the request path; [`ServiceSecurity::check`] runs the three
//! steps and says how to answer a rejected request.

pub mod authz;
pub mod claims;
pub mod jwks;
pub mod jwt;
pub mod path;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use mesh_api::SpiffeId;
use mesh_model::{Model, Service, WaypointRef};
use mesh_policy::{AuthzIndex, Decision};

pub use authz::{Authorizer, AuthzAttributes, DENIED_BODY, HeaderMapLookup, denied_response};
pub use jwks::{Jwks, JwksCache, JwksCacheConfig, JwksError, JwksFetcher};
pub use jwt::{Authenticator, AuthnError, Claims};
pub use path::{PathError, normalize_path};

/// The GatewayClass of Istio waypoints; policies targeting it from the root namespace apply
/// at every waypoint.
pub const WAYPOINT_GATEWAY_CLASS: &str = "istio-waypoint";

/// The `targetRefs` kind that names `service`: `ServiceEntry` for the hosts of one (whose
/// model name is the ServiceEntry's), `Service` otherwise.
fn service_target_kind(service: &Service) -> &'static str {
    match service.source {
        mesh_model::ServiceSource::ServiceEntry { .. } => "ServiceEntry",
        mesh_model::ServiceSource::Kubernetes { .. } => "Service",
    }
}

/// The authority of a request: `:authority` (HTTP/2, absolute-form) or `Host`.
pub fn request_host(parts: &Parts) -> Option<&str> {
    parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()))
}

/// The security configuration of one Service at this waypoint, for one model generation.
#[derive(Debug, Clone)]
pub struct ServiceSecurity {
    pub authn: Arc<Authenticator>,
    pub authz: Arc<Authorizer>,
}

/// The connection-level facts the proxy core knows about a request.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo<'a> {
    /// The HBONE peer's address.
    pub source_ip: IpAddr,
    /// The original client, when known (e.g. from a trusted `x-forwarded-for`).
    pub remote_ip: Option<IpAddr>,
    /// The HBONE peer's SPIFFE identity.
    pub peer: Option<&'a SpiffeId>,
    /// Where the client sent the request (the Service VIP, or the workload IP).
    pub destination_ip: IpAddr,
    /// The Service port.
    pub destination_port: u16,
}

/// A request that may go on.
#[derive(Debug)]
pub struct Admitted {
    /// The validated JWT, if one was sent.
    pub claims: Option<Claims>,
    /// The authorization decision (for the AUDIT mark and access logs).
    pub decision: Decision,
}

/// Why a request is answered by the waypoint itself.
#[derive(Debug)]
pub enum Rejected {
    /// 400: the path could smuggle another one.
    Path(PathError),
    /// 401: a token was sent and is not valid.
    Authn(AuthnError),
    /// 403: `RBAC: access denied`.
    Denied(Decision),
}

impl Rejected {
    pub fn status(&self) -> http::StatusCode {
        match self {
            Rejected::Path(e) => e.status(),
            Rejected::Authn(e) => e.status(),
            Rejected::Denied(_) => http::StatusCode::FORBIDDEN,
        }
    }

    /// Envoy's `response_code_details` for the access log.
    pub fn details(&self) -> &'static str {
        match self {
            Rejected::Path(_) => "path_normalization_failed",
            Rejected::Authn(_) => "jwt_authn_access_denied",
            Rejected::Denied(_) => "rbac_access_denied_matched_policy",
        }
    }

    /// The answer to send.
    pub fn response(&self, parts: &Parts) -> http::Response<Bytes> {
        match self {
            Rejected::Path(e) => {
                let mut r = http::Response::new(Bytes::from(e.to_string()));
                *r.status_mut() = e.status();
                r
            }
            Rejected::Authn(e) => e.response(parts),
            Rejected::Denied(_) => denied_response(),
        }
    }
}

impl ServiceSecurity {
    /// Everything in order: normalises the path (and rewrites `parts.uri` with it, so
    /// upstream gets the path that was authorized, as Envoy forwards its normalised path),
    /// authenticates (stripping the token, setting output headers), authorizes.
    pub async fn check(&self, parts: &mut Parts, conn: &ConnInfo<'_>) -> Result<Admitted, Rejected> {
        let raw = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        if let Cow::Owned(normal) = normalize_path(raw).map_err(Rejected::Path)? {
            let mut up = http::uri::Parts::from(parts.uri.clone());
            up.path_and_query = Some(normal.parse().map_err(|_| Rejected::Path(PathError::InvalidChar))?);
            parts.uri = http::Uri::from_parts(up).map_err(|_| Rejected::Path(PathError::InvalidChar))?;
        }
        let claims = self.authn.authenticate(parts).await.map_err(Rejected::Authn)?;
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let decision = self.authz.authorize(&AuthzAttributes {
            method: &parts.method,
            path,
            host: request_host(parts),
            headers: &parts.headers,
            source_ip: conn.source_ip,
            remote_ip: conn.remote_ip,
            peer: conn.peer,
            destination_ip: conn.destination_ip,
            destination_port: conn.destination_port,
            claims: claims.as_ref(),
        });
        if !decision.allowed {
            return Err(Rejected::Denied(decision));
        }
        Ok(Admitted { claims, decision })
    }

    /// Compiles what applies to `service` served by the waypoint `waypoint` (its Gateway).
    pub fn build(
        model: &Model,
        index: &AuthzIndex,
        cache: &JwksCache,
        service: &Service,
        waypoint: Option<&WaypointRef>,
    ) -> Self {
        ServiceSecurity {
            authn: Arc::new(Authenticator::for_service(model, service, waypoint, cache)),
            authz: Arc::new(Authorizer::for_service(index, model, service, waypoint)),
        }
    }
}

/// [`ServiceSecurity`] of every Service a waypoint serves, for one model generation.
#[derive(Debug, Default)]
pub struct SecurityTable {
    generation: u64,
    /// namespace → name → security (two levels so lookups borrow `&str`).
    services: HashMap<Arc<str>, HashMap<Arc<str>, ServiceSecurity>>,
}

impl SecurityTable {
    /// Compiles the security of the Services whose `waypoint` is `waypoint` (the
    /// `istio.io/use-waypoint` label on the Service or its namespace).
    pub fn build(model: &Model, cache: &JwksCache, waypoint: &WaypointRef) -> Self {
        let index = AuthzIndex::new(model);
        let mut services: HashMap<Arc<str>, HashMap<Arc<str>, ServiceSecurity>> = HashMap::new();
        for s in model.services().iter().filter(|s| s.waypoint.as_ref() == Some(waypoint)) {
            let sec = ServiceSecurity::build(model, &index, cache, s, Some(waypoint));
            services.entry(s.namespace.clone()).or_default().insert(s.name.clone(), sec);
        }
        SecurityTable { generation: model.generation(), services }
    }

    /// The model generation it was built from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The security of `namespace/name`; `None` for a Service this waypoint does not serve.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&ServiceSecurity> {
        self.services.get(namespace)?.get(name)
    }

    pub fn len(&self) -> usize {
        self.services.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}
