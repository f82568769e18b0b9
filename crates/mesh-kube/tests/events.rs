//! The event → batch logic without a server: watcher events (parsed from API-server JSON)
//! through the batcher and the batching loop into a real store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::watcher::Event;
use mesh_api::Kind;
use mesh_kube::{EventBatcher, Readiness, Signal, drive};
use mesh_model::{ConfigStore, MeshConfig, Update};
use serde_json::Value;
use tokio::sync::mpsc;

use common::{initial_list, kube_items, signal};

const REVIEWS: &str = "reviews-v1-5f7b9d8c4-abcde";

fn synced() -> (EventBatcher, Arc<ConfigStore>) {
    let store = Arc::new(ConfigStore::new(MeshConfig::default()));
    let mut b = EventBatcher::new(&Kind::ALL);
    for (kind, s) in initial_list(&kube_items()) {
        b.handle(kind, s);
    }
    store.apply(b.take());
    (b, store)
}

fn pod(name: &str) -> Value {
    kube_items().into_iter().find(|(k, _, v)| *k == Kind::Pod && v["metadata"]["name"] == name).unwrap().2
}

fn apply(b: &mut EventBatcher, v: &Value) {
    b.handle(Kind::Pod, signal(Kind::Pod, "v1", v, Event::Apply));
}

#[test]
fn add_modify_delete() {
    let (mut b, store) = synced();
    // A new pod.
    let mut new = pod(REVIEWS);
    new["metadata"]["name"] = "reviews-v1-5f7b9d8c4-zzzzz".into();
    new["metadata"]["uid"] = "11111111-2222-4333-8444-555555555555".into();
    new["status"]["podIP"] = "10.244.2.21".into();
    new["status"]["podIPs"] = serde_json::json!([{"ip": "10.244.2.21"}]);
    apply(&mut b, &new);
    let batch = b.take();
    assert_eq!(batch.updates.len(), 1);
    store.apply(batch);
    let m = store.current();
    assert_eq!(
        m.workload_by_ip("10.244.2.21".parse().unwrap()).unwrap().name.as_ref(),
        "reviews-v1-5f7b9d8c4-zzzzz"
    );

    // A change the model ignores (status conditions, resourceVersion) is no update at all.
    let mut same = new.clone();
    same["metadata"]["resourceVersion"] = "99999".into();
    same["status"]["conditions"][0]["status"] = "False".into();
    apply(&mut b, &same);
    assert!(!b.has_pending(), "no-op update dropped");

    // A label change is; several events of one object in a window become one update.
    let mut relabeled = new.clone();
    relabeled["metadata"]["labels"]["istio.io/dataplane-mode"] = "none".into();
    apply(&mut b, &same);
    apply(&mut b, &relabeled);
    let batch = b.take();
    assert_eq!(batch.updates.len(), 1);
    store.apply(batch);
    assert!(!store.current().workload("bookinfo", "reviews-v1-5f7b9d8c4-zzzzz").unwrap().captured);

    // Deleted.
    b.handle(Kind::Pod, signal(Kind::Pod, "v1", &relabeled, Event::Delete));
    let batch = b.take();
    assert!(matches!(&batch.updates[..], [Update::Remove { .. }]));
    store.apply(batch);
    assert!(store.current().workload("bookinfo", "reviews-v1-5f7b9d8c4-zzzzz").is_none());
    // A delete of something never seen sends nothing.
    b.handle(Kind::Pod, signal(Kind::Pod, "v1", &relabeled, Event::Delete));
    assert!(!b.has_pending());
}

#[test]
fn relist_removes_vanished_objects_and_applies_atomically() {
    let (mut b, store) = synced();
    let before = store.current().workloads().len();
    let pods: Vec<(Kind, String, Value)> = kube_items()
        .into_iter()
        .filter(|(k, _, v)| *k == Kind::Pod && v["metadata"]["name"] != REVIEWS)
        .collect();
    // The watch restarted (e.g. 410 Gone): a re-list that no longer has the reviews pod.
    b.handle(Kind::Pod, Signal::Init);
    for (k, av, v) in &pods {
        b.handle(*k, signal(*k, av, v, Event::InitApply));
    }
    assert!(!b.has_pending(), "a re-list is held until it is complete");
    b.handle(Kind::Pod, Signal::InitDone);
    let batch = b.take();
    // Unchanged pods are not re-sent; the vanished one is removed.
    assert_eq!(batch.updates.len(), 1, "{batch:?}");
    assert!(matches!(&batch.updates[0], Update::Remove { unit } if unit.contains(REVIEWS)));
    store.apply(batch);
    assert_eq!(store.current().workloads().len(), before - 1);
    assert!(store.current().workload("bookinfo", REVIEWS).is_none());
}

#[test]
fn invalid_update_keeps_the_last_good_object() {
    let (mut b, store) = synced();
    let mut bad = pod(REVIEWS);
    bad["status"]["podIP"] = "not-an-ip".into();
    apply(&mut b, &bad);
    store.apply(b.take());
    let m = store.current();
    let w = m.workload("bookinfo", REVIEWS).expect("last good version stays");
    assert_eq!(w.ips[0].to_string(), "10.244.2.20");
    let diags = store.diagnostics();
    let d = diags.iter().find(|d| d.is_error()).expect("the bad object is reported");
    let text = d.to_string();
    assert!(text.contains(REVIEWS) && text.contains("status.podIP"), "{text}");
}

#[test]
fn a_kind_that_is_not_served_counts_as_synced_and_loses_its_objects() {
    let mut b = EventBatcher::new(&[Kind::Pod, Kind::HttpRoute]);
    b.handle(Kind::Pod, Signal::Init);
    b.handle(Kind::Pod, Signal::InitDone);
    assert!(!b.synced());
    assert_eq!(b.unsynced(), vec![Kind::HttpRoute]);
    b.handle(Kind::HttpRoute, Signal::NotServed);
    assert!(b.synced());
    // Served later, then the CRD is removed again: its objects go.
    let route = kube_items().into_iter().find(|(k, _, _)| *k == Kind::HttpRoute).unwrap();
    b.handle(Kind::HttpRoute, Signal::Init);
    b.handle(Kind::HttpRoute, signal(Kind::HttpRoute, &route.1, &route.2, Event::InitApply));
    b.handle(Kind::HttpRoute, Signal::InitDone);
    assert_eq!(b.take().updates.len(), 1);
    b.handle(Kind::HttpRoute, Signal::NotServed);
    assert!(matches!(&b.take().updates[..], [Update::Remove { .. }]));
}

/// The loop: nothing is published before every kind is synced; then readiness; then a burst
/// of 1,000 pod events within one window gives one snapshot.
#[tokio::test(start_paused = true)]
async fn drive_waits_for_the_first_sync_then_coalesces() {
    let store = Arc::new(ConfigStore::new(MeshConfig::default()));
    let (tx, rx) = mpsc::channel(64);
    let (ready_tx, ready) = Readiness::channel();
    let window = Duration::from_millis(30);
    let task = tokio::spawn(drive(rx, store.clone(), &Kind::ALL, window, ready_tx));

    let mut list = initial_list(&kube_items());
    let last = list.pop().unwrap();
    for msg in list {
        tx.send(msg).await.unwrap();
    }
    tokio::time::sleep(window * 4).await;
    assert_eq!(store.current().generation(), 0, "nothing published before the first full sync");
    assert!(!ready.is_ready());
    tx.send(last).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), ready.wait()).await.expect("ready after the sync");
    assert_eq!(store.current().generation(), 1);
    assert_eq!(store.current().workloads().len(), 4);

    // 1,000 pods arrive in a burst: one snapshot.
    let template = pod(REVIEWS);
    let sender = tokio::spawn({
        let tx = tx.clone();
        async move {
            for i in 0..1000u32 {
                let mut p = template.clone();
                p["metadata"]["name"] = format!("burst-{i}").into();
                p["metadata"]["uid"] = format!("00000000-0000-4000-8000-{i:012}").into();
                let ip = format!("10.250.{}.{}", i / 250, i % 250 + 1);
                p["status"]["podIP"] = ip.clone().into();
                p["status"]["podIPs"] = serde_json::json!([{ "ip": ip }]);
                tx.send((Kind::Pod, signal(Kind::Pod, "v1", &p, Event::Apply))).await.unwrap();
            }
        }
    });
    sender.await.unwrap();
    let mut handle = store.handle();
    tokio::time::timeout(Duration::from_secs(5), handle.changed()).await.expect("a snapshot");
    tokio::time::sleep(window * 4).await;
    assert_eq!(store.current().generation(), 2, "one snapshot for the burst");
    assert_eq!(store.current().workloads().len(), 1004);

    drop(tx);
    task.await.unwrap();
}
