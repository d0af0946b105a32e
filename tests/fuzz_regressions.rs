//! Every input under `fixtures/fuzz/<target>/` (the seeds the fuzzers start from, and
//! each input a fuzzer found that crashed a reader, kept after the fix) replayed through
//! its target: a reader must return an error naming the file, never panic.

use std::path::{Path, PathBuf};

use candle_core::Device;
use scalpel::fuzzing::TARGETS;
use scalpel::model::source::LocalModel;
use scalpel::model::LoadedModel;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/fuzz")
        .join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_kept_input_is_rejected_or_read_without_a_panic() {
    let mut n = 0;
    for (target, f) in TARGETS {
        let files = corpus(target);
        assert!(!files.is_empty(), "fixtures/fuzz/{target} has no inputs");
        for p in files {
            let bytes = std::fs::read(&p).unwrap();
            let r = std::panic::catch_unwind(|| f(&bytes));
            assert!(r.is_ok(), "{target}: {} panicked", p.display());
            n += 1;
        }
    }
    eprintln!("{n} inputs replayed");
}

/// The GGUF seeds are whole models the loader accepts, so fuzzing starts from inputs that
/// reach every reader (metadata, tokenizer, tensors), not only the magic number check.
#[test]
fn the_gguf_seeds_load() {
    for p in corpus("gguf").into_iter().filter(|p| {
        p.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("seed-")
    }) {
        let m = LoadedModel::load_local("seed", &LocalModel::Gguf(p.clone()), &Device::Cpu)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let ids = m.encode("the a").unwrap();
        assert!(!ids.is_empty(), "{}", p.display());
    }
}
