//! The optional plaintext HTTP listener (`plaintextHttpAddr`), for ingress-style use and
//! benchmarks: HTTP/1.1 or h2c (prior knowledge, detected by hyper) straight from a client,
//! no HBONE. Each request is routed for the Service its `Host`/`:authority` names (short
//! names resolve in the waypoint's namespace; the port is the authority's or 80) through the
//! same request path as the HBONE side ([`HttpService`]). The caller is unauthenticated: no
//! source workload and no mTLS identity (authorization sees no principal).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use http::uri::Authority;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::ctx::Ctx;
use crate::proxy::coalesce::Coalesce;
use crate::proxy::headers::host_problem;
use crate::proxy::http::{Conn, HttpService};
use crate::proxy::inbound::PortProtocol;
use crate::proxy::upstream::Body;

/// Port assumed when the authority names none (plaintext HTTP's default).
pub const DEFAULT_PORT: u16 = 80;

/// `Host`/`:authority` split into host and port (80 when absent); `None` when malformed.
pub fn host_and_port(authority: &str) -> Option<(String, u16)> {
    let a: Authority = authority.parse().ok()?;
    if a.as_str().contains('@') {
        return None;
    }
    // Without userinfo the authority is `host[:port]`; a port that is there must be a number.
    let port = match a.as_str().strip_prefix(a.host())? {
        "" => DEFAULT_PORT,
        rest => rest.strip_prefix(':')?.parse().ok()?,
    };
    let host = a.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// Accepts plaintext HTTP connections on `listener` until the waypoint stops.
pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener) {
    let mut stop = ctx.stop.clone();
    loop {
        let (stream, peer) = tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "plaintext HTTP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let svc = PlainService { ctx: ctx.clone(), peer, last: Arc::default() };
        let mut stop = ctx.stop.clone();
        tokio::spawn(async move {
            let builder = {
                let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                b.http1().keep_alive(true).half_close(false);
                b
            };
            let conn = builder.serve_connection(TokioIo::new(Coalesce::new(stream)), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, %peer, "plaintext HTTP connection ended with an error");
                    }
                }
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

/// hyper's service for one plaintext connection: finds the request's Service and hands the
/// request to [`HttpService`].
#[derive(Debug, Clone)]
struct PlainService {
    ctx: Arc<Ctx>,
    peer: SocketAddr,
    /// The last request's (model generation, authority) and its [`Conn`]: a connection almost
    /// always keeps one Host, so the lookup and the `Conn` are made once per connection.
    last: Arc<Mutex<Option<LastConn>>>,
}

/// The [`Conn`] made for the last request of a plaintext connection.
#[derive(Debug)]
struct LastConn {
    generation: u64,
    authority: String,
    conn: Arc<Conn>,
}

/// Why a plaintext request could not be given a Service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    #[error("the request has no Host or :authority")]
    NoAuthority,
    #[error("malformed Host or :authority {0:?}")]
    BadAuthority(String),
    /// Two `Host` lines, or an HTTP/2 `Host` that differs from `:authority`.
    #[error("ambiguous authority: {0}")]
    AmbiguousHost(&'static str),
    #[error("no Service {0} known to this waypoint")]
    UnknownService(String),
}

impl Unroutable {
    fn response(&self) -> Response<Body> {
        let status = match self {
            Unroutable::NoAuthority | Unroutable::BadAuthority(_) | Unroutable::AmbiguousHost(_) => {
                StatusCode::BAD_REQUEST
            }
            // As Envoy answers a request matching no virtual host.
            Unroutable::UnknownService(_) => StatusCode::NOT_FOUND,
        };
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Full::new(bytes::Bytes::from(self.to_string())).map_err(|never| match never {}).boxed())
            .expect("static response")
    }
}

impl PlainService {
    fn conn_for(&self, req: &Request<Incoming>) -> Result<Arc<Conn>, Unroutable> {
        // Before routing: the Service must not be chosen by one Host and the request read by
        // the upstream under another.
        if let Some(why) = host_problem(req.version(), req.uri(), req.headers()) {
            return Err(Unroutable::AmbiguousHost(why));
        }
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()))
            .ok_or(Unroutable::NoAuthority)?;
        let model = self.ctx.model.load();
        let generation = model.generation();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = &*last
            && l.generation == generation
            && l.authority == authority
        {
            return Ok(l.conn.clone());
        }
        let (host, port) =
            host_and_port(authority).ok_or_else(|| Unroutable::BadAuthority(authority.to_string()))?;
        let service = model
            .resolve_host(&host, &self.ctx.config.namespace)
            .cloned()
            .ok_or_else(|| Unroutable::UnknownService(host.clone()))?;
        let conn = Arc::new(Conn {
            ctx: self.ctx.clone(),
            protocol: PortProtocol::of(&service, port),
            service,
            pod: None,
            port,
            peer_addr: self.peer,
            peer_identity: None,
            source: None,
            remote_ip: None,
            ratelimit: Default::default(),
            metric_cache: Default::default(),
            client_ip: Default::default(),
        });
        *last = Some(LastConn { generation, authority: authority.to_string(), conn: conn.clone() });
        Ok(conn)
    }
}

impl hyper::service::Service<Request<Incoming>> for PlainService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        match self.conn_for(&req) {
            Ok(conn) => HttpService::new(conn).call(req),
            Err(why) => {
                tracing::debug!(peer = %self.peer, "plaintext request refused: {why}");
                Box::pin(std::future::ready(Ok(why.response())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_with_port() {
        assert_eq!(host_and_port("a.demo:8080"), Some(("a.demo".into(), 8080)));
    }

    #[test]
    fn authority_without_port_is_port_80() {
        assert_eq!(host_and_port("reviews"), Some(("reviews".into(), 80)));
    }

    #[test]
    fn authority_is_lower_cased() {
        assert_eq!(
            host_and_port("Reviews.Bookinfo.SVC.cluster.local"),
            Some(("reviews.bookinfo.svc.cluster.local".into(), 80))
        );
    }

    #[test]
    fn ipv6_authority_loses_its_brackets() {
        assert_eq!(host_and_port("[::1]:9080"), Some(("::1".into(), 9080)));
    }

    #[test]
    fn malformed_authorities_are_refused() {
        for bad in ["", "a:port", "a b", "user@a", "a:99999"] {
            assert_eq!(host_and_port(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unroutable_statuses() {
        assert_eq!(Unroutable::NoAuthority.response().status(), 400);
        assert_eq!(Unroutable::BadAuthority("x y".into()).response().status(), 400);
        assert_eq!(Unroutable::AmbiguousHost("more than one Host header").response().status(), 400);
        assert_eq!(Unroutable::UnknownService("nope".into()).response().status(), 404);
    }
}
