//! SPEC 4 step 8's JSON scanner on deep and wide documents, against serde_json where it decides.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshbus_fuzz::payload_json(data);
});
