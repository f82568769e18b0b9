//! mesh-ca over real gRPC on 127.0.0.1:0 with real TLS and temp dirs: node bootstrap,
//! placement-based authorization, CSR checks, and HBONE-style TLS 1.3 handshakes (tokio-rustls
//! over TCP) between the identities it issues, including the ones that must fail.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_ca::authority::check_csr;
use mesh_ca::{Authority, CaConfig, CaOptions, RootCa, RunningCa};
use mesh_identity::cert::local::LocalCa;
use mesh_identity::{
    CaAuth, CaClient, CaClientConfig, CaClientError, CertManager, CertManagerConfig, Identity, NodeBootstrap,
    SpiffeId, TokenSource, TrustBundle, WorkloadCert, bootstrap_node, client_config, new_csr, peer_identity,
    server_config,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TD: &str = "cluster.local";
const TOKEN_A: &str = "token-node-a-0123456789";
const TOKEN_B: &str = "token-node-b-0123456789";

struct Env {
    dir: tempfile::TempDir,
    ca: RunningCa,
    opts: CaOptions,
}

impl Env {
    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn client_config(&self) -> CaClientConfig {
        CaClientConfig::new(format!("https://{}", self.ca.local_addr), self.ca.root_pem.clone())
    }

    fn trust(&self) -> TrustBundle {
        TrustBundle::from_pem(TD, &self.ca.root_pem).unwrap()
    }

    async fn bootstrap(&self, node: &str) -> NodeBootstrap {
        let token_file = self.dir.path().join(format!("{node}.token"));
        bootstrap_node(self.client_config(), TD, node, token_file, CertManagerConfig::default())
            .await
            .unwrap()
    }

    fn token_client(&self, token: &str) -> CaClient {
        CaClient::new(self.client_config(), CaAuth::Token(TokenSource::Static(token.into())))
    }

    /// The CA's root, loaded from the state dir like a restart would, to mint odd certificates.
    fn authority(&self) -> Authority {
        let root = RootCa::load_or_create(None, &self.state_dir(), TD).unwrap();
        Authority::new(root, Duration::from_secs(3600), Duration::from_secs(86400))
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A config file with relative paths next to the model fixture and the node tokens.
async fn start_env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/model.yaml");
    std::fs::create_dir(dir.path().join("model")).unwrap();
    std::fs::copy(&fixture, dir.path().join("model/bookinfo.yaml")).unwrap();
    write(&dir.path().join("tokens"), &format!("# lab nodes\nnode-a {TOKEN_A}\nnode-b {TOKEN_B}\n"));
    write(&dir.path().join("node-a.token"), &format!("{TOKEN_A}\n"));
    write(&dir.path().join("node-b.token"), TOKEN_B);
    write(
        &dir.path().join("ca.yaml"),
        "trustDomain: cluster.local\ndefaultTtl: 1h\nmaxTtl: 2d\nmodel: [model]\nnodeTokensFile: tokens\n",
    );
    let config = CaConfig::load(&dir.path().join("ca.yaml")).unwrap();
    let opts =
        CaOptions { config, state_dir: dir.path().join("state"), listen: "127.0.0.1:0".parse().unwrap() };
    let ca = mesh_ca::start(opts.clone()).await.unwrap();
    Env { dir, ca, opts }
}

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new(TD, "bookinfo", sa).unwrap()
}

fn wid(sa: &str) -> Identity {
    Identity::Workload(id(sa))
}

/// One TLS exchange over real TCP. Returns what each side saw of the other, or its error.
async fn handshake(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
) -> (Result<SpiffeId, String>, Result<SpiffeId, String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let conn = tls.get_ref().1;
        assert_eq!(conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
        let peer = peer_identity(conn).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"hello");
        tls.write_all(b"world").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.ok();
        Ok::<_, String>(peer)
    });
    let client_side = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        // The name is neither sent (no SNI) nor checked: identity is the SPIFFE ID.
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
        let peer = peer_identity(tls.get_ref().1).map_err(|e| e.to_string())?;
        tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"world");
        Ok::<_, String>(peer)
    };
    let client_result = tokio::time::timeout(Duration::from_secs(10), client_side).await.unwrap();
    let server_result = tokio::time::timeout(Duration::from_secs(10), server_side).await.unwrap().unwrap();
    (server_result, client_result)
}

#[tokio::test]
async fn nodes_get_their_own_pods_and_handshake() {
    let env = start_env().await;
    let a = env.bootstrap("node-a").await;
    let b = env.bootstrap("node-b").await;
    let node_cert = a.node_certs.fetch_node(&a.node).await.unwrap();
    assert_eq!(node_cert.identity().to_string(), "spiffe://cluster.local/node/node-a");

    let certs_a = CertManager::new(a.client.clone(), CertManagerConfig::default());
    let certs_b = CertManager::new(b.client.clone(), CertManagerConfig::default());
    let productpage = certs_a.fetch(&id("bookinfo-productpage")).await.unwrap();
    let reviews = certs_b.fetch(&id("bookinfo-reviews")).await.unwrap();
    // Leaf first, root last; the root is the CA's.
    assert_eq!(productpage.chain().len(), 2);
    assert_eq!(productpage.chain_pem().last().unwrap().trim(), env.ca.root_pem.trim());
    // Asked for 24 h, maxTtl 2 d: 24 h plus the one-minute backdate.
    let life = productpage.not_after().duration_since(productpage.not_before()).unwrap();
    assert_eq!(life, Duration::from_secs(24 * 3600 + 60));

    let trust = env.trust();
    let server = server_config(&reviews, &trust).unwrap();
    let client = client_config(&productpage, &trust, vec![id("bookinfo-reviews")]).unwrap();
    let (server_saw, client_saw) = handshake(server, client).await;
    assert_eq!(server_saw.unwrap(), id("bookinfo-productpage"));
    assert_eq!(client_saw.unwrap(), id("bookinfo-reviews"));
}

#[tokio::test]
async fn node_is_refused_a_pod_on_another_node() {
    let env = start_env().await;
    let a = env.bootstrap("node-a").await;
    let csr = new_csr(&wid("bookinfo-reviews")).unwrap();
    let err = a
        .client
        .create_certificate(&wid("bookinfo-reviews"), &csr.csr_pem, Duration::ZERO)
        .await
        .unwrap_err();
    match &err {
        CaClientError::Status { code, message, .. } => {
            assert_eq!(*code, tonic::Code::PermissionDenied);
            assert_eq!(
                message,
                "no pod on node node-a runs as spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews \
                 (pods with it run on node-b)"
            );
        }
        other => panic!("expected PERMISSION_DENIED, got {other}"),
    }
    // An identity no pod has at all.
    let csr = new_csr(&wid("nobody")).unwrap();
    let err = a.client.create_certificate(&wid("nobody"), &csr.csr_pem, Duration::ZERO).await.unwrap_err();
    assert!(matches!(&err, CaClientError::Status { code: tonic::Code::PermissionDenied, .. }), "{err}");
    assert!(err.to_string().contains("no pod anywhere has this identity"), "{err}");
    // Another node's node identity, with a certificate or a token.
    let node_b: Identity =
        "spiffe://cluster.local/node/node-b".parse::<mesh_identity::NodeId>().unwrap().into();
    let csr = new_csr(&node_b).unwrap();
    let err = a.client.create_certificate(&node_b, &csr.csr_pem, Duration::ZERO).await.unwrap_err();
    assert!(err.to_string().contains("node node-a may not obtain the identity of node node-b"), "{err}");
    let err = env
        .token_client(TOKEN_A)
        .create_certificate(&node_b, &csr.csr_pem, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(&err, CaClientError::Status { code: tonic::Code::PermissionDenied, .. }), "{err}");
    // A token alone never yields a workload identity.
    let csr = new_csr(&wid("bookinfo-productpage")).unwrap();
    let err = env
        .token_client(TOKEN_A)
        .create_certificate(&wid("bookinfo-productpage"), &csr.csr_pem, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("node certificate only"), "{err}");
}

#[tokio::test]
async fn model_changes_are_followed() {
    let env = start_env().await;
    let a = env.bootstrap("node-a").await;
    // reviews moves to node-a: the watched model lets node-a have it within a deadline.
    let model = env.dir.path().join("model/bookinfo.yaml");
    let text = std::fs::read_to_string(&model).unwrap();
    write(&model, &text.replace("nodeName: node-b", "nodeName: node-a"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let csr = new_csr(&wid("bookinfo-reviews")).unwrap();
        match a.client.create_certificate(&wid("bookinfo-reviews"), &csr.csr_pem, Duration::ZERO).await {
            Ok(chain) => {
                assert!(WorkloadCert::from_issued(wid("bookinfo-reviews"), csr, chain).is_ok());
                break;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert!(
                    matches!(e, CaClientError::Status { code: tonic::Code::PermissionDenied, .. }),
                    "{e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("model change not seen within 5 s: {e}"),
        }
    }
}

#[tokio::test]
async fn bad_token_is_unauthenticated() {
    let env = start_env().await;
    let node_a: Identity =
        "spiffe://cluster.local/node/node-a".parse::<mesh_identity::NodeId>().unwrap().into();
    let csr = new_csr(&node_a).unwrap();
    let err = env
        .token_client("not-a-token-of-any-node")
        .create_certificate(&node_a, &csr.csr_pem, Duration::ZERO)
        .await
        .unwrap_err();
    match &err {
        CaClientError::Status { code, message, .. } => {
            assert_eq!(*code, tonic::Code::Unauthenticated);
            assert_eq!(message, "bearer token matches no node");
        }
        other => panic!("expected UNAUTHENTICATED, got {other}"),
    }
    // Bootstrapping with a missing token file fails before any call, naming the file.
    let missing = env.dir.path().join("missing.token");
    let err = bootstrap_node(env.client_config(), TD, "node-a", missing, CertManagerConfig::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing.token"), "{err}");
}

fn csr_with(key_alg: &'static rcgen::SignatureAlgorithm, sans: Vec<rcgen::SanType>, ca: bool) -> String {
    let key = rcgen::KeyPair::generate_for(key_alg).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = sans;
    if ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn uri(s: &str) -> rcgen::SanType {
    rcgen::SanType::URI(s.to_string().try_into().unwrap())
}

#[tokio::test]
async fn bad_csrs_are_refused() {
    let env = start_env().await;
    let a = env.bootstrap("node-a").await;
    let pp = wid("bookinfo-productpage");
    let pp_uri = pp.to_string();
    let expect_invalid = |r: Result<Vec<String>, CaClientError>, needle: &str| match r {
        Err(CaClientError::Status { code: tonic::Code::InvalidArgument, message, .. }) => {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}")
        }
        other => panic!("expected INVALID_ARGUMENT containing {needle:?}, got {other:?}"),
    };

    let two_sans = csr_with(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        vec![uri(&pp_uri), rcgen::SanType::DnsName("x.example".try_into().unwrap())],
        false,
    );
    expect_invalid(
        a.client.create_certificate(&pp, &two_sans, Duration::ZERO).await,
        "SAN: 2 names (URI:spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage, DNS:x.example), expected exactly one SPIFFE URI",
    );
    let ed25519 = csr_with(&rcgen::PKCS_ED25519, vec![uri(&pp_uri)], false);
    expect_invalid(
        a.client.create_certificate(&pp, &ed25519, Duration::ZERO).await,
        "key: Ed25519 keys are not accepted (ECDSA P-256, P-384 or RSA >= 2048)",
    );
    let ca_req = csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, vec![uri(&pp_uri)], true);
    expect_invalid(
        a.client.create_certificate(&pp, &ca_req, Duration::ZERO).await,
        "asks for a CA certificate",
    );
    let no_san = csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, vec![], false);
    expect_invalid(a.client.create_certificate(&pp, &no_san, Duration::ZERO).await, "SAN: none");
    expect_invalid(
        a.client.create_certificate(&pp, "garbage", Duration::ZERO).await,
        "not a PEM CERTIFICATE REQUEST",
    );
    // ImpersonatedIdentity (what the client says it asks for) must match the CSR.
    let ratings_csr = new_csr(&wid("bookinfo-ratings")).unwrap();
    expect_invalid(
        a.client.create_certificate(&pp, &ratings_csr.csr_pem, Duration::ZERO).await,
        "does not match the CSR's SAN spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings",
    );
    let ok_csr = new_csr(&pp).unwrap();

    // P-384 is accepted for istio-proxy compatibility; validity above maxTtl is clamped.
    let p384 = csr_with(&rcgen::PKCS_ECDSA_P384_SHA384, vec![uri(&pp_uri)], false);
    let chain = a.client.create_certificate(&pp, &p384, Duration::from_secs(30 * 86400)).await.unwrap();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(chain[0].as_bytes()).unwrap();
    let der: rustls::pki_types::CertificateDer<'static> = der;
    let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
    let life = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert_eq!(life, 2 * 86400 + 60, "clamped to maxTtl (2d) plus the backdate");
    assert!(!leaf.is_ca());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    // RSA (>= 2048 bits) too, with keyEncipherment added to its key usage.
    let rsa = csr_with(&rcgen::PKCS_RSA_SHA256, vec![uri(&pp_uri)], false);
    let chain = a.client.create_certificate(&pp, &rsa, Duration::ZERO).await.unwrap();
    let der: rustls::pki_types::CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(chain[0].as_bytes()).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment());
    // And the ordinary P-256 CSR still works.
    assert!(a.client.create_certificate(&pp, &ok_csr.csr_pem, Duration::ZERO).await.is_ok());
}

#[tokio::test]
async fn tls_rejects_foreign_expired_and_unexpected_peers() {
    let env = start_env().await;
    let a = env.bootstrap("node-a").await;
    let b = env.bootstrap("node-b").await;
    let certs_a = CertManager::new(a.client.clone(), CertManagerConfig::default());
    let certs_b = CertManager::new(b.client.clone(), CertManagerConfig::default());
    let productpage = certs_a.fetch(&id("bookinfo-productpage")).await.unwrap();
    let ratings = certs_a.fetch(&id("bookinfo-ratings")).await.unwrap();
    let reviews = certs_b.fetch(&id("bookinfo-reviews")).await.unwrap();
    let trust = env.trust();
    let reviews_server = || server_config(&reviews, &trust).unwrap();

    // A client certificate from a second CA (another trust domain): no chain to our root.
    let other_ca = LocalCa::new("other").unwrap();
    let foreign_id: Identity =
        "spiffe://other.org/ns/bookinfo/sa/bookinfo-productpage".parse::<SpiffeId>().unwrap().into();
    let foreign =
        other_ca.issue(&foreign_id, std::time::SystemTime::now(), Duration::from_secs(3600)).unwrap();
    let client = client_config(&foreign, &trust, vec![id("bookinfo-reviews")]).unwrap();
    let (server_saw, client_saw) = handshake(reviews_server(), client).await;
    let e = server_saw.unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
    assert!(client_saw.is_err());

    // Our own root, but another trust domain in the SAN: refused by the trust-domain check.
    let authority = env.authority();
    let csr = new_csr(&foreign_id).unwrap();
    let checked = check_csr(&csr.csr_pem).unwrap();
    let chain = authority.issue(&checked, Duration::from_secs(3600)).unwrap();
    let foreign_td = WorkloadCert::from_issued(foreign_id.clone(), csr, chain).unwrap();
    let client = client_config(&foreign_td, &trust, vec![id("bookinfo-reviews")]).unwrap();
    let (server_saw, _) = handshake(reviews_server(), client).await;
    let e = server_saw.unwrap_err();
    assert!(
        e.contains("peer identity spiffe://other.org/ns/bookinfo/sa/bookinfo-productpage is not in trust domain cluster.local"),
        "{e}"
    );

    // An expired client certificate (valid two days ago for one day).
    let csr = new_csr(&wid("bookinfo-productpage")).unwrap();
    let checked = check_csr(&csr.csr_pem).unwrap();
    let past = time::OffsetDateTime::now_utc() - time::Duration::days(2);
    let chain = authority.issue_at(&checked, past, Duration::from_secs(86400)).unwrap();
    let expired = WorkloadCert::from_issued(wid("bookinfo-productpage"), csr, chain).unwrap();
    assert!(!expired.is_valid_at(std::time::SystemTime::now()));
    let client = client_config(&expired, &trust, vec![id("bookinfo-reviews")]).unwrap();
    let (server_saw, _) = handshake(reviews_server(), client).await;
    let e = server_saw.unwrap_err();
    assert!(e.contains("certificate expired"), "{e}");
    // ... and an expired server certificate, seen by the client.
    let client = client_config(&productpage, &trust, vec![id("bookinfo-productpage")]).unwrap();
    let (_, client_saw) = handshake(server_config(&expired, &trust).unwrap(), client).await;
    let e = client_saw.unwrap_err();
    assert!(e.contains("certificate expired"), "{e}");

    // Unexpected server identity: the client expects ratings, the server is reviews.
    let client = client_config(&productpage, &trust, vec![id("bookinfo-ratings")]).unwrap();
    let (_, client_saw) = handshake(reviews_server(), client).await;
    let e = client_saw.unwrap_err();
    assert!(
        e.contains(
            "peer identity spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews is not one of the expected"
        ),
        "{e}"
    );
    // With the right expectation (one of several) the same pair works.
    let client =
        client_config(&productpage, &trust, vec![id("bookinfo-ratings"), id("bookinfo-reviews")]).unwrap();
    let (server_saw, client_saw) = handshake(reviews_server(), client).await;
    assert_eq!(server_saw.unwrap(), id("bookinfo-productpage"));
    assert_eq!(client_saw.unwrap(), id("bookinfo-reviews"));

    // A node certificate is not a workload peer.
    let node_cert = a.node_certs.fetch_node(&a.node).await.unwrap();
    let client = client_config(&node_cert, &trust, vec![id("bookinfo-reviews")]).unwrap();
    let (server_saw, _) = handshake(reviews_server(), client).await;
    let e = server_saw.unwrap_err();
    assert!(e.contains("spiffe://cluster.local/node/node-a\" is not a workload SPIFFE ID"), "{e}");
    drop(ratings);
}

#[tokio::test]
async fn root_key_is_private_and_reused_after_restart() {
    use std::os::unix::fs::PermissionsExt;
    let env = start_env().await;
    let key = env.state_dir().join(mesh_ca::ROOT_KEY_FILE);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "root key mode {mode:o}");
    let first_root = env.ca.root_pem.clone();
    let a = env.bootstrap("node-a").await;
    let before = CertManager::new(a.client.clone(), CertManagerConfig::default())
        .fetch(&id("bookinfo-productpage"))
        .await
        .unwrap();

    let Env { dir, ca, opts } = env;
    ca.shutdown().await.unwrap();
    let ca = mesh_ca::start(opts.clone()).await.unwrap();
    assert_eq!(ca.root_pem, first_root, "restart reuses the root");
    let env = Env { dir, ca, opts };
    // A certificate issued before the restart still verifies against the restarted CA's root.
    let trust = env.trust();
    let b = env.bootstrap("node-b").await;
    let reviews = CertManager::new(b.client.clone(), CertManagerConfig::default())
        .fetch(&id("bookinfo-reviews"))
        .await
        .unwrap();
    let (server_saw, client_saw) = handshake(
        server_config(&reviews, &trust).unwrap(),
        client_config(&before, &trust, vec![id("bookinfo-reviews")]).unwrap(),
    )
    .await;
    assert_eq!(server_saw.unwrap(), id("bookinfo-productpage"));
    assert_eq!(client_saw.unwrap(), id("bookinfo-reviews"));
}
