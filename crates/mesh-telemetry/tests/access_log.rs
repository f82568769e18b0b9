//! The access log: one JSON line per connection on the `access` target, with addresses,
//! workloads, identities, service, bytes from the workload's view, duration, decision, flags
//! and error.

mod common;

use std::sync::Arc;

use common::{Captured, inbound_to_echo, model, outbound_to_echo};
use mesh_telemetry::{
    ConnGuard, Decision, LogFormat, Metrics, Registry, ResponseFlag, SecurityPolicy, logging_subscriber,
};
use serde_json::Value;

fn access_lines(text: &str) -> Vec<serde_json::Map<String, Value>> {
    text.lines()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(m)) => m,
            other => panic!("log line is not a JSON object: {l:?} ({other:?})"),
        })
        .filter(|m| m.get("target").and_then(Value::as_str) == Some("access"))
        .collect()
}

fn s<'a>(m: &'a serde_json::Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or_else(|| panic!("string field {k} in {m:?}"))
}

fn n(m: &serde_json::Map<String, Value>, k: &str) -> u64 {
    m.get(k).and_then(Value::as_u64).unwrap_or_else(|| panic!("number field {k} in {m:?}"))
}

#[test]
fn one_json_line_per_connection_with_all_fields() -> anyhow::Result<()> {
    let model = model();
    let metrics = Arc::new(Metrics::new(&mut Registry::default()));
    let out = Captured::default();
    let (subscriber, _handle) = logging_subscriber(LogFormat::Json, "info", out.clone())?;

    tracing::subscriber::with_default(subscriber, || {
        let mut ok = ConnGuard::open(&metrics, inbound_to_echo(&model, &metrics));
        ok.add_to_server(10);
        ok.add_to_client(2000);
        ok.set_decision(Decision::Allow, Some("shop/allow-client".into()));
        drop(ok);

        let mut info = outbound_to_echo(&model, &metrics);
        info.labels.connection_security_policy = SecurityPolicy::Unknown;
        let mut failed = ConnGuard::open(&metrics, info);
        failed.add_to_server(7);
        failed.fail(ResponseFlag::UpstreamConnectionFailure, "connection refused");
        failed.add_flag(ResponseFlag::UpstreamRetryLimitExceeded);
        drop(failed);
        tracing::info!(target: "other", "not an access line");
    });

    let lines = access_lines(&out.text());
    assert_eq!(lines.len(), 2, "one line per connection: {}", out.text());

    let ok = &lines[0];
    assert_eq!(s(ok, "level"), "INFO");
    assert_eq!(s(ok, "message"), "connection complete");
    assert_eq!(s(ok, "direction"), "inbound");
    assert_eq!(s(ok, "src.addr"), "10.0.1.10:40000");
    assert_eq!(s(ok, "dst.addr"), "10.0.2.20:8080");
    assert_eq!(s(ok, "src.workload"), "client-7d9f8-abcde");
    assert_eq!(s(ok, "src.namespace"), "shop");
    assert_eq!(s(ok, "src.identity"), "spiffe://cluster.local/ns/shop/sa/client");
    assert_eq!(s(ok, "dst.workload"), "echo-v1");
    assert_eq!(s(ok, "dst.namespace"), "shop");
    assert_eq!(s(ok, "dst.identity"), "spiffe://cluster.local/ns/shop/sa/echo");
    assert_eq!(s(ok, "dst.service"), "echo.shop.svc.cluster.local");
    // Inbound: the local workload (the server) sent the 2000 response bytes.
    assert_eq!((n(ok, "bytes_sent"), n(ok, "bytes_recv")), (2000, 10));
    assert!(ok.get("duration_ms").is_some_and(Value::is_u64), "duration_ms is a number: {ok:?}");
    assert_eq!(s(ok, "decision"), "allow");
    assert_eq!(s(ok, "policy"), "shop/allow-client");
    assert_eq!(s(ok, "response_flags"), "-");
    assert!(!ok.contains_key("error"), "no error field on success: {ok:?}");

    let failed = &lines[1];
    assert_eq!(s(failed, "level"), "WARN");
    assert_eq!(s(failed, "direction"), "outbound");
    assert_eq!(s(failed, "dst.addr"), "10.96.0.20:80");
    assert_eq!(s(failed, "dst.hbone_addr"), "10.0.2.20:8080");
    // Outbound: the local workload (the client) sent the 7 request bytes.
    assert_eq!((n(failed, "bytes_sent"), n(failed, "bytes_recv")), (7, 0));
    assert_eq!(s(failed, "response_flags"), "UF,URX");
    assert_eq!(s(failed, "error"), "connection refused");
    assert!(!failed.contains_key("decision"), "no decision outbound: {failed:?}");
    // Identities are only logged when mTLS proved them.
    assert!(!failed.contains_key("src.identity") && !failed.contains_key("dst.identity"));
    Ok(())
}

#[test]
fn access_lines_follow_the_filter() -> anyhow::Result<()> {
    let model = model();
    let metrics = Arc::new(Metrics::new(&mut Registry::default()));
    let out = Captured::default();
    let (subscriber, handle) = logging_subscriber(LogFormat::Json, "info,access=off", out.clone())?;
    tracing::subscriber::with_default(subscriber, || -> anyhow::Result<()> {
        drop(ConnGuard::open(&metrics, outbound_to_echo(&model, &metrics)));
        handle.set_level("info")?;
        drop(ConnGuard::open(&metrics, outbound_to_echo(&model, &metrics)));
        Ok(())
    })?;
    assert_eq!(access_lines(&out.text()).len(), 1, "only the line after access was enabled");
    Ok(())
}
