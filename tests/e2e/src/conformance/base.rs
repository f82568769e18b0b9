//! The base model every suite adds to (see `tests/conformance/README.md`): namespace `demo` in
//! the ambient mesh using waypoint `demo/waypoint`, Services `a`, `b`, `mirror` and their
//! backend pods, and the client pod. The in-process runner places pods on `127.<net>.x.y`;
//! the lab runner on `10.<net>.x.y`, and there the lab itself starts the waypoint pod for the
//! Gateway.

use std::net::{IpAddr, Ipv4Addr};

use serde::Deserialize as _;

/// A backend pod of the base model.
#[derive(Debug, Clone)]
pub struct BackendPod {
    pub name: &'static str,
    pub app: &'static str,
    pub version: &'static str,
    pub sub: u8,
    pub host: u8,
}

/// Backends: Services `a` (pods a-v1, a-v2, a-v3), `b` (b-v1) and `mirror` (mirror-v1), all on
/// port 80 → 8080 on node-b; the client pod is on node-a.
pub const BACKENDS: [BackendPod; 5] = [
    BackendPod { name: "a-v1", app: "a", version: "v1", sub: 2, host: 10 },
    BackendPod { name: "a-v2", app: "a", version: "v2", sub: 2, host: 11 },
    BackendPod { name: "a-v3", app: "a", version: "v3", sub: 2, host: 12 },
    BackendPod { name: "b-v1", app: "b", version: "v1", sub: 2, host: 20 },
    BackendPod { name: "mirror-v1", app: "mirror", version: "v1", sub: 2, host: 30 },
];

/// Where pods are addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On loopback (`127.<net>.x.y`), with an explicit waypoint pod and Service.
    InProcess,
    /// In the lab (`10.<net>.x.y`); the lab runs the waypoint for the Gateway.
    Lab,
}

impl Placement {
    /// A pod address of block `net`.
    pub fn ip(self, net: u8, sub: u8, host: u8) -> IpAddr {
        let first = if self == Placement::Lab { 10 } else { 127 };
        IpAddr::V4(Ipv4Addr::new(first, net, sub, host))
    }

    /// A suite's config for this placement: `{{net}}` filled in and, in the lab, pod
    /// addresses and blocks moved from `127.<net>.` to `10.<net>.`.
    pub fn suite_config(self, config: &str, net: u8) -> String {
        let s = config.replace("{{net}}", &net.to_string());
        match self {
            Placement::InProcess => s,
            Placement::Lab => s.replace(&format!("127.{net}."), &format!("10.{net}.")),
        }
    }
}

fn pod(name: &str, node: &str, sa: &str, labels: &str, ip: IpAddr, port: u16) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: demo, labels: {{{labels}}}}}\n\
         spec:\n  nodeName: {node}\n  serviceAccountName: {sa}\n  containers:\n  - name: app\n    image: echo\n    \
         ports: [{{containerPort: {port}, name: http}}]\nstatus: {{phase: Running, podIP: {ip}}}\n"
    )
}

/// The base model. Service VIPs: a 10.<net>.0.1, b 10.<net>.0.2, mirror 10.<net>.0.3; the
/// client pod is `<net>.1.10`.
pub fn base_model(net: u8, placement: Placement) -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: waypoint, namespace: demo}\n\
         spec:\n  gatewayClassName: istio-waypoint\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n",
    );
    if placement == Placement::InProcess {
        y += "---\napiVersion: v1\nkind: Service\nmetadata: {name: waypoint, namespace: demo}\n\
              spec:\n  selector: {gateway.networking.k8s.io/gateway-name: waypoint}\n  ports: [{name: mesh, port: 15008}]\n";
        y += &pod(
            "waypoint-0",
            "node-a",
            "waypoint",
            "gateway.networking.k8s.io/gateway-name: waypoint, istio.io/dataplane-mode: none",
            placement.ip(net, 1, 250),
            15008,
        );
    }
    y += &pod("client", "node-a", "client", "app: client, version: v1", placement.ip(net, 1, 10), 9999);
    for b in BACKENDS {
        let labels = format!("app: {}, version: {}", b.app, b.version);
        y += &pod(b.name, "node-b", b.app, &labels, placement.ip(net, b.sub, b.host), 8080);
    }
    for (i, app) in ["a", "b", "mirror"].iter().enumerate() {
        y += &format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {app}, namespace: demo}}\n\
             spec:\n  clusterIP: 10.{net}.0.{}\n  selector: {{app: {app}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n",
            i + 1
        );
    }
    y
}

/// Service VIPs of namespace `demo` in a model text (the base model plus a suite's config):
/// name → first `clusterIP`.
pub fn demo_vips(model: &str) -> std::collections::HashMap<String, IpAddr> {
    let mut out = std::collections::HashMap::new();
    for doc in serde_yaml::Deserializer::from_str(model) {
        let Ok(v) = serde_yaml::Value::deserialize(doc) else { continue };
        let s = |path: &[&str]| {
            let mut cur = &v;
            for p in path {
                cur = cur.get(*p)?;
            }
            cur.as_str().map(str::to_string)
        };
        if s(&["kind"]).as_deref() != Some("Service")
            || s(&["metadata", "namespace"]).as_deref() != Some("demo")
        {
            continue;
        }
        if let (Some(name), Some(ip)) = (s(&["metadata", "name"]), s(&["spec", "clusterIP"]))
            && let Ok(ip) = ip.parse()
        {
            out.insert(name, ip);
        }
    }
    out
}
