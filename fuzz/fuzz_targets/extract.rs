//! The layer extractor: nothing outside the extraction root changes (run in a temp dir).
//! The body is `lade::fuzz::extract`, which the library's tests run on the seed corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lade::fuzz::extract(data));
