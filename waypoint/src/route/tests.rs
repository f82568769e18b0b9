//! Route compilation and matching, from YAML through the real loader (split → parse/validate
//! → translate → compile).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use mesh_api::gateway::HttpRouteSpec;
use mesh_api::istio::networking::VirtualServiceSpec;
use mesh_api::{Diagnostic, Object, Origin, Parsed, Resource, parse_object, split_documents};
use mesh_model::{MeshConfig, Model, Workload, translate};

use super::*;

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: foo}
---
apiVersion: v1
kind: Namespace
metadata: {name: bar}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: foo, labels: {app: client, version: v1}}
spec: {serviceAccountName: client, containers: [{name: app, image: echo}]}
status: {phase: Running, podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: bar, labels: {app: other}}
spec: {serviceAccountName: other, containers: [{name: app, image: echo}]}
status: {phase: Running, podIP: 10.0.2.1}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: foo}
spec:
  clusterIP: 10.96.0.10
  selector: {app: reviews}
  ports: [{name: http, port: 9080}, {name: grpc, port: 9090}, {name: db, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: foo}
spec: {clusterIP: 10.96.0.11, selector: {app: ratings}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: shadow, namespace: foo}
spec: {clusterIP: 10.96.0.12, selector: {app: shadow}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: bar}
spec: {clusterIP: 10.96.0.13, selector: {app: ext}, ports: [{name: http, port: 80}]}
"#;

const REVIEWS: &str = "reviews.foo.svc.cluster.local";
const RATINGS: &str = "ratings.foo.svc.cluster.local";
const SHADOW: &str = "shadow.foo.svc.cluster.local";

/// Builds the model; `strict` makes invalid documents fail the test, otherwise VirtualServices
/// and HTTPRoutes that validation refuses are built anyway (to test the compiler's own checks).
fn build(extra: &str, strict: bool) -> (Model, RouteTables, Vec<Diagnostic>) {
    let text = format!("{BASE}\n---\n{extra}");
    let mut objects: Vec<(Object, Origin)> = Vec::new();
    for (i, doc) in split_documents(&text).into_iter().enumerate() {
        let doc = doc.unwrap_or_else(|e| panic!("document {i}: {e}"));
        let raw = doc.value.clone();
        let origin = Origin::File { path: "test.yaml".into(), doc: doc.index };
        match parse_object(doc.value) {
            Parsed::Object { object, .. } => objects.push((object, origin)),
            Parsed::Invalid { diagnostics, .. } if !strict => {
                let obj = match raw.get("kind").and_then(|k| k.as_str()) {
                    Some("VirtualService") => Object::VirtualService(Arc::new(
                        serde_json::from_value::<Resource<VirtualServiceSpec>>(raw).unwrap(),
                    )),
                    Some("HTTPRoute") => Object::HttpRoute(Arc::new(
                        serde_json::from_value::<Resource<HttpRouteSpec>>(raw).unwrap(),
                    )),
                    _ => panic!("invalid document {i}: {diagnostics:#?}"),
                };
                objects.push((obj, origin));
            }
            Parsed::Invalid { diagnostics, .. } => panic!("invalid document {i}: {diagnostics:#?}"),
            Parsed::Ignored { object, .. } => panic!("ignored document {i}: {object}"),
        }
    }
    let (model, diags) = translate(&objects, &MeshConfig::default());
    assert!(diags.iter().all(|d| !d.is_error()), "translation errors: {diags:#?}");
    let (tables, diags) = compile(&model);
    (model, tables, diags)
}

fn tables(extra: &str) -> (Model, RouteTables) {
    let (m, t, d) = build(extra, true);
    assert!(d.is_empty(), "unexpected diagnostics: {d:#?}");
    (m, t)
}

/// A VirtualService in `foo` for `reviews` with `body` (YAML lines under `spec:`).
fn vs(name: &str, body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: foo}}\nspec:\n  hosts: [reviews]\n{body}\n"
    )
}

/// An HTTPRoute in `foo` attached to Service `reviews` with `rules` (YAML lines under `spec:`).
fn hr(name: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: foo}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: reviews}}]\n{rules}\n"
    )
}

struct Req {
    method: Method,
    uri: Uri,
    authority: String,
    headers: HeaderMap,
    port: u16,
    source: Option<Arc<Workload>>,
}

fn get(uri: &str) -> Req {
    Req {
        method: Method::GET,
        uri: uri.parse().unwrap(),
        authority: "reviews:9080".into(),
        headers: HeaderMap::new(),
        port: 9080,
        source: None,
    }
}

impl Req {
    fn header(mut self, k: &'static str, v: &str) -> Self {
        self.headers.append(k, HeaderValue::from_str(v).unwrap());
        self
    }
    fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }
    fn port(mut self, p: u16) -> Self {
        self.port = p;
        self
    }
    fn authority(mut self, a: &str) -> Self {
        self.authority = a.into();
        self
    }
    fn from(mut self, model: &Model, ns: &str, name: &str) -> Self {
        self.source = model.workload(ns, name).cloned();
        self
    }
    fn info(&self) -> RequestInfo<'_> {
        RequestInfo {
            method: &self.method,
            uri: &self.uri,
            authority: &self.authority,
            headers: &self.headers,
            port: self.port,
            source: self.source.as_deref(),
        }
    }
}

fn reviews(t: &RouteTables) -> &RouteTable {
    t.for_service(REVIEWS).expect("reviews table")
}

/// The route's name for `req`, or "NR" when nothing matches.
fn name_of(t: &RouteTables, req: &Req) -> String {
    match reviews(t).route(&req.info()) {
        Some(m) => m.route.name.as_deref().unwrap_or("-").to_string(),
        None => "NR".into(),
    }
}

fn forward(route: &Route) -> &[WeightedDestination] {
    match &route.action {
        Action::Forward(d) => d,
        other => panic!("not a forward: {other:?}"),
    }
}

// ---------------------------------------------------------------- defaults

#[test]
fn service_without_routes_forwards_to_itself_with_default_retries() {
    let (_, t) = tables("");
    let table = reviews(&t);
    assert!(!table.has_http_routes());
    assert_eq!(table.source(), TableSource::Default);
    let m = table.route(&get("/anything").info()).unwrap();
    let d = forward(m.route);
    assert_eq!(d.len(), 1);
    assert_eq!(&*d[0].host, REVIEWS);
    assert_eq!(d[0].port, None);
    assert_eq!(d[0].port_or(9080), 9080);
    assert_eq!(m.route.retries, Some(RetryPolicy::istio_default()));
    assert_eq!(m.route.timeout, None);
    assert_eq!(table.tcp(5432, None).unwrap()[0].host.as_ref(), REVIEWS);
    assert!(t.for_service(RATINGS).is_some());
    assert!(t.for_service("nope.foo.svc.cluster.local").is_none());
}

// ---------------------------------------------------------------- VirtualService matching

#[test]
fn uri_exact_prefix_regex() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - name: exact
    match: [{uri: {exact: /a}}]
    route: [{destination: {host: reviews}}]
  - name: prefix
    match: [{uri: {prefix: /a}}]
    route: [{destination: {host: reviews}}]
  - name: regex
    match: [{uri: {regex: "/v[0-9]+/.*"}}]
    route: [{destination: {host: reviews}}]"#,
    ));
    assert_eq!(name_of(&t, &get("/a")), "exact");
    assert_eq!(name_of(&t, &get("/a?x=1")), "exact", "the query is not part of the path");
    assert_eq!(name_of(&t, &get("/abc")), "prefix");
    assert_eq!(name_of(&t, &get("/v12/x")), "regex");
    assert_eq!(name_of(&t, &get("/xv1/x")), "NR", "regex is anchored");
    assert_eq!(name_of(&t, &get("/b")), "NR");
    assert!(reviews(&t).has_http_routes());
    assert_eq!(reviews(&t).source(), TableSource::VirtualService);
}

#[test]
fn first_match_wins_in_order() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - name: broad
    match: [{uri: {prefix: /}}]
    route: [{destination: {host: reviews}}]
  - name: narrow
    match: [{uri: {exact: /a}}]
    route: [{destination: {host: ratings}}]"#,
    ));
    assert_eq!(name_of(&t, &get("/a")), "broad");
}

#[test]
fn matches_are_ored_and_fields_anded() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - name: r1
    match:
    - {uri: {prefix: /a}, method: {exact: POST}}
    - {uri: {prefix: /b}}
    route: [{destination: {host: reviews}}]"#,
    ));
    assert_eq!(name_of(&t, &get("/a")), "NR", "both fields of the first match must hold");
    assert_eq!(name_of(&t, &get("/a").method(Method::POST)), "r1");
    assert_eq!(name_of(&t, &get("/b")), "r1");
}

#[test]
fn header_matches_exact_prefix_regex_presence() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - name: exact
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews}}]
  - name: prefix
    match: [{headers: {x-ver: {prefix: v2}}}]
    route: [{destination: {host: reviews}}]
  - name: regex
    match: [{headers: {x-id: {regex: "[0-9]+"}}}]
    route: [{destination: {host: reviews}}]
  - name: present
    match: [{headers: {x-canary: {}}}]
    route: [{destination: {host: reviews}}]"#,
    ));
    assert_eq!(name_of(&t, &get("/").header("end-user", "jason")), "exact");
    assert_eq!(name_of(&t, &get("/").header("end-user", "Jason")), "NR", "values are case-sensitive");
    assert_eq!(name_of(&t, &get("/").header("x-ver", "v2.1")), "prefix");
    assert_eq!(name_of(&t, &get("/").header("x-id", "123")), "regex");
    assert_eq!(name_of(&t, &get("/").header("x-id", "12a")), "NR");
    assert_eq!(name_of(&t, &get("/").header("x-canary", "")), "present");
    assert_eq!(name_of(&t, &get("/")), "NR");
}

#[test]
fn repeated_headers_are_joined_with_commas() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - name: joined
    match: [{headers: {x-a: {exact: "1,2"}}}]
    route: [{destination: {host: reviews}}]"#,
    ));
    assert_eq!(name_of(&t, &get("/").header("x-a", "1").header("x-a", "2")), "joined");
    assert_eq!(name_of(&t, &get("/").header("x-a", "1")), "NR");
}

#[test]
fn without_headers_inverts_including_absence() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - name: not-jason
    match: [{withoutHeaders: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews}}]
  - name: jason
    route: [{destination: {host: ratings}}]"#,
    ));
    assert_eq!(name_of(&t, &get("/")), "not-jason");
    assert_eq!(name_of(&t, &get("/").header("end-user", "bob")), "not-jason");
    assert_eq!(name_of(&t, &get("/").header("end-user", "jason")), "jason");
}

#[test]
fn query_params_exact_regex_presence_and_decoding() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - name: exact
    match: [{queryParams: {v: {exact: "a b"}}}]
    route: [{destination: {host: reviews}}]
  - name: regex
    match: [{queryParams: {id: {regex: "[0-9]+"}}}]
    route: [{destination: {host: reviews}}]
  - name: present
    match: [{queryParams: {debug: {}}}]
    route: [{destination: {host: reviews}}]"#,
    ));
    assert_eq!(name_of(&t, &get("/p?x=1&v=a%20b")), "exact");
    assert_eq!(name_of(&t, &get("/p?id=42")), "regex");
    assert_eq!(name_of(&t, &get("/p?id=4x")), "NR");
    assert_eq!(name_of(&t, &get("/p?debug")), "present");
    assert_eq!(name_of(&t, &get("/p")), "NR");
}

#[test]
fn method_authority_scheme_and_port() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - name: method
    match: [{method: {exact: DELETE}}]
    route: [{destination: {host: reviews}}]
  - name: authority
    match: [{authority: {prefix: "reviews.foo"}}]
    route: [{destination: {host: reviews}}]
  - name: port
    match: [{port: 9090}]
    route: [{destination: {host: reviews}}]"#,
    ));
    assert_eq!(name_of(&t, &get("/").method(Method::DELETE)), "method");
    assert_eq!(name_of(&t, &get("/").authority("reviews.foo.svc:9080")), "authority");
    assert_eq!(name_of(&t, &get("/").port(9090)), "port");
    assert_eq!(name_of(&t, &get("/")), "NR");
}

#[test]
fn source_labels_and_namespace() {
    let (model, t) = tables(&vs(
        "r",
        r#"  http:
  - name: v1-clients
    match: [{sourceLabels: {app: client, version: v1}}]
    route: [{destination: {host: reviews}}]
  - name: from-bar
    match: [{sourceNamespace: bar}]
    route: [{destination: {host: reviews}}]"#,
    ));
    assert_eq!(name_of(&t, &get("/").from(&model, "foo", "client")), "v1-clients");
    assert_eq!(name_of(&t, &get("/").from(&model, "bar", "other")), "from-bar");
    assert_eq!(name_of(&t, &get("/")), "NR", "an unknown source matches no source condition");
}

#[test]
fn ignore_uri_case_applies_to_exact_and_prefix() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - name: ci
    match: [{uri: {prefix: /API}, ignoreUriCase: true}]
    route: [{destination: {host: reviews}}]
  - name: cs
    match: [{uri: {exact: /Login}}]
    route: [{destination: {host: reviews}}]"#,
    ));
    assert_eq!(name_of(&t, &get("/api/x")), "ci");
    assert_eq!(name_of(&t, &get("/Api")), "ci");
    assert_eq!(name_of(&t, &get("/login")), "NR");
    assert_eq!(name_of(&t, &get("/Login")), "cs");
}

#[test]
fn match_names_are_reported() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - name: r
    match: [{name: first, uri: {prefix: /a}}, {name: second, uri: {prefix: /b}}]
    route: [{destination: {host: reviews}}]"#,
    ));
    let table = reviews(&t);
    assert_eq!(table.route(&get("/b").info()).unwrap().match_name, Some("second"));
    let m = table.route(&get("/a").info()).unwrap();
    assert_eq!(m.match_name, Some("first"));
    assert_eq!(m.route.origin.kind, RouteKind::VirtualService);
    assert_eq!((&*m.route.origin.namespace, &*m.route.origin.name, m.route.origin.index), ("foo", "r", 0));
}

// ---------------------------------------------------------------- destinations

#[test]
fn destination_subset_port_and_default_weight() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - route: [{destination: {host: ratings, subset: v2, port: {number: 9080}}}]"#,
    ));
    let m = reviews(&t).route(&get("/").info()).unwrap();
    let d = forward(m.route);
    assert_eq!(&*d[0].host, RATINGS);
    assert_eq!(d[0].subset.as_deref(), Some("v2"));
    assert_eq!(d[0].port, Some(9080));
    assert_eq!(d[0].weight, 100);
}

#[test]
fn destination_hosts_resolve_in_the_vs_namespace() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - route:
    - {destination: {host: ext.bar}, weight: 50}
    - {destination: {host: shadow.foo.svc.cluster.local}, weight: 50}"#,
    ));
    let m = reviews(&t).route(&get("/").info()).unwrap();
    let hosts: Vec<&str> = forward(m.route).iter().map(|d| &*d.host).collect();
    assert_eq!(hosts, ["ext.bar.svc.cluster.local", SHADOW]);
}

#[test]
fn weighted_split_and_deterministic_pick() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}"#,
    ));
    let m = reviews(&t).route(&get("/").info()).unwrap();
    let d = forward(m.route);
    assert_eq!(pick_weighted(d, 0).unwrap().subset.as_deref(), Some("v1"));
    assert_eq!(pick_weighted(d, 79).unwrap().subset.as_deref(), Some("v1"));
    assert_eq!(pick_weighted(d, 80).unwrap().subset.as_deref(), Some("v2"));
    assert_eq!(pick_weighted(d, 99).unwrap().subset.as_deref(), Some("v2"));
    assert_eq!(pick_weighted(d, 100).unwrap().subset.as_deref(), Some("v1"), "wraps modulo the total");
    let v2 = (0..10_000u32).filter(|r| pick_weighted(d, *r).unwrap().subset.as_deref() == Some("v2")).count();
    assert_eq!(v2, 2_000);
}

#[test]
fn pick_skips_zero_weights_and_refuses_all_zero() {
    let mk = |w: u32, s: &str| WeightedDestination {
        subset: Some(s.into()),
        ..WeightedDestination::new("h".into(), w)
    };
    let d = [mk(0, "a"), mk(3, "b"), mk(0, "c"), mk(1, "d")];
    let picks: Vec<&str> = (0..4).map(|r| pick_weighted(&d, r).unwrap().subset.as_deref().unwrap()).collect();
    assert_eq!(picks, ["b", "b", "b", "d"]);
    assert!(pick_weighted(&[mk(0, "a")], 7).is_none());
    assert!(pick_weighted(&[], 7).is_none());
    assert_eq!(pick_weighted(&[mk(1, "x")], u32::MAX).unwrap().subset.as_deref(), Some("x"));
}

// ---------------------------------------------------------------- redirect / direct response

fn redirect_of(t: &RouteTables, req: &Req) -> Response<()> {
    let m = reviews(t).route(&req.info()).unwrap();
    match &m.route.action {
        Action::Redirect(r) => r.response(&m, &req.info()),
        other => panic!("not a redirect: {other:?}"),
    }
}

fn location(resp: &Response<()>) -> &str {
    resp.headers()["location"].to_str().unwrap()
}

use http::Response;

#[test]
fn redirect_defaults_to_301_and_keeps_the_query() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - redirect: {uri: /v2/reviews, authority: newreviews.foo}"#,
    ));
    let resp = redirect_of(&t, &get("/v1/reviews?id=1"));
    assert_eq!(resp.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(location(&resp), "http://newreviews.foo:9080/v2/reviews?id=1");
}

#[test]
fn redirect_scheme_and_port() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - match: [{uri: {prefix: /tls}}]
    redirect: {scheme: https, redirectCode: 308}
  - match: [{uri: {prefix: /port}}]
    redirect: {port: 8443, scheme: https}
  - match: [{uri: {prefix: /default}}]
    redirect: {derivePort: FROM_PROTOCOL_DEFAULT}
  - redirect: {derivePort: FROM_REQUEST_PORT, authority: other}"#,
    ));
    let r = redirect_of(&t, &get("/tls").authority("reviews"));
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(location(&r), "https://reviews/tls");
    // The port of the old scheme's default is dropped when the scheme changes.
    assert_eq!(location(&redirect_of(&t, &get("/tls").authority("reviews:80"))), "https://reviews/tls");
    assert_eq!(location(&redirect_of(&t, &get("/tls"))), "https://reviews:9080/tls");
    assert_eq!(location(&redirect_of(&t, &get("/port"))), "https://reviews:8443/port");
    assert_eq!(location(&redirect_of(&t, &get("/default"))), "http://reviews/default");
    assert_eq!(location(&redirect_of(&t, &get("/x").authority("reviews").port(9090))), "http://other:9090/x");
}

#[test]
fn redirect_uri_with_query_replaces_the_query() {
    let (_, t) = tables(&vs("r", "  http:\n  - redirect: {uri: \"/new?a=b\"}"));
    assert_eq!(location(&redirect_of(&t, &get("/old?x=y"))), "http://reviews:9080/new?a=b");
}

#[test]
fn direct_response_string_and_bytes() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - match: [{uri: {exact: /s}}]
    directResponse: {status: 503, body: {string: "unavailable"}}
  - directResponse: {status: 200, body: {bytes: "aGVsbG8="}}"#,
    ));
    let m = reviews(&t).route(&get("/s").info()).unwrap();
    match &m.route.action {
        Action::DirectResponse { status, body } => {
            assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(body.as_deref(), Some(&b"unavailable"[..]));
        }
        other => panic!("{other:?}"),
    }
    let m = reviews(&t).route(&get("/b").info()).unwrap();
    assert!(matches!(&m.route.action, Action::DirectResponse { status, body }
        if *status == StatusCode::OK && body.as_deref() == Some(&b"hello"[..])));
}

// ---------------------------------------------------------------- rewrite

fn rewritten(t: &RouteTables, req: &Req) -> (String, String) {
    let m = reviews(t).route(&req.info()).unwrap();
    let mut authority = req.authority.clone();
    let uri = m.route.rewrite.as_ref().expect("rewrite").apply(&m, &req.uri, &mut authority);
    (uri.to_string(), authority)
}

#[test]
fn rewrite_uri_replaces_the_matched_prefix_or_whole_path() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - match: [{uri: {prefix: /ratings}}]
    rewrite: {uri: /v1/bookRatings}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {exact: /exact}}]
    rewrite: {uri: /replaced}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {regex: "/re/.*"}}]
    rewrite: {uri: /whole}
    route: [{destination: {host: reviews}}]
  - rewrite: {uri: /v2}
    route: [{destination: {host: reviews}}]"#,
    ));
    assert_eq!(rewritten(&t, &get("/ratings/2?x=1")).0, "/v1/bookRatings/2?x=1");
    assert_eq!(rewritten(&t, &get("/exact?q")).0, "/replaced?q");
    assert_eq!(rewritten(&t, &get("/re/a/b")).0, "/whole");
    // Without a uri match Envoy's prefix is "/": it is what gets replaced.
    assert_eq!(rewritten(&t, &get("/foo")).0, "/v2foo");
}

#[test]
fn rewrite_prefix_honours_ignore_uri_case_length() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - match: [{uri: {prefix: /OLD}, ignoreUriCase: true}]
    rewrite: {uri: /new}
    route: [{destination: {host: reviews}}]"#,
    ));
    assert_eq!(rewritten(&t, &get("/old/x")).0, "/new/x");
}

#[test]
fn rewrite_uri_regex_with_groups() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - rewrite: {uriRegexRewrite: {match: "^/service/([^/]+)(/.*)$", rewrite: "\\2/instance/\\1"}}
    route: [{destination: {host: reviews}}]"#,
    ));
    assert_eq!(rewritten(&t, &get("/service/foo/v1/api?k=v")).0, "/v1/api/instance/foo?k=v");
    assert_eq!(rewritten(&t, &get("/other")).0, "/other", "no match, no change");
}

#[test]
fn rewrite_authority() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - rewrite: {authority: ratings.foo:9080}
    route: [{destination: {host: ratings}}]"#,
    ));
    assert_eq!(rewritten(&t, &get("/p?q")), ("/p?q".to_string(), "ratings.foo:9080".to_string()));
    let req = get("http://reviews:9080/p");
    let m = reviews(&t).route(&req.info()).unwrap();
    let mut a = String::new();
    let uri = m.route.rewrite.as_ref().unwrap().apply(&m, &req.uri, &mut a);
    assert_eq!(uri.to_string(), "http://ratings.foo:9080/p", "absolute-form URIs carry the new authority");
}

#[test]
fn regex_substitution_conversion() {
    assert_eq!(actions::regex_substitution(r"\1-\2"), "${1}-${2}");
    assert_eq!(actions::regex_substitution("cost$5"), "cost$$5");
    assert_eq!(actions::regex_substitution(r"a\\b"), r"a\b");
}

// ---------------------------------------------------------------- headers

#[test]
fn header_operations_route_and_destination() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - headers:
      request: {set: {x-route: r, x-both: route}, add: {x-multi: two}, remove: [x-secret]}
      response: {set: {x-served-by: waypoint}, remove: [server]}
    route:
    - destination: {host: reviews}
      headers:
        request: {set: {x-both: dest, x-dest: d}}
        response: {add: {x-dest-resp: yes}}"#,
    ));
    let m = reviews(&t).route(&get("/").info()).unwrap();
    let dest = &forward(m.route)[0];
    let mut h = HeaderMap::new();
    h.insert("x-secret", HeaderValue::from_static("s"));
    h.insert("x-multi", HeaderValue::from_static("one"));
    m.route.apply_request_headers(Some(dest), &mut h);
    assert!(!h.contains_key("x-secret"));
    assert_eq!(h["x-route"], "r");
    assert_eq!(h["x-dest"], "d");
    assert_eq!(h["x-both"], "route", "route-level operations come last and win");
    let multi: Vec<_> = h.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["one", "two"]);
    let mut resp = HeaderMap::new();
    resp.insert("server", HeaderValue::from_static("envoy"));
    m.route.apply_response_headers(Some(dest), &mut resp);
    assert!(!resp.contains_key("server"));
    assert_eq!(resp["x-served-by"], "waypoint");
    assert_eq!(resp["x-dest-resp"], "yes");
}

#[test]
fn header_ops_remove_before_set_and_add() {
    let ops = HeaderOps {
        set: vec![("a".parse().unwrap(), HeaderValue::from_static("1"))],
        add: vec![("b".parse().unwrap(), HeaderValue::from_static("2"))],
        remove: vec!["a".parse().unwrap(), "b".parse().unwrap()],
    };
    let mut h = HeaderMap::new();
    h.insert("a", HeaderValue::from_static("0"));
    h.insert("b", HeaderValue::from_static("0"));
    ops.apply(&mut h);
    assert_eq!(h["a"], "1");
    assert_eq!(h.get_all("b").iter().collect::<Vec<_>>(), ["2"]);
    assert!(!ops.is_empty());
    assert!(HeaderOps::default().is_empty());
}

// ---------------------------------------------------------------- timeout and retries

#[test]
fn timeouts() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - match: [{uri: {prefix: /slow}}]
    timeout: 1.5s
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /off}}]
    timeout: 0s
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]"#,
    ));
    let timeout = |p| reviews(&t).route(&get(p).info()).unwrap().route.timeout;
    assert_eq!(timeout("/slow"), Some(Duration::from_millis(1500)));
    assert_eq!(timeout("/off"), None);
    assert_eq!(timeout("/"), None);
}

#[test]
fn retries_absent_default_disabled_and_explicit() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - match: [{uri: {prefix: /none}}]
    retries: {attempts: 0}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /custom}}]
    retries: {attempts: 5, perTryTimeout: 2s, retryOn: "5xx,gateway-error,409,425", backoff: 100ms}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /only}}]
    retries: {attempts: 3}
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]"#,
    ));
    let retries = |p| reviews(&t).route(&get(p).info()).unwrap().route.retries.clone();
    assert_eq!(retries("/"), Some(RetryPolicy::istio_default()));
    assert_eq!(retries("/none"), None);
    let c = retries("/custom").unwrap();
    assert_eq!(c.attempts, 5);
    assert_eq!(c.per_try_timeout, Some(Duration::from_secs(2)));
    assert_eq!(c.retriable_status_codes, [409, 425]);
    assert!(c.retry_on.contains(RetryOn::SERVER_5XX));
    assert!(c.retry_on.contains(RetryOn::GATEWAY_ERROR));
    assert!(c.retry_on.contains(RetryOn::RETRIABLE_STATUS_CODES), "numbers imply retriable-status-codes");
    assert!(!c.retry_on.contains(RetryOn::CONNECT_FAILURE));
    assert_eq!((c.backoff_base, c.backoff_max), (Duration::from_millis(100), Duration::from_secs(1)));
    let o = retries("/only").unwrap();
    assert_eq!(o.attempts, 3);
    assert_eq!(o.retry_on, RetryPolicy::istio_default().retry_on, "retryOn keeps Istio's default");
    assert_eq!(o.retriable_status_codes, [503]);
}

fn resp(status: u16) -> AttemptOutcome {
    AttemptOutcome::Response { status, grpc_status: None }
}

fn grpc(code: u32) -> AttemptOutcome {
    AttemptOutcome::Response { status: 200, grpc_status: Some(code) }
}

fn policy(on: &[RetryOn], codes: &[u16]) -> RetryPolicy {
    RetryPolicy {
        retry_on: on.iter().fold(RetryOn::empty(), |a, b| a.union(*b)),
        retriable_status_codes: codes.to_vec(),
        ..RetryPolicy::istio_default()
    }
}

#[test]
fn istio_default_retry_decisions() {
    let p = RetryPolicy::istio_default();
    assert_eq!(p.attempts, 2);
    assert!(p.should_retry(&resp(503)));
    assert!(!p.should_retry(&resp(502)));
    assert!(!p.should_retry(&resp(500)));
    assert!(!p.should_retry(&resp(200)));
    assert!(p.should_retry(&AttemptOutcome::ConnectFailure));
    assert!(p.should_retry(&AttemptOutcome::RefusedStream));
    assert!(!p.should_retry(&AttemptOutcome::Reset));
    assert!(!p.should_retry(&AttemptOutcome::Timeout));
    assert!(p.should_retry(&grpc(14)), "unavailable");
    assert!(p.should_retry(&grpc(1)), "cancelled");
    assert!(!p.should_retry(&grpc(13)), "internal is not in the default");
}

#[test]
fn retry_on_5xx_and_gateway_error() {
    let p = policy(&[RetryOn::SERVER_5XX], &[]);
    for s in [500, 501, 503, 599] {
        assert!(p.should_retry(&resp(s)), "{s}");
    }
    assert!(!p.should_retry(&resp(404)));
    assert!(p.should_retry(&AttemptOutcome::Reset));
    assert!(p.should_retry(&AttemptOutcome::ConnectFailure));
    assert!(p.should_retry(&AttemptOutcome::Timeout));
    let g = policy(&[RetryOn::GATEWAY_ERROR], &[]);
    assert!(g.should_retry(&resp(502)) && g.should_retry(&resp(503)) && g.should_retry(&resp(504)));
    assert!(!g.should_retry(&resp(500)));
    assert!(g.should_retry(&AttemptOutcome::Reset));
}

#[test]
fn retry_on_connection_level_conditions() {
    let reset = policy(&[RetryOn::RESET], &[]);
    assert!(reset.should_retry(&AttemptOutcome::Reset));
    assert!(reset.should_retry(&AttemptOutcome::ConnectFailure));
    assert!(!reset.should_retry(&resp(503)));
    let cf = policy(&[RetryOn::CONNECT_FAILURE], &[]);
    assert!(cf.should_retry(&AttemptOutcome::ConnectFailure));
    assert!(!cf.should_retry(&AttemptOutcome::Reset));
    assert!(!cf.should_retry(&AttemptOutcome::RefusedStream));
    let rs = policy(&[RetryOn::REFUSED_STREAM], &[]);
    assert!(rs.should_retry(&AttemptOutcome::RefusedStream));
    assert!(!rs.should_retry(&AttemptOutcome::ConnectFailure));
    assert!(!policy(&[], &[]).should_retry(&AttemptOutcome::ConnectFailure));
}

#[test]
fn retry_on_4xx_status_codes_and_grpc() {
    let p = policy(&[RetryOn::RETRIABLE_4XX], &[]);
    assert!(p.should_retry(&resp(409)));
    assert!(!p.should_retry(&resp(404)));
    let codes = policy(&[RetryOn::RETRIABLE_STATUS_CODES], &[418, 429]);
    assert!(codes.should_retry(&resp(429)) && codes.should_retry(&resp(418)));
    assert!(!codes.should_retry(&resp(503)));
    let listed_but_off = policy(&[], &[429]);
    assert!(!listed_but_off.should_retry(&resp(429)), "codes need retriable-status-codes");
    let g = policy(
        &[RetryOn::GRPC_DEADLINE_EXCEEDED, RetryOn::GRPC_INTERNAL, RetryOn::GRPC_RESOURCE_EXHAUSTED],
        &[],
    );
    assert!(g.should_retry(&grpc(4)) && g.should_retry(&grpc(13)) && g.should_retry(&grpc(8)));
    assert!(!g.should_retry(&grpc(14)) && !g.should_retry(&grpc(0)));
}

#[test]
fn retry_on_names_parse() {
    assert_eq!(RetryOn::parse_one("5xx"), Ok(Some(RetryOn::SERVER_5XX)));
    assert_eq!(RetryOn::parse_one("resource-exhausted"), Ok(Some(RetryOn::GRPC_RESOURCE_EXHAUSTED)));
    assert_eq!(RetryOn::parse_one("retriable-headers"), Ok(None));
    assert_eq!(RetryOn::parse_one("bogus").unwrap_err().to_string(), "unknown retry condition \"bogus\"");
}

#[test]
fn attempt_outcome_reads_grpc_status_from_headers_or_trailers() {
    let mut h = HeaderMap::new();
    assert_eq!(
        AttemptOutcome::from_response(StatusCode::OK, &h, None),
        AttemptOutcome::Response { status: 200, grpc_status: None }
    );
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("14"));
    assert_eq!(AttemptOutcome::from_response(StatusCode::OK, &h, Some(&trailers)), grpc(14));
    h.insert("grpc-status", HeaderValue::from_static("13"));
    assert_eq!(AttemptOutcome::from_response(StatusCode::OK, &h, Some(&trailers)), grpc(13));
}

#[test]
fn backoff_is_jittered_exponential_and_capped() {
    let p = RetryPolicy::istio_default();
    assert_eq!(p.backoff(1, 0.0), Duration::ZERO);
    assert_eq!(p.backoff(1, 0.999_999), Duration::from_millis(25).mul_f64(0.999_999));
    assert_eq!(p.backoff(1, 0.5), Duration::from_micros(12_500));
    assert_eq!(p.backoff(2, 0.5), Duration::from_micros(37_500), "base × (2² − 1) × 0.5");
    assert_eq!(p.backoff(3, 0.5), Duration::from_micros(87_500));
    assert_eq!(p.backoff(10, 0.5), Duration::from_millis(125), "capped at 250 ms before jitter");
    assert_eq!(p.backoff(40, 1.0), Duration::from_millis(250));
    for attempt in 1..20 {
        for i in 0..10 {
            let d = p.backoff(attempt, f64::from(i) / 10.0);
            assert!(d <= p.backoff_max, "{attempt} {i} {d:?}");
        }
    }
}

// ---------------------------------------------------------------- fault, mirror

#[test]
fn fault_delay_and_abort() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 5s, percentage: {value: 10}}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /grpc}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 50}}}
    route: [{destination: {host: reviews}}]"#,
    ));
    let fault = |p| reviews(&t).route(&get(p).info()).unwrap().route.fault.unwrap();
    let d = fault("/delay");
    assert_eq!(d.delay_for(9.99), Some(Duration::from_secs(5)));
    assert_eq!(d.delay_for(10.0), None);
    assert_eq!(d.abort_for(0.0), None);
    let a = fault("/abort");
    assert_eq!(a.abort_for(99.9), Some(Abort::Http(StatusCode::IM_A_TEAPOT)), "no percentage = 100 %");
    let g = fault("/grpc");
    assert_eq!(g.abort_for(49.0), Some(Abort::Grpc(14)));
    assert_eq!(g.abort_for(50.0), None);
    let hits = (0..1000).filter(|i| g.abort_for(f64::from(*i) / 10.0).is_some()).count();
    assert_eq!(hits, 500);
}

#[test]
fn grpc_status_names() {
    assert_eq!(actions::grpc_code("UNAVAILABLE"), Some(14));
    assert_eq!(actions::grpc_code("deadline_exceeded"), Some(4));
    assert_eq!(actions::grpc_code("7"), Some(7));
    assert_eq!(actions::grpc_code("NOPE"), None);
    assert_eq!(actions::grpc_code("99"), None);
}

#[test]
fn mirror_with_percentage_and_mirrors_list() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - match: [{uri: {prefix: /one}}]
    mirror: {host: shadow}
    mirrorPercentage: {value: 25.5}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /full}}]
    mirror: {host: shadow, subset: v2}
    route: [{destination: {host: reviews}}]
  - mirrors:
    - {destination: {host: shadow}, percentage: {value: 10}}
    - destination: {host: ratings, port: {number: 9080}}
    route: [{destination: {host: reviews}}]"#,
    ));
    let mirrors = |p| reviews(&t).route(&get(p).info()).unwrap().route.mirrors.clone();
    let one = mirrors("/one");
    assert_eq!((&*one[0].dest.host, one[0].percent), (SHADOW, 25.5));
    assert!(one[0].sampled(25.4) && !one[0].sampled(25.5));
    let full = mirrors("/full");
    assert_eq!((full[0].percent, full[0].dest.subset.as_deref()), (100.0, Some("v2")));
    let many = mirrors("/x");
    assert_eq!(many.len(), 2);
    assert_eq!((&*many[0].dest.host, many[0].percent), (SHADOW, 10.0));
    assert_eq!((&*many[1].dest.host, many[1].percent, many[1].dest.port), (RATINGS, 100.0, Some(9080)));
}

#[test]
fn shadow_host_suffix() {
    assert_eq!(shadow_authority("reviews:9080"), "reviews-shadow:9080");
    assert_eq!(shadow_authority("reviews"), "reviews-shadow");
    assert_eq!(shadow_authority("[::1]:80"), "[::1]-shadow:80");
}

// ---------------------------------------------------------------- CORS

fn cors_table() -> RouteTables {
    tables(&vs(
        "r",
        r#"  http:
  - match: [{uri: {prefix: /ignore}}]
    corsPolicy: {allowOrigins: [{exact: "https://a.com"}], unmatchedPreflights: IGNORE}
    route: [{destination: {host: reviews}}]
  - corsPolicy:
      allowOrigins: [{exact: "https://a.com"}, {regex: "https://.*\\.b\\.com"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-a, x-b]
      exposeHeaders: [x-c]
      maxAge: 24h
      allowCredentials: true
    route: [{destination: {host: reviews}}]"#,
    ))
    .1
}

fn preflight(path: &str, origin: &str) -> Req {
    get(path).method(Method::OPTIONS).header("origin", origin).header("access-control-request-method", "POST")
}

#[test]
fn cors_preflight_allowed_origin_is_answered() {
    let t = cors_table();
    let req = preflight("/x", "https://app.b.com");
    let m = reviews(&t).route(&req.info()).unwrap();
    let CorsAction::Respond(r) = m.route.cors.as_ref().unwrap().preflight(&req.info()) else { panic!() };
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.b.com");
    assert_eq!(h["access-control-allow-methods"], "GET,POST");
    assert_eq!(h["access-control-allow-headers"], "x-a,x-b");
    assert_eq!(h["access-control-max-age"], "86400");
    assert_eq!(h["access-control-allow-credentials"], "true");
}

#[test]
fn cors_unmatched_preflight_forwarded_or_ignored() {
    let t = cors_table();
    let req = preflight("/x", "https://evil.com");
    let m = reviews(&t).route(&req.info()).unwrap();
    assert!(matches!(m.route.cors.as_ref().unwrap().preflight(&req.info()), CorsAction::Forward));
    let req = preflight("/ignore", "https://evil.com");
    let m = reviews(&t).route(&req.info()).unwrap();
    let CorsAction::Respond(r) = m.route.cors.as_ref().unwrap().preflight(&req.info()) else { panic!() };
    assert!(r.headers().is_empty());
    // Not a preflight at all.
    let req = get("/x").header("origin", "https://a.com");
    let m = reviews(&t).route(&req.info()).unwrap();
    assert!(matches!(m.route.cors.as_ref().unwrap().preflight(&req.info()), CorsAction::Forward));
}

#[test]
fn cors_actual_request_headers() {
    let t = cors_table();
    let req = get("/x").header("origin", "https://a.com");
    let m = reviews(&t).route(&req.info()).unwrap();
    let cors = m.route.cors.as_ref().unwrap();
    let mut resp = HeaderMap::new();
    cors.apply_response(&req.headers, &mut resp);
    assert_eq!(resp["access-control-allow-origin"], "https://a.com");
    assert_eq!(resp["access-control-expose-headers"], "x-c");
    assert_eq!(resp["access-control-allow-credentials"], "true");
    let mut resp = HeaderMap::new();
    let other = get("/").header("origin", "https://c.com");
    cors.apply_response(&other.headers, &mut resp);
    assert!(resp.is_empty());
}

// ---------------------------------------------------------------- refused configuration

#[test]
fn delegate_is_refused_with_a_diagnostic() {
    let (_, t, d) = build(
        &vs(
            "r",
            r#"  http:
  - match: [{uri: {prefix: /d}}]
    delegate: {name: child, namespace: foo}
  - name: rest
    route: [{destination: {host: reviews}}]"#,
        ),
        true,
    );
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(d[0].is_error());
    assert_eq!(d[0].field, "spec.http[0].delegate");
    assert_eq!(d[0].object.name, "r");
    assert!(d[0].message.contains("delegation is not supported"), "{}", d[0]);
    assert_eq!(name_of(&t, &get("/d")), "rest");
}

#[test]
fn bad_regex_refuses_the_route_not_the_service() {
    let (_, t, d) = build(
        &vs(
            "r",
            r#"  http:
  - name: bad
    match: [{uri: {regex: "/(a"}}]
    route: [{destination: {host: ratings}}]
  - name: bad-header
    match: [{headers: {x: {regex: "[z"}}}]
    route: [{destination: {host: ratings}}]
  - name: good
    route: [{destination: {host: reviews}}]"#,
        ),
        false,
    );
    let fields: Vec<&str> = d.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(fields, ["spec.http[0].match[0].uri.regex", "spec.http[1].match[0].headers.x.regex"]);
    assert!(d.iter().all(|d| d.is_error() && d.message.contains("invalid regex")));
    assert_eq!(name_of(&t, &get("/a")), "good");
}

#[test]
fn bad_rewrite_regex_is_reported() {
    let (_, t, d) = build(
        &vs(
            "r",
            r#"  http:
  - name: bad
    rewrite: {uriRegexRewrite: {match: "(", rewrite: "/"}}
    route: [{destination: {host: ratings}}]
  - name: good
    route: [{destination: {host: reviews}}]"#,
        ),
        false,
    );
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].field, "spec.http[0].rewrite.uriRegexRewrite.match");
    assert_eq!(name_of(&t, &get("/")), "good");
}

#[test]
fn oldest_virtual_service_wins_with_a_warning() {
    let newer = vs("newer", "  http:\n  - {name: newer, route: [{destination: {host: reviews}}]}")
        .replace("namespace: foo}", "namespace: foo, creationTimestamp: \"2024-02-01T00:00:00Z\"}");
    let older = vs("older", "  http:\n  - {name: older, route: [{destination: {host: reviews}}]}")
        .replace("namespace: foo}", "namespace: foo, creationTimestamp: \"2024-01-01T00:00:00Z\"}");
    let (_, t, d) = build(&format!("{newer}---\n{older}"), true);
    assert_eq!(name_of(&t, &get("/")), "older");
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(!d[0].is_error());
    assert_eq!(d[0].object.name, "newer");
    assert!(d[0].message.contains("foo/older"), "{}", d[0]);
}

#[test]
fn exact_host_beats_wildcard_and_gateway_only_vs_is_ignored() {
    let wild = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: wild, namespace: foo}\nspec:\n  hosts: [\"*.foo.svc.cluster.local\"]\n  http:\n  - {name: wild, route: [{destination: {host: ratings}}]}\n";
    let gw =
        vs("gw", "  gateways: [ingress]\n  http:\n  - {name: gw, route: [{destination: {host: reviews}}]}");
    let exact = vs("exact", "  http:\n  - {name: exact, route: [{destination: {host: reviews}}]}");
    let (_, t, d) = build(&format!("{wild}---\n{gw}---\n{exact}"), true);
    assert!(d.is_empty(), "{d:#?}");
    assert_eq!(name_of(&t, &get("/")), "exact");
    let r = t.for_service(RATINGS).unwrap().route(&get("/").info()).unwrap();
    assert_eq!(r.route.name.as_deref(), Some("wild"));
}

#[test]
fn match_for_gateways_only_is_skipped() {
    let (_, t) = tables(&vs(
        "r",
        r#"  gateways: [mesh, ingress]
  http:
  - name: ingress-only
    match: [{uri: {prefix: /}, gateways: [ingress]}]
    route: [{destination: {host: ratings}}]
  - name: mesh
    route: [{destination: {host: reviews}}]"#,
    ));
    assert_eq!(name_of(&t, &get("/")), "mesh");
}

// ---------------------------------------------------------------- TCP

#[test]
fn tcp_routes_by_port_and_source() {
    let (model, t) = tables(&vs(
        "r",
        r#"  tcp:
  - match: [{port: 5432, sourceLabels: {app: client}}]
    route: [{destination: {host: ratings, port: {number: 9080}}}]
  - match: [{port: 5432}]
    route:
    - {destination: {host: reviews}, weight: 70}
    - {destination: {host: shadow}, weight: 30}"#,
    ));
    let table = reviews(&t);
    assert!(table.has_tcp_routes());
    assert!(!table.has_http_routes(), "tcp routes alone leave HTTP on the default route");
    let client = model.workload("foo", "client").cloned();
    let d = table.tcp(5432, client.as_deref()).unwrap();
    assert_eq!((&*d[0].host, d[0].port), (RATINGS, Some(9080)));
    let d = table.tcp(5432, None).unwrap();
    assert_eq!(d.iter().map(|d| d.weight).collect::<Vec<_>>(), [70, 30]);
    assert!(table.tcp(9080, None).is_none(), "routes exist but none for this port");
}

// ---------------------------------------------------------------- Gateway API

#[test]
fn httproute_path_prefix_matches_whole_segments() {
    let (_, t) = tables(&hr(
        "r",
        r#"  rules:
  - name: foo
    matches: [{path: {type: PathPrefix, value: /foo/}}]
    backendRefs: [{name: reviews, port: 9080}]"#,
    ));
    assert_eq!(reviews(&t).source(), TableSource::GatewayApi);
    assert_eq!(name_of(&t, &get("/foo")), "foo");
    assert_eq!(name_of(&t, &get("/foo/bar")), "foo");
    assert_eq!(name_of(&t, &get("/foobar")), "NR");
    let m = reviews(&t).route(&get("/foo").info()).unwrap();
    assert_eq!(m.route.origin.kind, RouteKind::HttpRoute);
    let d = forward(m.route);
    assert_eq!((&*d[0].host, d[0].port, d[0].weight), (REVIEWS, Some(9080), 1));
}

#[test]
fn httproute_exact_beats_prefix_and_longest_prefix_wins() {
    let (_, t) = tables(&hr(
        "r",
        r#"  rules:
  - name: short
    matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: reviews, port: 9080}]
  - name: long
    matches: [{path: {type: PathPrefix, value: /a/b}}]
    backendRefs: [{name: reviews, port: 9080}]
  - name: exact
    matches: [{path: {type: Exact, value: /a/b/c}}]
    backendRefs: [{name: reviews, port: 9080}]
  - name: regex
    matches: [{path: {type: RegularExpression, value: "/a/.*"}}]
    backendRefs: [{name: reviews, port: 9080}]"#,
    ));
    assert_eq!(name_of(&t, &get("/a/b/c")), "exact");
    assert_eq!(name_of(&t, &get("/a/b/d")), "long");
    assert_eq!(name_of(&t, &get("/a/x")), "short");
}

#[test]
fn httproute_method_then_headers_then_query_precedence() {
    let (_, t) = tables(&hr(
        "r",
        r#"  rules:
  - name: plain
    matches: [{path: {value: /p}}]
    backendRefs: [{name: reviews, port: 9080}]
  - name: query
    matches: [{path: {value: /p}, queryParams: [{name: q, value: "1"}]}]
    backendRefs: [{name: reviews, port: 9080}]
  - name: one-header
    matches: [{path: {value: /p}, headers: [{name: x-a, value: "1"}]}]
    backendRefs: [{name: reviews, port: 9080}]
  - name: two-headers
    matches: [{path: {value: /p}, headers: [{name: x-a, value: "1"}, {name: X-B, value: "2"}]}]
    backendRefs: [{name: reviews, port: 9080}]
  - name: method
    matches: [{path: {value: /p}, method: PUT}]
    backendRefs: [{name: reviews, port: 9080}]"#,
    ));
    let all = get("/p?q=1").header("x-a", "1").header("x-b", "2");
    assert_eq!(name_of(&t, &all.method(Method::PUT)), "method");
    let all = get("/p?q=1").header("x-a", "1").header("x-b", "2");
    assert_eq!(name_of(&t, &all), "two-headers", "header names are case-insensitive");
    assert_eq!(name_of(&t, &get("/p?q=1").header("x-a", "1")), "one-header");
    assert_eq!(name_of(&t, &get("/p?q=1")), "query");
    assert_eq!(name_of(&t, &get("/p")), "plain");
}

#[test]
fn httproute_ties_go_to_the_oldest_then_alphabetical() {
    let route = |name: &str, ts: &str| {
        hr(name, &format!("  rules:\n  - name: {name}\n    backendRefs: [{{name: reviews, port: 9080}}]"))
            .replace("namespace: foo}", &format!("namespace: foo, creationTimestamp: \"{ts}\"}}"))
    };
    let (_, t) = tables(&format!(
        "{}---\n{}---\n{}",
        route("c-new", "2024-03-01T00:00:00Z"),
        route("b-old", "2024-01-01T00:00:00Z"),
        route("a-old", "2024-01-01T00:00:00Z")
    ));
    assert_eq!(name_of(&t, &get("/")), "a-old");
    let (_, t) = tables(&format!(
        "{}---\n{}",
        route("c-new", "2024-03-01T00:00:00Z"),
        route("z-oldest", "2023-01-01T00:00:00Z")
    ));
    assert_eq!(name_of(&t, &get("/")), "z-oldest");
}

#[test]
fn httproute_backend_weights_zero_and_missing() {
    let (_, t, d) = build(
        &hr(
            "r",
            r#"  rules:
  - name: split
    matches: [{path: {value: /split}}]
    backendRefs: [{name: reviews, port: 9080, weight: 1}, {name: ratings, port: 9080, weight: 3}, {name: shadow, port: 9080, weight: 0}]
  - name: zero
    matches: [{path: {value: /zero}}]
    backendRefs: [{name: reviews, port: 9080, weight: 0}]
  - name: none
    matches: [{path: {value: /none}}]
  - name: missing
    matches: [{path: {value: /missing}}]
    backendRefs: [{name: nope, port: 9080}]"#,
        ),
        true,
    );
    let table = reviews(&t);
    let m = table.route(&get("/split").info()).unwrap();
    let dests = forward(m.route);
    let picks: Vec<&str> = (0..4).map(|r| &*pick_weighted(dests, r).unwrap().host).collect();
    assert_eq!(picks, [REVIEWS, RATINGS, RATINGS, RATINGS]);
    for p in ["/zero", "/none", "/missing"] {
        let m = table.route(&get(p).info()).unwrap();
        assert!(
            matches!(m.route.action, Action::DirectResponse { status, .. } if status == StatusCode::INTERNAL_SERVER_ERROR),
            "{p}"
        );
    }
    let fields: Vec<&str> = d.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(fields, ["spec.rules[1].backendRefs", "spec.rules[3].backendRefs[0]"], "{d:#?}");
    assert!(d[1].message.contains("Service foo/nope does not exist"));
}

#[test]
fn httproute_header_modifier_filters() {
    let (_, t) = tables(&hr(
        "r",
        r#"  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-set, value: s}], add: [{name: x-add, value: a}], remove: [x-rm]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-resp, value: r}]}
    backendRefs:
    - name: reviews
      port: 9080
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-backend, value: b}]}"#,
    ));
    let m = reviews(&t).route(&get("/").info()).unwrap();
    let dest = &forward(m.route)[0];
    let mut h = HeaderMap::new();
    h.insert("x-rm", HeaderValue::from_static("1"));
    h.insert("x-add", HeaderValue::from_static("0"));
    m.route.apply_request_headers(Some(dest), &mut h);
    assert_eq!(h["x-set"], "s");
    assert_eq!(h["x-backend"], "b");
    assert_eq!(h.get_all("x-add").iter().count(), 2);
    assert!(!h.contains_key("x-rm"));
    let mut r = HeaderMap::new();
    m.route.apply_response_headers(Some(dest), &mut r);
    assert_eq!(r["x-resp"], "r");
}

#[test]
fn httproute_request_redirect() {
    let (_, t) = tables(&hr(
        "r",
        r#"  rules:
  - matches: [{path: {value: /https}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]
  - matches: [{path: {value: /host}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.com}}]
  - matches: [{path: {value: /port}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.com, port: 80}}]
  - matches: [{path: {value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]
  - matches: [{path: {type: Exact, value: /full}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /elsewhere}}}]"#,
    ));
    let r = redirect_of(&t, &get("/https/x"));
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(location(&r), "https://reviews/https/x", "scheme change: its well-known port, omitted");
    let r = redirect_of(&t, &get("/host"));
    assert_eq!(r.status(), StatusCode::FOUND, "Gateway API default is 302");
    assert_eq!(location(&r), "http://example.com:9080/host", "no scheme: the listener (Service) port");
    assert_eq!(location(&redirect_of(&t, &get("/port"))), "http://example.com/port");
    assert_eq!(location(&redirect_of(&t, &get("/old/a?b=c"))), "http://reviews:9080/new/a?b=c");
    assert_eq!(location(&redirect_of(&t, &get("/full"))), "http://reviews:9080/elsewhere");
}

#[test]
fn gateway_replace_prefix_match_table() {
    // The Gateway API's table for ReplacePrefixMatch.
    let cases = [
        ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz/"),
        ("/foo/bar", "/foo", "", "/bar"),
        ("/foo/", "/foo", "", "/"),
        ("/foo", "/foo", "", "/"),
        ("/foo/", "/foo", "/", "/"),
        ("/foo", "/foo", "/", "/"),
    ];
    for (path, prefix, rep, want) in cases {
        let (_, t) = tables(&hr(
            "r",
            &format!(
                "  rules:\n  - matches: [{{path: {{type: PathPrefix, value: \"{prefix}\"}}}}]\n    filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: \"{rep}\"}}}}}}]\n    backendRefs: [{{name: reviews, port: 9080}}]"
            ),
        ));
        assert_eq!(rewritten(&t, &get(path)).0, want, "{path} {prefix} {rep}");
    }
}

#[test]
fn httproute_url_rewrite_full_path_and_hostname() {
    let (_, t) = tables(&hr(
        "r",
        r#"  rules:
  - filters: [{type: URLRewrite, urlRewrite: {hostname: ratings.foo, path: {type: ReplaceFullPath, replaceFullPath: /all}}}]
    backendRefs: [{name: ratings, port: 9080}]"#,
    ));
    assert_eq!(rewritten(&t, &get("/a/b?q=1")), ("/all?q=1".to_string(), "ratings.foo".to_string()));
}

#[test]
fn httproute_request_mirror_percent_and_fraction() {
    let (_, t) = tables(&hr(
        "r",
        r#"  rules:
  - matches: [{path: {value: /pct}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 9080}, percent: 42}}]
    backendRefs: [{name: reviews, port: 9080}]
  - matches: [{path: {value: /frac}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 9080}, fraction: {numerator: 1, denominator: 8}}}]
    backendRefs: [{name: reviews, port: 9080}]
  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 9080}}}]
    backendRefs: [{name: reviews, port: 9080}]"#,
    ));
    let mirrors = |p| reviews(&t).route(&get(p).info()).unwrap().route.mirrors.clone();
    let m = mirrors("/pct");
    assert_eq!((&*m[0].dest.host, m[0].dest.port, m[0].percent), (SHADOW, Some(9080), 42.0));
    assert_eq!(mirrors("/frac")[0].percent, 12.5);
    assert_eq!(mirrors("/")[0].percent, 100.0);
}

#[test]
fn httproute_timeouts_and_retry() {
    let (_, t) = tables(&hr(
        "r",
        r#"  rules:
  - matches: [{path: {value: /t}}]
    timeouts: {request: 10s, backendRequest: 2s}
    backendRefs: [{name: reviews, port: 9080}]
  - matches: [{path: {value: /r}}]
    retry: {attempts: 4, codes: [500, 502], backoff: 50ms}
    backendRefs: [{name: reviews, port: 9080}]
  - matches: [{path: {value: /off}}]
    retry: {attempts: 0}
    timeouts: {request: 10s, backendRequest: 2s}
    backendRefs: [{name: reviews, port: 9080}]
  - backendRefs: [{name: reviews, port: 9080}]"#,
    ));
    let route = |p| reviews(&t).route(&get(p).info()).unwrap().route.clone();
    let r = route("/t");
    assert_eq!(r.timeout, Some(Duration::from_secs(10)));
    assert_eq!(r.retries.as_ref().unwrap().per_try_timeout, Some(Duration::from_secs(2)));
    let r = route("/r").retries.unwrap();
    assert_eq!((r.attempts, r.retriable_status_codes.clone()), (4, vec![500, 502]));
    assert!(r.should_retry(&resp(502)) && !r.should_retry(&resp(503)));
    assert!(r.should_retry(&AttemptOutcome::ConnectFailure));
    assert_eq!((r.backoff_base, r.backoff_max), (Duration::from_millis(50), Duration::from_millis(500)));
    let off = route("/off");
    assert_eq!(off.retries, None);
    assert_eq!(
        off.timeout,
        Some(Duration::from_secs(2)),
        "without retries the per-try limit bounds the request"
    );
    assert_eq!(route("/").retries, Some(RetryPolicy::istio_default()));
}

#[test]
fn httproute_parent_port_restricts_the_route() {
    let doc = hr("r", "  rules:\n  - {name: p, backendRefs: [{name: reviews, port: 9080}]}")
        .replace("name: reviews}]", "name: reviews, port: 9090}]");
    let (_, t) = tables(&doc);
    assert_eq!(name_of(&t, &get("/").port(9090)), "p");
    // Another port of the Service has no Gateway API route attached: the Service's default
    // route, as Istio does (not 404).
    assert_eq!(name_of(&t, &get("/").port(9080)), "-", "the default route");
    let doc = hr("r", "  rules:\n  - {name: s, backendRefs: [{name: reviews, port: 9080}]}")
        .replace("name: reviews}]", "name: reviews, sectionName: grpc}]");
    let (_, t) = tables(&doc);
    assert_eq!(name_of(&t, &get("/").port(9090)), "s");
    assert_eq!(name_of(&t, &get("/").port(9080)), "-", "the default route");
}

#[test]
fn httproute_on_other_service_does_not_leak() {
    let doc = hr("r", "  rules:\n  - {name: x, backendRefs: [{name: reviews, port: 9080}]}")
        .replace("name: reviews}]", "name: ratings}]");
    let (_, t) = tables(&doc);
    assert!(!reviews(&t).has_http_routes());
    assert!(t.for_service(RATINGS).unwrap().has_http_routes());
}

#[test]
fn grpcroute_method_matches() {
    let (_, t) = tables(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: foo}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules:
  - name: exact
    matches: [{method: {service: shop.Reviews, method: Get}}]
    backendRefs: [{name: reviews, port: 9090}]
  - name: service
    matches: [{method: {service: shop.Reviews}}]
    backendRefs: [{name: reviews, port: 9090}]
  - name: method-only
    matches: [{method: {method: Health}}]
    backendRefs: [{name: reviews, port: 9090}]
  - name: regex
    matches: [{method: {type: RegularExpression, service: "shop\\..*", method: "List.*"}, headers: [{name: x-tenant, value: a}]}]
    backendRefs: [{name: reviews, port: 9090}]
"#,
    );
    let post = |p: &str| get(p).method(Method::POST).port(9090);
    assert_eq!(name_of(&t, &post("/shop.Reviews/Get")), "exact");
    assert_eq!(name_of(&t, &post("/shop.Reviews/Put")), "service");
    assert_eq!(name_of(&t, &post("/any.Svc/Health")), "method-only");
    assert_eq!(name_of(&t, &post("/shop.Ratings/ListAll").header("x-tenant", "a")), "regex");
    assert_eq!(name_of(&t, &post("/shop.Ratings/ListAll")), "NR");
    let m = reviews(&t).route(&post("/shop.Reviews/Get").info()).unwrap();
    assert_eq!(m.route.origin.kind, RouteKind::GrpcRoute);
    assert_eq!(m.route.retries, Some(RetryPolicy::istio_default()));
}

#[test]
fn virtual_service_wins_over_httproute_with_a_warning() {
    let v = vs("v", "  http:\n  - {name: from-vs, route: [{destination: {host: reviews}}]}");
    let h = hr("h", "  rules:\n  - {name: from-hr, backendRefs: [{name: reviews, port: 9080}]}");
    let (_, t, d) = build(&format!("{v}---\n{h}"), true);
    assert_eq!(name_of(&t, &get("/")), "from-vs");
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!((d[0].object.kind.as_str(), d[0].object.name.as_str()), ("HTTPRoute", "h"));
    assert!(!d[0].is_error());
    assert!(d[0].message.contains("VirtualService foo/v"), "{}", d[0]);
}

#[test]
fn httproute_bad_regex_refuses_the_rule() {
    let (_, t, d) = build(
        &hr(
            "r",
            r#"  rules:
  - name: bad
    matches: [{path: {value: /x}, headers: [{type: RegularExpression, name: x-a, value: "(["}]}]
    backendRefs: [{name: ratings, port: 9080}]
  - name: good
    backendRefs: [{name: reviews, port: 9080}]"#,
        ),
        false,
    );
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].field, "spec.rules[0].matches[0].headers[0].value");
    assert_eq!(name_of(&t, &get("/x").header("x-a", "[")), "good");
}

#[test]
fn httproute_extension_ref_answers_500() {
    let (_, t, d) = build(
        &hr(
            "r",
            r#"  rules:
  - filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Thing, name: t}}]
    backendRefs: [{name: reviews, port: 9080}]"#,
        ),
        true,
    );
    assert_eq!(d.len(), 1);
    let m = reviews(&t).route(&get("/").info()).unwrap();
    assert!(matches!(m.route.action, Action::DirectResponse { status, .. } if status.as_u16() == 500));
}

#[test]
fn httproute_cors_filter() {
    let (_, t) = tables(&hr(
        "r",
        r#"  rules:
  - filters: [{type: CORS, cors: {allowOrigins: ["https://*.example.com"], allowMethods: [GET]}}]
    backendRefs: [{name: reviews, port: 9080}]"#,
    ));
    let req = preflight("/", "https://app.example.com");
    let m = reviews(&t).route(&req.info()).unwrap();
    let cors = m.route.cors.as_ref().unwrap();
    let CorsAction::Respond(r) = cors.preflight(&req.info()) else { panic!() };
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(r.headers()["access-control-max-age"], "5");
    assert!(!cors.origin_allowed("https://example.org"));
}

#[test]
fn query_value_parsing() {
    use super::matcher::query_value;
    assert_eq!(query_value("a=1&b=2", "b").as_deref(), Some("2"));
    assert_eq!(query_value("a=1&a=2", "a").as_deref(), Some("1"));
    assert_eq!(query_value("flag&x=1", "flag").as_deref(), Some(""));
    assert_eq!(query_value("k%20y=v%2Fw", "k y").as_deref(), Some("v/w"));
    assert_eq!(query_value("a=%zz", "a").as_deref(), Some("%zz"));
    assert_eq!(query_value("", "a"), None);
}

#[test]
fn scheme_match_and_host_header_alias() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - name: https
    match: [{scheme: {exact: https}}]
    route: [{destination: {host: reviews}}]
  - name: host
    match: [{headers: {host: {exact: "reviews.foo"}}}]
    route: [{destination: {host: reviews}}]"#,
    ));
    assert_eq!(name_of(&t, &get("https://reviews/x")), "https");
    assert_eq!(
        name_of(&t, &get("/x").authority("reviews.foo")),
        "host",
        "host/:authority read the authority"
    );
    assert_eq!(name_of(&t, &get("/x")), "NR");
}

#[test]
fn deprecated_percent_fields_are_honoured() {
    let (_, t, d) = build(
        &vs(
            "r",
            r#"  http:
  - mirror: {host: shadow}
    mirrorPercent: 30
    fault: {delay: {fixedDelay: 1s, percent: 20}}
    route: [{destination: {host: reviews}}]"#,
        ),
        true,
    );
    assert!(d.is_empty(), "{d:#?}");
    let m = reviews(&t).route(&get("/").info()).unwrap();
    assert_eq!(m.route.mirrors[0].percent, 30.0);
    assert_eq!(m.route.fault.unwrap().delay.unwrap().percent, 20.0);
}

#[test]
fn vs_with_two_hosts_compiles_for_each_and_reports_once() {
    let doc = vs(
        "r",
        r#"  http:
  - name: both
    retries: {attempts: 1, retryOn: "5xx,retriable-headers"}
    route: [{destination: {host: reviews}}]"#,
    )
    .replace("hosts: [reviews]", "hosts: [reviews, ratings]");
    let (_, t, d) = build(&doc, true);
    assert_eq!(name_of(&t, &get("/")), "both");
    let r = t.for_service_arc(RATINGS).unwrap();
    assert_eq!(r.route(&get("/").info()).unwrap().route.name.as_deref(), Some("both"));
    assert_eq!(d.len(), 1, "one warning, not one per host: {d:#?}");
    assert!(d[0].message.contains("retriable-headers"));
    assert!(t.len() >= 4 && !t.is_empty());
}

#[test]
fn cors_deprecated_allow_origin_wildcard() {
    let (_, t, _) = build(
        &vs(
            "r",
            r#"  http:
  - corsPolicy: {allowOrigin: ["*"]}
    route: [{destination: {host: reviews}}]"#,
        ),
        true,
    );
    let m = reviews(&t).route(&get("/").info()).unwrap();
    assert!(m.route.cors.as_ref().unwrap().origin_allowed("https://anything"));
}

#[test]
fn rewrite_authority_only_keeps_origin_form_uri() {
    let (_, t) = tables(&vs(
        "r",
        r#"  http:
  - rewrite: {authority: other}
    route: [{destination: {host: reviews}}]"#,
    ));
    let (uri, authority) = rewritten(&t, &get("/keep?q=1"));
    assert_eq!((uri.as_str(), authority.as_str()), ("/keep?q=1", "other"));
}

#[test]
fn invalid_direct_response_bytes_are_reported() {
    let (_, t, d) =
        build(&vs("r", "  http:\n  - directResponse: {status: 200, body: {bytes: \"!!\"}}"), false);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].field, "spec.http[0].directResponse.body.bytes");
    let m = reviews(&t).route(&get("/").info()).unwrap();
    assert!(matches!(&m.route.action, Action::DirectResponse { body: None, .. }));
}

#[test]
fn http_only_vs_leaves_tcp_on_the_service() {
    let (_, t) = tables(&vs("r", "  http:\n  - route: [{destination: {host: ratings}}]"));
    let d = reviews(&t).tcp(5432, None).unwrap();
    assert_eq!((&*d[0].host, d[0].weight), (REVIEWS, 100));
}

#[test]
fn redirect_authority_with_port() {
    let (_, t) = tables(&vs("r", "  http:\n  - redirect: {authority: \"new.example:8080\"}"));
    assert_eq!(location(&redirect_of(&t, &get("/a"))), "http://new.example:8080/a");
}
