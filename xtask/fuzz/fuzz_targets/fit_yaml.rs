#![no_main]
// See scalpel::fuzzing::fit_yaml for what is fuzzed and what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| scalpel::fuzzing::fit_yaml(data));
