//! BoolQ, CB, COPA and RTE against lm-evaluation-harness 0.4.13 itself
//! (`tests/reference/superglue_reference.py`: the harness's own task configs build the
//! prompts and its HFLM scores them on the same weights). Fixture:
//! `fixtures/reference/smollm2/superglue.json`.

mod common;

use std::collections::HashMap;

use scalpel::tasks::{super_glue, ItemScore, RunContext, Task, TaskId};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    tasks: HashMap<String, TaskRef>,
}

#[derive(Deserialize)]
struct TaskRef {
    n: usize,
    acc: f64,
    items: Vec<ItemRef>,
}

#[derive(Deserialize)]
struct ItemRef {
    idx: usize,
    label: usize,
    pred: usize,
    loglikelihoods: Vec<f64>,
    context: String,
    continuations: Vec<String>,
}

fn fixture() -> Fixture {
    let p = common::repo_root().join("fixtures/reference/smollm2/superglue.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Prompts byte for byte, labels, and the harness's per-item predictions on the first
/// `limit` items (cut to keep CI short: every prompt is still compared byte for byte, and
/// `scalpel eval` runs the tasks whole).
fn check(task: TaskId, limit: Option<usize>) {
    let fx = fixture();
    let want = &fx.tasks[task.name()];
    let mut all = super_glue::load_from(task, &super_glue::data_path(task).unwrap()).unwrap();
    all.items.truncate(want.n);
    assert_eq!(all.items.len(), want.n);
    for (got, w) in all.items.iter().zip(&want.items) {
        assert_eq!(got.idx, w.idx);
        assert_eq!(got.context, w.context, "{task} item {}: context", w.idx);
        assert_eq!(
            got.continuations, w.continuations,
            "{task} item {}: continuations",
            w.idx
        );
        assert_eq!(got.label, w.label, "{task} item {}: label", w.idx);
    }
    let mut data = all;
    data.items.truncate(limit.unwrap_or(want.n));
    let n = data.items.len();
    let mut progress = |_, _| {};
    let mut cx = RunContext::new(common::smollm2(), &mut progress);
    let report = data.run(&mut cx).unwrap();
    let items: Vec<_> = report
        .items
        .iter()
        .map(|i| match i {
            ItemScore::Choice(c) => c.clone(),
            other => panic!("not a choice item: {other:?}"),
        })
        .collect();
    let mut agree = 0;
    let mut worst = 0f64;
    for (got, w) in items.iter().zip(&want.items) {
        agree += usize::from(got.pred == w.pred);
        for (a, b) in got.loglikelihoods.iter().zip(&w.loglikelihoods) {
            worst = worst.max((a - b).abs());
        }
    }
    let want_correct = want.items[..n].iter().filter(|i| i.pred == i.label).count();
    let got_correct = items.iter().filter(|i| i.pred == i.label).count();
    eprintln!(
        "{task}: n {n}  acc ours {:.4} harness {:.4} (full-run harness acc {:.4})  predictions agree {agree}/{n}  worst |Δll| {worst:.2e}",
        got_correct as f64 / n as f64,
        want_correct as f64 / n as f64,
        want.acc
    );
    assert!(
        agree as f64 >= 0.98 * n as f64,
        "{task}: predictions agree on {agree}/{n}"
    );
    assert!(
        got_correct.abs_diff(want_correct) <= 1,
        "{task}: {got_correct} vs {want_correct} correct"
    );
    assert!(worst < 1e-3, "{task}: log-likelihoods differ by {worst}");
}

#[test]
fn copa_matches_the_harness() {
    check(TaskId::Copa, Some(30));
}

#[test]
fn cb_matches_the_harness() {
    check(TaskId::Cb, Some(16));
}

#[test]
fn rte_matches_the_harness() {
    check(TaskId::Rte, Some(20));
}

#[test]
fn boolq_matches_the_harness() {
    check(TaskId::Boolq, Some(10));
}

#[test]
fn bad_rows_are_errors_naming_file_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("boolq.jsonl");
    std::fs::write(&p, "{\"question\": \"is it\", \"passage\": \"p\", \"answer\": \"True\"}\n{\"question\": \"is it\", \"passage\": \"p\", \"answer\": \"maybe\"}\n").unwrap();
    let e = super_glue::load_from(TaskId::Boolq, &p)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("boolq.jsonl: row 1: field 'answer'") && e.contains("maybe"),
        "{e}"
    );
    std::fs::write(&p, "{\"question\": \"is it\", \"answer\": \"True\"}\n").unwrap();
    let e = super_glue::load_from(TaskId::Boolq, &p)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("row 0: field 'passage': missing"), "{e}");
    std::fs::write(&p, "").unwrap();
    let e = super_glue::load_from(TaskId::Boolq, &p)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("boolq.jsonl: no rows"), "{e}");
}
