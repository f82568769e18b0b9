//! Istio Gateway: servers (ports, hosts, TLS) of an ingress/egress gateway.
//! `ServerTlsSettings` is shared with Sidecar ingress listeners.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `Gateway.spec` (networking.istio.io).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// Listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
    /// Labels of the gateway pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
}

/// `Server`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// Port to listen on.
    pub port: ServerPort,
    /// Address to bind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Hosts exposed (`ns/host` forms allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// TLS settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Deprecated default endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    /// Server name, for stats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `Port` of a Gateway server / Sidecar listener / ServiceEntry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerPort {
    /// Port number.
    #[serde(default)]
    pub number: u32,
    /// Protocol (HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS).
    #[serde(default)]
    pub protocol: String,
    /// Port name.
    #[serde(default)]
    pub name: String,
    /// Port on the endpoint, when different.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// `ServerTLSSettings`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// Redirect HTTP to HTTPS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    /// TLS mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTlsMode>,
    /// Server certificate file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    /// Private key file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// CA certificates file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// CRL file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    /// Secret with the certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Several secrets (RSA + ECDSA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    /// Secret with the CA certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert_credential_name: Option<String>,
    /// Inline certificate pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<TlsCertificate>,
    /// Accepted client SANs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Accepted client certificate SPKI hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    /// Accepted client certificate hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    /// Minimum TLS version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocol>,
    /// Maximum TLS version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsProtocol>,
    /// Cipher suites.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
}

/// `ServerTLSSettings.TLSCertificate`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsCertificate {
    /// Certificate file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    /// Private key file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// CA certificates file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
}

/// `ServerTLSSettings.TLSmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

/// `ServerTLSSettings.TLSProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TlsProtocol {
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    #[serde(rename = "TLSV1_0")]
    TlsV1_0,
    #[serde(rename = "TLSV1_1")]
    TlsV1_1,
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}
