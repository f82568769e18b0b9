//! Inbound HBONE: the [`ConnectHandler`] of the per-pod HBONE listeners. A CONNECT must name
//! a local captured pod at the address the connection arrived on (400 otherwise), must not
//! target our own ports (400), must be allowed by the pod's AuthorizationPolicies for the
//! peer's SPIFFE identity (401), and is delivered to `<pod ip>:<port>` (503 when the
//! application refuses). Reported with reporter `destination`.

use std::sync::Arc;

use http::StatusCode;
use mesh_hbone::{ConnectHandler, ConnectRequest, Responder};
use mesh_policy::Request;
use mesh_telemetry::{
    ConnGuard, ConnInfo, Decision, PeerLabels, Reporter, ResponseFlag, SecurityPolicy, ServiceLabels,
};

use crate::ctx::Ctx;
use crate::proxy::copy::relay;

/// Handles CONNECTs for the local pods.
#[derive(Debug)]
pub struct InboundHandler {
    ctx: Arc<Ctx>,
}

impl InboundHandler {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        InboundHandler { ctx }
    }
}

impl ConnectHandler for InboundHandler {
    async fn handle(&self, req: ConnectRequest, responder: Responder) {
        let ctx = &self.ctx;
        let model = ctx.model.current();
        let dst = req.authority;
        // The source is the TCP peer (outbound connections leave from the source pod's own
        // address). `forwarded: for` is the peer's claim about the original client: it only
        // feeds `remote.ip` / `remoteIpBlocks`, never `source.ip`, so a meshed peer cannot
        // choose which ipBlocks it matches.
        let src_addr = req.peer_addr;
        let src_ip = src_addr.ip();

        if !req.authority_is_local() {
            tracing::warn!(authority = %dst, local = %req.local_addr, peer = %req.peer_identity,
                "CONNECT authority does not match the address it arrived on");
            return responder.refuse(StatusCode::BAD_REQUEST);
        }
        let Some(dst_w) = model.workload_by_ip(dst.ip()).filter(|w| ctx.is_local(w)).cloned() else {
            tracing::warn!(authority = %dst, peer = %req.peer_identity, "CONNECT to an address that is not a local mesh pod");
            return responder.refuse(StatusCode::BAD_REQUEST);
        };
        if ctx.own_ports.contains(&dst.port()) {
            tracing::warn!(authority = %dst, peer = %req.peer_identity, "CONNECT to a port of the proxy itself");
            return responder.refuse(StatusCode::BAD_REQUEST);
        }

        let cluster = &ctx.cluster;
        let mut info = ConnInfo::new(Reporter::Destination, src_addr, dst);
        info.hbone_addr = Some(dst);
        info.labels.connection_security_policy = SecurityPolicy::MutualTls;
        let peer_principal = ctx.metrics.principal(&req.peer_identity);
        if let Some(src_w) = model.workload_by_ip(src_ip) {
            info.src_pod = Some(src_w.name.clone());
            info.labels.source = PeerLabels::from_workload(src_w, cluster);
        }
        info.labels.source.principal = peer_principal.into();
        info.labels.destination =
            PeerLabels::from_workload(&dst_w, cluster).with_principal(ctx.metrics.principal(&dst_w.identity));
        info.dst_pod = Some(dst_w.name.clone());
        if let Some(svc) = ctx.endpoint_services.get(&model, dst) {
            info.labels.destination_service = ServiceLabels::from_service(&svc);
        }
        let mut guard = ConnGuard::open(&ctx.metrics, info);

        let policies = ctx.policies.for_workload(&model, &dst_w);
        let decision = {
            let mut authz = Request::l4(src_ip, Some(&req.peer_identity), dst.ip(), dst.port());
            authz.remote_ip = req.forwarded_for;
            policies.evaluate(&authz)
        };
        let policy_name = decision.policy_name().map(|(ns, n)| Arc::<str>::from(format!("{ns}/{n}")));
        if !decision.allowed {
            guard.set_decision(Decision::Deny, policy_name);
            guard.set_error(format!("denied by authorization policy ({})", decision.reason.as_str()));
            return responder.refuse(StatusCode::UNAUTHORIZED);
        }
        guard.set_decision(Decision::Allow, policy_name);
        drop(model);

        let _token = ctx.drain.conn();
        let upstream = match tokio::time::timeout(ctx.config.connect_timeout, ctx.deliver(src_ip, dst)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                guard.fail(ResponseFlag::UpstreamConnectionFailure, format!("connecting to {dst}: {e}"));
                return responder.refuse(StatusCode::SERVICE_UNAVAILABLE);
            }
            Err(_) => {
                guard
                    .fail(ResponseFlag::UpstreamConnectionFailure, format!("connecting to {dst}: timed out"));
                return responder.refuse(StatusCode::SERVICE_UNAVAILABLE);
            }
        };
        let tunnel = match responder.accept() {
            Ok(t) => t,
            Err(e) => {
                guard.fail(ResponseFlag::DownstreamConnectionTermination, e);
                return;
            }
        };
        if let Err(e) = relay(tunnel, upstream, &guard, &ctx.drain).await {
            guard.fail(ResponseFlag::UpstreamConnectionTermination, e);
        }
    }
}
