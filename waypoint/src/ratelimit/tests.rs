//! Bucket maths with paused time, EnvoyFilter selection, per-route and filter-level limiters,
//! samplers, headers, gRPC answers and buckets carried across model generations.

use std::time::Duration;

use http::HeaderMap;
use mesh_api::istio::networking::TokenBucket;
use mesh_api::{Object, Origin, Parsed, parse_object, split_documents};
use mesh_model::{MeshConfig, Model, WaypointRef, translate};
use tokio::time::{Instant, advance};

use super::*;
use crate::route::{RouteKind, RouteOrigin};

fn tb(max: u32, per_fill: u32, secs: u64) -> TokenBucket {
    TokenBucket { max_tokens: max, tokens_per_fill: per_fill, fill_interval: Duration::from_secs(secs) }
}

fn allowed(b: &Bucket, n: usize) -> Vec<bool> {
    (0..n).map(|_| b.take(Instant::now()).allowed).collect()
}

#[tokio::test(start_paused = true)]
async fn bucket_starts_full_bursts_then_refills_per_interval() {
    let b = Bucket::new(tb(3, 2, 10), Instant::now());
    assert_eq!(allowed(&b, 4), [true, true, true, false], "burst of max_tokens");
    let t = b.take(Instant::now());
    assert_eq!((t.allowed, t.remaining, t.reset), (false, 0, Duration::from_secs(10)));
    advance(Duration::from_millis(9_999)).await;
    assert!(!b.take(Instant::now()).allowed, "no fill before the interval ends");
    advance(Duration::from_millis(1)).await;
    let t = b.take(Instant::now());
    assert_eq!((t.allowed, t.remaining, t.reset), (true, 1, Duration::from_secs(10)), "one fill: 2 tokens");
    advance(Duration::from_secs(4)).await;
    let t = b.take(Instant::now());
    assert_eq!((t.allowed, t.remaining, t.reset.as_secs()), (true, 0, 6));
    assert!(!b.take(Instant::now()).allowed);
    // Many intervals later the bucket is full again, never above max_tokens.
    advance(Duration::from_secs(1_000)).await;
    assert_eq!(allowed(&b, 4), [true, true, true, false]);
}

#[tokio::test(start_paused = true)]
async fn per_connection_buckets_are_independent_and_kept_per_limiter() {
    let (c1, c2) = (ConnBuckets::default(), ConnBuckets::default());
    let config = tb(2, 1, 60);
    let now = Instant::now();
    assert_eq!(
        (0..3).map(|_| c1.get(7, &config, now).take(now).allowed).collect::<Vec<_>>(),
        [true, true, false]
    );
    assert!(c2.get(7, &config, now).take(now).allowed, "another connection has its own bucket");
    assert!(c1.get(8, &config, now).take(now).allowed, "another limiter has its own bucket");
    assert_eq!(c1.len(), 2);
    // A changed config under the same limiter id starts a fresh bucket.
    assert!(c1.get(7, &tb(5, 1, 60), now).take(now).allowed);
    assert_eq!(c1.len(), 2);
}

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {istio.io/use-waypoint: waypoint}}
---
apiVersion: v1
kind: Pod
metadata: {name: waypoint-0, namespace: demo, labels: {gateway.networking.k8s.io/gateway-name: waypoint, tier: edge}}
spec: {containers: [{name: w, image: w}]}
status: {phase: Running, podIP: 10.0.0.9}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: demo}
spec: {clusterIP: 10.96.0.1, selector: {app: a}, ports: [{name: http, port: 80}, {name: http-alt, port: 81}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: demo}
spec:
  hosts: [a]
  http:
  - name: api
    match: [{uri: {prefix: /api}}]
    route: [{destination: {host: a}}]
  - name: rest
    route: [{destination: {host: a}}]
"#;

fn model(extra: &str) -> Model {
    model_on(BASE, extra)
}

fn model_on(base: &str, extra: &str) -> Model {
    let text = format!("{base}\n---\n{extra}");
    let objects: Vec<(Object, Origin)> = split_documents(&text)
        .into_iter()
        .map(|d| match parse_object(d.unwrap().value) {
            Parsed::Object { object, .. } => (object, Origin::Unknown),
            other => panic!("{other:?}"),
        })
        .collect();
    translate(&objects, &MeshConfig::default()).0
}

fn wp() -> WaypointRef {
    WaypointRef { namespace: "demo".into(), name: "waypoint".into() }
}

/// An EnvoyFilter with one HTTP_FILTER patch (`max` tokens per hour) and a selection.
fn filter(name: &str, ns: &str, selection: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: {name}, namespace: {ns}}}
spec:
  {selection}
  configPatches:
  - applyTo: HTTP_FILTER
    match: {{context: SIDECAR_INBOUND}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          stat_prefix: {name}
          token_bucket: {{max_tokens: 2, fill_interval: 3600s}}
          filter_enabled: {{default_value: {{numerator: 100}}}}
          filter_enforced: {{default_value: {{numerator: 100}}}}
          {extra}
"#
    )
}

fn selected(m: &Model) -> Vec<String> {
    applicable_patches(m, &wp()).into_iter().map(|a| a.source).collect()
}

#[test]
fn envoy_filter_selection() {
    let docs = [
        filter(
            "by-ref",
            "demo",
            "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]",
            "",
        ),
        filter(
            "other-ref",
            "demo",
            "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: other}]",
            "",
        ),
        filter("svc-ref", "demo", "targetRefs: [{kind: Service, name: a}]", ""),
        filter("by-labels", "demo", "workloadSelector: {labels: {tier: edge}}", ""),
        filter("app-labels", "demo", "workloadSelector: {labels: {app: a}}", ""),
        filter("ns-wide", "demo", "priority: -1", ""),
        filter("mesh-wide", "istio-system", "priority: 0", ""),
        filter(
            "root-labels",
            "istio-system",
            "workloadSelector: {labels: {gateway.networking.k8s.io/gateway-name: waypoint}}",
            "",
        ),
        filter("elsewhere", "other", "priority: 0", ""),
        filter("outbound", "demo", "priority: 0", "").replace("SIDECAR_INBOUND", "SIDECAR_OUTBOUND"),
        filter("at-waypoint", "demo", "priority: 0", "").replace("SIDECAR_INBOUND", "WAYPOINT"),
    ];
    let m = model(&docs.join("---\n"));
    assert_eq!(
        selected(&m),
        [
            "demo/ns-wide",           // priority -1 first
            "istio-system/mesh-wide", // root namespace before the waypoint's
            "istio-system/root-labels",
            "demo/at-waypoint", // then by name (no creation times)
            "demo/by-labels",
            "demo/by-ref",
        ]
    );
    // Without a waypoint pod in the model, only the gateway-name label identifies the waypoint.
    let no_pod = model_on(
        &BASE.replace("gateway.networking.k8s.io/gateway-name: waypoint, tier: edge", "tier: edge"),
        &format!(
            "{}---\n{}",
            filter("by-labels", "demo", "workloadSelector: {labels: {tier: edge}}", ""),
            filter(
                "gw-label",
                "demo",
                "workloadSelector: {labels: {gateway.networking.k8s.io/gateway-name: waypoint}}",
                ""
            )
        ),
    );
    assert_eq!(selected(&no_pod), ["demo/gw-label"]);
}

/// The route of the test VirtualService `http[index]` (0: `api`, 1: `rest`).
fn origin(index: usize) -> RouteOrigin {
    RouteOrigin { kind: RouteKind::VirtualService, namespace: "demo".into(), name: "a".into(), index }
}

const HOST: &str = "a.demo.svc.cluster.local";

fn build(m: &Model, prev: Option<&RateLimits>) -> RateLimits {
    let (routes, _) = crate::route::compile(m);
    RateLimits::build(m, &wp(), &routes, prev)
}

fn statuses(rl: &RateLimits, port: u16, route: &RouteOrigin, conn: &ConnBuckets, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| match rl.check_at(HOST, port, route, conn, &HeaderMap::new()).limited {
            Some(r) => r.status().as_u16(),
            None => 200,
        })
        .collect()
}

/// A route patch giving route `name` its own bucket of `max` tokens.
fn route_patch(name: &str, max: u32, extra: &str) -> String {
    format!(
        r#"  - applyTo: HTTP_ROUTE
    match: {{routeConfiguration: {{vhost: {{route: {{name: {name}}}}}}}}}
    patch:
      operation: MERGE
      value:
        typed_per_filter_config:
          envoy.filters.http.local_ratelimit:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: {name}
              token_bucket: {{max_tokens: {max}, fill_interval: 3600s}}
              filter_enabled: {{default_value: {{numerator: 100}}}}
              filter_enforced: {{default_value: {{numerator: 100}}}}
              {extra}
"#
    )
}

#[tokio::test(start_paused = true)]
async fn route_config_replaces_the_filter_level_bucket_per_port() {
    let doc = filter("f", "demo", "priority: 0", "enable_x_ratelimit_headers: DRAFT_VERSION_03")
        + &route_patch("api", 4, "status: {code: 503}");
    let m = model(&doc);
    let rl = build(&m, None);
    assert_eq!(rl.len(), 4, "filter and route limiter on each of the two ports");
    let conn = ConnBuckets::default();
    let (api, rest) = (origin(0), origin(1));
    assert_eq!(statuses(&rl, 80, &api, &conn, 5), [200, 200, 200, 200, 503]);
    assert_eq!(statuses(&rl, 80, &rest, &conn, 3), [200, 200, 429], "the filter's own bucket");
    assert_eq!(statuses(&rl, 81, &rest, &conn, 3), [200, 200, 429], "port 81 has its own bucket");
    let d = rl.check_at(HOST, 80, &rest, &conn, &HeaderMap::new());
    let resp = d.limited.unwrap();
    assert_eq!(resp.body().as_ref(), LIMITED_BODY.as_bytes());
    assert_eq!(d.headers.x_ratelimit(), Some(XRateLimit { limit: 2, remaining: 0, reset: 3600 }));
    let mut h = HeaderMap::new();
    d.headers.apply_response(&mut h);
    assert_eq!(
        (h["x-ratelimit-limit"].to_str().unwrap(), h["x-ratelimit-remaining"].to_str().unwrap()),
        ("2", "0")
    );
    assert!(rl.check_at("b.demo.svc.cluster.local", 80, &rest, &conn, &HeaderMap::new()).limited.is_none());
    // An hour later both refill.
    advance(Duration::from_secs(3600)).await;
    assert_eq!(statuses(&rl, 80, &rest, &conn, 1), [200]);
}

#[tokio::test(start_paused = true)]
async fn samplers_headers_grpc_and_per_connection() {
    let doc = filter(
        "f",
        "demo",
        "priority: 0",
        "response_headers_to_add: [{header: {key: x-limited, value: 'yes'}}]\n          \
         request_headers_to_add_when_not_enforced: [{header: {key: x-shadow, value: over}}]\n          \
         local_rate_limit_per_downstream_connection: true",
    )
    .replace(
        "filter_enforced: {default_value: {numerator: 100}}",
        "rate_limited_as_resource_exhausted: true",
    );
    let rl = build(&model(&doc), None);
    let (c1, c2) = (ConnBuckets::default(), ConnBuckets::default());
    let rest = origin(1);
    assert_eq!(statuses(&rl, 80, &rest, &c1, 2), [200, 200]);
    // Over the limit but not enforced: passed, with the shadow request header.
    let d = rl.check_at(HOST, 80, &rest, &c1, &HeaderMap::new());
    assert!(d.limited.is_none());
    let mut req = HeaderMap::new();
    d.headers.apply_request(&mut req);
    assert_eq!(req["x-shadow"], "over");
    assert!(d.headers.x_ratelimit().is_none(), "x-ratelimit headers are off by default");
    assert_eq!(statuses(&rl, 80, &rest, &c2, 1), [200]);

    // Enforced, gRPC: 200 with grpc-status 8 (resource exhausted) and the response headers.
    let doc = filter(
        "g",
        "demo",
        "priority: 0",
        "rate_limited_as_resource_exhausted: true\n          \
         response_headers_to_add: [{header: {key: x-limited, value: 'yes'}}]",
    );
    let rl = build(&model(&doc), None);
    let mut grpc = HeaderMap::new();
    grpc.insert("content-type", "application/grpc".parse().unwrap());
    let c = ConnBuckets::default();
    for _ in 0..2 {
        assert!(rl.check_at(HOST, 80, &rest, &c, &grpc).limited.is_none());
    }
    let r = rl.check_at(HOST, 80, &rest, &c, &grpc).limited.unwrap();
    let h = |k: &str| r.headers()[k].to_str().unwrap().to_string();
    assert_eq!((r.status().as_u16(), h("grpc-status"), h("x-limited")), (200, "8".into(), "yes".into()));

    // filter_enabled absent: nothing is counted.
    let doc = filter("h", "demo", "priority: 0", "")
        .replace("filter_enabled: {default_value: {numerator: 100}}", "");
    let rl = build(&model(&doc), None);
    assert_eq!(statuses(&rl, 80, &rest, &c, 5), [200; 5]);
}

#[tokio::test(start_paused = true)]
async fn buckets_survive_a_generation_when_their_config_is_unchanged() {
    let doc = filter("f", "demo", "priority: 0", "") + &route_patch("api", 3, "");
    let conn = ConnBuckets::default();
    let (api, rest) = (origin(0), origin(1));
    let gen1 = build(&model(&doc), None);
    assert_eq!(statuses(&gen1, 80, &api, &conn, 3), [200; 3]);
    assert_eq!(statuses(&gen1, 80, &rest, &conn, 2), [200; 2]);
    // An unrelated change (another Service): both buckets stay empty.
    let gen2 = build(
        &model(&format!(
            "{doc}---\napiVersion: v1\nkind: Service\nmetadata: {{name: c, namespace: demo}}\nspec: {{ports: [{{port: 80}}]}}\n"
        )),
        Some(&gen1),
    );
    assert_eq!(statuses(&gen2, 80, &api, &conn, 1), [429]);
    assert_eq!(statuses(&gen2, 80, &rest, &conn, 1), [429]);
    // The route's config changes: its bucket starts full; the filter's stays empty.
    let gen3 = build(&model(&doc.replace("max_tokens: 3", "max_tokens: 5")), Some(&gen2));
    assert_eq!(statuses(&gen3, 80, &api, &conn, 6), [200, 200, 200, 200, 200, 429]);
    assert_eq!(statuses(&gen3, 80, &rest, &conn, 1), [429]);
}
