//! Collateral damage per group: `perplexity_bbq` (BBQ's ambiguous contexts, benign text
//! about groups) and gates taken per group, which name each group and fail for an
//! intervention that degrades text about groups.

mod common;

use scalpel::tasks::{self, LoadOptions, TaskId};

#[test]
fn perplexity_bbq_holds_each_benign_context_once_interleaved_across_groups() {
    let t = tasks::load(TaskId::PerplexityBbq, &LoadOptions::default()).unwrap();
    let groups = TaskId::PerplexityBbq.groups().unwrap();
    assert_eq!(groups.len(), 11);
    let texts: Vec<String> = (0..t.len()).map(|i| t.item_text(i).unwrap()).collect();
    let unique: std::collections::HashSet<&String> = texts.iter().collect();
    assert_eq!(unique.len(), texts.len(), "a context appears twice");
    assert!(texts.len() > 1000, "{} contexts", texts.len());
    // The first 11 items are one context of each group, so any --limit keeps them all.
    let limited = tasks::load(
        TaskId::PerplexityBbq,
        &LoadOptions {
            limit: Some(22),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(limited.len(), 22);
    eprintln!("{} contexts; first: {:?}", texts.len(), texts[0]);
}

#[test]
fn per_group_gates_name_each_group_and_fail_for_an_intervention_that_degrades_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // On SmolLM2 (the tiny test model predicts too poorly to lose much): zeroing the
    // residual stream after block 2 wrecks every text, so each group's
    // non-inferiority gate must fail; an offset of 0.01 times the fitted vector barely
    // moves anything.
    std::fs::write(
        dir.join("wreck.yaml"),
        "kind: ablate\nsites: [blocks.2.hook_resid_post]\n\
         harmful: [{task: realtoxicityprompts, limit: 6}]\n\
         harmless: [{task: lambada_openai, limit: 6}]\nmax_tokens: 16\nablate: {mode: zero}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("gentle.yaml"),
        "kind: offset\nsites: [blocks.10.hook_resid_post]\n\
         harmful: [{task: realtoxicityprompts, limit: 6}]\n\
         harmless: [{task: lambada_openai, limit: 6}]\nmax_tokens: 16\noffset: {alpha: 0.01}\n",
    )
    .unwrap();
    let suite = dir.join("groups.yaml");
    std::fs::write(
        &suite,
        "name: groups\n\
         interventions:\n  - {name: none}\n  - {name: wreck, fit: wreck.yaml}\n  \
         - {name: gentle, fit: gentle.yaml}\n\
         tasks:\n  - {task: perplexity_bbq, split: eval, limit: 220}\n\
         gates:\n  - {task: perplexity_bbq, metric: nll_per_token, non_inferiority: 0.0488, per_group: true}\n",
    )
    .unwrap();
    let home = common::fresh_home(dir);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_scalpel"))
        .args(["test", suite.to_str().unwrap()])
        .args(["--device", "cpu", "--runs"])
        .arg(dir.join("runs"))
        .env("SCALPEL_HOME", &home)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(101), "{out}\n{err}");
    let run_dir = common::only_dir(&dir.join("runs"));
    let r = scalpel::store::tables::Run::read(&run_dir).unwrap();
    assert_eq!(r.verdicts.len(), 22, "{:?}", r.verdicts);
    for g in TaskId::PerplexityBbq.groups().unwrap() {
        for iv in ["wreck", "gentle"] {
            let name = format!("{iv}::perplexity_bbq::nll_per_token[{g}]");
            let v = r
                .verdicts
                .iter()
                .find(|v| v.trial == name)
                .unwrap_or_else(|| panic!("no trial {name}: {out}"));
            // Each group's gate reads its own items: about a tenth of the 220.
            let n = v.n.unwrap();
            assert!((5..=40).contains(&n), "{name}: n = {n}");
            if iv == "wreck" {
                assert_eq!(v.outcome, "fail", "{name}: {v:?}");
            } else {
                assert_ne!(v.outcome, "fail", "{name}: {v:?}");
            }
        }
    }
    assert!(r.meta.contains_key("seconds.wreck::perplexity_bbq"));
}
