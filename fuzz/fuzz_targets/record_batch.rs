//! Record batches of every codec as a fetch delivers them to meshbus (see
//! `meshbus_fuzz::record_batch`).
#![no_main]
use meshbus::kafka::fuzzing::FuzzRecord;

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    codec: u8,
    records: Vec<FuzzRecord>,
    flips: Vec<(u16, u8)>,
    raw: Option<Vec<u8>>,
}

libfuzzer_sys::fuzz_target!(|i: Input| {
    meshbus_fuzz::record_batch(i.codec, i.records, i.flips, i.raw);
});
