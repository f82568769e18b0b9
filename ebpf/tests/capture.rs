//! Root tests of the capture programs with real sockets in a private topology (see
//! support/mod.rs): outbound redirect + SO_ORIGINAL_DST + getpeername, inbound steering,
//! fail-closed / fail-open, restart without double attach, and clean removal.

mod support;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::time::Duration;

use mesh_ebpf::{Capture, CaptureOptions, Inbound, ListenerKind, PodConfig, PodFlags, Reason, netns_cookie};
use std::net::{IpAddr, Ipv6Addr};

use support::{
    MARK, PEER_IP, POD_IP, POD_IP6, Topo, accept_within, original_dst, original_dst6, read_msg, write_msg,
};

const WAIT: Duration = Duration::from_secs(5);

fn counters(cap: &Capture) -> HashMap<Reason, u64> {
    cap.counters().expect("counters").into_iter().collect()
}

fn pod(flags: PodFlags) -> PodConfig {
    PodConfig { ipv4: Some(POD_IP), ipv6: None, flags }
}

struct Listeners {
    outbound: TcpListener,
    inbound: TcpListener,
    hbone: TcpListener,
}

fn listeners(topo: &Topo, cap: &Capture, cookie: u64) -> Listeners {
    let l = Listeners {
        outbound: topo.pod_listener(15001),
        inbound: topo.pod_listener(15006),
        hbone: topo.pod_listener(15008),
    };
    cap.set_listener(cookie, ListenerKind::Outbound, l.outbound.as_fd()).expect("set outbound");
    cap.set_listener(cookie, ListenerKind::InboundPlaintext, l.inbound.as_fd()).expect("set inbound");
    cap.set_listener(cookie, ListenerKind::Hbone, l.hbone.as_fd()).expect("set hbone");
    l
}

/// (a) The app's connect to 198.51.100.7:4242 lands on 15001; the proxy reads the original
/// destination with SO_ORIGINAL_DST; the app's getpeername shows the original destination.
fn check_outbound(topo: &Topo, cap: &Capture, outbound: &TcpListener) {
    let child = topo.spawn_app(&["198.51.100.7", "4242"]);
    let (mut s, peer) = match accept_within(outbound, WAIT) {
        Ok(a) => a,
        Err(e) => {
            let out = child.wait_with_output().expect("app");
            panic!(
                "no app connection on 15001 ({e}); app said: {} {}; counters: {:?}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                cap.counters().map(|c| c.into_iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>())
            );
        }
    };
    assert_eq!(peer.ip(), POD_IP, "the app connects from the pod IP");
    assert_eq!(s.local_addr().expect("local"), SocketAddr::from((POD_IP, 15001)));
    let orig = original_dst(&s).expect("getsockopt(SO_ORIGINAL_DST)");
    assert_eq!(orig, "198.51.100.7:4242".parse::<SocketAddr>().expect("addr"));
    assert_eq!(read_msg(&mut s), "hello");
    write_msg(&mut s, &format!("orig={orig}"));
    let out = child.wait_with_output().expect("app");
    let lines = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(lines.contains("peer 198.51.100.7:4242"), "app getpeername must be native: {lines}");
    assert!(lines.contains(&format!("sock {POD_IP}:{}", peer.port())), "app getsockname: {lines}");
    assert!(lines.contains("reply orig=198.51.100.7:4242"), "app got the proxy's reply: {lines}");
}

/// (b) From the peer netns: any port goes to 15006 (local address kept), 15008 to the HBONE
/// listener, 15001 and 15006 are refused.
fn check_inbound(topo: &Topo, l: &Listeners) {
    let _c = topo.connect_from_peer(8080).expect("connect pod:8080");
    let (s, peer) = accept_within(&l.inbound, WAIT).expect("steered to 15006");
    assert_eq!(peer.ip(), PEER_IP);
    assert_eq!(s.local_addr().expect("local"), SocketAddr::from((POD_IP, 8080)), "original port kept");
    let _c = topo.connect_from_peer(15008).expect("connect pod:15008");
    let (s, _) = accept_within(&l.hbone, WAIT).expect("steered to 15008");
    assert_eq!(s.local_addr().expect("local"), SocketAddr::from((POD_IP, 15008)));
    for port in [15001, 15006] {
        let err = topo.connect_from_peer(port).expect_err("proxy ports are not reachable from outside");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "pod:{port} from outside: {err}");
    }
}

#[test]
fn capture_redirects_steers_and_fails_closed() {
    let _serial = support::SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut topo = Topo::new(1);
    topo.join_proxy_cgroup();
    let cap = Capture::open(topo.options()).expect("Capture::open");
    assert_eq!(cap.inbound(), Inbound::SkLookup, "this kernel loads sk_lookup");
    let ns = topo.netns(&topo.pod_ns);
    let cookie = cap.add_pod(ns.as_fd(), &pod(PodFlags::NONE)).expect("add_pod");
    assert_eq!(cookie, netns_cookie(ns.as_fd()).expect("netns_cookie"));
    assert_eq!(cap.pods().expect("pods"), vec![(cookie, pod(PodFlags::NONE))]);
    let before = counters(&cap);

    let peer_srv = topo.in_netns(&topo.peer_ns, || TcpListener::bind((PEER_IP, 9090))).expect("peer server");
    let app_srv = topo.pod_listener(8080);
    let l = listeners(&topo, &cap, cookie);

    check_outbound(&topo, &cap, &l.outbound);
    check_inbound(&topo, &l);

    // Sockets with the proxy's mark go where they asked.
    let child = topo.spawn_app(&[&PEER_IP.to_string(), "9090", &MARK.to_string()]);
    let (mut s, peer) = accept_within(&peer_srv, WAIT).expect("marked connect reaches the peer directly");
    assert_eq!(peer.ip(), POD_IP);
    assert_eq!(read_msg(&mut s), "hello");
    write_msg(&mut s, "direct");
    let out = String::from_utf8_lossy(&child.wait_with_output().expect("app").stdout).to_string();
    assert!(out.contains(&format!("peer {PEER_IP}:9090")) && out.contains("reply direct"), "{out}");
    // Loopback is never captured: nothing listens on 127.0.0.1:9.
    let out = topo.app(&["127.0.0.1", "9"]);
    assert_eq!(out, vec!["connect-error 111".to_string()], "loopback connect untouched");
    // The pod's own IP goes over lo to the app itself (no outbound rewrite, no inbound steer).
    let child = topo.spawn_app(&[&POD_IP.to_string(), "8080"]);
    let (mut s, _) = accept_within(&app_srv, WAIT).expect("own-IP connect reaches the app");
    assert_eq!(read_msg(&mut s), "hello");
    write_msg(&mut s, "self");
    let out = String::from_utf8_lossy(&child.wait_with_output().expect("app").stdout).to_string();
    assert!(out.contains("reply self"), "{out}");

    // (c) Fail-closed: without listeners both directions are refused.
    drop(l);
    let out = topo.app(&["198.51.100.7", "4242"]);
    assert_eq!(out, vec!["connect-error 111".to_string()], "outbound fails closed");
    let err = topo.connect_from_peer(8080).expect_err("inbound fails closed");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");

    // Fail-open: the same connections pass through unchanged.
    assert_eq!(cap.add_pod(ns.as_fd(), &pod(PodFlags::FAIL_OPEN)).expect("re-add fail-open"), cookie);
    let child = topo.spawn_app(&[&PEER_IP.to_string(), "9090"]);
    let (mut s, peer) = accept_within(&peer_srv, WAIT).expect("fail-open outbound reaches the peer");
    assert_eq!(peer.ip(), POD_IP);
    assert_eq!(read_msg(&mut s), "hello");
    write_msg(&mut s, "open");
    let out = String::from_utf8_lossy(&child.wait_with_output().expect("app").stdout).to_string();
    assert!(out.contains(&format!("peer {PEER_IP}:9090")) && out.contains("reply open"), "{out}");
    let _c = topo.connect_from_peer(8080).expect("fail-open inbound");
    let (s, _) = accept_within(&app_srv, WAIT).expect("fail-open inbound reaches the app on 8080");
    assert_eq!(s.local_addr().expect("local").port(), 8080);

    // (e) Counters moved for every path exercised.
    let after = counters(&cap);
    for (reason, min) in [
        (Reason::OutRedirected, 2),
        (Reason::OrigTupleStored, 1),
        (Reason::OrigDstAnswered, 1),
        (Reason::PeernameRewritten, 1),
        (Reason::OutSkipProxyMark, 1),
        (Reason::OutSkipLoopback, 1),
        (Reason::OutSkipOwnIp, 1),
        (Reason::OutFailOpen, 1),
        (Reason::InPlaintext, 1),
        (Reason::InHbone, 1),
        (Reason::InDropProxyPort, 2),
        (Reason::InDropNoListener, 1),
        (Reason::InFailOpen, 1),
        (Reason::InSkipLoopback, 1),
    ] {
        let delta = after[&reason] - before[&reason];
        assert!(delta >= min, "counter {} rose by {delta}, expected >= {min}", reason.name());
    }

    // (e) Removal leaves no pins and no attachments.
    let ino = topo.pod_netns_ino();
    assert_eq!(support::netns_links(ino), 1, "one sk_lookup link on the pod netns");
    cap.remove_pod(cookie).expect("remove_pod");
    assert!(!topo.pin_dir.join(format!("netns/{cookie}")).exists(), "pod pins removed");
    assert_eq!(support::netns_links(ino), 0, "sk_lookup link detached");
    assert!(cap.pods().expect("pods").is_empty());
    drop(cap);
    Capture::remove_all(&topo.pin_dir).expect("remove_all");
    assert!(!topo.pin_dir.exists(), "pin dir removed");
    assert!(support::cgroup_attachments(&topo.pods_cg).is_empty(), "pods cgroup detached");
    assert!(support::cgroup_attachments(&topo.proxy_cg).is_empty(), "proxy cgroup detached");
}

#[test]
fn reopen_keeps_capture_without_double_attach() {
    let _serial = support::SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut topo = Topo::new(2);
    topo.join_proxy_cgroup();
    let ns = topo.netns(&topo.pod_ns);
    let first = Capture::open(topo.options()).expect("first open");
    let cookie = first.add_pod(ns.as_fd(), &pod(PodFlags::NONE)).expect("add_pod");
    drop(first);

    // A restarted process re-opens from the pins; a second open while one is alive too.
    let second = Capture::open(topo.options()).expect("second open");
    let third = Capture::open(topo.options()).expect("third open");
    let pods_attach = support::cgroup_attachments(&topo.pods_cg);
    let mut names: Vec<&str> = pods_attach.iter().map(|(_, n)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["mesh_connect4", "mesh_connect6", "mesh_getpeername4", "mesh_getpeername6", "mesh_sockops"],
        "each pods-cgroup program attached exactly once: {pods_attach:?}"
    );
    assert_eq!(pods_attach.len(), 5, "no double attach on the pods cgroup: {pods_attach:?}");
    let proxy_attach = support::cgroup_attachments(&topo.proxy_cg);
    assert_eq!(proxy_attach.len(), 1, "getsockopt attached once: {proxy_attach:?}");
    assert_eq!(proxy_attach[0].1, "mesh_getsockopt");

    // Pods survive the restart; registering again is idempotent.
    assert_eq!(second.pods().expect("pods"), vec![(cookie, pod(PodFlags::NONE))]);
    assert_eq!(third.add_pod(ns.as_fd(), &pod(PodFlags::NONE)).expect("re-add"), cookie);
    assert_eq!(support::netns_links(topo.pod_netns_ino()), 1, "one sk_lookup link after re-add");

    // The tc fallback program is loaded and pinned, ready for kernels without sk_lookup.
    let tc_pin = topo.pin_dir.join("progs/mesh_tc_ingress");
    let out = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show", "pinned"])
        .arg(&tc_pin)
        .output()
        .expect("bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool prog json");
    assert_eq!(v["type"], "sched_cls", "tc fallback program pinned at {}", tc_pin.display());

    // Capture still works through the re-opened maps.
    let l = listeners(&topo, &third, cookie);
    check_outbound(&topo, &third, &l.outbound);
    check_inbound(&topo, &l);

    second.remove_pod(cookie).expect("remove_pod");
    assert_eq!(support::netns_links(topo.pod_netns_ino()), 0, "sk_lookup link detached");
    assert!(!topo.pin_dir.join(format!("netns/{cookie}")).exists());
    drop((second, third, l));

    // A recreated pods cgroup leaves defunct link pins: open notices and attaches again.
    for cg in [&topo.pod_cg, &topo.pods_cg] {
        std::fs::remove_dir(cg).unwrap_or_else(|e| panic!("rmdir {}: {e}", cg.display()));
    }
    std::fs::create_dir_all(&topo.pod_cg).expect("recreate pod cgroup");
    assert!(support::cgroup_attachments(&topo.pods_cg).is_empty());
    let fourth = Capture::open(topo.options()).expect("open after the cgroup was recreated");
    assert_eq!(support::cgroup_attachments(&topo.pods_cg).len(), 5, "re-attached to the new cgroup");
    assert_eq!(support::cgroup_attachments(&topo.proxy_cg).len(), 1, "proxy cgroup untouched");
    let cookie = fourth.add_pod(ns.as_fd(), &pod(PodFlags::NONE)).expect("add_pod again");
    let l = listeners(&topo, &fourth, cookie);
    check_outbound(&topo, &fourth, &l.outbound);
    drop((fourth, l));
    Capture::remove_all(&topo.pin_dir).expect("remove_all");
    assert!(!topo.pin_dir.exists(), "pin dir removed");
    assert!(support::cgroup_attachments(&topo.pods_cg).is_empty(), "pods cgroup detached");
    // Without capture the app reaches its real destination.
    let peer_srv = topo.in_netns(&topo.peer_ns, || TcpListener::bind((PEER_IP, 9091))).expect("peer server");
    let child = topo.spawn_app(&[&PEER_IP.to_string(), "9091"]);
    let (mut s, _) = accept_within(&peer_srv, WAIT).expect("uncaptured connect reaches the peer");
    assert_eq!(read_msg(&mut s), "hello");
    write_msg(&mut s, "plain");
    let out = String::from_utf8_lossy(&child.wait_with_output().expect("app").stdout).to_string();
    assert!(out.contains("reply plain"), "{out}");
}

/// Runs the app against `dst`, accepts on `outbound` and returns (accepted socket, app output
/// after the proxy's reply `reply`).
fn app_via_proxy(
    topo: &Topo,
    outbound: &TcpListener,
    dst: &[&str],
) -> (std::net::TcpStream, std::process::Child) {
    let child = topo.spawn_app(dst);
    match accept_within(outbound, WAIT) {
        Ok((s, _)) => (s, child),
        Err(e) => {
            let out = child.wait_with_output().expect("app");
            panic!("no app connection on 15001 for {dst:?} ({e}): {}", String::from_utf8_lossy(&out.stdout));
        }
    }
}

fn finish(mut s: std::net::TcpStream, child: std::process::Child, reply: &str) -> String {
    assert_eq!(read_msg(&mut s), "hello");
    write_msg(&mut s, reply);
    String::from_utf8_lossy(&child.wait_with_output().expect("app").stdout).to_string()
}

#[test]
fn ipv6_and_dual_stack_capture() {
    let _serial = support::SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut topo = Topo::new(3);
    topo.join_proxy_cgroup();
    let cap = Capture::open(topo.options()).expect("Capture::open");
    let ns = topo.netns(&topo.pod_ns);
    let cfg = PodConfig { ipv4: Some(POD_IP), ipv6: Some(POD_IP6), flags: PodFlags::NONE };
    let cookie = cap.add_pod(ns.as_fd(), &cfg).expect("add_pod");
    assert_eq!(cap.pods().expect("pods"), vec![(cookie, cfg)]);
    // Dual-stack listeners on [::], as a proxy may open them.
    let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let l = Listeners {
        outbound: topo.pod_listener_on(any6, 15001),
        inbound: topo.pod_listener_on(any6, 15006),
        hbone: topo.pod_listener_on(any6, 15008),
    };
    cap.set_listener(cookie, ListenerKind::Outbound, l.outbound.as_fd()).expect("set outbound");
    cap.set_listener(cookie, ListenerKind::InboundPlaintext, l.inbound.as_fd()).expect("set inbound");
    cap.set_listener(cookie, ListenerKind::Hbone, l.hbone.as_fd()).expect("set hbone");

    // IPv6 app: connect6 rewrite, SOL_IPV6 SO_ORIGINAL_DST, getpeername6.
    let (s, child) = app_via_proxy(&topo, &l.outbound, &["2001:db8::7", "4242"]);
    assert_eq!(s.peer_addr().expect("peer").ip(), IpAddr::V6(POD_IP6));
    assert_eq!(s.local_addr().expect("local"), SocketAddr::from((POD_IP6, 15001)));
    let orig = original_dst6(&s).expect("getsockopt(SOL_IPV6, SO_ORIGINAL_DST)");
    assert_eq!(orig, "[2001:db8::7]:4242".parse::<SocketAddr>().expect("addr"));
    let out = finish(s, child, "v6");
    assert!(out.contains("peer 2001:db8::7:4242") && out.contains("reply v6"), "{out}");

    // IPv4 app accepted on the dual-stack listener: the v4-mapped 4-tuple still matches.
    let (s, child) = app_via_proxy(&topo, &l.outbound, &["198.51.100.7", "4242"]);
    let orig = original_dst(&s).expect("getsockopt(SOL_IP) on a dual-stack accept");
    assert_eq!(orig, "198.51.100.7:4242".parse::<SocketAddr>().expect("addr"));
    let orig6 = original_dst6(&s).expect("getsockopt(SOL_IPV6) of an IPv4 connection");
    assert_eq!(orig6, "[::ffff:198.51.100.7]:4242".parse::<SocketAddr>().expect("addr"));
    let out = finish(s, child, "v4");
    assert!(out.contains("peer 198.51.100.7:4242") && out.contains("reply v4"), "{out}");

    // A dual-stack app socket to a v4-mapped destination is captured as IPv4.
    let (s, child) = app_via_proxy(&topo, &l.outbound, &["::ffff:198.51.100.9", "4343"]);
    assert_eq!(
        original_dst(&s).expect("SO_ORIGINAL_DST"),
        "198.51.100.9:4343".parse::<SocketAddr>().expect("a")
    );
    let out = finish(s, child, "mapped");
    assert!(out.contains("peer ::ffff:198.51.100.9:4343") && out.contains("reply mapped"), "{out}");

    // Inbound over IPv6.
    let v6 = IpAddr::V6(POD_IP6);
    let _c = topo.connect_from_peer_to(v6, 8080, WAIT).expect("connect [pod]:8080");
    let (s, _) = accept_within(&l.inbound, WAIT).expect("IPv6 steered to 15006");
    assert_eq!(s.local_addr().expect("local"), SocketAddr::from((POD_IP6, 8080)));
    let _c = topo.connect_from_peer_to(v6, 15008, WAIT).expect("connect [pod]:15008");
    accept_within(&l.hbone, WAIT).expect("IPv6 steered to 15008");
    let err = topo.connect_from_peer_to(v6, 15001, WAIT).expect_err("15001 closed from outside");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");

    cap.remove_pod(cookie).expect("remove_pod");
    drop(cap);
    Capture::remove_all(&topo.pin_dir).expect("remove_all");
    assert!(!topo.pin_dir.exists());
}

/// sk_lookup refused at load (as on Linux < 5.17, forced here): `open` still succeeds and
/// plain `add_pod` steers inbound with the tc fallback.
#[test]
fn tc_fallback_steers_inbound_when_sk_lookup_cannot_load() {
    let _serial = support::SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut topo = Topo::new(4);
    topo.join_proxy_cgroup();
    let cap = Capture::open(CaptureOptions { force_tc_fallback: true, ..topo.options() })
        .expect("Capture::open without sk_lookup");
    assert_eq!(cap.inbound(), Inbound::TcFallback);
    assert!(!topo.pin_dir.join("progs/mesh_sk_lookup").exists(), "sk_lookup not loaded");
    let ns = topo.netns(&topo.pod_ns);
    let cookie = cap.add_pod(ns.as_fd(), &pod(PodFlags::NONE)).expect("add_pod");
    assert!(topo.pin_dir.join(format!("netns/{cookie}/tc_eth0")).exists(), "tc link pinned");
    assert_eq!(support::netns_links(topo.pod_netns_ino()), 0, "no sk_lookup link with the fallback");
    let tc_id = support::pinned_prog_id(&topo.pin_dir.join("progs/mesh_tc_ingress"));
    assert_eq!(support::prog_links(tc_id), 1, "one tc link");
    let before = counters(&cap);
    let l = listeners(&topo, &cap, cookie);

    let _c = topo.connect_from_peer(8080).expect("connect pod:8080");
    let (s, _) = accept_within(&l.inbound, WAIT).expect("tc steered to 15006");
    assert_eq!(s.local_addr().expect("local"), SocketAddr::from((POD_IP, 8080)), "original port kept");
    let _c = topo.connect_from_peer(15008).expect("connect pod:15008");
    accept_within(&l.hbone, WAIT).expect("tc steered to 15008");
    // tc drops (no RST): the client times out instead of being refused.
    let err = topo
        .connect_from_peer_to(IpAddr::V4(POD_IP), 15001, Duration::from_millis(500))
        .expect_err("15001 closed from outside");
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    // Outbound capture is independent of the inbound mechanism.
    check_outbound(&topo, &cap, &l.outbound);
    let after = counters(&cap);
    for r in [Reason::InPlaintext, Reason::InHbone, Reason::InDropProxyPort] {
        assert!(after[&r] > before[&r], "counter {} rose", r.name());
    }

    cap.remove_pod(cookie).expect("remove_pod");
    assert_eq!(support::prog_links(tc_id), 0, "tc link detached with the pod");
    drop(cap);
    Capture::remove_all(&topo.pin_dir).expect("remove_all");
    assert!(!topo.pin_dir.exists());
}
