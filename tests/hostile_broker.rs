//! A hostile broker: a small TCP server in the test suite (`common/fake_broker.rs`) that
//! speaks just enough of the Kafka protocol (non-flexible versions) to lead meshbus into each
//! trap, then answers with a crafted reply: arrays declared 2^31 long in ApiVersions, Metadata
//! and Produce replies, a gzip bomb and a snappy bomb in a fetch, a topic with zero partitions, SCRAM challenges with
//! 1 and 2^31 iterations, and a reply that never comes. meshbus must return a typed error each
//! time, quickly, without aborting, and the process's peak memory must stay under a bound.

mod common;
use common::fake_broker::{
    api_versions, s, serve, standard, Reply, API_VERSIONS, SASL_AUTHENTICATE, SASL_HANDSHAKE,
};
use meshbus::config::{Config, SaslMechanism};
use meshbus::kafka::{Client, KafkaError};
use meshbus::metrics::Metrics;
use meshbus::producer::{Producer, SendError};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(3);
/// Peak resident memory allowed for this whole test binary.
const PEAK_RSS_BOUND_MIB: u64 = 400;
const HUGE: i32 = i32::MAX;

// ---- encoders of the traps (non-flexible versions) ---------------------------------------

/// A v2 record batch claiming `records` records, compressed with `codec` (1 gzip, 2 snappy)
/// over `payload` (already compressed), with a valid CRC so decompression is reached.
fn batch(codec: i16, records: i32, payload: &[u8]) -> Vec<u8> {
    let mut after_crc = Vec::new();
    after_crc.extend(codec.to_be_bytes()); // attributes
    after_crc.extend((records - 1).to_be_bytes()); // last offset delta
    after_crc.extend(0i64.to_be_bytes());
    after_crc.extend(0i64.to_be_bytes());
    after_crc.extend((-1i64).to_be_bytes()); // producer id
    after_crc.extend((-1i16).to_be_bytes());
    after_crc.extend((-1i32).to_be_bytes());
    after_crc.extend(records.to_be_bytes());
    after_crc.extend(payload);
    let mut b = Vec::new();
    b.extend(0i64.to_be_bytes()); // base offset
    b.extend(((4 + 1 + 4 + after_crc.len()) as i32).to_be_bytes()); // batch length
    b.extend(0i32.to_be_bytes()); // leader epoch
    b.push(2); // magic
    b.extend(crc32c::crc32c(&after_crc).to_be_bytes());
    b.extend(after_crc);
    b
}

/// Fetch v4 answer for topic `t`, partition 0, carrying `records`.
fn fetch(t: &str, records: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(0i32.to_be_bytes()); // throttle
    b.extend(1i32.to_be_bytes());
    s(&mut b, t);
    b.extend(1i32.to_be_bytes());
    b.extend(0i32.to_be_bytes()); // partition
    b.extend(0i16.to_be_bytes()); // error
    b.extend(1_000_000i64.to_be_bytes()); // high watermark
    b.extend(1_000_000i64.to_be_bytes()); // last stable offset
    b.extend(0i32.to_be_bytes()); // aborted transactions: none
    b.extend((records.len() as i32).to_be_bytes());
    b.extend(records);
    b
}

fn gzip_bomb() -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        z.write_all(&zeros).unwrap(); // 256 MiB of zeros in about 256 KiB
    }
    z.finish().unwrap()
}

fn snappy_bomb() -> Vec<u8> {
    // A raw snappy block whose preamble claims 4 GiB - 1, followed by a little data.
    let mut b = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
    b.extend(
        snap::raw::Encoder::new()
            .compress_vec(&[0u8; 4096])
            .unwrap()[2..]
            .iter(),
    );
    b
}

// ---- the traps ----------------------------------------------------------------------------

fn config(port: u16) -> Config {
    let mut c = Config::builder()
        .brokers([format!("127.0.0.1:{port}")])
        .request_timeout(TIMEOUT)
        .build()
        .unwrap();
    c.producer = {
        let mut p = c.producer;
        p.idempotent = false;
        p.max_retries = 0;
        // A hostile answer is retried within the delivery timeout like any failed attempt;
        // the traps want the typed error of one attempt, not two minutes of them.
        p.delivery_timeout = TIMEOUT + Duration::from_millis(100);
        p
    };
    c
}

/// Runs `f`, asserting it ends in a typed error within `limit`.
async fn refused<T: std::fmt::Debug, E: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> E {
    let started = Instant::now();
    let r = tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {limit:?}"));
    let e = r.expect_err(what);
    eprintln!("{what}: {e:?} after {:?}", started.elapsed());
    e
}

fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_reply_is_a_typed_error_and_memory_stays_bounded() {
    let limit = TIMEOUT * 4;

    // ApiVersions declaring 2^31 APIs.
    let port = serve(Arc::new(|req, _| {
        let mut b = 0i16.to_be_bytes().to_vec();
        b.extend(HUGE.to_be_bytes());
        let _ = req;
        Reply::Body(b)
    }))
    .await;
    refused(
        "huge ApiVersions array",
        limit,
        Client::connect(&config(port)),
    )
    .await;

    // Metadata declaring 2^31 brokers.
    let port = serve(Arc::new(|req, _| match req.api_key {
        API_VERSIONS => Reply::Body(api_versions(req)),
        _ => {
            let mut b = HUGE.to_be_bytes().to_vec();
            b.extend([0u8; 16]);
            Reply::Body(b)
        }
    }))
    .await;
    refused("huge Metadata array", limit, Client::connect(&config(port))).await;

    // A reply that never comes.
    let port = serve(Arc::new(|_, _| Reply::Silence)).await;
    let e = refused("silent broker", limit, Client::connect(&config(port))).await;
    assert!(e.is_retriable(), "{e:?}");

    // A topic with zero partitions, and a Produce answer declaring 2^31 topics.
    let port = serve(Arc::new(|req, port| {
        standard(req, port, &[("empty", 0), ("t", 1)]).unwrap_or_else(|| {
            let mut b = HUGE.to_be_bytes().to_vec();
            b.extend([0u8; 16]);
            Reply::Body(b)
        })
    }))
    .await;
    let c = config(port);
    let client = Client::connect(&c).await.expect("metadata is sane here");
    let p = Producer::new(client, c, None, Metrics::new());
    let e = refused(
        "topic with zero partitions",
        limit,
        p.send_raw("empty", None, b"x".to_vec(), BTreeMap::new()),
    )
    .await;
    assert!(matches!(e, SendError::Transport { .. }), "{e:?}");
    let e = refused(
        "huge Produce answer",
        limit,
        p.send_raw("t", None, b"x".to_vec(), BTreeMap::new()),
    )
    .await;
    assert!(matches!(e, SendError::Transport { .. }), "{e:?}");

    // Fetches carrying a gzip bomb (256 MiB of zeros) and a snappy bomb (a 4 GiB claim).
    for (name, codec, payload) in [("gzip", 1i16, gzip_bomb()), ("snappy", 2, snappy_bomb())] {
        let records = Arc::new(batch(codec, 1000, &payload));
        let port = serve(Arc::new(move |req, port| {
            standard(req, port, &[("bomb", 1)])
                .unwrap_or_else(|| Reply::Body(fetch("bomb", &records)))
        }))
        .await;
        let client = Client::connect(&config(port)).await.unwrap();
        let reader = client.reader().await.unwrap();
        let e = refused(
            &format!("{name} bomb in a fetch"),
            limit * 2,
            reader.scan("bomb", 0, 0, 10, |r| {
                panic!("a record came out of a bomb: {r:?}")
            }),
        )
        .await;
        // The bomb is a typed, undecodable batch (the consumer dead-letters its place and
        // moves past it), stopped at the 16 MiB cap.
        match &e {
            KafkaError::UndecodableBatch {
                topic,
                offset,
                detail,
                ..
            } => {
                assert_eq!((topic.as_str(), *offset), ("bomb", 0));
                assert!(detail.contains("exceeds maximum"), "{detail}");
            }
            other => assert!(
                matches!(
                    other,
                    KafkaError::Timeout { .. } | KafkaError::Broker { .. }
                ),
                "{other:?}"
            ),
        }
        reader.close().await;
    }

    // SCRAM challenges with 1 and with 2^31 iterations.
    for iterations in ["1", "2147483648"] {
        let port = serve(Arc::new(move |req, _| match req.api_key {
            API_VERSIONS => Reply::Body(api_versions(req)),
            SASL_HANDSHAKE => {
                let mut b = 0i16.to_be_bytes().to_vec();
                b.extend(1i32.to_be_bytes());
                s(&mut b, "SCRAM-SHA-512");
                Reply::Body(b)
            }
            SASL_AUTHENTICATE => {
                // client-first: "n,,n=user,r=NONCE"; answer with the hostile iteration count.
                let text =
                    String::from_utf8_lossy(req.body.get(4..).unwrap_or_default()).to_string();
                let nonce = text.split("r=").nth(1).unwrap_or("x").to_string();
                let first = format!("r={nonce}srv,s=c2FsdHNhbHQ=,i={iterations}");
                let mut b = 0i16.to_be_bytes().to_vec();
                b.extend((-1i16).to_be_bytes()); // no error message
                b.extend((first.len() as i32).to_be_bytes());
                b.extend(first.as_bytes());
                b.extend(0i64.to_be_bytes()); // session lifetime
                Reply::Body(b)
            }
            _ => Reply::Silence,
        }))
        .await;
        let mut c = config(port);
        c.sasl = Some(meshbus::config::Sasl {
            mechanism: SaslMechanism::ScramSha512,
            username: "alice".into(),
            password: meshbus::config::Secret::new("s3cret"),
        });
        let e = refused(
            &format!("SCRAM with i={iterations}"),
            limit,
            Client::connect(&c),
        )
        .await;
        assert!(matches!(e, KafkaError::Auth(_)), "{e:?}");
    }

    let peak = peak_rss_mib();
    eprintln!("peak RSS of the test process: {peak} MiB (bound {PEAK_RSS_BOUND_MIB} MiB)");
    assert!(peak < PEAK_RSS_BOUND_MIB, "peak RSS {peak} MiB");
}
