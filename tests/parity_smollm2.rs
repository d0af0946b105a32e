//! SmolLM2-135M-Instruct against the independent numpy reference
//! (`tests/reference/smollm2_reference.py`, float64, interleaved RoPE on the GGUF layout,
//! tokenized by transformers). Fixture: `fixtures/reference/smollm2/`.
//! The "heldout" cases were never used while debugging the Rust side.

mod common;

use scalpel::model::chat::{self, Message};
use scalpel::model::generate::{generate, Finish, SamplingParams};
use scalpel::model::Hooks;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    gguf_sha256: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    prompt: String,
    chat: bool,
    text: String,
    token_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
    logits_file: String,
}

fn fixture() -> Fixture {
    let p = common::repo_root().join("fixtures/reference/smollm2/cases.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

#[test]
fn fixture_was_made_from_the_shipped_weights() {
    use sha2::Digest;
    let m = common::smollm2();
    let bytes = std::fs::read(&m.path).unwrap();
    let got = format!("{:x}", sha2::Sha256::digest(&bytes));
    assert_eq!(got, fixture().gguf_sha256);
}

#[test]
fn token_ids_and_chat_text_match_transformers() {
    let m = common::smollm2();
    assert_eq!(
        m.tokenizer.encode("<|im_start|>user\n").unwrap(),
        vec![1, 4093, 198]
    );
    for c in fixture().cases {
        if c.chat {
            let text = chat::render(&m.tokenizer, &[Message::user(&c.prompt)], true).unwrap();
            assert_eq!(text, c.text, "{}: chat template rendering", c.name);
        }
        assert_eq!(
            m.tokenizer.encode(&c.text).unwrap(),
            c.token_ids,
            "{}: token ids",
            c.name
        );
        assert_eq!(
            m.tokenizer.decode(&c.token_ids).unwrap(),
            c.text,
            "{}: decode",
            c.name
        );
    }
}

#[test]
fn last_position_logits_match_the_reference_within_1e_3() {
    let m = common::smollm2();
    let mut worst = 0f32;
    for c in fixture().cases {
        let want = common::read_f32_le(
            &common::repo_root()
                .join("fixtures/reference/smollm2")
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
    let m = common::smollm2();
    for c in fixture().cases {
        let mut p = SamplingParams::greedy(16);
        p.stop_ids = vec![2];
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
            got.push(2);
        }
        assert_eq!(got, c.greedy_ids, "{}: greedy continuation", c.name);
    }
}
