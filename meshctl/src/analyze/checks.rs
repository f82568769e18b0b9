//! The cross-object checks, over the translated [`Model`] (host and subset lookups, so they
//! resolve names exactly as the proxies will) and the [`Facts`] gathered from its objects:
//! references to hosts, Services and subsets that do not exist, selectors and attachments
//! that select nothing, and PeerAuthentications that conflict at one scope.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mesh_api::Diagnostic;
use mesh_model::Model;

use super::facts::{AttachKind, BackendKind, Facts, PeerAuthFacts, Subject};
use super::hosts;

/// Runs every check; the result is unsorted.
pub(super) fn run(facts: &Facts, model: &Model) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    destinations(facts, model, &mut out);
    backends(facts, model, &mut out);
    selectors(facts, &mut out);
    attachments(facts, &mut out);
    peer_authentications(facts, &mut out);
    out
}

fn error(subject: &Subject, field: String, message: String) -> Diagnostic {
    Diagnostic::error(subject.object.clone(), field, message).at(subject.origin.clone())
}

fn warning(subject: &Subject, field: String, message: String) -> Diagnostic {
    Diagnostic::warning(subject.object.clone(), field, message).at(subject.origin.clone())
}

/// What a host reference resolves to.
enum HostLookup {
    /// A Service or ServiceEntry provides it.
    Found,
    /// An in-cluster name (`name.ns.svc.<domain>`) nothing provides.
    MissingInCluster,
    /// An external name no ServiceEntry provides.
    MissingExternal,
    /// Not checkable (wildcard, IP address).
    Skip,
}

/// Looks up a host written in an object of `namespace`; returns its canonical form too.
fn lookup_host(facts: &Facts, model: &Model, written: &str, namespace: &str) -> (String, HostLookup) {
    let canonical = model.canonical_host(written, namespace);
    let lookup = if canonical.is_empty() || canonical.contains('*') || canonical.parse::<IpAddr>().is_ok() {
        HostLookup::Skip
    } else if model.resolve_host(written, namespace).is_some() {
        HostLookup::Found
    } else {
        let domain = &model.config().domain_suffix;
        match hosts::cluster_service(&canonical, domain, |ns| facts.namespaces.contains(ns)) {
            Some(_) => HostLookup::MissingInCluster,
            None => HostLookup::MissingExternal,
        }
    };
    (canonical, lookup)
}

/// `host "ratingz" (ratingz.bookinfo.svc.cluster.local)`, or just the quoted host when it was
/// written fully qualified.
fn describe_host(written: &str, fqdn: &str) -> String {
    if written == fqdn { format!("host {written:?}") } else { format!("host {written:?} ({fqdn})") }
}

fn destinations(facts: &Facts, model: &Model, out: &mut Vec<Diagnostic>) {
    for d in &facts.destinations {
        let subject = &facts.subjects[d.subject];
        let (fqdn, lookup) = lookup_host(facts, model, &d.host, &d.namespace);
        match lookup {
            HostLookup::Found | HostLookup::Skip => {}
            HostLookup::MissingInCluster => {
                let what = describe_host(&d.host, &fqdn);
                out.push(error(
                    subject,
                    format!("{}.host", d.path),
                    format!("{what} has no Service or ServiceEntry"),
                ));
                // The subset of a missing host would only repeat the same problem.
                continue;
            }
            HostLookup::MissingExternal => {
                // Outside the cluster's names it may be declared elsewhere: a warning.
                let what = describe_host(&d.host, &fqdn);
                let msg = format!("{what} has no ServiceEntry (nor Service); requests routed to it fail");
                out.push(warning(subject, format!("{}.host", d.path), msg));
                continue;
            }
        }
        let Some(subset) = &d.subset else { continue };
        let defined = model
            .destination_rules_for_host(&fqdn)
            .any(|(dr, _)| dr.spec.subsets.iter().any(|s| &s.name == subset));
        if !defined {
            let msg = format!("subset {subset:?} is not defined by any DestinationRule for host {fqdn}");
            out.push(error(subject, format!("{}.subset", d.path), msg));
        }
    }
}

fn backends(facts: &Facts, model: &Model, out: &mut Vec<Diagnostic>) {
    for b in &facts.backends {
        let subject = &facts.subjects[b.subject];
        let field = format!("{}.name", b.path);
        match b.kind {
            BackendKind::Service => {
                if model.service(&b.namespace, &b.name).is_none() {
                    let msg = format!("Service {:?} not found in namespace {}", b.name, b.namespace);
                    out.push(error(subject, field, msg));
                }
            }
            BackendKind::Hostname => match lookup_host(facts, model, &b.name, &b.namespace).1 {
                HostLookup::Found | HostLookup::Skip => {}
                HostLookup::MissingInCluster | HostLookup::MissingExternal => {
                    let msg = format!("host {:?} has no Service or ServiceEntry", b.name);
                    out.push(error(subject, field, msg));
                }
            },
        }
    }
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn selectors(facts: &Facts, out: &mut Vec<Diagnostic>) {
    // Input without any pod (policies analyzed on their own, workloads deployed elsewhere)
    // says nothing about which workloads exist: warning on every selector would be noise.
    if facts.pods.is_empty() {
        return;
    }
    for s in &facts.selectors {
        if s.labels.is_empty() {
            continue;
        }
        // A policy in the root namespace selects workloads of every namespace.
        let everywhere = *s.namespace == *facts.root_namespace;
        let matched = facts.pods.iter().any(|pod| {
            (everywhere || pod.namespace == s.namespace)
                && s.labels.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
        });
        if !matched {
            let scope =
                if everywhere { "any namespace".to_string() } else { format!("namespace {}", s.namespace) };
            let msg = format!("selects no workload: no pod in {scope} has labels {}", labels_text(&s.labels));
            out.push(warning(&facts.subjects[s.subject], s.field.clone(), msg));
        }
    }
}

/// A policy `targetRef` or route `parentRef` to an object that does not exist attaches to
/// nothing: accepted (the object may come later), but warned about like an empty selector.
fn attachments(facts: &Facts, out: &mut Vec<Diagnostic>) {
    for a in &facts.attachments {
        let known = match a.kind {
            AttachKind::Service => &facts.services,
            AttachKind::ServiceEntry => &facts.service_entries,
            AttachKind::Gateway => &facts.gateways,
        };
        if !known.contains(&(a.namespace.clone(), a.name.clone())) {
            let msg = format!(
                "attaches to nothing: {} {:?} not found in namespace {}",
                a.kind.as_str(),
                a.name,
                a.namespace
            );
            out.push(warning(&facts.subjects[a.subject], format!("{}.name", a.field), msg));
        }
    }
}

/// Istio applies the oldest of competing PeerAuthentications (creation time, then name).
fn precedence(a: &PeerAuthFacts, b: &PeerAuthFacts) -> std::cmp::Ordering {
    (&a.created, &a.name).cmp(&(&b.created, &b.name))
}

fn peer_authentications(facts: &Facts, out: &mut Vec<Diagnostic>) {
    let mut by_scope: BTreeMap<(&str, &BTreeMap<String, String>), Vec<&PeerAuthFacts>> = BTreeMap::new();
    for pa in &facts.peer_auths {
        by_scope.entry((pa.namespace.as_str(), &pa.selector)).or_default().push(pa);
    }
    for ((namespace, selector), mut group) in by_scope {
        if group.len() < 2 {
            continue;
        }
        group.sort_by(|a, b| precedence(a, b));
        let winner = group[0];
        let (field, scope) = if !selector.is_empty() {
            ("spec.selector.matchLabels", format!("with the same selector ({})", labels_text(selector)))
        } else if namespace == &*facts.root_namespace {
            ("spec", format!("mesh-wide (root namespace {namespace})"))
        } else {
            ("spec", format!("namespace-wide in {namespace}"))
        };
        for pa in &group[1..] {
            let msg = format!(
                "conflicts with PeerAuthentication {namespace}/{}, also {scope}, which takes effect \
                 (the oldest wins, then the first by name); this one is ignored",
                winner.name
            );
            out.push(error(&facts.subjects[pa.subject], field.to_string(), msg));
        }
    }
}

#[cfg(test)]
#[path = "checks_tests.rs"]
mod tests;
