//! Tests of the config-update measurement: the generated model, the route flip, the log lines.
use std::collections::BTreeMap;

use mesh_api::{Parsed, parse_object, split_documents};

use super::*;

fn backends() -> Backends {
    Backends { a: SocketAddr::new(Route::A.ip(), 40001), b: SocketAddr::new(Route::B.ip(), 40002) }
}

/// Kinds of the valid objects in `text`; panics on any invalid document or warning.
fn kinds(text: &str, counts: &mut BTreeMap<String, usize>) {
    for doc in split_documents(text) {
        match parse_object(doc.expect("valid YAML").value) {
            Parsed::Object { object, warnings } => {
                assert!(warnings.is_empty(), "{warnings:?}");
                *counts.entry(format!("{:?}", object.kind())).or_default() += 1;
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_model_parses_into_the_expected_objects() {
    let dir = tempfile::tempdir().unwrap();
    // Two and a half namespaces: the last file is partial, its first pod starts a Service.
    let n = 2 * PODS_PER_NAMESPACE + 505;
    let bytes = write_model(dir.path(), n, &backends()).unwrap();
    let mut counts = BTreeMap::new();
    let mut files = 0;
    let mut total = 0;
    for p in [dir.path().join("bench.yaml"), dir.path().join("route.yaml")]
        .into_iter()
        .chain(std::fs::read_dir(dir.path().join("workloads")).unwrap().map(|e| e.unwrap().path()))
    {
        let text = std::fs::read_to_string(&p).unwrap();
        total += text.len();
        files += 1;
        kinds(&text, &mut counts);
    }
    assert_eq!((files, total), (5, bytes));
    let want: BTreeMap<String, usize> = [
        ("Namespace", 3 + 1),
        ("Pod", n + 3),
        ("Service", n.div_ceil(PODS_PER_SERVICE) + 3),
        ("VirtualService", 1),
        ("KubeGateway", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(counts, want);
}

#[test]
fn the_model_translates_with_the_route_and_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let n = 1500;
    write_model(dir.path(), n, &backends()).unwrap();
    let loaded = mesh_model::load_paths(&[dir.path().to_path_buf()]);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let (model, diags) = mesh_model::translate(&loaded.objects, &mesh_model::MeshConfig::default());
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(model.workloads().len(), n + 3);
    assert_eq!(model.services().len(), n / PODS_PER_SERVICE + 3);
    // Every workload Service selects its ten replicas, in its own namespace.
    let app = model.service("wl-001", "app-149").expect("app-149");
    assert_eq!(app.endpoints.len(), PODS_PER_SERVICE);
    for (route, addr) in [(Route::A, backends().a), (Route::B, backends().b)] {
        let s = model.service(NS, &format!("echo-{}", route.name())).expect("backend service");
        assert_eq!(s.endpoints.len(), 1);
        assert_eq!(model.workload(NS, &route.pod()).unwrap().ips.first(), Some(&addr.ip()));
    }
    let echo = model.resolve_host(TARGET, NS).expect("echo resolves");
    assert_eq!(model.virtual_services_for_host(&echo.hostname).count(), 1);
    assert!(model.workload(NS, "waypoint-0").is_some());
    // IPs are unique: every pod is found by its own address.
    assert!(
        model.workloads().iter().all(|w| model.workload_by_ip(w.ips[0]).is_some_and(|x| x.name == w.name))
    );
}

#[test]
fn routes_flip_between_backends() {
    assert_eq!(Route::A.flip(), Route::B);
    assert_eq!(Route::B.flip(), Route::A);
    let b = route_yaml(Route::B);
    assert!(b.contains("host: echo-b") && b.contains("x-route: b") && !b.contains("echo-a"), "{b}");
    let body =
        |pod: &str| Bytes::from(format!("{{\"method\":\"GET\",\"pod\":\"{pod}\",\"namespace\":\"bench\"}}"));
    let a = Answer { status: 200, route: Some("a".into()), body: body("echo-a-0") };
    assert!(a.shows(Route::A) && !a.shows(Route::B));
    // The header and the backend must agree; an error answer shows no route.
    assert!(!Answer { body: body("echo-b-0"), ..a.clone() }.shows(Route::A));
    assert!(!Answer { status: 503, ..a.clone() }.shows(Route::A));
}

#[test]
fn replaced_file_and_applied_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("route.yaml");
    std::fs::write(&p, "old").unwrap();
    let (_, wall) = replace_file(&p, "new").unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");

    let since = OffsetDateTime::parse("2026-11-22T19:50:01.500000Z", &Rfc3339).unwrap();
    let log = "{\"timestamp\":\"2026-11-22T19:50:01.000000Z\",\"level\":\"INFO\",\"message\":\"config applied\",\"generation\":1}\n\
               {\"timestamp\":\"2026-11-22T19:50:01.612345Z\",\"level\":\"INFO\",\"message\":\"config applied\",\"generation\":2}\n\
               {\"timestamp\":\"2026-11-22T19:50:01.700000Z\",\"level\":\"WARN\",\"message\":\"something else\"}\n\
               not json, config applied\n";
    let got = applied_after(log, since);
    assert_eq!(got.len(), 1);
    assert!(((got[0] - since).as_seconds_f64() - 0.112345).abs() < 1e-9);
    assert!(wall > since);
}

#[test]
fn plan_sizes_and_rows() {
    assert_eq!(Plan::new(false, None), Plan { reps: 5, sizes: vec![1000, 100_000] });
    assert_eq!(Plan::new(true, None), Plan { reps: 2, sizes: vec![1000] });
    assert_eq!(Plan::new(true, Some(0)).reps, 1);
    let m = Measured {
        workloads: 1000,
        latency_ms: vec![80.0, 60.0, 70.0],
        applied_ms: vec![50.0; 3],
        rss_mib: vec![20.0; 3],
        startup_s: 1.0,
    };
    let rows = m.rows();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].metric.as_str(), rows[0].unit.as_str()), ("config_update/1000workloads", "ms"));
    assert_eq!(rows[0].value.median, 70.0);
    assert_eq!((rows[1].metric.as_str(), rows[1].unit.as_str()), ("rss_config/1000workloads", "MiB"));
    assert!(rows.iter().all(|r| r.scenario == "waypoint" && r.better == Better::Lower));
}
