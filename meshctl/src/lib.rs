//! `meshctl`, the mesh's command-line tool: `analyze` validates Kubernetes/Istio/Gateway API
//! YAML as the proxies would read it; `cert` asks a CA for a certificate as a node would. The command-line surface lives in [`cli`]; the
//! reusable analysis (also for `meshctl lab` and the proxies) in [`analyze`].

pub mod analyze;
pub mod cert;
pub mod cli;
pub mod echo;
pub mod install;
pub mod lab;
pub mod waypoint_cmd;

pub use cli::{Cli, run};
