//! API objects into the documents the file source parses: the object's JSON with its
//! `apiVersion`/`kind` set (list items may lack them) and what the model never reads stripped
//! (memory), then [`mesh_api::parse_object`], so the translation is the file source's.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use kube::api::DynamicObject;
use mesh_api::{Kind, Origin, parse_object};
use mesh_model::Doc;
use serde_json::{Map, Value};

use crate::kinds::kind_path;

/// Annotation `kubectl apply` writes: a full copy of the object, never read by the model.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One API object, parsed: its unit, a hash of what was kept (to skip no-op updates such as a
/// pod's condition changes) and the parsed document.
#[derive(Debug)]
pub struct Converted {
    pub unit: Arc<str>,
    pub hash: u64,
    pub doc: Doc,
}

/// The store unit of one object: `kube:<group>/<Kind>/<namespace>/<name>` (`core` for the core
/// group; namespace empty for cluster-scoped kinds).
pub fn unit_name(kind: Kind, namespace: &str, name: &str) -> Arc<str> {
    format!("kube:{}/{namespace}/{name}", kind_path(kind)).into()
}

/// The unit of a (deleted) object from its metadata alone.
pub fn unit_of(kind: Kind, obj: &DynamicObject) -> Arc<str> {
    let ns = if kind.is_namespaced() { obj.metadata.namespace.as_deref().unwrap_or("default") } else { "" };
    unit_name(kind, ns, obj.metadata.name.as_deref().unwrap_or(""))
}

/// Converts and parses one object read at `api_version` (the resource's, e.g.
/// `networking.istio.io/v1`).
pub fn convert(kind: Kind, api_version: &str, obj: DynamicObject) -> Converted {
    let unit = unit_of(kind, &obj);
    let value = to_document(kind, api_version, obj);
    let hash = hash_value(&value);
    Converted { unit, hash, doc: Doc { origin: Origin::Kube, parsed: parse_object(value) } }
}

/// The object as the document a user would have written: `apiVersion` and `kind` set, the
/// server's bookkeeping and what the model does not read removed ([`prune`]).
pub fn to_document(kind: Kind, api_version: &str, obj: DynamicObject) -> Value {
    let mut map = match obj.data {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    map.insert("apiVersion".into(), Value::String(api_version.to_string()));
    map.insert("kind".into(), Value::String(kind.as_str().to_string()));
    let meta = serde_json::to_value(&obj.metadata).unwrap_or_else(|_| Value::Object(Map::new()));
    map.insert("metadata".into(), meta);
    let mut value = Value::Object(map);
    prune(kind, &mut value);
    value
}

/// Removes what the model never reads, per kind. Metadata keeps name, namespace, uid, labels,
/// annotations (minus kubectl's last-applied copy), ownerReferences, creation and deletion
/// timestamps. Pods keep of their spec the node, service account, host networking and the
/// containers' names and ports, and of their status phase, IPs and QoS class; Namespaces and
/// Services drop status; CRD objects drop status (the parser would anyway).
pub fn prune(kind: Kind, value: &mut Value) {
    let Value::Object(map) = value else { return };
    if let Some(Value::Object(meta)) = map.get_mut("metadata") {
        for k in ["managedFields", "resourceVersion", "generation", "selfLink", "finalizers"] {
            meta.remove(k);
        }
        if let Some(Value::Object(ann)) = meta.get_mut("annotations") {
            ann.remove(LAST_APPLIED);
            if ann.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    match kind {
        Kind::Pod => {
            if let Some(Value::Object(spec)) = map.get_mut("spec") {
                keep(
                    spec,
                    &["nodeName", "serviceAccountName", "serviceAccount", "hostNetwork", "containers"],
                );
                if let Some(Value::Array(cs)) = spec.get_mut("containers") {
                    for c in cs.iter_mut() {
                        if let Value::Object(c) = c {
                            keep(c, &["name", "ports"]);
                        }
                    }
                }
            }
            if let Some(Value::Object(status)) = map.get_mut("status") {
                keep(status, &["phase", "podIP", "podIPs", "hostIP", "hostIPs", "qosClass"]);
            }
        }
        Kind::Namespace => {
            map.remove("spec");
            map.remove("status");
        }
        Kind::ServiceAccount => {
            map.remove("secrets");
            map.remove("imagePullSecrets");
        }
        Kind::EndpointSlice => {}
        _ => {
            map.remove("status");
        }
    }
}

fn keep(map: &mut Map<String, Value>, fields: &[&str]) {
    map.retain(|k, _| fields.contains(&k.as_str()));
}

/// A content hash of a document (its JSON text; `serde_json` keeps maps sorted).
fn hash_value(v: &Value) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_vec(v).unwrap_or_default().hash(&mut h);
    h.finish()
}
