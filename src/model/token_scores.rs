//! Each scored position's log-probability of the token that follows it, and whether
//! that token was the argmax: from a `[positions, vocab]` block of logits, or straight
//! from the normed stream through the packed unembedding without forming the logits.

use candle_core::{DType, Tensor, D};

use super::packed::LinearWeight;
use super::ModelError;

/// One scored position: the target token's log-probability, and whether it was the
/// first maximum of the row (as an argmax picks).
pub type TokenScore = (f64, bool);

/// [`TokenScore`]s of `targets[i]` under row `i` of `logits` `[n, vocab]`. One pass per
/// row for the maximum and one for the normaliser, rows in parallel: a full
/// `log_softmax` would write and reread `n × vocab` values to use `n`.
pub fn from_logits(logits: &Tensor, targets: &[u32]) -> Result<Vec<TokenScore>, ModelError> {
    use rayon::prelude::*;
    if !logits.device().is_cpu() {
        return from_logits(&logits.to_device(&candle_core::Device::Cpu)?, targets);
    }
    let (n, vocab) = logits.dims2()?;
    check_targets(n, vocab, targets)?;
    let rows = logits.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = rows.storage_and_layout();
    let flat = super::blas::cpu_elements("token scores", &storage, layout)?;
    Ok(flat
        .par_chunks(vocab)
        .zip(targets.par_iter())
        .map(|(row, &target)| score_row(row, target as usize))
        .collect())
}

/// [`TokenScore`]s of `targets` under `h · wᵀ` for normed rows `h` `[.., d]` and an
/// unembedding `w` `[vocab, d]`, through the packed kernel without forming the logits
/// ([`super::packed::target_log_probs`]). `None` where the kernel does not run (not an
/// f32 CPU product, autograd tracking it), or where a logit is infinite or NaN: the
/// caller then forms the logits and its finite check names the culprit.
pub(crate) fn through_unembedding(
    h: &Tensor,
    w: &impl LinearWeight,
    targets: &[u32],
) -> Result<Option<Vec<TokenScore>>, ModelError> {
    if h.track_op() || !h.device().is_cpu() || h.dtype() != DType::F32 {
        return Ok(None);
    }
    let Some(panels) = w.panels()? else {
        return Ok(None);
    };
    let flat = h.reshape(((), h.dim(D::Minus1)?))?;
    check_targets(flat.dim(0)?, w.tensor().dim(0)?, targets)?;
    Ok(super::packed::target_log_probs(&flat, &panels, targets)?)
}

/// An error unless there is one target per row and each names a column of the row.
fn check_targets(rows: usize, vocab: usize, targets: &[u32]) -> Result<(), ModelError> {
    if targets.len() != rows {
        return Err(ModelError::Call(format!(
            "{rows} scored positions but {} target tokens",
            targets.len()
        )));
    }
    match targets.iter().find(|&&t| t as usize >= vocab) {
        Some(t) => Err(ModelError::Call(format!(
            "target token id {t} is past the vocabulary of {vocab}"
        ))),
        None => Ok(()),
    }
}

/// The [`TokenScore`] of `target` under one row of logits.
fn score_row(row: &[f32], target: usize) -> TokenScore {
    let (max, lse) = super::softmax::max_logsumexp(row);
    let x = row[target];
    let greedy = x == max && !row[..target].contains(&max);
    ((x - max) as f64 - lse, greedy)
}
