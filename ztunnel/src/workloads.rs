//! Follows the model for the pods on this node: fetches each captured pod's certificate and,
//! in loopback mode, binds its inbound listeners (HBONE on `<pod ip>:<hbone port>`, plaintext
//! on `<pod ip>:<plaintext port>`); stops them when the pod goes away or leaves the mesh.
//! Also answers readiness.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mesh_hbone::{HboneServer, ServerSettings, ServerTls};
use mesh_identity::Identity;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ctx::Ctx;
use crate::proxy::{inbound, inbound_plaintext};

/// The listeners of one local pod; dropping the sender stops them.
#[derive(Debug)]
struct PodListeners {
    _stop: watch::Sender<bool>,
}

/// Keeps listeners in line with the model until shutdown.
pub async fn run(ctx: Arc<Ctx>) {
    let mut handle = ctx.model.clone();
    let mut pods: HashMap<IpAddr, PodListeners> = HashMap::new();
    loop {
        reconcile(&ctx, &mut pods).await;
        tokio::select! {
            _ = handle.changed() => {}
            _ = ctx.drain.stopping() => break,
        }
    }
    // Listeners watch the drain themselves; dropping the senders stops them now.
    pods.clear();
}

/// The local pods' addresses and identities, as the model says now.
fn desired(ctx: &Ctx) -> HashMap<IpAddr, Arc<mesh_identity::SpiffeId>> {
    let model = ctx.model.current();
    model
        .workloads_on_node(&ctx.config.node)
        .filter(|w| ctx.is_local(w))
        .flat_map(|w| w.ips.iter().map(move |ip| (*ip, w.identity.clone())))
        .collect()
}

async fn reconcile(ctx: &Arc<Ctx>, pods: &mut HashMap<IpAddr, PodListeners>) {
    let want = desired(ctx);
    pods.retain(|ip, _| {
        let keep = want.contains_key(ip);
        if !keep {
            tracing::info!(pod_ip = %ip, "pod left this node or the mesh; closing its listeners");
            ctx.listening.lock().unwrap_or_else(|e| e.into_inner()).remove(ip);
        }
        keep
    });
    // Identities no local pod has any more stop being renewed.
    for id in ctx.certs.identities() {
        if let Identity::Workload(w) = &id
            && !want.values().any(|x| **x == *w)
        {
            tracing::info!(identity = %w, "no local pod has this identity any more; dropping its certificate");
            ctx.certs.forget(&id);
        }
    }
    let new: Vec<(IpAddr, Arc<mesh_identity::SpiffeId>)> =
        want.into_iter().filter(|(ip, _)| !pods.contains_key(ip)).collect();
    // Certificates first (concurrently), so the listeners can present them. A failed fetch
    // is retried with backoff by the cert manager; readiness reports it meanwhile.
    let fetches = new.iter().map(|(_, id)| async move {
        if let Err(e) = ctx.certs.fetch(id).await {
            tracing::warn!(identity = %id, error = %e, "cannot fetch workload certificate yet; retrying");
        }
    });
    futures::future::join_all(fetches).await;
    for (ip, _) in new {
        match start_pod(ctx, ip).await {
            Ok(l) => {
                ctx.listening.lock().unwrap_or_else(|e| e.into_inner()).insert(ip);
                pods.insert(ip, l);
            }
            Err((addr, e)) => tracing::error!(%addr, error = %e, "cannot bind pod listener"),
        }
    }
}

async fn start_pod(ctx: &Arc<Ctx>, ip: IpAddr) -> Result<PodListeners, (SocketAddr, std::io::Error)> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let hbone_addr = SocketAddr::new(ip, ctx.config.hbone_port);
    let hbone = TcpListener::bind(hbone_addr).await.map_err(|e| (hbone_addr, e))?;
    let plaintext = if ctx.config.plaintext_port != 0 {
        let addr = SocketAddr::new(ip, ctx.config.plaintext_port);
        Some(TcpListener::bind(addr).await.map_err(|e| (addr, e))?)
    } else {
        None
    };
    let resolver_ctx = ctx.clone();
    let tls = ServerTls::by_local_addr(move |local: SocketAddr| {
        let c = &resolver_ctx;
        let model = c.model.load();
        let w = model.workload_by_ip(local.ip()).filter(|w| c.is_local(w))?;
        c.server_tls.get(&c.certs, &c.trust, &w.identity)
    });
    let settings = ServerSettings { drain_timeout: ctx.config.drain_deadline, ..ServerSettings::default() };
    let server = HboneServer::new(settings, tls, Arc::new(inbound::InboundHandler::new(ctx.clone())));
    let shutdown = stopped(ctx.clone(), stop_rx.clone());
    tokio::spawn(async move {
        if let Err(e) = server.serve(hbone, shutdown).await {
            tracing::error!(addr = %hbone_addr, error = %e, "HBONE listener failed");
        }
    });
    if let Some(l) = plaintext {
        tokio::spawn(inbound_plaintext::serve(ctx.clone(), l, stopped(ctx.clone(), stop_rx)));
    }
    tracing::info!(pod_ip = %ip, hbone = %hbone_addr, "pod listeners started");
    Ok(PodListeners { _stop: stop_tx })
}

/// Resolves when the pod's listeners must stop: the pod left, or the drain began.
async fn stopped(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        _ = ctx.drain.stopping() => {}
    }
}

/// Ready once a model is loaded and every local captured pod has a certificate and listeners.
/// Returns what is missing otherwise.
pub fn readiness(ctx: &Ctx) -> Result<(), String> {
    if ctx.model.generation() == 0 {
        return Err("model not loaded".into());
    }
    let want = desired(ctx);
    let listening = ctx.listening.lock().unwrap_or_else(|e| e.into_inner());
    let mut missing = Vec::new();
    for (ip, id) in &want {
        if ctx.certs.current(&Identity::Workload((**id).clone())).is_none() {
            missing.push(format!("certificate for {id}"));
        }
        if !listening.contains(ip) {
            missing.push(format!("listeners on {ip}"));
        }
    }
    if missing.is_empty() { Ok(()) } else { Err(missing.join(", ")) }
}
