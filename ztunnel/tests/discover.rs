//! Pod discovery on the node (`capture.netnsPath: kube:`) against real cgroups (needs root
//! and cgroup v2: this test FAILS, not skips, without them). A fake kubelet hierarchy is made
//! under a test folder of the real cgroup v2 root, a real process with a network namespace of
//! its own is moved into a container scope of it, and discovery must find that namespace from
//! the pod UID alone, under both cgroup drivers and every QoS layout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use ztunnel::capture::cgroup2_mount;
use ztunnel::capture::discover::{CgroupDriver, DiscoverError, pod_cgroup, pod_netns, wait_for_netns};

/// A test folder in the cgroup v2 hierarchy, removed (deepest first) on drop.
struct TestRoot(PathBuf);

impl TestRoot {
    fn new(tag: &str) -> TestRoot {
        let mount = cgroup2_mount().expect("cgroup v2 must be mounted");
        let root = mount.join(format!("mesh-discover-{tag}-{}", std::process::id()));
        std::fs::create_dir(&root).expect("creating a test cgroup (needs root)");
        TestRoot(root)
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        fn rm(dir: &Path) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        rm(&e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
        rm(&self.0);
    }
}

/// `sleep` in a network namespace of its own; killed (and reaped) on drop.
struct Sandbox(Child);

impl Sandbox {
    fn start() -> Sandbox {
        let child = Command::new("unshare").args(["--net", "sleep", "300"]).spawn().expect("unshare");
        let s = Sandbox(child);
        // `unshare` execs `sleep` once the namespace exists: wait (bounded) until it differs.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.netns() == netns_id(Path::new("/proc/self/ns/net")) {
            assert!(std::time::Instant::now() < deadline, "unshare --net did not take effect");
            std::thread::yield_now();
        }
        s
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn netns(&self) -> String {
        netns_id(&PathBuf::from(format!("/proc/{}/ns/net", self.pid())))
    }

    fn move_to(&self, cgroup: &Path) {
        std::fs::write(cgroup.join("cgroup.procs"), self.pid().to_string()).expect("moving the process");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn netns_id(p: &Path) -> String {
    std::fs::read_link(p).map(|l| l.display().to_string()).unwrap_or_default()
}

/// Makes the container scope of a pod and returns (pod folder, scope folder).
fn make_pod(root: &Path, rel_pod: &str, container: &str) -> (PathBuf, PathBuf) {
    let pod = root.join(rel_pod);
    let scope = pod.join(container);
    std::fs::create_dir_all(&scope).expect("creating the pod cgroup");
    (pod, scope)
}

#[test]
fn both_drivers_and_every_qos_layout() {
    let root = TestRoot::new("layouts");
    let cases = [
        (
            "6f1c2b9e-1d2a-4c3b-8e4f-000000000001",
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6f1c2b9e_1d2a_4c3b_8e4f_000000000001.slice",
            "cri-containerd-0a1b2c3d.scope",
            CgroupDriver::Systemd,
        ),
        (
            "6f1c2b9e-1d2a-4c3b-8e4f-000000000002",
            "kubepods.slice/kubepods-pod6f1c2b9e_1d2a_4c3b_8e4f_000000000002.slice",
            "cri-containerd-4e5f6a7b.scope",
            CgroupDriver::Systemd,
        ),
        (
            "6f1c2b9e-1d2a-4c3b-8e4f-000000000003",
            "kubepods/burstable/pod6f1c2b9e-1d2a-4c3b-8e4f-000000000003",
            "8c9d0e1f2a3b",
            CgroupDriver::Cgroupfs,
        ),
        (
            "6f1c2b9e-1d2a-4c3b-8e4f-000000000004",
            "kubepods/pod6f1c2b9e-1d2a-4c3b-8e4f-000000000004",
            "1122334455",
            CgroupDriver::Cgroupfs,
        ),
    ];
    let own = netns_id(Path::new("/proc/self/ns/net"));
    let mut sandboxes = Vec::new();
    for (uid, rel, container, driver) in cases {
        let (pod, scope) = make_pod(&root.0, rel, container);
        let found = pod_cgroup(&root.0, uid).expect("pod cgroup found");
        assert_eq!((found.driver, &found.path), (driver, &pod), "{uid}");
        // The cgroup exists but holds no process yet (sandbox starting).
        assert!(matches!(pod_netns(&root.0, uid), Err(DiscoverError::NoProcess(_))), "{uid}");

        let sb = Sandbox::start();
        sb.move_to(&scope);
        let path = pod_netns(&root.0, uid).expect("netns found");
        assert_eq!(path, PathBuf::from(format!("/proc/{}/ns/net", sb.pid())));
        assert_eq!(netns_id(&path), sb.netns());
        assert_ne!(netns_id(&path), own, "the pod's own netns, not ztunnel's");
        sandboxes.push(sb);
    }
    // Another pod's UID finds nothing.
    let e = pod_netns(&root.0, "6f1c2b9e-1d2a-4c3b-8e4f-00000000000f").unwrap_err();
    assert!(matches!(e, DiscoverError::NoCgroup { .. }), "{e}");
    assert!(e.to_string().contains("6f1c2b9e-1d2a-4c3b-8e4f-00000000000f"), "{e}");
    drop(sandboxes);
}

/// The start-up race: discovery starts before the pod's cgroup and sandbox exist and finds
/// them as soon as they do.
#[tokio::test]
async fn a_pod_known_before_its_sandbox_is_found_when_it_starts() {
    let root = TestRoot::new("race");
    let uid = "0d0e0f10-1112-4314-9516-171819202122";
    let r = root.0.clone();
    let waiting = tokio::spawn(async move {
        wait_for_netns(&r, uid, Duration::from_millis(10), Duration::from_secs(20)).await
    });
    let rel = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0d0e0f10_1112_4314_9516_171819202122.slice";
    let (_pod, scope) = make_pod(&root.0, rel, "cri-containerd-feedface.scope");
    let sb = Sandbox::start();
    sb.move_to(&scope);
    let path = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("in time")
        .expect("task")
        .expect("found");
    assert_eq!(netns_id(&path), sb.netns());

    // A pod that never starts: the wait ends with the reason.
    let e = wait_for_netns(
        &root.0,
        "99999999-0000-4000-8000-000000000000",
        Duration::from_millis(5),
        Duration::from_millis(50),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, DiscoverError::NoCgroup { .. }), "{e}");
}
