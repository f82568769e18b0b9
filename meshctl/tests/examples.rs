//! The example mesh in `deploy/examples/` is what the lab and later tests run: check that it
//! loads and translates into the topology its README promises.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use mesh_model::{MeshConfig, load_paths, translate};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

#[test]
fn examples_translate_into_the_documented_topology() -> Result<()> {
    let loaded = load_paths(&[examples()]);
    ensure!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    ensure!(loaded.ignored.is_empty(), "{:?}", loaded.ignored);
    let (model, diags) = translate(&loaded.objects, &MeshConfig::default());
    ensure!(diags.is_empty(), "{diags:?}");

    // (namespace, pod, node, IP, service account, captured)
    let pods = [
        ("bookinfo", "productpage-v1", "node-a", "10.244.1.10", "bookinfo-productpage", true),
        ("bookinfo", "details-v1", "node-a", "10.244.1.11", "bookinfo-details", true),
        ("bookinfo", "reviews-v1", "node-a", "10.244.1.12", "bookinfo-reviews", true),
        ("bookinfo", "reviews-v2", "node-b", "10.244.2.10", "bookinfo-reviews", true),
        ("bookinfo", "reviews-v3", "node-b", "10.244.2.11", "bookinfo-reviews", true),
        ("bookinfo", "ratings-v1", "node-b", "10.244.2.12", "bookinfo-ratings", true),
        ("legacy", "sleep", "node-a", "10.244.1.20", "sleep", false),
        ("legacy", "legacy-echo", "node-b", "10.244.2.20", "sleep", false),
    ];
    ensure!(model.workloads().len() == pods.len(), "{} workloads", model.workloads().len());
    for (ns, name, node, ip, sa, captured) in pods {
        let ip: IpAddr = ip.parse()?;
        let w = model.workload_by_ip(ip).with_context(|| format!("no workload at {ip}"))?;
        ensure!((&*w.namespace, &*w.name) == (ns, name), "{ip} is {}/{}", w.namespace, w.name);
        ensure!(w.node.as_deref() == Some(node), "{name} on {:?}", w.node);
        ensure!(w.captured == captured, "{name} captured: {}", w.captured);
        ensure!(
            w.identity.to_string() == format!("spiffe://cluster.local/ns/{ns}/sa/{sa}"),
            "{name} identity {}",
            w.identity
        );
    }

    // Every Service has its VIP, port 9080 and the pods of its app as endpoints.
    for (name, vip, endpoints) in [
        ("productpage", "10.96.100.10", 1),
        ("details", "10.96.100.11", 1),
        ("reviews", "10.96.100.12", 3),
        ("ratings", "10.96.100.13", 1),
    ] {
        let svc = model.service("bookinfo", name).with_context(|| format!("no Service {name}"))?;
        ensure!(svc.vips.as_ref() == [vip.parse::<IpAddr>()?], "{name} VIPs {:?}", svc.vips);
        ensure!(svc.ports.iter().map(|p| p.port).collect::<Vec<_>>() == [9080], "{name} ports");
        ensure!(svc.endpoints.len() == endpoints, "{name}: {} endpoints", svc.endpoints.len());
        let by_host = model.service_by_host(&format!("{name}.bookinfo.svc.cluster.local"));
        ensure!(by_host.is_some_and(|s| s.vips == svc.vips), "{name} not found by host name");
    }

    // The canary's DestinationRule is found for the host the VirtualService routes to.
    let host = model.canonical_host("reviews", "bookinfo");
    let subsets: Vec<String> = model
        .destination_rules_for_host(&host)
        .flat_map(|(dr, _)| dr.spec.subsets.iter().map(|s| s.name.clone()))
        .collect();
    ensure!(subsets == ["v1", "v2", "v3"], "subsets for {host}: {subsets:?}");
    ensure!(model.virtual_services_for_host(&host).count() == 1, "no VirtualService for {host}");
    Ok(())
}
