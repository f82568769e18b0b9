//! The certificate manager: one certificate per identity this process serves, obtained from a
//! [`CertificateProvider`] (the CA), renewed at a fraction of its lifetime with jitter, and kept
//! while the CA is unreachable (retrying with capped exponential backoff) for as long as it
//! is valid. Concurrent `fetch`es of one identity share one request.
//!
//! Timing uses tokio's clock (validity is converted once, when a certificate arrives), so the
//! renewal logic can be tested with paused time.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mesh_api::SpiffeId;
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cert::{CertDump, WorkloadCert, new_csr};
use crate::{CaClientError, Identity, NodeId};

/// A boxed, sendable future (what trait objects of async traits return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that signs CSRs: the gRPC CA client, or an in-process signer.
pub trait CertificateProvider: Send + Sync + fmt::Debug {
    /// Asks for a certificate for `identity` from the PEM CSR, valid for `validity`.
    /// Returns the PEM chain, leaf first, root last.
    fn create<'a>(
        &'a self,
        identity: &'a Identity,
        csr_pem: &'a str,
        validity: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, CaClientError>>;
}

/// How certificates are requested and renewed.
#[derive(Debug, Clone, PartialEq)]
pub struct CertManagerConfig {
    /// Requested certificate lifetime (the CA may shorten it); default 24 h.
    pub validity: Duration,
    /// Fraction of the lifetime after which to renew (0..1); default 0.5 (half-life).
    pub renew_fraction: f64,
    /// Jitter around the renewal point, as a fraction of `lifetime * renew_fraction`; default 0.1.
    pub jitter: f64,
    /// First retry delay after a failed request; default 1 s, doubling on each failure.
    pub backoff_initial: Duration,
    /// Longest retry delay; default 60 s.
    pub backoff_max: Duration,
}

impl Default for CertManagerConfig {
    fn default() -> Self {
        CertManagerConfig {
            validity: Duration::from_secs(24 * 3600),
            renew_fraction: 0.5,
            jitter: 0.1,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// A certificate and the tokio instant at which it expires.
#[derive(Clone)]
struct Current {
    cert: Arc<WorkloadCert>,
    expires: Instant,
}

/// What one identity's renewal task publishes.
#[derive(Clone, Default)]
struct Slot {
    current: Option<Current>,
    /// The last failure, cleared by a success.
    last_error: Option<String>,
}

#[derive(Debug)]
struct Entry {
    state: watch::Receiver<Slot>,
    task: JoinHandle<()>,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("cert", &self.current.as_ref().map(|c| c.cert.serial().to_string()))
            .field("last_error", &self.last_error)
            .finish()
    }
}

#[derive(Debug)]
struct Inner {
    provider: Arc<dyn CertificateProvider>,
    config: CertManagerConfig,
    entries: Mutex<HashMap<Identity, Entry>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let entries = self.entries.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, e) in entries.drain() {
            e.task.abort();
        }
    }
}

/// Holds and renews one certificate per identity. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct CertManager {
    inner: Arc<Inner>,
}

impl CertManager {
    pub fn new(provider: Arc<dyn CertificateProvider>, config: CertManagerConfig) -> Self {
        CertManager { inner: Arc::new(Inner { provider, config, entries: Mutex::new(HashMap::new()) }) }
    }

    pub fn config(&self) -> &CertManagerConfig {
        &self.inner.config
    }

    /// A valid certificate for a workload identity, cached or freshly requested.
    pub async fn fetch(&self, id: &SpiffeId) -> Result<Arc<WorkloadCert>, CaClientError> {
        self.fetch_identity(&Identity::Workload(id.clone())).await
    }

    /// A valid certificate for this node's identity (towards the CA).
    pub async fn fetch_node(&self, id: &NodeId) -> Result<Arc<WorkloadCert>, CaClientError> {
        self.fetch_identity(&Identity::Node(id.clone())).await
    }

    /// A valid certificate for `id`. The first call starts its renewal task; callers arriving
    /// while a request is in flight wait for the same answer. When no valid certificate exists
    /// and the last attempt failed, returns that failure at once (the task keeps retrying).
    pub async fn fetch_identity(&self, id: &Identity) -> Result<Arc<WorkloadCert>, CaClientError> {
        let mut rx = {
            let mut entries = self.inner.entries.lock().unwrap_or_else(|p| p.into_inner());
            match entries.get(id) {
                Some(e) => e.state.clone(),
                None => {
                    let (tx, rx) = watch::channel(Slot::default());
                    let task = tokio::spawn(renew_loop(
                        self.inner.provider.clone(),
                        self.inner.config.clone(),
                        id.clone(),
                        tx,
                    ));
                    entries.insert(id.clone(), Entry { state: rx.clone(), task });
                    rx
                }
            }
        };
        loop {
            {
                let slot = rx.borrow_and_update();
                if let Some(c) = &slot.current
                    && Instant::now() < c.expires
                {
                    return Ok(c.cert.clone());
                }
                if let Some(reason) = &slot.last_error {
                    return Err(CaClientError::Unavailable { identity: id.clone(), reason: reason.clone() });
                }
            }
            if rx.changed().await.is_err() {
                return Err(CaClientError::Unavailable {
                    identity: id.clone(),
                    reason: "the identity was forgotten while waiting".into(),
                });
            }
        }
    }

    /// The current certificate of `id`, if one is held and valid; never requests one.
    pub fn current(&self, id: &Identity) -> Option<Arc<WorkloadCert>> {
        let entries = self.inner.entries.lock().unwrap_or_else(|p| p.into_inner());
        let slot = entries.get(id)?.state.borrow().clone();
        slot.current.filter(|c| Instant::now() < c.expires).map(|c| c.cert)
    }

    /// Stops serving `id` (its workload went away): drops its certificate and renewal task.
    pub fn forget(&self, id: &Identity) {
        let removed = self.inner.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        if let Some(e) = removed {
            e.task.abort();
            tracing::debug!(identity = %id, "certificate forgotten");
        }
    }

    /// The identities served now.
    pub fn identities(&self) -> Vec<Identity> {
        let entries = self.inner.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<_> = entries.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Key-free views of the held certificates, for `/config_dump`.
    pub fn dump(&self) -> Vec<CertDump> {
        let entries = self.inner.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = entries
            .values()
            .filter_map(|e| e.state.borrow().current.as_ref().map(|c| c.cert.to_dump()))
            .collect();
        out.sort_by(|a, b| a.identity.cmp(&b.identity));
        out
    }
}

/// Makes a key and CSR, asks the provider, checks the answer.
async fn obtain(
    provider: &dyn CertificateProvider,
    id: &Identity,
    validity: Duration,
) -> Result<WorkloadCert, CaClientError> {
    let csr = new_csr(id)?;
    let chain = provider.create(id, &csr.csr_pem, validity).await?;
    if chain.is_empty() {
        return Err(CaClientError::EmptyResponse { identity: id.clone() });
    }
    Ok(WorkloadCert::from_issued(id.clone(), csr, chain)?)
}

/// When to renew, counted from now (wall clock), with jitter.
fn renewal_delay(cert: &WorkloadCert, config: &CertManagerConfig, now: SystemTime) -> Duration {
    let total = cert.not_after().duration_since(cert.not_before()).unwrap_or_default();
    let base = total.mul_f64(config.renew_fraction.clamp(0.0, 1.0));
    let j = config.jitter.abs();
    let factor = if j > 0.0 { 1.0 + rand::rng().random_range(-j..=j) } else { 1.0 };
    let renew_at = cert.not_before() + base.mul_f64(factor.max(0.0));
    // Never sooner than 100 ms, so a CA handing out tiny lifetimes cannot make us spin.
    renew_at.duration_since(now).unwrap_or_default().max(Duration::from_millis(100))
}

async fn renew_loop(
    provider: Arc<dyn CertificateProvider>,
    config: CertManagerConfig,
    id: Identity,
    tx: watch::Sender<Slot>,
) {
    let mut backoff = config.backoff_initial;
    loop {
        let result = obtain(provider.as_ref(), &id, config.validity).await;
        let (now_wall, now) = (SystemTime::now(), Instant::now());
        let result = result.and_then(|cert| {
            let remaining = cert.not_after().duration_since(now_wall).unwrap_or_default();
            if remaining.is_zero() {
                Err(CaClientError::Unavailable {
                    identity: id.clone(),
                    reason: format!("the CA issued certificate {} already expired", cert.serial()),
                })
            } else {
                Ok((cert, remaining))
            }
        });
        match result {
            Ok((cert, remaining)) => {
                let delay = renewal_delay(&cert, &config, now_wall).min(remaining);
                tracing::info!(
                    identity = %id,
                    serial = cert.serial(),
                    valid_for_s = remaining.as_secs(),
                    renew_in_s = delay.as_secs(),
                    "certificate obtained"
                );
                let current = Current { cert: Arc::new(cert), expires: now + remaining };
                tx.send_replace(Slot { current: Some(current), last_error: None });
                backoff = config.backoff_initial;
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                let keeping = tx.borrow().current.as_ref().is_some_and(|c| now < c.expires);
                tracing::warn!(
                    identity = %id,
                    error = %e,
                    retry_in_ms = backoff.as_millis() as u64,
                    keeping_valid_certificate = keeping,
                    "certificate request failed"
                );
                tx.send_modify(|s| s.last_error = Some(e.to_string()));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.backoff_max);
            }
        }
    }
}
