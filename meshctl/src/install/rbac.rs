//! RBAC, minimal per component: ztunnel and waypoints list/watch the kinds the model is built
//! from (one ClusterRole, [`READER_CLUSTER_ROLE`], with `mesh_kube::required_rbac`'s rules); mesh-ca creates TokenReviews, reads pods
//! (placement: which pod is on which node, as whom) and keeps its root key Secret and root
//! certificate ConfigMap in its own namespace. Nobody writes anything else.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use super::object::{Object, meta};
use super::{CA_PLUGIN_SECRET, CA_ROOT_SECRET, InstallOptions, READER_CLUSTER_ROLE};

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn named_rule(group: &str, resource: &str, names: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        resource_names: Some(names.iter().map(|s| s.to_string()).collect()),
        ..rule(group, &[resource], verbs)
    }
}

/// A ServiceAccount (the pods' identity towards the API server and, via its token, mesh-ca).
pub fn service_account(name: &str, namespace: &str, component: &str) -> Object {
    Object::typed(&ServiceAccount { metadata: meta(name, Some(namespace), component), ..Default::default() })
}

/// Binds a ClusterRole to one ServiceAccount, cluster-wide.
pub fn cluster_binding(name: &str, role: &str, sa: &str, sa_namespace: &str, component: &str) -> Object {
    Object::typed(&ClusterRoleBinding {
        metadata: meta(name, None, component),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: sa.into(),
            namespace: Some(sa_namespace.into()),
            ..Default::default()
        }]),
    })
}

/// Service accounts, roles and bindings of the installation.
pub fn render(opts: &InstallOptions) -> Vec<Object> {
    let ns = opts.namespace.as_str();
    // What the API-server source watches, from the source itself (list + watch per kind).
    let reader_rules = mesh_kube::required_rbac();
    let reader = ClusterRole {
        metadata: meta(READER_CLUSTER_ROLE, None, "mesh"),
        rules: Some(reader_rules),
        ..Default::default()
    };
    let ca_cluster = ClusterRole {
        metadata: meta("mesh-ca", None, "mesh-ca"),
        rules: Some(vec![
            rule("authentication.k8s.io", &["tokenreviews"], &["create"]),
            rule("", &["pods"], &["get", "list", "watch"]),
        ]),
        ..Default::default()
    };
    // `create` cannot be limited by name (RBAC does not see the name of an object being
    // created); reads are limited to the root and plug-in CA Secrets. The root certificate
    // ConfigMap grant is for mesh-ca publishing its (public) root itself.
    let ca_role = Role {
        metadata: meta("mesh-ca", Some(ns), "mesh-ca"),
        rules: Some(vec![
            rule("", &["secrets", "configmaps"], &["create"]),
            named_rule("", "secrets", &[CA_ROOT_SECRET, CA_PLUGIN_SECRET], &["get"]),
            named_rule("", "configmaps", &[super::ROOT_CERT_CONFIGMAP], &["get", "update"]),
        ]),
    };
    let ca_role_binding = RoleBinding {
        metadata: meta("mesh-ca", Some(ns), "mesh-ca"),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "mesh-ca".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "mesh-ca".into(),
            namespace: Some(ns.into()),
            ..Default::default()
        }]),
    };
    vec![
        service_account("mesh-ca", ns, "mesh-ca"),
        service_account("ztunnel", ns, "ztunnel"),
        Object::typed(&reader),
        Object::typed(&ca_cluster),
        Object::typed(&ca_role),
        cluster_binding("mesh-ca", "mesh-ca", "mesh-ca", ns, "mesh-ca"),
        cluster_binding("ztunnel", READER_CLUSTER_ROLE, "ztunnel", ns, "ztunnel"),
        Object::typed(&ca_role_binding),
    ]
}
