//! API-server JSON (as `kubectl get -o json` prints it: uid, resourceVersion,
//! creationTimestamp, managedFields, status, server defaults) through the kube source's
//! conversion gives the same model as the file source given the equivalent YAML.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use mesh_api::Kind;
use mesh_kube::EventBatcher;
use mesh_model::{ConfigStore, FileSource, MeshConfig};
use serde_json::Value;

use common::{comparable, fixtures, initial_list, kube_items};

fn file_store() -> Arc<ConfigStore> {
    let store = Arc::new(ConfigStore::new(MeshConfig::default()));
    FileSource::new([fixtures().join("mesh.yaml")]).load_into(&store);
    store
}

fn kube_store() -> Arc<ConfigStore> {
    let store = Arc::new(ConfigStore::new(MeshConfig::default()));
    let mut b = EventBatcher::new(&Kind::ALL);
    for (kind, s) in initial_list(&kube_items()) {
        b.handle(kind, s);
    }
    assert!(b.synced());
    store.apply(b.take());
    store
}

fn errors(store: &ConfigStore) -> Vec<String> {
    store.diagnostics().iter().filter(|d| d.is_error()).map(|d| d.to_string()).collect()
}

#[test]
fn fixtures_cover_every_kind() {
    let kinds: BTreeSet<Kind> = kube_items().into_iter().map(|(k, _, _)| k).collect();
    let missing: Vec<Kind> = Kind::ALL.into_iter().filter(|k| !kinds.contains(k)).collect();
    assert!(missing.is_empty(), "no fixture for {missing:?}");
}

#[test]
fn api_objects_give_the_file_sources_model() {
    let (f, k) = (file_store(), kube_store());
    assert_eq!(errors(&f), Vec::<String>::new(), "file source errors");
    assert_eq!(errors(&k), Vec::<String>::new(), "kube source errors");
    let (mf, mk) = (f.current(), k.current());
    assert_eq!(mk.objects().len(), kube_items().len(), "every fixture object is in the model");

    let (mut df, mut dk) = (comparable(mf.dump()), comparable(mk.dump()));
    // Objects themselves differ (server fields, defaults, pruning): same set of objects, and
    // the same spec for every kind the server does not default.
    let (of, ok) = (df["objects"].take(), dk["objects"].take());
    let refs = |v: &Value| -> BTreeSet<String> {
        v.as_array().unwrap().iter().map(|o| o["object"].to_string()).collect()
    };
    assert_eq!(refs(&of), refs(&ok));
    let by_ref = |v: &Value| -> std::collections::BTreeMap<String, Value> {
        v.as_array().unwrap().iter().map(|o| (o["object"].to_string(), o["spec"].clone())).collect()
    };
    let (of, ok) = (by_ref(&of), by_ref(&ok));
    let mut compared = 0;
    for (r, a) in &of {
        let b = &ok[r];
        let group = a["apiVersion"].as_str().unwrap_or("").split('/').next().unwrap_or("");
        if group.ends_with(".istio.io") {
            assert_eq!(a["spec"], b["spec"], "{r} spec");
            assert!(a["spec"].is_object(), "{r}: {a}");
            compared += 1;
        }
    }
    assert_eq!(compared, 10, "every Istio object's spec compared");
    // Everything the proxies read: namespaces, workloads (pod UIDs, IPs, identities,
    // capture, waypoints, ports), services (VIPs, ports, endpoints), policies.
    assert_eq!(df, dk);
    assert_eq!(mk.workloads().len(), 4);
    let w = mk.workload("bookinfo", "reviews-v1-5f7b9d8c4-abcde").expect("reviews pod");
    assert_eq!(&*w.uid, "0b6c3f0e-55a1-4d2b-9f43-1c2d3e4f5a62");
    assert!(w.captured);
    assert_eq!(&*w.workload_name, "reviews-v1");
}

#[test]
fn pruning_drops_server_bookkeeping() {
    let items = kube_items();
    let (kind, av, pod) = items.iter().find(|(k, _, _)| *k == Kind::Pod).unwrap();
    let raw = serde_json::to_vec(pod).unwrap().len();
    let doc = mesh_kube::convert::to_document(*kind, av, common::object(pod));
    let kept = serde_json::to_vec(&doc).unwrap().len();
    assert!(doc["metadata"].get("managedFields").is_none());
    assert!(doc["metadata"].get("resourceVersion").is_none());
    assert!(doc["metadata"].get("annotations").is_none(), "last-applied copy removed");
    assert!(doc["spec"].get("volumes").is_none());
    assert!(doc["status"].get("conditions").is_none());
    assert_eq!(doc["metadata"]["uid"], pod["metadata"]["uid"]);
    assert_eq!(doc["spec"]["containers"][0]["ports"], pod["spec"]["containers"][0]["ports"]);
    assert!(kept * 4 < raw, "kept {kept} of {raw} bytes");
}
