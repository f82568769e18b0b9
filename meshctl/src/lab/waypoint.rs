//! Waypoints in the lab: for each Running pod made for a waypoint Gateway (see
//! `model::waypoint_docs`), its configuration file, the `waypoint` process in the pod's netns
//! and cgroup, and the wait for its readiness.

use std::net::{Ipv4Addr, SocketAddr};

use serde_json::json;

use super::LabError;
use super::model::LabPod;
use super::state;
use super::sys;
use super::sys::Launch;
use super::up::{CA_PORT, Lab, binary, pod_cgroup, write_yaml};

impl Lab<'_> {
    /// The waypoint in each Running pod made for a waypoint Gateway: its config (the node's
    /// bootstrap token proves the pod's placement to the CA), the process in the pod's netns and
    /// cgroup, then readiness on `<pod ip>:15021`. Returns how many.
    pub fn waypoints(&mut self, pods: &[LabPod]) -> Result<usize, LabError> {
        let wps: Vec<LabPod> = pods.iter().filter(|p| p.running && p.waypoint.is_some()).cloned().collect();
        if wps.is_empty() {
            return Ok(0);
        }
        let program = binary("waypoint")?;
        let l = self.layout.clone();
        let first = self.children.len();
        for pod in &wps {
            let step = format!("waypoint {}: config", pod.key());
            let file = l.config().join(format!("waypoint-{}.{}.yaml", pod.namespace, pod.name));
            let ip = pod.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let cfg = json!({
                "namespace": pod.namespace,
                "gateway": pod.waypoint,
                "pod": pod.name,
                "node": pod.node,
                "trustDomain": mesh_api::DEFAULT_TRUST_DOMAIN,
                "caAddress": format!("https://{}:{CA_PORT}", state::HUB_IP),
                "caRoot": l.ca().join("root-cert.pem"),
                "caServerName": "mesh-ca",
                "tokenFile": l.config().join(format!("{}.token", pod.node)),
                "model": [l.model()],
                "hboneAddr": format!("{ip}:15008"),
                "drainDeadline": "1s",
                "logFormat": "text",
            });
            let mut cfg = cfg;
            if let Some(port) = pod.waypoint_plaintext_port {
                // The pod address, not loopback: clients in other pods are the point.
                cfg["plaintextHttpAddr"] = json!(format!("{ip}:{port}"));
                cfg["plaintextHttpAllowRemote"] = json!(true);
            }
            if let Some(level) = &pod.waypoint_log_level {
                cfg["logLevel"] = json!(level);
            }
            write_yaml(&file, &cfg).map_err(|source| LabError::Io { step, path: file.clone(), source })?;
            let log = l.pod_log(&pod.namespace, &pod.name);
            let cgroup = pod_cgroup(&self.cg_root, pod);
            let ns = state::pod_netns(&pod.namespace, &pod.name);
            let what = format!("waypoint in pod {}", pod.key());
            let args = vec!["--config".to_string(), file.display().to_string()];
            let env = pod
                .waypoint_worker_threads
                .map(|n| ("TOKIO_WORKER_THREADS", n.to_string()))
                .into_iter()
                .collect();
            self.start(
                "waypoint",
                &pod.key(),
                Launch { what, program: &program, args, netns: &ns, cgroup: &cgroup, log: &log, env },
            )?;
        }
        for (i, pod) in wps.iter().enumerate() {
            let ns = state::pod_netns(&pod.namespace, &pod.name);
            let addr = SocketAddr::from((pod.ip.unwrap_or(Ipv4Addr::UNSPECIFIED), 15021));
            self.wait(first + i, || match sys::http_get_status(&ns, addr, "/healthz/ready") {
                Ok(200) => Ok(()),
                Ok(code) => Err(format!("GET http://{addr}/healthz/ready answered {code}")),
                Err(e) => Err(format!("GET http://{addr}/healthz/ready: {e}")),
            })?;
        }
        Ok(wps.len())
    }
}
