//! Grammar-built Istio/Gateway API/Kubernetes documents (see `mesh_fuzz::grammar`), written
//! out as YAML and as a JSON stream: both must split back into the same documents, and the
//! documents must keep every invariant of `mesh_fuzz::check_values`.
#![no_main]

use arbitrary::Unstructured;
use serde_json::Value;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(docs) = mesh_fuzz::grammar::documents(&mut u) else { return };
    let expected = mesh_fuzz::expand_lists(&docs);

    let json: String = docs.iter().map(|d| format!("{d}\n")).collect();
    assert_eq!(mesh_fuzz::split_ok(&json), expected, "JSON stream did not split back:\n{json}");

    let yaml: String =
        docs.iter().map(|d| format!("---\n{}", serde_yaml::to_string(d).expect("YAML output"))).collect();
    let from_yaml = mesh_fuzz::split_ok(&yaml);
    assert_eq!(from_yaml, expected, "YAML did not split back:\n{yaml}");

    mesh_fuzz::check_values(from_yaml.into_iter().map(|(i, v): (usize, Value)| (i, v)).collect());
});
