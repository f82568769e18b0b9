//! eBPF capture loader for the mesh: loads the C programs built from `bpf/` (connect4/6,
//! sockops, getsockopt, getpeername4/6, sk_lookup, tc ingress fallback) with aya, pins them
//! under bpffs and registers captured pods. See README.md for the programs, maps and pins.

mod bpffs;
mod capture;
mod error;
mod netns;
mod programs;
mod sys;
mod types;

pub use capture::{Capture, CaptureOptions, Inbound};
pub use error::EbpfError;
pub use netns::netns_cookie;
pub use types::{
    ListenerKind, PORT_HBONE, PORT_INBOUND_PLAINTEXT, PORT_OUTBOUND, PodConfig, PodFlags, Reason,
};
