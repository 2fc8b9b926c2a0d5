//! DLQ record headers read back by `meshbus dlq`, and proto3 JSON read by the CLI.
#![no_main]
libfuzzer_sys::fuzz_target!(
    |input: (Vec<(String, Vec<u8>)>, Option<Vec<u8>>, u8, String)| {
        meshbus_fuzz::dead_letter_and_json(input.0, input.1, input.2, &input.3);
    }
);
