#![no_main]
// See scalpel::fuzzing::gguf for what is fuzzed and what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| scalpel::fuzzing::gguf(data));
