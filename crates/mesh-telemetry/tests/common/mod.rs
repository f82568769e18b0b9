//! Shared test helpers: a small model from inline YAML, an OpenMetrics text parser, and a
//! log writer capturing into memory.

#![allow(dead_code)] // each test binary uses a subset

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use mesh_api::{Origin, Parsed, parse_object, split_documents};
use mesh_model::{MeshConfig, Model, translate};
use mesh_telemetry::{ConnInfo, Metrics, PeerLabels, Reporter, SecurityPolicy, ServiceLabels};

const MESH: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata:
  name: client-7d9f8-abcde
  namespace: shop
  labels: {app: client, version: v2}
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: client-5f7b9d8c4, uid: u1, controller: true}
spec:
  serviceAccountName: client
  nodeName: node-a
  containers: [{name: app, image: curl}]
status: {phase: Running, podIP: 10.0.1.10}
---
apiVersion: v1
kind: Pod
metadata:
  name: echo-v1
  namespace: shop
  labels: {app: echo, version: v1}
spec:
  serviceAccountName: echo
  nodeName: node-b
  containers: [{name: app, image: echo, ports: [{name: http, containerPort: 8080}]}]
status: {phase: Running, podIP: 10.0.2.20}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

pub fn model() -> Model {
    let mut objects = Vec::new();
    for doc in split_documents(MESH) {
        let doc = doc.expect("fixture YAML splits");
        match parse_object(doc.value) {
            Parsed::Object { object, .. } => objects.push((object, Origin::Unknown)),
            other => panic!("fixture object refused: {other:?}"),
        }
    }
    let (model, diags) = translate(&objects, &MeshConfig::default());
    assert!(diags.iter().all(|d| !d.is_error()), "fixture translates: {diags:#?}");
    model
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// The outbound (reporter `source`) view of client → echo service over HBONE, built from the
/// model as ztunnel will.
pub fn outbound_to_echo(model: &Model, metrics: &Metrics) -> ConnInfo {
    let cluster = model.config().cluster_id.clone();
    let client = model.workload("shop", "client-7d9f8-abcde").expect("client pod");
    let echo = model.workload("shop", "echo-v1").expect("echo pod");
    let svc = model.service("shop", "echo").expect("echo service");
    let mut info = ConnInfo::new(Reporter::Source, addr("10.0.1.10:40000"), addr("10.96.0.20:80"));
    info.hbone_addr = Some(addr("10.0.2.20:8080"));
    info.src_pod = Some(client.name.clone());
    info.dst_pod = Some(echo.name.clone());
    info.labels.source =
        PeerLabels::from_workload(client, &cluster).with_principal(metrics.principal(&client.identity));
    info.labels.destination =
        PeerLabels::from_workload(echo, &cluster).with_principal(metrics.principal(&echo.identity));
    info.labels.destination_service = ServiceLabels::from_service(svc);
    info.labels.connection_security_policy = SecurityPolicy::MutualTls;
    info
}

/// The inbound (reporter `destination`) view of the same connection.
pub fn inbound_to_echo(model: &Model, metrics: &Metrics) -> ConnInfo {
    let mut info = outbound_to_echo(model, metrics);
    info.labels.reporter = Reporter::Destination;
    info.src_addr = addr("10.0.1.10:40000");
    info.dst_addr = addr("10.0.2.20:8080");
    info.hbone_addr = None;
    info
}

/// One sample line of an OpenMetrics exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn label_names(&self) -> Vec<&str> {
        self.labels.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Parses the sample lines (not `#` lines) of an OpenMetrics text exposition.
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(parse_line).collect()
}

fn parse_line(line: &str) -> Sample {
    let split = line.find(['{', ' ']).unwrap_or_else(|| panic!("sample without value: {line}"));
    let (name, mut rest) = line.split_at(split);
    let mut labels = Vec::new();
    if let Some(mut r) = rest.strip_prefix('{') {
        // key="value" pairs separated by commas; values may hold escaped quotes.
        while let Some((key, after)) = r.split_once("=\"") {
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => panic!("bad escape: {line}"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value: {line}"),
                }
            };
            labels.push((key.trim_start_matches(',').to_string(), value));
            r = &after[end + 1..];
            if let Some(tail) = r.strip_prefix('}') {
                r = tail;
                break;
            }
        }
        rest = r;
    }
    let value = rest.trim().parse().unwrap_or_else(|e| panic!("bad value in {line}: {e}"));
    Sample { name: name.to_string(), labels, value }
}

/// A `MakeWriter` target collecting log output in memory.
#[derive(Debug, Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("logs are UTF-8")
    }
}

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
