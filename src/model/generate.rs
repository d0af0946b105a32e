//! Batched forward passes and sampling with a KV cache.
//!
//! Sampling is reproducible: sample `i` of a call draws from its own ChaCha8 stream
//! (`seed`, stream `i`), so its text does not depend on how many samples run beside it.
//! Many samples of one prompt share a single prefill (the RealToxicityPrompts workload:
//! 25 samples × 20 tokens per prompt).

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::hooks::Hooks;
use super::{KvCache, LogitsAt, ModelError, Transformer};

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
///
/// The candidates are ranked by descending logit, ties by id (so the draw is
/// deterministic), truncated to `top_k`, renormalised, cut to the smallest prefix whose
/// mass reaches `top_p`, and walked with one uniform draw. Only as much of the ranking
/// as the nucleus needs is sorted: a full sort of a 49k vocabulary for every sample of
/// every step was most of the time of RealToxicityPrompts sampling.
pub fn sample_token(logits: &[f32], p: &SamplingParams, rng: &mut ChaCha8Rng) -> u32 {
    if p.temperature == 0.0 {
        return argmax(logits);
    }
    let n = logits.len();
    let limit = p.top_k.map_or(n, |k| k.clamp(1, n));
    let better = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    let mut idx: Vec<u32> = (0..n as u32).collect();
    let inv_t = 1.0 / p.temperature;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64 * inv_t;
    let weight = |i: u32| (logits[i as usize] as f64 * inv_t - max).exp();
    if limit < n {
        idx.select_nth_unstable_by(limit - 1, better);
        idx.truncate(limit);
    }
    let total: f64 = idx.iter().map(|&i| weight(i)).sum();
    // The ranked prefix: grown (4x at a time) until its mass reaches top_p.
    let mut sorted = match p.top_p {
        Some(_) => 1024.min(idx.len()),
        None => idx.len(),
    };
    let (probs, keep) = loop {
        if sorted < idx.len() {
            idx.select_nth_unstable_by(sorted - 1, better);
        }
        idx[..sorted].sort_unstable_by(better);
        let probs: Vec<f64> = idx[..sorted].iter().map(|&i| weight(i) / total).collect();
        let Some(top_p) = p.top_p else {
            break (probs, sorted);
        };
        // Smallest prefix whose mass reaches top_p (at least one token), as in
        // transformers' TopPLogitsWarper.
        let mut cum = 0.0;
        let reached = probs.iter().position(|q| {
            cum += q;
            cum >= top_p
        });
        match reached {
            Some(i) => break (probs, i + 1),
            None if sorted == idx.len() => break (probs, sorted),
            None => sorted = (sorted * 4).min(idx.len()),
        }
    };
    let probs = &probs[..keep];
    let mass: f64 = probs.iter().sum();
    let mut u = rng.random::<f64>() * mass;
    for (i, q) in probs.iter().enumerate() {
        if u < *q {
            return idx[i];
        }
        u -= q;
    }
    idx[keep - 1]
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
    // As before batching: no samples asked, none drawn, whatever the length.
    if n_samples == 0 {
        return Ok(vec![]);
    }
    let (kv, last) = prefill(model, prompt, params, hooks)?;
    let kv = kv.repeat_batch(n_samples)?;
    let rows: Vec<Row> = (0..n_samples)
        .map(|i| Row::new(params.seed, i, *prompt.last().unwrap_or(&0)))
        .collect();
    decode(
        model,
        kv,
        vec![last; n_samples],
        rows,
        params,
        hooks,
        |r, t| on_token(r, t),
    )
}

/// Rows a [`generate_batch`] group decodes together, so that a group reads each weight
/// once per token: 120 where the packed kernel runs (any number of rows keeps each row's
/// bits; on one core it multiplies 120 rows at 90–94 GFLOP/s against 72–78 at 40), else
/// the most the few-row kernel takes, whose bits BLAS would not keep beyond it.
pub fn batch_rows() -> usize {
    if super::packed::available() {
        PACKED_BATCH_ROWS
    } else {
        super::skinny::MAX_ROWS
    }
}

const PACKED_BATCH_ROWS: usize = 120;

/// Prompts per [`generate_batch`] group at `n_samples` samples each (1 where prompts
/// cannot share a batch, see [`batch_decodes_rows_alone`]).
pub fn prompts_per_batch(model: &dyn Transformer, hooks: &Hooks, n_samples: usize) -> usize {
    if batch_decodes_rows_alone(model, hooks) {
        (batch_rows() / n_samples.max(1)).max(1)
    } else {
        1
    }
}

/// Whether rows of different prompts, decoded as one left-padded batch, each get exactly
/// the bits they get decoded alone: on the CPU where the projections run through the
/// packed or the few-row kernel (each output a dot product of one row, in a fixed
/// order) and the fused attention (each row's softmax over its own keys only), with no
/// writer addressing absolute positions (they would mean different tokens in differently
/// padded rows) and no attention-pattern hook (the composed attention sums over the
/// padding too). Edits
/// that place themselves by the call's offset (a soft prompt) act only inside the
/// prompt, which every prompt prefills alone, so in decoding they change nothing.
pub fn batch_decodes_rows_alone(model: &dyn Transformer, hooks: &Hooks) -> bool {
    model.device().is_cpu()
        && super::blas::rows_independent()
        && hooks
            .writers()
            .iter()
            .all(|w| w.positions == super::hooks::Positions::All)
        && (0..model.info().n_layers).all(|l| !hooks.touches(super::HookPoint::AttnPattern(l)))
}

/// `n_samples` continuations of each of `prompts` (ids, sampling seed; `params.seed` is
/// not used), in the order given: for every prompt exactly what [`generate`] gives it
/// alone, token for token. Where [`prompts_per_batch`] allows, prompts go in groups whose
/// prefills run one by one and whose samples then decode as one left-padded batch, so
/// that each decoding step reads the weights once for the group instead of once per
/// prompt (decoding a few rows is bound by reading the weights).
pub fn generate_batch(
    model: &dyn Transformer,
    prompts: &[(&[u32], u64)],
    params: &SamplingParams,
    n_samples: usize,
    hooks: &Hooks,
) -> Result<Vec<Vec<Generation>>, ModelError> {
    let group = prompts_per_batch(model, hooks, n_samples);
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(group) {
        if chunk.len() == 1 || n_samples == 0 {
            for (ids, seed) in chunk {
                let p = SamplingParams {
                    seed: *seed,
                    ..params.clone()
                };
                out.push(generate(model, ids, &p, n_samples, hooks, |_, _| {})?);
            }
            continue;
        }
        let mut caches = Vec::with_capacity(chunk.len());
        let mut lasts = Vec::with_capacity(chunk.len() * n_samples);
        let mut rows = Vec::with_capacity(chunk.len() * n_samples);
        for (ids, seed) in chunk {
            let (kv, last) = prefill(model, ids, params, hooks)?;
            caches.push(kv);
            for i in 0..n_samples {
                rows.push(Row::new(*seed, i, *ids.last().unwrap_or(&0)));
                lasts.push(last.clone());
            }
        }
        let kv = KvCache::stack_left_padded(&caches, n_samples)?;
        let mut gens = decode(model, kv, lasts, rows, params, hooks, |_, _| {})?.into_iter();
        for _ in chunk {
            out.push(gens.by_ref().take(n_samples).collect());
        }
    }
    Ok(out)
}

fn check_prompt(
    model: &dyn Transformer,
    prompt: &[u32],
    params: &SamplingParams,
) -> Result<(), ModelError> {
    if prompt.is_empty() {
        return Err(ModelError::EmptyPrompt);
    }
    let max_pos = model.info().max_positions;
    if prompt.len() + params.max_new_tokens > max_pos {
        return Err(ModelError::TooLong {
            len: prompt.len() + params.max_new_tokens,
            max: max_pos,
        });
    }
    Ok(())
}

/// The prompt's KV cache and its last position's logits.
fn prefill(
    model: &dyn Transformer,
    prompt: &[u32],
    params: &SamplingParams,
    hooks: &Hooks,
) -> Result<(KvCache, Vec<f32>), ModelError> {
    check_prompt(model, prompt, params)?;
    let mut kv = model.new_kv_cache();
    let ids = Tensor::new(prompt, model.device())?.unsqueeze(0)?;
    let out = model.forward_at(&ids, Some(&mut kv), hooks, LogitsAt::Last)?;
    let last = out
        .logits
        .get(0)?
        .get(0)?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    Ok((kv, last))
}

/// One sample being decoded: its own generator (`seed`, stream `i`, as [`generate`]
/// documents), and the token it feeds once it has finished.
struct Row {
    rng: ChaCha8Rng,
    filler: u32,
}

impl Row {
    fn new(seed: u64, stream: usize, filler: u32) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream as u64);
        Row { rng, filler }
    }
}

/// Decode every row of `kv` from its first logits `rows` until each has stopped or
/// `params.max_new_tokens` are drawn.
fn decode(
    model: &dyn Transformer,
    mut kv: KvCache,
    mut logits: Vec<Vec<f32>>,
    mut rows: Vec<Row>,
    params: &SamplingParams,
    hooks: &Hooks,
    mut on_token: impl FnMut(usize, u32),
) -> Result<Vec<Generation>, ModelError> {
    let n = rows.len();
    let dev = model.device();
    let mut gens: Vec<Generation> = vec![
        Generation {
            tokens: vec![],
            finish: Finish::Length,
        };
        n
    ];
    let mut done = vec![false; n];
    for step in 0..params.max_new_tokens {
        // Each sample has its own generator, so drawing them in parallel gives the same
        // tokens as drawing them in turn.
        let drawn: Vec<Option<u32>> = logits
            .par_iter()
            .zip(rows.par_iter_mut())
            .zip(done.par_iter())
            .map(|((l, row), &d)| (!d).then(|| sample_token(l, params, &mut row.rng)))
            .collect();
        let mut next = Vec::with_capacity(n);
        for (i, tok) in drawn.into_iter().enumerate() {
            let Some(tok) = tok else {
                // Finished samples keep the batch rectangular; their tokens are ignored.
                next.push(rows[i].filler);
                continue;
            };
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
        let ids = Tensor::from_vec(next, (n, 1), dev)?;
        let out = model.forward_at(&ids, Some(&mut kv), hooks, LogitsAt::Last)?;
        let l = out.logits.squeeze(1)?.to_dtype(DType::F32)?; // [n, vocab]
        logits = l.to_vec2::<f32>()?;
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

    /// The plain definition: sort the whole vocabulary, then cut.
    fn sample_by_full_sort(logits: &[f32], p: &SamplingParams, rng: &mut ChaCha8Rng) -> u32 {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_by(|&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
        if let Some(k) = p.top_k {
            idx.truncate(k.max(1));
        }
        let inv_t = 1.0 / p.temperature;
        let max = logits[idx[0] as usize] as f64 * inv_t;
        let w: Vec<f64> = idx
            .iter()
            .map(|&i| (logits[i as usize] as f64 * inv_t - max).exp())
            .collect();
        let total: f64 = w.iter().sum();
        let mut probs: Vec<f64> = w.iter().map(|x| x / total).collect();
        if let Some(top_p) = p.top_p {
            let mut cum = 0.0;
            let keep = probs
                .iter()
                .position(|q| {
                    cum += q;
                    cum >= top_p
                })
                .map_or(probs.len(), |i| i + 1);
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

    #[test]
    fn partial_ranking_draws_what_a_full_sort_draws() {
        // Peaked and flat vocabularies (a flat one needs a nucleus far past the first
        // ranked block), with ties, under top-p, top-k and both.
        let mut gen = ChaCha8Rng::seed_from_u64(11);
        for case in 0..16 {
            let scale = [8.0f32, 2.0, 0.05, 0.0][case % 4];
            let logits: Vec<f32> = (0..8_000)
                .map(|_| (scale * (gen.random::<f32>() * 4.0 - 2.0) * 4.0).round() / 4.0)
                .collect();
            for p in [
                params(1.0, None, Some(0.9)),
                params(0.7, None, Some(0.95)),
                params(1.0, Some(40), None),
                params(1.0, Some(3000), Some(0.9)),
                params(1.3, None, None),
            ] {
                let (mut a, mut b) = (
                    ChaCha8Rng::seed_from_u64(case as u64),
                    ChaCha8Rng::seed_from_u64(case as u64),
                );
                for _ in 0..5 {
                    assert_eq!(
                        sample_token(&logits, &p, &mut a),
                        sample_by_full_sort(&logits, &p, &mut b),
                        "case {case}, {p:?}"
                    );
                }
            }
        }
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
