//! The HBONE rustls configs over real TCP with certificates from an in-process CA: mutual
//! TLS 1.3 with ALPN h2 and SPIFFE peer identities, and the refusals of the verifiers.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_identity::cert::local::LocalCa;
use mesh_identity::{
    Identity, NodeId, SpiffeId, TrustBundle, WorkloadCert, client_config, peer_identity, server_config,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn id(td: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(td, "default", sa).unwrap()
}

fn issue(ca: &LocalCa, identity: impl Into<Identity>) -> WorkloadCert {
    ca.issue(&identity.into(), SystemTime::now() - Duration::from_secs(60), Duration::from_secs(3600))
        .unwrap()
}

/// Returns (server's view of the client, client's view of the server), or each side's error.
async fn exchange(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
) -> (Result<SpiffeId, String>, Result<SpiffeId, String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = peer_identity(tls.get_ref().1).map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        tls.write_all(&b).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    });
    let cli = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("10.0.0.1").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(tls.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let peer = peer_identity(tls.get_ref().1).map_err(|e| e.to_string())?;
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    };
    let c = tokio::time::timeout(Duration::from_secs(10), cli).await.unwrap();
    let s = tokio::time::timeout(Duration::from_secs(10), srv).await.unwrap().unwrap();
    (s, c)
}

#[tokio::test]
async fn mutual_tls_and_refusals() {
    let ca = LocalCa::new("tls-test").unwrap();
    let trust = TrustBundle::new("cluster.local", [ca.root_der().clone()]).unwrap();
    let a = issue(&ca, id("cluster.local", "a"));
    let b = issue(&ca, id("cluster.local", "b"));

    let (s, c) = exchange(
        server_config(&b, &trust).unwrap(),
        client_config(&a, &trust, vec![id("cluster.local", "b")]).unwrap(),
    )
    .await;
    assert_eq!(s.unwrap(), id("cluster.local", "a"));
    assert_eq!(c.unwrap(), id("cluster.local", "b"));

    // Same root, another trust domain: the server refuses the client.
    let foreign = issue(&ca, id("other.org", "a"));
    let (s, _) = exchange(
        server_config(&b, &trust).unwrap(),
        client_config(&foreign, &trust, vec![id("cluster.local", "b")]).unwrap(),
    )
    .await;
    assert!(s.unwrap_err().contains("is not in trust domain cluster.local"));

    // A node identity is never a workload peer, on either side.
    let node = issue(&ca, NodeId::new("cluster.local", "n1").unwrap());
    let (s, _) = exchange(
        server_config(&b, &trust).unwrap(),
        client_config(&node, &trust, vec![id("cluster.local", "b")]).unwrap(),
    )
    .await;
    assert!(s.unwrap_err().contains("is not a workload SPIFFE ID"));
    let (_, c) = exchange(
        server_config(&node, &trust).unwrap(),
        client_config(&a, &trust, vec![id("cluster.local", "b")]).unwrap(),
    )
    .await;
    assert!(c.unwrap_err().contains("is not a workload SPIFFE ID"));

    // The server is b, the client expects only c.
    let (_, c) = exchange(
        server_config(&b, &trust).unwrap(),
        client_config(&a, &trust, vec![id("cluster.local", "c")]).unwrap(),
    )
    .await;
    assert!(c.unwrap_err().contains("is not one of the expected"));

    // No expectation at all is a configuration error, not an open door.
    assert!(client_config(&a, &trust, vec![]).is_err());
}

#[test]
fn only_tls13_aes_gcm() {
    let p = mesh_identity::tls::provider();
    let names: Vec<String> = p.cipher_suites.iter().map(|s| format!("{:?}", s.suite())).collect();
    assert_eq!(names, ["TLS13_AES_128_GCM_SHA256", "TLS13_AES_256_GCM_SHA384"]);
}
