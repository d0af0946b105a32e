//! Score a multiple-choice task: one log-likelihood per (item, choice), prediction by
//! the highest summed log-probability (the harness's `acc`), per-item results kept so
//! that statistics can pair items across interventions.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::LoadedModel;
use crate::score::loglik::{loglikelihood, LoglikRequest};

use super::{ChoiceTask, TaskError, TaskId};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ItemResult {
    pub idx: usize,
    pub pred: usize,
    pub label: usize,
    pub loglikelihoods: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvalReport {
    pub task: String,
    pub model: String,
    pub n: usize,
    pub metrics: BTreeMap<String, f64>,
    pub items: Vec<ItemResult>,
}

/// Score every item; `on_progress(done, total)` after each batch of requests.
pub fn evaluate(
    model: &LoadedModel,
    task: &ChoiceTask,
    batch_size: usize,
    mut on_progress: impl FnMut(usize, usize),
) -> Result<EvalReport, TaskError> {
    let reqs: Vec<(usize, LoglikRequest)> = task
        .items
        .iter()
        .enumerate()
        .flat_map(|(i, it)| {
            it.continuations
                .iter()
                .map(move |c| (i, LoglikRequest::new(&it.context, c)))
        })
        .collect();
    let mut lls: Vec<Vec<f64>> = vec![Vec::new(); task.items.len()];
    let chunk = batch_size.max(1) * 4;
    let mut done = 0;
    for part in reqs.chunks(chunk) {
        let rs: Vec<LoglikRequest> = part.iter().map(|(_, r)| r.clone()).collect();
        let out = loglikelihood(model, &rs, batch_size)?;
        for ((i, _), o) in part.iter().zip(out) {
            lls[*i].push(o.logprob);
        }
        done += part.len();
        on_progress(done, reqs.len());
    }
    let items: Vec<ItemResult> = task
        .items
        .iter()
        .zip(lls)
        .map(|(it, ll)| ItemResult {
            idx: it.idx,
            pred: argmax(&ll),
            label: it.label,
            loglikelihoods: ll,
        })
        .collect();
    let mut metrics = BTreeMap::new();
    metrics.insert("acc".to_string(), accuracy(&items));
    if task.id == TaskId::Cb {
        metrics.insert("f1".to_string(), macro_f1(&items, 3));
    }
    Ok(EvalReport {
        task: task.id.to_string(),
        model: model.name.clone(),
        n: items.len(),
        metrics,
        items,
    })
}

/// First index of the maximum (ties go to the earlier choice, like numpy's argmax).
fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs[best] {
            best = i;
        }
    }
    best
}

pub fn accuracy(items: &[ItemResult]) -> f64 {
    items.iter().filter(|i| i.pred == i.label).count() as f64 / items.len().max(1) as f64
}

/// Unweighted mean over classes of the per-class F1 (the harness's `cb_multi_fi`).
pub fn macro_f1(items: &[ItemResult], n_classes: usize) -> f64 {
    let per_class = (0..n_classes).map(|c| {
        let tp = items.iter().filter(|i| i.pred == c && i.label == c).count() as f64;
        let fp = items.iter().filter(|i| i.pred == c && i.label != c).count() as f64;
        let fn_ = items.iter().filter(|i| i.pred != c && i.label == c).count() as f64;
        if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + fn_)
        }
    });
    per_class.sum::<f64>() / n_classes as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn it(pred: usize, label: usize) -> ItemResult {
        ItemResult {
            idx: 0,
            pred,
            label,
            loglikelihoods: vec![],
        }
    }

    #[test]
    fn macro_f1_matches_a_worked_example() {
        // sklearn: f1_score([0,0,1,2,2], [0,1,1,2,0], average=None) = [0.5, 0.6667, 0.6667]
        let items = [it(0, 0), it(1, 0), it(1, 1), it(2, 2), it(0, 2)];
        let f1 = macro_f1(&items, 3);
        assert!(
            (f1 - (0.5 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12,
            "{f1}"
        );
        assert!((accuracy(&items) - 0.6).abs() < 1e-12);
        assert_eq!(argmax(&[-1.0, -0.5, -0.5]), 1);
    }
}
