//! The broker harness: Apache Kafka 4.4.0 (KRaft) started by `scripts/kafka` on free loopback
//! ports, with SASL_SSL (SCRAM-SHA-512 and -256 users), an mTLS listener and certificates made
//! at test time. One node for most tests, three for failover; every node is killed by pid when
//! the `Broker` drops, and a watchdog kills them if the test binary dies first. A missing Kafka
//! installation is a failure, never a skip. The peer clients (librdkafka, the Java client,
//! Sarama) are driven from here too, so every test reaches them the same way.
#![allow(dead_code)]

use meshbus::config::{Config, SaslMechanism, Tls};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running Apache Kafka cluster (one or more nodes) in its own directory.
pub struct Broker {
    /// The cluster's directory (configuration, storage, logs, certificates).
    pub dir: tempfile::TempDir,
    /// Certificates made for this cluster (`ca.pem`, `client.pem`, `other-ca.pem`, ...).
    pub certs: PathBuf,
    info: serde_json::Value,
}

/// A node of the cluster as `scripts/kafka` reports it.
#[derive(Clone, Copy, Debug)]
pub struct Node {
    pub id: i32,
    pub sasl_ssl: u16,
    pub ssl: u16,
    pub internal: u16,
}

/// A fault on one node ([`Broker::pause_node`], [`Broker::cut_node`]), undone by `scripts/kafka
/// resume` or `heal` when [`Fault::end`]ed or dropped, even by a failing test.
pub struct Fault<'a> {
    broker: &'a Broker,
    id: i32,
    undo: &'static str,
    ended: bool,
}

/// A node frozen by [`Broker::pause_node`].
pub type Paused<'a> = Fault<'a>;

impl Fault<'_> {
    /// Ends the fault (resumes or heals the node).
    pub fn end(mut self) {
        self.undo();
    }

    /// Resumes a paused node (SIGCONT); the same as [`Fault::end`].
    pub fn resume(self) {
        self.end();
    }

    fn undo(&mut self) {
        if !self.ended {
            self.ended = true;
            let d = self.broker.dir.path().to_str().unwrap();
            // No panic here: this also runs while a failing test unwinds.
            match script(&[self.undo, d, &self.id.to_string()]).status() {
                Ok(s) if s.success() => {}
                other => eprintln!("scripts/kafka {} {}: {other:?}", self.undo, self.id),
            }
        }
    }
}

impl Drop for Fault<'_> {
    fn drop(&mut self) {
        self.undo();
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cache() -> PathBuf {
    std::env::var_os("MESHBUS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/meshbus"))
}

fn kafka_home() -> PathBuf {
    std::env::var_os("MESHBUS_KAFKA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache().join("kafka-4.4.0"))
}

/// A `scripts/kafka` command (`common::toxiproxy` starts its server through it too).
pub(super) fn script(args: &[&str]) -> Command {
    let mut c = Command::new("bash");
    c.arg(repo().join("scripts/kafka")).args(args);
    // The harness asks this build's `meshbus topics` for the per-kind table's topics.
    c.env("MESHBUS_BIN", env!("CARGO_BIN_EXE_meshbus"));
    c
}

pub(super) fn run_ok(mut c: Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The one-node broker this test binary's tests share, started by the first that asks (each
/// test gives itself its own topics and group).
#[allow(dead_code)]
pub fn shared() -> &'static Broker {
    static B: std::sync::OnceLock<Broker> = std::sync::OnceLock::new();
    B.get_or_init(|| Broker::start(&[]))
}

impl Broker {
    /// Starts one node with the CyberMesh topics (3 partitions each) plus `extra_topics`.
    pub fn start(extra_topics: &[&str]) -> Broker {
        Broker::start_nodes(1, extra_topics)
    }

    /// Starts `nodes` nodes (each broker + controller; replication min(nodes, 3), min ISR 2
    /// from three nodes on) with the CyberMesh topics plus `extra_topics`.
    pub fn start_nodes(nodes: usize, extra_topics: &[&str]) -> Broker {
        Broker::start_with(nodes, extra_topics, &[])
    }

    /// Like [`Broker::start_nodes`], with more `scripts/kafka start` arguments
    /// (`--config k=v`, `--plain-advertise PORT`).
    pub fn start_with(nodes: usize, extra_topics: &[&str], extra_args: &[&str]) -> Broker {
        assert!(
            kafka_home().join("libs/kafka_2.13-4.4.0.jar").exists(),
            "Apache Kafka not installed in {} (run scripts/setup)",
            kafka_home().display()
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let owner = std::process::id().to_string();
        let n = nodes.to_string();
        let topics = extra_topics.join(" ");
        let mut args = vec![
            "start", &d, "--nodes", &n, "--owner", &owner, "--topics", &topics,
        ];
        args.extend_from_slice(extra_args);
        run_ok(script(&args), "scripts/kafka start");
        let info: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("cluster.json")).unwrap(),
        )
        .unwrap();
        Broker {
            certs: dir.path().join("certs"),
            dir,
            info,
        }
    }

    /// The plaintext listener's real port (`--plain-advertise`), which the broker advertises
    /// under another port (a proxy's).
    pub fn plain_port(&self) -> u16 {
        self.info["nodes"][0]["plain"]
            .as_u64()
            .expect("started with --plain-advertise") as u16
    }

    /// The cluster's nodes.
    pub fn nodes(&self) -> Vec<Node> {
        self.info["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| Node {
                id: n["id"].as_i64().unwrap() as i32,
                sasl_ssl: n["sasl_ssl"].as_u64().unwrap() as u16,
                ssl: n["ssl"].as_u64().unwrap() as u16,
                internal: n["internal"].as_u64().unwrap() as u16,
            })
            .collect()
    }

    /// Creates `topics` with `partitions` partitions (the cluster's replication factor) and
    /// topic-level `configs` (e.g. `max.message.bytes=2097152`).
    pub fn create_topics(&self, partitions: u32, configs: &[&str], topics: &[&str]) {
        let p = partitions.to_string();
        let rf = self.info["replication"].to_string();
        let cfg = if configs.is_empty() {
            "-".to_string()
        } else {
            configs.join(",")
        };
        let mut args = vec!["create-topics", &p, &rf, &cfg];
        args.extend_from_slice(topics);
        self.admin(&args);
    }

    /// Runs the Java Admin tool (`tests/java/Peer.java admin ...`); its JSON answer.
    pub fn admin(&self, args: &[&str]) -> serde_json::Value {
        let d = self.dir.path().to_str().unwrap();
        let mut a = vec!["admin", d];
        a.extend_from_slice(args);
        let out = run_ok(script(&a), &format!("admin {args:?}"));
        serde_json::from_str(out.lines().last().unwrap_or("null")).unwrap()
    }

    /// Leader node of every partition of `topic` (-1 while none).
    pub fn leaders(&self, topic: &str) -> BTreeMap<i32, i32> {
        let v = self.admin(&["leaders", topic]);
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.as_i64().unwrap() as i32))
            .collect()
    }

    /// Log end offset of every partition of `topics`, by (topic, partition).
    pub fn end_offsets(&self, topics: &[&str]) -> BTreeMap<(String, i32), i64> {
        let mut args = vec!["end-offsets"];
        args.extend_from_slice(topics);
        by_partition(&self.admin(&args))
    }

    /// Offsets `group` committed, by (topic, partition).
    pub fn committed(&self, group: &str) -> BTreeMap<(String, i32), i64> {
        by_partition(&self.admin(&["committed", group]))
    }

    /// The node coordinating `group`.
    pub fn coordinator(&self, group: &str) -> i32 {
        self.admin(&["coordinator", group])["coordinator"]
            .as_i64()
            .unwrap() as i32
    }

    /// The data directory (`log.dirs`) of node `id`.
    pub fn data_dir(&self, id: i32) -> PathBuf {
        self.dir.path().join(format!("node-{id}/data"))
    }

    /// The log of node `id` so far.
    pub fn log(&self, id: i32) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{id}/server.log")))
            .unwrap_or_default()
    }

    /// Kills node `id` with SIGKILL and waits until it is gone.
    pub fn kill_node(&self, id: i32) {
        let d = self.dir.path().to_str().unwrap();
        run_ok(script(&["kill", d, &id.to_string()]), "scripts/kafka kill");
    }

    /// Starts node `id` again on its storage and waits until it listens.
    pub fn restart_node(&self, id: i32) {
        let d = self.dir.path().to_str().unwrap();
        run_ok(
            script(&["restart", d, &id.to_string()]),
            "scripts/kafka restart",
        );
    }

    /// Freezes node `id` with SIGSTOP (a GC pause, a frozen VM) until the returned guard is
    /// dropped or [`Paused::resume`]d: it keeps its sockets and answers nothing meanwhile.
    pub fn pause_node(&self, id: i32) -> Paused<'_> {
        self.fault(id, &["pause"], "resume")
    }

    /// Cuts node `id` off from the other nodes (`scripts/kafka cut`: its inter-broker and
    /// controller traffic both ways is dropped, its client listeners stay reachable) until the
    /// returned guard is dropped or [`Fault::end`]ed.
    pub fn cut_node(&self, id: i32) -> Fault<'_> {
        self.fault(id, &["cut"], "heal")
    }

    /// A half partition: the other nodes cannot reach node `id`, while its own connections to
    /// them stay up (`scripts/kafka cut --one-way`).
    pub fn cut_node_one_way(&self, id: i32) -> Fault<'_> {
        self.fault(id, &["cut", "--one-way"], "heal")
    }

    fn fault(&self, id: i32, how: &[&str], undo: &'static str) -> Fault<'_> {
        let d = self.dir.path().to_str().unwrap();
        let id_s = id.to_string();
        let mut args = vec![how[0], d, &id_s];
        args.extend(&how[1..]);
        run_ok(script(&args), &format!("scripts/kafka {}", how.join(" ")));
        Fault {
            broker: self,
            id,
            undo,
            ended: false,
        }
    }

    /// CPU seconds the cluster's JVMs have used so far (what a benchmark shows beside the
    /// client's own).
    pub fn cpu_seconds(&self) -> f64 {
        self.jvm_pids()
            .iter()
            .filter_map(|pid| process_cpu_seconds(&format!("/proc/{pid}/stat")))
            .sum()
    }

    /// The pids of the cluster's JVMs, as the harness recorded them (`node-N/pid`).
    fn jvm_pids(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|entry| std::fs::read_to_string(entry.unwrap().path().join("pid")).ok())
            .map(|pid| pid.trim().to_string())
            .collect()
    }

    /// CPU seconds the cluster's JIT compiler threads (HotSpot's `C1`/`C2 CompilerThread`s)
    /// have used so far: a broker still compiling is not warm, and its compiles take CPU
    /// from whichever client a benchmark is measuring at the time.
    #[allow(dead_code)] // only the benchmarks read it
    pub fn jit_cpu_seconds(&self) -> f64 {
        let mut total = 0.0;
        for pid in self.jvm_pids() {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for task in tasks.flatten() {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                if comm.starts_with("C1 Compiler") || comm.starts_with("C2 Compiler") {
                    let stat = task.path().join("stat");
                    total += process_cpu_seconds(stat.to_str().unwrap()).unwrap_or(0.0);
                }
            }
        }
        total
    }

    /// Waits until the cluster's JIT compilers are quiet (at most one clock tick of CPU in
    /// each of two consecutive quarter-seconds), for at most `limit`; returns whether they
    /// went quiet. A benchmark calls it before each measured row, so no row pays for the
    /// compiles the one before it set off.
    #[allow(dead_code)] // only the benchmarks call it
    pub fn wait_jit_quiet(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        let mut quiet = 0;
        let mut last = self.jit_cpu_seconds();
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(250));
            let now = self.jit_cpu_seconds();
            // A compiler thread that exits takes its CPU time with it: a drop is quiet.
            quiet = if now - last <= 0.011 { quiet + 1 } else { 0 };
            last = now;
            if quiet >= 2 {
                return true;
            }
        }
        false
    }

    /// Kills every node by pid (storage is kept).
    pub fn stop(&mut self) {
        for n in self.nodes() {
            self.kill_node(n.id);
        }
    }

    /// Starts every node again on its storage and waits until the cluster serves requests.
    pub fn restart(&mut self) {
        let d = self.dir.path().to_str().unwrap().to_string();
        let nodes = self.nodes();
        for n in &nodes {
            self.kill_node(n.id);
        }
        let children: Vec<_> = nodes
            .iter()
            .map(|n| {
                script(&["restart", &d, &n.id.to_string()])
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "a node did not restart");
        }
        self.admin(&["wait-brokers", &nodes.len().to_string(), "90"]);
    }

    /// The SASL_SSL bootstrap addresses (every node).
    pub fn address(&self) -> String {
        self.nodes()
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.sasl_ssl))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The SCRAM-SHA-512 user and password.
    pub fn scram512(&self) -> (String, String) {
        let u = &self.info["scram512"];
        (
            u["user"].as_str().unwrap().into(),
            u["password"].as_str().unwrap().into(),
        )
    }

    /// The SCRAM-SHA-256 user and password.
    pub fn scram256(&self) -> (String, String) {
        let u = &self.info["scram256"];
        (
            u["user"].as_str().unwrap().into(),
            u["password"].as_str().unwrap().into(),
        )
    }

    /// A meshbus configuration for SASL_SSL with SCRAM-SHA-512.
    pub fn config(&self) -> Config {
        let (user, password) = self.scram512();
        Config::builder()
            .brokers(self.address().split(',').map(String::from))
            .tls(Tls {
                ca_cert: Some(self.certs.join("ca.pem")),
                ..Default::default()
            })
            .sasl(SaslMechanism::ScramSha512, user, password)
            .request_timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// A meshbus configuration for the mTLS listener (client certificate, no SASL).
    pub fn mtls_config(&self) -> Config {
        Config::builder()
            .brokers(self.nodes().iter().map(|n| format!("127.0.0.1:{}", n.ssl)))
            .tls(Tls {
                ca_cert: Some(self.certs.join("ca.pem")),
                client_cert: Some(self.certs.join("client.pem")),
                client_key: Some(self.certs.join("client.key")),
            })
            .request_timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// The SPEC 8 environment for the SASL_SSL listener (for the `meshbus` command).
    pub fn env(&self) -> Vec<(String, String)> {
        let (user, password) = self.scram512();
        [
            ("KAFKA_BROKERS", self.address()),
            ("KAFKA_TLS_ENABLED", "true".into()),
            (
                "KAFKA_CA_CERT",
                self.certs.join("ca.pem").display().to_string(),
            ),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512".into()),
            ("KAFKA_SASL_USERNAME", user),
            ("KAFKA_SASL_PASSWORD", password),
            ("KAFKA_REQUEST_TIMEOUT_MS", "10000".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// librdkafka settings for the SASL_SSL listener.
    pub fn py_conf(&self) -> serde_json::Value {
        let (user, password) = self.scram512();
        serde_json::json!({
            "bootstrap.servers": self.address(),
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": password,
            "ssl.ca.location": self.certs.join("ca.pem"),
        })
    }

    /// Java client settings for the SASL_SSL listener.
    pub fn java_conf(&self) -> serde_json::Value {
        let (user, password) = self.scram512();
        serde_json::json!({
            "bootstrap.servers": self.address(),
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": format!(
                "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{user}\" password=\"{password}\";"
            ),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": self.certs.join("ca.pem"),
        })
    }

    /// Sarama peer settings for the SASL_SSL listener.
    pub fn sarama_conf(&self) -> serde_json::Value {
        let (user, password) = self.scram512();
        serde_json::json!({
            "brokers": self.address(),
            "ca": self.certs.join("ca.pem"),
            "mechanism": "SCRAM-SHA-512",
            "user": user,
            "password": password,
        })
    }

    /// A command for peer `client` with `args` and this cluster's settings for it.
    pub fn peer_command(&self, client: Peer, args: &[&str]) -> Command {
        let mut c = match client {
            Peer::Librdkafka => {
                let mut c = Command::new("python3");
                c.arg(repo().join("tests/py/kafka_tool.py"));
                c.args(args).arg("--conf").arg(self.py_conf().to_string());
                return c;
            }
            Peer::Java => {
                let mut c = Command::new("java");
                // Tests start quickly on the first JIT tier with a small heap; a benchmark
                // (`pbench`, `cbench`) gets the JVM's full JIT and room for its records, as a
                // deployed Java client would have.
                let jvm: &[&str] = if args[0].ends_with("bench") {
                    &["-Xmx1g"]
                } else {
                    &["-Xmx256m", "-XX:TieredStopAtLevel=1"]
                };
                c.args(jvm).arg("-cp").arg(format!(
                    "{}:{}/*",
                    kafka_home().join("peer").display(),
                    kafka_home().join("libs").display()
                ));
                c.arg("Peer")
                    .arg(args[0])
                    .arg("--conf")
                    .arg(self.java_conf().to_string());
                c
            }
            Peer::Sarama => {
                let mut c = Command::new(cache().join("sarama-peer"));
                c.arg(args[0])
                    .arg("--conf")
                    .arg(self.sarama_conf().to_string());
                c
            }
        };
        c.args(&args[1..]);
        c
    }

    /// Runs `kafka_tool.py` with `args` to the end; its stdout JSON lines. Fails the caller on a
    /// non-zero exit.
    pub fn py_tool(&self, args: &[&str]) -> Vec<serde_json::Value> {
        json_lines(&run_ok(
            self.peer_command(Peer::Librdkafka, args),
            "kafka_tool.py",
        ))
    }

    /// Starts a confluent-kafka consumer in `group` on `topic` for `seconds`; its stdout is
    /// JSON lines (`{"assigned": [..]}` and `{"partition", "offset"}`).
    pub fn py_group(&self, topic: &str, group: &str, seconds: u32) -> std::process::Child {
        self.peer_group(Peer::Librdkafka, topic, group, seconds)
    }

    /// Starts peer `client` as a member of `group` on `topic` for `seconds`, committing each
    /// record after printing it; stdout is JSON lines.
    pub fn peer_group(
        &self,
        client: Peer,
        topic: &str,
        group: &str,
        seconds: u32,
    ) -> std::process::Child {
        self.peer_group_with(client, topic, group, seconds, &[])
    }

    /// [`Broker::peer_group`] with more peer arguments (e.g. `--protocol consumer`).
    pub fn peer_group_with(
        &self,
        client: Peer,
        topic: &str,
        group: &str,
        seconds: u32,
        extra: &[&str],
    ) -> std::process::Child {
        let s = seconds.to_string();
        let mut args = vec!["group", "--topic", topic, "--group", group, "--seconds", &s];
        args.extend_from_slice(extra);
        // MESHBUS_PEER_STDERR=1 shows the members' own logs (for debugging a mixed group).
        let stderr = if std::env::var_os("MESHBUS_PEER_STDERR").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        self.peer_command(client, &args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("peer client runs")
    }

    /// Starts peer `client` as a group member whose output is collected while it runs.
    pub fn member(&self, client: Peer, topic: &str, group: &str, seconds: u32) -> Member {
        self.member_with(client, topic, group, seconds, &[])
    }

    /// [`Broker::member`] with more peer arguments (e.g. `--protocol consumer`).
    pub fn member_with(
        &self,
        client: Peer,
        topic: &str,
        group: &str,
        seconds: u32,
        extra: &[&str],
    ) -> Member {
        use std::io::BufRead;
        let mut child = self.peer_group_with(client, topic, group, seconds, extra);
        let out = child.stdout.take().unwrap();
        let lines: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if let Ok(v) = serde_json::from_str(&l) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Member {
            client,
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Reads `count` records of `topic` with the confluent-kafka client.
    pub fn py_read(&self, topic: &str, count: usize) -> Vec<serde_json::Value> {
        self.peer_read(Peer::Librdkafka, topic, count)
    }

    /// Reads `count` records of `topic` from the beginning with peer `client`.
    pub fn peer_read(&self, client: Peer, topic: &str, count: usize) -> Vec<serde_json::Value> {
        let count = count.to_string();
        let mut args = vec!["read", "--topic", topic, "--count", &count];
        if client == Peer::Librdkafka {
            args.extend(["--timeout", "60"]);
        }
        json_lines(&run_ok(
            self.peer_command(client, &args),
            &format!("{client:?} read"),
        ))
    }

    /// Produces `records` (partition, value) to `topic` with librdkafka, each on its given
    /// partition (acks=all, idempotent): a raw replay where the test chooses.
    pub fn py_produce_at(&self, topic: &str, records: &[(i32, Vec<u8>)]) {
        let lines = records
            .iter()
            .map(|(p, v)| serde_json::json!({"partition": p, "value": hex::encode(v)}));
        self.feed_producer(Peer::Librdkafka, topic, lines.collect());
    }

    /// Produces `records` (key, value) to `topic` with peer `client` (acks=all, idempotent).
    pub fn peer_produce(&self, client: Peer, topic: &str, records: &[(Option<Vec<u8>>, Vec<u8>)]) {
        let lines = records.iter().map(|(k, v)| {
            serde_json::json!({"key": k.as_ref().map(hex::encode), "value": hex::encode(v)})
        });
        self.feed_producer(client, topic, lines.collect());
    }

    /// Runs peer `client`'s producer on `topic`, one JSON line of `lines` per record.
    fn feed_producer(&self, client: Peer, topic: &str, lines: Vec<serde_json::Value>) {
        use std::io::Write;
        let mut child = self
            .peer_command(client, &["produce", "--topic", topic])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            let mut stdin = child.stdin.take().unwrap();
            for line in lines {
                writeln!(stdin, "{line}").unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{client:?} produce failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A peer client running as a group member, its JSON-lines output collected as it comes.
pub struct Member {
    /// Which client.
    pub client: Peer,
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    /// Every line so far.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.lines.lock().unwrap().clone()
    }

    /// The partitions of the latest assignment (None before the first).
    pub fn assigned(&self) -> Option<Vec<i32>> {
        self.lines()
            .iter()
            .rev()
            .find_map(|l| l.get("assigned"))
            .map(|a| {
                a.as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_i64().unwrap() as i32)
                    .collect()
            })
    }

    /// How many assignments it has seen.
    pub fn assignments(&self) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.get("assigned").is_some())
            .count()
    }

    /// Records handled (and committed) so far, as (partition, offset).
    pub fn records(&self) -> Vec<(i32, i64)> {
        self.lines()
            .iter()
            .filter(|l| l.get("offset").is_some())
            .map(|l| {
                (
                    l["partition"].as_i64().unwrap() as i32,
                    l["offset"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    /// Kills the member at once (SIGKILL): the group notices when its session times out.
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the member to end by itself (it leaves the group on the way out).
    pub fn wait(&mut self) {
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        assert!(
            status.success(),
            "{:?} member failed: {status}",
            self.client
        );
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The peer clients of the interop tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// confluent-kafka (librdkafka 2.16), `tests/py/kafka_tool.py`.
    Librdkafka,
    /// The Java client (kafka-clients 4.4.0), `tests/java/Peer.java`.
    Java,
    /// Sarama, `tests/go/peer`.
    Sarama,
}

fn by_partition(v: &serde_json::Value) -> BTreeMap<(String, i32), i64> {
    let mut out = BTreeMap::new();
    for (topic, parts) in v.as_object().unwrap() {
        for (p, o) in parts.as_object().unwrap() {
            out.insert((topic.clone(), p.parse().unwrap()), o.as_i64().unwrap());
        }
    }
    out
}

/// Parses JSON lines.
pub fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// CPU seconds (user + system) this process has used so far, for the benchmarks.
pub fn cpu_seconds() -> f64 {
    process_cpu_seconds("/proc/self/stat").unwrap()
}

/// CPU seconds the calling thread has used (user + system), at the kernel's tick resolution.
#[allow(dead_code)] // not every test binary that includes this file reads it
pub fn thread_cpu_seconds() -> f64 {
    process_cpu_seconds("/proc/thread-self/stat").unwrap()
}

/// User + system CPU seconds from a `/proc/PID/stat` file (None once the process is gone).
fn process_cpu_seconds(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the file (11 and 12 after the command name).
    Some((f[11].parse::<f64>().ok()? + f[12].parse::<f64>().ok()?) / 100.0)
}

impl Drop for Broker {
    fn drop(&mut self) {
        let d = self.dir.path().to_str().unwrap().to_string();
        let _ = script(&["stop", &d]).status();
    }
}
