//! L4 through the waypoint (a `tcp` Service port, or a stream that is not HTTP): L4
//! authorization for the tunnel's peer, the VirtualService `tcp` route (or the Service
//! itself), an endpoint from its cluster, and a byte copy over HBONE to that endpoint.

use std::sync::Arc;

use mesh_hbone::{ConnectParams, PoolKey};
use mesh_telemetry::{
    ConnGuard, ConnInfo, Decision, PeerLabels, Reporter, ResponseFlag, SecurityPolicy, ServiceLabels,
};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::proxy::http::Conn;
use crate::proxy::upstream::HBONE_PORT;
use crate::route::{self, WeightedDestination};
use crate::upstream::{Outcome, PickContext};

/// Forwards the tunnel's bytes to an endpoint of the Service (or its `tcp` route).
pub async fn forward<S>(conn: Arc<Conn>, mut downstream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let ctx = &conn.ctx;
    let compiled = ctx.compiled();
    let dst = std::net::SocketAddr::new(
        conn.service.vips.first().copied().unwrap_or(conn.peer_addr.ip()),
        conn.port,
    );
    let mut info = ConnInfo::new(Reporter::Waypoint, conn.peer_addr, dst);
    info.labels.connection_security_policy = SecurityPolicy::MutualTls;
    if let Some(w) = &conn.source {
        info.labels.source = PeerLabels::from_workload(w, &ctx.cluster);
    }
    if let Some(id) = &conn.peer_identity {
        info.labels.source.principal = ctx.metrics.principal(id).into();
    }
    info.labels.destination_service = ServiceLabels::from_service(&conn.service);
    let mut guard = ConnGuard::open(&ctx.metrics, info);

    let Some(security) = compiled.security.get(&conn.service.namespace, &conn.service.name) else {
        guard.set_decision(Decision::Deny, None);
        return guard.set_error(format!("{} does not use this waypoint", conn.service.hostname));
    };
    let decision = {
        let request =
            mesh_policy::Request::l4(conn.peer_addr.ip(), conn.peer_identity.as_ref(), dst.ip(), conn.port);
        security.authz.policies().evaluate(&request)
    };
    if !decision.allowed {
        guard.set_decision(Decision::Deny, None);
        guard.set_error(format!("denied by authorization policy ({})", decision.reason.as_str()));
        return;
    }
    guard.set_decision(Decision::Allow, None);

    let fallback = [WeightedDestination {
        host: conn.service.hostname.clone(),
        subset: None,
        port: None,
        weight: 1,
        request_headers: Default::default(),
        response_headers: Default::default(),
    }];
    let table = compiled.routes.for_service(&conn.service.hostname);
    let dests = table.and_then(|t| t.tcp(conn.port, conn.source.as_deref())).unwrap_or(&fallback);
    let Some(dest) = route::pick_weighted(dests, rand::random()) else {
        return guard.fail(ResponseFlag::NoClusterFound, "tcp route without destinations");
    };
    let port = dest.port.unwrap_or(conn.port);
    let Some(cluster) = ctx.clusters.get(&dest.host, dest.subset.as_deref(), port) else {
        return guard.fail(ResponseFlag::NoClusterFound, format!("no cluster for {}:{port}", dest.host));
    };
    let Ok(_permit) = cluster.try_request() else {
        return guard.fail(ResponseFlag::UpstreamOverflow, "connection pool full");
    };
    let empty = http::HeaderMap::new();
    let uri = http::Uri::from_static("/");
    let pick = match cluster.pick(&PickContext::new(&empty, &uri, conn.peer_addr.ip())) {
        Ok(p) => p,
        Err(_) => return guard.fail(ResponseFlag::NoHealthyUpstream, "no healthy upstream"),
    };
    let ep = pick.endpoint.addr;
    let Some(identity) = pick.endpoint.identity.clone() else {
        return guard
            .fail(ResponseFlag::NoHealthyUpstream, format!("{ep}: endpoint without a mesh identity"));
    };
    let key = PoolKey {
        src: (*ctx.identity).clone(),
        dst_identities: Arc::from(vec![(*identity).clone()]),
        addr: std::net::SocketAddr::new(ep.ip(), HBONE_PORT),
        src_addr: None,
    };
    let mut params = ConnectParams::new(ep);
    params.forwarded_for = Some(conn.peer_addr);
    let mut upstream = match tokio::time::timeout(cluster.connect_timeout(), ctx.pool.connect(&key, params))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            pick.guard.finish(Outcome::ConnectFailure);
            return guard.fail(ResponseFlag::UpstreamConnectionFailure, format!("{ep}: {e}"));
        }
        Err(_) => {
            pick.guard.finish(Outcome::Timeout);
            return guard.fail(ResponseFlag::UpstreamConnectionFailure, format!("{ep}: connect timed out"));
        }
    };
    match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        Ok((up, down)) => {
            guard.add_to_server(up);
            guard.add_to_client(down);
            pick.guard.finish(Outcome::Status(200));
        }
        Err(e) => {
            pick.guard.finish(Outcome::Reset);
            guard.fail(ResponseFlag::UpstreamConnectionTermination, e);
        }
    }
}
