//! Trace context on the wire: W3C `traceparent` / `tracestate` (Trace Context Level 1, with
//! Level 2's `random` flag kept) and B3 (`x-b3-*` multi-header and the single `b3` header).
//! Parsers are pure and strict: ids are lowercase hex of the exact length and not all zero;
//! anything else is refused so the request starts a fresh trace instead of joining a bogus one.

use http::HeaderMap;

/// Why a trace header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("{0}: wrong length")]
    Length(&'static str),
    #[error("{0}: not lowercase hex")]
    NotHex(&'static str),
    #[error("{0}: all zeros")]
    Zero(&'static str),
    #[error("version ff is invalid")]
    VersionFf,
    #[error("misplaced or missing '-'")]
    Separator,
    #[error("sampling state must be 0, 1 or d")]
    Sampling,
    #[error("tracestate: {0}")]
    TraceState(&'static str),
}

/// Trace flags: `sampled`.
pub const FLAG_SAMPLED: u8 = 0x01;
/// Trace flags: Level 2's `random` (the trace id is random); kept since we never change it.
pub const FLAG_RANDOM: u8 = 0x02;
/// The flags we propagate; other bits are zeroed as the spec asks of unknown flags.
pub const KNOWN_FLAGS: u8 = FLAG_SAMPLED | FLAG_RANDOM;

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub version: u8,
    pub trace_id: u128,
    pub parent_id: u64,
    /// As received; unknown bits are dropped only when formatting.
    pub flags: u8,
}

impl TraceParent {
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Exactly `s.len()` lowercase hex digits (at most 32) as a number.
fn hex(s: &[u8], what: &'static str) -> Result<u128, ContextError> {
    debug_assert!(s.len() <= 32);
    s.iter()
        .try_fold(0u128, |acc, &c| Ok((acc << 4) | u128::from(hex_val(c).ok_or(ContextError::NotHex(what))?)))
}

fn nonzero(v: u128, what: &'static str) -> Result<u128, ContextError> {
    if v == 0 { Err(ContextError::Zero(what)) } else { Ok(v) }
}

/// Parses `traceparent` per W3C Trace Context: version 00 is exactly 55 characters; a later
/// version may carry more after a `-` (parsed as 00); `ff` is invalid; optional whitespace
/// around the value is ignored.
pub fn parse_traceparent(value: &str) -> Result<TraceParent, ContextError> {
    let b = value.trim_matches([' ', '\t']).as_bytes();
    if b.len() < 55 {
        return Err(ContextError::Length("traceparent"));
    }
    let version = hex(&b[0..2], "version")? as u8;
    if version == 0xff {
        return Err(ContextError::VersionFf);
    }
    if version == 0 && b.len() != 55 || version != 0 && b.len() > 55 && b[55] != b'-' {
        return Err(ContextError::Length("traceparent"));
    }
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return Err(ContextError::Separator);
    }
    let trace_id = nonzero(hex(&b[3..35], "trace-id")?, "trace-id")?;
    let parent_id = nonzero(hex(&b[36..52], "parent-id")?, "parent-id")? as u64;
    let flags = hex(&b[53..55], "trace-flags")? as u8;
    Ok(TraceParent { version, trace_id, parent_id, flags })
}

/// `00-<trace-id>-<parent-id>-<flags>`, always version 00, unknown flags zeroed.
pub fn format_traceparent(trace_id: u128, parent_id: u64, flags: u8) -> String {
    // Hand-rolled hex: this runs for every proxied request, and `format!` with `{:032x}`
    // costs several times more.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 55];
    out[..3].copy_from_slice(b"00-");
    for (i, slot) in out[3..35].iter_mut().enumerate() {
        *slot = HEX[((trace_id >> (124 - 4 * i)) & 0xf) as usize];
    }
    out[35] = b'-';
    for (i, slot) in out[36..52].iter_mut().enumerate() {
        *slot = HEX[((parent_id >> (60 - 4 * i)) & 0xf) as usize];
    }
    out[52] = b'-';
    let f = flags & KNOWN_FLAGS;
    out[53] = HEX[usize::from(f >> 4)];
    out[54] = HEX[usize::from(f & 0xf)];
    out.iter().map(|&b| char::from(b)).collect()
}

/// Checks a (combined) `tracestate`: at most 32 comma-separated `key=value` members with
/// W3C's key and value characters and no key twice. Empty members are allowed (OWS lists).
pub fn check_tracestate(value: &str) -> Result<(), ContextError> {
    if value.len() > 8192 {
        return Err(ContextError::TraceState("too long"));
    }
    let mut keys: Vec<&str> = Vec::new();
    for member in value.split(',').map(|m| m.trim_matches([' ', '\t'])).filter(|m| !m.is_empty()) {
        let (k, v) = member.split_once('=').ok_or(ContextError::TraceState("member without '='"))?;
        let key_ok = |k: &str| {
            !k.is_empty()
                && k.len() <= 256
                && k.as_bytes()[0].is_ascii_lowercase() | k.as_bytes()[0].is_ascii_digit()
                && k.bytes().all(|c| {
                    c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@')
                })
                && k.bytes().filter(|&c| c == b'@').count() <= 1
        };
        let val_ok = !v.is_empty()
            && v.len() <= 256
            && v.bytes().all(|c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
            && !v.ends_with(' ');
        if !key_ok(k) || !val_ok {
            return Err(ContextError::TraceState("bad member"));
        }
        if keys.contains(&k) {
            return Err(ContextError::TraceState("duplicate key"));
        }
        if keys.len() == 32 {
            return Err(ContextError::TraceState("more than 32 members"));
        }
        keys.push(k);
    }
    Ok(())
}

/// B3's sampling state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    Deny,
    Accept,
    /// Debug: sample, and tell the next hops.
    Debug,
}

/// A B3 trace id: 64 or 128 bits, remembering which was sent so it goes on in the same form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct B3TraceId {
    pub id: u128,
    pub short: bool,
}

impl B3TraceId {
    pub fn format(&self) -> String {
        if self.short && self.id >> 64 == 0 {
            format!("{:016x}", self.id)
        } else {
            format!("{:032x}", self.id)
        }
    }
}

/// B3 context, from either form. `ids` is absent when only a sampling decision was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct B3 {
    pub ids: Option<B3Ids>,
    pub sampling: Option<Sampling>,
}

/// The ids of a B3 context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct B3Ids {
    pub trace_id: B3TraceId,
    pub span_id: u64,
    pub parent_span_id: Option<u64>,
}

/// `X-B3-TraceId`: 16 or 32 lowercase hex digits, not all zero.
pub fn parse_b3_trace_id(s: &str) -> Result<B3TraceId, ContextError> {
    let b = s.as_bytes();
    if b.len() != 16 && b.len() != 32 {
        return Err(ContextError::Length("trace id"));
    }
    Ok(B3TraceId { id: nonzero(hex(b, "trace id")?, "trace id")?, short: b.len() == 16 })
}

/// `X-B3-SpanId` / `X-B3-ParentSpanId`: 16 lowercase hex digits, not all zero.
pub fn parse_b3_span_id(s: &str, what: &'static str) -> Result<u64, ContextError> {
    if s.len() != 16 {
        return Err(ContextError::Length(what));
    }
    Ok(nonzero(hex(s.as_bytes(), what)?, what)? as u64)
}

/// `X-B3-Sampled`: `1`/`0` (and the legacy `true`/`false`).
pub fn parse_b3_sampled(s: &str) -> Result<bool, ContextError> {
    match s {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(ContextError::Sampling),
    }
}

fn parse_sampling_state(s: &str) -> Result<Sampling, ContextError> {
    match s {
        "1" => Ok(Sampling::Accept),
        "0" => Ok(Sampling::Deny),
        "d" => Ok(Sampling::Debug),
        _ => Err(ContextError::Sampling),
    }
}

/// The single `b3` header: `{trace}-{span}[-{sampling}[-{parent}]]` or `{sampling}` alone.
pub fn parse_b3_single(value: &str) -> Result<B3, ContextError> {
    let v = value.trim_matches([' ', '\t']);
    let mut parts = v.split('-');
    let first = parts.next().unwrap_or_default();
    let Some(span) = parts.next() else {
        return Ok(B3 { ids: None, sampling: Some(parse_sampling_state(first)?) });
    };
    let trace_id = parse_b3_trace_id(first)?;
    let span_id = parse_b3_span_id(span, "span id")?;
    let sampling = parts.next().map(parse_sampling_state).transpose()?;
    let parent_span_id = parts.next().map(|p| parse_b3_span_id(p, "parent span id")).transpose()?;
    if parts.next().is_some() {
        return Err(ContextError::Separator);
    }
    Ok(B3 { ids: Some(B3Ids { trace_id, span_id, parent_span_id }), sampling })
}

/// Formats the single `b3` header.
pub fn format_b3_single(b3: &B3) -> String {
    let state = |s: Sampling| match s {
        Sampling::Deny => "0",
        Sampling::Accept => "1",
        Sampling::Debug => "d",
    };
    match (&b3.ids, b3.sampling) {
        (None, Some(s)) => state(s).to_string(),
        (None, None) => String::new(),
        (Some(ids), s) => {
            let mut out = format!("{}-{:016x}", ids.trace_id.format(), ids.span_id);
            if let Some(s) = s {
                out.push('-');
                out.push_str(state(s));
                if let Some(p) = ids.parent_span_id {
                    out.push_str(&format!("-{p:016x}"));
                }
            }
            out
        }
    }
}

pub static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
pub static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");
pub static B3_SINGLE: http::HeaderName = http::HeaderName::from_static("b3");
pub static B3_TRACE_ID: http::HeaderName = http::HeaderName::from_static("x-b3-traceid");
pub static B3_SPAN_ID: http::HeaderName = http::HeaderName::from_static("x-b3-spanid");
pub static B3_PARENT_SPAN_ID: http::HeaderName = http::HeaderName::from_static("x-b3-parentspanid");
pub static B3_SAMPLED: http::HeaderName = http::HeaderName::from_static("x-b3-sampled");
pub static B3_FLAGS: http::HeaderName = http::HeaderName::from_static("x-b3-flags");

/// The one value of a header, `None` when absent, repeated or not text.
fn single<'a>(h: &'a HeaderMap, name: &http::HeaderName) -> Option<&'a str> {
    let mut all = h.get_all(name).iter();
    let v = all.next()?;
    if all.next().is_some() {
        return None;
    }
    v.to_str().ok()
}

/// The multi-header B3 context; `Err` when a header is present but malformed (the whole
/// context is then ignored), `Ok(None)` when there is none.
pub fn parse_b3_multi(h: &HeaderMap) -> Result<Option<B3>, ContextError> {
    let present = |n| h.contains_key(n);
    if ![&B3_TRACE_ID, &B3_SPAN_ID, &B3_PARENT_SPAN_ID, &B3_SAMPLED, &B3_FLAGS].into_iter().any(present) {
        return Ok(None);
    }
    let get = |n: &http::HeaderName, what| match h.contains_key(n) {
        false => Ok(None),
        true => single(h, n).map(Some).ok_or(ContextError::Length(what)),
    };
    let debug = match get(&B3_FLAGS, "x-b3-flags")? {
        None => false,
        Some("1") => true,
        Some("0") => false,
        Some(_) => return Err(ContextError::Sampling),
    };
    let sampled = get(&B3_SAMPLED, "x-b3-sampled")?.map(parse_b3_sampled).transpose()?;
    let sampling = match (debug, sampled) {
        (true, _) => Some(Sampling::Debug),
        (false, Some(true)) => Some(Sampling::Accept),
        (false, Some(false)) => Some(Sampling::Deny),
        (false, None) => None,
    };
    let trace = get(&B3_TRACE_ID, "x-b3-traceid")?;
    let span = get(&B3_SPAN_ID, "x-b3-spanid")?;
    let parent = get(&B3_PARENT_SPAN_ID, "x-b3-parentspanid")?;
    let ids = match (trace, span) {
        (Some(t), Some(s)) => Some(B3Ids {
            trace_id: parse_b3_trace_id(t)?,
            span_id: parse_b3_span_id(s, "x-b3-spanid")?,
            parent_span_id: parent.map(|p| parse_b3_span_id(p, "x-b3-parentspanid")).transpose()?,
        }),
        (None, None) if parent.is_none() => None,
        // A trace id without a span id (or the reverse) is no context.
        _ => return Err(ContextError::Length("x-b3-traceid/x-b3-spanid")),
    };
    Ok(Some(B3 { ids, sampling }))
}

/// Which propagation formats a request arrived with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Formats {
    pub w3c: bool,
    pub b3_single: bool,
    pub b3_multi: bool,
}

/// The caller's context as the waypoint takes it: from a valid `traceparent`, else `b3`, else
/// the `x-b3-*` headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extracted {
    /// The caller's trace and span; `None`: start a trace.
    pub parent: Option<(u128, u64)>,
    /// The caller's decision, when it made one.
    pub sampled: Option<bool>,
    pub debug: bool,
    /// W3C flags to carry on (the random bit).
    pub w3c_flags: u8,
    /// The B3 trace id was 64-bit.
    pub b3_short: bool,
    /// Which headers were present (valid or not): B3 goes back out in the forms it came in.
    pub formats: Formats,
    /// `tracestate` is valid and belongs to the `traceparent` in use.
    pub keep_tracestate: bool,
}

/// Reads the trace headers of a request.
pub fn extract(h: &HeaderMap) -> Extracted {
    let mut x = Extracted {
        formats: Formats {
            w3c: h.contains_key(&TRACEPARENT),
            b3_single: h.contains_key(&B3_SINGLE),
            b3_multi: [&B3_TRACE_ID, &B3_SPAN_ID, &B3_SAMPLED, &B3_FLAGS]
                .into_iter()
                .any(|n| h.contains_key(n)),
        },
        ..Extracted::default()
    };
    if let Some(tp) = single(h, &TRACEPARENT).and_then(|v| parse_traceparent(v).ok()) {
        x.parent = Some((tp.trace_id, tp.parent_id));
        x.sampled = Some(tp.sampled());
        x.w3c_flags = tp.flags & FLAG_RANDOM;
        x.keep_tracestate =
            h.get_all(&TRACESTATE).iter().all(|v| v.to_str().is_ok_and(|s| check_tracestate(s).is_ok()));
        // A B3 debug flag still forces sampling of a W3C context.
        if let Some(b3) = b3_of(h)
            && b3.sampling == Some(Sampling::Debug)
        {
            x.debug = true;
        }
        return x;
    }
    if let Some(b3) = b3_of(h) {
        if let Some(ids) = b3.ids {
            x.parent = Some((ids.trace_id.id, ids.span_id));
            x.b3_short = ids.trace_id.short;
        }
        x.sampled = match b3.sampling {
            Some(Sampling::Deny) => Some(false),
            Some(Sampling::Accept | Sampling::Debug) => Some(true),
            None => None,
        };
        x.debug = b3.sampling == Some(Sampling::Debug);
    }
    x
}

/// The B3 context: the single header when valid, else the multi headers when valid.
fn b3_of(h: &HeaderMap) -> Option<B3> {
    if let Some(b3) = single(h, &B3_SINGLE).and_then(|v| parse_b3_single(v).ok()) {
        return Some(b3);
    }
    parse_b3_multi(h).ok().flatten()
}

/// Whether this request is sampled: debug forces it; a caller's decision is honoured either
/// way (parent-based); otherwise `roll` (uniform in [0, 100)) below `percent`.
pub fn decide(x: &Extracted, percent: f64, roll: f64) -> bool {
    if x.debug {
        return true;
    }
    match x.sampled {
        Some(s) => s,
        None => roll < percent,
    }
}

/// A random non-zero id.
pub fn random_u128() -> u128 {
    loop {
        let v: u128 = rand::random();
        if v != 0 {
            return v;
        }
    }
}

/// A random non-zero span id.
pub fn random_u64() -> u64 {
    loop {
        let v: u64 = rand::random();
        if v != 0 {
            return v;
        }
    }
}

/// The context the waypoint sends upstream: its own span as the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    pub trace_id: u128,
    /// The waypoint's span.
    pub span_id: u64,
    /// The caller's span (B3's `ParentSpanId` of ours).
    pub parent_span_id: Option<u64>,
    pub sampled: bool,
    pub debug: bool,
    pub w3c_flags: u8,
    pub b3_short: bool,
    /// Send the single `b3` header.
    pub b3_single: bool,
    /// Send the `x-b3-*` headers.
    pub b3_multi: bool,
    /// Keep the caller's `tracestate` (else it is removed: it belonged to a refused context).
    pub keep_tracestate: bool,
}

fn value(s: String) -> http::HeaderValue {
    // Hex digits and dashes only: always a valid header value.
    http::HeaderValue::try_from(s).unwrap_or(http::HeaderValue::from_static(""))
}

/// Writes `traceparent` (always) and B3 in the forms asked for, replacing what was there.
pub fn inject(h: &mut HeaderMap, o: &Outgoing) {
    let flags = o.w3c_flags & FLAG_RANDOM | if o.sampled { FLAG_SAMPLED } else { 0 };
    h.insert(TRACEPARENT.clone(), value(format_traceparent(o.trace_id, o.span_id, flags)));
    if !o.keep_tracestate {
        h.remove(&TRACESTATE);
    } else if h.get_all(&TRACESTATE).iter().nth(1).is_some() {
        // Several `tracestate` lines are one list; send it as one.
        let joined: Vec<&str> = h.get_all(&TRACESTATE).iter().filter_map(|v| v.to_str().ok()).collect();
        let joined = joined.join(",");
        h.insert(TRACESTATE.clone(), value(joined));
    }
    let trace_id = B3TraceId { id: o.trace_id, short: o.b3_short };
    let sampling = match (o.debug, o.sampled) {
        (true, _) => Sampling::Debug,
        (false, true) => Sampling::Accept,
        (false, false) => Sampling::Deny,
    };
    if o.b3_single {
        let ids = B3Ids { trace_id, span_id: o.span_id, parent_span_id: o.parent_span_id };
        h.insert(
            B3_SINGLE.clone(),
            value(format_b3_single(&B3 { ids: Some(ids), sampling: Some(sampling) })),
        );
    } else {
        h.remove(&B3_SINGLE);
    }
    for n in [&B3_TRACE_ID, &B3_SPAN_ID, &B3_PARENT_SPAN_ID, &B3_SAMPLED, &B3_FLAGS] {
        h.remove(n);
    }
    if o.b3_multi {
        h.insert(B3_TRACE_ID.clone(), value(trace_id.format()));
        h.insert(B3_SPAN_ID.clone(), value(format!("{:016x}", o.span_id)));
        if let Some(p) = o.parent_span_id {
            h.insert(B3_PARENT_SPAN_ID.clone(), value(format!("{p:016x}")));
        }
        // Debug implies sampled; B3 sends the flag instead of `x-b3-sampled`.
        if o.debug {
            h.insert(B3_FLAGS.clone(), http::HeaderValue::from_static("1"));
        } else {
            h.insert(B3_SAMPLED.clone(), http::HeaderValue::from_static(if o.sampled { "1" } else { "0" }));
        }
    }
}
