//! Pieces of pod specs the components share: downward-API env, the config / root / token
//! volumes, the restricted security context, probes and resource requests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, ConfigMapVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::{CONFIG_DIR, ROOT_DIR, TOKEN_DIR, TOKEN_FILE};
use super::{CA_TOKEN_AUDIENCE, InstallOptions, ROOT_CERT_CONFIGMAP};

/// Uid/gid of the non-root components (distroless `nonroot`).
pub const NONROOT: i64 = 65532;

/// `NAME` from a pod field (`spec.nodeName`, `metadata.name`, `metadata.namespace`).
pub fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// NODE_NAME, POD_NAME, POD_NAMESPACE.
pub fn downward_env() -> Vec<EnvVar> {
    vec![
        field_env("NODE_NAME", "spec.nodeName"),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
    ]
}

/// A read-only mount.
pub fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(true), ..Default::default() }
}

/// The component's config ConfigMap as volume `config`.
pub fn config_volume(config_map: &str) -> Volume {
    Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource { name: config_map.into(), ..Default::default() }),
        ..Default::default()
    }
}

/// Volume `ca`: the audience-bound ServiceAccount token for mesh-ca and the mesh root
/// certificate, projected together (the root ConfigMap is published by mesh-ca; the pod
/// waits for it).
pub fn ca_volumes(opts: &InstallOptions) -> Vec<Volume> {
    let token = Volume {
        name: "ca-token".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(CA_TOKEN_AUDIENCE.into()),
                    expiration_seconds: Some(opts.token_ttl.as_secs() as i64),
                    path: TOKEN_FILE.into(),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let root = Volume {
        name: "ca-root".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                config_map: Some(ConfigMapProjection {
                    name: ROOT_CERT_CONFIGMAP.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![token, root]
}

/// Mounts of [`config_volume`] and [`ca_volumes`].
pub fn proxy_mounts() -> Vec<VolumeMount> {
    vec![mount("config", CONFIG_DIR), mount("ca-token", TOKEN_DIR), mount("ca-root", ROOT_DIR)]
}

/// Non-root, no privilege escalation, no capabilities, read-only root, default seccomp.
pub fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(NONROOT),
        run_as_group: Some(NONROOT),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

/// `GET /healthz/ready` on 15021.
pub fn readiness() -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz/ready".into()),
            port: IntOrString::Int(15021),
            ..Default::default()
        }),
        period_seconds: Some(5),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// Requests only: no CPU limit (throttling a proxy adds latency to every connection).
pub fn requests(cpu: &str, memory: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])),
        ..Default::default()
    }
}
