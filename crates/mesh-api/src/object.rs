//! The typed objects the mesh reads: [`Kind`], [`ObjectKey`], the generic CRD envelope
//! [`Resource`] and the cheap-to-clone [`Object`] sum type.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::diag::ObjectRef;
use crate::gateway::{GrpcRouteSpec, HttpRouteSpec, KubeGatewaySpec};
use crate::istio::networking::{
    DestinationRuleSpec, EnvoyFilterSpec, GatewaySpec, ServiceEntrySpec, SidecarSpec, VirtualServiceSpec,
};
use crate::istio::security::{AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec};
use crate::istio::telemetry::TelemetrySpec;
use crate::k8s::{EndpointSlice, Namespace, Pod, Service, ServiceAccount};

/// A CRD object: envelope plus typed spec (`status` is dropped by the parser).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resource<S> {
    /// `group/version` as written.
    pub api_version: String,
    /// Kind as written.
    pub kind: String,
    /// Standard metadata (namespace defaulted to `default` by the parser).
    pub metadata: ObjectMeta,
    /// The typed spec; an absent spec is the empty spec.
    #[serde(default)]
    pub spec: S,
}

impl<S> Resource<S> {
    /// `metadata.namespace`, or "" if unset.
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("")
    }

    /// `metadata.name`, or "" if unset.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }
}

/// Every kind the mesh understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    Namespace,
    Pod,
    Service,
    EndpointSlice,
    ServiceAccount,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    /// networking.istio.io Gateway.
    Gateway,
    Sidecar,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    Telemetry,
    HttpRoute,
    GrpcRoute,
    /// gateway.networking.k8s.io Gateway.
    KubeGateway,
    /// networking.istio.io EnvoyFilter (v1alpha3 only; local rate limiting takes effect).
    EnvoyFilter,
}

impl Kind {
    pub const ALL: [Kind; 18] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::ServiceAccount,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::Gateway,
        Kind::Sidecar,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::Telemetry,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::KubeGateway,
        Kind::EnvoyFilter,
    ];

    /// The Kubernetes `kind` string (both gateways are `Gateway`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Gateway | Kind::KubeGateway => "Gateway",
            Kind::Sidecar => "Sidecar",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::Telemetry => "Telemetry",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::EnvoyFilter => "EnvoyFilter",
        }
    }

    /// API group ("" for core).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Pod | Kind::Service | Kind::ServiceAccount => "",
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::ServiceEntry
            | Kind::Gateway
            | Kind::Sidecar
            | Kind::EnvoyFilter => "networking.istio.io",
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                "security.istio.io"
            }
            Kind::Telemetry => "telemetry.istio.io",
            Kind::HttpRoute | Kind::GrpcRoute | Kind::KubeGateway => "gateway.networking.k8s.io",
        }
    }

    /// API versions accepted for this kind.
    pub fn versions(self) -> &'static [&'static str] {
        if self == Kind::EnvoyFilter {
            return &["v1alpha3"];
        }
        match self.group() {
            "" | "discovery.k8s.io" => &["v1"],
            "networking.istio.io" => &["v1", "v1beta1", "v1alpha3"],
            "security.istio.io" => &["v1", "v1beta1"],
            "telemetry.istio.io" => &["v1", "v1alpha1"],
            _ => &["v1", "v1beta1"],
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// The kind for an API group and `kind` string, if the mesh reads it.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.group() == group && k.as_str() == kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of an object: kind, namespace ("" if cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        ObjectKey { kind, namespace: namespace.into(), name: name.into() }
    }

    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            kind: self.kind.as_str().to_string(),
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.object_ref(), f)
    }
}

/// A parsed, validated object; cloning is an `Arc` bump.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(Arc<Namespace>),
    Pod(Arc<Pod>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    ServiceAccount(Arc<ServiceAccount>),
    VirtualService(Arc<Resource<VirtualServiceSpec>>),
    DestinationRule(Arc<Resource<DestinationRuleSpec>>),
    ServiceEntry(Arc<Resource<ServiceEntrySpec>>),
    Gateway(Arc<Resource<GatewaySpec>>),
    Sidecar(Arc<Resource<SidecarSpec>>),
    PeerAuthentication(Arc<Resource<PeerAuthenticationSpec>>),
    AuthorizationPolicy(Arc<Resource<AuthorizationPolicySpec>>),
    RequestAuthentication(Arc<Resource<RequestAuthenticationSpec>>),
    Telemetry(Arc<Resource<TelemetrySpec>>),
    HttpRoute(Arc<Resource<HttpRouteSpec>>),
    GrpcRoute(Arc<Resource<GrpcRouteSpec>>),
    KubeGateway(Arc<Resource<KubeGatewaySpec>>),
    EnvoyFilter(Arc<Resource<EnvoyFilterSpec>>),
}

static EMPTY_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::ServiceAccount(_) => Kind::ServiceAccount,
            Object::VirtualService(_) => Kind::VirtualService,
            Object::DestinationRule(_) => Kind::DestinationRule,
            Object::ServiceEntry(_) => Kind::ServiceEntry,
            Object::Gateway(_) => Kind::Gateway,
            Object::Sidecar(_) => Kind::Sidecar,
            Object::PeerAuthentication(_) => Kind::PeerAuthentication,
            Object::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Object::RequestAuthentication(_) => Kind::RequestAuthentication,
            Object::Telemetry(_) => Kind::Telemetry,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::GrpcRoute(_) => Kind::GrpcRoute,
            Object::KubeGateway(_) => Kind::KubeGateway,
            Object::EnvoyFilter(_) => Kind::EnvoyFilter,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::ServiceAccount(o) => &o.metadata,
            Object::VirtualService(o) => &o.metadata,
            Object::DestinationRule(o) => &o.metadata,
            Object::ServiceEntry(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::Sidecar(o) => &o.metadata,
            Object::PeerAuthentication(o) => &o.metadata,
            Object::AuthorizationPolicy(o) => &o.metadata,
            Object::RequestAuthentication(o) => &o.metadata,
            Object::Telemetry(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::GrpcRoute(o) => &o.metadata,
            Object::KubeGateway(o) => &o.metadata,
            Object::EnvoyFilter(o) => &o.metadata,
        }
    }

    /// `metadata.namespace` ("" for cluster-scoped objects).
    pub fn namespace(&self) -> &str {
        self.metadata().namespace.as_deref().unwrap_or("")
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    /// `metadata.labels` (empty map when none).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.metadata().labels.as_ref().unwrap_or(&EMPTY_LABELS)
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(self.kind(), self.namespace(), self.name())
    }

    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            kind: self.kind().as_str().to_string(),
            namespace: self.namespace().to_string(),
            name: self.name().to_string(),
        }
    }
}

impl Serialize for Object {
    /// The object as Kubernetes JSON (for `/config_dump` and `meshctl`).
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        match self {
            Object::Namespace(o) => o.serialize(s),
            Object::Pod(o) => o.serialize(s),
            Object::Service(o) => o.serialize(s),
            Object::EndpointSlice(o) => o.serialize(s),
            Object::ServiceAccount(o) => o.serialize(s),
            Object::VirtualService(o) => o.serialize(s),
            Object::DestinationRule(o) => o.serialize(s),
            Object::ServiceEntry(o) => o.serialize(s),
            Object::Gateway(o) => o.serialize(s),
            Object::Sidecar(o) => o.serialize(s),
            Object::PeerAuthentication(o) => o.serialize(s),
            Object::AuthorizationPolicy(o) => o.serialize(s),
            Object::RequestAuthentication(o) => o.serialize(s),
            Object::Telemetry(o) => o.serialize(s),
            Object::HttpRoute(o) => o.serialize(s),
            Object::GrpcRoute(o) => o.serialize(s),
            Object::KubeGateway(o) => o.serialize(s),
            Object::EnvoyFilter(o) => o.serialize(s),
        }
    }
}
