//! Generates the client and server of Istio's CA API from proto/ca.proto.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/ca.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/ca.proto"], &["proto"])?;
    Ok(())
}
