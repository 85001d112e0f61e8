//! cargo-fuzz target: `shadowstore_tests::fuzzing::stored_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shadowstore_tests::fuzzing::stored_record(data));
