//! The hooked transformer: architectures, weights, tokenizer, generation.
//!
//! Every architecture implements [`Transformer`]: a forward pass over token ids that
//! takes a set of [`Hooks`] (readers cache activations, writers edit them) and an optional
//! KV cache, and returns logits at every position.

pub mod attention;
pub mod blas;
pub mod chat;
pub mod error;
pub mod gated;
pub mod gemma3;
pub mod generate;
pub mod gguf;
pub mod gpt2;
pub mod hf;
pub mod hooks;
pub mod llama;
pub mod loaded;
pub mod norm;
pub mod ops;
pub mod packed;
pub mod prefix_memo;
pub mod residual;
pub mod rotary;
pub mod simd;
pub mod skinny;
pub mod softmax;
pub mod source;
pub mod token_scores;
pub mod tokenizer;

use candle_core::{Device, Tensor};

pub use error::ModelError;
pub use hooks::{ActivationCache, HookPoint, Hooks, Positions, Units, Writer};
pub use loaded::LoadedModel;
pub use source::ModelSource;

/// Architecture families with a forward pass in this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Gpt2,
    Gemma3,
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arch::Llama => "llama",
            Arch::Gpt2 => "gpt2",
            Arch::Gemma3 => "gemma3",
        })
    }
}

/// Shape facts about a loaded model that hooks, interventions and tools need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub arch: Arch,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_head: usize,
    pub d_mlp: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
}

/// Which positions get logits. Scoring needs every position; generation needs only the
/// last, and skipping the rest saves a `[b, t, vocab]` matmul on prefill; filling a KV
/// cache (or reading activations) needs none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsAt {
    All,
    Last,
    /// No unembedding: the logits are `[b, 0, vocab]`.
    Skip,
}

/// Logits `[b, t, vocab]` (`[b, 1, vocab]` for [`LogitsAt::Last`]), plus what the readers
/// cached.
#[derive(Debug)]
pub struct ForwardOutput {
    pub logits: Tensor,
    pub cache: ActivationCache,
}

/// Keys and values of earlier positions, per layer, `[b, kv_heads, t, dh]` after RoPE.
///
/// A cache may be *left-padded*: row `r`'s first `pads[r]` positions are padding, which
/// no real position attends to, and its tokens' positions (RoPE angles, learned position
/// embeddings) count from its first real token. So sequences of different lengths share
/// one batched prefill and then continue together, each computing what it computes
/// alone. Writers with position selectors are refused on such a batch (their absolute
/// positions would mean different tokens in different rows).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    pads: Vec<usize>,
    /// A hash of the calls and row selections that filled the cache, kept under a
    /// [`prefix_memo::PrefixMemo`] (0 otherwise): it tells apart calls with the same ids
    /// on different contexts.
    lineage: u64,
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        KvCache {
            layers: vec![None; n_layers],
            pads: Vec::new(),
            lineage: 0,
        }
    }

    /// An empty cache for a batch whose row `r` will start with `pads[r]` padding tokens
    /// (all zero: an ordinary cache).
    pub fn left_padded(n_layers: usize, pads: Vec<usize>) -> Self {
        KvCache {
            layers: vec![None; n_layers],
            pads: if pads.iter().all(|&p| p == 0) {
                Vec::new()
            } else {
                pads
            },
            lineage: 0,
        }
    }

    /// Left padding per row (empty: none).
    pub fn pads(&self) -> &[usize] {
        &self.pads
    }

    pub(crate) fn lineage(&self) -> u64 {
        self.lineage
    }

    pub(crate) fn set_lineage(&mut self, key: u64) {
        self.lineage = key;
    }

    /// The lineage after an operation `what` with arguments `args` on this cache.
    fn derived_lineage(&self, what: &str, args: &[usize]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.lineage, what, args).hash(&mut h);
        h.finish()
    }

    /// Whether some layers hold positions and others none: the first layers of a call
    /// replayed from a [`prefix_memo::PrefixMemo`] were never computed.
    pub(crate) fn has_holes(&self) -> bool {
        self.layers.iter().any(Option::is_none) && self.layers.iter().any(Option::is_some)
    }

    /// Rows `rows` of this cache, in that order (a row may repeat): the choices of
    /// several items continue from their own item's context.
    pub fn select_rows(&self, rows: &[usize]) -> candle_core::Result<KvCache> {
        let dev = self.layers.iter().flatten().map(|(k, _)| k.device()).next();
        let layers = match dev {
            None => vec![None; self.layers.len()],
            Some(dev) => {
                let idx = Tensor::from_vec(
                    rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
                    rows.len(),
                    dev,
                )?;
                self.layers
                    .iter()
                    .map(|l| {
                        l.as_ref()
                            .map(|(k, v)| -> candle_core::Result<(Tensor, Tensor)> {
                                Ok((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?))
                            })
                            .transpose()
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?
            }
        };
        let pads = if self.pads.is_empty() {
            Vec::new()
        } else {
            rows.iter().map(|&r| self.pads[r]).collect()
        };
        Ok(KvCache {
            layers,
            pads,
            lineage: self.derived_lineage("select_rows", rows),
        })
    }

    /// Per-row positions of a call's `t` tokens at `offset` under this cache's padding
    /// (pad tokens get 0), or `None` when unpadded.
    pub(crate) fn row_positions(&self, t: usize, offset: usize) -> Option<Vec<u32>> {
        if self.pads.is_empty() {
            return None;
        }
        Some(
            self.pads
                .iter()
                .flat_map(|&p| (offset..offset + t).map(move |i| i.saturating_sub(p) as u32))
                .collect(),
        )
    }

    /// Number of positions already cached (the offset of the next call). Read from the
    /// first layer that holds any: a replayed call leaves the first layers empty.
    pub fn len(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .next()
            .map(|(k, _)| k.dims()[2])
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append this call's keys and values at `layer`; returns the full keys and values.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: Tensor,
        v: Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (k, v) = match self.layers[layer].take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Copy a batch-1 cache into `n` rows, so that `n` samples share one prefill.
    pub fn repeat_batch(&self, n: usize) -> candle_core::Result<KvCache> {
        if !self.pads.is_empty() {
            return self.select_rows(&vec![0; n]);
        }
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.as_ref()
                    .map(|(k, v)| -> candle_core::Result<(Tensor, Tensor)> {
                        Ok((k.repeat((n, 1, 1, 1))?, v.repeat((n, 1, 1, 1))?))
                    })
                    .transpose()
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(KvCache {
            layers,
            pads: Vec::new(),
            lineage: self.derived_lineage("repeat_batch", &[n]),
        })
    }

    /// Batch-1 caches of different lengths as one left-padded cache, each repeated
    /// `repeat` times (row `i·repeat + j` is copy `j` of cache `i`): prompts prefilled
    /// one by one then decode together. Padding keys and values are zeros, which the
    /// padding mask hides.
    pub fn stack_left_padded(caches: &[KvCache], repeat: usize) -> candle_core::Result<KvCache> {
        let Some(first) = caches.first() else {
            candle_core::bail!("no caches to stack");
        };
        if repeat == 0
            || caches
                .iter()
                .any(|c| !c.pads.is_empty() || c.layers.len() != first.layers.len())
        {
            candle_core::bail!("stack_left_padded takes unpadded caches of one model, repeat ≥ 1");
        }
        let longest = caches.iter().map(KvCache::len).max().unwrap_or(0);
        let mut pads = Vec::with_capacity(caches.len() * repeat);
        for c in caches {
            pads.extend(std::iter::repeat_n(longest - c.len(), repeat));
        }
        let mut layers = Vec::with_capacity(first.layers.len());
        for l in 0..first.layers.len() {
            let mut ks = Vec::with_capacity(caches.len());
            let mut vs = Vec::with_capacity(caches.len());
            for c in caches {
                let Some((k, v)) = &c.layers[l] else {
                    candle_core::bail!("stack_left_padded: layer {l} of a cache is empty");
                };
                if k.dim(0)? != 1 {
                    candle_core::bail!("stack_left_padded takes batch-1 caches");
                }
                let pad = longest - k.dim(2)?;
                let padded = |x: &Tensor| -> candle_core::Result<Tensor> {
                    let x = if pad > 0 {
                        let (_, h, _, d) = x.dims4()?;
                        let z = Tensor::zeros((1, h, pad, d), x.dtype(), x.device())?;
                        Tensor::cat(&[&z, x], 2)?
                    } else {
                        x.clone()
                    };
                    x.repeat((repeat, 1, 1, 1))
                };
                ks.push(padded(k)?);
                vs.push(padded(v)?);
            }
            layers.push(Some((Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?)));
        }
        let mut kv = KvCache::left_padded(first.layers.len(), pads);
        kv.layers = layers;
        let parts: Vec<usize> = caches.iter().map(|c| c.lineage as usize).collect();
        kv.lineage = kv.derived_lineage("stack", &parts);
        Ok(kv)
    }

    /// One left-padded cache whose row `i` holds the real positions of row `rows[i].1` of
    /// cache `rows[i].0`: rows that grew from one prefix by continuations of different
    /// lengths (each length its own call) continue together again. A row's keys and
    /// values depend only on its own tokens and their positions counted from its first
    /// real token, so moving them to another padding changes nothing they compute.
    /// Layers that a replayed call left empty stay empty; they must be so in every source.
    pub fn gather_left_padded(rows: &[(&KvCache, usize)]) -> candle_core::Result<KvCache> {
        let Some(&(first, _)) = rows.first() else {
            candle_core::bail!("no rows to gather");
        };
        let n_layers = first.layers.len();
        let mut real = Vec::with_capacity(rows.len());
        for &(c, r) in rows {
            let pad = if c.pads.is_empty() { 0 } else { c.pads[r] };
            if c.layers.len() != n_layers || pad > c.len() {
                candle_core::bail!("gather_left_padded takes rows of caches of one model");
            }
            real.push((pad, c.len() - pad));
        }
        let longest = real.iter().map(|&(_, n)| n).max().unwrap_or(0);
        let mut layers = Vec::with_capacity(n_layers);
        for l in 0..n_layers {
            let filled = rows.iter().filter(|(c, _)| c.layers[l].is_some()).count();
            if filled == 0 {
                layers.push(None);
                continue;
            }
            if filled != rows.len() {
                candle_core::bail!("gather_left_padded: layer {l} is empty in some rows only");
            }
            let mut ks = Vec::with_capacity(rows.len());
            let mut vs = Vec::with_capacity(rows.len());
            for (&(c, r), &(pad, n)) in rows.iter().zip(&real) {
                let Some((k, v)) = &c.layers[l] else {
                    unreachable!("checked above")
                };
                let moved = |x: &Tensor| -> candle_core::Result<Tensor> {
                    let x = x.narrow(0, r, 1)?.narrow(2, pad, n)?;
                    if n == longest {
                        return Ok(x);
                    }
                    let (_, h, _, d) = x.dims4()?;
                    let z = Tensor::zeros((1, h, longest - n, d), x.dtype(), x.device())?;
                    Tensor::cat(&[&z, &x], 2)
                };
                ks.push(moved(k)?);
                vs.push(moved(v)?);
            }
            layers.push(Some((Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?)));
        }
        let mut kv =
            KvCache::left_padded(n_layers, real.iter().map(|&(_, n)| longest - n).collect());
        kv.layers = layers;
        let parts: Vec<usize> = rows
            .iter()
            .flat_map(|&(c, r)| [c.lineage as usize, r])
            .collect();
        kv.lineage = kv.derived_lineage("gather", &parts);
        Ok(kv)
    }

    /// Keep only the first `len` positions (reuse a shared prefix across requests).
    pub fn truncate(&mut self, len: usize) -> candle_core::Result<()> {
        self.lineage = self.derived_lineage("truncate", &[len]);
        for l in self.layers.iter_mut() {
            if let Some((k, v)) = l.take() {
                *l = Some((k.narrow(2, 0, len)?, v.narrow(2, 0, len)?));
            }
        }
        Ok(())
    }
}

/// What every architecture checks before a forward call: hooks name layers the model
/// has, and the cached plus new positions fit its window.
pub(crate) fn check_call(
    info: &ModelInfo,
    ids: &Tensor,
    kv: Option<&KvCache>,
    hooks: &Hooks,
) -> Result<(), ModelError> {
    hooks.validate(info.n_layers)?;
    if let Some(kv) = kv.filter(|kv| !kv.pads.is_empty()) {
        let b = ids.dim(0)?;
        if kv.pads.len() != b {
            return Err(ModelError::Call(format!(
                "a left-padded cache has {} rows, the call {b}",
                kv.pads.len()
            )));
        }
        if hooks
            .writers()
            .iter()
            .any(|w| w.positions != Positions::All)
        {
            return Err(ModelError::Call(
                "writers with position selectors cannot run on a left-padded batch".into(),
            ));
        }
    }
    let len = kv.map_or(0, KvCache::len) + ids.dim(candle_core::D::Minus1)?;
    if len > info.max_positions {
        return Err(ModelError::TooLong {
            len,
            max: info.max_positions,
        });
    }
    Ok(())
}

/// The additive attention mask of a call of `t` tokens at `offset`, built once for all
/// layers: causal, with a left-padded cache's padding masked; `None` when nothing is
/// masked (one new token, no padding).
pub(crate) fn attention_mask(
    kv: Option<&KvCache>,
    t: usize,
    offset: usize,
    dtype: candle_core::DType,
    dev: &Device,
) -> candle_core::Result<Option<Tensor>> {
    sliding_attention_mask(kv, t, offset, None, dtype, dev)
}

/// [`attention_mask`] for layers that see only the last `window` positions (`None`:
/// all). Needed even for one new token once the cache outgrows the window.
pub(crate) fn sliding_attention_mask(
    kv: Option<&KvCache>,
    t: usize,
    offset: usize,
    window: Option<usize>,
    dtype: candle_core::DType,
    dev: &Device,
) -> candle_core::Result<Option<Tensor>> {
    let window = window.filter(|&w| offset + t > w);
    match kv.filter(|kv| !kv.pads.is_empty()) {
        Some(kv) => ops::padded_causal_mask(t, offset, &kv.pads, window, dtype, dev).map(Some),
        None if t > 1 || window.is_some() => {
            ops::sliding_causal_mask(t, offset, window, dtype, dev).map(Some)
        }
        None => Ok(None),
    }
}

/// The logits a call asked for, from the stream leaving the last block `[b, t, d]`:
/// every position, the last, or none (`[b, 0, vocab]`, no unembedding).
pub(crate) fn logits_at(
    at: LogitsAt,
    resid: &Tensor,
    vocab: usize,
    unembed: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let (b, t, _) = resid.dims3()?;
    match at {
        LogitsAt::All => unembed(resid),
        LogitsAt::Last => unembed(&resid.narrow(1, t - 1, 1)?),
        LogitsAt::Skip => Tensor::zeros((b, 0, vocab), resid.dtype(), resid.device()),
    }
}

/// NaN or infinite logits (an intervention that blows the stream up, a broken weight)
/// are an error here, where they appear, rather than scores that look like numbers
/// downstream: an argmax over NaN still picks an answer.
pub(crate) fn check_finite(logits: &Tensor) -> Result<(), ModelError> {
    if all_finite(logits)? {
        return Ok(());
    }
    let (b, t, v) = logits.dims3()?;
    let flat = logits
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    if let Some(i) = flat.iter().position(|x| !x.is_finite()) {
        return Err(ModelError::NonFinite {
            what: format!(
                "logits are {} at batch row {} of {b}, position {} of {t} (token id {})",
                flat[i],
                i / (t * v),
                (i / v) % t,
                i % v
            ),
        });
    }
    Ok(())
}

/// [`Transformer::forward_seqs`] through one right-padded batch.
pub(crate) fn forward_seqs_padded<M: Transformer + ?Sized>(
    m: &M,
    seqs: &[Vec<u32>],
    pad: u32,
    hooks: &Hooks,
    rows: &[u32],
) -> Result<Tensor, ModelError> {
    if seqs.is_empty() {
        return Err(ModelError::Call("no sequences to run".into()));
    }
    check_seq_rows(seqs.iter().map(Vec::len).sum(), rows)?;
    let width = seqs.iter().map(Vec::len).max().unwrap_or(0);
    let ids = generate::pad_right(seqs, pad, m.device())?;
    let starts = seq_starts(seqs);
    let padded: Vec<u32> = rows
        .iter()
        .map(|&r| {
            let i = starts
                .partition_point(|&s| s <= r as usize)
                .saturating_sub(1);
            (i * width + r as usize - starts[i]) as u32
        })
        .collect();
    m.forward_rows(&ids, None, hooks, &padded)
}

/// Where each of `seqs` starts when they are laid end to end.
pub(crate) fn seq_starts(seqs: &[Vec<u32>]) -> Vec<usize> {
    seqs.iter()
        .scan(0, |at, s| {
            let start = *at;
            *at += s.len();
            Some(start)
        })
        .collect()
}

/// Whether every element of `t` is finite, in the common case without naming the first
/// that is not. f32 CPU tensors: in parallel, each element times zero summed in lanes
/// (zero, unless an infinity or a NaN makes it NaN), as candle's serial `sum_all` was
/// ~1% of a perplexity run's wall time. Elsewhere one reduction: the sum of finite
/// logits overflows only for absurd magnitudes, which [`check_finite`]'s scan tells
/// apart.
fn all_finite(t: &Tensor) -> candle_core::Result<bool> {
    use rayon::prelude::*;
    if t.device().is_cpu() && t.dtype() == candle_core::DType::F32 {
        let t = t.contiguous()?;
        let (s, l) = t.storage_and_layout();
        let xs = blas::cpu_elements("finite check", &s, l)?;
        return Ok(xs
            .par_chunks(1 << 16)
            .all(|c| softmax::blocked_sum(c, |v| v * 0.0).is_finite()));
    }
    let sum = t
        .sum_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_scalar::<f32>()?;
    Ok(sum.is_finite())
}

/// An error for a row past the `n` positions of sequences laid end to end, which a
/// padded batch would otherwise read as padding.
pub(crate) fn check_seq_rows(n: usize, rows: &[u32]) -> Result<(), ModelError> {
    match rows.iter().find(|&&r| r as usize >= n) {
        Some(r) => Err(ModelError::Call(format!(
            "row {r} is past the {n} positions of the sequences"
        ))),
        None => Ok(()),
    }
}

/// [`Transformer::forward_blocks`] for an architecture whose `block(l, x, cache)` runs
/// block `l` at positions from 0 without a KV cache.
pub(crate) fn run_blocks(
    info: &ModelInfo,
    resid: &Tensor,
    layers: std::ops::Range<usize>,
    hooks: &Hooks,
    mut block: impl FnMut(usize, Tensor, &mut ActivationCache) -> candle_core::Result<Tensor>,
) -> Result<(Tensor, ActivationCache), ModelError> {
    check_blocks(info, resid, &layers, hooks)?;
    let mut cache = ActivationCache::default();
    let mut x = resid.clone();
    for l in layers {
        x = block(l, x, &mut cache)?;
    }
    Ok((x, cache))
}

/// What [`Transformer::forward_blocks`] checks: a `[b, t, d]` stream, a non-empty range
/// of the model's layers, hooks on existing layers, and a length within the window.
fn check_blocks(
    info: &ModelInfo,
    resid: &Tensor,
    layers: &std::ops::Range<usize>,
    hooks: &Hooks,
) -> Result<(), ModelError> {
    hooks.validate(info.n_layers)?;
    let dims = resid.dims();
    if dims.len() != 3 || dims[2] != info.d_model {
        return Err(ModelError::Call(format!(
            "a residual stream must be [batch, positions, {}], got {dims:?}",
            info.d_model
        )));
    }
    if layers.is_empty() || layers.end > info.n_layers {
        return Err(ModelError::Call(format!(
            "layers {layers:?} must be a non-empty range within 0..{}",
            info.n_layers
        )));
    }
    if dims[1] > info.max_positions {
        return Err(ModelError::TooLong {
            len: dims[1],
            max: info.max_positions,
        });
    }
    Ok(())
}

/// A causal language model with hook points.
pub trait Transformer: Send + Sync {
    fn info(&self) -> &ModelInfo;
    fn device(&self) -> &Device;

    /// Forward `ids` `[b, t]`. With a KV cache, the ids continue the cached positions and
    /// the cache is extended; positions (and writers' position selectors) are absolute.
    fn forward_at(
        &self,
        ids: &Tensor,
        kv: Option<&mut KvCache>,
        hooks: &Hooks,
        at: LogitsAt,
    ) -> Result<ForwardOutput, ModelError>;

    /// [`Transformer::forward_at`] with logits at every position.
    fn forward(
        &self,
        ids: &Tensor,
        kv: Option<&mut KvCache>,
        hooks: &Hooks,
    ) -> Result<ForwardOutput, ModelError> {
        self.forward_at(ids, kv, hooks, LogitsAt::All)
    }

    /// Run only blocks `layers` on `resid` `[b, t, d]`, the stream entering the first of
    /// them (its `hook_resid_pre`), at positions from 0 without a KV cache. Returns the
    /// stream leaving the last block (after its `hook_resid_post`) and what readers
    /// cached. Training a breaker needs only the layers between its site and the layer
    /// its loss reads, so the rest of the model is never run for every step.
    fn forward_blocks(
        &self,
        resid: &Tensor,
        layers: std::ops::Range<usize>,
        hooks: &Hooks,
    ) -> Result<(Tensor, ActivationCache), ModelError>;

    /// Final norm and unembedding of a residual-stream tensor `[.., d]` → `[.., vocab]`.
    fn unembed(&self, resid: &Tensor) -> Result<Tensor, ModelError>;

    /// Logits `[rows.len(), vocab]` at `rows`, indices into the flattened `[b·t]`
    /// positions of `ids` (continuing `kv` as [`Transformer::forward_at`] does). Scoring
    /// reads only the continuation positions of a padded batch, and unembedding the rest
    /// (`vocab` columns each, a fifth of SmolLM2's work per position) would be wasted.
    fn forward_rows(
        &self,
        ids: &Tensor,
        kv: Option<&mut KvCache>,
        hooks: &Hooks,
        rows: &[u32],
    ) -> Result<Tensor, ModelError> {
        let (b, t) = ids.dims2()?;
        let last = HookPoint::ResidPost(self.info().n_layers.saturating_sub(1));
        let probe = hooks.clone().read(last);
        let out = self.forward_at(ids, kv, &probe, LogitsAt::Skip)?;
        let resid = out
            .cache
            .get(last)
            .ok_or_else(|| candle_core::Error::Msg(format!("{last} was not cached")))?;
        let index = Tensor::new(rows, resid.device())?;
        let picked = resid
            .reshape((b * t, ()))?
            .index_select(&index, 0)?
            .unsqueeze(0)?;
        let logits = self.unembed(&picked)?;
        check_finite(&logits)?;
        Ok(logits.squeeze(0)?)
    }

    /// Logits `[rows.len(), vocab]` for sequences run side by side from position 0
    /// (no KV cache), at `rows`: indices into the sequences' positions laid end to end.
    /// This form right-pads them with `pad` into one batch for
    /// [`Transformer::forward_rows`]; an architecture that can run them unpadded
    /// overrides it (no work on padding), giving each sequence's logits to f32 rounding.
    fn forward_seqs(
        &self,
        seqs: &[Vec<u32>],
        pad: u32,
        hooks: &Hooks,
        rows: &[u32],
    ) -> Result<Tensor, ModelError> {
        forward_seqs_padded(self, seqs, pad, hooks, rows)
    }

    /// The log-probability of `targets[i]` at `rows[i]` of sequences run as
    /// [`Transformer::forward_seqs`] runs them, and whether it was the argmax: what
    /// scoring that call's logits gives. An architecture may score without forming the
    /// `[rows, vocab]` logits (to f32 rounding of the normaliser); non-finite logits are
    /// an error either way.
    fn score_seqs(
        &self,
        seqs: &[Vec<u32>],
        pad: u32,
        hooks: &Hooks,
        rows: &[u32],
        targets: &[u32],
    ) -> Result<Vec<token_scores::TokenScore>, ModelError> {
        token_scores::from_logits(&self.forward_seqs(seqs, pad, hooks, rows)?, targets)
    }

    /// The token embedding matrix `[vocab, d]` (its spread sets causal tracing's noise).
    fn token_embeddings(&self) -> &Tensor;

    /// Factor the token embeddings are multiplied by on entering the residual stream
    /// (Gemma: √d). Causal tracing scales its noise by it.
    fn embed_scale(&self) -> f64 {
        1.0
    }

    fn new_kv_cache(&self) -> KvCache {
        KvCache::new(self.info().n_layers)
    }
}
