//! The static musl binary needs nothing but itself: run from an empty root (chroot or a user
//! namespace) with only a CA file, it signs, produces and consumes against Apache Kafka.

mod common;

use common::broker::shared as broker;

/// The static x86_64 binary (`scripts/static-build`; `.ci/run` builds it before the tests).
fn static_binary() -> std::path::PathBuf {
    let p = std::env::var_os("MESHBUS_STATIC_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/x86_64-unknown-linux-musl/static/meshbus")
        });
    assert!(
        p.exists(),
        "{} is missing: build it with `bash scripts/static-build` (the test command does)",
        p.display()
    );
    p
}

/// Runs `/meshbus args` inside `root` as its whole filesystem: chroot as root, else an
/// unprivileged user namespace.
fn in_empty_root(
    root: &std::path::Path,
    env: &[(String, String)],
    args: &[&str],
) -> std::process::Output {
    // Found on this process's PATH (the child's environment is emptied).
    let tool = |name: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join(name))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{name} is not installed"))
    };
    let mut c = if is_root() {
        let mut c = std::process::Command::new(tool("chroot"));
        c.arg(root);
        c
    } else {
        let mut c = std::process::Command::new(tool("unshare"));
        c.args(["--user", "--map-root-user", "--root"]).arg(root);
        c
    };
    c.env_clear()
        .envs(env.iter().cloned())
        .arg("/meshbus")
        .args(args);
    c.output().expect("chroot/unshare runs")
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn the_static_binary_runs_from_an_empty_root_against_kafka() {
    use common::cli::text;
    let bin = static_binary();
    let b = broker();
    let topic = "ops.scratch";
    b.create_topics(1, &[], &[topic]);
    // The root holds the binary, the broker's CA file and an empty directory for a key: no
    // libc, no /etc, no /dev, no shell.
    let root = tempfile::tempdir().unwrap();
    std::fs::copy(&bin, root.path().join("meshbus")).unwrap();
    std::fs::create_dir_all(root.path().join("certs")).unwrap();
    std::fs::create_dir_all(root.path().join("keys")).unwrap();
    let ca = b
        .env()
        .into_iter()
        .find(|(k, _)| k == "KAFKA_CA_CERT")
        .unwrap()
        .1;
    std::fs::copy(&ca, root.path().join("certs/ca.pem")).unwrap();
    let entries: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
    assert_eq!(entries.len(), 3, "meshbus, certs/, keys/");
    let env: Vec<(String, String)> = b
        .env()
        .into_iter()
        .map(|(k, v)| {
            if k == "KAFKA_CA_CERT" {
                (k, "/certs/ca.pem".into())
            } else {
                (k, v)
            }
        })
        .chain([("KAFKA_TOPIC_ANOMALY".to_string(), topic.to_string())])
        .chain([("KAFKA_DLQ_TOPIC".to_string(), "ops.scratch.dlq".to_string())])
        .collect();
    b.create_topics(1, &[], &["ops.scratch.dlq"]);

    let out = in_empty_root(root.path(), &env, &["--version"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = in_empty_root(root.path(), &env, &["keygen", "--out", "/keys/ai.pem"]);
    assert!(out.status.success(), "keygen: {}", text(&out.stderr));
    let out = in_empty_root(
        root.path(),
        &env,
        &[
            "produce",
            "--kind",
            "anomaly",
            "--sample",
            "5",
            "--key",
            "/keys/ai.pem",
        ],
    );
    assert!(
        out.status.success(),
        "produce over TLS + SCRAM: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).lines().count(), 5);
    let out = in_empty_root(
        root.path(),
        &env,
        &[
            "consume",
            "--kind",
            "anomaly",
            "--group",
            "ops-scratch",
            "--json",
            "--max",
            "5",
            "--seconds",
            "60",
        ],
    );
    assert!(out.status.success(), "consume: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count(),
        5,
        "{}",
        text(&out.stderr)
    );
}
