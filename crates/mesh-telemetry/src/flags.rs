//! Response flags: Envoy's short codes (which Istio reports in the `response_flags` label and
//! access logs) as a copyable bitset, rendered like Envoy: codes joined by `,` in Envoy's
//! declaration order, `-` when none is set.
//!
//! Istio's ztunnel only knows `-`, `DENY` (authorization policy) and `CONNECT` (upstream
//! connect failure). We keep `DENY` for a policy denial and report a connect failure as Envoy's
//! `UF`, which Kiali and the Istio dashboards already explain.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

macro_rules! response_flags {
    ($($(#[$doc:meta])* $variant:ident = $code:literal,)*) => {
        /// One response flag. The order of the variants is Envoy's, and so the rendering order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum ResponseFlag {
            $($(#[$doc])* $variant,)*
        }

        impl ResponseFlag {
            /// Every flag, in rendering order.
            pub const ALL: &'static [ResponseFlag] = &[$(ResponseFlag::$variant,)*];

            /// The short code Envoy and Istio print (`UF`, `DC`, ...).
            pub const fn code(self) -> &'static str {
                match self {
                    $(ResponseFlag::$variant => $code,)*
                }
            }
        }
    };
}

response_flags! {
    /// `LH`: the local service failed its health check.
    FailedLocalHealthCheck = "LH",
    /// `UH`: no healthy upstream host (e.g. all endpoints ejected).
    NoHealthyUpstream = "UH",
    /// `UT`: upstream request timeout.
    UpstreamRequestTimeout = "UT",
    /// `LR`: the connection was reset locally.
    LocalReset = "LR",
    /// `UR`: the upstream reset the connection or stream.
    UpstreamRemoteReset = "UR",
    /// `UF`: the upstream connection could not be established.
    UpstreamConnectionFailure = "UF",
    /// `UC`: the upstream connection terminated early.
    UpstreamConnectionTermination = "UC",
    /// `UO`: upstream overflow (a circuit breaker is open).
    UpstreamOverflow = "UO",
    /// `NR`: no route (or no upstream) for the destination.
    NoRouteFound = "NR",
    /// `DI`: the request was delayed by fault injection.
    DelayInjected = "DI",
    /// `FI`: the request was aborted by fault injection.
    FaultInjected = "FI",
    /// `RL`: rate limited locally.
    RateLimited = "RL",
    /// `UAEX`: denied by an external authorization service.
    UnauthorizedExternalService = "UAEX",
    /// `RLSE`: the rate limit service failed.
    RateLimitServiceError = "RLSE",
    /// `DC`: the downstream connection terminated early.
    DownstreamConnectionTermination = "DC",
    /// `URX`: retry limit (HTTP) or connect attempt limit (TCP) exceeded.
    UpstreamRetryLimitExceeded = "URX",
    /// `SI`: stream idle timeout.
    StreamIdleTimeout = "SI",
    /// `IH`: invalid value in a strictly checked request header.
    InvalidRequestHeaders = "IH",
    /// `DPE`: downstream protocol error.
    DownstreamProtocolError = "DPE",
    /// `UMSDR`: the upstream request reached its maximum stream duration.
    UpstreamMaxStreamDurationReached = "UMSDR",
    /// `RFCF`: response served from a cache filter.
    ResponseFromCacheFilter = "RFCF",
    /// `NFCF`: no filter configuration found.
    NoFilterConfigFound = "NFCF",
    /// `DT`: the request or connection exceeded its maximum duration.
    DurationTimeout = "DT",
    /// `UPE`: upstream protocol error.
    UpstreamProtocolError = "UPE",
    /// `NC`: no upstream cluster found.
    NoClusterFound = "NC",
    /// `OM`: refused by overload management.
    OverloadManager = "OM",
    /// `DF`: DNS resolution failed.
    DnsResolutionFailed = "DF",
    /// `DO`: dropped by drop-overload.
    DropOverload = "DO",
    /// `DR`: the downstream reset the stream.
    DownstreamRemoteReset = "DR",
    /// `UDO`: dropped unconditionally by drop-overload.
    UnconditionalDropOverload = "UDO",
    /// `DENY`: refused by an authorization policy (Istio ztunnel's code).
    AuthorizationPolicyDenied = "DENY",
}

impl ResponseFlag {
    const fn bit(self) -> u32 {
        1 << (self as u8)
    }
}

impl fmt::Display for ResponseFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A set of [`ResponseFlag`]s. `Default` is empty, which renders `-`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u32);

impl ResponseFlags {
    /// No flag (`-`).
    pub const NONE: ResponseFlags = ResponseFlags(0);

    /// The set holding exactly `flag`.
    pub const fn of(flag: ResponseFlag) -> Self {
        ResponseFlags(flag.bit())
    }

    /// Adds `flag`.
    pub fn insert(&mut self, flag: ResponseFlag) {
        self.0 |= flag.bit();
    }

    /// This set with `flag` added.
    #[must_use]
    pub const fn with(self, flag: ResponseFlag) -> Self {
        ResponseFlags(self.0 | flag.bit())
    }

    pub const fn contains(self, flag: ResponseFlag) -> bool {
        self.0 & flag.bit() != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flags set, in rendering order.
    pub fn iter(self) -> impl Iterator<Item = ResponseFlag> {
        ResponseFlag::ALL.iter().copied().filter(move |f| self.contains(*f))
    }

    /// The raw bits (for storing in an atomic).
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// The set from raw bits; bits that name no flag are dropped.
    pub const fn from_bits(bits: u32) -> Self {
        ResponseFlags(bits & ((1 << ResponseFlag::ALL.len()) - 1))
    }

    /// Writes the Envoy rendering without allocating.
    fn write_to(self, w: &mut impl fmt::Write) -> fmt::Result {
        if self.is_empty() {
            return w.write_str("-");
        }
        for (i, flag) in self.iter().enumerate() {
            if i > 0 {
                w.write_char(',')?;
            }
            w.write_str(flag.code())?;
        }
        Ok(())
    }
}

impl From<ResponseFlag> for ResponseFlags {
    fn from(flag: ResponseFlag) -> Self {
        ResponseFlags::of(flag)
    }
}

impl FromIterator<ResponseFlag> for ResponseFlags {
    fn from_iter<I: IntoIterator<Item = ResponseFlag>>(iter: I) -> Self {
        iter.into_iter().fold(ResponseFlags::NONE, ResponseFlags::with)
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

/// A code that is not one of [`ResponseFlag`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown response flag {0:?}")]
pub struct UnknownResponseFlag(pub String);

impl FromStr for ResponseFlag {
    type Err = UnknownResponseFlag;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ResponseFlag::ALL
            .iter()
            .copied()
            .find(|f| f.code() == s)
            .ok_or_else(|| UnknownResponseFlag(s.to_string()))
    }
}

impl FromStr for ResponseFlags {
    type Err = UnknownResponseFlag;

    /// Parses the rendering (`-`, `UF`, `UF,URX`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "-" {
            return Ok(ResponseFlags::NONE);
        }
        s.split(',').map(str::parse::<ResponseFlag>).collect()
    }
}

impl EncodeLabelValue for ResponseFlags {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        self.write_to(encoder)
    }
}

/// Flags shared by the two halves of a connection's copy loop, which may each add one (`DC`,
/// `UC`) without holding `&mut`.
#[derive(Debug, Default)]
pub(crate) struct AtomicResponseFlags(AtomicU32);

impl AtomicResponseFlags {
    pub(crate) fn insert(&self, flags: ResponseFlags) {
        self.0.fetch_or(flags.bits(), Ordering::Relaxed);
    }

    pub(crate) fn load(&self) -> ResponseFlags {
        ResponseFlags::from_bits(self.0.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_envoy() {
        assert_eq!(ResponseFlags::NONE.to_string(), "-");
        assert_eq!(ResponseFlags::of(ResponseFlag::UpstreamConnectionFailure).to_string(), "UF");
        // Order is Envoy's declaration order, not insertion order.
        let f = ResponseFlags::NONE
            .with(ResponseFlag::UpstreamRetryLimitExceeded)
            .with(ResponseFlag::UpstreamConnectionFailure);
        assert_eq!(f.to_string(), "UF,URX");
        let f: ResponseFlags =
            [ResponseFlag::AuthorizationPolicyDenied, ResponseFlag::DownstreamConnectionTermination]
                .into_iter()
                .collect();
        assert_eq!(f.to_string(), "DC,DENY");
    }

    #[test]
    fn codes_are_unique_and_fit_the_bitset() {
        assert!(ResponseFlag::ALL.len() <= 32);
        let mut codes: Vec<&str> = ResponseFlag::ALL.iter().map(|f| f.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ResponseFlag::ALL.len());
    }

    #[test]
    fn parses_its_rendering() {
        for flag in ResponseFlag::ALL {
            let set = ResponseFlags::of(*flag).with(ResponseFlag::NoRouteFound);
            assert_eq!(set.to_string().parse::<ResponseFlags>(), Ok(set));
        }
        assert_eq!("-".parse::<ResponseFlags>(), Ok(ResponseFlags::NONE));
        assert_eq!("UF,XX".parse::<ResponseFlags>(), Err(UnknownResponseFlag("XX".into())));
    }

    #[test]
    fn bits_round_trip_and_drop_unknown_bits() {
        let f = ResponseFlags::of(ResponseFlag::UpstreamOverflow).with(ResponseFlag::FaultInjected);
        assert_eq!(ResponseFlags::from_bits(f.bits()), f);
        assert_eq!(ResponseFlags::from_bits(u32::MAX).iter().count(), ResponseFlag::ALL.len());
    }
}
