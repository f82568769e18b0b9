//! Workloads (Running pods with their identity, capture and waypoint) and namespaces, built
//! from Pod and Namespace objects.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use mesh_api::SpiffeId;

use crate::config::MeshConfig;
use crate::intern::{Interner, Labels};

/// Namespace or pod label that opts into ambient capture (`ambient`) or out (`none`).
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// Namespace, service or pod label naming the waypoint that serves it (`none` disables).
pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
/// Optional label giving the waypoint's namespace when it is not the object's own.
pub const USE_WAYPOINT_NAMESPACE_LABEL: &str = "istio.io/use-waypoint-namespace";

/// The label on a waypoint's Gateway saying which traffic it takes.
pub const WAYPOINT_FOR_LABEL: &str = "istio.io/waypoint-for";

/// Which traffic a waypoint takes, from `istio.io/waypoint-for` on its Gateway. Istio's
/// default is `service`: connections to a Service's address go through the waypoint, while
/// connections to a pod's own address go straight to the pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WaypointFor {
    #[default]
    Service,
    Workload,
    All,
    None,
}

impl WaypointFor {
    /// The label's value; absent or unknown values are Istio's default, `service`.
    pub fn from_label(value: Option<&str>) -> WaypointFor {
        match value {
            Some("workload") => WaypointFor::Workload,
            Some("all") => WaypointFor::All,
            Some("none") => WaypointFor::None,
            _ => WaypointFor::Service,
        }
    }

    /// Whether connections addressed to a Service go through the waypoint.
    pub fn takes_services(self) -> bool {
        matches!(self, WaypointFor::Service | WaypointFor::All)
    }

    /// Whether connections addressed to a pod go through the waypoint.
    pub fn takes_workloads(self) -> bool {
        matches!(self, WaypointFor::Workload | WaypointFor::All)
    }
}

/// A waypoint a workload or service sends its traffic through (a Gateway by namespace/name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct WaypointRef {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

/// The lifecycle phase of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl PodPhase {
    fn parse(s: Option<&str>) -> Self {
        match s {
            Some("Running") => PodPhase::Running,
            Some("Pending") => PodPhase::Pending,
            Some("Succeeded") => PodPhase::Succeeded,
            Some("Failed") => PodPhase::Failed,
            _ => PodPhase::Unknown,
        }
    }
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub(crate) fn parse(s: Option<&str>) -> Self {
        match s {
            Some("UDP") => Protocol::Udp,
            Some("SCTP") => Protocol::Sctp,
            _ => Protocol::Tcp,
        }
    }
}

/// A port a container declares.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContainerPort {
    /// The port's name (the target of a Service's named `targetPort`).
    pub name: Option<Arc<str>>,
    pub port: u16,
    pub protocol: Protocol,
}

/// One pod, as the mesh sees it. Pods that are not Running (or have no IP yet) are known by
/// name but have no addresses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Workload {
    pub uid: Arc<str>,
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    /// `spec.nodeName`.
    pub node: Option<Arc<str>>,
    /// `status.podIPs` (or `status.podIP`); empty unless the pod is Running and not on the
    /// host network (host-network pods share the node's address and are not mesh endpoints).
    pub ips: Box<[IpAddr]>,
    pub phase: PodPhase,
    /// `spec.serviceAccountName`, `default` when unset.
    pub service_account: Arc<str>,
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    #[serde(serialize_with = "crate::intern::ser_display")]
    pub identity: Arc<SpiffeId>,
    pub labels: Labels,
    /// The workload (Deployment-like) name used in telemetry: the owner's name when the pod
    /// has an owner, else the pod's name.
    pub workload_name: Arc<str>,
    /// Istio's canonical service name (`service.istio.io/canonical-name`, `app.kubernetes.io/name`,
    /// `app`, else the workload name).
    pub canonical_name: Arc<str>,
    /// Istio's canonical revision (`service.istio.io/canonical-revision`, `app.kubernetes.io/version`,
    /// `version`, else `latest`).
    pub canonical_revision: Arc<str>,
    /// Whether ztunnel captures the pod's traffic (`istio.io/dataplane-mode`).
    pub captured: bool,
    /// The waypoint serving this pod (`istio.io/use-waypoint` on the pod, else its namespace).
    pub waypoint: Option<WaypointRef>,
    /// Ports the pod's containers declare.
    pub ports: Box<[ContainerPort]>,
}

impl Workload {
    /// Whether the workload has addresses (Running with an IP) and can receive traffic.
    pub fn is_addressable(&self) -> bool {
        !self.ips.is_empty()
    }

    /// The container port named `name`.
    pub fn named_port(&self, name: &str) -> Option<u16> {
        self.ports.iter().find(|p| p.name.as_deref() == Some(name)).map(|p| p.port)
    }
}

/// A namespace: its labels and the mesh settings they imply. Namespaces that only appear in
/// other objects' metadata exist with no labels (`defined` false).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NamespaceInfo {
    pub name: Arc<str>,
    pub labels: Labels,
    /// `istio.io/dataplane-mode=ambient` on the namespace.
    pub captured: bool,
    /// `istio.io/use-waypoint` on the namespace (`none` means no waypoint).
    pub waypoint: Option<WaypointRef>,
    /// Whether a Namespace object defines it.
    pub defined: bool,
}

/// The waypoint selected by an object's labels: `Some(None)` when the label says `none`,
/// `None` when the label is absent (so the caller falls back to the namespace's).
pub(crate) fn waypoint_label(
    labels: &Labels,
    own_ns: &Arc<str>,
    i: &mut Interner,
) -> Option<Option<WaypointRef>> {
    let name = labels.get(USE_WAYPOINT_LABEL)?;
    if name == "none" || name.is_empty() {
        return Some(None);
    }
    let namespace = match labels.get(USE_WAYPOINT_NAMESPACE_LABEL) {
        Some(ns) if !ns.is_empty() => i.str(ns),
        _ => own_ns.clone(),
    };
    Some(Some(WaypointRef { namespace, name: i.str(name) }))
}

pub(crate) fn namespace_info(ns: &Namespace, i: &mut Interner) -> Option<NamespaceInfo> {
    let name = i.str(ns.metadata.name.as_deref().filter(|n| !n.is_empty())?);
    Some(namespace_from_labels(name, i.labels(ns.metadata.labels.as_ref()), true, i))
}

pub(crate) fn namespace_from_labels(
    name: Arc<str>,
    labels: Labels,
    defined: bool,
    i: &mut Interner,
) -> NamespaceInfo {
    let captured = labels.get(DATAPLANE_MODE_LABEL) == Some("ambient");
    let waypoint = waypoint_label(&labels, &name, i).flatten();
    NamespaceInfo { name, labels, captured, waypoint, defined }
}

/// Why a pod could not become a workload.
#[derive(Debug)]
pub(crate) enum PodError {
    NoName,
    Identity(String),
}

pub(crate) fn workload_from_pod(
    pod: &Pod,
    ns: &NamespaceInfo,
    config: &MeshConfig,
    i: &mut Interner,
) -> Result<Workload, PodError> {
    let meta = &pod.metadata;
    let name: Arc<str> = meta.name.as_deref().filter(|n| !n.is_empty()).ok_or(PodError::NoName)?.into();
    let namespace = ns.name.clone();
    let labels = i.labels(meta.labels.as_ref());
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let phase = PodPhase::parse(status.and_then(|s| s.phase.as_deref()));

    let mut ips: Vec<IpAddr> = Vec::new();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    if phase == PodPhase::Running
        && !host_network
        && let Some(st) = status
    {
        for ip in st.pod_ips.iter().flatten().map(|p| p.ip.as_str()).chain(st.pod_ip.as_deref()) {
            if let Ok(ip) = ip.parse::<IpAddr>()
                && !ips.contains(&ip)
            {
                ips.push(ip);
            }
        }
    }

    let service_account =
        match spec.and_then(|s| s.service_account_name.as_deref().or(s.service_account.as_deref())) {
            Some(sa) if !sa.is_empty() => i.str(sa),
            _ => i.str("default"),
        };
    let identity = i.identity(&config.trust_domain, &namespace, &service_account).ok_or_else(|| {
        PodError::Identity(format!(
            "no valid SPIFFE identity from trust domain {:?}, namespace {namespace:?}, service account {service_account:?}",
            config.trust_domain
        ))
    })?;

    let mode = labels.get(DATAPLANE_MODE_LABEL);
    let captured = match mode {
        Some("none") => false,
        Some("ambient") => true,
        _ => ns.captured,
    };
    let waypoint = waypoint_label(&labels, &namespace, i).unwrap_or_else(|| ns.waypoint.clone());

    let workload_name = owner_workload_name(pod).map(|n| i.str(&n)).unwrap_or_else(|| name.clone());
    let canonical_name = match labels
        .get("service.istio.io/canonical-name")
        .or_else(|| labels.get("app.kubernetes.io/name"))
        .or_else(|| labels.get("app"))
    {
        Some(n) => i.str(n),
        None => workload_name.clone(),
    };
    let canonical_revision = i.str(
        labels
            .get("service.istio.io/canonical-revision")
            .or_else(|| labels.get("app.kubernetes.io/version"))
            .or_else(|| labels.get("version"))
            .unwrap_or("latest"),
    );

    let mut ports = Vec::new();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        for p in c.ports.iter().flatten() {
            let Ok(port) = u16::try_from(p.container_port) else { continue };
            ports.push(ContainerPort {
                name: p.name.as_deref().filter(|n| !n.is_empty()).map(|n| i.str(n)),
                port,
                protocol: Protocol::parse(p.protocol.as_deref()),
            });
        }
    }

    Ok(Workload {
        uid: meta.uid.as_deref().map(Arc::from).unwrap_or_else(|| i.empty()),
        node: spec.and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty()).map(|n| i.str(n)),
        ips: ips.into(),
        phase,
        service_account,
        identity,
        labels,
        workload_name,
        canonical_name,
        canonical_revision,
        captured,
        waypoint,
        ports: ports.into(),
        name,
        namespace,
    })
}

/// The controller's name from `ownerReferences`: a ReplicaSet's name loses its pod-template
/// hash (`reviews-v1-5f7b9d8c4` → `reviews-v1`), so it names the Deployment.
fn owner_workload_name(pod: &Pod) -> Option<String> {
    let owner = pod.metadata.owner_references.as_ref()?.iter().find(|o| o.controller == Some(true))?;
    if owner.kind == "ReplicaSet"
        && let Some((base, hash)) = owner.name.rsplit_once('-')
        && !base.is_empty()
        && hash.len() >= 5
        && hash.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Some(base.to_string());
    }
    Some(owner.name.clone())
}
