//! ztunnel's typed configuration: a YAML file (`--config`) overlaid by command-line flags,
//! with a default for every field. Shown (as JSON) in the admin's `/config_dump`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_telemetry::LogFormat;
use serde::{Deserialize, Serialize};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {field}: {reason}")]
    Parse { path: String, field: String, reason: String },
    #[error("invalid configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// Everything ztunnel needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Config {
    /// Name of the node this ztunnel serves (text, as in a Pod's `spec.nodeName`).
    pub node: String,
    /// SPIFFE trust domain (text).
    pub trust_domain: String,
    /// Cluster name reported in telemetry (text).
    pub cluster_id: String,
    /// CA address (URL, `https://host:port`).
    pub ca_address: String,
    /// PEM file of the root the CA's serving certificate chains to (path).
    pub ca_root: PathBuf,
    /// DNS name the CA's serving certificate must carry (text).
    pub ca_server_name: String,
    /// File holding this node's bootstrap token for the CA (path).
    pub token_file: PathBuf,
    /// Files or folders of mesh YAML, watched and hot-reloaded (paths; with `source.kind: files`).
    pub model: Vec<PathBuf>,
    /// Where the model comes from: the `model` files or the Kubernetes API server.
    pub source: mesh_kube::SourceConfig,
    /// Outbound listener for captured traffic (socket address; default 127.0.0.1:15001).
    pub outbound_addr: SocketAddr,
    /// SOCKS5 outbound listener (socket address; default 127.0.0.1:15080).
    pub socks5_addr: SocketAddr,
    /// Inbound HBONE port, bound on each local pod's IP (port; default 15008).
    pub hbone_port: u16,
    /// Inbound plaintext port, bound on each local pod's IP (port; default 15006; 0 = none).
    pub plaintext_port: u16,
    /// Pod port that plaintext connections reaching the plaintext port without capture (no
    /// original destination) are delivered to (port; 0 = refuse them). For loopback tests.
    pub plaintext_fallback_port: u16,
    /// Admin server (socket address; default 127.0.0.1:15000; loopback only unless forced).
    pub admin_addr: SocketAddr,
    /// Allow the admin server on a non-loopback address (bool).
    pub admin_allow_remote: bool,
    /// Prometheus `/metrics` server (socket address; default 0.0.0.0:15020).
    pub metrics_addr: SocketAddr,
    /// Readiness `/healthz/ready` server (socket address; default 0.0.0.0:15021).
    pub readiness_addr: SocketAddr,
    /// How long open connections may run after SIGTERM before they are closed (duration).
    #[serde(with = "mesh_api::duration::config")]
    pub drain_deadline: Duration,
    /// Timeout of a TCP connect to an upstream (duration).
    #[serde(with = "mesh_api::duration::config")]
    pub connect_timeout: Duration,
    /// Bind outbound sockets to the source pod's IP (bool; loopback mode: pod IPs are local).
    pub bind_source_ip: bool,
    /// Log line format (`text` or `json`).
    pub log_format: LogFormat,
    /// Initial log filter (EnvFilter directives, e.g. `info,access=info`).
    pub log_level: String,
    /// How local pods' traffic reaches this proxy.
    pub capture: CaptureConfig,
}

/// Traffic capture: how local pods' connections reach this proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// `none`: listeners on pod IPs in this netns (loopback mode, SOCKS5, iptables);
    /// `ebpf`: listeners inside each pod's netns, eBPF redirection (enum).
    pub mode: CaptureMode,
    /// Where a pod's network namespace is (path template with `{namespace}`, `{name}`, `{uid}`;
    /// `proc:` to find it from the pod UID in `/proc/*/cgroup`; or `kube:[<cgroup v2 root>]` to
    /// find it from the pod's cgroup under the systemd or cgroupfs layout, for Kubernetes).
    pub netns_path: String,
    /// cgroup v2 folder that is the parent of every captured pod's cgroup (path).
    pub pods_cgroup: PathBuf,
    /// bpffs folder for this proxy's pinned programs, maps and links (path).
    pub bpf_pin_dir: PathBuf,
    /// SO_MARK set on this proxy's sockets, skipped by the capture programs (integer).
    pub mark: u32,
    /// procfs whose `sys/net` per-pod sysctls are written through (path; the host's writable
    /// `/host/proc` in a container, where `/proc/sys` is read-only).
    pub proc_path: PathBuf,
}

/// Capture modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// No capture: pod listeners are bound on pod IPs in the proxy's own netns.
    #[default]
    None,
    /// In-pod eBPF capture.
    Ebpf,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            mode: CaptureMode::None,
            netns_path: "/var/run/netns/{name}".to_string(),
            pods_cgroup: PathBuf::new(),
            bpf_pin_dir: PathBuf::from("/sys/fs/bpf/ztunnel"),
            mark: 1337,
            proc_path: PathBuf::from("/proc"),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        Config {
            node: String::new(),
            trust_domain: mesh_api::DEFAULT_TRUST_DOMAIN.to_string(),
            cluster_id: "Kubernetes".to_string(),
            ca_address: String::new(),
            ca_root: PathBuf::new(),
            ca_server_name: "mesh-ca".to_string(),
            token_file: PathBuf::new(),
            model: Vec::new(),
            source: mesh_kube::SourceConfig::default(),
            outbound_addr: SocketAddr::new(lo, 15001),
            socks5_addr: SocketAddr::new(lo, 15080),
            hbone_port: 15008,
            plaintext_port: 15006,
            plaintext_fallback_port: 0,
            admin_addr: SocketAddr::new(lo, 15000),
            admin_allow_remote: false,
            metrics_addr: SocketAddr::new(any, 15020),
            readiness_addr: SocketAddr::new(any, 15021),
            drain_deadline: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            bind_source_ip: true,
            log_format: LogFormat::Text,
            log_level: "info".to_string(),
            capture: CaptureConfig::default(),
        }
    }
}

impl Config {
    /// Reads a YAML file; relative paths in it are taken from the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        let mut c = Self::parse(&text, &shown)?;
        if let Some(base) = path.parent() {
            c.resolve_paths(base);
        }
        Ok(c)
    }

    /// Parses YAML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            field: e.path().to_string(),
            reason: e.inner().to_string(),
        })
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.ca_root);
        fix(&mut self.token_file);
        fix(&mut self.capture.pods_cgroup);
        fix(&mut self.capture.bpf_pin_dir);
        self.model.iter_mut().for_each(fix);
        self.source.resolve_paths(base);
    }

    /// Checks what must be set; every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        if self.node.is_empty() {
            errs.push("node: required (--node)".to_string());
        }
        if self.ca_address.is_empty() {
            errs.push("caAddress: required (--ca-address)".to_string());
        }
        if self.ca_root.as_os_str().is_empty() {
            errs.push("caRoot: required (--ca-root)".to_string());
        }
        if self.token_file.as_os_str().is_empty() {
            errs.push("tokenFile: required (--token-file)".to_string());
        }
        if self.model.is_empty() && self.source.kind == mesh_kube::SourceKind::Files {
            errs.push("model: at least one path required (--model)".to_string());
        }
        if !self.admin_addr.ip().is_loopback() && !self.admin_allow_remote {
            errs.push(format!(
                "adminAddr: {} is not a loopback address (set adminAllowRemote to force)",
                self.admin_addr
            ));
        }
        if self.capture.mode == CaptureMode::Ebpf {
            if self.capture.pods_cgroup.as_os_str().is_empty() {
                errs.push("capture.podsCgroup: required in ebpf mode".to_string());
            }
            if self.capture.bpf_pin_dir.as_os_str().is_empty() {
                errs.push("capture.bpfPinDir: required in ebpf mode".to_string());
            }
            let p = &self.capture.netns_path;
            if p != "proc:" && !p.starts_with("kube:") && !p.contains("{name}") && !p.contains("{uid}") {
                errs.push(
                    "capture.netnsPath: must contain {name} or {uid}, or be `proc:` or `kube:`".to_string(),
                );
            }
            if self.capture.mark == 0 {
                errs.push("capture.mark: must not be 0".to_string());
            }
            if self.hbone_port != 15008 || self.plaintext_port != 15006 {
                errs.push(
                    "hbonePort/plaintextPort: must be 15008/15006 in ebpf mode (the programs' ports)".into(),
                );
            }
        }
        if self.hbone_port == 0 {
            errs.push("hbonePort: must not be 0".to_string());
        }
        if errs.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(errs)) }
    }

    /// Ports this proxy owns on pod addresses: inbound HBONE to them is refused.
    pub fn own_ports(&self) -> Vec<u16> {
        let mut v = vec![
            self.outbound_addr.port(),
            self.socks5_addr.port(),
            self.hbone_port,
            self.admin_addr.port(),
            self.metrics_addr.port(),
            self.readiness_addr.port(),
            15001,
            15006,
            15008,
            15080,
        ];
        if self.plaintext_port != 0 {
            v.push(self.plaintext_port);
        }
        v.retain(|p| *p != 0);
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Parses a duration flag: `250ms`, `5s`, `2m`, `1h`, `7d`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, mesh_api::duration::DurationError> {
    mesh_api::duration::parse_config(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_yaml() {
        let c = Config::parse(
            "node: node-a\ncaAddress: https://127.0.0.1:1\ncaRoot: root.pem\ntokenFile: t\nmodel: [m]\n\
             drainDeadline: 250ms\nhbonePort: 25008\n",
            "test.yaml",
        )
        .unwrap();
        assert_eq!(c.node, "node-a");
        assert_eq!(c.drain_deadline, Duration::from_millis(250));
        assert_eq!(c.hbone_port, 25008);
        assert_eq!(c.socks5_addr, "127.0.0.1:15080".parse().unwrap());
        c.validate().unwrap();
        assert!(c.own_ports().contains(&25008));
        assert!(c.own_ports().contains(&15001));
    }

    #[test]
    fn errors_name_field_and_collect_all() {
        let e = Config::parse("hbonePort: many\n", "x.yaml").unwrap_err().to_string();
        assert!(e.starts_with("x.yaml: hbonePort:"), "{e}");
        let e = Config::parse("bogus: 1\n", "x.yaml").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let c = Config { admin_addr: "10.0.0.1:15000".parse().unwrap(), ..Config::default() };
        let e = c.validate().unwrap_err().to_string();
        for needle in ["node:", "caAddress:", "caRoot:", "tokenFile:", "model:", "adminAddr:"] {
            assert!(e.contains(needle), "{needle} missing in {e}");
        }
    }

    #[test]
    fn kube_source_needs_no_model_paths() {
        let c = Config::parse(
            "node: n\ncaAddress: https://ca\ncaRoot: r\ntokenFile: t\nsource: {kind: kube, batchWindow: 50ms}\n",
            "z.yaml",
        )
        .unwrap();
        assert_eq!(c.source.kind, mesh_kube::SourceKind::Kube);
        assert_eq!(c.source.batch_window, Duration::from_millis(50));
        c.validate().unwrap();
        // Pod discovery from cgroups.
        let mut c = c;
        c.capture.mode = CaptureMode::Ebpf;
        c.capture.pods_cgroup = "/sys/fs/cgroup/kubepods.slice".into();
        c.capture.netns_path = "kube:".into();
        c.validate().unwrap();
        c.capture.netns_path = "bogus".into();
        assert!(c.validate().unwrap_err().to_string().contains("capture.netnsPath"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("5y").is_err());
    }
}
