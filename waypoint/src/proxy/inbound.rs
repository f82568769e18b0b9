//! The waypoint's HBONE side: one CONNECT per proxied connection from a ztunnel (or another
//! waypoint), `:authority` = the original `<VIP>:<port>` (or a pod address). The Service port's
//! protocol decides what runs inside the tunnel: HTTP (HTTP/1.1 or h2c, detected by hyper),
//! or L4 forwarding for `tcp`; an undeclared protocol is sniffed from the first bytes.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_hbone::{ConnectHandler, ConnectRequest, HboneServer, Responder, ServerSettings, ServerTls};
use mesh_model::{Service, Workload};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::ctx::Ctx;
use crate::proxy::http::{Conn, HttpService};
use crate::proxy::rewind::Rewind;

/// What a Service port carries, from `appProtocol` or the port name's prefix (Istio's rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProtocol {
    Http,
    Http2,
    Grpc,
    Tcp,
    /// Not declared: sniffed.
    Unknown,
}

impl PortProtocol {
    pub fn of(svc: &Service, port: u16) -> PortProtocol {
        let Some(p) = svc.ports.iter().find(|p| p.port == port) else { return PortProtocol::Unknown };
        let declared = p.app_protocol.as_deref().or(p.name.as_deref()).unwrap_or("");
        let prefix = declared.split(['-', '/']).next().unwrap_or("").to_ascii_lowercase();
        match prefix.as_str() {
            "http" | "http1" | "kubernetes.io" if !declared.contains("h2c") => PortProtocol::Http,
            "http2" | "h2c" | "kubernetes.io/h2c" => PortProtocol::Http2,
            "grpc" | "grpc-web" => PortProtocol::Grpc,
            "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" => PortProtocol::Tcp,
            _ if declared.contains("h2c") => PortProtocol::Http2,
            _ => PortProtocol::Unknown,
        }
    }
}

/// The CONNECT handler.
#[derive(Debug)]
pub struct Handler {
    ctx: Arc<Ctx>,
}

/// Serves HBONE on `listener` until the waypoint stops.
pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener) {
    let tls_ctx = ctx.clone();
    let tls = ServerTls::by_local_addr(move |_local: SocketAddr| tls_ctx.server_tls());
    let settings = ServerSettings { drain_timeout: ctx.config.drain_deadline, ..ServerSettings::default() };
    let server = HboneServer::new(settings, tls, Arc::new(Handler { ctx: ctx.clone() }));
    let mut stop = ctx.stop.clone();
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = server.serve(listener, shutdown).await {
        tracing::error!(error = %e, "HBONE listener failed");
    }
}

impl ConnectHandler for Handler {
    async fn handle(&self, req: ConnectRequest, responder: Responder) {
        let ctx = &self.ctx;
        let model = ctx.model.current();
        let dst = req.authority;
        // A VIP names a Service; a pod address names that pod (and its first Service).
        let (service, pod): (Option<Arc<Service>>, Option<Arc<Workload>>) =
            match model.service_by_vip(dst.ip()) {
                Some(s) => (Some(s.clone()), None),
                None => match model.workload_by_ip(dst.ip()) {
                    Some(w) => {
                        let svc = model
                            .services()
                            .iter()
                            .find(|s| s.endpoints.iter().any(|e| e.ip == dst.ip()))
                            .cloned();
                        (svc, Some(w.clone()))
                    }
                    None => (None, None),
                },
            };
        let Some(service) = service else {
            tracing::warn!(authority = %dst, peer = %req.peer_identity, "CONNECT to an address that is no Service or pod this waypoint serves");
            return responder.refuse(StatusCode::BAD_REQUEST);
        };
        let protocol = PortProtocol::of(&service, dst.port());
        let source = model.workload_by_ip(req.peer_addr.ip()).cloned();
        let conn = Arc::new(Conn {
            ctx: ctx.clone(),
            service,
            pod,
            port: dst.port(),
            peer_addr: req.peer_addr,
            peer_identity: Some(req.peer_identity.clone()),
            source,
            remote_ip: req.forwarded_for,
            protocol,
            ratelimit: Default::default(),
            metric_cache: Default::default(),
            client_ip: Default::default(),
        });
        drop(model);
        let tunnel = match responder.accept() {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "CONNECT stream gone before the answer");
                return;
            }
        };
        match protocol {
            PortProtocol::Tcp => crate::proxy::l4::forward(conn, tunnel).await,
            PortProtocol::Http | PortProtocol::Http2 | PortProtocol::Grpc => {
                serve_http(conn, Rewind::new(tunnel, Bytes::new())).await
            }
            PortProtocol::Unknown => {
                let mut tunnel = tunnel;
                let mut first = vec![0u8; 24];
                let n = match tunnel.read(&mut first).await {
                    Ok(n) => n,
                    Err(_) => return,
                };
                first.truncate(n);
                if looks_like_http(&first) {
                    serve_http(conn, Rewind::new(tunnel, Bytes::from(first))).await;
                } else {
                    crate::proxy::l4::forward(conn, Rewind::new(tunnel, Bytes::from(first))).await;
                }
            }
        }
    }
}

/// An HTTP/1.x request line (method token then space) or the HTTP/2 preface.
pub fn looks_like_http(b: &[u8]) -> bool {
    if b.starts_with(b"PRI * HTTP/2") {
        return true;
    }
    let token = b.iter().take_while(|c| c.is_ascii_uppercase()).count();
    token > 0 && token <= 16 && b.get(token) == Some(&b' ')
}

async fn serve_http<S>(conn: Arc<Conn>, io: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = HttpService::new(conn);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true).half_close(false);
    if let Err(e) =
        builder.serve_connection(TokioIo::new(crate::proxy::coalesce::Coalesce::new(io)), svc).await
    {
        tracing::debug!(error = %e, "HTTP connection in the tunnel ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing() {
        assert!(looks_like_http(b"GET / HTTP/1.1\r\n"));
        assert!(looks_like_http(b"PRI * HTTP/2.0\r\n\r\nSM"));
        assert!(!looks_like_http(b"\x16\x03\x01"));
        assert!(!looks_like_http(b"get / "));
        assert!(!looks_like_http(b""));
    }
}
