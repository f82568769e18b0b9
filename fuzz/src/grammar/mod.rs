//! A small grammar of Istio / Gateway API / Kubernetes documents, driven by `arbitrary`, so
//! the structured target spends its time deep in validation and translation (durations,
//! regexes, weights, selectors, cross-object references) instead of in "unknown field".
//! Field names are the real ones (camelCase); values come from per-class pools of valid,
//! borderline and invalid examples, plus an occasional raw fuzzer string.

mod istio;
mod k8s;

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Number, Value};

use istio::{
    AUTHZ, DESTINATION_RULE, ISTIO_GATEWAY, LABELS, PEER_AUTH, REQUEST_AUTHN, SERVICE_ENTRY, SIDECAR,
    TELEMETRY, VIRTUAL_SERVICE,
};
use k8s::{
    ENDPOINT_SLICE_BODY, GRPC_ROUTE_SPEC, HTTP_ROUTE_SPEC, KUBE_GATEWAY, POD_SPEC, POD_STATUS, SERVICE_SPEC,
};

/// String value classes, each with a pool of interesting examples.
#[derive(Clone, Copy)]
pub enum Sc {
    Name,
    Ns,
    Host,
    Dur,
    Regex,
    Label,
    Cidr,
    Principal,
    Path,
    Header,
    Method,
    Port,
    Text,
    Enum(&'static [&'static str]),
}

/// Shape of a value.
#[derive(Clone, Copy)]
pub enum S {
    Str(Sc),
    /// An integer around this range (bounds, just past them, 0, -1, arbitrary).
    Int(i64, i64),
    /// A double around 0..=100 (percentages, sampling).
    Num,
    Bool,
    Obj(&'static [(&'static str, S)]),
    List(&'static S),
    /// A string-keyed map (labels, headers, portLevelMtls).
    Map(Sc, &'static S),
    /// Integer or string (targetPort).
    IntOrStr,
}

pub(crate) const fn e(v: &'static [&'static str]) -> S {
    S::Str(Sc::Enum(v))
}

/// One kind the grammar writes: apiVersions to pick from (valid first), kind, and the
/// top-level fields besides apiVersion/kind/metadata.
struct KindSpec {
    versions: &'static [&'static str],
    kind: &'static str,
    body: &'static [(&'static str, S)],
}

const KINDS: &[KindSpec] = &[
    KindSpec { versions: &["v1"], kind: "Namespace", body: &[] },
    KindSpec { versions: &["v1"], kind: "Pod", body: &[("spec", POD_SPEC), ("status", POD_STATUS)] },
    KindSpec { versions: &["v1"], kind: "Service", body: &[("spec", SERVICE_SPEC)] },
    KindSpec { versions: &["v1"], kind: "ServiceAccount", body: &[] },
    KindSpec { versions: &["discovery.k8s.io/v1", "v1"], kind: "EndpointSlice", body: ENDPOINT_SLICE_BODY },
    KindSpec {
        versions: &["networking.istio.io/v1", "networking.istio.io/v1alpha3", "networking.istio.io/v2"],
        kind: "VirtualService",
        body: &[("spec", VIRTUAL_SERVICE)],
    },
    KindSpec {
        versions: &["networking.istio.io/v1", "networking.istio.io/v1beta1"],
        kind: "DestinationRule",
        body: &[("spec", DESTINATION_RULE)],
    },
    KindSpec {
        versions: &["networking.istio.io/v1"],
        kind: "ServiceEntry",
        body: &[("spec", SERVICE_ENTRY)],
    },
    KindSpec { versions: &["networking.istio.io/v1"], kind: "Gateway", body: &[("spec", ISTIO_GATEWAY)] },
    KindSpec { versions: &["networking.istio.io/v1"], kind: "Sidecar", body: &[("spec", SIDECAR)] },
    KindSpec {
        versions: &["security.istio.io/v1", "security.istio.io/v1beta1"],
        kind: "PeerAuthentication",
        body: &[("spec", PEER_AUTH)],
    },
    KindSpec { versions: &["security.istio.io/v1"], kind: "AuthorizationPolicy", body: &[("spec", AUTHZ)] },
    KindSpec {
        versions: &["security.istio.io/v1"],
        kind: "RequestAuthentication",
        body: &[("spec", REQUEST_AUTHN)],
    },
    KindSpec {
        versions: &["telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"],
        kind: "Telemetry",
        body: &[("spec", TELEMETRY)],
    },
    KindSpec {
        versions: &["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"],
        kind: "HTTPRoute",
        body: &[("spec", HTTP_ROUTE_SPEC)],
    },
    KindSpec {
        versions: &["gateway.networking.k8s.io/v1"],
        kind: "GRPCRoute",
        body: &[("spec", GRPC_ROUTE_SPEC)],
    },
    KindSpec {
        versions: &["gateway.networking.k8s.io/v1"],
        kind: "Gateway",
        body: &[("spec", KUBE_GATEWAY)],
    },
    KindSpec {
        versions: &["apps/v1"],
        kind: "Deployment",
        body: &[("spec", S::Obj(&[("replicas", S::Int(0, 3))]))],
    },
    KindSpec { versions: &["networking.istio.io/v1"], kind: "VirtualServic", body: &[] },
    KindSpec { versions: &["networking.istio.io/v1"], kind: "List", body: &[] },
];

fn pool(class: Sc) -> &'static [&'static str] {
    match class {
        Sc::Name => {
            &["reviews", "v1", "v2", "ratings", "default", "", "a-b", "Bad_Name", "x.y", "waypoint", "http"]
        }
        Sc::Ns => &["default", "bookinfo", "istio-system", "", "other", "*", "Bad NS"],
        Sc::Host => &[
            "reviews",
            "reviews.bookinfo",
            "reviews.bookinfo.svc.cluster.local",
            "ratings.default.svc.cluster.local",
            "*.example.com",
            "*",
            "",
            "httpbin.org",
            "a..b",
            "UPPER.example.com",
            "*.bookinfo.svc.cluster.local",
            "bookinfo/reviews",
            "10.0.0.1",
            "mesh",
            "istio-system/gw",
        ],
        Sc::Dur => &[
            "1s",
            "0.5s",
            "250ms",
            "1m30s",
            "1h",
            "10us",
            "5ns",
            "0s",
            "0",
            "-1s",
            "1",
            "abc",
            "",
            "1.5.s",
            "1d",
            "1e3s",
            "+5s",
            " 1s",
            "1µs",
            ".5s",
            "5.s",
            "1h1h",
            "0.000000001s",
            "99999999999999999999h",
            "18446744073709551615s",
            "2562047h47m16.854775807s",
            "1s ",
            "1 s",
            "s",
            "1ms1",
            "-0s",
        ],
        Sc::Regex => &[
            "/api/v[0-9]+",
            "(",
            ".*",
            "^a$",
            "(?i)x",
            "\\p{L}+",
            "a{1000}",
            "a{99999}",
            "(a*)*",
            "[",
            "\\",
            "/productpage",
            "",
            "[[:alpha:]]",
            "(?P<n>x)",
            "\\bword\\b",
            "x{2,1}",
            "(?<!a)b",
            "\\1",
        ],
        Sc::Label => &[
            "app",
            "version",
            "v1",
            "istio.io/rev",
            "bad key!",
            "",
            "istio.io/dataplane-mode",
            "ambient",
            "istio.io/use-waypoint",
            "waypoint",
            "kubernetes.io/service-name",
            "reviews",
            "a/b/c",
            "-x",
        ],
        Sc::Cidr => &[
            "10.0.0.1",
            "10.0.0.0/8",
            "::1",
            "fe80::/10",
            "300.1.1.1",
            "10.0.0.0/33",
            "",
            "1.2.3.4/32",
            "0.0.0.0",
            "0.0.0.0/0",
            "None",
            "10.1.2.3",
            "2001:db8::1",
            "1.2.3",
            "example.com",
        ],
        Sc::Principal => &[
            "cluster.local/ns/default/sa/reviews",
            "spiffe://cluster.local/ns/a/sa/b",
            "*",
            "*/ns/bookinfo/sa/*",
            "x*",
            "",
            "issuer/subject",
            "default/reviews",
            "spiffe://",
        ],
        Sc::Path => &["/", "/api", "/api/*", "*", "", "api", "/a//b", "/ratings/{id}", "/%zz", "/*/x"],
        Sc::Header => {
            &["x-user", "X-Token", "", ":authority", "bad header", "host", "x-envoy-foo", "content-type"]
        }
        Sc::Method => &["GET", "POST", "get", "", "CONNECT", "FOO BAR"],
        Sc::Port => &["80", "9080", "0", "65535", "65536", "-1", "http", "", "8080-8090", "*"],
        Sc::Text => &["", "x", "hello world", "a\nb", "\"quoted\"", "☃", "v1"],
        Sc::Enum(v) => v,
    }
}

fn string(u: &mut Unstructured<'_>, class: Sc) -> Result<String> {
    // Mostly pool values; sometimes raw fuzzer text (pool's own set is small).
    if u.ratio(1, 8)? {
        let s: &str = u.arbitrary()?;
        return Ok(s.chars().take(64).collect());
    }
    let p = pool(class);
    let s = (*u.choose(p)?).to_string();
    // Sometimes glue two values (e.g. "1s" + "250ms" or a label "app" + "/x").
    if u.ratio(1, 16)? {
        return Ok(format!("{s}{}", u.choose(p)?));
    }
    Ok(s)
}

fn int(u: &mut Unstructured<'_>, lo: i64, hi: i64) -> Result<Value> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => Value::from(lo.saturating_sub(1)),
        1 => Value::from(hi.saturating_add(1)),
        2 => Value::from(lo),
        3 => Value::from(hi),
        4 => Value::from(u.arbitrary::<i64>()?),
        5 => Value::from(u.arbitrary::<u64>()?),
        6 => Number::from_f64(u.int_in_range(lo..=hi)? as f64 + 0.5).map_or(Value::Null, Value::Number),
        7 => Value::from(u.int_in_range(lo..=hi)?.to_string()),
        _ => Value::from(u.int_in_range(lo..=hi)?),
    })
}

/// A value of the given shape; with small probability, one of the wrong type.
pub fn value(u: &mut Unstructured<'_>, shape: &S, depth: u32) -> Result<Value> {
    if u.ratio(1, 40)? {
        return wrong(u);
    }
    Ok(match *shape {
        S::Str(c) => Value::String(string(u, c)?),
        S::Int(lo, hi) => int(u, lo, hi)?,
        S::Num => match u.int_in_range(0..=6u8)? {
            0 => Value::from(-0.5),
            1 => Value::from(100.5),
            2 => Value::from(u.arbitrary::<f32>()?.to_string().parse::<f64>().unwrap_or(1.0)),
            3 => Value::from(u.int_in_range(0..=100u32)?),
            4 => Number::from_f64(u.arbitrary::<f64>()?).map_or(Value::Null, Value::Number),
            _ => Number::from_f64(f64::from(u.int_in_range(0..=1000u32)?) / 10.0)
                .map_or(Value::Null, Value::Number),
        },
        S::Bool => Value::Bool(u.arbitrary()?),
        S::IntOrStr => {
            if u.arbitrary()? {
                int(u, 1, 65535)?
            } else {
                Value::String(string(u, Sc::Name)?)
            }
        }
        S::Obj(fields) => object(u, fields, depth)?,
        S::List(item) => {
            let n = if depth > 6 { 0 } else { u.int_in_range(0..=3u8)? };
            let mut out = Vec::with_capacity(n.into());
            for _ in 0..n {
                out.push(value(u, item, depth + 1)?);
            }
            Value::Array(out)
        }
        S::Map(key, item) => {
            let n = if depth > 6 { 0 } else { u.int_in_range(0..=3u8)? };
            let mut out = Map::new();
            for _ in 0..n {
                out.insert(string(u, key)?, value(u, item, depth + 1)?);
            }
            Value::Object(out)
        }
    })
}

fn object(u: &mut Unstructured<'_>, fields: &[(&str, S)], depth: u32) -> Result<Value> {
    let mut out = Map::new();
    if depth <= 8 {
        for (name, shape) in fields {
            // ~1 in 3 fields present keeps objects small but lets every field appear.
            if u.ratio(1, 3)? {
                out.insert((*name).to_string(), value(u, shape, depth + 1)?);
            }
        }
    }
    if u.ratio(1, 50)? {
        let bogus = *u.choose(&["bogus", "hosts", "spec", "Match", "weight", "name"])?;
        out.insert(bogus.to_string(), wrong(u)?);
    }
    Ok(Value::Object(out))
}

fn wrong(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i32>()?),
        3 => Value::String(string(u, Sc::Text)?),
        4 => Value::Array(vec![Value::String(string(u, Sc::Name)?)]),
        _ => Value::Object(Map::new()),
    })
}

/// One document of a kind the grammar knows.
pub fn document(u: &mut Unstructured<'_>) -> Result<Value> {
    let k = u.choose(KINDS)?;
    let mut doc = Map::new();
    // Mostly the first (valid) apiVersion; the others are older, other-group or bogus.
    let version = if u.ratio(3, 4)? { k.versions[0] } else { *u.choose(k.versions)? };
    doc.insert("apiVersion".into(), Value::from(version));
    doc.insert("kind".into(), Value::from(k.kind));
    let mut meta = Map::new();
    meta.insert("name".into(), Value::String(string(u, Sc::Name)?));
    if u.ratio(2, 3)? {
        meta.insert("namespace".into(), Value::String(string(u, Sc::Ns)?));
    }
    if u.arbitrary()? {
        meta.insert("labels".into(), value(u, &LABELS, 1)?);
    }
    doc.insert("metadata".into(), Value::Object(meta));
    if k.kind == "List" {
        let n = u.int_in_range(0..=2u8)?;
        let items = (0..n).map(|_| document(u)).collect::<Result<Vec<_>>>()?;
        doc.insert("items".into(), Value::Array(items));
    }
    for (name, shape) in k.body {
        if u.ratio(7, 8)? {
            doc.insert((*name).to_string(), value(u, shape, 1)?);
        }
    }
    Ok(doc.into())
}

/// A small config: a few documents, so translation sees references between objects.
pub fn documents(u: &mut Unstructured<'_>) -> Result<Vec<Value>> {
    let n = u.int_in_range(1..=6u8)?;
    (0..n).map(|_| document(u)).collect()
}
