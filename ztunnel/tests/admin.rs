//! Admin, metrics and readiness servers in-process, and the real binary: flags, readiness,
//! `/logging`, the access log, and the drain on SIGTERM (open connections finish until the
//! deadline, new ones are refused, exit 0).

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_dump_readiness_and_logging() {
    let net = 131;
    let mesh = start_mesh(net, "").await;
    let (status, body) = http_get(mesh.a.admin_addr, "GET", "/config_dump").await;
    assert_eq!(status, 200);
    assert!(!body.contains("PRIVATE KEY"), "keys must never be dumped");
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dump["config"]["node"], "node-a");
    assert_eq!(dump["config"]["hbonePort"], 15008);
    let ids: Vec<&str> =
        dump["certificates"].as_array().unwrap().iter().filter_map(|c| c["identity"].as_str()).collect();
    assert!(ids.contains(&"spiffe://cluster.local/ns/demo/sa/client"), "{ids:?}");
    assert!(dump["model"]["workloads"].as_array().unwrap().len() >= 4);

    let (status, body) = http_get(mesh.a.readiness_addr, "GET", "/healthz/ready").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, _) = http_get(mesh.a.readiness_addr, "GET", "/config_dump").await;
    assert_eq!(status, 404, "the readiness port serves readiness only");
    let (status, body) = http_get(mesh.a.metrics_addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    // No traffic yet: no series, but a valid OpenMetrics body.
    assert!(body.ends_with("# EOF\n"), "{body}");
    // No log handle in-process (the test harness owns logging): said so clearly.
    let (status, _) = http_get(mesh.a.admin_addr, "POST", "/logging?level=debug").await;
    assert_eq!(status, 501);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_level_changes_at_run_time() {
    let net = 132;
    let (subscriber, log) =
        mesh_telemetry::logging_subscriber(mesh_telemetry::LogFormat::Json, "info", std::io::sink).unwrap();
    let _keep = subscriber; // the reload handle needs the subscriber alive
    let mesh = start_mesh(net, "").await;
    let mut config = node_config(mesh.dir.path(), &mesh.ca, "node-a");
    config.model = vec![mesh.dir.path().join("model")];
    // A third instance only for its admin server (node-a again; its pod listeners are taken
    // by mesh.a, which it logs and which this test does not need).
    let z = ztunnel::start(config, Some(log.clone())).await.unwrap();
    let (status, body) = http_get(z.admin_addr, "POST", "/logging?level=debug,access%3Dinfo").await;
    assert_eq!(status, 200, "{body}");
    let level = || {
        let mut d: Vec<String> = log.current_level().split(',').map(str::to_string).collect();
        d.sort();
        d.join(",")
    };
    assert_eq!(level(), "access=info,debug");
    let (status, body) = http_get(z.admin_addr, "GET", "/logging?level=not%20a%20%5Bfilter").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(level(), "access=info,debug", "a bad filter keeps the old one");
    let (status, body) = http_get(z.admin_addr, "GET", "/logging").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("current level: ") && body.contains("access=info"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_certificates_of_local_pods() {
    let net = 134;
    // node-a knows a pod the CA does not place on it yet: its certificate is refused.
    let ghost = pod("ghost", "demo", "node-a", "ghost", "app: ghost", ip(net, 1, 50));
    let mesh = start_mesh_with(net, "", Some(format!("{}{ghost}", base_model(net)))).await;
    let (status, body) = http_get(mesh.a.readiness_addr, "GET", "/healthz/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("certificate for spiffe://cluster.local/ns/demo/sa/ghost"), "{body}");
    // Once the CA's model has the pod, the cert manager's retry gets it and node-a is ready.
    std::fs::write(mesh.dir.path().join("model/ghost.yaml"), &ghost).unwrap();
    wait_ready(&mesh.a).await;
    let (status, _) = http_get(mesh.a.readiness_addr, "GET", "/healthz/ready").await;
    assert_eq!(status, 200);
}

/// The addresses the binary bound (it is given port 0 everywhere, so no port can be taken
/// by someone else between choosing and binding), from its JSON "ztunnel started" log line.
async fn bound_addresses(log_path: &std::path::Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        let started = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == "ztunnel started");
        if let Some(v) = started {
            return v;
        }
        assert!(Instant::now() < deadline, "binary never started: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn addr_field(v: &serde_json::Value, name: &str) -> SocketAddr {
    v[name].as_str().unwrap_or_else(|| panic!("no {name} in {v}")).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_then_drains_on_sigterm() {
    let net = 133;
    let mesh = start_mesh(net, "").await;
    let echo = echo_server(SocketAddr::new(ip(net, 2, 10), 8080)).await;
    // The in-process node-a stops serving its pod so the binary can take over as node-a.
    mesh.a.shutdown().await;
    let any = "127.0.0.1:0";
    let d = mesh.dir.path();
    let log_path = d.join("ztunnel-a.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ztunnel"))
        .args(["--node", "node-a", "--ca-address", &format!("https://{}", mesh.ca.local_addr)])
        .arg("--ca-root")
        .arg(d.join("root.pem"))
        .arg("--token-file")
        .arg(d.join("node-a.token"))
        .arg("--model")
        .arg(d.join("model"))
        .args(["--socks5-addr", any, "--admin-addr", any, "--metrics-addr", any, "--readiness-addr", any])
        .args(["--outbound-addr", any, "--drain-deadline", "1500ms"])
        .args(["--log-format", "json", "--log-level", "info"])
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = bound_addresses(&log_path).await;
    let (socks, admin, ready) =
        (addr_field(&started, "socks5"), addr_field(&started, "admin"), addr_field(&started, "readiness"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(ready).await {
            let _ = s.write_all(b"GET /healthz/ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
            let mut out = String::new();
            let _ = s.read_to_string(&mut out).await;
            if out.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "binary never became ready: {}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = http_get(admin, "POST", "/logging?level=info").await;
    assert_eq!(status, 200);

    // One finished connection (for the access log) and one held open across SIGTERM.
    let server = SocketAddr::new(ip(net, 2, 10), 8080);
    let data = pattern(2000);
    let (code, s) = socks_connect(ip(net, 1, 10), socks, Dest::Addr(server)).await;
    assert_eq!(code, 0);
    assert!(echo_roundtrip(s, data.clone()).await.unwrap() == *data);
    let (code, mut held) = socks_connect(ip(net, 1, 10), socks, Dest::Addr(server)).await;
    assert_eq!(code, 0);
    held.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    held.read_exact(&mut buf).await.unwrap();

    let pid = child.id().unwrap() as i32;
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // New connections are refused once draining...
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(socks).await.is_ok() {
        assert!(Instant::now() < deadline, "SOCKS5 listener still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...while the open one keeps working until the deadline...
    held.write_all(b"during").await.unwrap();
    held.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"during");
    // ...and is closed at it; the process exits 0.
    let mut rest = Vec::new();
    let t = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(10), held.read_to_end(&mut rest))
        .await
        .expect("closed at the deadline");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("exited").unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(echo.total(), 2);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let access: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect();
    assert!(!access.is_empty(), "no access log line in:\n{log}");
    let done = access.iter().find(|v| v["bytes_sent"] == 2000).unwrap_or_else(|| panic!("{access:?}"));
    assert_eq!(done["src.workload"], "client");
    assert_eq!(done["dst.workload"], "server-v1");
    assert_eq!(done["direction"], "outbound");
    assert!(!log.contains("PRIVATE KEY"));
}

async fn wait_port(addr: SocketAddr, open: bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() != open {
        assert!(Instant::now() < deadline, "{addr} did not become {}", if open { "open" } else { "closed" });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_listeners_follow_the_model() {
    let net = 135;
    let mesh = start_mesh(net, "").await;
    let late = ip(net, 2, 40);
    let file = mesh.dir.path().join("model/late.yaml");
    std::fs::write(&file, pod("late", "demo", "node-b", "server", "app: late", late)).unwrap();
    wait_port(SocketAddr::new(late, 15008), true).await;
    wait_port(SocketAddr::new(late, 15006), true).await;
    wait_ready(&mesh.b).await;
    // node-a did not open anything for a pod on node-b.
    assert!(ztunnel::workloads::readiness(&mesh.a.ctx).is_ok());
    std::fs::remove_file(&file).unwrap();
    wait_port(SocketAddr::new(late, 15008), false).await;
    wait_port(SocketAddr::new(late, 15006), false).await;
}
