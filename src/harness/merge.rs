//! `scalpel merge`: the shards of one run made into the run itself. Every shard's share
//! of every case is read back part by part from its journal, exactly as the shard
//! computed it (the partition is recomputed from the task, so a missing or foreign part
//! is an error, never a hole), the items are put back in the task's order, and the
//! statistics and verdicts are computed on the union, as an unsharded run computes
//! them: never from the shards' own numbers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::parts::{part_key, part_size, PartCounts};
use super::record::{self, RunInfo};
use super::run::{load_task, verdicts, HarnessError, RunOutput};
use super::session::{Stored, SUITE_COPY};
use super::shard::Shard;
use super::suite::Suite;
use crate::store::tables::Run;
use crate::store::{self, Journal, RunDir};
use crate::tasks::{ItemScore, TaskId, TaskReport};

fn bad(message: String) -> HarnessError {
    HarnessError::Merge { message }
}

fn store_err(what: &Path) -> impl FnOnce(store::StoreError) -> HarnessError + '_ {
    move |source| HarnessError::Store {
        what: what.display().to_string(),
        source: Box::new(source),
    }
}

/// One shard's directory, its tables and which shard it is.
struct ShardRun {
    dir: PathBuf,
    run: Run,
    shard: Shard,
}

/// Merge the shard runs in `dirs` into the run directory `out`, which must not hold a
/// finished run yet. Returns where the merged run and its report went.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<(RunOutput, Stored), HarnessError> {
    if dirs.is_empty() {
        return Err(bad("give the shard run directories to merge".into()));
    }
    let mut shards = Vec::new();
    for d in dirs {
        let run = Run::read(d).map_err(store_err(d))?;
        let shard: Shard = run
            .meta("shard")
            .parse()
            .map_err(|e| bad(format!("{}: not a shard run ({e})", d.display())))?;
        shards.push(ShardRun {
            dir: d.clone(),
            run,
            shard,
        });
    }
    check_complete(&shards)?;
    shards.sort_by_key(|s| s.shard.index);
    let first = &shards[0];

    // The suite the shards ran, from the copy each keeps.
    let out_name = out
        .file_name()
        .ok_or_else(|| bad(format!("--out {}: name a directory", out.display())))?
        .to_string_lossy()
        .into_owned();
    let root = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(root)
        .map_err(store::io_err(root))
        .map_err(store_err(root))?;
    let dir = RunDir::open(root, &out_name).map_err(store_err(out))?;
    if dir.dir.join(store::tables::VERDICTS).exists() {
        return Err(bad(format!(
            "{}: already holds a finished run; merge into a new directory",
            out.display()
        )));
    }
    let copy = first.dir.join(SUITE_COPY);
    let text = std::fs::read_to_string(&copy)
        .map_err(store::io_err(&copy))
        .map_err(store_err(&copy))?;
    let suite_path = dir
        .write_atomic(SUITE_COPY, text.as_bytes())
        .map_err(store_err(out))?;
    let suite = Suite::parse(&suite_path, &text).map_err(|e| bad(e.to_string()))?;
    let model = first.run.meta("model").to_string();
    let suite = if suite.models.len() > 1 {
        suite.for_model(&model)
    } else {
        suite
    };

    // A case that failed in any shard failed in the run.
    let mut failed: BTreeMap<(String, TaskId), String> = BTreeMap::new();
    for s in &shards {
        for (k, why) in record::failed_cases(&s.run.meta) {
            failed
                .entry(k)
                .or_insert_with(|| format!("shard {}: {why}", s.shard));
        }
    }
    // Each shard fitted the same attacks (the same inputs, so the same cache key); the
    // first shard's record of each stands for all.
    let mut attacks: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for s in &shards {
        for (case, v) in record::attack_fits(&s.run.meta) {
            attacks.entry(case).or_insert(v);
        }
    }
    // Every case any shard ran, from the journals.
    let mut reports: BTreeMap<(String, TaskId), TaskReport> = BTreeMap::new();
    let mut seconds: BTreeMap<String, f64> = BTreeMap::new();
    let mut parts = PartCounts::default();
    for t in &suite.tasks {
        let task = load_task(t).map_err(|e| bad(format!("{}: {e}", t.id)))?;
        // Each shard's share of this task, as the shard itself cut it: the same for
        // every intervention.
        let shares: Vec<(Vec<usize>, Box<dyn crate::tasks::Task>)> = shards
            .iter()
            .map(|s| {
                let keep = s.shard.select(task.as_ref());
                let mut sub = task.clone_box();
                sub.retain(&keep);
                (keep, sub)
            })
            .collect();
        for case in suite.cases() {
            let name = format!("{}--{}.jsonl", store::file_safe(&case), t.id);
            if failed.contains_key(&(case.clone(), t.id)) {
                continue;
            }
            if !shards
                .iter()
                .any(|s| s.dir.join("journal").join(&name).exists())
            {
                continue;
            }
            let mut slots: Vec<Option<ItemScore>> = vec![None; task.len()];
            for (s, (keep, sub)) in shards.iter().zip(&shares) {
                let path = s.dir.join("journal").join(&name);
                if keep.is_empty() {
                    continue;
                }
                // Opening creates a missing journal: a merge must not write into its
                // inputs, and a shard without one did not run the case.
                if !path.exists() {
                    return Err(bad(format!(
                        "{}: shard {} has no journal for {}::{}: the shard did not run \
                         this case (rerun it, then merge)",
                        s.dir.display(),
                        s.shard,
                        case,
                        t.id
                    )));
                }
                let journal = Journal::open(&path).map_err(store_err(&path))?;
                let size = part_size(sub.as_ref());
                let mut start = 0;
                while start < keep.len() {
                    let range = start..(start + size).min(keep.len());
                    let key = part_key(sub.as_ref(), range.clone());
                    let part = journal.get(&key).ok_or_else(|| {
                        bad(format!(
                            "{}: shard {} has no scores for items {}..{} of {}::{}: \
                             the shard did not finish this case (rerun it, then merge)",
                            s.dir.display(),
                            s.shard,
                            range.start,
                            range.end,
                            case,
                            t.id
                        ))
                    })?;
                    if part.items.len() != range.len() {
                        return Err(bad(format!(
                            "{}: a part of {}::{} holds {} items, expected {}",
                            path.display(),
                            case,
                            t.id,
                            part.items.len(),
                            range.len()
                        )));
                    }
                    for (pos, v) in range.clone().zip(&part.items) {
                        let item = ItemScore::from_value(t.id, v.clone()).map_err(|e| {
                            bad(format!("{}: unreadable item: {e}", path.display()))
                        })?;
                        slots[keep[pos]] = Some(item);
                    }
                    *seconds.entry(format!("{}::{}", case, t.id)).or_default() += part.seconds;
                    parts.reused += 1;
                    start = range.end;
                }
            }
            let items = slots
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    s.ok_or_else(|| bad(format!("{}::{} item {i}: no shard scored it", case, t.id)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            reports.insert(
                (case.clone(), t.id),
                TaskReport::from_items(t.id, &model, items),
            );
        }
    }

    // The verdicts of every trial whose cases are all here.
    let wanted: Vec<(usize, String)> = suite
        .gates
        .iter()
        .enumerate()
        .flat_map(|(gi, g)| g.interventions.iter().map(move |iv| (gi, iv.clone())))
        .filter(|(gi, iv)| {
            let g = &suite.gates[*gi];
            let level = g.gate.effect == crate::stats::paired::Effect::Level;
            let here = |k: (String, TaskId)| reports.contains_key(&k) || failed.contains_key(&k);
            here((g.case(iv), g.task)) && (level || here((g.case(&suite.reference), g.task)))
        })
        .collect();
    let trials = verdicts(&suite, &wanted, &reports, &failed, &attacks);
    let manifests = first.run.manifests().map_err(store_err(&first.dir))?;
    for (stage, v) in &first.run.meta {
        if let Some(fit) = stage.strip_prefix("seconds.fit ") {
            seconds.insert(format!("fit {fit}"), v.parse().unwrap_or(0.0));
        }
    }
    copy_traces(&shards, &dir)?;
    let wall = shards
        .iter()
        .map(|s| s.run.meta("wall_seconds").parse::<f64>().unwrap_or(0.0))
        .fold(0.0, f64::max);
    let started = shards
        .iter()
        .filter_map(|s| s.run.meta("started_unix").parse::<u64>().ok())
        .min()
        .unwrap_or(0);
    let m = |k: &str| first.run.meta(k).to_string();
    let info = RunInfo {
        model_name: model.clone(),
        model_path: m("model_path"),
        model_fingerprint: m("model_sha256"),
        model_arch: m("model_arch"),
        model_layers: m("model_layers").parse().unwrap_or(0),
        shard: None,
        group_id: m("group_id"),
        device: m("device"),
        selection: format!(
            "merged from {} shards: {}",
            shards.len(),
            shards
                .iter()
                .map(|s| s.run.meta("run_id").to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        build: m("build_sha256"),
        started_unix: started,
        // The shards ran side by side: the slowest one is the run's wall time.
        wall_seconds: wall,
    };
    let out_run = RunOutput {
        trials,
        reports,
        seconds,
        manifests,
        parts,
        failed,
        attacks,
    };
    record::write(&dir, &suite, &out_run, &info).map_err(store_err(out))?;
    let report = crate::report::render_run_dir(&dir.dir).map_err(|e| HarnessError::Report {
        message: e.to_string(),
    })?;
    Ok((
        out_run,
        Stored {
            dir: dir.dir.clone(),
            report,
        },
    ))
}

/// Shards `1..=N` of one run, each exactly once.
fn check_complete(shards: &[ShardRun]) -> Result<(), HarnessError> {
    let first = &shards[0];
    let (group, count) = (first.run.meta("group_id"), first.shard.count);
    let mut seen: BTreeMap<usize, &Path> = BTreeMap::new();
    for s in shards {
        if s.run.meta("group_id") != group {
            return Err(bad(format!(
                "{} is a shard of run {}, {} of run {}: only shards of one run merge",
                s.dir.display(),
                s.run.meta("group_id"),
                first.dir.display(),
                group
            )));
        }
        if s.shard.count != count {
            return Err(bad(format!(
                "{} is shard {}, {} is shard {}: the shard counts differ",
                s.dir.display(),
                s.shard,
                first.dir.display(),
                first.shard
            )));
        }
        if let Some(other) = seen.insert(s.shard.index, &s.dir) {
            return Err(bad(format!(
                "shard {} is given twice: {} and {}",
                s.shard,
                other.display(),
                s.dir.display()
            )));
        }
    }
    let missing: Vec<String> = (1..=count)
        .filter(|k| !seen.contains_key(k))
        .map(|k| format!("{k}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "shard{} {} of run {group} missing: a merge needs every shard",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", ")
        )));
    }
    Ok(())
}

/// The first shard draws the suite's traces; the merged run's report shows them.
fn copy_traces(shards: &[ShardRun], dir: &RunDir) -> Result<(), HarnessError> {
    for s in shards {
        let src = s.dir.join("traces");
        if !src.is_dir() {
            continue;
        }
        let dst = dir.dir.join("traces");
        std::fs::create_dir_all(&dst)
            .map_err(store::io_err(&dst))
            .map_err(store_err(&dst))?;
        for e in std::fs::read_dir(&src)
            .map_err(store::io_err(&src))
            .map_err(store_err(&src))?
        {
            let p = e
                .map_err(store::io_err(&src))
                .map_err(store_err(&src))?
                .path();
            if let Some(name) = p.file_name() {
                std::fs::copy(&p, dst.join(name))
                    .map_err(store::io_err(&p))
                    .map_err(store_err(&p))?;
            }
        }
        return Ok(());
    }
    Ok(())
}
