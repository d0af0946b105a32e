//! One case (an intervention × a task) run in parts: a few prompts or a few dozen items
//! at a time, each part journalled when it completes, so a rerun after an interruption
//! reads the finished parts back and computes only the rest. Parts run the task itself
//! on a subset of its items; items are scored independently (sampling seeds come from
//! each prompt's text), so a run in parts equals a run in one go.

use std::ops::Range;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::run::HarnessError;
use crate::store::Journal;
use crate::tasks::{Family, ItemScore, RunContext, Task, TaskReport};

/// Items per part: a part should take seconds, not minutes, so little is lost to a kill.
/// A generation task's part is a whole number of decoding groups (at least 5 prompts):
/// prompts decode together in groups of up to `batch_rows()` samples, and a part's last
/// group short of prompts would read the weights for fewer rows.
pub fn part_size(task: &dyn Task) -> usize {
    match task.id().family() {
        Family::Toxicity => {
            let samples = task.protocol().map_or(1, |p| p.samples.max(1));
            let group = (crate::model::generate::batch_rows() / samples).max(1);
            group * 5usize.div_ceil(group)
        }
        _ => 64,
    }
}

/// The identity of the items at `range`: a hash of their keys, so a part is reused only
/// for exactly the items it scored.
pub(crate) fn part_key(task: &dyn Task, range: Range<usize>) -> String {
    let mut h = Sha256::new();
    h.update(task.id().name().as_bytes());
    for i in range {
        let k = task.item_key(i);
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
    }
    format!("{:x}", h.finalize())[..24].to_string()
}

/// What a case run did: parts computed now and parts read back from the journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartCounts {
    pub computed: usize,
    pub reused: usize,
}

/// Run `task` in parts through `cx`, reusing and extending `journal` when given.
pub fn run_case(
    intervention: &str,
    task: &dyn Task,
    cx: &mut RunContext<'_>,
    mut journal: Option<&mut Journal>,
) -> Result<(TaskReport, PartCounts), HarnessError> {
    let n = task.len();
    let size = part_size(task);
    let mut items: Vec<ItemScore> = Vec::with_capacity(n);
    let mut counts = PartCounts::default();
    let store_err = |source| HarnessError::Store {
        what: format!("{intervention}::{}", task.id()),
        source: Box::new(source),
    };
    let RunContext {
        model,
        batch_size,
        progress,
        scorer,
        seed,
        hooks,
        prefix,
    } = cx;
    let mut start = 0;
    while start < n {
        let range = start..(start + size).min(n);
        let key = part_key(task, range.clone());
        let reused = journal
            .as_deref()
            .and_then(|j| j.get(&key))
            .and_then(|p| {
                p.items
                    .iter()
                    .map(|v| ItemScore::from_value(task.id(), v.clone()).ok())
                    .collect::<Option<Vec<_>>>()
            })
            .filter(|v| v.len() == range.len());
        let part = match reused {
            Some(v) => {
                counts.reused += 1;
                v
            }
            None => {
                let began = Instant::now();
                let mut sub = task.clone_box();
                sub.retain(&range.clone().collect::<Vec<_>>());
                let (before, len) = (items.len(), range.len());
                let mut inner = |d: usize, t: usize| (progress)(before + d * len / t.max(1), n);
                let mut pcx = RunContext {
                    model,
                    batch_size: *batch_size,
                    progress: &mut inner,
                    scorer: *scorer,
                    seed: *seed,
                    hooks: hooks.clone(),
                    prefix: prefix.clone(),
                };
                let report = match sub.run(&mut pcx) {
                    Ok(r) => r,
                    Err(e) if e.is_numeric() => {
                        return Err(isolate(intervention, task, range, &mut pcx, e))
                    }
                    Err(e) => {
                        return Err(HarnessError::Task {
                            intervention: intervention.to_string(),
                            task: task.id(),
                            source: Box::new(e),
                        })
                    }
                };
                if let Some((k, it)) = report
                    .items
                    .iter()
                    .enumerate()
                    .find(|(_, it)| it.values().values().any(|v| !v.is_finite()))
                {
                    let bad: Vec<String> = it
                        .values()
                        .into_iter()
                        .filter(|(_, v)| !v.is_finite())
                        .map(|(m, v)| format!("{m} = {v}"))
                        .collect();
                    return Err(HarnessError::Case {
                        intervention: intervention.to_string(),
                        task: task.id(),
                        item: describe_item(task, range.start + k),
                        message: format!("scored {}", bad.join(", ")),
                    });
                }
                if let Some(j) = journal.as_deref_mut() {
                    j.append(&key, began.elapsed().as_secs_f64(), &report.items)
                        .map_err(store_err)?;
                }
                counts.computed += 1;
                report.items
            }
        };
        items.extend(part);
        (progress)(items.len(), n);
        start = range.end;
    }
    Ok((
        TaskReport::from_items(task.id(), &model.name, items),
        counts,
    ))
}

/// The failure of a part, pinned to its first item that fails alone: the message names
/// the item a user can look up, not a batch.
fn isolate(
    intervention: &str,
    task: &dyn Task,
    range: Range<usize>,
    cx: &mut RunContext<'_>,
    first: crate::tasks::TaskError,
) -> HarnessError {
    let case = |item: String, e: &crate::tasks::TaskError| HarnessError::Case {
        intervention: intervention.to_string(),
        task: task.id(),
        item,
        message: e.to_string(),
    };
    for i in range.clone() {
        let mut one = task.clone_box();
        one.retain(&[i]);
        if let Err(e) = one.run(cx) {
            return case(describe_item(task, i), &e);
        }
    }
    // Alone every item is fine: the batch as a whole failed (e.g. padding).
    case(
        format!("items {}..{} together", range.start, range.end),
        &first,
    )
}

/// `item 12 ("The man broke his toe…")`: its position in the case and the start of its
/// key, which is drawn from its content.
pub(crate) fn describe_item(task: &dyn Task, i: usize) -> String {
    // Keys join an item's fields with a unit separator; a reader wants a visible one.
    let key = task.item_key(i).replace('\u{1f}', " | ");
    let mut short: String = key.chars().take(48).collect();
    if short.len() < key.len() {
        short.push('…');
    }
    format!("item {i} ({short:?})")
}
