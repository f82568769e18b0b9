//! Certificate manager timing against a real in-process signer, on tokio's paused clock:
//! renewal around half-life, deduplicated requests, surviving a CA outage with capped
//! backoff, recovery, and forgetting an identity.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mesh_identity::cert::local::LocalCa;
use mesh_identity::manager::BoxFuture;
use mesh_identity::{CaClientError, CertManager, CertManagerConfig, CertificateProvider, Identity, SpiffeId};

/// An in-process CA that can be switched off.
#[derive(Debug)]
struct Signer {
    ca: LocalCa,
    up: AtomicBool,
    issued: AtomicUsize,
    refused: AtomicUsize,
    /// When each refused request arrived (tokio's clock).
    refused_at: Mutex<Vec<tokio::time::Instant>>,
}

impl Signer {
    fn new() -> Arc<Self> {
        Arc::new(Signer {
            ca: LocalCa::new("manager-test").unwrap(),
            up: AtomicBool::new(true),
            issued: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            refused_at: Mutex::new(Vec::new()),
        })
    }
}

impl CertificateProvider for Signer {
    fn create<'a>(
        &'a self,
        identity: &'a Identity,
        csr_pem: &'a str,
        validity: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, CaClientError>> {
        Box::pin(async move {
            if !self.up.load(Ordering::SeqCst) {
                self.refused.fetch_add(1, Ordering::SeqCst);
                self.refused_at.lock().unwrap().push(tokio::time::Instant::now());
                return Err(CaClientError::Connect { address: "local".into(), reason: "CA is down".into() });
            }
            self.issued.fetch_add(1, Ordering::SeqCst);
            // Backdated one minute, like mesh-ca.
            self.ca.sign(csr_pem, SystemTime::now() - Duration::from_secs(60), validity).map_err(|e| {
                CaClientError::Status {
                    identity: identity.clone(),
                    code: tonic::Code::InvalidArgument,
                    message: e.to_string(),
                }
            })
        })
    }
}

fn config() -> CertManagerConfig {
    CertManagerConfig {
        validity: Duration::from_secs(3600),
        renew_fraction: 0.5,
        jitter: 0.1,
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
    }
}

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "bookinfo", sa).unwrap()
}

const MIN: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn renews_at_half_life_and_survives_outage() {
    let signer = Signer::new();
    let mgr = CertManager::new(signer.clone(), config());
    let pp = id("productpage");

    let c1 = mgr.fetch(&pp).await.unwrap();
    assert_eq!(c1.identity(), &Identity::Workload(pp.clone()));
    assert_eq!(signer.issued.load(Ordering::SeqCst), 1);
    // Lifetime 61 min (1 min backdate): renewal falls 27.45..33.55 min after notBefore,
    // i.e. 26.45..32.55 min from now. Before that window: the same certificate.
    tokio::time::sleep(25 * MIN).await;
    assert_eq!(mgr.fetch(&pp).await.unwrap().serial(), c1.serial());
    assert_eq!(signer.issued.load(Ordering::SeqCst), 1);
    // After the window: renewed, well before expiry.
    tokio::time::sleep(8 * MIN).await;
    let c2 = mgr.fetch(&pp).await.unwrap();
    assert_ne!(c2.serial(), c1.serial());
    assert_eq!(signer.issued.load(Ordering::SeqCst), 2);

    // The CA goes down past c2's renewal point: c2 is still served while valid.
    signer.up.store(false, Ordering::SeqCst);
    tokio::time::sleep(40 * MIN).await;
    let still = mgr.fetch(&pp).await.unwrap();
    assert_eq!(still.serial(), c2.serial());
    // c2's renewal fell at most 65.1 min in, so retries have run at least 7.9 min: the gaps
    // between them double from 1 s and are then capped at 60 s.
    let gaps: Vec<u64> = {
        let at = signer.refused_at.lock().unwrap();
        at.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect()
    };
    assert!(gaps.len() >= 7, "too few retries: {gaps:?}");
    assert_eq!(gaps[..7], [1, 2, 4, 8, 16, 32, 60], "{gaps:?}");
    assert!(gaps[6..].iter().all(|g| *g == 60), "{gaps:?}");

    // Past expiry with the CA still down: no certificate rather than an expired one.
    tokio::time::sleep(30 * MIN).await;
    let err = mgr.fetch(&pp).await.unwrap_err();
    assert!(matches!(err, CaClientError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("CA is down"), "{err}");

    // The CA comes back: within one capped backoff a fresh certificate is served.
    signer.up.store(true, Ordering::SeqCst);
    tokio::time::sleep(61 * Duration::from_secs(1)).await;
    let c3 = mgr.fetch(&pp).await.unwrap();
    assert_ne!(c3.serial(), c2.serial());
    assert!(c3.is_valid_at(SystemTime::now()));
    assert_eq!(mgr.dump().len(), 1);
    assert_eq!(mgr.dump()[0].identity, pp.to_string());
}

#[tokio::test(start_paused = true)]
async fn concurrent_fetches_share_one_request_and_forget_stops_renewal() {
    let signer = Signer::new();
    let mgr = CertManager::new(signer.clone(), config());
    let r = id("reviews");
    let results = futures_join(&mgr, &r, 8).await;
    let serial = results[0].serial().to_string();
    assert!(results.iter().all(|c| c.serial() == serial));
    assert_eq!(signer.issued.load(Ordering::SeqCst), 1, "eight concurrent fetches, one CSR");

    mgr.forget(&Identity::Workload(r.clone()));
    assert!(mgr.identities().is_empty());
    tokio::time::sleep(120 * MIN).await;
    assert_eq!(signer.issued.load(Ordering::SeqCst), 1, "a forgotten identity is not renewed");
    // Asking again starts over.
    let again = mgr.fetch(&r).await.unwrap();
    assert_ne!(again.serial(), serial);
}

#[tokio::test(start_paused = true)]
async fn first_request_failure_is_reported_then_retried() {
    let signer = Signer::new();
    signer.up.store(false, Ordering::SeqCst);
    let mgr = CertManager::new(signer.clone(), config());
    let r = id("ratings");
    let err = mgr.fetch(&r).await.unwrap_err();
    assert!(err.to_string().contains("CA is down"), "{err}");
    signer.up.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(mgr.fetch(&r).await.is_ok());
    assert_eq!(signer.issued.load(Ordering::SeqCst), 1);
}

async fn futures_join(mgr: &CertManager, id: &SpiffeId, n: usize) -> Vec<Arc<mesh_identity::WorkloadCert>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (m, i) = (mgr.clone(), id.clone());
        set.spawn(async move { m.fetch(&i).await.unwrap() });
    }
    set.join_all().await
}
