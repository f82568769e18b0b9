//! `/metrics` after real guards: exact Istio names, label names in order, label values built
//! from the model, counts and byte totals, `unknown` for unknown peers, bytes visible before
//! close.

mod common;

use std::sync::Arc;

use common::{Sample, addr, inbound_to_echo, model, outbound_to_echo, parse_samples};
use mesh_telemetry::{
    ConnGuard, ConnInfo, Decision, Metrics, Registry, Reporter, ResponseFlag, TRAFFIC_LABEL_NAMES, encode,
};

const OPENED: &str = "istio_tcp_connections_opened_total";
const CLOSED: &str = "istio_tcp_connections_closed_total";
const SENT: &str = "istio_tcp_sent_bytes_total";
const RECEIVED: &str = "istio_tcp_received_bytes_total";

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples.iter().filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v))).collect()
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = find(samples, name, labels);
    assert_eq!(found.len(), 1, "exactly one {name} sample with {labels:?}; all: {samples:#?}");
    found[0].value
}

#[test]
fn exposes_istio_names_labels_and_counts() -> anyhow::Result<()> {
    let model = model();
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));

    // Two outbound connections: 100 B up and 300 B down each, in chunks.
    for _ in 0..2 {
        let guard = ConnGuard::open(&metrics, outbound_to_echo(&model, &metrics));
        for _ in 0..10 {
            guard.add_to_server(10);
        }
        guard.add_to_client(300);
        drop(guard);
    }
    // One inbound connection denied by policy.
    let mut denied = ConnGuard::open(&metrics, inbound_to_echo(&model, &metrics));
    denied.set_decision(Decision::Deny, Some("shop/deny-all".into()));
    denied.finish();
    // One outbound passthrough to an unknown destination that failed to connect.
    let mut info = ConnInfo::new(Reporter::Source, addr("10.0.1.10:40001"), addr("192.0.2.1:443"));
    info.labels.source = outbound_to_echo(&model, &metrics).labels.source;
    let mut failed = ConnGuard::open(&metrics, info);
    failed.fail(ResponseFlag::UpstreamConnectionFailure, "connection refused");
    drop(failed);

    let text = encode(&registry)?;
    assert!(text.ends_with("# EOF\n"), "OpenMetrics end marker: {text}");
    let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
    assert_eq!(
        types,
        [
            "# TYPE istio_tcp_connections_opened counter",
            "# TYPE istio_tcp_connections_closed counter",
            "# TYPE istio_tcp_sent_bytes counter",
            "# TYPE istio_tcp_received_bytes counter",
        ]
    );

    let samples = parse_samples(&text);
    let mut names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut want = vec![OPENED, CLOSED, SENT, RECEIVED];
    want.sort_unstable();
    assert_eq!(names, want, "exposed sample names are Istio's");
    for s in &samples {
        assert_eq!(s.label_names(), TRAFFIC_LABEL_NAMES, "label names and order of {s:?}");
    }

    let src = [("reporter", "source"), ("destination_workload", "echo-v1")];
    assert_eq!(value(&samples, OPENED, &src), 2.0);
    assert_eq!(value(&samples, CLOSED, &src), 2.0);
    assert_eq!(value(&samples, RECEIVED, &src), 200.0, "client → server bytes");
    assert_eq!(value(&samples, SENT, &src), 600.0, "server → client bytes");

    let s = find(&samples, OPENED, &src)[0];
    let expected = [
        ("reporter", "source"),
        ("source_workload", "client"),
        ("source_canonical_service", "client"),
        ("source_canonical_revision", "v2"),
        ("source_workload_namespace", "shop"),
        ("source_principal", "spiffe://cluster.local/ns/shop/sa/client"),
        ("source_app", "client"),
        ("source_version", "v2"),
        ("source_cluster", "Kubernetes"),
        ("destination_service", "echo.shop.svc.cluster.local"),
        ("destination_service_namespace", "shop"),
        ("destination_service_name", "echo"),
        ("destination_workload", "echo-v1"),
        ("destination_canonical_service", "echo"),
        ("destination_canonical_revision", "v1"),
        ("destination_workload_namespace", "shop"),
        ("destination_principal", "spiffe://cluster.local/ns/shop/sa/echo"),
        ("destination_app", "echo"),
        ("destination_version", "v1"),
        ("destination_cluster", "Kubernetes"),
        ("request_protocol", "tcp"),
        ("response_flags", "-"),
        ("connection_security_policy", "mutual_tls"),
    ];
    let got: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(got, expected);

    // The denial: opened with `-`, closed with `DENY`, no bytes.
    let dst = [("reporter", "destination")];
    assert_eq!(value(&samples, OPENED, &[dst[0], ("response_flags", "-")]), 1.0);
    assert_eq!(value(&samples, CLOSED, &[dst[0], ("response_flags", "DENY")]), 1.0);
    assert!(find(&samples, CLOSED, &[dst[0], ("response_flags", "-")]).is_empty());
    assert_eq!(value(&samples, RECEIVED, &dst), 0.0);

    // The unknown destination: every destination label `unknown`, the failure flagged `UF`.
    let unknown = [("reporter", "source"), ("destination_workload", "unknown")];
    let closed = find(&samples, CLOSED, &unknown);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].value, 1.0);
    assert_eq!(closed[0].label("response_flags"), Some("UF"));
    assert_eq!(closed[0].label("connection_security_policy"), Some("unknown"));
    for (k, v) in &closed[0].labels {
        if k.starts_with("destination_") {
            assert_eq!(v, "unknown", "{k}");
        }
    }
    assert_eq!(closed[0].label("source_workload"), Some("client"));
    Ok(())
}

#[test]
fn bytes_show_before_the_connection_closes() -> anyhow::Result<()> {
    let model = model();
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let guard = ConnGuard::open(&metrics, outbound_to_echo(&model, &metrics));
    guard.add_to_server(4096);
    guard.add_to_client(1);

    let samples = parse_samples(&encode(&registry)?);
    assert_eq!(value(&samples, OPENED, &[]), 1.0);
    assert_eq!(value(&samples, RECEIVED, &[]), 4096.0);
    assert_eq!(value(&samples, SENT, &[]), 1.0);
    assert!(find(&samples, CLOSED, &[]).is_empty(), "not closed yet");
    assert_eq!((guard.bytes_to_server(), guard.bytes_to_client()), (4096, 1));

    drop(guard);
    let samples = parse_samples(&encode(&registry)?);
    assert_eq!(value(&samples, CLOSED, &[]), 1.0);
    assert_eq!(value(&samples, RECEIVED, &[]), 4096.0, "not counted twice at close");
    Ok(())
}

#[test]
fn connections_share_one_series_per_label_set() -> anyhow::Result<()> {
    let model = model();
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let guards: Vec<ConnGuard> =
        (0..50).map(|_| ConnGuard::open(&metrics, outbound_to_echo(&model, &metrics))).collect();
    // Two concurrent copy halves through `&ConnGuard`.
    std::thread::scope(|s| {
        for g in &guards {
            s.spawn(|| (0..100).for_each(|_| g.add_to_server(3)));
            s.spawn(|| (0..100).for_each(|_| g.add_to_client(5)));
        }
    });
    drop(guards);
    let samples = parse_samples(&encode(&registry)?);
    assert_eq!(find(&samples, OPENED, &[]).len(), 1, "one series for identical labels");
    assert_eq!(value(&samples, OPENED, &[]), 50.0);
    assert_eq!(value(&samples, CLOSED, &[]), 50.0);
    assert_eq!(value(&samples, RECEIVED, &[]), 50.0 * 300.0);
    assert_eq!(value(&samples, SENT, &[]), 50.0 * 500.0);
    Ok(())
}
