//! The residual stream's additions on the CPU, split across rayon's threads.
//!
//! candle's elementwise add ran on the calling thread while the pool waited (candle's
//! own pool of `threads − 1` workers barely joined in): in a perplexity run the two adds
//! per block were 1.2% of the samples, all of it time the second core sat idle. Same
//! IEEE additions, so the same bits.

use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

/// `a + b` for tensors of one shape; candle's add where autograd tracks either, or for
/// other dtypes and devices.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op();
    if !cpu_f32(a) || !cpu_f32(b) || a.shape() != b.shape() {
        return a + b;
    }
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    let (sa, la) = a.storage_and_layout();
    let (sb, lb) = b.storage_and_layout();
    let xs = super::blas::cpu_elements("residual add", &sa, la)?;
    let ys = super::blas::cpu_elements("residual add", &sb, lb)?;
    let n = xs.len();
    let mut out: Vec<f32> = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .zip(xs.par_chunks(CHUNK).zip(ys.par_chunks(CHUNK)))
        .for_each(|(dst, (x, y))| {
            for ((d, &x), &y) in dst.iter_mut().zip(x).zip(y) {
                d.write(x + y);
            }
        });
    // SAFETY: the chunks wrote all n elements.
    unsafe { out.set_len(n) };
    Tensor::from_vec(out, a.shape(), a.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn gives_candles_sums_at_any_length() {
        let dev = Device::Cpu;
        for n in [1, 17, CHUNK, 3 * CHUNK + 5] {
            let a = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
            let got = add(&a, &b).unwrap().to_vec1::<f32>().unwrap();
            let want = (&a + &b).unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(got, want, "{n} elements");
        }
        let a = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        let b = Tensor::zeros((3, 2), DType::F32, &dev).unwrap();
        assert!(
            add(&a, &b).is_err(),
            "shapes that do not match are candle's error"
        );
    }
}
