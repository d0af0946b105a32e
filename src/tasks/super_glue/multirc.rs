//! MultiRC (`super_glue/multirc/default.yaml`, version 2.0): one item per answer option,
//! context `"{paragraph}\nQuestion: {question}\nAnswer:"`, choices rendered by the
//! harness as the Python list
//! `['''{answer}\nIs the answer correct? yes''', '''{answer}\nIs the answer correct? no''']`
//! and read back with `ast.literal_eval` (so backslash escapes in an answer are decoded,
//! and an answer containing `'''` is an error here where the harness would crash).
//!
//! The quirk, reproduced: `doc_to_target` is `label`, and the hub's `label` is 1 when the
//! answer is correct, so the harness's "correct" choice for a correct answer is index 1,
//! "… no", and for a wrong answer index 0, "… yes". Its `acc` (and therefore ours)
//! rewards a model for answering "no" to correct answers; a model that judges answers
//! perfectly scores 0. (lm-eval 0.3 had scored true/false the right way round, PR #243.)
//!
//! `f1a`: SuperGLUE's F1 over all answer options with the positive class "answer correct"
//! (label 1), computed on the same (label, prediction) pairs as the harness's `acc`: the
//! binary F1 of class 1, where predicting class 1 means the model preferred the choice
//! at index 1 ("… no"). This is exactly what the harness's own `f1` metric
//! (`lm_eval.api.metrics.f1_score`, sklearn's binary `f1_score(golds, preds)`) gives on
//! this task, and 0 when neither labels nor predictions contain class 1.

use crate::data::{DataError, Table};

use super::super::choice::ChoiceResult;
use super::{py, Prompt};

pub(super) fn prompt(t: &Table, row: usize) -> Result<Prompt, DataError> {
    let answer = t.str(row, "answer")?;
    let choices = ["yes", "no"]
        .iter()
        .map(|yn| {
            py::triple_quoted_literal(&format!("{answer}\\nIs the answer correct? {yn}"))
                .map_err(|m| t.field_err(row, "answer", m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Prompt {
        context: format!(
            "{}\nQuestion: {}\nAnswer:",
            t.str(row, "paragraph")?,
            t.str(row, "question")?
        ),
        choices,
        label: t.label(row, "label", 2)?,
    })
}

/// Binary F1 of class 1 over (label, pred) — see the module docs for what class 1 means.
pub fn f1a(items: &[ChoiceResult]) -> f64 {
    let tp = items.iter().filter(|i| i.pred == 1 && i.label == 1).count() as f64;
    let fp = items.iter().filter(|i| i.pred == 1 && i.label != 1).count() as f64;
    let fn_ = items.iter().filter(|i| i.pred != 1 && i.label == 1).count() as f64;
    if tp + fp + fn_ == 0.0 {
        0.0
    } else {
        2.0 * tp / (2.0 * tp + fp + fn_)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(pred: usize, label: usize) -> ChoiceResult {
        ChoiceResult {
            idx: 0,
            pred,
            label,
            loglikelihoods: vec![],
        }
    }

    #[test]
    fn f1a_is_sklearn_binary_f1() {
        // sklearn f1_score([1,1,0,0,1], [1,0,1,0,1]) = 2*2/(2*2+1+1) = 0.6667
        let items = [r(1, 1), r(0, 1), r(1, 0), r(0, 0), r(1, 1)];
        assert!((f1a(&items) - 4.0 / 6.0).abs() < 1e-15);
        assert_eq!(f1a(&[r(0, 0)]), 0.0);
    }
}
