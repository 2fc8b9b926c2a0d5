//! The canonical control encoder: decode, re-encode, compare.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshbus_fuzz::canonical_control(data);
});
