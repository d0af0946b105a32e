//! Gemma-3-270M against the independent numpy reference
//! (`tests/reference/gemma3_reference.py`, float64, tokenized by the Hugging Face Gemma
//! tokenizer that transformers rebuilds from the same GGUF). Fixture:
//! `fixtures/reference/gemma3/`. `dev_long` (799 tokens) is longer than the local
//! layers' 512-position window, so the sliding window is checked in prefill and, through
//! the greedy continuation, with a KV cache. The "heldout" cases were not used while
//! debugging the Rust side.

mod common;

use scalpel::model::generate::{generate, Finish, SamplingParams};
use scalpel::model::Hooks;
use scalpel::score::loglik::{loglikelihood, LoglikRequest};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    gguf_sha256: String,
    cases: Vec<Case>,
    tokenizer: Vec<TokCase>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    prompt: String,
    token_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
    greedy_margins: Vec<f64>,
    logits_file: String,
}

#[derive(Deserialize)]
struct TokCase {
    text: String,
    ids: Vec<u32>,
}

fn fixture() -> Fixture {
    let p = common::repo_root().join("fixtures/reference/gemma3/cases.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

#[test]
fn fixture_was_made_from_the_shipped_weights() {
    use sha2::Digest;
    let m = common::gemma3();
    let bytes = std::fs::read(&m.path).unwrap();
    let got = format!("{:x}", sha2::Sha256::digest(&bytes));
    assert_eq!(got, fixture().gguf_sha256);
}

#[test]
fn the_architecture_comes_from_the_gguf_metadata() {
    let info = common::gemma3().model.info();
    assert_eq!(
        (
            info.n_layers,
            info.d_model,
            info.n_heads,
            info.n_kv_heads,
            info.d_head,
            info.d_mlp
        ),
        (18, 640, 4, 1, 256, 2048)
    );
    assert_eq!(info.vocab_size, 262_144);
    assert_eq!(info.arch.to_string(), "gemma3");
}

#[test]
fn token_ids_match_the_hugging_face_gemma_tokenizer() {
    let m = common::gemma3();
    let fx = fixture();
    let mut failures = Vec::new();
    for c in &fx.tokenizer {
        let got = m.tokenizer.encode(&c.text).unwrap();
        if got != c.ids {
            failures.push(format!("{:?}: got {got:?}, want {:?}", c.text, c.ids));
        }
        assert_eq!(
            m.tokenizer.decode(&got).unwrap(),
            c.text,
            "decode of {:?}",
            c.text
        );
    }
    for c in &fx.cases {
        // Model inputs start with <bos>, as the GGUF's add_bos_token says.
        let got = m.encode(&c.prompt).unwrap();
        if got != c.token_ids {
            failures.push(format!("{}: got {got:?}, want {:?}", c.name, c.token_ids));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn last_position_logits_match_the_reference_within_1e_3() {
    let m = common::gemma3();
    let mut worst = 0f32;
    for c in fixture().cases {
        let want = common::read_f32_le(
            &common::repo_root()
                .join("fixtures/reference/gemma3")
                .join(&c.logits_file),
        );
        let got = m.last_logits(&c.token_ids).unwrap();
        assert_eq!(got.len(), want.len(), "{}: vocabulary size", c.name);
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "{:<16} {:>4} tokens  max |Δlogit| = {diff:.3e}",
            c.name,
            c.token_ids.len()
        );
        assert!(diff < 1e-3, "{}: max abs logit difference {diff}", c.name);
        worst = worst.max(diff);
    }
    eprintln!("worst max |Δlogit| over all cases: {worst:.3e}");
}

#[test]
fn greedy_continuations_match_the_reference() {
    let m = common::gemma3();
    for c in fixture().cases {
        let mut p = SamplingParams::greedy(16);
        p.stop_ids = vec![1, 106];
        let g = generate(
            m.model.as_ref(),
            &c.token_ids,
            &p,
            1,
            &Hooks::new(),
            |_, _| {},
        )
        .unwrap();
        let mut got = g[0].tokens.clone();
        if g[0].finish == Finish::Stop {
            // The generated tokens leave out the stop token the reference lists last.
            let stop = c.greedy_ids.get(got.len()).copied();
            got.push(stop.filter(|s| p.stop_ids.contains(s)).unwrap_or(u32::MAX));
        }
        // A step whose top two logits are within float32 noise may legitimately flip.
        let near_tie = c.greedy_margins.iter().position(|&m| m < 1e-4);
        let n = near_tie.map_or(c.greedy_ids.len(), |i| i + 1);
        assert_eq!(
            got[..n.min(got.len())],
            c.greedy_ids[..n],
            "{}: greedy continuation",
            c.name
        );
    }
}

#[test]
fn a_left_padded_batch_scores_what_each_item_scores_alone() {
    // Contexts of 20 to 799 tokens share one padded prefill; the longest is past the
    // local window, so padding and the window are masked together.
    let m = common::gemma3();
    let reqs: Vec<LoglikRequest> = fixture()
        .cases
        .iter()
        .filter(|c| c.name.starts_with("dev_"))
        .flat_map(|c| {
            [" the end.", " and then"]
                .into_iter()
                .map(|k| LoglikRequest::new(c.prompt.as_str(), k))
                .collect::<Vec<_>>()
        })
        .collect();
    let alone = loglikelihood(m, &reqs, 1, &Hooks::new()).unwrap();
    let batched = loglikelihood(m, &reqs, 4, &Hooks::new()).unwrap();
    for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
        assert!(
            (a.logprob - b.logprob).abs() < 1e-3,
            "request {i}: alone {} batched {}",
            a.logprob,
            b.logprob
        );
        assert_eq!(a.is_greedy, b.is_greedy, "request {i}");
    }
}
