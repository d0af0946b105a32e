//! Batched forward passes and sampling with a KV cache.
//!
//! Sampling is reproducible: sample `i` of a call draws from its own ChaCha8 stream
//! (`seed`, stream `i`), so its text does not depend on how many samples run beside it.
//! Many samples of one prompt share a single prefill (the RealToxicityPrompts workload:
//! 25 samples × 20 tokens per prompt).

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::hooks::Hooks;
use super::{LogitsAt, ModelError, Transformer};

/// Logits of several sequences run as one right-padded batch.
///
/// Padding goes on the right, so under the causal mask no real position ever attends to
/// a pad: each sequence's logits are those it has alone.
pub struct BatchLogits {
    /// `[b, t_max, vocab]`; rows past a sequence's length are padding.
    pub logits: Tensor,
    pub lens: Vec<usize>,
}

pub fn forward_batch(
    model: &dyn Transformer,
    seqs: &[Vec<u32>],
    pad_id: u32,
    hooks: &Hooks,
) -> Result<BatchLogits, ModelError> {
    if seqs.is_empty() || seqs.iter().any(|s| s.is_empty()) {
        return Err(ModelError::EmptyPrompt);
    }
    let ids = pad_right(seqs, pad_id, model.device())?;
    let out = model.forward(&ids, None, hooks)?;
    Ok(BatchLogits {
        logits: out.logits,
        lens: seqs.iter().map(Vec::len).collect(),
    })
}

/// Sequences as one `[b, t_max]` id tensor, each padded on the right with `pad_id`.
pub fn pad_right(
    seqs: &[Vec<u32>],
    pad_id: u32,
    dev: &candle_core::Device,
) -> candle_core::Result<Tensor> {
    let t_max = seqs.iter().map(Vec::len).max().unwrap_or(0);
    let mut flat = Vec::with_capacity(seqs.len() * t_max);
    for s in seqs {
        flat.extend_from_slice(s);
        flat.extend(std::iter::repeat_n(pad_id, t_max - s.len()));
    }
    Tensor::from_vec(flat, (seqs.len(), t_max), dev)
}

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub max_new_tokens: usize,
    pub seed: u64,
    pub stop_ids: Vec<u32>,
}

impl SamplingParams {
    pub fn greedy(max_new_tokens: usize) -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            max_new_tokens,
            seed: 0,
            stop_ids: vec![],
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!("temperature must be ≥ 0, got {}", self.temperature));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(format!("top_p must be in (0, 1], got {p}"));
            }
        }
        if self.top_k == Some(0) {
            return Err("top_k must be ≥ 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// New tokens, without the prompt; a stop token that ended the sample is kept out.
    pub tokens: Vec<u32>,
    pub finish: Finish,
}

/// Draw one token from `logits` under `p`.
pub fn sample_token(logits: &[f32], p: &SamplingParams, rng: &mut ChaCha8Rng) -> u32 {
    if p.temperature == 0.0 {
        return argmax(logits);
    }
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    // Descending by logit; ties by id so the order is deterministic.
    idx.sort_unstable_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    if let Some(k) = p.top_k {
        idx.truncate(k.max(1));
    }
    let inv_t = 1.0 / p.temperature;
    let max = logits[idx[0] as usize] as f64 * inv_t;
    let mut probs: Vec<f64> = idx
        .iter()
        .map(|&i| (logits[i as usize] as f64 * inv_t - max).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|q| *q /= total);
    if let Some(top_p) = p.top_p {
        // Smallest prefix whose mass reaches top_p (at least one token), as in
        // transformers' TopPLogitsWarper.
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (i, q) in probs.iter().enumerate() {
            cum += q;
            if cum >= top_p {
                keep = i + 1;
                break;
            }
        }
        idx.truncate(keep);
        probs.truncate(keep);
    }
    let mass: f64 = probs.iter().sum();
    let mut u = rng.random::<f64>() * mass;
    for (i, q) in probs.iter().enumerate() {
        if u < *q {
            return idx[i];
        }
        u -= q;
    }
    idx[probs.len() - 1]
}

pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// `n_samples` continuations of `prompt`, sharing one prefill. `on_token(sample, id)` is
/// called for every new token as it is drawn (for streaming to a terminal).
pub fn generate(
    model: &dyn Transformer,
    prompt: &[u32],
    params: &SamplingParams,
    n_samples: usize,
    hooks: &Hooks,
    mut on_token: impl FnMut(usize, u32),
) -> Result<Vec<Generation>, ModelError> {
    if prompt.is_empty() {
        return Err(ModelError::EmptyPrompt);
    }
    if n_samples == 0 {
        return Ok(vec![]);
    }
    let max_pos = model.info().max_positions;
    if prompt.len() + params.max_new_tokens > max_pos {
        return Err(ModelError::TooLong {
            len: prompt.len() + params.max_new_tokens,
            max: max_pos,
        });
    }
    let dev = model.device();
    let mut kv = model.new_kv_cache();
    let ids = Tensor::new(prompt, dev)?.unsqueeze(0)?;
    let out = model.forward_at(&ids, Some(&mut kv), hooks, LogitsAt::Last)?;
    let last = out
        .logits
        .get(0)?
        .get(0)?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    let mut kv = kv.repeat_batch(n_samples)?;
    let mut rngs: Vec<ChaCha8Rng> = (0..n_samples)
        .map(|i| {
            let mut r = ChaCha8Rng::seed_from_u64(params.seed);
            r.set_stream(i as u64);
            r
        })
        .collect();
    let mut gens: Vec<Generation> = vec![
        Generation {
            tokens: vec![],
            finish: Finish::Length,
        };
        n_samples
    ];
    let mut done = vec![false; n_samples];
    let mut rows: Vec<Vec<f32>> = vec![last; n_samples];
    for step in 0..params.max_new_tokens {
        let mut next = Vec::with_capacity(n_samples);
        for i in 0..n_samples {
            if done[i] {
                // Finished samples keep the batch rectangular; their tokens are ignored.
                next.push(*prompt.last().unwrap_or(&0));
                continue;
            }
            let tok = sample_token(&rows[i], params, &mut rngs[i]);
            if params.stop_ids.contains(&tok) {
                done[i] = true;
                gens[i].finish = Finish::Stop;
            } else {
                gens[i].tokens.push(tok);
                on_token(i, tok);
            }
            next.push(tok);
        }
        if done.iter().all(|d| *d) || step + 1 == params.max_new_tokens {
            break;
        }
        let ids = Tensor::from_vec(next, (n_samples, 1), dev)?;
        let out = model.forward_at(&ids, Some(&mut kv), hooks, LogitsAt::Last)?;
        let logits = out.logits.squeeze(1)?.to_dtype(DType::F32)?; // [n, vocab]
        rows = logits.to_vec2::<f32>()?;
    }
    Ok(gens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f64, k: Option<usize>, p: Option<f64>) -> SamplingParams {
        SamplingParams {
            temperature: t,
            top_k: k,
            top_p: p,
            max_new_tokens: 1,
            seed: 7,
            stop_ids: vec![],
        }
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        let logits = [0.0f32, 3.0, 2.9, -1.0, 2.8];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..200 {
            let t = sample_token(&logits, &params(1.0, Some(2), None), &mut rng);
            assert!(t == 1 || t == 2);
            // p=0.3: token 1 alone has mass ≈ 0.36 ≥ 0.3.
            let t = sample_token(&logits, &params(1.0, None, Some(0.3)), &mut rng);
            assert_eq!(t, 1);
        }
        assert_eq!(sample_token(&logits, &params(0.0, None, None), &mut rng), 1);
    }

    #[test]
    fn sampling_frequencies_follow_the_softmax() {
        let logits = [0.0f32, (2.0f32).ln(), (3.0f32).ln()];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut counts = [0usize; 3];
        let n = 30_000;
        for _ in 0..n {
            counts[sample_token(&logits, &params(1.0, None, None), &mut rng) as usize] += 1;
        }
        for (i, want) in [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0].iter().enumerate() {
            let got = counts[i] as f64 / n as f64;
            // 5 standard errors of a binomial proportion at n = 30000.
            let se = (want * (1.0 - want) / n as f64).sqrt();
            assert!((got - want).abs() < 5.0 * se, "token {i}: {got} vs {want}");
        }
    }
}
