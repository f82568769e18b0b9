//! Per-object validation after deserialization: every rule that needs only the object
//! itself. All problems are collected (never stop at the first), each with its field path.

mod checks;
mod envoy_filter;
mod gateway;
mod k8s;
mod networking;
mod security;

pub(crate) use checks::Ctx;

use crate::Diagnostic;
use crate::object::Object;

/// Validates one object; returns its errors and warnings in field order.
pub fn validate(object: &Object) -> Vec<Diagnostic> {
    let mut cx = Ctx::new(object.object_ref());
    metadata(&mut cx, object);
    match object {
        Object::Namespace(_) | Object::ServiceAccount(_) => {}
        Object::Pod(o) => k8s::pod(&mut cx, o),
        Object::Service(o) => k8s::service(&mut cx, o),
        Object::EndpointSlice(o) => k8s::endpoint_slice(&mut cx, o),
        Object::VirtualService(o) => networking::virtual_service(&mut cx, &o.spec),
        Object::DestinationRule(o) => networking::destination_rule(&mut cx, &o.spec),
        Object::ServiceEntry(o) => networking::service_entry(&mut cx, &o.spec),
        Object::Gateway(o) => networking::gateway(&mut cx, &o.spec),
        Object::Sidecar(o) => networking::sidecar(&mut cx, &o.spec),
        Object::PeerAuthentication(o) => security::peer_authentication(&mut cx, &o.spec),
        Object::AuthorizationPolicy(o) => security::authorization_policy(&mut cx, &o.spec),
        Object::RequestAuthentication(o) => security::request_authentication(&mut cx, &o.spec),
        Object::Telemetry(o) => security::telemetry(&mut cx, &o.spec),
        Object::HttpRoute(o) => gateway::http_route(&mut cx, &o.spec),
        Object::GrpcRoute(o) => gateway::grpc_route(&mut cx, &o.spec),
        Object::KubeGateway(o) => gateway::kube_gateway(&mut cx, &o.spec),
        Object::EnvoyFilter(o) => envoy_filter::envoy_filter(&mut cx, &o.spec),
    }
    cx.diags
}

/// What kubectl would refuse in metadata: malformed names and label syntax.
fn metadata(cx: &mut Ctx, object: &Object) {
    let name = object.name();
    if !checks::is_dns_subdomain(name) {
        cx.err(
            "metadata.name",
            format!("{name:?} is not a valid name (lowercase letters, digits, '-' and '.', at most 253)"),
        );
    }
    let ns = object.namespace();
    if !ns.is_empty() && !checks::is_dns_label(ns) {
        cx.err(
            "metadata.namespace",
            format!("{ns:?} is not a valid namespace (lowercase letters, digits and '-', at most 63)"),
        );
    }
    cx.labels("metadata.labels", object.labels());
}
