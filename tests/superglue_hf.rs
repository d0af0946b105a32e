//! WiC, WSC, MultiRC and ReCoRD against lm-evaluation-harness 0.4.13 itself, on the small
//! Hugging Face-layout fixtures in `fixtures/data/super_glue/` (the hub's `aps/super_glue`
//! file names and columns; `make_fixtures.py` writes them).
//! `tests/reference/superglue_hf_reference.py` renders the harness's own task configs
//! (YAML templates, `preprocess_wsc`, `record/util.py`) on those rows and scores them with
//! its HFLM on the same weights: fixture `fixtures/reference/smollm2/superglue_hf.json`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use scalpel::tasks::super_glue::{self, record, squad};
use scalpel::tasks::{ItemScore, RunContext, Task, TaskId};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    tasks: BTreeMap<String, TaskRef>,
    cases: Cases,
}

#[derive(Deserialize)]
struct TaskRef {
    n: usize,
    config: String,
    metrics: BTreeMap<String, f64>,
    items: Vec<ItemRef>,
}

#[derive(Deserialize)]
struct ItemRef {
    idx: usize,
    #[serde(default)]
    label: Option<usize>,
    pred: usize,
    loglikelihoods: Vec<f64>,
    context: String,
    continuations: Vec<String>,
    metrics: BTreeMap<String, f64>,
    #[serde(default)]
    entities: Vec<String>,
    #[serde(default)]
    answers: Vec<String>,
    #[serde(default)]
    prediction: Option<String>,
}

#[derive(Deserialize)]
struct Cases {
    general_detokenize: Vec<Detok>,
    wsc_doc_to_text: Vec<WscCase>,
    multirc_doc_to_choice: Vec<MultircCase>,
    squad: Vec<SquadCase>,
}

#[derive(Deserialize)]
struct Detok {
    input: String,
    output: String,
}

#[derive(Deserialize)]
struct WscCase {
    doc: serde_json::Value,
    text: String,
}

#[derive(Deserialize)]
struct MultircCase {
    answer: String,
    choices: Vec<String>,
}

#[derive(Deserialize)]
struct SquadCase {
    gold: String,
    pred: String,
    normalized_gold: String,
    f1: f64,
    exact: f64,
}

fn fixture() -> Fixture {
    let p = common::repo_root().join("fixtures/reference/smollm2/superglue_hf.json");
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

fn data_dir() -> PathBuf {
    common::repo_root().join("fixtures/data/super_glue")
}

const CHOICE_TASKS: [TaskId; 3] = [TaskId::Wic, TaskId::Wsc, TaskId::Multirc];

/// Metrics equal up to summation order (the harness sums in Python, sklearn in numpy).
fn assert_metrics(task: TaskId, got: &BTreeMap<String, f64>, want: &BTreeMap<String, f64>) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{task}: metric names"
    );
    for (k, w) in want {
        assert!(
            (got[k] - w).abs() < 1e-12,
            "{task}: {k} {} vs harness {w}",
            got[k]
        );
    }
}

fn check_choice_prompts(task: TaskId, t: &super_glue::SuperGlueTask, want: &TaskRef) {
    assert_eq!(t.items.len(), want.n, "{task}: items");
    for (got, w) in t.items.iter().zip(&want.items) {
        assert_eq!(got.idx, w.idx);
        assert_eq!(got.context, w.context, "{task} item {}: context", w.idx);
        assert_eq!(
            got.continuations, w.continuations,
            "{task} item {}: continuations",
            w.idx
        );
        assert_eq!(Some(got.label), w.label, "{task} item {}: label", w.idx);
    }
}

fn check_record_prompts(t: &record::RecordTask, want: &TaskRef) {
    assert_eq!(t.items.len(), want.n, "record: items");
    for (got, w) in t.items.iter().zip(&want.items) {
        assert_eq!(got.idx, w.idx);
        assert_eq!(got.context, w.context, "record item {}: context", w.idx);
        assert_eq!(got.continuations, w.continuations, "record item {}", w.idx);
        assert_eq!(got.entities, w.entities, "record item {}: entities", w.idx);
        assert_eq!(got.answers, w.answers, "record item {}: answers", w.idx);
    }
}

/// Every prompt and choice byte for byte, from the hub layout (repository root), from the
/// config's folder and from the parquet file itself.
#[test]
fn prompts_and_choices_are_the_harness_s() {
    let fx = fixture();
    for task in CHOICE_TASKS {
        let want = &fx.tasks[task.name()];
        let config = super_glue::hub_config(task).unwrap();
        assert_eq!(config, want.config);
        let file = data_dir()
            .join(config)
            .join("validation-00000-of-00001.parquet");
        for p in [data_dir(), data_dir().join(config), file] {
            let t = super_glue::load_from(task, &p).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(t.source, p);
            check_choice_prompts(task, &t, want);
        }
    }
    let want = &fx.tasks["record"];
    assert_eq!(want.config, "record");
    for p in [
        data_dir(),
        data_dir().join("record/validation-00000-of-00001.parquet"),
    ] {
        check_record_prompts(&record::load_from(&p).unwrap(), want);
    }
    // The generic entry point picks the task type.
    let t = super_glue::load(TaskId::Record, Some(&data_dir())).unwrap();
    assert_eq!((t.id(), t.len()), (TaskId::Record, want.n));
    let e = super_glue::load_from(TaskId::Record, &data_dir())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("record::load_from"), "{e}");
}

fn run(task: &dyn Task) -> scalpel::tasks::TaskReport {
    let mut progress = |_, _| {};
    let mut cx = RunContext::new(common::smollm2(), &mut progress);
    cx.batch_size = 4;
    task.run(&mut cx).unwrap()
}

fn worst(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn check_choice_scores(task: TaskId) {
    let fx = fixture();
    let want = &fx.tasks[task.name()];
    let t = super_glue::load_from(task, &data_dir()).unwrap();
    let report = run(&t);
    assert_eq!(report.n, want.n);
    let mut max_d = 0f64;
    for (got, w) in report.items.iter().zip(&want.items) {
        let ItemScore::Choice(c) = got else {
            panic!("{task}: not a choice item: {got:?}")
        };
        assert_eq!(c.idx, w.idx);
        let d = worst(&c.loglikelihoods, &w.loglikelihoods);
        max_d = max_d.max(d);
        assert!(
            d < 1e-3,
            "{task} item {}: log-likelihoods differ by {d}",
            w.idx
        );
        assert_eq!(c.pred, w.pred, "{task} item {}: prediction", w.idx);
        assert_eq!(
            got.values()["acc"],
            w.metrics["acc"],
            "{task} item {}: acc",
            w.idx
        );
    }
    eprintln!(
        "{task}: n {}  {:?}  worst |Δll| {max_d:.2e}",
        report.n, report.metrics
    );
    assert_metrics(task, &report.metrics, &want.metrics);
}

#[test]
fn wic_matches_the_harness() {
    check_choice_scores(TaskId::Wic);
}

#[test]
fn wsc_matches_the_harness() {
    check_choice_scores(TaskId::Wsc);
}

/// acc and f1a as the harness computes them, with its [yes, no] choice order against
/// `label` (see `super_glue::multirc`).
#[test]
fn multirc_matches_the_harness() {
    check_choice_scores(TaskId::Multirc);
}

#[test]
fn record_matches_the_harness() {
    let fx = fixture();
    let want = &fx.tasks["record"];
    let t = record::load_from(&data_dir()).unwrap();
    let report = run(&t);
    assert_eq!(report.n, want.n);
    let mut max_d = 0f64;
    for (got, w) in report.items.iter().zip(&want.items) {
        let ItemScore::Record(r) = got else {
            panic!("record: not a record item: {got:?}")
        };
        assert_eq!(r.idx, w.idx);
        let d = worst(&r.loglikelihoods, &w.loglikelihoods);
        max_d = max_d.max(d);
        assert!(
            d < 1e-3,
            "record item {}: log-likelihoods differ by {d}",
            w.idx
        );
        assert_eq!(r.pred, w.pred, "record item {}: prediction", w.idx);
        assert_eq!(Some(&r.prediction), w.prediction.as_ref());
        assert_eq!(r.answers, w.answers);
        assert_eq!(r.f1, w.metrics["f1"], "record item {}: f1", w.idx);
        assert_eq!(r.em, w.metrics["em"], "record item {}: em", w.idx);
        assert_eq!(got.values()["f1"], r.f1);
    }
    eprintln!(
        "record: n {}  {:?}  worst |Δll| {max_d:.2e}",
        report.n, report.metrics
    );
    assert_metrics(TaskId::Record, &report.metrics, &want.metrics);
}

/// ReCoRD's scoring on the harness's predictions alone (no model): per-item f1/em.
#[test]
fn record_scores_the_harness_s_predictions_alike() {
    let fx = fixture();
    let want = &fx.tasks["record"];
    let t = record::load_from(&data_dir()).unwrap();
    for (d, w) in t.items.iter().zip(&want.items) {
        let s = record::score_doc(d, w.loglikelihoods.clone());
        assert_eq!(s.pred, w.pred);
        assert_eq!(
            (s.f1, s.em),
            (w.metrics["f1"], w.metrics["em"]),
            "item {}",
            w.idx
        );
    }
}

fn write_jsonl(path: &Path, rows: &[serde_json::Value]) {
    let mut s = String::new();
    for r in rows {
        s.push_str(&serde_json::to_string(r).unwrap());
        s.push('\n');
    }
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, s).unwrap();
}

/// The harness's helpers on edge inputs: general_detokenize, WSC's doc_to_text (pronoun
/// first, tabs and double spaces, non-ASCII), MultiRC's literal_eval'd choices (escapes,
/// quotes, CR/LF), and SQuAD normalisation / F1 / exact match.
#[test]
fn edge_cases_match_the_harness_helpers() {
    let fx = fixture();
    for c in &fx.cases.general_detokenize {
        assert_eq!(
            super_glue::general_detokenize(&c.input),
            c.output,
            "{:?}",
            c.input
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("wsc.jsonl");
    let docs: Vec<_> = fx
        .cases
        .wsc_doc_to_text
        .iter()
        .map(|c| c.doc.clone())
        .collect();
    write_jsonl(&p, &docs);
    let t = super_glue::load_from(TaskId::Wsc, &p).unwrap();
    for (got, c) in t.items.iter().zip(&fx.cases.wsc_doc_to_text) {
        assert_eq!(got.context, c.text);
    }
    let p = dir.path().join("multirc.jsonl");
    let docs: Vec<_> = fx
        .cases
        .multirc_doc_to_choice
        .iter()
        .map(|c| serde_json::json!({"paragraph": "P", "question": "Q", "answer": c.answer, "label": 0}))
        .collect();
    write_jsonl(&p, &docs);
    let t = super_glue::load_from(TaskId::Multirc, &p).unwrap();
    for (got, c) in t.items.iter().zip(&fx.cases.multirc_doc_to_choice) {
        let want: Vec<String> = c.choices.iter().map(|s| format!(" {s}")).collect();
        assert_eq!(got.continuations, want, "{:?}", c.answer);
    }
    for c in &fx.cases.squad {
        assert_eq!(
            squad::normalize_answer(&c.gold),
            c.normalized_gold,
            "{:?}",
            c.gold
        );
        assert_eq!(
            squad::compute_f1(&c.gold, &c.pred),
            c.f1,
            "{:?} {:?}",
            c.gold,
            c.pred
        );
        assert_eq!(
            squad::compute_exact(&c.gold, &c.pred),
            c.exact,
            "{:?} {:?}",
            c.gold,
            c.pred
        );
    }
}

fn load_err(task: TaskId, path: &Path) -> String {
    match super_glue::load(task, Some(path)) {
        Ok(_) => panic!("{task}: {} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_rows_are_errors_naming_file_row_and_field() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let wic = |s1: &str, a: i64, b: i64| {
        json!({"word": "w", "sentence1": s1, "sentence2": "x", "start1": a, "end1": b,
               "start2": 0, "end2": 1, "idx": 0, "label": 0})
    };
    let p = dir.path().join("wic.jsonl");
    write_jsonl(
        &p,
        &[wic("Room and board.", 9, 14), wic("Room and board.", 9, 16)],
    );
    let e = load_err(TaskId::Wic, &p);
    assert!(
        e.contains("wic.jsonl: row 1: field 'end1'") && e.contains("16"),
        "{e}"
    );
    write_jsonl(&p, &[wic("café", 4, 5)]);
    let e = load_err(TaskId::Wic, &p);
    assert!(e.contains("row 0: field 'start1'"), "{e}");
    write_jsonl(&p, &[wic("café", 2, 2)]);
    assert!(load_err(TaskId::Wic, &p).contains("row 0: field 'end1'"));

    let p = dir.path().join("wsc.jsonl");
    let wsc = |k: i64| {
        json!({"text": "He left.", "span1_index": 0, "span2_index": k, "span1_text": "x",
               "span2_text": "He", "idx": 0, "label": 1})
    };
    write_jsonl(&p, &[wsc(0), wsc(2)]);
    let e = load_err(TaskId::Wsc, &p);
    assert!(
        e.contains("wsc.jsonl: row 1: field 'span2_index'") && e.contains("past the text"),
        "{e}"
    );
    write_jsonl(
        &p,
        &[json!({"text": "He left.", "span2_index": 0, "span2_text": "He", "label": 1})],
    );
    assert!(load_err(TaskId::Wsc, &p).contains("row 0: field 'span1_text': missing"));

    let p = dir.path().join("multirc.jsonl");
    write_jsonl(
        &p,
        &[json!({"paragraph": "P", "question": "Q", "answer": "a '''quoted''' one", "label": 1})],
    );
    let e = load_err(TaskId::Multirc, &p);
    assert!(
        e.contains("multirc.jsonl: row 0: field 'answer'") && e.contains("'''"),
        "{e}"
    );
    write_jsonl(
        &p,
        &[json!({"paragraph": "P", "question": "Q", "answer": "a", "label": 2})],
    );
    assert!(load_err(TaskId::Multirc, &p).contains("row 0: field 'label'"));

    let p = dir.path().join("record.jsonl");
    let rec = |q: &str, ents: serde_json::Value, answers: serde_json::Value| {
        json!({"passage": "A met B.\n@highlight\nA met B", "query": q, "entities": ents,
               "answers": answers})
    };
    write_jsonl(
        &p,
        &[
            rec("@placeholder met B", json!(["A", "B"]), json!(["A"])),
            rec("A met B", json!(["A", "B"]), json!(["A"])),
        ],
    );
    assert!(load_err(TaskId::Record, &p).contains("record.jsonl: row 1: field 'query'"));
    write_jsonl(
        &p,
        &[rec("@placeholder met B", json!(["A", "B"]), json!([]))],
    );
    assert!(load_err(TaskId::Record, &p).contains("row 0: field 'answers'"));
    write_jsonl(&p, &[rec("@placeholder met B", json!("A"), json!(["A"]))]);
    assert!(load_err(TaskId::Record, &p).contains("row 0: field 'entities'"));
    write_jsonl(
        &p,
        &[rec("@placeholder met B", json!(["A", 3]), json!(["A"]))],
    );
    assert!(load_err(TaskId::Record, &p).contains("row 0: field 'entities': item 1"));

    // A directory of shards: items count across shards, errors name the shard and its row.
    let d = dir.path().join("hub");
    write_jsonl(
        &d.join("wic/validation-00000-of-00002.jsonl"),
        &[wic("Room and board.", 9, 14)],
    );
    write_jsonl(
        &d.join("wic/validation-00001-of-00002.jsonl"),
        &[wic("Room and board.", 0, 4), wic("Room and board.", -1, 4)],
    );
    let e = load_err(TaskId::Wic, &d);
    assert!(
        e.contains("validation-00001-of-00002.jsonl: row 1: field 'start1'"),
        "{e}"
    );
    write_jsonl(
        &d.join("wic/validation-00001-of-00002.jsonl"),
        &[wic("Room and board.", 0, 4)],
    );
    let t = super_glue::load_from(TaskId::Wic, &d).unwrap();
    assert_eq!(t.items.iter().map(|i| i.idx).collect::<Vec<_>>(), [0, 1]);
    assert!(t.items[1].context.contains("the word 'Room'"));
    let e = load_err(TaskId::Wsc, &d);
    assert!(
        e.contains("no validation data") && e.contains("wsc.fixed/validation"),
        "{e}"
    );
}

/// Tasks without an offline copy say so instead of pointing at a missing asset.
#[test]
fn hub_only_tasks_have_no_offline_path() {
    for task in [TaskId::Wic, TaskId::Wsc, TaskId::Multirc, TaskId::Record] {
        assert!(!super_glue::runs_offline(task));
        let e = super_glue::data_path(task).unwrap_err().to_string();
        assert!(e.contains("aps/super_glue") && e.contains("--data"), "{e}");
    }
    for task in [TaskId::Boolq, TaskId::Cb, TaskId::Copa, TaskId::Rte] {
        assert!(super_glue::runs_offline(task));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_tree(&p, &to.join(e.file_name()));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn eval_cli(hf_home: &Path, task: &str, limit: usize) -> std::process::Output {
    let limit = limit.to_string();
    std::process::Command::new(env!("CARGO_BIN_EXE_scalpel"))
        .args([
            "eval",
            "--task",
            task,
            "--json",
            "--device",
            "cpu",
            "--batch-size",
            "4",
            "--limit",
            &limit,
        ])
        .env("HF_HOME", hf_home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

/// With no `--data`, WiC, WSC, MultiRC and ReCoRD come from the hub dataset
/// `aps/super_glue` through the hub cache: here a temporary `HF_HOME` holding the fixtures
/// at `hub/datasets--aps--super_glue/snapshots/<sha>/<config>/validation-00000-of-00001.parquet`
/// with `refs/main`, read in offline mode by `scalpel eval`. With an empty cache, offline,
/// the error says the task needs the network or `--data`.
#[test]
fn hub_cache_in_offline_mode() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let repo = tmp.path().join("hub/datasets--aps--super_glue");
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::write(repo.join("refs/main"), sha).unwrap();
    copy_tree(&data_dir(), &repo.join("snapshots").join(sha));
    // All of WiC (short prompts); the first two ReCoRD queries (long ones).
    for (task, limit) in [("wic", 7), ("record", 2)] {
        let out = eval_cli(tmp.path(), task, limit);
        assert!(
            out.status.success(),
            "{task}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let want = &fx.tasks[task];
        let n = limit.min(want.n);
        assert_eq!(v["n"], n);
        let preds: Vec<usize> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["pred"].as_u64().unwrap() as usize)
            .collect();
        let want_preds: Vec<usize> = want.items[..n].iter().map(|i| i.pred).collect();
        assert_eq!(preds, want_preds, "{task}");
        if n < want.n {
            continue;
        }
        for (k, w) in &want.metrics {
            assert!(
                (v["metrics"][k].as_f64().unwrap() - w).abs() < 1e-12,
                "{task} {k}"
            );
        }
    }

    let empty = tempfile::tempdir().unwrap();
    let out = eval_cli(empty.path(), "multirc", 1);
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("aps/super_glue") && e.contains("network") && e.contains("--data"),
        "{e}"
    );
}
