//! Decode+verify of `ai.evidence.v1` records.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshbus_fuzz::verify_record(meshbus::contract::Kind::Evidence, data);
});
