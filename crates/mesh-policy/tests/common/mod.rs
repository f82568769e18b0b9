//! Shared test fixture: a small mesh built through the real pipeline (split_documents →
//! parse_object → translate) plus the policies of each case.

#![allow(dead_code)]

use std::net::IpAddr;
use std::sync::Arc;

use mesh_api::{Object, Origin, Parsed, SpiffeId, parse_object, split_documents};
use mesh_model::{MeshConfig, Model, Workload, translate};

/// Namespaces foo (server, other), bar (client), istio-system (the root).
pub const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: foo, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: bar, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: foo, labels: {app: server, version: v1}}
spec:
  serviceAccountName: server
  nodeName: node-a
  containers: [{name: app, image: echo, ports: [{containerPort: 8080}, {containerPort: 9090}]}]
status: {phase: Running, podIP: 10.0.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: foo, labels: {app: other}}
spec:
  serviceAccountName: other
  nodeName: node-a
  containers: [{name: app, image: echo}]
status: {phase: Running, podIP: 10.0.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: bar, labels: {app: client}}
spec:
  serviceAccountName: client
  nodeName: node-b
  containers: [{name: app, image: echo}]
status: {phase: Running, podIP: 10.0.2.20}
---
apiVersion: v1
kind: Pod
metadata: {name: istiod, namespace: istio-system, labels: {app: istiod}}
spec:
  nodeName: node-b
  containers: [{name: app, image: istiod}]
status: {phase: Running, podIP: 10.0.9.9}
"#;

/// Parses `extra` after [`BASE`] and translates; any invalid document or translation error
/// fails the test.
pub fn model(extra: &str) -> Model {
    let text = format!("{BASE}\n---\n{extra}");
    let mut objects: Vec<(Object, Origin)> = Vec::new();
    for (i, doc) in split_documents(&text).into_iter().enumerate() {
        let doc = doc.unwrap_or_else(|e| panic!("document {i}: {e}\n{text}"));
        match parse_object(doc.value) {
            Parsed::Object { object, .. } => {
                objects.push((object, Origin::File { path: "test.yaml".into(), doc: doc.index }))
            }
            Parsed::Invalid { diagnostics, .. } => panic!("invalid document {i}: {diagnostics:#?}"),
            Parsed::Ignored { object, .. } => panic!("ignored document {i}: {object}"),
        }
    }
    let (model, diags) = translate(&objects, &MeshConfig::default());
    let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "translation errors: {errors:#?}");
    model
}

/// A policy document of `kind` in `ns` with a one-line (flow-style) spec.
pub fn doc(kind: &str, ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

/// Joins documents.
pub fn docs(list: &[String]) -> String {
    list.join("---\n")
}

pub fn workload<'m>(model: &'m Model, ns_name: &str) -> &'m Arc<Workload> {
    let (ns, name) = ns_name.split_once('/').expect("ns/name");
    model.workload(ns, name).unwrap_or_else(|| panic!("no workload {ns_name}"))
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `td/ns/x/sa/y` → SpiffeId.
pub fn principal(p: &str) -> SpiffeId {
    format!("spiffe://{p}").parse().unwrap()
}
