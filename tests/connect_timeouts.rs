//! A timeout is typed as a timeout whichever step of talking to Kafka ran out of time: a TCP
//! connect that never completes, a TLS handshake the peer never answers, a SASL handshake
//! never answered (over plain TCP and after a completed TLS handshake), and a request on an
//! established connection never answered. Each must end in `KafkaError::Timeout`, matched as
//! a variant, never read from message text: on a busy machine the TLS one used to come back
//! as a retriable `Broker` error ("could not connect to any of [...]; last error: operation
//! timed out: TLS handshake ...") that named the timeout only in prose.
//!
//! No Kafka broker is needed: the peers are small servers in the test (`common/fake_broker.rs`
//! for the Kafka protocol, a blocking rustls server for TLS). Each case also checks that the
//! client reached the step it is about (the peer saw a TLS ClientHello, a SaslHandshake, a
//! ListOffsets), so a case cannot pass by timing out one step early. Wall-clock bounds are
//! only "it returned at all" (60 s), never a speed claim a loaded machine could break.

mod common;
use common::fake_broker::{api_versions_with, serve, standard, Reply, API_VERSIONS};
use meshbus::config::{Config, SaslMechanism, Tls};
use meshbus::kafka::{Client, KafkaError};
use std::io::Read as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt as _;

/// The request timeout of every case (meshbus uses it as the connect timeout too). Generous,
/// so that the steps before the silent one complete in time even on a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a case may take to come back at all: a hang, not a slow machine, fails it.
const RETURNS_WITHIN: Duration = Duration::from_secs(60);

const SASL_HANDSHAKE: i16 = 17;
const LIST_OFFSETS: i16 = 2;
/// The first byte of a TLS handshake record (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

fn plaintext(port: u16) -> Config {
    Config::builder()
        .brokers([format!("127.0.0.1:{port}")])
        .request_timeout(TIMEOUT)
        .build()
        .unwrap()
}

fn tls(port: u16, certs: &Path) -> Config {
    let mut c = plaintext(port);
    c.tls = Some(Tls {
        ca_cert: Some(certs.join("ca.pem")),
        ..Default::default()
    });
    c
}

fn with_sasl(mut c: Config) -> Config {
    c.sasl = Some(meshbus::config::Sasl {
        mechanism: SaslMechanism::ScramSha512,
        username: "alice".into(),
        password: meshbus::config::Secret::new("s3cret"),
    });
    c
}

/// The test PKI (`certs/make-certs.sh`) in a temporary directory.
fn make_certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/make-certs.sh"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make-certs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Runs `f`, which must come back (within [`RETURNS_WITHIN`]) with an error.
async fn fails<T: std::fmt::Debug>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, KafkaError>>,
) -> KafkaError {
    let started = Instant::now();
    let e = tokio::time::timeout(RETURNS_WITHIN, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {RETURNS_WITHIN:?}"))
        .expect_err(what);
    eprintln!("{what}: {e:?} after {:?}", started.elapsed());
    e
}

fn assert_timeout(what: &str, e: &KafkaError) {
    assert!(matches!(e, KafkaError::Timeout { .. }), "{what}: {e:?}");
    assert!(e.is_retriable(), "{what}: {e:?}");
    assert_eq!(e.code(), "timeout", "{what}");
}

/// Waits (polling, up to [`RETURNS_WITHIN`]) until `seen` holds something; returns a copy.
async fn wait_seen<T: Clone>(what: &str, seen: &Mutex<Vec<T>>) -> Vec<T> {
    let deadline = Instant::now() + RETURNS_WITHIN;
    loop {
        let now = seen.lock().unwrap().clone();
        if !now.is_empty() {
            return now;
        }
        assert!(Instant::now() < deadline, "{what}: the peer saw nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback listener whose accept queue is full, so a TCP connect to it neither completes
/// nor fails: with a backlog of 0 one unaccepted connection fills the queue, and Linux then
/// drops every SYN (the client retransmits until it gives up). Connections are made until one
/// does not complete within 2 s, which is the condition the case needs; the listener and the
/// connections holding the queue are returned to be kept alive.
async fn full_accept_queue() -> (u16, tokio::net::TcpListener, Vec<std::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::task::spawn_blocking(move || {
        let mut held = Vec::new();
        loop {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(s) => held.push(s),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return held,
                Err(e) => panic!("filling the accept queue: {e}"),
            }
            assert!(held.len() < 64, "the accept queue of {addr} never filled");
        }
    })
    .await
    .unwrap();
    (addr.port(), listener, held)
}

/// A listener that accepts and never writes a byte; returns its port and the first byte each
/// connection sent. Connections stay open until the client closes them.
async fn silent_listener() -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let first_bytes = Arc::new(Mutex::new(Vec::new()));
    let seen = first_bytes.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if let Ok(1..) = sock.read(&mut buf).await {
                    seen.lock().unwrap().push(buf[0]);
                }
                while matches!(sock.read(&mut buf).await, Ok(1..)) {}
            });
        }
    });
    (port, first_bytes)
}

/// A TLS server with the test PKI's broker certificate that completes every handshake, then
/// reads and never answers; returns its port and the API key of the first request each
/// connection sent over TLS.
fn tls_then_silent(certs: &Path) -> (u16, Arc<Mutex<Vec<i16>>>) {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(certs.join("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(certs.join("server.key")).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let api_keys = Arc::new(Mutex::new(Vec::new()));
    let seen = api_keys.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { return };
            let (config, seen) = (config.clone(), seen.clone());
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, sock);
                // Reading drives the handshake first; then the frame's length and API key.
                let mut head = [0u8; 6];
                if tls.read_exact(&mut head).is_ok() {
                    seen.lock()
                        .unwrap()
                        .push(i16::from_be_bytes([head[4], head[5]]));
                }
                let mut sink = [0u8; 4096];
                while matches!(tls.read(&mut sink), Ok(1..)) {}
            });
        }
    });
    (port, api_keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_connect_that_never_completes_is_a_timeout() {
    let (port, _listener, _held) = full_accept_queue().await;
    let e = fails("TCP connect", Client::connect(&plaintext(port))).await;
    assert_timeout("TCP connect", &e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_never_answered_is_a_timeout() {
    let certs = make_certs();
    let (port, first_bytes) = silent_listener().await;
    let e = fails("TLS handshake", Client::connect(&tls(port, certs.path()))).await;
    assert_timeout("TLS handshake", &e);
    let seen = wait_seen("TLS handshake", &first_bytes).await;
    assert!(seen.iter().all(|b| *b == TLS_HANDSHAKE_RECORD), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sasl_handshake_never_answered_is_a_timeout() {
    let api_keys = Arc::new(Mutex::new(Vec::new()));
    let seen = api_keys.clone();
    let port = serve(Arc::new(move |req, _| {
        seen.lock().unwrap().push(req.api_key);
        Reply::Silence
    }))
    .await;
    let e = fails("SASL", Client::connect(&with_sasl(plaintext(port)))).await;
    assert_timeout("SASL", &e);
    assert_eq!(wait_seen("SASL", &api_keys).await[0], SASL_HANDSHAKE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sasl_handshake_never_answered_after_tls_is_a_timeout() {
    let certs = make_certs();
    let (port, api_keys) = tls_then_silent(certs.path());
    let config = with_sasl(tls(port, certs.path()));
    let e = fails("SASL after TLS", Client::connect(&config)).await;
    assert_timeout("SASL after TLS", &e);
    let seen = wait_seen("SASL after TLS", &api_keys).await;
    assert!(seen.iter().all(|k| *k == SASL_HANDSHAKE), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_never_answered_on_a_connection_is_a_timeout() {
    // ApiVersions and Metadata are answered (the client connects and knows partition t/0,
    // led by this server); ListOffsets never is.
    let list_offsets = Arc::new(Mutex::new(Vec::new()));
    let seen = list_offsets.clone();
    let port = serve(Arc::new(move |req, port| match req.api_key {
        API_VERSIONS => Reply::Body(api_versions_with(req, &[(LIST_OFFSETS, 1, 1)])),
        LIST_OFFSETS => {
            seen.lock().unwrap().push(req.api_key);
            Reply::Silence
        }
        _ => standard(req, port, &[("t", 1)]).unwrap_or(Reply::Silence),
    }))
    .await;
    let client = Client::connect(&plaintext(port)).await.unwrap();
    let reader = client.reader().await.unwrap();
    let e = fails("ListOffsets", reader.watermarks("t", 0)).await;
    assert_timeout("ListOffsets", &e);
    assert!(!wait_seen("ListOffsets", &list_offsets).await.is_empty());
    reader.close().await;
}
