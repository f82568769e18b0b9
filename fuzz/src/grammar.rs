//! A small grammar of Istio / Gateway API / Kubernetes documents, driven by `arbitrary`, so
//! the structured target spends its time deep in validation and translation (durations,
//! regexes, weights, selectors, cross-object references) instead of in "unknown field".
//! Field names are the real ones (camelCase); values come from per-class pools of valid,
//! borderline and invalid examples, plus an occasional raw fuzzer string.

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Number, Value};

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

const fn e(v: &'static [&'static str]) -> S {
    S::Str(Sc::Enum(v))
}

const NAME: S = S::Str(Sc::Name);
const HOST: S = S::Str(Sc::Host);
const DUR: S = S::Str(Sc::Dur);
const PORT_NUM: S = S::Int(1, 65535);
const STRS: S = S::List(&S::Str(Sc::Text));
const HOSTS: S = S::List(&HOST);
const LABELS: S = S::Map(Sc::Label, &S::Str(Sc::Label));
const PCT: S = S::Obj(&[("value", S::Num)]);
const STRING_MATCH: S = S::Obj(&[
    ("exact", S::Str(Sc::Path)),
    ("prefix", S::Str(Sc::Path)),
    ("regex", S::Str(Sc::Regex)),
]);
const DESTINATION: S =
    S::Obj(&[("host", HOST), ("subset", NAME), ("port", S::Obj(&[("number", PORT_NUM)]))]);
const HEADER_OPS: S = S::Obj(&[
    ("set", S::Map(Sc::Header, &S::Str(Sc::Text))),
    ("add", S::Map(Sc::Header, &S::Str(Sc::Text))),
    ("remove", S::List(&S::Str(Sc::Header))),
]);
const HEADERS: S = S::Obj(&[("request", HEADER_OPS), ("response", HEADER_OPS)]);
const WORKLOAD_SELECTOR: S = S::Obj(&[("matchLabels", LABELS)]);
const LABELS_SELECTOR: S = S::Obj(&[("labels", LABELS)]);
const TARGET_REF: S = S::Obj(&[
    ("group", e(&["", "gateway.networking.k8s.io", "networking.istio.io", "core"])),
    ("kind", e(&["Service", "Gateway", "ServiceEntry", "GatewayClass", "Pod"])),
    ("name", NAME),
    ("namespace", S::Str(Sc::Ns)),
]);
const EXPORT_TO: S = S::List(&e(&[".", "*", "~", "default", "bookinfo"]));

const HTTP_MATCH: S = S::Obj(&[
    ("name", NAME),
    ("uri", STRING_MATCH),
    ("scheme", STRING_MATCH),
    ("method", STRING_MATCH),
    ("authority", STRING_MATCH),
    ("headers", S::Map(Sc::Header, &STRING_MATCH)),
    ("port", PORT_NUM),
    ("sourceLabels", LABELS),
    ("gateways", HOSTS),
    ("queryParams", S::Map(Sc::Header, &STRING_MATCH)),
    ("ignoreUriCase", S::Bool),
    ("withoutHeaders", S::Map(Sc::Header, &STRING_MATCH)),
    ("sourceNamespace", S::Str(Sc::Ns)),
]);
const HTTP_ROUTE: S = S::Obj(&[
    ("name", NAME),
    ("match", S::List(&HTTP_MATCH)),
    ("route", S::List(&S::Obj(&[("destination", DESTINATION), ("weight", S::Int(0, 100)), ("headers", HEADERS)]))),
    (
        "redirect",
        S::Obj(&[
            ("uri", S::Str(Sc::Path)),
            ("authority", HOST),
            ("port", PORT_NUM),
            ("derivePort", e(&["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT", "BOGUS"])),
            ("scheme", e(&["http", "https", "ftp"])),
            ("redirectCode", S::Int(300, 308)),
        ]),
    ),
    (
        "directResponse",
        S::Obj(&[
            ("status", S::Int(200, 599)),
            ("body", S::Obj(&[("string", S::Str(Sc::Text)), ("bytes", S::Str(Sc::Text))])),
        ]),
    ),
    ("delegate", S::Obj(&[("name", NAME), ("namespace", S::Str(Sc::Ns))])),
    (
        "rewrite",
        S::Obj(&[
            ("uri", S::Str(Sc::Path)),
            ("authority", HOST),
            ("uriRegexRewrite", S::Obj(&[("match", S::Str(Sc::Regex)), ("rewrite", S::Str(Sc::Path))])),
        ]),
    ),
    ("timeout", DUR),
    (
        "retries",
        S::Obj(&[
            ("attempts", S::Int(0, 10)),
            ("perTryTimeout", DUR),
            ("retryOn", e(&["5xx,connect-failure", "gateway-error", "", "bogus", "503"])),
            ("retryRemoteLocalities", S::Bool),
            ("backoff", DUR),
        ]),
    ),
    (
        "fault",
        S::Obj(&[
            (
                "delay",
                S::Obj(&[
                    ("fixedDelay", DUR),
                    ("exponentialDelay", DUR),
                    ("percentage", PCT),
                    ("percent", S::Int(0, 100)),
                ]),
            ),
            (
                "abort",
                S::Obj(&[
                    ("httpStatus", S::Int(200, 599)),
                    ("grpcStatus", e(&["UNAVAILABLE", "14", "bogus"])),
                    ("http2Error", S::Str(Sc::Text)),
                    ("percentage", PCT),
                ]),
            ),
        ]),
    ),
    ("mirror", DESTINATION),
    ("mirrors", S::List(&S::Obj(&[("destination", DESTINATION), ("percentage", PCT)]))),
    ("mirrorPercent", S::Int(0, 100)),
    ("mirror_percent", S::Int(0, 100)),
    ("mirrorPercentage", PCT),
    (
        "corsPolicy",
        S::Obj(&[
            ("allowOrigin", STRS),
            ("allowOrigins", S::List(&STRING_MATCH)),
            ("allowMethods", S::List(&S::Str(Sc::Method))),
            ("allowHeaders", S::List(&S::Str(Sc::Header))),
            ("exposeHeaders", S::List(&S::Str(Sc::Header))),
            ("maxAge", DUR),
            ("allowCredentials", S::Bool),
            ("unmatchedPreflights", e(&["UNSPECIFIED", "FORWARD", "IGNORE", "x"])),
        ]),
    ),
    ("headers", HEADERS),
]);
const L4_MATCH: S = S::Obj(&[
    ("destinationSubnets", S::List(&S::Str(Sc::Cidr))),
    ("port", PORT_NUM),
    ("sourceLabels", LABELS),
    ("gateways", HOSTS),
    ("sourceNamespace", S::Str(Sc::Ns)),
    ("sniHosts", HOSTS),
]);
const L4_ROUTE: S = S::Obj(&[
    ("match", S::List(&L4_MATCH)),
    ("route", S::List(&S::Obj(&[("destination", DESTINATION), ("weight", S::Int(0, 100))]))),
]);
const VIRTUAL_SERVICE: S = S::Obj(&[
    ("hosts", HOSTS),
    ("gateways", HOSTS),
    ("http", S::List(&HTTP_ROUTE)),
    ("tls", S::List(&L4_ROUTE)),
    ("tcp", S::List(&L4_ROUTE)),
    ("exportTo", EXPORT_TO),
]);

const LB: S = S::Obj(&[
    ("simple", e(&["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST", "X"])),
    (
        "consistentHash",
        S::Obj(&[
            ("httpHeaderName", S::Str(Sc::Header)),
            (
                "httpCookie",
                S::Obj(&[
                    ("name", NAME),
                    ("path", S::Str(Sc::Path)),
                    ("ttl", DUR),
                    ("attributes", S::List(&S::Obj(&[("name", NAME), ("value", S::Str(Sc::Text))]))),
                ]),
            ),
            ("useSourceIp", S::Bool),
            ("httpQueryParameterName", NAME),
            ("ringHash", S::Obj(&[("minimumRingSize", S::Int(0, 1 << 23))])),
            ("maglev", S::Obj(&[("tableSize", S::Int(0, 65537))])),
            ("minimumRingSize", S::Int(0, 1 << 23)),
        ]),
    ),
    (
        "localityLbSetting",
        S::Obj(&[
            (
                "distribute",
                S::List(&S::Obj(&[("from", S::Str(Sc::Text)), ("to", S::Map(Sc::Text, &S::Int(0, 100)))])),
            ),
            ("failover", S::List(&S::Obj(&[("from", S::Str(Sc::Text)), ("to", S::Str(Sc::Text))]))),
            ("failoverPriority", STRS),
            ("enabled", S::Bool),
        ]),
    ),
    ("warmupDurationSecs", DUR),
    ("warmup", S::Obj(&[("duration", DUR), ("minimumPercent", S::Num), ("aggression", S::Num)])),
]);
const CONN_POOL: S = S::Obj(&[
    (
        "tcp",
        S::Obj(&[
            ("maxConnections", S::Int(0, 1 << 31)),
            ("connectTimeout", DUR),
            ("tcpKeepalive", S::Obj(&[("probes", S::Int(0, 10)), ("time", DUR), ("interval", DUR)])),
            ("maxConnectionDuration", DUR),
            ("idleTimeout", DUR),
        ]),
    ),
    (
        "http",
        S::Obj(&[
            ("http1MaxPendingRequests", S::Int(0, 1 << 31)),
            ("http2MaxRequests", S::Int(0, 1 << 31)),
            ("maxRequestsPerConnection", S::Int(0, 1 << 31)),
            ("maxRetries", S::Int(0, 1 << 31)),
            ("idleTimeout", DUR),
            ("h2UpgradePolicy", e(&["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE", "x"])),
            ("useClientProtocol", S::Bool),
            ("maxConcurrentStreams", S::Int(0, 1 << 31)),
        ]),
    ),
]);
const OUTLIER: S = S::Obj(&[
    ("splitExternalLocalOriginErrors", S::Bool),
    ("consecutiveLocalOriginFailures", S::Int(0, 100)),
    ("consecutiveGatewayErrors", S::Int(0, 100)),
    ("consecutive5xxErrors", S::Int(0, 100)),
    ("consecutiveErrors", S::Int(0, 100)),
    ("interval", DUR),
    ("baseEjectionTime", DUR),
    ("maxEjectionPercent", S::Int(0, 100)),
    ("minHealthPercent", S::Int(0, 100)),
]);
const CLIENT_TLS: S = S::Obj(&[
    ("mode", e(&["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL", "STRICT"])),
    ("clientCertificate", S::Str(Sc::Path)),
    ("privateKey", S::Str(Sc::Path)),
    ("caCertificates", S::Str(Sc::Path)),
    ("credentialName", NAME),
    ("subjectAltNames", HOSTS),
    ("sni", HOST),
    ("insecureSkipVerify", S::Bool),
    ("caCrl", S::Str(Sc::Path)),
]);
const TRAFFIC_POLICY: S = S::Obj(&[
    ("loadBalancer", LB),
    ("connectionPool", CONN_POOL),
    ("outlierDetection", OUTLIER),
    ("tls", CLIENT_TLS),
    (
        "portLevelSettings",
        S::List(&S::Obj(&[
            ("port", S::Obj(&[("number", PORT_NUM)])),
            ("loadBalancer", LB),
            ("connectionPool", CONN_POOL),
            ("outlierDetection", OUTLIER),
            ("tls", CLIENT_TLS),
        ])),
    ),
    ("tunnel", S::Obj(&[("protocol", e(&["CONNECT", "POST", "GET"])), ("targetHost", HOST), ("targetPort", PORT_NUM)])),
    ("proxyProtocol", S::Obj(&[("version", e(&["V1", "V2", "V3"]))])),
    ("retryBudget", S::Obj(&[("percent", PCT), ("minRetryConcurrency", S::Int(0, 100))])),
]);
const DESTINATION_RULE: S = S::Obj(&[
    ("host", HOST),
    ("trafficPolicy", TRAFFIC_POLICY),
    ("subsets", S::List(&S::Obj(&[("name", NAME), ("labels", LABELS), ("trafficPolicy", TRAFFIC_POLICY)]))),
    ("exportTo", EXPORT_TO),
    ("workloadSelector", WORKLOAD_SELECTOR),
]);

const PORT_OBJ: S = S::Obj(&[
    ("number", PORT_NUM),
    ("protocol", e(&["HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS", "UDP", "bogus"])),
    ("name", NAME),
    ("targetPort", PORT_NUM),
]);
const SERVICE_ENTRY: S = S::Obj(&[
    ("hosts", HOSTS),
    ("addresses", S::List(&S::Str(Sc::Cidr))),
    ("ports", S::List(&PORT_OBJ)),
    ("location", e(&["MESH_EXTERNAL", "MESH_INTERNAL", "X"])),
    ("resolution", e(&["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS", "X"])),
    (
        "endpoints",
        S::List(&S::Obj(&[
            ("address", S::Str(Sc::Cidr)),
            ("ports", S::Map(Sc::Name, &PORT_NUM)),
            ("labels", LABELS),
            ("network", NAME),
            ("locality", S::Str(Sc::Text)),
            ("weight", S::Int(0, 100)),
            ("serviceAccount", NAME),
        ])),
    ),
    ("workloadSelector", LABELS_SELECTOR),
    ("exportTo", EXPORT_TO),
    ("subjectAltNames", HOSTS),
]);
const ISTIO_GATEWAY: S = S::Obj(&[
    ("selector", LABELS),
    (
        "servers",
        S::List(&S::Obj(&[
            ("port", PORT_OBJ),
            ("bind", S::Str(Sc::Cidr)),
            ("hosts", HOSTS),
            (
                "tls",
                S::Obj(&[
                    ("httpsRedirect", S::Bool),
                    ("mode", e(&["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "X"])),
                    ("credentialName", NAME),
                    ("minProtocolVersion", e(&["TLS_AUTO", "TLSV1_0", "TLSV1_2", "TLSV1_3", "X"])),
                    ("maxProtocolVersion", e(&["TLS_AUTO", "TLSV1_0", "TLSV1_2", "TLSV1_3", "X"])),
                    ("cipherSuites", STRS),
                ]),
            ),
            ("name", NAME),
        ])),
    ),
]);
const SIDECAR: S = S::Obj(&[
    ("workloadSelector", LABELS_SELECTOR),
    (
        "ingress",
        S::List(&S::Obj(&[
            ("port", PORT_OBJ),
            ("bind", S::Str(Sc::Cidr)),
            ("captureMode", e(&["DEFAULT", "IPTABLES", "NONE", "X"])),
            ("defaultEndpoint", e(&["127.0.0.1:8080", "unix:///sock", "0.0.0.0:80", "bad"])),
            ("connectionPool", CONN_POOL),
        ])),
    ),
    (
        "egress",
        S::List(&S::Obj(&[
            ("port", PORT_OBJ),
            ("bind", S::Str(Sc::Cidr)),
            ("captureMode", e(&["DEFAULT", "IPTABLES", "NONE"])),
            ("hosts", S::List(&e(&["./*", "istio-system/*", "*/*", "~/*", "bookinfo/reviews", "bad", "a/b/c"]))),
        ])),
    ),
    ("inboundConnectionPool", CONN_POOL),
    (
        "outboundTrafficPolicy",
        S::Obj(&[("mode", e(&["REGISTRY_ONLY", "ALLOW_ANY", "X"])), ("egressProxy", DESTINATION)]),
    ),
]);

const PEER_AUTH: S = S::Obj(&[
    ("selector", WORKLOAD_SELECTOR),
    ("mtls", S::Obj(&[("mode", e(&["UNSET", "DISABLE", "PERMISSIVE", "STRICT", "X"]))])),
    ("portLevelMtls", S::Map(Sc::Port, &S::Obj(&[("mode", e(&["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]))]))),
]);
const SOURCE: S = S::Obj(&[
    ("principals", S::List(&S::Str(Sc::Principal))),
    ("notPrincipals", S::List(&S::Str(Sc::Principal))),
    ("requestPrincipals", S::List(&S::Str(Sc::Principal))),
    ("notRequestPrincipals", S::List(&S::Str(Sc::Principal))),
    ("namespaces", S::List(&S::Str(Sc::Ns))),
    ("notNamespaces", S::List(&S::Str(Sc::Ns))),
    ("ipBlocks", S::List(&S::Str(Sc::Cidr))),
    ("notIpBlocks", S::List(&S::Str(Sc::Cidr))),
    ("remoteIpBlocks", S::List(&S::Str(Sc::Cidr))),
    ("notRemoteIpBlocks", S::List(&S::Str(Sc::Cidr))),
    ("serviceAccounts", S::List(&S::Str(Sc::Principal))),
    ("notServiceAccounts", S::List(&S::Str(Sc::Principal))),
    ("trustDomains", HOSTS),
    ("notTrustDomains", HOSTS),
]);
const OPERATION: S = S::Obj(&[
    ("hosts", HOSTS),
    ("notHosts", HOSTS),
    ("ports", S::List(&S::Str(Sc::Port))),
    ("notPorts", S::List(&S::Str(Sc::Port))),
    ("methods", S::List(&S::Str(Sc::Method))),
    ("notMethods", S::List(&S::Str(Sc::Method))),
    ("paths", S::List(&S::Str(Sc::Path))),
    ("notPaths", S::List(&S::Str(Sc::Path))),
]);
const AUTHZ: S = S::Obj(&[
    ("selector", WORKLOAD_SELECTOR),
    ("targetRef", TARGET_REF),
    ("targetRefs", S::List(&TARGET_REF)),
    (
        "rules",
        S::List(&S::Obj(&[
            ("from", S::List(&S::Obj(&[("source", SOURCE)]))),
            ("to", S::List(&S::Obj(&[("operation", OPERATION)]))),
            (
                "when",
                S::List(&S::Obj(&[
                    (
                        "key",
                        e(&[
                            "request.headers[x-token]",
                            "source.ip",
                            "source.namespace",
                            "request.auth.claims[iss]",
                            "destination.port",
                            "connection.sni",
                            "bogus.key",
                            "request.headers",
                        ]),
                    ),
                    ("values", STRS),
                    ("notValues", STRS),
                ])),
            ),
        ])),
    ),
    ("action", e(&["ALLOW", "DENY", "AUDIT", "CUSTOM", "X"])),
    ("provider", S::Obj(&[("name", NAME)])),
]);
const REQUEST_AUTHN: S = S::Obj(&[
    ("selector", WORKLOAD_SELECTOR),
    ("targetRef", TARGET_REF),
    ("targetRefs", S::List(&TARGET_REF)),
    (
        "jwtRules",
        S::List(&S::Obj(&[
            ("issuer", e(&["https://accounts.example.com", "", "issuer@x", "a"])),
            ("audiences", STRS),
            ("jwksUri", e(&["https://example.com/jwks.json", "http://x", "not a uri", ""])),
            ("jwks_uri", e(&["https://example.com/jwks.json", ""])),
            ("jwks", e(&["{\"keys\":[]}", "{", ""])),
            ("fromHeaders", S::List(&S::Obj(&[("name", S::Str(Sc::Header)), ("prefix", S::Str(Sc::Text))]))),
            ("fromParams", STRS),
            ("fromCookies", STRS),
            ("outputPayloadToHeader", S::Str(Sc::Header)),
            ("forwardOriginalToken", S::Bool),
            ("outputClaimToHeaders", S::List(&S::Obj(&[("header", S::Str(Sc::Header)), ("claim", NAME)]))),
            ("spaceDelimitedClaims", STRS),
            ("timeout", DUR),
        ])),
    ),
]);
const PROVIDERS: S = S::List(&S::Obj(&[("name", e(&["prometheus", "otel", "envoy", "zipkin", ""]))]));
const TELEMETRY: S = S::Obj(&[
    ("selector", WORKLOAD_SELECTOR),
    ("targetRef", TARGET_REF),
    ("targetRefs", S::List(&TARGET_REF)),
    (
        "tracing",
        S::List(&S::Obj(&[
            ("match", S::Obj(&[("mode", e(&["CLIENT_AND_SERVER", "CLIENT", "SERVER", "X"]))])),
            ("providers", PROVIDERS),
            ("randomSamplingPercentage", S::Num),
            ("disableSpanReporting", S::Bool),
            ("disableContextPropagation", S::Bool),
            (
                "customTags",
                S::Map(
                    Sc::Name,
                    &S::Obj(&[
                        ("literal", S::Obj(&[("value", S::Str(Sc::Text))])),
                        ("environment", S::Obj(&[("name", NAME), ("defaultValue", S::Str(Sc::Text))])),
                        ("header", S::Obj(&[("name", S::Str(Sc::Header)), ("defaultValue", S::Str(Sc::Text))])),
                    ]),
                ),
            ),
            ("useRequestIdForTraceSampling", S::Bool),
            ("enableIstioTags", S::Bool),
        ])),
    ),
    (
        "metrics",
        S::List(&S::Obj(&[
            ("providers", PROVIDERS),
            (
                "overrides",
                S::List(&S::Obj(&[
                    (
                        "match",
                        S::Obj(&[
                            ("metric", e(&["ALL_METRICS", "REQUEST_COUNT", "TCP_SENT_BYTES", "X"])),
                            ("customMetric", NAME),
                            ("mode", e(&["CLIENT_AND_SERVER", "CLIENT", "SERVER"])),
                        ]),
                    ),
                    ("disabled", S::Bool),
                    (
                        "tagOverrides",
                        S::Map(
                            Sc::Name,
                            &S::Obj(&[("operation", e(&["UPSERT", "REMOVE", "X"])), ("value", S::Str(Sc::Text))]),
                        ),
                    ),
                ])),
            ),
            ("reportingInterval", DUR),
        ])),
    ),
    (
        "accessLogging",
        S::List(&S::Obj(&[
            ("match", S::Obj(&[("mode", e(&["CLIENT_AND_SERVER", "CLIENT", "SERVER"]))])),
            ("providers", PROVIDERS),
            ("disabled", S::Bool),
            ("filter", S::Obj(&[("expression", e(&["response.code >= 400", "", "((("]))])),
        ])),
    ),
]);

const PARENT_REF: S = S::Obj(&[
    ("group", e(&["gateway.networking.k8s.io", "", "networking.istio.io"])),
    ("kind", e(&["Gateway", "Service", "ServiceEntry", "Mesh"])),
    ("namespace", S::Str(Sc::Ns)),
    ("name", NAME),
    ("sectionName", NAME),
    ("port", PORT_NUM),
]);
const HEADER_FILTER: S = S::Obj(&[
    ("set", S::List(&S::Obj(&[("name", S::Str(Sc::Header)), ("value", S::Str(Sc::Text))]))),
    ("add", S::List(&S::Obj(&[("name", S::Str(Sc::Header)), ("value", S::Str(Sc::Text))]))),
    ("remove", S::List(&S::Str(Sc::Header))),
]);
const BACKEND_REF: S = S::Obj(&[
    ("group", e(&["", "networking.istio.io", "gateway.networking.k8s.io"])),
    ("kind", e(&["Service", "ServiceEntry", "Hostname", "Pod"])),
    ("name", NAME),
    ("namespace", S::Str(Sc::Ns)),
    ("port", PORT_NUM),
]);
const PATH_MODIFIER: S = S::Obj(&[
    ("type", e(&["ReplaceFullPath", "ReplacePrefixMatch", "X"])),
    ("replaceFullPath", S::Str(Sc::Path)),
    ("replacePrefixMatch", S::Str(Sc::Path)),
]);
const ROUTE_FILTER: S = S::Obj(&[
    (
        "type",
        e(&[
            "RequestHeaderModifier",
            "ResponseHeaderModifier",
            "RequestMirror",
            "RequestRedirect",
            "URLRewrite",
            "ExtensionRef",
            "CORS",
            "X",
        ]),
    ),
    ("requestHeaderModifier", HEADER_FILTER),
    ("responseHeaderModifier", HEADER_FILTER),
    (
        "requestMirror",
        S::Obj(&[
            ("backendRef", BACKEND_REF),
            ("percent", S::Int(0, 100)),
            ("fraction", S::Obj(&[("numerator", S::Int(0, 100)), ("denominator", S::Int(0, 100))])),
        ]),
    ),
    (
        "requestRedirect",
        S::Obj(&[
            ("scheme", e(&["http", "https", "ftp"])),
            ("hostname", HOST),
            ("path", PATH_MODIFIER),
            ("port", PORT_NUM),
            ("statusCode", S::Int(300, 308)),
        ]),
    ),
    ("urlRewrite", S::Obj(&[("hostname", HOST), ("path", PATH_MODIFIER)])),
    (
        "cors",
        S::Obj(&[
            ("allowOrigins", HOSTS),
            ("allowCredentials", S::Bool),
            ("allowMethods", S::List(&S::Str(Sc::Method))),
            ("allowHeaders", S::List(&S::Str(Sc::Header))),
            ("exposeHeaders", S::List(&S::Str(Sc::Header))),
            ("maxAge", S::Int(0, 86400)),
        ]),
    ),
    ("extensionRef", S::Obj(&[("group", NAME), ("kind", NAME), ("name", NAME)])),
]);
const HEADER_MATCH: S = S::Obj(&[
    ("type", e(&["Exact", "RegularExpression", "Prefix"])),
    ("name", S::Str(Sc::Header)),
    ("value", S::Str(Sc::Regex)),
]);
const SESSION: S = S::Obj(&[
    ("sessionName", NAME),
    ("absoluteTimeout", DUR),
    ("idleTimeout", DUR),
    ("type", e(&["Cookie", "Header", "X"])),
    ("cookieConfig", S::Obj(&[("lifetimeType", e(&["Permanent", "Session", "X"]))])),
]);
const BACKEND_REFS: S = S::List(&S::Obj(&[
    ("group", e(&["", "networking.istio.io"])),
    ("kind", e(&["Service", "ServiceEntry", "Hostname"])),
    ("name", NAME),
    ("namespace", S::Str(Sc::Ns)),
    ("port", PORT_NUM),
    ("weight", S::Int(0, 1_000_000)),
    ("filters", S::List(&ROUTE_FILTER)),
]));
const HTTP_ROUTE_SPEC: S = S::Obj(&[
    ("parentRefs", S::List(&PARENT_REF)),
    ("hostnames", HOSTS),
    (
        "rules",
        S::List(&S::Obj(&[
            ("name", NAME),
            (
                "matches",
                S::List(&S::Obj(&[
                    (
                        "path",
                        S::Obj(&[
                            ("type", e(&["Exact", "PathPrefix", "RegularExpression", "X"])),
                            ("value", S::Str(Sc::Regex)),
                        ]),
                    ),
                    ("headers", S::List(&HEADER_MATCH)),
                    ("queryParams", S::List(&HEADER_MATCH)),
                    ("method", S::Str(Sc::Method)),
                ])),
            ),
            ("filters", S::List(&ROUTE_FILTER)),
            ("backendRefs", BACKEND_REFS),
            ("timeouts", S::Obj(&[("request", DUR), ("backendRequest", DUR)])),
            ("retry", S::Obj(&[("codes", S::List(&S::Int(400, 599))), ("attempts", S::Int(0, 10)), ("backoff", DUR)])),
            ("sessionPersistence", SESSION),
        ])),
    ),
]);
const GRPC_ROUTE_SPEC: S = S::Obj(&[
    ("parentRefs", S::List(&PARENT_REF)),
    ("hostnames", HOSTS),
    (
        "rules",
        S::List(&S::Obj(&[
            ("name", NAME),
            (
                "matches",
                S::List(&S::Obj(&[
                    (
                        "method",
                        S::Obj(&[
                            ("type", e(&["Exact", "RegularExpression", "X"])),
                            ("service", S::Str(Sc::Regex)),
                            ("method", S::Str(Sc::Regex)),
                        ]),
                    ),
                    ("headers", S::List(&HEADER_MATCH)),
                ])),
            ),
            ("filters", S::List(&ROUTE_FILTER)),
            ("backendRefs", BACKEND_REFS),
            ("sessionPersistence", SESSION),
        ])),
    ),
]);
const SECRET_REF: S = S::Obj(&[("group", NAME), ("kind", e(&["Secret", "ConfigMap"])), ("name", NAME), ("namespace", S::Str(Sc::Ns))]);
const KUBE_GATEWAY: S = S::Obj(&[
    ("gatewayClassName", e(&["istio", "istio-waypoint", "", "other"])),
    (
        "listeners",
        S::List(&S::Obj(&[
            ("name", NAME),
            ("hostname", HOST),
            ("port", PORT_NUM),
            ("protocol", e(&["HTTP", "HTTPS", "TLS", "TCP", "UDP", "HBONE", "X"])),
            (
                "tls",
                S::Obj(&[
                    ("mode", e(&["Terminate", "Passthrough", "X"])),
                    ("certificateRefs", S::List(&SECRET_REF)),
                    ("options", S::Map(Sc::Name, &S::Str(Sc::Text))),
                ]),
            ),
            (
                "allowedRoutes",
                S::Obj(&[
                    (
                        "namespaces",
                        S::Obj(&[
                            ("from", e(&["All", "Same", "Selector", "None", "X"])),
                            (
                                "selector",
                                S::Obj(&[
                                    ("matchLabels", LABELS),
                                    (
                                        "matchExpressions",
                                        S::List(&S::Obj(&[
                                            ("key", S::Str(Sc::Label)),
                                            ("operator", e(&["In", "NotIn", "Exists", "DoesNotExist", "X"])),
                                            ("values", S::List(&S::Str(Sc::Label))),
                                        ])),
                                    ),
                                ]),
                            ),
                        ]),
                    ),
                    ("kinds", S::List(&S::Obj(&[("group", NAME), ("kind", e(&["HTTPRoute", "GRPCRoute", "TCPRoute"]))]))),
                ]),
            ),
        ])),
    ),
    ("addresses", S::List(&S::Obj(&[("type", e(&["IPAddress", "Hostname", "X"])), ("value", S::Str(Sc::Cidr))]))),
    ("infrastructure", S::Obj(&[("labels", LABELS), ("annotations", LABELS)])),
]);

const CONTAINER: S = S::Obj(&[
    ("name", NAME),
    ("image", e(&["nginx", "istio/proxyv2"])),
    (
        "ports",
        S::List(&S::Obj(&[
            ("containerPort", PORT_NUM),
            ("name", NAME),
            ("protocol", e(&["TCP", "UDP", "SCTP", "X"])),
        ])),
    ),
]);
const POD_SPEC: S = S::Obj(&[
    ("containers", S::List(&CONTAINER)),
    ("serviceAccountName", NAME),
    ("nodeName", NAME),
    ("hostNetwork", S::Bool),
]);
const POD_STATUS: S = S::Obj(&[
    ("podIP", S::Str(Sc::Cidr)),
    ("podIPs", S::List(&S::Obj(&[("ip", S::Str(Sc::Cidr))]))),
    ("phase", e(&["Running", "Pending", "Succeeded", "Failed", "Unknown"])),
    ("hostIP", S::Str(Sc::Cidr)),
]);
const SERVICE_SPEC: S = S::Obj(&[
    ("selector", LABELS),
    (
        "ports",
        S::List(&S::Obj(&[
            ("name", NAME),
            ("port", PORT_NUM),
            ("targetPort", S::IntOrStr),
            ("protocol", e(&["TCP", "UDP", "SCTP"])),
            ("appProtocol", e(&["http", "grpc", "kubernetes.io/h2c", "tcp"])),
            ("nodePort", PORT_NUM),
        ])),
    ),
    ("clusterIP", S::Str(Sc::Cidr)),
    ("clusterIPs", S::List(&S::Str(Sc::Cidr))),
    ("type", e(&["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"])),
    ("externalName", HOST),
]);
const ENDPOINT_SLICE_BODY: &[(&str, S)] = &[
    ("addressType", e(&["IPv4", "IPv6", "FQDN"])),
    (
        "endpoints",
        S::List(&S::Obj(&[
            ("addresses", S::List(&S::Str(Sc::Cidr))),
            ("conditions", S::Obj(&[("ready", S::Bool), ("serving", S::Bool), ("terminating", S::Bool)])),
            ("targetRef", S::Obj(&[("kind", e(&["Pod"])), ("name", NAME), ("namespace", S::Str(Sc::Ns))])),
            ("nodeName", NAME),
        ])),
    ),
    ("ports", S::List(&S::Obj(&[("name", NAME), ("port", PORT_NUM), ("protocol", e(&["TCP", "UDP"]))]))),
];

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
    KindSpec { versions: &["networking.istio.io/v1"], kind: "ServiceEntry", body: &[("spec", SERVICE_ENTRY)] },
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
    KindSpec { versions: &["gateway.networking.k8s.io/v1"], kind: "GRPCRoute", body: &[("spec", GRPC_ROUTE_SPEC)] },
    KindSpec { versions: &["gateway.networking.k8s.io/v1"], kind: "Gateway", body: &[("spec", KUBE_GATEWAY)] },
    KindSpec { versions: &["apps/v1"], kind: "Deployment", body: &[("spec", S::Obj(&[("replicas", S::Int(0, 3))]))] },
    KindSpec { versions: &["networking.istio.io/v1"], kind: "VirtualServic", body: &[] },
    KindSpec { versions: &["networking.istio.io/v1"], kind: "List", body: &[] },
];

fn pool(class: Sc) -> &'static [&'static str] {
    match class {
        Sc::Name => &["reviews", "v1", "v2", "ratings", "default", "", "a-b", "Bad_Name", "x.y", "waypoint", "http"],
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
            "1s", "0.5s", "250ms", "1m30s", "1h", "10us", "5ns", "0s", "0", "-1s", "1", "abc", "", "1.5.s", "1d",
            "1e3s", "+5s", " 1s", "1µs", ".5s", "5.s", "1h1h", "0.000000001s", "99999999999999999999h",
            "18446744073709551615s", "2562047h47m16.854775807s", "1s ", "1 s", "s", "1ms1", "-0s",
        ],
        Sc::Regex => &[
            "/api/v[0-9]+", "(", ".*", "^a$", "(?i)x", "\\p{L}+", "a{1000}", "a{99999}", "(a*)*", "[", "\\",
            "/productpage", "", "[[:alpha:]]", "(?P<n>x)", "\\bword\\b", "x{2,1}", "(?<!a)b", "\\1",
        ],
        Sc::Label => &["app", "version", "v1", "istio.io/rev", "bad key!", "", "istio.io/dataplane-mode", "ambient",
            "istio.io/use-waypoint", "waypoint", "kubernetes.io/service-name", "reviews", "a/b/c", "-x"],
        Sc::Cidr => &[
            "10.0.0.1", "10.0.0.0/8", "::1", "fe80::/10", "300.1.1.1", "10.0.0.0/33", "", "1.2.3.4/32",
            "0.0.0.0", "0.0.0.0/0", "None", "10.1.2.3", "2001:db8::1", "1.2.3", "example.com",
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
        Sc::Header => &["x-user", "X-Token", "", ":authority", "bad header", "host", "x-envoy-foo", "content-type"],
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
            _ => Number::from_f64(f64::from(u.int_in_range(0..=1000u32)?) / 10.0).map_or(Value::Null, Value::Number),
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
