//! Where outbound connections go: a server presenting an identity other than the one the
//! model expects is refused by the client; a destination with a waypoint is tunnelled to the
//! waypoint (a real HBONE server standing in for it records the CONNECT); DestinationRule
//! load-balancing choices are observed on the backends.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mesh_hbone::{ConnectHandler, ConnectRequest, HboneServer, Responder, ServerSettings};
use mesh_identity::{
    CaClientConfig, CertManagerConfig, SpiffeId, TrustBundle, bootstrap_node, server_config,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_with_wrong_identity_is_refused() {
    let net = 121;
    // node-a believes server-v1 runs as `impostor`; node-b (and the CA) know it runs as `server`.
    let a_view = base_model(net).replace(
        "name: server-v1, namespace: demo, labels: {app: server, version: v1}}\nspec:\n  nodeName: node-b\n  serviceAccountName: server",
        "name: server-v1, namespace: demo, labels: {app: server, version: v1}}\nspec:\n  nodeName: node-b\n  serviceAccountName: impostor",
    );
    assert_ne!(a_view, base_model(net));
    let mesh = start_mesh_with(net, "", Some(a_view)).await;
    wait_ready(&mesh.a).await;
    let v1 = echo_server(SocketAddr::new(ip(net, 2, 10), 8080)).await;
    let v2 = echo_server(SocketAddr::new(ip(net, 2, 11), 8080)).await;
    let client = ip(net, 1, 10);
    let (code, _) =
        socks_connect(client, mesh.a.socks5_addr, Dest::Addr(SocketAddr::new(ip(net, 2, 10), 8080))).await;
    assert_eq!(code, 1, "general failure: the TLS handshake failed");
    assert_eq!(v1.total(), 0);
    // The pod whose identity matches still works.
    let (code, s) =
        socks_connect(client, mesh.a.socks5_addr, Dest::Addr(SocketAddr::new(ip(net, 2, 11), 8080))).await;
    assert_eq!(code, 0);
    let data = pattern(100);
    assert!(echo_roundtrip(s, data.clone()).await.unwrap() == *data);
    assert_eq!(v2.total(), 1);
    let m = scrape(&mesh.a).await;
    let refused = [("reporter", "source"), ("destination_workload", "server-v1"), ("response_flags", "UF")];
    assert_eq!(metric(&m, "istio_tcp_connections_closed_total", &refused), 1.0, "{m}");
}

/// What the stand-in waypoint saw of one CONNECT.
#[derive(Debug, Clone)]
struct Seen {
    authority: SocketAddr,
    peer: SpiffeId,
    forwarded_for: Option<std::net::IpAddr>,
    baggage: String,
}

/// Records each CONNECT and echoes the tunnel.
#[derive(Default)]
struct FakeWaypoint {
    seen: Mutex<Vec<Seen>>,
}

impl ConnectHandler for FakeWaypoint {
    async fn handle(&self, req: ConnectRequest, responder: Responder) {
        let baggage = req.baggage.as_ref().and_then(|b| b.to_str().ok()).unwrap_or_default().to_string();
        self.seen.lock().unwrap().push(Seen {
            authority: req.authority,
            peer: req.peer_identity.clone(),
            forwarded_for: req.forwarded_for,
            baggage,
        });
        if let Ok(stream) = responder.accept() {
            let (mut r, mut w) = tokio::io::split(stream);
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
        }
    }
}

/// The waypoint `wp` of namespace demo: its ServiceAccount, pod (not captured, on node-b) and
/// Service; the Service `viawp` (VIP .0.2) uses it. `gateway` adds its Gateway object.
fn waypoint_objects(net: u8, gateway: &str) -> String {
    let wp_ip = ip(net, 2, 30);
    format!(
        "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: waypoint, namespace: demo}}\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: wp-0\n  namespace: demo\n  \
         labels: {{app: wp, istio.io/dataplane-mode: none}}\nspec:\n  nodeName: node-b\n  serviceAccountName: waypoint\n  \
         containers: [{{name: wp, image: wp}}]\nstatus: {{phase: Running, podIP: {wp_ip}}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: wp, namespace: demo}}\n\
         spec:\n  clusterIP: 10.{net}.0.9\n  selector: {{app: wp}}\n  ports: [{{name: mesh, port: 15008, targetPort: 15008}}]\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: viawp, namespace: demo, labels: {{istio.io/use-waypoint: wp}}}}\n\
         spec:\n  clusterIP: 10.{net}.0.2\n  selector: {{app: server}}\n  ports: [{{name: tcp, port: 80, targetPort: 8080}}]\n{gateway}"
    )
}

/// A Gateway for `wp` with `istio.io/waypoint-for: <takes>`.
fn waypoint_gateway(takes: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: wp\n  namespace: demo\n  \
         labels: {{istio.io/waypoint-for: {takes}}}\nspec:\n  gatewayClassName: istio-waypoint\n  \
         listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]\n"
    )
}

/// The stand-in waypoint: a real HBONE server on the wp pod's address with the waypoint's
/// certificate from the mesh's CA.
async fn fake_waypoint(mesh: &Mesh) -> Arc<FakeWaypoint> {
    let ca = CaClientConfig::new(format!("https://{}", mesh.ca.local_addr), mesh.ca.root_pem.clone());
    let boot = bootstrap_node(
        ca,
        "cluster.local",
        "node-b",
        mesh.dir.path().join("node-b.token"),
        CertManagerConfig::default(),
    )
    .await
    .unwrap();
    let wp_id = SpiffeId::new("cluster.local", "demo", "waypoint").unwrap();
    let cert = boot.workload_manager(CertManagerConfig::default()).fetch(&wp_id).await.unwrap();
    let trust = TrustBundle::from_pem("cluster.local", &mesh.ca.root_pem).unwrap();
    let tls = Arc::new(server_config(&cert, &trust).unwrap());
    let handler = Arc::new(FakeWaypoint::default());
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip(mesh.net, 2, 30), 15008)).await.unwrap();
    let server = HboneServer::new(ServerSettings::default(), tls, handler.clone());
    tokio::spawn(server.serve(listener, std::future::pending::<()>()));
    handler
}

/// The base model with pod server-v1 labelled to use the waypoint `wp` as well.
fn server_v1_uses_wp(net: u8) -> String {
    let m = base_model(net);
    let labelled = m.replace(
        "labels: {app: server, version: v1}",
        "labels: {app: server, version: v1, istio.io/use-waypoint: wp}",
    );
    assert_ne!(labelled, m);
    labelled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_with_waypoint_goes_to_the_waypoint() {
    let net = 122;
    let mesh = start_mesh(net, &waypoint_objects(net, "")).await;
    let handler = fake_waypoint(&mesh).await;
    let v1 = echo_server(SocketAddr::new(ip(net, 2, 10), 8080)).await;

    let client = ip(net, 1, 10);
    let vip: SocketAddr = format!("10.{net}.0.2:80").parse().unwrap();
    let (code, s) = socks_connect(client, mesh.a.socks5_addr, Dest::Addr(vip)).await;
    assert_eq!(code, 0);
    let data = pattern(5000);
    assert!(echo_roundtrip(s, data.clone()).await.unwrap() == *data);
    let seen = handler.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authority, vip, "authority is the original VIP:port");
    assert_eq!(seen[0].peer, SpiffeId::new("cluster.local", "demo", "client").unwrap());
    assert_eq!(seen[0].forwarded_for, Some(client), "forwarded for the client");
    assert_eq!(
        seen[0].baggage,
        "k8s.cluster.name=Kubernetes,k8s.namespace.name=demo,k8s.deployment.name=client,service.name=client,\
         service.version=v1"
    );
    assert_eq!(v1.total(), 0, "the waypoint, not ztunnel, would pick the backend");
    // The service without a waypoint still goes straight to the pods.
    let (code, s) =
        socks_connect(client, mesh.a.socks5_addr, Dest::Addr(format!("10.{net}.0.1:80").parse().unwrap()))
            .await;
    assert_eq!(code, 0);
    assert!(echo_roundtrip(s, data.clone()).await.unwrap() == *data);
    assert_eq!(handler.seen.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_addressed_traffic_skips_a_service_waypoint() {
    // Istio's default: a waypoint takes what is sent to Services; a connection to the pod's
    // own address goes to its ztunnel even though the pod uses the waypoint.
    let net = 126;
    let objects = waypoint_objects(net, &waypoint_gateway("service"));
    // node-a, whose outbound is under test, sees server-v1 labelled.
    let mesh = start_mesh_with(net, &objects, Some(server_v1_uses_wp(net) + &objects)).await;
    let handler = fake_waypoint(&mesh).await;
    let v1 = echo_server(SocketAddr::new(ip(net, 2, 10), 8080)).await;
    let client = ip(net, 1, 10);
    let (code, s) =
        socks_connect(client, mesh.a.socks5_addr, Dest::Addr(SocketAddr::new(ip(net, 2, 10), 8080))).await;
    assert_eq!(code, 0);
    let data = pattern(100);
    assert!(echo_roundtrip(s, data.clone()).await.unwrap() == *data);
    assert_eq!(v1.total(), 1, "straight to the pod");
    assert!(handler.seen.lock().unwrap().is_empty(), "the waypoint saw pod-addressed traffic");
    // The Service that uses it still goes through it.
    let vip: SocketAddr = format!("10.{net}.0.2:80").parse().unwrap();
    let (code, s) = socks_connect(client, mesh.a.socks5_addr, Dest::Addr(vip)).await;
    assert_eq!(code, 0);
    assert!(echo_roundtrip(s, data.clone()).await.unwrap() == *data);
    assert_eq!(handler.seen.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_waypoint_takes_pod_addressed_traffic_only() {
    let net = 127;
    let objects = waypoint_objects(net, &waypoint_gateway("workload"));
    // node-a, whose outbound is under test, sees server-v1 labelled.
    let mesh = start_mesh_with(net, &objects, Some(server_v1_uses_wp(net) + &objects)).await;
    let handler = fake_waypoint(&mesh).await;
    let v1 = echo_server(SocketAddr::new(ip(net, 2, 10), 8080)).await;
    let v2 = echo_server(SocketAddr::new(ip(net, 2, 11), 8080)).await;
    let client = ip(net, 1, 10);
    let pod: SocketAddr = SocketAddr::new(ip(net, 2, 10), 8080);
    let (code, s) = socks_connect(client, mesh.a.socks5_addr, Dest::Addr(pod)).await;
    assert_eq!(code, 0);
    let data = pattern(100);
    assert!(echo_roundtrip(s, data.clone()).await.unwrap() == *data);
    let seen = handler.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "pod-addressed traffic goes through a workload waypoint");
    assert_eq!(seen[0].authority, pod);
    assert_eq!(v1.total(), 0);
    // A Service labelled with it does not: ztunnel picks an endpoint itself.
    let vip: SocketAddr = format!("10.{net}.0.2:80").parse().unwrap();
    let (code, s) = socks_connect(client, mesh.a.socks5_addr, Dest::Addr(vip)).await;
    assert_eq!(code, 0);
    assert!(echo_roundtrip(s, data.clone()).await.unwrap() == *data);
    assert_eq!(handler.seen.lock().unwrap().len(), 1);
    assert_eq!(v1.total() + v2.total(), 1, "the Service's connection reached a backend directly");
}

async fn wait_total(echoes: &[&Echo], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while echoes.iter().map(|e| e.total()).sum::<usize>() < n {
        assert!(Instant::now() < deadline, "backends did not see {n} connections");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_rule_load_balancing() {
    let net = 123;
    let svc = |name: &str, vip: u8| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\n\
             spec:\n  clusterIP: 10.{net}.0.{vip}\n  selector: {{app: server}}\n  ports: [{{name: tcp, port: 80, targetPort: 8080}}]\n"
        )
    };
    let extra = format!(
        "{}{}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: client2, namespace: demo, labels: {{app: client}}}}\n\
         spec:\n  nodeName: node-a\n  serviceAccountName: client\n  containers: [{{name: c, image: c}}]\n\
         status: {{phase: Running, podIP: {}}}\n\
         ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: rr, namespace: demo}}\n\
         spec: {{host: echo.demo.svc.cluster.local, trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}}}}}\n\
         ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: sticky, namespace: demo}}\n\
         spec:\n  host: sticky\n  trafficPolicy:\n    loadBalancer: {{simple: RANDOM}}\n    \
         portLevelSettings: [{{port: {{number: 80}}, loadBalancer: {{consistentHash: {{useSourceIp: true}}}}}}]\n\
         ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: lr, namespace: demo}}\n\
         spec: {{host: least.demo.svc.cluster.local, trafficPolicy: {{loadBalancer: {{simple: LEAST_REQUEST}}}}}}\n",
        svc("sticky", 2),
        svc("least", 3),
        ip(net, 1, 11)
    );
    let mesh = start_mesh(net, &extra).await;
    let v1 = echo_server(SocketAddr::new(ip(net, 2, 10), 8080)).await;
    let v2 = echo_server(SocketAddr::new(ip(net, 2, 11), 8080)).await;
    let data = pattern(10);
    let call = |from, vip: &str| {
        let socks = mesh.a.socks5_addr;
        let vip: SocketAddr = vip.parse().unwrap();
        let data = data.clone();
        async move {
            let (code, s) = socks_connect(from, socks, Dest::Addr(vip)).await;
            assert_eq!(code, 0);
            assert!(echo_roundtrip(s, data.clone()).await.unwrap() == *data);
        }
    };
    let (c1, c2) = (ip(net, 1, 10), ip(net, 1, 11));

    // ROUND_ROBIN alternates: 6 calls, 3 each.
    for _ in 0..6 {
        call(c1, &format!("10.{net}.0.1:80")).await;
    }
    assert_eq!((v1.total(), v2.total()), (3, 3));

    // consistentHash useSourceIp (port-level, over the rule's RANDOM): each client sticks.
    for client in [c1, c2] {
        let before = (v1.total(), v2.total());
        for _ in 0..6 {
            call(client, &format!("10.{net}.0.2:80")).await;
        }
        let got = (v1.total() - before.0, v2.total() - before.1);
        assert!(got == (6, 0) || got == (0, 6), "client {client} spread over backends: {got:?}");
    }

    // LEAST_REQUEST: with one connection held open on one backend, the next goes to the other.
    let before = (v1.total(), v2.total());
    let (code, held) =
        socks_connect(c1, mesh.a.socks5_addr, Dest::Addr(format!("10.{net}.0.3:80").parse().unwrap())).await;
    assert_eq!(code, 0);
    wait_total(&[&v1, &v2], before.0 + before.1 + 1).await;
    let first_v1 = v1.total() > before.0;
    for _ in 0..3 {
        call(c1, &format!("10.{net}.0.3:80")).await;
    }
    let got = (v1.total() - before.0, v2.total() - before.1);
    assert_eq!(got, if first_v1 { (1, 3) } else { (3, 1) }, "least request avoids the busy backend");
    drop(held);
}
