//! Running the `meshbus` command from tests.
#![allow(dead_code)]

use std::io::BufRead;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// The (partition, offset) of each record a `consume --json` printed, in order.
pub fn consumed_places(lines: &[String]) -> Vec<(i32, i64)> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            (
                v["partition"].as_i64().unwrap() as i32,
                v["offset"].as_i64().unwrap(),
            )
        })
        .collect()
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

/// Spawns a command with its stdout lines collected as they come.
pub fn spawn_collecting(
    c: &mut std::process::Command,
) -> (std::process::Child, Arc<Mutex<Vec<String>>>) {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meshbus starts");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().unwrap();
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    (child, lines)
}

/// Waits for the child to exit within `limit`; its status and stderr.
pub fn wait_exit(
    child: &mut std::process::Child,
    limit: Duration,
) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code(), err, started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` on the command's metrics address, as a probe would (status 0: no answer).
pub fn probe(port: u16, path: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        meshbus::metrics::http::get(addr, path)
            .await
            .unwrap_or((0, String::new()))
    })
}

pub fn wait_probe(port: u16, want: u16, limit: Duration) -> (u16, String) {
    let end = Instant::now() + limit;
    loop {
        let got = probe(port, "/readyz");
        if got.0 == want || Instant::now() > end {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
