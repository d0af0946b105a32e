//! Properties every task family shares (batch invariance, fit/eval splits, the report's
//! JSON shape) and the fluency family against lm-evaluation-harness's HFLM on the same
//! weights (`tests/reference/fluency_reference.py` → `fixtures/reference/smollm2/fluency.json`).

mod common;

use std::collections::BTreeSet;

use scalpel::data::split::{split_of, Split, DEFAULT_FIT_FRACTION};
use scalpel::tasks::{
    self, ItemScore, LoadOptions, RunContext, SplitSel, Task, TaskId, TaskReport,
};
use serde_json::Value;

fn run(task: &dyn Task, batch_size: usize) -> TaskReport {
    let mut progress = |_, _| {};
    let mut cx = RunContext::new(common::smollm2(), &mut progress);
    cx.batch_size = batch_size;
    task.run(&mut cx).unwrap()
}

fn load(id: TaskId, limit: usize) -> Box<dyn Task> {
    tasks::load(
        id,
        &LoadOptions {
            limit: Some(limit),
            ..Default::default()
        },
    )
    .unwrap()
}

fn fixture() -> Value {
    let p = common::repo_root().join("fixtures/reference/smollm2/fluency.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn lambada_matches_the_harness() {
    let fx = fixture();
    let want = fx["tasks"]["lambada_openai"]["items"].as_array().unwrap();
    let report = run(load(TaskId::LambadaOpenai, want.len()).as_ref(), 8);
    let mut worst = 0f64;
    for (got, w) in report.items.iter().zip(want) {
        let ItemScore::Lambada(got) = got else {
            panic!("{got:?}")
        };
        assert_eq!(got.idx as u64, w["idx"].as_u64().unwrap());
        worst = worst.max((got.loglikelihood - w["loglikelihood"].as_f64().unwrap()).abs());
        assert_eq!(
            got.is_greedy,
            w["is_greedy"].as_bool().unwrap(),
            "item {}",
            got.idx
        );
    }
    eprintln!(
        "lambada_openai: n {}  worst |Δll| {worst:.2e}  acc {:.3}",
        want.len(),
        report.metrics["acc"]
    );
    assert!(worst < 1e-3, "{worst}");
}

#[test]
fn rolling_perplexity_matches_the_harness() {
    let fx = fixture();
    // Wikipedia articles are long (many windows each): a few keep CI short.
    for (id, n) in [(TaskId::PerplexityWiki, 6), (TaskId::PerplexityLambada, 20)] {
        let want = &fx["tasks"][id.name()]["items"].as_array().unwrap()[..n];
        let report = run(load(id, n).as_ref(), 8);
        let mut worst = 0f64;
        for (got, w) in report.items.iter().zip(want) {
            let ItemScore::Rolling(got) = got else {
                panic!("{got:?}")
            };
            assert_eq!(got.n_words as u64, w["n_words"].as_u64().unwrap());
            assert_eq!(got.n_bytes as u64, w["n_bytes"].as_u64().unwrap());
            worst = worst.max((got.loglikelihood - w["loglikelihood"].as_f64().unwrap()).abs());
        }
        let ll: f64 = want
            .iter()
            .map(|w| w["loglikelihood"].as_f64().unwrap())
            .sum();
        let bytes: u64 = want.iter().map(|w| w["n_bytes"].as_u64().unwrap()).sum();
        let bpb_ref = -ll / bytes as f64 / std::f64::consts::LN_2;
        eprintln!(
            "{id}: n {}  worst |Δll| {worst:.2e}  bits_per_byte ours {:.5} harness {bpb_ref:.5}",
            want.len(),
            report.metrics["bits_per_byte"]
        );
        assert!(worst < 2e-3, "{id}: {worst}");
        assert!((report.metrics["bits_per_byte"] - bpb_ref).abs() < 1e-4);
    }
}

/// Scores do not depend on how requests are batched: padding is invisible, and the
/// shared-context path agrees with whole sequences.
#[test]
fn scores_are_the_same_at_batch_size_1_and_16() {
    for (id, n) in [
        (TaskId::Rte, 12),
        (TaskId::LambadaOpenai, 12),
        (TaskId::PerplexityWiki, 2),
    ] {
        let task = load(id, n);
        let a = run(task.as_ref(), 1);
        let b = run(task.as_ref(), 16);
        assert_eq!(a.items.len(), b.items.len());
        let mut worst = 0f64;
        for (x, y) in a.items.iter().zip(&b.items) {
            for ((k, p), (_, q)) in x.values().iter().zip(y.values().iter()) {
                let d = (p - q).abs();
                assert!(d <= 1e-4, "{id} item {} {k}: {p} vs {q}", x.idx());
                worst = worst.max(d);
            }
        }
        // Perplexities are exponentials of sums: compare them relatively.
        for (k, v) in &a.metrics {
            let w = b.metrics[k];
            assert!(
                (v - w).abs() <= 1e-4 * v.abs().max(1.0),
                "{id} {k}: {v} vs {w}"
            );
        }
        eprintln!("{id}: batch 1 vs 16 worst per-item difference {worst:.2e}");
    }
}

/// The fit and eval splits partition a task by item content, deterministically: what
/// tracing and breaker fitting see (fit, through `load_fit`, their only way to task
/// data) never reaches a gate (eval).
#[test]
fn fit_and_eval_splits_partition_every_offline_task() {
    for &id in [
        TaskId::Boolq,
        TaskId::Copa,
        TaskId::CrowsPairsEnglish,
        TaskId::PerplexityWiki,
        TaskId::Realtoxicityprompts,
    ]
    .iter()
    {
        let opts = |split| LoadOptions {
            split,
            ..Default::default()
        };
        let all = tasks::load(id, &opts(SplitSel::All)).unwrap();
        // What fixtures load, even when asked for another split.
        let fit = tasks::load_fit(id, &opts(SplitSel::Eval)).unwrap();
        let eval = tasks::load(id, &opts(SplitSel::Eval)).unwrap();
        let keys = |t: &dyn Task| (0..t.len()).map(|i| t.item_key(i)).collect::<Vec<_>>();
        let (fk, ek) = (keys(fit.as_ref()), keys(eval.as_ref()));
        let fset: BTreeSet<&String> = fk.iter().collect();
        assert!(
            ek.iter().all(|k| !fset.contains(k)),
            "{id}: an eval item is in fit"
        );
        assert_eq!(fk.len() + ek.len(), all.len(), "{id}");
        assert!(fk
            .iter()
            .all(|k| split_of(id.name(), k, DEFAULT_FIT_FRACTION) == Split::Fit));
        // About 30% fit: within 5 binomial standard errors.
        let n = all.len() as f64;
        let se = (DEFAULT_FIT_FRACTION * (1.0 - DEFAULT_FIT_FRACTION) / n).sqrt();
        let frac = fk.len() as f64 / n;
        assert!(
            (frac - DEFAULT_FIT_FRACTION).abs() < 5.0 * se,
            "{id}: fit share {frac}"
        );
        // --limit takes the first N of the chosen split, in the dataset's order.
        let lim = tasks::load(
            id,
            &LoadOptions {
                split: SplitSel::Eval,
                limit: Some(5),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(keys(lim.as_ref()), ek[..5].to_vec());
    }
}
