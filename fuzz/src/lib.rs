//! Drivers shared by the fuzz targets. Each target attacks the library's one verification
//! path ([`meshbus::contract::Verifier`]) and checks invariants that must always hold.

use meshbus::contract::replay::{ReplayGuard, ReplayVerdict};
use meshbus::contract::*;
use std::sync::Arc;

/// The vectors' clock, so the seed corpus verifies.
pub const NOW: i64 = 1_790_000_000;
/// The vectors' trusted control signer.
pub const CONTROL_KEY: &str = "0d7550754e0800a5d237eef5826035766b9b3e5a15868a940ab289958788e3b0";

fn verifier() -> Verifier {
    let trust =
        TrustStore::from_keys([meshbus::contract::keys::decode_hex32(CONTROL_KEY).unwrap()]);
    Verifier::with_clock(
        VerifierConfig::default(),
        trust,
        Arc::new(FixedClock::at_secs(NOW)),
    )
}

/// Decode+verify `data` as a record of `kind`. Must never panic; an accepted message must
/// re-encode to bytes that a fresh verifier accepts as the same message.
pub fn verify_record(kind: Kind, data: &[u8]) {
    let Ok(msg) = verifier().verify(kind, data) else {
        return;
    };
    assert_eq!(msg.kind(), kind);
    let again = verifier()
        .verify(kind, &msg.encode())
        .expect("re-encoded accepted message verifies");
    assert_eq!(again, msg);
}

/// Canonical control encoding: decode, re-encode, decode again; the two encodings and the two
/// messages agree, and the sign bytes are the domain plus the cleared canonical encoding.
pub fn canonical_control(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let controls: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| k.spec().family == meshbus::contract::Family::Control)
        .collect();
    let kind = controls[sel as usize % controls.len()];
    let Ok(m) = Message::decode(kind, rest) else {
        return;
    };
    let enc = m.encode();
    let m2 = Message::decode(kind, &enc).expect("canonical encoding decodes");
    assert_eq!(m2, m);
    assert_eq!(m2.encode(), enc, "re-encoding is stable");
    let domain = kind.spec().domain;
    let sb = m
        .sign_bytes(&SigningDomains::default())
        .expect("a control kind has sign bytes");
    assert!(sb.starts_with(domain));
    assert_eq!(&sb[domain.len()..], m.unsigned().encode().as_slice());
}

/// One step of the replay-guard model.
#[derive(Debug, arbitrary::Arbitrary)]
pub struct ReplayOp {
    producer: u8,
    nonce: u8,
    ts_offset: i16,
    advance: u8,
    /// False: the record's handling stopped before it finished (the reservation is dropped).
    handled: bool,
}

/// Drives a small [`ReplayGuard`] (8 exact entries, 3 per producer, so almost everything
/// overflows) and a [`nonce::NonceGenerator`] with arbitrary operations against a model: a repeat
/// inside the window is never fresh; a message never accepted before (an honest one, or one whose
/// handling stopped unconfirmed) is always fresh, however much was evicted; nonces ascend.
pub fn nonce_replay(ops: Vec<ReplayOp>, clock_steps: Vec<i16>) {
    const WINDOW: i64 = 600;
    let limits = ReplayLimits {
        total: 8,
        per_producer: 3,
        // 2^22 bits for at most 512 entries: a false positive is about 1e-19 per check.
        overflow_bits_log2: 22,
    };
    let guard = std::sync::Arc::new(ReplayGuard::new(WINDOW, limits));
    let mut now = NOW;
    const SKEW: i64 = WINDOW / 2;
    // (producer, nonce) -> signed ts: a replay carries the same signed ts.
    let mut accepted: std::collections::HashMap<(u8, u8), i64> = Default::default();
    for (offset, op) in ops.iter().take(512).enumerate() {
        // Every operation is a record at a new offset: a repeat is a replay, never a redelivery.
        let place = Place::new("ai.anomalies.v1", 0, offset as i64);
        now += i64::from(op.advance);
        let key = (op.producer, op.nonce);
        let ts = match accepted.get(&key) {
            Some(&ts) => ts,
            None => now + i64::from(op.ts_offset) % (SKEW + 1),
        };
        if (ts - now).abs() > SKEW {
            continue; // the verifier refuses it as timestamp_skew before the guard
        }
        let verdict = match guard.reserve(&[op.producer; 32], &[op.nonce; 16], now, Some(place)) {
            Ok(r) if op.handled => {
                r.confirm();
                ReplayVerdict::Fresh
            }
            Ok(_dropped) => ReplayVerdict::InFlight,
            Err(v) => v,
        };
        match accepted.get(&key) {
            Some(_) => assert!(
                matches!(verdict, ReplayVerdict::Replayed),
                "replay within skew not refused: {verdict:?}"
            ),
            None if op.handled => {
                assert_eq!(
                    verdict,
                    ReplayVerdict::Fresh,
                    "an honest fresh message refused"
                );
                accepted.insert(key, ts);
            }
            None => {}
        }
        assert!(guard.len() <= 8, "guard exceeded its capacity");
    }
    let gen = meshbus::contract::nonce::NonceGenerator::new(42);
    let mut t: i64 = 1_700_000_000_000;
    let mut last: Option<[u8; 16]> = None;
    for step in clock_steps.iter().take(4096) {
        t = t.saturating_add(i64::from(*step));
        let n = gen.next_at(t);
        if let Some(prev) = last {
            assert!(n > prev, "nonces must ascend");
        }
        last = Some(n);
    }
}

/// DLQ records read back by `meshbus dlq`, and proto3 JSON read by `meshbus sign/produce`:
/// never panic; what parses round-trips.
pub fn dead_letter_and_json(
    headers: Vec<(String, Vec<u8>)>,
    value: Option<Vec<u8>>,
    kind_index: u8,
    json: &str,
) {
    let headers: std::collections::BTreeMap<String, Vec<u8>> = headers.into_iter().collect();
    if let Ok(d) = meshbus::dlq::DeadLetter::from_record(None, value.clone(), &headers) {
        let again = meshbus::dlq::DeadLetter::from_record(None, value, &d.headers()).unwrap();
        assert_eq!(again.original_headers, d.original_headers);
        assert_eq!(again.reason, d.reason);
        assert_eq!(again.original_offset, d.original_offset);
        assert_eq!(again.omitted, d.omitted);
    }
    let kind = Kind::ALL[kind_index as usize % Kind::ALL.len()];
    if let Ok(m) = meshbus::contract::json::from_json(kind, json) {
        let text = meshbus::contract::json::to_json(&m).to_string();
        assert_eq!(meshbus::contract::json::from_json(kind, &text).unwrap(), m);
    }
}

/// Record batches as meshbus receives them in a fetch (every codec): a valid batch of the
/// fuzzer's records, optionally damaged by byte flips, or raw bytes. Decoding never panics or
/// allocates past the cap; an undamaged batch decodes to exactly its records; every decoded
/// record then goes through the consumer's next steps (the verifier, the DLQ header reader).
pub fn record_batch(
    codec: u8,
    records: Vec<meshbus::kafka::fuzzing::FuzzRecord>,
    flips: Vec<(u16, u8)>,
    raw: Option<Vec<u8>>,
) {
    use meshbus::kafka::fuzzing::{decode_batches, encode_batch};
    let records: Vec<_> = records.into_iter().take(64).collect();
    let pristine = raw.is_none() && flips.iter().all(|(_, x)| *x == 0);
    let mut bytes = raw.unwrap_or_else(|| encode_batch(codec, &records));
    let n = bytes.len();
    if n > 0 {
        for (pos, x) in flips {
            bytes[pos as usize % n] ^= x;
        }
    }
    match decode_batches(&bytes) {
        Ok(out) => {
            if pristine {
                assert_eq!(
                    out.len(),
                    records.len(),
                    "records lost in a {} batch",
                    meshbus::kafka::fuzzing::codec(codec)
                );
                for (got, (k, v, h)) in out.iter().zip(&records) {
                    assert_eq!(&got.key, k);
                    assert_eq!(got.value.as_deref(), v.as_deref());
                    assert_eq!(
                        got.headers.len(),
                        h.iter()
                            .map(|(k, _)| k)
                            .collect::<std::collections::BTreeSet<_>>()
                            .len()
                    );
                }
            }
            let v = verifier();
            for r in out {
                let value = r.value.clone().unwrap_or_default();
                let _ = v.verify_record(Kind::Anomaly, &value, &r.headers);
                let _ = meshbus::dlq::DeadLetter::from_record(r.key, r.value.map(Vec::from), &r.headers);
            }
        }
        Err(e) => assert!(
            !pristine,
            "a {} batch meshbus encoded did not decode: {e}",
            meshbus::kafka::fuzzing::codec(codec)
        ),
    }
}

/// Every variable the configuration reads, for [`env_config`] to pick from.
pub const ENV_VARS: [&str; 43] = [
    "ENVIRONMENT",
    "KAFKA_BROKERS",
    "KAFKA_CONSUMER_GROUP",
    "NODE_ID",
    "KAFKA_TLS_ENABLED",
    "KAFKA_CA_CERT",
    "KAFKA_CLIENT_CERT",
    "KAFKA_CLIENT_KEY",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_REQUEST_TIMEOUT_MS",
    "KAFKA_DELIVERY_TIMEOUT_MS",
    "KAFKA_BREAKER_FAILURES",
    "KAFKA_BREAKER_OPEN_MS",
    "KAFKA_BREAKER_SUCCESSES",
    "KAFKA_REPLAY_WARMUP_MAX_RECORDS",
    "KAFKA_REPLAY_WARMUP_MAX_MS",
    "KAFKA_REPLAY_WARMUP_THREADS",
    "KAFKA_TOPIC_ANOMALY",
    "KAFKA_TOPIC_EVIDENCE",
    "KAFKA_TOPIC_POLICY",
    "KAFKA_TOPIC_COMMITS",
    "KAFKA_TOPIC_POLICY_UPDATES",
    "KAFKA_TOPIC_POLICY_ACK",
    "KAFKA_DLQ_TOPIC",
    "KAFKA_PRODUCER_IDEMPOTENT",
    "KAFKA_PRODUCER_COMPRESSION",
    "KAFKA_RETRY_BACKOFF_MS",
    "KAFKA_MAX_RETRIES",
    "KAFKA_CONSUMER_RETRY_MAX",
    "KAFKA_PRODUCER_MAX_RECORDS_PER_SEC",
    "KAFKA_PRODUCER_MAX_BYTES_PER_SEC",
    "MESHBUS_SHUTDOWN_TIMEOUT_MS",
    "KAFKA_GROUP_INSTANCE_ID",
    "KAFKA_GROUP_PROTOCOL",
    "CONTROL_SIGNING_DOMAIN",
    "CONTROL_POLICY_SIGNING_DOMAIN",
    "CONTROL_REPUTATION_SIGNING_DOMAIN",
    "CONTROL_EVIDENCE_SIGNING_DOMAIN",
    "KAFKA_MAX_TIMESTAMP_SKEW",
    "CONTROL_TIMESTAMP_SKEW",
    "AI_POLICY_ALLOWED_PUBKEYS",
];

/// The environment configuration from arbitrary variables: never panics; an error names one
/// of the variables read; an accepted configuration validates again and never shows the SASL
/// password in its `Debug` output or its verifier settings.
pub fn env_config(vars: Vec<(u8, String)>) {
    let env: std::collections::BTreeMap<&str, String> = vars
        .into_iter()
        .take(64)
        .map(|(i, v)| (ENV_VARS[i as usize % ENV_VARS.len()], v))
        .collect();
    match meshbus::config::Config::from_lookup(|k| env.get(k).cloned()) {
        Ok(c) => {
            c.validate().expect("an accepted configuration validates");
            // The Debug output must not depend on the password: the same environment with
            // another password of the same length prints the same. (Searching the output for
            // the password text gave false alarms: `\0` escapes of other values can spell it.)
            if let Some(password) = env.get("KAFKA_SASL_PASSWORD") {
                let other: String = password
                    .chars()
                    .map(|ch| if ch == 'q' { 'z' } else { 'q' })
                    .collect();
                let mut env2 = env.clone();
                env2.insert("KAFKA_SASL_PASSWORD", other);
                if let Ok(c2) = meshbus::config::Config::from_lookup(|k| env2.get(k).cloned()) {
                    assert_eq!(
                        format!("{c:?}"),
                        format!("{c2:?}"),
                        "the password shows in Debug output"
                    );
                }
            }
            let _ = c.verifier_config();
        }
        Err(e) => assert!(
            ENV_VARS.contains(&e.var) || e.var == "kafka client",
            "error names an unknown variable: {}",
            e.var
        ),
    }
}

/// Trust material: a `validator_registry.json`, a public key text and private key bytes.
/// Parsers never panic; a public key accepted for a trust store or an allowlist is never
/// small-order; a parsed private key round-trips through its PEM.
pub fn trust_material(registry: &str, public: &str, private: &[u8]) {
    let dir = std::path::Path::new("/nonexistent-meshbus-fuzz");
    if let Ok(store) = TrustStore::from_registry_json(registry, dir) {
        for k in store.keys() {
            let vk = ed25519_dalek::VerifyingKey::from_bytes(k).expect("a stored key is a point");
            assert!(!vk.is_weak(), "a weak key entered the trust store");
        }
    }
    if let Ok(raw) = keys::parse_public_key_bytes(public) {
        if let Ok(k) = keys::check_trusted_key(raw) {
            assert!(!ed25519_dalek::VerifyingKey::from_bytes(&k)
                .unwrap()
                .is_weak());
        }
    }
    let _ = keys::parse_public_key(public);
    if let Ok(sk) = keys::parse_signing_key(private) {
        let pem = keys::private_key_pem(&sk).expect("a key encodes");
        let again = keys::parse_signing_key(pem.as_bytes()).expect("its PEM parses");
        assert_eq!(again.to_bytes(), sk.to_bytes());
    }
    let items = [public.to_string()];
    if let Ok(store) = TrustStore::load(&items) {
        assert!(store.len() <= 1);
    }
    // The policy allowlist (AI_POLICY_ALLOWED_PUBKEYS and its file): no weak key gets in.
    if let Ok(list) = meshbus::contract::parse_allowlist(public, "fuzz") {
        for k in list {
            let vk =
                ed25519_dalek::VerifyingKey::from_bytes(&k).expect("an allowed key is a point");
            assert!(!vk.is_weak(), "a weak key entered the allowlist");
        }
    }
}

/// SPEC 4 step 8 against two oracles. The input drives a generator of deep and wide JSON
/// (runs of up to 12,050 nested containers, runs of thousands of elements, the numbers and
/// keys step 8 compares, escapes, then byte-level damage); the check runs on a 64 KiB stack,
/// which a recursive scanner would overflow. Where serde_json can decide (nothing nested 128
/// deep, valid UTF-8, no lone surrogate escape: the two places Go's scanner is more lenient),
/// acceptance must be serde_json's, as step 8 decided before it followed Go. A document built
/// well-formed and left undamaged must be refused as not JSON exactly when it nests deeper
/// than 10,000 levels or holds a number out of a float's range.
pub fn payload_json(data: &[u8]) {
    let mut input = data.iter().copied();
    let severity = u32::from(input.next().unwrap_or(7) % 11);
    let confidence =
        [0.9, 0.5, 0.0, 1.0, 0.9000001, f64::NAN][usize::from(input.next().unwrap_or(0)) % 6];
    let doc = JsonGen::run(&mut input);
    let ours = check_on_small_stack(doc.bytes.clone(), severity, confidence);
    let decidable = std::str::from_utf8(&doc.bytes).is_ok() && !has_surrogate_escape(&doc.bytes);
    if let (true, Some(reference)) = (
        decidable,
        serde_payload_metadata(&doc.bytes, severity, confidence),
    ) {
        assert_eq!(
            ours.is_ok(),
            reference.is_ok(),
            "step 8 {ours:?}, serde_json {reference:?}, on {}",
            String::from_utf8_lossy(&doc.bytes)
        );
    }
    if doc.well_formed {
        let not_json = ours
            .as_ref()
            .err()
            .is_some_and(|e| e.detail.starts_with("payload is not JSON"));
        assert_eq!(
            not_json,
            doc.depth > 10_000 || doc.huge,
            "{ours:?}, depth {}",
            doc.depth
        );
        if doc.depth > 10_000 && !doc.huge {
            assert!(ours
                .unwrap_err()
                .detail
                .contains("nested deeper than 10000"));
        }
    }
}

type Step8 = Result<(), meshbus::contract::VerifyError>;

/// The thread that runs step 8 with a 64 KiB stack, and the way to it and back.
struct SmallStack {
    jobs: std::sync::mpsc::Sender<(Vec<u8>, u32, f64)>,
    results: std::sync::mpsc::Receiver<Step8>,
}

/// Runs step 8 on one long-lived thread with a 64 KiB stack (one thread for the whole run:
/// a thread per input would cost more than the check).
fn check_on_small_stack(payload: Vec<u8>, severity: u32, confidence: f64) -> Step8 {
    static WORKER: std::sync::OnceLock<std::sync::Mutex<SmallStack>> = std::sync::OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (jobs, job) = std::sync::mpsc::channel::<(Vec<u8>, u32, f64)>();
        let (result, results) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                for (payload, severity, confidence) in job {
                    let r = meshbus::contract::fuzzing::check_payload_metadata(
                        &payload, severity, confidence,
                    );
                    if result.send(r).is_err() {
                        return;
                    }
                }
            })
            .expect("thread");
        std::sync::Mutex::new(SmallStack { jobs, results })
    });
    let worker = worker.lock().unwrap_or_else(|p| p.into_inner());
    worker
        .jobs
        .send((payload, severity, confidence))
        .expect("the worker runs");
    worker.results.recv().expect("step 8 does not panic")
}

/// Step 8 as it was before it followed Go: serde_json's `Value`, then the same number rules.
/// `None` where serde_json cannot decide (its recursion limit).
fn serde_payload_metadata(
    payload: &[u8],
    severity: u32,
    confidence: f64,
) -> Option<Result<(), String>> {
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) if e.to_string().contains("recursion limit exceeded") => return None,
        Err(e) => return Some(Err(format!("not JSON: {e}"))),
    };
    let serde_json::Value::Object(meta) = value else {
        return Some(Err("not an object".into()));
    };
    let number = |k: &str| match meta.get(k) {
        Some(serde_json::Value::Number(n)) => Some(n.clone()),
        _ => None,
    };
    let Some(sev) = number("severity") else {
        return Some(Err("no severity".into()));
    };
    let sev_ok = match (sev.as_u64(), sev.as_i64(), sev.as_f64()) {
        (Some(u), _, _) => u == u64::from(severity),
        (None, Some(_), _) => false,
        (None, None, Some(f)) => f.fract() == 0.0 && f == f64::from(severity),
        _ => false,
    };
    let conf = number("confidence").and_then(|c| c.as_f64());
    let conf_ok = conf.is_some_and(|c| (c - confidence).abs() <= 1e-6);
    Some(if sev_ok && conf_ok {
        Ok(())
    } else {
        Err("metadata differs".into())
    })
}

/// Whether `doc` may hold a `\uD800`-`\uDFFF` escape (serde_json refuses a lone one, Go not).
fn has_surrogate_escape(doc: &[u8]) -> bool {
    doc.windows(4).any(|w| {
        w[0] == b'\\'
            && w[1] == b'u'
            && matches!(w[2], b'd' | b'D')
            && matches!(w[3], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
    })
}

/// A JSON document built from fuzz input.
struct JsonGen {
    bytes: Vec<u8>,
    /// Open containers: the closer, and whether an element was written.
    open: Vec<(u8, bool)>,
    /// The deepest nesting reached.
    depth: usize,
    /// Built by the grammar, not damaged afterwards.
    well_formed: bool,
    /// Holds a number out of a 64-bit float's range.
    huge: bool,
    /// The top-level value is written.
    done: bool,
}

/// Keys, as they appear on the wire (escapes included).
const KEYS: [&str; 9] = [
    "severity",
    "confidence",
    "x",
    "sev\\u0065rity",
    "Severity",
    "conf\\u0069dence",
    "",
    "\\u00e9",
    "severity ",
];

/// Values: (token, out of a float's range). Invalid UTF-8 and a lone surrogate included.
const VALUES: [(&[u8], bool); 29] = [
    (b"7", false),
    (b"7.0", false),
    (b"7e0", false),
    (b"0.7e1", false),
    (b"-7", false),
    (b"3", false),
    (b"0.9", false),
    (b"9e-1", false),
    (b"0.9000001", false),
    (b"0.5", false),
    (b"1", false),
    (b"0", false),
    (b"-0", false),
    (b"1e400", true),
    (b"-1e400", true),
    (b"1e-400", false),
    (b"18446744073709551623", false),
    (b"\"7\"", false),
    (b"\"s\\\"q\\\\\"", false),
    (b"\"\\u0041\\n\"", false),
    (b"true", false),
    (b"false", false),
    (b"null", false),
    (b"{}", false),
    (b"[]", false),
    (b"\"\\ud800\"", false),
    (b"\"\xff\xe9\"", false),
    (b"\"\xc3\xa9\"", false),
    (b"1.5E+3", false),
];

impl JsonGen {
    fn run(input: &mut impl Iterator<Item = u8>) -> JsonGen {
        let mut g = JsonGen {
            bytes: Vec::new(),
            open: Vec::new(),
            depth: 0,
            well_formed: true,
            huge: false,
            done: false,
        };
        match input.next().unwrap_or(1) % 8 {
            0 => g.value(input.next().unwrap_or(0)),
            7 => g.open_container(b'['),
            _ => g.open_container(b'{'),
        }
        while let Some(op) = input.next() {
            let arg = input.next().unwrap_or(0);
            match op % 16 {
                0..=4 => g.value(arg),
                5 => g.open_container(b'{'),
                6 => g.open_container(b'['),
                7 | 8 => g.close(),
                9 => {
                    let n =
                        usize::from(u16::from_le_bytes([arg, input.next().unwrap_or(0)])) % 12_050;
                    let pattern = input.next().unwrap_or(0);
                    for i in 0..n {
                        let object = pattern >> (i % 8) & 1 == 1;
                        g.open_container(if object { b'{' } else { b'[' });
                    }
                }
                10 => {
                    for i in 0..usize::from(arg) * 32 {
                        g.value(i as u8);
                    }
                }
                11 => g
                    .bytes
                    .extend_from_slice(&b" \t\r\n"[..usize::from(arg % 4) + 1]),
                12 => {
                    g.bytes.push(arg);
                    g.well_formed = false;
                }
                13 => {
                    g.bytes.pop();
                    g.well_formed = false;
                }
                14 if !g.bytes.is_empty() => {
                    let at = usize::from(arg) % g.bytes.len();
                    g.bytes[at] = input.next().unwrap_or(b'"');
                    g.well_formed = false;
                }
                _ => g.value(arg.wrapping_mul(7)),
            }
        }
        while !g.open.is_empty() {
            g.close();
        }
        g
    }

    /// Starts an element of the innermost container (a comma, an object's key); false at the
    /// top level once its value is written.
    fn begin(&mut self, pick: u8) -> bool {
        match self.open.last_mut() {
            None if self.done => return false,
            None => self.done = true,
            Some((closer, any)) => {
                let (closer, any) = (*closer, std::mem::replace(any, true));
                if any {
                    self.bytes.push(b',');
                }
                if closer == b'}' {
                    let key = KEYS[usize::from(pick) % KEYS.len()];
                    self.bytes.push(b'"');
                    self.bytes.extend_from_slice(key.as_bytes());
                    self.bytes.extend_from_slice(b"\":");
                }
            }
        }
        true
    }

    fn value(&mut self, pick: u8) {
        if self.begin(pick) {
            let (token, huge) = VALUES[usize::from(pick / 2) % VALUES.len()];
            self.bytes.extend_from_slice(token);
            self.huge |= huge;
            let container = token == b"{}" || token == b"[]";
            self.depth = self.depth.max(self.open.len() + usize::from(container));
        }
    }

    fn open_container(&mut self, opener: u8) {
        if self.begin(self.open.len() as u8) {
            self.bytes.push(opener);
            self.open
                .push((if opener == b'{' { b'}' } else { b']' }, false));
            self.depth = self.depth.max(self.open.len());
        }
    }

    fn close(&mut self) {
        if let Some((closer, _)) = self.open.pop() {
            self.bytes.push(closer);
        }
    }
}
