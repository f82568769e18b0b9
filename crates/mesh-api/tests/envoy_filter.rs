//! EnvoyFilter: parsed as a kind, local-rate-limit patches decoded (both `typed_config`
//! forms, proto and JSON field names), other patches warned about and ignored, malformed
//! configs refused with every error at once.

use std::time::Duration;

use mesh_api::istio::networking::{
    AppendAction, Denominator, PatchContext, RateLimitScope, RouteMatchAction, VhostName,
};
use mesh_api::{Object, Parsed, parse_object, split_documents};
use serde_json::{Value, json};

fn parse_yaml(y: &str) -> Parsed {
    let doc = split_documents(y).into_iter().next().unwrap().unwrap();
    parse_object(doc.value)
}

fn messages(p: &Parsed) -> Vec<String> {
    let list = match p {
        Parsed::Object { warnings, .. } => warnings,
        Parsed::Invalid { diagnostics, .. } => diagnostics,
        Parsed::Ignored { .. } => panic!("ignored"),
    };
    list.iter()
        .map(|d| format!("{}: {}{}", d.field, if d.is_error() { "" } else { "warning: " }, d.message))
        .collect()
}

fn ef(spec: Value) -> Parsed {
    parse_object(json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": "rl", "namespace": "demo"},
        "spec": spec,
    }))
}

/// Istio's documented local rate limit example (filter plus per-route config).
const ISTIO_EXAMPLE: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: filter-local-ratelimit-svc
  namespace: istio-system
spec:
  workloadSelector:
    labels:
      app: productpage
  configPatches:
    - applyTo: HTTP_FILTER
      match:
        context: SIDECAR_INBOUND
        listener:
          filterChain:
            filter:
              name: "envoy.filters.network.http_connection_manager"
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.local_ratelimit
          typed_config:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: http_local_rate_limiter
    - applyTo: HTTP_ROUTE
      match:
        context: SIDECAR_INBOUND
        routeConfiguration:
          vhost:
            name: "inbound|http|9080"
            route:
              action: ANY
      patch:
        operation: MERGE
        value:
          typed_per_filter_config:
            envoy.filters.http.local_ratelimit:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              value:
                stat_prefix: http_local_rate_limiter
                token_bucket:
                  max_tokens: 4
                  tokens_per_fill: 4
                  fill_interval: 60s
                filter_enabled:
                  runtime_key: local_rate_limit_enabled
                  default_value:
                    numerator: 100
                    denominator: HUNDRED
                filter_enforced:
                  runtime_key: local_rate_limit_enforced
                  default_value:
                    numerator: 100
                    denominator: HUNDRED
                response_headers_to_add:
                  - append: false
                    header:
                      key: x-local-rate-limit
                      value: 'true'
"#;

#[test]
fn istio_documented_example_is_read() {
    let parsed = parse_yaml(ISTIO_EXAMPLE);
    assert_eq!(messages(&parsed), Vec::<String>::new());
    let Parsed::Object { object: Object::EnvoyFilter(o), .. } = parsed else { panic!("not an EnvoyFilter") };
    let (patches, problems) = o.spec.rate_limit_patches();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(patches.len(), 2);
    let filter = &patches[0];
    assert_eq!((filter.index, filter.context, filter.port), (0, PatchContext::SidecarInbound, None));
    assert_eq!(filter.scope, RateLimitScope::Filter);
    assert_eq!(filter.config.token_bucket, None, "the filter level only enables per-route configs");
    let route = &patches[1];
    assert_eq!(
        route.scope,
        RateLimitScope::Route {
            vhost: Some(VhostName::InboundPort(9080)),
            route: None,
            action: RouteMatchAction::Any
        }
    );
    let c = &route.config;
    let b = c.token_bucket.unwrap();
    assert_eq!((b.max_tokens, b.tokens_per_fill, b.fill_interval), (4, 4, Duration::from_secs(60)));
    assert_eq!(c.filter_enabled.unwrap().per_million(), 1_000_000);
    assert_eq!(c.filter_enforced.unwrap().denominator, Denominator::Hundred);
    assert_eq!(c.response_headers_to_add[0].key, "x-local-rate-limit");
    assert_eq!(c.response_headers_to_add[0].action, AppendAction::OverwriteIfExistsOrAdd);
    assert_eq!((c.status, c.x_ratelimit_headers, c.per_connection), (429, false, false));
}

#[test]
fn direct_type_with_json_names_and_waypoint_match() {
    let parsed = ef(json!({
        "targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}],
        "configPatches": [
            {"applyTo": "HTTP_FILTER", "match": {"listener": {"portNumber": 8080}},
             "patch": {"operation": "INSERT_FIRST", "value": {"name": "envoy.filters.http.local_ratelimit",
               "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                 "statPrefix": "rl", "tokenBucket": {"maxTokens": "10", "fillInterval": "0.5s"},
                 "filterEnabled": {"defaultValue": {"numerator": 5000, "denominator": "TEN_THOUSAND"}},
                 "status": {"code": "ServiceUnavailable"}, "enableXRatelimitHeaders": "DRAFT_VERSION_03",
                 "localRateLimitPerDownstreamConnection": true,
                 "responseHeadersToAdd": [{"appendAction": "ADD_IF_ABSENT", "header": {"key": "X-RL", "value": "1"}}]}}}},
            {"applyTo": "HTTP_ROUTE", "match": {"context": "WAYPOINT", "waypoint": {"portNumber": 80, "route": {"name": "api"}}},
             "patch": {"operation": "MERGE", "value": {"typed_per_filter_config": {"envoy.filters.http.local_ratelimit": {
               "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
               "type_url": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
               "value": {"stat_prefix": "api", "token_bucket": {"max_tokens": 2, "fill_interval": "3600s"}}}}}}},
        ],
    }));
    let Parsed::Object { object: Object::EnvoyFilter(o), warnings } = &parsed else { panic!("{parsed:?}") };
    // The route config has no filter_enabled: Envoy would enable it for 0% of requests.
    assert_eq!(
        messages(&parsed),
        vec![
            "spec.configPatches[1].patch.value.typed_per_filter_config.envoy.filters.http.local_ratelimit.value.filter_enabled: warning: absent: Envoy enables the limit for 0% of requests, so nothing is limited"
        ]
    );
    assert_eq!(warnings.len(), 1);
    let (p, _) = o.spec.rate_limit_patches();
    assert_eq!(p[0].port, Some(8080));
    let c = &p[0].config;
    let b = c.token_bucket.unwrap();
    assert_eq!((b.max_tokens, b.tokens_per_fill, b.fill_interval), (10, 1, Duration::from_millis(500)));
    assert_eq!(c.filter_enabled.unwrap().per_million(), 500_000);
    assert_eq!(c.filter_enforced, None);
    assert_eq!((c.status, c.x_ratelimit_headers, c.per_connection), (503, true, true));
    assert_eq!(
        (c.response_headers_to_add[0].key.as_str(), c.response_headers_to_add[0].action),
        ("x-rl", AppendAction::AddIfAbsent)
    );
    assert_eq!((p[1].context, p[1].port), (PatchContext::Waypoint, Some(80)));
    assert_eq!(
        p[1].scope,
        RateLimitScope::Route { vhost: None, route: Some("api".into()), action: RouteMatchAction::Any }
    );
}

#[test]
fn other_patches_are_warned_about_and_ignored() {
    let parsed = ef(json!({"configPatches": [
        {"applyTo": "CLUSTER", "patch": {"operation": "MERGE", "value": {"connect_timeout": "1s"}}},
        {"applyTo": "HTTP_FILTER", "patch": {"operation": "INSERT_BEFORE", "value": {"name": "envoy.filters.http.lua", "typed_config": {}}}},
        {"applyTo": "HTTP_FILTER", "patch": {"operation": "REMOVE"}},
        {"applyTo": "HTTP_ROUTE", "patch": {"operation": "MERGE", "value": {"route": {"timeout": "1s"}}}},
        {"applyTo": "HTTP_FILTER", "match": {"proxy": {"proxyVersion": "^1\\.2.*"}},
         "patch": {"operation": "ADD", "value": {"name": "envoy.filters.http.local_ratelimit",
           "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit", "stat_prefix": "x"}}}},
        {"applyTo": "HTTP_ROUTE", "match": {"routeConfiguration": {"vhost": {"name": "allow_any"}}},
         "patch": {"operation": "MERGE", "value": {"typed_per_filter_config": {"envoy.filters.http.local_ratelimit": {
           "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
           "stat_prefix": "x", "token_bucket": {"max_tokens": 1, "fill_interval": "1s"}}}}}},
    ]}));
    assert!(matches!(parsed, Parsed::Object { .. }), "ignored patches do not refuse the object");
    let s = "only envoy.filters.http.local_ratelimit is supported; this patch is ignored";
    assert_eq!(
        messages(&parsed),
        vec![
            format!("spec.configPatches[0].applyTo: warning: applyTo CLUSTER: {s}"),
            format!("spec.configPatches[1].patch.value.name: warning: HTTP filter \"envoy.filters.http.lua\": {s}"),
            format!("spec.configPatches[2].patch.operation: warning: HTTP_FILTER operation REMOVE: {s}"),
            format!("spec.configPatches[3].patch.value.route: warning: route field \"route\": {s}"),
            format!("spec.configPatches[4].match.proxy: warning: a proxy match: {s}"),
            "spec.configPatches[5].match.routeConfiguration.vhost.name: warning: \"allow_any\" is neither \"inbound|http|<port>\" nor \"<host>:<port>\"; this patch is ignored".to_string(),
        ]
    );
}

#[test]
fn malformed_configs_report_every_error() {
    let parsed = ef(json!({
        "workloadSelector": {"labels": {"app": "a*"}},
        "targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "w", "namespace": "other"}],
        "configPatches": [
            {"applyTo": "HTTP_FILTER", "patch": {"operation": "INSERT_BEFORE", "value": {"name": "envoy.filters.http.local_ratelimit",
              "typed_config": {"@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
                "type_url": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                "value": {
                  "token_bucket": {"max_tokens": 0, "tokens_per_fill": -1, "fill_interval": "1m"},
                  "filter_enabled": {"default_value": {"numerator": 100, "denominator": "PERCENT"}},
                  "filter_enforced": {"runtime_key": "k"},
                  "response_headers_to_add": [{"append": true, "append_action": "ADD_IF_ABSENT", "header": {"key": "x y", "value": "a\nb"}}],
                  "status": {"code": 700},
                  "descriptors": [],
                  "tokenBucketz": 1}}}}},
            {"applyTo": "HTTP_ROUTE", "patch": {"operation": "MERGE", "value": {"typed_per_filter_config": {"envoy.filters.http.local_ratelimit": {
              "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit", "stat_prefix": "r"}}}}},
            {"applyTo": "HTTP_FILTER", "match": {"listener": {"portNumber": 70000}}, "patch": {"operation": "ADD", "value": {"name": "envoy.filters.http.local_ratelimit",
              "typed_config": {"@type": "type.googleapis.com/google.protobuf.Struct"}}}},
            {"applyTo": "HTTP_FILTER", "patch": {"operation": "ADD", "value": {"name": "envoy.filters.http.local_ratelimit",
              "typed_config": {"@type": "type.googleapis.com/google.protobuf.Struct"}}}},
        ],
    }));
    assert!(matches!(parsed, Parsed::Invalid { .. }));
    let v = "spec.configPatches[0].patch.value.typed_config.value";
    let r = "spec.configPatches[1].patch.value.typed_per_filter_config.envoy.filters.http.local_ratelimit";
    assert_eq!(
        messages(&parsed),
        vec![
            "spec.workloadSelector.labels.app: invalid label value \"a*\": must start and end with an alphanumeric character".to_string(),
            "spec.workloadSelector.labels.app: wildcard is not supported in selector".to_string(),
            "spec: only one of targetRefs or workloadSelector can be set".to_string(),
            "spec.targetRefs[0].namespace: cross namespace referencing is not currently supported".to_string(),
            format!("{v}.descriptors: warning: descriptors are not supported; ignored (only the default token bucket applies)"),
            format!("{v}.filter_enabled.default_value.denominator: must be HUNDRED, TEN_THOUSAND or MILLION, got \"PERCENT\""),
            format!("{v}.filter_enforced.default_value: is required"),
            format!("{v}.response_headers_to_add[0].header.key: \"x y\" is not a valid header name"),
            format!("{v}.response_headers_to_add[0].header.value: header values cannot contain CR, LF or NUL"),
            format!("{v}.response_headers_to_add[0]: append and append_action cannot both be set"),
            format!("{v}.status.code: 700 is not an HTTP status code"),
            format!("{v}.tokenBucketz: unknown field \"tokenBucketz\" of LocalRateLimit (known: stat_prefix, token_bucket, filter_enabled, filter_enforced, response_headers_to_add, request_headers_to_add_when_not_enforced, status, enable_x_ratelimit_headers, local_rate_limit_per_downstream_connection, rate_limited_as_resource_exhausted, descriptors, stage, always_consume_default_token_bucket, vh_rate_limits, rate_limits, local_cluster_rate_limit, max_dynamic_descriptors)"),
            // serde_json keeps keys sorted: token_bucket comes after tokenBucketz.
            format!("{v}.token_bucket.fill_interval: \"1m\" is not a protobuf duration (seconds with an \"s\" suffix, e.g. \"60s\")"),
            format!("{v}.token_bucket.tokens_per_fill: must be an integer in 0..4294967295, got -1"),
            format!("{v}.token_bucket.max_tokens: must be greater than 0"),
            format!("{v}.token_bucket.fill_interval: is required"),
            format!("{v}.stat_prefix: is required"),
            format!("{r}.token_bucket: is required in a route's configuration"),
            "spec.configPatches[2].match.listener.portNumber: port 70000 out of range 1..65535".to_string(),
            "spec.configPatches[3].patch.value.typed_config.@type: unsupported type \"type.googleapis.com/google.protobuf.Struct\" (expected \"type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\" or a TypedStruct holding it)".to_string(),
        ]
    );
}

#[test]
fn only_v1alpha3_is_accepted() {
    let parsed = parse_object(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "EnvoyFilter", "metadata": {"name": "x"}, "spec": {}
    }));
    assert_eq!(
        messages(&parsed),
        vec![
            "apiVersion: unsupported apiVersion \"networking.istio.io/v1\" for EnvoyFilter (expected networking.istio.io/v1alpha3)"
        ]
    );
}
