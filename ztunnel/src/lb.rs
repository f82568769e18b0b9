//! Service load balancing at L4: picks one endpoint of a service port, honouring the
//! DestinationRule `trafficPolicy.loadBalancer` of the service's host (port-level settings
//! first): ROUND_ROBIN (default), RANDOM, LEAST_REQUEST (alias LEAST_CONN), and
//! `consistentHash.useSourceIp` (rendezvous hashing, so a client sticks to one endpoint and
//! only the clients of a removed endpoint move). Other hash keys need L7 and fall back to
//! round robin here.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mesh_api::istio::networking::{LoadBalancerSettings, SimpleLb};
use mesh_model::{Endpoint, Model, Service};

/// The algorithm chosen for a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum LbPolicy {
    RoundRobin,
    Random,
    LeastRequest,
    /// Consistent hash of the client's IP.
    SourceIpHash,
}

fn from_settings(lb: &LoadBalancerSettings) -> Option<LbPolicy> {
    if let Some(ch) = &lb.consistent_hash {
        if ch.use_source_ip == Some(true) {
            return Some(LbPolicy::SourceIpHash);
        }
        return Some(LbPolicy::RoundRobin);
    }
    Some(match lb.simple? {
        SimpleLb::Random => LbPolicy::Random,
        SimpleLb::LeastRequest | SimpleLb::LeastConn => LbPolicy::LeastRequest,
        SimpleLb::RoundRobin | SimpleLb::Unspecified | SimpleLb::Passthrough => LbPolicy::RoundRobin,
    })
}

/// The policy for `service` port `port` from its host's DestinationRules (the first that
/// says something wins; port-level settings before the rule's default).
pub fn policy_for(model: &Model, service: &Service, port: u16) -> LbPolicy {
    for (dr, _) in model.destination_rules_for_host(&service.hostname) {
        let Some(tp) = &dr.spec.traffic_policy else { continue };
        let port_level = tp
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)))
            .and_then(|p| p.load_balancer.as_ref())
            .and_then(from_settings);
        if let Some(p) = port_level.or_else(|| tp.load_balancer.as_ref().and_then(from_settings)) {
            return p;
        }
    }
    LbPolicy::RoundRobin
}

/// Counts open connections to one endpoint for LEAST_REQUEST; decrements on drop.
#[derive(Debug)]
pub struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An endpoint chosen for one connection.
#[derive(Debug)]
pub struct Picked {
    pub endpoint: Endpoint,
    /// The endpoint's port for the requested service port (its target port).
    pub port: u16,
    pub policy: LbPolicy,
    /// Held for the connection's life.
    pub active: ActiveGuard,
}

/// Balancer state shared by all connections of a proxy.
#[derive(Debug, Default)]
pub struct Balancer {
    round_robin: Mutex<HashMap<(Arc<str>, u16), usize>>,
    active: Mutex<HashMap<IpAddr, Arc<AtomicUsize>>>,
}

impl Balancer {
    pub fn new() -> Self {
        Self::default()
    }

    fn active_counter(&self, ip: IpAddr) -> Arc<AtomicUsize> {
        let mut m = self.active.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(ip).or_default().clone()
    }

    /// Open connections this proxy has to `ip` (for tests and `/debug`).
    pub fn active_to(&self, ip: IpAddr) -> usize {
        self.active_counter(ip).load(Ordering::Relaxed)
    }

    /// Picks a ready endpoint serving `port` of `service`, or `None` when there is none.
    pub fn pick(&self, model: &Model, service: &Service, port: u16, client: IpAddr) -> Option<Picked> {
        let idx = service.port_index(port)?;
        let candidates: Vec<(&Endpoint, u16)> = service
            .endpoints
            .iter()
            .filter(|e| e.ready)
            .filter_map(|e| e.port_at(idx).map(|p| (e, p)))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let policy = policy_for(model, service, port);
        let i = match policy {
            LbPolicy::RoundRobin => {
                let mut rr = self.round_robin.lock().unwrap_or_else(|e| e.into_inner());
                let next = rr.entry((service.hostname.clone(), port)).or_insert(0);
                let i = *next % candidates.len();
                *next = next.wrapping_add(1);
                i
            }
            LbPolicy::Random => rand::random_range(0..candidates.len()),
            LbPolicy::LeastRequest => {
                let loads: Vec<usize> = candidates
                    .iter()
                    .map(|(e, _)| self.active_counter(e.ip).load(Ordering::Relaxed))
                    .collect();
                let min = loads.iter().copied().min().unwrap_or(0);
                let ties: Vec<usize> = (0..loads.len()).filter(|i| loads[*i] == min).collect();
                ties[rand::random_range(0..ties.len())]
            }
            LbPolicy::SourceIpHash => {
                (0..candidates.len()).max_by_key(|i| rendezvous(client, candidates[*i].0.ip)).unwrap_or(0)
            }
        };
        let (endpoint, port) = candidates[i];
        let counter = self.active_counter(endpoint.ip);
        counter.fetch_add(1, Ordering::Relaxed);
        Some(Picked { endpoint: endpoint.clone(), port, policy, active: ActiveGuard(counter) })
    }
}

/// A hash of (client, endpoint) that is the same in every process (so all ztunnels agree).
fn rendezvous(client: IpAddr, endpoint: IpAddr) -> u64 {
    // FNV-1a: stable across processes and versions, unlike std's RandomState.
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    client.hash(&mut h);
    endpoint.hash(&mut h);
    h.finish()
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        // Final avalanche so near-identical inputs spread.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_api::istio::networking::ConsistentHashLb;

    use super::*;

    fn lb(yaml: &str) -> LoadBalancerSettings {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn settings_map_to_policies() {
        assert_eq!(from_settings(&lb("simple: ROUND_ROBIN")), Some(LbPolicy::RoundRobin));
        assert_eq!(from_settings(&lb("simple: RANDOM")), Some(LbPolicy::Random));
        assert_eq!(from_settings(&lb("simple: LEAST_REQUEST")), Some(LbPolicy::LeastRequest));
        assert_eq!(from_settings(&lb("simple: LEAST_CONN")), Some(LbPolicy::LeastRequest));
        assert_eq!(from_settings(&lb("consistentHash: {useSourceIp: true}")), Some(LbPolicy::SourceIpHash));
        // Header hashing needs L7: round robin at L4.
        let header = LoadBalancerSettings {
            consistent_hash: Some(ConsistentHashLb {
                http_header_name: Some("x".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(from_settings(&header), Some(LbPolicy::RoundRobin));
        assert_eq!(from_settings(&LoadBalancerSettings::default()), None);
    }

    #[test]
    fn rendezvous_is_stable_and_spreads() {
        let eps: Vec<IpAddr> = (1..=4).map(|i| IpAddr::from([10, 0, 0, i])).collect();
        let pick =
            |client: IpAddr, eps: &[IpAddr]| *eps.iter().max_by_key(|e| rendezvous(client, **e)).unwrap();
        let mut hits = [0usize; 4];
        for c in 0..400u16 {
            let client = IpAddr::from([10, 1, (c >> 8) as u8, c as u8]);
            let p = pick(client, &eps);
            assert_eq!(p, pick(client, &eps), "same client, same endpoint");
            hits[eps.iter().position(|e| *e == p).unwrap()] += 1;
            // Removing another endpoint does not move this client.
            let other: Vec<IpAddr> =
                eps.iter().copied().filter(|e| *e == p || *e != eps[(c % 4) as usize]).collect();
            assert_eq!(pick(client, &other), p);
        }
        assert!(hits.iter().all(|h| *h > 50), "uneven spread {hits:?}");
    }
}
