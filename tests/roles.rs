//! The library's ready-made roles (`meshbus::mesh::roles`) run a small mesh on Apache Kafka: a
//! validator, an enforcement agent, the AI service and the backend, built from
//! `Mesh::builder`; a signing role refuses a builder without a key.

mod common;
use common::mesh::{self, wait_for};
use common::sample;
use meshbus::contract::Kind;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::broker::shared as broker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_roles_run_a_small_mesh() {
    use meshbus::consumer::Consumed;
    use meshbus::contract::{TrustStore, Verifier};
    use meshbus::mesh::{roles, Mesh};
    let b = broker();
    let mut config = b.config();
    for kind in Kind::ALL {
        config
            .topics
            .insert(kind, format!("ops.roles.{}", kind.default_topic()));
    }
    config.dlq_topic = "ops.roles.dlq".into();
    let topics: Vec<String> = config.topics.values().cloned().collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    b.create_topics(1, &[], &names);
    b.create_topics(1, &[], &["ops.roles.dlq"]);
    let key = |seed: u8| ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let (ai_key, backend_key, agent_key) = (key(1), key(2), key(3));
    let verifier = |acks: Option<[u8; 32]>| {
        Verifier::new(
            {
                let mut vc = config.verifier_config();
                vc.ack_keys = acks.map(|k| TrustStore::from_keys([k]));
                vc
            },
            TrustStore::from_keys([backend_key.verifying_key().to_bytes()]),
        )
    };
    let metrics = meshbus::metrics::Metrics::new();
    let seen: mesh::Seen = Default::default();
    let record = |seen: &mesh::Seen| {
        let seen = seen.clone();
        move |r: Consumed| {
            seen.lock().unwrap().push((r.topic, r.partition, r.offset));
            std::future::ready(Ok(()))
        }
    };
    let mut c = config.clone();
    c.consumer_group = "ops-roles".into();
    let builder = |c: &meshbus::config::Config, acks| {
        Mesh::builder(c.clone())
            .verifier(verifier(acks))
            .metrics(metrics.clone())
    };
    let validator = roles::validator(builder(&c, None), record(&seen))
        .await
        .unwrap();
    let applied = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    c.consumer_group = "ops-roles-agent".into();
    c.node_id = 9;
    let agent = roles::agent(
        builder(&c, None).signing_key(agent_key.clone()),
        applied.clone(),
    )
    .await
    .unwrap();
    let feedback: mesh::Seen = Default::default();
    c.consumer_group = "ops-roles-ai".into();
    c.node_id = 7;
    let acks = Some(agent_key.verifying_key().to_bytes());
    let ai = roles::ai_service(builder(&c, acks).signing_key(ai_key), record(&feedback))
        .await
        .unwrap();
    // A role that signs refuses to start without a key, naming the role.
    let unkeyed = roles::backend(builder(&config, None)).await.unwrap_err();
    assert_eq!(unkeyed.code(), "no_signer", "{unkeyed}");
    let backend = roles::backend(builder(&config, None).signing_key(backend_key))
        .await
        .unwrap();

    ai.producer()
        .send_anomaly(sample::anomaly(1, 100))
        .await
        .unwrap();
    backend
        .producer()
        .send_policy_update(sample::policy_update(1, 100))
        .await
        .unwrap();
    // The validator verifies the anomaly; the agent applies the update and acknowledges it;
    // the AI service verifies the signed acknowledgement.
    let done = wait_for(Duration::from_secs(60), || {
        seen.lock().unwrap().len() == 1
            && applied.load(Ordering::SeqCst) == 1
            && feedback.lock().unwrap().len() == 1
    })
    .await;
    for role in [validator, agent, ai, backend] {
        assert!(role.stop(Duration::from_secs(20)).await.is_clean());
    }
    assert!(
        done,
        "validator {:?}, applied {}, feedback {:?}",
        seen.lock().unwrap(),
        applied.load(Ordering::SeqCst),
        feedback.lock().unwrap()
    );
    assert_eq!(
        feedback.lock().unwrap()[0].0,
        "ops.roles.control.policy.ack.v1"
    );
}
