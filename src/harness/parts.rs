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
pub fn part_size(task: &dyn Task) -> usize {
    match task.id().family() {
        Family::Toxicity => 5,
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
                };
                let report = sub.run(&mut pcx).map_err(|e| HarnessError::Task {
                    intervention: intervention.to_string(),
                    task: task.id(),
                    source: Box::new(e),
                })?;
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
