//! L7 authorization at the waypoint: the [`Authorizer`] of one Service (built once per model
//! generation from the shared [`AuthzIndex`]) and the per-request [`AuthzAttributes`] it
//! evaluates with `mesh-policy`, without allocating in the common case.
//!
//! # Which AuthorizationPolicies apply (Istio ambient)
//! Policies whose `targetRefs` name the Service (kind `Service`, or kind `ServiceEntry` for a
//! service defined by one), the waypoint's own Gateway (kind `Gateway`: every service the waypoint
//! serves), or the `istio-waypoint` GatewayClass from the root namespace. Selector and
//! namespace-wide policies are ztunnel's (L4, at the destination workload), not ours.
//! A policy naming several of these targets counts once.
//!
//! # Attributes
//! `destination.port` and `ports` are the Service port the client used (what the waypoint
//! was sent to), `destination.ip` the address the proxy core passes (the VIP). The request
//! inside HBONE is plaintext, so there is no `connection.sni`: `values` on it never match,
//! `notValues` always do. `source.*`, `principals` and `namespaces` come from the HBONE
//! peer's certificate, as at ztunnel. Everything else is evaluated by `mesh-policy` (see
//! `mesh_policy::authz` for the order and the fail-closed rules).

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, Method};
use mesh_api::SpiffeId;
use mesh_model::{Model, Service, WaypointRef};
use mesh_policy::{AuthzIndex, AuthzPolicies, Decision, HeaderLookup, L7Attributes, NoAttributes, Request};

use super::jwt::Claims;

/// The body of a denial, as Envoy's RBAC filter answers.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// What the request looks like to authorization. `path` must be the normalised one
/// ([`super::normalize_path`]).
#[derive(Debug, Clone, Copy)]
pub struct AuthzAttributes<'a> {
    pub method: &'a Method,
    /// Normalised path, with its query (ignored by `paths`).
    pub path: &'a str,
    /// `:authority`/`Host` ([`super::request_host`]).
    pub host: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The HBONE peer's address.
    pub source_ip: IpAddr,
    /// The original client address when known (`remoteIpBlocks`); `None` = `source_ip`.
    pub remote_ip: Option<IpAddr>,
    /// The HBONE peer's SPIFFE identity (`principals`, `namespaces`, `source.*`).
    pub peer: Option<&'a SpiffeId>,
    /// The address the client sent to (the Service VIP or the workload), `destination.ip`.
    pub destination_ip: IpAddr,
    /// The service port, `ports` and `destination.port`.
    pub destination_port: u16,
    /// The validated JWT, if any.
    pub claims: Option<&'a Claims>,
}

/// `http::HeaderMap` seen by `mesh-policy`. Several values of one header are matched joined
/// with `,`, as Envoy's header matchers see them (so `x: a` + `x: b` is `a,b`: neither an
/// ALLOW on `a` nor a DENY on `b` can be met by adding a header line). Values that are not
/// UTF-8 are matched lossily.
#[derive(Debug, Clone, Copy)]
pub struct HeaderMapLookup<'a>(pub &'a HeaderMap);

impl HeaderLookup for HeaderMapLookup<'_> {
    fn any_header(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        let mut values = self.0.get_all(name).iter();
        let Some(first) = values.next() else { return false };
        let Some(second) = values.next() else {
            return match std::str::from_utf8(first.as_bytes()) {
                Ok(v) => pred(v),
                Err(_) => pred(&String::from_utf8_lossy(first.as_bytes())),
            };
        };
        let mut joined = String::from_utf8_lossy(first.as_bytes()).into_owned();
        for v in std::iter::once(second).chain(values) {
            joined.push(',');
            joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
        pred(&joined)
    }
}

/// The AuthorizationPolicies of one Service at this waypoint. Immutable, cheap to share.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    policies: AuthzPolicies,
}

impl Authorizer {
    /// The policies targeting `service`, `waypoint`'s Gateway and the waypoint GatewayClass
    /// (see the module docs). `index` must be built from `model`.
    pub fn for_service(
        index: &AuthzIndex,
        model: &Model,
        service: &Service,
        waypoint: Option<&WaypointRef>,
    ) -> Authorizer {
        let root = &*model.config().root_namespace;
        let mut sets = vec![
            index.for_target(model, super::service_target_kind(service), &service.namespace, &service.name),
            index.for_target(model, "GatewayClass", root, super::WAYPOINT_GATEWAY_CLASS),
        ];
        if let Some(w) = waypoint {
            sets.push(index.for_target(model, "Gateway", &w.namespace, &w.name));
        }
        let mut all: Vec<_> = Vec::new();
        for p in sets.iter().flat_map(AuthzPolicies::iter) {
            if !all.iter().any(|q| std::sync::Arc::ptr_eq(q, p)) {
                all.push(p.clone());
            }
        }
        Authorizer { policies: AuthzPolicies::new(all) }
    }

    /// An authorizer over given policies (tests, other callers).
    pub fn new(policies: AuthzPolicies) -> Self {
        Authorizer { policies }
    }

    pub fn policies(&self) -> &AuthzPolicies {
        &self.policies
    }

    /// Whether no policy applies (every request is allowed).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Authorizes one request in Istio's order (CUSTOM, DENY, AUDIT, ALLOW).
    pub fn authorize(&self, a: &AuthzAttributes<'_>) -> Decision {
        let headers = HeaderMapLookup(a.headers);
        let claims: &dyn mesh_policy::ClaimLookup = match a.claims {
            Some(c) => c,
            None => &NoAttributes,
        };
        // `aud` lists are short: borrow them through a stack buffer, spilling only when huge.
        let aud = a.claims.map_or(&[][..], |c| c.audiences());
        let mut buf: [&str; 8] = [""; 8];
        let spilled: Vec<&str>;
        let audiences: &[&str] = if aud.len() <= buf.len() {
            for (slot, v) in buf.iter_mut().zip(aud) {
                *slot = v;
            }
            &buf[..aud.len()]
        } else {
            spilled = aud.iter().map(|v| &**v).collect();
            &spilled
        };
        let l7 = L7Attributes {
            host: a.host,
            method: Some(a.method.as_str()),
            path: Some(a.path),
            headers: &headers,
            request_principal: a.claims.map(Claims::principal),
            audiences,
            presenter: a.claims.and_then(Claims::presenter),
            claims,
            sni: None,
        };
        let req = Request {
            source_ip: a.source_ip,
            source_principal: a.peer,
            remote_ip: a.remote_ip,
            destination_ip: a.destination_ip,
            destination_port: a.destination_port,
            l7: Some(&l7),
        };
        self.policies.evaluate(&req)
    }
}

/// The 403 a denied request gets.
pub fn denied_response() -> http::Response<Bytes> {
    let mut resp = http::Response::new(Bytes::from_static(DENIED_BODY.as_bytes()));
    *resp.status_mut() = http::StatusCode::FORBIDDEN;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    resp
}
