//! Services: Kubernetes Services (VIPs, ports, endpoints from EndpointSlices or from the
//! selector over the workloads) and ServiceEntry hosts, with their host names.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service as KubeService;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_api::SpiffeId;
use mesh_api::istio::networking::{Location, Resolution, ServiceEntrySpec};

use crate::config::MeshConfig;
use crate::intern::{Interner, Labels};
use crate::workload::{NamespaceInfo, Protocol, WaypointRef, Workload, waypoint_label};

/// Label of an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Where a service's endpoint port comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    /// A container port name, resolved per endpoint.
    Name(Arc<str>),
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServicePort {
    pub name: Option<Arc<str>>,
    pub port: u16,
    pub protocol: Protocol,
    /// `appProtocol` (Service) or `protocol` (ServiceEntry: HTTP, GRPC, TLS, ...).
    pub app_protocol: Option<Arc<str>>,
    pub target_port: TargetPort,
}

/// One backend of a service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    /// The pod behind the address, when it is one the model knows.
    #[serde(serialize_with = "ser_workload_name")]
    pub workload: Option<Arc<Workload>>,
    /// Endpoint port for each of the service's ports (same order as `Service::ports`); 0 when
    /// this endpoint does not serve that port (e.g. a named target port its pod lacks).
    pub ports: Box<[u16]>,
    /// Ready to receive traffic.
    pub ready: bool,
    /// Labels for subset selection (the pod's, or a ServiceEntry endpoint's own).
    pub labels: Labels,
    /// The expected identity: the pod's, or a ServiceEntry endpoint's `serviceAccount`.
    #[serde(serialize_with = "ser_identity")]
    pub identity: Option<Arc<SpiffeId>>,
    /// Load-balancing weight (ServiceEntry endpoints; 1 otherwise).
    pub weight: u32,
}

fn ser_workload_name<S: serde::Serializer>(w: &Option<Arc<Workload>>, s: S) -> Result<S::Ok, S::Error> {
    match w {
        Some(w) => s.collect_str(&format_args!("{}/{}", w.namespace, w.name)),
        None => s.serialize_none(),
    }
}

fn ser_identity<S: serde::Serializer>(id: &Option<Arc<SpiffeId>>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}

impl Endpoint {
    /// The endpoint port serving service port index `idx`, if any.
    pub fn port_at(&self, idx: usize) -> Option<u16> {
        self.ports.get(idx).copied().filter(|p| *p != 0)
    }
}

/// A ServiceEntry endpoint given by host name (resolved by DNS when used).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DnsEndpoint {
    pub host: Arc<str>,
    /// Same layout as `Endpoint::ports`.
    pub ports: Box<[u16]>,
}

/// Where the service was defined.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum ServiceSource {
    Kubernetes {
        /// `clusterIP: None`: no VIP, clients reach the endpoints directly.
        headless: bool,
        /// `type: ExternalName` target.
        external_name: Option<Arc<str>>,
    },
    ServiceEntry {
        resolution: Resolution,
        location: Location,
        /// Endpoints given by host name.
        dns_endpoints: Box<[DnsEndpoint]>,
    },
}

/// How the endpoints were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum EndpointsFrom {
    /// EndpointSlices labelled with the service's name.
    EndpointSlices,
    /// The service's selector over the model's workloads.
    Selector,
    /// A ServiceEntry's `endpoints` or `workloadSelector`.
    ServiceEntry,
    /// No selector and no slices.
    None,
}

/// A service (Kubernetes Service or one ServiceEntry host).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Service {
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    /// Fully qualified host name (`name.ns.svc.<suffix>`, or the ServiceEntry host).
    pub hostname: Arc<str>,
    /// Virtual IPs (`clusterIPs`, ServiceEntry `addresses`); empty when headless.
    pub vips: Box<[IpAddr]>,
    pub ports: Box<[ServicePort]>,
    pub endpoints: Box<[Endpoint]>,
    pub endpoints_from: EndpointsFrom,
    /// `istio.io/use-waypoint` on the service, else its namespace's.
    pub waypoint: Option<WaypointRef>,
    /// Pod selector (`spec.selector`, ServiceEntry `workloadSelector.labels`).
    pub selector: Option<Labels>,
    pub labels: Labels,
    pub source: ServiceSource,
}

impl Service {
    /// The index of the port numbered `port`.
    pub fn port_index(&self, port: u16) -> Option<usize> {
        self.ports.iter().position(|p| p.port == port)
    }

    /// Whether this is a Kubernetes Service without a VIP.
    pub fn is_headless(&self) -> bool {
        matches!(self.source, ServiceSource::Kubernetes { headless: true, .. })
    }
}

/// A service before endpoints are attached, plus what the builder needs for them.
pub(crate) struct Draft {
    pub service: Service,
    /// Messages to report as warnings against the defining object.
    pub warnings: Vec<(String, String)>,
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = ip.parse().ok()?;
    match prefix {
        None => Some(ip),
        Some("32") if ip.is_ipv4() => Some(ip),
        Some("128") if ip.is_ipv6() => Some(ip),
        Some(_) => None,
    }
}

pub(crate) fn kube_service(
    svc: &KubeService,
    ns: &NamespaceInfo,
    config: &MeshConfig,
    i: &mut Interner,
) -> Option<Draft> {
    let name = i.str(svc.metadata.name.as_deref().filter(|n| !n.is_empty())?);
    let namespace = ns.name.clone();
    let labels = i.labels(svc.metadata.labels.as_ref());
    let spec = svc.spec.as_ref();
    let mut warnings = Vec::new();
    let headless = spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    let mut vips = Vec::new();
    if !headless && let Some(s) = spec {
        for (idx, ip) in s.cluster_ips.iter().flatten().chain(s.cluster_ip.iter()).enumerate() {
            if ip.is_empty() || ip == "None" {
                continue;
            }
            match ip.parse::<IpAddr>() {
                Ok(ip) if !vips.contains(&ip) => vips.push(ip),
                Ok(_) => {}
                Err(_) => {
                    warnings.push((format!("spec.clusterIPs[{idx}]"), format!("{ip:?} is not an IP address")))
                }
            }
        }
    }
    let mut ports = Vec::new();
    for (idx, p) in spec.and_then(|s| s.ports.as_ref()).into_iter().flatten().enumerate() {
        let Ok(port) = u16::try_from(p.port) else {
            warnings.push((format!("spec.ports[{idx}].port"), format!("{} is not a port number", p.port)));
            continue;
        };
        let target_port = match &p.target_port {
            None => TargetPort::Number(port),
            Some(IntOrString::Int(n)) => match u16::try_from(*n) {
                Ok(n) if n != 0 => TargetPort::Number(n),
                _ => {
                    warnings
                        .push((format!("spec.ports[{idx}].targetPort"), format!("{n} is not a port number")));
                    continue;
                }
            },
            Some(IntOrString::String(s)) => match s.parse::<u16>() {
                Ok(n) if n != 0 => TargetPort::Number(n),
                _ => TargetPort::Name(i.str(s)),
            },
        };
        ports.push(ServicePort {
            name: p.name.as_deref().filter(|n| !n.is_empty()).map(|n| i.str(n)),
            port,
            protocol: Protocol::parse(p.protocol.as_deref()),
            app_protocol: p.app_protocol.as_deref().map(|a| i.str(a)),
            target_port,
        });
    }
    let selector =
        spec.and_then(|s| s.selector.as_ref()).filter(|s| !s.is_empty()).map(|s| i.labels(Some(s)));
    let external_name = spec
        .filter(|s| s.type_.as_deref() == Some("ExternalName"))
        .and_then(|s| s.external_name.as_deref())
        .map(|n| i.str(n));
    let waypoint = waypoint_label(&labels, &namespace, i).unwrap_or_else(|| ns.waypoint.clone());
    let hostname = i.str(&format!("{name}.{namespace}.svc.{}", config.domain_suffix));
    Some(Draft {
        service: Service {
            name,
            namespace,
            hostname,
            vips: vips.into(),
            ports: ports.into(),
            endpoints: Box::default(),
            endpoints_from: EndpointsFrom::None,
            waypoint,
            selector,
            labels,
            source: ServiceSource::Kubernetes { headless, external_name },
        },
        warnings,
    })
}

/// Endpoint port for service port `sp` on `workload` (named ports via its container ports).
fn target_for(sp: &ServicePort, workload: Option<&Workload>) -> u16 {
    match &sp.target_port {
        TargetPort::Number(n) => *n,
        TargetPort::Name(name) => workload.and_then(|w| w.named_port(name)).unwrap_or(0),
    }
}

/// Endpoints of a selector-based service: its namespace's addressable workloads whose labels
/// match.
pub(crate) fn endpoints_from_selector(service: &Service, ns_workloads: &[Arc<Workload>]) -> Vec<Endpoint> {
    let Some(selector) = &service.selector else { return Vec::new() };
    // Workloads are sorted by name, so a Deployment's pods sit together and share one
    // interned label set: the selector is matched once per run of them, not once per pod.
    let mut last: Option<(&Labels, bool)> = None;
    ns_workloads
        .iter()
        .filter(|w| w.is_addressable())
        .filter(|w| match last {
            Some((labels, matched)) if labels.same(&w.labels) => matched,
            _ => {
                let matched = w.labels.matches(selector);
                last = Some((&w.labels, matched));
                matched
            }
        })
        .map(|w| Endpoint {
            ip: w.ips[0],
            ports: service.ports.iter().map(|sp| target_for(sp, Some(w))).collect(),
            ready: true,
            labels: w.labels.clone(),
            identity: Some(w.identity.clone()),
            weight: 1,
            workload: Some(w.clone()),
        })
        .collect()
}

/// Endpoints listed by EndpointSlices; `lookup` finds the workload behind an address.
pub(crate) fn endpoints_from_slices(
    service: &Service,
    slices: &[&EndpointSlice],
    lookup: &dyn Fn(IpAddr) -> Option<Arc<Workload>>,
) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for slice in slices {
        // Slice ports are matched to service ports by name, as kube-proxy does.
        let slice_ports: Vec<(Option<&str>, Option<u16>)> = slice
            .ports
            .iter()
            .flatten()
            .map(|p| {
                (p.name.as_deref().filter(|n| !n.is_empty()), p.port.and_then(|n| u16::try_from(n).ok()))
            })
            .collect();
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse::<IpAddr>() else { continue };
                if out.iter().any(|e| e.ip == ip) {
                    continue;
                }
                let workload = lookup(ip);
                let ports = service
                    .ports
                    .iter()
                    .map(|sp| {
                        slice_ports
                            .iter()
                            .find(|(n, _)| *n == sp.name.as_deref())
                            .and_then(|(_, p)| *p)
                            .unwrap_or_else(|| target_for(sp, workload.as_deref()))
                    })
                    .collect();
                out.push(Endpoint {
                    ip,
                    ports,
                    ready,
                    labels: workload.as_ref().map(|w| w.labels.clone()).unwrap_or_default(),
                    identity: workload.as_ref().map(|w| w.identity.clone()),
                    weight: 1,
                    workload,
                });
            }
        }
    }
    out
}

/// One service per host of a ServiceEntry.
pub(crate) fn service_entry(
    name: &str,
    spec: &ServiceEntrySpec,
    metadata_labels: Labels,
    ns: &NamespaceInfo,
    ns_workloads: &[Arc<Workload>],
    config: &MeshConfig,
    i: &mut Interner,
) -> Draft {
    let namespace = ns.name.clone();
    let mut warnings = Vec::new();
    let mut vips = Vec::new();
    for (idx, a) in spec.addresses.iter().enumerate() {
        match parse_ip(a) {
            Some(ip) if !vips.contains(&ip) => vips.push(ip),
            Some(_) => {}
            None => warnings.push((
                format!("spec.addresses[{idx}]"),
                format!("{a:?} is not a single IP address; it is not used as a VIP"),
            )),
        }
    }
    let ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .filter_map(|p| {
            let port = u16::try_from(p.number).ok().filter(|n| *n != 0)?;
            let target =
                p.target_port.and_then(|t| u16::try_from(t).ok()).filter(|t| *t != 0).unwrap_or(port);
            Some(ServicePort {
                name: Some(i.str(&p.name)).filter(|n| !n.is_empty()),
                port,
                protocol: Protocol::Tcp,
                app_protocol: p.protocol.as_deref().map(|s| i.str(s)),
                target_port: TargetPort::Number(target),
            })
        })
        .collect();
    let endpoint_ports = |named: &std::collections::BTreeMap<String, u32>| -> Box<[u16]> {
        ports
            .iter()
            .map(|sp| {
                sp.name.as_deref().and_then(|n| named.get(n)).and_then(|p| u16::try_from(*p).ok()).unwrap_or(
                    match sp.target_port {
                        TargetPort::Number(n) => n,
                        TargetPort::Name(_) => 0,
                    },
                )
            })
            .collect()
    };
    let selector = spec.workload_selector.as_ref().map(|s| i.labels(Some(&s.labels)));
    let mut endpoints = Vec::new();
    let mut dns_endpoints = Vec::new();
    for (idx, we) in spec.endpoints.iter().enumerate() {
        let Some(address) = we.address.as_deref().filter(|a| !a.is_empty()) else { continue };
        let ports = endpoint_ports(&we.ports);
        match address.parse::<IpAddr>() {
            Ok(ip) => {
                let sa = we.service_account.as_deref().map(|s| i.str(s));
                endpoints.push(Endpoint {
                    ip,
                    workload: None,
                    ports,
                    ready: true,
                    labels: i.labels(Some(&we.labels)),
                    identity: sa.and_then(|sa| i.identity(&config.trust_domain, &namespace, &sa)),
                    weight: we.weight.unwrap_or(1).max(1),
                })
            }
            Err(_) if address.starts_with("unix://") => warnings.push((
                format!("spec.endpoints[{idx}].address"),
                "unix domain socket endpoints are not supported; ignored".to_string(),
            )),
            Err(_) => dns_endpoints.push(DnsEndpoint { host: i.str(address), ports }),
        }
    }
    if let Some(sel) = &selector {
        for w in ns_workloads.iter().filter(|w| w.is_addressable() && w.labels.matches(sel)) {
            endpoints.push(Endpoint {
                ip: w.ips[0],
                ports: ports.iter().map(|sp| target_for(sp, Some(w))).collect(),
                ready: true,
                labels: w.labels.clone(),
                identity: Some(w.identity.clone()),
                weight: 1,
                workload: Some(w.clone()),
            });
        }
    }
    let waypoint = waypoint_label(&metadata_labels, &namespace, i).unwrap_or_else(|| ns.waypoint.clone());
    let service = Service {
        name: i.str(name),
        namespace,
        hostname: i.empty(),
        vips: vips.into(),
        ports: ports.into(),
        endpoints: endpoints.into(),
        endpoints_from: EndpointsFrom::ServiceEntry,
        waypoint,
        selector,
        labels: metadata_labels,
        source: ServiceSource::ServiceEntry {
            resolution: spec.resolution.unwrap_or(Resolution::None),
            location: spec.location.unwrap_or(Location::MeshExternal),
            dns_endpoints: dns_endpoints.into(),
        },
    };
    Draft { service, warnings }
}
