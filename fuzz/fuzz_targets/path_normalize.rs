//! The waypoint's path normalisation (what authorization matches against): never panics; an
//! accepted path (other than `*`) is absolute, has no empty, `.` or `..` segments, no encoded slash or
//! backslash, and normalising it again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waypoint::security::normalize_path;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let Ok(norm) = normalize_path(raw) else { return };
    if raw == "*" {
        // The asterisk-form target (OPTIONS *) is accepted as it is.
        assert_eq!(norm, "*");
        return;
    }
    let (path, query) = match norm.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (&*norm, None),
    };
    assert!(path.starts_with('/'), "not absolute: {raw:?} -> {norm:?}");
    assert!(!path.contains("//"), "empty segment: {raw:?} -> {norm:?}");
    for seg in path.split('/').skip(1) {
        assert!(seg != "." && seg != "..", "dot segment left: {raw:?} -> {norm:?}");
    }
    let lower = path.to_ascii_lowercase();
    assert!(!lower.contains("%2f") && !lower.contains("%5c") && !path.contains('\\'), "{raw:?} -> {norm:?}");
    let again = normalize_path(&norm).expect("a normalised path is accepted again");
    assert_eq!(again, norm, "not idempotent for {raw:?}");
    if let Some(q) = query {
        assert!(raw.ends_with(q), "query changed: {raw:?} -> {norm:?}");
    }
});
