#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wcbuild_fuzz::expand(data));
