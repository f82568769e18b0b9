//! The input language: typed models of the Kubernetes, Istio and Gateway API objects users
//! write, parsing of raw documents into them, per-object validation, and the names shared by
//! every process (diagnostics, SPIFFE identities).

pub mod diag;
pub mod spiffe;

pub use diag::{Diagnostic, ObjectRef, Origin, Severity};
pub use spiffe::{SpiffeError, SpiffeId, DEFAULT_TRUST_DOMAIN};
