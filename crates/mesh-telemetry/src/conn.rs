//! The per-connection guard: the one place that records a connection's metrics and writes its
//! access-log line.
//!
//! [`ConnGuard::open`] builds nothing new per byte: it counts `opened` and looks up the two byte
//! counters once. The copy loop then calls [`ConnGuard::add_to_server`] /
//! [`ConnGuard::add_to_client`] per chunk: two relaxed atomic adds each (the connection's own
//! total and the shared Prometheus counter), no lock, no allocation. Bytes thus show in
//! `/metrics` while a long-lived connection is still open, as in Istio's ztunnel (which also
//! counts per chunk). When the guard drops it counts `closed` (with the final response flags)
//! and writes one access-log event to the [`ACCESS_LOG_TARGET`] target.
//!
//! Byte directions: `istio_tcp_received_bytes_total` counts client → server bytes and
//! `istio_tcp_sent_bytes_total` server → client bytes, for either reporter (Istio's definition,
//! which reads "flipped" from the client's side; see istio/istio#32399). The access log instead
//! reports `bytes_sent`/`bytes_recv` from the local workload's view, as ztunnel does: outbound,
//! sent = client → server; inbound, sent = server → client.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;

use crate::flags::{AtomicResponseFlags, ResponseFlag, ResponseFlags};
use crate::labels::{Reporter, SecurityPolicy, TrafficLabels};
use crate::metrics::Metrics;

/// The `tracing` target of access-log events (filter with `access=info`).
pub const ACCESS_LOG_TARGET: &str = "access";

/// The side of the connection the reporting proxy is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The proxy serves the client (reporter `source`).
    Outbound,
    /// The proxy serves the server (reporter `destination` or `waypoint`).
    Inbound,
}

impl Direction {
    pub const fn of(reporter: Reporter) -> Self {
        match reporter {
            Reporter::Source => Direction::Outbound,
            Reporter::Destination | Reporter::Waypoint => Direction::Inbound,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// An authorization outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    pub const fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

/// What is known about a connection when it is accepted.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address as the proxy sees it.
    pub src_addr: SocketAddr,
    /// The address the connection goes to (the original destination outbound, the local
    /// workload's address inbound).
    pub dst_addr: SocketAddr,
    /// The HBONE `:authority` when tunnelled (the inner target of the CONNECT).
    pub hbone_addr: Option<SocketAddr>,
    /// The source pod's name, for the access log (falls back to the canonical service).
    pub src_pod: Option<Arc<str>>,
    /// The destination pod's name, for the access log (falls back to the canonical service).
    pub dst_pod: Option<Arc<str>>,
    /// The metric labels; `response_flags` is ignored (the guard owns it).
    pub labels: TrafficLabels,
}

impl ConnInfo {
    /// A connection with unknown peers; fill `labels` and the pod names from the model.
    pub fn new(reporter: Reporter, src_addr: SocketAddr, dst_addr: SocketAddr) -> Self {
        ConnInfo {
            src_addr,
            dst_addr,
            hbone_addr: None,
            src_pod: None,
            dst_pod: None,
            labels: TrafficLabels { reporter, ..TrafficLabels::default() },
        }
    }
}

/// Records one connection: `opened` at creation, bytes as they flow, `closed` and the access
/// log line when dropped. Callers set the outcome (error, flags, policy decision) before the
/// drop. `Sync`, so both halves of a copy loop can count through `&ConnGuard`.
#[derive(Debug)]
pub struct ConnGuard {
    metrics: Arc<Metrics>,
    info: ConnInfo,
    start: Instant,
    to_server: AtomicU64,
    to_client: AtomicU64,
    /// `istio_tcp_received_bytes_total` for this label set, looked up once.
    to_server_total: Counter,
    /// `istio_tcp_sent_bytes_total` for this label set, looked up once.
    to_client_total: Counter,
    flags: AtomicResponseFlags,
    decision: Option<(Decision, Option<Arc<str>>)>,
    error: Option<String>,
}

impl ConnGuard {
    /// Counts the connection as opened and resolves its byte counters.
    pub fn open(metrics: &Arc<Metrics>, mut info: ConnInfo) -> ConnGuard {
        info.labels.response_flags = ResponseFlags::NONE;
        let tcp = &metrics.tcp;
        tcp.connections_opened.get_or_create(&info.labels).inc();
        let to_server_total = tcp.received_bytes.get_or_create_owned(&info.labels);
        let to_client_total = tcp.sent_bytes.get_or_create_owned(&info.labels);
        ConnGuard {
            metrics: metrics.clone(),
            info,
            start: Instant::now(),
            to_server: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            to_server_total,
            to_client_total,
            flags: AtomicResponseFlags::default(),
            decision: None,
            error: None,
        }
    }

    /// Counts `n` bytes copied client → server. Two atomic adds; never allocates.
    #[inline]
    pub fn add_to_server(&self, n: u64) {
        self.to_server.fetch_add(n, Ordering::Relaxed);
        self.to_server_total.inc_by(n);
    }

    /// Counts `n` bytes copied server → client. Two atomic adds; never allocates.
    #[inline]
    pub fn add_to_client(&self, n: u64) {
        self.to_client.fetch_add(n, Ordering::Relaxed);
        self.to_client_total.inc_by(n);
    }

    /// Bytes counted client → server so far.
    pub fn bytes_to_server(&self) -> u64 {
        self.to_server.load(Ordering::Relaxed)
    }

    /// Bytes counted server → client so far.
    pub fn bytes_to_client(&self) -> u64 {
        self.to_client.load(Ordering::Relaxed)
    }

    /// Adds a response flag (from either copy half: `&self`).
    pub fn add_flag(&self, flag: ResponseFlag) {
        self.flags.insert(flag.into());
    }

    /// The flags set so far.
    pub fn flags(&self) -> ResponseFlags {
        self.flags.load()
    }

    /// Records the authorization decision and the deciding policy (`namespace/name`); a denial
    /// also sets the `DENY` flag so metrics and log agree.
    pub fn set_decision(&mut self, decision: Decision, policy: Option<Arc<str>>) {
        if decision == Decision::Deny {
            self.add_flag(ResponseFlag::AuthorizationPolicyDenied);
        }
        self.decision = Some((decision, policy));
    }

    /// Records why the connection failed (formatted once, here).
    pub fn set_error(&mut self, error: impl fmt::Display) {
        self.error = Some(error.to_string());
    }

    /// [`ConnGuard::add_flag`] and [`ConnGuard::set_error`] together.
    pub fn fail(&mut self, flag: ResponseFlag, error: impl fmt::Display) {
        self.add_flag(flag);
        self.set_error(error);
    }

    /// The connection's labels (with `response_flags` `-`).
    pub fn labels(&self) -> &TrafficLabels {
        &self.info.labels
    }

    /// Ends the connection now (the same as dropping the guard).
    pub fn finish(self) {}

    fn record(&mut self) {
        let flags = self.flags.load();
        let closed = &self.metrics.tcp.connections_closed;
        if flags.is_empty() {
            closed.get_or_create(&self.info.labels).inc();
        } else {
            let labels = TrafficLabels { response_flags: flags, ..self.info.labels.clone() };
            closed.get_or_create(&labels).inc();
        }
        self.access_log(flags);
    }

    fn access_log(&self, flags: ResponseFlags) {
        let info = &self.info;
        let tl = &info.labels;
        let direction = Direction::of(tl.reporter);
        let mtls = tl.connection_security_policy == SecurityPolicy::MutualTls;
        let src_workload = info.src_pod.as_deref().or(tl.source.canonical_service.get());
        let dst_workload = info.dst_pod.as_deref().or(tl.destination.canonical_service.get());
        let src_identity = tl.source.principal.get().filter(|_| mtls);
        let dst_identity = tl.destination.principal.get().filter(|_| mtls);
        let (sent, recv) = match direction {
            Direction::Outbound => (self.bytes_to_server(), self.bytes_to_client()),
            Direction::Inbound => (self.bytes_to_client(), self.bytes_to_server()),
        };
        let duration_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let decision = self.decision.as_ref().map(|(d, _)| d.as_str());
        let policy = self.decision.as_ref().and_then(|(_, p)| p.as_deref());
        let hbone_addr = info.hbone_addr.map(tracing::field::display);

        // One macro body for both levels: `event!` needs a constant level.
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(
                    target: ACCESS_LOG_TARGET,
                    parent: None,
                    $level,
                    src.addr = %info.src_addr,
                    src.workload = src_workload,
                    src.namespace = tl.source.namespace.get(),
                    src.identity = src_identity,
                    dst.addr = %info.dst_addr,
                    dst.hbone_addr = hbone_addr,
                    dst.service = tl.destination_service.host.get(),
                    dst.workload = dst_workload,
                    dst.namespace = tl.destination.namespace.get(),
                    dst.identity = dst_identity,
                    direction = direction.as_str(),
                    bytes_sent = sent,
                    bytes_recv = recv,
                    duration_ms = duration_ms,
                    decision = decision,
                    policy = policy,
                    response_flags = %flags,
                    error = self.error.as_deref(),
                    "connection complete"
                )
            };
        }
        if self.error.is_some() {
            emit!(tracing::Level::WARN);
        } else {
            emit!(tracing::Level::INFO);
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.record();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_is_shareable_between_copy_halves() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<ConnGuard>();
    }

    #[test]
    fn direction_follows_reporter() {
        assert_eq!(Direction::of(Reporter::Source).as_str(), "outbound");
        assert_eq!(Direction::of(Reporter::Destination).as_str(), "inbound");
        assert_eq!(Direction::of(Reporter::Waypoint), Direction::Inbound);
    }
}
