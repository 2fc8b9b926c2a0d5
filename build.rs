//! Compiles `proto/` with protox (pure Rust) and prost, so no system `protoc` is needed.

fn main() {
    let protos = [
        "proto/cybermesh/ai/v1/ai.proto",
        "proto/cybermesh/control/v1/control.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"]).expect("proto/ schema files compile");
    // The descriptor set, for the proto3 JSON mapping used by the CLI (prost-reflect).
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(
        out.join("cybermesh_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )
    .expect("descriptor set written");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("prost code generation");
}
