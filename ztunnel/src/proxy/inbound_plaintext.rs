//! Inbound plaintext (15006): connections to a local pod that arrive without HBONE. The
//! original destination comes from `SO_ORIGINAL_DST` (or, not redirected, the configured
//! fallback port on the listener's address). PeerAuthentication decides first (STRICT
//! refuses; PERMISSIVE and DISABLE allow), then AuthorizationPolicy with no principal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_policy::Request;
use mesh_telemetry::{
    ConnGuard, ConnInfo, Decision, PeerLabels, Reporter, ResponseFlag, SecurityPolicy, ServiceLabels,
};
use tokio::net::{TcpListener, TcpStream};

use crate::ctx::Ctx;
use crate::orig_dst::original_dst_or_local;
use crate::proxy::copy::relay;

/// Accepts until `stop` resolves.
pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener, stop: impl Future<Output = ()>) {
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => match r {
                Ok((s, peer)) => {
                    tokio::spawn(handle(ctx.clone(), s, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "plaintext accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn handle(ctx: Arc<Ctx>, client: TcpStream, peer: SocketAddr) {
    let _ = client.set_nodelay(true);
    let dst = match original_dst_or_local(&client) {
        Ok((dst, true)) => dst,
        // In-pod capture steers (sk_lookup) without rewriting: the local address is the
        // original destination. Straight to 15006 is never a destination.
        Ok((local, false)) if ctx.capture.is_some() && local.port() != ctx.config.plaintext_port => local,
        Ok((local, false)) if ctx.config.plaintext_fallback_port != 0 => {
            SocketAddr::new(local.ip(), ctx.config.plaintext_fallback_port)
        }
        Ok((local, false)) => {
            tracing::warn!(%peer, %local, "plaintext connection without an original destination; closing");
            return;
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot read the connection's addresses");
            return;
        }
    };
    let model = ctx.model.current();
    let Some(dst_w) = model.workload_by_ip(dst.ip()).filter(|w| ctx.is_local(w)).cloned() else {
        tracing::warn!(%peer, %dst, "plaintext connection to an address that is not a local mesh pod; closing");
        return;
    };
    let cluster = &ctx.cluster;
    let mut info = ConnInfo::new(Reporter::Destination, peer, dst);
    info.labels.connection_security_policy = SecurityPolicy::None;
    if let Some(src_w) = model.workload_by_ip(peer.ip()) {
        info.src_pod = Some(src_w.name.clone());
        info.labels.source = PeerLabels::from_workload(src_w, cluster);
    }
    info.labels.destination = PeerLabels::from_workload(&dst_w, cluster);
    info.dst_pod = Some(dst_w.name.clone());
    if let Some(svc) = ctx.endpoint_services.get(&model, dst) {
        info.labels.destination_service = ServiceLabels::from_service(&svc);
    }
    let mut guard = ConnGuard::open(&ctx.metrics, info);

    let peer_authn = mesh_policy::resolve_peer_authn(&model, &dst_w);
    if !peer_authn.allows_plaintext(dst.port()) {
        guard.set_decision(Decision::Deny, None);
        guard.set_error(format!(
            "plaintext refused: PeerAuthentication mode {:?} on port {}",
            peer_authn.mode_for_port(dst.port()),
            dst.port()
        ));
        return;
    }
    let policies = ctx.policies.for_workload(&model, &dst_w);
    let decision = policies.evaluate(&Request::l4(peer.ip(), None, dst.ip(), dst.port()));
    let policy_name = decision.policy_name().map(|(ns, n)| Arc::<str>::from(format!("{ns}/{n}")));
    if !decision.allowed {
        guard.set_decision(Decision::Deny, policy_name);
        guard.set_error(format!("denied by authorization policy ({})", decision.reason.as_str()));
        return;
    }
    guard.set_decision(Decision::Allow, policy_name);
    drop(model);

    let _token = ctx.drain.conn();
    let upstream = match tokio::time::timeout(ctx.config.connect_timeout, ctx.deliver(peer.ip(), dst)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return guard.fail(ResponseFlag::UpstreamConnectionFailure, format!("connecting to {dst}: {e}"));
        }
        Err(_) => {
            return guard
                .fail(ResponseFlag::UpstreamConnectionFailure, format!("connecting to {dst}: timed out"));
        }
    };
    if let Err(e) = relay(client, upstream, &guard, &ctx.drain).await {
        guard.fail(ResponseFlag::UpstreamConnectionTermination, e);
    }
}
