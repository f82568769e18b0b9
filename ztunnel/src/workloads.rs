//! Follows the model for the pods on this node: fetches each captured pod's certificate and
//! opens its listeners — under in-pod capture, 15001/15006/15008 inside the pod's netns
//! (see [`crate::capture`]); in loopback mode, HBONE on `<pod ip>:<hbone port>` and plaintext
//! on `<pod ip>:<plaintext port>` here. Stops them (and releases the capture) when the pod
//! goes away or leaves the mesh. Also answers readiness.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mesh_hbone::{HboneServer, ServerSettings, ServerTls};
use mesh_identity::Identity;
use mesh_model::Workload;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::capture::Capture;
use crate::ctx::Ctx;
use crate::proxy::{inbound, inbound_plaintext, outbound};

/// The listeners of one local pod; dropping it stops them and releases the capture.
#[derive(Debug)]
struct PodListeners {
    _stop: watch::Sender<bool>,
    ips: Vec<IpAddr>,
    capture: Option<Arc<Capture>>,
}

impl PodListeners {
    /// Stops the listeners but leaves the pod registered (ztunnel shutting down or
    /// restarting: the pod fails closed meanwhile instead of bypassing the proxy).
    fn close_keeping_capture(mut self) {
        self.capture.take();
    }
}

impl Drop for PodListeners {
    fn drop(&mut self) {
        if let Some(c) = &self.capture {
            c.remove_pod(&self.ips);
        }
    }
}

/// Keeps listeners in line with the model until shutdown.
pub async fn run(ctx: Arc<Ctx>) {
    let mut handle = ctx.model.clone();
    // Keyed by the pod's first address (a dual-stack pod is one netns, one set of listeners).
    let mut pods: HashMap<IpAddr, PodListeners> = HashMap::new();
    let mut first = true;
    // Pods that could not be started (e.g. their sandbox is not there yet) are retried with
    // backoff, not only on the next model change.
    let mut retry = std::time::Duration::from_millis(500);
    loop {
        let failed = reconcile(&ctx, &mut pods).await;
        if first && let Some(c) = &ctx.capture {
            // Pods a previous ztunnel registered that are gone now.
            c.forget_others(&c.cookies());
            first = false;
        }
        tokio::select! {
            _ = handle.changed() => {}
            _ = tokio::time::sleep(retry), if failed => retry = (retry * 2).min(std::time::Duration::from_secs(10)),
            _ = ctx.drain.stopping() => break,
        }
        if !failed {
            retry = std::time::Duration::from_millis(500);
        }
    }
    // Listeners watch the drain themselves; dropping the senders stops them now. The pods
    // stay registered with the programs: without listeners they fail closed until we return.
    for (_, p) in pods.drain() {
        p.close_keeping_capture();
    }
}

/// The local pods (by first address) and their workloads, as the model says now.
fn desired(ctx: &Ctx) -> HashMap<IpAddr, Arc<Workload>> {
    let model = ctx.model.current();
    model
        .workloads_on_node(&ctx.config.node)
        .filter(|w| ctx.is_local(w))
        .map(|w| (w.ips[0], w.clone()))
        .collect()
}

/// Returns whether some local pod could not be started.
async fn reconcile(ctx: &Arc<Ctx>, pods: &mut HashMap<IpAddr, PodListeners>) -> bool {
    let want = desired(ctx);
    pods.retain(|ip, p| {
        // A pod whose addresses changed is restarted with its new ones.
        let keep = want.get(ip).is_some_and(|w| *w.ips == *p.ips);
        if !keep {
            tracing::info!(pod_ip = %ip, "pod left this node or the mesh; closing its listeners");
            let mut l = ctx.listening.lock().unwrap_or_else(|e| e.into_inner());
            for ip in &p.ips {
                l.remove(ip);
            }
        }
        keep
    });
    // Identities no local pod has any more stop being renewed.
    for id in ctx.certs.identities() {
        if let Identity::Workload(w) = &id
            && !want.values().any(|x| *x.identity == *w)
        {
            tracing::info!(identity = %w, "no local pod has this identity any more; dropping its certificate");
            ctx.certs.forget(&id);
        }
    }
    let new: Vec<Arc<Workload>> = want.into_values().filter(|w| !pods.contains_key(&w.ips[0])).collect();
    // Certificates first (concurrently), so the listeners can present them. A failed fetch
    // is retried with backoff by the cert manager; readiness reports it meanwhile.
    let fetches = new.iter().map(|w| async move {
        if let Err(e) = ctx.certs.fetch(&w.identity).await {
            tracing::warn!(identity = %w.identity, error = %e, "cannot fetch workload certificate yet; retrying");
        }
    });
    futures::future::join_all(fetches).await;
    let mut failed = false;
    for w in new {
        let started = match &ctx.capture {
            Some(c) => start_captured(ctx, c, &w).await,
            None => start_pod(ctx, w.ips[0]).await.map_err(|(addr, e)| format!("{addr}: {e}")),
        };
        match started {
            Ok(l) => {
                ctx.listening.lock().unwrap_or_else(|e| e.into_inner()).extend(w.ips.iter().copied());
                pods.insert(w.ips[0], l);
            }
            Err(e) => {
                failed = true;
                tracing::error!(pod = %format!("{}/{}", w.namespace, w.name), error = %e, "cannot start pod listeners")
            }
        }
    }
    failed
}

/// The HBONE server for local pods: presents the certificate of the pod the connection
/// arrived for.
fn hbone_server(ctx: &Arc<Ctx>) -> HboneServer<inbound::InboundHandler> {
    let resolver_ctx = ctx.clone();
    let tls = ServerTls::by_local_addr(move |local: SocketAddr| {
        let c = &resolver_ctx;
        let model = c.model.load();
        let w = model.workload_by_ip(local.ip()).filter(|w| c.is_local(w))?;
        c.server_tls.get(&c.certs, &c.trust, &w.identity)
    });
    let settings = ServerSettings { drain_timeout: ctx.config.drain_deadline, ..ServerSettings::default() };
    HboneServer::new(settings, tls, Arc::new(inbound::InboundHandler::new(ctx.clone())))
}

/// In-pod capture: listeners inside the pod's netns, registered with the programs.
async fn start_captured(ctx: &Arc<Ctx>, c: &Arc<Capture>, w: &Workload) -> Result<PodListeners, String> {
    let l = c.add_pod(w).await.map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = hbone_server(ctx);
    let shutdown = stopped(ctx.clone(), stop_rx.clone());
    let pod = format!("{}/{}", w.namespace, w.name);
    let hbone_pod = pod.clone();
    tokio::spawn(async move {
        if let Err(e) = server.serve(l.hbone, shutdown).await {
            tracing::error!(pod = %hbone_pod, error = %e, "HBONE listener failed");
        }
    });
    tokio::spawn(inbound_plaintext::serve(ctx.clone(), l.plaintext, stopped(ctx.clone(), stop_rx.clone())));
    tokio::spawn(outbound::serve_pod(ctx.clone(), l.outbound, stopped(ctx.clone(), stop_rx)));
    tracing::info!(%pod, ips = ?w.ips, "pod captured: listeners 15001/15006/15008 open in its netns");
    Ok(PodListeners { _stop: stop_tx, ips: w.ips.to_vec(), capture: Some(c.clone()) })
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
    let server = hbone_server(ctx);
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
    Ok(PodListeners { _stop: stop_tx, ips: vec![ip], capture: None })
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
    for (ip, w) in &want {
        let id = &w.identity;
        if ctx.certs.current(&Identity::Workload((**id).clone())).is_none() {
            missing.push(format!("certificate for {id}"));
        }
        if !listening.contains(ip) {
            missing.push(format!("listeners on {ip}"));
        }
    }
    if missing.is_empty() { Ok(()) } else { Err(missing.join(", ")) }
}
