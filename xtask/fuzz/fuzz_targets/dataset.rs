#![no_main]
// See scalpel::fuzzing::dataset for what is fuzzed and what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| scalpel::fuzzing::dataset(data));
