//! cargo-fuzz target: every client and peer method of one in-process node
//! (`shadowstore_tests::fuzzing::Handlers`), the input's first byte
//! choosing the method and the rest being its request body.
#![no_main]

use std::sync::OnceLock;

use shadowstore_tests::fuzzing::Handlers;

static HANDLERS: OnceLock<Handlers> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| HANDLERS.get_or_init(Handlers::start).call(data));
