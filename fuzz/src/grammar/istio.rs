//! Shapes of the Istio kinds (networking, security, telemetry) and the small shapes shared
//! with the Gateway API and Kubernetes kinds.

use super::{S, Sc, e};

pub(super) const NAME: S = S::Str(Sc::Name);
pub(super) const HOST: S = S::Str(Sc::Host);
pub(super) const DUR: S = S::Str(Sc::Dur);
pub(super) const PORT_NUM: S = S::Int(1, 65535);
pub(super) const STRS: S = S::List(&S::Str(Sc::Text));
pub(super) const HOSTS: S = S::List(&HOST);
pub(super) const LABELS: S = S::Map(Sc::Label, &S::Str(Sc::Label));
pub(super) const PCT: S = S::Obj(&[("value", S::Num)]);
pub(super) const STRING_MATCH: S =
    S::Obj(&[("exact", S::Str(Sc::Path)), ("prefix", S::Str(Sc::Path)), ("regex", S::Str(Sc::Regex))]);
pub(super) const DESTINATION: S =
    S::Obj(&[("host", HOST), ("subset", NAME), ("port", S::Obj(&[("number", PORT_NUM)]))]);
pub(super) const HEADER_OPS: S = S::Obj(&[
    ("set", S::Map(Sc::Header, &S::Str(Sc::Text))),
    ("add", S::Map(Sc::Header, &S::Str(Sc::Text))),
    ("remove", S::List(&S::Str(Sc::Header))),
]);
pub(super) const HEADERS: S = S::Obj(&[("request", HEADER_OPS), ("response", HEADER_OPS)]);
pub(super) const WORKLOAD_SELECTOR: S = S::Obj(&[("matchLabels", LABELS)]);
pub(super) const LABELS_SELECTOR: S = S::Obj(&[("labels", LABELS)]);
pub(super) const TARGET_REF: S = S::Obj(&[
    ("group", e(&["", "gateway.networking.k8s.io", "networking.istio.io", "core"])),
    ("kind", e(&["Service", "Gateway", "ServiceEntry", "GatewayClass", "Pod"])),
    ("name", NAME),
    ("namespace", S::Str(Sc::Ns)),
]);
pub(super) const EXPORT_TO: S = S::List(&e(&[".", "*", "~", "default", "bookinfo"]));

pub(super) const HTTP_MATCH: S = S::Obj(&[
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
pub(super) const HTTP_ROUTE: S = S::Obj(&[
    ("name", NAME),
    ("match", S::List(&HTTP_MATCH)),
    (
        "route",
        S::List(&S::Obj(&[("destination", DESTINATION), ("weight", S::Int(0, 100)), ("headers", HEADERS)])),
    ),
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
pub(super) const L4_MATCH: S = S::Obj(&[
    ("destinationSubnets", S::List(&S::Str(Sc::Cidr))),
    ("port", PORT_NUM),
    ("sourceLabels", LABELS),
    ("gateways", HOSTS),
    ("sourceNamespace", S::Str(Sc::Ns)),
    ("sniHosts", HOSTS),
]);
pub(super) const L4_ROUTE: S = S::Obj(&[
    ("match", S::List(&L4_MATCH)),
    ("route", S::List(&S::Obj(&[("destination", DESTINATION), ("weight", S::Int(0, 100))]))),
]);
pub(super) const VIRTUAL_SERVICE: S = S::Obj(&[
    ("hosts", HOSTS),
    ("gateways", HOSTS),
    ("http", S::List(&HTTP_ROUTE)),
    ("tls", S::List(&L4_ROUTE)),
    ("tcp", S::List(&L4_ROUTE)),
    ("exportTo", EXPORT_TO),
]);

pub(super) const LB: S = S::Obj(&[
    (
        "simple",
        e(&["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST", "X"]),
    ),
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
pub(super) const CONN_POOL: S = S::Obj(&[
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
pub(super) const OUTLIER: S = S::Obj(&[
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
pub(super) const CLIENT_TLS: S = S::Obj(&[
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
pub(super) const TRAFFIC_POLICY: S = S::Obj(&[
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
    (
        "tunnel",
        S::Obj(&[
            ("protocol", e(&["CONNECT", "POST", "GET"])),
            ("targetHost", HOST),
            ("targetPort", PORT_NUM),
        ]),
    ),
    ("proxyProtocol", S::Obj(&[("version", e(&["V1", "V2", "V3"]))])),
    ("retryBudget", S::Obj(&[("percent", PCT), ("minRetryConcurrency", S::Int(0, 100))])),
]);
pub(super) const DESTINATION_RULE: S = S::Obj(&[
    ("host", HOST),
    ("trafficPolicy", TRAFFIC_POLICY),
    ("subsets", S::List(&S::Obj(&[("name", NAME), ("labels", LABELS), ("trafficPolicy", TRAFFIC_POLICY)]))),
    ("exportTo", EXPORT_TO),
    ("workloadSelector", WORKLOAD_SELECTOR),
]);

pub(super) const PORT_OBJ: S = S::Obj(&[
    ("number", PORT_NUM),
    ("protocol", e(&["HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS", "UDP", "bogus"])),
    ("name", NAME),
    ("targetPort", PORT_NUM),
]);
pub(super) const SERVICE_ENTRY: S = S::Obj(&[
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
pub(super) const ISTIO_GATEWAY: S = S::Obj(&[
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
                    (
                        "mode",
                        e(&["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "X"]),
                    ),
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
pub(super) const SIDECAR: S = S::Obj(&[
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
            (
                "hosts",
                S::List(&e(&["./*", "istio-system/*", "*/*", "~/*", "bookinfo/reviews", "bad", "a/b/c"])),
            ),
        ])),
    ),
    ("inboundConnectionPool", CONN_POOL),
    (
        "outboundTrafficPolicy",
        S::Obj(&[("mode", e(&["REGISTRY_ONLY", "ALLOW_ANY", "X"])), ("egressProxy", DESTINATION)]),
    ),
]);

pub(super) const PEER_AUTH: S = S::Obj(&[
    ("selector", WORKLOAD_SELECTOR),
    ("mtls", S::Obj(&[("mode", e(&["UNSET", "DISABLE", "PERMISSIVE", "STRICT", "X"]))])),
    (
        "portLevelMtls",
        S::Map(Sc::Port, &S::Obj(&[("mode", e(&["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]))])),
    ),
]);
pub(super) const SOURCE: S = S::Obj(&[
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
pub(super) const OPERATION: S = S::Obj(&[
    ("hosts", HOSTS),
    ("notHosts", HOSTS),
    ("ports", S::List(&S::Str(Sc::Port))),
    ("notPorts", S::List(&S::Str(Sc::Port))),
    ("methods", S::List(&S::Str(Sc::Method))),
    ("notMethods", S::List(&S::Str(Sc::Method))),
    ("paths", S::List(&S::Str(Sc::Path))),
    ("notPaths", S::List(&S::Str(Sc::Path))),
]);
pub(super) const AUTHZ: S = S::Obj(&[
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
pub(super) const REQUEST_AUTHN: S = S::Obj(&[
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
pub(super) const PROVIDERS: S =
    S::List(&S::Obj(&[("name", e(&["prometheus", "otel", "envoy", "zipkin", ""]))]));
pub(super) const TELEMETRY: S = S::Obj(&[
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
                        (
                            "header",
                            S::Obj(&[("name", S::Str(Sc::Header)), ("defaultValue", S::Str(Sc::Text))]),
                        ),
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
                            &S::Obj(&[
                                ("operation", e(&["UPSERT", "REMOVE", "X"])),
                                ("value", S::Str(Sc::Text)),
                            ]),
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
