//! mesh-ca's Deployment and Service: one replica (the root is created on first start; two
//! replicas racing to create it is not handled), non-root, read-only root file system, its
//! state folder an emptyDir (the root key lives in a Secret in cluster mode).

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, PodSpec, PodTemplateSpec, Probe, Service, ServicePort,
    ServiceSpec, TCPSocketAction, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::{CONFIG_DIR, ca_listen};
use super::object::{Object, labels, meta, selector};
use super::pod::{NONROOT, config_volume, downward_env, mount, requests, restricted};
use super::{CA_PORT, InstallOptions};

const NAME: &str = "mesh-ca";

/// The mesh-ca Deployment and its Service.
pub fn render(opts: &InstallOptions) -> Vec<Object> {
    let ns = opts.namespace.as_str();
    let mut state = mount("state", "/var/lib/mesh-ca");
    state.read_only = Some(false);
    let container = Container {
        name: NAME.into(),
        image: Some(opts.image(NAME)),
        args: Some(vec![
            "--config".into(),
            format!("{CONFIG_DIR}/mesh-ca.yaml"),
            "--state-dir".into(),
            "/var/lib/mesh-ca".into(),
            "--listen".into(),
            ca_listen(),
        ]),
        env: Some(downward_env()),
        ports: Some(vec![ContainerPort {
            name: Some("grpc-ca".into()),
            container_port: CA_PORT.into(),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // mesh-ca has no HTTP health endpoint: ready when it accepts TCP on its port.
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(CA_PORT.into()),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        resources: Some(requests("50m", "64Mi")),
        security_context: Some(restricted()),
        volume_mounts: Some(vec![mount("config", CONFIG_DIR), state]),
        ..Default::default()
    };
    let pod = PodSpec {
        service_account_name: Some(NAME.into()),
        containers: vec![container],
        volumes: Some(vec![
            config_volume("mesh-ca-config"),
            Volume {
                name: "state".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
        ]),
        security_context: Some(k8s_openapi::api::core::v1::PodSecurityContext {
            fs_group: Some(NONROOT),
            ..Default::default()
        }),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: meta(NAME, Some(ns), NAME),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector { match_labels: Some(selector(NAME)), ..Default::default() },
            // Recreate: one CA at a time owns the root Secret's first creation.
            strategy: Some(DeploymentStrategy { type_: Some("Recreate".into()), ..Default::default() }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(NAME)), ..Default::default() }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let service = Service {
        metadata: meta(NAME, Some(ns), NAME),
        spec: Some(ServiceSpec {
            selector: Some(selector(NAME)),
            ports: Some(vec![ServicePort {
                name: Some("grpc-ca".into()),
                port: CA_PORT.into(),
                target_port: Some(IntOrString::Int(CA_PORT.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![Object::typed(&service), Object::typed(&deployment)]
}
