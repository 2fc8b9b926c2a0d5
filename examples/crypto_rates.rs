//! Sign and verify costs as the shipped binary's build makes them: an example is a final crate
//! like `src/main.rs`, so built with `--release` (and, for the static binary,
//! `--target x86_64-unknown-linux-musl` with `scripts/static-build`'s flags) it is optimised
//! exactly as the binary is, where `cargo bench` uses its own profile. `scripts/static-build`
//! prints it beside the size, so a profile that shrinks the binary shows what it costs.
//!
//! Per operation, the best of several rounds (the machine may be busy): a bare SHA-256 +
//! Ed25519 signature and verification of an anomaly's payload and signed bytes, and meshbus's
//! `Signer::sign_ai` and SPEC 4 `Verifier::verify` of the same records, at 1 KiB and 64 KiB.
//!
//! `cargo run --release --example crypto_rates [ROUNDS]`

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _};
use meshbus::contract::{AnomalyEvent, FixedClock, Kind, Signer, TrustStore, Verifier};
use prost::Message as _;
use sha2::{Digest, Sha256};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

#[path = "../src/cli/sample.rs"]
mod sample;

const NOW: i64 = 1_790_000_000;

/// The best time per operation of `rounds` rounds of `ops` calls of `f`, in microseconds.
fn best_us(rounds: usize, ops: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let t0 = Instant::now();
        for i in 0..ops {
            f(i);
        }
        best = best.min(t0.elapsed().as_secs_f64() * 1e6 / ops as f64);
    }
    best
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(7);
    let key = SigningKey::from_bytes(&[1; 32]);
    let vk = key.verifying_key();
    let clock = Arc::new(FixedClock::at_secs(NOW));
    let signer = Signer::with_clock(key.clone(), 1, Default::default(), clock.clone());
    println!("| size | bare sign | meshbus sign | bare verify | meshbus verify | verify ratio |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (size, label, ops) in [(1024, "1 KiB", 2000), (64 * 1024, "64 KiB", 200)] {
        // Shared bytes, as a consumer's fetched records are: verified without a copy.
        let records: Vec<bytes::Bytes> = (0..ops)
            .map(|i| {
                signer
                    .sign_ai(sample::anomaly(i as u64, size))
                    .encode_to_vec()
                    .into()
            })
            .collect();
        let decoded: Vec<AnomalyEvent> = records
            .iter()
            .map(|r| AnomalyEvent::decode(&r[..]).unwrap())
            .collect();
        let bare: Vec<(Vec<u8>, Signature)> = decoded
            .iter()
            .map(|m| {
                let bytes = meshbus::contract::ai_message_sign_bytes(m);
                (bytes, Signature::from_slice(&m.signature).unwrap())
            })
            .collect();
        let anomalies: Vec<AnomalyEvent> =
            (0..ops).map(|i| sample::anomaly(i as u64, size)).collect();

        let bare_sign = best_us(rounds, ops, |i| {
            let m = &decoded[i];
            let hash: [u8; 32] = Sha256::digest(black_box(&m.payload)).into();
            let bytes = meshbus::contract::ai_sign_bytes(
                Kind::Anomaly,
                m.ts,
                &m.producer_id,
                &m.nonce,
                &hash,
            );
            black_box(key.sign(&bytes));
        });
        let meshbus_sign = best_us(rounds, ops, |i| {
            black_box(signer.sign_ai(anomalies[i].clone()));
        });
        let bare_verify = best_us(rounds, ops, |i| {
            let (bytes, sig) = &bare[i];
            let h = Sha256::digest(black_box(&decoded[i].payload));
            assert_eq!(h.as_slice(), &decoded[i].content_hash[..]);
            vk.verify(black_box(bytes), sig).unwrap();
        });
        // A fresh verifier per round: the replay guard would refuse a record seen before.
        let mut verify = Vec::new();
        for _ in 0..rounds {
            let v = Verifier::with_clock(
                Default::default(),
                TrustStore::from_keys([signer.public_key()]),
                clock.clone(),
            );
            verify.push(best_us(1, ops, |i| {
                black_box(v.verify(Kind::Anomaly, &records[i]).unwrap());
            }));
        }
        let meshbus_verify = verify.into_iter().fold(f64::INFINITY, f64::min);
        println!(
            "| {label} | {bare_sign:.1} us | {meshbus_sign:.1} us | {bare_verify:.1} us | {meshbus_verify:.1} us | {:.2} |",
            bare_verify / meshbus_verify
        );
    }
}
