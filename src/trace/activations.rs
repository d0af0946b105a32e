//! Per-text activation summaries shared by concept probes and intervention fitting: each
//! text's activation at each hook point, averaged over its tokens after the first. The
//! first position is the attention sink, whose huge state changes with the first token
//! and would otherwise dominate both a probe and a mean difference added at every
//! position (a one-token text keeps its only token).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use crate::model::generate::pad_right;
use crate::model::{HookPoint, Hooks, LoadedModel, LogitsAt, ModelError};

/// `[b, t, 1]`: 1.0 at real positions from `from` on (at least the last real one), 0.0
/// at padding and before.
pub(crate) fn pad_mask(
    seqs: &[Vec<u32>],
    from: usize,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
    let mut m = vec![0f32; seqs.len() * t];
    for (i, s) in seqs.iter().enumerate() {
        for j in from.min(s.len().saturating_sub(1))..s.len() {
            m[i * t + j] = 1.0;
        }
    }
    Tensor::from_vec(m, (seqs.len(), t, 1), dev)
}

/// Each text's mean activation (f64, `[n_texts, d]` per point) over its tokens after the
/// first, with the number of tokens averaged; run `batch` sequences at a time,
/// right-padded.
pub fn text_means(
    model: &LoadedModel,
    seqs: &[Vec<u32>],
    points: &[HookPoint],
    batch: usize,
) -> Result<(BTreeMap<HookPoint, Tensor>, Vec<usize>), ModelError> {
    let dev = model.device();
    let pad = model.tokenizer.eos_id.unwrap_or(0);
    let hooks = Hooks::new().read_all(points.iter().copied());
    let mut parts: BTreeMap<HookPoint, Vec<Tensor>> = BTreeMap::new();
    let mut counts = Vec::with_capacity(seqs.len());
    for chunk in seqs.chunks(batch.max(1)) {
        let ids = pad_right(chunk, pad, dev)?;
        let mask = pad_mask(chunk, 1, dev)?.to_dtype(DType::F64)?;
        let n = mask.sum(1)?; // [b, 1]
        let out = model.model.forward_at(&ids, None, &hooks, LogitsAt::Last)?;
        for p in points {
            let a = out
                .cache
                .get(*p)
                .ok_or_else(|| candle_core::Error::Msg(format!("hook {p} did not fire")))?
                .to_dtype(DType::F64)?;
            let mean = a.broadcast_mul(&mask)?.sum(1)?.broadcast_div(&n)?;
            parts.entry(*p).or_default().push(mean);
        }
        counts.extend(chunk.iter().map(|s| s.len().saturating_sub(1).max(1)));
    }
    let means = parts
        .into_iter()
        .map(|(p, v)| Ok((p, Tensor::cat(&v, 0)?)))
        .collect::<candle_core::Result<_>>()?;
    Ok((means, counts))
}

/// Token ids of each text, cut to `max_tokens` (at least one token each).
pub fn encode_all(
    model: &LoadedModel,
    texts: &[impl AsRef<str>],
    max_tokens: usize,
) -> Result<Vec<Vec<u32>>, ModelError> {
    texts
        .iter()
        .map(|t| {
            let mut ids = model.encode(t.as_ref())?;
            ids.truncate(max_tokens.max(1));
            Ok(ids)
        })
        .collect()
}
