//! ReCoRD (`super_glue/record/default.yaml` and `record/util.py`): one item per query.
//!
//! - `process_docs`: entities and answers deduplicated and sorted (`sorted(set(…))`,
//!   code-point order).
//! - `doc_to_text`: the passage stripped and split at `"\n@highlight\n"`; the first part,
//!   `"\n\n"`, then `"  - {highlight}.\n"` per highlight.
//! - `doc_to_choice`: `"  - {query}"` with every `@placeholder` replaced by the entity, one
//!   per (sorted) entity; the continuation is `" " + choice` (the target delimiter).
//! - `process_results`: the prediction is the entity of the highest summed
//!   log-likelihood (first on ties); `f1` and `em` are the maxima over the gold answers of
//!   SQuAD's `compute_f1` / `compute_exact` ([`super::squad`]); both are averaged over
//!   queries.
//!
//! A row without `@placeholder` in its query, or with no entities or no answers, is an
//! error naming the field (the harness would score identical choices or raise).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{DataError, Table};

use super::super::choice::{self, ChoiceItem};
use super::super::report::{ItemScore, TaskReport};
use super::super::{retain_positions, RunContext, Task, TaskError, TaskId};
use super::{build_items, py, read_local, squad, str_list, TARGET_DELIMITER};

/// One ReCoRD query, ready to score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordDoc {
    /// Row index in the dataset's own order.
    pub idx: usize,
    pub context: String,
    /// Sorted, deduplicated entities: the candidates, in choice order.
    pub entities: Vec<String>,
    /// `" " + "  - {query with the entity}"`, one per entity.
    pub continuations: Vec<String>,
    /// Sorted, deduplicated gold answers.
    pub answers: Vec<String>,
}

/// One ReCoRD query's score: the entity whose filled-in query is most likely, scored by
/// token F1 and exact match against the gold answers (the harness's `record`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordItem {
    pub idx: usize,
    /// Index of the predicted entity in the sorted entities.
    pub pred: usize,
    pub prediction: String,
    pub answers: Vec<String>,
    pub loglikelihoods: Vec<f64>,
    pub f1: f64,
    pub em: f64,
}

#[derive(Clone)]
pub struct RecordTask {
    pub source: PathBuf,
    pub items: Vec<RecordDoc>,
}

/// ReCoRD from a file or a Hugging Face-layout directory (see [`super::read_local`]).
pub fn load_from(path: &Path) -> Result<RecordTask, TaskError> {
    let tables = read_local(TaskId::Record, path)?;
    RecordTask::from_tables(path.to_path_buf(), &tables)
}

/// `util.doc_to_text`.
pub fn doc_to_text(passage: &str) -> String {
    let mut parts = py::strip(passage).split("\n@highlight\n");
    let mut text = format!("{}\n\n", parts.next().unwrap_or_default());
    for h in parts {
        text.push_str(&format!("  - {h}.\n"));
    }
    text
}

/// `util.format_answer`.
pub fn format_answer(query: &str, entity: &str) -> String {
    format!("  - {query}").replace("@placeholder", entity)
}

fn sorted_set(xs: Vec<&str>) -> Vec<String> {
    xs.into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(str::to_string)
        .collect()
}

fn doc(t: &Table, row: usize) -> Result<RecordDoc, DataError> {
    let passage = t.str(row, "passage")?;
    let query = t.str(row, "query")?;
    if !query.contains("@placeholder") {
        return Err(t.field_err(row, "query", "has no @placeholder".into()));
    }
    let entities = sorted_set(str_list(t, row, "entities")?);
    if entities.is_empty() {
        return Err(t.field_err(row, "entities", "empty".into()));
    }
    let answers = sorted_set(str_list(t, row, "answers")?);
    if answers.is_empty() {
        return Err(t.field_err(row, "answers", "empty (no gold answer)".into()));
    }
    let continuations = entities
        .iter()
        .map(|e| format!("{TARGET_DELIMITER}{}", format_answer(query, e)))
        .collect();
    Ok(RecordDoc {
        idx: row,
        context: doc_to_text(passage),
        entities,
        continuations,
        answers,
    })
}

impl RecordTask {
    pub fn from_tables(source: PathBuf, tables: &[Table]) -> Result<Self, TaskError> {
        let items = build_items(tables, doc, |d, i| d.idx = i)?;
        Ok(RecordTask { source, items })
    }
}

/// `util.process_results` for one query, given each entity's summed log-likelihood.
pub fn score_doc(d: &RecordDoc, loglikelihoods: Vec<f64>) -> RecordItem {
    let pred = choice::argmax(&loglikelihoods);
    let prediction = d.entities[pred].clone();
    let f1 = squad::max_over_ground_truths(squad::compute_f1, &prediction, &d.answers);
    let em = squad::max_over_ground_truths(squad::compute_exact, &prediction, &d.answers);
    RecordItem {
        idx: d.idx,
        pred,
        prediction,
        answers: d.answers.clone(),
        loglikelihoods,
        f1,
        em,
    }
}

impl Task for RecordTask {
    fn id(&self) -> TaskId {
        TaskId::Record
    }
    fn source(&self) -> &Path {
        &self.source
    }
    fn len(&self) -> usize {
        self.items.len()
    }
    fn item_key(&self, i: usize) -> String {
        let d = &self.items[i];
        let mut k = d.context.clone();
        for c in &d.continuations {
            k.push('\u{1f}');
            k.push_str(c);
        }
        k
    }
    fn retain(&mut self, keep: &[usize]) {
        retain_positions(&mut self.items, keep);
    }
    fn run(&self, cx: &mut RunContext<'_>) -> Result<TaskReport, TaskError> {
        let reqs: Vec<ChoiceItem> = self
            .items
            .iter()
            .map(|d| ChoiceItem {
                idx: d.idx,
                context: d.context.clone(),
                continuations: d.continuations.clone(),
                label: 0,
            })
            .collect();
        let scored: Vec<RecordItem> = choice::score_responses(cx, &reqs)?
            .into_iter()
            .zip(&self.items)
            .map(|(rs, d)| score_doc(d, rs.iter().map(|r| r.logprob).collect()))
            .collect();
        let metrics = metrics(&scored);
        Ok(TaskReport {
            task: TaskId::Record.to_string(),
            model: cx.model.name.clone(),
            n: scored.len(),
            metrics,
            items: scored.into_iter().map(ItemScore::Record).collect(),
        })
    }
}

/// ReCoRD's metrics: mean token F1 and exact match over queries.
pub fn metrics(scored: &[RecordItem]) -> BTreeMap<String, f64> {
    let n = scored.len().max(1) as f64;
    let mut metrics = BTreeMap::new();
    metrics.insert(
        "f1".to_string(),
        scored.iter().map(|s| s.f1).sum::<f64>() / n,
    );
    metrics.insert(
        "em".to_string(),
        scored.iter().map(|s| s.em).sum::<f64>() / n,
    );
    metrics
}
