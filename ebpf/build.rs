//! Compiles the C programs under bpf/ with `clang -target bpf -O2 -g` into OUT_DIR (one object
//! per attach point); src/programs.rs embeds them. Objects are never committed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One object per attach point (file stem under bpf/).
const OBJECTS: &[&str] =
    &["connect4", "connect6", "sockops", "getsockopt", "getpeername", "sk_lookup", "tc_ingress"];

const HINT: &str = "the eBPF programs need clang and the libbpf headers: apt-get install clang libbpf-dev";

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let bpf = manifest.join("bpf");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MESH_EBPF_CLANG");
    for dir in [bpf.clone(), bpf.join("include")] {
        println!("cargo:rerun-if-changed={}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|x| x == "c" || x == "h") {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }

    let clang = std::env::var("MESH_EBPF_CLANG").unwrap_or_else(|_| "clang".to_string());
    match Command::new(&clang).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("`{clang} --version` failed ({}); {HINT}", o.status),
        Err(e) => panic!("cannot run `{clang}`: {e}; {HINT}"),
    }
    let include_roots = ["/usr/include", "/usr/local/include"];
    if !include_roots.iter().any(|r| Path::new(r).join("bpf/bpf_helpers.h").exists()) {
        panic!("<bpf/bpf_helpers.h> not found under {include_roots:?}; {HINT}");
    }
    if !include_roots.iter().any(|r| Path::new(r).join("linux/bpf.h").exists()) {
        panic!("<linux/bpf.h> not found under {include_roots:?}; {HINT} (and linux-libc-dev)");
    }
    // <linux/types.h> includes <asm/types.h>, which Debian keeps under the multiarch folder.
    let multiarch: Vec<PathBuf> = std::fs::read_dir("/usr/include")
        .map(|rd| {
            rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.join("asm/types.h").exists()).collect()
        })
        .unwrap_or_default();

    for name in OBJECTS {
        let src = bpf.join(format!("{name}.c"));
        let obj = out.join(format!("{name}.o"));
        let mut cmd = Command::new(&clang);
        cmd.args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"]).arg("-I").arg(bpf.join("include"));
        if !Path::new("/usr/include/asm/types.h").exists() {
            for dir in &multiarch {
                cmd.arg("-I").arg(dir);
            }
        }
        cmd.arg("-c").arg(&src).arg("-o").arg(&obj);
        let output =
            cmd.output().unwrap_or_else(|e| panic!("running {clang} on {}: {e}; {HINT}", src.display()));
        if !output.status.success() {
            panic!(
                "compiling {} with `{clang} -target bpf -O2 -g` failed ({}):\n{}\n{HINT}",
                src.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}
