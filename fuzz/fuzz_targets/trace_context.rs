//! Trace context parsing (W3C `traceparent`/`tracestate`, B3 single and multi-header): never
//! panics; whatever parses formats to text that parses back to the same context (version 00,
//! unknown flags zeroed); the waypoint's injected headers read back as its own span, with the
//! sampling decision it made.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use waypoint::trace::context::*;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = check_tracestate(text);

    if let Ok(p) = parse_traceparent(text) {
        let out = format_traceparent(p.trace_id, p.parent_id, p.flags);
        let back = parse_traceparent(&out).expect("a formatted traceparent parses");
        assert_eq!((back.version, back.trace_id, back.parent_id), (0, p.trace_id, p.parent_id), "{text:?}");
        assert_eq!(back.flags, p.flags & KNOWN_FLAGS);
        let trimmed = text.trim_matches([' ', '\t']);
        if p.version == 0 && p.flags & !KNOWN_FLAGS == 0 {
            assert_eq!(out, trimmed, "version 00 round trip");
        }
    }

    if let Ok(b) = parse_b3_single(text) {
        let out = format_b3_single(&b);
        assert_eq!(parse_b3_single(&out), Ok(b), "{text:?} -> {out:?}");
        if !text.starts_with([' ', '\t']) && !text.ends_with([' ', '\t']) {
            assert_eq!(out, text, "b3 round trip");
        }
    }

    // Lines `name: value` as a request's headers.
    let mut h = HeaderMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.trim().as_bytes()), HeaderValue::from_str(v.trim()))
        else {
            continue;
        };
        h.append(k, v);
    }
    let _ = parse_b3_multi(&h);
    let x = extract(&h);
    let sampled = decide(&x, 50.0, 25.0);
    let (trace_id, parent) = x.parent.map_or((0x1234, None), |(t, p)| (t, Some(p)));
    let o = Outgoing {
        trace_id,
        span_id: 0xabcd,
        parent_span_id: parent,
        sampled,
        debug: x.debug,
        w3c_flags: x.w3c_flags,
        b3_short: x.b3_short,
        b3_single: x.formats.b3_single,
        b3_multi: x.formats.b3_multi,
        keep_tracestate: x.keep_tracestate,
    };
    inject(&mut h, &o);
    let again = extract(&h);
    assert_eq!(again.parent, Some((trace_id, 0xabcd)), "{text:?}");
    assert_eq!(again.sampled, Some(sampled));
    if o.b3_single {
        let b3 = parse_b3_single(h["b3"].to_str().unwrap()).expect("injected b3 parses");
        assert_eq!(
            b3.ids.map(|i| (i.trace_id.id, i.span_id, i.parent_span_id)),
            Some((trace_id, 0xabcd, parent))
        );
    }
    if o.b3_multi {
        let b3 = parse_b3_multi(&h).expect("injected x-b3 parses").expect("present");
        assert_eq!(
            b3.ids.map(|i| (i.trace_id.id, i.span_id, i.parent_span_id)),
            Some((trace_id, 0xabcd, parent))
        );
    }
});
