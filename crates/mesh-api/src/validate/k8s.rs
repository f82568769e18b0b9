//! Checks of Kubernetes core objects: what the mesh relies on (IPs, ports, selectors).

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::checks::{Ctx, is_port_name};
use crate::k8s::{EndpointSlice, Pod, Service};

pub(super) fn pod(cx: &mut Ctx, pod: &Pod) {
    if let Some(spec) = &pod.spec {
        for (i, c) in spec.containers.iter().enumerate() {
            for (j, p) in c.ports.iter().flatten().enumerate() {
                cx.port(&format!("spec.containers[{i}].ports[{j}].containerPort"), p.container_port.into());
            }
        }
    }
    if let Some(status) = &pod.status {
        if let Some(ip) = &status.pod_ip {
            cx.ip("status.podIP", ip);
        }
        for (i, ip) in status.pod_ips.iter().flatten().enumerate() {
            cx.ip(&format!("status.podIPs[{i}].ip"), &ip.ip);
        }
    }
}

pub(super) fn service(cx: &mut Ctx, svc: &Service) {
    let Some(spec) = &svc.spec else { return };
    if let Some(sel) = &spec.selector {
        cx.labels("spec.selector", sel);
    }
    let vip = |cx: &mut Ctx, field: &str, ip: &str| {
        if !ip.is_empty() && ip != "None" {
            cx.ip(field, ip);
        }
    };
    if let Some(ip) = &spec.cluster_ip {
        vip(cx, "spec.clusterIP", ip);
    }
    for (i, ip) in spec.cluster_ips.iter().flatten().enumerate() {
        vip(cx, &format!("spec.clusterIPs[{i}]"), ip);
    }
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        cx.port(&format!("spec.ports[{i}].port"), p.port.into());
        match &p.target_port {
            Some(IntOrString::Int(n)) => cx.port(&format!("spec.ports[{i}].targetPort"), (*n).into()),
            Some(IntOrString::String(name)) if !is_port_name(name) => cx.err(
                format!("spec.ports[{i}].targetPort"),
                format!("{name:?} is neither a port number nor a valid port name"),
            ),
            _ => {}
        }
        if let Some(np) = p.node_port {
            cx.port(&format!("spec.ports[{i}].nodePort"), np.into());
        }
    }
}

pub(super) fn endpoint_slice(cx: &mut Ctx, es: &EndpointSlice) {
    let ip_family = matches!(es.address_type.as_str(), "IPv4" | "IPv6");
    for (i, ep) in es.endpoints.iter().enumerate() {
        if ip_family {
            for (j, a) in ep.addresses.iter().enumerate() {
                cx.ip(&format!("endpoints[{i}].addresses[{j}]"), a);
            }
        }
    }
    for (i, p) in es.ports.iter().flatten().enumerate() {
        if let Some(n) = p.port {
            cx.port(&format!("ports[{i}].port"), n.into());
        }
    }
}
