//! Shapes of the Gateway API kinds (HTTPRoute, GRPCRoute, Gateway) and the Kubernetes core
//! kinds (Pod, Service, EndpointSlice).

use super::istio::{DUR, HOST, HOSTS, LABELS, NAME, PORT_NUM};
use super::{S, Sc, e};

pub(super) const PARENT_REF: S = S::Obj(&[
    ("group", e(&["gateway.networking.k8s.io", "", "networking.istio.io"])),
    ("kind", e(&["Gateway", "Service", "ServiceEntry", "Mesh"])),
    ("namespace", S::Str(Sc::Ns)),
    ("name", NAME),
    ("sectionName", NAME),
    ("port", PORT_NUM),
]);
pub(super) const HEADER_FILTER: S = S::Obj(&[
    ("set", S::List(&S::Obj(&[("name", S::Str(Sc::Header)), ("value", S::Str(Sc::Text))]))),
    ("add", S::List(&S::Obj(&[("name", S::Str(Sc::Header)), ("value", S::Str(Sc::Text))]))),
    ("remove", S::List(&S::Str(Sc::Header))),
]);
pub(super) const BACKEND_REF: S = S::Obj(&[
    ("group", e(&["", "networking.istio.io", "gateway.networking.k8s.io"])),
    ("kind", e(&["Service", "ServiceEntry", "Hostname", "Pod"])),
    ("name", NAME),
    ("namespace", S::Str(Sc::Ns)),
    ("port", PORT_NUM),
]);
pub(super) const PATH_MODIFIER: S = S::Obj(&[
    ("type", e(&["ReplaceFullPath", "ReplacePrefixMatch", "X"])),
    ("replaceFullPath", S::Str(Sc::Path)),
    ("replacePrefixMatch", S::Str(Sc::Path)),
]);
pub(super) const ROUTE_FILTER: S = S::Obj(&[
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
pub(super) const HEADER_MATCH: S = S::Obj(&[
    ("type", e(&["Exact", "RegularExpression", "Prefix"])),
    ("name", S::Str(Sc::Header)),
    ("value", S::Str(Sc::Regex)),
]);
pub(super) const SESSION: S = S::Obj(&[
    ("sessionName", NAME),
    ("absoluteTimeout", DUR),
    ("idleTimeout", DUR),
    ("type", e(&["Cookie", "Header", "X"])),
    ("cookieConfig", S::Obj(&[("lifetimeType", e(&["Permanent", "Session", "X"]))])),
]);
pub(super) const BACKEND_REFS: S = S::List(&S::Obj(&[
    ("group", e(&["", "networking.istio.io"])),
    ("kind", e(&["Service", "ServiceEntry", "Hostname"])),
    ("name", NAME),
    ("namespace", S::Str(Sc::Ns)),
    ("port", PORT_NUM),
    ("weight", S::Int(0, 1_000_000)),
    ("filters", S::List(&ROUTE_FILTER)),
]));
pub(super) const HTTP_ROUTE_SPEC: S = S::Obj(&[
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
            (
                "retry",
                S::Obj(&[
                    ("codes", S::List(&S::Int(400, 599))),
                    ("attempts", S::Int(0, 10)),
                    ("backoff", DUR),
                ]),
            ),
            ("sessionPersistence", SESSION),
        ])),
    ),
]);
pub(super) const GRPC_ROUTE_SPEC: S = S::Obj(&[
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
pub(super) const SECRET_REF: S = S::Obj(&[
    ("group", NAME),
    ("kind", e(&["Secret", "ConfigMap"])),
    ("name", NAME),
    ("namespace", S::Str(Sc::Ns)),
]);
pub(super) const KUBE_GATEWAY: S = S::Obj(&[
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
                    (
                        "kinds",
                        S::List(&S::Obj(&[
                            ("group", NAME),
                            ("kind", e(&["HTTPRoute", "GRPCRoute", "TCPRoute"])),
                        ])),
                    ),
                ]),
            ),
        ])),
    ),
    (
        "addresses",
        S::List(&S::Obj(&[("type", e(&["IPAddress", "Hostname", "X"])), ("value", S::Str(Sc::Cidr))])),
    ),
    ("infrastructure", S::Obj(&[("labels", LABELS), ("annotations", LABELS)])),
]);

pub(super) const CONTAINER: S = S::Obj(&[
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
pub(super) const POD_SPEC: S = S::Obj(&[
    ("containers", S::List(&CONTAINER)),
    ("serviceAccountName", NAME),
    ("nodeName", NAME),
    ("hostNetwork", S::Bool),
]);
pub(super) const POD_STATUS: S = S::Obj(&[
    ("podIP", S::Str(Sc::Cidr)),
    ("podIPs", S::List(&S::Obj(&[("ip", S::Str(Sc::Cidr))]))),
    ("phase", e(&["Running", "Pending", "Succeeded", "Failed", "Unknown"])),
    ("hostIP", S::Str(Sc::Cidr)),
]);
pub(super) const SERVICE_SPEC: S = S::Obj(&[
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
pub(super) const ENDPOINT_SLICE_BODY: &[(&str, S)] = &[
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
