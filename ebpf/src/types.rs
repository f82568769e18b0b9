//! The public capture types (`PodConfig`, `PodFlags`, `ListenerKind`, `Reason`) and the
//! `#[repr(C)]` map keys/values, defined once here and mirrored in `bpf/include/types.h` and
//! `bpf/include/reasons.h`; the tests below pin the layout and the reason numbering.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Port of the pod's outbound listener (captured traffic of the pod).
pub const PORT_OUTBOUND: u16 = 15001;
/// Port of the pod's inbound plaintext listener.
pub const PORT_INBOUND_PLAINTEXT: u16 = 15006;
/// Port of the pod's inbound HBONE listener.
pub const PORT_HBONE: u16 = 15008;

pub(crate) const AF_INET: u32 = 2;
pub(crate) const AF_INET6: u32 = 10;
const POD_HAS_IP4: u32 = 0x1;
const POD_HAS_IP6: u32 = 0x2;

/// Per-pod capture flags (bit set, as stored in the pods map).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PodFlags(pub u32);

impl PodFlags {
    /// No flags: the pod is fail-closed.
    pub const NONE: PodFlags = PodFlags(0);
    /// While a listener is missing, let connections through unchanged instead of refusing them.
    pub const FAIL_OPEN: PodFlags = PodFlags(0x1);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: PodFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for PodFlags {
    type Output = PodFlags;
    fn bitor(self, rhs: PodFlags) -> PodFlags {
        PodFlags(self.0 | rhs.0)
    }
}

/// A captured pod as registered in the pods map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodConfig {
    /// The pod's IPv4 address (outbound rewrites go to `<ipv4>:15001`).
    pub ipv4: Option<Ipv4Addr>,
    /// The pod's IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// Capture flags (fail-open).
    pub flags: PodFlags,
}

/// Which of a pod's listeners a socket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ListenerKind {
    /// 15001: the pod's captured outbound traffic.
    Outbound = 0,
    /// 15006: inbound plaintext.
    InboundPlaintext = 1,
    /// 15008: inbound HBONE.
    Hbone = 2,
}

impl ListenerKind {
    /// The fixed port of this listener.
    pub fn port(self) -> u16 {
        match self {
            ListenerKind::Outbound => PORT_OUTBOUND,
            ListenerKind::InboundPlaintext => PORT_INBOUND_PLAINTEXT,
            ListenerKind::Hbone => PORT_HBONE,
        }
    }
}

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident = $value:literal => $name:literal, $c:literal;)+) => {
        /// Why a program redirected, skipped or dropped a connection: the index of a per-CPU
        /// counter. Mirrors `enum mesh_reason` in `bpf/include/reasons.h`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum Reason {
            $($(#[$doc])* $variant = $value,)+
        }

        impl Reason {
            /// Every reason, in counter order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)+];

            /// Stable snake_case name (metric label).
            pub fn name(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)+
                }
            }

            #[cfg(test)]
            fn c_name(self) -> &'static str {
                match self {
                    $(Reason::$variant => $c,)+
                }
            }
        }
    };
}

reasons! {
    /// connect rewritten to `<pod ip>:15001`.
    OutRedirected = 0 => "out_redirected", "REASON_OUT_REDIRECTED";
    /// connect from a netns that is not a registered pod.
    OutSkipNotCaptured = 1 => "out_skip_not_captured", "REASON_OUT_SKIP_NOT_CAPTURED";
    /// socket carries the proxy's SO_MARK.
    OutSkipProxyMark = 2 => "out_skip_proxy_mark", "REASON_OUT_SKIP_PROXY_MARK";
    /// destination is loopback or unspecified.
    OutSkipLoopback = 3 => "out_skip_loopback", "REASON_OUT_SKIP_LOOPBACK";
    /// destination is the pod's own IP.
    OutSkipOwnIp = 4 => "out_skip_own_ip", "REASON_OUT_SKIP_OWN_IP";
    /// not a TCP socket.
    OutSkipNotTcp = 5 => "out_skip_not_tcp", "REASON_OUT_SKIP_NOT_TCP";
    /// the pod has no address of the socket's family.
    OutSkipNoPodIp = 6 => "out_skip_no_pod_ip", "REASON_OUT_SKIP_NO_POD_IP";
    /// fail-open pod without an outbound listener: connect left unchanged.
    OutFailOpen = 7 => "out_fail_open", "REASON_OUT_FAIL_OPEN";
    /// the original destination could not be stored: connect left unchanged.
    OutStoreFailed = 8 => "out_store_failed", "REASON_OUT_STORE_FAILED";
    /// sockops keyed an original destination by 4-tuple.
    OrigTupleStored = 9 => "orig_tuple_stored", "REASON_ORIG_TUPLE_STORED";
    /// getsockopt(SO_ORIGINAL_DST) answered.
    OrigDstAnswered = 10 => "orig_dst_answered", "REASON_ORIG_DST_ANSWERED";
    /// getsockopt(SO_ORIGINAL_DST) for an unknown 4-tuple: kernel answer kept.
    OrigDstNotFound = 11 => "orig_dst_not_found", "REASON_ORIG_DST_NOT_FOUND";
    /// getsockopt(SO_ORIGINAL_DST) with a too small buffer.
    OrigDstBadBuffer = 12 => "orig_dst_bad_buffer", "REASON_ORIG_DST_BAD_BUFFER";
    /// getpeername shows the original destination.
    PeernameRewritten = 13 => "peername_rewritten", "REASON_PEERNAME_REWRITTEN";
    /// inbound connection steered to the 15006 listener.
    InPlaintext = 14 => "in_plaintext", "REASON_IN_PLAINTEXT";
    /// inbound connection steered to the 15008 listener.
    InHbone = 15 => "in_hbone", "REASON_IN_HBONE";
    /// 15001/15006 reached from outside the pod: dropped.
    InDropProxyPort = 16 => "in_drop_proxy_port", "REASON_IN_DROP_PROXY_PORT";
    /// listener missing and pod fail-closed: dropped.
    InDropNoListener = 17 => "in_drop_no_listener", "REASON_IN_DROP_NO_LISTENER";
    /// listener missing and pod fail-open: passed unchanged.
    InFailOpen = 18 => "in_fail_open", "REASON_IN_FAIL_OPEN";
    /// made inside the pod (on lo or from the pod IP): never steered.
    InSkipLoopback = 19 => "in_skip_loopback", "REASON_IN_SKIP_LOOPBACK";
    /// destination is not a registered pod IP.
    InSkipNotPod = 20 => "in_skip_not_pod", "REASON_IN_SKIP_NOT_POD";
    /// bpf_sk_assign refused the listener: dropped.
    InAssignFailed = 21 => "in_assign_failed", "REASON_IN_ASSIGN_FAILED";
}

/// `struct mesh_pod`: value of `mesh_pods` (key: u64 netns cookie).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PodValue {
    pub flags: u32,
    pub addrs: u32,
    pub ip4: [u8; 4],
    pub ip6: [u8; 16],
}

/// `struct mesh_ip`: key of `mesh_pod_ips` (value: u64 netns cookie).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct IpKey {
    pub family: u32,
    pub ip: [u8; 16],
}

/// `struct mesh_listener_key`: key of the `mesh_listeners` SOCKHASH.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ListenerKey {
    pub netns_cookie: u64,
    pub kind: u32,
    pub pad: u32,
}

/// `struct mesh_addr`: an endpoint, address and port in network byte order.
#[allow(dead_code)] // only the programs read it; mirrored so the layout test pins it
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AddrValue {
    pub ip: [u8; 16],
    pub port: [u8; 2],
    pub family: u16,
}

/// `struct mesh_tuple`: key of `mesh_orig_tup` (only the programs use it; mirrored for layout).
#[allow(dead_code)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TupleKey {
    pub src: AddrValue,
    pub dst: AddrValue,
}

/// `struct mesh_config`: `mesh_config[0]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConfigValue {
    pub proxy_mark: u32,
    pub pad: u32,
}

// SAFETY: plain #[repr(C)] integers/byte arrays without padding holes the kernel could leak
// (sizes are multiples of the alignment, checked in the layout test), valid for any bit pattern.
unsafe impl aya::Pod for PodValue {}
// SAFETY: as above.
unsafe impl aya::Pod for IpKey {}
// SAFETY: as above; `pad` is explicit and always written as 0.
unsafe impl aya::Pod for ListenerKey {}
// SAFETY: as above.
unsafe impl aya::Pod for AddrValue {}
// SAFETY: as above.
unsafe impl aya::Pod for TupleKey {}
// SAFETY: as above.
unsafe impl aya::Pod for ConfigValue {}

impl PodValue {
    pub(crate) fn from_config(pod: &PodConfig) -> PodValue {
        let mut v = PodValue { flags: pod.flags.0, ..PodValue::default() };
        if let Some(ip) = pod.ipv4 {
            v.addrs |= POD_HAS_IP4;
            v.ip4 = ip.octets();
        }
        if let Some(ip) = pod.ipv6 {
            v.addrs |= POD_HAS_IP6;
            v.ip6 = ip.octets();
        }
        v
    }

    pub(crate) fn to_config(self) -> PodConfig {
        PodConfig {
            ipv4: (self.addrs & POD_HAS_IP4 != 0).then(|| Ipv4Addr::from(self.ip4)),
            ipv6: (self.addrs & POD_HAS_IP6 != 0).then(|| Ipv6Addr::from(self.ip6)),
            flags: PodFlags(self.flags),
        }
    }

    /// The pod-IP map keys this pod owns.
    pub(crate) fn ip_keys(self) -> Vec<IpKey> {
        let mut keys = Vec::new();
        if self.addrs & POD_HAS_IP4 != 0 {
            let mut ip = [0u8; 16];
            ip[..4].copy_from_slice(&self.ip4);
            keys.push(IpKey { family: AF_INET, ip });
        }
        if self.addrs & POD_HAS_IP6 != 0 {
            keys.push(IpKey { family: AF_INET6, ip: self.ip6 });
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The same numbers are `_Static_assert`ed in bpf/include/types.h.
    #[test]
    fn layout() {
        assert_eq!(size_of::<PodValue>(), 28);
        assert_eq!(offset_of!(PodValue, addrs), 4);
        assert_eq!(offset_of!(PodValue, ip4), 8);
        assert_eq!(offset_of!(PodValue, ip6), 12);
        assert_eq!(size_of::<IpKey>(), 20);
        assert_eq!(offset_of!(IpKey, ip), 4);
        assert_eq!(size_of::<ListenerKey>(), 16);
        assert_eq!(offset_of!(ListenerKey, kind), 8);
        assert_eq!(size_of::<AddrValue>(), 20);
        assert_eq!(offset_of!(AddrValue, port), 16);
        assert_eq!(offset_of!(AddrValue, family), 18);
        assert_eq!(size_of::<TupleKey>(), 40);
        assert_eq!(offset_of!(TupleKey, dst), 20);
        assert_eq!(size_of::<ConfigValue>(), 8);
        let header = include_str!("../bpf/include/types.h");
        for needle in [
            "sizeof(struct mesh_pod) == 28",
            "__builtin_offsetof(struct mesh_pod, ip6) == 12",
            "sizeof(struct mesh_ip) == 20",
            "sizeof(struct mesh_listener_key) == 16",
            "sizeof(struct mesh_addr) == 20",
            "__builtin_offsetof(struct mesh_addr, family) == 18",
            "sizeof(struct mesh_tuple) == 40",
            "sizeof(struct mesh_config) == 8",
        ] {
            assert!(header.contains(needle), "types.h no longer asserts `{needle}`");
        }
    }

    /// Every Rust reason has the same number in reasons.h, and REASON_MAX matches.
    #[test]
    fn reasons_match_header() {
        let header = include_str!("../bpf/include/reasons.h");
        let value_of = |name: &str| -> u32 {
            let line = header
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{name} =")))
                .unwrap_or_else(|| panic!("{name} missing from reasons.h"));
            let rhs = line.split('=').nth(1).expect("value");
            let digits: String = rhs.trim().chars().take_while(char::is_ascii_digit).collect();
            digits.parse().unwrap_or_else(|e| panic!("{name} in reasons.h: {e}"))
        };
        for r in Reason::ALL {
            assert_eq!(value_of(r.c_name()), *r as u32, "{}", r.c_name());
        }
        assert_eq!(value_of("REASON_MAX") as usize, Reason::ALL.len());
        let mut names: Vec<_> = Reason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len(), "reason names are unique");
    }

    #[test]
    fn pod_value_round_trip() {
        let pod = PodConfig {
            ipv4: Some(Ipv4Addr::new(10, 1, 2, 3)),
            ipv6: Some("fd00::7".parse().expect("v6")),
            flags: PodFlags::FAIL_OPEN,
        };
        let v = PodValue::from_config(&pod);
        assert_eq!(v.ip4, [10, 1, 2, 3], "network byte order");
        assert_eq!(v.to_config(), pod);
        assert_eq!(v.ip_keys().len(), 2);
        assert_eq!(v.ip_keys()[0].ip[..4], [10, 1, 2, 3]);
        assert!(PodFlags(3).contains(PodFlags::FAIL_OPEN));
        assert!(!PodFlags::NONE.contains(PodFlags::FAIL_OPEN));
    }
}
