//! OCI manifest, index and config parsing: no panic, canonical JSON reads back the same.
//! The body is `lade::fuzz::oci_json`, which the library's tests run on the seed corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lade::fuzz::oci_json(data));
