//! Upstream HTTP: hyper clients whose connections are HBONE streams or, for endpoints outside
//! the mesh, plain TCP. A client connection to `http://<pod ip>:<port>` of a captured pod is one
//! CONNECT stream (authority `<pod ip>:<port>`) on a pooled mTLS connection to
//! `<pod ip>:15008`, expecting the pod's SPIFFE identity. An endpoint whose workload is not
//! captured (`istio.io/dataplane-mode: none`, a namespace outside the ambient mesh) or that is
//! no workload at all (a ServiceEntry address) has no ztunnel to terminate HBONE, so it is
//! dialled directly, as Istio's waypoint does for out-of-mesh destinations. hyper keeps the
//! HTTP connections alive and reuses them per endpoint (HTTP/1.1) or multiplexes (HTTP/2).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Uri;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_api::SpiffeId;
use mesh_hbone::{ConnectParams, H2Stream, HboneError, Pool, PoolKey};
use mesh_model::{Model, ModelHandle};
use tokio::net::TcpStream;

use crate::proxy::inbound::PortProtocol;
use mesh_api::istio::networking::H2UpgradePolicy;

use crate::upstream::PoolSettings;

/// Request and response bodies through the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// HBONE port of every pod (its ztunnel's listener in the pod).
pub const HBONE_PORT: u16 = 15008;

/// Opens upstream connections for hyper's client: HBONE for captured pods, plain TCP otherwise
/// (see the module comment).
#[derive(Clone)]
pub struct MeshConnector {
    pool: Pool,
    model: ModelHandle,
    own: Arc<SpiffeId>,
}

impl std::fmt::Debug for MeshConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshConnector").field("own", &self.own.to_string()).finish()
    }
}

/// Why an upstream connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("upstream URI {0} has no IP:port authority")]
    BadUri(Uri),
    #[error(transparent)]
    Hbone(#[from] HboneError),
    #[error("connecting to {addr}: {source}")]
    Plain {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How an endpoint is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// HBONE to the pod's ztunnel, expecting this identity.
    Hbone(Arc<SpiffeId>),
    /// Plain TCP: the endpoint is outside the mesh.
    Plain,
}

impl Transport {
    /// HBONE when the address is a captured workload's; plain TCP for an uncaptured workload
    /// or an address that is no workload (the route chose it, so it is allowed).
    pub fn for_endpoint(model: &Model, ip: IpAddr) -> Transport {
        match model.workload_by_ip(ip) {
            Some(w) if w.captured => Transport::Hbone(w.identity.clone()),
            _ => Transport::Plain,
        }
    }
}

impl tower_service::Service<Uri> for MeshConnector {
    type Response = UpstreamIo;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let target: SocketAddr = uri
                .authority()
                .and_then(|a| a.as_str().parse().ok())
                .ok_or_else(|| ConnectError::BadUri(uri.clone()))?;
            this.connect(target).await
        })
    }
}

impl MeshConnector {
    /// Opens a connection to `target`: HBONE to a captured pod, plain TCP otherwise.
    pub async fn connect(&self, target: SocketAddr) -> Result<UpstreamIo, ConnectError> {
        let identity = match Transport::for_endpoint(&self.model.load(), target.ip()) {
            Transport::Hbone(id) => id,
            Transport::Plain => {
                let s = TcpStream::connect(target)
                    .await
                    .map_err(|source| ConnectError::Plain { addr: target, source })?;
                // Small request/response exchanges: don't let Nagle hold the last segment.
                s.set_nodelay(true).map_err(|source| ConnectError::Plain { addr: target, source })?;
                return Ok(UpstreamIo::Plain(TokioIo::new(s)));
            }
        };
        let key = PoolKey {
            src: (*self.own).clone(),
            dst_identities: Arc::from(vec![(*identity).clone()]),
            addr: SocketAddr::new(target.ip(), HBONE_PORT),
            src_addr: None,
        };
        let stream = self.pool.connect(&key, ConnectParams::new(target)).await?;
        Ok(UpstreamIo::Hbone(TokioIo::new(stream)))
    }
}

/// An upstream connection as hyper sees it: an HBONE stream or a plain TCP socket.
#[derive(Debug)]
pub enum UpstreamIo {
    Hbone(TokioIo<H2Stream>),
    Plain(TokioIo<TcpStream>),
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Hbone(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Hbone(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Hbone(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Hbone(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Hbone(s) => s.is_write_vectored(),
            UpstreamIo::Plain(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Hbone(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
}

/// Whether a request goes upstream over HTTP/2 (h2c prior knowledge): always from `http2` and
/// `grpc` ports; else the client's own protocol under the DestinationRule's
/// `useClientProtocol`, HTTP/2 under `h2UpgradePolicy: UPGRADE` (Istio's mesh default is not
/// to upgrade; CONNECT is never upgraded), and otherwise HTTP/2 only for HTTP/2 sniffed on a
/// port of unknown protocol.
pub fn upstream_h2(
    protocol: PortProtocol,
    version: http::Version,
    method: &http::Method,
    pool: &PoolSettings,
) -> bool {
    match protocol {
        PortProtocol::Http2 | PortProtocol::Grpc => true,
        _ if pool.use_client_protocol => version == http::Version::HTTP_2,
        _ if pool.h2_upgrade == H2UpgradePolicy::Upgrade && method != http::Method::CONNECT => true,
        PortProtocol::Unknown => version == http::Version::HTTP_2,
        _ => false,
    }
}

/// The upstream clients: HTTP/1.1 and HTTP/2 (h2c prior knowledge, also gRPC). Routed
/// requests go through [`crate::proxy::pool`] on `connector`; mirrors (fire-and-forget, no
/// DestinationRule limits) use `http1` and `http2`.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub connector: MeshConnector,
    pub http1: Client<MeshConnector, Body>,
    pub http2: Client<MeshConnector, Body>,
}

impl Upstreams {
    pub fn new(pool: Pool, model: ModelHandle, own: Arc<SpiffeId>) -> Upstreams {
        let connector = MeshConnector { pool, model, own };
        let http1 = Client::builder(TokioExecutor::new()).build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new()).http2_only(true).build(connector.clone());
        Upstreams { connector, http1, http2 }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn upstream_protocol_follows_the_port_then_the_destination_rule() {
        use http::{Method, Version};
        let pool = |upgrade, client| PoolSettings {
            h2_upgrade: upgrade,
            use_client_protocol: client,
            ..Default::default()
        };
        let get = Method::GET;
        let plain = pool(H2UpgradePolicy::Default, false);
        assert!(upstream_h2(PortProtocol::Grpc, Version::HTTP_11, &get, &plain));
        assert!(upstream_h2(PortProtocol::Http2, Version::HTTP_11, &get, &plain));
        assert!(!upstream_h2(PortProtocol::Http, Version::HTTP_2, &get, &plain), "no upgrade by default");
        assert!(
            upstream_h2(PortProtocol::Unknown, Version::HTTP_2, &get, &plain),
            "sniffed HTTP/2 stays HTTP/2"
        );
        assert!(!upstream_h2(PortProtocol::Unknown, Version::HTTP_11, &get, &plain));

        let upgrade = pool(H2UpgradePolicy::Upgrade, false);
        assert!(upstream_h2(PortProtocol::Http, Version::HTTP_11, &get, &upgrade));
        assert!(!upstream_h2(PortProtocol::Http, Version::HTTP_11, &Method::CONNECT, &upgrade));
        let keep = pool(H2UpgradePolicy::DoNotUpgrade, false);
        assert!(!upstream_h2(PortProtocol::Http, Version::HTTP_11, &get, &keep));

        // useClientProtocol wins over the upgrade policy (Istio: the upgrade is then ineffective).
        let client = pool(H2UpgradePolicy::Upgrade, true);
        assert!(!upstream_h2(PortProtocol::Http, Version::HTTP_11, &get, &client));
        assert!(upstream_h2(PortProtocol::Http, Version::HTTP_2, &get, &client));
        assert!(upstream_h2(PortProtocol::Grpc, Version::HTTP_11, &get, &client), "gRPC ports are HTTP/2");
    }

    use mesh_api::{Object, Origin, Parsed, parse_object, split_documents};
    use mesh_model::{MeshConfig, translate};

    use super::*;

    fn model(text: &str) -> Model {
        let mut objects: Vec<(Object, Origin)> = Vec::new();
        for doc in split_documents(text) {
            let doc = doc.expect("YAML document");
            match parse_object(doc.value) {
                Parsed::Object { object, .. } => {
                    objects.push((object, Origin::File { path: "t.yaml".into(), doc: doc.index }))
                }
                other => panic!("not an object: {other:?}"),
            }
        }
        translate(&objects, &MeshConfig::default()).0
    }

    fn pod(name: &str, ns: &str, labels: &str, ip: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\n\
             spec: {{nodeName: n1, serviceAccountName: sa-{name}}}\nstatus: {{phase: Running, podIP: {ip}}}\n"
        )
    }

    fn mesh() -> Model {
        let mut y = String::from(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: amb, labels: {istio.io/dataplane-mode: ambient}}\n\
             ---\napiVersion: v1\nkind: Namespace\nmetadata: {name: legacy}\n",
        );
        y += &pod("in", "amb", "app: in", "10.0.0.1");
        y += &pod("opted-out", "amb", "app: out, istio.io/dataplane-mode: none", "10.0.0.2");
        y += &pod("outside", "legacy", "app: legacy", "10.0.0.3");
        model(&y)
    }

    #[test]
    fn captured_pods_get_hbone_with_their_identity() {
        let m = mesh();
        match Transport::for_endpoint(&m, "10.0.0.1".parse().unwrap()) {
            Transport::Hbone(id) => assert_eq!(id.to_string(), "spiffe://cluster.local/ns/amb/sa/sa-in"),
            Transport::Plain => panic!("a captured pod must be reached over HBONE"),
        }
    }

    #[test]
    fn opted_out_pods_get_plain_tcp() {
        assert_eq!(Transport::for_endpoint(&mesh(), "10.0.0.2".parse().unwrap()), Transport::Plain);
    }

    #[test]
    fn pods_of_namespaces_outside_the_mesh_get_plain_tcp() {
        assert_eq!(Transport::for_endpoint(&mesh(), "10.0.0.3".parse().unwrap()), Transport::Plain);
    }

    #[test]
    fn addresses_that_are_no_workload_get_plain_tcp() {
        assert_eq!(Transport::for_endpoint(&mesh(), "192.0.2.7".parse().unwrap()), Transport::Plain);
    }

    #[tokio::test]
    async fn plain_connection_carries_bytes_both_ways() {
        use hyper::rt::{Read as _, Write as _};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
        });
        let s = TcpStream::connect(addr).await.unwrap();
        let mut io = UpstreamIo::Plain(TokioIo::new(s));
        std::future::poll_fn(|cx| Pin::new(&mut io).poll_write(cx, b"ping")).await.unwrap();
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4];
        let mut rb = hyper::rt::ReadBuf::uninit(&mut buf);
        while rb.filled().len() < 4 {
            std::future::poll_fn(|cx| Pin::new(&mut io).poll_read(cx, rb.unfilled())).await.unwrap();
        }
        assert_eq!(rb.filled(), b"ping");
        server.await.unwrap();
    }
}
