//! Fixture helpers: API-server JSON lists into watcher signals, and model dumps made
//! comparable across sources.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use mesh_api::Kind;
use mesh_kube::Signal;
use serde_json::Value;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The items of the `kubectl get -o json` lists under `fixtures/kube`, with their kind and
/// apiVersion, in file order.
pub fn kube_items() -> Vec<(Kind, String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join("kube"))
        .expect("fixtures/kube")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for f in files {
        let list: Value = serde_json::from_str(&std::fs::read_to_string(&f).expect("read")).expect("json");
        for item in list["items"].as_array().expect("items") {
            let av = item["apiVersion"].as_str().expect("apiVersion").to_string();
            let group = av.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
            let kind =
                Kind::from_group_kind(group, item["kind"].as_str().expect("kind")).expect("known kind");
            out.push((kind, av, item.clone()));
        }
    }
    out
}

pub fn object(v: &Value) -> DynamicObject {
    serde_json::from_value(v.clone()).expect("DynamicObject")
}

/// A watcher event for a fixture item, parsed into a signal.
pub fn signal(
    kind: Kind,
    api_version: &str,
    v: &Value,
    ev: fn(DynamicObject) -> Event<DynamicObject>,
) -> Signal {
    Signal::from_event(kind, api_version, ev(object(v)))
}

/// The initial list of every kind in `Kind::ALL` (empty lists for kinds with no item).
pub fn initial_list(items: &[(Kind, String, Value)]) -> Vec<(Kind, Signal)> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        out.push((kind, Signal::Init));
        for (k, av, v) in items.iter().filter(|(k, _, _)| *k == kind) {
            out.push((*k, signal(*k, av, v, Event::InitApply)));
        }
        out.push((kind, Signal::InitDone));
    }
    out
}

/// A model dump without what differs by source alone: the generation and origins.
pub fn comparable(mut dump: Value) -> Value {
    let m = dump.as_object_mut().expect("dump is an object");
    m.remove("generation");
    if let Some(Value::Array(ps)) = m.get_mut("policies") {
        for p in ps {
            p["origin"] = Value::Null;
        }
    }
    if let Some(Value::Array(os)) = m.get_mut("objects") {
        for o in os.iter_mut() {
            o["origin"] = Value::Null;
        }
    }
    dump
}
