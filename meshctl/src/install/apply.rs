//! Talking to the API server: server-side apply of rendered objects (field manager
//! `meshctl`), rollout waits, deletion, and `uninstall`'s sequence (waypoints, ztunnel, the
//! pin cleanup DaemonSet, the rest, CRDs only on request and only meshctl's). One progress
//! line per object; every failure is collected and reported together, naming the object and
//! the server's reason.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, Config};

use super::object::Object;
use super::{FIELD_MANAGER, InstallError, InstallOptions, MANAGED_BY, render};

/// Where progress lines go.
pub trait Progress: Send + Sync {
    /// One line, without a newline.
    fn line(&self, line: &str);
}

/// Progress on the process's stderr.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stderr;

impl Progress for Stderr {
    fn line(&self, line: &str) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// Progress kept in memory (tests).
#[derive(Debug, Default)]
pub struct Recorded(Mutex<Vec<String>>);

impl Recorded {
    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Progress for Recorded {
    fn line(&self, line: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line.to_string());
    }
}

/// A client from a kubeconfig file (or the default kubeconfig / in-cluster config when None),
/// optionally for another context than the current one.
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client, InstallError> {
    let options =
        kube::config::KubeConfigOptions { context: context.map(str::to_string), ..Default::default() };
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| InstallError::Client(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| InstallError::Client(e.to_string()))?
        }
        None if context.is_some() => {
            Config::from_kubeconfig(&options).await.map_err(|e| InstallError::Client(e.to_string()))?
        }
        None => Config::infer().await.map_err(|e| InstallError::Client(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| InstallError::Client(e.to_string()))
}

/// How [`apply`] treats conflicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Take over fields another field manager owns (server-side apply `force`) (bool).
    pub force_conflicts: bool,
}

/// The server's answer as one line: code, reason, message and each cause's field.
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let mut out = format!("{} {}: {}", s.code, s.reason, s.message);
            if let Some(d) = &s.details {
                for c in d.causes.iter().filter(|c| !c.field.is_empty() && !s.message.contains(&c.field)) {
                    out.push_str(&format!("; {}: {}", c.field, c.message));
                }
            }
            if s.is_conflict() && s.reason == "Conflict" {
                out.push_str(" (another field manager owns these fields: --force-conflicts takes them over)");
            }
            out
        }
        other => other.to_string(),
    }
}

fn api_err(verb: &'static str, o: &Object, e: &kube::Error) -> InstallError {
    InstallError::Api { verb, object: o.display(), reason: describe(e) }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

pub(crate) fn dynamic_api(client: &Client, o: &Object) -> Api<DynamicObject> {
    match &o.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &o.resource),
        None => Api::all_with(client.clone(), &o.resource),
    }
}

/// Whether a live object carries `app.kubernetes.io/managed-by: meshctl`.
fn ours(live: &DynamicObject) -> bool {
    live.metadata.labels.as_ref().and_then(|l| l.get("app.kubernetes.io/managed-by")).map(String::as_str)
        == Some(MANAGED_BY)
}

/// Applies one object (server-side apply).
pub async fn apply_one(client: &Client, o: &Object, opts: &ApplyOptions) -> Result<(), InstallError> {
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = opts.force_conflicts;
    dynamic_api(client, o)
        .patch(&o.name, &params, &Patch::Apply(&o.body))
        .await
        .map_err(|e| api_err("apply", o, &e))?;
    Ok(())
}

/// Applies the objects in order: one progress line each; a CRD that exists and is not
/// meshctl's is skipped. Every failure is collected; the others are still applied.
pub async fn apply(
    client: &Client,
    objects: &[Object],
    opts: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<(), Vec<InstallError>> {
    let mut errors = Vec::new();
    for o in objects {
        if o.is("CustomResourceDefinition") {
            match dynamic_api(client, o).get_opt(&o.name).await {
                Ok(Some(live)) if !ours(&live) => {
                    progress.line(&format!("{}: exists (not installed by meshctl), left as is", o.display()));
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    progress.line(&format!("{}: FAILED", o.display()));
                    errors.push(api_err("get", o, &e));
                    continue;
                }
            }
        }
        match apply_one(client, o, opts).await {
            Ok(()) => progress.line(&format!("{}: applied", o.display())),
            Err(e) => {
                progress.line(&format!("{}: FAILED", o.display()));
                errors.push(e);
            }
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Rollout state of a Deployment or DaemonSet: Ok(None) when done, Ok(Some(text)) while not.
async fn rollout_state(client: &Client, o: &Object) -> Result<Option<String>, kube::Error> {
    let ns = o.namespace.as_deref().unwrap_or_default();
    if o.is("Deployment") {
        let d = Api::<Deployment>::namespaced(client.clone(), ns).get(&o.name).await?;
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let st = d.status.unwrap_or_default();
        let observed = st.observed_generation >= d.metadata.generation;
        let (updated, available) = (st.updated_replicas.unwrap_or(0), st.available_replicas.unwrap_or(0));
        if observed && updated == want && available == want && st.replicas.unwrap_or(0) == want {
            return Ok(None);
        }
        return Ok(Some(format!("{updated}/{want} updated, {available}/{want} available")));
    }
    let d = Api::<DaemonSet>::namespaced(client.clone(), ns).get(&o.name).await?;
    let st = d.status.unwrap_or_default();
    let observed = st.observed_generation >= d.metadata.generation;
    let want = st.desired_number_scheduled;
    let updated = st.updated_number_scheduled.unwrap_or(0);
    let available = st.number_available.unwrap_or(0);
    if observed && updated == want && available == want && st.number_ready == want {
        return Ok(None);
    }
    Ok(Some(format!("{updated}/{want} nodes updated, {available}/{want} available")))
}

/// Waits until every Deployment and DaemonSet among `objects` has rolled out, polling once a
/// second, printing a line whenever a state changes; fails after `timeout` overall.
pub async fn wait_rollout(
    client: &Client,
    objects: &[Object],
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<(), InstallError> {
    let deadline = tokio::time::Instant::now() + timeout;
    for o in objects.iter().filter(|o| o.is("Deployment") || o.is("DaemonSet")) {
        let mut last = String::new();
        loop {
            match rollout_state(client, o).await {
                Ok(None) => {
                    progress.line(&format!("{}: rolled out", o.display()));
                    break;
                }
                Ok(Some(state)) if state != last => {
                    progress.line(&format!("{}: waiting: {state}", o.display()));
                    last = state;
                }
                Ok(Some(_)) => {}
                Err(e) => return Err(api_err("get", o, &e)),
            }
            if tokio::time::Instant::now() >= deadline {
                let what = format!("{} to roll out ({last})", o.display());
                return Err(InstallError::Timeout { what, after: timeout });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    Ok(())
}

/// Deletes one object; a missing one is fine. Returns whether it existed.
pub async fn delete_one(client: &Client, o: &Object, progress: &dyn Progress) -> Result<bool, InstallError> {
    match dynamic_api(client, o).delete(&o.name, &DeleteParams::background()).await {
        Ok(_) => {
            progress.line(&format!("{}: deleted", o.display()));
            Ok(true)
        }
        Err(e) if is_not_found(&e) => {
            progress.line(&format!("{}: not found, skipped", o.display()));
            Ok(false)
        }
        Err(e) => {
            progress.line(&format!("{}: FAILED", o.display()));
            Err(api_err("delete", o, &e))
        }
    }
}

/// Polls until no pod matches `selector` in `ns`.
async fn wait_pods_gone(
    client: &Client,
    ns: &str,
    selector: &str,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<(), InstallError> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    loop {
        let list =
            pods.list(&ListParams::default().labels(selector)).await.map_err(|e| InstallError::Api {
                verb: "list",
                object: format!("Pods {ns} -l {selector}"),
                reason: describe(&e),
            })?;
        if list.items.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let what = format!("{} pod(s) {ns} -l {selector} to terminate", list.items.len());
            return Err(InstallError::Timeout { what, after: timeout });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What [`uninstall`] removes.
#[derive(Debug, Clone)]
pub struct UninstallOptions {
    /// The installation (namespace, images, pin folder) to remove.
    pub install: InstallOptions,
    /// Also delete the CRDs meshctl created (labelled `managed-by: meshctl`) (bool).
    pub purge_crds: bool,
    /// Longest wait for ztunnel to stop and the pin cleanup to finish (duration).
    pub timeout: Duration,
}

/// Removes everything `install` (and `waypoint apply`) created: waypoints; the ztunnel
/// DaemonSet (its pods' capture stays pinned, so captured pods fail closed for a moment);
/// then the cleanup DaemonSet unpins capture on every node (traffic goes direct) and is
/// deleted; then the remaining objects in reverse order. CRDs only with `purge_crds` and only
/// those labelled as meshctl's.
pub async fn uninstall(
    client: &Client,
    opts: &UninstallOptions,
    progress: &dyn Progress,
) -> Result<(), Vec<InstallError>> {
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let mut errors = Vec::new();
    let ns = opts.install.namespace.clone();
    let mut install = opts.install.clone();
    install.crds = opts.purge_crds;
    let objects = render(&install).map_err(|e| vec![e])?;

    if let Err(e) = crate::waypoint_cmd::delete_all(client, &opts.install, progress).await {
        errors.extend(e);
    }
    let ztunnel = objects.iter().find(|o| o.is("DaemonSet")).expect("render has the ztunnel DaemonSet");
    match delete_one(client, ztunnel, progress).await {
        Ok(_) => {
            let sel = "app.kubernetes.io/name=ztunnel";
            progress.line(&format!("waiting for ztunnel pods in {ns} to terminate"));
            if let Err(e) = wait_pods_gone(client, &ns, sel, deadline, opts.timeout).await {
                errors.push(e);
            }
        }
        Err(e) => errors.push(e),
    }
    if errors.is_empty() {
        // The namespace may be gone already (a half-done uninstall): nothing to clean then.
        let ns_obj = &objects[0];
        let ns_exists = matches!(dynamic_api(client, ns_obj).get_opt(&ns).await, Ok(Some(_)));
        // No nodes (an API server without kubelets): no pins anywhere, and no DaemonSet
        // controller would ever report the cleanup done.
        let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone());
        let has_nodes = match nodes.list_metadata(&ListParams::default().limit(1)).await {
            Ok(l) => !l.items.is_empty(),
            Err(e) => {
                errors.push(InstallError::Api { verb: "list", object: "Nodes".into(), reason: describe(&e) });
                false
            }
        };
        if !has_nodes {
            progress.line("no nodes: no eBPF pins to remove");
        } else if ns_exists
            && let Err(e) = cleanup_pins(client, &opts.install, deadline, opts.timeout, progress).await
        {
            errors.push(e);
        }
    } else {
        progress.line("skipping the eBPF pin cleanup: ztunnel may still be running");
    }
    for o in objects.iter().rev().filter(|o| !o.is("DaemonSet") && !o.is("Namespace")) {
        if o.is("CustomResourceDefinition") {
            match dynamic_api(client, o).get_opt(&o.name).await {
                Ok(Some(live)) if !ours(&live) => {
                    progress.line(&format!("{}: not installed by meshctl, left in place", o.display()));
                    continue;
                }
                Ok(None) => {
                    progress.line(&format!("{}: not found, skipped", o.display()));
                    continue;
                }
                Ok(Some(_)) => {}
                Err(e) => {
                    errors.push(api_err("get", o, &e));
                    continue;
                }
            }
        }
        if let Err(e) = delete_one(client, o, progress).await {
            errors.push(e);
        }
    }
    if !opts.purge_crds {
        progress.line("CustomResourceDefinitions left in place (--purge-crds removes meshctl's)");
    }
    // The namespace last: deleting it also removes what mesh-ca made in it (root Secret,
    // root certificate ConfigMap).
    if let Err(e) = delete_one(client, &objects[0], progress).await {
        errors.push(e);
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Runs the cleanup DaemonSet until it is Ready on every node, then deletes it.
async fn cleanup_pins(
    client: &Client,
    install: &InstallOptions,
    deadline: tokio::time::Instant,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<(), InstallError> {
    let ds = super::cleanup_daemonset(install);
    apply_one(client, &ds, &ApplyOptions { force_conflicts: true }).await?;
    progress.line(&format!("{}: applied (removes {} on every node)", ds.display(), install.bpf_pin_dir));
    let left = deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_secs(1));
    let waited = wait_rollout(client, std::slice::from_ref(&ds), left, progress).await;
    if let Err(e) = &waited {
        progress.line(&format!("{}: cleanup did not finish on every node: {e}", ds.display()));
    }
    delete_one(client, &ds, progress).await?;
    let sel = format!("app.kubernetes.io/name={}", super::ztunnel::CLEANUP_NAME);
    wait_pods_gone(client, &install.namespace, &sel, deadline, timeout).await?;
    waited
}

/// Publishes mesh-ca's root certificate (public) as ConfigMap `<ns>/mesh-ca-root-cert` when
/// absent, from the plug-in CA Secret's `root-cert.pem`, else the generated root's. Only that
/// key is copied. Returns false when mesh-ca has stored no root yet.
pub async fn publish_root(
    client: &Client,
    opts: &InstallOptions,
    progress: &dyn Progress,
) -> Result<bool, InstallError> {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let ns = opts.namespace.as_str();
    let err =
        |verb, object: String| move |e: kube::Error| InstallError::Api { verb, object, reason: describe(&e) };
    let cms = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let cm_name = format!("ConfigMap {ns}/{}", super::ROOT_CERT_CONFIGMAP);
    if cms.get_opt(super::ROOT_CERT_CONFIGMAP).await.map_err(err("get", cm_name.clone()))?.is_some() {
        return Ok(true);
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let mut root = None;
    for name in [super::CA_PLUGIN_SECRET, super::CA_ROOT_SECRET] {
        let s = secrets.get_opt(name).await.map_err(err("get", format!("Secret {ns}/{name}")))?;
        let pem = s.and_then(|s| s.data).and_then(|mut d| d.remove(super::ROOT_CERT_KEY));
        if let Some(pem) = pem.and_then(|b| String::from_utf8(b.0).ok()) {
            root = Some((name, pem));
            break;
        }
    }
    let Some((from, pem)) = root else { return Ok(false) };
    let cm = ConfigMap {
        metadata: super::object::meta(super::ROOT_CERT_CONFIGMAP, Some(ns), "mesh-ca"),
        data: Some(std::collections::BTreeMap::from([(super::ROOT_CERT_KEY.to_string(), pem)])),
        ..Default::default()
    };
    apply_one(client, &Object::typed(&cm), &ApplyOptions::default()).await?;
    progress.line(&format!("{cm_name}: published (root certificate from Secret {ns}/{from})"));
    Ok(true)
}

/// `install --wait`: mesh-ca rolls out, its root certificate is published if mesh-ca has not
/// done it, then the ztunnel DaemonSet rolls out (its pods mount that ConfigMap).
pub async fn wait_installed(
    client: &Client,
    objects: &[Object],
    opts: &InstallOptions,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<(), InstallError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let (deployments, rest): (Vec<Object>, Vec<Object>) =
        objects.iter().cloned().partition(|o| o.is("Deployment"));
    wait_rollout(client, &deployments, left(), progress).await?;
    while !publish_root(client, opts, progress).await? {
        if tokio::time::Instant::now() >= deadline {
            let what =
                format!("mesh-ca to store its root in Secret {}/{}", opts.namespace, super::CA_ROOT_SECRET);
            return Err(InstallError::Timeout { what, after: timeout });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    wait_rollout(client, &rest, left(), progress).await
}
