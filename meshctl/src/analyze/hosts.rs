//! Classification of host names the model does not know: in-cluster Service names (an
//! error when missing) versus external names (which may legitimately live outside the mesh).

/// The in-cluster Service a resolved host names, as `(name, namespace)`:
/// `name.ns.svc.<domain>`, or `name.ns` when `ns` is a namespace the input knows (the
/// model serves that form as an alias too). `None` for anything else (external hosts).
pub fn cluster_service<'a>(
    fqdn: &'a str,
    domain: &str,
    is_namespace: impl Fn(&str) -> bool,
) -> Option<(&'a str, &'a str)> {
    if let Some(rest) = fqdn.strip_suffix(domain).and_then(|r| r.strip_suffix(".svc.")) {
        return rest.split_once('.').filter(|(n, ns)| !n.is_empty() && !ns.is_empty() && !ns.contains('.'));
    }
    fqdn.split_once('.').filter(|(n, ns)| !n.is_empty() && !ns.contains('.') && is_namespace(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "cluster.local";

    #[test]
    fn recognises_cluster_services() {
        let ns = |n: &str| n == "bookinfo";
        assert_eq!(
            cluster_service("reviews.bookinfo.svc.cluster.local", D, ns),
            Some(("reviews", "bookinfo"))
        );
        assert_eq!(cluster_service("reviews.other.svc.cluster.local", D, ns), Some(("reviews", "other")));
        assert_eq!(cluster_service("reviews.bookinfo", D, ns), Some(("reviews", "bookinfo")));
        assert_eq!(cluster_service("api.example", D, ns), None);
        assert_eq!(cluster_service("api.example.com", D, ns), None);
    }
}
