//! Outbound: connections from the local pods, taken from the captured listener (original
//! destination by `SO_ORIGINAL_DST`) or from SOCKS5, resolved against the model and sent on:
//! HBONE to a waypoint when the destination has one that takes its kind of traffic
//! (`istio.io/waypoint-for`: Services by default, pods' own addresses only when it says
//! `workload` or `all`), HBONE to `<pod ip>:15008` for a captured
//! pod (a service VIP first picks an endpoint through [`crate::lb`]), plain TCP for pods not
//! captured and for destinations outside the mesh. Reported with reporter `source`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::StatusCode;
use mesh_hbone::{ConnectParams, H2Stream, HboneError, PoolKey};
use mesh_identity::SpiffeId;
use mesh_model::{Model, Service, Workload};
use mesh_telemetry::{
    ConnGuard, ConnInfo, PeerLabels, Reporter, ResponseFlag, SecurityPolicy, ServiceLabels,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::ctx::Ctx;
use crate::lb::ActiveGuard;
use crate::orig_dst::original_dst_or_local;
use crate::proxy::copy::relay;
use crate::proxy::socks5::{self, ReplyCode, Target};

/// How a connection leaves this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An HBONE tunnel to `addr` (a ztunnel or waypoint), CONNECT `authority`, the server
    /// proving one of `identities`.
    Hbone { addr: SocketAddr, authority: SocketAddr, identities: Vec<SpiffeId>, waypoint: bool },
    /// Plain TCP to `addr`.
    Direct { addr: SocketAddr },
}

/// A resolved destination with what telemetry needs.
#[derive(Debug)]
pub struct Resolved {
    pub route: Route,
    pub workload: Option<Arc<Workload>>,
    pub service: Option<Arc<Service>>,
    /// Keeps the chosen endpoint's LEAST_REQUEST count for the connection's life.
    pub active: Option<ActiveGuard>,
}

/// Why an outbound connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("source {0} is not a pod on this node")]
    UnknownSource(IpAddr),
    #[error("host {0:?} is not a known service")]
    UnknownHost(String),
    #[error("service {service} has no port {port}")]
    NoServicePort { service: Arc<str>, port: u16 },
    #[error("service {service} has no ready endpoint for port {port}")]
    NoEndpoint { service: Arc<str>, port: u16 },
    #[error("waypoint {0} has no Service or no ready endpoint")]
    NoWaypoint(String),
    #[error("{0}")]
    Hbone(#[from] HboneError),
    #[error("connecting to {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("connecting to {0}: timed out")]
    Timeout(SocketAddr),
}

impl OutboundError {
    fn socks_reply(&self) -> ReplyCode {
        match self {
            OutboundError::UnknownSource(_) => ReplyCode::NotAllowed,
            OutboundError::UnknownHost(_) | OutboundError::NoServicePort { .. } => ReplyCode::HostUnreachable,
            OutboundError::NoEndpoint { .. } | OutboundError::NoWaypoint(_) => ReplyCode::HostUnreachable,
            OutboundError::Hbone(HboneError::Status { status, .. })
                if *status == StatusCode::UNAUTHORIZED =>
            {
                ReplyCode::NotAllowed
            }
            OutboundError::Hbone(HboneError::Status { .. }) => ReplyCode::ConnectionRefused,
            OutboundError::Hbone(HboneError::Connect { .. }) => ReplyCode::HostUnreachable,
            OutboundError::Connect { source, .. }
                if source.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                ReplyCode::ConnectionRefused
            }
            OutboundError::Timeout(_) => ReplyCode::TtlExpired,
            _ => ReplyCode::GeneralFailure,
        }
    }

    fn flag(&self) -> ResponseFlag {
        match self {
            OutboundError::UnknownHost(_) | OutboundError::NoServicePort { .. } => ResponseFlag::NoRouteFound,
            OutboundError::NoEndpoint { .. } | OutboundError::NoWaypoint(_) => {
                ResponseFlag::NoHealthyUpstream
            }
            OutboundError::Hbone(HboneError::Status { status, .. })
                if *status == StatusCode::UNAUTHORIZED =>
            {
                ResponseFlag::AuthorizationPolicyDenied
            }
            _ => ResponseFlag::UpstreamConnectionFailure,
        }
    }
}

/// The route to a waypoint for traffic originally sent to `authority`.
fn via_waypoint(
    ctx: &Ctx,
    model: &Model,
    wp: &mesh_model::WaypointRef,
    authority: SocketAddr,
    client: IpAddr,
) -> Result<(Route, Option<ActiveGuard>), OutboundError> {
    let name = format!("{}/{}", wp.namespace, wp.name);
    let svc = model.waypoint_service(wp).ok_or_else(|| OutboundError::NoWaypoint(name.clone()))?;
    let hbone_port = ctx.config.hbone_port;
    let (ep, port, active) = match ctx.lb.pick(model, svc, hbone_port, client) {
        Some(p) => (p.endpoint, p.port, Some(p.active)),
        None => {
            let ep = svc.endpoints.iter().find(|e| e.ready).ok_or(OutboundError::NoWaypoint(name))?;
            (ep.clone(), hbone_port, None)
        }
    };
    let identities: Vec<SpiffeId> = ep.identity.iter().map(|i| (**i).clone()).collect();
    let route = Route::Hbone { addr: SocketAddr::new(ep.ip, port), authority, identities, waypoint: true };
    Ok((route, active))
}

/// The route to one pod at `addr`.
fn to_pod(ctx: &Ctx, w: &Workload, addr: SocketAddr) -> Route {
    if w.captured {
        Route::Hbone {
            addr: SocketAddr::new(addr.ip(), ctx.config.hbone_port),
            authority: addr,
            identities: vec![(*w.identity).clone()],
            waypoint: false,
        }
    } else {
        Route::Direct { addr }
    }
}

/// Resolves where a connection from `client` to `dst` goes.
pub fn resolve(ctx: &Ctx, model: &Model, client: IpAddr, dst: SocketAddr) -> Result<Resolved, OutboundError> {
    if let Some(svc) = model.service_by_vip(dst.ip()) {
        if let Some(wp) = &svc.waypoint
            && model.waypoint_for(wp).takes_services()
            && !is_waypoint_itself(model, wp, client)
        {
            let (route, active) = via_waypoint(ctx, model, wp, dst, client)?;
            return Ok(Resolved { route, workload: None, service: Some(svc.clone()), active });
        }
        if svc.port_index(dst.port()).is_none() {
            return Err(OutboundError::NoServicePort { service: svc.hostname.clone(), port: dst.port() });
        }
        let picked = ctx
            .lb
            .pick(model, svc, dst.port(), client)
            .ok_or_else(|| OutboundError::NoEndpoint { service: svc.hostname.clone(), port: dst.port() })?;
        let addr = SocketAddr::new(picked.endpoint.ip, picked.port);
        let workload = picked.endpoint.workload.clone();
        let route = match &workload {
            Some(w) => to_pod(ctx, w, addr),
            None => Route::Direct { addr },
        };
        return Ok(Resolved { route, workload, service: Some(svc.clone()), active: Some(picked.active) });
    }
    if let Some(w) = model.workload_by_ip(dst.ip()) {
        // Istio's default waypoint (`istio.io/waypoint-for: service`) does not take traffic
        // addressed to a pod: that goes to the pod's ztunnel, under L4 policy only.
        if let Some(wp) = &w.waypoint
            && w.captured
            && model.waypoint_for(wp).takes_workloads()
            && !is_waypoint_itself(model, wp, client)
        {
            let (route, active) = via_waypoint(ctx, model, wp, dst, client)?;
            return Ok(Resolved { route, workload: Some(w.clone()), service: None, active });
        }
        return Ok(Resolved {
            route: to_pod(ctx, w, dst),
            workload: Some(w.clone()),
            service: None,
            active: None,
        });
    }
    Ok(Resolved { route: Route::Direct { addr: dst }, workload: None, service: None, active: None })
}

/// Traffic from a waypoint's own pods goes to the destination, not back to the waypoint.
fn is_waypoint_itself(model: &Model, wp: &mesh_model::WaypointRef, client: IpAddr) -> bool {
    model.waypoint_service(wp).is_some_and(|s| s.endpoints.iter().any(|e| e.ip == client))
}

/// An open upstream: a tunnel or a socket.
enum Upstream {
    Hbone(H2Stream),
    Tcp(TcpStream),
}

/// Opens the upstream for a resolved destination.
async fn open(
    ctx: &Ctx,
    src: &Workload,
    client: SocketAddr,
    route: &Route,
) -> Result<Upstream, OutboundError> {
    match route {
        Route::Hbone { addr, authority, identities, .. } => {
            let key = PoolKey {
                src: (*src.identity).clone(),
                dst_identities: identities.clone().into(),
                addr: *addr,
                src_addr: ctx.capture.is_some().then_some(client.ip()),
            };
            let mut params = ConnectParams::new(*authority);
            params.forwarded_for = Some(client);
            params.baggage = http::HeaderValue::try_from(baggage(ctx, src)).ok();
            Ok(Upstream::Hbone(ctx.pool.connect(&key, params).await?))
        }
        Route::Direct { addr } => {
            match tokio::time::timeout(ctx.config.connect_timeout, ctx.connect_for_pod(client.ip(), *addr))
                .await
            {
                Ok(Ok(s)) => Ok(Upstream::Tcp(s)),
                Ok(Err(source)) => Err(OutboundError::Connect { addr: *addr, source }),
                Err(_) => Err(OutboundError::Timeout(*addr)),
            }
        }
    }
}

/// The W3C `baggage` Istio's ztunnel sends: the source workload's cluster, namespace,
/// workload, canonical service and revision.
fn baggage(ctx: &Ctx, src: &Workload) -> String {
    format!(
        "k8s.cluster.name={},k8s.namespace.name={},k8s.deployment.name={},service.name={},service.version={}",
        ctx.cluster, src.namespace, src.workload_name, src.canonical_name, src.canonical_revision
    )
}

/// Writes the SOCKS5 reply when the client spoke SOCKS5 (captured clients get nothing).
async fn ack<C: AsyncWrite + Unpin>(socks: bool, stream: &mut C, code: ReplyCode) -> std::io::Result<()> {
    if socks { socks5::reply(stream, code).await } else { Ok(()) }
}

/// Proxies one connection from local pod `src` (at `client`) to `dst`.
async fn proxy<C>(
    ctx: &Ctx,
    src: Arc<Workload>,
    client: SocketAddr,
    dst: SocketAddr,
    mut stream: C,
    socks: bool,
) where
    C: AsyncRead + AsyncWrite + Send + Unpin,
{
    let model = ctx.model.current();
    let cluster = &ctx.cluster;
    let mut info = ConnInfo::new(Reporter::Source, client, dst);
    info.src_pod = Some(src.name.clone());
    info.labels.source = PeerLabels::from_workload(&src, cluster);
    let resolved = resolve(ctx, &model, client.ip(), dst);
    if let Ok(r) = &resolved {
        if let Some(svc) = &r.service {
            info.labels.destination_service = ServiceLabels::from_service(svc);
        }
        if let Some(w) = &r.workload {
            info.dst_pod = Some(w.name.clone());
            info.labels.destination = PeerLabels::from_workload(w, cluster);
        }
        if let Route::Hbone { authority, identities, .. } = &r.route {
            info.hbone_addr = Some(*authority);
            info.labels.connection_security_policy = SecurityPolicy::MutualTls;
            info.labels.source =
                info.labels.source.clone().with_principal(ctx.metrics.principal(&src.identity));
            if let (Some(id), Some(_)) = (identities.first(), &r.workload) {
                info.labels.destination.principal = ctx.metrics.principal(id).into();
            }
        }
    }
    drop(model);
    let mut guard = ConnGuard::open(&ctx.metrics, info);
    let resolved = match resolved {
        Ok(r) => r,
        Err(e) => {
            let _ = ack(socks, &mut stream, e.socks_reply()).await;
            guard.fail(e.flag(), e);
            return;
        }
    };
    let _token = ctx.drain.conn();
    let upstream = match open(ctx, &src, client, &resolved.route).await {
        Ok(u) => u,
        Err(e) => {
            let _ = ack(socks, &mut stream, e.socks_reply()).await;
            guard.fail(e.flag(), e);
            return;
        }
    };
    if ack(socks, &mut stream, ReplyCode::Succeeded).await.is_err() {
        guard.fail(ResponseFlag::DownstreamConnectionTermination, "client went away before the reply");
        return;
    }
    let result = match upstream {
        Upstream::Hbone(t) => relay(&mut stream, t, &guard, &ctx.drain).await,
        Upstream::Tcp(t) => relay(&mut stream, t, &guard, &ctx.drain).await,
    };
    if let Err(e) = result {
        guard.fail(ResponseFlag::UpstreamConnectionTermination, e);
    }
    drop(resolved.active);
}

/// The local pod a client address belongs to.
fn source_workload(ctx: &Ctx, ip: IpAddr) -> Option<Arc<Workload>> {
    let model = ctx.model.load();
    model.workload_by_ip(ip).filter(|w| ctx.is_local(w)).cloned()
}

async fn accept_loop(ctx: Arc<Ctx>, listener: TcpListener, what: &'static str, socks: bool) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.drain.stopping() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((s, peer)) => {
                let ctx = ctx.clone();
                if socks {
                    tokio::spawn(async move { handle_socks5(ctx, s, peer).await });
                } else {
                    tokio::spawn(async move { handle_captured(ctx, s, peer).await });
                }
            }
            Err(e) => {
                tracing::warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves the captured outbound listener (15001).
pub async fn serve_captured(ctx: Arc<Ctx>, listener: TcpListener) {
    accept_loop(ctx, listener, "outbound", false).await;
}

/// Serves one captured pod's outbound listener (15001 in its netns) until `stop`.
pub async fn serve_pod(ctx: Arc<Ctx>, listener: TcpListener, stop: impl std::future::Future<Output = ()>) {
    tokio::select! {
        _ = stop => {}
        _ = accept_loop(ctx, listener, "pod outbound", false) => {}
    }
}

/// Serves the SOCKS5 listener (15080).
pub async fn serve_socks5(ctx: Arc<Ctx>, listener: TcpListener) {
    accept_loop(ctx, listener, "socks5", true).await;
}

async fn handle_captured(ctx: Arc<Ctx>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let dst = match original_dst_or_local(&stream) {
        Ok((dst, true)) => dst,
        Ok((local, false)) => {
            tracing::warn!(%peer, %local, "outbound connection without an original destination; closing");
            return;
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot read the original destination");
            return;
        }
    };
    let Some(src) = source_workload(&ctx, peer.ip()) else {
        tracing::warn!(%peer, %dst, "outbound connection from an address that is not a local mesh pod; closing");
        return;
    };
    proxy(&ctx, src, peer, dst, stream, false).await;
}

async fn handle_socks5(ctx: Arc<Ctx>, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let target = match socks5::handshake(&mut stream).await {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "SOCKS5 handshake failed");
            return;
        }
    };
    let Some(src) = source_workload(&ctx, peer.ip()) else {
        tracing::warn!(%peer, ?target, "SOCKS5 client is not a local mesh pod; refusing");
        let _ = socks5::reply(&mut stream, ReplyCode::NotAllowed).await;
        return;
    };
    let dst = match target {
        Target::Addr(a) => a,
        Target::Domain(host, port) => {
            let model = ctx.model.load();
            match model.resolve_host(&host, &src.namespace).and_then(|s| s.vips.first().copied()) {
                Some(vip) => SocketAddr::new(vip, port),
                None => {
                    tracing::info!(%peer, %host, "SOCKS5 host is not a known service with a VIP");
                    let _ = socks5::reply(&mut stream, ReplyCode::HostUnreachable).await;
                    return;
                }
            }
        }
    };
    proxy(&ctx, src, peer, dst, stream, true).await;
}
