//! Raw text → documents → typed, validated [`Object`]s. Both the file source and the
//! Kubernetes source go through [`parse_object`], so an object means the same thing (and is
//! refused for the same reasons) whichever way it arrives.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::diag::{Diagnostic, ObjectRef};
use crate::object::{Kind, Object, ObjectKey, Resource};

/// The result of parsing one document.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// A valid object of a kind the mesh reads, with its warnings (deprecated fields, ...).
    Object { object: Object, warnings: Vec<Diagnostic> },
    /// Recognised but not ours (apps/v1 Deployment, Argo Rollout, Flagger Canary,
    /// IstioOperator, ConfigMap, CRDs ...): a note, never an error.
    Ignored { object: ObjectRef, api_version: String },
    /// Refused. `key` is Some when apiVersion/kind/metadata.name could be read, so the loader
    /// can keep the last good version of that object. Diagnostics hold every error (and any
    /// warnings) found.
    Invalid { key: Option<ObjectKey>, diagnostics: Vec<Diagnostic> },
}

/// One document of a file, ready for [`parse_object`].
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// 0-based index of the YAML document (or JSON value) in the file.
    pub index: usize,
    /// Position inside a `kind: List` (or `*List`) document, when expanded from one.
    pub item: Option<usize>,
    /// The document's content.
    pub value: Value,
}

/// A document that is not valid YAML/JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document {index}: {message}")]
pub struct DocError {
    /// 0-based index of the document in the file.
    pub index: usize,
    /// What is wrong, with the line and column in the file when known.
    pub message: String,
}

/// Splits a file's text (multi-document YAML, or one or more JSON values) into documents.
/// Empty documents are skipped but still counted, so indices match the file; `List`
/// documents expand into their items (all with the List's index).
pub fn split_documents(text: &str) -> Vec<Result<Document, DocError>> {
    let mut out = Vec::new();
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        for (index, v) in serde_json::Deserializer::from_str(text).into_iter::<Value>().enumerate() {
            match v {
                Ok(v) => push_value(&mut out, index, v),
                Err(e) => {
                    out.push(Err(DocError { index, message: format!("invalid JSON: {e}") }));
                    break; // the rest of the stream cannot be resynchronised
                }
            }
        }
        return out;
    }
    for (index, (first_line, chunk)) in yaml_chunks(text).into_iter().enumerate() {
        let parsed = if chunk.contains("<<") {
            // Merge keys need serde_yaml's own tree; the direct path is ~2x faster otherwise.
            serde_yaml::from_str::<serde_yaml::Value>(chunk).map_err(|e| yaml_error(&e, first_line)).and_then(
                |mut v| {
                    v.apply_merge().map_err(|e| format!("invalid YAML merge key: {e}"))?;
                    yaml_to_json(v)
                },
            )
        } else {
            serde_yaml::from_str::<Value>(chunk).map_err(|e| yaml_error(&e, first_line))
        };
        match parsed {
            Ok(v) => push_value(&mut out, index, v),
            Err(message) => out.push(Err(DocError { index, message })),
        }
    }
    out
}

fn push_value(out: &mut Vec<Result<Document, DocError>>, index: usize, value: Value) {
    if value.is_null() {
        return;
    }
    let is_list = value.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array);
    if is_list {
        if let Value::Object(mut map) = value
            && let Some(Value::Array(items)) = map.remove("items")
        {
            for (i, item) in items.into_iter().enumerate() {
                out.push(Ok(Document { index, item: Some(i), value: item }));
            }
        }
        return;
    }
    out.push(Ok(Document { index, item: None, value }));
}

/// Splits on `---` separator lines; returns (1-based first line, text) per document. Text
/// before the first separator that holds only comments is not a document (YAML's rule).
fn yaml_chunks(text: &str) -> Vec<(usize, &str)> {
    let mut chunks = Vec::new();
    let (mut start, mut start_line, mut offset) = (0, 1, 0);
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let l = line.trim_end_matches(['\n', '\r']);
        if l == "---" || l.starts_with("--- ") {
            let chunk = &text[start..offset];
            let blank = chunk.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
            if !(chunks.is_empty() && blank) {
                chunks.push((start_line, chunk));
            }
            start = offset + line.len();
            start_line = n + 2;
        }
        offset += line.len();
    }
    chunks.push((start_line, &text[start..]));
    chunks
}

fn yaml_error(e: &serde_yaml::Error, first_line: usize) -> String {
    let msg = e.to_string();
    match e.location() {
        Some(loc) => {
            let line = first_line + loc.line() - 1;
            let text = msg.split(" at line ").next().unwrap_or(&msg);
            format!("invalid YAML at line {line} column {}: {text}", loc.column())
        }
        None => format!("invalid YAML: {msg}"),
    }
}

/// YAML → JSON value; non-string map keys (e.g. `8080:` in `portLevelMtls`) become strings.
fn yaml_to_json(v: serde_yaml::Value) -> Result<Value, String> {
    use serde_yaml::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| format!("unsupported number {f}"))?
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(seq) => Value::Array(seq.into_iter().map(yaml_to_json).collect::<Result<_, _>>()?),
        Y::Mapping(m) => {
            let mut out = Map::with_capacity(m.len());
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    Y::Null => "null".to_string(),
                    other => return Err(format!("unsupported map key {other:?}")),
                };
                out.insert(key, yaml_to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => yaml_to_json(t.value)?,
    })
}

/// Kinds of Istio groups we know of but do not read: ignored, while other unknown kinds in
/// those groups are probably typos and refused.
const OTHER_ISTIO_KINDS: &[&str] =
    &["WorkloadEntry", "WorkloadGroup", "ProxyConfig", "WasmPlugin", "IstioOperator"];

/// Parses and validates one document. Never panics, whatever the input.
pub fn parse_object(value: Value) -> Parsed {
    let Value::Object(mut map) = value else {
        let what = json_type(&value);
        return Parsed::Invalid {
            key: None,
            diagnostics: vec![Diagnostic::error(
                ObjectRef::default(),
                "",
                format!("document is not an object (got {what})"),
            )],
        };
    };
    let mut diags = Vec::new();
    let api_version = header_string(&map, "apiVersion");
    let kind_text = header_string(&map, "kind");
    let meta = map.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("").to_string();
    let written_ns = meta.and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or("").to_string();
    let mut oref = ObjectRef {
        kind: kind_text.clone().ok().unwrap_or_default(),
        namespace: written_ns.clone(),
        name: name.clone(),
    };
    let (group, version) = match &api_version {
        Ok(av) => match av.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), av.clone()),
        },
        Err(_) => (String::new(), String::new()),
    };
    let kind = kind_text.as_ref().ok().and_then(|k| Kind::from_group_kind(&group, k));
    if let Some(k) = kind
        && k.is_namespaced()
        && written_ns.is_empty()
    {
        oref.namespace = "default".to_string();
    }
    if let Some(k) = kind
        && !k.is_namespaced()
    {
        oref.namespace = String::new();
    }
    if let Err(msg) = &api_version {
        diags.push(Diagnostic::error(oref.clone(), "apiVersion", msg.clone()));
    }
    if let Err(msg) = &kind_text {
        diags.push(Diagnostic::error(oref.clone(), "kind", msg.clone()));
    }
    let (Ok(api_version), Ok(kind_str)) = (api_version, kind_text) else {
        return Parsed::Invalid { key: None, diagnostics: diags };
    };
    let Some(kind) = kind else {
        if group.ends_with(".istio.io")
            && group != "install.istio.io"
            && !OTHER_ISTIO_KINDS.contains(&kind_str.as_str())
        {
            let known: Vec<&str> =
                Kind::ALL.iter().filter(|k| k.group() == group).map(|k| k.as_str()).collect();
            let msg = if known.is_empty() {
                format!("unknown kind {kind_str:?} in API group {group:?}")
            } else {
                format!(
                    "unknown kind {kind_str:?} in API group {group:?} (expected one of {})",
                    known.join(", ")
                )
            };
            diags.push(Diagnostic::error(oref, "kind", msg));
            return Parsed::Invalid { key: None, diagnostics: diags };
        }
        return Parsed::Ignored { object: oref, api_version };
    };
    if !kind.versions().contains(&version.as_str()) {
        let expected: Vec<String> = kind
            .versions()
            .iter()
            .map(|v| if kind.group().is_empty() { v.to_string() } else { format!("{}/{v}", kind.group()) })
            .collect();
        diags.push(Diagnostic::error(
            oref.clone(),
            "apiVersion",
            format!("unsupported apiVersion {api_version:?} for {kind} (expected {})", expected.join(" or ")),
        ));
    }
    let key = if name.is_empty() {
        diags.push(Diagnostic::error(oref.clone(), "metadata.name", "is required"));
        None
    } else {
        Some(ObjectKey::new(kind, &oref.namespace, &name))
    };
    if !diags.is_empty() {
        return Parsed::Invalid { key, diagnostics: diags };
    }
    normalise_metadata(&mut map, &oref.namespace);
    let value = Value::Object(map);
    let object = match deserialize(kind, value) {
        Ok(o) => o,
        Err((path, message)) => {
            diags.push(Diagnostic::error(oref, path, message));
            return Parsed::Invalid { key, diagnostics: diags };
        }
    };
    let found = crate::validate::validate(&object);
    if found.iter().any(Diagnostic::is_error) {
        Parsed::Invalid { key, diagnostics: found }
    } else {
        Parsed::Object { object, warnings: found }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn header_string(map: &Map<String, Value>, field: &str) -> Result<String, String> {
    match map.get(field) {
        None | Some(Value::Null) => Err("is required".to_string()),
        Some(Value::String(s)) if s.is_empty() => Err("is required".to_string()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("must be a string, got {}", json_type(other))),
    }
}

/// Sets the defaulted namespace (or clears it for cluster-scoped kinds) as kubectl would.
fn normalise_metadata(map: &mut Map<String, Value>, namespace: &str) {
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        if namespace.is_empty() {
            meta.remove("namespace");
        } else {
            meta.insert("namespace".to_string(), Value::String(namespace.to_string()));
        }
    }
}

fn de<T: DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, clean_message(&e.into_inner().to_string()))
    })
}

/// CRDs: `status` belongs to controllers, not users; drop it before the strict envelope.
fn de_resource<S: DeserializeOwned + Default>(
    mut value: Value,
) -> Result<Arc<Resource<S>>, (String, String)> {
    if let Value::Object(m) = &mut value {
        m.remove("status");
    }
    de::<Resource<S>>(value).map(Arc::new)
}

fn clean_message(msg: &str) -> String {
    msg.replace('`', "\"")
}

fn deserialize(kind: Kind, v: Value) -> Result<Object, (String, String)> {
    Ok(match kind {
        Kind::Namespace => Object::Namespace(Arc::new(de(v)?)),
        Kind::Pod => Object::Pod(Arc::new(de(v)?)),
        Kind::Service => Object::Service(Arc::new(de(v)?)),
        Kind::EndpointSlice => Object::EndpointSlice(Arc::new(de(v)?)),
        Kind::ServiceAccount => Object::ServiceAccount(Arc::new(de(v)?)),
        Kind::VirtualService => Object::VirtualService(de_resource(v)?),
        Kind::DestinationRule => Object::DestinationRule(de_resource(v)?),
        Kind::ServiceEntry => Object::ServiceEntry(de_resource(v)?),
        Kind::Gateway => Object::Gateway(de_resource(v)?),
        Kind::Sidecar => Object::Sidecar(de_resource(v)?),
        Kind::PeerAuthentication => Object::PeerAuthentication(de_resource(v)?),
        Kind::AuthorizationPolicy => Object::AuthorizationPolicy(de_resource(v)?),
        Kind::RequestAuthentication => Object::RequestAuthentication(de_resource(v)?),
        Kind::Telemetry => Object::Telemetry(de_resource(v)?),
        Kind::HttpRoute => Object::HttpRoute(de_resource(v)?),
        Kind::GrpcRoute => Object::GrpcRoute(de_resource(v)?),
        Kind::KubeGateway => Object::KubeGateway(de_resource(v)?),
        Kind::EnvoyFilter => Object::EnvoyFilter(de_resource(v)?),
    })
}
