//! Sharded runs: `scalpel test --shard K/N` scores a deterministic, cost-balanced share
//! of every task's items, and `scalpel merge` makes the shards into the run an unsharded
//! invocation gives, with its verdicts recomputed on the union.

mod common;

// Only its comparison of two runs is used here.
#[path = "common/slurm.rs"]
mod slurm;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use scalpel::harness::shard::Shard;
use scalpel::store::tables::Run;
use scalpel::tasks::{self, LoadOptions, SplitSel, TaskId};

fn scalpel(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scalpel"));
    c.args(args);
    for k in [
        "SCALPEL_SHARD",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_COUNT",
        "JOB_COMPLETION_INDEX",
        "SCALPEL_SHARD_COUNT",
    ] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run scalpel")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn shards_partition_every_task_and_balance_its_cost() {
    for (id, limit) in [
        (TaskId::Copa, None),
        (TaskId::Realtoxicityprompts, Some(60)),
    ] {
        let opts = LoadOptions {
            split: SplitSel::Eval,
            limit,
            ..LoadOptions::default()
        };
        let task = tasks::load(id, &opts).unwrap();
        let n = task.len();
        let cost = |i: usize| task.item_key(i).len() + 1;
        let biggest = (0..n).map(cost).max().unwrap();
        for count in [1, 2, 3, 7] {
            let mut seen = vec![0u32; n];
            let mut loads = Vec::new();
            for index in 1..=count {
                let mine = Shard { index, count }.select(task.as_ref());
                assert!(mine.windows(2).all(|w| w[0] < w[1]), "in the task's order");
                for &i in &mine {
                    seen[i] += 1;
                }
                loads.push(mine.iter().map(|&i| cost(i)).sum::<usize>());
                // The same call gives the same share (no state, no randomness).
                assert_eq!(mine, Shard { index, count }.select(task.as_ref()));
            }
            assert!(
                seen.iter().all(|&k| k == 1),
                "{id} {count}: every item exactly once"
            );
            let (lo, hi) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
            assert!(hi - lo <= biggest, "{id} {count} shards: loads {loads:?}");
        }
    }
}

#[test]
fn three_merged_shards_equal_the_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let suite = common::small_suite(dir.path(), "sharded");
    let s = suite.to_str().unwrap();
    let whole_root = dir.path().join("whole");
    let o = scalpel(
        &[
            "test",
            s,
            "--device",
            "cpu",
            "--runs",
            whole_root.to_str().unwrap(),
        ],
        &[],
    );
    let whole_out = text(&o.stdout);
    assert!(o.status.code().is_some(), "{}", text(&o.stderr));
    let whole = Run::read(&common::only_dir(&whole_root)).unwrap();

    // Shard 1 by flag, 2 through a CI matrix's variable, 3 as a Slurm array task (0-based
    // array ids 0..2).
    let shard_root = dir.path().join("shards");
    let r = shard_root.to_str().unwrap();
    for (args, env) in [
        (vec!["--shard", "1/3"], vec![]),
        (vec!["--shard", "auto"], vec![("SCALPEL_SHARD", "2/3")]),
        (
            vec!["--shard", "auto"],
            vec![
                ("SLURM_ARRAY_TASK_ID", "2"),
                ("SLURM_ARRAY_TASK_MIN", "0"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ],
        ),
    ] {
        let mut a = vec!["test", s, "--device", "cpu", "--runs", r];
        a.extend(args);
        let o = scalpel(&a, &env);
        let out = text(&o.stdout);
        assert!(o.status.success(), "{out}{}", text(&o.stderr));
        assert!(out.contains("verdicts come from scalpel merge"), "{out}");
        assert!(!out.contains("test ["), "a shard prints no verdicts: {out}");
    }
    let mut shards: Vec<PathBuf> = fs::read_dir(&shard_root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    shards.sort();
    assert_eq!(shards.len(), 3, "{shards:?}");
    let parts: Vec<Run> = shards.iter().map(|d| Run::read(d).unwrap()).collect();
    let n_whole = whole.items.len();
    for p in &parts {
        let n = p.items.len();
        assert!(
            n > 0 && n < n_whole,
            "each shard holds a share: {n} of {n_whole}"
        );
        assert!(p.verdicts.is_empty());
    }

    // Not every shard: refused, naming the one missing.
    let merged = dir.path().join("merged");
    let m = merged.to_str().unwrap();
    let some: Vec<&str> = shards[..2].iter().map(|p| p.to_str().unwrap()).collect();
    let mut a = vec!["merge"];
    a.extend(&some);
    a.extend(["--out", m]);
    let o = scalpel(&a, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("3/3"), "{}", text(&o.stderr));
    let twice = [some[0], some[0], some[1]];
    let mut a = vec!["merge"];
    a.extend(twice);
    a.extend(["--out", m]);
    let o = scalpel(&a, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("twice"), "{}", text(&o.stderr));

    let all: Vec<&str> = shards.iter().map(|p| p.to_str().unwrap()).collect();
    let mut a = vec!["merge"];
    a.extend(&all);
    a.extend(["--out", m]);
    let o = scalpel(&a, &[]);
    let merged_out = text(&o.stdout);
    assert_eq!(
        o.status.code(),
        whole_out
            .contains("test result: ok")
            .then_some(0)
            .or(Some(101)),
        "{merged_out}{}",
        text(&o.stderr)
    );
    let back = Run::read(&merged).unwrap();

    // The same items with the same scores (batches differ between the runs, so the
    // log-likelihoods may differ in float rounding, nothing more), and the same
    // verdicts, computed on the union.
    slurm::compare(&whole, &back).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(back.verdicts.len(), 4);
    assert!(merged.join("report.html").exists());
    assert!(merged_out.contains("merged 3 shards"), "{merged_out}");
}
