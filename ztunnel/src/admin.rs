//! The HTTP side servers: admin (`/config_dump`, `/logging`, `/debug/pools`, loopback only by
//! default), Prometheus `/metrics`, and readiness `/healthz/ready`. Small hyper HTTP/1.1
//! servers; each stops accepting when the drain begins.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::ctx::Ctx;

/// Which server a listener runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Admin,
    Metrics,
    Readiness,
}

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .expect("static response")
}

fn json(value: &serde_json::Value) -> Resp {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.into()))
        .expect("static response")
}

/// The value of `key` in a query string (`+` and `%XX` decoded).
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON of `/config_dump`: config, model, certificates (never keys), pool and drain state.
pub fn config_dump(ctx: &Ctx) -> serde_json::Value {
    let model = ctx.model.current();
    let certs: Vec<serde_json::Value> =
        ctx.certs.dump().iter().map(|c| serde_json::to_value(c).unwrap_or_default()).collect();
    serde_json::json!({
        "config": &*ctx.config,
        "model": model.dump(),
        "certificates": certs,
        "pool": pool_json(ctx),
        "capture": ctx.capture.as_ref().map(|c| serde_json::json!({ "inbound": c.inbound() })),
    })
}

fn pool_json(ctx: &Ctx) -> serde_json::Value {
    let s = ctx.pool.stats();
    serde_json::json!({
        "connections": s.connections,
        "activeStreams": s.active_streams,
        "dialing": s.dialing,
        "openedTotal": s.opened_total,
        "closedTotal": s.closed_total,
    })
}

/// Appends the capture programs' per-reason counters (read from their per-CPU map at scrape
/// time) before the OpenMetrics `# EOF`.
fn with_capture_counters(ctx: &Ctx, mut body: String) -> String {
    let Some(c) = &ctx.capture else { return body };
    let mut extra = String::from(
        "# HELP ztunnel_capture_events Connections and packets the capture programs skipped, \
         dropped or redirected, by reason.\n# TYPE ztunnel_capture_events counter\n",
    );
    for (reason, n) in c.counters() {
        extra.push_str(&format!("ztunnel_capture_events_total{{reason=\"{reason}\"}} {n}\n"));
    }
    extra.push_str(&format!(
        "# HELP ztunnel_capture_inbound Inbound steering in use (sk_lookup, or tc when the kernel \
         refused sk_lookup).\n# TYPE ztunnel_capture_inbound gauge\n\
         ztunnel_capture_inbound{{mechanism=\"{}\"}} 1\n",
        c.inbound()
    ));
    match body.rfind("# EOF") {
        Some(at) => body.insert_str(at, &extra),
        None => body.push_str(&extra),
    }
    body
}

fn route(ctx: &Ctx, which: Server, req: &Request<Incoming>) -> Resp {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    match (which, path) {
        (Server::Metrics, "/metrics") | (Server::Admin, "/metrics") => {
            match mesh_telemetry::encode(&ctx.registry).map(|b| with_capture_counters(ctx, b)) {
                Ok(body) => Response::builder()
                    .header(header::CONTENT_TYPE, mesh_telemetry::METRICS_CONTENT_TYPE)
                    .body(Full::new(body.into()))
                    .expect("static response"),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics: {e}\n")),
            }
        }
        (Server::Readiness, "/healthz/ready") | (Server::Admin, "/healthz/ready") => {
            match crate::workloads::readiness(ctx) {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
            }
        }
        (Server::Admin, "/config_dump") => json(&config_dump(ctx)),
        (Server::Admin, "/debug/pools") => json(&pool_json(ctx)),
        (Server::Admin, "/logging") => {
            let Some(log) = &ctx.log else {
                return text(StatusCode::NOT_IMPLEMENTED, "logging is not controlled by this process\n");
            };
            match query_param(query, "level") {
                None => text(StatusCode::OK, format!("current level: {}\n", log.current_level())),
                Some(level) if req.method() == Method::POST || req.method() == Method::GET => {
                    match log.set_level(&level) {
                        Ok(()) => {
                            tracing::info!(%level, "log level changed");
                            text(StatusCode::OK, format!("current level: {}\n", log.current_level()))
                        }
                        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                    }
                }
                Some(_) => text(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST\n"),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves `which` on `listener` until the drain begins.
pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener, which: Server) {
    loop {
        let (stream, _) = tokio::select! {
            _ = ctx.drain.stopping() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(?which, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = route(&ctx, which, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        assert_eq!(query_param("level=debug", "level").as_deref(), Some("debug"));
        assert_eq!(
            query_param("a=1&level=info%2Caccess%3Ddebug", "level").as_deref(),
            Some("info,access=debug")
        );
        assert_eq!(query_param("a=1", "level"), None);
        assert_eq!(percent_decode("a+b%2"), "a b%2");
    }
}
