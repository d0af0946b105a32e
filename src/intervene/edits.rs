//! The learned edits that the hook machinery's stock edits (add, replace, scale,
//! project out) do not cover.

use std::sync::{Arc, Mutex};

use candle_core::{Result, Tensor, D};

use crate::model::hooks::{Edit, EditCtx};
use crate::model::ops::linear;
use crate::model::{HookPoint, Writer};

/// LoReFT (Wu et al. 2024): `h ← h + Rᵀ(W h + b − R h)`, editing `h` only inside the
/// `r`-dimensional subspace spanned by `R`'s rows. `R`, `W` are `[r, d]`, `b` `[r]`.
/// With `R = 0` the edit is the identity whatever `W` and `b` are, which is how a breaker
/// starts its training.
#[derive(Debug, Clone)]
pub struct LowRankEdit {
    pub r: Tensor,
    pub w: Tensor,
    pub b: Tensor,
}

impl LowRankEdit {
    pub fn rank(&self) -> usize {
        self.r.dims().first().copied().unwrap_or(0)
    }

    pub fn check(&self, d: usize) -> std::result::Result<(), String> {
        let (rr, rd) = self.r.dims2().map_err(|e| format!("R: {e}"))?;
        let (wr, wd) = self.w.dims2().map_err(|e| format!("W: {e}"))?;
        let br = self.b.dims1().map_err(|e| format!("b: {e}"))?;
        if rd != d || wd != d || wr != rr || br != rr {
            return Err(format!(
                "low-rank shapes R {:?}, W {:?}, b {:?} do not fit d_model {d}",
                self.r.dims(),
                self.w.dims(),
                self.b.dims()
            ));
        }
        Ok(())
    }
}

impl Edit for LowRankEdit {
    fn apply(&self, x: &Tensor, _: &EditCtx) -> Result<Tensor> {
        let dt = x.dtype();
        let (r, w, b) = (
            self.r.to_dtype(dt)?,
            self.w.to_dtype(dt)?,
            self.b.to_dtype(dt)?,
        );
        let d = x.dim(D::Minus1)?;
        let lead = x.dims()[..x.rank() - 1].to_vec();
        let flat = x.reshape(((), d))?;
        // [n, r]: W h + b − R h, then back to [n, d] through Rᵀ. Products through
        // `ops::linear`, so that a row's result does not depend on the rows beside it
        // where the few-row kernel runs (batched decoding relies on it).
        let inner = (linear(&flat, &w, Some(&b))? - linear(&flat, &r, None)?)?;
        let delta = linear(&inner, &r.t()?.contiguous()?, None)?;
        let mut shape = lead;
        shape.push(d);
        (flat + delta)?.reshape(shape)
    }
}

/// A LoRA update of one weight matrix (Hu et al. 2021), applied through hooks:
/// `out ← out + s·B A x`, where `x` is the matrix's input and `out` its output. The
/// matrices supported are the MLP's down projection (input `mlp.hook_post`, output
/// `hook_mlp_out`) and attention's output projection (input `attn.hook_z` flattened over
/// heads, output `hook_attn_out`). `A` is `[r, in]`, `B` `[d, r]`; with `B = 0` it is the
/// identity (training starts near it, with a small random `B`).
#[derive(Debug, Clone)]
pub struct LoraEdit {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
}

impl LoraEdit {
    pub fn check(&self, d_in: usize, d_out: usize) -> std::result::Result<(), String> {
        let (ar, ai) = self.a.dims2().map_err(|e| format!("A: {e}"))?;
        let (bo, br) = self.b.dims2().map_err(|e| format!("B: {e}"))?;
        if ai != d_in || bo != d_out || ar != br {
            return Err(format!(
                "LoRA shapes A {:?}, B {:?} do not fit a {d_in} → {d_out} matrix",
                self.a.dims(),
                self.b.dims()
            ));
        }
        Ok(())
    }

    /// The two writers: one that keeps the matrix's input, one that adds the update to
    /// its output. They share the kept tensor, so a hook set holding them must serve one
    /// forward pass at a time (as every task here does).
    pub fn writers(&self, input: HookPoint, output: HookPoint) -> (Writer, Writer) {
        let kept = Arc::new(Mutex::new(None));
        (
            Writer::new(input, Keep(kept.clone())),
            Writer::new(
                output,
                LoraAdd {
                    edit: self.clone(),
                    kept,
                },
            ),
        )
    }
}

type Kept = Arc<Mutex<Option<Tensor>>>;

/// Keeps the activation (flattened over heads) for the paired [`LoraAdd`]; changes
/// nothing.
struct Keep(Kept);

impl Edit for Keep {
    fn apply(&self, x: &Tensor, _: &EditCtx) -> Result<Tensor> {
        let (b, t) = (x.dim(0)?, x.dim(1)?);
        let flat = x.reshape((b, t, ()))?;
        if let Ok(mut k) = self.0.lock() {
            *k = Some(flat);
        }
        Ok(x.clone())
    }
}

struct LoraAdd {
    edit: LoraEdit,
    kept: Kept,
}

impl Edit for LoraAdd {
    fn apply(&self, x: &Tensor, ctx: &EditCtx) -> Result<Tensor> {
        let input = self
            .kept
            .lock()
            .ok()
            .and_then(|k| k.clone())
            .ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "LoRA at {}: its input was not seen in this forward pass",
                    ctx.point
                ))
            })?;
        let dt = x.dtype();
        let (a, b) = (self.edit.a.to_dtype(dt)?, self.edit.b.to_dtype(dt)?);
        let (bs, t, d_in) = input.dims3()?;
        let flat = input.to_dtype(dt)?.reshape((bs * t, d_in))?;
        // Through `ops::linear` for the same reason as the LoReFT edit's products.
        let delta = linear(&linear(&flat, &a, None)?, &b, None)?.affine(self.edit.scale, 0.0)?;
        x + delta.reshape(x.shape())?
    }
}
