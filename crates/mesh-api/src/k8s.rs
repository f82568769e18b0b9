//! Kubernetes core objects the mesh reads, re-exported from k8s-openapi (v1.33 API).

pub use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
pub use k8s_openapi::api::discovery::v1::EndpointSlice;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
pub use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
