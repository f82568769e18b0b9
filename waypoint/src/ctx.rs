//! The shared inputs of every request ([`Ctx`]): model handle, the per-generation compiled
//! state (route tables, clusters, security), certificates, the HBONE pool, the upstream
//! clients, metrics and the drain; and [`start`], which builds it all and binds the listeners.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use futures::FutureExt;
use futures::future::BoxFuture;
use mesh_api::SpiffeId;
use mesh_hbone::{Dialer, ManagedCerts, Pool, PoolKey, PoolSettings};
use mesh_identity::{
    CaClientConfig, CaClientError, CertManager, CertManagerConfig, Identity, TrustBundle, bootstrap_node,
    server_config,
};
use mesh_model::{ConfigStore, MeshConfig, Model, ModelHandle};
use mesh_telemetry::{HttpMetrics, LogHandle, Metrics, Registry};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::proxy::upstream::Upstreams;
use crate::route::RouteTables;
use crate::security::{JwksCache, JwksCacheConfig, SecurityTable};
use crate::upstream::Clusters;

/// What is compiled from one model generation and read by every request without locking.
#[derive(Debug)]
pub struct Compiled {
    pub generation: u64,
    pub routes: RouteTables,
    pub security: SecurityTable,
    /// The Telemetry objects' tracing overrides for this waypoint.
    pub tracing: crate::trace::TelemetryTracing,
    /// Local rate limits (EnvoyFilter); buckets carried over from the previous generation.
    pub ratelimit: crate::ratelimit::RateLimits,
}

/// Everything a request needs.
#[derive(Debug)]
pub struct Ctx {
    pub config: Arc<Config>,
    pub model: ModelHandle,
    pub compiled: ArcSwap<Compiled>,
    pub clusters: Clusters,
    /// JWKS fetched from `jwksUri`s, shared across model generations.
    pub jwks: JwksCache,
    /// This waypoint's Gateway (`namespace/name`), which Services name with `use-waypoint`.
    pub waypoint: mesh_model::WaypointRef,
    pub certs: CertManager,
    pub trust: Arc<TrustBundle>,
    pub identity: Arc<SpiffeId>,
    pub pool: Pool,
    pub upstreams: Upstreams,
    pub metrics: Arc<Metrics>,
    pub http_metrics: HttpMetrics,
    pub tracer: Arc<crate::trace::Tracer>,
    pub registry: Arc<Registry>,
    pub cluster: Arc<str>,
    pub log: Option<LogHandle>,
    pub stop: watch::Receiver<bool>,
    server_tls: Mutex<Option<(String, Arc<rustls::ServerConfig>)>>,
    /// Held while a generation compiles, so it compiles once.
    compile_gate: Mutex<()>,
}

impl Ctx {
    /// The TLS server config presenting the waypoint's current certificate.
    pub fn server_tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        let cert = self.certs.current(&Identity::Workload((*self.identity).clone()))?;
        let mut g = self.server_tls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((serial, cfg)) = &*g
            && serial == cert.serial()
        {
            return Some(cfg.clone());
        }
        let cfg = Arc::new(server_config(&cert, &self.trust).ok()?);
        *g = Some((cert.serial().to_string(), cfg.clone()));
        Some(cfg)
    }

    /// The compiled state for the current model, recompiled when the generation moved.
    pub fn compiled(&self) -> Arc<Compiled> {
        let c = self.compiled.load_full();
        if c.generation == self.model.load().generation() {
            return c;
        }
        // Requests that meet a new generation while it compiles wait for that compile instead
        // of each compiling their own copy (50 ms of CPU apiece at 100,000 workloads), and an
        // older generation can never be stored over a newer one.
        let _gate = self.compile_gate.lock().unwrap_or_else(|e| e.into_inner());
        let c = self.compiled.load_full();
        let model = self.model.load();
        if c.generation == model.generation() {
            return c;
        }
        let fresh = Arc::new(compile(&model, &self.clusters, &self.jwks, &self.waypoint, Some(&c)));
        self.compiled.store(fresh.clone());
        fresh
    }
}

/// Compiles routes, clusters and security for `model`, logging what the compilers refused.
pub fn compile(
    model: &Model,
    clusters: &Clusters,
    jwks: &JwksCache,
    waypoint: &mesh_model::WaypointRef,
    previous: Option<&Compiled>,
) -> Compiled {
    let (routes, mut diags) = crate::route::compile(model);
    diags.extend(clusters.update(model));
    let security = SecurityTable::build(model, jwks, waypoint);
    for d in &diags {
        tracing::warn!(generation = model.generation(), "{d}");
    }
    let (trace, warnings) = crate::trace::TelemetryTracing::compile(model, waypoint);
    warnings.iter().for_each(|w| tracing::warn!(generation = model.generation(), "{w}"));
    let ratelimit =
        crate::ratelimit::RateLimits::build(model, waypoint, &routes, previous.map(|p| &p.ratelimit));
    Compiled { generation: model.generation(), routes, security, tracing: trace, ratelimit }
}

/// Dials upstream HBONE from the waypoint pod's own address (when the HBONE listener names
/// one), so destination ztunnels see the waypoint as the source.
#[derive(Debug)]
struct BindDialer(Option<IpAddr>);

impl Dialer for BindDialer {
    fn dial(&self, key: &PoolKey) -> BoxFuture<'_, std::io::Result<TcpStream>> {
        let (bind, addr) = (self.0.filter(|ip| ip.is_ipv4() == key.addr.is_ipv4()), key.addr);
        async move {
            let sock = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            if let Some(ip) = bind {
                sock.bind(SocketAddr::new(ip, 0))?;
            }
            let s = sock.connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(s)
        }
        .boxed()
    }
}

/// Why the waypoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("CA root {path}: {reason}")]
    CaRoot { path: String, reason: String },
    #[error("bootstrapping with the CA as node {node}: {source}")]
    Bootstrap {
        node: String,
        #[source]
        source: CaClientError,
    },
    #[error("waypoint pod {namespace}/{pod} is not in the model: cannot tell its identity")]
    UnknownPod { namespace: String, pod: String },
    #[error("model source: {0}")]
    Source(#[from] mesh_kube::StartError),
    #[error("certificate for {identity}: {source}")]
    Certificate {
        identity: String,
        #[source]
        source: CaClientError,
    },
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running waypoint.
#[derive(Debug)]
pub struct Waypoint {
    pub ctx: Arc<Ctx>,
    pub hbone_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub readiness_addr: SocketAddr,
    /// The plaintext HTTP listener's address, when `plaintextHttpAddr` is set.
    pub plaintext_http_addr: Option<SocketAddr>,
    pub store: Arc<ConfigStore>,
    stop: watch::Sender<bool>,
}

impl Waypoint {
    /// Stops accepting; open requests get the drain deadline.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        tokio::time::sleep(self.ctx.config.drain_deadline.min(std::time::Duration::from_millis(200))).await;
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Listen { what, addr, source })
}

/// Loads the model, gets the waypoint's certificate, binds and serves.
pub async fn start(config: Config, log: Option<LogHandle>) -> Result<Waypoint, StartError> {
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
    // Listeners (readiness included) are bound below: they wait for the first full sync.
    if !synced.is_ready() {
        tracing::info!("waiting for the model's first full sync from the API server");
        synced.wait().await;
    }
    let model = store.handle();
    let identity = {
        let m = model.load();
        let w = m.workload(&config.namespace, &config.pod).ok_or_else(|| StartError::UnknownPod {
            namespace: config.namespace.clone(),
            pod: config.pod.clone(),
        })?;
        w.identity.clone()
    };

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
    certs
        .fetch(&identity)
        .await
        .map_err(|source| StartError::Certificate { identity: identity.to_string(), source })?;

    let pool = Pool::new(
        PoolSettings::default(),
        Arc::new(ManagedCerts { certs: certs.clone(), trust: trust.clone() }),
        Arc::new(BindDialer(Some(config.hbone_addr.ip()).filter(|ip| !ip.is_unspecified()))),
    );
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let http_metrics = HttpMetrics::new(&mut registry);
    let own_pod = model.load().workload(&config.namespace, &config.pod).cloned();
    let tracer = Arc::new(crate::trace::Tracer::new(&config, own_pod.as_deref(), &mut registry));
    let clusters = Clusters::for_namespace(&config.namespace);
    let jwks = JwksCache::new(JwksCacheConfig::default());
    let waypoint = mesh_model::WaypointRef {
        namespace: config.namespace.as_str().into(),
        name: config.gateway.as_str().into(),
    };
    let compiled = compile(&model.load(), &clusters, &jwks, &waypoint, None);
    let (stop_tx, stop_rx) = watch::channel(false);

    let hbone = bind("hbone", config.hbone_addr).await?;
    let admin = bind("admin", config.admin_addr).await?;
    let metrics_l = bind("metrics", config.metrics_addr).await?;
    let readiness = bind("readiness", config.readiness_addr).await?;
    let plaintext = match config.plaintext_http_addr {
        Some(addr) => Some(bind("plaintext HTTP", addr).await?),
        None => None,
    };
    let local = |l: &TcpListener, what, addr| {
        l.local_addr().map_err(|source| StartError::Listen { what, addr, source })
    };
    let ctx = Arc::new(Ctx {
        upstreams: Upstreams::new(pool.clone(), model.clone(), identity.clone()),
        cluster: config.cluster_id.as_str().into(),
        config: config.clone(),
        compiled: ArcSwap::from_pointee(compiled),
        model,
        clusters,
        jwks,
        waypoint,
        certs,
        trust,
        identity,
        pool,
        metrics,
        http_metrics,
        tracer,
        registry: Arc::new(registry),
        log,
        stop: stop_rx,
        server_tls: Mutex::default(),
        compile_gate: Mutex::default(),
    });
    let w = Waypoint {
        hbone_addr: local(&hbone, "hbone", config.hbone_addr)?,
        admin_addr: local(&admin, "admin", config.admin_addr)?,
        metrics_addr: local(&metrics_l, "metrics", config.metrics_addr)?,
        readiness_addr: local(&readiness, "readiness", config.readiness_addr)?,
        plaintext_http_addr: match (&plaintext, config.plaintext_http_addr) {
            (Some(l), Some(addr)) => Some(local(l, "plaintext HTTP", addr)?),
            _ => None,
        },
        ctx: ctx.clone(),
        store,
        stop: stop_tx,
    };
    tokio::spawn(crate::proxy::inbound::serve(ctx.clone(), hbone));
    tokio::spawn(crate::admin::serve(ctx.clone(), admin, crate::admin::Server::Admin));
    tokio::spawn(crate::admin::serve(ctx.clone(), metrics_l, crate::admin::Server::Metrics));
    tokio::spawn(crate::admin::serve(ctx.clone(), readiness, crate::admin::Server::Readiness));
    if let Some(l) = plaintext {
        tokio::spawn(crate::proxy::plain::serve(ctx.clone(), l));
    }
    tracing::info!(
        waypoint = %format!("{}/{}", config.namespace, config.gateway),
        identity = %ctx.identity,
        hbone = %w.hbone_addr,
        admin = %w.admin_addr,
        plaintext_http = ?w.plaintext_http_addr,
        "waypoint started"
    );
    Ok(w)
}
