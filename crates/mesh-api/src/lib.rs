//! The input language: typed models of the Kubernetes, Istio and Gateway API objects users
//! write, parsing of raw documents into them, per-object validation, and the names shared by
//! every process (diagnostics, SPIFFE identities).
//!
//! Entry points: [`split_documents`] turns a file's text into indexed documents and
//! [`parse_object`] turns one document into a validated [`Object`] (or says why not, or that
//! it is not ours). Models live in [`k8s`] (re-exported k8s-openapi types), [`istio`] and
//! [`gateway`]; [`validate`] holds the per-object rules; cross-object checks belong to the
//! model crate.

pub mod common;
pub mod diag;
pub mod duration;
pub mod gateway;
pub mod istio;
pub mod k8s;
pub mod object;
pub mod parse;
pub mod spiffe;
pub mod validate;

pub use common::{
    Destination, HeaderOperations, Headers, LabelsSelector, Percent, PolicyTargetReference, PortSelector,
    Regex, StringMatch, WorkloadSelector,
};
pub use diag::{Diagnostic, ObjectRef, Origin, Severity};
pub use duration::{Duration, DurationError};
pub use object::{Kind, Object, ObjectKey, Resource};
pub use parse::{DocError, Document, Parsed, parse_object, split_documents};
pub use spiffe::{DEFAULT_TRUST_DOMAIN, SpiffeError, SpiffeId};
pub use validate::validate;
