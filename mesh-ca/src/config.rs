//! The CA's configuration file (YAML, camelCase keys), with defaults for every field.
//! Relative paths in it are resolved against the file's folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Configuration of `mesh-ca`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CaConfig {
    /// Trust domain of every identity issued (`spiffe://<trustDomain>/...`); default `cluster.local`.
    pub trust_domain: String,
    /// Lifetime given when a request asks for 0 seconds (e.g. `24h`, `90m`, `3600s`); default 24 h.
    #[serde(deserialize_with = "mesh_api::duration::config::deserialize")]
    pub default_ttl: Duration,
    /// Longest lifetime issued; default 7 days (`7d`). Longer requests are clamped to it, not
    /// refused (Istio's CA refuses them; clamping keeps clients that ask for long TTLs working,
    /// and the issued certificate states the real validity).
    #[serde(deserialize_with = "mesh_api::duration::config::deserialize")]
    pub max_ttl: Duration,
    /// Kubernetes YAML files or folders the model is loaded from (which pods run on which
    /// node, as whom); watched and reloaded.
    pub model: Vec<PathBuf>,
    /// File of `<node-name> <token>` lines: the bearer tokens nodes bootstrap with. Absent:
    /// token bootstrap is disabled.
    pub node_tokens_file: Option<PathBuf>,
    /// PEM root certificate to sign with; absent: generated into the state folder on first start.
    pub root_cert: Option<PathBuf>,
    /// PEM (PKCS#8) private key of `rootCert`; must be given together with it.
    pub root_key: Option<PathBuf>,
    /// Extra DNS names for the CA's serving certificate, besides `mesh-ca`, `localhost` and
    /// the listen IP.
    pub server_names: Vec<String>,
    /// Kubernetes mode: ServiceAccount tokens verified by TokenReview, placement from the API
    /// server, root in a Secret. Absent: file mode only.
    pub kubernetes: Option<KubeSettings>,
}

/// Kubernetes mode settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubeSettings {
    /// Kubeconfig file to reach the API server; absent: in-cluster config (or `KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    /// Audiences a caller's token must be bound to (any of them); default `[istio-ca]`.
    pub audiences: Vec<String>,
    /// Namespace of mesh-ca, holding the root and plug-in CA Secrets; default `mesh-system`.
    pub namespace: String,
    /// Secret the generated root key and certificate are kept in; default `mesh-ca-root`.
    pub root_secret: String,
    /// Secret of a plug-in (intermediate) CA in Istio's `cacerts` layout (`ca-cert.pem`,
    /// `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`); preferred when present. Default `cacerts`.
    pub plugin_secret: String,
    /// ConfigMap (in `namespace`) mesh-ca publishes its root certificate (public) in, key
    /// `root-cert.pem`, as Istio's `istio-ca-root-cert`; default `mesh-ca-root-cert`.
    pub root_config_map: String,
    /// ServiceAccounts (`namespace/name`) of ztunnels: they may obtain identities of pods on
    /// their own node. Default `[mesh-system/ztunnel]`.
    pub ztunnel_service_accounts: Vec<String>,
}

impl Default for KubeSettings {
    fn default() -> Self {
        KubeSettings {
            kubeconfig: None,
            audiences: vec!["istio-ca".into()],
            namespace: "mesh-system".into(),
            root_secret: "mesh-ca-root".into(),
            plugin_secret: "cacerts".into(),
            root_config_map: "mesh-ca-root-cert".into(),
            ztunnel_service_accounts: vec!["mesh-system/ztunnel".into()],
        }
    }
}

impl KubeSettings {
    /// The ztunnel ServiceAccounts as `(namespace, name)`.
    pub fn ztunnels(&self) -> Vec<(String, String)> {
        self.ztunnel_service_accounts
            .iter()
            .filter_map(|s| s.split_once('/'))
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect()
    }

    fn problems(&self, out: &mut Vec<String>) {
        if self.audiences.is_empty() || self.audiences.iter().any(|a| a.is_empty()) {
            out.push("kubernetes.audiences: give at least one non-empty audience".into());
        }
        for (field, v) in [
            ("namespace", &self.namespace),
            ("rootSecret", &self.root_secret),
            ("pluginSecret", &self.plugin_secret),
            ("rootConfigMap", &self.root_config_map),
        ] {
            if v.is_empty() {
                out.push(format!("kubernetes.{field}: must not be empty"));
            }
        }
        for (i, s) in self.ztunnel_service_accounts.iter().enumerate() {
            if !matches!(s.split_once('/'), Some((n, a)) if !n.is_empty() && !a.is_empty() && !a.contains('/'))
            {
                out.push(format!("kubernetes.ztunnelServiceAccounts[{i}]: {s:?} is not `namespace/name`"));
            }
        }
    }
}

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig {
            trust_domain: mesh_api::DEFAULT_TRUST_DOMAIN.to_string(),
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            model: Vec::new(),
            node_tokens_file: None,
            root_cert: None,
            root_key: None,
            server_names: Vec::new(),
            kubernetes: None,
        }
    }
}

/// The configuration file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {field}: {reason}")]
    Parse { path: String, field: String, reason: String },
    #[error("{path}: {}", problems.join("; "))]
    Invalid { path: String, problems: Vec<String> },
}

impl CaConfig {
    /// Reads and checks a config file; relative paths become relative to its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: p.clone(), source })?;
        let mut config = Self::parse(&text, &p)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses and checks YAML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: CaConfig = if text.trim().is_empty() {
            CaConfig::default()
        } else {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
                path: origin.to_string(),
                field: e.path().to_string(),
                reason: e.inner().to_string(),
            })?
        };
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if mesh_api::SpiffeId::new(&self.trust_domain, "ns", "sa").is_err() {
            problems.push(format!("trustDomain: {:?} is not a valid trust domain", self.trust_domain));
        }
        if self.default_ttl.is_zero() {
            problems.push("defaultTtl: must be positive".into());
        }
        if self.max_ttl.is_zero() {
            problems.push("maxTtl: must be positive".into());
        }
        if self.default_ttl > self.max_ttl {
            problems.push(format!(
                "defaultTtl: {}s exceeds maxTtl {}s",
                self.default_ttl.as_secs(),
                self.max_ttl.as_secs()
            ));
        }
        if self.root_cert.is_some() != self.root_key.is_some() {
            problems.push("rootCert/rootKey: give both or neither".into());
        }
        if let Some(k) = &self.kubernetes {
            k.problems(&mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { path: origin.to_string(), problems })
        }
    }

    /// Makes relative paths relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.model.iter_mut().for_each(fix);
        let kubeconfig = self.kubernetes.as_mut().and_then(|k| k.kubeconfig.as_mut());
        for p in [self.node_tokens_file.as_mut(), self.root_cert.as_mut(), self.root_key.as_mut(), kubeconfig]
            .into_iter()
            .flatten()
        {
            fix(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {}

    #[test]
    fn parse_and_validate() {
        let c = CaConfig::parse("trustDomain: example.org\ndefaultTtl: 1h\nmaxTtl: 2d\n", "t").unwrap();
        assert_eq!(c.trust_domain, "example.org");
        assert_eq!(c.default_ttl, Duration::from_secs(3600));
        assert_eq!(CaConfig::parse("", "t").unwrap(), CaConfig::default());
        let e = CaConfig::parse("defaultTtl: 8d\nrootCert: a.pem\ntrustDomain: Bad\n", "f.yaml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("defaultTtl: 691200s exceeds maxTtl"), "{msg}");
        assert!(msg.contains("rootCert/rootKey"), "{msg}");
        assert!(msg.contains("trustDomain"), "{msg}");
        let e = CaConfig::parse("maxTtl: 3q\n", "f.yaml").unwrap_err().to_string();
        assert!(e.starts_with("f.yaml: maxTtl:"), "{e}");
        let e = CaConfig::parse("bogus: 1\n", "f.yaml").unwrap_err().to_string();
        assert!(e.contains("unknown field `bogus`"), "{e}");
    }

    #[test]
    fn kubernetes_section() {
        let c = CaConfig::parse("kubernetes: {}\n", "t").unwrap();
        let k = c.kubernetes.unwrap();
        assert_eq!(k, KubeSettings::default());
        assert_eq!(k.ztunnels(), vec![("mesh-system".to_string(), "ztunnel".to_string())]);
        let text =
            "kubernetes:\n  audiences: []\n  ztunnelServiceAccounts: [ztunnel, a/b/c]\n  rootSecret: ''\n";
        let e = CaConfig::parse(text, "f.yaml").unwrap_err().to_string();
        assert!(e.contains("kubernetes.audiences"), "{e}");
        assert!(e.contains("ztunnelServiceAccounts[0]: \"ztunnel\""), "{e}");
        assert!(e.contains("ztunnelServiceAccounts[1]"), "{e}");
        assert!(e.contains("kubernetes.rootSecret"), "{e}");
        let mut c = CaConfig::parse("kubernetes:\n  kubeconfig: kc\n", "t").unwrap();
        c.resolve_paths(Path::new("/etc/mesh"));
        assert_eq!(c.kubernetes.unwrap().kubeconfig.unwrap(), Path::new("/etc/mesh/kc"));
    }
}
