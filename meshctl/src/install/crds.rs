//! The CustomResourceDefinitions of the Istio and Gateway API kinds the model reads, embedded
//! verbatim from `deploy/crds/` (Istio 1.30.3 and Gateway API v1.6.1 schemas) and labelled
//! `app.kubernetes.io/managed-by: meshctl`, so `uninstall --purge-crds` removes only the
//! ones meshctl created. At apply time a CRD that already exists without that label (Istio's,
//! a Gateway API install) is left alone.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use super::object::{Object, labels};
use super::{InstallError, PART_OF};

macro_rules! crd_files {
    ($($name:literal),* $(,)?) => {
        /// `(file name, YAML)` of each embedded CRD, in apply order.
        pub const CRD_FILES: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../../deploy/crds/", $name)))),*
        ];
    };
}

crd_files!(
    "virtualservices.networking.istio.io.yaml",
    "destinationrules.networking.istio.io.yaml",
    "serviceentries.networking.istio.io.yaml",
    "gateways.networking.istio.io.yaml",
    "sidecars.networking.istio.io.yaml",
    "envoyfilters.networking.istio.io.yaml",
    "peerauthentications.security.istio.io.yaml",
    "authorizationpolicies.security.istio.io.yaml",
    "requestauthentications.security.istio.io.yaml",
    "telemetries.telemetry.istio.io.yaml",
    "httproutes.gateway.networking.k8s.io.yaml",
    "grpcroutes.gateway.networking.k8s.io.yaml",
    "gateways.gateway.networking.k8s.io.yaml",
);

/// Parses the embedded CRDs and adds meshctl's labels.
pub fn crds() -> Result<Vec<Object>, InstallError> {
    CRD_FILES
        .iter()
        .map(|(file, text)| {
            let mut crd: CustomResourceDefinition =
                serde_yaml::from_str(text).map_err(|e| InstallError::Crd { file, reason: e.to_string() })?;
            let expected = file.trim_end_matches(".yaml");
            if crd.metadata.name.as_deref() != Some(expected) {
                return Err(InstallError::Crd {
                    file,
                    reason: format!(
                        "metadata.name is {:?}, the file name says {expected:?}",
                        crd.metadata.name
                    ),
                });
            }
            // Only meshctl's labels: the Istio chart's `heritage`/`release` would claim a Helm
            // release that does not exist.
            crd.metadata.labels = Some(labels(PART_OF));
            Ok(Object::typed(&crd))
        })
        .collect()
}
