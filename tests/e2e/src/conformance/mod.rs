//! The waypoint conformance suites (`tests/conformance/*.yaml`): their format, a client that
//! sends a case's requests, and the checks, shared by the in-process runner and the lab runner.

pub mod base;
pub mod check;
pub mod client;
pub mod format;

pub use base::{BACKENDS, BackendPod, Placement, base_model, demo_vips};
pub use check::{Seen, Target, flags_from_metrics, run_case};
pub use client::{Answer, Sender, WireAnswer, build, send_case};
pub use format::{Case, Expect, Req, Suite, load_suite, suite_files, suites_dir};
