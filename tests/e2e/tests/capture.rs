//! End-to-end over the lab with `deploy/examples` (root; FAILS, never skips, without it):
//! real network namespaces, eBPF capture, mesh-ca, one ztunnel per node, the echo app.
//! One test function: the lab's names are machine-wide, so its steps share one lab.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mesh_e2e::lab::{Lab, bin_dir};
use mesh_e2e::sniff::{Segment, Sniffer};
use serde_json::Value;

/// node-a's side of the node-to-node link (a bridge device does not see frames it forwards
/// between its ports, so capture on the node's own interface).
const NODE_A: &str = "/var/run/netns/mlab-n-node-a";
const NODE_LINK: &str = "eth0";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples")
}

/// A marker no other traffic carries (looked for in packets and app logs).
fn marker(what: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("/e2e-{what}-{n:x}")
}

fn ok_answer(v: &Value) -> &str {
    assert_eq!(v["ok"], true, "expected an answer: {v}");
    v["answer"].as_str().expect("answer")
}

/// The echo app's JSON body from a raw HTTP/1.1 answer.
fn echo_body(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Chunked or not, the JSON object is the first `{` to the last `}`.
    let (Some(a), Some(b)) = (body.find('{'), body.rfind('}')) else { panic!("no JSON in {answer}") };
    serde_json::from_str(&body[a..=b]).unwrap_or_else(|e| panic!("echo JSON: {e}: {answer}"))
}

fn ip_of(addr: &str) -> &str {
    addr.rsplit_once(':').map(|(ip, _)| ip).unwrap_or(addr)
}

fn contains(h: &[u8], n: &[u8]) -> bool {
    h.windows(n.len()).any(|w| w == n)
}

fn on_port(segs: &[Segment], port: u16) -> Vec<&Segment> {
    segs.iter().filter(|s| s.dst.port() == port || s.src.port() == port).collect()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn bookinfo_in_the_lab() {
    let mut lab = Lab::up(&[&examples()], &[]).expect("lab up");

    cross_node_call_is_mtls_and_native(&lab);
    strict_refuses_plaintext(&lab);
    l4_deny_refuses(&lab);
    unlabelled_namespace_is_untouched(&lab);
    calling_yourself_does_not_loop(&lab);
    metrics_report_connections_and_capture(&lab);
    leaving_the_mesh_undoes_capture(&lab);
    ztunnel_crash_fails_closed_then_recovers(&lab);

    let out = lab.down().expect("lab down");
    assert!(out.status.success(), "lab down: {}", String::from_utf8_lossy(&out.stderr));
    nothing_left();
}

/// reviews-v1 (node-a) → ratings (node-b) by Service name: answered by ratings; on the
/// node-to-node link only TLS to 15008 (no payload in clear, nothing on 9080); both apps see
/// native addresses.
fn cross_node_call_is_mtls_and_native(lab: &Lab) {
    let path = marker("mtls");
    let sniff = Sniffer::start(NODE_A, NODE_LINK).expect("sniff the node link");
    let v = lab.probe("bookinfo/reviews-v1", "ratings:9080", &["--http", &path]);
    let segs = sniff.stop().expect("sniffer");
    let answer = ok_answer(&v);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = echo_body(answer);
    assert_eq!(body["pod"], "ratings-v1", "{body}");
    assert_eq!(body["path"], path.as_str(), "{body}");

    // The client's view: its own pod address, and the Service it dialled as the peer.
    assert_eq!(v["peer"], "10.96.100.13:9080", "the app sees the VIP it connected to: {v}");
    assert_eq!(ip_of(v["local"].as_str().unwrap()), "10.244.1.12", "{v}");
    // The server's view: the client pod's address as the peer.
    assert_eq!(ip_of(body["peer"].as_str().expect("peer in echo body")), "10.244.1.12", "{body}");

    let tunnel = on_port(&segs, 15008);
    assert!(!tunnel.is_empty(), "no HBONE (15008) traffic on the node link; saw {} segments", segs.len());
    assert!(
        tunnel
            .iter()
            .any(|s| s.src.ip().to_string() == "10.244.1.12" && s.dst.ip().to_string() == "10.244.2.12"),
        "HBONE must leave from the client pod's address to the server pod's: {tunnel:?}"
    );
    assert!(on_port(&segs, 9080).is_empty(), "plaintext 9080 on the node link: {:?}", on_port(&segs, 9080));
    let leaked: Vec<_> = segs.iter().filter(|s| contains(&s.payload, path.as_bytes())).collect();
    assert!(leaked.is_empty(), "application bytes in clear on the node link: {leaked:?}");
    assert!(
        tunnel.iter().any(|s| s.payload.first() == Some(&0x16) || s.payload.first() == Some(&0x17)),
        "no TLS records in the tunnel"
    );
}

/// legacy/sleep (uncaptured) → productpage (STRICT): refused, never reaches the app.
fn strict_refuses_plaintext(lab: &Lab) {
    let path = marker("strict");
    let v = lab.probe("legacy/sleep", "10.244.1.10:9080", &["--http", &path]);
    assert_ne!(v["ok"], true, "plaintext into a STRICT namespace was answered: {v}");
    assert!(!lab.logs("bookinfo/productpage-v1").contains(&path), "the app was reached");
}

/// productpage → ratings: only reviews may call ratings (L4 ALLOW policy) → refused.
fn l4_deny_refuses(lab: &Lab) {
    let path = marker("deny");
    let v = lab.probe("bookinfo/productpage-v1", "ratings:9080", &["--http", &path]);
    assert_ne!(v["ok"], true, "a denied connection was answered: {v}");
    assert!(!lab.logs("bookinfo/ratings-v1").contains(&path), "ratings was reached");
}

/// legacy/sleep → legacy/legacy-echo (other node): plain TCP on the link, not redirected.
fn unlabelled_namespace_is_untouched(lab: &Lab) {
    let path = marker("plain");
    let sniff = Sniffer::start(NODE_A, NODE_LINK).expect("sniff the node link");
    let v = lab.probe("legacy/sleep", "10.244.2.20:8080", &["--http", &path]);
    let segs = sniff.stop().expect("sniffer");
    let body = echo_body(ok_answer(&v));
    assert_eq!(body["pod"], "legacy-echo");
    assert_eq!(v["peer"], "10.244.2.20:8080");
    assert_eq!(ip_of(body["peer"].as_str().unwrap()), "10.244.1.20");
    assert!(
        on_port(&segs, 8080).iter().any(|s| contains(&s.payload, path.as_bytes())),
        "uncaptured traffic should cross the link as sent"
    );
    // (Pooled tunnels of earlier steps may still send PINGs; none involves the legacy pods.)
    let legacy = |s: &&Segment| ["10.244.1.20", "10.244.2.20"].contains(&s.src.ip().to_string().as_str());
    assert!(!on_port(&segs, 15008).iter().any(legacy), "uncaptured traffic went through HBONE");
}

/// productpage → its own Service: one request reaches the app once, through its own ztunnel.
fn calling_yourself_does_not_loop(lab: &Lab) {
    let path = marker("self");
    let v = lab.probe("bookinfo/productpage-v1", "productpage:9080", &["--http", &path]);
    let body = echo_body(ok_answer(&v));
    assert_eq!(body["pod"], "productpage-v1");
    let log = lab.logs("bookinfo/productpage-v1");
    assert_eq!(
        log.matches(path.as_str()).count(),
        1,
        "reached {} times:\n{log}",
        log.matches(path.as_str()).count()
    );
}

/// node-a's ztunnel reports the tunnelled connections with Istio's labels, and the capture
/// programs' counters by reason.
fn metrics_report_connections_and_capture(lab: &Lab) {
    let m = lab.node_get("node-a", 15020, "/metrics").expect("node-a metrics");
    let line = |name: &str, labels: &[&str]| {
        m.lines().find(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x))).map(str::to_string)
    };
    let value = |l: Option<String>| l.and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).unwrap_or(0.0);
    let opened = line(
        "istio_tcp_connections_opened_total",
        &[
            "reporter=\"source\"",
            "source_workload=\"reviews-v1\"",
            "destination_workload=\"ratings-v1\"",
            "connection_security_policy=\"mutual_tls\"",
        ],
    );
    assert!(
        value(opened) >= 1.0,
        "no tunnelled reviews-v1 → ratings-v1 connection in node-a's metrics:\n{m}"
    );
    for reason in ["out_redirected", "orig_dst_answered", "out_skip_not_captured"] {
        let v = value(line("ztunnel_capture_events_total", &[&format!("reason=\"{reason}\"")]));
        assert!(v >= 1.0, "capture counter {reason} is {v}:\n{m}");
    }
    let inbound = line("ztunnel_capture_inbound", &["mechanism=\"sk_lookup\""]);
    assert_eq!(value(inbound), 1.0, "inbound steering on this kernel is sk_lookup:\n{m}");
}

fn ip_rules(netns: &str) -> String {
    let out = std::process::Command::new("ip").args(["-n", netns, "rule"]).output().expect("ip rule");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `lab apply` of namespace `bookinfo` without `istio.io/dataplane-mode`: ztunnel releases
/// the pods (delivery rule gone, `local` table back at priority 0, plain TCP between them);
/// with the label back they are captured again.
fn leaving_the_mesh_undoes_capture(lab: &Lab) {
    let pod_ns = "mlab-p-bookinfo.productpage-v1";
    let dir = std::env::temp_dir().join(format!("mesh-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ns = |labels: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bookinfo\n{labels}");
    let file = dir.join("ns.yaml");
    std::fs::write(&file, ns("")).unwrap();
    let out = lab.apply(&file).expect("lab apply");
    assert!(out.status.success(), "lab apply: {}", String::from_utf8_lossy(&out.stderr));
    wait_for("node-a's ztunnel to release productpage", Duration::from_secs(10), || {
        !ip_rules(pod_ns).contains("fwmark")
    });
    let rules = ip_rules(pod_ns);
    assert!(
        rules.lines().next().is_some_and(|l| l.starts_with("0:") && l.contains("lookup local")),
        "{rules}"
    );
    let path = marker("out");
    let sniff = Sniffer::start(NODE_A, NODE_LINK).expect("sniff");
    let v = lab.probe("bookinfo/productpage-v1", "10.244.2.10:9080", &["--http", &path]);
    let segs = sniff.stop().expect("sniffer");
    assert_eq!(echo_body(ok_answer(&v))["pod"], "reviews-v2");
    assert!(on_port(&segs, 9080).iter().any(|s| contains(&s.payload, path.as_bytes())), "not plain TCP");

    std::fs::write(&file, ns("  labels:\n    istio.io/dataplane-mode: ambient\n")).unwrap();
    let out = lab.apply(&file).expect("lab apply");
    assert!(out.status.success(), "lab apply: {}", String::from_utf8_lossy(&out.stderr));
    wait_for("node-a's ztunnel to capture productpage again", Duration::from_secs(10), || {
        ip_rules(pod_ns).contains("fwmark")
    });
    let path = marker("in");
    let sniff = Sniffer::start(NODE_A, NODE_LINK).expect("sniff");
    let v = lab.probe("bookinfo/productpage-v1", "10.244.2.10:9080", &["--http", &path]);
    let segs = sniff.stop().expect("sniffer");
    assert_eq!(echo_body(ok_answer(&v))["pod"], "reviews-v2");
    assert!(on_port(&segs, 9080).is_empty() && !on_port(&segs, 15008).is_empty(), "not tunnelled again");
    assert!(!segs.iter().any(|s| contains(&s.payload, path.as_bytes())), "payload in clear after rejoining");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kill -9` of node-a's ztunnel: capture stays pinned, node-a's pods fail closed (no bypass),
/// and once ztunnel is back the same call works.
fn ztunnel_crash_fails_closed_then_recovers(lab: &Lab) {
    let pins = Path::new("/sys/fs/bpf/meshlab/node-a");
    let pid = lab.ztunnel_pid("node-a").expect("node-a's ztunnel pid");
    // SAFETY: kill(2) on a pid the lab recorded.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_for("ztunnel to exit", Duration::from_secs(5), || {
        // SAFETY: signal 0 only checks existence.
        let gone = unsafe { libc::kill(pid, 0) } != 0;
        gone || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
    });
    assert!(pins.is_dir() && std::fs::read_dir(pins).unwrap().count() > 0, "pins gone after the crash");

    let path = marker("down");
    let v = lab.probe("bookinfo/reviews-v1", "ratings:9080", &["--http", &path, "--timeout", "3"]);
    assert_ne!(v["ok"], true, "a pod bypassed its dead ztunnel: {v}");
    assert_eq!(v["kind"], "refused", "fail closed means connection refused: {v}");
    let v = lab.probe("bookinfo/reviews-v1", "10.244.2.12:9080", &["--http", &path, "--timeout", "3"]);
    assert_ne!(v["ok"], true, "a pod bypassed its dead ztunnel by pod IP: {v}");
    assert!(!lab.logs("bookinfo/ratings-v1").contains(&path), "traffic leaked while ztunnel was down");

    lab.restart_ztunnel("node-a").expect("restart node-a's ztunnel");
    let path = marker("back");
    let v = lab.probe("bookinfo/reviews-v1", "ratings:9080", &["--http", &path]);
    assert_eq!(echo_body(ok_answer(&v))["pod"], "ratings-v1");
}

/// `lab down` removed every netns, the pin folder and the lab's cgroups.
fn nothing_left() {
    let netns = std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip netns");
    let netns = String::from_utf8_lossy(&netns.stdout);
    assert!(!netns.contains("mlab-"), "netns left: {netns}");
    let pins = Path::new("/sys/fs/bpf/meshlab");
    assert!(!pins.exists() || std::fs::read_dir(pins).unwrap().count() == 0, "bpffs pins left");
    let cg = mesh_e2e::lab::cgroup2_mount().join("meshlab");
    assert!(!cg.exists(), "lab cgroup root left: {}", cg.display());
    let ours = ["ztunnel", "mesh-ca"].map(|b| bin_dir().join(b));
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let exe = std::fs::read_link(e.path().join("exe")).ok()?;
            ours.contains(&exe).then(|| format!("{} {}", e.file_name().to_string_lossy(), exe.display()))
        })
        .collect();
    assert!(left.is_empty(), "lab processes left: {left:?}");
}
