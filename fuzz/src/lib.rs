//! Shared checks of the fuzz targets: the config pipeline (`split_documents` →
//! `parse_object` → `translate`) run on one input, with the invariants that must hold for
//! any input. A broken invariant panics, which libFuzzer reports as a crash.

pub mod grammar;

use std::collections::HashSet;
use std::sync::Arc;

use mesh_api::{Diagnostic, Object, ObjectKey, Origin, Parsed, parse_object, split_documents};
use mesh_model::{MeshConfig, translate};
use serde_json::Value;

/// Runs the whole pipeline on a file's text, as the file source does.
pub fn check_text(text: &str) {
    let mut values = Vec::new();
    for doc in split_documents(text) {
        match doc {
            Ok(d) => values.push((d.index, d.value)),
            Err(e) => {
                assert!(!e.message.is_empty(), "empty DocError message for {text:?}");
                check_line(&e.to_string(), "DocError");
            }
        }
    }
    check_values(values);
}

/// The documents `split_documents` must find in a stream of `docs`: `*List` documents
/// with an `items` array expand into their items; null documents are skipped.
pub fn expand_lists(docs: &[Value]) -> Vec<(usize, Value)> {
    let mut out = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let is_list = d.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List"));
        match d.get("items").and_then(Value::as_array) {
            Some(items) if is_list => out.extend(items.iter().map(|v| (i, v.clone()))),
            _ if d.is_null() => {}
            _ => out.push((i, d.clone())),
        }
    }
    out
}

/// `split_documents`, asserting every document reads; (document index, value) pairs.
pub fn split_ok(text: &str) -> Vec<(usize, Value)> {
    split_documents(text)
        .into_iter()
        .map(|d| {
            let d = d.unwrap_or_else(|e| panic!("valid document refused: {e}
{text}"));
            (d.index, d.value)
        })
        .collect()
}

/// Parses each document value (twice: determinism), checks every diagnostic, round-trips
/// every accepted object through its serialised form, then translates the accepted set.
pub fn check_values(values: Vec<(usize, Value)>) {
    let unit: Arc<str> = "fuzz.yaml".into();
    let mut seen: HashSet<ObjectKey> = HashSet::new();
    let mut objects: Vec<(Object, Origin)> = Vec::new();
    for (index, value) in values {
        let first = parse_object(value.clone());
        let second = parse_object(value);
        assert_same(&first, &second);
        match first {
            Parsed::Object { object, warnings } => {
                check_diags(&warnings);
                assert!(warnings.iter().all(|w| !w.is_error()), "error among warnings: {warnings:?}");
                check_round_trip(&object);
                if seen.insert(object.key()) {
                    objects.push((object, Origin::File { path: unit.clone(), doc: index }));
                }
            }
            Parsed::Ignored { object, api_version } => {
                assert!(!api_version.is_empty(), "ignored {object} without apiVersion");
            }
            Parsed::Invalid { diagnostics, .. } => {
                assert!(!diagnostics.is_empty(), "Invalid without diagnostics");
                assert!(diagnostics.iter().any(Diagnostic::is_error), "Invalid without an error: {diagnostics:?}");
                check_diags(&diagnostics);
            }
        }
    }
    let (_model, diags) = translate(&objects, &MeshConfig::default());
    check_diags(&diags);
}

/// The same input must give the same answer (no hidden state, no hash-order leaks).
fn assert_same(a: &Parsed, b: &Parsed) {
    match (a, b) {
        (Parsed::Object { object: o1, warnings: w1 }, Parsed::Object { object: o2, warnings: w2 }) => {
            assert!(o1 == o2, "nondeterministic object:\n{o1:?}\n{o2:?}");
            assert_eq!(w1, w2, "nondeterministic warnings");
        }
        (Parsed::Ignored { object: r1, api_version: v1 }, Parsed::Ignored { object: r2, api_version: v2 }) => {
            assert_eq!((r1, v1), (r2, v2), "nondeterministic ignore");
        }
        (Parsed::Invalid { key: k1, diagnostics: d1 }, Parsed::Invalid { key: k2, diagnostics: d2 }) => {
            assert_eq!(k1, k2, "nondeterministic key");
            assert_eq!(d1, d2, "nondeterministic diagnostics");
        }
        _ => panic!("nondeterministic parse:\n{a:?}\n{b:?}"),
    }
}

/// Every diagnostic prints as one non-empty line with a non-empty message.
fn check_diags(diags: &[Diagnostic]) {
    for d in diags {
        assert!(!d.message.trim().is_empty(), "empty diagnostic message: {d:?}");
        check_line(&d.field, "diagnostic field");
        check_line(&d.message, "diagnostic message");
        check_line(&d.to_string(), "diagnostic");
    }
}

fn check_line(s: &str, what: &str) {
    assert!(!s.contains(['\n', '\r']), "{what} spans several lines: {s:?}");
}

/// An accepted object, written back out as Kubernetes JSON, must parse again to the same
/// object (what `/config_dump` shows is what would be loaded).
fn check_round_trip(object: &Object) {
    let json = serde_json::to_value(object).expect("accepted object does not serialise");
    match parse_object(json.clone()) {
        Parsed::Object { object: again, .. } => {
            assert_eq!(again.key(), object.key(), "round trip changed the key");
            assert!(&again == object, "round trip changed the object:\nbefore {object:?}\nafter  {again:?}\njson {json}");
        }
        other => panic!("accepted object refused after a round trip:\n{object:?}\njson {json}\n{other:?}"),
    }
}
