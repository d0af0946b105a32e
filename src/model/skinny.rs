//! `x · wᵀ` for a few rows of `x` (decoding: one row per sample) without packing.
//!
//! BLAS's `sgemm` copies ("packs") each weight block into its kernel's layout before
//! multiplying. With hundreds of rows that copy is paid back many times; with the 25
//! rows of a RealToxicityPrompts decoding step it was 45% of the run's CPU samples
//! (`sgemm_incopy`), against 25% for the products themselves, and single-threaded
//! OpenBLAS reached 45–50 GFLOP/s on these shapes. Here each weight row is read once,
//! straight from the model's storage, and dotted with every row of `x` while it sits in
//! L1: a tile of 4 weight rows × up to 6 rows of `x` keeps 24 sixteen-lane accumulators
//! in registers (AVX-512), so each vector load feeds four or six FMAs.
//!
//! Runs only where the CPU has AVX-512F and AVX-512VL (without VL the compiler cannot
//! use the upper 16 vector registers for the accumulators and spills them); elsewhere
//! BLAS runs as before.

/// Products with at most this many rows of `x` take this kernel. Above it BLAS's packed
/// kernels win, packing being amortised over enough rows. Measured on SmolLM2's shapes
/// (2 threads, AVX-512): at 25 rows 114–134 GFLOP/s here against OpenBLAS's 81–93, at
/// 4–8 rows two to three times OpenBLAS, level at about 48 rows.
pub(crate) const MAX_ROWS: usize = 40;

/// Whether [`linear`] runs on this CPU.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `out[i][j] = x[i] · w[j]` for `i < m`, `j < n`: `x` is `[m, k]` (row stride `k`),
/// `w` is `[n, k]` (row stride `k`), `out` has row stride `ldo`.
///
/// # Safety
/// [`available`] must be true; the pointers must address matrices of those shapes and
/// `out` must not be read or written by anyone else meanwhile.
pub(crate) unsafe fn linear(
    (m, n, k): (usize, usize, usize),
    x: *const f32,
    w: *const f32,
    out: *mut f32,
    ldo: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        avx512::linear((m, n, k), x, w, out, ldo)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ((m, n, k), x, w, out, ldo);
        unreachable!("skinny::linear runs only where available() holds")
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Weight rows per tile.
    const R: usize = 4;
    /// Rows of `x` per tile (at most).
    const M: usize = 6;

    #[target_feature(enable = "avx512f,avx512vl")]
    pub(super) unsafe fn linear(
        (m, n, k): (usize, usize, usize),
        x: *const f32,
        w: *const f32,
        out: *mut f32,
        ldo: usize,
    ) {
        let full = k / 16;
        // Lanes of the last, partial chunk of a row.
        let tail: __mmask16 = ((1u32 << (k % 16)) - 1) as __mmask16;
        let mut j = 0;
        while j < n {
            let rows = R.min(n - j);
            let mut i = 0;
            while i < m {
                let xs = M.min(m - i);
                let (xp, wp, op) = (x.add(i * k), w.add(j * k), out.add(i * ldo + j));
                // Prefetch the next tile's weights while the first rows of x run.
                let next = (i == 0 && j + 2 * R <= n).then(|| w.add((j + R) * k));
                macro_rules! go {
                    ($r:literal, $m:literal) => {
                        tile::<$r, $m>(xp, wp, k, full, tail, op, ldo, next)
                    };
                }
                match (rows, xs) {
                    (4, 6) => go!(4, 6),
                    (4, 5) => go!(4, 5),
                    (4, 4) => go!(4, 4),
                    (4, 3) => go!(4, 3),
                    (4, 2) => go!(4, 2),
                    (4, 1) => go!(4, 1),
                    (_, xs) => {
                        // The last one to three weight rows, one at a time.
                        for r in 0..rows {
                            let (wr, or) = (wp.add(r * k), op.add(r));
                            match xs {
                                6 => tile::<1, 6>(xp, wr, k, full, tail, or, ldo, None),
                                5 => tile::<1, 5>(xp, wr, k, full, tail, or, ldo, None),
                                4 => tile::<1, 4>(xp, wr, k, full, tail, or, ldo, None),
                                3 => tile::<1, 3>(xp, wr, k, full, tail, or, ldo, None),
                                2 => tile::<1, 2>(xp, wr, k, full, tail, or, ldo, None),
                                _ => tile::<1, 1>(xp, wr, k, full, tail, or, ldo, None),
                            }
                        }
                    }
                }
                i += xs;
            }
            j += rows;
        }
    }

    /// `RR` weight rows × `MM` rows of `x`: the dot products of each pair, written to
    /// `out[i][r]` (row stride `ldo`).
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const RR: usize, const MM: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        full: usize,
        tail: __mmask16,
        out: *mut f32,
        ldo: usize,
        next: Option<*const f32>,
    ) {
        let mut acc = [[_mm512_setzero_ps(); MM]; RR];
        for c in 0..full {
            let o = c * 16;
            let mut wv = [_mm512_setzero_ps(); RR];
            for (r, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(w.add(r * k + o));
            }
            if let Some(next) = next {
                // The next tile's weight rows, one cache line per row per chunk, so that
                // they arrive from memory while this tile computes (the weights are
                // read once: without this the loads above stalled on DRAM).
                for r in 0..R {
                    _mm_prefetch::<_MM_HINT_T0>(next.add(r * k + o) as *const i8);
                }
            }
            for i in 0..MM {
                let xv = _mm512_loadu_ps(x.add(i * k + o));
                for r in 0..RR {
                    acc[r][i] = _mm512_fmadd_ps(wv[r], xv, acc[r][i]);
                }
            }
        }
        if tail != 0 {
            let o = full * 16;
            let mut wv = [_mm512_setzero_ps(); RR];
            for (r, v) in wv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(tail, w.add(r * k + o));
            }
            for i in 0..MM {
                let xv = _mm512_maskz_loadu_ps(tail, x.add(i * k + o));
                for r in 0..RR {
                    acc[r][i] = _mm512_fmadd_ps(wv[r], xv, acc[r][i]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (i, a) in row.iter().enumerate() {
                *out.add(i * ldo + r) = _mm512_reduce_add_ps(*a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tile shape and remainder: rows of `x` that run each of the six tile
    /// heights (1, 2, 6, 9 = 6+3, 10 = 6+4, 11 = 6+5, 13 = 6+6+1, 25 = 4×6+1), weight
    /// rows that leave 0–3 over, `k` with and without a partial
    /// chunk, and an output stride wider than `n` (a column block of a larger output).
    #[test]
    fn skinny_products_match_the_definition() {
        if !available() {
            eprintln!("no AVX-512 on this CPU: the kernel does not run here");
            return;
        }
        let mut seed = 1u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for (m, n, k) in [
            (1, 4, 16),
            (13, 7, 35),
            (6, 9, 576),
            (25, 66, 100),
            (2, 3, 5),
            (9, 5, 33),
            (10, 4, 16),
            (11, 8, 48),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let ldo = n + 3;
            let mut out = vec![f32::NAN; m * ldo];
            // SAFETY: x is m×k, w is n×k, out is m×ldo with ldo ≥ n.
            unsafe { linear((m, n, k), x.as_ptr(), w.as_ptr(), out.as_mut_ptr(), ldo) };
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|c| x[i * k + c] as f64 * w[j * k + c] as f64)
                        .sum();
                    let got = out[i * ldo + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-5 * (k as f64).sqrt(),
                        "({m},{n},{k}) at [{i}][{j}]: {got} vs {want}"
                    );
                }
                // Columns past n are not touched.
                assert!(out[i * ldo + n..(i + 1) * ldo].iter().all(|v| v.is_nan()));
            }
        }
    }
}
