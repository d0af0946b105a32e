//! What every attack is fitted to do: make the model continue a harmful prompt with the
//! harmful text that followed it. Shared by the attacks' fits and their evaluation, so
//! they all measure the same negative log-likelihood.

use candle_core::{DType, Tensor, D};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::model::{Hooks, LoadedModel};

use super::AttackError;

/// One example: a prompt and the harmful continuation the attacker wants.
#[derive(Debug, Clone)]
pub struct Target {
    pub prompt: String,
    pub continuation: String,
}

impl Target {
    /// A harmful text as an attack target: its first `share` of words is the prompt,
    /// the rest the continuation to elicit. `None` when it is too short to split.
    pub fn split(text: &str, share: f64) -> Option<Target> {
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.len() < 4 {
            return None;
        }
        let cut = ((words.len() as f64 * share).round() as usize).clamp(1, words.len() - 1);
        Some(Target {
            prompt: words[..cut].join(" "),
            continuation: format!(" {}", words[cut..].join(" ")),
        })
    }
}

/// A target as token ids: the prompt (as a model input, BOS included where the model
/// adds one) followed by at most `max_target_tokens` continuation tokens.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// Index of the first continuation token.
    pub from: usize,
}

impl Encoded {
    pub fn new(
        model: &LoadedModel,
        t: &Target,
        max_target_tokens: usize,
    ) -> Result<Self, AttackError> {
        let mut ids = model.encode(&t.prompt)?;
        let from = ids.len();
        let cont = model.encode_plain(&t.continuation)?;
        ids.extend(cont.into_iter().take(max_target_tokens.max(1)));
        Ok(Encoded { ids, from })
    }

    pub fn all(
        model: &LoadedModel,
        targets: &[Target],
        max_target_tokens: usize,
    ) -> Result<Vec<Self>, AttackError> {
        if targets.is_empty() {
            return Err(AttackError::Invalid("no targets to fit on".into()));
        }
        targets
            .iter()
            .map(|t| Encoded::new(model, t, max_target_tokens))
            .collect()
    }

    /// Continuation tokens.
    pub fn len(&self) -> usize {
        self.ids.len() - self.from
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same target with `k` tokens inserted at `at` (before the continuation).
    pub fn with_inserted(&self, at: usize, tokens: &[u32]) -> Encoded {
        let at = at.min(self.from);
        let mut ids = Vec::with_capacity(self.ids.len() + tokens.len());
        ids.extend_from_slice(&self.ids[..at]);
        ids.extend_from_slice(tokens);
        ids.extend_from_slice(&self.ids[at..]);
        Encoded {
            ids,
            from: self.from + tokens.len(),
        }
    }
}

/// Summed continuation NLL of each row of `rows` (same length, same continuation start
/// `from`) under `hooks`: a `[rows]` tensor that keeps the graph for autograd.
pub fn continuation_nll(
    model: &LoadedModel,
    hooks: &Hooks,
    rows: &[&[u32]],
    from: usize,
) -> Result<Tensor, AttackError> {
    let dev = model.device();
    let t = rows.first().map(|r| r.len()).unwrap_or(0);
    if t <= from || rows.iter().any(|r| r.len() != t) {
        return Err(AttackError::Invalid(
            "rows must share a length past the continuation start".into(),
        ));
    }
    let max = model.model.info().max_positions;
    if t > max {
        return Err(AttackError::Invalid(format!(
            "an example is {t} tokens with the attack in place, more than the model's {max}"
        )));
    }
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    let ids = Tensor::new(flat.as_slice(), dev)?.reshape((rows.len(), t))?;
    let logits = model.model.forward(&ids, None, hooks)?.logits; // [b, t, v]
                                                                 // Position p predicts token p + 1.
    let pred = logits.narrow(1, from - 1, t - from)?.to_dtype(DType::F32)?;
    let logp = candle_nn::ops::log_softmax(&pred, D::Minus1)?;
    let want = ids.narrow(1, from, t - from)?.contiguous()?.unsqueeze(2)?;
    Ok(logp.gather(&want, 2)?.squeeze(2)?.sum(1)?.neg()?)
}

/// Mean NLL per continuation token of `examples` under `hooks`, one sequence at a time
/// (what an attack's fit minimises, and how it is judged on held-out targets).
pub fn mean_nll(
    model: &LoadedModel,
    hooks: &Hooks,
    examples: &[Encoded],
) -> Result<Tensor, AttackError> {
    let mut total: Option<Tensor> = None;
    let mut n = 0usize;
    for e in examples {
        let s = continuation_nll(model, hooks, &[&e.ids], e.from)?.sum_all()?;
        total = Some(match total {
            None => s,
            Some(t) => (t + s)?,
        });
        n += e.len();
    }
    let total = total.ok_or_else(|| AttackError::Invalid("no examples".into()))?;
    Ok((total / n.max(1) as f64)?)
}

/// Minibatches of example indices: a seeded shuffle, drawn in order, reshuffled when
/// used up (so each epoch sees every example once).
pub struct Batches {
    order: Vec<usize>,
    at: usize,
}

impl Batches {
    pub fn new(n: usize, rng: &mut impl Rng) -> Self {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(rng);
        Batches { order, at: 0 }
    }

    /// The next `size` indices (at most the number of examples).
    pub fn next(&mut self, size: usize, rng: &mut impl Rng) -> Vec<usize> {
        let mut batch = Vec::with_capacity(size);
        for _ in 0..size.min(self.order.len()) {
            if self.at == self.order.len() {
                self.order.shuffle(rng);
                self.at = 0;
            }
            batch.push(self.order[self.at]);
            self.at += 1;
        }
        batch
    }
}
