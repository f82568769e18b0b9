//! Memory per stored object: N synthetic pods (the API-server JSON fixture with unique
//! names and IPs) kept as kube-runtime's reflector would keep them (`DynamicObject`), versus
//! what the kube source keeps (its per-unit bookkeeping) plus the config store and model.
//! Prints bytes per object; run with `cargo bench -p mesh-kube --bench memory [N]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use mesh_api::Kind;
use mesh_kube::{EventBatcher, Signal};
use mesh_model::{ConfigStore, MeshConfig};
use serde_json::Value;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` was allocated by `alloc` above with `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: as `GlobalAlloc::realloc`.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kube/core.json");
    let list: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["kind"] == "Pod" && i["status"]["phase"] == "Running")
        .expect("a running pod")
        .clone()
}

fn pod(t: &Value, i: usize) -> DynamicObject {
    let mut p = t.clone();
    p["metadata"]["name"] = format!("app-{i}-7d9f8c6b5-x2k4p").into();
    p["metadata"]["uid"] = format!("0b6c3f0e-55a1-4d2b-9f43-{i:012}").into();
    p["metadata"]["namespace"] = format!("ns-{}", i % 50).into();
    let ip = format!("10.{}.{}.{}", 64 + i / 65536, (i / 256) % 256, i % 256);
    p["status"]["podIP"] = ip.clone().into();
    p["status"]["podIPs"] = serde_json::json!([{ "ip": ip }]);
    serde_json::from_value(p).expect("DynamicObject")
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let t = template();
    let raw_json = serde_json::to_vec(&t).expect("json").len();

    let before = live();
    let reflector: Vec<DynamicObject> = (0..n).map(|i| pod(&t, i)).collect();
    let per_reflected = (live() - before) as f64 / n as f64;
    drop(reflector);

    let base = live();
    let store = ConfigStore::new(MeshConfig::default());
    let mut b = EventBatcher::new(&[Kind::Pod]);
    b.handle(Kind::Pod, Signal::Init);
    for i in 0..n {
        b.handle(Kind::Pod, Signal::from_event(Kind::Pod, "v1", Event::InitApply(pod(&t, i))));
    }
    b.handle(Kind::Pod, Signal::InitDone);
    let batch = b.take();
    store.apply(batch);
    let after = live();
    assert_eq!(store.current().workloads().len(), n);
    drop(store);
    // What is left is the batcher's own bookkeeping (unit name and hash per object).
    let bookkeeping = (live() - base) as f64 / n as f64;
    let store_model = (after - live()) as f64 / n as f64;
    drop(b);

    println!("pods: {n}; one pod as the API server sends it: {raw_json} bytes of JSON");
    println!("  kube-runtime reflector store (DynamicObject, not used): {per_reflected:.0} bytes/pod");
    println!(
        "  kube source: bookkeeping (unit name + hash) {bookkeeping:.0} bytes/pod; config store (parsed, pruned \
         objects) and model {store_model:.0} bytes/pod; total {:.0} bytes/pod",
        bookkeeping + store_model
    );
}
