//! The CA's key material in Kubernetes: a plug-in (intermediate) CA from a Secret in Istio's
//! `cacerts` layout when present, else the generated root in its own Secret, created on first
//! start. Creation is race-safe between replicas: create, and on AlreadyExists read what the
//! winner stored. Key material is never logged. The root certificate (public) is published
//! in a ConfigMap for the proxies to mount ([`publish_root`]).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ObjectMeta, PostParams};

use crate::config::KubeSettings;
use crate::state::{RootCa, StateError};

/// Keys of the generated root's Secret.
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
pub const ROOT_KEY_KEY: &str = "root-key.pem";
/// Keys of Istio's plug-in CA Secret (`cacerts`).
pub const CA_CERT_KEY: &str = "ca-cert.pem";
pub const CA_KEY_KEY: &str = "ca-key.pem";
pub const CERT_CHAIN_KEY: &str = "cert-chain.pem";

/// The CA's Secrets are unusable.
#[derive(Debug, thiserror::Error)]
pub enum RootSecretError {
    #[error("{what} secret {secret}: {source}")]
    Api { what: &'static str, secret: String, source: kube::Error },
    #[error("secret {secret}: missing keys {}", keys.join(", "))]
    Missing { secret: String, keys: Vec<String> },
    #[error("secret {secret}: key {key} is not UTF-8 PEM")]
    NotText { secret: String, key: String },
    #[error("{0}")]
    Invalid(#[from] StateError),
}

/// Where the signing CA came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootOrigin {
    /// The plug-in CA Secret.
    Plugin { secret: String },
    /// The generated root's Secret, read (created earlier, or by another replica).
    Existing { secret: String },
    /// The generated root's Secret, created by this start.
    Created { secret: String },
}

fn text(secret: &Secret, name: &str, key: &str) -> Result<Option<String>, RootSecretError> {
    let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) else { return Ok(None) };
    String::from_utf8(v.0.clone())
        .map(Some)
        .map_err(|_| RootSecretError::NotText { secret: name.to_string(), key: key.to_string() })
}

fn required(secret: &Secret, name: &str, keys: &[&str]) -> Result<Vec<String>, RootSecretError> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for k in keys {
        match text(secret, name, k)? {
            Some(t) if !t.trim().is_empty() => out.push(t),
            _ => missing.push(k.to_string()),
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(RootSecretError::Missing { secret: name.to_string(), keys: missing })
    }
}

fn from_root_secret(secret: &Secret, name: &str) -> Result<RootCa, RootSecretError> {
    let v = required(secret, name, &[ROOT_CERT_KEY, ROOT_KEY_KEY])?;
    Ok(RootCa::from_pem(&v[0], &v[1], None, None, &format!("secret {name}"))?)
}

fn from_plugin_secret(secret: &Secret, name: &str) -> Result<RootCa, RootSecretError> {
    let v = required(secret, name, &[CA_CERT_KEY, CA_KEY_KEY, ROOT_CERT_KEY])?;
    let chain = text(secret, name, CERT_CHAIN_KEY)?;
    Ok(RootCa::from_pem(&v[0], &v[1], chain.as_deref(), Some(&v[2]), &format!("secret {name}"))?)
}

/// Loads the plug-in CA if its Secret exists, else the root Secret, creating it if absent.
pub async fn load_or_create(
    client: &kube::Client,
    settings: &KubeSettings,
    trust_domain: &str,
) -> Result<(RootCa, RootOrigin), RootSecretError> {
    let ns = &settings.namespace;
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    let plugin = format!("{ns}/{}", settings.plugin_secret);
    let found = api.get_opt(&settings.plugin_secret).await.map_err(|source| RootSecretError::Api {
        what: "reading plug-in CA",
        secret: plugin.clone(),
        source,
    })?;
    if let Some(s) = found {
        return Ok((from_plugin_secret(&s, &plugin)?, RootOrigin::Plugin { secret: plugin }));
    }
    let name = format!("{ns}/{}", settings.root_secret);
    let api_err = |what| {
        let secret = name.clone();
        move |source| RootSecretError::Api { what, secret, source }
    };
    if let Some(s) = api.get_opt(&settings.root_secret).await.map_err(api_err("reading root"))? {
        return Ok((from_root_secret(&s, &name)?, RootOrigin::Existing { secret: name }));
    }
    let (root, key_pem) = RootCa::generate(trust_domain)?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(settings.root_secret.clone()),
            namespace: Some(ns.clone()),
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".into(), "mesh-ca".into())])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (ROOT_CERT_KEY.to_string(), ByteString(root.cert_pem().as_bytes().to_vec())),
            (ROOT_KEY_KEY.to_string(), ByteString(key_pem.into_bytes())),
        ])),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok((root, RootOrigin::Created { secret: name })),
        // Another replica won the race: use what it stored, drop ours.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let s = api.get(&settings.root_secret).await.map_err(api_err("reading root"))?;
            Ok((from_root_secret(&s, &name)?, RootOrigin::Existing { secret: name }))
        }
        Err(source) => Err(RootSecretError::Api { what: "creating root", secret: name, source }),
    }
}

/// Publishes the root certificate in ConfigMap `<namespace>/<rootConfigMap>` (key
/// `root-cert.pem`): created when absent, replaced when it holds another root. Returns whether
/// it changed anything.
pub async fn publish_root(
    client: &kube::Client,
    settings: &KubeSettings,
    pem: &str,
) -> Result<bool, kube::Error> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), &settings.namespace);
    let name = &settings.root_config_map;
    let data = BTreeMap::from([(ROOT_CERT_KEY.to_string(), pem.to_string())]);
    match api.get_opt(name).await? {
        Some(cm) if cm.data.as_ref() == Some(&data) => Ok(false),
        Some(mut cm) => {
            cm.data = Some(data);
            api.replace(name, &PostParams::default(), &cm).await?;
            Ok(true)
        }
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(settings.namespace.clone()),
                    labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".into(), "mesh-ca".into())])),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..ConfigMap::default()
            };
            match api.create(&PostParams::default(), &cm).await {
                Ok(_) => Ok(true),
                // Another replica published at the same time; it holds the same root.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}
