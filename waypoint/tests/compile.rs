//! A model generation is compiled once, however many requests meet it at the same moment:
//! the compiled routes, clusters and policies they get are one shared snapshot.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

mod common;
/// Pods on 127.NET.x.y, apart from the other suites' address blocks.
const NET: u8 = 178;

fn ip(sub: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, NET, sub, host))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_compiles_once() {
    let mut model = common::demo_namespace_with_waypoint(ip(1, 250));
    model += &common::demo_pod("web-v1", "app: web, istio.io/dataplane-mode: none", ip(2, 10));
    model += &common::demo_service("web", &format!("10.{NET}.0.1"), "http");
    let w = common::start_plain_waypoint(&model, SocketAddr::new(ip(1, 250), 15008)).await;
    let ctx = w.waypoint.ctx.clone();
    let before = ctx.compiled();

    std::fs::write(
        w.dir.path().join("model/more.yaml"),
        common::demo_service("api", &format!("10.{NET}.0.2"), "http"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ctx.model.load().generation() == before.generation {
        assert!(Instant::now() < deadline, "the model did not take the new file");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Eight callers meet the new generation at once, as requests on both workers and the
    // plaintext and HBONE listeners would.
    let start = Arc::new(Barrier::new(8));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (ctx, start) = (ctx.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                ctx.compiled()
            })
        })
        .collect();
    let got: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
    let generation = ctx.model.load().generation();
    assert!(got.iter().all(|c| c.generation == generation), "a caller got an older generation");
    assert!(got.iter().all(|c| Arc::ptr_eq(c, &got[0])), "the generation was compiled more than once");
    assert!(Arc::ptr_eq(&ctx.compiled(), &got[0]), "the stored snapshot is not the one handed out");
}
