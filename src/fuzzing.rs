//! Entry points for the fuzz targets (`xtask/fuzz/`, run by `cargo xtask fuzz`) and for
//! the regression test that replays every input they found (`tests/fuzz_regressions.rs`).
//!
//! Each takes arbitrary bytes, hands them to one reader the way a user's file would
//! reach it (through a file on disk, since the readers take paths), and checks the
//! contract of bad input: an error that names the file, never a panic, an abort or an
//! unbounded allocation. A panic here is a bug the fuzzer reports.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::data::Format;
use crate::harness::suite::Suite;
use crate::intervene::config::FitConfig;
use crate::model::source::LocalModel;
use crate::model::tokenizer::Tokenizer;
use crate::model::LoadedModel;

/// A fuzz target: arbitrary bytes in, a panic only on a bug.
pub type Target = fn(&[u8]);

/// The fuzzed readers, by the name of their fuzz target.
pub const TARGETS: &[(&str, Target)] = &[
    ("suite_yaml", suite_yaml),
    ("fit_yaml", fit_yaml),
    ("gguf", gguf),
    ("safetensors", safetensors),
    ("tokenizer_json", tokenizer_json),
    ("dataset", dataset),
];

thread_local! {
    // One scratch directory per thread for the whole process: a fuzzer calls a target
    // millions of times, and a new directory each time would dominate.
    static SCRATCH: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

/// Readers contain panics of the crates they call (returning an error); libFuzzer's
/// panic hook aborts at the panic itself, before any unwinding, so under the fuzzer it
/// is replaced by one that only prints. A panic no reader contains still escapes the
/// target and is reported as a crash.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| eprintln!("(contained or escaping) {info}")));
    });
}

/// `bytes` written to `name` in this thread's scratch directory (emptied first).
fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    quiet_panics();
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let dir = s.get_or_insert_with(|| {
            let base = Path::new("/dev/shm");
            let b = tempfile::Builder::new().prefix("scalpel-fuzz.").to_owned();
            (if base.is_dir() {
                b.tempdir_in(base)
            } else {
                b.tempdir()
            })
            .expect("a scratch directory")
        });
        for e in std::fs::read_dir(dir.path())
            .expect("scratch readable")
            .flatten()
        {
            let _ = std::fs::remove_file(e.path());
        }
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).expect("scratch writable");
        p
    })
}

/// An error's text must say which file it is about.
fn names(path: &Path, err: &dyn std::fmt::Display) {
    let text = err.to_string();
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    assert!(
        text.contains(name),
        "the error does not name the file {}: {text}",
        path.display()
    );
}

/// A suite file: the parser and every check after it.
pub fn suite_yaml(bytes: &[u8]) {
    let path = scratch("suite.yaml", bytes);
    if let Err(e) = Suite::read(&path) {
        names(&path, &e);
    }
}

/// A fit config (the breaker-fitting fixture's YAML).
pub fn fit_yaml(bytes: &[u8]) {
    let path = scratch("fit.yaml", bytes);
    if let Err(e) = FitConfig::read(&path) {
        names(&path, &e);
    }
}

/// A GGUF file: header, metadata, tensor directory, the tokenizer built from its
/// metadata, and the model built from its tensors.
pub fn gguf(bytes: &[u8]) {
    let path = scratch("model.gguf", bytes);
    if let Err(e) = LoadedModel::load_local("fuzz", &LocalModel::Gguf(path.clone()), &Device::Cpu) {
        names(&path, &e);
    }
}

/// A safetensors checkpoint beside a valid GPT-2 config: the header reader and the
/// tensor shapes the model expects.
pub fn safetensors(bytes: &[u8]) {
    let path = scratch("model.safetensors", bytes);
    let dir = path.parent().expect("in the scratch directory");
    std::fs::write(dir.join("config.json"), TINY_GPT2_CONFIG).expect("scratch writable");
    std::fs::write(dir.join("tokenizer.json"), TINY_TOKENIZER).expect("scratch writable");
    if let Err(e) =
        LoadedModel::load_local("fuzz", &LocalModel::HfDir(dir.to_path_buf()), &Device::Cpu)
    {
        names(&path, &e);
    }
}

/// A `tokenizer.json`, then encoding and decoding a text with it.
pub fn tokenizer_json(bytes: &[u8]) {
    let path = scratch("tokenizer.json", bytes);
    let dir = path.parent().expect("in the scratch directory");
    match Tokenizer::from_hf_dir(dir) {
        Ok(t) => {
            if let Ok(ids) = t.encode("The Eiffel Tower is in Paris. Ünïcode ✓ \n\t  x") {
                let _ = t.decode(&ids);
            }
        }
        Err(e) => names(&path, &e),
    }
}

/// A dataset file; the first byte picks its format (parquet, arrow, jsonl, jsonl.gz,
/// csv, txt), the rest is the file.
pub fn dataset(bytes: &[u8]) {
    let Some((&which, rest)) = bytes.split_first() else {
        return;
    };
    let formats = [
        Format::Parquet,
        Format::Arrow,
        Format::Jsonl,
        Format::JsonlGz,
        Format::Csv,
        Format::Txt,
    ];
    let format = formats[which as usize % formats.len()];
    let path = scratch(&format!("data.{}", format.extension()), rest);
    if let Err(e) = format.read_rows(&path) {
        names(&path, &e);
    }
}

/// The configuration of `fixtures/tiny-gpt2` (2 layers, width 64, vocabulary 512).
const TINY_GPT2_CONFIG: &str = r#"{"activation_function": "gelu_new", "model_type": "gpt2",
"n_ctx": 128, "n_embd": 64, "n_head": 4, "n_layer": 2, "n_positions": 128,
"layer_norm_epsilon": 1e-05, "vocab_size": 512, "bos_token_id": 0, "eos_token_id": 0,
"tie_word_embeddings": true}"#;

/// A minimal word-level tokenizer, enough for the safetensors target to reach the weights.
const TINY_TOKENIZER: &str = r#"{"version": "1.0", "truncation": null, "padding": null,
"added_tokens": [], "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
"post_processor": null, "decoder": null,
"model": {"type": "WordLevel", "vocab": {"<unk>": 0, "a": 1}, "unk_token": "<unk>"}}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_takes_empty_and_junk_input() {
        for (name, f) in TARGETS {
            for input in [&b""[..], b"\0", b"\xff\xfe junk", b"name: x\n"] {
                eprintln!("{name}: {input:?}");
                f(input);
            }
        }
    }

    #[test]
    fn the_safetensors_target_reaches_the_model_with_real_weights() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-gpt2");
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        // The real checkpoint loads: the target's fixed config matches it.
        let path = scratch("model.safetensors", &bytes);
        let d = path.parent().unwrap();
        std::fs::write(d.join("config.json"), TINY_GPT2_CONFIG).unwrap();
        std::fs::write(d.join("tokenizer.json"), TINY_TOKENIZER).unwrap();
        LoadedModel::load_local("fuzz", &LocalModel::HfDir(d.to_path_buf()), &Device::Cpu).unwrap();
    }
}
