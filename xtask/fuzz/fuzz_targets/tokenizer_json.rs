#![no_main]
// See scalpel::fuzzing::tokenizer_json for what is fuzzed and what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| scalpel::fuzzing::tokenizer_json(data));
