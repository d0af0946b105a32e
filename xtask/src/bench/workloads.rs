//! The timed workloads. Each function times exactly one run; repetition, interleaving
//! and warm-up are the caller's business.

use std::time::Instant;

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use scalpel::model::generate::{argmax, generate, SamplingParams};
use scalpel::model::{Hooks, LoadedModel, Transformer};

use super::impls::Lm;

pub const PREFILL_LEN: usize = 128;
pub const DECODE_STEPS: usize = 64;
pub const N_SAMPLES: usize = 25;
pub const SAMPLE_TOKENS: usize = 20;

/// Ordinary prose, so that the prompt's tokens look like real input (a run of one
/// repeated id could take different paths through a tokenizer-dependent model).
const PROSE: &str = "The lighthouse stood at the end of a narrow spit of rock, and for most of \
the nineteenth century its keepers lived in a small stone cottage at its foot. Supplies came \
by boat once a fortnight when the weather allowed, which in winter it often did not. The \
keepers kept a log of every ship that passed, every storm, and every repair to the great \
lamp, and those logs survive today in the county archive. Reading them, one is struck less by \
the danger of the work than by its patience: the same tasks, done carefully, day after day, \
so that a light would be burning when someone far out at sea needed it.";

/// The short continuation prompt for the many-samples workload (the shape of a
/// RealToxicityPrompts item: a sentence fragment, continued 25 times).
pub const SAMPLE_PROMPT: &str = "The old lighthouse keeper looked out at the storm and said that";

/// Exactly `len` tokens of prose (cycled if the text is short).
pub fn prompt_ids(model: &LoadedModel, len: usize) -> Result<Vec<u32>> {
    let ids = model.encode(PROSE)?;
    Ok(ids.iter().copied().cycle().take(len).collect())
}

/// `batch` rows of the prompt, each rotated differently so that rows are distinct
/// sequences (identical rows could let a backend share work it would not share in use).
pub fn batch_ids(prompt: &[u32], batch: usize, dev: &Device) -> Result<Tensor> {
    let n = prompt.len();
    let flat: Vec<u32> = (0..batch)
        .flat_map(|r| (0..n).map(move |i| prompt[(i + 7 * r) % n]))
        .collect();
    Ok(Tensor::from_vec(flat, (batch, n), dev)?)
}

/// Seconds for one forward of `ids` from an empty cache.
pub fn prefill(lm: &mut dyn Lm, ids: &Tensor) -> Result<f64> {
    lm.reset()?;
    let dev = ids.device().clone();
    let t0 = Instant::now();
    let logits = lm.step(ids)?;
    dev.synchronize()?;
    let secs = t0.elapsed().as_secs_f64();
    ensure!(
        logits.dim(0)? == ids.dim(0)?,
        "{}: logits batch mismatch",
        lm.name()
    );
    Ok(secs)
}

pub struct Decoded {
    /// Seconds for the `DECODE_STEPS` single-token forwards (and their argmax), prefill
    /// excluded.
    pub secs: f64,
    /// The greedy continuation: the prefill's token, then one per step.
    pub tokens: Vec<u32>,
}

/// Greedy decoding with the KV cache at batch 1.
pub fn decode(lm: &mut dyn Lm, prompt: &[u32], dev: &Device) -> Result<Decoded> {
    lm.reset()?;
    let ids = Tensor::new(prompt, dev)?.unsqueeze(0)?;
    let first = argmax(&lm.step(&ids)?.squeeze(0)?.to_vec1::<f32>()?);
    let mut tokens = vec![first];
    let t0 = Instant::now();
    for _ in 0..DECODE_STEPS {
        let last = *tokens.last().expect("starts non-empty");
        let ids = Tensor::new(&[last], dev)?.unsqueeze(0)?;
        let row = lm.step(&ids)?.squeeze(0)?.to_vec1::<f32>()?;
        tokens.push(argmax(&row));
    }
    Ok(Decoded {
        secs: t0.elapsed().as_secs_f64(),
        tokens,
    })
}

/// Our many-samples path, as the RealToxicityPrompts suite runs it: one prefill, then
/// `N_SAMPLES` rows sampled together. Returns (seconds including the prefill and the
/// sampling on the CPU, tokens generated).
pub fn sample(model: &dyn Transformer, prompt: &[u32]) -> Result<(f64, usize)> {
    let params = SamplingParams {
        temperature: 1.0,
        top_k: None,
        top_p: Some(0.9),
        max_new_tokens: SAMPLE_TOKENS,
        // A fixed seed so every repetition does the same work.
        seed: 0,
        stop_ids: vec![],
    };
    let t0 = Instant::now();
    let gens = generate(model, prompt, &params, N_SAMPLES, &Hooks::new(), |_, _| {})?;
    let secs = t0.elapsed().as_secs_f64();
    Ok((secs, gens.iter().map(|g| g.tokens.len()).sum()))
}

/// Seconds for our final norm and unembedding over every position of `ids` `[b, t]`.
/// Our forward returns logits at all positions, where the candle models unembed only
/// the last one; this is the part of our prefill that the others skip.
pub fn unembed_all(model: &dyn Transformer, ids: &Tensor) -> Result<f64> {
    let (b, t) = ids.dims2()?;
    let resid = model
        .token_embeddings()
        .index_select(&ids.flatten_all()?, 0)?
        .reshape((b, t, ()))?;
    let t0 = Instant::now();
    let logits = model.unembed(&resid)?;
    ids.device().synchronize()?;
    let secs = t0.elapsed().as_secs_f64();
    ensure!(
        logits.dims3()?.1 == t,
        "unembedding changed the sequence length"
    );
    Ok(secs)
}
