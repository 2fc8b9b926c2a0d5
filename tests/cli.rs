//! The `meshbus` command as an operator drives it: keys, offline sign and verify (the shared
//! vectors through the command), produce and consume against the broker, DLQ list and replay.

mod common;
use common::broker::Broker;
use common::cli::{meshbus, run, text};
use common::vectors;
use std::path::Path;
use std::process::Stdio;

#[test]
fn keygen_writes_a_private_pem_0600_and_prints_the_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ai.pem");
    let out = run(meshbus().args(["keygen", "--out"]).arg(&key));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let public = text(&out.stdout).trim().to_string();
    assert_eq!(public.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    let pub_pem = std::fs::read_to_string(dir.path().join("ai.pem.pub")).unwrap();
    let parsed = meshbus::contract::keys::parse_public_key(&pub_pem).unwrap();
    assert_eq!(hex::encode(parsed.to_bytes()), public);
    // No silent overwrite.
    let again = run(meshbus().args(["keygen", "--out"]).arg(&key));
    assert_eq!(again.status.code(), Some(3));
    assert!(text(&again.stderr).contains("--force"));
}

fn sign_json(dir: &Path, key: &Path, json: &str) -> std::path::PathBuf {
    let input = dir.join("m.json");
    std::fs::write(&input, json).unwrap();
    let out_path = dir.join("m.bin");
    let out = run(meshbus()
        .args(["sign", "--kind", "anomaly", "--key"])
        .arg(key)
        .arg(&input)
        .arg("--out")
        .arg(&out_path));
    assert!(out.status.success(), "{}", text(&out.stderr));
    out_path
}

#[test]
fn sign_then_verify_and_a_tampered_file_fails_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    assert!(run(meshbus().args(["keygen", "--out"]).arg(&key))
        .status
        .success());
    let payload = base64_json(r#"{"severity":4,"confidence":0.25}"#);
    let record = sign_json(
        dir.path(),
        &key,
        &format!(
            r#"{{"id":"a-1","type":"ddos","source":"10.1.1.1","severity":4,"confidence":0.25,"payload":"{payload}","model_version":"m"}}"#
        ),
    );
    let ok = run(meshbus().args(["verify", "--kind", "anomaly"]).arg(&record));
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert_eq!(text(&ok.stdout).trim(), "ok");

    let json = run(meshbus()
        .args(["verify", "--topic", "ai.anomalies.v1", "--json"])
        .arg(&record));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["message"]["id"], "a-1");
    assert_eq!(v["message"]["severity"], 4);

    let mut bytes = std::fs::read(&record).unwrap();
    let n = bytes.len();
    bytes[n - 45] ^= 0x01; // inside the signature
    let tampered = dir.path().join("t.bin");
    std::fs::write(&tampered, &bytes).unwrap();
    let bad = run(meshbus()
        .args(["verify", "--kind", "anomaly"])
        .arg(&tampered));
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(text(&bad.stdout).trim(), "bad_signature");
    let bad_json = run(meshbus()
        .args(["verify", "--kind", "anomaly", "--json"])
        .arg(&tampered));
    let v: serde_json::Value = serde_json::from_slice(&bad_json.stdout).unwrap();
    assert_eq!(v["reason"], "bad_signature");

    // From stdin, as hex, against the clock it was sent at: an hour later it is stale.
    let mut child = meshbus()
        .args(["verify", "--kind", "anomaly", "--hex", "--now"])
        .arg(
            (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 3600)
                .to_string(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(hex::encode(std::fs::read(&record).unwrap()).as_bytes())
        .unwrap();
    let stale = child.wait_with_output().unwrap();
    assert_eq!(stale.status.code(), Some(1));
    assert_eq!(text(&stale.stdout).trim(), "timestamp_skew");

    // Bad JSON is a clear error, not a record.
    let input = dir.path().join("bad.json");
    std::fs::write(&input, r#"{"severity": "high"}"#).unwrap();
    let out = run(meshbus()
        .args(["sign", "--kind", "anomaly", "--key"])
        .arg(&key)
        .arg(&input));
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("anomaly JSON"));
}

fn base64_json(s: &str) -> String {
    // proto3 JSON carries bytes as base64.
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Every shared vector through the command gives the vector's expected outcome (the command
/// uses the library's verifier).
#[test]
fn every_vector_through_the_command() {
    let v = vectors::load();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for vec in v.vectors.iter().filter(|x| x.record_hex.len() < 200_000) {
        let path = dir.path().join("r.hex");
        std::fs::write(&path, &vec.record_hex).unwrap();
        let mut c = meshbus();
        c.args([
            "verify",
            "--hex",
            "--topic",
            &vec.topic,
            "--now",
            &v.now.to_string(),
        ]);
        for k in &v.trusted_control_keys {
            c.args(["--trust", k]);
        }
        let out = run(c.arg(&path));
        let got = text(&out.stdout).trim().to_string();
        let want_code = if vec.expect == "ok" { 0 } else { 1 };
        if got != vec.expect || out.status.code() != Some(want_code) {
            failures.push(format!(
                "{}: expected {}, got {got} ({:?})",
                vec.name,
                vec.expect,
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn produce_consume_and_dlq_replay_against_the_broker() {
    let b = Broker::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ai.pem");
    assert!(run(meshbus().args(["keygen", "--out"]).arg(&key))
        .status
        .success());

    // produce 12 signed sample anomalies
    let out = run(meshbus()
        .envs(b.env())
        .args([
            "produce", "--kind", "anomaly", "--sample", "12", "--size", "300", "--key",
        ])
        .arg(&key));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 12);

    // and one forged record (bytes of a signed anomaly with a flipped signature byte)
    let payload = base64_json(r#"{"severity":2,"confidence":0.5}"#);
    let rec = sign_json(
        dir.path(),
        &key,
        &format!(
            r#"{{"id":"forged","type":"ddos","source":"x","severity":2,"confidence":0.5,"payload":"{payload}","model_version":"m"}}"#
        ),
    );
    let mut forged = std::fs::read(&rec).unwrap();
    let n = forged.len();
    forged[n - 45] ^= 1;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = meshbus::kafka::Client::connect(&b.config()).await.unwrap();
        let p =
            meshbus::producer::Producer::new(t, b.config(), None, meshbus::metrics::Metrics::new());
        p.send_raw("ai.anomalies.v1", None, forged.clone(), Default::default())
            .await
            .unwrap();
    });

    // consume: 12 verified records as JSON lines; the forged one goes to the DLQ
    let out = run(meshbus().envs(b.env()).args([
        "consume",
        "--kind",
        "anomaly",
        "--group",
        "cli",
        "--json",
        "--max",
        "13",
        "--seconds",
        "60",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12, "{}", text(&out.stderr));
    assert!(lines
        .iter()
        .all(|l| l["kind"] == "anomaly" && l["topic"] == "ai.anomalies.v1"));
    assert!(
        text(&out.stderr).contains("dead-lettered 1"),
        "{}",
        text(&out.stderr)
    );

    // dlq list shows it with its reason
    let out = run(meshbus().envs(b.env()).args(["dlq", "list", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["reason"], "bad_signature");
    assert_eq!(rows[0]["original_topic"], "ai.anomalies.v1");

    // replay needs a selection; then replays the record to its original topic byte for byte
    let out = run(meshbus().envs(b.env()).args(["dlq", "replay"]));
    assert_eq!(out.status.code(), Some(2));
    let out = run(meshbus()
        .envs(b.env())
        .args(["dlq", "replay", "--reason", "bad_signature"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("replayed 1, failed 0"));
    let all = b.py_read("ai.anomalies.v1", 14);
    let copies = all
        .iter()
        .filter(|r| r["value"].as_str() == Some(&hex::encode(&forged)))
        .count();
    assert_eq!(copies, 2, "the original and its replay");

    // A reader that quits (`consume | head -1`): the command stops at the next record it
    // cannot print, exits 1 (records left undelivered, uncommitted), and dead-letters nothing
    // (before, `println!` panicked in the handler: handler_failed dead letters, or an abort in
    // the release build).
    let mut child = meshbus()
        .envs(b.env())
        .args([
            "consume",
            "--kind",
            "anomaly",
            "--group",
            "cli-pipe",
            "--seconds",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead as _;
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.contains(" ok anomaly id="), "{first}");
    } // the read end closes here
    let out = run(meshbus()
        .envs(b.env())
        .args(["produce", "--kind", "anomaly", "--sample", "3", "--key"])
        .arg(&key));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(40),
            "consume did not stop after its stdout closed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("standard output closed"), "{stderr}");
    let out = run(meshbus().envs(b.env()).args(["dlq", "list", "--json"]));
    assert!(
        !text(&out.stdout).contains("handler_failed"),
        "{}",
        text(&out.stdout)
    );

    // metrics endpoint while consuming
    let out = run(meshbus().envs(b.env()).args([
        "--metrics-addr",
        "127.0.0.1:0",
        "consume",
        "--kind",
        "anomaly",
        "--group",
        "cli",
        "--seconds",
        "3",
    ]));
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("metrics on http://127.0.0.1:"));
}

/// The verification settings of SPEC 3b/3d/4 reach `meshbus verify` through the environment:
/// `AI_POLICY_ALLOWED_PUBKEYS`, `KAFKA_MAX_TIMESTAMP_SKEW`, `CONTROL_TIMESTAMP_SKEW` and
/// `CONTROL_POLICY_SIGNING_DOMAIN` each turn a record that verifies by default into its refusal.
#[test]
fn verification_settings_from_the_environment_reach_the_command() {
    let v = vectors::load();
    let dir = tempfile::tempdir().unwrap();
    let ok = |topic: &str| {
        v.vectors
            .iter()
            .find(|x| x.expect == "ok" && x.topic == topic)
            .unwrap_or_else(|| panic!("no valid vector for {topic}"))
    };
    let verify = |topic: &str, now: i64, env: &[(&str, String)]| -> String {
        let path = dir.path().join("r.hex");
        std::fs::write(&path, &ok(topic).record_hex).unwrap();
        let mut c = meshbus();
        c.args([
            "verify",
            "--hex",
            "--topic",
            topic,
            "--now",
            &now.to_string(),
        ]);
        for k in &v.trusted_control_keys {
            c.args(["--trust", k]);
        }
        for (k, val) in env {
            c.env(k, val);
        }
        text(&run(c.arg(&path)).stdout).trim().to_string()
    };
    let none: &[(&str, String)] = &[];
    // The policy allowlist.
    assert_eq!(verify("ai.policy.v1", v.now, none), "ok");
    let other = v.keys.other_pubkey_hex.clone();
    assert_eq!(
        verify(
            "ai.policy.v1",
            v.now,
            &[("AI_POLICY_ALLOWED_PUBKEYS", other)]
        ),
        "untrusted_key"
    );
    let listed = v.keys.ai_producer_pubkey_hex.clone();
    assert_eq!(
        verify(
            "ai.policy.v1",
            v.now,
            &[("AI_POLICY_ALLOWED_PUBKEYS", listed)]
        ),
        "ok"
    );
    // The ai.* skew: 200 s off is fine under the default 300 s, not under 100 s.
    assert_eq!(verify("ai.anomalies.v1", v.now + 200, none), "ok");
    assert_eq!(
        verify(
            "ai.anomalies.v1",
            v.now + 200,
            &[("KAFKA_MAX_TIMESTAMP_SKEW", "100".into())]
        ),
        "timestamp_skew"
    );
    // The control skew: 45 s off is fine under the default 60 s, not under 30 s.
    assert_eq!(verify("control.commits.v1", v.now + 45, none), "ok");
    assert_eq!(
        verify(
            "control.commits.v1",
            v.now + 45,
            &[("CONTROL_TIMESTAMP_SKEW", "30".into())]
        ),
        "timestamp_skew"
    );
    // The policy-update signing domain: a default-signed record fails under v2.
    assert_eq!(verify("control.policy.v1", v.now, none), "ok");
    assert_eq!(
        verify(
            "control.policy.v1",
            v.now,
            &[("CONTROL_POLICY_SIGNING_DOMAIN", "control.policy.v2".into())]
        ),
        "bad_signature"
    );
}

/// `meshbus topics` lists the per-kind table's topics (with their overrides) and the DLQ
/// topic: the list the broker harness creates, so neither keeps one of its own.
#[test]
fn topics_lists_every_kind_from_the_table_with_overrides_then_the_dlq() {
    use meshbus::contract::Kind;
    let out = run(meshbus()
        .arg("topics")
        .env_remove("KAFKA_DLQ_TOPIC")
        .env_remove("KAFKA_TOPIC_COMMITS"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut want: Vec<String> = Kind::ALL
        .iter()
        .map(|k| k.default_topic().to_string())
        .collect();
    want.push("ai.dlq.v1".into());
    assert_eq!(text(&out.stdout).lines().collect::<Vec<_>>(), want);
    assert_eq!(want.len(), 9);

    let out = run(meshbus()
        .arg("topics")
        .env("KAFKA_TOPIC_COMMITS", "blocks.v9")
        .env("KAFKA_DLQ_TOPIC", "ops.dlq"));
    let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    let commit = Kind::ALL.iter().position(|k| *k == Kind::Commit).unwrap();
    assert_eq!(lines[commit], "blocks.v9");
    assert_eq!(lines.last().unwrap(), "ops.dlq");
}
