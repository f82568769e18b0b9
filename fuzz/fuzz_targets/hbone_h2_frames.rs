//! Raw bytes after the HTTP/2 preface into an `h2` server set up as HBONE's, every decoded
//! request through `parse_connect` and answered as the HBONE server answers (see
//! `mesh_fuzz::h2_server`): no panic, and the server finishes once the client has closed.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::h2_server::check_frames(data));
