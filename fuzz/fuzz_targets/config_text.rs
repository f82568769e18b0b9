//! Arbitrary bytes as a config file: whatever the text, the pipeline must not panic, must
//! finish quickly and must keep the invariants of `mesh_fuzz::check_values`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        mesh_fuzz::check_text(text);
    }
});
