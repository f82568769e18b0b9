//! The shared inputs every listener and connection uses ([`Ctx`]), the caches behind them
//! (authorization policies per workload per model generation, TLS server configs per
//! certificate), the adapters the HBONE pool needs, and [`start`], which builds it all.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use mesh_hbone::{Dialer, ManagedCerts, Pool, PoolKey, PoolSettings};
use mesh_identity::{
    CaClientConfig, CaClientError, CertManager, CertManagerConfig, Identity, SpiffeId, TrustBundle,
    bootstrap_node, server_config,
};
use mesh_model::{ConfigStore, MeshConfig, Model, ModelHandle, Workload};
use mesh_policy::{AuthzIndex, AuthzPolicies};
use mesh_telemetry::{LogHandle, Metrics, Registry};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::capture::{Capture, CaptureError};
use crate::config::{CaptureMode, Config, ConfigError};
use crate::drain::{Drain, DrainWatch};
use crate::lb::Balancer;

/// Everything a connection needs, shared by all listeners.
#[derive(Debug)]
pub struct Ctx {
    pub config: Arc<Config>,
    pub model: ModelHandle,
    pub certs: CertManager,
    pub trust: Arc<TrustBundle>,
    pub pool: Pool,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub policies: PolicyCache,
    pub endpoint_services: EndpointServices,
    pub server_tls: ServerTlsCache,
    pub lb: Balancer,
    pub drain: DrainWatch,
    pub log: Option<LogHandle>,
    pub cluster: Arc<str>,
    /// Ports refused as inbound targets (our own).
    pub own_ports: Vec<u16>,
    /// Local pod IPs with bound listeners (readiness).
    pub listening: Mutex<std::collections::HashSet<std::net::IpAddr>>,
    /// In-pod eBPF capture (`capture.mode: ebpf`), else `None`.
    pub capture: Option<Arc<Capture>>,
}

impl Ctx {
    /// Whether `w` is a pod this ztunnel serves: on our node, captured, addressable.
    pub fn is_local(&self, w: &Workload) -> bool {
        w.captured && w.is_addressable() && w.node.as_deref() == Some(self.config.node.as_str())
    }

    /// Connects to `addr` on behalf of local pod `client`: from inside its netns under
    /// capture, else from its address when that is local (loopback mode).
    pub async fn connect_for_pod(&self, client: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
        if let Some(c) = &self.capture {
            let pod = c.pod(client).ok_or_else(|| no_netns(client))?;
            return c.connect_from_pod(&pod, addr).await;
        }
        let bind = self.config.bind_source_ip.then_some(client).filter(|ip| ip.is_loopback());
        connect_from(bind, addr).await
    }

    /// Connects to the app at `addr` (a local pod) for a connection from `client`: under
    /// capture from inside the pod, keeping the client's address.
    pub async fn deliver(&self, client: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
        if let Some(c) = &self.capture {
            let pod = c.pod(addr.ip()).ok_or_else(|| no_netns(addr.ip()))?;
            return c.deliver(&pod, client, addr).await;
        }
        connect_from(None, addr).await
    }
}

fn no_netns(ip: IpAddr) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotFound, format!("no captured local pod with address {ip}"))
}

/// Compiled authorization policies per workload, rebuilt when the model generation changes.
#[derive(Debug, Default)]
pub struct PolicyCache {
    inner: Mutex<Option<PolicyState>>,
}

#[derive(Debug)]
struct PolicyState {
    generation: u64,
    index: Arc<AuthzIndex>,
    by_workload: HashMap<(Arc<str>, Arc<str>), AuthzPolicies>,
}

impl PolicyCache {
    pub fn for_workload(&self, model: &Model, w: &Workload) -> AuthzPolicies {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.as_ref().is_none_or(|s| s.generation != model.generation()) {
            *g = Some(PolicyState {
                generation: model.generation(),
                index: Arc::new(AuthzIndex::new(model)),
                by_workload: HashMap::new(),
            });
        }
        let st = g.as_mut().expect("just set");
        let key = (w.namespace.clone(), w.name.clone());
        if let Some(p) = st.by_workload.get(&key) {
            return p.clone();
        }
        let p = st.index.for_workload(model, w);
        st.by_workload.insert(key, p.clone());
        p
    }
}

/// The services each endpoint address:port serves (for inbound `destination_service*`
/// labels), indexed once per model generation instead of scanning services per connection.
#[derive(Debug, Default)]
pub struct EndpointServices {
    /// (model generation indexed, endpoint address → service).
    inner: Mutex<(Option<u64>, ServicesByEndpoint)>,
}

type ServicesByEndpoint = HashMap<SocketAddr, Arc<mesh_model::Service>>;

impl EndpointServices {
    /// The first service (in model order) with an endpoint at `addr`.
    pub fn get(&self, model: &Model, addr: SocketAddr) -> Option<Arc<mesh_model::Service>> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 != Some(model.generation()) {
            let mut map = HashMap::new();
            for s in model.services() {
                for e in s.endpoints.iter() {
                    for p in e.ports.iter().filter(|p| **p != 0) {
                        map.entry(SocketAddr::new(e.ip, *p)).or_insert_with(|| s.clone());
                    }
                }
            }
            *g = (Some(model.generation()), map);
        }
        g.1.get(&addr).cloned()
    }
}

/// TLS server configs per identity, rebuilt when the certificate is renewed.
#[derive(Debug, Default)]
pub struct ServerTlsCache {
    inner: Mutex<HashMap<SpiffeId, (String, Arc<rustls::ServerConfig>)>>,
}

impl ServerTlsCache {
    /// The server config presenting the current certificate of `id`, if we hold one.
    pub fn get(
        &self,
        certs: &CertManager,
        trust: &TrustBundle,
        id: &SpiffeId,
    ) -> Option<Arc<rustls::ServerConfig>> {
        let cert = certs.current(&Identity::Workload(id.clone()))?;
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((serial, cfg)) = m.get(id)
            && serial == cert.serial()
        {
            return Some(cfg.clone());
        }
        match server_config(&cert, trust) {
            Ok(cfg) => {
                let cfg = Arc::new(cfg);
                m.insert(id.clone(), (cert.serial().to_string(), cfg.clone()));
                Some(cfg)
            }
            Err(e) => {
                tracing::error!(identity = %id, error = %e, "cannot build TLS server config");
                None
            }
        }
    }
}

/// Dials from inside the source pod's netns under capture (the key names the pod), else
/// from the source pod's IP when configured (loopback mode: pod IPs are local addresses),
/// so the peer sees the pod as the source either way.
#[derive(Debug)]
struct PodDialer {
    model: ModelHandle,
    bind_source_ip: bool,
    capture: Option<Arc<Capture>>,
}

impl Dialer for PodDialer {
    fn dial(&self, key: &PoolKey) -> BoxFuture<'_, std::io::Result<TcpStream>> {
        let (src, addr) = (&key.src, key.addr);
        if let (Some(c), Some(ip)) = (&self.capture, key.src_addr) {
            let c = c.clone();
            return async move {
                let pod = c.pod(ip).ok_or_else(|| no_netns(ip))?;
                c.connect_from_pod(&pod, addr).await
            }
            .boxed();
        }
        // Any local pod with this identity and the same address family will do.
        let bind = self.bind_source_ip.then(|| {
            let m = self.model.load();
            m.workloads()
                .iter()
                .filter(|w| *w.identity == *src)
                .flat_map(|w| w.ips.iter().copied())
                .find(|ip| ip.is_ipv4() == addr.is_ipv4() && ip.is_loopback())
        });
        async move { connect_from(bind.flatten(), addr).await }.boxed()
    }
}

/// Connects to `addr`, from `src` when given, with TCP_NODELAY.
pub async fn connect_from(src: Option<std::net::IpAddr>, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = src {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let s = sock.connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Why ztunnel could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("CA root {path}: {reason}")]
    CaRoot { path: String, reason: String },
    #[error("bootstrapping node {node} with the CA: {source}")]
    Bootstrap {
        node: String,
        #[source]
        source: CaClientError,
    },
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("model source: {0}")]
    Source(#[from] mesh_kube::StartError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running ztunnel: its bound addresses and its shutdown.
#[derive(Debug)]
pub struct Ztunnel {
    pub ctx: Arc<Ctx>,
    pub outbound_addr: SocketAddr,
    pub socks5_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub readiness_addr: SocketAddr,
    pub drain: Drain,
    store: Arc<ConfigStore>,
}

impl Ztunnel {
    /// The config store (tests apply models through it).
    pub fn store(&self) -> &Arc<ConfigStore> {
        &self.store
    }

    /// Stops accepting, lets connections finish until the drain deadline, closes the rest.
    pub async fn shutdown(&self) -> crate::DrainOutcome {
        let outcome = self.drain.drain(self.ctx.config.drain_deadline).await;
        tracing::info!(?outcome, "drained");
        outcome
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Listen { what, addr, source })
}

/// Loads the model, bootstraps with the CA, binds every listener and starts serving.
pub async fn start(config: Config, log: Option<LogHandle>) -> Result<Ztunnel, StartError> {
    config.validate()?;
    let config = Arc::new(config);
    let (trust, root_pem) = TrustBundle::load_file(&config.trust_domain, &config.ca_root)
        .map_err(|(path, reason)| StartError::CaRoot { path, reason })?;
    let trust = Arc::new(trust);

    let mesh = MeshConfig {
        trust_domain: config.trust_domain.as_str().into(),
        cluster_id: config.cluster_id.as_str().into(),
        ..MeshConfig::default()
    };
    let (store, synced) = mesh_kube::start_store(mesh, &config.source, &config.model).await?;
    // The readiness listener is bound below: readiness waits for the model's first full sync.
    if !synced.is_ready() {
        tracing::info!("waiting for the model's first full sync from the API server");
        synced.wait().await;
    }

    let mut ca = CaClientConfig::new(config.ca_address.clone(), root_pem);
    ca.server_name = config.ca_server_name.clone();
    let boot = bootstrap_node(
        ca,
        &config.trust_domain,
        &config.node,
        config.token_file.clone(),
        CertManagerConfig::default(),
    )
    .await
    .map_err(|source| StartError::Bootstrap { node: config.node.clone(), source })?;
    let certs = boot.workload_manager(CertManagerConfig::default());

    let model = store.handle();
    let capture = match config.capture.mode {
        CaptureMode::Ebpf => Some(Arc::new(Capture::start(&config.capture)?)),
        CaptureMode::None => None,
    };
    let pool_settings = PoolSettings { connect_timeout: config.connect_timeout, ..PoolSettings::default() };
    let pool = Pool::new(
        pool_settings,
        Arc::new(ManagedCerts { certs: certs.clone(), trust: trust.clone() }),
        Arc::new(PodDialer {
            model: model.clone(),
            bind_source_ip: config.bind_source_ip,
            capture: capture.clone(),
        }),
    );
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let drain = Drain::new();

    let outbound = bind("outbound", config.outbound_addr).await?;
    let socks5 = bind("socks5", config.socks5_addr).await?;
    let admin = bind("admin", config.admin_addr).await?;
    let metrics_l = bind("metrics", config.metrics_addr).await?;
    let readiness = bind("readiness", config.readiness_addr).await?;
    let local = |l: &TcpListener, what, addr| {
        l.local_addr().map_err(|source| StartError::Listen { what, addr, source })
    };

    let ctx = Arc::new(Ctx {
        own_ports: config.own_ports(),
        cluster: config.cluster_id.as_str().into(),
        config: config.clone(),
        model,
        certs,
        trust,
        pool,
        metrics,
        registry: Arc::new(registry),
        policies: PolicyCache::default(),
        endpoint_services: EndpointServices::default(),
        server_tls: ServerTlsCache::default(),
        lb: Balancer::new(),
        drain: drain.watcher(),
        log,
        listening: Mutex::default(),
        capture,
    });
    let z = Ztunnel {
        outbound_addr: local(&outbound, "outbound", config.outbound_addr)?,
        socks5_addr: local(&socks5, "socks5", config.socks5_addr)?,
        admin_addr: local(&admin, "admin", config.admin_addr)?,
        metrics_addr: local(&metrics_l, "metrics", config.metrics_addr)?,
        readiness_addr: local(&readiness, "readiness", config.readiness_addr)?,
        ctx: ctx.clone(),
        drain,
        store,
    };
    tokio::spawn(crate::proxy::outbound::serve_captured(ctx.clone(), outbound));
    tokio::spawn(crate::proxy::outbound::serve_socks5(ctx.clone(), socks5));
    tokio::spawn(crate::admin::serve(ctx.clone(), admin, crate::admin::Server::Admin));
    tokio::spawn(crate::admin::serve(ctx.clone(), metrics_l, crate::admin::Server::Metrics));
    tokio::spawn(crate::admin::serve(ctx.clone(), readiness, crate::admin::Server::Readiness));
    tokio::spawn(crate::workloads::run(ctx.clone()));
    tracing::info!(
        node = %config.node,
        socks5 = %z.socks5_addr,
        outbound = %z.outbound_addr,
        admin = %z.admin_addr,
        metrics = %z.metrics_addr,
        readiness = %z.readiness_addr,
        "ztunnel started"
    );
    Ok(z)
}
