//! Sends a case's requests over HTTP/1.1 or h2c on a connection the runner opens (through the
//! in-process mesh's SOCKS5 port, or plainly from a lab pod where eBPF captures it) and
//! collects the answers.

use std::future::Future;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use super::format::{Case, Req};

/// A response as the client saw it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    /// The backend pod that answered (its `x-backend` response header).
    pub fn backend(&self) -> Option<String> {
        self.headers.get("x-backend").and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

/// An answer in JSON form (how `mesh-probe conformance` reports them from a lab pod).
#[derive(Debug, Serialize, Deserialize)]
pub struct WireAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl From<&Answer> for WireAnswer {
    fn from(a: &Answer) -> Self {
        let headers = a
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        WireAnswer { status: a.status, headers, body: a.body.clone() }
    }
}

impl TryFrom<WireAnswer> for Answer {
    type Error = String;
    fn try_from(w: WireAnswer) -> Result<Self, String> {
        let mut headers = http::HeaderMap::new();
        for (k, v) in w.headers {
            let name =
                http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k:?}: {e}"))?;
            let value = http::HeaderValue::from_str(&v).map_err(|e| format!("header {k}: {e}"))?;
            headers.append(name, value);
        }
        Ok(Answer { status: w.status, headers, body: w.body })
    }
}

/// The `i`th request of a case; `extra` headers are added to every request (the lab runner's
/// `x-fail-scope`).
pub fn build(r: &Req, i: usize, extra: &[(&str, &str)]) -> Result<Request<Full<Bytes>>, String> {
    let path = if r.paths.is_empty() { &r.path } else { &r.paths[i % r.paths.len()] };
    let mut b = Request::builder().method(r.method.as_str());
    b = if r.h2 {
        b.uri(format!("http://{}{}", r.host.as_deref().unwrap_or(&r.service), path))
    } else {
        b.uri(path.as_str()).header("host", r.host.as_deref().unwrap_or(&r.service))
    };
    for (k, v) in &r.headers {
        b = b.header(k, v);
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(r.body.clone()))).map_err(|e| format!("building request: {e}"))
}

/// One client connection.
#[derive(Debug)]
pub enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    /// HTTP/1.1 or h2c (prior knowledge) over `s`.
    pub async fn handshake(s: TcpStream, h2: bool) -> Result<Sender, String> {
        let io = TokioIo::new(s);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Sender::H2(send))
        } else {
            let (send, conn) =
                hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Sender::H1(send))
        }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, hyper::Error> {
        let resp = match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into(),
        })
    }
}

/// Sends the case's requests: `parallel` at once, each on its own connection, else `repeat`
/// one after the other on one connection. `connect` opens a connection to the case's Service.
pub async fn send_case<C, F>(case: &Case, extra: &[(&str, &str)], connect: C) -> Result<Vec<Answer>, String>
where
    C: Fn() -> F,
    F: Future<Output = std::io::Result<TcpStream>>,
{
    let r = &case.request;
    let mut answers = Vec::with_capacity(case.repeat);
    if let Some(n) = case.parallel {
        // Connections are opened one after the other and each request starts as soon as its
        // connection is up, so the requests overlap at the waypoint but arrive spread a little
        // (least-request cases need answers from fast pods to come back meanwhile).
        let mut tasks = Vec::new();
        for i in 0..n {
            let s = connect().await.map_err(|e| format!("connect: {e}"))?;
            let mut sender = Sender::handshake(s, r.h2).await?;
            let req = build(r, i, extra)?;
            tasks.push(tokio::spawn(async move { sender.send(req).await }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            answers.push(t.await.map_err(|e| e.to_string())?.map_err(|e| format!("request {i}: {e}"))?);
        }
        return Ok(answers);
    }
    let s = connect().await.map_err(|e| format!("connect: {e}"))?;
    let mut sender = Sender::handshake(s, r.h2).await?;
    for i in 0..case.repeat {
        let req = build(r, i, extra)?;
        match sender.send(req).await {
            Ok(a) => answers.push(a),
            Err(e) => return Err(format!("request {i}: {e}")),
        }
    }
    Ok(answers)
}
