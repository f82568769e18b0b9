//! The waypoint's side servers: admin (`/config_dump`, `/logging`, loopback only by default),
//! Prometheus `/metrics`, and readiness `/healthz/ready` (ready once the certificate is held).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mesh_identity::Identity;
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

fn route(ctx: &Ctx, which: Server, req: &Request<Incoming>) -> Resp {
    let path = req.uri().path();
    match (which, path) {
        (Server::Metrics | Server::Admin, "/metrics") => match mesh_telemetry::encode(&ctx.registry) {
            Ok(body) => Response::builder()
                .header(header::CONTENT_TYPE, mesh_telemetry::METRICS_CONTENT_TYPE)
                .body(Full::new(body.into()))
                .expect("static response"),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics: {e}\n")),
        },
        (Server::Readiness | Server::Admin, "/healthz/ready") => {
            if ctx.certs.current(&Identity::Workload((*ctx.identity).clone())).is_some() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: no certificate for {}\n", ctx.identity),
                )
            }
        }
        (Server::Admin, "/config_dump") => {
            let compiled = ctx.compiled();
            let body = serde_json::json!({
                "config": &*ctx.config,
                "identity": ctx.identity.to_string(),
                "generation": compiled.generation,
                "routeTables": compiled.routes.len(),
                "tracing": ctx.tracer.dump(&compiled.tracing),
                "model": ctx.model.load().dump(),
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(serde_json::to_vec_pretty(&body).unwrap_or_default().into()))
                .expect("static response")
        }
        (Server::Admin, "/logging") => {
            let Some(log) = &ctx.log else {
                return text(StatusCode::NOT_IMPLEMENTED, "logging is not controlled by this process\n");
            };
            let level = req.uri().query().unwrap_or("").split('&').find_map(|p| p.strip_prefix("level="));
            match level {
                None => text(StatusCode::OK, format!("current level: {}\n", log.current_level())),
                Some(l) => match log.set_level(l) {
                    Ok(()) => text(StatusCode::OK, format!("level set to {l}\n")),
                    Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                },
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves one side server until the waypoint stops.
pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener, which: Server) {
    let mut stop = ctx.stop.clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = listener.accept() => r,
        };
        let Ok((stream, _)) = accepted else { continue };
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
