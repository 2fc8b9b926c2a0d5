//! Sign and verify throughput per message kind at 1 KiB and 64 KiB, beside a bare
//! ed25519-dalek verify + sha2 baseline measured in the same run. The verify/baseline ratio is
//! the overhead meshbus adds (decode, structure checks, JSON metadata, replay guard).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _};
use meshbus::contract::{
    AnomalyEvent, FixedClock, Kind, Signer, TrustStore, Verifier, VerifierConfig,
};
use prost::Message as _;
#[path = "../src/cli/sample.rs"]
mod sample;
use sha2::{Digest, Sha256};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NOW: i64 = 1_790_000_000;
const SIZES: [(usize, &str); 2] = [(1024, "1KiB"), (64 * 1024, "64KiB")];

fn signer() -> Signer {
    Signer::with_clock(
        SigningKey::from_bytes(&[1; 32]),
        1,
        Default::default(),
        Arc::new(FixedClock::at_secs(NOW)),
    )
}

fn verifier(s: &Signer) -> Verifier {
    Verifier::with_clock(
        VerifierConfig::default(),
        TrustStore::from_keys([s.public_key()]),
        Arc::new(FixedClock::at_secs(NOW)),
    )
}

/// What the bare crypto checks of one record: its payload, content hash, signed bytes and
/// signature.
type BareRecord = (bytes::Bytes, bytes::Bytes, Vec<u8>, Signature);

/// A signed, encoded sample of `kind` (what a producer does per record).
fn make(s: &Signer, kind: Kind, n: u64, size: usize) -> Vec<u8> {
    s.sign_message(sample::message(kind, n, size)).encode()
}

fn bench(c: &mut Criterion) {
    let s = signer();
    for (size, label) in SIZES {
        let mut g = c.benchmark_group(format!("contract/{label}"));
        g.throughput(Throughput::Elements(1));
        g.measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1))
            .sample_size(20);

        // Baseline: what the crypto alone costs for the same AI records the verifier reads
        // below (each its own payload, hash and signature, so both read the same memory),
        // with decoding and the signed bytes prepared outside the loop.
        let key = SigningKey::from_bytes(&[1; 32]);
        let vk = key.verifying_key();
        let n = if size > 4096 { 64 } else { 1000 };
        let bare: Vec<BareRecord> = (0..n)
            .map(|i| {
                let record = make(&s, Kind::Anomaly, i, size);
                let m = AnomalyEvent::decode(record.as_slice()).unwrap();
                let sign_bytes = meshbus::contract::ai_message_sign_bytes(&m);
                let sig = Signature::from_slice(&m.signature).unwrap();
                (m.payload, m.content_hash, sign_bytes, sig)
            })
            .collect();
        g.bench_function("baseline_sha256_ed25519_verify", |b| {
            let mut i = 0;
            b.iter(|| {
                let (payload, hash, sign_bytes, sig) = &bare[i % bare.len()];
                i += 1;
                let h = Sha256::digest(black_box(payload));
                assert_eq!(h.as_slice(), &hash[..]);
                vk.verify(black_box(sign_bytes), sig).unwrap();
            })
        });
        let content = vec![0x5a; size];
        g.bench_function("baseline_sha256_ed25519_sign", |b| {
            b.iter(|| {
                let h: [u8; 32] = Sha256::digest(black_box(&content)).into();
                black_box(key.sign(&meshbus::contract::ai_sign_bytes(
                    Kind::Anomaly,
                    NOW,
                    &vk.to_bytes(),
                    &[0; 16],
                    &h,
                )))
            })
        });

        for kind in Kind::ALL.into_iter().filter(|k| *k != Kind::PolicyAck) {
            // Shared bytes, as a consumer's fetched records are: verified without a copy.
            let pool: Vec<bytes::Bytes> = (0..n).map(|i| make(&s, kind, i, size).into()).collect();
            g.bench_function(format!("verify/{kind}"), |b| {
                b.iter_custom(|iters| {
                    let mut v = verifier(&s);
                    let start = Instant::now();
                    for i in 0..iters {
                        let idx = (i % n) as usize;
                        if idx == 0 && i > 0 {
                            v = verifier(&s); // fresh replay guard: every pool record is new again
                        }
                        black_box(v.verify(kind, &pool[idx]).unwrap());
                    }
                    start.elapsed()
                })
            });
            let template = sample::message(kind, 1, size);
            g.bench_function(format!("sign/{kind}"), |b| {
                b.iter(|| black_box(s.sign_message(template.clone()).encode()))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
