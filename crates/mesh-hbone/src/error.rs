//! The one error type of HBONE, each variant naming the peer it concerns.

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_api::SpiffeId;

/// An HBONE connection or stream failed. Messages name the peer address or identity.
#[derive(Debug, thiserror::Error)]
pub enum HboneError {
    /// The TCP connection to the peer could not be opened.
    #[error("connecting to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    /// The TLS handshake failed, including the peer's refusal of our certificate or ours of
    /// its identity.
    #[error("TLS with {addr}: {source}")]
    Tls { addr: SocketAddr, source: io::Error },
    /// A TLS configuration could not be built for the connection to `addr`.
    #[error("TLS configuration for {addr}: {source}")]
    TlsConfig { addr: SocketAddr, source: Arc<mesh_identity::TlsError> },
    /// The peer answered the CONNECT with a non-200 status.
    #[error("{addr} answered CONNECT with {status}")]
    Status { addr: SocketAddr, status: http::StatusCode },
    /// HTTP/2 failed on the connection to or from `addr`.
    #[error("HTTP/2 with {addr}: {source}")]
    H2 { addr: SocketAddr, source: h2::Error },
    /// The named stage (`connect`, `TLS handshake`, `CONNECT response`, ...) did not finish in
    /// time.
    #[error("{stage} with {addr} timed out")]
    Timeout { addr: SocketAddr, stage: &'static str },
    /// No certificate could be obtained for our identity `identity`.
    #[error("certificate for {identity}: {source}")]
    Certificate { identity: SpiffeId, source: Arc<dyn StdError + Send + Sync> },
    /// The HBONE listener failed.
    #[error("HBONE listener {addr}: {source}")]
    Listener { addr: SocketAddr, source: io::Error },
}

impl HboneError {
    /// A copy for the other callers that waited on the same dial; the variant and message
    /// are kept (io and h2 errors are rebuilt from their kind/reason and text).
    pub(crate) fn duplicate(&self) -> HboneError {
        fn io(e: &io::Error) -> io::Error {
            io::Error::new(e.kind(), e.to_string())
        }
        match self {
            HboneError::Connect { addr, source } => HboneError::Connect { addr: *addr, source: io(source) },
            HboneError::Tls { addr, source } => HboneError::Tls { addr: *addr, source: io(source) },
            HboneError::TlsConfig { addr, source } => {
                HboneError::TlsConfig { addr: *addr, source: source.clone() }
            }
            HboneError::Status { addr, status } => HboneError::Status { addr: *addr, status: *status },
            HboneError::H2 { addr, source } => {
                let source = match (source.reason(), source.get_io()) {
                    (Some(r), _) => h2::Error::from(r),
                    (None, Some(e)) => return HboneError::Connect { addr: *addr, source: io(e) },
                    (None, None) => h2::Error::from(h2::Reason::INTERNAL_ERROR),
                };
                HboneError::H2 { addr: *addr, source }
            }
            HboneError::Timeout { addr, stage } => HboneError::Timeout { addr: *addr, stage },
            HboneError::Certificate { identity, source } => {
                HboneError::Certificate { identity: identity.clone(), source: source.clone() }
            }
            HboneError::Listener { addr, source } => HboneError::Listener { addr: *addr, source: io(source) },
        }
    }

    /// Classifies an h2 error: an I/O error caused by a TLS alert or a TLS failure is a
    /// [`HboneError::Tls`] (in TLS 1.3 the server's refusal of our certificate arrives after
    /// our side of the handshake completed, so it surfaces on the first read).
    pub(crate) fn from_h2(addr: SocketAddr, e: h2::Error) -> HboneError {
        if e.get_io().is_some_and(is_tls_io) {
            let source = e.into_io().unwrap_or_else(|| io::Error::other("TLS failure"));
            return HboneError::Tls { addr, source };
        }
        HboneError::H2 { addr, source: e }
    }

    /// The peer address this error is about, when it has one.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            HboneError::Connect { addr, .. }
            | HboneError::Tls { addr, .. }
            | HboneError::TlsConfig { addr, .. }
            | HboneError::Status { addr, .. }
            | HboneError::H2 { addr, .. }
            | HboneError::Timeout { addr, .. }
            | HboneError::Listener { addr, .. } => Some(*addr),
            HboneError::Certificate { .. } => None,
        }
    }
}

/// Whether an I/O error carries a rustls error (handshake failure or received alert).
pub(crate) fn is_tls_io(e: &io::Error) -> bool {
    if e.get_ref().is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) {
        return true;
    }
    // h2 keeps only the text of I/O errors; these are rustls' messages for handshake
    // failures and alerts.
    let msg = e.to_string();
    e.kind() == io::ErrorKind::InvalidData
        && ["received fatal alert", "invalid peer certificate", "peer is incompatible", "peer misbehaved"]
            .iter()
            .any(|p| msg.starts_with(p))
}
