//! An HBONE CONNECT request built from the input (method, URI, headers; format in
//! `mesh_fuzz::hbone`) through `parse_connect`: no panic, 405 exactly for non-CONNECT,
//! accepted authorities usable (port not 0, IP specified), `build_connect` of the result
//! parses back to it, and `forwarded` values survive `forwarded_value` → `parse_forwarded_for`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::hbone::check_connect_input(data));
