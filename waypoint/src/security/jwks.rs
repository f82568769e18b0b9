//! JSON Web Key Sets: parsing ([`Jwks`], RFC 7517/7518/8037) into verification keys, and the
//! [`JwksCache`] of remote sets (`jwksUri`), shared across model generations and keyed by
//! URI.
//!
//! # Remote sets
//! The first use of a URI registers it and starts its refresh task; the set is fetched at
//! once, then every [`JwksCacheConfig::refresh_interval`], and early when a token names a
//! `kid` the set lacks (at most once per [`JwksCacheConfig::min_refresh_interval`], so
//! tokens with made-up `kid`s cannot make us hammer the issuer). A failed fetch is retried
//! with exponential backoff (from [`JwksCacheConfig::retry_initial`] up to the refresh
//! interval) and keeps the last good set: keys do not vanish because the issuer blinked.
//! Until a first set is fetched, tokens of the rule are refused (fail closed, 401).
//! The task ends when no authenticator uses the URI any more (entries are held weakly).
//!
//! Fetching is plain `GET` over HTTP/1.1; `https` uses rustls with the webpki (Mozilla)
//! roots. Redirects are not followed; a non-200 status, a body over
//! [`JwksCacheConfig::max_body`] or an unparsable set is a failed fetch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty, Limited};
use serde::Deserialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Why a JWKS could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS is not valid JSON: {0}")]
    Json(String),
    #[error("JWKS has no usable key")]
    NoKeys,
}

/// Why fetching a JWKS failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid JWKS URI {0:?}")]
    BadUri(String),
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS to {0}: {1}")]
    Tls(String, std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("HTTP request: {0}")]
    Request(#[from] http::Error),
    #[error("status {0}")]
    Status(http::StatusCode),
    #[error("body larger than {0} bytes or unreadable")]
    Body(usize),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

/// The curves and key types we verify with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

/// One verification key.
#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<Box<str>>,
    /// The JWK's `alg`, when it pins one.
    pub alg: Option<Box<str>>,
    pub kind: KeyKind,
    /// RSA: the modulus; EC: the uncompressed point `04 || x || y`; Ed25519: `x`.
    pub(crate) key: Box<[u8]>,
    /// RSA public exponent.
    pub(crate) e: Box<[u8]>,
}

/// A parsed key set. Keys we cannot use (unknown `kty`/`crv`, `use: enc`, bad encodings) are
/// skipped, as JOSE libraries do, so one odd key does not disable the others.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    keys: Box<[Jwk]>,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<RawKey>,
}

#[derive(Deserialize)]
struct RawKey {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

fn b64(s: &Option<String>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.as_deref()?.trim_end_matches('=')).ok()
}

impl RawKey {
    fn to_jwk(&self) -> Option<Jwk> {
        if self.use_.as_deref().is_some_and(|u| u != "sig") {
            return None;
        }
        let (kind, key, e) = match (self.kty.as_deref()?, self.crv.as_deref()) {
            ("RSA", _) => {
                let n = b64(&self.n)?;
                let e = b64(&self.e)?;
                (!n.is_empty() && !e.is_empty()).then_some(())?;
                (KeyKind::Rsa, n, e)
            }
            ("EC", Some(crv @ ("P-256" | "P-384"))) => {
                let (kind, len) = if crv == "P-256" { (KeyKind::EcP256, 32) } else { (KeyKind::EcP384, 48) };
                let (x, y) = (b64(&self.x)?, b64(&self.y)?);
                (x.len() == len && y.len() == len).then_some(())?;
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                (kind, point, Vec::new())
            }
            ("OKP", Some("Ed25519")) => {
                let x = b64(&self.x)?;
                (x.len() == 32).then_some(())?;
                (KeyKind::Ed25519, x, Vec::new())
            }
            _ => return None,
        };
        Some(Jwk {
            kid: self.kid.as_deref().map(Into::into),
            alg: self.alg.as_deref().map(Into::into),
            kind,
            key: key.into(),
            e: e.into(),
        })
    }
}

impl Jwks {
    /// Parses a JWKS document (`{"keys": [...]}`); a set without a usable key is an error.
    pub fn parse(json: &[u8]) -> Result<Self, JwksError> {
        let raw: RawSet = serde_json::from_slice(json).map_err(|e| JwksError::Json(e.to_string()))?;
        let keys: Box<[Jwk]> = raw.keys.iter().filter_map(RawKey::to_jwk).collect();
        if keys.is_empty() {
            return Err(JwksError::NoKeys);
        }
        Ok(Jwks { keys })
    }

    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Fetches the bytes of a JWKS. The HTTP implementation is [`HttpFetcher`]; tests plug in
/// their own.
pub trait JwksFetcher: Send + Sync + std::fmt::Debug + 'static {
    fn fetch<'a>(&'a self, uri: &'a str, timeout: Duration) -> BoxFuture<'a, Result<Bytes, FetchError>>;
}

/// Tuning of the cache.
#[derive(Debug, Clone)]
pub struct JwksCacheConfig {
    /// How often a set is re-fetched (Istio's default is 20 minutes).
    pub refresh_interval: Duration,
    /// The least time between two fetches of one URI triggered by unknown `kid`s.
    pub min_refresh_interval: Duration,
    /// The first retry delay after a failed fetch (doubling up to `refresh_interval`).
    pub retry_initial: Duration,
    /// Per-fetch timeout (a rule's `timeout` overrides it for the first wait).
    pub fetch_timeout: Duration,
    /// The largest JWKS body accepted.
    pub max_body: usize,
}

impl Default for JwksCacheConfig {
    fn default() -> Self {
        JwksCacheConfig {
            refresh_interval: Duration::from_secs(20 * 60),
            min_refresh_interval: Duration::from_secs(30),
            retry_initial: Duration::from_secs(1),
            fetch_timeout: Duration::from_secs(5),
            max_body: 1 << 20,
        }
    }
}

/// The state of one remote set, as seen by authenticators.
#[derive(Debug, Clone)]
pub enum RemoteKeys {
    /// Not fetched yet.
    Pending,
    /// The last good set (and how many successful fetches so far).
    Ready(Arc<Jwks>, u64),
    /// Never fetched successfully; the last error.
    Failed(Arc<str>),
}

/// One URI's entry: its latest keys and the trigger of an early refresh.
#[derive(Debug)]
pub struct RemoteJwks {
    uri: Arc<str>,
    state: watch::Sender<RemoteKeys>,
    /// Wakes the refresh task (early refresh, or the entry was dropped).
    wake: Arc<Notify>,
    /// When the last fetch triggered by a request was allowed.
    last_forced: Mutex<Option<Instant>>,
    min_refresh: Duration,
}

impl RemoteJwks {
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The current state.
    pub fn current(&self) -> RemoteKeys {
        self.state.borrow().clone()
    }

    /// A receiver to wait for the next state.
    pub fn subscribe(&self) -> watch::Receiver<RemoteKeys> {
        self.state.subscribe()
    }

    /// Asks for an early fetch (a token named an unknown `kid`); returns whether one was
    /// started, `false` when rate-limited.
    pub fn request_refresh(&self) -> bool {
        let now = Instant::now();
        let mut last = self.last_forced.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < self.min_refresh) {
            return false;
        }
        *last = Some(now);
        drop(last);
        self.wake.notify_one();
        true
    }

    /// Waits until the state is no longer `Pending` (or `timeout`), and returns it.
    pub async fn ready(&self, timeout: Duration) -> RemoteKeys {
        let mut rx = self.subscribe();
        let wait = rx.wait_for(|s| !matches!(s, RemoteKeys::Pending));
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(s)) => s.clone(),
            _ => self.current(),
        }
    }
}

impl Drop for RemoteJwks {
    fn drop(&mut self) {
        // Let the refresh task see at once that nobody needs this URI any more.
        self.wake.notify_one();
    }
}

/// Remote key sets by URI, shared by every generation's authenticators. Cheap to clone.
#[derive(Debug, Clone)]
pub struct JwksCache {
    inner: Arc<CacheInner>,
}

#[derive(Debug)]
struct CacheInner {
    entries: Mutex<HashMap<Arc<str>, Weak<RemoteJwks>>>,
    fetcher: Arc<dyn JwksFetcher>,
    config: JwksCacheConfig,
}

impl Default for JwksCache {
    fn default() -> Self {
        JwksCache::new(JwksCacheConfig::default())
    }
}

impl JwksCache {
    /// A cache fetching over HTTP(S).
    pub fn new(config: JwksCacheConfig) -> Self {
        let max_body = config.max_body;
        Self::with_fetcher(config, Arc::new(HttpFetcher::new(max_body)))
    }

    pub fn with_fetcher(config: JwksCacheConfig, fetcher: Arc<dyn JwksFetcher>) -> Self {
        JwksCache { inner: Arc::new(CacheInner { entries: Mutex::default(), fetcher, config }) }
    }

    pub fn config(&self) -> &JwksCacheConfig {
        &self.inner.config
    }

    /// The entry of `uri`, registering it and spawning its refresh task on first use (outside
    /// a Tokio runtime the entry is `Failed`: its tokens are refused). Keep the returned `Arc` for as long as the keys are needed.
    pub fn get(&self, uri: &str) -> Arc<RemoteJwks> {
        let mut entries = self.inner.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get(uri).and_then(Weak::upgrade) {
            return e;
        }
        entries.retain(|_, w| w.strong_count() > 0);
        let uri: Arc<str> = uri.into();
        let entry = Arc::new(RemoteJwks {
            uri: uri.clone(),
            state: watch::Sender::new(RemoteKeys::Pending),
            wake: Arc::new(Notify::new()),
            last_forced: Mutex::new(None),
            min_refresh: self.inner.config.min_refresh_interval,
        });
        entries.insert(uri, Arc::downgrade(&entry));
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(refresh_loop(Arc::downgrade(&entry), self.inner.clone()));
            }
            Err(_) => {
                // Built outside a runtime (a tool, a test): never fetched, fail closed.
                tracing::error!(
                    uri = &*entry.uri,
                    "no Tokio runtime to fetch the JWKS; its tokens are refused"
                );
                entry.state.send_replace(RemoteKeys::Failed("no runtime to fetch the JWKS".into()));
            }
        }
        entry
    }

    /// How many URIs are registered and still in use.
    pub fn len(&self) -> usize {
        let entries = self.inner.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.values().filter(|w| w.strong_count() > 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Fetch, publish, sleep until the next refresh, a retry or a wake-up; ends when the
/// entry is no longer used.
async fn refresh_loop(entry: Weak<RemoteJwks>, cache: Arc<CacheInner>) {
    let cfg = &cache.config;
    let mut fetches = 0u64;
    let mut retry = cfg.retry_initial;
    loop {
        let Some(e) = entry.upgrade() else { return };
        let uri = e.uri.clone();
        drop(e);
        let result = match cache.fetcher.fetch(&uri, cfg.fetch_timeout).await {
            Ok(body) => Jwks::parse(&body).map_err(FetchError::from),
            Err(err) => Err(err),
        };
        let Some(e) = entry.upgrade() else { return };
        let delay = match result {
            Ok(set) => {
                fetches += 1;
                retry = cfg.retry_initial;
                tracing::debug!(uri = &*uri, keys = set.keys.len(), "JWKS fetched");
                e.state.send_replace(RemoteKeys::Ready(Arc::new(set), fetches));
                cfg.refresh_interval
            }
            Err(err) => {
                tracing::warn!(uri = &*uri, error = %err, "JWKS fetch failed");
                // Keep a good set; wake waiters either way (a request waiting on an early
                // refresh learns at once that it brought nothing new).
                e.state.send_modify(|s| {
                    if !matches!(s, RemoteKeys::Ready(..)) {
                        *s = RemoteKeys::Failed(err.to_string().into());
                    }
                });
                let d = retry;
                retry = (retry * 2).min(cfg.refresh_interval);
                d
            }
        };
        // Wait without holding the entry alive: when its last user drops it, its `Drop`
        // wakes us and the next `upgrade` ends the task.
        let wake = e.wake.clone();
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        drop(e);
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// JWKS over HTTP/1.1, `https` with rustls and the webpki roots.
#[derive(Debug, Clone)]
pub struct HttpFetcher {
    max_body: usize,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
}

impl HttpFetcher {
    pub fn new(max_body: usize) -> Self {
        use tokio_rustls::rustls;
        let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(unreachable_tls);
        HttpFetcher { max_body, tls: Arc::new(tls) }
    }

    /// Uses `tls` for `https` URIs (private issuers with their own roots).
    pub fn with_tls(max_body: usize, tls: Arc<tokio_rustls::rustls::ClientConfig>) -> Self {
        HttpFetcher { max_body, tls }
    }

    async fn get(&self, uri: &str) -> Result<Bytes, FetchError> {
        let bad = || FetchError::BadUri(uri.to_string());
        let parsed: http::Uri = uri.parse().map_err(|_| bad())?;
        let https = match parsed.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let host = parsed.host().ok_or_else(bad)?.to_string();
        let port = parsed.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let addr = format!("{host}:{port}");
        let tcp = tokio::net::TcpStream::connect((bare_host.as_str(), port))
            .await
            .map_err(|e| FetchError::Connect(addr.clone(), e))?;
        let authority = parsed.authority().map(|a| a.as_str().to_string()).unwrap_or(host);
        let path = parsed.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let req = http::Request::get(path)
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "mesh-waypoint")
            .body(Empty::<Bytes>::new())?;
        if https {
            use tokio_rustls::rustls::pki_types::ServerName;
            let name = ServerName::try_from(bare_host).map_err(|_| bad())?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| FetchError::Tls(addr.clone(), e))?;
            self.send(hyper_util::rt::TokioIo::new(tls), req).await
        } else {
            self.send(hyper_util::rt::TokioIo::new(tcp), req).await
        }
    }

    async fn send<I>(&self, io: I, req: http::Request<Empty<Bytes>>) -> Result<Bytes, FetchError>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        let conn = tokio::spawn(conn);
        let resp = sender.send_request(req).await?;
        if resp.status() != http::StatusCode::OK {
            conn.abort();
            return Err(FetchError::Status(resp.status()));
        }
        let body = Limited::new(resp.into_body(), self.max_body)
            .collect()
            .await
            .map_err(|_| FetchError::Body(self.max_body))?
            .to_bytes();
        conn.abort();
        Ok(body)
    }
}

#[cold]
fn unreachable_tls(e: tokio_rustls::rustls::Error) -> tokio_rustls::rustls::ClientConfig {
    // The aws-lc-rs provider supports the default protocol versions; this cannot happen.
    panic!("TLS client configuration: {e}")
}

impl JwksFetcher for HttpFetcher {
    fn fetch<'a>(&'a self, uri: &'a str, timeout: Duration) -> BoxFuture<'a, Result<Bytes, FetchError>> {
        Box::pin(async move {
            match tokio::time::timeout(timeout, self.get(uri)).await {
                Ok(r) => r,
                Err(_) => Err(FetchError::Timeout(timeout)),
            }
        })
    }
}
