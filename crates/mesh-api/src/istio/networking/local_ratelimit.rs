//! Envoy's `envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`, decoded from the
//! JSON of an EnvoyFilter patch (`typed_config`, or a route's `typed_per_filter_config`).
//!
//! Accepted wrappers: the direct `"@type": type.googleapis.com/envoy.extensions.filters.http.
//! local_ratelimit.v3.LocalRateLimit` with the fields beside it, and `TypedStruct`
//! (`udpa.type.v1` or `xds.type.v3`) with `type_url` naming LocalRateLimit and the fields in
//! `value`. Field names are taken in proto form (`fill_interval`) or JSON form
//! (`fillInterval`); integers as numbers or decimal strings; durations as protobuf JSON
//! (`"60s"`, `"0.5s"`). Every problem is reported with its field path, all at once.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

/// The HTTP filter's name.
pub const LOCAL_RATELIMIT_FILTER: &str = "envoy.filters.http.local_ratelimit";
/// The config's type URL.
pub const LOCAL_RATELIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
/// `TypedStruct` type URLs (the config is in its `value`).
pub const TYPED_STRUCT_TYPES: [&str; 2] =
    ["type.googleapis.com/udpa.type.v1.TypedStruct", "type.googleapis.com/xds.type.v3.TypedStruct"];

/// Envoy's floor for `fill_interval`.
pub const MIN_FILL_INTERVAL: Duration = Duration::from_millis(50);

/// A decoded LocalRateLimit: what the waypoint enforces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct LocalRateLimit {
    /// Stats prefix (required by Envoy; reported in logs).
    pub stat_prefix: String,
    /// The bucket; `None` at filter level = no limit there (routes may set their own).
    pub token_bucket: Option<TokenBucket>,
    /// Share of requests checked against the bucket; absent = 0 % (Envoy's default).
    pub filter_enabled: Option<FractionalPercent>,
    /// Share of checked-and-over-limit requests refused; absent = 0 % (counted, passed).
    pub filter_enforced: Option<FractionalPercent>,
    /// Headers added to the limited response.
    pub response_headers_to_add: Vec<HeaderValueOption>,
    /// Headers added to a request over the limit that is not enforced.
    pub request_headers_to_add_when_not_enforced: Vec<HeaderValueOption>,
    /// Status of the limited response (HTTP status code; 429 by default).
    pub status: u16,
    /// `enable_x_ratelimit_headers: DRAFT_VERSION_03`: `x-ratelimit-limit/-remaining/-reset`.
    pub x_ratelimit_headers: bool,
    /// One bucket per downstream connection instead of one shared bucket.
    pub per_connection: bool,
    /// gRPC requests get `RESOURCE_EXHAUSTED` instead of `UNAVAILABLE`.
    pub rate_limited_as_resource_exhausted: bool,
}

/// `envoy.type.v3.TokenBucket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct TokenBucket {
    /// Bucket size (tokens; the bucket starts full).
    pub max_tokens: u32,
    /// Tokens added per fill (default 1).
    pub tokens_per_fill: u32,
    /// Time between fills.
    pub fill_interval: Duration,
}

/// `envoy.type.v3.FractionalPercent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct FractionalPercent {
    pub numerator: u32,
    pub denominator: Denominator,
}

impl FractionalPercent {
    /// The share in parts per million, capped at 1,000,000 (a numerator above the denominator
    /// means 100 %, as in Envoy).
    pub fn per_million(&self) -> u32 {
        let scale = match self.denominator {
            Denominator::Hundred => 10_000u64,
            Denominator::TenThousand => 100,
            Denominator::Million => 1,
        };
        (u64::from(self.numerator) * scale).min(1_000_000) as u32
    }
}

/// `FractionalPercent.DenominatorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Denominator {
    Hundred,
    TenThousand,
    Million,
}

/// `envoy.config.core.v3.HeaderValueOption`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct HeaderValueOption {
    /// Header name (lower-cased).
    pub key: String,
    pub value: String,
    pub action: AppendAction,
}

/// `HeaderValueOption.HeaderAppendAction` (also what the older `append` bool means).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum AppendAction {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

/// A problem found while decoding an EnvoyFilter patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchProblem {
    /// Field path from the object root (`spec.configPatches[0].patch.value...`).
    pub field: String,
    pub message: String,
    /// An error refuses the object; a warning says what is ignored.
    pub error: bool,
}

/// Collects problems while walking JSON.
pub(crate) struct Decoder<'p> {
    pub(crate) problems: &'p mut Vec<PatchProblem>,
}

impl Decoder<'_> {
    pub(crate) fn err(&mut self, field: &str, message: impl Into<String>) {
        self.problems.push(PatchProblem { field: field.to_string(), message: message.into(), error: true });
    }

    pub(crate) fn warn(&mut self, field: &str, message: impl Into<String>) {
        self.problems.push(PatchProblem { field: field.to_string(), message: message.into(), error: false });
    }

    /// The entries of an object as (proto field name, path, value); `None` (reported) if `v`
    /// is not an object.
    pub(crate) fn fields<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
    ) -> Option<Vec<(String, String, &'v Value)>> {
        let Value::Object(map) = v else {
            self.err(path, format!("must be an object, got {}", kind_of(v)));
            return None;
        };
        Some(entries(map, path))
    }

    /// `path` ends with the key as written, which the message repeats.
    fn unknown(&mut self, path: &str, what: &str, known: &[&str]) {
        let key = path.rsplit_once('.').map_or(path, |(_, k)| k);
        self.err(path, format!("unknown field {key:?} of {what} (known: {})", known.join(", ")));
    }

    fn u32(&mut self, v: &Value, path: &str) -> Option<u32> {
        let n = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse::<u64>().ok(),
            _ => None,
        };
        match n.and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                self.err(path, format!("must be an integer in 0..4294967295, got {v}"));
                None
            }
        }
    }

    fn bool(&mut self, v: &Value, path: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            _ => {
                self.err(path, format!("must be true or false, got {v}"));
                None
            }
        }
    }

    pub(crate) fn string<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v str> {
        match v {
            Value::String(s) => Some(s),
            _ => {
                self.err(path, format!("must be a string, got {}", kind_of(v)));
                None
            }
        }
    }

    fn duration(&mut self, v: &Value, path: &str) -> Option<Duration> {
        let parsed = self.string(v, path).map(|s| (s, parse_proto_duration(s)));
        match parsed {
            Some((_, Some(d))) => Some(d),
            Some((s, None)) => {
                self.err(
                    path,
                    format!("{s:?} is not a protobuf duration (seconds with an \"s\" suffix, e.g. \"60s\")"),
                );
                None
            }
            None => None,
        }
    }
}

/// `"60s"`, `"1.5s"`, `"0.050s"`: protobuf JSON durations (non-negative).
pub fn parse_proto_duration(s: &str) -> Option<Duration> {
    let num = s.strip_suffix('s')?;
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (num.contains('.') && frac.is_empty()) {
        return None;
    }
    let secs: u64 = whole.parse().ok()?;
    let nanos: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
    Some(Duration::new(secs, nanos))
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `fillInterval` → `fill_interval`; proto names pass unchanged.
pub(crate) fn proto_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) fn entries<'v>(map: &'v Map<String, Value>, path: &str) -> Vec<(String, String, &'v Value)> {
    map.iter()
        .map(|(k, v)| {
            let name = if k.starts_with('@') { k.clone() } else { proto_name(k) };
            (name, format!("{path}.{k}"), v)
        })
        .collect()
}

const LRL_FIELDS: &[&str] = &[
    "stat_prefix",
    "token_bucket",
    "filter_enabled",
    "filter_enforced",
    "response_headers_to_add",
    "request_headers_to_add_when_not_enforced",
    "status",
    "enable_x_ratelimit_headers",
    "local_rate_limit_per_downstream_connection",
    "rate_limited_as_resource_exhausted",
    "descriptors",
    "stage",
    "always_consume_default_token_bucket",
    "vh_rate_limits",
    "rate_limits",
    "local_cluster_rate_limit",
    "max_dynamic_descriptors",
];

/// Decodes a `typed_config` (an `Any`) holding a LocalRateLimit at `path`. `per_route`: a
/// route's config, which needs a token bucket.
pub(crate) fn decode_any(
    d: &mut Decoder<'_>,
    v: &Value,
    path: &str,
    per_route: bool,
) -> Option<LocalRateLimit> {
    let fields = d.fields(v, path)?;
    let ty = fields.iter().find(|(k, _, _)| k == "@type");
    let Some((_, ty_path, ty)) = ty else {
        d.err(path, format!("\"@type\" is required (\"{LOCAL_RATELIMIT_TYPE}\" or a TypedStruct)"));
        return None;
    };
    let ty = d.string(ty, ty_path)?;
    if ty == LOCAL_RATELIMIT_TYPE {
        let rest: Vec<_> = fields.into_iter().filter(|(k, _, _)| k != "@type").collect();
        return decode_fields(d, rest, path, per_route);
    }
    if !TYPED_STRUCT_TYPES.contains(&ty) {
        d.err(
            ty_path,
            format!(
                "unsupported type {ty:?} (expected \"{LOCAL_RATELIMIT_TYPE}\" or a TypedStruct holding it)"
            ),
        );
        return None;
    }
    let (mut type_url, mut value) = (None, None);
    for (k, p, v) in fields {
        match k.as_str() {
            "@type" => {}
            "type_url" => type_url = d.string(v, &p).map(|s| (s.to_string(), p)),
            "value" => value = Some((v, p)),
            _ => d.unknown(&p, "TypedStruct", &["@type", "type_url", "value"]),
        }
    }
    match &type_url {
        None => d.err(path, "type_url is required in a TypedStruct"),
        Some((u, p)) if u != LOCAL_RATELIMIT_TYPE => {
            d.err(p, format!("unsupported type {u:?} (expected \"{LOCAL_RATELIMIT_TYPE}\")"));
        }
        Some(_) => {}
    }
    let empty = Value::Object(Map::new());
    let (value, vpath) = value.unwrap_or((&empty, format!("{path}.value")));
    let fields = d.fields(value, &vpath)?;
    let out = decode_fields(d, fields, &vpath, per_route);
    if type_url.as_ref().is_some_and(|(u, _)| u == LOCAL_RATELIMIT_TYPE) { out } else { None }
}

fn decode_fields(
    d: &mut Decoder<'_>,
    fields: Vec<(String, String, &Value)>,
    path: &str,
    per_route: bool,
) -> Option<LocalRateLimit> {
    let before = d.problems.iter().filter(|p| p.error).count();
    let mut c = LocalRateLimit {
        stat_prefix: String::new(),
        token_bucket: None,
        filter_enabled: None,
        filter_enforced: None,
        response_headers_to_add: Vec::new(),
        request_headers_to_add_when_not_enforced: Vec::new(),
        status: 429,
        x_ratelimit_headers: false,
        per_connection: false,
        rate_limited_as_resource_exhausted: false,
    };
    for (k, p, v) in fields {
        match k.as_str() {
            "stat_prefix" => c.stat_prefix = d.string(v, &p).unwrap_or_default().to_string(),
            "token_bucket" => c.token_bucket = token_bucket(d, v, &p),
            "filter_enabled" => c.filter_enabled = runtime_percent(d, v, &p),
            "filter_enforced" => c.filter_enforced = runtime_percent(d, v, &p),
            "response_headers_to_add" => c.response_headers_to_add = headers(d, v, &p),
            "request_headers_to_add_when_not_enforced" => {
                c.request_headers_to_add_when_not_enforced = headers(d, v, &p)
            }
            "status" => c.status = status(d, v, &p).unwrap_or(429),
            "enable_x_ratelimit_headers" => {
                c.x_ratelimit_headers = match v {
                    Value::String(s) if s == "DRAFT_VERSION_03" => true,
                    Value::Number(n) if n.as_u64() == Some(1) => true,
                    Value::String(s) if s == "OFF" => false,
                    Value::Number(n) if n.as_u64() == Some(0) => false,
                    _ => {
                        d.err(&p, format!("must be OFF or DRAFT_VERSION_03, got {v}"));
                        false
                    }
                }
            }
            "local_rate_limit_per_downstream_connection" => c.per_connection = d.bool(v, &p).unwrap_or(false),
            "rate_limited_as_resource_exhausted" => {
                c.rate_limited_as_resource_exhausted = d.bool(v, &p).unwrap_or(false)
            }
            "always_consume_default_token_bucket" => {
                d.bool(v, &p);
            }
            "descriptors" | "stage" | "vh_rate_limits" | "rate_limits" | "max_dynamic_descriptors" => {
                d.warn(&p, "descriptors are not supported; ignored (only the default token bucket applies)")
            }
            "local_cluster_rate_limit" => d.warn(
                &p,
                "not supported; ignored (each waypoint replica has its own bucket, as without this field)",
            ),
            _ => d.unknown(&p, "LocalRateLimit", LRL_FIELDS),
        }
    }
    if c.stat_prefix.is_empty() {
        d.err(&format!("{path}.stat_prefix"), "is required");
    }
    if per_route && c.token_bucket.is_none() {
        d.err(&format!("{path}.token_bucket"), "is required in a route's configuration");
    }
    if c.token_bucket.is_some() && c.filter_enabled.is_none() {
        d.warn(
            &format!("{path}.filter_enabled"),
            "absent: Envoy enables the limit for 0% of requests, so nothing is limited",
        );
    }
    let errors = d.problems.iter().filter(|p| p.error).count();
    (errors == before).then_some(c)
}

fn token_bucket(d: &mut Decoder<'_>, v: &Value, path: &str) -> Option<TokenBucket> {
    let fields = d.fields(v, path)?;
    let (mut max, mut per_fill, mut interval) = (None, 1u32, None);
    for (k, p, v) in fields {
        match k.as_str() {
            "max_tokens" => max = d.u32(v, &p),
            "tokens_per_fill" => {
                // A wrapper type: a number, or `{value: N}` in some generated YAML.
                let v = v.get("value").unwrap_or(v);
                if let Some(n) = d.u32(v, &p) {
                    if n == 0 {
                        d.err(&p, "must be greater than 0");
                    }
                    per_fill = n;
                }
            }
            "fill_interval" => {
                interval = d.duration(v, &p);
                if let Some(i) = interval
                    && i < MIN_FILL_INTERVAL
                {
                    d.err(&p, format!("{i:?} is below Envoy's minimum of 50ms"));
                }
            }
            _ => d.unknown(&p, "TokenBucket", &["max_tokens", "tokens_per_fill", "fill_interval"]),
        }
    }
    match max {
        Some(0) => d.err(&format!("{path}.max_tokens"), "must be greater than 0"),
        None => d.err(&format!("{path}.max_tokens"), "is required"),
        Some(_) => {}
    }
    if interval.is_none() {
        d.err(&format!("{path}.fill_interval"), "is required");
    }
    Some(TokenBucket { max_tokens: max?, tokens_per_fill: per_fill, fill_interval: interval? })
}

fn runtime_percent(d: &mut Decoder<'_>, v: &Value, path: &str) -> Option<FractionalPercent> {
    let fields = d.fields(v, path)?;
    let mut out = None;
    for (k, p, v) in fields {
        match k.as_str() {
            "default_value" => out = fractional(d, v, &p),
            "runtime_key" => {
                d.string(v, &p);
            }
            _ => d.unknown(&p, "RuntimeFractionalPercent", &["default_value", "runtime_key"]),
        }
    }
    if out.is_none() && !d.problems.iter().any(|x| x.error && x.field.starts_with(path)) {
        d.err(&format!("{path}.default_value"), "is required");
    }
    out
}

fn fractional(d: &mut Decoder<'_>, v: &Value, path: &str) -> Option<FractionalPercent> {
    let fields = d.fields(v, path)?;
    let mut out = FractionalPercent { numerator: 0, denominator: Denominator::Hundred };
    let mut ok = true;
    for (k, p, v) in fields {
        match k.as_str() {
            "numerator" => match d.u32(v, &p) {
                Some(n) => out.numerator = n,
                None => ok = false,
            },
            "denominator" => {
                out.denominator = match v {
                    Value::String(s) if s == "HUNDRED" => Denominator::Hundred,
                    Value::String(s) if s == "TEN_THOUSAND" => Denominator::TenThousand,
                    Value::String(s) if s == "MILLION" => Denominator::Million,
                    Value::Number(n) if n.as_u64() == Some(0) => Denominator::Hundred,
                    Value::Number(n) if n.as_u64() == Some(1) => Denominator::TenThousand,
                    Value::Number(n) if n.as_u64() == Some(2) => Denominator::Million,
                    _ => {
                        d.err(&p, format!("must be HUNDRED, TEN_THOUSAND or MILLION, got {v}"));
                        ok = false;
                        Denominator::Hundred
                    }
                }
            }
            _ => d.unknown(&p, "FractionalPercent", &["numerator", "denominator"]),
        }
    }
    ok.then_some(out)
}

fn status(d: &mut Decoder<'_>, v: &Value, path: &str) -> Option<u16> {
    let fields = d.fields(v, path)?;
    let mut code = None;
    for (k, p, v) in fields {
        if k != "code" {
            d.unknown(&p, "HttpStatus", &["code"]);
            continue;
        }
        let named = match v.as_str() {
            Some("BadRequest") => Some(400),
            Some("Unauthorized") => Some(401),
            Some("Forbidden") => Some(403),
            Some("TooManyRequests") => Some(429),
            Some("InternalServerError") => Some(500),
            Some("ServiceUnavailable") => Some(503),
            _ => None,
        };
        code = named.or_else(|| d.u32(v, &p));
        match code {
            Some(c) if c > 599 => {
                d.err(&p, format!("{c} is not an HTTP status code"));
                code = None;
            }
            Some(c) if c < 400 => {
                d.warn(&p, format!("{c} is below 400: Envoy answers 429 instead"));
                code = Some(429);
            }
            _ => {}
        }
    }
    code.map(|c| c as u16)
}

fn headers(d: &mut Decoder<'_>, v: &Value, path: &str) -> Vec<HeaderValueOption> {
    let Value::Array(items) = v else {
        d.err(path, format!("must be a list, got {}", kind_of(v)));
        return Vec::new();
    };
    if items.len() > 10 {
        d.err(path, format!("at most 10 headers, got {}", items.len()));
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if let Some(h) = header_option(d, item, &p) {
            out.push(h);
        }
    }
    out
}

fn header_option(d: &mut Decoder<'_>, v: &Value, path: &str) -> Option<HeaderValueOption> {
    let fields = d.fields(v, path)?;
    let (mut kv, mut append, mut action) = (None, None, None);
    for (k, p, v) in fields {
        match k.as_str() {
            "header" => kv = header_kv(d, v, &p),
            "append" => append = d.bool(v.get("value").unwrap_or(v), &p),
            "append_action" => {
                action = match v.as_str() {
                    Some("APPEND_IF_EXISTS_OR_ADD") => Some(AppendAction::AppendIfExistsOrAdd),
                    Some("ADD_IF_ABSENT") => Some(AppendAction::AddIfAbsent),
                    Some("OVERWRITE_IF_EXISTS_OR_ADD") => Some(AppendAction::OverwriteIfExistsOrAdd),
                    Some("OVERWRITE_IF_EXISTS") => Some(AppendAction::OverwriteIfExists),
                    _ => {
                        d.err(
                            &p,
                            format!(
                                "must be APPEND_IF_EXISTS_OR_ADD, ADD_IF_ABSENT, OVERWRITE_IF_EXISTS_OR_ADD \
                                 or OVERWRITE_IF_EXISTS, got {v}"
                            ),
                        );
                        None
                    }
                }
            }
            "keep_empty_value" => {
                d.bool(v, &p);
            }
            _ => {
                d.unknown(&p, "HeaderValueOption", &["header", "append", "append_action", "keep_empty_value"])
            }
        }
    }
    if append.is_some() && action.is_some() {
        d.err(path, "append and append_action cannot both be set");
    }
    let Some((key, value)) = kv else {
        if !d.problems.iter().any(|x| x.error && x.field.starts_with(path)) {
            d.err(&format!("{path}.header"), "is required");
        }
        return None;
    };
    let action = action.unwrap_or(match append {
        Some(false) => AppendAction::OverwriteIfExistsOrAdd,
        _ => AppendAction::AppendIfExistsOrAdd,
    });
    Some(HeaderValueOption { key, value, action })
}

fn header_kv(d: &mut Decoder<'_>, v: &Value, path: &str) -> Option<(String, String)> {
    let fields = d.fields(v, path)?;
    let (mut key, mut value) = (None, String::new());
    for (k, p, v) in fields {
        match k.as_str() {
            "key" => {
                key = d.string(v, &p).map(str::to_ascii_lowercase);
                if let Some(k) = &key
                    && (k.is_empty() || http_token(k).is_err())
                {
                    d.err(&p, format!("{k:?} is not a valid header name"));
                    key = None;
                }
            }
            "value" => {
                value = d.string(v, &p).unwrap_or_default().to_string();
                if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                    d.err(&p, "header values cannot contain CR, LF or NUL");
                }
            }
            _ => d.unknown(&p, "HeaderValue", &["key", "value"]),
        }
    }
    if key.is_none() && !d.problems.iter().any(|x| x.error && x.field.starts_with(path)) {
        d.err(&format!("{path}.key"), "is required");
    }
    Some((key?, value))
}

/// RFC 9110 token characters (header names).
fn http_token(s: &str) -> Result<(), ()> {
    let ok = s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok { Ok(()) } else { Err(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_durations() {
        assert_eq!(parse_proto_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_proto_duration("0.05s"), Some(Duration::from_millis(50)));
        assert_eq!(parse_proto_duration("1.000000001s"), Some(Duration::new(1, 1)));
        for bad in ["1m", "s", "1", "-1s", "1.s", ".5s", "1.0000000001s", "1h"] {
            assert_eq!(parse_proto_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn fractions_in_parts_per_million() {
        let f = |n, d| FractionalPercent { numerator: n, denominator: d }.per_million();
        assert_eq!(f(100, Denominator::Hundred), 1_000_000);
        assert_eq!(f(50, Denominator::TenThousand), 5_000);
        assert_eq!(f(7, Denominator::Million), 7);
        assert_eq!(f(250, Denominator::Hundred), 1_000_000, "above the denominator is 100 %");
    }

    #[test]
    fn camel_case_names_map_to_proto_names() {
        assert_eq!(proto_name("fillInterval"), "fill_interval");
        assert_eq!(proto_name("fill_interval"), "fill_interval");
        assert_eq!(proto_name("typedPerFilterConfig"), "typed_per_filter_config");
    }
}
