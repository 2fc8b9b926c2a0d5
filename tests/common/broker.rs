//! The broker harness: a real `nisshi` broker on a free loopback port with a TLS listener
//! (certificates made at test time by `certs/make-certs.sh`) and SCRAM users, stopped by pid.
//! A missing broker binary is a failure, never a skip.
#![allow(dead_code)]

use meshbus::config::{Config, SaslMechanism, Tls};
use meshbus::contract::Kind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// SCRAM-SHA-512 user.
pub const USER: &str = "alice";
/// Its password.
pub const PASSWORD: &str = "alice-s3cret";
/// SCRAM-SHA-256 user.
pub const USER256: &str = "bob";
/// Its password.
pub const PASSWORD256: &str = "bob-s3cret";

pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub certs: PathBuf,
    nisshi: PathBuf,
}

pub fn nisshi_path() -> PathBuf {
    if let Some(p) = std::env::var_os("MESHBUS_NISSHI") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let cached = home.join(".cache/meshbus/nisshi/bin/nisshi");
    if cached.exists() {
        return cached;
    }
    PathBuf::from("nisshi")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Broker {
    /// Starts a broker with TLS + SCRAM and the CyberMesh topics (3 partitions each) plus
    /// `extra_topics`.
    pub fn start(extra_topics: &[&str]) -> Broker {
        let nisshi = nisshi_path();
        assert!(
            Command::new(&nisshi)
                .arg("--help")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "nisshi broker not found at {} (run scripts/setup)",
            nisshi.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/make-certs.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg(&certs)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "make-certs.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut b = Broker {
            child: None,
            port: free_port(),
            dir,
            certs,
            nisshi,
        };
        // Users and topics are created while the broker runs without authentication.
        b.spawn(false);
        let url = b.plain_url();
        b.cli(&["user", "create", "--broker", &url, USER, PASSWORD]);
        b.cli(&[
            "user",
            "create",
            "--broker",
            &url,
            "--mechanism",
            "scram256",
            USER256,
            PASSWORD256,
        ]);
        let mut topics: Vec<String> = Kind::ALL
            .iter()
            .map(|k| k.default_topic().to_string())
            .collect();
        topics.push("ai.dlq.v1".into());
        topics.extend(extra_topics.iter().map(|s| s.to_string()));
        for t in &topics {
            b.cli(&[
                "topic",
                "create",
                "--broker",
                &url,
                "--partitions",
                "3",
                "--silent",
                t,
            ]);
        }
        b.stop();
        b.spawn(true);
        b
    }

    fn plain_url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn cli(&self, args: &[&str]) {
        let out = Command::new(&self.nisshi)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nisshi {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn spawn(&mut self, secure: bool) {
        let url = self.plain_url();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .unwrap();
        let mut cmd = Command::new(&self.nisshi);
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "sqlite://broker.sqlite", "--silent"])
        .args(["--group-initial-rebalance-delay", "200ms"])
        .current_dir(self.dir.path())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        if secure {
            cmd.arg("--authentication")
                .arg("--cert")
                .arg(self.certs.join("server.pem"))
                .arg("--key")
                .arg(self.certs.join("server.key"));
        }
        self.child = Some(cmd.spawn().expect("nisshi starts"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "broker did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// Kills the broker process by pid and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-9")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same port and storage (TLS + SCRAM).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn(true);
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A meshbus configuration for SASL_SSL with SCRAM-SHA-512.
    pub fn config(&self) -> Config {
        Config::builder()
            .brokers([self.address()])
            .tls(Tls {
                ca_cert: Some(self.certs.join("ca.pem")),
                ..Default::default()
            })
            .sasl(SaslMechanism::ScramSha512, USER, PASSWORD)
            .request_timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// The SPEC 8 environment for the same listener (for the `meshbus` command).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("KAFKA_BROKERS", self.address()),
            ("KAFKA_TLS_ENABLED", "true".into()),
            (
                "KAFKA_CA_CERT",
                self.certs.join("ca.pem").display().to_string(),
            ),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512".into()),
            ("KAFKA_SASL_USERNAME", USER.into()),
            ("KAFKA_SASL_PASSWORD", PASSWORD.into()),
            ("KAFKA_REQUEST_TIMEOUT_MS", "10000".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// librdkafka settings for the same listener.
    pub fn py_conf(&self) -> serde_json::Value {
        serde_json::json!({
            "bootstrap.servers": self.address(),
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": USER,
            "sasl.password": PASSWORD,
            "ssl.ca.location": self.certs.join("ca.pem"),
        })
    }

    /// `kafka_tool.py` with `args` and this broker's librdkafka settings.
    fn py_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("python3");
        c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/kafka_tool.py"))
            .args(args)
            .arg("--conf")
            .arg(self.py_conf().to_string());
        c
    }

    /// Runs `kafka_tool.py` with `args` to the end; its stdout JSON lines. Fails the caller on a
    /// non-zero exit.
    pub fn py_tool(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let out = self.py_command(args).output().expect("python3 runs");
        assert!(
            out.status.success(),
            "kafka_tool.py {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Starts a confluent-kafka consumer in `group` on `topic` for `seconds`; its stdout is
    /// JSON lines (`{"assigned": [..]}` and `{"partition", "offset"}`).
    pub fn py_group(&self, topic: &str, group: &str, seconds: u32) -> std::process::Child {
        self.py_command(&["group", "--topic", topic, "--group", group])
            .args(["--seconds", &seconds.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs")
    }

    /// Reads `count` records of `topic` with the confluent-kafka client.
    pub fn py_read(&self, topic: &str, count: usize) -> Vec<serde_json::Value> {
        let count = count.to_string();
        self.py_tool(&[
            "read",
            "--topic",
            topic,
            "--count",
            &count,
            "--timeout",
            "60",
        ])
    }
}

/// CPU seconds (user + system) this process has used so far, for the benchmarks.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the file (11 and 12 after the command name).
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}
