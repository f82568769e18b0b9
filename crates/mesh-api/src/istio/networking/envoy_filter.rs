//! EnvoyFilter (`networking.istio.io/v1alpha3`): patches to the Envoy configuration Istio
//! generates. The mesh has no Envoy; it reads the typed envelope (selection, matches,
//! operations) as the CRD defines it and keeps `patch.value` as JSON. The one patch family
//! that takes effect is local rate limiting ([`super::local_ratelimit`]); every other patch is
//! reported and ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::{LabelsSelector, PolicyTargetReference};

/// `EnvoyFilter.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyFilterSpec {
    /// Pods (by labels) the patches apply to; none (and no `targetRefs`) = the namespace, or
    /// the whole mesh from the root namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelsSelector>,
    /// Objects the patches attach to (a waypoint's `Gateway`); exclusive with the selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The patches, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_patches: Vec<EnvoyConfigObjectPatch>,
    /// Order among EnvoyFilters of one context (lower first; default 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

/// `EnvoyFilter.EnvoyConfigObjectPatch`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyConfigObjectPatch {
    /// Which kind of Envoy object the patch applies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply_to: Option<ApplyTo>,
    /// Which objects of that kind.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<EnvoyConfigObjectMatch>,
    /// What to do to them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<EnvoyPatch>,
}

/// `EnvoyFilter.ApplyTo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApplyTo {
    Invalid,
    Listener,
    FilterChain,
    NetworkFilter,
    HttpFilter,
    RouteConfiguration,
    VirtualHost,
    HttpRoute,
    Cluster,
    ExtensionConfig,
    Bootstrap,
    ListenerFilter,
}

impl ApplyTo {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyTo::Invalid => "INVALID",
            ApplyTo::Listener => "LISTENER",
            ApplyTo::FilterChain => "FILTER_CHAIN",
            ApplyTo::NetworkFilter => "NETWORK_FILTER",
            ApplyTo::HttpFilter => "HTTP_FILTER",
            ApplyTo::RouteConfiguration => "ROUTE_CONFIGURATION",
            ApplyTo::VirtualHost => "VIRTUAL_HOST",
            ApplyTo::HttpRoute => "HTTP_ROUTE",
            ApplyTo::Cluster => "CLUSTER",
            ApplyTo::ExtensionConfig => "EXTENSION_CONFIG",
            ApplyTo::Bootstrap => "BOOTSTRAP",
            ApplyTo::ListenerFilter => "LISTENER_FILTER",
        }
    }
}

/// `EnvoyFilter.PatchContext`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PatchContext {
    #[default]
    Any,
    SidecarInbound,
    SidecarOutbound,
    Gateway,
    Waypoint,
}

/// `EnvoyFilter.EnvoyConfigObjectMatch`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyConfigObjectMatch {
    /// Config generation context; absent = ANY.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<PatchContext>,
    /// Proxy version and metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyMatch>,
    /// Listener attributes (HTTP_FILTER and other listener patches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<ListenerMatch>,
    /// Route configuration attributes (HTTP_ROUTE, VIRTUAL_HOST, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_configuration: Option<RouteConfigurationMatch>,
    /// Cluster attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterMatch>,
    /// Waypoint attributes (context WAYPOINT only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<WaypointMatch>,
}

/// `EnvoyFilter.ProxyMatch`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyMatch {
    /// RE2 regex over the proxy's Istio version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_version: Option<String>,
    /// Node metadata that must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// `EnvoyFilter.ListenerMatch`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerMatch {
    /// Service or gateway port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u32>,
    /// Deprecated port name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    /// A filter chain of the listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_chain: Option<FilterChainMatch>,
    /// A listener filter by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener_filter: Option<String>,
    /// The listener's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `EnvoyFilter.ListenerMatch.FilterChainMatch`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterChainMatch {
    /// Filter chain name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// SNI of the chain's match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// `raw_buffer` or `tls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport_protocol: Option<String>,
    /// ALPN values (sidecars only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_protocols: Option<String>,
    /// A network filter of the chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterMatch>,
    /// Destination port of the chain's match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<u32>,
}

/// `EnvoyFilter.ListenerMatch.FilterMatch` (also used by [`WaypointMatch`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterMatch {
    /// Filter name (e.g. `envoy.filters.network.http_connection_manager`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An HTTP filter inside it (e.g. `envoy.filters.http.router`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_filter: Option<SubFilterMatch>,
}

/// `EnvoyFilter.ListenerMatch.SubFilterMatch`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubFilterMatch {
    /// HTTP filter name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `EnvoyFilter.RouteConfigurationMatch`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfigurationMatch {
    /// Service or gateway port the route configuration was generated for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u32>,
    /// Gateway port name (GATEWAY context).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    /// Istio Gateway `namespace/name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// A virtual host (and route) of the configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vhost: Option<VirtualHostMatch>,
    /// Route configuration name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `EnvoyFilter.RouteConfigurationMatch.VirtualHostMatch`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualHostMatch {
    /// Virtual host name (`host:port`, or `inbound|http|<port>` for inbound traffic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// One of the virtual host's domains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_name: Option<String>,
    /// A route of the virtual host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<VhostRouteMatch>,
}

/// `EnvoyFilter.RouteConfigurationMatch.RouteMatch`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VhostRouteMatch {
    /// Route name: a VirtualService `http[].name` (`default` for the route of a Service
    /// without routing objects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The route's action kind; absent = ANY.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<RouteMatchAction>,
}

/// `EnvoyFilter.RouteConfigurationMatch.RouteMatch.Action`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RouteMatchAction {
    #[default]
    Any,
    Route,
    Redirect,
    DirectResponse,
}

/// `EnvoyFilter.ClusterMatch`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterMatch {
    /// Service port of the cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u32>,
    /// Service FQDN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// DestinationRule subset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Cluster name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `EnvoyFilter.WaypointMatch` (context WAYPOINT).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaypointMatch {
    /// A filter of the waypoint's chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterMatch>,
    /// Service port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u32>,
    /// A route by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<WaypointRouteMatch>,
}

/// `EnvoyFilter.WaypointMatch.RouteMatch`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaypointRouteMatch {
    /// Route name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `EnvoyFilter.Patch`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyPatch {
    /// How to apply the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<PatchOperation>,
    /// The Envoy object (JSON as Envoy reads it); decoded only for local rate limiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// Filter insertion class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_class: Option<FilterClass>,
}

/// `EnvoyFilter.Patch.Operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PatchOperation {
    Invalid,
    Merge,
    Add,
    Remove,
    InsertBefore,
    InsertAfter,
    InsertFirst,
    Replace,
}

impl PatchOperation {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            PatchOperation::Invalid => "INVALID",
            PatchOperation::Merge => "MERGE",
            PatchOperation::Add => "ADD",
            PatchOperation::Remove => "REMOVE",
            PatchOperation::InsertBefore => "INSERT_BEFORE",
            PatchOperation::InsertAfter => "INSERT_AFTER",
            PatchOperation::InsertFirst => "INSERT_FIRST",
            PatchOperation::Replace => "REPLACE",
        }
    }
}

/// `EnvoyFilter.Patch.FilterClass`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FilterClass {
    Unspecified,
    Authn,
    Authz,
    Stats,
}
