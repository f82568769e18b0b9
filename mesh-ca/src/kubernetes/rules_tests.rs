use super::*;
use mesh_identity::NodeId;

const TD: &str = "cluster.local";
const ZT: &[(&str, &str)] = &[("mesh-system", "ztunnel")];

fn ztunnels() -> Vec<(String, String)> {
    ZT.iter().map(|(n, s)| (n.to_string(), s.to_string())).collect()
}

fn extra(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    pairs.iter().map(|(k, v)| (k.to_string(), vec![v.to_string()])).collect()
}

fn caller(user: &str, node: Option<&str>) -> KubeCaller {
    let mut e = vec![(EXTRA_POD_NAME, "p-1"), (EXTRA_POD_UID, "uid-1")];
    if let Some(n) = node {
        e.push((EXTRA_NODE_NAME, n));
        e.push((EXTRA_NODE_UID, "node-uid"));
    }
    KubeCaller::from_user(user, &extra(&e)).unwrap()
}

fn wl(ns: &str, sa: &str) -> Identity {
    Identity::Workload(SpiffeId::new(TD, ns, sa).unwrap())
}

fn node(n: &str) -> Identity {
    Identity::Node(NodeId::new(TD, n).unwrap())
}

#[test]
fn caller_from_token_review_user() {
    let c = caller("system:serviceaccount:mesh-system:ztunnel", Some("node-a"));
    assert_eq!(c.namespace, "mesh-system");
    assert_eq!(c.service_account, "ztunnel");
    assert_eq!(c.pod, Some(BoundPod { name: "p-1".into(), uid: "uid-1".into() }));
    assert_eq!(c.node.as_deref(), Some("node-a"));
    assert_eq!(c.role(&ztunnels()), Role::Ztunnel);
    assert_eq!(c.to_string(), "serviceaccount mesh-system/ztunnel (pod p-1 on node node-a)");
    // Unbound token: no pod, and a node claim without a pod is not trusted.
    let c = KubeCaller::from_user("system:serviceaccount:a:b", &extra(&[(EXTRA_NODE_NAME, "n")])).unwrap();
    assert_eq!((c.pod, c.node), (None, None));
    for bad in ["admin", "system:serviceaccount:a", "system:serviceaccount::b", "system:serviceaccount:a:b:c"]
    {
        let e = KubeCaller::from_user(bad, &BTreeMap::new()).unwrap_err();
        assert_eq!(e, KubeRefusal::NotServiceAccount { user: bad.into() }, "{bad}");
    }
}

#[test]
fn workload_only_its_own_identity() {
    let c = caller("system:serviceaccount:shop:cart", None);
    assert_eq!(c.role(&ztunnels()), Role::Workload);
    assert_eq!(decide(&c, Role::Workload, &wl("shop", "cart"), TD), Ok(Grant::Now));
    let e = decide(&c, Role::Workload, &wl("shop", "pay"), TD).unwrap_err();
    assert_eq!(
        e.to_string(),
        "serviceaccount shop/cart (pod p-1) may only obtain its own identity spiffe://cluster.local/ns/shop/sa/cart, \
         not spiffe://cluster.local/ns/shop/sa/pay"
    );
    assert!(matches!(
        decide(&c, Role::Workload, &wl("other", "cart"), TD),
        Err(KubeRefusal::NotOwnIdentity { .. })
    ));
    assert!(matches!(
        decide(&c, Role::Workload, &node("node-a"), TD),
        Err(KubeRefusal::NodeIdentityNotAllowed { .. })
    ));
}

#[test]
fn waypoint_is_a_workload() {
    // A waypoint runs as its own ServiceAccount; it is not in the ztunnel list.
    let c = caller("system:serviceaccount:shop:waypoint", Some("node-a"));
    assert_eq!(c.role(&ztunnels()), Role::Workload);
    assert_eq!(decide(&c, Role::Workload, &wl("shop", "waypoint"), TD), Ok(Grant::Now));
    assert!(decide(&c, Role::Workload, &wl("shop", "cart"), TD).is_err());
}

#[test]
fn ztunnel_pods_on_its_node() {
    let c = caller("system:serviceaccount:mesh-system:ztunnel", Some("node-a"));
    let id = SpiffeId::new(TD, "shop", "cart").unwrap();
    assert_eq!(
        decide(&c, Role::Ztunnel, &wl("shop", "cart"), TD),
        Ok(Grant::IfPodOnNode { node: "node-a".into(), id: id.clone() })
    );
    assert_eq!(decide(&c, Role::Ztunnel, &wl("mesh-system", "ztunnel"), TD), Ok(Grant::Now));
    assert_eq!(decide(&c, Role::Ztunnel, &node("node-a"), TD), Ok(Grant::Now));
    let e = decide(&c, Role::Ztunnel, &node("node-b"), TD).unwrap_err();
    assert!(e.to_string().contains("on node node-a may not obtain the identity of node node-b"), "{e}");

    let pod = |ns: &str, sa: &str, n: Option<&str>, finished: bool| PodFacts {
        namespace: ns.into(),
        service_account: sa.into(),
        node: n.map(str::to_string),
        finished,
    };
    assert!(pod("shop", "cart", Some("node-a"), false).grants("node-a", &id));
    assert!(!pod("shop", "cart", Some("node-b"), false).grants("node-a", &id));
    assert!(!pod("shop", "cart", None, false).grants("node-a", &id));
    assert!(!pod("shop", "cart", Some("node-a"), true).grants("node-a", &id));
    assert!(!pod("shop", "pay", Some("node-a"), false).grants("node-a", &id));
    assert!(!pod("web", "cart", Some("node-a"), false).grants("node-a", &id));
}

#[test]
fn ztunnel_needs_a_pod_bound_token_and_a_node() {
    let unbound =
        KubeCaller::from_user("system:serviceaccount:mesh-system:ztunnel", &BTreeMap::new()).unwrap();
    let e = decide(&unbound, Role::Ztunnel, &wl("shop", "cart"), TD).unwrap_err();
    assert!(matches!(e, KubeRefusal::NotBoundToPod { .. }));
    assert!(e.to_string().contains("not bound to a pod"), "{e}");
    let no_node = caller("system:serviceaccount:mesh-system:ztunnel", None);
    let e = decide(&no_node, Role::Ztunnel, &wl("shop", "cart"), TD).unwrap_err();
    assert_eq!(e, KubeRefusal::NodeUnknown { caller: no_node.to_string(), pod: "p-1".into() });
}

#[test]
fn pod_facts_from_api_json() {
    let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "a", "namespace": "shop"},
        "spec": {"nodeName": "node-a", "containers": []},
        "status": {"phase": "Succeeded"}
    }))
    .unwrap();
    let f = PodFacts::from_pod(&p);
    assert_eq!(f.service_account, "default");
    assert_eq!(f.node.as_deref(), Some("node-a"));
    assert!(f.finished);
}
