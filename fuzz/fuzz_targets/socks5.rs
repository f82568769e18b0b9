//! ztunnel's SOCKS5 greeting and request parsers over arbitrary bytes (checks in
//! `mesh_fuzz::socks5`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::socks5::check(data));
