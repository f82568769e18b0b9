//! [`KubeSource`]: one watcher task per kind feeding parsed [`Signal`]s through a bounded
//! channel into one loop that coalesces them ([`EventBatcher`]) and applies one batch per
//! window to the store, after the first full sync of every kind.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use mesh_api::Kind;
use mesh_model::{ConfigSource, ConfigStore, SourceError};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::events::{EventBatcher, Signal};
use crate::kinds::{Resolved, kind_path, resolve};

/// How the source watches and batches.
#[derive(Debug, Clone)]
pub struct KubeSourceOptions {
    /// Kinds to watch (default: every kind the model reads).
    pub kinds: Vec<Kind>,
    /// How long events are gathered after the first one before one snapshot is built
    /// (duration; default 30 ms): bounds both the added latency and the snapshot rate.
    pub batch_window: Duration,
    /// How often a kind whose CRD is not installed is looked for again (duration; default 60 s).
    pub missing_kind_recheck: Duration,
    /// Objects per page of a list (count; default 500).
    pub page_size: u32,
    /// Signals buffered between the watchers and the batching loop (count; default 4096);
    /// a full buffer slows the watchers down rather than growing memory.
    pub channel_capacity: usize,
}

impl Default for KubeSourceOptions {
    fn default() -> Self {
        KubeSourceOptions {
            kinds: Kind::ALL.to_vec(),
            batch_window: Duration::from_millis(30),
            missing_kind_recheck: Duration::from_secs(60),
            page_size: 500,
            channel_capacity: 4096,
        }
    }
}

/// Whether the first full sync is done: every watched kind listed once (or found not served)
/// and the resulting model published. A kind that keeps failing (e.g. 403 from a missing RBAC
/// rule) keeps it false, with warnings in the log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Readiness(watch::Receiver<bool>);

impl Readiness {
    /// A handle that never becomes ready until `tx` says so (for [`drive`]).
    pub fn channel() -> (watch::Sender<bool>, Readiness) {
        let (tx, rx) = watch::channel(false);
        (tx, Readiness(rx))
    }

    /// A handle that is ready now (sources with nothing to wait for).
    pub fn ready() -> Readiness {
        let (_tx, rx) = watch::channel(true);
        Readiness(rx)
    }

    pub fn is_ready(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits for the first full sync (forever if the source stops before it).
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|r| *r).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The Kubernetes API as a [`ConfigSource`].
///
/// **Watch load.** Every process running this source opens one watch per kind (17 with every
/// Istio and Gateway API CRD installed) over the whole cluster: ztunnel needs every pod's
/// identity and address (for destinations and for the CA's placement checks), although it
/// captures only its own node's pods. With N nodes the API server holds 17·N watches and
/// sends each pod/Service/EndpointSlice change N times; these are served from its watch
/// cache (no etcd reads), so the cost is serialisation and bandwidth: O(N · change rate), and
/// at start (or after a watch expires) one paged list per kind, O(N · objects), also from the
/// cache (`resourceVersion=0`, "any" semantics). Each process keeps every object it reads;
/// the memory per object is measured by `cargo bench -p mesh-kube --bench memory`.
pub struct KubeSource {
    client: Client,
    opts: KubeSourceOptions,
    ready_tx: watch::Sender<bool>,
    ready: Readiness,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource").field("opts", &self.opts).finish_non_exhaustive()
    }
}

impl KubeSource {
    pub fn new(client: Client, opts: KubeSourceOptions) -> Self {
        let (ready_tx, ready) = Readiness::channel();
        KubeSource { client, opts, ready_tx, ready }
    }

    /// A handle telling whether the first full sync is done.
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }
}

impl ConfigSource for KubeSource {
    async fn run(self, store: Arc<ConfigStore>) -> Result<(), SourceError> {
        let (tx, rx) = mpsc::channel(self.opts.channel_capacity.max(1));
        let mut tasks = tokio::task::JoinSet::new();
        for kind in self.opts.kinds.iter().copied() {
            tasks.spawn(watch_kind(self.client.clone(), kind, self.opts.clone(), tx.clone()));
        }
        drop(tx);
        // The watcher tasks run until this future is dropped (the JoinSet aborts them then).
        drive(rx, store, &self.opts.kinds, self.opts.batch_window, self.ready_tx).await;
        tasks.shutdown().await;
        Ok(())
    }
}

/// The batching loop: gathers signals for `window` after the first of a batch, then applies
/// what is pending as one batch (never before every kind is synced). Returns when every
/// sender is gone.
pub async fn drive(
    mut rx: mpsc::Receiver<(Kind, Signal)>,
    store: Arc<ConfigStore>,
    kinds: &[Kind],
    window: Duration,
    ready: watch::Sender<bool>,
) {
    let mut batcher = EventBatcher::new(kinds);
    let mut published = false;
    let mut last_progress = Instant::now();
    loop {
        let Some((kind, signal)) = rx.recv().await else { return };
        batcher.handle(kind, signal);
        let deadline = Instant::now() + window;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some((kind, signal)) => batcher.handle(kind, signal),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        if !batcher.synced() {
            if last_progress.elapsed() >= Duration::from_secs(10) {
                last_progress = Instant::now();
                let waiting: Vec<String> = batcher.unsynced().into_iter().map(kind_path).collect();
                tracing::info!(waiting = %waiting.join(", "), "kube source: waiting for the first list of");
            }
            continue;
        }
        if !batcher.has_pending() && published {
            continue;
        }
        let batch = batcher.take();
        let units = batcher.known_units();
        let s = store.clone();
        // Translation is blocking work: keep it off the reactor.
        match tokio::task::spawn_blocking(move || s.apply(batch)).await {
            Ok(generation) => {
                if !published {
                    tracing::info!(generation, objects = units, "kube source: first full sync applied");
                }
                published = true;
                ready.send_replace(true);
            }
            Err(e) => tracing::error!(error = %e, "kube source: applying a batch failed"),
        }
    }
}

/// Counts consecutive errors so a persistent failure is logged at growing intervals.
#[derive(Default)]
struct ErrorLog(u64);

impl ErrorLog {
    fn error(&mut self, kind: Kind, what: &str, e: &dyn std::fmt::Display) {
        self.0 += 1;
        if self.0.is_power_of_two() {
            tracing::warn!(kind = %kind_path(kind), errors = self.0, "kube source: {what}: {e} (retrying with backoff; the last good model stays in force)");
        }
    }

    fn ok(&mut self) {
        self.0 = 0;
    }
}

/// Watches one kind forever: resolves its resource (re-checking a missing CRD every
/// `missing_kind_recheck`), runs kube-runtime's watcher with its default backoff (0.8 s
/// doubling to 30 s, reset after 2 min of health; the client itself honours `Retry-After` on
/// 429), and goes back to resolving when the resource disappears (404).
async fn watch_kind(client: Client, kind: Kind, opts: KubeSourceOptions, tx: mpsc::Sender<(Kind, Signal)>) {
    let mut errors = ErrorLog::default();
    let mut backoff = Duration::from_millis(800);
    let mut reported_missing = false;
    loop {
        let ar = match resolve(&client, kind).await {
            Ok(Resolved::Served(ar)) => ar,
            Ok(Resolved::NotServed) => {
                if !reported_missing {
                    tracing::warn!(
                        kind = %kind_path(kind),
                        versions = ?kind.versions(),
                        "kube source: this API is not served (CRD not installed?); its objects are empty, \
                         checked again every {:?}",
                        opts.missing_kind_recheck
                    );
                    reported_missing = true;
                }
                if tx.send((kind, Signal::NotServed)).await.is_err() {
                    return;
                }
                tokio::time::sleep(opts.missing_kind_recheck).await;
                continue;
            }
            Err(e) => {
                errors.error(kind, "discovery failed", &e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        if reported_missing {
            tracing::info!(kind = %kind_path(kind), api_version = %ar.api_version, "kube source: API now served");
            reported_missing = false;
        }
        backoff = Duration::from_millis(800);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let cfg = watcher::Config::default().any_semantic().page_size(opts.page_size);
        let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff());
        while let Some(item) = stream.next().await {
            match item {
                Ok(ev) => {
                    errors.ok();
                    if let watcher::Event::Apply(o) | watcher::Event::Delete(o) = &ev {
                        tracing::trace!(kind = %kind_path(kind), name = %o.name_any(), "kube source: event");
                    }
                    let signal = Signal::from_event(kind, &ar.api_version, ev);
                    if tx.send((kind, signal)).await.is_err() {
                        return;
                    }
                }
                Err(e) if is_not_found(&e) => {
                    tracing::warn!(kind = %kind_path(kind), "kube source: resource gone (CRD removed?): {e}");
                    break;
                }
                Err(e) => errors.error(kind, "watch failed", &e),
            }
        }
    }
}

fn is_not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
}
