//! cargo-fuzz target: `shadowstore_tests::fuzzing::trace`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shadowstore_tests::fuzzing::trace(data));
