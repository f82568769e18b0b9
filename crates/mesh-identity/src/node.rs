//! Node identities (`spiffe://<td>/node/<node-name>`): what a node's ztunnel presents to the CA
//! in local/lab mode. Deliberately not a [`SpiffeId`]: a node identity is never a workload, and
//! the HBONE verifiers refuse it as a peer.

use std::fmt;
use std::str::FromStr;

use mesh_api::SpiffeId;

/// The identity of a node (its ztunnel) towards the CA.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    trust_domain: String,
    node: String,
}

/// Why a string is not a node identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    #[error("missing the spiffe:// scheme")]
    Scheme,
    #[error("empty or invalid trust domain {0:?}")]
    TrustDomain(String),
    #[error("path {0:?} is not of the form /node/<node-name>")]
    Path(String),
}

fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
}

/// Kubernetes node names are DNS subdomains; we also allow `_` for lab names.
fn valid_node(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl NodeId {
    /// Builds a node identity; the parts are checked like a parsed one.
    pub fn new(trust_domain: &str, node: &str) -> Result<Self, NodeIdError> {
        format!("spiffe://{trust_domain}/node/{node}").parse()
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The node name, as in a Pod's `spec.nodeName`.
    pub fn node(&self) -> &str {
        &self.node
    }
}

impl FromStr for NodeId {
    type Err = NodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("spiffe://").ok_or(NodeIdError::Scheme)?;
        let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !valid_trust_domain(td) {
            return Err(NodeIdError::TrustDomain(td.to_string()));
        }
        match path.split_once('/') {
            Some(("node", node)) if valid_node(node) => {
                Ok(NodeId { trust_domain: td.to_string(), node: node.to_string() })
            }
            _ => Err(NodeIdError::Path(format!("/{path}"))),
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/node/{}", self.trust_domain, self.node)
    }
}

/// Any identity a certificate of ours may carry: a workload or a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    Workload(SpiffeId),
    Node(NodeId),
}

impl Identity {
    /// Parses a URI SAN: a workload SPIFFE ID or a node identity.
    pub fn parse_uri(uri: &str) -> Result<Self, crate::IdentityError> {
        if let Ok(id) = uri.parse::<SpiffeId>() {
            return Ok(Identity::Workload(id));
        }
        match uri.parse::<NodeId>() {
            Ok(n) => Ok(Identity::Node(n)),
            Err(e) => Err(crate::IdentityError::Uri {
                uri: uri.to_string(),
                reason: format!("neither /ns/<ns>/sa/<sa> nor /node/<name>: {e}"),
            }),
        }
    }

    pub fn trust_domain(&self) -> &str {
        match self {
            Identity::Workload(w) => w.trust_domain(),
            Identity::Node(n) => n.trust_domain(),
        }
    }

    pub fn as_workload(&self) -> Option<&SpiffeId> {
        match self {
            Identity::Workload(w) => Some(w),
            Identity::Node(_) => None,
        }
    }
}

impl From<SpiffeId> for Identity {
    fn from(id: SpiffeId) -> Self {
        Identity::Workload(id)
    }
}

impl From<NodeId> for Identity {
    fn from(id: NodeId) -> Self {
        Identity::Node(id)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Workload(w) => w.fmt(f),
            Identity::Node(n) => n.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids() {
        let n: NodeId = "spiffe://cluster.local/node/node-a".parse().unwrap();
        assert_eq!(n.node(), "node-a");
        assert_eq!(n.to_string(), "spiffe://cluster.local/node/node-a");
        assert!(matches!("spiffe://td/node/".parse::<NodeId>(), Err(NodeIdError::Path(_))));
        assert!(matches!("spiffe://td/node/a/b".parse::<NodeId>(), Err(NodeIdError::Path(_))));
        assert!(matches!("spiffe://td/ns/a/sa/b".parse::<NodeId>(), Err(NodeIdError::Path(_))));
        // A node identity is never a workload one.
        assert!("spiffe://td/node/a".parse::<SpiffeId>().is_err());
        assert!(matches!(Identity::parse_uri("spiffe://td/node/a"), Ok(Identity::Node(_))));
        assert!(matches!(Identity::parse_uri("spiffe://td/ns/a/sa/b"), Ok(Identity::Workload(_))));
        assert!(Identity::parse_uri("spiffe://td/other").is_err());
    }
}
