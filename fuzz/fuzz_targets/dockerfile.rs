//! The Dockerfile parser, instruction decoding, lowering and shell expansion: no panic.
//! The body is `lade::fuzz::dockerfile`, which the library's tests run on the seed corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lade::fuzz::dockerfile(data));
