//! Shared checks of the fuzz targets: the config pipeline (`split_documents` →
//! `parse_object` → `translate`) run on one input, with the invariants that must hold for
//! any input; the HBONE checks live in [`hbone`] and [`h2_server`]. A broken invariant
//! panics, which libFuzzer reports as a crash.

pub mod grammar;
pub mod h2_server;
pub mod hbone;
pub mod socks5;

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

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

/// Value equality, with floats equal to within a few ulps: serde_json (without its
/// `float_roundtrip` feature) may read the last digit of a printed double differently.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            x == y || (x - y).abs() <= 1e-14 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// Documents equal by index and [`same_value`].
pub fn same_docs(a: &[(usize, Value)], b: &[(usize, Value)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((i, x), (j, y))| i == j && same_value(x, y))
}

/// `split_documents`, asserting every document reads; (document index, value) pairs.
pub fn split_ok(text: &str) -> Vec<(usize, Value)> {
    split_documents(text)
        .into_iter()
        .map(|d| {
            let d = d.unwrap_or_else(|e| {
                panic!(
                    "valid document refused: {e}
{text}"
                )
            });
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
                assert!(
                    diagnostics.iter().any(Diagnostic::is_error),
                    "Invalid without an error: {diagnostics:?}"
                );
                check_diags(&diagnostics);
            }
        }
    }
    let (_model, diags) = translate(&objects, &MeshConfig::default());
    check_diags(&diags);
    // Same objects, same diagnostics in the same order (`meshctl analyze` output is stable).
    let (_, again) = translate(&objects, &MeshConfig::default());
    if diags != again {
        let (mut a, mut b) = (diags.clone(), again.clone());
        a.sort_by_key(ToString::to_string);
        b.sort_by_key(ToString::to_string);
        assert_eq!(a, b, "translate is nondeterministic");
        assert!(
            skipped("translate-diag-order"),
            "translate diagnostics come in a varying order:\n{diags:#?}\n{again:#?}"
        );
    }
}

/// The same input must give the same answer (no hidden state, no hash-order leaks).
fn assert_same(a: &Parsed, b: &Parsed) {
    match (a, b) {
        (Parsed::Object { object: o1, warnings: w1 }, Parsed::Object { object: o2, warnings: w2 }) => {
            assert!(o1 == o2, "nondeterministic object:\n{o1:?}\n{o2:?}");
            assert_eq!(w1, w2, "nondeterministic warnings");
        }
        (
            Parsed::Ignored { object: r1, api_version: v1 },
            Parsed::Ignored { object: r2, api_version: v2 },
        ) => {
            assert_eq!((r1, v1), (r2, v2), "nondeterministic ignore");
        }
        (Parsed::Invalid { key: k1, diagnostics: d1 }, Parsed::Invalid { key: k2, diagnostics: d2 }) => {
            assert_eq!(k1, k2, "nondeterministic key");
            assert_eq!(d1, d2, "nondeterministic diagnostics");
        }
        _ => panic!("nondeterministic parse:\n{a:?}\n{b:?}"),
    }
}

/// Whether a check of a known, reported bug is switched off (`MESH_FUZZ_SKIP`, a comma list
/// of check ids, as `scripts/fuzz` sets from `fuzz/known-bugs`), so fuzzing can get past it.
/// The regression replay runs with every check on.
pub(crate) fn skipped(check: &str) -> bool {
    static SKIP: OnceLock<Vec<String>> = OnceLock::new();
    SKIP.get_or_init(|| {
        std::env::var("MESH_FUZZ_SKIP")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .iter()
    .any(|s| s == check)
}

/// Every diagnostic has a message, and its rendered forms (what `analyze`, logs and
/// `/config_dump` show) are one line each, whatever the document held: names, label keys and
/// values quoted in messages are user text, and rendering escapes control characters in them.
fn check_diags(diags: &[Diagnostic]) {
    for d in diags {
        assert!(!d.message.trim().is_empty(), "empty diagnostic message: {d:?}");
        check_line(&d.object.to_string(), "diagnostic object");
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
            assert!(
                &again == object,
                "round trip changed the object:\nbefore {object:?}\nafter  {again:?}\njson {json}"
            );
        }
        other => panic!("accepted object refused after a round trip:\n{object:?}\njson {json}\n{other:?}"),
    }
}
