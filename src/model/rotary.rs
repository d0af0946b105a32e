//! RoPE for the fused attention on the CPU: rotates the projections in their own
//! `[b, t, heads, dh]` layout and writes them in the layout attention reads, in one
//! parallel pass.
//!
//! Why not candle's `rope` / `rope_thd`: each zeroes its output on the calling thread
//! before a parallel pass, and the keys first went through a serial transpose copy to
//! `[b, heads, t, dh]`. In a perplexity run those serial passes left the second core idle
//! for ~1% of the wall time. The arithmetic is candle's, term for term
//! (`x₁·cos − x₂·sin`, `x₁·sin + x₂·cos`), so the bits are the same (tested below).

use candle_core::{Layout, Result, Storage, Tensor};
use rayon::prelude::*;

use super::blas::OutPtr;
use super::simd::with_avx2;

fn elements<'a>(storage: &'a Storage, layout: &Layout) -> Result<&'a [f32]> {
    super::blas::cpu_elements("rope", storage, layout)
}

/// Rows `(b, t)` per rayon task.
const ROWS_PER_TASK: usize = 16;

/// Where each of `x`'s rows `(b, t)` sits on the position axis, and the tables
/// `[max_pos, dh/2]` its angles come from.
pub struct Angles<'a> {
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    /// Position of row `(b, t)`: `offset + t`, or `rows[b·t_len + t]` when given.
    pub offset: usize,
    pub rows: Option<&'a [u32]>,
}

/// `x` `[b, t, heads, dh]` (f32 on the CPU) rotated by `angles` (or not, without them),
/// as `[b, heads, t, dh]` when `heads_first`, else in `x`'s layout. `None` where the
/// kernel does not apply (another dtype or device, a partial rotation); the caller then
/// takes candle's ops.
pub fn relayout(x: &Tensor, angles: Option<&Angles>, heads_first: bool) -> Result<Option<Tensor>> {
    let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == candle_core::DType::F32;
    let (b, t, h, d) = x.dims4()?;
    if !cpu_f32(x) || x.track_op() || d == 0 || d % 2 != 0 {
        return Ok(None);
    }
    if let Some(a) = angles {
        if !cpu_f32(a.cos) || !cpu_f32(a.sin) || a.cos.dims2()?.1 * 2 != d {
            return Ok(None);
        }
        if let Some(r) = a.rows.filter(|r| r.len() != b * t) {
            candle_core::bail!("rope: {} row positions for {b} × {t} rows", r.len());
        }
    }
    let x = x.contiguous()?;
    let (xs, xl) = x.storage_and_layout();
    let xs = elements(&xs, xl)?;
    let out = match angles {
        None => write(xs, (b, t, h, d), None, heads_first),
        Some(a) => {
            let max_pos = a.cos.dims2()?.0;
            let pos = |r: usize| match a.rows {
                Some(rows) => rows[r] as usize,
                None => a.offset + r % t,
            };
            if let Some(r) = (0..b * t).find(|&r| pos(r) >= max_pos) {
                candle_core::bail!(
                    "rope: position {} of row {r} is past the model's {max_pos}",
                    pos(r)
                );
            }
            let (cos, sin) = (a.cos.contiguous()?, a.sin.contiguous()?);
            let (cs, cl) = cos.storage_and_layout();
            let (ss, sl) = sin.storage_and_layout();
            let tables = (elements(&cs, cl)?, elements(&ss, sl)?);
            write(xs, (b, t, h, d), Some((tables, &pos)), heads_first)
        }
    };
    let shape = if heads_first {
        (b, h, t, d)
    } else {
        (b, t, h, d)
    };
    Tensor::from_vec(out, shape, x.device()).map(Some)
}

/// Cosines and sines `[max_pos, dh/2]`, and the position of each row `(b, t)`.
type Rotation<'a> = ((&'a [f32], &'a [f32]), &'a (dyn Fn(usize) -> usize + Sync));

/// The pass itself: each row `(b, t)` of `x`, rotated by `rot` if given, to its place.
fn write(
    x: &[f32],
    (b, t, h, d): (usize, usize, usize, usize),
    rot: Option<Rotation>,
    heads_first: bool,
) -> Vec<f32> {
    let n = b * t * h * d;
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let ptr = OutPtr(out.as_mut_ptr());
    let half = d / 2;
    (0..b * t)
        .into_par_iter()
        .with_min_len(ROWS_PER_TASK)
        .for_each(|r| {
            let (bi, ti) = (r / t, r % t);
            for hi in 0..h {
                let at = if heads_first {
                    ((bi * h + hi) * t + ti) * d
                } else {
                    (r * h + hi) * d
                };
                // SAFETY: `out` has room for n floats; each (row, head) has its own d
                // floats, which only this iteration writes.
                let dst = unsafe { std::slice::from_raw_parts_mut(ptr.at(at), d) };
                let x = &x[(r * h + hi) * d..][..d];
                match rot {
                    Some(((cos, sin), pos)) => {
                        let p = pos(r);
                        let (c, s) = (&cos[p * half..][..half], &sin[p * half..][..half]);
                        rotate(dst, x, c, s);
                    }
                    None => dst.copy_from_slice(x),
                }
            }
        });
    // SAFETY: the loop wrote all b·t·h rows of d floats.
    unsafe { out.set_len(n) };
    out
}

/// `dst ← x` rotated by the angles whose cosines and sines are `c`, `s` (half of `x`'s
/// length each).
fn rotate(dst: &mut [f32], x: &[f32], c: &[f32], s: &[f32]) {
    with_avx2!(rotate_body(dst: &mut [f32], x: &[f32], c: &[f32], s: &[f32]) -> ())
}

/// Written over zipped halves, not indices, so that the loop has no bounds checks and
/// vectorises (indexed, it ran one float at a time: 1% of a perplexity run). Products
/// and sums stay separate operations (Rust does not contract them into FMAs), so the
/// bits are candle's.
#[inline(always)]
fn rotate_body(dst: &mut [f32], x: &[f32], c: &[f32], s: &[f32]) {
    let (x1, x2) = x.split_at(x.len() / 2);
    let (d1, d2) = dst.split_at_mut(x.len() / 2);
    let halves = d1.iter_mut().zip(d2.iter_mut()).zip(x1.iter().zip(x2));
    for (((o1, o2), (&a, &b)), (&c, &s)) in halves.zip(c.iter().zip(s)) {
        *o1 = a * c - b * s;
        *o2 = a * s + b * c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::Rope;
    use candle_core::Device;

    fn bits(t: &Tensor) -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The kernel gives candle's bits in both layouts, at an offset and at per-row
    /// positions, for batches from one row up (the pass splits into tasks of 16 rows).
    #[test]
    fn gives_candles_bits_in_both_layouts() {
        let dev = Device::Cpu;
        let rope = Rope::new(8, 10_000.0, 64, &dev).unwrap();
        for (b, t, h) in [(1, 1, 3), (3, 7, 2), (2, 20, 1)] {
            let x = Tensor::randn(0f32, 1.0, (b, t, h, 8), &dev).unwrap();
            let heads = x.transpose(1, 2).unwrap().contiguous().unwrap();
            let rows: Vec<u32> = (0..b * t).map(|r| ((r * 5) % 40) as u32).collect();
            for (offset, rows) in [(0, None), (9, None), (0, Some(&rows[..]))] {
                let thd = rope.apply_thd(&x, offset, rows).unwrap();
                let first = rope.apply_heads_first(&x, offset, rows).unwrap();
                let want_first = match rows {
                    Some(pos) => rope.apply_rows(&heads, pos).unwrap(),
                    None => rope.apply(&heads, offset).unwrap(),
                };
                assert_eq!(first.dims(), &[b, h, t, 8]);
                assert_eq!(bits(&first), bits(&want_first), "{b}×{t}×{h} at {offset}");
                let want_thd = want_first.transpose(1, 2).unwrap();
                assert_eq!(bits(&thd), bits(&want_thd), "{b}×{t}×{h} at {offset}");
            }
            let moved = relayout(&x, None, true).unwrap().unwrap();
            assert_eq!(bits(&moved), bits(&heads));
        }
    }

    #[test]
    fn positions_past_the_table_or_miscounted_are_errors() {
        let dev = Device::Cpu;
        let rope = Rope::new(8, 10_000.0, 16, &dev).unwrap();
        let x = Tensor::zeros((1, 4, 1, 8), candle_core::DType::F32, &dev).unwrap();
        let err = rope.apply_thd(&x, 13, None).unwrap_err().to_string();
        assert!(err.contains("position 16"), "{err}");
        assert!(rope.apply_thd(&x, 12, None).is_ok());
        let err = rope
            .apply_thd(&x, 0, Some(&[0, 1]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 row positions for 1 × 4 rows"), "{err}");
    }
}
