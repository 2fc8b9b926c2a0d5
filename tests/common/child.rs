//! A validator in a process of its own, for faults that strike a whole member (SIGSTOP past
//! its session): the test binary runs itself again, filtered to its `child_validator` test,
//! which runs [`run_if_child`]. The child consumes anomalies of one topic in one group with the
//! vectors' verifier and prints `HANDLED partition offset began_ms ended_ms` per record; the
//! parent reads those lines back into checker handlings. The child stops when its stdin closes.
#![allow(dead_code)]

use super::broker::Broker;
use super::checker::{Handle, Handles};
use super::{mesh, vectors};
use meshbus::contract::Kind;
use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// The child's body: does nothing unless the parent set MESHBUS_CHILD_GROUP.
pub async fn run_if_child() {
    let Ok(group) = std::env::var("MESHBUS_CHILD_GROUP") else {
        return;
    };
    let topic = std::env::var("MESHBUS_CHILD_TOPIC").expect("MESHBUS_CHILD_TOPIC");
    let mut config = meshbus::config::Config::from_env().expect("child config");
    config.topics.insert(Kind::Anomaly, topic);
    let v = vectors::load();
    let c = meshbus::consumer::Consumer::connect(
        mesh::quick(&config),
        mesh::verifier(&v),
        meshbus::metrics::Metrics::new(),
        &group,
    )
    .await
    .expect("connect")
    .handle(Kind::Anomaly, |r: meshbus::consumer::Consumed| async move {
        let began = unix_ms();
        println!("HANDLED {} {} {began} {}", r.partition, r.offset, unix_ms());
        Ok(())
    });
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        while std::io::stdin()
            .read_line(&mut s)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    });
    c.run(async move {
        let _ = stdin_closed.await;
    })
    .await
    .expect("the child validator ran");
}

/// A child validator process and the handlings it printed.
pub struct Child {
    /// The process (SIGSTOP/SIGCONT it by `process.id()`).
    pub process: std::process::Child,
    /// Its handlings, as member `member`.
    pub handles: Handles,
}

impl Child {
    /// Starts a child validator of `group` on `topic` (`test` is the name of the binary's
    /// test that calls [`run_if_child`]); its stderr goes to `stderr`.
    pub fn start(
        b: &Broker,
        test: &str,
        group: &str,
        topic: &str,
        member: usize,
        stderr: &std::path::Path,
    ) -> Child {
        let started = (Instant::now(), unix_ms());
        let mut process = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--ignored", "--nocapture"])
            .envs(b.env())
            .env("MESHBUS_CHILD_GROUP", group)
            .env("MESHBUS_CHILD_TOPIC", topic)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .expect("the child validator starts");
        let handles: Handles = Arc::default();
        let h = handles.clone();
        let out = process.stdout.take().unwrap();
        let at = move |ms: u128| {
            let (i, u) = started;
            i + Duration::from_millis(ms.saturating_sub(u) as u64)
        };
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() == 5 && f[0] == "HANDLED" {
                    h.lock().unwrap().push(Handle {
                        member,
                        partition: f[1].parse().unwrap(),
                        offset: f[2].parse().unwrap(),
                        began: at(f[3].parse().unwrap()),
                        ended: at(f[4].parse().unwrap()),
                    });
                }
            }
        });
        Child { process, handles }
    }

    /// Freezes the process (SIGSTOP).
    pub fn freeze(&self) {
        super::cli::signal(self.process.id(), "STOP");
    }

    /// Resumes it (SIGCONT).
    pub fn resume(&self) {
        super::cli::signal(self.process.id(), "CONT");
    }

    /// Stops it (closes its stdin: a graceful stop) and waits for it.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.resume();
        drop(self.process.stdin.take());
        self.process.wait().unwrap()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
