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
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("prost code generation");
}
