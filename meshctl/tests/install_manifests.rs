//! The checked-in manifests match the generator, the CLI prints what the library renders, and
//! the config files `install` and `waypoint apply` render are accepted by the components' own
//! config types (parse + validate), so a renamed or new required field fails here.

use std::process::Command;

use meshctl::install::{CA_TOKEN_AUDIENCE, InstallOptions, Object, render, to_yaml};

const REGENERATE: &str =
    "cargo run -p meshctl -- install --dry-run -o yaml --skip-crds > deploy/install.yaml";

fn checked_in() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/install.yaml");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}; generate it with `{REGENERATE}`"))
}

#[test]
fn deploy_install_yaml_matches_the_generator() {
    let want = to_yaml(&render(&InstallOptions { crds: false, ..Default::default() }).unwrap()).unwrap();
    let have = checked_in();
    if have != want {
        let line = have.lines().zip(want.lines()).position(|(a, b)| a != b).map(|i| i + 1);
        panic!(
            "deploy/install.yaml drifted from `meshctl install --dry-run` (first difference at line {}); \
             regenerate it with `{REGENERATE}` and review the diff",
            line.map_or_else(|| "end of file".to_string(), |l| l.to_string())
        );
    }
}

#[test]
fn cli_dry_run_prints_the_checked_in_manifests_without_a_cluster() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["install", "--dry-run", "-o", "yaml", "--skip-crds", "--kubeconfig", "/nonexistent"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), checked_in(), "regenerate with `{REGENERATE}`");

    let json = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["install", "--dry-run", "-o", "json"])
        .output()
        .unwrap();
    assert!(json.status.success());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let items = v["items"].as_array().unwrap();
    assert!(items.iter().any(|i| i["kind"] == "CustomResourceDefinition"), "CRDs are in by default");

    let bad = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["install", "--dry-run", "--mesh-namespace", "Bad_NS", "--tag", "x y"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("namespace: \"Bad_NS\"") && err.contains("tag: \"x y\""), "{err}");
}

#[test]
fn command_line_is_consistent() {
    use clap::CommandFactory;
    meshctl::Cli::command().debug_assert();
}

#[test]
fn waypoint_objects() {
    let opts = InstallOptions::default();
    let objects = meshctl::waypoint_cmd::render(&opts, "bookinfo", "waypoint", true).unwrap();
    let kinds: Vec<String> = objects.iter().map(|o| o.display()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount bookinfo/waypoint",
            "ClusterRoleBinding mesh-waypoint-bookinfo-waypoint",
            "ConfigMap bookinfo/waypoint-config",
            "Service bookinfo/waypoint",
            "Deployment bookinfo/waypoint",
            "Gateway bookinfo/waypoint",
        ]
    );
    for o in &objects {
        let l = o.labels();
        assert_eq!(
            l.get("app.kubernetes.io/component").map(String::as_str),
            Some("waypoint"),
            "{}",
            o.display()
        );
        assert_eq!(
            l.get("app.kubernetes.io/managed-by").map(String::as_str),
            Some("meshctl"),
            "{}",
            o.display()
        );
    }
    let gw = &objects[5].body;
    assert_eq!(gw["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(gw["spec"]["gatewayClassName"], "istio-waypoint");
    assert_eq!(gw["spec"]["listeners"][0]["port"], 15008);
    assert_eq!(gw["spec"]["listeners"][0]["protocol"], "HBONE");

    let pod = &objects[4].body["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"]["istio.io/dataplane-mode"], "none",
        "the waypoint is never captured"
    );
    assert_eq!(pod["spec"]["serviceAccountName"], "waypoint");
    let sc = &pod["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert!(sc["capabilities"].get("add").is_none());
    assert_eq!(objects[3].body["spec"]["ports"][0]["port"], 15008);
    assert_eq!(objects[1].body["roleRef"]["name"], "mesh-model-reader");
    assert_eq!(objects[1].body["subjects"][0]["namespace"], "bookinfo");
    let cfg: serde_json::Value =
        serde_yaml::from_str(objects[2].body["data"]["waypoint.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(cfg["namespace"], "bookinfo");
    assert_eq!(cfg["gateway"], "waypoint");

    let without = meshctl::waypoint_cmd::render(&opts, "bookinfo", "w2", false).unwrap();
    assert!(!without.iter().any(|o| o.is("Gateway")));
    let err = meshctl::waypoint_cmd::render(&opts, "Book_Info", "", true).unwrap_err().to_string();
    assert!(err.contains("namespace: \"Book_Info\"") && err.contains("name: \"\""), "{err}");
}

fn file<'a>(objects: &'a [Object], config_map: &str, key: &str) -> &'a str {
    let cm = objects.iter().find(|o| o.is("ConfigMap") && o.name == config_map).expect("config map rendered");
    cm.body["data"][key].as_str().expect("config file in the config map")
}

#[test]
fn rendered_configs_are_valid_for_the_components() {
    let opts = InstallOptions::default();
    let objects = render(&opts).unwrap();

    let mut z =
        ztunnel::Config::parse(file(&objects, "ztunnel-config", "ztunnel.yaml"), "ztunnel-config").unwrap();
    z.node = "node-a".into(); // --node $(NODE_NAME)
    z.validate().unwrap();
    assert_eq!(z.capture.mode, ztunnel::config::CaptureMode::Ebpf);
    assert_eq!(z.source.kind, mesh_kube::SourceKind::Kube);

    let ca =
        mesh_ca::CaConfig::parse(file(&objects, "mesh-ca-config", "mesh-ca.yaml"), "mesh-ca-config").unwrap();
    let k = ca.kubernetes.expect("kubernetes mode");
    assert_eq!(k.audiences, [CA_TOKEN_AUDIENCE], "mesh-ca accepts the audience the proxies' tokens carry");
    assert_eq!(k.namespace, opts.namespace);
    assert_eq!(k.ztunnels(), [(opts.namespace.clone(), "ztunnel".to_string())]);

    let wp = meshctl::waypoint_cmd::render(&opts, "bookinfo", "waypoint", false).unwrap();
    let mut w =
        waypoint::config::Config::parse(file(&wp, "waypoint-config", "waypoint.yaml"), "waypoint-config")
            .unwrap();
    (w.pod, w.node) = ("waypoint-0".into(), "node-a".into()); // --pod / --node
    w.validate().unwrap();
    assert_eq!((w.namespace.as_str(), w.gateway.as_str()), ("bookinfo", "waypoint"));
    assert_eq!(w.source.kind, mesh_kube::SourceKind::Kube);
}
