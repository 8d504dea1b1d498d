//! .dockerignore patterns compiled and matched against paths: no panic.
//! The body is `lade::fuzz::dockerignore`, which the library's tests run on the seed corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lade::fuzz::dockerignore(data));
