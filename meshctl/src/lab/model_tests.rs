use super::*;

fn docs(yaml: &str) -> Vec<(String, Value)> {
    split_documents(yaml).into_iter().map(|d| ("t.yaml:0".to_string(), d.unwrap().value)).collect()
}

const INPUT: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: x, ports: [{containerPort: 8080}, {containerPort: 53, protocol: UDP}]}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: demo}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: fixed, namespace: demo}
spec: {nodeName: node-b, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.244.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: demo}
spec: {nodeName: node-a, containers: [{name: c, image: x}]}
status: {phase: Pending}
"#;

#[test]
fn workloads_become_spread_addressed_pods() {
    let m = build(&docs(INPUT), &[]).unwrap();
    assert_eq!(m.nodes, ["node-a", "node-b"]);
    assert_eq!(m.workloads, 2);
    assert_eq!(m.pods.len(), 7);
    let web: Vec<&LabPod> =
        m.pods.iter().filter(|p| p.owner.as_deref() == Some("Deployment/demo/web")).collect();
    assert_eq!(web.len(), 3);
    for p in &web {
        let parts: Vec<&str> = p.name.split('-').collect();
        assert_eq!(parts.len(), 3, "{}", p.name);
        assert_eq!(parts[2].len(), 5);
        assert_eq!(p.ports, [8080], "UDP ports are not served");
    }
    let nodes: HashSet<&str> = web.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(nodes.len(), 2, "replicas spread over both nodes");
    assert!(m.pods.iter().any(|p| p.name == "db-0") && m.pods.iter().any(|p| p.name == "db-1"));
    // Every Running pod has a unique IP in its node's range; the fixed one keeps its own.
    let mut seen = HashSet::new();
    for p in m.running() {
        let ip = p.ip.unwrap();
        assert!(seen.insert(ip), "duplicate {ip}");
        if p.name != "fixed" {
            let k = m.node_index(&p.node).unwrap() as u8;
            assert_eq!(ip.octets()[..3], [10, 244, k + 1], "{}", p.name);
        }
    }
    assert_eq!(m.pods.iter().find(|p| p.name == "fixed").unwrap().ip, Some(Ipv4Addr::new(10, 244, 1, 2)));
    let pending = m.pods.iter().find(|p| p.name == "pending").unwrap();
    assert!(!pending.running && pending.ip.is_none());
    // The generated documents say where each pod runs.
    for (p, d) in m.pods.iter().zip(&m.pod_docs) {
        assert_eq!(str_at(d, &["spec", "nodeName"]), Some(p.node.as_str()));
        if p.running {
            assert_eq!(str_at(d, &["status", "phase"]), Some("Running"));
            assert_eq!(str_at(d, &["status", "podIP"]), Some(p.ip.unwrap().to_string().as_str()));
        }
    }
    assert_eq!(m.other_docs.len(), 1, "only the Service is kept verbatim");
    assert!(analyze(&m, Path::new("/m")).iter().all(|d| !d.is_error()));
}

#[test]
fn apply_keeps_unchanged_workload_pods() {
    let first = build(&docs(INPUT), &[]).unwrap();
    let again = build(&docs(INPUT), &first.pods).unwrap();
    assert_eq!(first.pods, again.pods);
    let scaled = INPUT.replace("replicas: 3", "replicas: 4");
    let more = build(&docs(&scaled), &first.pods).unwrap();
    assert_eq!(more.pods.len(), 8);
    for p in &first.pods {
        assert!(more.pods.contains(p), "{} kept", p.name);
    }
}

#[test]
fn hosts_file_names_services() {
    let m = build(&docs(INPUT), &[]).unwrap();
    let pod = m.pods.iter().find(|p| p.name == "fixed").unwrap();
    let h = hosts_file(&m, pod, "cluster.local");
    assert!(h.contains("10.96.0.10\tweb web.demo web.demo.svc web.demo.svc.cluster.local\n"), "{h}");
    assert!(h.contains("10.244.1.2\tfixed\n"), "{h}");
    let other = LabPod { namespace: "other".into(), ..pod.clone() };
    assert!(hosts_file(&m, &other, "cluster.local").contains("10.96.0.10\tweb.demo web.demo.svc"));
}

#[test]
fn default_nodes_when_none_named() {
    let m = build(&docs("apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: r}\nspec: {replicas: 2, template: {spec: {containers: []}}}\n"), &[]).unwrap();
    assert_eq!(m.nodes, DEFAULT_NODES);
    assert_eq!(m.pods.len(), 2);
    assert!(m.pods.iter().all(|p| p.namespace == "default" && p.name.starts_with("r-")));
}

#[test]
fn bad_replicas_is_named() {
    let e = build(
        &docs(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: x, template: {}}\n",
        ),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("Deployment default/d: spec.replicas"), "{e}");
}

#[test]
fn a_waypoint_gateway_becomes_a_pod_and_a_service() {
    let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ingress, namespace: shop}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
"#;
    let m = build(&docs(yaml), &[]).unwrap();
    let wps: Vec<&LabPod> = m.pods.iter().filter(|p| p.waypoint.is_some()).collect();
    assert_eq!(wps.len(), 1, "one waypoint pod, none for the non-waypoint Gateway: {:?}", m.pods);
    let wp = wps[0];
    assert_eq!(wp.waypoint.as_deref(), Some("waypoint"));
    assert!(wp.name.starts_with("waypoint-") && wp.running && wp.ip.is_some(), "{wp:?}");
    let doc = m.pod_docs.iter().find(|d| str_at(d, &["metadata", "name"]) == Some(&wp.name)).unwrap();
    assert_eq!(str_at(doc, &["spec", "serviceAccountName"]), Some("waypoint"));
    assert_eq!(
        doc.pointer("/metadata/labels/istio.io~1dataplane-mode").and_then(Value::as_str),
        Some("none")
    );
    let owner = doc.pointer("/metadata/ownerReferences/0").unwrap();
    assert_eq!(owner["kind"], "ReplicaSet");
    assert_eq!(owner["controller"], true);
    let svc = m.other_docs.iter().find(|d| type_of(d) == ("v1", "Service")).expect("waypoint Service");
    assert_eq!(str_at(svc, &["metadata", "name"]), Some("waypoint"));
    assert_eq!(svc.pointer("/spec/ports/0/port").and_then(Value::as_u64), Some(15008));
}

#[test]
fn use_waypoint_without_a_gateway_gets_one() {
    let yaml = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: wp}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {istio.io/use-waypoint: none}}
"#;
    let m = build(&docs(yaml), &[]).unwrap();
    let wps: Vec<&LabPod> = m.pods.iter().filter(|p| p.waypoint.is_some()).collect();
    assert_eq!(wps.len(), 1, "{:?}", m.pods);
    assert_eq!((wps[0].namespace.as_str(), wps[0].waypoint.as_deref()), ("shop", Some("wp")));
    assert!(
        m.other_docs
            .iter()
            .any(|d| type_of(d).1 == "Gateway" && str_at(d, &["metadata", "name"]) == Some("wp")),
        "the Gateway is part of the lab's model"
    );
}

#[test]
fn gateway_annotations_set_the_waypoints_plaintext_port_log_level_and_workers() {
    let gw = |value: &str| {
        format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: proxy, namespace: peers, annotations: {{lab.mesh.dev/plaintext-http-port: "{value}"}}}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
"#
        )
    };
    let m = build(&docs(&gw("8080")), &[]).unwrap();
    let wp = m.pods.iter().find(|p| p.waypoint.is_some()).unwrap();
    assert_eq!(wp.waypoint_plaintext_port, Some(8080));
    let plain = build(
        &docs(&gw("8080").replace(", annotations: {lab.mesh.dev/plaintext-http-port: \"8080\"}", "")),
        &[],
    );
    assert_eq!(
        plain.unwrap().pods.iter().find(|p| p.waypoint.is_some()).unwrap().waypoint_plaintext_port,
        None
    );
    let logged = gw("8080").replace(
        "annotations: {",
        "annotations: {lab.mesh.dev/log-level: warn, lab.mesh.dev/worker-threads: \"1\", ",
    );
    let m = build(&docs(&logged), &[]).unwrap();
    let wp = m.pods.iter().find(|p| p.waypoint.is_some()).unwrap();
    assert_eq!((wp.waypoint_log_level.as_deref(), wp.waypoint_worker_threads), (Some("warn"), Some(1)));
    let zero = gw("8080").replace("annotations: {", "annotations: {lab.mesh.dev/worker-threads: \"0\", ");
    assert!(build(&docs(&zero), &[]).unwrap_err().to_string().contains("is not a thread count"));
    let e = build(&docs(&gw("http")), &[]).unwrap_err().to_string();
    assert!(
        e.contains("Gateway peers/proxy") && e.contains("plaintext-http-port") && e.contains("\"http\""),
        "{e}"
    );
}
