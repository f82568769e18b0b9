//! `meshctl echo` against the real binary on 127.0.0.1: HTTP/1.1 (hyper client and raw
//! bytes for chunked bodies), h2c prior knowledge, raw TCP echo, /status, ?delay,
//! x-echo-set-header, the stdout log, bind failures and SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// A running `meshctl echo`; killed (and reaped) on drop.
struct Echo {
    child: Child,
    addrs: Vec<SocketAddr>,
    logs: mpsc::Receiver<String>,
}

impl Echo {
    /// Starts the echo on `ports` free ports of 127.0.0.1 and waits for its ready lines.
    fn start(ports: usize) -> Result<Echo> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
        cmd.args(["echo", "--pod", "web-1", "--namespace", "shop", "--listen", "127.0.0.1"]);
        for _ in 0..ports {
            cmd.args(["--port", "0"]);
        }
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("spawn meshctl echo")?;
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        let (log_tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = log_tx.send(line);
            }
        });
        let (ready_tx, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = ready_tx.send(line);
            }
        });
        let mut echo = Echo { child, addrs: Vec::new(), logs };
        while echo.addrs.len() < ports {
            let line = ready.recv_timeout(WAIT).context("waiting for `echo listening on` lines")?;
            let addr = line.strip_prefix("echo listening on ").with_context(|| format!("stderr: {line}"))?;
            echo.addrs.push(addr.parse().with_context(|| format!("address in {line:?}"))?);
        }
        Ok(echo)
    }

    fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The next stdout log line as JSON.
    fn next_log(&self) -> Result<Value> {
        let line = self.logs.recv_timeout(WAIT).context("waiting for a log line")?;
        serde_json::from_str(&line).with_context(|| format!("log line is not JSON: {line}"))
    }

    /// Asserts no further log line shows up within a short while.
    fn no_more_logs(&self) -> Result<()> {
        match self.logs.recv_timeout(Duration::from_millis(300)) {
            Ok(line) => bail!("unexpected extra log line: {line}"),
            Err(_) => Ok(()),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Sender1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
type Sender2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h1(addr: SocketAddr) -> Result<(Sender1, SocketAddr)> {
    let stream = TcpStream::connect(addr).await?;
    let me = stream.local_addr()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok((sender, me))
}

async fn h2(addr: SocketAddr) -> Result<(Sender2, SocketAddr)> {
    let stream = TcpStream::connect(addr).await?;
    let me = stream.local_addr()?;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok((sender, me))
}

fn get(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path}")).body(Full::default()).unwrap()
}

/// Status, headers and the body parsed as JSON (Null when empty).
async fn send1(s: &mut Sender1, req: Request<Full<Bytes>>) -> Result<(StatusCode, http::HeaderMap, Value)> {
    let resp = tokio::time::timeout(WAIT, s.send_request(req)).await??;
    parts(resp).await
}

async fn send2(s: &mut Sender2, req: Request<Full<Bytes>>) -> Result<(StatusCode, http::HeaderMap, Value)> {
    let resp = tokio::time::timeout(WAIT, s.send_request(req)).await??;
    parts(resp).await
}

async fn parts(resp: http::Response<hyper::body::Incoming>) -> Result<(StatusCode, http::HeaderMap, Value)> {
    let (p, body) = resp.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? };
    Ok((p.status, p.headers, json))
}

#[tokio::test]
async fn http1_echo_keep_alive_and_log() -> Result<()> {
    let echo = Echo::start(1)?;
    let addr = echo.addr();
    let (mut s, me) = h1(addr).await?;
    let req = Request::get("/hello/world?x=1&y=%20z")
        .header("host", "web.shop:8080")
        .header("x-test", "a")
        .header("x-test", "b")
        .body(Full::default())?;
    let (status, headers, v) = send1(&mut s, req).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/hello/world?x=1&y=%20z");
    assert_eq!(v["host"], "web.shop:8080");
    assert_eq!(v["proto"], "HTTP/1.1");
    assert_eq!(v["pod"], "web-1");
    assert_eq!(v["namespace"], "shop");
    assert_eq!(v["headers"]["x-test"], serde_json::json!(["a", "b"]));
    assert_eq!(v["peer"], me.to_string());
    assert_eq!(v["local"], addr.to_string());
    assert_eq!(v["bodyBytes"], 0);

    let log = echo.next_log()?;
    assert_eq!(log["kind"], "http");
    assert_eq!(log["path"], "/hello/world?x=1&y=%20z");
    assert_eq!(log["peer"], me.to_string());
    assert_eq!(log["local"], addr.to_string());
    assert_eq!(log["status"], 200);
    assert_eq!(log["pod"], "web-1");
    assert!(log["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{log}");

    // Same connection again (keep-alive): same peer, one more log line, body counted.
    let req = Request::post("/upload").header("host", "x").body(Full::new(Bytes::from(vec![7u8; 1234])))?;
    let (status, _, v) = send1(&mut s, req).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["method"], "POST");
    assert_eq!(v["bodyBytes"], 1234);
    assert_eq!(v["peer"], me.to_string());
    assert_eq!(echo.next_log()?["path"], "/upload");
    echo.no_more_logs()
}

#[tokio::test]
async fn http1_chunked_body_and_head() -> Result<()> {
    let echo = Echo::start(1)?;
    let mut c = TcpStream::connect(echo.addr()).await?;
    // Written in pieces: the echo must wait for the full method token before deciding.
    c.write_all(b"PO").await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.write_all(
        b"ST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await?;
    c.write_all(b"HEAD /h HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await?;
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, c.read_to_end(&mut raw)).await??;
    let text = String::from_utf8(raw)?;
    let (first, head_resp) = text.split_once("\r\n\r\n{").context(text.clone())?;
    assert!(first.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(head_resp.contains("\"bodyBytes\":11"), "{text}");
    assert!(head_resp.contains("\"proto\":\"HTTP/1.1\""), "{text}");
    // The HEAD answer: a status line and headers, no body after it.
    let head_at = head_resp.find("HTTP/1.1 200 OK").context(text.clone())?;
    let head_answer = &head_resp[head_at..];
    assert!(head_answer.to_ascii_lowercase().contains("content-type: application/json"), "{text}");
    assert!(head_answer.ends_with("\r\n\r\n"), "HEAD answer has a body: {text}");
    assert_eq!(echo.next_log()?["method"], "POST");
    assert_eq!(echo.next_log()?["method"], "HEAD");
    echo.no_more_logs()
}

#[tokio::test]
async fn h2c_prior_knowledge() -> Result<()> {
    let echo = Echo::start(2)?;
    // Both ports serve; use the second one.
    let addr = echo.addrs[1];
    let (mut s, me) = h2(addr).await?;
    let (status, headers, v) = send2(&mut s, get(addr, "/two?a=b")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(v["proto"], "HTTP/2.0");
    assert_eq!(v["path"], "/two?a=b");
    assert_eq!(v["host"], addr.to_string());
    assert_eq!(v["peer"], me.to_string());
    assert_eq!(v["local"], addr.to_string());
    let req = Request::put(format!("http://{addr}/p")).body(Full::new(Bytes::from(vec![1u8; 70_000])))?;
    let (status, _, v) = send2(&mut s, req).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["bodyBytes"], 70_000);
    let (status, _, v) = send2(&mut s, get(addr, "/status/503")).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["proto"], "HTTP/2.0");
    for path in ["/two?a=b", "/p", "/status/503"] {
        let log = echo.next_log()?;
        assert_eq!(log["path"], path);
        assert_eq!(log["proto"], "HTTP/2.0");
    }
    echo.no_more_logs()
}

#[tokio::test]
async fn status_codes() -> Result<()> {
    let echo = Echo::start(1)?;
    let (mut s, _) = h1(echo.addr()).await?;
    for code in [200u16, 201, 302, 404, 418, 503, 599] {
        let (status, headers, v) = send1(&mut s, get(echo.addr(), &format!("/status/{code}"))).await?;
        assert_eq!(status.as_u16(), code);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(v["path"], format!("/status/{code}"));
        assert_eq!(echo.next_log()?["status"], code);
    }
    let (status, _, v) = send1(&mut s, get(echo.addr(), "/status/204")).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(v, Value::Null);
    echo.next_log()?;
    for bad in ["/status/600", "/status/99", "/status/abc", "/status/100"] {
        let (status, _, v) = send1(&mut s, get(echo.addr(), bad)).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(v["error"].as_str().is_some_and(|e| e.contains("status")), "{bad}: {v}");
        assert_eq!(v["path"], bad);
        assert_eq!(echo.next_log()?["status"], 400);
    }
    echo.no_more_logs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_is_waited_and_logged_first() -> Result<()> {
    let echo = Echo::start(1)?;
    let addr = echo.addr();
    for (q, want) in [("250ms", 250), ("1.5s", 1500)] {
        let (mut s, _) = h1(addr).await?;
        let start = Instant::now();
        let task = tokio::spawn(async move { send1(&mut s, get(addr, &format!("/d?delay={q}"))).await });
        // The log line is written when the head arrives, before the delay has passed.
        // Blocking here is fine: the request runs on the runtime's worker threads.
        let log = echo.next_log()?;
        assert!(!task.is_finished(), "the answer came before the log line");
        assert_eq!(log["path"], format!("/d?delay={q}"));
        let (status, _, v) = task.await??;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["path"], format!("/d?delay={q}"));
        assert!(start.elapsed() >= Duration::from_millis(want), "{q}: answered after {:?}", start.elapsed());
    }
    let (mut s, _) = h2(addr).await?;
    let start = Instant::now();
    let (status, _, _) = send2(&mut s, get(addr, "/?delay=300ms")).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(300));
    echo.next_log()?;
    for bad in ["/?delay=soon", "/?delay=250", "/?delay=-1s", "/?delay=5h"] {
        let (status, _, v) = send2(&mut s, get(addr, bad)).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(v["error"].as_str().is_some_and(|e| e.contains("delay")), "{bad}: {v}");
        echo.next_log()?;
    }
    echo.no_more_logs()
}

#[tokio::test]
async fn set_header() -> Result<()> {
    let echo = Echo::start(1)?;
    let addr = echo.addr();
    let (mut s1, _) = h1(addr).await?;
    let (mut s2, _) = h2(addr).await?;
    for proto in [1, 2] {
        let req = Request::get(format!("http://{addr}/sh"))
            .header("x-echo-set-header", "X-One:1, x-two: two words,Cache-Control:no-store")
            .body(Full::default())?;
        let (status, headers, v) =
            if proto == 1 { send1(&mut s1, req).await? } else { send2(&mut s2, req).await? };
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-one"], "1");
        assert_eq!(headers["x-two"], "two words");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(v["headers"]["x-echo-set-header"][0], "X-One:1, x-two: two words,Cache-Control:no-store");
        for bad in ["bad name:1", "novalue", "content-length:3", "Connection:close"] {
            let req = Request::get(format!("http://{addr}/sh"))
                .header("x-echo-set-header", bad)
                .body(Full::default())?;
            let (status, headers, v) =
                if proto == 1 { send1(&mut s1, req).await? } else { send2(&mut s2, req).await? };
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(v["error"].as_str().is_some_and(|e| e.contains("x-echo-set-header")), "{v}");
            assert!(headers.get("x-one").is_none());
        }
    }
    for _ in 0..10 {
        echo.next_log()?;
    }
    echo.no_more_logs()
}

#[tokio::test]
async fn raw_tcp_echo() -> Result<()> {
    let echo = Echo::start(1)?;
    let mut c = TcpStream::connect(echo.addr()).await?;
    let me = c.local_addr()?;
    // Say nothing for a while first: the echo must wait, not decide on a timeout.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.write_all(b"hello, not http\n").await?;
    let mut buf = [0u8; 16];
    tokio::time::timeout(WAIT, c.read_exact(&mut buf)).await??;
    assert_eq!(&buf, b"hello, not http\n");
    let big = vec![b'z'; 100_000];
    c.write_all(&big).await?;
    c.shutdown().await?;
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, c.read_to_end(&mut back)).await??;
    assert_eq!(back, big);
    let log = echo.next_log()?;
    assert_eq!(log["kind"], "tcp");
    assert_eq!(log["peer"], me.to_string());
    assert_eq!(log["local"], echo.addr().to_string());
    assert_eq!(log["bytesIn"], 100_016);
    assert_eq!(log["bytesOut"], 100_016);
    assert_eq!(log["namespace"], "shop");

    // Uppercase letters but no space after them: still not HTTP.
    let mut c = TcpStream::connect(echo.addr()).await?;
    c.write_all(b"HELLO\r\n").await?;
    c.shutdown().await?;
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, c.read_to_end(&mut back)).await??;
    assert_eq!(back, b"HELLO\r\n");
    // A client that closes while the echo is still undecided gets its bytes back too.
    let mut c = TcpStream::connect(echo.addr()).await?;
    c.write_all(b"GE").await?;
    c.shutdown().await?;
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, c.read_to_end(&mut back)).await??;
    assert_eq!(back, b"GE");
    assert_eq!(echo.next_log()?["bytesIn"], 7);
    assert_eq!(echo.next_log()?["bytesIn"], 2);
    echo.no_more_logs()
}

#[test]
fn bind_failure_names_the_address() -> Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?;
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["echo", "--pod", "p", "--namespace", "n", "--listen", "127.0.0.1"])
        .args(["--port", &addr.port().to_string()])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&addr.to_string()), "{stderr}");
    assert!(stderr.contains("bind"), "{stderr}");
    assert!(!stderr.contains("echo listening"), "{stderr}");
    Ok(())
}

#[test]
fn missing_port_is_a_usage_error() -> Result<()> {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["echo", "--pod", "p", "--namespace", "n"])
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--port"));
    Ok(())
}

#[test]
fn sigterm_exits_zero() -> Result<()> {
    let mut echo = Echo::start(1)?;
    let pid = echo.child.id().to_string();
    ensure!(Command::new("kill").args(["-TERM", &pid]).status()?.success(), "kill -TERM {pid}");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = echo.child.try_wait()? {
            assert_eq!(status.code(), Some(0), "{status}");
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "echo still running 10s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
