//! Value matchers of AuthorizationPolicy fields: Istio's string forms (exact, `abc*` prefix,
//! `*abc` suffix, `*` presence), CIDR blocks, and path templates. All matching is
//! allocation-free: principals are matched as the concatenation of their parts.

use std::net::IpAddr;

/// An Istio string match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StrMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    /// `*`: any non-empty value.
    Presence,
}

impl StrMatch {
    /// Istio's parsing order: `*` alone, then a leading `*` (suffix), then a trailing `*`.
    pub(crate) fn parse(s: &str) -> Self {
        if s == "*" {
            StrMatch::Presence
        } else if let Some(sfx) = s.strip_prefix('*') {
            StrMatch::Suffix(sfx.into())
        } else if let Some(pfx) = s.strip_suffix('*') {
            StrMatch::Prefix(pfx.into())
        } else {
            StrMatch::Exact(s.into())
        }
    }

    pub(crate) fn matches(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => v == &**e,
            StrMatch::Prefix(p) => v.starts_with(&**p),
            StrMatch::Suffix(s) => v.ends_with(&**s),
            StrMatch::Presence => !v.is_empty(),
        }
    }

    /// ASCII case-insensitive (hosts).
    pub(crate) fn matches_ignore_case(&self, v: &str) -> bool {
        let n = v.len();
        match self {
            StrMatch::Exact(e) => v.eq_ignore_ascii_case(e),
            StrMatch::Prefix(p) => n >= p.len() && v.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes()),
            StrMatch::Suffix(s) => {
                n >= s.len() && v.as_bytes()[n - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
            StrMatch::Presence => !v.is_empty(),
        }
    }

    /// Matches the concatenation of `parts` without building it.
    pub(crate) fn matches_parts(&self, parts: &[&str]) -> bool {
        match self {
            StrMatch::Exact(e) => parts_eq(parts, e),
            StrMatch::Prefix(p) => parts_start_with(parts, p),
            StrMatch::Suffix(s) => parts_end_with(parts, s),
            StrMatch::Presence => parts.iter().any(|p| !p.is_empty()),
        }
    }
}

fn parts_eq(parts: &[&str], mut s: &str) -> bool {
    for p in parts {
        match s.strip_prefix(p) {
            Some(rest) => s = rest,
            None => return false,
        }
    }
    s.is_empty()
}

fn parts_start_with(parts: &[&str], mut prefix: &str) -> bool {
    for p in parts {
        if prefix.len() <= p.len() {
            return p.starts_with(prefix);
        }
        match prefix.strip_prefix(p) {
            Some(rest) => prefix = rest,
            None => return false,
        }
    }
    prefix.is_empty()
}

fn parts_end_with(parts: &[&str], mut suffix: &str) -> bool {
    for p in parts.iter().rev() {
        if suffix.len() <= p.len() {
            return p.ends_with(suffix);
        }
        match suffix.strip_suffix(p) {
            Some(rest) => suffix = rest,
            None => return false,
        }
    }
    suffix.is_empty()
}

/// An IP block (`10.0.0.0/8`, `fd00::/64`, or a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cidr {
    V4(u32, u8),
    V6(u128, u8),
}

impl Cidr {
    pub(crate) fn parse(s: &str) -> Option<Cidr> {
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, Some(len.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        match ip {
            IpAddr::V4(a) => {
                let len = len.unwrap_or(32);
                (len <= 32).then(|| Cidr::V4(u32::from(a) & mask32(len), len))
            }
            IpAddr::V6(a) => {
                let len = len.unwrap_or(128);
                (len <= 128).then(|| Cidr::V6(u128::from(a) & mask128(len), len))
            }
        }
    }

    /// Whether `ip` is in the block; IPv4-mapped IPv6 addresses count as IPv4.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self, canonical_ip(ip)) {
            (Cidr::V4(net, len), IpAddr::V4(a)) => u32::from(a) & mask32(*len) == *net,
            (Cidr::V6(net, len), IpAddr::V6(a)) => u128::from(a) & mask128(*len) == *net,
            _ => false,
        }
    }
}

fn mask32(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) }
}

fn mask128(len: u8) -> u128 {
    if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) }
}

/// `::ffff:a.b.c.d` as `a.b.c.d` (dual-stack sockets report IPv4 peers that way).
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// An Istio path: a string match, or a template with `{*}` (one segment) and `{**}` (one or
/// more segments, last operator only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathMatch {
    Str(StrMatch),
    Template(Box<[Segment]>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Literal(Box<str>),
    One,
    Rest,
}

impl PathMatch {
    /// None for a malformed template (`{**}` not last, unknown `{..}` operator).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        if !s.contains('{') {
            return Some(PathMatch::Str(StrMatch::parse(s)));
        }
        let parts: Vec<&str> = s.strip_prefix('/')?.split('/').collect();
        let mut segs = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            segs.push(match *p {
                "{*}" => Segment::One,
                "{**}" if i + 1 == parts.len() => Segment::Rest,
                p if p.contains(['{', '}', '*']) => return None,
                p => Segment::Literal(p.into()),
            });
        }
        Some(PathMatch::Template(segs.into()))
    }

    /// `path` without its query string.
    pub(crate) fn matches(&self, path: &str) -> bool {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        match self {
            PathMatch::Str(m) => m.matches(path),
            PathMatch::Template(segs) => {
                let Some(rest) = path.strip_prefix('/') else { return false };
                let mut it = rest.split('/');
                for seg in segs.iter() {
                    match seg {
                        Segment::Literal(l) => {
                            if it.next() != Some(&**l) {
                                return false;
                            }
                        }
                        Segment::One => {
                            if it.next().is_none_or(str::is_empty) {
                                return false;
                            }
                        }
                        Segment::Rest => return it.next().is_some_and(|s| !s.is_empty()),
                    }
                }
                it.next().is_none()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_forms() {
        assert!(StrMatch::parse("abc*").matches("abcdef"));
        assert!(StrMatch::parse("*def").matches("abcdef"));
        assert!(StrMatch::parse("*").matches("x") && !StrMatch::parse("*").matches(""));
        assert!(StrMatch::parse("abc").matches("abc") && !StrMatch::parse("abc").matches("abcd"));
        assert!(StrMatch::parse("*.EXAMPLE.com").matches_ignore_case("a.example.COM"));
    }

    #[test]
    fn parts() {
        let p = ["cluster.local", "/ns/", "foo", "/sa/", "bar"];
        assert!(StrMatch::parse("cluster.local/ns/foo/sa/bar").matches_parts(&p));
        assert!(!StrMatch::parse("cluster.local/ns/foo/sa/ba").matches_parts(&p));
        assert!(!StrMatch::parse("cluster.local/ns/foo/sa/barr").matches_parts(&p));
        assert!(StrMatch::parse("cluster.local/ns/fo*").matches_parts(&p));
        assert!(StrMatch::parse("cluster.local/ns/foo/sa/bar*").matches_parts(&p));
        assert!(!StrMatch::parse("cluster.local/ns/foo/sa/bar/x*").matches_parts(&p));
        assert!(StrMatch::parse("*o/sa/bar").matches_parts(&p));
        assert!(StrMatch::parse("*cluster.local/ns/foo/sa/bar").matches_parts(&p));
        assert!(!StrMatch::parse("*xcluster.local/ns/foo/sa/bar").matches_parts(&p));
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none() && Cidr::parse("nope").is_none());
        assert_eq!(Cidr::parse("10.0.0.1"), Some(Cidr::V4(0x0a00_0001, 32)));
    }

    #[test]
    fn templates() {
        let t = PathMatch::parse("/api/{*}/items/{**}").unwrap();
        assert!(t.matches("/api/v1/items/a/b?x=1"));
        assert!(!t.matches("/api/v1/items"));
        assert!(!t.matches("/api//items/a"));
        assert!(PathMatch::parse("/a/{**}/b").is_none());
        assert!(PathMatch::parse("/a/x{*}").is_none());
        assert!(PathMatch::parse("/x*").unwrap().matches("/xyz?q"));
    }
}
