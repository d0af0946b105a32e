//! The gated MLP's activation, `silu(gate) · up`, in one pass on the CPU without
//! autograd.
//!
//! candle runs `silu` and the product as two serial element loops, the first calling
//! libm's `exp` per element: on SmolLM2 that is 46k exponentials per token, and on a
//! two-core machine one core idled while the other ran them. Here both are one loop,
//! split across rayon's threads, with the branch-free exponential of `softmax.rs`
//! (within 2 ulp of libm) so that it vectorises. Autograd inputs, other dtypes and
//! devices take candle's form; both compute the same function (tested below).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::ops::{linear, LinearWeight};
use super::simd::with_avx2;
use super::softmax::exp_nonpositive;

/// Elements per rayon task: large enough that scheduling costs nothing beside the work,
/// small enough that a prefill's few rows still split across the threads.
const CHUNK: usize = 1 << 13;

/// `silu(gate) · up` for tensors of one shape.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let fused = !gate.track_op()
        && !up.track_op()
        && gate.device().is_cpu()
        && gate.dtype() == candle_core::DType::F32
        && up.dtype() == candle_core::DType::F32
        && gate.dims() == up.dims();
    if !fused {
        return candle_nn::ops::silu(gate)? * up;
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SiluMul)
}

/// `silu(x · gateᵀ) · (x · upᵀ)`, the gated MLP's activation from its input (no biases).
/// Where the packed kernel runs, neither product is formed ([`super::packed::silu_gated`]:
/// at a prefill's 640 rows each is 3.9 MB written and read back); elsewhere the two
/// products and [`silu_mul`]. Same bits either way. The caller makes sure no hook reads
/// or writes the gate's product.
pub fn silu_gated_linear(
    x: &Tensor,
    gate: &impl LinearWeight,
    up: &impl LinearWeight,
) -> Result<Tensor> {
    let fusable = !x.track_op()
        && !gate.tensor().track_op()
        && !up.tensor().track_op()
        && x.device().is_cpu()
        && x.dtype() == candle_core::DType::F32;
    if fusable {
        if let (Some(g), Some(u)) = (gate.panels()?, up.panels()?) {
            let dims = x.dims();
            let flat = x.reshape(((), dims[dims.len() - 1]))?;
            if let Some(y) = super::packed::silu_gated(&flat, &g, &u)? {
                let mut shape = dims[..dims.len() - 1].to_vec();
                shape.push(y.dim(1)?);
                return y.reshape(shape);
            }
        }
    }
    silu_mul(&linear(x, gate, None)?, &linear(x, up, None)?)
}

struct SiluMul;

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, u) = super::blas::f32_operands(self.name(), (s1, l1), (s2, l2))?;
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| silu_mul_into(o, g, u));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

pub(super) fn silu_mul_into(out: &mut [f32], g: &[f32], u: &[f32]) {
    with_avx2!(silu_mul_body(out: &mut [f32], g: &[f32], u: &[f32]) -> ())
}

/// `out` row `r` (at `out + r·ld`) ← `silu(g) · u` over row `r` of 16 of the scratch
/// `g`, `u`, for `r < rows`: the packed kernel's tile written straight to its place in
/// the output (through the scratch `h` of [`silu_mul_into`] and a copy, the copy was a
/// third of the activation's time). Each row is a fixed 16 floats, so the inlined loop
/// has no scalar tail. Same function per element, so the same bits.
///
/// # Safety
/// `g` and `u` hold `rows` rows of 16; `out` addresses `rows` rows of 16 floats with
/// stride `ld` that nothing else reads or writes meanwhile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn silu_mul_rows16(rows: usize, g: &[f32], u: &[f32], out: *mut f32, ld: usize) {
    for r in 0..rows {
        let g: &[f32; 16] = g[r * 16..][..16].try_into().expect("16 floats");
        let u: &[f32; 16] = u[r * 16..][..16].try_into().expect("16 floats");
        let o = &mut *out.add(r * ld).cast::<[f32; 16]>();
        silu_mul_body(o, g, u);
    }
}

#[inline(always)]
fn silu_mul_body(out: &mut [f32], g: &[f32], u: &[f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(g).zip(u) {
        *o = silu(x) * y;
    }
}

/// `x · sigmoid(x)`, the exponential taken of `-|x|` only (so it never overflows):
/// sigmoid is `1 / (1 + e)` for `x ≥ 0` and `e / (1 + e)` below, with `e = exp(-|x|)`.
#[inline(always)]
fn silu(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    let num = if x >= 0.0 { 1.0 } else { e };
    x * num / (1.0 + e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_and_candle_forms_agree() {
        let dev = Device::Cpu;
        // Values across the range a gate sees, large magnitudes and zero included, over
        // more than one chunk and not a multiple of the vector width.
        let n = 7 * (3 * CHUNK / 7 + 1);
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 2001) as f32 - 1000.0) * 0.03)
            .collect();
        let u: Vec<f32> = (0..n)
            .map(|i| ((i * 31 % 17) as f32) * 0.25 - 2.0)
            .collect();
        let g = Tensor::from_vec(g, (n / 7, 7), &dev).unwrap();
        let u = Tensor::from_vec(u, (n / 7, 7), &dev).unwrap();
        let fused = silu_mul(&g, &u).unwrap();
        let want = (candle_nn::ops::silu(&g).unwrap() * &u).unwrap();
        let (f, w) = (
            fused.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        for (a, b) in f.iter().zip(&w) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "{a} vs {b}");
        }
        assert_eq!(silu(0.0), 0.0);
        assert!(silu(-200.0).abs() < 1e-30 && silu(200.0) == 200.0);
        // A tracked input keeps the differentiable form.
        let gv = Var::from_tensor(&g).unwrap();
        let c = silu_mul(gv.as_tensor(), &u).unwrap();
        assert!(c.track_op());
    }

    /// The gated MLP from its input gives the bits of its two products followed by
    /// `silu_mul`, whichever path runs (fused in the packed kernel where it runs, and
    /// for depths the fused form leaves to the products), for tiles of every row count
    /// and a last partial panel; a tracked input keeps the differentiable form.
    #[test]
    fn gated_linear_gives_the_bits_of_its_products_and_silu_mul() {
        use crate::model::ops::Weight;
        let dev = Device::Cpu;
        let vals = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| (((i + seed) * 7919 % 2003) as f32 - 1001.0) * 2e-3)
                .collect()
        };
        for (m, n, k) in [(1, 16, 8), (7, 35, 64), (200, 48, 576), (13, 20, 1000)] {
            let x = Tensor::from_vec(vals(m * k, 1), (m, k), &dev).unwrap();
            let gate = Weight::new(Tensor::from_vec(vals(n * k, 2), (n, k), &dev).unwrap());
            let up = Weight::new(Tensor::from_vec(vals(n * k, 3), (n, k), &dev).unwrap());
            let got = silu_gated_linear(&x, &gate, &up).unwrap();
            let want = silu_mul(
                &linear(&x, &gate, None).unwrap(),
                &linear(&x, &up, None).unwrap(),
            )
            .unwrap();
            assert_eq!(
                got.to_vec2::<f32>().unwrap(),
                want.to_vec2::<f32>().unwrap(),
                "{m}×{n}×{k}"
            );
        }
        let x = Var::from_tensor(&Tensor::from_vec(vals(64, 4), (4, 16), &dev).unwrap()).unwrap();
        let w = Weight::new(Tensor::from_vec(vals(128, 5), (8, 16), &dev).unwrap());
        assert!(silu_gated_linear(x.as_tensor(), &w, &w).unwrap().track_op());
    }
}
