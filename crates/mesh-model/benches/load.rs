//! Load benchmark: 10,000 objects (50 namespaces, 8,000 pods, 1,000 services, 950
//! policies/routes) as YAML files, parsed with `load_paths` and translated. Prints the time
//! of each phase and the model's memory per workload, counted by a wrapping allocator.
//! Not a test: nothing is asserted. Run with `cargo bench -p mesh-model --bench load`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use mesh_model::{MeshConfig, load_paths, translate};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const NAMESPACES: usize = 50;
const PODS_PER_NS: usize = 160;
const SERVICES_PER_NS: usize = 20;

/// One file per namespace: the Namespace, its pods, services, policies and routes (200 docs).
fn generate(dir: &Path) -> usize {
    let mut count = 0;
    for n in 0..NAMESPACES {
        let ns = format!("ns-{n}");
        let mut y = String::new();
        let mut doc = |y: &mut String, text: String| {
            y.push_str("---\n");
            y.push_str(&text);
            count += 1;
        };
        let mode = if n % 2 == 0 { "ambient" } else { "none" };
        doc(
            &mut y,
            format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    istio.io/dataplane-mode: {mode}\n"
            ),
        );
        for p in 0..PODS_PER_NS {
            let app = format!("svc-{}", p % SERVICES_PER_NS);
            let version = format!("v{}", p % 3 + 1);
            let ip = format!("10.{}.{}.{}", 1 + n / 50, n % 50 * 4 + p / 250, p % 250 + 1);
            let mut text = String::new();
            write!(
                text,
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {app}-{version}-{p:05}\n  namespace: {ns}\n  uid: {n:04}-{p:08}-0000-4000-8000-000000000000\n  labels:\n    app: {app}\n    version: {version}\n    pod-template-hash: 7d4b9c{}\nspec:\n  nodeName: node-{}\n  serviceAccountName: {app}\n  containers:\n  - name: app\n    image: example/app:1.0\n    ports:\n    - name: http\n      containerPort: 8080\n    - name: metrics\n      containerPort: 9090\nstatus:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n  - ip: {ip}\n",
                p % SERVICES_PER_NS % 3,
                p % 20
            )
            .unwrap();
            doc(&mut y, text);
        }
        for s in 0..SERVICES_PER_NS {
            doc(
                &mut y,
                format!(
                    "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{s}\n  namespace: {ns}\nspec:\n  clusterIP: 10.96.{n}.{}\n  selector:\n    app: svc-{s}\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n  - name: metrics\n    port: 9090\n",
                    s + 1
                ),
            );
        }
        for s in 0..5 {
            doc(
                &mut y,
                format!(
                    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs-{s}\n  namespace: {ns}\nspec:\n  hosts: [svc-{s}]\n  http:\n  - match:\n    - uri: {{prefix: /api}}\n    route:\n    - destination: {{host: svc-{s}, subset: v1}}\n      weight: 90\n    - destination: {{host: svc-{s}, subset: v2}}\n      weight: 10\n    timeout: 5s\n"
                ),
            );
            doc(
                &mut y,
                format!(
                    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: dr-{s}\n  namespace: {ns}\nspec:\n  host: svc-{s}\n  trafficPolicy:\n    loadBalancer: {{simple: LEAST_REQUEST}}\n  subsets:\n  - name: v1\n    labels: {{version: v1}}\n  - name: v2\n    labels: {{version: v2}}\n"
                ),
            );
            doc(
                &mut y,
                format!(
                    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ap-{s}\n  namespace: {ns}\nspec:\n  selector:\n    matchLabels: {{app: svc-{s}}}\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/{ns}/sa/svc-{}]\n    to:\n    - operation:\n        ports: [\"8080\"]\n",
                    s + 1
                ),
            );
        }
        for s in 0..3 {
            doc(
                &mut y,
                format!(
                    "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: pa-{s}\n  namespace: {ns}\nspec:\n  selector:\n    matchLabels: {{app: svc-{s}}}\n  mtls: {{mode: STRICT}}\n"
                ),
            );
        }
        doc(
            &mut y,
            format!(
                "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: tel\n  namespace: {ns}\nspec:\n  accessLogging:\n  - providers:\n    - name: envoy\n"
            ),
        );
        std::fs::write(dir.join(format!("{ns}.yaml")), y).unwrap();
    }
    count
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let generated = generate(dir.path());
    let config = MeshConfig::default();
    let paths = [dir.path().to_path_buf()];

    let mut best: Option<(Duration, Duration)> = None;
    let mut report = None;
    for _ in 0..3 {
        let before_load = live();
        let t = Instant::now();
        let loaded = load_paths(&paths);
        let load_time = t.elapsed();
        let objects_bytes = live() - before_load;

        let before_model = live();
        let t = Instant::now();
        let (model, diags) = translate(&loaded.objects, &config);
        let translate_time = t.elapsed();
        let model_bytes = live() - before_model;

        let errors = loaded.diagnostics.iter().chain(&diags).filter(|d| d.is_error()).count();
        let workloads = model.workloads().len();
        report = Some((
            loaded.objects.len(),
            errors,
            workloads,
            model.services().len(),
            objects_bytes,
            model_bytes,
        ));
        best = Some(match best {
            Some((l, tr)) => (l.min(load_time), tr.min(translate_time)),
            None => (load_time, translate_time),
        });
        drop(model);
        drop(loaded);
    }
    let (load_time, translate_time) = best.unwrap_or_default();
    let (objects, errors, workloads, services, objects_bytes, model_bytes) = report.unwrap_or_default();
    println!("mesh-model load benchmark ({generated} documents in {NAMESPACES} files; best of 3)");
    println!("| measure                            | value        |");
    println!("|------------------------------------|--------------|");
    println!("| objects loaded / errors            | {objects} / {errors} |");
    println!("| workloads / services               | {workloads} / {services} |");
    println!("| parse + validate (load_paths)      | {:>12} |", ms(load_time));
    println!("| translate                          | {:>12} |", ms(translate_time));
    println!("| total                              | {:>12} |", ms(load_time + translate_time));
    println!("| parsed objects memory              | {:>9} KB |", objects_bytes / 1024);
    println!("| model memory                       | {:>9} KB |", model_bytes / 1024);
    println!("| model memory per workload          | {:>10} B |", model_bytes / workloads.max(1) as isize);
}
