//! The lab's model: reads the user's YAML, materialises Deployments, ReplicaSets, StatefulSets
//! and DaemonSets into Pods (spread over the nodes), places and addresses Running pods, and
//! writes what ztunnel and mesh-ca read (`<state>/model/`). Also renders each pod's hosts file.
//! Pure data: nothing here touches the kernel.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use mesh_api::{Diagnostic, Object, Origin, Parsed, parse_object, split_documents};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::LabError;

/// Nodes used when the YAML names none.
pub const DEFAULT_NODES: [&str; 2] = ["node-a", "node-b"];
/// File (in the model folder) holding the input's objects other than Pods and workloads.
pub const INPUT_FILE: &str = "input.yaml";
/// File (in the model folder) holding every Pod, as the lab runs them.
pub const PODS_FILE: &str = "pods.yaml";

/// A pod of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabPod {
    pub namespace: String,
    pub name: String,
    /// Node it runs on (`spec.nodeName`).
    pub node: String,
    /// `status.podIP`; None for a pod that is not Running and had none.
    pub ip: Option<Ipv4Addr>,
    /// Phase Running: gets a netns, a cgroup and an app.
    pub running: bool,
    /// TCP containerPorts, sorted: the echo app listens on exactly these.
    pub ports: Vec<u16>,
    /// `Kind/namespace/name` of the workload it was made from; None for a Pod in the input.
    pub owner: Option<String>,
    /// Hash of the owner's pod template (pods are reused while it is unchanged).
    pub template_hash: String,
    /// The waypoint Gateway this pod runs (it runs the waypoint, not the echo app).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<String>,
    /// The waypoint's plaintext HTTP port on the pod address, from the Gateway's
    /// [`PLAINTEXT_HTTP_ANNOTATION`] (the benchmarks use it as a plain L7 proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waypoint_plaintext_port: Option<u16>,
    /// The waypoint's log level, from the Gateway's [`LOG_LEVEL_ANNOTATION`] (`warn` drops the
    /// per-request access log, which Istio's waypoints do not write by default either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waypoint_log_level: Option<String>,
    /// The waypoint's tokio worker threads, from the Gateway's [`WORKER_THREADS_ANNOTATION`]
    /// (as a pod's CPU limit would set them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waypoint_worker_threads: Option<u16>,
}

/// Gateway annotation of the lab (not Istio's): the waypoint also serves plaintext HTTP,
/// routed by Host, on this port of its pod address.
pub const PLAINTEXT_HTTP_ANNOTATION: &str = "lab.mesh.dev/plaintext-http-port";
/// Gateway annotation of the lab: the waypoint's `logLevel`.
pub const LOG_LEVEL_ANNOTATION: &str = "lab.mesh.dev/log-level";
/// Gateway annotation of the lab: the waypoint's `TOKIO_WORKER_THREADS`.
pub const WORKER_THREADS_ANNOTATION: &str = "lab.mesh.dev/worker-threads";

impl LabPod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A Service's names and cluster IPs, for hosts files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabService {
    pub namespace: String,
    pub name: String,
    pub ips: Vec<String>,
}

/// Everything the lab runs, derived from the input documents.
#[derive(Debug, Clone, Default)]
pub struct LabModel {
    /// Node names, sorted (a node's index here gives its address).
    pub nodes: Vec<String>,
    /// Every pod, sorted by namespace then name.
    pub pods: Vec<LabPod>,
    pub services: Vec<LabService>,
    /// Input documents other than Pods and workloads, unchanged.
    pub other_docs: Vec<Value>,
    /// The Pods as written to [`PODS_FILE`] (same order as `pods`).
    pub pod_docs: Vec<Value>,
    /// Number of workloads (Deployment, ...) materialised.
    pub workloads: usize,
}

impl LabModel {
    pub fn running(&self) -> impl Iterator<Item = &LabPod> {
        self.pods.iter().filter(|p| p.running)
    }

    /// The node IP of node index `k`: 172.30.0.<k+2>.
    pub fn node_ip(k: usize) -> Ipv4Addr {
        Ipv4Addr::new(172, 30, 0, (k + 2) as u8)
    }

    pub fn node_index(&self, node: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n == node)
    }
}

/// Files under `paths` as the file source lists them: folders recursively, sorted, `.yaml`,
/// `.yml` and `.json` only, dot-files skipped; a file named explicitly is always read.
pub fn list_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LabError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LabError> {
        let rd = std::fs::read_dir(dir).map_err(|source| LabError::Read { path: dir.into(), source })?;
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
                continue;
            }
            if p.is_dir() {
                walk(&p, out)?;
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| LabError::Read { path: p.clone(), source })?;
        if meta.is_dir() { walk(p, &mut out)? } else { out.push(p.clone()) }
    }
    Ok(out)
}

/// Every document of the files under `paths`, with its origin (`path:doc`). Syntax errors
/// were reported by the analysis; such documents are skipped here.
pub fn read_documents(paths: &[PathBuf]) -> Result<Vec<(String, Value)>, LabError> {
    let mut docs = Vec::new();
    for file in list_files(paths)? {
        let text =
            std::fs::read_to_string(&file).map_err(|source| LabError::Read { path: file.clone(), source })?;
        for d in split_documents(&text).into_iter().flatten() {
            docs.push((format!("{}:{}", file.display(), d.index), d.value));
        }
    }
    Ok(docs)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_str)
}

/// `(apiVersion, kind)` of a document.
fn type_of(v: &Value) -> (&str, &str) {
    (str_at(v, &["apiVersion"]).unwrap_or(""), str_at(v, &["kind"]).unwrap_or(""))
}

/// `apiVersion/kind/namespace/name`: documents with the same key replace each other (apply).
pub fn doc_key(v: &Value) -> String {
    let (av, kind) = type_of(v);
    let ns = str_at(v, &["metadata", "namespace"]).unwrap_or("");
    format!("{av}/{kind}/{ns}/{}", str_at(v, &["metadata", "name"]).unwrap_or(""))
}

fn workload_kind(v: &Value) -> Option<&'static str> {
    match type_of(v) {
        ("apps/v1", "Deployment") => Some("Deployment"),
        ("apps/v1", "ReplicaSet") => Some("ReplicaSet"),
        ("apps/v1", "StatefulSet") => Some("StatefulSet"),
        ("apps/v1", "DaemonSet") => Some("DaemonSet"),
        _ => None,
    }
}

fn is_pod(v: &Value) -> bool {
    type_of(v) == ("v1", "Pod")
}

/// Kubernetes' alphabet for generated name suffixes (no vowels, no look-alikes).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1a, for stable template hashes and interface names.
pub fn fnv64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

fn encode(mut n: u64, len: usize) -> String {
    (0..len)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// Five random characters, as a ReplicaSet gives its pods.
fn random_suffix() -> String {
    use std::io::Read;
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        // A short read leaves zeros; the clock below still varies the name.
        let _ = f.read_exact(&mut b);
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    encode(u64::from_le_bytes(b) ^ nanos.as_nanos() as u64, 5)
}

/// Builds the lab's model from input documents. `prev` are the pods of the running lab (for
/// `lab apply`): a workload whose template is unchanged keeps its pods, a Pod keeps its IP.
pub fn build(docs: &[(String, Value)], prev: &[LabPod]) -> Result<LabModel, LabError> {
    let with_waypoints = waypoint_docs(docs);
    let docs = &with_waypoints[..];
    let mut nodes: BTreeSet<String> = BTreeSet::new();
    for (_, v) in docs {
        if is_pod(v) {
            nodes.extend(str_at(v, &["spec", "nodeName"]).map(String::from));
        } else if workload_kind(v).is_some() {
            nodes.extend(str_at(v, &["spec", "template", "spec", "nodeName"]).map(String::from));
        } else if type_of(v) == ("v1", "Node") {
            nodes.extend(str_at(v, &["metadata", "name"]).map(String::from));
        }
    }
    for p in prev {
        nodes.insert(p.node.clone());
    }
    nodes.retain(|n| !n.is_empty());
    if nodes.is_empty() {
        nodes.extend(DEFAULT_NODES.iter().map(|n| n.to_string()));
    }
    let nodes: Vec<String> = nodes.into_iter().collect();
    if nodes.len() > 250 {
        return Err(LabError::Workload {
            object: "input".into(),
            field: "spec.nodeName".into(),
            reason: format!("{} nodes; the lab's node network has room for 250", nodes.len()),
        });
    }
    let mut m = LabModel { nodes, ..LabModel::default() };
    let mut rr = 0usize;
    let mut next_node = |m: &LabModel| {
        let n = m.nodes[rr % m.nodes.len()].clone();
        rr += 1;
        n
    };
    // (pod, its document); documents get nodeName/podIP/phase once all IPs are known.
    let mut pods: Vec<(LabPod, Value)> = Vec::new();
    let mut names: HashSet<(String, String)> = HashSet::new();
    for (origin, v) in docs {
        if is_pod(v) {
            let mut doc = v.clone();
            let ns = str_at(v, &["metadata", "namespace"]).unwrap_or("default").to_string();
            let name = str_at(v, &["metadata", "name"]).unwrap_or("").to_string();
            let phase = str_at(v, &["status", "phase"]).unwrap_or("Running");
            let before = prev.iter().find(|p| p.namespace == ns && p.name == name && p.owner.is_none());
            let node = match str_at(v, &["spec", "nodeName"]) {
                Some(n) if !n.is_empty() => n.to_string(),
                _ => before.map(|p| p.node.clone()).unwrap_or_else(|| next_node(&m)),
            };
            let ip = match str_at(v, &["status", "podIP"]) {
                Some(ip) => Some(ip.parse::<Ipv4Addr>().map_err(|_| LabError::Workload {
                    object: format!("{origin} Pod {ns}/{name}"),
                    field: "status.podIP".into(),
                    reason: format!("{ip:?}: the lab runs IPv4 pods only"),
                })?),
                None => before.and_then(|p| p.ip),
            };
            set(&mut doc, &["metadata", "namespace"], json!(ns));
            let pod = LabPod {
                ports: tcp_ports(v.get("spec")),
                namespace: ns,
                name,
                node,
                ip,
                running: phase == "Running",
                owner: None,
                template_hash: String::new(),
                waypoint: None,
                waypoint_plaintext_port: None,
                waypoint_log_level: None,
                waypoint_worker_threads: None,
            };
            names.insert((pod.namespace.clone(), pod.name.clone()));
            pods.push((pod, doc));
        } else if let Some(kind) = workload_kind(v) {
            m.workloads += 1;
            materialise(origin, kind, v, &m.nodes, prev, &mut names, &mut pods, &mut next_node)?;
        } else {
            m.other_docs.push(v.clone());
            if type_of(v) == ("v1", "Service") {
                m.services.extend(service(v));
            }
        }
    }
    allocate_ips(&m.nodes, &mut pods);
    pods.sort_by(|a, b| (&a.0.namespace, &a.0.name).cmp(&(&b.0.namespace, &b.0.name)));
    for (pod, mut doc) in pods {
        if !m.nodes.contains(&pod.node) {
            m.nodes.push(pod.node.clone());
        }
        set(&mut doc, &["spec", "nodeName"], json!(pod.node));
        if pod.running {
            let ip = pod.ip.map(|i| i.to_string()).unwrap_or_default();
            set(&mut doc, &["status", "phase"], json!("Running"));
            set(&mut doc, &["status", "podIP"], json!(ip));
            set(&mut doc, &["status", "podIPs"], json!([{ "ip": ip }]));
        }
        m.pods.push(pod);
        m.pod_docs.push(doc);
    }
    m.nodes.sort();
    for pod in &mut m.pods {
        if let Some(gw) = waypoint_of(docs, pod) {
            pod.waypoint = str_at(gw, &["metadata", "name"]).map(str::to_string);
            let number = |annotation: &str, what: &str| {
                str_at(gw, &["metadata", "annotations", annotation])
                    .map(|v| {
                        v.parse::<u16>().ok().filter(|n| *n > 0).ok_or_else(|| LabError::Workload {
                            object: format!(
                                "Gateway {}/{}",
                                pod.namespace,
                                pod.waypoint.as_deref().unwrap_or_default()
                            ),
                            field: format!("metadata.annotations[{annotation}]"),
                            reason: format!("{v:?} is not {what}"),
                        })
                    })
                    .transpose()
            };
            pod.waypoint_plaintext_port = number(PLAINTEXT_HTTP_ANNOTATION, "a port number")?;
            pod.waypoint_worker_threads = number(WORKER_THREADS_ANNOTATION, "a thread count")?;
            pod.waypoint_log_level =
                str_at(gw, &["metadata", "annotations", LOG_LEVEL_ANNOTATION]).map(str::to_string);
        }
    }
    for (pod, doc) in m.pods.iter().zip(m.pod_docs.iter_mut()) {
        if pod.running {
            let k = m.nodes.iter().position(|n| *n == pod.node).unwrap_or(0);
            set(doc, &["status", "hostIP"], json!(LabModel::node_ip(k).to_string()));
        }
    }
    Ok(m)
}

/// Label that ties a waypoint's pods and Service to its Gateway.
pub const WAYPOINT_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

fn is_waypoint_gateway(v: &Value) -> bool {
    let (api, kind) = type_of(v);
    api.starts_with("gateway.networking.k8s.io/")
        && kind == "Gateway"
        && str_at(v, &["spec", "gatewayClassName"]) == Some("istio-waypoint")
}

/// The input plus, for each Gateway of class `istio-waypoint`, what Istio's deployment
/// controller would create: a one-replica Deployment (ServiceAccount named after the Gateway,
/// not captured itself) and a Service of the same name on the HBONE port, unless the input
/// already has them.
fn waypoint_docs(docs: &[(String, Value)]) -> Vec<(String, Value)> {
    let mut out = docs.to_vec();
    // A namespace, Service or pod asking for a waypoint that no Gateway defines gets one, as
    // `istioctl waypoint apply` would make.
    let mut wanted: BTreeSet<(String, String, String)> = BTreeSet::new();
    for (origin, v) in docs {
        let (api, kind) = type_of(v);
        if !matches!((api, kind), ("v1", "Namespace" | "Service" | "Pod")) {
            continue;
        }
        let Some(name) = str_at(v, &["metadata", "labels", "istio.io/use-waypoint"]) else { continue };
        if name == "none" || name.is_empty() {
            continue;
        }
        let own_ns = if kind == "Namespace" {
            str_at(v, &["metadata", "name"])
        } else {
            str_at(v, &["metadata", "namespace"])
        };
        let ns = str_at(v, &["metadata", "labels", "istio.io/use-waypoint-namespace"])
            .or(own_ns)
            .unwrap_or("default");
        wanted.insert((ns.to_string(), name.to_string(), origin.clone()));
    }
    for (ns, name, origin) in wanted {
        let defined = docs.iter().any(|(_, v)| {
            type_of(v).1 == "Gateway"
                && str_at(v, &["metadata", "name"]) == Some(&name)
                && str_at(v, &["metadata", "namespace"]).unwrap_or("default") == ns
        });
        if !defined {
            out.push((
                format!("{origin} (istio.io/use-waypoint: {name})"),
                json!({
                    "apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "Gateway",
                    "metadata": { "name": name, "namespace": ns },
                    "spec": {
                        "gatewayClassName": "istio-waypoint",
                        "listeners": [{ "name": "mesh", "port": 15008, "protocol": "HBONE" }],
                    },
                }),
            ));
        }
    }
    let gateways: Vec<(String, Value)> =
        out.iter().filter(|(_, v)| is_waypoint_gateway(v)).cloned().collect();
    for (origin, gw) in &gateways {
        let ns = str_at(gw, &["metadata", "namespace"]).unwrap_or("default");
        let name = str_at(gw, &["metadata", "name"]).unwrap_or("waypoint");
        let exists = |api: &str, kind: &str| {
            docs.iter().any(|(_, v)| {
                type_of(v) == (api, kind)
                    && str_at(v, &["metadata", "name"]) == Some(name)
                    && str_at(v, &["metadata", "namespace"]).unwrap_or("default") == ns
            })
        };
        let labels = json!({ WAYPOINT_LABEL: name });
        if !exists("apps/v1", "Deployment") {
            out.push((
                format!("{origin} (waypoint for Gateway {ns}/{name})"),
                json!({
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": { "name": name, "namespace": ns, "labels": labels },
                    "spec": {
                        "replicas": 1,
                        "selector": { "matchLabels": labels },
                        "template": {
                            "metadata": { "labels": { WAYPOINT_LABEL: name, "istio.io/dataplane-mode": "none" } },
                            "spec": {
                                "serviceAccountName": name,
                                "containers": [{
                                    "name": "istio-proxy",
                                    "image": "meshctl-lab/waypoint",
                                    "ports": [{ "name": "hbone", "containerPort": 15008, "protocol": "TCP" }],
                                }],
                            },
                        },
                    },
                }),
            ));
        }
        if !exists("v1", "Service") {
            out.push((
                format!("{origin} (waypoint for Gateway {ns}/{name})"),
                json!({
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": { "name": name, "namespace": ns, "labels": labels },
                    "spec": {
                        "selector": labels,
                        "ports": [{ "name": "mesh", "port": 15008, "targetPort": 15008, "protocol": "TCP" }],
                    },
                }),
            ));
        }
    }
    out
}

/// The waypoint Gateway a pod belongs to: made from the Gateway's Deployment.
fn waypoint_of<'a>(docs: &'a [(String, Value)], pod: &LabPod) -> Option<&'a Value> {
    docs.iter().filter(|(_, v)| is_waypoint_gateway(v)).map(|(_, gw)| gw).find(|gw| {
        let ns = str_at(gw, &["metadata", "namespace"]).unwrap_or("default");
        str_at(gw, &["metadata", "name"])
            .is_some_and(|name| pod.owner.as_deref() == Some(&format!("Deployment/{ns}/{name}")))
    })
}

/// Sets `path` in a JSON object, creating objects on the way.
fn set(v: &mut Value, path: &[&str], val: Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut cur = v;
    for k in parents {
        if !cur.get(*k).is_some_and(Value::is_object) {
            cur[*k] = json!({});
        }
        cur = &mut cur[*k];
    }
    cur[*last] = val;
}

/// TCP container ports of a pod spec, sorted, without duplicates.
fn tcp_ports(spec: Option<&Value>) -> Vec<u16> {
    let mut ports = BTreeSet::new();
    let containers = spec.and_then(|s| s.get("containers")).and_then(Value::as_array);
    for c in containers.into_iter().flatten() {
        for p in c.get("ports").and_then(Value::as_array).into_iter().flatten() {
            let tcp = p.get("protocol").and_then(Value::as_str).is_none_or(|p| p == "TCP");
            if let Some(port) = p.get("containerPort").and_then(Value::as_u64).filter(|_| tcp) {
                ports.extend(u16::try_from(port).ok().filter(|p| *p != 0));
            }
        }
    }
    ports.into_iter().collect()
}

#[allow(clippy::too_many_arguments)]
fn materialise(
    origin: &str,
    kind: &str,
    v: &Value,
    nodes: &[String],
    prev: &[LabPod],
    names: &mut HashSet<(String, String)>,
    pods: &mut Vec<(LabPod, Value)>,
    next_node: &mut dyn FnMut(&LabModel) -> String,
) -> Result<(), LabError> {
    let ns = str_at(v, &["metadata", "namespace"]).unwrap_or("default").to_string();
    let name = str_at(v, &["metadata", "name"]).unwrap_or("").to_string();
    let object = format!("{origin} {kind} {ns}/{name}");
    let bad = |field: &str, reason: String| LabError::Workload {
        object: object.clone(),
        field: field.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("metadata.name", "required".into()));
    }
    let template = v.pointer("/spec/template").ok_or_else(|| bad("spec.template", "required".into()))?;
    let replicas = match v.pointer("/spec/replicas") {
        None | Some(Value::Null) => 1,
        Some(r) => r.as_u64().ok_or_else(|| bad("spec.replicas", format!("{r}: not a count")))?,
    };
    let template_text = serde_json::to_string(template).unwrap_or_default();
    let hash = encode(fnv64(template_text.as_bytes()), 10);
    let owner = format!("{kind}/{ns}/{name}");
    let mut reuse: Vec<&LabPod> =
        prev.iter().filter(|p| p.owner.as_deref() == Some(&owner) && p.template_hash == hash).collect();
    reuse.sort_by(|a, b| a.name.cmp(&b.name));
    let fixed_node = str_at(template, &["spec", "nodeName"]).filter(|n| !n.is_empty());
    let count = if kind == "DaemonSet" { nodes.len() as u64 } else { replicas };
    let model_nodes = LabModel { nodes: nodes.to_vec(), ..LabModel::default() };
    for i in 0..count {
        let reused = match kind {
            "StatefulSet" => reuse.iter().find(|p| p.name == format!("{name}-{i}")).copied(),
            _ => reuse.get(i as usize).copied(),
        };
        let (pod_name, node, ip) = match reused {
            Some(p) => (p.name.clone(), p.node.clone(), p.ip),
            None => {
                let node = match (kind, fixed_node) {
                    ("DaemonSet", _) => nodes[i as usize].clone(),
                    (_, Some(n)) => n.to_string(),
                    _ => next_node(&model_nodes),
                };
                let pod_name = loop {
                    let candidate = match kind {
                        "StatefulSet" => format!("{name}-{i}"),
                        "Deployment" => format!("{name}-{hash}-{}", random_suffix()),
                        _ => format!("{name}-{}", random_suffix()),
                    };
                    if !names.contains(&(ns.clone(), candidate.clone())) || kind == "StatefulSet" {
                        break candidate;
                    }
                };
                (pod_name, node, None)
            }
        };
        if !names.insert((ns.clone(), pod_name.clone())) {
            return Err(bad("metadata.name", format!("pod {ns}/{pod_name} is also defined elsewhere")));
        }
        let mut labels = template.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({}));
        match kind {
            "Deployment" => set(&mut labels, &["pod-template-hash"], json!(hash)),
            "StatefulSet" => set(&mut labels, &["statefulset.kubernetes.io/pod-name"], json!(pod_name)),
            _ => {}
        }
        // The controller as Kubernetes would record it: telemetry names the workload after it
        // (a Deployment's ReplicaSet loses its pod-template hash).
        let (owner_kind, owner_name) = match kind {
            "Deployment" => ("ReplicaSet", format!("{name}-{hash}")),
            k => (k, name.to_string()),
        };
        let owner_uid = format!("lab-{:016x}", fnv64(format!("{owner_kind}/{ns}/{owner_name}").as_bytes()));
        let mut meta = json!({
            "name": pod_name,
            "namespace": ns,
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": owner_kind,
                "name": owner_name,
                "uid": owner_uid,
                "controller": true,
            }],
        });
        if let Some(a) = template.pointer("/metadata/annotations") {
            meta["annotations"] = a.clone();
        }
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
        });
        let pod = LabPod {
            namespace: ns.clone(),
            name: pod_name,
            node,
            ip,
            running: true,
            ports: tcp_ports(template.get("spec")),
            owner: Some(owner.clone()),
            template_hash: hash.clone(),
            waypoint: None,
            waypoint_plaintext_port: None,
            waypoint_log_level: None,
            waypoint_worker_threads: None,
        };
        pods.push((pod, doc));
    }
    Ok(())
}

/// Gives each Running pod without an IP one from its node's range 10.244.<k+1>.0/24,
/// avoiding every IP already used.
fn allocate_ips(nodes: &[String], pods: &mut [(LabPod, Value)]) {
    let mut taken: HashSet<Ipv4Addr> = pods.iter().filter_map(|(p, _)| p.ip).collect();
    for (pod, _) in pods.iter_mut().filter(|(p, _)| p.running && p.ip.is_none()) {
        let k = nodes.iter().position(|n| *n == pod.node).unwrap_or(nodes.len()) as u32;
        // Node k's /24 first; a node beyond 250 or a full /24 spills into the next ones.
        let start = u32::from(Ipv4Addr::new(10, 244, (k + 1).min(255) as u8, 2));
        let ip = (start..u32::from(Ipv4Addr::new(10, 255, 255, 254)))
            .map(Ipv4Addr::from)
            .find(|ip| ip.octets()[3] > 1 && ip.octets()[3] < 255 && !taken.contains(ip));
        if let Some(ip) = ip {
            taken.insert(ip);
            pod.ip = Some(ip);
        }
    }
}

fn service(v: &Value) -> Option<LabService> {
    let name = str_at(v, &["metadata", "name"])?.to_string();
    let namespace = str_at(v, &["metadata", "namespace"]).unwrap_or("default").to_string();
    let mut ips: Vec<String> = Vec::new();
    let list = v.pointer("/spec/clusterIPs").and_then(Value::as_array);
    let one = str_at(v, &["spec", "clusterIP"]);
    for ip in list.into_iter().flatten().filter_map(Value::as_str).chain(one) {
        if ip.parse::<std::net::IpAddr>().is_ok() && !ips.iter().any(|i| i == ip) {
            ips.push(ip.to_string());
        }
    }
    Some(LabService { namespace, name, ips })
}

/// The `/etc/hosts` a pod sees: localhost, its own name, and every Service with cluster IPs
/// (`name.ns`, `name.ns.svc`, `name.ns.svc.<suffix>`; the short `name` only for Services of
/// the pod's own namespace, as Kubernetes' DNS search path resolves it).
pub fn hosts_file(m: &LabModel, pod: &LabPod, domain_suffix: &str) -> String {
    let mut s =
        String::from("# generated by meshctl lab\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n");
    if let Some(ip) = pod.ip {
        s.push_str(&format!("{ip}\t{}\n", pod.name));
    }
    let mut by_ip: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for svc in &m.services {
        for ip in &svc.ips {
            let names = by_ip.entry(ip).or_default();
            if svc.namespace == pod.namespace {
                names.push(svc.name.clone());
            }
            let (n, ns) = (&svc.name, &svc.namespace);
            names.extend([
                format!("{n}.{ns}"),
                format!("{n}.{ns}.svc"),
                format!("{n}.{ns}.svc.{domain_suffix}"),
            ]);
        }
    }
    for (ip, names) in by_ip {
        s.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    s
}

/// The model files' contents: ([`INPUT_FILE`], [`PODS_FILE`]), multi-document YAML.
pub fn render(m: &LabModel) -> (String, String) {
    let yaml = |docs: &[Value]| {
        docs.iter().map(|d| serde_yaml::to_string(d).unwrap_or_default()).collect::<Vec<_>>().join("---\n")
    };
    let header = "# written by meshctl lab: the input's objects other than Pods and workloads\n";
    let pods_header = "# written by meshctl lab: every Pod as the lab runs it (workloads materialised)\n";
    (format!("{header}{}", yaml(&m.other_docs)), format!("{pods_header}{}", yaml(&m.pod_docs)))
}

/// Writes the model files into `dir` (each atomically: temp file, then rename, so watchers
/// never read half a file).
pub fn write(dir: &Path, m: &LabModel) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let (input, pods) = render(m);
    for (name, text) in [(INPUT_FILE, input), (PODS_FILE, pods)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(())
}

/// Analyzes the model as the proxies will read it (what `meshctl analyze <state>/model`
/// would say), without writing anything.
pub fn analyze(m: &LabModel, dir: &Path) -> Vec<Diagnostic> {
    let (input, pods) = render(m);
    let mut objects: Vec<(Object, Origin)> = Vec::new();
    let mut diags = Vec::new();
    for (name, text) in [(INPUT_FILE, input), (PODS_FILE, pods)] {
        let path: std::sync::Arc<str> = dir.join(name).display().to_string().into();
        for doc in split_documents(&text) {
            let (index, parsed) = match doc {
                Ok(d) => (d.index, parse_object(d.value)),
                Err(e) => {
                    let d = Diagnostic::error(Default::default(), "", e.message.clone());
                    (e.index, Parsed::Invalid { key: None, diagnostics: vec![d] })
                }
            };
            let origin = Origin::File { path: path.clone(), doc: index };
            match parsed {
                Parsed::Object { object, warnings } => {
                    diags.extend(warnings.into_iter().map(|w| w.at(origin.clone())));
                    objects.push((object, origin));
                }
                Parsed::Invalid { diagnostics, .. } => {
                    diags.extend(diagnostics.into_iter().map(|d| d.at(origin.clone())))
                }
                Parsed::Ignored { .. } => {}
            }
        }
    }
    crate::analyze::analyze_objects(&objects, diags, &mesh_model::MeshConfig::default())
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
