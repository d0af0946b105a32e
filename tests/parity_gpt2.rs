//! A tiny randomly initialised GPT-2 (fixtures/tiny-gpt2, written by
//! `tests/reference/tiny_gpt2_reference.py`) against that script's independent numpy
//! forward pass. Tolerance 1e-4: the reference showed an exact-GELU or wrong-epsilon bug
//! moves some logit by ≥ 1.4e-3, while an honest f32 forward is ~4e-6 off.

mod common;

use std::fs;
use std::path::Path;

use candle_core::{Device, Tensor};
use scalpel::model::generate::{generate, SamplingParams};
use scalpel::model::source::{resolve_hub, LocalModel};
use scalpel::model::{Hooks, LoadedModel};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    token_ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
    greedy_ids: Vec<u32>,
}

fn reference() -> Reference {
    let p = common::tiny_gpt2_dir().join("reference.json");
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

fn check_against_reference(m: &LoadedModel) {
    for c in reference().cases {
        assert_eq!(
            m.tokenizer.encode(&c.text).unwrap(),
            c.token_ids,
            "{:?}",
            c.text
        );
        let out = m.forward_ids(&c.token_ids, &Hooks::new()).unwrap();
        let want = Tensor::new(c.logits.clone(), &Device::Cpu).unwrap();
        let diff = common::max_abs_diff(&out.logits.squeeze(0).unwrap(), &want);
        eprintln!(
            "{:<50} max |Δlogit| over all positions = {diff:.2e}",
            format!("{:?}", c.text)
        );
        assert!(diff < 1e-4, "{:?}: {diff}", c.text);
        let g = generate(
            m.model.as_ref(),
            &c.token_ids,
            &SamplingParams::greedy(c.greedy_ids.len()),
            1,
            &Hooks::new(),
            |_, _| {},
        )
        .unwrap();
        assert_eq!(g[0].tokens, c.greedy_ids, "{:?}: greedy", c.text);
    }
}

#[test]
fn tiny_gpt2_matches_the_numpy_reference() {
    check_against_reference(&common::tiny_gpt2());
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// A Hugging Face hub cache laid out as hf-hub and huggingface_hub write it:
/// `models--owner--name/refs/main` holding the commit, `snapshots/<commit>/…` the files.
#[test]
fn hub_cache_resolves_offline_by_branch_and_by_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo_dir = hub.join("models--scalpel-test--tiny-gpt2");
    fs::create_dir_all(repo_dir.join("refs")).unwrap();
    fs::write(repo_dir.join("refs/main"), commit).unwrap();
    copy_dir(
        &common::tiny_gpt2_dir(),
        &repo_dir.join("snapshots").join(commit),
    );
    let cache = hf_hub::Cache::new(hub.clone());

    let by_branch = resolve_hub("scalpel-test/tiny-gpt2", "main", &cache, true).unwrap();
    assert_eq!(by_branch, repo_dir.join("snapshots").join(commit));
    let by_commit = resolve_hub("scalpel-test/tiny-gpt2", commit, &cache, true).unwrap();
    assert_eq!(by_commit, by_branch);
    let m = LoadedModel::load_local(
        "hf:scalpel-test/tiny-gpt2",
        &LocalModel::HfDir(by_branch),
        &Device::Cpu,
    )
    .unwrap();
    check_against_reference(&m);

    // A repository that is not cached, offline: the error names the repo and the cache.
    let e = resolve_hub("scalpel-test/absent", "main", &cache, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("hf:scalpel-test/absent@main") && e.contains("HF_HUB_OFFLINE"),
        "{e}"
    );
}

/// The same through the CLI-facing path: `hf:owner/name` with HF_HOME and HF_HUB_OFFLINE.
#[test]
fn hf_spec_honours_hf_home_and_offline_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let commit = "fedcba9876543210fedcba9876543210fedcba98";
    let repo_dir = tmp.path().join("hub/models--scalpel-test--tiny-gpt2");
    fs::create_dir_all(repo_dir.join("refs")).unwrap();
    fs::write(repo_dir.join("refs/main"), commit).unwrap();
    copy_dir(
        &common::tiny_gpt2_dir(),
        &repo_dir.join("snapshots").join(commit),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scalpel"))
        .args([
            "logits",
            "--json",
            "--device",
            "cpu",
            "--prompt",
            "Hello world",
            "--model",
            "hf:scalpel-test/tiny-gpt2",
        ])
        .env("HF_HOME", tmp.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["model"], "hf:scalpel-test/tiny-gpt2");
    assert_eq!(v["last_logits"].as_array().unwrap().len(), 512);
    let want = &reference().cases[0];
    assert_eq!(want.text, "Hello world");
    let ids: Vec<u32> = serde_json::from_value(v["token_ids"].clone()).unwrap();
    assert_eq!(ids, want.token_ids);
}
