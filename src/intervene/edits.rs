//! The learned edits that the hook machinery's stock edits (add, replace, scale,
//! project out) do not cover.

use candle_core::{Result, Tensor, D};

use crate::model::hooks::{Edit, EditCtx};

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
        // [n, r]: W h + b − R h, then back to [n, d] through Rᵀ.
        let inner = (flat.matmul(&w.t()?)?.broadcast_add(&b)? - flat.matmul(&r.t()?)?)?;
        let delta = inner.matmul(&r)?;
        let mut shape = lead;
        shape.push(d);
        (flat + delta)?.reshape(shape)
    }
}
