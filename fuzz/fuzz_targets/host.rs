#![no_main]
//! `proxy_core::fuzzing::host`: must never panic or hang on any input.

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_core::fuzzing::host(data));
