//! Numerical building blocks shared by the architectures.
//!
//! candle's fused kernels (RMSNorm, LayerNorm, RoPE, softmax) are fast but have no backward pass:
//! a gradient would silently stop at them. So each op here checks whether any input is
//! tracked by autograd (a `Var` upstream) and then uses the composed, differentiable form.
//! Both forms compute the same function (tested below). The fused kernels also lack f64,
//! which tests use for tight finite-difference checks, so f64 takes the composed form.

fn composed(ts: &[&Tensor]) -> bool {
    ts.iter().any(|t| t.track_op() || t.dtype() == DType::F64)
}

use candle_core::{DType, Device, Result, Tensor, D};

pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if composed(&[x, w]) {
        let d = x.dim(D::Minus1)? as f64;
        let ms = (x.sqr()?.sum_keepdim(D::Minus1)? / d)?;
        x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
    } else {
        super::norm::rms_norm(x, w, eps as f32)
    }
}

pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if composed(&[x, w, b]) {
        let d = x.dim(D::Minus1)? as f64;
        let mean = (x.sum_keepdim(D::Minus1)? / d)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = (xc.sqr()?.sum_keepdim(D::Minus1)? / d)?;
        xc.broadcast_div(&(var + eps)?.sqrt()?)?
            .broadcast_mul(w)?
            .broadcast_add(b)
    } else {
        candle_nn::ops::layer_norm(&x.contiguous()?, w, b, eps as f32)
    }
}

/// Softmax over the last dimension (attention patterns).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if composed(&[x]) {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// Cos/sin tables for rotary embeddings in the "rotate half" (NEOX / Hugging Face)
/// layout, `[max_pos, rot_dim / 2]`. Computed in f64 and rounded once.
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    pub fn new(rot_dim: usize, base: f64, max_pos: usize, dev: &Device) -> Result<Self> {
        Self::scaled(rot_dim, base, 1.0, max_pos, dev)
    }

    /// Tables for linear RoPE scaling: position `p` rotates as `p / factor` would.
    pub fn scaled(
        rot_dim: usize,
        base: f64,
        factor: f64,
        max_pos: usize,
        dev: &Device,
    ) -> Result<Self> {
        let half = rot_dim / 2;
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for p in 0..max_pos {
            for i in 0..half {
                let inv = base.powf(-((2 * i) as f64) / rot_dim as f64) / factor;
                let a = p as f64 * inv;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Ok(Rope {
            cos: Tensor::from_vec(cos, (max_pos, half), dev)?,
            sin: Tensor::from_vec(sin, (max_pos, half), dev)?,
        })
    }

    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Rotate `x` `[b, heads, t, dh]` at per-row positions `pos` (`b·t` of them, row by
    /// row): a left-padded batch, whose rows start at different offsets.
    pub fn apply_rows(&self, x: &Tensor, pos: &[u32]) -> Result<Tensor> {
        let (b, _, t, dh) = x.dims4()?;
        let (cos, sin) = self.tables(x, b, t, 0, Some(pos))?;
        if composed(&[x]) {
            // rope_slow takes one table for the whole batch; this is it per row.
            let full = |m: &Tensor| Tensor::cat(&[m, m], D::Minus1)?.unsqueeze(1);
            let (cos, sin) = (full(&cos)?, full(&sin)?);
            let half = dh / 2;
            let rotated = Tensor::cat(
                &[
                    &x.narrow(D::Minus1, half, half)?.neg()?,
                    &x.narrow(D::Minus1, 0, half)?,
                ],
                D::Minus1,
            )?;
            x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
        } else {
            candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)
        }
    }

    /// Rotate `x` `[b, t, heads, dh]` (the projections' own layout, so no transpose is
    /// copied) at positions from `offset`, or per row at `rows` (`b·t` of them, as in
    /// [`Rope::apply_rows`]). Forward only: for the fused attention, which never runs
    /// under autograd.
    pub fn apply_thd(&self, x: &Tensor, offset: usize, rows: Option<&[u32]>) -> Result<Tensor> {
        if let Some(y) = self.rotate_cpu(x, offset, rows, false)? {
            return Ok(y);
        }
        let (b, t, _, _) = x.dims4()?;
        let (cos, sin) = self.tables(x, b, t, offset, rows)?;
        candle_nn::rotary_emb::rope_thd(&x.contiguous()?, &cos, &sin)
    }

    /// Rotate `x` `[b, t, heads, dh]` as [`Rope::apply_thd`] does, returned as
    /// `[b, heads, t, dh]` (keys for the KV cache and the fused attention): the same as
    /// transposing first and then [`Rope::apply`] / [`Rope::apply_rows`].
    pub fn apply_heads_first(
        &self,
        x: &Tensor,
        offset: usize,
        rows: Option<&[u32]>,
    ) -> Result<Tensor> {
        if let Some(y) = self.rotate_cpu(x, offset, rows, true)? {
            return Ok(y);
        }
        let x = x.transpose(1, 2)?.contiguous()?;
        match rows {
            Some(pos) => self.apply_rows(&x, pos),
            None => self.apply(&x, offset),
        }
    }

    /// [`super::rotary::relayout`] with this table's angles; `None` where it does not
    /// apply.
    fn rotate_cpu(
        &self,
        x: &Tensor,
        offset: usize,
        rows: Option<&[u32]>,
        heads_first: bool,
    ) -> Result<Option<Tensor>> {
        let angles = super::rotary::Angles {
            cos: &self.cos,
            sin: &self.sin,
            offset,
            rows,
        };
        super::rotary::relayout(x, Some(&angles), heads_first)
    }

    /// Rotate `x` `[b, heads, t, dh]` whose first position is `offset`.
    pub fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let (b, _, t, _) = x.dims4()?;
        let (cos, sin) = self.tables(x, b, t, offset, None)?;
        if composed(&[x]) {
            candle_nn::rotary_emb::rope_slow(x, &cos, &sin)
        } else {
            candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)
        }
    }

    /// Contiguous cos and sin in `x`'s dtype for `t` positions from `offset` (`[t, dh/2]`),
    /// or per row at `rows` (`b·t` positions → `[b, t, dh/2]`).
    fn tables(
        &self,
        x: &Tensor,
        b: usize,
        t: usize,
        offset: usize,
        rows: Option<&[u32]>,
    ) -> Result<(Tensor, Tensor)> {
        let idx = rows.map(|pos| Tensor::new(pos, x.device())).transpose()?;
        let table = |m: &Tensor| -> Result<Tensor> {
            let m = match &idx {
                Some(idx) => m.index_select(idx, 0)?.reshape((b, t, ()))?,
                None => m.narrow(0, offset, t)?,
            };
            m.to_dtype(x.dtype())?.contiguous()
        };
        Ok((table(&self.cos)?, table(&self.sin)?))
    }
}

/// Additive causal mask `[t, offset + t]`: query `i` (absolute `offset + i`) may see
/// keys `0..=offset + i`.
pub fn causal_mask(t: usize, offset: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    sliding_causal_mask(t, offset, None, dtype, dev)
}

/// [`causal_mask`] where, with a `window`, query `q` sees only keys `j` with
/// `q - j < window` (itself and the `window - 1` before it), as local attention does.
pub fn sliding_causal_mask(
    t: usize,
    offset: usize,
    window: Option<usize>,
    dtype: DType,
    dev: &Device,
) -> Result<Tensor> {
    let total = offset + t;
    let w = window.unwrap_or(usize::MAX);
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            let q = offset + i;
            (0..total).map(move |j| {
                if j > q || q - j >= w {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (t, total), dev)?.to_dtype(dtype)
}

/// Additive mask `[b, 1, t, offset + t]` for a left-padded batch: causal, and row `r`'s
/// real queries never see its first `pads[r]` keys. A pad query sees itself, so that its
/// (discarded) softmax stays finite. A `window` limits each query to its last `window`
/// keys, as in [`sliding_causal_mask`].
pub fn padded_causal_mask(
    t: usize,
    offset: usize,
    pads: &[usize],
    window: Option<usize>,
    dtype: DType,
    dev: &Device,
) -> Result<Tensor> {
    let total = offset + t;
    let w = window.unwrap_or(usize::MAX);
    let mut mask = Vec::with_capacity(pads.len() * t * total);
    for &p in pads {
        for i in 0..t {
            let q = offset + i;
            mask.extend((0..total).map(|j| {
                if j > q || q - j >= w || (j < p && j != q) {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            }));
        }
    }
    Tensor::from_vec(mask, (pads.len(), 1, t, total), dev)?.to_dtype(dtype)
}

/// Repeat key/value heads for grouped-query attention: `[b, kvh, t, dh]` →
/// `[b, kvh·rep, t, dh]`, each kv head serving `rep` consecutive query heads.
pub fn repeat_kv(x: &Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x.clone());
    }
    let (b, kvh, t, dh) = x.dims4()?;
    x.unsqueeze(2)?
        .expand((b, kvh, rep, t, dh))?
        .reshape((b, kvh * rep, t, dh))
}

pub use super::packed::{LinearWeight, Weight};

/// `x @ wᵀ (+ b)` for `x` of any rank ≥ 2 against a `[out, in]` weight.
pub fn linear(x: &Tensor, w: &impl LinearWeight, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims();
    let inner = dims[dims.len() - 1];
    let out = w.tensor().dim(0)?;
    let flat = x.reshape(((), inner))?;
    let y = match product(&flat, w)? {
        Some(y) => y,
        None => flat.matmul(&w.tensor().t()?)?,
    };
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut shape = dims[..dims.len() - 1].to_vec();
    shape.push(out);
    y.reshape(shape)
}

/// `x · wᵀ` by the packed kernel or BLAS, or `None` for candle's matmul. Products that
/// autograd tracks keep candle's matmul: these kernels have no backward.
fn product(x: &Tensor, w: &impl LinearWeight) -> Result<Option<Tensor>> {
    let wt = w.tensor();
    if !x.track_op() && !wt.track_op() && x.device().is_cpu() && x.dtype() == DType::F32 {
        // `None` where the packed kernel does not run.
        if let Some(p) = w.panels()? {
            return super::packed::linear(x, &p).map(Some);
        }
    }
    super::blas::linear(x, wt)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Largest absolute elementwise difference (the model tests' closeness measure).
    pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn fused_and_differentiable_forms_agree() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 5, 8), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.1, 8, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, 8, &dev).unwrap();
        // A Var input takes the composed path; a plain tensor the fused one.
        let xv = candle_core::Var::from_tensor(&x).unwrap();
        let a = rms_norm(&x, &w, 1e-5).unwrap();
        let c = rms_norm(xv.as_tensor(), &w, 1e-5).unwrap();
        assert!(!a.track_op() && c.track_op());
        assert!(max_diff(&a, &c) < 1e-5);
        let a = layer_norm(&x, &w, &b, 1e-5).unwrap();
        let c = layer_norm(xv.as_tensor(), &w, &b, 1e-5).unwrap();
        assert!(c.track_op());
        assert!(max_diff(&a, &c) < 1e-5);
        let rope = Rope::new(8, 10000.0, 32, &dev).unwrap();
        let q = Tensor::randn(0f32, 1.0, (2, 3, 5, 8), &dev).unwrap();
        let qv = candle_core::Var::from_tensor(&q).unwrap();
        let a = rope.apply(&q, 7).unwrap();
        let c = rope.apply(qv.as_tensor(), 7).unwrap();
        assert!(c.track_op());
        assert!(max_diff(&a, &c) < 1e-5);
        // The [b, t, heads, dh] form rotates the same, at an offset and per row.
        let thd = |x: &Tensor| x.transpose(1, 2).unwrap().contiguous().unwrap();
        let d = rope.apply_thd(&thd(&q), 7, None).unwrap();
        assert!(max_diff(&thd(&a), &d) < 1e-6);
        let pos: Vec<u32> = (0..2 * 5).map(|i| (i * 3 % 17) as u32).collect();
        let a = rope.apply_rows(&q, &pos).unwrap();
        let d = rope.apply_thd(&thd(&q), 0, Some(&pos)).unwrap();
        assert!(max_diff(&thd(&a), &d) < 1e-6);
        let a = softmax_last_dim(&q).unwrap();
        let c = softmax_last_dim(qv.as_tensor()).unwrap();
        assert!(c.track_op());
        assert!(max_diff(&a, &c) < 1e-6);
    }

    #[test]
    fn causal_mask_respects_offset() {
        let m = causal_mask(2, 3, DType::F32, &Device::Cpu).unwrap();
        let v = m.to_vec2::<f32>().unwrap();
        assert_eq!(v[0][3], 0.0);
        assert_eq!(v[0][4], f32::NEG_INFINITY);
        assert_eq!(v[1][4], 0.0);
    }
}
