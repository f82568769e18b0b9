//! The benchmark harness (issue 7): scenarios over the lab's two-node topology, measured with
//! repetitions, written as JSON and as `BENCHMARKS.md` with SVG plots.
//!
//! - `results`: the JSON schema every other part reads or writes;
//! - `lab`: the topology (`data/lab.yaml`), its scenarios, its pods and mesh processes;
//! - `peers`: Envoy, nginx and haproxy as L7 hops with the waypoint's routes;
//! - `run`: the measurements of one run, repeated and interleaved;
//! - `load`: the fixed-rate, coordinated-omission-correct HTTP client (run inside lab pods);
//! - `saturation`: closed-loop maximum throughput with h2load (run inside lab pods);
//! - `hold`: many idle keep-alive connections held open (`bench hold`, run inside lab pods);
//! - `report`: Markdown, SVG plots and the regression check of `--compare`.

pub mod config_update;
pub mod hold;
pub mod lab;
pub mod load;
pub mod peers;
pub mod report;
pub mod results;
pub mod run;
pub mod saturation;
