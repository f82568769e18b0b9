//! The connections a run sends over: a keep-alive pool for HTTP/1.1, a fixed set of h2c
//! connections for HTTP/2, and the one request/response exchange the scheduler spawns.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::{LoadError, Proto, RateSpec};

/// Why an exchange failed; only counted, the result has no room for reasons.
#[derive(Debug)]
pub(super) struct Failed;

impl From<std::io::Error> for Failed {
    fn from(_: std::io::Error) -> Failed {
        Failed
    }
}

impl From<hyper::Error> for Failed {
    fn from(_: hyper::Error) -> Failed {
        Failed
    }
}

/// Everything a request needs, built once per run and shared by every request task.
#[derive(Debug)]
pub(super) struct Client {
    target: SocketAddr,
    method: Method,
    /// Origin-form for HTTP/1.1 (with [`Client::host`]), absolute for HTTP/2 (`:authority`).
    uri: Uri,
    host: Option<HeaderValue>,
    /// Cloned per request: a reference count, not a copy.
    body: Bytes,
    pub(super) timeout: Duration,
    conns: Conns,
}

#[derive(Debug)]
enum Conns {
    H1(H1Pool),
    H2(H2Conns),
}

/// Keep-alive HTTP/1.1 connections. A permit is one connection's worth of concurrency: a request
/// holds one from before it takes a connection until it gives it back, so connections in use plus
/// idle ones never exceed the bound, and a request waits (in its latency) while all are busy.
#[derive(Debug)]
struct H1Pool {
    permits: Semaphore,
    /// Last in, first out: the most recently used connection is the least likely to have been
    /// closed by the server's idle timeout.
    idle: Mutex<Vec<http1::SendRequest<Full<Bytes>>>>,
}

/// `connections` HTTP/2 connections, each dialled on first use and again once closed.
#[derive(Debug)]
struct H2Conns {
    // A tokio mutex because a dial is awaited under it: requests that find the slot empty at the
    // same time share one dial instead of each opening a connection.
    slots: Vec<tokio::sync::Mutex<Option<http2::SendRequest<Full<Bytes>>>>>,
    next: AtomicUsize,
}

impl Client {
    pub(super) fn new(spec: &RateSpec) -> Result<Client, LoadError> {
        let target = spec.target;
        let absolute = Uri::builder()
            .scheme("http")
            .authority(spec.host.as_str())
            .path_and_query(spec.path.as_str())
            .build()
            .map_err(|source| LoadError::Uri {
                target,
                host: spec.host.clone(),
                path: spec.path.clone(),
                source,
            })?;
        let (uri, host, conns) = match spec.proto {
            Proto::H1 => {
                let host = HeaderValue::from_str(&spec.host).map_err(|source| LoadError::HostHeader {
                    target,
                    host: spec.host.clone(),
                    source,
                })?;
                let origin = absolute.path_and_query().cloned().map(Uri::from).unwrap_or_default();
                let pool = H1Pool {
                    permits: Semaphore::new(spec.connections),
                    idle: Mutex::new(Vec::with_capacity(spec.connections)),
                };
                (origin, Some(host), Conns::H1(pool))
            }
            Proto::H2 => {
                let slots = (0..spec.connections).map(|_| tokio::sync::Mutex::new(None)).collect();
                (absolute, None, Conns::H2(H2Conns { slots, next: AtomicUsize::new(0) }))
            }
        };
        Ok(Client {
            target,
            method: if spec.body > 0 { Method::POST } else { Method::GET },
            uri,
            host,
            body: Bytes::from(vec![b'x'; spec.body]),
            timeout: spec.timeout,
            conns,
        })
    }

    /// One request, its response read to the end; the response status.
    pub(super) async fn exchange(&self) -> Result<StatusCode, Failed> {
        match &self.conns {
            Conns::H1(pool) => self.exchange_h1(pool).await,
            Conns::H2(conns) => self.exchange_h2(conns).await,
        }
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        if let Some(host) = &self.host {
            req.headers_mut().insert(HOST, host.clone());
        }
        req
    }

    async fn exchange_h1(&self, pool: &H1Pool) -> Result<StatusCode, Failed> {
        // The semaphore is never closed, so acquiring only fails in theory.
        let _permit = pool.permits.acquire().await.map_err(|_| Failed)?;
        let reused = {
            let mut idle = pool.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            std::iter::from_fn(|| idle.pop()).find(|conn| !conn.is_closed())
        };
        let mut conn = match reused {
            Some(mut conn) => match conn.ready().await {
                Ok(()) => conn,
                // Closed by the server while idle; nothing was sent on it, so a fresh
                // connection is a safe retry.
                Err(_) => self.dial_h1().await?,
            },
            None => self.dial_h1().await?,
        };
        conn.ready().await?;
        let response = conn.send_request(self.request()).await?;
        let status = response.status();
        drain(response.into_body()).await?;
        pool.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(conn);
        Ok(status)
    }

    async fn exchange_h2(&self, conns: &H2Conns) -> Result<StatusCode, Failed> {
        let slot = &conns.slots[conns.next.fetch_add(1, Ordering::Relaxed) % conns.slots.len()];
        let mut conn = {
            let mut slot = slot.lock().await;
            match slot.as_ref() {
                Some(conn) if !conn.is_closed() => conn.clone(),
                _ => {
                    *slot = None;
                    let conn = self.dial_h2().await?;
                    *slot = Some(conn.clone());
                    conn
                }
            }
        };
        let response = conn.send_request(self.request()).await?;
        let status = response.status();
        drain(response.into_body()).await?;
        Ok(status)
    }

    async fn dial_h1(&self) -> Result<http1::SendRequest<Full<Bytes>>, Failed> {
        let (conn, driver) = http1::handshake(self.connect().await?).await?;
        // The driver's error also fails the request in flight, which is where it is counted.
        tokio::spawn(async move {
            let _ = driver.await;
        });
        Ok(conn)
    }

    async fn dial_h2(&self) -> Result<http2::SendRequest<Full<Bytes>>, Failed> {
        let (conn, driver) = http2::handshake(TokioExecutor::new(), self.connect().await?).await?;
        tokio::spawn(async move {
            let _ = driver.await;
        });
        Ok(conn)
    }

    async fn connect(&self) -> Result<TokioIo<TcpStream>, Failed> {
        let stream = TcpStream::connect(self.target).await?;
        // Requests are small writes that must leave at once, not wait for Nagle's ACK.
        stream.set_nodelay(true)?;
        Ok(TokioIo::new(stream))
    }
}

/// Reads a body to its end, frame by frame, keeping none of it.
async fn drain(mut body: Incoming) -> Result<(), hyper::Error> {
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(())
}
