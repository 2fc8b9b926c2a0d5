//! Running the `meshbus` command from tests.
#![allow(dead_code)]

use std::process::{Command, Output};

/// The `meshbus` binary, with nothing from the developer's environment leaking in.
pub fn meshbus() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_meshbus"));
    for (k, _) in std::env::vars() {
        if k.starts_with("KAFKA_")
            || k.starts_with("MESHBUS_")
            || k.starts_with("CONTROL_")
            || k == "AI_POLICY_ALLOWED_PUBKEYS"
            || k == "ENVIRONMENT"
        {
            c.env_remove(k);
        }
    }
    c
}

/// Runs to completion.
pub fn run(c: &mut Command) -> Output {
    c.output().expect("meshbus runs")
}

/// Bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Sends `signal` (e.g. "TERM") to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{signal} {pid}");
}
