//! The RBAC rules the source needs (read-only: `list` and `watch` of each kind it reads), for
//! the installer's ClusterRoles of ztunnel, waypoint and mesh-ca. API discovery (`/api`,
//! `/apis/...`) is granted to every authenticated user by the built-in `system:discovery`.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::PolicyRule;
use mesh_api::Kind;

use crate::kinds::plural;

/// Verbs the watchers use: a paged list, then a watch from its resourceVersion.
pub const VERBS: [&str; 2] = ["list", "watch"];

/// Rules for watching `kinds`: one rule per API group, resources sorted.
pub fn rbac_for_kinds(kinds: &[Kind]) -> Vec<PolicyRule> {
    let mut by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for k in kinds {
        let r = by_group.entry(k.group()).or_default();
        if !r.contains(&plural(*k)) {
            r.push(plural(*k));
        }
    }
    by_group
        .into_iter()
        .map(|(group, mut resources)| {
            resources.sort_unstable();
            PolicyRule {
                api_groups: Some(vec![group.to_string()]),
                resources: Some(resources.into_iter().map(str::to_string).collect()),
                verbs: VERBS.iter().map(|v| v.to_string()).collect(),
                ..Default::default()
            }
        })
        .collect()
}

/// Rules for the source with its default options (every kind the model reads): what
/// ztunnel, waypoint and mesh-ca each need for their model. (mesh-ca's own TokenReview and
/// Secret rules are its installer's business.)
pub fn required_rbac() -> Vec<PolicyRule> {
    rbac_for_kinds(&Kind::ALL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_read_only_rule_per_group() {
        let rules = required_rbac();
        let groups: Vec<&str> = rules.iter().map(|r| r.api_groups.as_ref().unwrap()[0].as_str()).collect();
        assert_eq!(
            groups,
            [
                "",
                "discovery.k8s.io",
                "gateway.networking.k8s.io",
                "networking.istio.io",
                "security.istio.io",
                "telemetry.istio.io"
            ]
        );
        for r in &rules {
            assert_eq!(r.verbs, ["list", "watch"]);
        }
        assert_eq!(
            rules[0].resources.as_deref().unwrap(),
            ["namespaces", "pods", "serviceaccounts", "services"]
        );
        assert_eq!(rules[2].resources.as_deref().unwrap(), ["gateways", "grpcroutes", "httproutes"]);
        let n: usize = rules.iter().map(|r| r.resources.as_ref().unwrap().len()).sum();
        assert_eq!(n, Kind::ALL.len());
    }
}
