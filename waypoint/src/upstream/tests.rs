//! Clusters built from YAML models through the real pipeline (split_documents → parse_object
//! → translate → Clusters::update): endpoints, balancers, hashing, policy merging, circuit
//! breakers and outlier detection (with paused tokio time).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Uri};
use mesh_api::{Diagnostic, Object, Origin, Parsed, parse_object, split_documents};
use mesh_model::{MeshConfig, Model, translate};
use mesh_telemetry::ResponseFlag;

use super::hash::{HashTable, cookie_value, hash_bytes};
use super::policy::is_prime;
use super::*;

const HOST: &str = "reviews.shop.svc.cluster.local";

const SERVICE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: http}, {name: grpc, port: 7070, targetPort: 7071}]
"#;

fn pod(i: usize, version: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: r{i:02}, namespace: shop, labels: {{app: reviews, version: {version}}}}}\n\
         spec:\n  serviceAccountName: reviews\n  nodeName: node-{}\n  containers: [{{name: app, image: echo, ports: [{{name: http, containerPort: 9080}}]}}]\n\
         status: {{phase: Running, podIP: 10.0.0.{}}}\n",
        i % 2,
        i + 1
    )
}

/// Pods r00.. with the given versions, the reviews Service, and `extra` documents.
fn model_with(versions: &[&str], extra: &[String]) -> Model {
    let mut docs = vec![SERVICE.to_string()];
    docs.extend(versions.iter().enumerate().map(|(i, v)| pod(i, v)));
    docs.extend(extra.iter().cloned());
    let text = docs.join("\n---\n");
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
    assert!(diags.iter().all(|d| !d.is_error()), "translation errors: {diags:#?}");
    model
}

/// A DestinationRule `name` in `ns` with a flow-style spec.
fn dr(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

/// A DestinationRule for reviews in shop with `body` inside the spec (after `host`).
fn rule(body: &str) -> String {
    dr("shop", "reviews", &format!("{{host: reviews, {body}}}"))
}

fn build(versions: &[&str], extra: &[String]) -> (Clusters, Vec<Diagnostic>) {
    let clusters = Clusters::new();
    let diags = clusters.update(&model_with(versions, extra));
    (clusters, diags)
}

fn cluster(versions: &[&str], body: &str) -> Arc<Cluster> {
    let extra: Vec<String> = if body.is_empty() { vec![] } else { vec![rule(body)] };
    let (cs, diags) = build(versions, &extra);
    assert!(diags.is_empty(), "unexpected diagnostics: {diags:#?}");
    cs.get(HOST, None, 80).expect("cluster")
}

fn addr(i: usize) -> SocketAddr {
    format!("10.0.0.{}:9080", i + 1).parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Req {
    headers: HeaderMap,
    uri: Uri,
    ip: IpAddr,
}

impl Req {
    fn new() -> Req {
        Req { headers: HeaderMap::new(), uri: Uri::from_static("/"), ip: ip("10.1.0.1") }
    }

    fn header(mut self, k: &'static str, v: &str) -> Req {
        self.headers.append(k, HeaderValue::from_str(v).unwrap());
        self
    }

    fn uri(mut self, u: &str) -> Req {
        self.uri = u.parse().unwrap();
        self
    }

    fn from(mut self, s: &str) -> Req {
        self.ip = ip(s);
        self
    }

    fn ctx(&self) -> PickContext<'_> {
        PickContext::new(&self.headers, &self.uri, self.ip)
    }
}

/// Picks once and cancels (drops the guard).
fn pick(c: &Arc<Cluster>, r: &Req) -> SocketAddr {
    c.pick(&r.ctx()).expect("pick").endpoint.addr
}

fn counts(c: &Arc<Cluster>, n: usize) -> HashMap<SocketAddr, usize> {
    let r = Req::new();
    let mut m = HashMap::new();
    for _ in 0..n {
        *m.entry(pick(c, &r)).or_default() += 1;
    }
    m
}

/// Sends one request to `target` (cancelling picks of other hosts) and reports `outcome`.
fn hit(c: &Arc<Cluster>, target: SocketAddr, outcome: Outcome) {
    let r = Req::new();
    for _ in 0..10_000 {
        let p = c.pick(&r.ctx()).expect("pick");
        if p.endpoint.addr == target {
            p.guard.finish(outcome);
            return;
        }
    }
    panic!("{target} never picked");
}

/// Picks `target` (every other endpoint passed as already tried) and keeps the pick active.
fn hold(c: &Arc<Cluster>, target: SocketAddr) -> Pick {
    let r = Req::new();
    let others: Vec<SocketAddr> = c.endpoints().iter().map(|e| e.addr).filter(|a| *a != target).collect();
    let mut ctx = r.ctx();
    ctx.previous_hosts = &others;
    let p = c.pick(&ctx).expect("pick");
    assert_eq!(p.endpoint.addr, target);
    p
}

fn hits(c: &Arc<Cluster>, target: SocketAddr, outcome: Outcome, n: usize) {
    for _ in 0..n {
        hit(c, target, outcome);
    }
}

fn endpoint(c: &Cluster, a: SocketAddr) -> &Arc<Endpoint> {
    c.endpoints().iter().find(|e| e.addr == a).expect("endpoint")
}

fn ejected(c: &Cluster) -> Vec<SocketAddr> {
    c.endpoints().iter().filter(|e| e.is_ejected()).map(|e| e.addr).collect()
}

// ---------------------------------------------------------------- endpoints and lookup

#[test]
fn endpoints_use_named_target_port_of_the_pod() {
    let c = cluster(&["v1", "v2"], "");
    let addrs: Vec<SocketAddr> = c.endpoints().iter().map(|e| e.addr).collect();
    assert_eq!(addrs, [addr(0), addr(1)], "service port 80 → targetPort http → container port 9080");
    let e = &c.endpoints()[0];
    let w = e.workload.as_ref().expect("pod endpoint has its workload");
    assert_eq!(&*w.name, "r00");
    assert_eq!(w.node.as_deref(), Some("node-0"));
    assert!(w.captured);
    assert_eq!(e.identity.as_ref().unwrap().to_string(), "spiffe://cluster.local/ns/shop/sa/reviews");
    assert_eq!(e.labels.get("version"), Some("v1"));
}

#[test]
fn numeric_target_port_for_second_service_port() {
    let (cs, _) = build(&["v1"], &[]);
    let c = cs.get(HOST, None, 7070).expect("grpc port cluster");
    assert_eq!(c.endpoints()[0].addr, "10.0.0.1:7071".parse::<SocketAddr>().unwrap());
    assert_eq!(c.key().port, 7070);
    assert_eq!(&*c.key().host, HOST);
}

#[test]
fn unknown_host_port_or_subset_is_none() {
    let (cs, _) = build(&["v1"], &[rule("subsets: [{name: v1, labels: {version: v1}}]")]);
    assert!(cs.get("ratings.shop.svc.cluster.local", None, 80).is_none());
    assert!(cs.get(HOST, None, 81).is_none());
    assert!(cs.get(HOST, Some("v9"), 80).is_none());
    assert!(cs.get(HOST, Some("v1"), 80).is_some());
    assert!(cs.get(&format!("{HOST}."), None, 80).is_some(), "trailing dot ignored");
}

#[test]
fn pending_pods_are_not_endpoints() {
    let pending = "apiVersion: v1\nkind: Pod\nmetadata: {name: r99, namespace: shop, labels: {app: reviews}}\nspec: {containers: [{name: app, image: echo}]}\nstatus: {phase: Pending}\n";
    let (cs, _) = build(&["v1"], &[pending.to_string()]);
    assert_eq!(cs.get(HOST, None, 80).unwrap().endpoints().len(), 1);
}

#[test]
fn no_endpoints_is_no_healthy_upstream() {
    let (cs, _) = build(&[], &[]);
    let c = cs.get(HOST, None, 80).unwrap();
    let err = c.pick(&Req::new().ctx()).unwrap_err();
    assert_eq!(err, PickError::NoHealthyUpstream);
    assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err.flag(), ResponseFlag::NoHealthyUpstream);
    assert_eq!(err.flag().code(), "UH");
}

#[test]
fn service_entry_endpoints_with_port_overrides_and_subsets() {
    let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext, namespace: shop}\n\
              spec: {hosts: [api.example.com], ports: [{number: 443, name: https, protocol: TLS}], resolution: STATIC, \
              endpoints: [{address: 192.0.2.1, labels: {zone: a}}, {address: 192.0.2.2, labels: {zone: b}, ports: {https: 8443}}]}\n";
    let d = dr("shop", "ext", "{host: api.example.com, subsets: [{name: a, labels: {zone: a}}]}");
    let (cs, diags) = build(&[], &[se.to_string(), d]);
    assert!(diags.is_empty(), "{diags:#?}");
    let c = cs.get("api.example.com", None, 443).expect("ServiceEntry host cluster");
    let addrs: Vec<String> = c.endpoints().iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(addrs, ["192.0.2.1:443", "192.0.2.2:8443"]);
    assert!(c.endpoints().iter().all(|e| e.workload.is_none()));
    let a = cs.get("api.example.com", Some("a"), 443).unwrap();
    assert_eq!(a.endpoints().len(), 1);
    assert_eq!(a.endpoints()[0].labels.get("zone"), Some("a"));
}

#[test]
fn dump_lists_clusters_and_endpoint_state() {
    let (cs, _) = build(&["v1", "v2"], &[rule("subsets: [{name: v2, labels: {version: v2}}]")]);
    let c = cs.get(HOST, None, 80).unwrap();
    let held = c.pick(&Req::new().ctx()).unwrap();
    let dump = cs.dump();
    let list = dump.as_array().unwrap();
    let keys: Vec<(u64, Option<&str>)> =
        list.iter().map(|c| (c["port"].as_u64().unwrap(), c["subset"].as_str())).collect();
    assert_eq!(keys, [(80, None), (80, Some("v2")), (7070, None), (7070, Some("v2"))]);
    assert_eq!(list[0]["host"], HOST);
    assert_eq!(list[0]["lb"], "LeastRequest");
    let active: u64 =
        list[0]["endpoints"].as_array().unwrap().iter().map(|e| e["active_requests"].as_u64().unwrap()).sum();
    assert_eq!(active, 1);
    assert_eq!(list[0]["endpoints"][0]["workload"], "shop/r00");
    drop(held);
}

// ---------------------------------------------------------------- subsets

#[test]
fn subsets_select_endpoints_by_labels() {
    let (cs, diags) = build(
        &["v1", "v2", "v1", "v3"],
        &[rule(
            "subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}, {name: v4, labels: {version: v4}}]",
        )],
    );
    assert!(diags.is_empty());
    let v1: Vec<SocketAddr> =
        cs.get(HOST, Some("v1"), 80).unwrap().endpoints().iter().map(|e| e.addr).collect();
    assert_eq!(v1, [addr(0), addr(2)]);
    let v2 = cs.get(HOST, Some("v2"), 80).unwrap();
    assert_eq!(v2.endpoints().len(), 1);
    assert_eq!(v2.key().subset.as_deref(), Some("v2"));
    for _ in 0..20 {
        assert_eq!(pick(&v2, &Req::new()), addr(1));
    }
    let v4 = cs.get(HOST, Some("v4"), 80).unwrap();
    assert_eq!(v4.pick(&Req::new().ctx()).unwrap_err(), PickError::NoHealthyUpstream);
    assert_eq!(cs.get(HOST, None, 80).unwrap().endpoints().len(), 4, "default cluster has every endpoint");
}

#[test]
fn subset_policy_overrides_top_level_and_inherits_the_rest() {
    let (cs, _) = build(
        &["v1", "v2"],
        &[rule(
            "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {http: {http2MaxRequests: 7}}}, \
             subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}, {name: v2, labels: {version: v2}}]",
        )],
    );
    let top = cs.get(HOST, None, 80).unwrap();
    assert_eq!(top.policy().lb, LbPolicy::RoundRobin);
    let v1 = cs.get(HOST, Some("v1"), 80).unwrap();
    assert_eq!(v1.policy().lb, LbPolicy::Random, "subset's loadBalancer replaces the top-level one");
    assert_eq!(v1.policy().pool.max_requests, 7, "connectionPool inherited from the top level");
    let v2 = cs.get(HOST, Some("v2"), 80).unwrap();
    assert_eq!(v2.policy().lb, LbPolicy::RoundRobin, "subset without policy inherits everything");
}

#[test]
fn port_level_settings_replace_without_inheriting() {
    let (cs, _) = build(
        &["v1"],
        &[rule(
            "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {http: {http2MaxRequests: 7}}, \
             portLevelSettings: [{port: {number: 7070}, loadBalancer: {simple: RANDOM}}]}",
        )],
    );
    let http = cs.get(HOST, None, 80).unwrap();
    assert_eq!(http.policy().lb, LbPolicy::RoundRobin);
    assert_eq!(http.policy().pool.max_requests, 7);
    let grpc = cs.get(HOST, None, 7070).unwrap();
    assert_eq!(grpc.policy().lb, LbPolicy::Random);
    assert_eq!(grpc.policy().pool.max_requests, u32::MAX, "port-level settings do not inherit the pool");
}

#[test]
fn subset_port_level_settings_win() {
    let (cs, _) = build(
        &["v1"],
        &[rule(
            "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}, subsets: [{name: v1, labels: {version: v1}, \
             trafficPolicy: {loadBalancer: {simple: RANDOM}, portLevelSettings: [{port: {number: 80}, connectionPool: {tcp: {maxConnections: 3}}}]}}]",
        )],
    );
    let v1 = cs.get(HOST, Some("v1"), 80).unwrap();
    assert_eq!(v1.policy().lb, LbPolicy::LeastRequest, "port-level entry replaces the lb with the default");
    assert_eq!(v1.policy().pool.max_connections, 3);
    let v1_grpc = cs.get(HOST, Some("v1"), 7070).unwrap();
    assert_eq!(v1_grpc.policy().lb, LbPolicy::Random);
}

// ---------------------------------------------------------------- rule selection

#[test]
fn rules_of_one_namespace_merge_subsets_first_policy_wins() {
    let (cs, diags) = build(
        &["v1", "v2"],
        &[
            rule(
                "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}, subsets: [{name: v1, labels: {version: v1}}]",
            ),
            dr(
                "shop",
                "reviews-more",
                "{host: reviews.shop.svc.cluster.local, trafficPolicy: {loadBalancer: {simple: RANDOM}}, \
                 subsets: [{name: v2, labels: {version: v2}}, {name: v1, labels: {version: v2}}]}",
            ),
        ],
    );
    assert_eq!(cs.get(HOST, None, 80).unwrap().policy().lb, LbPolicy::RoundRobin);
    assert_eq!(cs.get(HOST, Some("v2"), 80).unwrap().endpoints()[0].addr, addr(1));
    assert_eq!(cs.get(HOST, Some("v1"), 80).unwrap().endpoints()[0].addr, addr(0), "first v1 wins");
    let fields: Vec<(&str, &str)> =
        diags.iter().map(|d| (d.object.name.as_str(), d.field.as_str())).collect();
    assert_eq!(fields, [("reviews-more", "spec.trafficPolicy"), ("reviews-more", "spec.subsets[1].name")]);
    assert!(diags[0].message.contains("shop/reviews"), "{}", diags[0].message);
}

#[test]
fn service_namespace_rule_beats_root_namespace_rule() {
    let root = dr(
        "istio-system",
        "global",
        "{host: reviews.shop.svc.cluster.local, trafficPolicy: {loadBalancer: {simple: RANDOM}}}",
    );
    let (cs, _) =
        build(&["v1"], &[root.clone(), rule("trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}")]);
    assert_eq!(cs.get(HOST, None, 80).unwrap().policy().lb, LbPolicy::RoundRobin);
    let (cs, _) = build(&["v1"], &[root]);
    assert_eq!(cs.get(HOST, None, 80).unwrap().policy().lb, LbPolicy::Random, "root rule applies alone");
}

#[test]
fn proxy_namespace_rule_first_and_export_to_is_honoured() {
    let mine = dr(
        "edge",
        "mine",
        "{host: reviews.shop.svc.cluster.local, trafficPolicy: {loadBalancer: {simple: RANDOM}}}",
    );
    let model = model_with(&["v1"], &[mine, rule("trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}")]);
    let cs = Clusters::for_namespace("edge");
    cs.update(&model);
    assert_eq!(cs.get(HOST, None, 80).unwrap().policy().lb, LbPolicy::Random);

    let private = rule("exportTo: ['.'], trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}");
    let model = model_with(&["v1"], &[private]);
    let edge = Clusters::for_namespace("edge");
    edge.update(&model);
    assert_eq!(edge.get(HOST, None, 80).unwrap().policy().lb, LbPolicy::LeastRequest, "not exported to edge");
    let shop = Clusters::for_namespace("shop");
    shop.update(&model);
    assert_eq!(shop.get(HOST, None, 80).unwrap().policy().lb, LbPolicy::RoundRobin);
}

#[test]
fn workload_selector_rules_do_not_apply_to_the_waypoint() {
    let c = cluster(
        &["v1"],
        "workloadSelector: {matchLabels: {app: client}}, trafficPolicy: {loadBalancer: {simple: RANDOM}}",
    );
    assert_eq!(c.policy().lb, LbPolicy::LeastRequest);
}

#[test]
fn unsupported_settings_are_reported_once_with_object_and_field() {
    let (cs, diags) = build(
        &["v1"],
        &[rule(
            "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN, localityLbSetting: {enabled: true}}, \
             tunnel: {targetHost: x, targetPort: 8080}, tls: {mode: SIMPLE}}",
        )],
    );
    let fields: HashSet<&str> = diags.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(
        fields,
        HashSet::from([
            "spec.trafficPolicy.loadBalancer.localityLbSetting",
            "spec.trafficPolicy.tunnel",
            "spec.trafficPolicy.tls.mode"
        ])
    );
    assert_eq!(diags.len(), 3, "once per rule although two ports share the policy: {diags:#?}");
    assert!(
        diags
            .iter()
            .all(|d| !d.is_error() && d.object.kind == "DestinationRule" && d.object.name == "reviews")
    );
    assert!(matches!(&diags[0].origin, Origin::File { .. }));
    assert_eq!(cs.get(HOST, None, 80).unwrap().policy().lb, LbPolicy::RoundRobin, "the rest applies");
}

// ---------------------------------------------------------------- simple balancers

#[test]
fn default_and_unspecified_are_least_request() {
    assert_eq!(cluster(&["v1"], "").policy().lb, LbPolicy::LeastRequest);
    assert_eq!(
        cluster(&["v1"], "trafficPolicy: {loadBalancer: {simple: UNSPECIFIED}}").policy().lb,
        LbPolicy::LeastRequest
    );
    assert_eq!(
        cluster(&["v1"], "trafficPolicy: {loadBalancer: {simple: LEAST_CONN}}").policy().lb,
        LbPolicy::LeastRequest
    );
    assert_eq!(
        cluster(&["v1"], "trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}").policy().lb,
        LbPolicy::Passthrough
    );
}

#[test]
fn round_robin_is_even_and_cycles() {
    let c = cluster(&["v1", "v1", "v1"], "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}");
    let r = Req::new();
    let first: Vec<SocketAddr> = (0..3).map(|_| pick(&c, &r)).collect();
    assert_eq!(first.iter().collect::<HashSet<_>>().len(), 3, "three picks visit three hosts");
    let m = counts(&c, 300);
    assert_eq!(m.len(), 3);
    assert!(m.values().all(|n| *n == 100), "{m:?}");
}

#[test]
fn least_request_prefers_idle_host() {
    let c = cluster(&["v1", "v1"], "");
    let r = Req::new();
    let busy = c.pick(&r.ctx()).unwrap();
    assert_eq!(busy.endpoint.active_requests(), 1);
    for _ in 0..50 {
        assert_ne!(pick(&c, &r), busy.endpoint.addr, "two choices over two hosts always sees the idle one");
    }
    let addr_busy = busy.endpoint.addr;
    drop(busy);
    assert_eq!(endpoint(&c, addr_busy).active_requests(), 0, "dropping the guard releases the request");
}

#[test]
fn least_request_spreads_load_statistically() {
    let c = cluster(&["v1", "v1", "v1"], "");
    let r = Req::new();
    // Two requests on each of two hosts: the idle third wins whenever drawn (2/3 of picks).
    let held: Vec<Pick> = [0, 0, 1, 1].into_iter().map(|i| hold(&c, addr(i))).collect();
    let loads: Vec<u32> = c.endpoints().iter().map(|e| e.active_requests()).collect();
    assert_eq!(loads, [2, 2, 0]);
    let n = (0..600).filter(|_| pick(&c, &r) == addr(2)).count();
    assert!(n > 330, "least-loaded host chosen {n}/600");
    drop(held);
    assert!(c.endpoints().iter().all(|e| e.active_requests() == 0));
}

#[test]
fn random_spreads() {
    let c = cluster(&["v1", "v1", "v1", "v1"], "trafficPolicy: {loadBalancer: {simple: RANDOM}}");
    let m = counts(&c, 4000);
    assert_eq!(m.len(), 4);
    assert!(m.values().all(|n| (800..1200).contains(n)), "{m:?}");
}

#[test]
fn retries_avoid_previous_hosts() {
    for lb in ["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST"] {
        let c = cluster(&["v1", "v1"], &format!("trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}"));
        let r = Req::new();
        let prev = [addr(0)];
        for _ in 0..30 {
            let mut ctx = r.ctx();
            ctx.previous_hosts = &prev;
            assert_eq!(c.pick(&ctx).unwrap().endpoint.addr, addr(1), "{lb}");
        }
    }
}

#[test]
fn passthrough_uses_the_original_destination() {
    let c = cluster(&["v1", "v1"], "trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}");
    let r = Req::new();
    assert_eq!(c.pick(&r.ctx()).unwrap_err(), PickError::NoHealthyUpstream, "no original destination");
    let mut ctx = r.ctx();
    ctx.original_dst = Some(addr(1));
    let p = c.pick(&ctx).unwrap();
    assert_eq!(p.endpoint.addr, addr(1));
    assert_eq!(endpoint(&c, addr(1)).active_requests(), 1, "a member address is tracked");
    drop(p);
    let outside: SocketAddr = "192.168.1.1:443".parse().unwrap();
    ctx.original_dst = Some(outside);
    let p = c.pick(&ctx).unwrap();
    assert_eq!(p.endpoint.addr, outside);
    assert!(p.endpoint.workload.is_none());
    p.guard.finish(Outcome::Status(503));
}

// ---------------------------------------------------------------- consistent hashing

fn hash_cluster(key: &str, algo: &str, n: usize) -> Arc<Cluster> {
    let versions = vec!["v1"; n];
    cluster(&versions, &format!("trafficPolicy: {{loadBalancer: {{consistentHash: {{{key}{algo}}}}}}}"))
}

#[test]
fn header_hash_is_sticky_and_spreads() {
    for algo in ["", ", maglev: {}", ", ringHash: {minimumRingSize: 2048}"] {
        let c = hash_cluster("httpHeaderName: x-user", algo, 5);
        let mut hosts = HashSet::new();
        for u in 0..50 {
            let r = Req::new().header("x-user", &format!("user-{u}"));
            let first = pick(&c, &r);
            for _ in 0..5 {
                assert_eq!(pick(&c, &r), first, "same key, same host ({algo})");
            }
            hosts.insert(first);
        }
        assert!(hosts.len() >= 4, "50 keys over 5 hosts reach {} ({algo})", hosts.len());
    }
}

#[test]
fn header_name_is_case_insensitive_and_missing_key_still_picks() {
    let c = hash_cluster("httpHeaderName: X-User", "", 3);
    let a = pick(&c, &Req::new().header("x-user", "alice"));
    assert_eq!(pick(&c, &Req::new().header("x-user", "alice")), a);
    let spread: HashSet<SocketAddr> = (0..200).map(|_| pick(&c, &Req::new())).collect();
    assert_eq!(spread.len(), 3, "without the header, picks are random");
}

#[test]
fn source_ip_hash() {
    let c = hash_cluster("useSourceIp: true", "", 4);
    let mut hosts = HashSet::new();
    for i in 0..64 {
        let r = Req::new().from(&format!("10.9.{}.{}", i / 8, i % 8 + 1));
        let first = pick(&c, &r);
        assert_eq!(pick(&c, &r), first);
        hosts.insert(first);
    }
    assert_eq!(hosts.len(), 4);
    let v6 = Req::new().from("fd00::7");
    assert_eq!(pick(&c, &v6), pick(&c, &v6));
}

#[test]
fn query_parameter_hash() {
    let c = hash_cluster("httpQueryParameterName: session", ", maglev: {tableSize: 1009}", 4);
    let mut hosts = HashSet::new();
    for s in 0..40 {
        let a = pick(&c, &Req::new().uri(&format!("/p?x=1&session=s{s}")));
        let b = pick(&c, &Req::new().uri(&format!("/other?session=s{s}&y=2")));
        assert_eq!(a, b, "only the parameter counts");
        hosts.insert(a);
    }
    assert!(hosts.len() >= 3);
}

#[test]
fn cookie_is_generated_when_missing_and_then_sticks() {
    let c = hash_cluster("httpCookie: {name: user, path: /, ttl: 3600s}", "", 5);
    let p = c.pick(&Req::new().ctx()).unwrap();
    let set = p.set_cookie.clone().expect("Set-Cookie generated");
    let set = set.to_str().unwrap();
    assert!(set.starts_with("user=\""), "{set}");
    assert!(set.ends_with("\"; Max-Age=3600; Path=/; HttpOnly"), "{set}");
    let value = set.split('"').nth(1).unwrap();
    assert_eq!(value.len(), 16);
    let host = p.endpoint.addr;
    drop(p);
    for cookie in [format!("user=\"{value}\""), format!("a=b; user={value}; c=d")] {
        let back = Req::new().header("cookie", &cookie);
        let p = c.pick(&back.ctx()).unwrap();
        assert_eq!(p.endpoint.addr, host, "the generated cookie leads to the same host ({cookie})");
        assert!(p.set_cookie.is_none(), "no new cookie when present");
    }
}

#[test]
fn cookie_without_ttl_is_not_generated_and_zero_ttl_is_session() {
    let c = hash_cluster("httpCookie: {name: user}", "", 3);
    assert!(c.pick(&Req::new().ctx()).unwrap().set_cookie.is_none());
    let c = hash_cluster(
        "httpCookie: {name: user, ttl: 0s, attributes: [{name: SameSite, value: Strict}, {name: Secure}]}",
        "",
        3,
    );
    let set = c.pick(&Req::new().ctx()).unwrap().set_cookie.unwrap();
    let set = set.to_str().unwrap();
    assert!(!set.contains("Max-Age"), "{set}");
    assert!(set.ends_with("; SameSite=Strict; Secure; HttpOnly"), "{set}");
}

#[test]
fn cookie_value_parsing() {
    let mut h = HeaderMap::new();
    h.append("cookie", HeaderValue::from_static("a=1; user=\"abc\""));
    h.append("cookie", HeaderValue::from_static("user=zzz"));
    assert_eq!(cookie_value(&h, "user"), Some("abc"));
    assert_eq!(cookie_value(&h, "a"), Some("1"));
    assert_eq!(cookie_value(&h, "us"), None);
}

fn placement(hosts: &[usize]) -> Vec<(u32, String)> {
    hosts.iter().map(|i| (*i as u32, addr(*i).to_string())).collect()
}

/// Fraction of 20,000 keys whose host changes when host 3 of 10 is removed, and whether
/// every key that moved was on the removed host.
fn moved_fraction(algo: HashAlgorithm) -> (f64, bool) {
    let all: Vec<usize> = (0..10).collect();
    let fewer: Vec<usize> = all.iter().copied().filter(|i| *i != 3).collect();
    let a = HashTable::build(algo, &placement(&all));
    let b = HashTable::build(algo, &placement(&fewer));
    let mut moved = 0;
    let mut only_removed = true;
    for k in 0..20_000u32 {
        let h = hash_bytes(0, &k.to_be_bytes());
        let (x, y) = (a.lookup(h, |_| true).unwrap(), b.lookup(h, |_| true).unwrap());
        if x != y {
            moved += 1;
            only_removed &= x == 3;
        }
        assert_ne!(y, 3);
    }
    (moved as f64 / 20_000.0, only_removed)
}

#[test]
fn ring_hash_moves_only_the_removed_hosts_keys() {
    let (f, only) = moved_fraction(HashAlgorithm::RingHash { minimum_ring_size: 1024 });
    assert!(only, "ring: keys of other hosts stay");
    assert!((0.05..0.16).contains(&f), "ring moved {f}");
}

#[test]
fn maglev_moves_about_one_nth_of_keys() {
    let (f, _) = moved_fraction(HashAlgorithm::Maglev { table_size: 65537 });
    assert!((0.07..0.2).contains(&f), "maglev moved {f}");
}

#[test]
fn maglev_table_is_balanced_and_ring_has_minimum_size() {
    let HashTable::Maglev(t) =
        HashTable::build(HashAlgorithm::Maglev { table_size: 65537 }, &placement(&[0, 1, 2, 3, 4, 5, 6]))
    else {
        panic!("maglev")
    };
    assert_eq!(t.len(), 65537);
    let mut per = [0usize; 7];
    for i in t.iter() {
        per[*i as usize] += 1;
    }
    assert!(per.iter().all(|n| n.abs_diff(65537 / 7) <= 1), "{per:?}");
    let HashTable::Ring(r) =
        HashTable::build(HashAlgorithm::RingHash { minimum_ring_size: 1024 }, &placement(&[0, 1, 2]))
    else {
        panic!("ring")
    };
    assert_eq!(r.len(), 3 * 512, "ceil(1024/3) points per host, rounded up to a power of two");
    assert!(r.windows(2).all(|w| w[0].0 <= w[1].0), "sorted");
}

#[test]
fn hash_algorithm_settings_and_defaults() {
    let algo = |c: &Cluster| match &c.policy().lb {
        LbPolicy::ConsistentHash(h) => h.algorithm,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        algo(&hash_cluster("useSourceIp: true", "", 1)),
        HashAlgorithm::RingHash { minimum_ring_size: DEFAULT_RING_SIZE }
    );
    assert_eq!(
        algo(&hash_cluster("useSourceIp: true", ", minimumRingSize: 4096", 1)),
        HashAlgorithm::RingHash { minimum_ring_size: 4096 }
    );
    assert_eq!(
        algo(&hash_cluster("useSourceIp: true", ", maglev: {}", 1)),
        HashAlgorithm::Maglev { table_size: DEFAULT_MAGLEV_TABLE_SIZE }
    );
    let (cs, diags) = build(
        &["v1"],
        &[rule(
            "trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}}}",
        )],
    );
    assert_eq!(
        algo(&cs.get(HOST, None, 80).unwrap()),
        HashAlgorithm::Maglev { table_size: DEFAULT_MAGLEV_TABLE_SIZE }
    );
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].field, "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize");
    assert!(is_prime(65537) && is_prime(1009) && !is_prime(1000) && !is_prime(1));
}

#[test]
fn removing_an_endpoint_keeps_other_keys_in_place() {
    let body = "trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}";
    let cs = Clusters::new();
    cs.update(&model_with(&["v1"; 10], &[rule(body)]));
    let before: Vec<SocketAddr> = (0..200)
        .map(|u| pick(&cs.get(HOST, None, 80).unwrap(), &Req::new().header("x-user", &format!("u{u}"))))
        .collect();
    cs.update(&model_with(&["v1"; 9], &[rule(body)]));
    let c = cs.get(HOST, None, 80).unwrap();
    let mut moved = 0;
    for (u, b) in before.iter().enumerate() {
        let a = pick(&c, &Req::new().header("x-user", &format!("u{u}")));
        if a != *b {
            assert_eq!(*b, addr(9), "only keys of the removed pod move");
            moved += 1;
        }
    }
    assert!(moved > 0 && moved < 45, "moved {moved}/200");
}

// ---------------------------------------------------------------- connection pool and breakers

#[test]
fn pool_defaults() {
    let c = cluster(&["v1"], "");
    assert_eq!(c.connect_timeout(), Duration::from_secs(10));
    assert_eq!(c.idle_timeout(), Some(Duration::from_secs(3600)));
    assert_eq!(c.tcp_idle_timeout(), Some(Duration::from_secs(3600)));
    assert_eq!(c.max_requests_per_connection(), None);
    let p = &c.policy().pool;
    assert_eq!(
        (p.max_connections, p.max_pending_requests, p.max_requests, p.max_retries),
        (u32::MAX, u32::MAX, u32::MAX, u32::MAX)
    );
    assert!(c.policy().outlier.is_none(), "no outlier detection unless configured");
}

#[test]
fn pool_settings_are_read() {
    let c = cluster(
        &["v1"],
        "trafficPolicy: {connectionPool: {tcp: {maxConnections: 4, connectTimeout: 250ms, idleTimeout: 0s}, \
         http: {http1MaxPendingRequests: 2, http2MaxRequests: 9, maxRequestsPerConnection: 1, maxRetries: 3, idleTimeout: 30s, maxConcurrentStreams: 100}}}",
    );
    assert_eq!(c.connect_timeout(), Duration::from_millis(250));
    assert_eq!(c.idle_timeout(), Some(Duration::from_secs(30)));
    assert_eq!(c.tcp_idle_timeout(), None, "0s disables");
    assert_eq!(c.max_requests_per_connection(), Some(1));
    let p = &c.policy().pool;
    assert_eq!((p.max_connections, p.max_pending_requests, p.max_requests, p.max_retries), (4, 2, 9, 3));
    assert_eq!(p.max_concurrent_streams, Some(100));
}

#[test]
fn zero_limits_mean_unset_as_in_istio() {
    let c = cluster(&["v1"], "trafficPolicy: {connectionPool: {http: {http2MaxRequests: 0, maxRetries: 0}}}");
    assert_eq!(c.policy().pool.max_requests, u32::MAX);
    assert_eq!(c.policy().pool.max_retries, u32::MAX);
}

#[test]
fn max_requests_overflow_and_release() {
    let c = cluster(&["v1"], "trafficPolicy: {connectionPool: {http: {http2MaxRequests: 2}}}");
    let a = c.try_request().unwrap();
    let _b = c.try_request().unwrap();
    let err = c.try_request().unwrap_err();
    assert_eq!(err, Overflow::Requests { max: 2 });
    assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err.flag().code(), "UO");
    assert_eq!(c.load().0, 2);
    drop(a);
    assert!(c.try_request().is_ok(), "a dropped permit frees its slot");
}

#[test]
fn max_retries_overflow_and_release() {
    let c = cluster(&["v1"], "trafficPolicy: {connectionPool: {http: {maxRetries: 1}}}");
    let r = c.try_retry().unwrap();
    assert_eq!(c.try_retry().unwrap_err(), Overflow::Retries { max: 1 });
    drop(r);
    assert!(c.try_retry().is_ok());
    assert!(c.try_request().is_ok(), "retries and requests are separate breakers");
}

#[tokio::test]
async fn connections_queue_as_pending_then_fail_fast() {
    let c = cluster(
        &["v1"],
        "trafficPolicy: {connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}}",
    );
    let first = c.acquire_connection().await.unwrap();
    assert_eq!(c.try_connection().unwrap_err(), Overflow::Connections { max: 1 });
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.acquire_connection().await.map(|_| ()) })
    };
    tokio::task::yield_now().await;
    while c.load().1 == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(c.load().1, 1, "second request waits as pending");
    assert_eq!(c.acquire_connection().await.unwrap_err(), Overflow::Pending { max: 1 }, "third fails fast");
    drop(first);
    waiter.await.unwrap().unwrap();
    assert_eq!(c.load(), (0, 0, 0, 0));
}

#[test]
fn breaker_counters_survive_updates() {
    let body = "trafficPolicy: {connectionPool: {http: {http2MaxRequests: 1}}}";
    let cs = Clusters::new();
    cs.update(&model_with(&["v1"], &[rule(body)]));
    let held = cs.get(HOST, None, 80).unwrap().try_request().unwrap();
    cs.update(&model_with(&["v1", "v2"], &[rule(body)]));
    let c = cs.get(HOST, None, 80).unwrap();
    assert_eq!(c.endpoints().len(), 2, "new generation");
    assert!(c.try_request().is_err(), "the request held from the old generation still counts");
    drop(held);
    assert!(c.try_request().is_ok());
}

// ---------------------------------------------------------------- outlier detection

const OD_ALL: &str =
    "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {maxEjectionPercent: 100";

fn od(extra: &str) -> String {
    format!("{OD_ALL}{extra}}}}}")
}

#[test]
fn outlier_defaults() {
    let c = cluster(&["v1"], "trafficPolicy: {outlierDetection: {}}");
    let o = c.policy().outlier.clone().unwrap();
    assert_eq!(o, OutlierSettings::default());
    assert_eq!(
        (o.consecutive_5xx, o.consecutive_gateway, o.max_ejection_percent, o.min_health_percent),
        (5, 0, 10, 0)
    );
    assert_eq!((o.interval, o.base_ejection_time), (Duration::from_secs(10), Duration::from_secs(30)));
}

#[tokio::test(start_paused = true)]
async fn ejects_after_consecutive_5xx() {
    let c = cluster(&["v1", "v1", "v1"], &od(""));
    hits(&c, addr(0), Outcome::Status(500), 4);
    assert!(ejected(&c).is_empty(), "4 < 5");
    hit(&c, addr(0), Outcome::Status(500));
    assert_eq!(ejected(&c), [addr(0)]);
    assert_eq!(endpoint(&c, addr(0)).ejections(), 1);
    let m = counts(&c, 100);
    assert!(!m.contains_key(&addr(0)), "ejected host gets no traffic: {m:?}");
    assert_eq!(m.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn success_resets_the_consecutive_count() {
    let c = cluster(&["v1", "v1"], &od(", consecutive5xxErrors: 3"));
    hits(&c, addr(0), Outcome::Status(503), 2);
    hit(&c, addr(0), Outcome::Status(404));
    hits(&c, addr(0), Outcome::Status(503), 2);
    assert!(ejected(&c).is_empty(), "4xx is a success for outlier detection");
    hit(&c, addr(0), Outcome::Status(502));
    assert_eq!(ejected(&c), [addr(0)]);
}

#[tokio::test(start_paused = true)]
async fn zero_consecutive_5xx_disables() {
    let c = cluster(&["v1", "v1"], &od(", consecutive5xxErrors: 0"));
    hits(&c, addr(0), Outcome::Status(500), 20);
    assert!(ejected(&c).is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancelled_requests_give_no_signal() {
    let c = cluster(&["v1", "v1"], &od(", consecutive5xxErrors: 2"));
    hit(&c, addr(0), Outcome::Status(500));
    for _ in 0..10 {
        drop(c.pick(&Req::new().ctx()).unwrap());
    }
    hit(&c, addr(0), Outcome::Status(500));
    assert_eq!(ejected(&c), [addr(0)], "cancelled picks neither count nor reset");
}

#[tokio::test(start_paused = true)]
async fn gateway_errors_eject() {
    let c = cluster(&["v1", "v1", "v1"], &od(", consecutive5xxErrors: 0, consecutiveGatewayErrors: 3"));
    hits(&c, addr(0), Outcome::Status(500), 5);
    assert!(ejected(&c).is_empty(), "500 is not a gateway error");
    hit(&c, addr(0), Outcome::Status(502));
    hit(&c, addr(0), Outcome::ConnectFailure);
    hit(&c, addr(0), Outcome::Status(500));
    hit(&c, addr(0), Outcome::Status(504));
    assert!(ejected(&c).is_empty(), "a 500 breaks the gateway streak");
    hit(&c, addr(1), Outcome::ConnectFailure);
    hit(&c, addr(1), Outcome::Reset);
    hit(&c, addr(1), Outcome::Timeout);
    assert_eq!(ejected(&c), [addr(1)], "connect failures, resets and timeouts are gateway errors");
}

#[tokio::test(start_paused = true)]
async fn local_origin_failures_count_as_5xx() {
    let c = cluster(&["v1", "v1"], &od(", consecutive5xxErrors: 2"));
    hit(&c, addr(0), Outcome::ConnectFailure);
    hit(&c, addr(0), Outcome::Status(500));
    assert_eq!(ejected(&c), [addr(0)]);
}

#[tokio::test(start_paused = true)]
async fn deprecated_consecutive_errors_mean_gateway_errors() {
    let c = cluster(
        &["v1", "v1"],
        "trafficPolicy: {outlierDetection: {consecutiveErrors: 2, maxEjectionPercent: 100}}",
    );
    let o = c.policy().outlier.clone().unwrap();
    assert_eq!((o.consecutive_gateway, o.consecutive_5xx), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn max_ejection_percent_limits_ejections() {
    // Default 10%: with 3 hosts the first ejection is allowed (0% < 10%), no more.
    let c = cluster(
        &["v1", "v1", "v1"],
        "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 1}}",
    );
    hit(&c, addr(0), Outcome::Status(500));
    hit(&c, addr(1), Outcome::Status(500));
    hit(&c, addr(2), Outcome::Status(500));
    assert_eq!(ejected(&c), [addr(0)]);
    // 50% of 4: two.
    let c = cluster(
        &["v1"; 4],
        "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 1, maxEjectionPercent: 50}}",
    );
    for i in 0..4 {
        hit(&c, addr(i), Outcome::Status(500));
    }
    assert_eq!(ejected(&c).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn ejected_host_returns_after_base_time_at_a_sweep() {
    let c = cluster(&["v1", "v1"], &od(", consecutive5xxErrors: 1"));
    // Sweeps run every 10 s from the cluster's creation; eject at t=5 s.
    tokio::time::advance(Duration::from_secs(5)).await;
    hit(&c, addr(0), Outcome::Status(500));
    assert_eq!(ejected(&c), [addr(0)]);
    tokio::time::advance(Duration::from_secs(29)).await;
    c.sweep();
    assert_eq!(ejected(&c), [addr(0)], "29 s < 30 s");
    tokio::time::advance(Duration::from_millis(1500)).await;
    assert!(!counts(&c, 10).contains_key(&addr(0)), "due at 35 s, but returned by the 40 s sweep");
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(counts(&c, 10).contains_key(&addr(0)), "returned by the sweep picks run");
    assert!(ejected(&c).is_empty());
}

#[tokio::test(start_paused = true)]
async fn ejection_time_grows_with_each_ejection() {
    let c = cluster(&["v1", "v1"], &od(", consecutive5xxErrors: 1, interval: 1s"));
    hit(&c, addr(0), Outcome::Status(500));
    tokio::time::advance(Duration::from_secs(30)).await;
    c.sweep();
    assert!(ejected(&c).is_empty(), "first ejection: 30 s");
    hit(&c, addr(0), Outcome::Status(500));
    assert_eq!(endpoint(&c, addr(0)).ejections(), 2);
    tokio::time::advance(Duration::from_secs(59)).await;
    c.sweep();
    assert_eq!(ejected(&c), [addr(0)], "second ejection: 60 s");
    tokio::time::advance(Duration::from_secs(1)).await;
    c.sweep();
    assert!(ejected(&c).is_empty());
}

#[tokio::test(start_paused = true)]
async fn multiplier_decays_while_healthy() {
    let c = cluster(&["v1", "v1"], &od(", consecutive5xxErrors: 1, interval: 1s"));
    hit(&c, addr(0), Outcome::Status(500));
    tokio::time::advance(Duration::from_secs(30)).await;
    c.sweep();
    // Healthy for 5 more sweeps: the multiplier goes back to 0, the next ejection is 30 s.
    tokio::time::advance(Duration::from_secs(5)).await;
    c.sweep();
    hit(&c, addr(0), Outcome::Status(500));
    tokio::time::advance(Duration::from_secs(30)).await;
    c.sweep();
    assert!(ejected(&c).is_empty());
}

#[tokio::test(start_paused = true)]
async fn ejection_time_is_capped_at_300s() {
    let o = OutlierSettings::default();
    assert_eq!(o.ejection_time(1), Duration::from_secs(30));
    assert_eq!(o.ejection_time(20), Duration::from_secs(300));
    let long = OutlierSettings { base_ejection_time: Duration::from_secs(600), ..o };
    assert_eq!(long.ejection_time(3), Duration::from_secs(600), "cap is max(base, 300 s)");
}

#[tokio::test(start_paused = true)]
async fn all_ejected_is_no_healthy_upstream_without_panic() {
    let c = cluster(&["v1", "v1"], &od(", consecutive5xxErrors: 1"));
    hit(&c, addr(0), Outcome::Status(500));
    hit(&c, addr(1), Outcome::Status(500));
    assert_eq!(c.pick(&Req::new().ctx()).unwrap_err(), PickError::NoHealthyUpstream);
    assert!(!c.in_panic());
}

#[tokio::test(start_paused = true)]
async fn min_health_percent_panics_and_uses_ejected_hosts() {
    let c = cluster(&["v1", "v1"], &od(", consecutive5xxErrors: 1, minHealthPercent: 60"));
    hit(&c, addr(0), Outcome::Status(500));
    assert_eq!(ejected(&c), [addr(0)]);
    assert!(c.in_panic(), "50% healthy < 60%");
    let m = counts(&c, 10);
    assert_eq!(m.len(), 2, "in panic every host is used: {m:?}");
    let c = cluster(&["v1"; 4], &od(", consecutive5xxErrors: 1, minHealthPercent: 60"));
    hit(&c, addr(0), Outcome::Status(500));
    assert!(!c.in_panic(), "75% healthy");
    assert_eq!(counts(&c, 30).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn hashing_skips_ejected_hosts_only() {
    let c = cluster(
        &["v1"; 5],
        "trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}, outlierDetection: {consecutive5xxErrors: 1, maxEjectionPercent: 100}}",
    );
    let keys: Vec<Req> = (0..100).map(|u| Req::new().header("x-user", &format!("u{u}"))).collect();
    let before: Vec<SocketAddr> = keys.iter().map(|r| pick(&c, r)).collect();
    let victim = before[0];
    c.pick(&keys[0].ctx()).unwrap().guard.finish(Outcome::Status(500));
    assert_eq!(ejected(&c), [victim]);
    for (r, b) in keys.iter().zip(&before) {
        let now = pick(&c, r);
        assert_ne!(now, victim);
        if *b != victim {
            assert_eq!(now, *b, "keys of healthy hosts stay");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn no_outlier_detection_never_ejects() {
    let c = cluster(&["v1", "v1"], "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}");
    hits(&c, addr(0), Outcome::Status(503), 50);
    assert!(ejected(&c).is_empty());
}

#[tokio::test(start_paused = true)]
async fn runtime_state_survives_updates() {
    let body = od(", consecutive5xxErrors: 3");
    let cs = Clusters::new();
    cs.update(&model_with(&["v1", "v1", "v1"], &[rule(&body)]));
    let c = cs.get(HOST, None, 80).unwrap();
    hits(&c, addr(0), Outcome::Status(500), 3);
    hits(&c, addr(1), Outcome::Status(500), 2);
    let held = c.pick(&Req::new().ctx()).unwrap();
    let held_addr = held.endpoint.addr;
    // Same inputs: the cluster is reused as is.
    cs.update(&model_with(&["v1", "v1", "v1"], &[rule(&body)]));
    assert!(Arc::ptr_eq(&c, &cs.get(HOST, None, 80).unwrap()));
    // A new pod: a new generation that keeps the state of remaining endpoints.
    cs.update(&model_with(&["v1", "v1", "v1", "v1"], &[rule(&body)]));
    let c2 = cs.get(HOST, None, 80).unwrap();
    assert!(!Arc::ptr_eq(&c, &c2));
    assert_eq!(ejected(&c2), [addr(0)], "ejection kept");
    assert_eq!(endpoint(&c2, held_addr).active_requests(), 1, "active request kept");
    hit(&c2, addr(1), Outcome::Status(500));
    assert_eq!(ejected(&c2), [addr(0), addr(1)], "consecutive count kept (2 + 1)");
    held.guard.finish(Outcome::Status(200));
    assert_eq!(endpoint(&c2, held_addr).active_requests(), 0);
    // The ejected host returns on time in the new generation.
    tokio::time::advance(Duration::from_secs(30)).await;
    cs.sweep();
    assert!(!endpoint(&c2, addr(0)).is_ejected());
}

#[tokio::test(start_paused = true)]
async fn removed_endpoint_state_is_dropped() {
    let body = od(", consecutive5xxErrors: 1");
    let cs = Clusters::new();
    cs.update(&model_with(&["v1", "v1"], &[rule(&body)]));
    hit(&cs.get(HOST, None, 80).unwrap(), addr(1), Outcome::Status(500));
    cs.update(&model_with(&["v1"], &[rule(&body)]));
    cs.update(&model_with(&["v1", "v1"], &[rule(&body)]));
    let c = cs.get(HOST, None, 80).unwrap();
    assert!(ejected(&c).is_empty(), "a pod that left and came back starts fresh");
}

#[test]
fn max_ejection_percent_zero_is_default_with_warning() {
    let (cs, diags) = build(&["v1"], &[rule("trafficPolicy: {outlierDetection: {maxEjectionPercent: 0}}")]);
    assert_eq!(cs.get(HOST, None, 80).unwrap().policy().outlier.as_ref().unwrap().max_ejection_percent, 10);
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].field, "spec.trafficPolicy.outlierDetection.maxEjectionPercent");
}
