//! Translation of a mixed mesh (tests/data/mesh.yaml) into the model: identities, capture,
//! waypoints, host names, endpoints from slices and selectors, ServiceEntries, policies, routes.

use std::net::IpAddr;
use std::path::PathBuf;

use mesh_model::{
    EndpointsFrom, MeshConfig, Model, ParentKey, PolicyKind, PolicyScope, ServiceSource, WaypointRef,
    load_paths, translate,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/mesh.yaml")
}

fn model() -> Model {
    let loaded = load_paths(&[fixture()]);
    let errors: Vec<String> =
        loaded.diagnostics.iter().filter(|d| d.is_error()).map(|d| d.to_string()).collect();
    assert!(errors.is_empty(), "fixture must be valid: {errors:#?}");
    assert!(
        loaded.ignored.iter().any(|(r, _, api)| r.kind == "Deployment" && api == "apps/v1"),
        "Deployment recognised and ignored: {:?}",
        loaded.ignored
    );
    let (model, diags) = translate(&loaded.objects, &MeshConfig::default());
    assert!(diags.is_empty(), "no translation diagnostics: {diags:#?}");
    model
}

fn wp(ns: &str, name: &str) -> Option<WaypointRef> {
    Some(WaypointRef { namespace: ns.into(), name: name.into() })
}

#[test]
fn workloads_identity_capture_waypoint() {
    let m = model();
    let r1 = m.workload_by_ip(ip("10.0.1.11")).expect("reviews-v1 by IP");
    assert_eq!(&*r1.name, "reviews-v1");
    assert_eq!(&*r1.uid, "11111111-aaaa");
    assert_eq!(r1.identity.to_string(), "spiffe://cluster.local/ns/bookinfo/sa/reviews");
    assert_eq!(r1.node.as_deref(), Some("node-a"));
    assert!(r1.captured, "namespace is ambient");
    assert_eq!(r1.waypoint, wp("bookinfo", "bookinfo-waypoint"), "namespace waypoint");
    assert_eq!((&*r1.canonical_name, &*r1.canonical_revision), ("reviews", "v1"));
    assert_eq!(r1.named_port("http"), Some(9080));

    let r2 = m.workload("bookinfo", "reviews-v2").unwrap();
    assert_eq!(r2.waypoint, None, "pod label `none` beats the namespace waypoint");
    assert_eq!(&r2.ips[..], &[ip("10.0.2.12"), ip("fd00::12")]);
    assert!(std::ptr::eq(&**m.workload_by_ip(ip("fd00::12")).unwrap(), &**r2));

    let ratings = m.workload("bookinfo", "ratings-v1").unwrap();
    assert!(!ratings.captured, "pod opts out with dataplane-mode=none");
    assert_eq!(ratings.identity.to_string(), "spiffe://cluster.local/ns/bookinfo/sa/default");

    let pending = m.workload("bookinfo", "pending-1").expect("known by name");
    assert!(!pending.is_addressable() && pending.ips.is_empty());

    let legacy = m.workload_by_ip(ip("10.0.3.1")).unwrap();
    assert!(legacy.captured, "pod opts in within a plain namespace");
    assert_eq!(legacy.waypoint, wp("plain", "wp"));
    assert_eq!(&*legacy.canonical_name, "legacy-canon");
    assert_eq!(&*legacy.canonical_revision, "latest");
    let other = m.workload("plain", "plain-2").unwrap();
    assert!(!other.captured && other.waypoint.is_none());

    let mut on_a: Vec<&str> = m.workloads_on_node("node-a").map(|w| &*w.name).collect();
    on_a.sort();
    assert_eq!(on_a, ["ratings-v1", "reviews-v1"]);
    assert_eq!(m.workloads_on_node("node-b").count(), 4);
    let on_c: Vec<&str> = m.workloads_on_node("node-c").map(|w| &*w.name).collect();
    assert_eq!(on_c, ["hostnet"]);
    assert!(m.workload_by_ip(ip("192.168.0.3")).is_none(), "host-network pods have the node's address");
    let reviews_id = r1.identity.as_ref().clone();
    assert!(m.node_has_identity("node-a", &reviews_id));
    assert!(m.node_has_identity("node-b", &reviews_id), "reviews-v2 runs there");
    let default_id: mesh_api::SpiffeId = "spiffe://cluster.local/ns/bookinfo/sa/default".parse().unwrap();
    assert!(m.node_has_identity("node-a", &default_id));
    assert!(m.node_has_identity("node-b", &default_id), "pending-1 is starting there and needs it");
    let plain_id: mesh_api::SpiffeId = "spiffe://cluster.local/ns/plain/sa/default".parse().unwrap();
    assert!(m.node_has_identity("node-b", &plain_id));
    assert!(!m.node_has_identity("node-a", &plain_id), "no pod of namespace plain on node-a");
    assert_eq!(m.workloads_in_namespace("plain").len(), 3);

    let ns = m.namespace("bookinfo").unwrap();
    assert!(ns.captured && ns.defined);
    assert!(!m.namespace("istio-system").unwrap().defined, "implied by the policy in it");
}

#[test]
fn host_names_resolve() {
    let m = model();
    for host in [
        "reviews.bookinfo",
        "reviews.bookinfo.svc",
        "reviews.bookinfo.svc.cluster.local",
        "reviews.bookinfo.svc.cluster.local.",
    ] {
        let s = m.service_by_host(host).unwrap_or_else(|| panic!("{host} resolves"));
        assert_eq!(&*s.hostname, "reviews.bookinfo.svc.cluster.local");
    }
    assert!(m.service_by_host("reviews").is_none(), "short names need a namespace");
    assert_eq!(&*m.resolve_host("reviews", "bookinfo").unwrap().name, "reviews");
    assert!(m.resolve_host("reviews", "plain").is_none());
    assert_eq!(&*m.resolve_host("sliced.plain", "bookinfo").unwrap().name, "sliced");
    assert_eq!(&*m.service_by_vip(ip("10.96.0.10")).unwrap().name, "reviews");
    assert_eq!(m.canonical_host("reviews", "bookinfo"), "reviews.bookinfo.svc.cluster.local");
    assert_eq!(m.canonical_host("nothing", "bookinfo"), "nothing.bookinfo.svc.cluster.local");
    assert_eq!(m.canonical_host("API.example.com", "x"), "api.example.com");
}

#[test]
fn endpoints_from_selector_with_named_target_ports() {
    let m = model();
    let reviews = m.service("bookinfo", "reviews").unwrap();
    assert_eq!(reviews.endpoints_from, EndpointsFrom::Selector);
    let mut eps: Vec<(IpAddr, u16)> = reviews.endpoints.iter().map(|e| (e.ip, e.ports[0])).collect();
    eps.sort();
    // targetPort `http` is 9080 on v1 and 9081 on v2; the pending pod has no address.
    assert_eq!(eps, [(ip("10.0.1.11"), 9080), (ip("10.0.2.12"), 9081)]);
    assert!(reviews.endpoints.iter().all(|e| e.ready && e.workload.is_some()));
    assert_eq!(reviews.waypoint, wp("bookinfo", "bookinfo-waypoint"));

    let ratings = m.service("bookinfo", "ratings").unwrap();
    assert_eq!(ratings.waypoint, wp("bookinfo", "ratings-wp"), "service label beats namespace");
    assert_eq!(ratings.ports[0].app_protocol.as_deref(), Some("http"));
    assert_eq!(ratings.endpoints.len(), 1);
    assert_eq!(ratings.endpoints[0].port_at(0), Some(9080));
    assert_eq!(
        ratings.endpoints[0].identity.as_ref().unwrap().to_string(),
        "spiffe://cluster.local/ns/bookinfo/sa/default"
    );

    let headless = m.service("bookinfo", "headless").unwrap();
    assert!(headless.is_headless() && headless.vips.is_empty());
    assert_eq!(headless.endpoints.len(), 2);
}

#[test]
fn endpoints_from_slices_win_over_selector() {
    let m = model();
    let s = m.service("plain", "sliced").unwrap();
    assert_eq!(s.endpoints_from, EndpointsFrom::EndpointSlices);
    assert_eq!(s.endpoints.len(), 2);
    let e0 = &s.endpoints[0];
    assert_eq!(
        (e0.ip, e0.ports[0], e0.ready),
        (ip("10.0.3.1"), 8081, true),
        "slice port, not targetPort 8080"
    );
    assert_eq!(&*e0.workload.as_ref().unwrap().name, "legacy");
    let e1 = &s.endpoints[1];
    assert_eq!((e1.ip, e1.ready), (ip("10.0.9.9"), false));
    assert!(e1.workload.is_none());
}

#[test]
fn service_entries() {
    let m = model();
    let api = m.service_by_host("api.example.com").unwrap();
    assert_eq!(&*api.name, "external");
    assert_eq!(&api.vips[..], &[ip("240.0.0.1")]);
    assert!(matches!(api.source, ServiceSource::ServiceEntry { .. }));
    assert_eq!(&*m.service_by_vip(ip("240.0.0.1")).unwrap().name, "external");
    let wild = m.service_by_host("x.wild.example.com").expect("wildcard host");
    assert_eq!(&*wild.hostname, "*.wild.example.com");
    assert!(m.service_by_host("wild.example.com").is_none());

    let vm = m.service_by_host("vm.internal").unwrap();
    let eps: Vec<(IpAddr, u16)> = vm.endpoints.iter().map(|e| (e.ip, e.ports[0])).collect();
    assert_eq!(eps, [(ip("192.168.1.5"), 8080), (ip("192.168.1.6"), 9090)]);
    assert_eq!(
        vm.endpoints[0].identity.as_ref().unwrap().to_string(),
        "spiffe://cluster.local/ns/bookinfo/sa/vm-sa"
    );
    assert_eq!(vm.endpoints[0].labels.get("app"), Some("vm"));

    let sel = m.service_by_host("ratings.mesh").unwrap();
    assert_eq!(sel.endpoints.len(), 1);
    assert_eq!(sel.endpoints[0].ip, ip("10.0.1.13"));
    assert_eq!(sel.endpoints_from, EndpointsFrom::ServiceEntry);
    assert!(m.service("bookinfo", "external").is_none(), "service() names Kubernetes Services only");
}

#[test]
fn policies_by_namespace_and_selector() {
    let m = model();
    let reviews = m.workload("bookinfo", "reviews-v1").unwrap();
    let pa: Vec<(&str, PolicyScope)> =
        m.policies_for(PolicyKind::PeerAuthentication, reviews).map(|p| (&*p.name, p.scope)).collect();
    assert_eq!(
        pa,
        [
            ("default", PolicyScope::Mesh),
            ("ns", PolicyScope::Namespace),
            ("reviews-only", PolicyScope::Workload)
        ]
    );
    let ratings = m.workload("bookinfo", "ratings-v1").unwrap();
    assert_eq!(m.policies_for(PolicyKind::PeerAuthentication, ratings).count(), 2);
    let legacy = m.workload("plain", "legacy").unwrap();
    let names: Vec<&str> = m.policies_for(PolicyKind::PeerAuthentication, legacy).map(|p| &*p.name).collect();
    assert_eq!(names, ["default"], "only the mesh-wide policy reaches another namespace");

    let authz: Vec<&str> =
        m.policies_for(PolicyKind::AuthorizationPolicy, ratings).map(|p| &*p.name).collect();
    assert_eq!(authz, ["allow-reviews"], "targeted policies are not workload policies");
    assert_eq!(m.policies_for(PolicyKind::AuthorizationPolicy, reviews).count(), 0);
    let targeted: Vec<&str> = m
        .policies_targeting(PolicyKind::AuthorizationPolicy, "Gateway", "bookinfo", "bookinfo-waypoint")
        .map(|p| &*p.name)
        .collect();
    assert_eq!(targeted, ["wp-policy"]);
    assert_eq!(m.policies_in_namespace(PolicyKind::PeerAuthentication, "bookinfo").len(), 2);
}

#[test]
fn routes_by_host_and_parent() {
    let m = model();
    let host = "reviews.bookinfo.svc.cluster.local";
    let vs: Vec<&str> = m.virtual_services_for_host(host).map(|(v, _)| v.name()).collect();
    assert_eq!(vs, ["reviews"], "short VS host resolved in its namespace");
    assert_eq!(m.destination_rules_for_host(host).count(), 1);
    let parent = ParentKey::Service("bookinfo".into(), "ratings".into());
    let routes: Vec<&str> = m.http_routes_for(&parent).map(|(r, _)| r.name()).collect();
    assert_eq!(routes, ["ratings"]);
    assert_eq!(m.grpc_routes_for(&parent).count(), 0);
    // Every object keeps its origin: file path and document index.
    let (_, origin) = m.virtual_services().first().unwrap();
    assert!(origin.to_string().ends_with("mesh.yaml:22"), "{origin}");
}

#[test]
fn duplicates_keep_the_first_definition() {
    let dir = tempfile::tempdir().unwrap();
    let svc = |ip: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: dup, namespace: default}}\nspec:\n  clusterIP: {ip}\n  ports: [{{port: 80}}]\n"
        )
    };
    std::fs::write(dir.path().join("a.yaml"), svc("10.96.1.1")).unwrap();
    std::fs::write(dir.path().join("b.yml"), svc("10.96.1.2")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not config").unwrap();
    let loaded = load_paths(&[dir.path().to_path_buf()]);
    assert_eq!(loaded.objects.len(), 1);
    let errors: Vec<String> =
        loaded.diagnostics.iter().filter(|d| d.is_error()).map(|d| d.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("b.yml:0 Service default/dup: metadata.name: already defined at"),
        "{}",
        errors[0]
    );
    let (m, _) = translate(&loaded.objects, &MeshConfig::default());
    assert!(m.service_by_vip(ip("10.96.1.1")).is_some());
}

#[test]
fn unreadable_path_names_the_file() {
    let loaded = load_paths(&[PathBuf::from("does/not/exist.yaml")]);
    assert_eq!(loaded.diagnostics.len(), 1);
    let msg = loaded.diagnostics[0].to_string();
    assert!(msg.starts_with("does/not/exist.yaml:0: ") && msg.contains("cannot read"), "{msg}");
}

#[test]
fn dump_is_json_with_origins() {
    let m = model();
    let dump = m.dump();
    assert_eq!(dump["workloads"].as_array().unwrap().len(), 7);
    let w = &dump["workloads"][0];
    assert_eq!(w["namespace"], "bookinfo");
    assert!(w["identity"].as_str().unwrap().starts_with("spiffe://cluster.local/ns/bookinfo/sa/"));
    let reviews = dump["services"].as_array().unwrap().iter().find(|s| s["name"] == "reviews").unwrap();
    assert_eq!(reviews["vips"][0], "10.96.0.10");
    assert_eq!(reviews["ports"][0]["target_port"], "http");
    assert!(reviews["endpoints"].as_array().unwrap().iter().any(|e| e["workload"] == "bookinfo/reviews-v1"));
    let vs =
        dump["objects"].as_array().unwrap().iter().find(|o| o["object"]["kind"] == "VirtualService").unwrap();
    assert_eq!(vs["origin"]["doc"], 22);
    assert_eq!(vs["spec"]["spec"]["hosts"][0], "reviews");
    assert_eq!(dump["policies"].as_array().unwrap().len(), 5);
}

#[test]
fn envoy_filters_by_namespace() {
    let yaml = "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: z, namespace: demo}\n\
                ---\napiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: a, namespace: demo}\n\
                ---\napiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: m, namespace: istio-system}\n";
    let objects: Vec<(mesh_api::Object, mesh_api::Origin)> = mesh_api::split_documents(yaml)
        .into_iter()
        .map(|d| match mesh_api::parse_object(d.unwrap().value) {
            mesh_api::Parsed::Object { object, .. } => (object, mesh_api::Origin::Unknown),
            other => panic!("{other:?}"),
        })
        .collect();
    let (model, diags) = translate(&objects, &MeshConfig::default());
    assert!(diags.is_empty(), "{diags:?}");
    let names = |ns| model.envoy_filters_in_namespace(ns).iter().map(|(e, _)| e.name()).collect::<Vec<_>>();
    assert_eq!(names("demo"), ["a", "z"]);
    assert_eq!(names("istio-system"), ["m"]);
    assert!(names("other").is_empty());
}
