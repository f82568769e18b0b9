//! SPIFFE identities of workloads: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! Shared by the model (a workload's identity), the CA (what a CSR may ask for), the TLS
//! verifiers (what a peer presented) and authorization policies (`principals`, written without
//! the `spiffe://` scheme, as Istio does).

use std::fmt;
use std::str::FromStr;

/// The trust domain used when none is configured, as in Istio.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// A workload identity. Only the `ns/<ns>/sa/<sa>` form is a workload identity; other SPIFFE
/// paths are refused where a workload is expected.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string is not a workload SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    #[error("missing the spiffe:// scheme")]
    Scheme,
    #[error("empty or invalid trust domain {0:?}")]
    TrustDomain(String),
    #[error("path {0:?} is not of the form /ns/<namespace>/sa/<service-account>")]
    Path(String),
}

impl SpiffeId {
    /// Builds an identity; the parts are checked like a parsed one.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, SpiffeError> {
        format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The form AuthorizationPolicy `principals` use: `<td>/ns/<ns>/sa/<sa>`.
    pub fn principal(&self) -> String {
        format!("{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("spiffe://").ok_or(SpiffeError::Scheme)?;
        let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !valid_trust_domain(td) {
            return Err(SpiffeError::TrustDomain(td.to_string()));
        }
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", ns, "sa", sa] if valid_segment(ns) && valid_segment(sa) => Ok(SpiffeId {
                trust_domain: td.to_string(),
                namespace: (*ns).to_string(),
                service_account: (*sa).to_string(),
            }),
            _ => Err(SpiffeError::Path(format!("/{path}"))),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let id: SpiffeId = "spiffe://cluster.local/ns/bookinfo/sa/reviews".parse().unwrap();
        assert_eq!(id.namespace(), "bookinfo");
        assert_eq!(id.service_account(), "reviews");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/bookinfo/sa/reviews");
        assert_eq!(id.principal(), "cluster.local/ns/bookinfo/sa/reviews");
    }

    #[test]
    fn rejects() {
        assert_eq!("http://x/ns/a/sa/b".parse::<SpiffeId>(), Err(SpiffeError::Scheme));
        assert!(matches!("spiffe://Bad/ns/a/sa/b".parse::<SpiffeId>(), Err(SpiffeError::TrustDomain(_))));
        assert!(matches!("spiffe://td/ns/a/sa/b/c".parse::<SpiffeId>(), Err(SpiffeError::Path(_))));
        assert!(matches!("spiffe://td/ns/../sa/b".parse::<SpiffeId>(), Err(SpiffeError::Path(_))));
        assert!(matches!("spiffe://td/node/n1".parse::<SpiffeId>(), Err(SpiffeError::Path(_))));
    }
}
