//! Parsing: documents, kinds, defaults, typed fields, error paths, robustness and speed.

use std::time::{Duration as StdDuration, Instant};

use mesh_api::common::StringMatch;
use mesh_api::istio::networking::SimpleLb;
use mesh_api::istio::security::{AuthorizationAction, MtlsMode};
use mesh_api::{Kind, Object, Parsed, parse_object, split_documents};
use serde_json::{Value, json};

fn parse_one(yaml: &str) -> Parsed {
    let mut docs = split_documents(yaml);
    assert_eq!(docs.len(), 1, "{docs:?}");
    parse_object(docs.remove(0).unwrap().value)
}

fn object(yaml: &str) -> Object {
    match parse_one(yaml) {
        Parsed::Object { object, warnings } => {
            assert!(warnings.is_empty(), "{warnings:?}");
            object
        }
        other => panic!("expected an object, got {other:?}"),
    }
}

fn messages(p: &Parsed) -> Vec<String> {
    match p {
        Parsed::Invalid { diagnostics, .. } => diagnostics.iter().map(|d| d.to_string()).collect(),
        Parsed::Object { warnings, .. } => warnings.iter().map(|d| d.to_string()).collect(),
        Parsed::Ignored { .. } => vec![],
    }
}

const CANARY: &str = r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: canary
    match:
    - headers:
        end-user: {exact: jason}
        x-present: {}
      uri: {regex: "/reviews/[0-9]+"}
    route:
    - destination: {host: reviews, subset: v2}
      weight: 90
    - destination: {host: reviews, subset: v3, port: {number: 9080}}
      weight: 10
    timeout: 1m30s
    retries: {attempts: 3, perTryTimeout: 250ms, retryOn: "5xx,gateway-error,503"}
    mirrorPercentage: {value: 12.5}
    mirror: {host: reviews, subset: v1}
  - route:
    - destination: {host: reviews, subset: v1}
"#;

#[test]
fn virtual_service_fields_are_typed() {
    let Object::VirtualService(vs) = object(CANARY) else { panic!() };
    assert_eq!(vs.namespace(), "default", "namespace defaults like kubectl");
    assert_eq!(vs.api_version, "networking.istio.io/v1beta1");
    let r = &vs.spec.http[0];
    let m = &r.matches[0];
    assert_eq!(m.headers["end-user"], StringMatch::Exact("jason".into()));
    assert_eq!(m.headers["x-present"], StringMatch::Any);
    let Some(StringMatch::Regex(re)) = &m.uri else { panic!() };
    assert!(re.is_match("/reviews/12") && !re.is_match("/reviews/12/x"));
    assert_eq!(r.route[1].destination.port.as_ref().unwrap().number, Some(9080));
    assert_eq!(r.timeout.unwrap().as_std(), StdDuration::from_secs(90));
    let retries = r.retries.as_ref().unwrap();
    assert_eq!(retries.per_try_timeout.unwrap().as_std(), StdDuration::from_millis(250));
    assert_eq!(r.mirror_percentage.unwrap().value, 12.5);
}

#[test]
fn objects_round_trip_through_json() {
    let obj = object(CANARY);
    let json = serde_json::to_value(&obj).unwrap();
    assert!(json["spec"]["http"][0].get("delegate").is_none(), "unset fields are not serialized");
    assert_eq!(json["spec"]["http"][0]["timeout"], "90s");
    assert_eq!(json["spec"]["http"][0]["match"][0]["headers"]["x-present"], json!({}));
    match parse_object(json) {
        Parsed::Object { object, .. } => assert_eq!(object, obj),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_documented_field_deserializes() {
    // One document per kind and version with every CRD schema field set (generated from the
    // Istio and Gateway API CRDs); oneOf conflicts may fail validation, never deserialization.
    let text = include_str!("data/all-fields.json");
    let docs = split_documents(text);
    assert!(docs.len() >= 28);
    for doc in docs {
        let doc = doc.unwrap();
        let kind = doc.value["kind"].as_str().unwrap().to_string();
        let p = parse_object(doc.value);
        for m in messages(&p) {
            for bad in ["unknown field", "invalid type", "missing field", "unknown variant", "invalid value"]
            {
                assert!(!m.contains(bad), "{kind}: {m}");
            }
        }
    }
}

#[test]
fn core_kinds_and_cluster_scope() {
    let ns = object(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: bookinfo, namespace: x, labels: {istio.io/dataplane-mode: ambient}}\n",
    );
    assert_eq!(ns.key().namespace.as_ref(), "", "Namespace is cluster-scoped");
    assert_eq!(ns.labels()["istio.io/dataplane-mode"], "ambient");
    let pod = object(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: bookinfo}\nspec:\n  nodeName: node-a\n  containers: [{name: c}]\nstatus: {podIP: 10.0.0.5, podIPs: [{ip: 10.0.0.5}]}\n",
    );
    let Object::Pod(p) = &pod else { panic!() };
    assert_eq!(p.status.as_ref().unwrap().pod_ip.as_deref(), Some("10.0.0.5"), "Pod status is kept");
    assert_eq!(pod.kind(), Kind::Pod);
    let svc = object(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: None, ports: [{port: 80, targetPort: http}]}\n",
    );
    assert_eq!(svc.key().to_string(), "Service default/s");
}

#[test]
fn security_kinds_parse_with_numeric_port_keys() {
    let pa = object(
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: bookinfo}\nspec:\n  selector: {matchLabels: {app: a}}\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n",
    );
    let Object::PeerAuthentication(pa) = pa else { panic!() };
    assert_eq!(pa.spec.mtls.as_ref().unwrap().mode, Some(MtlsMode::Strict));
    assert_eq!(pa.spec.port_level_mtls["8080"].mode, Some(MtlsMode::Disable));
    let ap = object(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all}\nspec: {}\n",
    );
    let Object::AuthorizationPolicy(ap) = ap else { panic!() };
    assert_eq!(ap.spec.action.unwrap_or_default(), AuthorizationAction::Allow);
    assert!(ap.spec.rules.is_empty(), "spec: {{}} is the allow-nothing policy");
}

#[test]
fn crd_status_is_ignored_and_lb_enum_parses() {
    let dr = object(
        "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: r\n  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\nstatus: {observedGeneration: 3}\n",
    );
    let Object::DestinationRule(dr) = dr else { panic!() };
    let lb = dr.spec.traffic_policy.as_ref().unwrap().load_balancer.as_ref().unwrap();
    assert_eq!(lb.simple, Some(SimpleLb::LeastRequest));
}

#[test]
fn other_api_groups_are_ignored() {
    for (av, kind) in [
        ("apps/v1", "Deployment"),
        ("argoproj.io/v1alpha1", "Rollout"),
        ("flagger.app/v1beta1", "Canary"),
        ("install.istio.io/v1alpha1", "IstioOperator"),
        ("v1", "ConfigMap"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("networking.istio.io/v1", "WorkloadEntry"),
        ("gateway.networking.k8s.io/v1", "GatewayClass"),
    ] {
        let p = parse_object(json!({"apiVersion": av, "kind": kind, "metadata": {"name": "x"}}));
        let Parsed::Ignored { object, api_version } = p else { panic!("{kind}: {p:?}") };
        assert_eq!((object.kind.as_str(), api_version.as_str()), (kind, av));
    }
    let typo = parse_object(
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualServce", "metadata": {"name": "x"}}),
    );
    assert!(messages(&typo)[0].contains("unknown kind \"VirtualServce\""), "{typo:?}");
}

#[test]
fn errors_keep_the_key_and_the_field_path() {
    let p = parse_object(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "r", "namespace": "n"},
        "spec": {"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r"}, "weight": "x"}]}]}
    }));
    let Parsed::Invalid { key: Some(key), diagnostics } = p else { panic!("{p:?}") };
    assert_eq!(key.to_string(), "VirtualService n/r");
    assert_eq!(diagnostics[0].field, "spec.http[0].route[0].weight");
    assert!(diagnostics[0].is_error());
    let no_name = parse_object(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}}));
    assert!(matches!(no_name, Parsed::Invalid { key: None, .. }));
    let not_obj = parse_object(json!("hello"));
    assert_eq!(messages(&not_obj), vec!["-: document is not an object (got a string)".to_string()]);
}

#[test]
fn split_documents_indexes_lists_json_and_errors() {
    let text = "# leading comment\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\nkind: List\napiVersion: v1\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: b}}\n- {apiVersion: v1, kind: Namespace, metadata: {name: c}}\n---\nfoo: [unclosed\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: d}\n";
    let docs = split_documents(text);
    let summary: Vec<String> = docs
        .iter()
        .map(|d| match d {
            Ok(d) => {
                format!("{}:{:?}:{}", d.index, d.item, d.value["metadata"]["name"].as_str().unwrap_or("?"))
            }
            Err(e) => format!("err {}", e.index),
        })
        .collect();
    assert_eq!(summary, ["0:None:a", "2:Some(0):b", "2:Some(1):c", "err 3", "4:None:d"]);
    let Err(e) = &docs[3] else { panic!() };
    assert!(e.message.contains("line 15"), "line numbers are the file's: {}", e.message);
    let json_docs = split_documents(
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}} {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"b"}}"#,
    );
    assert_eq!(json_docs.len(), 2);
    assert_eq!(json_docs[1].as_ref().unwrap().index, 1);
}

/// Tiny deterministic PRNG so the robustness test needs no extra crates.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn mutate(v: &mut Value, rng: &mut Lcg, depth: usize) {
    let replacement = |rng: &mut Lcg| match rng.next() % 9 {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!(1e300),
        3 => json!("-5s"),
        4 => json!("(["),
        5 => json!([]),
        6 => json!({}),
        7 => json!(u64::MAX),
        _ => json!("spiffe://x"),
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = &keys[(rng.next() as usize) % keys.len()];
            if depth > 0 && !rng.next().is_multiple_of(3) {
                mutate(m.get_mut(k).unwrap(), rng, depth - 1);
            } else if rng.next().is_multiple_of(2) {
                m.insert(k.clone(), replacement(rng));
            } else {
                m.remove(k);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = (rng.next() as usize) % a.len();
            if depth > 0 { mutate(&mut a[i], rng, depth - 1) } else { a[i] = replacement(rng) }
        }
        other => *other = replacement(rng),
    }
}

#[test]
fn parse_object_never_panics_on_mutated_documents() {
    let mut seeds: Vec<Value> =
        split_documents(include_str!("data/all-fields.json")).into_iter().map(|d| d.unwrap().value).collect();
    seeds.extend(split_documents(CANARY).into_iter().map(|d| d.unwrap().value));
    let mut rng = Lcg(0x5eed);
    let mut outcomes = [0usize; 3];
    for i in 0..600 {
        let mut v = seeds[i % seeds.len()].clone();
        let rounds = 1 + rng.next() % 4;
        for _ in 0..rounds {
            let depth = (rng.next() % 8) as usize;
            mutate(&mut v, &mut rng, depth);
        }
        let idx = match parse_object(v) {
            Parsed::Object { .. } => 0,
            Parsed::Ignored { .. } => 1,
            Parsed::Invalid { diagnostics, .. } => {
                assert!(!diagnostics.is_empty());
                2
            }
        };
        outcomes[idx] += 1;
    }
    assert!(outcomes[2] > 100, "mutations should mostly be refused: {outcomes:?}");
}

#[test]
fn ten_thousand_objects_parse_quickly() {
    let mut text = String::new();
    for i in 0..2_000 {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: ns{n}, labels: {{app: a{i}, version: v1}}}}\nspec: {{nodeName: node-{n}, serviceAccountName: sa{i}, containers: [{{name: c, ports: [{{containerPort: 9080}}]}}]}}\nstatus: {{phase: Running, podIP: 10.{a}.{b}.{c}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: ns{n}}}\nspec: {{clusterIP: 10.96.{a}.{b}, selector: {{app: a{i}}}, ports: [{{name: http, port: 9080}}]}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: s{i}, namespace: ns{n}}}\nspec: {{host: s{i}, subsets: [{{name: v1, labels: {{version: v1}}}}]}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: s{i}, namespace: ns{n}}}\nspec: {{hosts: [s{i}], http: [{{match: [{{uri: {{regex: \"/a/[0-9]+\"}}}}], route: [{{destination: {{host: s{i}, subset: v1}}, weight: 100}}]}}]}}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: s{i}, namespace: ns{n}}}\nspec: {{selector: {{matchLabels: {{app: a{i}}}}}, rules: [{{from: [{{source: {{principals: [cluster.local/ns/x/sa/y]}}}}]}}]}}\n",
            n = i % 20,
            a = i / 65536 % 256,
            b = i / 256 % 256,
            c = i % 256
        ));
    }
    let start = Instant::now();
    let docs = split_documents(&text);
    let split = start.elapsed();
    let mut ok = 0;
    for d in docs {
        if let Parsed::Object { .. } = parse_object(d.unwrap().value) {
            ok += 1;
        }
    }
    let took = start.elapsed();
    println!("split {split:?}, parse+validate {:?}", took - split);
    assert_eq!(ok, 10_000);
    // Release builds take a fraction of this; the bound catches quadratic blow-ups in debug.
    assert!(took < StdDuration::from_secs(10), "10,000 objects took {took:?}");
    println!("10,000 objects split+parsed+validated in {took:?}");
}

#[test]
fn split_documents_never_panics_on_mangled_text() {
    let base = format!(
        "{CANARY}---\n{}",
        include_str!("../../../tests/data/invalid/23-port-level-mtls-without-selector.yaml")
    );
    let bytes = base.as_bytes();
    let mut rng = Lcg(42);
    let junk =
        [b'{', b'}', b'[', b':', b'-', b'\n', b'\t', b'&', b'*', b'!', b'"', b'\'', b'#', b'|', b'>', b' '];
    for _ in 0..300 {
        let mut t = bytes.to_vec();
        let edits = 1 + rng.next() % 6;
        for _ in 0..edits {
            let i = (rng.next() as usize) % t.len();
            match rng.next() % 3 {
                0 => t[i] = junk[(rng.next() as usize) % junk.len()],
                1 => {
                    t.remove(i);
                }
                _ => t.insert(i, junk[(rng.next() as usize) % junk.len()]),
            }
        }
        let text = String::from_utf8_lossy(&t);
        for doc in split_documents(&text).into_iter().flatten() {
            let _ = parse_object(doc.value);
        }
    }
}
