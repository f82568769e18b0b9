//! Upstream HTTP: hyper clients whose connections are HBONE streams. A client connection to
//! `http://<pod ip>:<port>` is one CONNECT stream (authority `<pod ip>:<port>`) on a pooled
//! mTLS connection to `<pod ip>:15008`, expecting the pod's SPIFFE identity; hyper keeps the
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
use mesh_model::ModelHandle;

/// Request and response bodies through the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// HBONE port of every pod (its ztunnel's listener in the pod).
pub const HBONE_PORT: u16 = 15008;

/// Opens HBONE streams for hyper's client.
#[derive(Clone)]
pub struct HboneConnector {
    pool: Pool,
    model: ModelHandle,
    own: Arc<SpiffeId>,
}

impl std::fmt::Debug for HboneConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HboneConnector").field("own", &self.own.to_string()).finish()
    }
}

/// Why an upstream connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("upstream URI {0} has no IP:port authority")]
    BadUri(Uri),
    #[error("no mesh workload at {0}: cannot tell which identity to expect")]
    UnknownEndpoint(IpAddr),
    #[error(transparent)]
    Hbone(#[from] HboneError),
}

impl tower_service::Service<Uri> for HboneConnector {
    type Response = HboneIo;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<HboneIo, ConnectError>> + Send>>;

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
            let identity = {
                let model = this.model.load();
                let w =
                    model.workload_by_ip(target.ip()).ok_or(ConnectError::UnknownEndpoint(target.ip()))?;
                w.identity.clone()
            };
            let key = PoolKey {
                src: (*this.own).clone(),
                dst_identities: Arc::from(vec![(*identity).clone()]),
                addr: SocketAddr::new(target.ip(), HBONE_PORT),
                src_addr: None,
            };
            let stream = this.pool.connect(&key, ConnectParams::new(target)).await?;
            Ok(HboneIo(TokioIo::new(stream)))
        })
    }
}

/// An HBONE stream as a hyper connection.
#[derive(Debug)]
pub struct HboneIo(TokioIo<H2Stream>);

impl Connection for HboneIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for HboneIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for HboneIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The two upstream clients: HTTP/1.1 and HTTP/2 (h2c prior knowledge, also gRPC).
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub http1: Client<HboneConnector, Body>,
    pub http2: Client<HboneConnector, Body>,
}

impl Upstreams {
    pub fn new(pool: Pool, model: ModelHandle, own: Arc<SpiffeId>) -> Upstreams {
        let connector = HboneConnector { pool, model, own };
        let http1 = Client::builder(TokioExecutor::new()).build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new()).http2_only(true).build(connector);
        Upstreams { http1, http2 }
    }
}
