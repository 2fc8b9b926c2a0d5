//! The nonce generator and the bounded replay guard against a model.
#![no_main]
libfuzzer_sys::fuzz_target!(|input: (Vec<meshbus_fuzz::ReplayOp>, Vec<i16>)| {
    meshbus_fuzz::nonce_replay(input.0, input.1);
});
