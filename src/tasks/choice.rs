//! Multiple choice by log-likelihood, the machinery every choice task shares: one
//! log-likelihood per (item, choice), the prediction is the highest summed
//! log-probability (the harness's `acc`), results kept per item so that statistics can
//! pair items across interventions. The choices of one item share their context, which
//! [`loglikelihood`] runs once into a KV cache.

use serde::{Deserialize, Serialize};

use crate::score::loglik::{loglikelihood, LoglikRequest, LoglikResponse};

use super::{RunContext, TaskError};

/// One multiple-choice item: the model scores `context + continuation` for each choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceItem {
    /// Row index in the dataset's own order.
    pub idx: usize,
    pub context: String,
    pub continuations: Vec<String>,
    pub label: usize,
}

impl ChoiceItem {
    /// Content key for the fit/eval split.
    pub fn key(&self) -> String {
        let mut k = self.context.clone();
        for c in &self.continuations {
            k.push('\u{1f}');
            k.push_str(c);
        }
        k
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChoiceResult {
    pub idx: usize,
    pub pred: usize,
    pub label: usize,
    pub loglikelihoods: Vec<f64>,
}

impl ChoiceResult {
    pub fn correct(&self) -> bool {
        self.pred == self.label
    }
}

/// Full responses (log-probability, greedy flag, token count) per item and choice,
/// for tasks whose metrics need more than the summed log-probability.
pub fn score_responses(
    cx: &mut RunContext<'_>,
    items: &[ChoiceItem],
) -> Result<Vec<Vec<LoglikResponse>>, TaskError> {
    let reqs: Vec<(usize, LoglikRequest)> = items
        .iter()
        .enumerate()
        .flat_map(|(i, it)| {
            it.continuations
                .iter()
                .map(move |c| (i, LoglikRequest::new(&it.context, c)))
        })
        .collect();
    let mut out: Vec<Vec<LoglikResponse>> = vec![Vec::new(); items.len()];
    // Whole items per chunk, so that the choices of one item share their context, and
    // enough of them that ordering them by length leaves batches little padding.
    let chunk = cx.batch_size.max(1) * 16;
    let mut start = 0;
    while start < reqs.len() {
        let mut end = (start + chunk).min(reqs.len());
        while end < reqs.len() && reqs[end].0 == reqs[end - 1].0 {
            end += 1;
        }
        let rs: Vec<LoglikRequest> = reqs[start..end].iter().map(|(_, r)| r.clone()).collect();
        for ((i, _), o) in
            reqs[start..end]
                .iter()
                .zip(loglikelihood(cx.model, &rs, cx.batch_size, &cx.hooks)?)
        {
            out[*i].push(o);
        }
        (cx.progress)(reqs[end - 1].0 + 1, items.len());
        start = end;
    }
    Ok(out)
}

/// Score every item: predictions and summed log-likelihoods.
pub fn score(
    cx: &mut RunContext<'_>,
    items: &[ChoiceItem],
) -> Result<Vec<ChoiceResult>, TaskError> {
    Ok(score_responses(cx, items)?
        .into_iter()
        .zip(items)
        .map(|(rs, it)| {
            let ll: Vec<f64> = rs.iter().map(|r| r.logprob).collect();
            ChoiceResult {
                idx: it.idx,
                pred: argmax(&ll),
                label: it.label,
                loglikelihoods: ll,
            }
        })
        .collect())
}

/// First index of the maximum (ties go to the earlier choice, like numpy's argmax).
pub fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs[best] {
            best = i;
        }
    }
    best
}

pub fn accuracy(items: &[ChoiceResult]) -> f64 {
    items.iter().filter(|i| i.correct()).count() as f64 / items.len().max(1) as f64
}

/// Unweighted mean over classes of the per-class F1 (the harness's `cb_multi_fi`).
pub fn macro_f1(items: &[ChoiceResult], n_classes: usize) -> f64 {
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

    fn it(pred: usize, label: usize) -> ChoiceResult {
        ChoiceResult {
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
