//! [`Object`]: one rendered manifest, typed objects type-erased into JSON with what the API
//! needs to address it (group, version, plural, namespace, name); metadata and label helpers
//! shared by the renderers; YAML/JSON output with keys in a fixed order.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::ApiResource;
use serde::Serialize;
use serde_json::Value;

use super::{InstallError, MANAGED_BY, PART_OF};

/// One manifest: the API resource it is, where it lives, and its JSON body (with
/// `apiVersion` and `kind`).
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Group, version, kind and plural, for the API path.
    pub resource: ApiResource,
    /// Namespace (None for cluster-scoped objects).
    pub namespace: Option<String>,
    /// Object name.
    pub name: String,
    /// The manifest as the API server receives it.
    pub body: Value,
}

impl Object {
    /// Type-erases a k8s-openapi object. Namespaced kinds must carry their namespace.
    pub fn typed<K>(k: &K) -> Object
    where
        K: kube::Resource<DynamicType = ()> + Serialize,
    {
        let meta = k.meta();
        let body = serde_json::to_value(k).expect("k8s-openapi objects serialize");
        Object {
            resource: ApiResource::erase::<K>(&()),
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            body,
        }
    }

    /// An object of a kind k8s-openapi does not have (CRD-defined), from its JSON body.
    pub fn dynamic(group: &str, version: &str, kind: &str, plural: &str, body: Value) -> Object {
        let namespace = body.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_string);
        let name = body.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        Object {
            resource: ApiResource {
                group: group.into(),
                version: version.into(),
                api_version,
                kind: kind.into(),
                plural: plural.into(),
            },
            namespace,
            name,
            body,
        }
    }

    /// `Kind ns/name` or `Kind name`, for progress lines and errors.
    pub fn display(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.resource.kind, self.name),
            None => format!("{} {}", self.resource.kind, self.name),
        }
    }

    /// The body's `metadata.labels`.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.body
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default()
    }

    /// Whether this is `kind` (e.g. "DaemonSet").
    pub fn is(&self, kind: &str) -> bool {
        self.resource.kind == kind
    }
}

/// The labels every object gets: `app.kubernetes.io/{name,part-of,managed-by}`.
pub fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), name.to_string()),
        ("app.kubernetes.io/part-of".to_string(), PART_OF.to_string()),
        ("app.kubernetes.io/managed-by".to_string(), MANAGED_BY.to_string()),
    ])
}

/// The selector labels of a component's pods (stable across versions: selectors are immutable).
pub fn selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_string(), name.to_string())])
}

/// Metadata with name, optional namespace and the common labels (`app.kubernetes.io/name` =
/// `component`).
pub fn meta(name: &str, namespace: Option<&str>, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels(component)),
        ..Default::default()
    }
}

/// The mesh's namespace.
pub fn namespace(name: &str) -> Object {
    Object::typed(&Namespace { metadata: meta(name, None, PART_OF), ..Default::default() })
}

/// Rebuilds maps with sorted keys, so output does not depend on serde_json's map type.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Serializes a value as YAML with sorted keys (config files inside ConfigMaps).
pub fn yaml_text(v: &Value) -> String {
    serde_yaml::to_string(&canonical(v)).expect("JSON values serialize as YAML")
}

/// Multi-document YAML (`---` between documents), keys sorted.
pub fn to_yaml(objects: &[Object]) -> Result<String, InstallError> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        let doc = serde_yaml::to_string(&canonical(&o.body))
            .map_err(|e| InstallError::Output(format!("{}: {e}", o.display())))?;
        out.push_str(&doc);
    }
    Ok(out)
}

/// A `v1` `List` of the objects, pretty JSON, keys sorted.
pub fn to_json(objects: &[Object]) -> Result<String, InstallError> {
    let list = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": objects.iter().map(|o| canonical(&o.body)).collect::<Vec<_>>(),
    });
    let mut s =
        serde_json::to_string_pretty(&canonical(&list)).map_err(|e| InstallError::Output(e.to_string()))?;
    s.push('\n');
    Ok(s)
}
