//! The environment configuration (SPEC 8) from arbitrary variables.
#![no_main]
libfuzzer_sys::fuzz_target!(|vars: Vec<(u8, String)>| {
    meshbus_fuzz::env_config(vars);
});
