//! HBONE client and server over real TLS and TCP on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mesh_hbone::{HboneError, PoolKey, PoolSettings, ServerSettings, StaticCerts, TcpDialer};
use mesh_identity::client_config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Writes `data` and reads the echo concurrently (flow control would stall a serial copy).
async fn echo_roundtrip(stream: mesh_hbone::H2Stream, data: Vec<u8>) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    got
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_is_byte_exact_for_small_and_large_payloads() {
    let w = World::new();
    let srv = w.server(ServerSettings::default()).await;
    let pool = w.pool(PoolSettings::default());
    for len in [1usize, 64 * 1024, 16 * 1024 * 1024] {
        let s = pool.connect(&w.key(&srv), params(ECHO)).await.unwrap();
        let data = pattern(len);
        let got = echo_roundtrip(s, data.clone()).await;
        assert_eq!(got.len(), len);
        assert!(got == data, "echo of {len} bytes differs");
    }
    // All three streams reused the one connection.
    assert_eq!(pool.stats().opened_total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_streams_share_two_connections() {
    let w = World::new();
    let srv = w.server(ServerSettings::default()).await;
    let pool = w.pool(PoolSettings::default());
    let key = w.key(&srv);
    let opened = Arc::new(tokio::sync::Barrier::new(201));
    let checked = Arc::new(tokio::sync::Barrier::new(201));
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let (pool, key, opened, checked) = (pool.clone(), key.clone(), opened.clone(), checked.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = pool.connect(&key, params(ECHO)).await.unwrap();
            opened.wait().await; // all 200 open at once
            checked.wait().await; // held until the stats were read
            s.write_all(&i.to_be_bytes()).await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(u32::from_be_bytes(buf), i);
        }));
    }
    opened.wait().await;
    let stats = pool.stats();
    assert_eq!(stats.active_streams, 200, "{stats:?}");
    assert_eq!(stats.connections, 2, "{stats:?}");
    assert_eq!(stats.opened_total, 2, "no extra dials: {stats:?}");
    checked.wait().await;
    for t in tasks {
        t.await.unwrap();
    }
    eventually("streams released", || pool.stats().active_streams == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_cap_opens_more_connections() {
    let w = World::new();
    let srv = w.server(ServerSettings::default()).await;
    let pool = w.pool(PoolSettings { max_streams_per_conn: 2, ..PoolSettings::default() });
    let key = w.key(&srv);
    let mut open = Vec::new();
    for _ in 0..6 {
        open.push(pool.connect(&key, params(ECHO)).await.unwrap());
    }
    let stats = pool.stats();
    assert_eq!((stats.connections, stats.active_streams), (3, 6), "{stats:?}");
    // A released slot is reused rather than dialing again.
    drop(open.pop());
    eventually("slot released", || pool.stats().active_streams == 5).await;
    open.push(pool.connect(&key, params(ECHO)).await.unwrap());
    assert_eq!(pool.stats().opened_total, 3);
}

#[tokio::test]
async fn peer_cap_is_respected() {
    let w = World::new();
    let srv = w.server(ServerSettings { max_concurrent_streams: 3, ..ServerSettings::default() }).await;
    let pool = w.pool(PoolSettings::default());
    let key = w.key(&srv);
    // The first stream teaches the client the server's SETTINGS.
    let first = pool.connect(&key, params(ECHO)).await.unwrap();
    let first = echo_roundtrip(first, b"x".to_vec()).await;
    assert_eq!(first, b"x");
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(pool.connect(&key, params(ECHO)).await.unwrap());
    }
    assert_eq!(pool.stats().connections, 2, "{:?}", pool.stats());
}

#[tokio::test]
async fn unexpected_server_identity_is_refused_by_client() {
    let w = World::new();
    let srv = w.server(ServerSettings::default()).await;
    let pool = w.pool(PoolSettings::default());
    let key = PoolKey {
        src: w.client_id.clone(),
        dst_identities: Arc::from(vec![id("cluster.local", "other", "someone-else")]),
        addr: srv.addr,
        src_addr: None,
    };
    let err = pool.connect(&key, params(ECHO)).await.unwrap_err();
    assert!(matches!(err, HboneError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("someone-else"), "{err}");
    assert!(srv.handler.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn client_from_another_trust_domain_is_refused_at_tls() {
    let w = World::new();
    let srv = w.server(ServerSettings::default()).await;
    let foreign_ca = mesh_identity::cert::local::LocalCa::new("foreign").unwrap();
    let foreign = id("other.domain", "ns", "sa");
    let foreign_cert = issue(&foreign_ca, &foreign);
    // It trusts our server, but the server does not trust it.
    let certs = StaticCerts::new([(foreign.clone(), foreign_cert)], w.trust.clone());
    let pool = mesh_hbone::Pool::new(PoolSettings::default(), Arc::new(certs), Arc::new(TcpDialer));
    let key = PoolKey {
        src: foreign,
        dst_identities: Arc::from(vec![srv.id.clone()]),
        addr: srv.addr,
        src_addr: None,
    };
    let err = pool.connect(&key, params(ECHO)).await.unwrap_err();
    assert!(matches!(err, HboneError::Tls { .. }), "{err:?}");
    assert!(srv.handler.seen.lock().unwrap().is_empty());
}

/// A raw HTTP/2 client over our TLS, for requests the pool would never send.
async fn raw_request(w: &World, srv: &TestServer, req: http::Request<()>) -> http::StatusCode {
    let config = client_config(&w.client_cert, &w.trust, vec![srv.id.clone()]).unwrap();
    let tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(srv.addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    let (sender, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut sender = sender.ready().await.unwrap();
    let (resp, _) = sender.send_request(req, true).unwrap();
    resp.await.unwrap().status()
}

#[tokio::test]
async fn non_connect_gets_405_and_bad_authority_400() {
    let w = World::new();
    let srv = w.server(ServerSettings::default()).await;
    let get = http::Request::builder().method("GET").uri("https://127.0.0.1:7/").body(()).unwrap();
    assert_eq!(raw_request(&w, &srv, get).await, http::StatusCode::METHOD_NOT_ALLOWED);
    let bad = http::Request::builder().method("CONNECT").uri("example.com:80").body(()).unwrap();
    assert_eq!(raw_request(&w, &srv, bad).await, http::StatusCode::BAD_REQUEST);
    assert!(srv.handler.seen.lock().unwrap().is_empty(), "invalid requests never reach the handler");
}

#[tokio::test]
async fn refusal_is_a_status_error_and_panics_answer_503() {
    let w = World::new();
    let srv = w.server(ServerSettings::default()).await;
    let pool = w.pool(PoolSettings::default());
    let key = w.key(&srv);
    let err = pool.connect(&key, params(REFUSE_401)).await.unwrap_err();
    assert!(
        matches!(err, HboneError::Status { status, addr } if status == 401 && addr == srv.addr),
        "{err:?}"
    );
    let err = pool.connect(&key, params(PANIC)).await.unwrap_err();
    assert!(matches!(err, HboneError::Status { status, .. } if status == 503), "{err:?}");
    // The connection survived both.
    let s = pool.connect(&key, params(ECHO)).await.unwrap();
    assert_eq!(echo_roundtrip(s, b"still here".to_vec()).await, b"still here");
    assert_eq!(pool.stats().opened_total, 1);
}

#[tokio::test]
async fn handler_sees_identity_forwarded_for_and_headers() {
    let w = World::new();
    let srv = w.server(ServerSettings::default()).await;
    let pool = w.pool(PoolSettings::default());
    let mut p = params(ECHO);
    p.forwarded_for = Some("10.9.8.7:41000".parse().unwrap());
    p.baggage = Some(http::HeaderValue::from_static("k8s.namespace.name=client-ns"));
    p.traceparent =
        Some(http::HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    let s = pool.connect(&w.key(&srv), p.clone()).await.unwrap();
    drop(s);
    let seen = srv.handler.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.peer_identity, w.client_id);
    assert_eq!(r.forwarded_for, Some("10.9.8.7".parse().unwrap()));
    assert_eq!(r.authority, p.authority);
    assert_eq!(r.local_addr, srv.addr);
    assert!(r.authority_is_local(), "127.0.0.1 authority on a 127.0.0.1 listener");
    assert!(r.peer_addr.ip().is_loopback());
    assert_eq!(r.baggage, p.baggage);
    assert_eq!(r.traceparent, p.traceparent);
}

#[tokio::test]
async fn half_close_lets_the_server_answer_after_eof() {
    let w = World::new();
    let srv = w.server(ServerSettings::default()).await;
    let pool = w.pool(PoolSettings::default());
    let mut s = pool.connect(&w.key(&srv), params(COUNT_THEN_REPLY)).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    s.shutdown().await.unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "got 5 bytes");
}

#[tokio::test]
async fn idle_connection_is_closed() {
    let w = World::new();
    let srv = w.server(ServerSettings::default()).await;
    let pool = w.pool(PoolSettings { idle_timeout: Duration::from_millis(200), ..PoolSettings::default() });
    let s = pool.connect(&w.key(&srv), params(ECHO)).await.unwrap();
    assert_eq!(echo_roundtrip(s, b"ping".to_vec()).await, b"ping");
    eventually("idle connection closed", || {
        let s = pool.stats();
        s.connections == 0 && s.closed_total == 1
    })
    .await;
    // A new connect dials afresh.
    let s = pool.connect(&w.key(&srv), params(ECHO)).await.unwrap();
    assert_eq!(echo_roundtrip(s, b"again".to_vec()).await, b"again");
    assert_eq!(pool.stats().opened_total, 2);
}

#[tokio::test]
async fn busy_connection_is_not_closed_as_idle() {
    let w = World::new();
    let srv = w.server(ServerSettings::default()).await;
    let pool = w.pool(PoolSettings { idle_timeout: Duration::from_millis(100), ..PoolSettings::default() });
    let mut s = pool.connect(&w.key(&srv), params(ECHO)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await; // several idle periods with a stream open
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(pool.stats().closed_total, 0);
}

#[tokio::test]
async fn drain_lets_an_open_stream_finish() {
    let w = World::new();
    let mut srv = w
        .server(ServerSettings { drain_timeout: Duration::from_secs(10), ..ServerSettings::default() })
        .await;
    let pool = w.pool(PoolSettings::default());
    let key = w.key(&srv);
    let mut s = pool.connect(&key, params(ECHO)).await.unwrap();
    srv.stop.take().unwrap().send(()).unwrap();
    // The stream keeps working during the drain.
    s.write_all(b"during drain").await.unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"during drain");
    assert!(!srv.task.is_finished(), "server waits for the open stream");
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    drop(s);
    tokio::time::timeout(Duration::from_secs(5), &mut srv.task).await.unwrap().unwrap().unwrap();
    // New connections are refused now.
    assert!(pool.connect(&key, params(ECHO)).await.is_err());
}

#[tokio::test]
async fn connection_to_a_vanished_server_is_dropped_from_the_pool() {
    let w = World::new();
    let srv = w.server(ServerSettings::default()).await;
    let pool = w.pool(PoolSettings::default());
    let s = pool.connect(&w.key(&srv), params(ECHO)).await.unwrap();
    assert_eq!(echo_roundtrip(s, b"x".to_vec()).await, b"x");
    assert_eq!(pool.stats().connections, 1);
    srv.task.abort(); // connections are cut without GOAWAY
    eventually("dead connection removed", || pool.stats().connections == 0).await;
    let err = pool.connect(&w.key(&srv), params(ECHO)).await.unwrap_err();
    assert!(matches!(err, HboneError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn unanswered_ping_drops_the_connection() {
    let w = World::new();
    // A server that answers one CONNECT and then stops reading: pings go unanswered.
    let sid = id("cluster.local", "server-ns", "server-sa");
    let config = Arc::new(mesh_identity::server_config(&issue(&w.ca, &sid), &w.trust).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await.unwrap();
        let mut conn = h2::server::handshake(tls).await.unwrap();
        let (_req, mut respond) = conn.accept().await.unwrap().unwrap();
        let stream = respond.send_response(http::Response::new(()), false).unwrap();
        // Flush the answer, then go silent while keeping the socket open.
        let _ = tokio::time::timeout(Duration::from_millis(100), conn.accept()).await;
        let _ = hold_rx.await;
        drop((stream, conn));
    });
    let pool = w.pool(PoolSettings {
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(300),
        ..PoolSettings::default()
    });
    let key =
        PoolKey { src: w.client_id.clone(), dst_identities: Arc::from(vec![sid]), addr, src_addr: None };
    let mut s = pool.connect(&key, params(ECHO)).await.unwrap();
    eventually("connection dropped after ping timeout", || pool.stats().closed_total == 1).await;
    assert_eq!(pool.stats().connections, 0);
    let mut buf = [0u8; 1];
    assert!(s.read(&mut buf).await.is_err(), "the stream fails with its connection");
    drop(hold_tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_demand_beyond_one_connection_dials_in_parallel() {
    let w = World::new();
    let srv = w.server(ServerSettings::default()).await;
    let pool = w.pool(PoolSettings { max_streams_per_conn: 2, ..PoolSettings::default() });
    let key = w.key(&srv);
    let opened = Arc::new(tokio::sync::Barrier::new(41));
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (pool, key, opened) = (pool.clone(), key.clone(), opened.clone());
            tokio::spawn(async move {
                let s = pool.connect(&key, params(ECHO)).await.unwrap();
                opened.wait().await;
                s
            })
        })
        .collect();
    opened.wait().await;
    let stats = pool.stats();
    assert_eq!((stats.connections, stats.active_streams, stats.opened_total), (20, 40, 20), "{stats:?}");
    for t in tasks {
        drop(t.await.unwrap());
    }
}

#[tokio::test]
async fn peer_reset_is_an_io_error() {
    let w = World::new();
    let srv = w.server(ServerSettings::default()).await;
    let pool = w.pool(PoolSettings::default());
    let mut s = pool.connect(&w.key(&srv), params(RESET)).await.unwrap();
    let mut buf = [0u8; 16];
    let err = s.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}
