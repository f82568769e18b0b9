//! End-to-end over the lab with `deploy/waypoint-demo` (root; FAILS, never skips, without it):
//! the lab starts the waypoint for the `istio-waypoint` Gateway, ztunnels send the shop's
//! traffic to it over HBONE, and it applies the VirtualService canary, the response header
//! operation and the L7 AuthorizationPolicy; the waypoint reports Istio's request metrics.

use std::path::{Path, PathBuf};

use mesh_e2e::lab::Lab;
use mesh_e2e::sniff::Sniffer;
use serde_json::Value;

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/waypoint-demo")
}

/// The first pod whose name starts with `prefix`, from `lab status`.
fn pod(lab: &Lab, prefix: &str) -> String {
    let status = lab.status();
    status
        .split_whitespace()
        .find(|w| w.starts_with(prefix))
        .unwrap_or_else(|| panic!("no pod {prefix}* in lab status:\n{status}"))
        .to_string()
}

struct Answer {
    status: u16,
    head: String,
    body: Value,
}

fn get(lab: &Lab, from: &str, path: &str, extra: &[&str]) -> Answer {
    let mut args = vec!["--http", path];
    args.extend(extra);
    let v = lab.probe(from, "catalog:80", &args);
    assert_eq!(v["ok"], true, "no answer from catalog: {v}");
    let answer = v["answer"].as_str().unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    Answer { status, head: head.to_ascii_lowercase(), body }
}

#[test]
fn shop_through_the_waypoint() {
    let mut lab = Lab::up(&[&demo()], &[]).expect("lab up");
    let frontend = pod(&lab, "shop/frontend-");
    let catalog = pod(&lab, "shop/catalog-v1-");
    let waypoint = pod(&lab, "shop/waypoint-");

    // Routed by the waypoint: its response header, and the backend saw the mesh's headers.
    let a = get(&lab, &frontend, "/items/1", &[]);
    assert_eq!(a.status, 200, "{}", a.head);
    assert!(a.head.contains("x-served-by: waypoint"), "{}", a.head);
    assert!(a.body["headers"]["x-request-id"].is_array(), "{}", a.body);
    assert!(a.body["pod"].as_str().unwrap().starts_with("catalog-v"), "{}", a.body);

    // Testers get v2, always.
    for _ in 0..10 {
        let a = get(&lab, &frontend, "/items/2", &["--header", "x-canary: true"]);
        assert!(a.body["pod"].as_str().unwrap().starts_with("catalog-v2-"), "{}", a.body);
    }
    // Everyone else: 90 % v1, 10 % v2 (200 requests, within 7 %).
    let n = 200;
    let v2 = (0..n)
        .filter(|_| {
            get(&lab, &frontend, "/items", &[]).body["pod"].as_str().unwrap().starts_with("catalog-v2-")
        })
        .count();
    let share = v2 as f64 / n as f64;
    assert!((share - 0.1).abs() <= 0.07, "v2 got {share:.3} of requests, want 0.10 ± 0.07");

    // L7 authorization: methods, paths and principals.
    let a = get(&lab, &frontend, "/items/1", &["--method", "POST"]);
    assert_eq!(a.status, 403, "{}", a.head);
    assert_eq!(a.body, Value::String("RBAC: access denied".into()));
    assert_eq!(get(&lab, &frontend, "/admin", &[]).status, 403);
    assert_eq!(get(&lab, &frontend, "/items/../admin", &[]).status, 403, "dot-dot must not bypass");
    assert_eq!(get(&lab, &catalog, "/items/1", &[]).status, 403, "only the frontend may read");

    // Between the nodes the waypoint's traffic is HBONE only: no request in clear.
    let node_a = "/var/run/netns/mlab-n-node-a";
    let marker = format!("/items/marker-{}", std::process::id());
    let sniff = Sniffer::start(node_a, "eth0").expect("sniff node-a");
    for _ in 0..6 {
        assert_eq!(get(&lab, &frontend, &marker, &[]).status, 200);
    }
    let segs = sniff.stop().expect("sniffer");
    assert!(
        !segs.iter().any(|s| s.payload.windows(marker.len()).any(|w| w == marker.as_bytes())),
        "plaintext"
    );
    assert!(segs.iter().any(|s| s.dst.port() == 15008 || s.src.port() == 15008), "no HBONE on the node link");

    // Istio's request metrics, reported by the waypoint.
    let out = lab.exec(
        &waypoint,
        &[
            "bash",
            "-c",
            "exec 3<>/dev/tcp/127.0.0.1/15020; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3",
        ],
    );
    let metrics = String::from_utf8_lossy(&out.expect("lab exec").stdout).into_owned();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("reporter=\"waypoint\"")
                && l.contains("source_workload=\"frontend\"")
                && l.contains("response_code=\"403\"")
                && l.contains("destination_service_name=\"catalog\"")
        })
        .unwrap_or_else(|| panic!("no waypoint 403 request metric for the frontend workload:\n{metrics}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(count, 3.0, "POST, /admin and the dot-dot attempt: {line}");
    let ok = metrics.lines().find(|l| {
        l.starts_with("istio_requests_total{")
            && l.contains("response_code=\"200\"")
            && l.contains("destination_workload=\"catalog-v")
    });
    assert!(ok.is_some(), "no 200 with the destination workload labelled:\n{metrics}");

    let out = lab.down().expect("lab down");
    assert!(out.status.success(), "lab down: {}", String::from_utf8_lossy(&out.stderr));
}
