//! RMS norm on the CPU without autograd, the sum of squares in vector lanes.
//!
//! candle's form sums each row's squares one after another, a chain the compiler may
//! not reorder, so it ran scalar: 1.25% of a perplexity run's CPU time. Here each row's
//! squares go into sixteen lane sums, added up at the end; rows run in parallel.
//! Other dtypes and devices take candle's form (`ops::rms_norm` composes the norm from
//! tensor ops where autograd tracks it); both compute the same function to f32 rounding
//! (tested below).

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::simd::with_avx2;

/// Elements per rayon task, in whole rows.
const CHUNK: usize = 1 << 14;
const LANES: usize = 16;

/// `x / sqrt(mean(x²) + eps) · w` over the last dimension; `w` is `[d]`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    let fused = !x.track_op()
        && !w.track_op()
        && x.device().is_cpu()
        && x.dtype() == candle_core::DType::F32
        && w.dtype() == candle_core::DType::F32
        && w.rank() == 1
        && x.dims().last() == Some(&w.dim(0)?)
        && w.dim(0)? > 0;
    if !fused {
        return candle_nn::ops::rms_norm(&x.contiguous()?, w, eps);
    }
    x.contiguous()?
        .apply_op2_no_bwd(&w.contiguous()?, &RmsNorm(eps))
}

struct RmsNorm(f32);

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = super::blas::f32_operands(self.name(), (s1, l1), (s2, l2))?;
        let d = w.len();
        // Not zeroed: every element is written, and zeroing was a serial pass.
        let mut out: Vec<f32> = Vec::with_capacity(x.len());
        let rows = (CHUNK / d).max(1) * d;
        out.spare_capacity_mut()[..x.len()]
            .par_chunks_mut(rows)
            .zip(x.par_chunks(rows))
            .for_each(|(o, x)| norm_rows(o, x, w, self.0));
        // SAFETY: norm_rows wrote each of the x.len() elements.
        unsafe { out.set_len(x.len()) };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

fn norm_rows(out: &mut [MaybeUninit<f32>], x: &[f32], w: &[f32], eps: f32) {
    with_avx2!(norm_rows_body(out: &mut [MaybeUninit<f32>], x: &[f32], w: &[f32], eps: f32) -> ())
}

#[inline(always)]
fn norm_rows_body(out: &mut [MaybeUninit<f32>], x: &[f32], w: &[f32], eps: f32) {
    let d = w.len();
    for (o, x) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let mut lanes = [0f32; LANES];
        let mut chunks = x.chunks_exact(LANES);
        for c in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += v * v;
            }
        }
        let tail: f32 = chunks.remainder().iter().map(|&v| v * v).sum();
        let sum2 = lanes.iter().sum::<f32>() + tail;
        let m = (sum2 / d as f32 + eps).sqrt();
        for ((o, &v), &a) in o.iter_mut().zip(x).zip(w) {
            o.write(v / m * a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn lanes_and_candles_form_agree() {
        let dev = Device::Cpu;
        for d in [576, 37, 16] {
            let rows = 3 * CHUNK / d + 5;
            let x: Vec<f32> = (0..rows * d)
                .map(|i| ((i * 7919 % 2001) as f32 - 1000.0) * 0.01)
                .collect();
            let w: Vec<f32> = (0..d).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect();
            let x = Tensor::from_vec(x, (rows, d), &dev).unwrap();
            let w = Tensor::from_vec(w, d, &dev).unwrap();
            let got = rms_norm(&x, &w, 1e-5).unwrap();
            let want = candle_nn::ops::rms_norm(&x, &w, 1e-5).unwrap();
            let diff = crate::model::ops::tests::max_diff(&got, &want);
            assert!(diff < 1e-5, "d {d}: {diff}");
        }
    }
}
