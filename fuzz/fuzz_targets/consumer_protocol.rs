//! Consumer-protocol subscription and assignment payloads from other group members.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshbus_fuzz::consumer_protocol(data);
});
