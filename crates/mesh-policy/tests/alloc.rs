//! Evaluation does not allocate: a counting allocator observes this thread while a compiled
//! set with every L4 field is evaluated many times.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{doc, docs, ip, model, principal, workload};
use mesh_policy::{AuthzIndex, Request};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn evaluation_does_not_allocate() {
    let text = docs(&[
        doc(
            "AuthorizationPolicy",
            "foo",
            "audit",
            "{action: AUDIT, rules: [{from: [{source: {principals: ['*/sa/client']}}]}]}",
        ),
        doc(
            "AuthorizationPolicy",
            "foo",
            "deny",
            "{action: DENY, rules: [{from: [{source: {notPrincipals: ['cluster.local/ns/bar/*'], notIpBlocks: ['fd00::/8']}}], to: [{operation: {notPorts: ['8080']}}]}, {to: [{operation: {paths: [/x]}}]}]}",
        ),
        doc(
            "AuthorizationPolicy",
            "foo",
            "allow",
            "{rules: [{from: [{source: {namespaces: [bar], ipBlocks: [10.0.0.0/8], remoteIpBlocks: [10.0.2.0/24]}}], to: [{operation: {ports: ['8080']}}], when: [{key: destination.ip, values: [10.0.1.10]}, {key: source.principal, values: ['cluster.local/ns/bar/sa/client']}]}]}",
        ),
    ]);
    let m = model(&text);
    let index = AuthzIndex::new(&m);
    let set = index.for_workload(&m, workload(&m, "foo/server"));
    let id = principal("cluster.local/ns/bar/sa/client");
    let req = Request::l4(ip("10.0.2.20"), Some(&id), ip("10.0.1.10"), 8080);
    let first = set.evaluate(&req);
    assert!(first.allowed && first.audit && first.l7_rules_skipped, "{first:?}");
    drop(first);

    let before = ALLOCS.with(Cell::get);
    let mut allowed = 0;
    for _ in 0..1000 {
        let d = set.evaluate(&req);
        allowed += usize::from(d.allowed);
    }
    let after = ALLOCS.with(Cell::get);
    assert_eq!(allowed, 1000);
    assert_eq!(after - before, 0, "allocations during 1000 evaluations");
    // The counter does see this thread's allocations.
    let v = std::hint::black_box(vec![1u8; 16]);
    assert!(ALLOCS.with(Cell::get) > after && v.len() == 16);
}

#[test]
fn l7_evaluation_does_not_allocate() {
    use mesh_policy::L7Attributes;
    let target = "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]";
    let text = docs(&[
        doc(
            "AuthorizationPolicy",
            "foo",
            "deny",
            &format!(
                "{{{target}, action: DENY, rules: [{{to: [{{operation: {{paths: ['/admin/{{**}}'], notMethods: [GET]}}}}]}}, \
                 {{when: [{{key: 'request.headers[x-debug]', values: ['*']}}]}}]}}"
            ),
        ),
        doc(
            "AuthorizationPolicy",
            "foo",
            "allow",
            &format!(
                "{{{target}, rules: [{{from: [{{source: {{requestPrincipals: ['https://issuer/*']}}}}], \
                 to: [{{operation: {{hosts: ['*.foo.svc.cluster.local'], methods: [GET, POST], paths: ['/api/{{*}}/items', '/health']}}}}], \
                 when: [{{key: 'request.auth.claims[org][team]', values: [core]}}, {{key: request.auth.audiences, values: [api]}}, \
                 {{key: 'request.headers[x-user]', notValues: [mallory]}}]}}]}}"
            ),
        ),
    ]);
    let m = model(&text);
    let index = AuthzIndex::new(&m);
    let set = index.for_target(&m, "Gateway", "foo", "waypoint");
    let claims: &[(&str, &[&str])] = &[("org.team", &["core"])];
    let headers = [("x-user", "alice")];
    let audiences = ["web", "api"];
    let l7 = L7Attributes {
        host: Some("server.foo.svc.cluster.local:8080"),
        method: Some("GET"),
        path: Some("/api/v1/items?page=2"),
        headers: &headers,
        request_principal: Some("https://issuer/alice"),
        audiences: &audiences,
        claims: &claims,
        ..Default::default()
    };
    let id = principal("cluster.local/ns/bar/sa/client");
    let req = Request { l7: Some(&l7), ..Request::l4(ip("10.0.2.20"), Some(&id), ip("10.0.1.10"), 8080) };
    assert!(set.evaluate(&req).allowed);

    let before = ALLOCS.with(Cell::get);
    let mut allowed = 0;
    for _ in 0..1000 {
        allowed += usize::from(set.evaluate(&req).allowed);
    }
    assert_eq!(allowed, 1000);
    assert_eq!(ALLOCS.with(Cell::get) - before, 0, "allocations during 1000 L7 evaluations");
}
