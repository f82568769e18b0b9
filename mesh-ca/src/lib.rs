//! `mesh-ca`: issues short-lived SPIFFE certificates over Istio's CA API
//! (`istio.v1.auth.IstioCertificateService/CreateCertificate`). Nodes authenticate with a
//! bootstrap token or their node certificate, and may only obtain identities of pods the
//! model places on them. In Kubernetes mode ([`kubernetes`]) callers present projected
//! ServiceAccount tokens instead, verified by TokenReview, and the root lives in a Secret.

pub mod auth;
pub mod authority;
pub mod config;
pub mod kubernetes;
pub mod placement;
pub mod server;
pub mod service;
pub mod state;

pub use authority::{Authority, CheckedCsr, CsrError, KeyKind, check_csr};
pub use config::{CaConfig, ConfigError, KubeSettings};
pub use placement::{ModelPlacement, Placement, Refusal};
pub use server::{CaError, CaOptions, RunningCa, start, start_with};
pub use state::{ROOT_CERT_FILE, ROOT_KEY_FILE, RootCa};
