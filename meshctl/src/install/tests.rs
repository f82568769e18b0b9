//! Unit tests of the rendered objects (no cluster): what each component gets, and what it
//! must not get.

use std::collections::BTreeSet;

use serde_json::Value;

use super::*;

fn rendered() -> Vec<Object> {
    render(&InstallOptions::default()).expect("default options render")
}

fn find<'a>(objects: &'a [Object], kind: &str, name: &str) -> &'a Object {
    objects.iter().find(|o| o.is(kind) && o.name == name).unwrap_or_else(|| {
        panic!("no {kind} {name} in {:?}", objects.iter().map(Object::display).collect::<Vec<_>>())
    })
}

fn strs(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn pod_spec(o: &Object) -> &Value {
    o.body.pointer("/spec/template/spec").expect("workload has a pod template")
}

#[test]
fn every_object_is_labelled_and_in_place() {
    let objects = rendered();
    assert_eq!(objects[0].display(), "Namespace mesh-system");
    let mut seen = BTreeSet::new();
    for o in &objects {
        assert!(seen.insert(o.display()), "{} rendered twice", o.display());
        assert_eq!(o.body["apiVersion"], o.resource.api_version.as_str(), "{}", o.display());
        assert_eq!(o.body["kind"], o.resource.kind.as_str(), "{}", o.display());
        assert_eq!(
            o.labels().get("app.kubernetes.io/managed-by").map(String::as_str),
            Some("meshctl"),
            "{}",
            o.display()
        );
        let cluster_scoped = ["Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"];
        if cluster_scoped.contains(&o.resource.kind.as_str()) {
            assert_eq!(o.namespace, None, "{}", o.display());
        } else {
            assert_eq!(o.namespace.as_deref(), Some("mesh-system"), "{}", o.display());
        }
    }
    for kind in ["ServiceAccount", "ConfigMap", "Deployment", "Service", "DaemonSet", "ClusterRole", "Role"] {
        assert!(objects.iter().any(|o| o.is(kind)), "no {kind}");
    }
}

#[test]
fn ztunnel_daemonset_has_exactly_the_capabilities_and_host_access_it_needs() {
    let objects = rendered();
    let ds = find(&objects, "DaemonSet", "ztunnel");
    let pod = pod_spec(ds);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["serviceAccountName"], "ztunnel");
    // One toleration with operator Exists and no key/effect tolerates every taint.
    let tol = pod["tolerations"].as_array().unwrap();
    assert_eq!(tol.len(), 1);
    assert_eq!(tol[0], serde_json::json!({ "operator": "Exists" }));

    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(
        strs(&sc["capabilities"]["add"]),
        ["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN", "SYS_PTRACE"].into_iter().map(String::from).collect()
    );
    assert_eq!(strs(&sc["capabilities"]["drop"]), BTreeSet::from(["ALL".to_string()]));
    assert_eq!(sc["privileged"], false);
    // The API refuses allowPrivilegeEscalation=false together with CAP_SYS_ADMIN.
    assert!(sc.get("allowPrivilegeEscalation").is_none());
    assert_eq!(sc["readOnlyRootFilesystem"], true);

    let probe = &c["readinessProbe"]["httpGet"];
    assert_eq!(probe["port"], 15021);
    assert_eq!(probe["path"], "/healthz/ready");
    assert!(
        c["resources"]["requests"]["cpu"].is_string() && c["resources"]["requests"]["memory"].is_string()
    );
    assert!(c["resources"].get("limits").is_none(), "no CPU throttling of the proxy");
    assert_eq!(
        strs(&c["args"]),
        ["--config", "/etc/mesh/ztunnel.yaml", "--node", "$(NODE_NAME)"]
            .into_iter()
            .map(String::from)
            .collect()
    );

    let host_paths: BTreeSet<(String, String)> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| Some((v["name"].as_str()?.to_string(), v["hostPath"]["path"].as_str()?.to_string())))
        .collect();
    let want: BTreeSet<(String, String)> =
        [("bpffs", "/sys/fs/bpf"), ("cgroup", "/sys/fs/cgroup"), ("proc", "/proc")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    assert_eq!(host_paths, want);
    let mounts = c["volumeMounts"].as_array().unwrap();
    let bpffs = mounts.iter().find(|m| m["name"] == "bpffs").unwrap();
    assert_eq!(bpffs["mountPath"], "/sys/fs/bpf");
    assert_eq!(bpffs["mountPropagation"], "HostToContainer");
    let cg = mounts.iter().find(|m| m["name"] == "cgroup").unwrap();
    assert_eq!(cg["readOnly"], true);

    let strategy = &ds.body["spec"]["updateStrategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    assert_eq!(strategy["rollingUpdate"], serde_json::json!({ "maxSurge": 0, "maxUnavailable": 1 }));
    let surge =
        render(&InstallOptions { ztunnel_update: ZtunnelUpdate::Surge, ..Default::default() }).unwrap();
    let s = &find(&surge, "DaemonSet", "ztunnel").body["spec"]["updateStrategy"]["rollingUpdate"];
    assert_eq!(*s, serde_json::json!({ "maxSurge": 1, "maxUnavailable": 0 }));
}

#[test]
fn ztunnel_config_points_at_the_cluster() {
    let objects = rendered();
    let cm = find(&objects, "ConfigMap", "ztunnel-config");
    let text = cm.body["data"]["ztunnel.yaml"].as_str().unwrap();
    let v: Value = serde_yaml::from_str(text).unwrap();
    assert_eq!(v["caAddress"], "https://mesh-ca.mesh-system.svc:15012");
    assert_eq!(v["caRoot"], "/var/run/mesh/ca/root-cert.pem");
    assert_eq!(v["tokenFile"], "/var/run/secrets/tokens/mesh-ca-token");
    assert_eq!(v["capture"]["mode"], "ebpf");
    assert_eq!(v["capture"]["netnsPath"], "kube:/host/sys/fs/cgroup");
    assert_eq!(v["source"]["kind"], "kube");
    assert_eq!(v["capture"]["bpfPinDir"], "/sys/fs/bpf/ztunnel");
    assert_eq!(v["capture"]["podsCgroup"], "/host/sys/fs/cgroup/kubepods.slice");
    // The token the config names is an audience-bound projection, mounted where it says.
    let pod = pod_spec(find(&objects, "DaemonSet", "ztunnel"));
    let token = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "ca-token").unwrap();
    let proj = &token["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(proj["audience"], "istio-ca");
    assert_eq!(proj["path"], "mesh-ca-token");
    assert_eq!(proj["expirationSeconds"], 3600);
}

#[test]
fn mesh_ca_runs_restricted_behind_a_service() {
    let objects = rendered();
    let d = find(&objects, "Deployment", "mesh-ca");
    let pod = pod_spec(d);
    assert_eq!(pod["serviceAccountName"], "mesh-ca");
    assert!(pod.get("hostNetwork").is_none());
    let sc = &pod["containers"][0]["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strs(&sc["capabilities"]["drop"]), BTreeSet::from(["ALL".to_string()]));
    assert!(sc["capabilities"].get("add").is_none());
    assert_eq!(pod["containers"][0]["readinessProbe"]["tcpSocket"]["port"], 15012);
    let svc = find(&objects, "Service", "mesh-ca");
    assert_eq!(svc.body["spec"]["ports"][0]["port"], 15012);
    assert_eq!(svc.body["spec"]["selector"], d.body["spec"]["selector"]["matchLabels"]);
    let cm = find(&objects, "ConfigMap", "mesh-ca-config");
    let v: Value = serde_yaml::from_str(cm.body["data"]["mesh-ca.yaml"].as_str().unwrap()).unwrap();
    assert!(strs(&v["serverNames"]).contains("mesh-ca.mesh-system.svc"));
    let k = &v["kubernetes"];
    assert_eq!(k["namespace"], "mesh-system");
    assert_eq!(
        strs(&k["audiences"]),
        BTreeSet::from(["istio-ca".to_string()]),
        "the proxies' token audience"
    );
    assert_eq!(strs(&k["ztunnelServiceAccounts"]), BTreeSet::from(["mesh-system/ztunnel".to_string()]));
}

/// `(group, resource, verb)` triples a role grants (resource names appended when limited).
fn grants(role: &Object) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in role.body["rules"].as_array().unwrap() {
        let names = strs(&r["resourceNames"]);
        for g in strs(&r["apiGroups"]) {
            for res in strs(&r["resources"]) {
                for v in strs(&r["verbs"]) {
                    let limited = if names.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", names.iter().cloned().collect::<Vec<_>>().join(","))
                    };
                    out.insert(format!("{g}/{res} {v}{limited}"));
                }
            }
        }
    }
    out
}

#[test]
fn rbac_is_minimal() {
    let objects = rendered();
    let reader = grants(find(&objects, "ClusterRole", "mesh-model-reader"));
    assert!(reader.iter().all(|g| g.ends_with(" list") || g.ends_with(" watch")), "{reader:?}");
    assert!(reader.contains("/pods watch") && reader.contains("discovery.k8s.io/endpointslices list"));
    assert!(reader.contains("security.istio.io/authorizationpolicies watch"));
    assert!(reader.contains("gateway.networking.k8s.io/httproutes list"));
    assert!(!reader.iter().any(|g| g.contains("secrets")), "the proxies never read secrets");

    // Every kind the model reads is readable: CRD kinds by their CRD's plural.
    let crd_plurals: std::collections::BTreeMap<String, String> = crds()
        .unwrap()
        .iter()
        .map(|c| {
            let s = &c.body["spec"];
            let gk = format!("{}/{}", s["group"].as_str().unwrap(), s["names"]["kind"].as_str().unwrap());
            (gk, s["names"]["plural"].as_str().unwrap().to_string())
        })
        .collect();
    for k in mesh_api::Kind::ALL {
        let plural = crd_plurals
            .get(&format!("{}/{}", k.group(), k.as_str()))
            .cloned()
            .unwrap_or_else(|| format!("{}s", k.as_str().to_lowercase()));
        assert!(reader.contains(&format!("{}/{plural} watch", k.group())), "{k:?} ({plural}) not readable");
    }

    let ca = grants(find(&objects, "ClusterRole", "mesh-ca"));
    let want: BTreeSet<String> =
        ["authentication.k8s.io/tokenreviews create", "/pods get", "/pods list", "/pods watch"]
            .into_iter()
            .map(String::from)
            .collect();
    assert_eq!(ca, want);
    let role = find(&objects, "Role", "mesh-ca");
    assert_eq!(role.namespace.as_deref(), Some("mesh-system"));
    let ns_grants = grants(role);
    let want_ns: BTreeSet<String> = [
        "/configmaps create",
        "/configmaps get [mesh-ca-root-cert]",
        "/configmaps update [mesh-ca-root-cert]",
        "/secrets create",
        "/secrets get [cacerts,mesh-ca-root]",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(ns_grants, want_ns);
    assert!(ns_grants.iter().all(|g| !g.contains("delete") && !g.contains(" list")), "{ns_grants:?}");
    // No wildcard anywhere.
    for o in objects.iter().filter(|o| o.is("ClusterRole") || o.is("Role")) {
        assert!(!o.body.to_string().contains("\"*\""), "{} has a wildcard", o.display());
    }
    let zb = find(&objects, "ClusterRoleBinding", "ztunnel");
    assert_eq!(zb.body["roleRef"]["name"], "mesh-model-reader");
    assert_eq!(zb.body["subjects"][0]["namespace"], "mesh-system");
}

#[test]
fn no_secret_material_in_the_manifests() {
    let yaml = to_yaml(&rendered()).unwrap();
    for needle in ["PRIVATE KEY", "BEGIN CERTIFICATE", "token:", "password"] {
        assert!(!yaml.contains(needle), "manifests contain {needle:?}");
    }
    assert!(!rendered().iter().any(|o| o.is("Secret")), "mesh-ca makes its own Secret at run time");
}

#[test]
fn crds_are_embedded_labelled_and_match_the_kinds_the_model_reads() {
    let crds: Vec<Object> = rendered().into_iter().filter(|o| o.is("CustomResourceDefinition")).collect();
    assert_eq!(crds.len(), CRD_FILES.len());
    let kinds: BTreeSet<String> = crds
        .iter()
        .map(|c| {
            format!(
                "{}/{}",
                c.body["spec"]["group"].as_str().unwrap(),
                c.body["spec"]["names"]["kind"].as_str().unwrap()
            )
        })
        .collect();
    for k in
        mesh_api::Kind::ALL.into_iter().filter(|k| !k.group().is_empty() && k.group() != "discovery.k8s.io")
    {
        assert!(kinds.contains(&format!("{}/{}", k.group(), k.as_str())), "no CRD for {k:?}");
    }
    for c in &crds {
        let labels = c.labels();
        assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("meshctl"));
        assert!(!labels.contains_key("heritage"), "{}: Helm labels must go", c.display());
    }
    let without = render(&InstallOptions { crds: false, ..Default::default() }).unwrap();
    assert!(!without.iter().any(|o| o.is("CustomResourceDefinition")));
}

#[test]
fn images_and_options() {
    let opts = InstallOptions { hub: "registry.example/x/".into(), tag: "v9".into(), ..Default::default() };
    let objects = render(&opts).unwrap();
    let img = |o: &Object| pod_spec(o)["containers"][0]["image"].as_str().unwrap().to_string();
    assert_eq!(img(find(&objects, "DaemonSet", "ztunnel")), "registry.example/x/ztunnel:v9");
    assert_eq!(img(find(&objects, "Deployment", "mesh-ca")), "registry.example/x/mesh-ca:v9");
    let bad = InstallOptions {
        namespace: "Mesh_System".into(),
        tag: "a b".into(),
        bpf_pin_dir: "/tmp/pins".into(),
        token_ttl: std::time::Duration::from_secs(60),
        ..Default::default()
    };
    let msg = render(&bad).unwrap_err().to_string();
    for field in ["namespace:", "tag:", "bpfPinDir:", "tokenTtl:"] {
        assert!(msg.contains(field), "{field} missing from {msg}");
    }
}

#[test]
fn cleanup_daemonset_only_touches_bpffs() {
    let ds = cleanup_daemonset(&InstallOptions::default());
    let pod = pod_spec(&ds);
    assert!(pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none());
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["volumes"].as_array().unwrap().len(), 1);
    assert_eq!(pod["volumes"][0]["hostPath"]["path"], "/sys/fs/bpf");
    let init = &pod["initContainers"][0];
    assert_eq!(
        strs(&init["args"]),
        ["cleanup", "--bpf-pin-dir", "/sys/fs/bpf/ztunnel"].into_iter().map(String::from).collect()
    );
    assert!(init["securityContext"]["capabilities"].get("add").is_none());
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
}

#[test]
fn output_is_stable_yaml_and_json() {
    let objects = rendered();
    let yaml = to_yaml(&objects).unwrap();
    assert_eq!(yaml, to_yaml(&rendered()).unwrap());
    let docs: Vec<&str> = yaml.split("---\n").filter(|d| !d.is_empty()).collect();
    assert_eq!(docs.len(), objects.len());
    assert!(docs[0].starts_with("apiVersion: v1\nkind: Namespace\n"), "{}", docs[0]);
    let json: Value = serde_json::from_str(&to_json(&objects).unwrap()).unwrap();
    assert_eq!(json["kind"], "List");
    assert_eq!(json["items"].as_array().unwrap().len(), objects.len());
}
