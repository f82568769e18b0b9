//! Consistent hashing: the request hash (header, cookie, source IP, query parameter), a
//! ring-hash ring and a Maglev lookup table over a cluster's usable endpoints.
//!
//! The hash is FNV-1a with a 64-bit finaliser: stable across processes and versions (unlike
//! std's `RandomState`), so every waypoint replica sends the same key to the same endpoint.
//! Endpoints are placed by their `ip:port` text, as Envoy places hosts by address.

use std::net::IpAddr;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue, Uri};

use super::policy::{CookieKey, HashAlgorithm, HashKey, MAX_RING_SIZE};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// Incremental FNV-1a with a final avalanche (so near-identical keys spread over the ring).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hasher(u64);

impl Hasher {
    pub(crate) fn new(seed: u64) -> Self {
        Hasher(FNV_OFFSET ^ seed.wrapping_mul(FNV_PRIME))
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    pub(crate) fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        x
    }
}

pub(crate) fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = Hasher::new(seed);
    h.write(bytes);
    h.finish()
}

/// The request's hash for `key`, and the `Set-Cookie` value when a cookie had to be generated.
/// `None` when the attribute is absent (the caller then picks at random, as Envoy does).
pub(crate) fn request_hash(
    key: &HashKey,
    headers: &HeaderMap,
    uri: &Uri,
    source_ip: IpAddr,
) -> (Option<u64>, Option<HeaderValue>) {
    match key {
        HashKey::Header(name) => {
            let mut h = Hasher::new(0);
            let mut any = false;
            for v in headers.get_all(name) {
                any = true;
                h.write(v.as_bytes());
            }
            (any.then(|| h.finish()), None)
        }
        HashKey::SourceIp => {
            let h = match source_ip {
                IpAddr::V4(v4) => hash_bytes(0, &v4.octets()),
                IpAddr::V6(v6) => hash_bytes(0, &v6.octets()),
            };
            (Some(h), None)
        }
        HashKey::QueryParameter(name) => {
            let value = uri.query().and_then(|q| {
                q.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == &**name).then_some(v)
                })
            });
            (value.map(|v| hash_bytes(0, v.as_bytes())), None)
        }
        HashKey::Cookie(c) => match cookie_value(headers, &c.name) {
            Some(v) => (Some(hash_bytes(0, v.as_bytes())), None),
            None => match c.ttl {
                None => (None, None),
                Some(_) => {
                    let value = format!("{:016x}", rand::random::<u64>());
                    (Some(hash_bytes(0, value.as_bytes())), set_cookie(c, &value))
                }
            },
        },
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (surrounding quotes removed,
/// as Envoy does, so a generated `"v"` hashes like `v`).
pub(crate) fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
        line.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            if k.trim() != name {
                return None;
            }
            let v = v.trim();
            Some(v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v))
        })
    })
}

/// `name="value"; Max-Age=<ttl>; Path=<path>; <attributes>; HttpOnly`, Envoy's layout; no
/// `Max-Age` for a zero ttl (a session cookie).
pub(crate) fn set_cookie(c: &CookieKey, value: &str) -> Option<HeaderValue> {
    let mut s = format!("{}=\"{value}\"", c.name);
    if let Some(ttl) = c.ttl.filter(|t| t.as_secs() > 0) {
        s.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if let Some(p) = &c.path {
        s.push_str(&format!("; Path={p}"));
    }
    for (n, v) in &c.attributes {
        match v {
            Some(v) => s.push_str(&format!("; {n}={v}")),
            None => s.push_str(&format!("; {n}")),
        }
    }
    s.push_str("; HttpOnly");
    HeaderValue::try_from(s).ok()
}

/// A ring or a Maglev table mapping hashes to endpoint indexes of the cluster.
#[derive(Debug)]
pub(crate) enum HashTable {
    Ring(Box<[(u64, u32)]>),
    Maglev(Box<[u32]>),
}

impl HashTable {
    /// Builds the structure over `hosts`: (endpoint index, placement key `ip:port`).
    pub(crate) fn build(algorithm: HashAlgorithm, hosts: &[(u32, String)]) -> HashTable {
        match algorithm {
            HashAlgorithm::RingHash { minimum_ring_size } => HashTable::Ring(ring(hosts, minimum_ring_size)),
            HashAlgorithm::Maglev { table_size } => HashTable::Maglev(maglev(hosts, table_size)),
        }
    }

    /// The endpoint index for `hash` among those `usable`; `None` when there is none. A
    /// ring is built over every endpoint and walked clockwise past unusable (ejected) ones,
    /// so only the keys of an ejected endpoint move; a Maglev table is built over the usable
    /// endpoints only (as Envoy rebuilds it), so `usable` is not consulted.
    pub(crate) fn lookup(&self, hash: u64, usable: impl Fn(u32) -> bool) -> Option<u32> {
        match self {
            HashTable::Ring(r) if !r.is_empty() => {
                let start = r.partition_point(|(h, _)| *h < hash);
                (0..r.len()).map(|k| r[(start + k) % r.len()].1).find(|i| usable(*i))
            }
            HashTable::Maglev(t) if !t.is_empty() => Some(t[(hash % t.len() as u64) as usize]),
            _ => None,
        }
    }
}

/// Envoy's ring: at least `ceil(min / hosts)` points per host at `hash("<addr>_<i>")`,
/// sorted. The count is rounded up to a power of two (the ring stays between the minimum and
/// twice it), so adding or removing a host seldom changes the other hosts' points and moves
/// only the keys of that host.
fn ring(hosts: &[(u32, String)], min_size: u64) -> Box<[(u64, u32)]> {
    if hosts.is_empty() {
        return Box::default();
    }
    let n = hosts.len() as u64;
    let per_host = min_size.div_ceil(n).max(1).next_power_of_two().min((MAX_RING_SIZE / n).max(1));
    let mut entries = Vec::with_capacity((per_host as usize).saturating_mul(hosts.len()));
    let mut key = String::new();
    for (idx, addr) in hosts {
        for i in 0..per_host {
            key.clear();
            key.push_str(addr);
            key.push('_');
            key.push_str(&i.to_string());
            entries.push((hash_bytes(0, key.as_bytes()), *idx));
        }
    }
    entries.sort_unstable();
    entries.into()
}

/// Maglev (Eisenbud et al., 2016): each host walks its own permutation of the table
/// (`offset + j·skip mod M`, M prime) taking the next free slot in turn, so every host gets
/// ⌊M/N⌋ or ⌈M/N⌉ slots and removing a host moves little more than its own slots.
fn maglev(hosts: &[(u32, String)], size: u64) -> Box<[u32]> {
    if hosts.is_empty() {
        return Box::default();
    }
    let m = size as usize;
    let perms: Vec<(u64, u64)> = hosts
        .iter()
        .map(|(_, addr)| {
            let offset = hash_bytes(1, addr.as_bytes()) % size;
            let skip = hash_bytes(2, addr.as_bytes()) % (size - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; hosts.len()];
    let mut table = vec![u32::MAX; m];
    let mut filled = 0usize;
    'fill: loop {
        for (i, (offset, skip)) in perms.iter().enumerate() {
            let mut c = ((offset + next[i] * skip) % size) as usize;
            while table[c] != u32::MAX {
                next[i] += 1;
                c = ((offset + next[i] * skip) % size) as usize;
            }
            table[c] = hosts[i].0;
            next[i] += 1;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    table.into()
}
