//! `x · wᵀ` for a few rows of `x` (decoding: one row per sample) without packing, on
//! CPUs with AVX-512 (where BLAS's AVX-512 kernels take larger products).
//!
//! BLAS's `sgemm` copies ("packs") each weight block into its kernel's layout before
//! multiplying. With hundreds of rows that copy is paid back many times; with the 25
//! rows of a RealToxicityPrompts decoding step it was 45% of the run's CPU samples
//! (`sgemm_incopy`), against 25% for the products themselves, and single-threaded
//! OpenBLAS reached 45–50 GFLOP/s on these shapes. Here each weight row is read once,
//! straight from the model's storage, and dotted with every row of `x` while it sits in
//! L1: a tile of 4 weight rows × up to 6 rows of `x` keeps 24 sixteen-lane accumulators
//! in registers, so each vector load feeds four or six FMAs. It needs AVX-512F with
//! AVX-512VL (without VL the compiler cannot use the upper 16 vector registers for the
//! accumulators and spills them).
//!
//! CPUs with AVX2 but without AVX-512 (many AMD EPYCs before Zen 4) run every linear
//! layer through the packed kernel instead (`packed.rs`), which on such a CPU beats both
//! this kernel's AVX2 version, since removed (67–70 GFLOP/s at 40 rows on one core,
//! against 72–78), and OpenBLAS.

/// Products with at most this many rows of `x` take this kernel. Above it BLAS's packed
/// kernels win, packing being amortised over enough rows. Measured on SmolLM2's shapes
/// (2 threads, AVX-512): at 25 rows 114–134 GFLOP/s here against OpenBLAS's 81–93, at
/// 4–8 rows two to three times OpenBLAS, level at about 48 rows.
pub(crate) const MAX_ROWS: usize = 40;

/// The instruction sets a kernel is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    Avx512,
}

/// The kernels this CPU runs, widest first.
fn kernels() -> Vec<Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl");
        [(avx512, Isa::Avx512)]
            .into_iter()
            .filter_map(|(has, isa)| has.then_some(isa))
            .collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    Vec::new()
}

/// The kernel [`linear`] runs: the widest this CPU has, detected once.
fn chosen() -> Option<Isa> {
    use std::sync::OnceLock;
    static CHOSEN: OnceLock<Option<Isa>> = OnceLock::new();
    *CHOSEN.get_or_init(|| kernels().first().copied())
}

/// Whether this CPU runs the AVX-512 kernel and BLAS is loaded: then products keep
/// this kernel and BLAS instead of the packed AVX2 kernel (`packed.rs`).
pub(crate) fn avx512_with_blas() -> bool {
    chosen() == Some(Isa::Avx512) && super::blas::available()
}

/// Whether [`linear`] runs on this CPU.
pub(crate) fn available() -> bool {
    chosen().is_some()
}

/// `out[i][j] = x[i] · w[j]` for `i < m`, `j < n`: `x` is `[m, k]` (row stride `k`),
/// `w` is `[n, k]` (row stride `k`), `out` has row stride `ldo`.
///
/// # Safety
/// [`available`] must be true; the pointers must address matrices of those shapes and
/// `out` must not be read or written by anyone else meanwhile.
pub(crate) unsafe fn linear(
    shape: (usize, usize, usize),
    x: *const f32,
    w: *const f32,
    out: *mut f32,
    ldo: usize,
) {
    let isa = chosen().expect("skinny::linear runs only where available() holds");
    linear_in(isa, shape, x, w, out, ldo)
}

/// [`linear`] in the kernel for `isa`, which must be one of [`kernels`] (the tests run
/// each kernel the CPU has, not only the widest).
unsafe fn linear_in(
    isa: Isa,
    (m, n, k): (usize, usize, usize),
    x: *const f32,
    w: *const f32,
    out: *mut f32,
    ldo: usize,
) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 => avx512::linear((m, n, k), x, w, out, ldo),
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, (m, n, k), x, w, out, ldo);
        unreachable!("no kernel is compiled for this architecture")
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
        if RR == 4 {
            // Each row of x: its four sums side by side in out.
            for i in 0..MM {
                let sums = reduce4(acc[0][i], acc[1][i], acc[2][i], acc[3][i]);
                _mm_storeu_ps(out.add(i * ldo), sums);
            }
        } else {
            for (r, row) in acc.iter().enumerate() {
                for (i, a) in row.iter().enumerate() {
                    *out.add(i * ldo + r) = _mm_cvtss_f32(reduce4(*a, *a, *a, *a));
                }
            }
        }
    }

    /// The lane sums of `a`, `b`, `c`, `d`, in that order, reduced together: reducing
    /// each alone (`_mm512_reduce_add_ps`) took about as many shuffles and adds per sum
    /// as a 576-long dot product took FMAs per four. Every sum is added up in one order,
    /// lanes `i + 8`, then `i + 4`, `i + 2`, `i + 1`, whichever tile it comes from, so
    /// that a row's results never depend on the rows beside it.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    unsafe fn reduce4(a: __m512, b: __m512, c: __m512, d: __m512) -> __m128 {
        // 128-bit chunks [a0 a1 b0 b1] + [a2 a3 b2 b3]: lane i plus lane i + 8.
        let ab = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(a, b),
            _mm512_shuffle_f32x4::<0xEE>(a, b),
        );
        let cd = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(c, d),
            _mm512_shuffle_f32x4::<0xEE>(c, d),
        );
        // Chunks [ab0 ab2 cd0 cd2] + [ab1 ab3 cd1 cd3]: lane i plus lane i + 4, leaving
        // one chunk per input, in order.
        let v = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(ab, cd),
            _mm512_shuffle_f32x4::<0xDD>(ab, cd),
        );
        // Within each chunk: lane i plus lane i + 2, then lane 0 plus lane 1.
        let v = _mm512_add_ps(v, _mm512_shuffle_ps::<0b01_00_11_10>(v, v));
        let v = _mm512_add_ps(v, _mm512_shuffle_ps::<0b10_11_00_01>(v, v));
        // Lane 0 of each chunk.
        let idx = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
        _mm512_castps512_ps128(_mm512_permutexvar_ps(idx, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output's bits do not depend on the tile that computes it: a row of x alone, or
    /// a weight row alone, gives exactly what it gives among the rest (batched decoding
    /// relies on this).
    #[test]
    fn each_output_has_the_same_bits_in_any_tile() {
        if kernels().is_empty() {
            eprintln!("no AVX-512 on this CPU: the kernel does not run here");
        }
        for isa in kernels() {
            same_bits_in_any_tile(isa);
        }
    }

    fn same_bits_in_any_tile(isa: Isa) {
        let (m, n, k) = (40, 11, 577);
        let mut seed = 3u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
        let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
        let mut all = vec![0f32; m * n];
        // SAFETY: x is m×k, w is n×k, all is m×n.
        unsafe { linear_in(isa, (m, n, k), x.as_ptr(), w.as_ptr(), all.as_mut_ptr(), n) };
        for i in 0..m {
            let mut row = vec![0f32; n];
            // SAFETY: one row of x against all of w into n outputs.
            unsafe {
                linear_in(
                    isa,
                    (1, n, k),
                    x[i * k..].as_ptr(),
                    w.as_ptr(),
                    row.as_mut_ptr(),
                    n,
                )
            };
            assert_eq!(row, all[i * n..(i + 1) * n], "row {i}");
        }
        for j in 0..n {
            let mut col = vec![0f32; m];
            // SAFETY: all of x against one weight row, one output per row.
            unsafe {
                linear_in(
                    isa,
                    (m, 1, k),
                    x.as_ptr(),
                    w[j * k..].as_ptr(),
                    col.as_mut_ptr(),
                    1,
                )
            };
            let want: Vec<f32> = (0..m).map(|i| all[i * n + j]).collect();
            assert_eq!(col, want, "weight row {j}");
        }
    }

    /// Every tile shape and remainder: rows of `x` that run each of the six tile
    /// heights (1, 2, 6, 9 = 6+3, 10 = 6+4, 11 = 6+5, 13 = 6+6+1, 25 = 4×6+1), weight
    /// rows that leave 0–3 over, `k` with and without a partial
    /// chunk, and an output stride wider than `n` (a column block of a larger output).
    #[test]
    fn skinny_products_match_the_definition() {
        if kernels().is_empty() {
            eprintln!("no AVX-512 on this CPU: the kernel does not run here");
        }
        for isa in kernels() {
            products_match_the_definition(isa);
        }
    }

    fn products_match_the_definition(isa: Isa) {
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
            unsafe {
                linear_in(
                    isa,
                    (m, n, k),
                    x.as_ptr(),
                    w.as_ptr(),
                    out.as_mut_ptr(),
                    ldo,
                )
            };
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
/// Throughput of each kernel on SmolLM2's shapes, one thread, against OpenBLAS's `sgemm`
/// (packing included) where it is loaded:
/// `cargo test --release --lib skinny::speed -- --ignored --nocapture`.
#[cfg(test)]
mod speed {
    use super::*;

    fn gflops(m: usize, n: usize, k: usize, mut f: impl FnMut()) -> f64 {
        let reps = (4e9 / (2.0 * (m * n * k) as f64)).ceil() as usize;
        f();
        let start = std::time::Instant::now();
        for _ in 0..reps {
            f();
        }
        2.0 * (m * n * k * reps) as f64 / start.elapsed().as_secs_f64() / 1e9
    }

    #[test]
    #[ignore = "a measurement, not a check"]
    fn gflops_on_smollm2_shapes() {
        let blas = crate::model::blas::available();
        for isa in kernels() {
            for m in [1, 10, 40, 64, 128] {
                for (n, k) in [(576, 576), (1536, 576), (576, 1536), (49152, 576)] {
                    let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.01).collect();
                    // Copies of the weight enough to overflow the caches: each call reads
                    // its weight from memory, as a model's layers do.
                    let copies = (256 << 20) / (n * k * 4) + 1;
                    let w: Vec<f32> = (0..copies * n * k).map(|i| (i % 5) as f32 * 0.01).collect();
                    let mut out = vec![0f32; m * n];
                    let mut call = 0;
                    // SAFETY: x is m×k, each copy of w is n×k, out is m×n.
                    let mine = gflops(m, n, k, || unsafe {
                        call = (call + 1) % copies;
                        let wc = w.as_ptr().add(call * n * k);
                        linear_in(isa, (m, n, k), x.as_ptr(), wc, out.as_mut_ptr(), n)
                    });
                    let theirs = if blas {
                        // SAFETY: as above; BLAS is loaded.
                        gflops(m, n, k, || unsafe {
                            call = (call + 1) % copies;
                            crate::model::blas::gemm(
                                true,
                                (m, n, k),
                                1.0,
                                (x.as_ptr(), k),
                                (w.as_ptr().add(call * n * k), k),
                                (out.as_mut_ptr(), n),
                            )
                        })
                    } else {
                        f64::NAN
                    };
                    eprintln!("{isa:?} m={m} n={n} k={k}: {mine:.1} GFLOP/s, sgemm {theirs:.1}");
                }
            }
        }
    }
}
