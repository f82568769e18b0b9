//! `meshctl`, the mesh's command-line tool: `analyze` validates Kubernetes/Istio/Gateway API
//! YAML as the proxies would read it. The command-line surface lives in [`cli`]; the
//! reusable analysis (also for `meshctl lab` and the proxies) in [`analyze`].

pub mod analyze;
pub mod cli;

pub use cli::{Cli, run};
