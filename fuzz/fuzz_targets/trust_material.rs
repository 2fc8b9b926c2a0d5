//! Trust stores: validator_registry.json, PEM/hex public keys and private key files.
#![no_main]
libfuzzer_sys::fuzz_target!(|input: (String, String, Vec<u8>)| {
    meshbus_fuzz::trust_material(&input.0, &input.1, &input.2);
});
