//! The `mesh-ca` binary: starts from a config file, generates its root into the state dir,
//! serves a token bootstrap over gRPC, and exits 0 on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_identity::{CaAuth, CaClient, CaClientConfig, Identity, NodeId, TokenSource, new_csr};

#[test]
fn example_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let c = mesh_ca::CaConfig::load(&path).unwrap();
    assert_eq!(
        c,
        mesh_ca::CaConfig {
            model: c.model.clone(),
            node_tokens_file: c.node_tokens_file.clone(),
            ..Default::default()
        }
    );
    assert!(c.node_tokens_file.unwrap().ends_with("mesh-ca/node-tokens"));
}

#[tokio::test]
async fn binary_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/model.yaml");
    std::fs::write(dir.path().join("tokens"), "node-a token-node-a-0123456789\n").unwrap();
    let config = dir.path().join("ca.yaml");
    std::fs::write(&config, format!("model: [{}]\nnodeTokensFile: tokens\n", fixture.display())).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mesh-ca"))
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    // The log line announcing the bound address.
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut addr = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        if line.contains("mesh-ca serving") {
            let at = line.find("local_addr=").expect("local_addr in the log line") + "local_addr=".len();
            addr = Some(line[at..].split_whitespace().next().unwrap().to_string());
            break;
        }
    }
    let addr = addr.expect("mesh-ca announced its address");
    let root_pem = std::fs::read_to_string(dir.path().join("state").join(mesh_ca::ROOT_CERT_FILE)).unwrap();
    let client = CaClient::new(
        CaClientConfig::new(format!("https://{addr}"), root_pem),
        CaAuth::Token(TokenSource::Static("token-node-a-0123456789".into())),
    );
    let node: Identity = NodeId::new("cluster.local", "node-a").unwrap().into();
    let csr = new_csr(&node).unwrap();
    let chain = client.create_certificate(&node, &csr.csr_pem, Duration::ZERO).await.unwrap();
    assert_eq!(chain.len(), 2);

    // SIGTERM: a clean exit.
    // SIGTERM with the client's connection still open: drained, then a clean exit.
    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "mesh-ca did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}

/// Kills the CA if the test fails before stopping it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
