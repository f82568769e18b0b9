//! Shared test fixtures: an in-process CA, real certificates, an HBONE server on
//! 127.0.0.1:0 with a scriptable handler, and a pool talking to it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mesh_hbone::{
    ConnectHandler, ConnectParams, ConnectRequest, HboneServer, Pool, PoolKey, PoolSettings, Responder,
    ServerSettings, ServerTls, SpiffeId, StaticCerts, TcpDialer,
};
use mesh_identity::cert::local::LocalCa;
use mesh_identity::{Identity, TrustBundle, WorkloadCert, server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Authority ports select the handler's behaviour.
pub const ECHO: u16 = 7;
pub const COUNT_THEN_REPLY: u16 = 9;
pub const REFUSE_401: u16 = 401;
pub const PANIC: u16 = 666;
pub const RESET: u16 = 13;

pub fn id(td: &str, ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(td, ns, sa).unwrap()
}

pub fn issue(ca: &LocalCa, id: &SpiffeId) -> Arc<WorkloadCert> {
    let now = SystemTime::now() - Duration::from_secs(60);
    Arc::new(ca.issue(&Identity::Workload(id.clone()), now, Duration::from_secs(3600)).unwrap())
}

pub fn trust(ca: &LocalCa, td: &str) -> TrustBundle {
    TrustBundle::new(td, [ca.root_der().clone()]).unwrap()
}

/// Echo on port 7, read-to-EOF-then-reply on 9, 401 on 401, panic on 666, reset on 13;
/// records requests.
#[derive(Debug, Default)]
pub struct TestHandler {
    pub seen: Mutex<Vec<ConnectRequest>>,
}

impl ConnectHandler for TestHandler {
    async fn handle(&self, req: ConnectRequest, responder: Responder) {
        let port = req.authority.port();
        self.seen.lock().unwrap().push(req);
        match port {
            REFUSE_401 => responder.refuse(http::StatusCode::UNAUTHORIZED),
            PANIC => panic!("handler panics on purpose"),
            RESET => drop(responder.accept().unwrap()), // dropped while open: RST_STREAM
            COUNT_THEN_REPLY => {
                let mut s = responder.accept().unwrap();
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.unwrap();
                s.write_all(format!("got {} bytes", buf.len()).as_bytes()).await.unwrap();
                s.shutdown().await.unwrap();
            }
            _ => {
                let s = responder.accept().unwrap();
                let (mut r, mut w) = tokio::io::split(s);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            }
        }
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub id: SpiffeId,
    pub handler: Arc<TestHandler>,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), mesh_hbone::HboneError>>,
}

pub struct World {
    pub ca: LocalCa,
    pub trust: TrustBundle,
    pub client_id: SpiffeId,
    pub client_cert: Arc<WorkloadCert>,
}

impl World {
    pub fn new() -> Self {
        let ca = LocalCa::new("test-root").unwrap();
        let trust = trust(&ca, "cluster.local");
        let client_id = id("cluster.local", "client-ns", "client-sa");
        let client_cert = issue(&ca, &client_id);
        World { ca, trust, client_id, client_cert }
    }

    pub async fn server(&self, settings: ServerSettings) -> TestServer {
        let sid = id("cluster.local", "server-ns", "server-sa");
        let cert = issue(&self.ca, &sid);
        let config = Arc::new(server_config(&cert, &self.trust).unwrap());
        // Exercise the per-local-address form: 127.0.0.1 has an identity.
        let tls = ServerTls::by_local_addr(move |local| local.ip().is_loopback().then(|| config.clone()));
        let handler = Arc::new(TestHandler::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = HboneServer::new(settings, tls, handler.clone());
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        TestServer { addr, id: sid, handler, stop: Some(stop), task }
    }

    pub fn pool(&self, settings: PoolSettings) -> Pool {
        let certs =
            StaticCerts::new([(self.client_id.clone(), self.client_cert.clone())], self.trust.clone());
        Pool::new(settings, Arc::new(certs), Arc::new(TcpDialer))
    }

    pub fn key(&self, server: &TestServer) -> PoolKey {
        PoolKey {
            src: self.client_id.clone(),
            dst_identities: Arc::from(vec![server.id.clone()]),
            addr: server.addr,
            src_addr: None,
        }
    }
}

pub fn params(port: u16) -> ConnectParams {
    ConnectParams::new(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Polls `f` until true or the deadline passes.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
