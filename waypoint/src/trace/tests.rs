//! Parser edge cases (W3C Trace Context and B3), sampling, header injection, and the
//! Telemetry API compilation.

use http::{HeaderMap, HeaderValue};
use mesh_api::{Origin, Parsed, parse_object, split_documents};
use mesh_model::{MeshConfig, Model, WaypointRef, translate};

use super::context::*;
use super::policy::{TagSource, TelemetryTracing};

const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const TID: u128 = 0x0af7651916cd43dd8448eb211c80319c;
const SID: u64 = 0xb7ad6b7169203331;

#[test]
fn traceparent_valid_and_round_trip() {
    let p = parse_traceparent(TP).unwrap();
    assert_eq!(p, TraceParent { version: 0, trace_id: TID, parent_id: SID, flags: 1 });
    assert!(p.sampled());
    assert_eq!(format_traceparent(p.trace_id, p.parent_id, p.flags), TP);
    let unsampled = parse_traceparent(&TP.replace("-01", "-00")).unwrap();
    assert!(!unsampled.sampled());
    // Optional whitespace around the value is not part of it.
    assert_eq!(parse_traceparent(&format!(" \t{TP} ")).unwrap(), p);
}

#[test]
fn traceparent_malformed_is_refused() {
    let cases: &[(&str, ContextError)] = &[
        ("", ContextError::Length("traceparent")),
        (&TP[..54], ContextError::Length("traceparent")),
        (&format!("{TP}0"), ContextError::Length("traceparent")),
        (&format!("{TP}-00"), ContextError::Length("traceparent")),
        ("00-00000000000000000000000000000000-b7ad6b7169203331-01", ContextError::Zero("trace-id")),
        ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", ContextError::Zero("parent-id")),
        ("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", ContextError::NotHex("trace-id")),
        ("00-0af7651916cd43dd8448eb211c80319c-B7AD6B7169203331-01", ContextError::NotHex("parent-id")),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0A", ContextError::NotHex("trace-flags")),
        ("0A-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", ContextError::NotHex("version")),
        ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", ContextError::VersionFf),
        ("00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", ContextError::Separator),
        ("00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01", ContextError::Separator),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331_01", ContextError::Separator),
        ("00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01", ContextError::NotHex("trace-id")),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333.-01", ContextError::NotHex("parent-id")),
        ("00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", ContextError::NotHex("trace-id")),
        // Shifted fields: right length, separators in the wrong places.
        ("000-af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", ContextError::Separator),
        // A later version must still have a dash after the flags when it is longer.
        ("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x", ContextError::Length("traceparent")),
    ];
    for (input, want) in cases {
        assert_eq!(parse_traceparent(input), Err(*want), "{input:?}");
    }
}

#[test]
fn traceparent_later_versions_and_unknown_flags() {
    // A later version is parsed as 00, ignoring what follows the flags after a dash.
    let p =
        parse_traceparent("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-holds")
            .unwrap();
    assert_eq!((p.version, p.trace_id, p.parent_id, p.flags), (0xcc, TID, SID, 1));
    assert!(parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00").is_ok());
    // Unknown flags are accepted and zeroed on the way out; `random` (0x02) is kept.
    let p = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff").unwrap();
    assert_eq!(p.flags, 0xff);
    assert!(p.sampled());
    assert!(format_traceparent(p.trace_id, p.parent_id, p.flags).ends_with("-03"));
    let p = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-08").unwrap();
    assert!(!p.sampled());
    assert!(format_traceparent(p.trace_id, p.parent_id, p.flags).ends_with("-00"));
}

#[test]
fn tracestate_checks() {
    assert!(check_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE").is_ok());
    assert!(check_tracestate("").is_ok());
    assert!(check_tracestate("a=1, ,b=2").is_ok(), "empty list members are allowed");
    assert!(check_tracestate("tenant@vendor=x").is_ok());
    let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    assert!(check_tracestate(&many[..32].join(",")).is_ok());
    assert_eq!(check_tracestate(&many.join(",")), Err(ContextError::TraceState("more than 32 members")));
    assert_eq!(check_tracestate("a=1,a=2"), Err(ContextError::TraceState("duplicate key")));
    for bad in ["Upper=1", "a", "=1", "a=", "a=b=c", "a=\u{7f}", "a@b@c=1", "-a=1", "a=1,,b"] {
        assert!(check_tracestate(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn b3_single_forms() {
    let t128 = "80f198ee56343ba864fe8b2a57d3eff7";
    let full = format!("{t128}-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90");
    let b = parse_b3_single(&full).unwrap();
    let ids = b.ids.unwrap();
    assert_eq!(ids.trace_id, B3TraceId { id: 0x80f198ee56343ba864fe8b2a57d3eff7, short: false });
    assert_eq!((ids.span_id, ids.parent_span_id), (0xe457b5a2e4d86bd1, Some(0x05e3ac9a4f6e3b90)));
    assert_eq!(b.sampling, Some(Sampling::Accept));
    assert_eq!(format_b3_single(&b), full);
    for v in [
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d",
        "64fe8b2a57d3eff7-e457b5a2e4d86bd1-0",
        "64fe8b2a57d3eff7-e457b5a2e4d86bd1-0-05e3ac9a4f6e3b90",
        "0",
        "1",
        "d",
    ] {
        let b = parse_b3_single(v).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(format_b3_single(&b), v, "round trip");
    }
    let short = parse_b3_single("64fe8b2a57d3eff7-e457b5a2e4d86bd1-d").unwrap();
    assert_eq!(short.ids.unwrap().trace_id, B3TraceId { id: 0x64fe8b2a57d3eff7, short: true });
    assert_eq!(short.sampling, Some(Sampling::Debug));
    assert_eq!(parse_b3_single("0").unwrap(), B3 { ids: None, sampling: Some(Sampling::Deny) });
    for bad in [
        "",
        "2",
        "true",
        "64fe8b2a57d3eff-e457b5a2e4d86bd1",
        "64FE8B2A57D3EFF7-e457b5a2e4d86bd1",
        "0000000000000000-e457b5a2e4d86bd1",
        "64fe8b2a57d3eff7-0000000000000000",
        "64fe8b2a57d3eff7-e457b5a2e4d86bd",
        "64fe8b2a57d3eff7-e457b5a2e4d86bd1-2",
        "64fe8b2a57d3eff7-e457b5a2e4d86bd1--05e3ac9a4f6e3b90",
        "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b9",
        "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-x",
        "80f198ee56343ba864fe8b2a57d3eff7a-e457b5a2e4d86bd1",
    ] {
        assert!(parse_b3_single(bad).is_err(), "{bad:?} accepted");
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn b3_multi_forms() {
    let h = headers(&[
        ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-parentspanid", "0020000000000001"),
        ("x-b3-sampled", "1"),
    ]);
    let b = parse_b3_multi(&h).unwrap().unwrap();
    let ids = b.ids.unwrap();
    assert_eq!(ids.trace_id.id, 0x463ac35c9f6413ad48485a3953bb6124);
    assert_eq!((ids.span_id, ids.parent_span_id), (0xa2fb4a1d1a96d312, Some(0x0020000000000001)));
    assert_eq!(b.sampling, Some(Sampling::Accept));
    assert_eq!(parse_b3_multi(&HeaderMap::new()), Ok(None));
    let only = parse_b3_multi(&headers(&[("x-b3-sampled", "0")])).unwrap().unwrap();
    assert_eq!(only, B3 { ids: None, sampling: Some(Sampling::Deny) });
    let legacy = parse_b3_multi(&headers(&[("x-b3-sampled", "true")])).unwrap().unwrap();
    assert_eq!(legacy.sampling, Some(Sampling::Accept));
    let debug = parse_b3_multi(&headers(&[("x-b3-flags", "1"), ("x-b3-sampled", "0")])).unwrap().unwrap();
    assert_eq!(debug.sampling, Some(Sampling::Debug), "debug wins over sampled");
    let deferred = parse_b3_multi(&headers(&[
        ("x-b3-traceid", "463ac35c9f6413ad"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(deferred.sampling, None);
    assert!(deferred.ids.unwrap().trace_id.short);
    for bad in [
        &[("x-b3-traceid", "463ac35c9f6413ad")][..],
        &[("x-b3-spanid", "a2fb4a1d1a96d312")],
        &[("x-b3-traceid", "463ac35c9f6413ad"), ("x-b3-spanid", "A2FB4A1D1A96D312")],
        &[("x-b3-traceid", "463ac35c9f6413a"), ("x-b3-spanid", "a2fb4a1d1a96d312")],
        &[("x-b3-sampled", "d")],
        &[("x-b3-flags", "2")],
        &[("x-b3-sampled", "1"), ("x-b3-sampled", "1")],
        &[("x-b3-parentspanid", "0020000000000001")],
    ] {
        assert!(parse_b3_multi(&headers(bad)).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn extract_prefers_w3c_then_b3_single_then_multi() {
    let w3c = extract(&headers(&[("traceparent", TP), ("tracestate", "a=1"), ("b3", "0")]));
    assert_eq!(w3c.parent, Some((TID, SID)));
    assert_eq!(w3c.sampled, Some(true));
    assert!(w3c.keep_tracestate && w3c.formats.w3c && w3c.formats.b3_single);
    let single = extract(&headers(&[
        ("traceparent", "00-00000000000000000000000000000000-b7ad6b7169203331-01"),
        ("tracestate", "a=1"),
        ("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-0"),
        ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
    ]));
    assert_eq!(single.parent, Some((0x64fe8b2a57d3eff7, 0xe457b5a2e4d86bd1)));
    assert_eq!(single.sampled, Some(false));
    assert!(single.b3_short);
    assert!(!single.keep_tracestate, "tracestate of a refused traceparent is dropped");
    let multi = extract(&headers(&[
        ("b3", "garbage"),
        ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-flags", "1"),
    ]));
    assert_eq!(multi.parent, Some((0x463ac35c9f6413ad48485a3953bb6124, 0xa2fb4a1d1a96d312)));
    assert!(multi.debug && multi.formats.b3_multi && multi.formats.b3_single);
    let two = extract(&headers(&[("traceparent", TP), ("traceparent", TP)]));
    assert_eq!(two.parent, None, "two traceparent headers are no context");
    let bad_state = extract(&headers(&[("traceparent", TP), ("tracestate", "A=1")]));
    assert!(!bad_state.keep_tracestate);
    let debug_over_w3c = extract(&headers(&[("traceparent", &TP.replace("-01", "-00")), ("b3", "d")]));
    assert!(debug_over_w3c.debug && decide(&debug_over_w3c, 0.0, 50.0));
    assert_eq!(extract(&HeaderMap::new()), Extracted::default());
}

#[test]
fn sampling_is_parent_based_else_random() {
    let none = Extracted::default();
    assert!(decide(&none, 1.0, 0.5));
    assert!(!decide(&none, 1.0, 1.0));
    assert!(!decide(&none, 0.0, 0.0), "0 % samples nothing");
    assert!(decide(&none, 100.0, 99.999), "100 % samples everything");
    let yes = Extracted { sampled: Some(true), ..Extracted::default() };
    let no = Extracted { sampled: Some(false), ..Extracted::default() };
    for percent in [0.0, 50.0, 100.0] {
        assert!(decide(&yes, percent, 99.0), "a sampled caller is followed at {percent}");
        assert!(!decide(&no, percent, 0.0), "an unsampled caller is followed at {percent}");
    }
    let debug = Extracted { sampled: Some(false), debug: true, ..Extracted::default() };
    assert!(decide(&debug, 0.0, 99.0));
    // Statistically: 10 % of 20,000 rolls, within ±1.5 points.
    let n = (0..20_000).filter(|_| decide(&none, 10.0, rand::random::<f64>() * 100.0)).count();
    assert!((1_700..=2_300).contains(&n), "{n}");
}

fn outgoing() -> Outgoing {
    Outgoing {
        trace_id: TID,
        span_id: 0x1111111111111111,
        parent_span_id: Some(SID),
        sampled: true,
        debug: false,
        w3c_flags: 0,
        b3_short: false,
        b3_single: false,
        b3_multi: false,
        keep_tracestate: true,
    }
}

#[test]
fn inject_updates_traceparent_and_b3_as_they_came() {
    let mut h = headers(&[("traceparent", TP), ("tracestate", "a=1"), ("tracestate", "b=2")]);
    inject(&mut h, &outgoing());
    assert_eq!(h["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-1111111111111111-01");
    assert_eq!(h.get_all("tracestate").iter().collect::<Vec<_>>(), ["a=1,b=2"]);
    assert!(h.get("b3").is_none() && h.get("x-b3-traceid").is_none());

    let mut h = headers(&[("tracestate", "a=1"), ("x-b3-sampled", "0"), ("b3", "1")]);
    let o = Outgoing {
        sampled: false,
        b3_multi: true,
        b3_single: true,
        keep_tracestate: false,
        w3c_flags: 0x02,
        ..outgoing()
    };
    inject(&mut h, &o);
    assert_eq!(h["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-1111111111111111-02");
    assert!(h.get("tracestate").is_none());
    assert_eq!(h["x-b3-traceid"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(h["x-b3-spanid"], "1111111111111111");
    assert_eq!(h["x-b3-parentspanid"], "b7ad6b7169203331");
    assert_eq!(h["x-b3-sampled"], "0");
    assert_eq!(h["b3"], "0af7651916cd43dd8448eb211c80319c-1111111111111111-0-b7ad6b7169203331");

    // Debug: the flag instead of sampled; a 64-bit trace id stays 64-bit; no parent.
    let mut h = headers(&[("x-b3-sampled", "1")]);
    let o = Outgoing {
        trace_id: 0x64fe8b2a57d3eff7,
        parent_span_id: None,
        debug: true,
        b3_short: true,
        b3_multi: true,
        ..outgoing()
    };
    inject(&mut h, &o);
    assert_eq!(h["x-b3-traceid"], "64fe8b2a57d3eff7");
    assert_eq!(h["x-b3-flags"], "1");
    assert!(h.get("x-b3-sampled").is_none() && h.get("x-b3-parentspanid").is_none());
    assert_eq!(h["traceparent"], "00-000000000000000064fe8b2a57d3eff7-1111111111111111-01");
    let back = extract(&h);
    assert_eq!(back.parent, Some((0x64fe8b2a57d3eff7, 0x1111111111111111)));
    assert!(back.debug);
}

// ---- Telemetry API ----

const BASE: &str =
    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  labels: {istio.io/use-waypoint: waypoint}\n";

fn model(extra: &str) -> Model {
    let text = format!("{BASE}---\n{extra}");
    let mut objects = Vec::new();
    for doc in split_documents(&text) {
        match parse_object(doc.unwrap().value) {
            Parsed::Object { object, .. } => objects.push((object, Origin::Unknown)),
            other => panic!("bad test document: {other:?}"),
        }
    }
    translate(&objects, &MeshConfig::default()).0
}

fn telemetry(name: &str, ns: &str, created: Option<&str>, spec: &str) -> String {
    let ts = created.map(|c| format!(", creationTimestamp: \"{c}\"")).unwrap_or_default();
    format!(
        "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {ns}{ts}}}\nspec:\n{spec}"
    )
}

fn waypoint() -> WaypointRef {
    WaypointRef { namespace: "demo".into(), name: "waypoint".into() }
}

#[test]
fn telemetry_most_specific_wins_field_by_field() {
    let y = [
        telemetry(
            "mesh-default",
            "istio-system",
            None,
            "  tracing: [{randomSamplingPercentage: 5, disableSpanReporting: true, customTags: {team: {literal: {value: platform}}, env: {literal: {value: prod}}}}]\n",
        ),
        telemetry("ns", "demo", None, "  tracing: [{randomSamplingPercentage: 20}]\n"),
        telemetry(
            "wp",
            "demo",
            None,
            "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]\n  \
             tracing: [{disableSpanReporting: false, customTags: {team: {header: {name: x-team, defaultValue: none}}}}]\n",
        ),
        // Neither applies: another Gateway, and the client side only.
        telemetry(
            "other-gw",
            "demo",
            None,
            "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: other}]\n  \
             tracing: [{randomSamplingPercentage: 99}]\n",
        ),
        telemetry(
            "other-ns",
            "elsewhere",
            None,
            "  tracing: [{randomSamplingPercentage: 77, disableContextPropagation: true}]\n",
        ),
    ]
    .concat();
    let (t, warnings) = TelemetryTracing::compile(&model(&y), &waypoint());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(t.sources, ["istio-system/mesh-default", "demo/ns", "demo/wp"]);
    assert_eq!(t.random_sampling_percentage, Some(20.0));
    assert_eq!(t.disable_span_reporting, Some(false));
    assert_eq!(t.disable_context_propagation, None);
    let tags: Vec<(&str, &TagSource)> = t.custom_tags.iter().map(|(k, v)| (&**k, v)).collect();
    assert_eq!(tags.len(), 2, "{tags:?}");
    assert!(tags.contains(&("env", &TagSource::Literal("prod".into()))));
    let team = tags.iter().find(|(k, _)| *k == "team").unwrap().1;
    assert!(
        matches!(team, TagSource::Header { name, default: Some(d) } if name == "x-team" && &**d == "none")
    );
}

#[test]
fn telemetry_oldest_wins_at_one_level_and_client_mode_is_ignored() {
    let y = [
        telemetry("b-newer", "demo", Some("2024-02-01T00:00:00Z"), "  tracing: [{randomSamplingPercentage: 30}]\n"),
        telemetry("a-older", "demo", Some("2024-01-01T00:00:00Z"), "  tracing: [{randomSamplingPercentage: 40}]\n"),
        telemetry(
            "wp",
            "demo",
            None,
            "  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}\n  \
             tracing:\n  - {match: {mode: CLIENT}, randomSamplingPercentage: 90}\n  \
             - {match: {mode: SERVER}, disableContextPropagation: true, customTags: {f: {formatter: {value: '%REQ(x)%'}}}}\n",
        ),
    ]
    .concat();
    let (t, warnings) = TelemetryTracing::compile(&model(&y), &waypoint());
    assert_eq!(t.sources, ["demo/a-older", "demo/wp"]);
    assert_eq!(t.random_sampling_percentage, Some(40.0));
    assert_eq!(t.disable_context_propagation, Some(true));
    assert!(t.custom_tags.is_empty());
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("Telemetry demo/wp: spec.tracing[1].customTags.f: formatter"),
        "{warnings:?}"
    );
    let (none, _) = TelemetryTracing::compile(&model(""), &waypoint());
    assert_eq!(none, TelemetryTracing::default());
}
