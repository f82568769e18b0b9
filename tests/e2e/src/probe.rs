//! The probe client: one connection, what the application saw, and how it ended.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::{Value, json};

/// Parses the arguments and runs the probe; returns the JSON line to print.
pub fn run(args: Vec<String>) -> Value {
    if let Some(mode) = args.first().filter(|a| ["throughput", "latency", "connrate"].contains(&a.as_str())) {
        return load(mode, &args[1..]);
    }
    if args.first().is_some_and(|a| a == "conformance") {
        return conformance(&args[1..]);
    }
    let mut addr = None;
    let mut send: Option<Vec<u8>> = None;
    let mut http = false;
    let mut method = "GET".to_string();
    let mut extra_headers = String::new();
    let mut timeout = Duration::from_secs(5);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--send" => send = it.next().map(String::into_bytes),
            "--http" => {
                http = true;
                send = Some(it.next().unwrap_or_else(|| "/".into()).into_bytes());
            }
            "--method" => method = it.next().unwrap_or(method),
            "--header" => {
                if let Some(h) = it.next() {
                    extra_headers.push_str(&h);
                    extra_headers.push_str("\r\n");
                }
            }
            "--timeout" => {
                timeout = Duration::from_secs_f64(it.next().and_then(|s| s.parse().ok()).unwrap_or(5.0));
            }
            _ => addr = Some(a),
        }
    }
    if http {
        // `HOST` is replaced by the host part of ADDR below.
        let path = String::from_utf8(send.take().unwrap_or_default()).unwrap_or_default();
        let head =
            format!("{method} {path} HTTP/1.1\r\nhost: HOST\r\n{extra_headers}connection: close\r\n\r\n");
        send = Some(head.into_bytes());
    }
    let Some(addr) = addr else {
        return json!({"ok": false, "kind": "usage", "error": "usage: mesh-probe ADDR [--send TEXT] [--http PATH]"});
    };
    let host = addr.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or_default();
    let target = match addr.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(t)) => t,
        Ok(None) | Err(_) => {
            return json!({"ok": false, "kind": "resolve", "error": format!("cannot resolve {addr}")});
        }
    };
    let mut s = match TcpStream::connect_timeout(&target, timeout) {
        Ok(s) => s,
        Err(e) => return failure("connect", &e, json!({"target": target.to_string()})),
    };
    let local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let seen = json!({"target": target.to_string(), "local": local, "peer": peer});
    let _ = s.set_read_timeout(Some(timeout));
    if let Some(mut data) = send {
        if let Some(at) = find(&data, b"HOST") {
            data.splice(at..at + 4, host.bytes());
        }
        if let Err(e) = s.write_all(&data) {
            return failure("send", &e, seen);
        }
        // Raw data ends with a half-close so the echo answers and closes; HTTP servers may
        // drop a request whose connection is half-closed, and `connection: close` ends it.
        if !http {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
    }
    let mut answer = Vec::new();
    match s.read_to_end(&mut answer) {
        Ok(_) if answer.is_empty() => {
            let mut v = json!({"ok": false, "kind": "closed", "error": "closed without an answer"});
            merge(&mut v, seen);
            v
        }
        Ok(_) => {
            let mut v = json!({"ok": true, "answer": String::from_utf8_lossy(&answer)});
            merge(&mut v, seen);
            v
        }
        Err(e) => failure("read", &e, seen),
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn merge(v: &mut Value, more: Value) {
    if let (Some(a), Value::Object(b)) = (v.as_object_mut(), more) {
        a.extend(b);
    }
}

fn failure(step: &str, e: &std::io::Error, seen: Value) -> Value {
    let kind = match e.kind() {
        ErrorKind::ConnectionRefused => "refused",
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => "reset",
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timeout",
        _ => "error",
    };
    let mut v = json!({"ok": false, "kind": kind, "error": format!("{step}: {e}")});
    merge(&mut v, seen);
    v
}

/// `mesh-probe throughput|latency|connrate ADDR [SECONDS|ROUNDS] [WORKERS]`.
fn load(mode: &str, args: &[String]) -> Value {
    let Some(addr) = args.first().and_then(|a| a.to_socket_addrs().ok()?.next()) else {
        return json!({"ok": false, "kind": "usage", "error": format!("{mode}: ADDR (ip:port or name:port) required")});
    };
    let n: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let workers: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4);
    let r = match mode {
        "throughput" => crate::load::throughput(addr, Duration::from_secs_f64(n)),
        "latency" => crate::load::latency(addr, n as usize, 64),
        _ => crate::load::connrate(addr, Duration::from_secs_f64(n), workers),
    };
    match r {
        Ok(mut v) => {
            merge(&mut v, json!({"ok": true}));
            v
        }
        Err(e) => failure(mode, &e, json!({"target": addr.to_string()})),
    }
}

/// `conformance SUITE_FILE CASE_INDEX ADDR SCOPE`: sends the case's requests to ADDR (the
/// Service VIP and port) from this pod, each with `x-fail-scope: SCOPE`; prints the answers
/// (`[{"status","headers","body"}]`) or `{"error": ...}`.
fn conformance(args: &[String]) -> Value {
    let [file, index, addr, scope] = args else {
        return json!({"error": "usage: mesh-probe conformance SUITE_FILE CASE_INDEX ADDR SCOPE"});
    };
    let suite = crate::conformance::load_suite(std::path::Path::new(file));
    let Some(case) = index.parse::<usize>().ok().and_then(|i| suite.cases.get(i)) else {
        return json!({"error": format!("{file}: no case {index}")});
    };
    let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
        return json!({"error": format!("bad address {addr:?}")});
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return json!({"error": format!("runtime: {e}")}),
    };
    let extra = [("x-fail-scope", scope.as_str())];
    let sent =
        rt.block_on(crate::conformance::send_case(case, &extra, || tokio::net::TcpStream::connect(addr)));
    match sent {
        Ok(answers) => {
            let wire: Vec<crate::conformance::WireAnswer> = answers.iter().map(Into::into).collect();
            serde_json::to_value(wire).unwrap_or_else(|e| json!({"error": e.to_string()}))
        }
        Err(e) => json!({"error": e}),
    }
}
