//! Compiles the kubelet device-plugin API with a pure-Rust protobuf compiler (no system
//! protoc), the same way `libs/proto` compiles shmdb's own contracts.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/deviceplugin_v1beta1.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
