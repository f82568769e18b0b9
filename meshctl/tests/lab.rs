//! `meshctl lab` end to end (root; FAILS, never skips, without it): brings a real lab up from
//! a temporary YAML (`--capture none`), checks the network, hosts files, cgroups, exec, logs
//! and status, takes it down and checks nothing is left; then checks that invalid input
//! makes nothing, that a failing step rolls back, and that `lab down` cleans up after a
//! `kill -9` of `lab up`. One test function: the lab's names are machine-wide, and the
//! global lab lock (`/run/meshlab.lock`) is held throughout.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const YAML: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: echo, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: demo, labels: {app: client}}
spec:
  nodeName: node-a
  containers: [{name: c, image: echo, ports: [{containerPort: 9090}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: idle, namespace: demo}
spec:
  nodeName: node-b
  containers: [{name: c, image: sleep}]
"#;

/// A VirtualService with an invalid weight: the analyzer refuses it.
const INVALID: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: demo}
spec:
  hosts: [web]
  http:
  - route:
    - destination: {host: web}
      weight: -5
"#;

/// Added and removed with `lab apply` / `lab delete`.
const EXTRA: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: extra, namespace: demo}
spec:
  nodeName: node-b
  containers: [{name: c, image: echo, ports: [{containerPort: 7070}]}]
"#;

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_meshctl")).parent().expect("bin dir").to_path_buf()
}

struct Env {
    state: PathBuf,
    bins: PathBuf,
}

impl Env {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_meshctl"));
        c.args(args).env("MESHLAB_STATE_DIR", &self.state).env("MESHLAB_BIN_DIR", &self.bins);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap_or_else(|e| panic!("meshctl {args:?}: {e}"))
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "meshctl {args:?}: {}\n{}\n{}",
            o.status,
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Takes the lab down when the test ends, whatever happened.
struct Down<'a>(&'a Env);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["lab", "down"]);
    }
}

fn cgroup2() -> PathBuf {
    meshctl::lab::sys::cgroup2_root().expect("cgroup v2 mount")
}

fn lab_netns() -> Vec<String> {
    meshctl::lab::sys::netns_list("mlab-")
}

fn etc_netns() -> Vec<String> {
    std::fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("mlab-"))
        .collect()
}

/// Asserts that no trace of a lab is left on the machine.
fn assert_nothing_left(env: &Env, pids: &[i32], when: &str) {
    assert_eq!(lab_netns(), Vec::<String>::new(), "{when}: netns left");
    assert_eq!(etc_netns(), Vec::<String>::new(), "{when}: /etc/netns folders left");
    assert!(
        !cgroup2().join("meshlab").exists(),
        "{when}: cgroup {} left",
        cgroup2().join("meshlab").display()
    );
    assert!(!Path::new("/sys/fs/bpf/meshlab").exists(), "{when}: bpffs pins left");
    assert!(!env.state.exists(), "{when}: state folder {} left", env.state.display());
    for pid in pids {
        assert!(!meshctl::lab::sys::alive(*pid, 0), "{when}: process {pid} still running");
    }
}

fn pod(state: &Value, pred: impl Fn(&Value) -> bool) -> &Value {
    state["pods"].as_array().expect("pods").iter().find(|p| pred(p)).expect("pod in state")
}

/// A raw HTTP/1.1 GET over bash's /dev/tcp from inside a pod (no curl needed).
fn http_get(env: &Env, from: &str, ip: &str, port: u16, path: &str) -> Output {
    let script = format!(
        "exec 3<>/dev/tcp/{ip}/{port} && printf 'GET {path} HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n' >&3 && timeout 5 cat <&3"
    );
    env.run(&["lab", "exec", from, "--", "bash", "-c", &script])
}

#[test]
fn lab_up_exec_status_down_and_failures_leave_nothing() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the lab test needs root (netns, cgroups); CI runs as root");
    for b in ["mesh-ca", "ztunnel"] {
        assert!(
            bin_dir().join(b).is_file(),
            "{} missing: build it first (`cargo build -p {b}`; scripts/test builds all binaries)",
            bin_dir().join(b).display()
        );
    }
    let _lock = meshctl::lab::global_lock().expect("lab lock");
    let tmp = tempfile::tempdir().expect("tempdir");
    let env = Env { state: tmp.path().join("state"), bins: bin_dir() };
    let _down = Down(&env);
    // A crashed run of another test may have left a lab: clear it (sweeps by name).
    env.ok(&["lab", "down"]);
    let yaml = tmp.path().join("lab.yaml");
    std::fs::write(&yaml, YAML).expect("write yaml");
    let yaml_s = yaml.to_str().expect("utf-8");

    // Up.
    let t = Instant::now();
    let up = env.ok(&["lab", "up", "--capture", "none", yaml_s]);
    let up_time = t.elapsed();
    for step in 1..=8 {
        assert!(up.contains(&format!("[{step}/8]")), "progress line {step} missing:\n{up}");
    }
    let state: Value =
        serde_json::from_slice(&std::fs::read(env.state.join("lab.json")).expect("lab.json")).expect("json");
    assert_eq!(state["phase"], "up");
    assert_eq!(state["pods"].as_array().map(Vec::len), Some(4), "2 replicas + client + idle");
    let pids: Vec<i32> = state["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter(|r| r["kind"] == "process")
        .map(|r| r["pid"].as_i64().expect("pid") as i32)
        .collect();
    assert_eq!(pids.len(), 1 + 2 + 3, "mesh-ca, 2 ztunnels, 3 echo apps (idle has no ports): {pids:?}");
    assert!(pids.iter().all(|p| meshctl::lab::sys::alive(*p, 0)), "every process runs after lab up");

    // Netns: hub, both nodes, every pod.
    let netns = lab_netns();
    for n in ["mlab-hub", "mlab-n-node-a", "mlab-n-node-b", "mlab-p-demo.client", "mlab-p-demo.idle"] {
        assert!(netns.contains(&n.to_string()), "{n} missing from {netns:?}");
    }
    assert_eq!(netns.iter().filter(|n| n.starts_with("mlab-p-demo.web-")).count(), 2, "{netns:?}");

    // Cross-node pod to pod by IP, answered by the echo app of the pod on the other node.
    let remote = pod(&state, |p| p["owner"] == "Deployment/demo/web" && p["node"] == "node-b");
    let remote_ip = remote["ip"].as_str().expect("ip");
    let remote_name = remote["name"].as_str().expect("name");
    let o = http_get(&env, "demo/client", remote_ip, 8080, "/lab-test?from=client");
    let answer = text(&o.stdout);
    assert!(o.status.success(), "client -> {remote_ip}:8080: {}\n{answer}", text(&o.stderr));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(&format!("\"pod\":\"{remote_name}\"")), "{answer}");
    assert!(answer.contains("\"path\":\"/lab-test?from=client\""), "{answer}");
    let client_ip = pod(&state, |p| p["name"] == "client")["ip"].as_str().expect("ip").to_string();
    assert!(
        answer.contains(&format!("\"peer\":\"{client_ip}:")),
        "the app sees the client pod's IP: {answer}"
    );
    // And back, from the pod without an app on node-b to the client on node-a.
    let o = http_get(&env, "idle", &client_ip, 9090, "/back");
    assert!(text(&o.stdout).contains("\"pod\":\"client\""), "{}{}", text(&o.stdout), text(&o.stderr));
    // The app's log shows the request.
    let logs = env.ok(&["lab", "logs", &format!("demo/{remote_name}")]);
    assert!(logs.contains("/lab-test?from=client"), "{logs}");

    // Hosts file: every form of the Service's name.
    for name in ["web", "web.demo", "web.demo.svc", "web.demo.svc.cluster.local", "client"] {
        let out = env.ok(&["lab", "exec", "client", "--", "getent", "hosts", name]);
        let want = if name == "client" { client_ip.as_str() } else { "10.96.0.10" };
        assert!(out.starts_with(want), "{name} resolves to {out:?}, want {want}");
    }
    // exec: the pod's cgroup, the command's exit code.
    let cg = env.ok(&["lab", "exec", "demo/client", "--", "cat", "/proc/self/cgroup"]);
    assert!(cg.contains("/meshlab/node-a/pods/demo.client"), "{cg}");
    assert_eq!(env.run(&["lab", "exec", "client", "--", "sh", "-c", "exit 7"]).status.code(), Some(7));
    let unknown = env.run(&["lab", "exec", "nope", "--", "true"]);
    assert!(!unknown.status.success() && text(&unknown.stderr).contains("no such pod"), "{unknown:?}");

    // Status lists everything.
    let status = env.ok(&["lab", "status"]);
    for n in ["node-a", "node-b"] {
        assert!(status.lines().any(|l| l.contains(n) && l.contains("ready")), "{n} not ready in:\n{status}");
    }
    for p in state["pods"].as_array().expect("pods") {
        let key = format!("demo/{}", p["name"].as_str().expect("name"));
        assert!(status.contains(&key), "{key} missing in:\n{status}");
    }
    assert_eq!(status.matches(" running on ").count(), 3, "{status}");
    assert!(status.contains("mesh-ca: pid") && status.contains("running"), "{status}");

    // apply: a new Pod gets a netns and its app, reachable from the other node; delete
    // removes them again.
    let extra = tmp.path().join("extra.yaml");
    std::fs::write(&extra, EXTRA).expect("write extra");
    let extra_s = extra.to_str().expect("utf-8");
    let applied = env.ok(&["lab", "apply", "-f", extra_s]);
    assert!(applied.contains("1 started"), "{applied}");
    assert!(lab_netns().contains(&"mlab-p-demo.extra".to_string()));
    let st: Value =
        serde_json::from_slice(&std::fs::read(env.state.join("lab.json")).expect("lab.json")).expect("json");
    let extra_ip = pod(&st, |p| p["name"] == "extra")["ip"].as_str().expect("ip").to_string();
    let o = http_get(&env, "client", &extra_ip, 7070, "/applied");
    assert!(text(&o.stdout).contains("\"pod\":\"extra\""), "{}{}", text(&o.stdout), text(&o.stderr));
    let model = std::fs::read_to_string(env.state.join("model/pods.yaml")).expect("pods.yaml");
    assert!(model.contains(&extra_ip), "the proxies' model has the new pod:\n{model}");
    let deleted = env.ok(&["lab", "delete", "-f", extra_s]);
    assert!(deleted.contains("1 stopped"), "{deleted}");
    assert!(!lab_netns().contains(&"mlab-p-demo.extra".to_string()));
    assert!(
        !std::fs::read_to_string(env.state.join("model/pods.yaml")).expect("pods.yaml").contains(&extra_ip)
    );

    // A second up is refused while the lab is up.
    let again = env.run(&["lab", "up", "--capture", "none", yaml_s]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("already up"), "{}", text(&again.stderr));

    // Down removes everything.
    let t = Instant::now();
    let down = env.ok(&["lab", "down"]);
    let down_time = t.elapsed();
    assert!(down.contains("removed 6 processes") && down.contains("removed 7 netns"), "{down}");
    assert_nothing_left(&env, &pids, "after lab down");
    assert!(env.ok(&["lab", "down"]).contains("nothing to remove"), "down is idempotent");
    println!("lab up {up_time:?}, lab down {down_time:?} (2 nodes, 4 pods, 6 processes)");

    // Invalid input: the analyzer's diagnostics, exit 1, nothing made.
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, format!("{YAML}---{INVALID}")).expect("write");
    let o = env.run(&["lab", "up", "--capture", "none", bad.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("VirtualService demo/bad"), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("nothing was created"), "{}", text(&o.stderr));
    assert_nothing_left(&env, &[], "after invalid input");

    // A failing step (ztunnel exits at once) rolls back everything, naming what failed.
    let fake = tmp.path().join("bins-failing");
    fake_bins(&fake, "#!/bin/sh\necho 'ztunnel: cannot start: boom' >&2\nexit 3\n");
    let failing = Env { state: env.state.clone(), bins: fake };
    let o = failing.run(&["lab", "up", "--capture", "none", "--timeout", "5s", yaml_s]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("ztunnel on node-a") && err.contains("boom"), "{err}");
    assert!(text(&o.stdout).contains("rolling back"), "{}", text(&o.stdout));
    assert_nothing_left(&env, &[], "after a rolled-back up");

    // kill -9 of `lab up` while it waits for a ztunnel that never gets ready: `lab down`
    // still finds and removes everything (the hanging ztunnel included).
    let hang = tmp.path().join("bins-hanging");
    fake_bins(&hang, "#!/bin/sh\nexec sleep 600\n");
    let hanging = Env { state: env.state.clone(), bins: hang };
    let mut child = hanging
        .cmd(&["lab", "up", "--capture", "none", "--timeout", "60s", yaml_s])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lab up");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let line = lines.next().expect("lab up output").expect("line");
        if line.starts_with("[5/8]") || Instant::now() > end {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().expect("kill -9 lab up");
    let _ = child.wait();
    assert!(!lab_netns().is_empty(), "the killed lab up left its netns (to be cleaned)");
    let hanging_pids = meshctl::lab::sys::cgroup_pids(&cgroup2().join("meshlab"));
    assert!(hanging_pids.len() >= 3, "mesh-ca and two fake ztunnels run: {hanging_pids:?}");
    let down = env.ok(&["lab", "down"]);
    assert!(down.contains("removed 7 netns"), "{down}");
    assert_nothing_left(&env, &hanging_pids, "after lab down of a killed lab up");
}

/// A bin folder with the real meshctl and mesh-ca and a fake `ztunnel` script.
fn fake_bins(dir: &Path, ztunnel: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for b in ["meshctl", "mesh-ca"] {
        std::os::unix::fs::symlink(bin_dir().join(b), dir.join(b)).expect("symlink");
    }
    let z = dir.join("ztunnel");
    std::fs::write(&z, ztunnel).expect("write");
    std::fs::set_permissions(&z, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}
