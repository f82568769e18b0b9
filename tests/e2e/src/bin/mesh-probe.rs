//! `mesh-probe ADDR [--send TEXT] [--http PATH [--method M] [--header "k: v"]...] [--timeout SECS]`: a test client run inside lab
//! pods (`meshctl lab exec POD -- mesh-probe ...`). Connects to ADDR (`host:port`, names from the
//! pod's /etc/hosts), optionally sends raw text or an HTTP/1.1 GET, reads the answer to EOF, and
//! prints one JSON line: the addresses the application saw (`getsockname`/`getpeername`), the
//! answer, or the failure and its kind (`refused`, `reset`, `timeout`, `closed`).

fn main() {
    let out = mesh_e2e::probe::run(std::env::args().skip(1).collect());
    println!("{out}");
}
