//! Log-likelihood scoring against lm-evaluation-harness 0.4.13's own HFLM on the same
//! weights (`tests/reference/smollm2_loglik_reference.py`, fixture
//! `fixtures/reference/smollm2/loglik.json`): the context/continuation token split, the
//! summed log-probability, and the is-greedy flag.

mod common;

use scalpel::model::Hooks;
use scalpel::score::loglik::{encode_pair, loglikelihood, LoglikRequest};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    requests: Vec<Req>,
}

#[derive(Deserialize)]
struct Req {
    name: String,
    context: String,
    continuation: String,
    logprob: f64,
    is_greedy: bool,
    context_ids: Vec<u32>,
    continuation_ids: Vec<u32>,
}

fn fixture() -> Fixture {
    let p = common::repo_root().join("fixtures/reference/smollm2/loglik.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn token_split_matches_the_harness() {
    let m = common::smollm2();
    for r in fixture().requests {
        let pair = encode_pair(m, &LoglikRequest::new(&r.context, &r.continuation)).unwrap();
        assert_eq!(pair.context, r.context_ids, "{}: context ids", r.name);
        assert_eq!(
            pair.continuation, r.continuation_ids,
            "{}: continuation ids",
            r.name
        );
    }
}

#[test]
fn logprobs_and_greedy_flags_match_the_harness() {
    let m = common::smollm2();
    let fx = fixture();
    let reqs: Vec<LoglikRequest> = fx
        .requests
        .iter()
        .map(|r| LoglikRequest::new(&r.context, &r.continuation))
        .collect();
    // Batch of 4 mixes lengths, so padding is exercised too.
    let got = loglikelihood(m, &reqs, 4, &Hooks::new()).unwrap();
    let mut worst = 0f64;
    for (r, g) in fx.requests.iter().zip(&got) {
        let d = (g.logprob - r.logprob).abs();
        eprintln!(
            "{:<18} harness {:>11.6}  ours {:>11.6}  |Δ| {d:.2e}  greedy {}",
            r.name, r.logprob, g.logprob, g.is_greedy
        );
        assert!(d < 1e-3, "{}: {} vs {}", r.name, g.logprob, r.logprob);
        assert_eq!(g.is_greedy, r.is_greedy, "{}: is_greedy", r.name);
        worst = worst.max(d);
    }
    eprintln!("worst |Δ logprob| = {worst:.2e}");
}
